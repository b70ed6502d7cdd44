"""``report.html``: one self-contained page per run, built from the run directory alone.

Inline CSS and inline SVG only (no JavaScript, no external URL, no web font), so the file opens
offline and can be attached to a CI run. Every section is optional: a section whose data is
absent is left out, and a section that cannot be drawn says so instead of failing the report.
Every string taken from the run is escaped.
"""

from __future__ import annotations

import math
import shlex
import time
from pathlib import Path
from typing import Any, Optional

import orjson

from bench.academic.report import academic
from bench.report.svg import (
    INK, MUTED, PALETTE, STYLESHEET, RefLine, Series, bytes_h, chart, ci_bar, esc, finite, hbars, ms, num,
    rate, saved, with_ci,
)

VERDICT = {"pass": ("PASS", "ok"), "fail": ("FAIL", "bad"), "inconclusive": ("INCONCLUSIVE", "warn")}
EXIT = {0: ("PASS", "ok", "every gate passes"), 1: ("FAIL", "bad", "at least one gate fails"),
        3: ("INCONCLUSIVE", "warn", "no gate fails, but some cannot be decided on this data")}
AXES = {"concurrency": "concurrency (requests in flight)", "rate": "offered rate (requests/s)"}
SLO_RED = "#c62828"


def write_report(run_dir: Path) -> Path:
    """Build ``run_dir/report.html`` from manifest.json and result.json; returns its path.
    Missing or unreadable files give a shorter report, never an exception."""
    run_dir = Path(run_dir)
    out, tmp = run_dir / "report.html", run_dir / "report.html.tmp"
    tmp.write_text(render_report(_load(run_dir / "manifest.json"), _load(run_dir / "result.json")), "utf-8")
    tmp.replace(out)
    return out


def _load(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def g(d: Any, *path: Any, default: Any = None) -> Any:
    """d[path[0]][path[1]]..., or ``default`` as soon as a step is missing (or None)."""
    for k in path:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return default
        if d is None:
            return default
    return d


# -- HTML pieces -----------------------------------------------------------------------------
def table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    """Cells and headers are HTML already: escape data before passing it in."""
    th = "".join(f"<th>{h}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def kv(pairs: list[tuple[str, str]]) -> str:
    return table(["", ""], [[k, v] for k, v in pairs if v], "kv")


def section(sid: str, title: str, body: str, lead: str = "") -> str:
    lead_html = f'<p class="lead">{lead}</p>' if lead else ""
    return f'<section id="{sid}"><h2>{esc(title)}</h2>{lead_html}{body}</section>'


def pill(text: str, cls: str) -> str:
    return f'<span class="pill {cls}">{esc(text)}</span>'


def grid(charts: list[str]) -> str:
    return f'<div class="grid2">{"".join(charts)}</div>'


# -- the page ---------------------------------------------------------------------------------
class Ctx:
    """What the sections share: the run, target order and colours, levels by target."""

    def __init__(self, manifest: dict[str, Any], result: dict[str, Any]):
        self.m, self.r = manifest, result
        self.q = g(result, "quality") if isinstance(g(result, "quality"), dict) else {}
        self.primary = self.q.get("primary")
        self.levels: dict[str, list[dict[str, Any]]] = {}
        for lv in g(result, "levels") if isinstance(g(result, "levels"), list) else []:
            if isinstance(lv, dict) and finite(lv.get("level")):
                self.levels.setdefault(str(lv.get("target")), []).append(lv)
        for lvs in self.levels.values():
            lvs.sort(key=lambda lv: lv["level"])
        self.names: list[str] = []
        for src in (g(manifest, "targets"), g(result, "targets"), g(self.q, "targets"), self.levels):
            self.names += [n for n in (src if isinstance(src, dict) else {}) if n not in self.names]
        self.color = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(self.names)}
        self.pattern = g(manifest, "scenario", "load", "pattern") or g(result, "levels", 0, "pattern")

    def role(self, name: str) -> str:
        return str(g(self.m, "targets", name, "configured", "role") or g(self.r, "targets", name, "role")
                   or g(self.q, "targets", name, "role") or "")

    def facts(self, name: str) -> dict[str, Any]:
        return g(self.m, "targets", name, "server", "model_facts", default={})

    def dot(self, name: Any) -> str:
        colour = self.color.get(str(name), INK)
        return f'<span class="nw"><span class="dot" style="background:{colour}"></span>{esc(name)}</span>'

    def metric(self, name: str, slice_name: str = "all") -> Optional[dict[str, Any]]:
        """The primary quality metric (model-only, else end-to-end) of a target on a slice."""
        metrics = g(self.q, "targets", name, "slices", slice_name, "metrics", default={})
        return (metrics.get(self.primary) or metrics.get(f"{self.primary}@e2e")) if self.primary else None

    def level_chart(self, series: list[Series], **kw: Any) -> str:
        """Levels on x: log scale, ticked at the measured levels, when they span a factor of 4."""
        levels = sorted({lv["level"] for lvs in self.levels.values() for lv in lvs})
        log = bool(levels) and levels[0] > 0 and levels[-1] / levels[0] >= 4
        axis = AXES.get(str(self.pattern), f"load level ({self.pattern or '?'})")
        return chart(series, x_label=axis, x_log=log, x_ticks=levels, **kw)


def render_report(manifest: dict[str, Any], result: dict[str, Any]) -> str:
    """The whole page as a string (``write_report`` writes it)."""
    manifest, result = (x if isinstance(x, dict) else {} for x in (manifest, result))
    ctx = Ctx(manifest, result)
    parts = []
    for build in (header, glance, gates, latency, throughput, pareto, calibration, slices, capacity, router,
                  academic, facts):
        try:
            parts.append(build(ctx))
        except Exception as e:  # noqa: BLE001 - one bad section must not lose the others
            parts.append(section(build.__name__, build.__name__, '<p class="callout warn">this section could '
                                 f"not be drawn: {esc(type(e).__name__)}: {esc(e)}</p>"))
    title = " · ".join(str(x) for x in ("benchbox", g(result, "scenario") or g(manifest, "scenario", "name"),
                                        g(result, "run_id") or g(manifest, "run_id")) if x)
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{STYLESHEET}</style></head><body><main>{''.join(parts)}"
            "<footer>generated by benchbox from manifest.json and result.json · self-contained: no scripts, "
            "no external resources</footer></main></body></html>\n")


def header(ctx: Ctx) -> str:
    m, r = ctx.m, ctx.r
    created = m.get("created_unix")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(created)) if finite(created) else ""
    badge = pill("complete", "ok") if r.get("complete") is True else pill("incomplete", "bad")
    results, code = g(r, "gates", "results", default=[]), g(r, "gates", "exit_code")
    if not r:
        word, cls, summary, why = "NO RESULT", "none", "no readable result.json", "only the manifest is shown"
    elif results or code is not None:
        counts = {v: sum(1 for x in results if g(x, "verdict") == v) for v in VERDICT}
        summary = " · ".join(f"{n} {v}" for v, n in counts.items() if n) or "no gate results"
        word, cls, why = EXIT.get(code, (f"EXIT {code}", "warn", "unexpected exit code"))
        why = f"{esc(why)} · exit code <b>{esc(code)}</b>"
    else:
        word, cls, summary, why = "NO GATES", "none", "this run has no acceptance gates", "nothing to decide"
    alerts = [("bad", f"interrupted: {r['interrupted']}")] if r.get("interrupted") else []
    alerts += [("bad", f"failure: {f}") for f in g(r, "failures", default=[])]
    alerts += [("note", n) for n in g(r, "notes", default=[])]
    return (f'<header class="hero"><div class="eyebrow">benchbox run report</div>'
            f'<h1>{esc(r.get("scenario") or g(m, "scenario", "name") or "unnamed scenario")}</h1>'
            f'<p class="desc">{esc(g(m, "scenario", "description") or "")}</p>'
            + f'<div class="meta">run <code>{esc(r.get("run_id") or m.get("run_id") or "?")}</code> {badge} '
            f'{esc(when)}</div><div class="decision {cls}"><div class="big">{esc(word)}</div><div>'
            f'<div class="sum">{esc(summary)}</div><div class="why">{why}</div></div></div>'
            + "".join(f'<p class="callout {c}">{esc(t)}</p>' for c, t in alerts) + "</header>")


def glance(ctx: Ctx) -> str:
    cards = []
    for n in ctx.names:
        f, lvs, cap = ctx.facts(n), ctx.levels.get(n, []), g(ctx.r, "capacity", n, default={})
        model = esc(f.get("quantization") or g(ctx.m, "targets", n, "configured", "model") or "")
        model += f" · {bytes_h(f['size_bytes'])}" if finite(f.get("size_bytes")) else ""
        cap_s = num(cap.get("capacity"), "g") if finite(cap.get("capacity")) else "not reached"
        pc = g(ctx.r, "cost", "targets", n, "vs_baseline", "at_capacity", "percent_saved")
        rows = [("model", model), (esc(ctx.primary or "quality"), with_ci(ctx.metric(n))),
                (f"TTFT p95 @ {num(g(lvs, 0, 'level'), 'g')}", ms(g(lvs, 0, "metrics", "ttft_ms", "p95"))),
                ("capacity", cap_s if cap else ""), ("cost vs baseline", saved(pc))]
        body = "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in rows if v not in ("", "–"))
        cards.append(f'<div class="card" style="border-top-color:{ctx.color[n]}"><div class="cname">'
                     f'{ctx.dot(n)} <span class="role">{esc(ctx.role(n))}</span></div><dl>{body}</dl></div>')
    body = f'<div class="cards">{"".join(cards)}</div>'
    return section("glance", "Targets at a glance", body) if cards else ""


def gates(ctx: Ctx) -> str:
    rows = []
    for x in g(ctx.r, "gates", "results", default=[]):
        word, cls = VERDICT.get(str(g(x, "verdict")), (str(g(x, "verdict")), "warn"))
        gate = str(g(x, "gate") or "")
        latency = gate.split(".")[0].strip().lower() in ("ttft", "itl", "tpot", "e2e")
        f = ms if latency else (lambda v: rate(v, 2) if finite(v) and abs(v) <= 1 else num(v))
        detail = esc(g(x, "detail") or "")
        if g(x, "verdict") == "inconclusive" and finite(g(x, "items_needed")):
            detail += f'<div class="hint">about {x["items_needed"]:,} items would settle it</div>'
        measured = f'<b>{f(g(x, "measured"))}</b><div class="hint">budget {f(g(x, "budget"))}</div>'
        rows.append([pill(word, cls), ctx.dot(g(x, "target") or ""), f"<code>{esc(gate)}</code>", measured,
                     detail])
    body = table(["verdict", "target", "gate", "measured", "detail"], rows, "gates")
    return section("gates", "Acceptance gates", body) if rows else ""


def _slo(ctx: Ctx, key: Optional[str]) -> list[RefLine]:
    v = g(ctx.m, "scenario", "slo", key) if key else None
    return [RefLine(v, f"SLO {v:g} ms", SLO_RED)] if finite(v) else []


def latency(ctx: Ctx) -> str:
    charts = []
    for title, metric, key, slo in (("TTFT p50", "ttft_ms", "p50", None),
                                    ("TTFT p95", "ttft_ms", "p95", "ttft_p95_ms"),
                                    ("TTFT p99", "ttft_ms", "p99", "ttft_p99_ms"),
                                    ("E2E p95", "e2e_ms", "p95", "e2e_p95_ms")):
        series = [Series(n, [(lv["level"], g(lv, "metrics", metric, key)) for lv in lvs], ctx.color[n])
                  for n, lvs in ctx.levels.items()]
        charts.append(ctx.level_chart(series, title=title, y_label="milliseconds", refs=_slo(ctx, slo)))
    return section("latency", "Latency vs load", grid(charts), "Each line is one target through its load "
                   "levels; the dashed red line is the SLO.") if ctx.levels else ""


def throughput(ctx: Ctx) -> str:
    series = [Series(n, [(g(lv, "throughput", "output_tokens_per_s"), g(lv, "metrics", "ttft_ms", "p95"))
                         for lv in lvs], ctx.color[n], labels=[f"@{lv['level']:g}" for lv in lvs])
              for n in ctx.names if (lvs := ctx.levels.get(n))]
    svg = chart(series, title="Output tokens/s vs TTFT p95", x_label="output tokens / s", width=940,
                height=380, y_label="TTFT p95 (ms)", refs=_slo(ctx, "ttft_p95_ms"))
    return section("throughput", "Throughput vs latency", svg, "Points are load levels (labelled @level): "
                   "lower and further right is better.") if series else ""


def pareto(ctx: Ctx) -> str:
    pts = {n: m for n, m in ((n, ctx.metric(n)) for n in ctx.names) if finite(g(m, "value"))}
    sizes = {n: g(ctx.facts(n), "size_bytes") for n in pts}
    if pts and all(finite(v) for v in sizes.values()):
        div, unit = (2 ** 30, "GiB") if max(sizes.values()) >= 2 ** 30 else (2 ** 20, "MiB")
        xs, x_label = {n: v / div for n, v in sizes.items()}, f"model size on disk ({unit})"
    else:
        xs = {n: g(ctx.levels.get(n), 0, "metrics", "ttft_ms", "p95") for n in pts}
        x_label = "TTFT p95 at the lowest load level (ms)"
    pts = {n: m for n, m in pts.items() if finite(xs.get(n))}
    frontier, best = [], -math.inf  # smaller x and higher quality are better
    for n in sorted(pts, key=lambda n: (xs[n], -pts[n]["value"])):
        if pts[n]["value"] > best:
            frontier.append(n)
            best = pts[n]["value"]
    series = [Series(n, [(xs[n], m["value"])], ctx.color[n], line=False, labels=[n], sizes=[5],
                     errors=[tuple(m["ci95"]) if len(g(m, "ci95", default=[])) == 2 else None],
                     highlight=[n in frontier]) for n, m in pts.items()]
    series.append(Series("Pareto frontier", [(xs[n], pts[n]["value"]) for n in frontier], "#888",
                         markers=False, dash="5 4", width=1.5))
    unit = all(0 <= m["value"] <= 1 for m in pts.values())
    what = x_label.split(" (")[0]
    svg = chart(series, title=f"{ctx.primary} vs {what}", x_label=x_label, y_label=f"{ctx.primary} (95% CI)",
                width=940, height=400, y_pct=unit, y_zero=not unit)
    return section("pareto", "Quality vs " + ("size" if "size" in what else "latency"), svg,
                   "Up and to the left is better; ringed points are on the Pareto frontier (no other target "
                   "is both smaller/faster and better), bars are 95% intervals.") if pts else ""


def calibration(ctx: Ctx) -> str:
    charts = []
    for n in ctx.names:
        cal = g(ctx.q, "targets", n, "calibration", default={})
        bins = [b for b in g(cal, "bins", default=[]) if isinstance(b, dict)]
        if not bins:
            continue
        counts = [b.get("count") if finite(b.get("count")) else 0 for b in bins]
        top = max(counts) or 1
        label = f"{n} (ECE {num(cal.get('ece'), '.3f')}, Brier {num(cal.get('brier'), '.3f')})"
        series = [Series("perfect calibration", [(0, 0), (1, 1)], "#9aa0a6", True, False, "4 4", 1.2),
                  Series(label, [(b.get("mean_confidence"), b.get("accuracy")) for b in bins], ctx.color[n],
                         sizes=[3 + 4 * math.sqrt(max(0, c) / top) for c in counts])]
        charts.append(chart(series, title=f"Reliability: {n}", x_label="mean confidence in bin", width=460,
                            y_label="accuracy in bin", x_range=(0, 1), y_range=(0, 1), x_pct=True, y_pct=True,
                            height=380, note=f"{cal.get('n', sum(counts))} items in {len(bins)} bins; "
                                             "marker area ~ bin size"))
    return section("calibration", "Confidence calibration", grid(charts),
                   "Points below the diagonal are over-confident.") if charts else ""


def _vs_cells(v: dict[str, Any]) -> list[str]:
    """Agreement, flips, difference and McNemar p of one slice against the baseline."""
    flips, p, diff = g(v, "flips", default={}), g(v, "mcnemar_p"), g(v, "difference")
    flip_s = (f'<span class="badt">{esc(flips.get("right_to_wrong", 0))}</span> / '
              f'<span class="okt">{esc(flips.get("wrong_to_right", 0))}</span>') if flips else "–"
    return [with_ci(g(v, "agreement")), flip_s, f"{100 * diff:+.1f} pt" if finite(diff) else "–",
            f'<b class="badt">{p:.3g}</b>' if finite(p) and p < 0.05 else num(p, ".3g")]


def slices(ctx: Ctx) -> str:
    targets = g(ctx.q, "targets", default={})
    parts = []
    for name, trust in g(ctx.q, "judges", default={}).items():
        ok = g(trust, "trusted") is True
        parts.append(f'<p class="callout {"note" if ok else "bad"}">judge <b>{esc(name)}</b>: agreement with '
                     f'human labels {rate(g(trust, "agreement"))} (κ {num(g(trust, "kappa"), ".2f")}, '
                     f'n={esc(g(trust, "n", default="?"))}) → '
                     + ("trusted" if ok else "NOT trusted: its scores are shown, not believed")
                     + (f" · {esc(trust['error'])}" if g(trust, "error") else "") + "</p>")
    for n in [x for x in ctx.names if x in targets]:
        t, rows = targets[n], []
        vs = g(t, "vs_baseline", default={})
        for s, entry in g(t, "slices", default={}).items():
            m = ctx.metric(n, s)
            label = f"<b>{esc(s)}</b>" if s == "all" else esc(s)
            if g(m, "warning"):
                label += f' <span class="warnt" title="{esc(m["warning"])}">⚠ small</span>'
            outcomes = " · ".join(f"{esc(k)} {esc(c)}" for k, c in g(entry, "outcomes", default={}).items())
            value = with_ci(m) + ci_bar(m, color=ctx.color[n])
            rows.append([label, esc(g(entry, "n_items", default="–")), value, outcomes]
                        + (_vs_cells(g(vs, s, default={})) if vs else []))
        head = ["slice", "items", f"{esc(ctx.primary or 'primary')} [95% CI]", "outcomes"]
        head += ["agreement", "flips R→W / W→R", "Δ vs baseline", "McNemar p"] if vs else []
        stab, f1 = g(t, "stability", "instability"), g(t, "classes", "macro_f1")
        several = esc(g(t, "stability", "items_with_several_responses"))
        extra = [f"answer instability {rate(stab)} of {several} items"] if finite(stab) else []
        extra += [f"macro-F1 {f1:.3f}"] if finite(f1) else []
        parts.append(f'<h3>{ctx.dot(n)} <span class="role">{esc(t.get("role") or ctx.role(n))}</span></h3>'
                     + table(head, rows, "slices")
                     + (f'<p class="hint">{" · ".join(extra)}</p>' if extra else "")
                     + "".join(f'<p class="callout warn">{esc(d)}</p>' for d in g(t, "diagnosis", default=[])
                               ))
    lead = (f"Unit: {esc(ctx.q.get('unit') or 'items')}. ⚠ marks slices too small for a stable estimate; "
            "bars show the value and its 95% interval.")
    return section("slices", "Quality by slice", "".join(parts), lead) if targets else ""


def capacity(ctx: Ctx) -> str:
    caps, cost = g(ctx.r, "capacity", default={}), g(ctx.r, "cost", default={})
    cur = esc(cost.get("currency") or "")
    rows, bars, goodput = [], [], []
    for n in [x for x in ctx.names if x in caps or x in g(cost, "targets", default={})]:
        cap, at = g(caps, n, default={}), g(cost, "targets", n, "at_capacity", default={})
        level, per_1k = cap.get("capacity"), at.get("cost_per_1k_requests")
        gp = next((x for x in g(cap, "goodput", default=[]) if g(x, "level") == level), None)
        pc = g(cost, "targets", n, "vs_baseline", "at_capacity", "percent_saved")
        cap_s = f"<b>{level:g}</b>" if finite(level) else '<b class="badt">not reached</b>'
        good = f' <span class="hint">({rate(g(gp, "share_good"), 0)} good)</span>' if gp else ""
        cap_s += f' <span class="hint">{esc(cap.get("status") or "")}</span>'
        rows.append([ctx.dot(n), esc(ctx.role(n)), cap_s, num(cap.get("first_failing"), "g"),
                     num(g(gp, "goodput_per_s"), ".2f", "/s") + good, num(per_1k, ".4f", f" {cur}"),
                     saved(pc)])
        vs = "" if not finite(pc) else f" ({pc:.1f}% cheaper)" if pc >= 0 else f" ({-pc:.1f}% dearer)"
        bars.append((n, per_1k, ctx.color[n], num(per_1k, ".4f") + vs))
        if cap.get("goodput"):
            points = [(g(x, "level"), g(x, "goodput_per_s")) for x in cap["goodput"]]
            goodput.append(Series(n, points, ctx.color[n]))
    charts = [ctx.level_chart(goodput, title="Goodput (requests/s within the SLO)", width=460,
                              y_label="good requests / s")] if goodput else []
    if any(finite(v) for _, v, _, _ in bars):
        charts.append(hbars(bars, title=f"Cost per 1,000 requests at capacity ({cur})", width=460))
    notes = "".join(f"<li>{esc(a)}</li>" for a in g(cost, "assumptions", default=[]))
    head = ["target", "role", "capacity", "first failing", "goodput at capacity", "cost / 1k requests",
            "vs baseline"]
    body = table(head, rows, "cap") + grid(charts)
    if notes:
        body += f'<details><summary>cost assumptions</summary><ul class="hint">{notes}</ul></details>'
    return section("capacity", "Capacity and cost", body, "Capacity: the highest load level at which the SLO "
                   "holds; goodput counts only the requests that met it.") if rows else ""


def router(ctx: Ctx) -> str:
    ro = g(ctx.r, "router", default={})
    small, large = str(ro.get("small") or "small"), str(ro.get("large") or "large")
    fb, c, sw = g(ro, "fallback", default={}), g(ro, "cost", default={}), g(ro, "threshold_sweep", default={})
    allq = g(ro, "quality", "all")
    policies = ", ".join(f"{k} {v}" for k, v in g(fb, "by_policy", default={}).items())
    ci = f"[{rate(g(fb, 'ci95', 0), 0)}–{rate(g(fb, 'ci95', 1), 0)}]"
    body = kv([("route", f"{ctx.dot(small)} first, fall back to {ctx.dot(large)}"),
               ("fallback", f"<b>{rate(fb.get('rate'))}</b> of {esc(ro.get('n_items', '?'))} items "
                            f'<span class="hint">{ci} · by policy: {esc(policies)}</span>'),
               (f"blended {esc(ro.get('primary') or '')}", with_ci(g(allq, "blended"))
                + ci_bar(g(allq, "blended"))),
               (f"{esc(small)} alone", with_ci(g(allq, "small_alone"))),
               (f"{esc(large)} alone", with_ci(g(allq, "large_alone"))),
               ("blended cost / 1k", f"{num(c.get('blended_cost_per_1k'), '.4f')} vs "
                f"{num(c.get('large_cost_per_1k'), '.4f')} for {esc(large)} alone: "
                f"{saved(c.get('percent_saved_vs_large'), 'more expensive')}"
                if finite(c.get("blended_cost_per_1k")) else "")])
    points = [p for p in g(sw, "points", default=[]) if isinstance(p, dict)]
    if points:
        thr = ro.get("confidence_threshold")
        here = [finite(thr) and finite(p.get("threshold")) and abs(p["threshold"] - thr) < 1e-9
                for p in points]
        refs = [RefLine(v, f"{who} alone {rate(v, 0)}", ctx.color.get(who, MUTED)) for v, who in
                ((sw.get("small_alone_accuracy"), small), (sw.get("large_alone_accuracy"), large))
                if finite(v)]
        note = ("no response carries a confidence: the threshold changes nothing (request logprobs to use it)"
                if sw.get("confidence_missing") and sw.get("confidence_missing") == sw.get("n_items") else "")
        series = Series("blended system, one point per confidence threshold", highlight=here, color="#6a3d9a",
                        points=[(p.get("coverage"), p.get("accuracy")) for p in points],
                        labels=[f"threshold {thr:g}" if h else "" for h in here])
        primary = sw.get("primary") or ro.get("primary") or ""
        body += chart([series], title="Coverage vs accuracy of the blended system", x_pct=True, y_pct=True,
                      x_label=f"coverage (share answered by {small})", y_label=f"accuracy ({primary})",
                      x_range=(0, 1), y_zero=False, refs=refs, width=940, height=380, note=note)
    return section("router", "Blended system: small first, large as fallback", body) if ro else ""


def facts(ctx: Ctx) -> str:
    m, rows, cmds = ctx.m, [], []
    for n in g(m, "targets", default={}):
        f, srv = ctx.facts(n), g(m, "targets", n, "server", default={})
        build = [g(srv, "llamacpp", "version"),
                 str(g(srv, "llamacpp", "server_version") or "").split("\n")[0]]
        model = f.get("catalog_name") or f.get("file") or g(m, "targets", n, "configured", "model") or "–"
        sha = f'<code>{esc(str(f.get("sha256") or "–")[:12])}</code>'
        rows.append([ctx.dot(n), esc(ctx.role(n)), esc(model), bytes_h(f.get("size_bytes")),
                     esc(f.get("quantization") or "–"), sha, esc(" · ".join(str(x) for x in build if x))])
        if isinstance(srv.get("command"), list):
            cmds.append(f"<b>{esc(n)}</b><pre>{esc(shlex.join(str(x) for x in srv['command']))}</pre>")
    host, ds, sc = g(m, "host", default={}), g(m, "dataset", default={}), g(m, "scenario", default={})
    load = g(sc, "load", default={})
    gpus = ", ".join(str(g(x, "name")) for x in g(host, "gpus", default=[])) or "none seen"
    levels = ", ".join(f"{x:g}" for x in g(load, "levels", default=[]) if finite(x))
    per = f"{load['requests']} requests" if load.get("requests") else f"{load.get('duration_s', '?')} s"
    sampling = (f"{k}={v}" for k, v in g(m, "sampling", default={}).items() if v not in (None, []))
    body = table(["target", "role", "model", "size", "quantization", "sha256", "llama.cpp"], rows, "facts")
    body += kv([(k, esc(v)) for k, v in (
        ("benchbox", m.get("benchbox_version") or ""),
        ("scenario", f"{sc.get('path', '?')} (sha256 {str(sc.get('sha256'))[:12]})" if sc else ""),
        ("load", f"{load.get('pattern', '?')} at {levels}; {per} per level" if load else ""),
        ("SLO", ", ".join(f"{k} {v:g}" for k, v in g(sc, "slo", default={}).items() if finite(v))),
        ("dataset", f"{ds.get('path', '?')} · {ds.get('items', '?')} items · "
                    f"sha256 {str(ds.get('sha256'))[:12]}" if ds else ""),
        ("slices", ", ".join(f"{k} {v}" for k, v in g(ds, "slices", default={}).items())),
        ("sampling", ", ".join(sampling)),
        ("host", f"{host.get('hostname', '?')} · {host.get('platform', '?')} · "
                 f"Python {host.get('python', '?')}" if host else ""),
        ("hardware", f"{host.get('cpu_model', '?')} × {host.get('cpu_count', '?')} CPUs · "
                     f"{bytes_h(host.get('memory_bytes'))} RAM · GPU: {gpus}" if host else ""))])
    body += f'<details open><summary>server commands</summary>{"".join(cmds)}</details>' if cmds else ""
    return section("facts", "Manifest facts", body) if m else ""
