"""The final table per target x level, rendered from result.json data alone."""

from __future__ import annotations

from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _ms(v: Optional[float]) -> str:
    return "-" if v is None else (f"{v:.1f}" if v < 1000 else f"{v:,.0f}")


def _num(v: Optional[float], digits: int = 1) -> str:
    return "-" if v is None else f"{v:,.{digits}f}"


def render_result(result: dict[str, Any], console: Console) -> None:
    levels = result.get("levels", [])
    rate_mode = any(lv.get("pattern") == "rate" for lv in levels)
    title = f"{result.get('scenario', '')} — {result.get('run_id', '')}"
    if not result.get("complete"):
        title += "  [INCOMPLETE" + (f": {result['interrupted']}" if result.get("interrupted") else "") + "]"
    table = Table(title=title, show_lines=False)
    for col in ("target", "load", "ok/n", "err %", "TTFT p50", "p90", "p95", "p99", "ITL p50", "p99",
                "TPOT p50", "E2E p50", "p95", "p99", "req/s", "tok/s"):
        table.add_column(col, justify="right" if col not in ("target",) else "left")
    if rate_mode:
        table.add_column("lag p99", justify="right")
        table.add_column("TTFT@sched p99", justify="right")
    for lv in levels:
        m = lv["metrics"]
        req = lv["requests"]
        err = lv.get("error_rate")
        row = [
            lv["target"], f"{lv['level']:g}" + ("*" if (lv.get("client") or {}).get("saturated") else ""),
            f"{req['ok']}/{req['measured']}",
            "-" if err is None else f"{100 * err:.1f}",
            _ms(m["ttft_ms"]["p50"]), _ms(m["ttft_ms"]["p90"]), _ms(m["ttft_ms"]["p95"]),
            _ms(m["ttft_ms"]["p99"]),
            _ms(m["itl_ms"]["p50"]), _ms(m["itl_ms"]["p99"]), _ms(m["tpot_ms"]["p50"]),
            _ms(m["e2e_ms"]["p50"]), _ms(m["e2e_ms"]["p95"]), _ms(m["e2e_ms"]["p99"]),
            _num(lv["throughput"]["requests_per_s"], 2), _num(lv["throughput"]["output_tokens_per_s"], 0),
        ]
        if rate_mode:
            row.append(_ms(m.get("client_lag_ms", {}).get("p99")))
            row.append(_ms(m.get("ttft_from_scheduled_ms", {}).get("p99")))
        table.add_row(*row)
    console.print(table)
    console.print("latencies in ms; load = concurrent users (concurrency) or req/s (rate)")
    if any((lv.get("client") or {}).get("saturated") for lv in levels):
        console.print("[yellow]* the load generator itself was saturated at this level (see notes)[/]")
    for lv in levels:  # failures by class: every failed request is counted, and how it failed
        req = lv["requests"]
        errors = ", ".join(f"{k} {v}" for k, v in (req.get("errors") or {}).items())
        retried = ", ".join(f"{k} {v}" for k, v in (req.get("retried") or {}).items())
        if errors or retried:
            console.print(f"errors {escape(lv['target'])} @ {lv['level']:g}: {errors or 'none'}"
                          + (f" (retried attempts, not counted above: {retried})" if retried else ""))
    for name, entry in result.get("targets", {}).items():
        server = entry.get("server") or {}
        cold = (entry.get("cold") or {}).get("requests") or []
        if server.get("launch_to_ready_s") is not None or cold:
            firsts = ", ".join(
                f"TTFT {_ms(c['ttft_ms'])} / E2E {_ms(c['e2e_ms'])}" if not c.get("error") else c["error"]
                for c in cold
            )
            ready = server.get("launch_to_ready_s")
            console.print(
                f"cold start {escape(name)}: launch→ready {_num(ready, 2)} s" + (f"; first requests: {firsts}" if cold else "")
            )
        for lv in levels:
            if lv["target"] == name and lv["tokens"]["usage_missing"]:
                console.print(f"[yellow]{name} @ {lv['level']:g}: {lv['tokens']['usage_missing']} responses "
                              "without usage; their token counts are chunk counts[/]")
    for failure in result.get("failures", []):
        console.print(f"[red]failure:[/] {escape(failure)}")
    for note in result.get("notes", []):
        console.print(f"[yellow]note:[/] {escape(note)}")
