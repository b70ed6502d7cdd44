"""Pure parts of the locust engine: how a level is split across workers, item cursors, clocks.

No I/O and no gevent here, so every rule is unit-tested in memory. Times are integer
nanoseconds of ``time.perf_counter_ns()``. A worker on another host has its own monotonic
clock; the master estimates the offset (``worker - master``) and workers shift every record
into the master's clock before sending it, so a run's records share one time base.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import orjson

from bench.dataset import Item
from bench.patterns.rate import arrival_offsets_ns
from bench.patterns.window import LevelWindow
from bench.records import RequestRecord

# Locust custom message types (worker <-> master).
MSG_HELLO = "bb_hello"        # worker -> master: {boot_id, host, pid}
MSG_CLOCK = "bb_clock"        # both ways: ping {t0} / pong {t0, tw}
MSG_TARGET = "bb_target"      # master -> worker: target setup (items, sampling, endpoint)
MSG_TARGET_OK = "bb_target_ok"  # worker -> master: {name} or {name, error}
MSG_LEVEL = "bb_level"        # master -> worker: this worker's share of a level
MSG_STOP = "bb_stop"          # master -> worker: {index, cancel}
MSG_RECORDS = "bb_records"    # worker -> master: {index, n, lines}
MSG_DONE = "bb_done"          # worker -> master: {index, sent, health}

CLOSED_LOOP_USER = "ClosedLoopUser"
PACER_USER = "PacerUser"

# Every record line on the master's stdout starts with this; events start with b"E ".
RECORD_PREFIX = b"R "
EVENT_PREFIX = b"E "

_NS_FIELDS = ("scheduled_ns", "sent_ns", "first_byte_ns", "first_token_ns", "end_ns")


@dataclass(frozen=True, slots=True)
class CursorSpec:
    """Where a worker's i-th request of one phase falls in the target's item walk.

    The N users of a level are numbered across the cluster; this worker owns ``width`` of them
    starting at ``offset``. Its i-th request gets ``base + period * (i // width) + offset +
    i % width``: each user slot walks its own column of a table ``period`` wide, so workers
    whose users run at similar speeds cover the items in order, without overlap, as the
    single-process runner does (``bench/runner.py``). ``width == 0`` means no requests.
    """

    base: int
    period: int
    offset: int
    width: int

    def at(self, i: int) -> int:
        return self.base + self.period * (i // self.width) + self.offset + i % self.width

    def as_list(self) -> list[int]:
        return [self.base, self.period, self.offset, self.width]

    @classmethod
    def from_list(cls, v: list[int]) -> "CursorSpec":
        return cls(*v)


def split_quota(total: Optional[int], weights: list[int]) -> list[Optional[int]]:
    """Split ``total`` in proportion to ``weights`` (largest remainder, ties to the first);
    None (no count limit) stays None for everyone."""
    if total is None:
        return [None] * len(weights)
    s = sum(weights)
    if s == 0:
        return [0] * len(weights)
    exact = [total * w / s for w in weights]
    out = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - out[i]), i))
    for i in order[: total - sum(out)]:
        out[i] += 1
    return out


def column_quota(total: Optional[int], period: int, offset: int, width: int) -> Optional[int]:
    """How many of the first ``total`` positions of a ``period``-wide table fall in columns
    ``offset .. offset + width - 1``: a worker's share of a count limit, so that the workers'
    quotas add up to ``total`` and cover positions ``0 .. total - 1`` exactly."""
    if total is None:
        return None
    return sum((total - s + period - 1) // period for s in range(offset, offset + width) if s < total)


def concurrency_shares(users: list[int], window: dict[str, Any], bases: dict[str, int]) -> list[dict[str, Any]]:
    """Each worker's share of a closed-loop level: its users, count quotas and item cursors.

    ``users[k]`` is how many users Locust placed on worker k. Count limits (``requests``,
    ``warmup_requests``) are split by user column (``column_quota``), so the workers together
    walk exactly the items one process would; time limits apply per worker, from the shared
    start instant. ``bases`` are the target's item cursors so far, per phase.
    """
    total = sum(users)
    shares = []
    offset = 0
    for n in users:
        shares.append({
            "users": n,
            "window": {**window, "requests": column_quota(window.get("requests"), total, offset, n),
                       "warmup_requests": column_quota(window.get("warmup_requests") or 0, total, offset, n)},
            "cursor": {
                "measure": CursorSpec(bases.get("measure", 0), total, offset, n).as_list(),
                "warmup": CursorSpec(bases.get("warmup", 0), total, offset, n).as_list(),
                "seq": CursorSpec(0, total, offset, n).as_list(),
            },
        })
        offset += n
    return shares


def rate_shares(slots: int, max_in_flight: Optional[int]) -> list[dict[str, Any]]:
    """Open loop: worker k sends arrivals ``seq % slots == k`` of the one plan; the in-flight
    cap is split so the caps add up to the scenario's (each at least 1)."""
    caps = split_quota(max_in_flight, [1] * slots)
    return [{"slot": k, "slots": slots, "max_in_flight": None if caps[k] is None else max(1, caps[k])}
            for k in range(slots)]


def new_window(start_ns: int, window: dict[str, Any]) -> LevelWindow:
    return LevelWindow(
        start_ns=start_ns,
        warmup_s=window.get("warmup_s") or 0.0,
        warmup_requests=window.get("warmup_requests") or 0,
        duration_s=window.get("duration_s"),
        requests=window.get("requests"),
    )


def rate_arrivals(rate: float, arrival: str, seed: int, window: LevelWindow, slot: int, slots: int,
                  bases: dict[str, int]) -> Iterator[tuple[int, int, str, int]]:
    """This worker's arrivals of an open-loop level: ``(seq, scheduled_ns, phase, cursor)``.

    Walks the whole absolute plan (``bench/patterns/rate.py``) and admits every arrival through
    one ``LevelWindow``, exactly as the single-process pattern does, so phases, the stop point
    and item cursors are the same whichever worker sends an arrival; yields only its own.
    The window's ``stop()`` ends the walk at the next arrival.
    """
    counts = {"measure": bases.get("measure", 0), "warmup": bases.get("warmup", 0)}
    for seq, offset in enumerate(arrival_offsets_ns(rate, arrival, seed)):
        if window.stopped:
            return
        scheduled = window.start_ns + offset
        phase = window.admit(scheduled)
        if phase is None:
            return
        cursor = counts[phase]
        counts[phase] = cursor + 1
        if seq % slots == slot:
            yield seq, scheduled, phase, cursor


def item_for(items: tuple[Item, ...] | list[Item], phase: str, cursor: int) -> tuple[Item, int]:
    """The item and repeat number for a cursor: measured requests walk the set forwards,
    warm-up and cold ones backwards from the end (as ``bench/runner.py``)."""
    n = len(items)
    item = items[cursor % n] if phase == "measure" else items[n - 1 - (cursor % n)]
    return item, cursor // n


def request_id(target: str, level_index: int, phase: str, seq: int) -> str:
    return f"{target}-L{level_index}-{phase[0]}{seq}"


def item_to_dict(item: Item) -> dict[str, Any]:
    return {"id": item.id, "messages": item.messages, "prompt": item.prompt, "reference": item.reference,
            "slices": list(item.slices), "max_tokens": item.max_tokens, "meta": item.meta}


def item_from_dict(d: dict[str, Any]) -> Item:
    return Item(d["id"], d.get("messages"), d.get("prompt"), d.get("reference"), tuple(d.get("slices") or ()),
                d.get("max_tokens"), d.get("meta") or {})


def shift_record(record: RequestRecord, offset_ns: int) -> None:
    """Move a record from a worker's clock to the master's (``offset = worker - master``)."""
    if not offset_ns:
        return
    for name in _NS_FIELDS:
        v = getattr(record, name)
        if v:
            setattr(record, name, v - offset_ns)
    record.chunk_ns = [t - offset_ns for t in record.chunk_ns]


def record_line(record: RequestRecord) -> bytes:
    return RECORD_PREFIX + record.to_json() + b"\n"


def event_line(event: dict[str, Any]) -> bytes:
    return EVENT_PREFIX + orjson.dumps(event) + b"\n"


def clock_offset(samples: list[tuple[int, int, int]]) -> tuple[int, int]:
    """``(offset_ns, rtt_ns)`` from ping samples ``(t0 master send, tw worker stamp, t1 master
    receive)``: the sample with the shortest round trip, assuming symmetric halves (NTP's rule).
    The error is at most half that round trip."""
    t0, tw, t1 = min(samples, key=lambda s: s[2] - s[0])
    return tw - (t0 + t1) // 2, t1 - t0


def boot_id() -> str:
    """Identifies this machine's boot: processes with the same one share CLOCK_MONOTONIC.
    ``BENCHBOX_BOOT_ID`` overrides it (a worker on this host then measures its clock offset as
    a remote one would: how the tests exercise that path on one machine)."""
    if os.environ.get("BENCHBOX_BOOT_ID"):
        return os.environ["BENCHBOX_BOOT_ID"]
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:  # pragma: no cover - not Linux: assume another clock
        import uuid

        return f"unknown-{uuid.uuid4().hex}"


def parse_master(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` too) -> (host, port); ValueError with the reason."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {address!r}")
    return host.strip("[]"), int(port)
