""""What would it take": what other α would certify, and about how many more labels the configured
α needs, from one calibration's confidences and losses.

``certified_by_alpha`` re-runs the same rule at each α of a list (exact: it is what calibrating
at that α would give on these rows). ``labels_needed`` is an **estimate**: it assumes the error
rates observed among the most confident shares of the rows stay what they are as more rows are
labelled, and asks how many rows the bound needs so that every threshold of the fixed sequence,
from its start down to coverage c, passes; it reports the largest c within ten times today's
labels. New confident errors would cost more.
``held_back_by`` says which reference labels carry the loss among the confident rows the rule
could not certify.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..errors import CalibrationError
from ._bounds import min_calibration_size, p_values
from ._threshold import ThresholdCalibrator

__all__ = ["ALPHAS", "certified_by_alpha", "held_back_by", "labels_needed"]

#: The α a user compares (issue 11): 1, 2, 5, 10 and 20 %.
ALPHAS = (0.01, 0.02, 0.05, 0.10, 0.20)


def certified_by_alpha(conf: np.ndarray, loss: np.ndarray, *, delta: float, bound: str,
                       alphas: Sequence[float] = ALPHAS) -> list[dict[str, Any]]:
    """Coverage and threshold the calibration would certify at each α (same rule, same rows)."""
    rows = []
    for a in alphas:
        try:
            cal = ThresholdCalibrator(alpha=a, delta=delta, bound=bound).fit(conf, loss=loss)
            rows.append({"alpha": a, "coverage": float(cal.coverage_), "threshold": cal.threshold_})
        except CalibrationError as exc:
            rows.append({"alpha": a, "coverage": 0.0, "threshold": None, "note": str(exc)})
    return rows


def _answered_needed(risk: float, alpha: float, delta: float, bound: str, cap: int) -> int | None:
    """Fewest answered points at mean loss ``risk`` whose p-value is ≤ δ (None beyond ``cap``)."""
    b = "hoeffding_bentkus" if bound == "betting" else bound  # betting needs the losses: HB is its stand-in

    def ok(m: int) -> bool:
        k = risk * m if b != "binomial" else np.floor(risk * m)
        return bool(p_values(np.array([k]), np.array([m]), alpha, b)[0] <= delta)

    lo = min_calibration_size(alpha, delta)
    if ok(lo):
        return lo
    if not ok(cap):
        return None
    hi = cap
    while hi - lo > max(1, lo // 100):
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def labels_needed(conf: np.ndarray, loss: np.ndarray, *, alpha: float, delta: float, bound: str,
                  max_factor: float = 10.0, start: float = 0.1) -> dict[str, Any] | None:
    """Estimate of the labels that would certify ``alpha``: the most coverage reachable with at most
    ``max_factor`` × today's labels, at the error rates observed today.

    Fixed-sequence testing must pass every threshold from its start (the most confident ``start``
    share) down to the one it ends at, so the labels needed for coverage c are the most that any
    coverage c' between ``start`` and c needs at the larger of the rates observed at c' and at c
    (the rate at a small c' alone rests on few rows). Returns ``{"total", "more",
    "coverage", "observed_risk"}``, or None when even the most confident shares err at α or more
    (then more labels alone will not do it).
    """
    n = len(conf)
    order = np.argsort(-conf, kind="stable")
    cum = np.cumsum(loss[order])
    grid = np.round(np.arange(start, 1.0001, 0.05), 4)
    risk = np.array([cum[max(1, int(round(c * n))) - 1] / max(1, int(round(c * n))) for c in grid])
    best = None
    for j, c in enumerate(grid):
        r = float(risk[j])
        if r >= alpha:
            continue
        # every threshold from the start down to c must pass, each at least at the rate observed at c
        total = 0
        for i in range(j + 1):
            need = _answered_needed(max(float(risk[i]), r), alpha, delta, bound, cap=int(max_factor * n * grid[i]) + 1)
            if need is None or max(float(risk[i]), r) >= alpha:
                total = None
                break
            total = max(total, int(np.ceil(need / grid[i])))
        if total is not None and total <= max_factor * n and (best is None or c > best["coverage"]):
            best = {"total": total, "more": max(0, total - n), "coverage": float(c), "observed_risk": r}
    return best


def held_back_by(conf: np.ndarray, loss: np.ndarray, references: Sequence[Any], *, parts: Callable[[Any], list[str]],
                 coverage: float, top: int = 5) -> list[dict[str, Any]]:
    """Reference labels (a kind's ``parts``) that carry the loss among the most confident ``coverage``
    share of rows: each with its rows there, the loss it carries and its share of all that loss."""
    n = len(conf)
    m = max(1, int(round(min(max(coverage, 0.1), 1.0) * n)))
    region = np.argsort(-conf, kind="stable")[:m]
    rows: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
    for i in region:
        for p in parts(references[i]) or ["(none)"]:
            rows[p][0] += 1
            rows[p][1] += float(loss[i])
    total = float(loss[region].sum())
    out = [{"label": k, "rows": int(v[0]), "loss": v[1], "error_rate": v[1] / v[0] if v[0] else 0.0,
            "share_of_loss": v[1] / total if total else 0.0} for k, v in rows.items() if v[1] > 0]
    return sorted(out, key=lambda r: -r["loss"])[:top]
