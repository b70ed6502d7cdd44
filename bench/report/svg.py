"""A tiny, dependency-free SVG plotter for the HTML report.

Line charts with several series and a legend, scatter plots with error bars and point labels,
horizontal bars; linear or log x axes with "nice" ticks. Every string that reaches the SVG is
escaped, every number is checked to be finite (None / NaN / inf points are dropped), so data
from a run can never break the markup. Output is inline ``<svg>`` text: no scripts, no fonts,
no external references. The report's look lives here too (palette, fonts, the page's
stylesheet), so charts and page agree.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

# Okabe-Ito (colour-blind safe) without the yellow, which is unreadable on white.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#8C6D31", "#222222"]
FONT = "system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',Arial,sans-serif"
GRID, AXIS, INK, MUTED = "#e6e8eb", "#9aa0a6", "#1f2328", "#5f6670"

Number = Optional[float]


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def finite(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass
class Series:
    """One named series. ``errors`` are (low, high) y intervals per point (None: no bar);
    ``labels`` are texts written next to the points; ``sizes`` are marker radii."""

    name: str
    points: Sequence[tuple[Number, Number]]
    color: str = PALETTE[0]
    line: bool = True
    markers: bool = True
    dash: Optional[str] = None
    width: float = 2.0
    errors: Optional[Sequence[Optional[tuple[Number, Number]]]] = None
    labels: Optional[Sequence[str]] = None
    sizes: Optional[Sequence[float]] = None
    in_legend: bool = True
    highlight: Sequence[bool] = field(default_factory=list)  # ring around these points


@dataclass
class RefLine:
    """A dashed horizontal reference line (an SLO, a baseline) with a label."""

    value: float
    label: str
    color: str = MUTED


def nice_step(span: float, count: int = 5) -> float:
    raw = span / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= raw * 0.999:
            return m * mag
    return 10 * mag


def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """Round tick values covering [lo, hi] (the first <= lo, the last >= hi)."""
    if not (finite(lo) and finite(hi)):
        return [0.0, 1.0]
    if hi < lo:
        lo, hi = hi, lo
    if hi - lo < 1e-12:
        pad = abs(hi) * 0.1 or 1.0
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo, count)
    start = math.floor(lo / step + 1e-9) * step
    ticks, v = [], start
    while v < hi - 1e-9 * step:
        ticks.append(v)
        v = start + len(ticks) * step
    ticks.append(v)
    return [0.0 if abs(t) < step * 1e-9 else round(t, 12) for t in ticks]


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks across [lo, hi] (both > 0), thinned to at most 8."""
    out = []
    for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
        for m in (1, 2, 5):
            v = m * 10.0 ** e
            if lo * 0.999 <= v <= hi * 1.001:
                out.append(v)
    while len(out) > 8:
        out = out[::2]
    return out or [lo, hi]


def axis_format(ticks: Sequence[float], percent: bool = False) -> Callable[[float], str]:
    """One format for every tick of an axis: the same decimals (as few as the step allows) and
    the same unit (k / M once the ticks pass 10,000; % for shares)."""
    scale = 100.0 if percent else 1.0
    vals = [t * scale for t in ticks]
    step = min((b - a for a, b in zip(vals, vals[1:]) if b > a), default=0.0)
    top = max((abs(v) for v in vals), default=0.0)
    div, unit = (1e6, "M") if top >= 1e7 else (1e3, "k") if top >= 1e4 else (1.0, "")
    d = 0
    while step and d < 6 and abs(round(step / div, d) - step / div) > step / div * 1e-6:
        d += 1
    suffix = unit + ("%" if percent else "")
    return lambda v: f"{v * scale / div:,.{d}f}{suffix}"


def pct(v: float) -> str:
    return f"{100 * v:.0f}%"


# -- number formatting for labels and tables: every helper returns HTML-safe text -------------
def num(v: Any, spec: str = ",.1f", unit: str = "") -> str:
    return f"{v:{spec}}{esc(unit)}" if finite(v) else "–"


def ms(v: Any) -> str:
    return num(v, ",.0f" if finite(v) and abs(v) >= 100 else ",.1f", " ms")


def rate(v: Any, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f}%" if finite(v) else "–"


def with_ci(m: Any) -> str:
    """A metric summary ({value, ci95, kind}) as '37.5% [14–69]' (rates) or '0.42 [0.31–0.5]' (means)."""
    if not isinstance(m, dict) or not finite(m.get("value")):
        return "–"
    ci = m.get("ci95") if isinstance(m.get("ci95"), (list, tuple)) and len(m["ci95"]) == 2 else (None, None)
    v, (lo, hi) = m["value"], ci
    if m.get("kind") == "rate" or 0 <= v <= 1:
        return rate(v) + (f" [{100 * lo:.0f}–{100 * hi:.0f}]" if finite(lo) and finite(hi) else "")
    return f"{v:.3g}" + (f" [{lo:.3g}–{hi:.3g}]" if finite(lo) and finite(hi) else "")


def bytes_h(v: Any) -> str:
    for unit, div in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10), ("B", 1)):
        if finite(v) and (v >= div or div == 1):
            return f"{v / div:,.1f} {unit}"
    return "–"


def saved(v: Any, more: str = "dearer") -> str:
    """A percent saved: green 'x% cheaper', or red 'x% dearer' when negative."""
    if not finite(v):
        return "–"
    return f'<b class="okt">{v:.1f}% cheaper</b>' if v >= 0 else f'<b class="badt">{-v:.1f}% {esc(more)}</b>'


def _text(x: float, y: float, s: object, size: int = 12, anchor: str = "start", fill: str = INK,
          extra: str = "", weight: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{esc(fill)}" '
            f'font-weight="{weight}"{extra}>{esc(s)}</text>')


def _line(x1: float, y1: float, x2: float, y2: float, stroke: str, extra: str = "") -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="{esc(stroke)}"{extra}/>'


def _circle(cx: float, cy: float, r: float, fill: str, extra: str = ' stroke="#fff"') -> str:
    return f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r:.1f}" fill="{esc(fill)}"{extra}/>'


def _text_width(s: str, size: int = 12) -> float:
    return len(s) * size * 0.56


class _Scale:
    def __init__(self, lo: float, hi: float, a: float, b: float, log: bool = False):
        self.log = log
        self.lo, self.hi = (math.log10(lo), math.log10(hi)) if log else (lo, hi)
        self.a, self.b = a, b

    def __call__(self, v: float) -> float:
        t = math.log10(v) if self.log else v
        span = self.hi - self.lo or 1.0
        return self.a + (t - self.lo) / span * (self.b - self.a)


def _legend(series: Sequence[Series], x0: float, y0: float, max_w: float) -> tuple[list[str], float]:
    """Legend entries flowed into rows; returns the elements and the height used."""
    out, x, y = [], x0, y0
    for s in series:
        if not s.in_legend:
            continue
        w = 30 + _text_width(s.name) + 16
        if x > x0 and x + w > x0 + max_w:
            x, y = x0, y + 18
        if s.line:
            dash = f' stroke-dasharray="{esc(s.dash)}"' if s.dash else ""
            out.append(_line(x, y, x + 22, y, s.color, f' stroke-width="{s.width}"{dash}'))
        if s.markers:
            out.append(_circle(x + 11, y, 3.5, s.color))
        out.append(_text(x + 28, y + 4, s.name, 12, fill=INK))
        x += w
    return out, (y - y0 + 18) if out else 0.0


def chart(series: Sequence[Series], *, title: str = "", x_label: str = "", y_label: str = "",
          width: int = 520, height: int = 320, x_log: bool = False, x_ticks: Optional[Sequence[float]] = None,
          x_range: Optional[tuple[float, float]] = None, y_range: Optional[tuple[float, float]] = None,
          y_zero: bool = True, refs: Sequence[RefLine] = (), x_pct: bool = False, y_pct: bool = False,
          note: str = "") -> str:
    """Line / scatter chart: every series draws its line (``line``), markers, error bars and
    point labels. Axes cover the data, the error bars and the reference lines."""
    clean: list[tuple[Series, list[tuple[int, float, float]]]] = []
    for s in series:
        pts = [(i, float(x), float(y)) for i, (x, y) in enumerate(s.points)
               if finite(x) and finite(y) and (not x_log or x > 0)]
        clean.append((s, pts))
    xs = [x for _, pts in clean for _, x, _ in pts]
    ys = [y for _, pts in clean for _, _, y in pts]
    for s, pts in clean:
        for i, _, _ in pts:
            e = s.errors[i] if s.errors and i < len(s.errors) else None
            if e:
                ys += [v for v in e if finite(v)]
    if not xs:
        return _empty(title, width, note or "no data to plot")
    ys += [r.value for r in refs if finite(r.value)]

    left, right = 62, 18
    parts: list[str] = []
    top = 12
    if title:
        parts.append(_text(left - 50, top + 12, title, 14, extra="", weight="600"))
        top += 26
    leg, leg_h = _legend(series, left - 50, top + 6, width - left - right + 40)
    parts += leg
    top += leg_h + (10 if leg_h else 4)
    bottom = 50 + (16 if note else 0)
    ph = max(80.0, height - top - bottom)
    height = int(top + ph + bottom)
    pw = width - left - right

    if x_range:
        x_lo, x_hi = x_range
    else:
        x_lo, x_hi = min(xs), max(xs)
    if x_log:
        xt = sorted({t for t in (x_ticks or []) if finite(t) and t > 0}) or log_ticks(x_lo, x_hi)
        x_lo, x_hi = min(x_lo, xt[0]) / 1.25, max(x_hi, xt[-1]) * 1.25
    else:
        xt = sorted(t for t in (x_ticks or []) if finite(t)) or nice_ticks(x_lo, x_hi, 6)
        if not x_range:  # explicit ticks (levels) get a margin, so no point sits on the frame
            x_lo, x_hi = min(x_lo, xt[0]), max(x_hi, xt[-1])
            pad = (x_hi - x_lo) * 0.05 if x_ticks else 0.0
            x_lo, x_hi = (x_lo - pad, x_hi + pad) if x_hi > x_lo else (x_lo - 1, x_hi + 1)
    if y_range:
        y_lo, y_hi = y_range
        yt = nice_ticks(y_lo, y_hi, 5)
        yt = [t for t in yt if y_lo - 1e-9 <= t <= y_hi + 1e-9]
    else:
        y_lo, y_hi = (min(0.0, min(ys)) if y_zero else min(ys)), max(ys)
        pad = (y_hi - y_lo) * 0.04  # nothing drawn on the frame; shares stay within 0..100%
        lo_cap, hi_cap = (0.0, 1.0) if y_pct and 0 <= y_lo <= y_hi <= 1 else (-math.inf, math.inf)
        yt = nice_ticks(y_lo if y_zero else max(lo_cap, y_lo - pad), min(hi_cap, y_hi + pad), 5)
        y_lo, y_hi = yt[0], yt[-1]
    sx = _Scale(x_lo, x_hi, left, left + pw, x_log)
    sy = _Scale(y_lo, y_hi, top + ph, top)
    xf, yf = axis_format(xt, x_pct), axis_format(yt, y_pct)

    parts.append(f'<rect x="{left}" y="{top:.1f}" width="{pw}" height="{ph:.1f}" fill="#fcfcfd"/>')
    for t in yt:
        y = sy(t)
        parts.append(_line(left, y, left + pw, y, GRID))
        parts.append(_text(left - 6, y + 4, yf(t), 11, "end", MUTED))
    for t in xt:
        if not (min(x_lo, x_hi) - 1e-9 <= t <= max(x_lo, x_hi) + 1e-9):
            continue
        x = sx(t)
        parts.append(_line(x, top, x, top + ph, GRID))
        parts.append(_text(x, top + ph + 16, xf(t), 11, "middle", MUTED))
    parts += [_line(left, top + ph, left + pw, top + ph, AXIS), _line(left, top, left, top + ph, AXIS)]
    if x_label:
        parts.append(_text(left + pw / 2, top + ph + 36, x_label, 12, "middle", MUTED))
    if y_label:
        cy = top + ph / 2
        parts.append(_text(14, cy, y_label, 12, "middle", MUTED, f' transform="rotate(-90 14 {cy:.1f})"'))
    if note:
        parts.append(_text(left, top + ph + 54, note, 11, "start", MUTED, ' font-style="italic"'))

    for r in refs:
        if not finite(r.value):
            continue
        y = sy(r.value)
        parts.append(_line(left, y, left + pw, y, r.color, ' stroke-width="1.5" stroke-dasharray="6 4"'))
        parts.append(_text(left + 6, y - 5, r.label, 11, "start", r.color, _HALO))

    for s, pts in clean:
        c = esc(s.color)
        if s.line and len(pts) > 1:
            d = "M" + "L".join(f"{sx(x):.1f},{sy(y):.1f}" for _, x, y in pts)
            dash = f' stroke-dasharray="{esc(s.dash)}"' if s.dash else ""
            parts.append(f'<path d="{d}" fill="none" stroke="{c}" stroke-width="{s.width}" '
                         f'stroke-linejoin="round"{dash}/>')
        for i, x, y in pts:
            px, py = sx(x), sy(y)
            e = s.errors[i] if s.errors and i < len(s.errors) else None
            if e and finite(e[0]) and finite(e[1]):
                y0, y1 = sy(float(e[0])), sy(float(e[1]))
                d = f"M{px:.1f},{y0:.1f}V{y1:.1f}M{px - 4:.1f},{y0:.1f}h8M{px - 4:.1f},{y1:.1f}h8"
                parts.append(f'<path d="{d}" stroke="{c}" stroke-width="1.5" fill="none"/>')
            if s.markers:
                r = s.sizes[i] if s.sizes and i < len(s.sizes) and finite(s.sizes[i]) else 3.5
                if i < len(s.highlight) and s.highlight[i]:
                    parts.append(_circle(px, py, r + 4, "none", f' stroke="{c}" stroke-width="1.5"'))
                parts.append(_circle(px, py, r, s.color, ' stroke="#fff" stroke-width="1.2"'))
            if s.labels and i < len(s.labels) and s.labels[i]:
                anchor, dx = ("end", -8) if px > left + pw * 0.75 else ("start", 8)
                parts.append(_text(px + dx, py - 7, s.labels[i], 11, anchor, INK, _HALO))
    return _svg(width, height, parts, title)


_HALO = ' stroke="#fff" stroke-width="3" paint-order="stroke"'


def hbars(rows: Sequence[tuple[str, Number, str, str]], *, title: str = "", x_label: str = "",
          width: int = 520) -> str:
    """Horizontal bars: rows of (label, value, colour, text written after the bar)."""
    vals = [float(v) for _, v, _, _ in rows if finite(v)]
    if not vals:
        return _empty(title, width, "no data to plot")
    label_w = min(200.0, max(_text_width(lbl) for lbl, _, _, _ in rows) + 12)
    left, right, bar_h, gap = 10 + label_w, 110, 20, 10
    top = 12 + (26 if title else 0)
    ph = len(rows) * (bar_h + gap)
    ticks = nice_ticks(min(0.0, min(vals)), max(vals), 4)
    sx, xf = _Scale(ticks[0], ticks[-1], left, width - right), axis_format(ticks)
    parts = [_text(10, 24, title, 14, extra="", weight="600")] if title else []
    for t in ticks:
        x = sx(t)
        parts.append(_line(x, top, x, top + ph, GRID))
        parts.append(_text(x, top + ph + 15, xf(t), 11, "middle", MUTED))
    for k, (label, value, color, text) in enumerate(rows):
        y = top + k * (bar_h + gap) + gap / 2
        shown = label if _text_width(label) <= label_w else label[: int(label_w / 6.7) - 1] + "…"
        parts.append(_text(left - 8, y + bar_h / 2 + 4, shown, 12, "end", INK))
        if finite(value):
            x0, x1 = sx(0.0), sx(float(value))
            parts.append(f'<rect x="{min(x0, x1):.1f}" y="{y:.1f}" width="{max(1.0, abs(x1 - x0)):.1f}" '
                         f'height="{bar_h}" rx="3" fill="{esc(color)}"/>')
            parts.append(_text(max(x0, x1) + 6, y + bar_h / 2 + 4, text, 11, "start", MUTED))
        else:
            parts.append(_text(sx(0.0) + 6, y + bar_h / 2 + 4, text or "n/a", 11, "start", MUTED))
    parts.append(_line(sx(0.0), top, sx(0.0), top + ph, AXIS))
    if x_label:
        parts.append(_text((left + width - right) / 2, top + ph + 34, x_label, 12, "middle", MUTED))
    return _svg(width, int(top + ph + 44), parts, title)


def ci_bar(m: Any, width: int = 150, color: str = PALETTE[0]) -> str:
    """An inline bar for a rate summary ({value, ci95}): the value filled, its 95% interval as a
    bracket; empty text unless the value is a finite rate in [0, 1]."""
    v = m.get("value") if isinstance(m, dict) else None
    if not finite(v) or not 0 <= v <= 1:
        return ""
    ci = m.get("ci95") if isinstance(m.get("ci95"), (list, tuple)) and len(m["ci95"]) == 2 else (None, None)
    parts = [f'<rect y="3" width="{width}" height="6" rx="3" fill="#eef1f4"/>',
             f'<rect y="3" width="{v * width:.1f}" height="6" rx="3" fill="{esc(color)}"/>']
    if finite(ci[0]) and finite(ci[1]):
        lo, hi = ci[0] * width, ci[1] * width
        parts.append(f'<path d="M{lo:.1f},1V11M{hi:.1f},1V11M{lo:.1f},6H{hi:.1f}" stroke="{INK}" '
                     'stroke-width="1.3" fill="none" opacity=".6"/>')
    return f'<svg class="cibar" width="{width}" height="12" viewBox="0 0 {width} 12">{"".join(parts)}</svg>'


def _empty(title: str, width: int, message: str) -> str:
    parts = [_text(12, 24, title, 14, extra="", weight="600")] if title else []
    parts.append(_text(width / 2, 70, message, 12, "middle", MUTED))
    return _svg(width, 100, parts, title)


def _svg(width: int, height: int, parts: list[str], title: str) -> str:
    label = f' aria-label="{esc(title)}"' if title else ""
    return (f'<svg class="chart" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" role="img"{label} font-family="{esc(FONT)}">'
            + "".join(parts) + "</svg>")


STYLESHEET = """
:root{--ok:#1a7f37;--okbg:#dafbe1;--bad:#c62828;--badbg:#ffebe9;--warn:#9a6700;--warnbg:#fff4d4;--ink:%(ink)s;
--muted:%(muted)s;--line:%(grid)s;
--mono:ui-monospace,SFMono-Regular,Menlo,Consolas,'DejaVu Sans Mono',monospace}*{box-sizing:border-box}
body{margin:0;background:#f5f6f8;color:var(--ink);font:14px/1.45 %(font)s}main{max-width:1080px;margin:0 auto;
padding:24px 20px 40px}footer{text-align:center;color:var(--muted);font-size:12px}
.hero,section{background:#fff;border:1px solid var(--line);border-radius:12px;padding:20px 24px;
margin:0 0 18px;box-shadow:0 1px 2px rgba(0,0,0,.04)}.eyebrow{text-transform:uppercase;letter-spacing:.08em;
font-size:11px;color:var(--muted)}h1{margin:2px 0 4px;font-size:28px}h2{margin:0 0 6px;font-size:19px}
h3{margin:20px 0 8px;font-size:15px}.desc{margin:0 0 8px;color:var(--muted)}.meta{color:var(--muted);
margin-bottom:14px}.lead,.hint{color:var(--muted);font-size:12.5px;margin:2px 0 10px}td .hint{margin:2px 0 0}
.decision{display:flex;align-items:center;gap:24px;border-radius:10px;padding:16px 22px;margin:6px 0 10px}
.decision .big{font-size:40px;font-weight:800;letter-spacing:.02em}.decision .sum{font-size:17px;
font-weight:600}.decision .why{color:var(--ink);opacity:.8}.decision.none{background:#eef1f4;
color:var(--muted)}.ok{background:var(--okbg);color:var(--ok)}.bad{background:var(--badbg);color:var(--bad)}
.warn{background:var(--warnbg);color:var(--warn)}.okt{color:var(--ok)}.badt{color:var(--bad)}
.nw{white-space:nowrap}.pill{display:inline-block;padding:2px 9px;border-radius:999px;font-size:11.5px;
font-weight:700;letter-spacing:.03em}.warnt{color:var(--warn);font-size:11.5px;font-weight:600;
white-space:nowrap}.callout{border-left:4px solid;border-radius:6px;padding:7px 12px;margin:8px 0;
color:var(--ink)}.callout.bad{border-color:var(--bad)}.callout.warn{border-color:#d4a72c}
.callout.note{border-color:#8c959f;background:#f6f8fa}table{border-collapse:collapse;width:100%%;
margin:6px 0 4px;font-size:13px}th{text-align:left;font-weight:600;color:var(--muted);font-size:12px;
border-bottom:2px solid var(--line);padding:6px 8px}td{border-bottom:1px solid var(--line);padding:6px 8px;
vertical-align:top}tbody tr:hover{background:#fafbfc}table.kv td:first-child{color:var(--muted);width:170px;
white-space:nowrap}table.kv thead{display:none}table.gates td:first-child{width:118px}
table.gates td:nth-child(3){min-width:180px}
table.gates td:nth-child(4),table.facts td:nth-child(4){white-space:nowrap}code{font:12px var(--mono);
background:#f3f4f6;padding:1px 5px;border-radius:4px}pre{font:12px/1.4 var(--mono);background:#f6f8fa;
border-radius:6px;padding:8px 10px;white-space:pre-wrap;word-break:break-all;margin:4px 0 10px}
.dot{display:inline-block;width:10px;height:10px;border-radius:50%%;margin-right:6px}.role{font-size:11px;
color:var(--muted);border:1px solid var(--line);border-radius:999px;padding:1px 7px;margin-left:4px;
font-weight:normal}.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:12px}
.card{border:1px solid var(--line);border-top:4px solid;border-radius:10px;padding:10px 14px}
.cname{font-weight:700;margin-bottom:6px}.card dl{display:grid;grid-template-columns:auto 1fr;gap:3px 10px;
margin:0}.card dt{color:var(--muted);font-size:12px;white-space:nowrap}.card dd{margin:0;font-size:13px;
text-align:right}.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(460px,1fr));gap:14px 18px;
justify-items:center}svg.chart{max-width:100%%;height:auto;display:block;margin:6px auto}
svg.cibar{display:block;margin-top:3px}details summary{cursor:pointer;color:var(--muted);margin:8px 0 4px}
""" % {"ink": INK, "muted": MUTED, "grid": GRID, "font": FONT}
