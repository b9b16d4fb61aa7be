"""The report's figures: matplotlib (Agg, no pyplot state) → base64 PNG strings.

Every function takes parts of the report dict and returns a base64 PNG, or ``None``
when there is nothing to draw. matplotlib is imported inside the functions.
"""

from __future__ import annotations

import base64
import io
from datetime import datetime, timedelta
from typing import Any

__all__ = [
    "confusion_png",
    "cost_energy_png",
    "coverage_accuracy_png",
    "latency_png",
    "spot_checks_png",
    "timeline_png",
]

STUDENT = "#0f766e"
TEACHER = "#c2410c"
CASCADE = "#4338ca"
GOOD = "#15803d"
BAD = "#b91c1c"
MUTED = "#64748b"
GRID = "#e2e8f0"
_DPI = 110


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=_DPI, layout="constrained")
    return fig


def _style(ax: Any) -> None:
    ax.grid(True, color=GRID, linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#94a3b8")
    ax.tick_params(colors="#334155", labelsize=8)
    ax.title.set_fontsize(10)
    ax.xaxis.label.set_fontsize(9)
    ax.yaxis.label.set_fontsize(9)


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", facecolor="white")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _num(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def coverage_accuracy_png(cal: dict[str, Any] | None, ev: dict[str, Any] | None) -> str | None:
    """Coverage vs accuracy: the calibration curve (1 − risk), eval curves vs gold, λ marked."""
    from matplotlib.ticker import PercentFormatter

    cal_curve = [
        c for c in (cal or {}).get("curve") or [] if _num(c.get("coverage")) and _num(c.get("risk"))
    ]
    ev_curve = [
        c
        for c in ((ev or {}).get("metrics") or {}).get("curve") or []
        if isinstance(c, dict) and _num(c.get("coverage"))
    ]
    if not cal_curve and not ev_curve and not (cal and _num(cal.get("empirical_risk"))):
        return None
    fig = _figure(5.6, 3.6)
    ax = fig.add_subplot()
    _style(ax)
    ref = (cal or {}).get("reference") or "reference"
    if cal_curve:
        pts = sorted((c["coverage"], 1 - c["risk"]) for c in cal_curve)
        ax.plot(*zip(*pts), "-", color=STUDENT, lw=2, label=f"student vs {ref} (calibration split)")
    if ev_curve:
        pts = sorted(
            (c["coverage"], c["student_accuracy_answered"])
            for c in ev_curve
            if _num(c.get("student_accuracy_answered"))
        )
        if pts:
            ax.plot(
                *zip(*pts),
                "o-",
                ms=3,
                color=CASCADE,
                lw=1.4,
                label="student vs gold, on what it answers (eval)",
            )
        pts = sorted(
            (c["coverage"], c["cascade_accuracy"])
            for c in ev_curve
            if _num(c.get("cascade_accuracy"))
        )
        if pts:
            ax.plot(
                *zip(*pts),
                "s--",
                ms=3,
                color=TEACHER,
                lw=1.2,
                label="cascade vs gold, all requests (eval)",
            )
    if cal and _num(cal.get("alpha")):
        ax.axhline(
            1 - cal["alpha"], color=BAD, ls=":", lw=1.2, label=f"1 − α = {1 - cal['alpha']:.1%}"
        )
    if cal and cal.get("threshold") is not None and _num(cal.get("empirical_risk")):
        x, y = cal["coverage"], 1 - cal["empirical_risk"]
        lo, hi = cal["coverage_interval"]
        ax.errorbar(
            [x],
            [y],
            xerr=[[max(0.0, x - lo)], [max(0.0, hi - x)]],
            fmt="o",
            ms=9,
            color="black",
            mfc="#facc15",
            capsize=4,
            zorder=5,
            label=f"operating point λ = {cal['threshold']:.3f}",
        )
        ax.annotate(
            f"λ = {cal['threshold']:.3f}\ncoverage {x:.1%}",
            (x, y),
            xytext=(10, -28),
            textcoords="offset points",
            fontsize=8,
            color="#0f172a",
        )
    ax.set_xlabel("coverage (share the student answers)")
    ax.set_ylabel("accuracy on what it answers")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    ax.yaxis.set_major_formatter(PercentFormatter(1.0))
    ax.set_xlim(0, 1.02)
    ax.legend(fontsize=7, loc="lower left", frameon=False)
    ax.set_title("Coverage vs accuracy")
    return _png(fig)


def cost_energy_png(t: dict[str, Any]) -> str | None:
    """Cost and energy per 1k requests: cascade (student measured + teacher estimated) vs teacher-only."""
    cost = t["cost"]["per_1k_requests"]
    en = t["energy"]["per_1k_requests"]
    if cost["cascade"] is None:
        return None
    fig = _figure(6.4, 3.0)
    a1, a2 = fig.subplots(1, 2)
    for ax in (a1, a2):
        _style(ax)
        ax.grid(axis="y", visible=False)
    names = ["cascade", "teacher-only"]
    a1.barh(
        names, [cost["cascade"], cost["teacher_only"] or 0.0], color=[CASCADE, TEACHER], height=0.55
    )
    for i, v in enumerate([cost["cascade"], cost["teacher_only"] or 0.0]):
        a1.text(v, i, f"  ${v:,.2f}", va="center", fontsize=8)
    a1.set_title("$ per 1k requests")
    a1.invert_yaxis()
    a1.margins(x=0.3)
    if en["cascade"] is not None:
        s, te = en["student"] or 0.0, en["teacher"] or 0.0
        a2.barh(["cascade"], [s], color=STUDENT, height=0.55, label="student (measured)")
        a2.barh(
            ["cascade"],
            [te],
            left=[s],
            color=TEACHER,
            height=0.55,
            hatch="///",
            edgecolor="white",
            label="teacher (estimated)",
        )
        if en["teacher_only"] is not None:
            a2.barh(
                ["teacher-only"],
                [en["teacher_only"]],
                color=TEACHER,
                height=0.55,
                hatch="///",
                edgecolor="white",
            )
        for i, v in enumerate([en["cascade"], en["teacher_only"]]):
            if v is not None:
                a2.text(v, i, f"  {v:,.1f} Wh", va="center", fontsize=8)
        a2.invert_yaxis()
        a2.margins(x=0.35)
        fig.legend(
            *a2.get_legend_handles_labels(),
            fontsize=7.5,
            frameon=False,
            loc="outside lower right",
            ncols=2,
        )
    a2.set_title("Wh per 1k requests")
    return _png(fig)


def latency_png(lat: dict[str, dict[str, Any]]) -> str | None:
    """Latency distributions as box plots from stored percentiles (whiskers p5–p95)."""
    order = [
        ("student", "student", STUDENT),
        ("escalated", "escalated (teacher path)", TEACHER),
        ("cascade", "cascade, all", CASCADE),
        ("teacher_only", "teacher alone", MUTED),
    ]
    stats, colors = [], []
    for key, label, color in order:
        d = lat.get(key) or {}
        if d.get("n"):
            stats.append(
                {
                    "label": f"{label}\nn={d['n']}",
                    "med": d["p50"],
                    "q1": d["p25"],
                    "q3": d["p75"],
                    "whislo": d["p5"],
                    "whishi": d["p95"],
                    "mean": d["mean"],
                    "fliers": [],
                }
            )
            colors.append(color)
    if not stats:
        return None
    fig = _figure(5.6, 0.75 * len(stats) + 1.0)
    ax = fig.add_subplot()
    _style(ax)
    try:
        parts = ax.bxp(stats, orientation="horizontal", patch_artist=True, widths=0.55)
    except TypeError:  # matplotlib < 3.10
        parts = ax.bxp(stats, vert=False, patch_artist=True, widths=0.55)
    for box, color in zip(parts["boxes"], colors):
        box.set(facecolor=color, alpha=0.75, edgecolor=color)
    for med in parts["medians"]:
        med.set(color="white", lw=2)
    lo = min(s["whislo"] for s in stats)
    hi = max(s["whishi"] for s in stats)
    if lo > 0 and hi / lo > 50:
        ax.set_xscale("log")
    ax.invert_yaxis()
    ax.set_xlabel("latency (ms); box p25–p75, line p50, whiskers p5–p95")
    ax.set_title("Latency")
    return _png(fig)


def _dates(points: list[dict[str, Any]]) -> list[datetime]:
    return [datetime.fromisoformat(p["start"]) for p in points]


_STEPS = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}


def _date_axis(ax: Any, x: list[datetime], unit: str) -> None:
    import matplotlib.dates as mdates

    if min(x) == max(x):  # one bucket: give the locator a range to work with
        ax.set_xlim(x[0] - _STEPS[unit], x[0] + _STEPS[unit])
    loc = mdates.AutoDateLocator(minticks=2, maxticks=8)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def timeline_png(tl: dict[str, Any]) -> str | None:
    """Escalation rate (top) and savings per bucket with the cumulative savings (bottom)."""
    from matplotlib.ticker import PercentFormatter

    pts = tl.get("points") or []
    if not pts:
        return None
    rates = [
        (d, p["escalation_rate"])
        for d, p in zip(_dates(pts), pts)
        if p["escalation_rate"] is not None
    ]
    if not rates and not any(p["savings_usd"] for p in pts):
        return None  # shadow mode: nothing escalated, nothing saved
    x = _dates(pts)
    width = {"hour": 1 / 24, "day": 1.0, "week": 7.0}[tl["bucket"]] * 0.8
    fig = _figure(6.4, 3.8)
    a1, a2 = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1.2])
    for ax in (a1, a2):
        _style(ax)
    if rates:
        a1.plot(*zip(*rates), "o-", ms=3, color=TEACHER, lw=1.6)
    a1.set_ylabel("escalated")
    a1.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    a1.set_ylim(bottom=0)
    a1.set_title(f"Escalation rate and savings per {tl['bucket']}")
    sav = [p["savings_usd"] for p in pts]
    a2.bar(
        x, sav, width=width, color=[GOOD if v >= 0 else BAD for v in sav], alpha=0.8, label="saved"
    )
    a2.set_ylabel(f"$ saved / {tl['bucket']}")
    a2.axhline(0, color="#94a3b8", lw=0.8)
    tw = a2.twinx()
    tw.plot(
        x, [p["cumulative_savings_usd"] for p in pts], color=CASCADE, lw=1.8, label="cumulative"
    )
    tw.set_ylabel("cumulative $", fontsize=9, color=CASCADE)
    tw.tick_params(labelsize=8, colors=CASCADE)
    tw.spines["top"].set_visible(False)
    _date_axis(a2, x, tl["bucket"])
    return _png(fig)


def spot_checks_png(sc: dict[str, Any], alpha: float | None) -> str | None:
    """Spot-check agreement per period with its Clopper–Pearson interval and the 1 − α line."""
    from matplotlib.ticker import PercentFormatter

    pts = sc.get("by_period") or []
    if not pts:
        return None
    x = _dates(pts)
    fig = _figure(6.4, 2.3)
    ax = fig.add_subplot()
    _style(ax)
    r = [p["rate"] for p in pts]
    ax.errorbar(
        x,
        r,
        yerr=[[p["rate"] - p["lo"] for p in pts], [p["hi"] - p["rate"] for p in pts]],
        fmt="o",
        ms=4,
        color=STUDENT,
        ecolor="#5eead4",
        capsize=3,
        label=f"agreement, {sc['confidence']:.0%} CI",
    )
    if alpha is not None:
        ax.axhline(1 - alpha, color=BAD, ls=":", lw=1.2, label=f"1 − α = {1 - alpha:.1%}")
    ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=0))
    ax.set_ylim(max(0.0, min(p["lo"] for p in pts) - 0.05), 1.01)
    ax.legend(fontsize=7, frameon=False, loc="lower left")
    ax.set_title(f"Spot-check agreement per {sc['bucket']}")
    _date_axis(ax, x, sc["bucket"])
    return _png(fig)


def confusion_png(conf: dict[str, Any], max_labels: int = 25) -> str | None:
    """Teacher (rows) × student (columns) counts as a heat map."""
    labels, m = conf["labels"], conf["matrix"]
    if not conf["n"] or len(labels) > max_labels:
        return None
    import numpy as np

    a = np.asarray(m, dtype=float)
    k = len(labels)
    side = min(7.0, 1.6 + 0.45 * k)
    fig = _figure(side + 0.8, side)
    ax = fig.add_subplot()
    norm = a / np.maximum(a.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if a[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(a[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if norm[i, j] > 0.55 else "#0f172a",
                    fontweight="bold" if i == j else "normal",
                )
    short = [lab if len(lab) <= 14 else lab[:13] + "…" for lab in labels]
    ax.set_xticks(range(k), short, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), short, fontsize=8)
    ax.set_xlabel("student said", fontsize=9)
    ax.set_ylabel("teacher said", fontsize=9)
    ax.set_title(f"Student vs teacher (n = {conf['n']}; shading = row share)", fontsize=10)
    return _png(fig)
