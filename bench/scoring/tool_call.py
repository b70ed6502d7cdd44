"""``tool_call``: a tool call written as JSON in the response content, checked against the item's tools.

Accepted shapes (lenient parse, see ``jsonparse``): ``{"name": ..., "arguments": {...}}`` and the
OpenAI shape ``{"type": "function", "function": {"name": ..., "arguments": ...}}``; ``arguments`` may
be an object or a JSON-encoded object string, and an absent ``arguments`` means ``{}``. The tools come
from ``item.meta["tools"]``: OpenAI tool definitions or bare ``{"name", "parameters"}`` objects.
When the server answered with structured ``tool_calls`` (``sampling.tools: api``), the first call is
scored instead of the text.

- ``tool_call_valid``: a call parsed, its name is one of the tools, its arguments match that tool's
  ``parameters`` schema (Draft 2020-12); None when the item has no tools;
- ``tool_name_correct``: the name equals ``item.reference["name"]`` (None without one);
- ``tool_args_valid``: the arguments match the named tool's schema (False if no such tool);
- ``tool_args_match``: the arguments equal ``item.reference["arguments"]`` field by field
  (``normalize.values_equal``; None without reference arguments);
- ``tool_call_error``: a detail: "no_json", "no_name", "bad_arguments", "unknown_tool",
  "bad_tool_schema", or "args:<keyword> at <path>".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from bench.scoring.base import BaseScorer, ScoreInput, ScorerConfig, Value
from bench.scoring.json_strict import schema_check
from bench.scoring.jsonparse import NOTHING, loads_strict, parse_lenient
from bench.scoring.normalize import values_equal

_KEYS = {"tool_call_valid": "bool", "tool_name_correct": "bool", "tool_args_valid": "bool",
         "tool_args_match": "bool", "tool_call_error": "str"}


def _unwrap(call: Any) -> tuple[Optional[str], Any]:
    """(name, arguments) of a parsed call; arguments is NOTHING when unusable."""
    if isinstance(call.get("function"), dict):
        call = call["function"]
    name = call.get("name")
    args = call.get("arguments", {})
    if isinstance(args, str):
        args = loads_strict(args)
    if not isinstance(args, dict):
        args = NOTHING
    return (name if isinstance(name, str) and name else None), args


def _tools(meta: dict) -> Optional[dict[str, Any]]:
    """name -> parameters schema, or None when the item declares no (usable) tools."""
    raw = meta.get("tools")
    if not isinstance(raw, list) or not raw:
        return None
    tools: dict[str, Any] = {}
    for t in raw:
        if isinstance(t, dict) and isinstance(t.get("function"), dict):
            t = t["function"]
        if isinstance(t, dict) and isinstance(t.get("name"), str):
            tools[t["name"]] = t.get("parameters", {"type": "object"})
    return tools or None


class ToolCallScorer(BaseScorer):
    name = "tool_call"
    primary = "tool_call_valid"
    keys = _KEYS

    class Config(ScorerConfig):
        pass

    def __init__(self, config: Config, base_dir: Path):
        super().__init__(config, base_dir)
        self._validators: dict[str, Optional[Draft202012Validator]] = {}

    def _validator(self, schema: Any) -> Optional[Draft202012Validator]:
        key = json.dumps(schema, sort_keys=True, default=str)
        if key not in self._validators:
            try:
                Draft202012Validator.check_schema(schema)
                v: Optional[Draft202012Validator] = Draft202012Validator(
                    schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
            except SchemaError:
                v = None
            self._validators[key] = v
        return self._validators[key]

    def score(self, inp: ScoreInput) -> dict[str, Value]:
        tools = _tools(inp.item.meta)
        ref = inp.item.reference if isinstance(inp.item.reference, dict) else {}
        ref_name = ref.get("name") if isinstance(ref.get("name"), str) else None
        ref_args = ref.get("arguments") if isinstance(ref.get("arguments"), dict) else None
        out: dict[str, Value] = {k: None for k in _KEYS}
        if tools is None:
            return out
        if inp.tool_calls:  # the server's structured call (sampling.tools: api) is the answer
            first = inp.tool_calls[0]
            call = first if isinstance(first, dict) else NOTHING
        else:
            call, _ = parse_lenient(inp.text, require_object=True)
        name, args = _unwrap(call) if call is not NOTHING else (None, NOTHING)
        out["tool_name_correct"] = None if ref_name is None else name == ref_name
        out["tool_args_match"] = None if ref_args is None else (
            args is not NOTHING and values_equal(ref_args, args))
        out["tool_args_valid"] = False
        out["tool_call_valid"] = False
        if call is NOTHING:
            out["tool_call_error"] = "no_json"
        elif name is None:
            out["tool_call_error"] = "no_name"
        elif name not in tools:
            out["tool_call_error"] = "unknown_tool"
        elif args is NOTHING:
            out["tool_call_error"] = "bad_arguments"
        elif (validator := self._validator(tools[name])) is None:
            out["tool_args_valid"] = out["tool_call_valid"] = None
            out["tool_call_error"] = "bad_tool_schema"
        else:
            valid, keyword, path = schema_check(validator, args)
            out["tool_args_valid"] = out["tool_call_valid"] = valid
            out["tool_call_error"] = None if valid else f"args:{keyword} at {path}"
        return out
