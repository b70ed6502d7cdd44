"""Terminal tables for the quality section: per target x slice, and fidelity to the baseline."""

from __future__ import annotations

from typing import Any, Optional

from rich.console import Console
from rich.markup import escape
from rich.table import Table


def _pct(m: Optional[dict[str, Any]]) -> str:
    if not m:
        return "-"
    if m["kind"] == "rate" or 0 <= m["value"] <= 1:
        text = f"{100 * m['value']:.1f}"
        if m.get("ci95"):
            text += f" [{100 * m['ci95'][0]:.0f}–{100 * m['ci95'][1]:.0f}]"
    else:
        text = f"{m['value']:.3g}"
    return text + (" !" if m.get("warning") else "")


def render_quality(quality: dict[str, Any], console: Console, max_metrics: int = 5) -> None:
    primary = quality.get("primary")
    for name, trust in (quality.get("judges") or {}).items():
        if trust.get("agreement") is None:
            console.print(f"[red]judge {escape(name)} unavailable:[/] {escape(str(trust.get('error')))}")
            continue
        verdict = ("[green]trusted[/]" if trust.get("trusted")
                   else "[red]NOT trusted: its scores are shown, not believed[/]")
        console.print(f"judge {escape(name)}: agreement with human labels {100 * trust['agreement']:.1f}% "
                      f"(kappa {trust['kappa']:.2f}, n={trust['n']}) → {verdict}")
    for name, entry in quality["targets"].items():
        slices = entry["slices"]
        keys = [f"{primary}@e2e", primary] if primary else []
        extra = sorted({k for s in slices.values() for k in s["metrics"]} - set(keys))
        keys = [k for k in keys if any(k in s["metrics"] for s in slices.values())] + extra
        keys = keys[:max_metrics]
        table = Table(title=f"quality — {name} ({entry['role']}): % with 95% CI, ! = small slice")
        table.add_column("slice")
        table.add_column("items", justify="right")
        for k in keys:
            table.add_column(k, justify="right")
        table.add_column("outcomes")
        vs = entry.get("vs_baseline") or {}
        if vs:
            for col in ("agree %", "R→W", "W→R", "McNemar p"):
                table.add_column(col, justify="right")
        for slice_name, s in slices.items():
            row = [slice_name, str(s["n_items"]), *[_pct(s["metrics"].get(k)) for k in keys],
                   ", ".join(f"{o} {c}" for o, c in s["outcomes"].items())]
            if vs:
                f = vs.get(slice_name) or {}
                flips = f.get("flips") or {}
                agree = (f.get("agreement") or {}).get("value")
                p = f.get("mcnemar_p")
                row += ["-" if agree is None else f"{100 * agree:.1f}", str(flips.get("right_to_wrong", "-")),
                        str(flips.get("wrong_to_right", "-")), "-" if p is None else f"{p:.3g}"]
            table.add_row(*[escape(c) for c in row])
        console.print(table)
        classes = entry.get("classes")
        if classes:
            rare = classes.get("rare_recall")
            console.print(f"{escape(name)}: macro-F1 {classes['macro_f1']:.3f}"
                          + (f"; rare-label recall {100 * rare['value']:.1f}% (n={rare['n']}, "
                             f"labels: {', '.join(classes['rare_labels'])})" if rare else ""))
        calib = entry.get("calibration")
        if calib:
            console.print(f"{escape(name)}: calibration of confidence vs {primary}: ECE {calib['ece']:.3f} "
                          f"(equal-mass bins), Brier {calib['brier']:.3f}, mean confidence "
                          f"{100 * calib['mean_confidence']:.1f}% vs accuracy {100 * calib['accuracy']:.1f}% "
                          f"(n={calib['n']})")
        top = (vs.get("all") or {}).get("same_top_token")
        if top:
            console.print(f"{escape(name)}: same first token as the baseline on {100 * top['value']:.1f}% of items "
                          f"(n={top['n']}); mean top-k TVD {vs['all']['topk_tvd_mean']:.3f}")
        stab = entry.get("stability") or {}
        if stab.get("instability") is not None:
            console.print(f"{escape(name)}: answers changed between responses on {stab['items_changed']}/"
                          f"{stab['items_with_several_responses']} items (noise floor for flips)")
        rv = stab.get("repeat_variance")
        if rv:
            console.print(f"{escape(name)}: {primary} over {rv['repeats']} repeat passes: mean "
                          f"{100 * rv['mean']:.1f}%, sd {100 * rv['sd']:.1f} points")
        for line in entry.get("diagnosis", []):
            console.print(f"[bold]diagnosis:[/] {escape(line)}")
    console.print(f"quality unit: {quality.get('unit')}; primary outcome: {primary}")
