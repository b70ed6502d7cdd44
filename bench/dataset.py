"""Eval items from JSONL: the same inputs for every target.

The content hash of the *selected* items (canonical JSON, in order) is the eval set's
identity: two runs are comparable only when it matches.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import orjson

from bench.scenario import DatasetSpec, ScenarioError

_ALLOWED_KEYS = {"id", "messages", "prompt", "reference", "slices", "max_tokens", "meta"}
MAX_ID_CHARS = 512
MAX_TOKENS = 1_000_000  # as sampling.max_tokens


@dataclass(frozen=True, slots=True)
class Item:
    id: str
    messages: Optional[list[dict[str, Any]]]
    prompt: Optional[str]
    reference: Any = None
    slices: tuple[str, ...] = ()
    max_tokens: Optional[int] = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Dataset:
    path: Path
    items: tuple[Item, ...]
    sha256: str

    def slice_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for item in self.items:
            for s in item.slices:
                counts[s] = counts.get(s, 0) + 1
        return dict(sorted(counts.items()))


def _item_from(obj: Any, where: str) -> Item:
    if not isinstance(obj, dict):
        raise ScenarioError(f"{where}: expected a JSON object per line")
    extra = sorted(set(obj) - _ALLOWED_KEYS)
    if extra:
        raise ScenarioError(f"{where}: unknown key {extra[0]!r} (allowed: {', '.join(sorted(_ALLOWED_KEYS))})")
    item_id = obj.get("id")
    if not isinstance(item_id, (str, int)) or isinstance(item_id, bool) or not 0 < len(str(item_id)) <= MAX_ID_CHARS:
        raise ScenarioError(f"{where}: 'id' must be a non-empty string of at most {MAX_ID_CHARS} characters")
    messages, prompt = obj.get("messages"), obj.get("prompt")
    if (messages is None) == (prompt is None):
        raise ScenarioError(f"{where}: give exactly one of 'messages' (chat) or 'prompt' (completions)")
    if messages is not None:
        ok = isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and "content" in m for m in messages
        )
        if not ok:
            raise ScenarioError(f"{where}: 'messages' must be a non-empty list of {{role, content}} objects")
    if prompt is not None and not isinstance(prompt, str):
        raise ScenarioError(f"{where}: 'prompt' must be a string")
    slices = obj.get("slices", [])
    if not isinstance(slices, list) or not all(isinstance(s, str) for s in slices):
        raise ScenarioError(f"{where}: 'slices' must be a list of strings")
    max_tokens = obj.get("max_tokens")
    if max_tokens is not None and (not isinstance(max_tokens, int) or isinstance(max_tokens, bool)
                                   or not 1 <= max_tokens <= MAX_TOKENS):
        raise ScenarioError(f"{where}: 'max_tokens' must be a positive integer (at most {MAX_TOKENS})")
    meta = obj.get("meta", {})
    if not isinstance(meta, dict):
        raise ScenarioError(f"{where}: 'meta' must be an object")
    return Item(str(item_id), messages, prompt, obj.get("reference"), tuple(slices), max_tokens, meta)


def load_dataset(path: Path, spec: Optional[DatasetSpec] = None) -> Dataset:
    """Load and validate a JSONL eval set; apply the scenario's slice filter and limit.

    Raises ScenarioError (one line, with file and line number) on any malformed item.
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read dataset: {e.strerror}") from None
    items: list[Item] = []
    seen: dict[str, int] = {}
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark (some editors write one)
        raw = raw[3:]
    for lineno, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise ScenarioError(f"{where}: invalid JSON: {str(e).split(':')[0]}") from None
        item = _item_from(obj, where)
        if item.id in seen:
            raise ScenarioError(f"{where}: duplicate item id {item.id!r} (first on line {seen[item.id]})")
        seen[item.id] = lineno
        items.append(item)
    if spec is not None and spec.slices:
        wanted = set(spec.slices)
        items = [i for i in items if wanted.intersection(i.slices)]
    if spec is not None and spec.limit is not None:
        items = items[: spec.limit]
    if not items:
        raise ScenarioError(f"{path}: the dataset has no items (after the scenario's slice filter)")
    return Dataset(path, tuple(items), dataset_hash(items))


def dataset_hash(items: list[Item]) -> str:
    h = hashlib.sha256()
    for item in items:
        canonical = {
            "id": item.id, "messages": item.messages, "prompt": item.prompt, "reference": item.reference,
            "slices": list(item.slices), "max_tokens": item.max_tokens, "meta": item.meta,
        }
        h.update(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS))
        h.update(b"\n")
    return h.hexdigest()
