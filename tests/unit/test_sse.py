"""SSEParser: framing rules that matter for LLM servers, at any read boundary."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.adapters.sse import SSEParser

TRANSCRIPTS = Path(__file__).resolve().parents[1] / "fixtures" / "transcripts"
TRANSCRIPT_FILES = sorted(TRANSCRIPTS.glob("*.sse"))


def parse_all(pieces: list[bytes]) -> tuple[list[tuple[bytes, bytes]], int]:
    p = SSEParser()
    events: list[tuple[bytes, bytes]] = []
    for piece in pieces:
        events.extend(p.feed(piece))
    events.extend(p.finish())
    return events, p.comments


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(set(cuts)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:])]


# --- basic framing -------------------------------------------------------------


def test_single_event_and_done() -> None:
    p = SSEParser()
    assert p.feed(b'data: {"a":1}\n\ndata: [DONE]\n\n') == [(b"", b'{"a":1}'), (b"", b"[DONE]")]
    assert p.finish() == []


def test_incomplete_event_is_held_until_blank_line() -> None:
    p = SSEParser()
    assert p.feed(b"data: abc\n") == []
    assert p.feed(b"\n") == [(b"", b"abc")]


def test_crlf_line_endings() -> None:
    events, _ = parse_all([b"data: one\r\n\r\nevent: x\r\ndata: two\r\n\r\n"])
    assert events == [(b"", b"one"), (b"x", b"two")]


def test_crlf_split_between_cr_and_lf() -> None:
    p = SSEParser()
    assert p.feed(b"data: one\r") == []
    assert p.feed(b"\n\r") == []
    assert p.feed(b"\n") == [(b"", b"one")]


def test_multiline_data_joined_with_newline() -> None:
    events, _ = parse_all([b"data: line one\ndata: line two\ndata:line three\n\n"])
    assert events == [(b"", b"line one\nline two\nline three")]


def test_only_one_leading_space_is_stripped() -> None:
    events, _ = parse_all([b"data:  two spaces\n\ndata:none\n\n"])
    assert events == [(b"", b" two spaces"), (b"", b"none")]


def test_comments_counted_not_emitted() -> None:
    p = SSEParser()
    events = p.feed(b": ping\n\n: keep-alive\ndata: x\n\n:\n\n")
    assert events == [(b"", b"x")]
    assert p.comments == 3


def test_event_name_kept_and_reset_after_dispatch() -> None:
    events, _ = parse_all([b'event: error\ndata: {"message":"overloaded"}\n\ndata: next\n\n'])
    assert events == [(b"error", b'{"message":"overloaded"}'), (b"", b"next")]


def test_id_retry_and_unknown_fields_ignored() -> None:
    events, comments = parse_all([b"id: 7\nretry: 1000\nfoo: bar\ndata: x\n\n"])
    assert events == [(b"", b"x")] and comments == 0


def test_blank_lines_without_data_emit_nothing() -> None:
    events, _ = parse_all([b"\n\n\r\n\nevent: lonely\n\n"])
    assert events == []


def test_empty_data_field_is_an_event_with_empty_payload() -> None:
    # Per the SSE spec, "data:" followed by a blank line dispatches an event with empty data.
    events, _ = parse_all([b"data:\n\n"])
    assert events == [(b"", b"")]


def test_final_event_without_blank_line_delivered_by_finish() -> None:
    p = SSEParser()
    assert p.feed(b"data: a\n\ndata: b") == [(b"", b"a")]
    assert p.finish() == [(b"", b"b")]


@pytest.mark.parametrize("tail", [b"data: last\n", b"data: last\r\n", b"data: last\r", b"data: last"])
def test_finish_delivers_unterminated_tail(tail: bytes) -> None:
    p = SSEParser()
    assert p.feed(tail) == []
    assert p.finish() == [(b"", b"last")]


def test_finish_with_nothing_pending() -> None:
    p = SSEParser()
    p.feed(b"data: a\n\n")
    assert p.finish() == []
    assert SSEParser().finish() == []


def test_finish_with_pending_comment_only() -> None:
    p = SSEParser()
    assert p.feed(b": ping") == []
    assert p.finish() == []
    assert p.comments == 1


def test_utf8_multibyte_split_inside_character() -> None:
    raw = 'data: {"content":"héllo wörld ✓"}\n\n'.encode()
    cut = raw.index("✓".encode()) + 1  # in the middle of the 3-byte sequence
    events, _ = parse_all([raw[:cut], raw[cut:]])
    assert events == [(b"", '{"content":"héllo wörld ✓"}'.encode())]


# --- any split gives the same events ---------------------------------------------


@pytest.mark.parametrize("path", TRANSCRIPT_FILES, ids=lambda p: p.name)
def test_byte_by_byte_equals_whole(path: Path) -> None:
    data = path.read_bytes()
    whole = parse_all([data])
    assert whole[0], "transcript yields events"
    assert parse_all([data[i:i + 1] for i in range(len(data))]) == whole


@settings(max_examples=150, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=max(0, len(TRANSCRIPT_FILES) - 1)),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=40),
)
def test_any_split_of_recorded_transcript_gives_same_events(index: int, cuts: list[int]) -> None:
    data = TRANSCRIPT_FILES[index].read_bytes()
    cuts = [c % (len(data) + 1) for c in cuts]
    assert parse_all(split_at(data, cuts)) == parse_all([data])


_line_text = st.text(
    alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)), max_size=20
)
_event = st.tuples(
    st.one_of(st.none(), st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True)),  # event name
    st.lists(_line_text, min_size=1, max_size=4),                               # data lines
    st.integers(min_value=0, max_value=2),                                      # comments before
)


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(_event, min_size=1, max_size=8),
    eol=st.sampled_from([b"\n", b"\r\n"]),
    terminate_last=st.booleans(),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_generated_streams_parse_to_the_events_written(events, eol, terminate_last, cuts) -> None:
    raw = b""
    expected = []
    n_comments = 0
    for i, (name, lines, comments) in enumerate(events):
        for _ in range(comments):
            raw += b": ping" + eol + eol
            n_comments += 1
        if name is not None:
            raw += b"event: " + name.encode() + eol
        for line in lines:
            raw += b"data: " + line.encode() + eol
        if i < len(events) - 1 or terminate_last:
            raw += eol
        expected.append((name.encode() if name else b"", b"\n".join(line.encode() for line in lines)))
    cuts = [c % (len(raw) + 1) for c in cuts]
    got, comments = parse_all(split_at(raw, cuts))
    assert got == expected
    assert comments == n_comments


def test_fast_path_matches_the_line_parser_on_random_streams_and_splits():
    """The split-based fast path must produce exactly what the line-by-line parser does, for any
    mix of plain events, comments, named/multi-line events, CRLF, and any read boundaries."""
    import random

    frags = [b'data: {"a":1}\n\n', b"data: x\n\n", b": ping\n\n", b"event: error\ndata: e\n\n",
             b"data: a\ndata: b\n\n", b"\n", b"data:y\n\n", b"id: 3\n", b"data: [DONE]\n\n",
             b"data: q\r\n\r\n", b"retry: 5\n\n", b"data: \n\n"]
    rng = random.Random(7)
    for _ in range(5000):
        data = b"".join(rng.choice(frags) for _ in range(rng.randint(1, 12)))
        reference = SSEParser()
        expected = reference._feed_lines(data) + reference.finish()
        cuts = sorted(rng.sample(range(len(data) + 1), k=min(3, len(data) + 1))) + [len(data)]
        parser, got, prev = SSEParser(), [], 0
        for cut in cuts:
            got += parser.feed(data[prev:cut])
            prev = cut
        got += parser.finish()
        assert got == expected, (data, cuts)


def test_a_huge_event_in_small_reads_arrives_whole():
    parser = SSEParser()
    line = b"data: " + b"x" * 200_000 + b"\n\n"
    events = []
    for i in range(0, len(line), 1000):
        events += parser.feed(line[i:i + 1000])
    assert events == [(b"", b"x" * 200_000)]
