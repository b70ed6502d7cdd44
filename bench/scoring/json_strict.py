"""``json``: is the response strict JSON, would a repair layer save it, does it match a schema, and
how many reference fields did it get right?

Field metrics compare the parsed object (the lenient parse by default, ``field_source``) with the
item's reference object, field by field over the reference's keys (extra predicted keys are left to
the schema). For a field: reference null and predicted null or absent is a correct "not found";
reference null and a predicted value is hallucinated; a reference value and predicted null or absent is
missing; two values are compared by ``normalize.values_equal``.

- ``field_precision`` = correct non-null predictions / non-null predictions (0.0 when nothing non-null
  was predicted but the reference has values, 1.0 when neither has any);
- ``field_recall`` = correct non-null predictions / non-null reference fields (1.0 when there are none);
- ``field_f1``; ``field_exact`` (every field correct, nulls included);
- ``missing_field_rate`` = missing / non-null reference fields, ``hallucinated_field_rate`` =
  hallucinated / null reference fields (None where the denominator is 0);
- ``not_found_correct``: every null reference field predicted null or absent (None: no null fields).

End-to-end view: when nothing parsed (or the parse is not an object) precision, recall and F1 are 0.0,
``field_exact`` and ``not_found_correct`` False, ``missing_field_rate`` 1.0 and
``hallucinated_field_rate`` 0.0: every field is missing, and nothing was hallucinated.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal, Optional

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, best_match
from pydantic import Field

from bench.scoring.base import BaseScorer, ScoreInput, ScorerConfig, Value
from bench.scoring.jsonparse import NOTHING, loads_strict, parse_lenient
from bench.scoring.normalize import values_equal

_FIELD_KEYS = {"field_precision": "float", "field_recall": "float", "field_f1": "float", "field_exact": "bool",
               "missing_field_rate": "float", "hallucinated_field_rate": "float", "not_found_correct": "bool"}
_SCHEMA_KEYS = {"schema_valid": "bool", "schema_error_keyword": "str", "schema_error_path": "str"}


def _ratio(num: int, den: int, empty: Optional[float]) -> Optional[float]:
    return num / den if den else empty


def field_scores(reference: dict[str, Any], predicted: Any, coerce_numbers: bool = False) -> dict[str, Value]:
    ref_nonnull = [k for k, v in reference.items() if v is not None]
    ref_null = [k for k, v in reference.items() if v is None]
    if not isinstance(predicted, dict):
        return {"field_precision": 0.0, "field_recall": 0.0, "field_f1": 0.0, "field_exact": False,
                "missing_field_rate": _ratio(len(ref_nonnull), len(ref_nonnull), None),
                "hallucinated_field_rate": _ratio(0, len(ref_null), None),
                "not_found_correct": False if ref_null else None}
    pred_nonnull = [k for k in reference if predicted.get(k) is not None]
    correct = [k for k in ref_nonnull if predicted.get(k) is not None
               and values_equal(reference[k], predicted[k], coerce_numbers=coerce_numbers)]
    missing = [k for k in ref_nonnull if predicted.get(k) is None]
    hallucinated = [k for k in ref_null if predicted.get(k) is not None]
    precision = _ratio(len(correct), len(pred_nonnull), 0.0 if ref_nonnull else 1.0)
    recall = _ratio(len(correct), len(ref_nonnull), 1.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"field_precision": precision, "field_recall": recall, "field_f1": f1,
            "field_exact": len(correct) == len(ref_nonnull) and not hallucinated,
            "missing_field_rate": _ratio(len(missing), len(ref_nonnull), None),
            "hallucinated_field_rate": _ratio(len(hallucinated), len(ref_null), None),
            "not_found_correct": (not hallucinated) if ref_null else None}


def load_schema(path: Path, scorer: BaseScorer, field: str = "schema") -> Draft202012Validator:
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise scorer.config_error(field, f"cannot read {path}: {e.strerror}") from None
    except ValueError as e:
        raise scorer.config_error(field, f"{path} is not valid JSON: {e}") from None
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        raise scorer.config_error(field, f"{path} is not a valid Draft 2020-12 schema: {e.message}") from None
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_check(validator: Draft202012Validator, value: Any) -> tuple[bool, Optional[str], Optional[str]]:
    """(valid, keyword, JSON path) of the most relevant error (``jsonschema.exceptions.best_match``)."""
    try:
        error = best_match(validator.iter_errors(value))
    except RecursionError:
        return False, "depth", "$"
    if error is None:
        return True, None, None
    return False, str(error.validator), error.json_path


class JsonScorer(BaseScorer):
    name = "json"

    class Config(ScorerConfig):
        schema_: Optional[str] = Field(None, alias="schema",
                                       description="JSON Schema file (Draft 2020-12), relative to the scenario")
        require_object: bool = True
        coerce_numbers: bool = Field(False, description='"12.50" equals 12.5 in field comparisons')
        compare_fields: bool = Field(True, description="field metrics vs the item's reference object")
        field_source: Literal["lenient", "strict"] = "lenient"

    def __init__(self, config: Config, base_dir: Path):
        super().__init__(config, base_dir)
        self._validator = None
        if config.schema_ is not None:
            self._validator = load_schema(base_dir / config.schema_, self)
        self.primary = "field_exact" if config.compare_fields else "json_strict_ok"
        self.keys = {"json_strict_ok": "bool", "json_lenient_ok": "bool", "json_repairable": "bool",
                     "json_extracted_by": "str"}
        if self._validator is not None:
            self.keys |= _SCHEMA_KEYS
        if config.compare_fields:
            self.keys |= _FIELD_KEYS

    def score(self, inp: ScoreInput) -> dict[str, Value]:
        cfg = self.config
        strict = loads_strict(inp.text)
        strict_ok = strict is not NOTHING and (isinstance(strict, dict) or not cfg.require_object)
        lenient, how = parse_lenient(inp.text, cfg.require_object)
        lenient_ok = lenient is not NOTHING
        out: dict[str, Value] = {"json_strict_ok": strict_ok, "json_lenient_ok": lenient_ok,
                                 "json_repairable": lenient_ok and not strict_ok, "json_extracted_by": how}
        if self._validator is not None:
            if lenient_ok:
                valid, keyword, path = schema_check(self._validator, lenient)
            else:
                valid, keyword, path = None, None, None
            out |= {"schema_valid": valid, "schema_error_keyword": keyword, "schema_error_path": path}
        if cfg.compare_fields:
            ref = inp.item.reference
            if not isinstance(ref, dict):
                out |= {k: None for k in _FIELD_KEYS}
            else:
                source = lenient if cfg.field_source == "lenient" else (strict if strict_ok else NOTHING)
                out |= field_scores(ref, source, cfg.coerce_numbers)
        return out
