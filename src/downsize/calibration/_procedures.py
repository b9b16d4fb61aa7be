"""Which thresholds to test, in what order, and at what level: the family-wise error control of
Learn-then-Test.

Each candidate λ (a distinct calibration score) carries a p-value of H0 "mean loss of the requests
with score ≥ λ exceeds α" (:mod:`._bounds`). A procedure rejects a set of nulls with family-wise
error ≤ δ; the calibrator answers at the lowest rejected λ. Three procedures:

``fixed_sequence`` (the default, LTT §3)
    From the most confident candidate that answers at least ``start`` points, downwards; stop at
    the first p-value above δ. No multiplicity correction, but one non-rejection ends it for good,
    so a few confident errors near the top can certify nothing.
``learned_start`` (the "learn" of Learn-then-Test; MAPIE's ``split_fixed_sequence``)
    A seeded share of the calibration points only chooses where the sequence starts: the lowest λ
    at which their empirical risk is at most ``learn_margin · α``. The remaining points run the
    fixed sequence from there downwards. Valid because the start is a function of points that
    the tests never see (the order is fixed before the tested points are looked at); the price
    is fewer points for the tests.
``holm`` / ``bonferroni`` over a coarse grid
    The candidates answering ``grid_size`` evenly spaced shares of the points (chosen from the
    scores alone, never the losses), tested at δ/m (Bonferroni) or step-down (Holm); any rejected
    λ may be used, so a bad region anywhere on the grid costs only its own hypotheses.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["METHODS", "fixed_sequence", "grid_indices", "learned_start_threshold", "multiple_grid"]

METHODS = ("fixed_sequence", "learned_start", "holm", "bonferroni")


def fixed_sequence(p: np.ndarray, first: int, delta: float) -> tuple[int | None, np.ndarray, np.ndarray]:
    """(chosen index or None, tested mask, rejected mask) of fixed-sequence testing from ``first`` down."""
    tested = np.zeros(len(p), dtype=bool)
    rejected = np.zeros(len(p), dtype=bool)
    if first >= len(p):
        return None, tested, rejected
    fails = np.flatnonzero(p[first:] > delta)
    stop = first + int(fails[0]) if len(fails) else len(p)  # index of the first non-rejection
    tested[first : stop + 1] = True
    rejected[first:stop] = True
    return (stop - 1 if stop > first else None), tested, rejected


def grid_indices(n_ans: np.ndarray, n: int, first: int, grid_size: int) -> np.ndarray:
    """Candidates answering about k/grid_size of the n points (k = 1..grid_size), from ``first`` on."""
    levels = np.arange(1, grid_size + 1) / grid_size * n
    idx = np.searchsorted(n_ans, levels + 1e-9, side="right") - 1
    return np.unique(idx[idx >= first])


def multiple_grid(p: np.ndarray, grid: np.ndarray, delta: float, *, holm: bool
                  ) -> tuple[int | None, np.ndarray, np.ndarray]:
    """Bonferroni (δ/m each) or Holm step-down over the grid's hypotheses; the lowest rejected λ."""
    tested = np.zeros(len(p), dtype=bool)
    rejected = np.zeros(len(p), dtype=bool)
    m = len(grid)
    if m == 0:
        return None, tested, rejected
    tested[grid] = True
    pg = p[grid]
    if not holm:
        rej = pg <= delta / m
    else:
        rej = np.zeros(m, dtype=bool)
        for step, j in enumerate(np.argsort(pg, kind="stable")):
            if pg[j] > delta / (m - step):
                break
            rej[j] = True
    rejected[grid[rej]] = True
    hit = np.flatnonzero(rejected)
    return (int(hit[-1]) if len(hit) else None), tested, rejected


def learned_start_threshold(scores: np.ndarray, losses: np.ndarray, alpha: float, margin: float,
                            min_points: int) -> float | None:
    """The lowest score at which the learning points' empirical mean loss is ≤ ``margin · alpha``
    (answering at least ``min_points`` of them); None when there is none."""
    order = np.argsort(-scores, kind="stable")
    s, lo = scores[order], losses[order]
    m = np.arange(1, len(s) + 1)
    risk = np.cumsum(lo) / m
    last = np.r_[s[1:] != s[:-1], True]  # a threshold answers every point at its score
    ok = np.flatnonzero(last & (m >= max(1, min_points)) & (risk <= margin * alpha))
    return float(s[ok[-1]]) if len(ok) else None


def learn_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded (deterministic) split of n points into learning and testing positions."""
    perm = np.random.default_rng(seed).permutation(n)
    k = min(n - 1, max(1, math.ceil(fraction * n)))
    return np.sort(perm[:k]), np.sort(perm[k:])
