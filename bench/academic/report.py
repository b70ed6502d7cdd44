"""The academic section of report.html (from result.json alone) and its terminal table.

Informational: the section says so first, shows each candidate's perplexity, Δ vs the baseline, mean KLD,
same-top-token rate beside the quality pass's agreement and flips, then every finding where the views
disagree, then the endpoint probe, endpoint perplexity and lm-eval tasks.
"""

from __future__ import annotations

import math
from typing import Any

from bench.report.svg import PALETTE, Series, bytes_h, chart, esc, finite, num, rate

CALLOUT = {"disagree": "warn", "identical": "note", "label_order": "note", "agree": "note", "rank": "note"}


def _g(d: Any, *path: Any) -> Any:
    for k in path:
        if not isinstance(d, dict):
            return None
        d = d.get(k)
    return d


def _pm(v: Any, e: Any, spec: str = ".4f") -> str:
    return num(v, spec) + (f" ± {e:{spec}}" if finite(e) and finite(v) else "")


def _pct_pm(v: Any, e: Any) -> str:
    return rate(v, 1) + (f" ± {100 * e:.1f}" if finite(e) and finite(v) else "")


def _delta(d: Any) -> str:
    """Relative perplexity change: '+38.4%', or '×2,254' once the ratio passes 10."""
    if not finite(d):
        return "–"
    return f"×{d + 1:,.0f}" if d + 1 >= 10 else f"{100 * d:+.1f}%"


def fidelity_rows(section: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per llama.cpp target (baseline first): the numbers both renderers show."""
    targets = _g(section, "llamacpp", "targets") or {}
    cmp_rows = _g(section, "comparison", "targets") or {}
    base = next((e for e in targets.values() if e.get("role") == "baseline"), {})
    base_ppl = _g(base, "ppl", "value")
    rows = []
    def order(kv: tuple[str, dict[str, Any]]) -> tuple[bool, float, str]:  # baseline, then closest first
        k = _g(kv[1], "kld", "mean")
        return kv[1].get("role") != "baseline", k if finite(k) else math.inf, kv[0]

    for name, e in sorted(targets.items(), key=order):
        ppl = _g(e, "ppl", "value")
        ref = _g(e, "ppl_base", "value") or base_ppl
        q = _g(cmp_rows, name, "quality") or {}
        lm = _g(cmp_rows, name, "lmeval") or {}
        rows.append({
            "name": name, "role": e.get("role"), "quantization": e.get("quantization"),
            "size_bytes": e.get("size_bytes"), "ppl": ppl, "ppl_err": _g(e, "ppl", "err"),
            "ppl_delta": None if e.get("role") == "baseline" or not (finite(ppl) and finite(ref) and ref)
            else ppl / ref - 1,
            "kld": _g(e, "kld", "mean"), "kld_err": _g(e, "kld", "mean_err"),
            "kld_p99": _g(e, "kld", "p99.0"),
            "same_top": _g(e, "same_top", "value"), "same_top_err": _g(e, "same_top", "err"),
            "rms_dp": _g(e, "delta_p", "rms"), "agreement": q.get("agreement"),
            "r2w": q.get("right_to_wrong"), "w2r": q.get("wrong_to_right"), "n_pairs": q.get("n_pairs"),
            "lmeval": lm.get("score"), "lmeval_err": lm.get("stderr"), "lmeval_metric": lm.get("metric"),
            "error": e.get("error"), "note": e.get("note"),
        })
    return rows


def section_html(section: dict[str, Any], color: dict[str, str], dot: Any) -> str:
    """The section body (the caller wraps it); ``dot(name)`` draws a target's coloured name."""
    if not isinstance(section, dict) or not section:
        return ""
    parts = ['<p class="callout note"><b>Informational.</b> Perplexity, KL divergence and benchmark scores '
             "describe the model, not the product: they never approve a candidate (no gate reads them).</p>"]
    text, settings = section.get("text") or {}, section.get("settings") or {}
    parts.append(f'<p class="hint">held-out text <code>{esc(text.get("path", "?"))}</code> '
                 f'({esc(text.get("bytes", "?"))} bytes, sha256 {esc(str(text.get("sha256"))[:12])}) · '
                 f'llama-perplexity ctx {esc(settings.get("ctx"))}'
                 + (f', first {esc(settings["chunks"])} chunks' if settings.get("chunks") else "") + "</p>")
    rows = fidelity_rows(section)
    if rows:
        head = ["target", "role", "weights", "size", "perplexity", "Δ ppl vs baseline", "mean KLD (nats)",
                "KLD p99", "same top token", "RMS Δp", "agreement", "flips R→W / W→R", "lm-eval"]
        body = []
        for r in rows:
            flips = (f'<span class="badt">{esc(r["r2w"])}</span> / <span class="okt">{esc(r["w2r"])}</span>'
                     if r["r2w"] is not None else "–")
            lm = _pm(r["lmeval"], r["lmeval_err"], ".3f") if finite(r["lmeval"]) else "–"
            cells = [dot(r["name"]), esc(r["role"] or ""), esc(r["quantization"] or "–"),
                     bytes_h(r["size_bytes"]),
                     _pm(r["ppl"], r["ppl_err"], ".2f"),
                     _delta(r["ppl_delta"]),
                     _pm(r["kld"], r["kld_err"]), num(r["kld_p99"], ".3f"),
                     _pct_pm(r["same_top"], r["same_top_err"]),
                     rate(r["rms_dp"]), rate(r["agreement"]), flips, lm]
            if r["error"]:
                cells[4:] = [f'<span class="badt">{esc(r["error"])}</span>'] + [""] * (len(cells) - 5)
            body.append(cells)
        parts.append(_table(head, body))
        parts.append('<p class="hint">KLD and same-top-token compare each candidate\'s next-token '
                     "distribution with the baseline's on every scored token of the held-out text; agreement "
                     "and flips come from this run's quality pass (same targets, product eval set).</p>")
    for s in _g(section, "comparison", "statements") or []:
        parts.append(f'<p class="callout {CALLOUT.get(s.get("kind"), "note")}">{esc(s.get("text"))}</p>')
    parts.append(_endpoints(section.get("endpoints") or {}, dot))
    parts.append(_plot(rows, color))
    parts.append(_lmeval_plot(rows, color))
    return "".join(parts)


def _table(head: list[str], rows: list[list[str]]) -> str:
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="academic"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def _endpoints(endpoints: dict[str, Any], dot: Any) -> str:
    if not endpoints:
        return ""
    rows = []
    for name, e in endpoints.items():
        if e.get("error"):
            rows.append([dot(name), f'<span class="badt">{esc(e["error"])}</span>', "", "", ""])
            continue
        pr = e.get("probe") or {}
        probe = ("–" if not pr else '<span class="okt">yes</span>' if pr.get("supported")
                 else f'<span class="badt">no</span> <span class="hint">'
                      f'{esc(str(pr.get("reason") or "").removeprefix("no prompt logprobs: "))}</span>')
        p = e.get("perplexity") or {}
        ppl = (num(p.get("ppl"), ".2f") + f' <span class="hint">({esc(p.get("tokens"))} tokens)</span>'
               if p.get("status") == "ok" else esc(p.get("status") or "–"))
        lm = e.get("lmeval") or {}
        tasks = []
        for task, t in (lm.get("tasks") or {}).items():
            for metric, v in (t.get("metrics") or {}).items():
                score = _pm(v.get("value"), v.get("stderr"), ".3f")
                n = esc(t.get("n"))
                tasks.append(f'{esc(task)} {esc(metric)} <b>{score}</b> <span class="hint">n={n}</span>')
        if lm.get("status") == "error":
            tasks.append(f'<span class="badt">{esc(lm.get("error"))}</span>')
        refused = "<br>".join(f'<span class="badt">{esc(x)}</span>' for x in e.get("refused") or [])
        rows.append([dot(name), probe, ppl, "<br>".join(tasks) or "–", refused or "–"])
    head = ["target", "prompt logprobs", "endpoint perplexity", "lm-eval", "refused"]
    return "<h3>Through the endpoints</h3>" + _table(head, rows)


def _plot(rows: list[dict[str, Any]], color: dict[str, str]) -> str:
    """Mean KLD against size on disk, one point per candidate (log10 KLD when they span 20x: the chart
    has no log y axis, so the values are plotted as log10 and the axis says so)."""
    pts = [r for r in rows if finite(r["size_bytes"]) and finite(r["kld"]) and r["kld"] > 0]
    if len(pts) < 2:
        return ""
    log = max(r["kld"] for r in pts) / min(r["kld"] for r in pts) > 20

    def y(v: float) -> float:
        return math.log10(v) if log else v

    series = []
    for r in pts:
        err = r["kld_err"] if finite(r["kld_err"]) else 0.0
        bar = None if log else (r["kld"] - err, r["kld"] + err)
        series.append(Series(r["name"], [(r["size_bytes"] / 2 ** 20, y(r["kld"]))],
                             color.get(r["name"], PALETTE[0]), line=False, labels=[r["name"]], sizes=[5],
                             errors=[bar]))
    svg = chart(series, title="Mean KLD vs size on disk", x_label="model size on disk (MiB)",
                y_label="log10 mean KLD (nats)" if log else "mean KLD (nats)", width=940, height=340,
                y_zero=not log)
    return svg + '<p class="hint">Lower is closer to the baseline; left is smaller.</p>'


def _lmeval_plot(rows: list[dict[str, Any]], color: dict[str, str]) -> str:
    """The lm-eval score against size on disk, frontier ringed (smaller and better than every other)."""
    pts = [r for r in rows if finite(r["size_bytes"]) and finite(r["lmeval"])]
    if len(pts) < 2:
        return ""
    frontier, best = set(), -math.inf
    for r in sorted(pts, key=lambda r: (r["size_bytes"], -r["lmeval"])):
        if r["lmeval"] > best:
            frontier.add(r["name"])
            best = r["lmeval"]
    series = []
    for r in pts:
        err = r["lmeval_err"] if finite(r["lmeval_err"]) else None
        series.append(Series(r["name"], [(r["size_bytes"] / 2 ** 20, r["lmeval"])],
                             color.get(r["name"], PALETTE[0]), line=False, labels=[r["name"]], sizes=[5],
                             errors=[(r["lmeval"] - err, r["lmeval"] + err) if err is not None else None],
                             highlight=[r["name"] in frontier]))
    metric = esc(pts[0]["lmeval_metric"] or "score")
    svg = chart(series, title=f"lm-eval {metric} vs size on disk", x_label="model size on disk (MiB)",
                y_label=f"{metric} (± stderr)", width=940, height=340)
    return svg + ('<p class="hint">Up and to the left is better; ringed points are on the Pareto frontier. '
                  "A benchmark score, not the product metric.</p>")


def render_terminal(section: dict[str, Any]) -> None:
    """The fidelity table, the findings and the endpoint lines on stdout (rich)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        console = Console(width=170)
    rows = fidelity_rows(section)
    if rows:
        t = Table(title="academic: llama-perplexity on the held-out text (informational)")
        for h in ("target", "role", "weights", "size", "ppl", "Δppl", "mean KLD", "same top", "agreement",
                  "R→W/W→R", "lm-eval"):
            t.add_column(h, justify="left" if h in ("target", "role", "weights") else "right")
        for r in rows:
            t.add_row(r["name"], r["role"] or "", r["quantization"] or "", bytes_h(r["size_bytes"]),
                      _pm(r["ppl"], r["ppl_err"], ".2f") if not r["error"] else f"error: {r['error'][:60]}",
                      _delta(r["ppl_delta"]),
                      _pm(r["kld"], r["kld_err"]), _pct_pm(r["same_top"], r["same_top_err"]),
                      rate(r["agreement"]), f"{r['r2w']}/{r['w2r']}" if r["r2w"] is not None else "–",
                      _pm(r["lmeval"], r["lmeval_err"], ".3f") if finite(r["lmeval"]) else "–")
        console.print(t)
    for s in _g(section, "comparison", "statements") or []:
        console.print(f"{s.get('kind')}: {s.get('text')}", markup=False, highlight=False)
    for name, e in (section.get("endpoints") or {}).items():
        pr, p, lm = e.get("probe") or {}, e.get("perplexity") or {}, e.get("lmeval") or {}
        bits = [f"prompt logprobs: {'yes' if pr.get('supported') else 'no'}" if pr else ""]
        if p.get("status") == "ok":
            bits.append(f"endpoint ppl {p['ppl']:.2f} ({p['tokens']} tokens)")
        for task, tk in (lm.get("tasks") or {}).items():
            for metric, v in (tk.get("metrics") or {}).items():
                score = _pm(v.get("value"), v.get("stderr"), ".3f")
                bits.append(f"{task} {metric} {score} (n={tk.get('n')})")
        if lm.get("status") == "error" or e.get("error"):
            bits.append(f"error: {lm.get('error') or e.get('error')}")
        console.print(f"{name}: " + " · ".join(b for b in bits if b), markup=False, highlight=False)


def academic(ctx: Any) -> str:
    """report.html's section builder (``bench.report.html.render_report`` calls it with its Ctx)."""
    section = _g(ctx.r, "academic")
    body = section_html(section, ctx.color, ctx.dot) if isinstance(section, dict) else ""
    if not body:
        return ""
    lead = ("The academic view of the same targets: how far each compressed model's token distribution moved "
            "from the baseline's on a held-out text, beside what the quality pass saw on the product task.")
    return (f'<section id="academic"><h2>{esc("Perplexity, KL divergence and benchmarks")}</h2>'
            f'<p class="lead">{esc(lead)}</p>{body}</section>')
