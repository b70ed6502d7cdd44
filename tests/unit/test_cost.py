"""Cost arithmetic: per request, per 1,000 requests, at capacity, and percent saved vs the baseline."""

from __future__ import annotations

from typing import Optional

import pytest
from pydantic import ValidationError

from bench.cost import cost_per_request, cost_table, percent_saved, price_of, pricing_problems
from bench.scenario import Pricing


def lv(target: str, level: float, rps: Optional[float], ok: int = 10, tokens: int = 1000) -> dict:
    return {"target": target, "level": level, "throughput": {"requests_per_s": rps},
            "requests": {"ok": ok}, "tokens": {"output_total": tokens}}


def test_price_lookup_falls_back_to_default() -> None:
    p = Pricing(per_instance_hour={"default": 2.0, "base": 8.0}, per_million_output_tokens={"api": 1.5})
    assert price_of(p, "base") == {"per_instance_hour": 8.0, "per_million_output_tokens": None}
    assert price_of(p, "api") == {"per_instance_hour": 2.0, "per_million_output_tokens": 1.5}


def test_cost_per_request_instance_tokens_and_both() -> None:
    # 3.6 per hour at 2 requests/s: 3.6 / 7200 = 0.0005 per request, 0.5 per 1,000.
    row = cost_per_request(lv("t", 1, 2.0), Pricing(per_instance_hour={"t": 3.6}))
    assert row["cost_per_request"] == pytest.approx(0.0005)
    assert row["cost_per_1k_requests"] == pytest.approx(0.5)
    assert row["requests_per_s"] == 2.0 and row["output_tokens_per_request"] == 100
    # 2 per million tokens, 1000 tokens over 10 requests = 100 each: 0.0002 per request.
    row = cost_per_request(lv("t", 1, 2.0), Pricing(per_million_output_tokens={"default": 2.0}))
    assert row["cost_per_request"] == pytest.approx(0.0002) and row["instance_part"] == 0.0
    both = cost_per_request(lv("t", 1, 2.0),
                            Pricing(per_instance_hour={"t": 3.6}, per_million_output_tokens={"t": 2}))
    assert both["cost_per_1k_requests"] == pytest.approx(0.7)
    assert (both["instance_part"], both["token_part"]) == (pytest.approx(0.0005), pytest.approx(0.0002))


def test_cost_is_none_without_price_or_throughput() -> None:
    assert cost_per_request(lv("t", 1, 2.0), Pricing(per_instance_hour={"other": 1.0})) is None
    row = cost_per_request(lv("t", 1, None, ok=0), Pricing(per_instance_hour={"t": 1.0}))
    assert row["cost_per_request"] is None and row["cost_per_1k_requests"] is None


def test_percent_saved() -> None:
    assert percent_saved(2.0, 0.5) == pytest.approx(75.0)
    assert percent_saved(1.0, 1.5) == pytest.approx(-50.0)
    assert percent_saved(0.0, 1.0) is None and percent_saved(None, 1.0) is None


LEVELS = [
    lv("base", 1, 1.0), lv("base", 2, 2.0),
    lv("cand", 1, 2.0), lv("cand", 2, 4.0), lv("cand", 4, 5.0),
]
PRICING = Pricing(per_instance_hour={"base": 7.2, "default": 3.6}, currency="EUR")


def test_cost_table_levels_capacity_and_savings() -> None:
    caps = {"base": {"capacity": 1, "status": "reached"}, "cand": {"capacity": 2, "status": "reached"}}
    table = cost_table(LEVELS, PRICING, caps, baseline="base")
    assert table["currency"] == "EUR" and table["baseline"] == "base" and table["assumptions"]
    base, cand = table["targets"]["base"], table["targets"]["cand"]
    # base: 7.2 / (rps * 3600) = 0.002 / rps; cand: 0.001 / rps (per request).
    assert [r["cost_per_1k_requests"] for r in base["levels"]] == [pytest.approx(2.0), pytest.approx(1.0)]
    assert [r["cost_per_1k_requests"] for r in cand["levels"]] == [
        pytest.approx(0.5), pytest.approx(0.25), pytest.approx(0.2)]
    assert base["at_capacity"]["cost_per_1k_requests"] == pytest.approx(2.0)
    assert cand["at_capacity"]["capacity"] == 2 and not cand["at_capacity"]["lower_bound_only"]
    vs = cand["vs_baseline"]
    assert vs["at_capacity"]["percent_saved"] == pytest.approx(87.5)  # (2.0 - 0.25) / 2.0
    assert [(m["level"], m["percent_saved"]) for m in vs["matched_levels"]] == [
        (1, pytest.approx(75.0)), (2, pytest.approx(75.0))]  # level 4 has no baseline to match
    assert "vs_baseline" not in base


def test_cost_table_without_capacity_and_not_reached() -> None:
    table = cost_table(LEVELS, PRICING)
    assert table["targets"]["cand"]["at_capacity"] is None and "vs_baseline" not in table["targets"]["cand"]
    caps = {"cand": {"capacity": 4, "status": "not_reached"},
            "base": {"capacity": None, "status": "below_lowest"}}
    table = cost_table(LEVELS, PRICING, caps, baseline="base")
    cand = table["targets"]["cand"]
    assert cand["at_capacity"]["lower_bound_only"]
    assert cand["at_capacity"]["cost_per_1k_requests"] == pytest.approx(0.2)
    assert cand["vs_baseline"]["at_capacity"] == {
        "baseline_cost_per_1k": None, "cost_per_1k": pytest.approx(0.2), "percent_saved": None}


def test_pricing_validation_and_problems() -> None:
    with pytest.raises(ValidationError, match="per_instance_hour"):
        Pricing()
    with pytest.raises(ValidationError, match="finite and >= 0"):
        Pricing(per_instance_hour={"t": -1.0})
    with pytest.raises(ValidationError, match="finite and >= 0"):
        Pricing(per_million_output_tokens={"t": float("nan")})
    with pytest.raises(ValidationError, match="extra"):
        Pricing(per_instance_hour={"t": 1.0}, per_hour=2)
    problems = pricing_problems(Pricing(per_instance_hour={"bsae": 1.0, "cand": 1.0}), ["base", "cand"])
    assert problems == ["pricing.per_instance_hour: 'bsae' is not a target (targets: base, cand)",
                        "pricing: target 'base' has no price (and there is no 'default')"]
    assert pricing_problems(PRICING, ["base", "cand"]) == []
