"""p-values of "mean loss > α" for the answered points, and the intervals built on them.

Three tests of H0 "the mean loss of the answered requests exceeds α", each valid (super-uniform
p-value) for i.i.d./exchangeable points:

``binomial``
    The exact binomial tail ``P(Binom(n, α) ≤ k)``: valid **only for 0/1 losses** (k errors among
    n answered). The tightest possible test there (the one-sided Clopper–Pearson test).
``hoeffding_bentkus``
    The Hoeffding–Bentkus p-value of Learn-then-Test (Angelopoulos et al. 2021, Prop. 3; Bates et
    al. 2021, RCPS): ``min(exp(-n h1(r̂ ∧ α, α)), e · P(Binom(n, α) ≤ ⌈n r̂⌉))`` with r̂ the mean
    loss. Valid for any loss in [0, 1] (Bentkus' inequality bounds the tail of a sum of bounded
    variables by e times the binomial's), so ``loss: f1`` calibrates with it.
``betting``
    The Waudby-Smith–Ramdas hedged-capital test (2023; the "WSR" bound of RCPS): the wealth
    ``K_i = Π_{j≤i} (1 − ν_j (L_j − α))`` of a bettor who wagers that losses are below α, with the
    predictable bet ``ν_j = min(1, sqrt(2 log(1/δ) / (n σ̂²_{j-1})))``, is a non-negative
    supermartingale under H0, so ``1 / max_i K_i`` is a p-value (Ville's inequality). It adapts
    to the variance of the loss, so it is much tighter than Hoeffding–Bentkus when a bounded loss
    is mostly small (partial F1 misses). Deterministic: the points are taken in their given
    order (exchangeable by assumption), no randomisation.

Hand-written rather than taken from MAPIE: MAPIE's ``risk_control`` computes HB and WSR for its
own threshold grid and estimators; here they are applied to precomputed per-record losses at the
distinct calibration scores, which is a few vectorised lines.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import stats

from ..errors import CalibrationError

__all__ = ["BOUNDS", "check_level", "clopper_pearson", "min_calibration_size", "p_values", "risk_upper"]

BOUNDS = ("binomial", "hoeffding_bentkus", "betting")

def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper–Pearson (exact binomial) interval for ``k`` successes in ``n`` trials.

    With no trials (``n = 0``) nothing is known: the interval is ``(0, 1)``.

    Examples
    --------
    >>> lo, hi = clopper_pearson(0, 10, 0.95)
    >>> lo, round(hi, 4)
    (0.0, 0.3085)
    >>> clopper_pearson(0, 0)
    (0.0, 1.0)
    >>> lo, hi = clopper_pearson(10, 10); round(lo, 4), hi
    (0.6915, 1.0)
    """
    if not (isinstance(n, (int, np.integer)) and isinstance(k, (int, np.integer)) and 0 <= k <= n):
        raise ValueError(f"clopper_pearson needs integers 0 ≤ k ≤ n, got k={k}, n={n}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(tail, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - tail, k + 1, n - k))
    return lo, hi


def min_calibration_size(alpha: float, delta: float) -> int:
    """Smallest n for which answering n points with zero errors passes: ``(1-α)^n ≤ δ``.

    >>> min_calibration_size(0.02, 0.05)
    149
    """
    check_level(alpha, "alpha")
    check_level(delta, "delta")
    n = math.ceil(math.log(delta) / math.log1p(-alpha))
    while (1 - alpha) ** n > delta:  # guard against rounding in the logarithms
        n += 1
    while n > 1 and (1 - alpha) ** (n - 1) <= delta:
        n -= 1
    return n


def check_level(x: Any, name: str) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating)) or not 0 < x < 1:
        raise CalibrationError(f"{name} must be a number strictly between 0 and 1, got {x!r}")



def _binom_tail(k: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    """``P(Binom(n, α) ≤ ⌈k⌉)``; ``k`` may be a sum of real losses (rounded up, with float slack)."""
    return stats.binom.cdf(np.ceil(np.asarray(k, dtype=float) - 1e-9), n, alpha)


def _hb(k: np.ndarray, n: np.ndarray, alpha: float) -> np.ndarray:
    r = np.minimum(np.asarray(k, dtype=float) / n, alpha)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where(r > 0, r * np.log(r / alpha), 0.0) + (1 - r) * np.log((1 - r) / (1 - alpha))
    return np.minimum(np.minimum(np.exp(-n * h1), math.e * _binom_tail(k, n, alpha)), 1.0)


def _betting_one(losses: np.ndarray, alpha: float, delta: float) -> float:
    """WSR p-value of "mean loss > α" for one sample of losses in [0, 1], in their given order."""
    n = len(losses)
    if n == 0:
        return 1.0
    i = np.arange(1, n + 1)
    mu = (0.5 + np.cumsum(losses)) / (i + 1)
    var = (0.25 + np.cumsum((losses - mu) ** 2)) / (i + 1)
    var_prev = np.r_[0.25, var[:-1]]
    nu = np.minimum(1.0, np.sqrt(2 * math.log(1 / delta) / (n * var_prev)))
    log_k = np.cumsum(np.log1p(-nu * (losses - alpha)))
    return float(min(1.0, math.exp(-max(0.0, float(log_k.max())))))


def p_values(loss_sum: np.ndarray, n: np.ndarray, alpha: float, bound: str, *,
             losses_by_rank: np.ndarray | None = None, order: np.ndarray | None = None,
             delta: float = 0.05) -> np.ndarray:
    """p-values of H0 "mean loss > alpha" for candidates answering ``n`` points with loss sum ``loss_sum``.

    ``betting`` needs the losses themselves: ``losses_by_rank`` (most confident first) and
    ``order`` (each of those points' position in the data, the order the bettor sees them in).
    """
    if bound == "binomial":
        return _binom_tail(loss_sum, n, alpha)
    if bound == "hoeffding_bentkus":
        return _hb(loss_sum, n, alpha)
    assert losses_by_rank is not None and order is not None
    out = np.empty(len(n))
    for j, m in enumerate(np.asarray(n, dtype=int)):
        idx = np.argsort(order[:m], kind="stable")  # the answered points in data order
        out[j] = _betting_one(losses_by_rank[:m][idx], alpha, delta)
    return out


def risk_upper(k: float, n: int, delta: float, bound: str, losses: np.ndarray | None = None) -> float:
    """One-sided (1-δ) upper confidence bound of the mean loss: the smallest α the test would pass."""
    if k >= n:
        return 1.0
    if bound == "binomial":
        return float(stats.beta.ppf(1 - delta, k + 1, n - k))
    from scipy.optimize import brentq

    def f(a: float) -> float:
        if bound == "betting":
            assert losses is not None
            return _betting_one(losses, a, delta) - delta
        return float(_hb(np.array([k]), np.array([n]), a)[0]) - delta

    lo, hi = k / n + 1e-9, 1 - 1e-9
    if not f(hi) < 0:
        return 1.0
    if f(lo) < 0:  # the p-value is already below δ at the empirical risk (possible for betting)
        return float(lo)
    return float(brentq(f, lo, hi, xtol=1e-7))


def as_losses(correct: Any, loss: Any, n: int) -> np.ndarray:
    """The per-record losses from exactly one of ``correct`` (bool/0-1: agreed) or ``loss`` ([0, 1])."""
    if (correct is None) == (loss is None):
        raise CalibrationError("give exactly one of correct (whether each answer matched) or loss= (per-record "
                               "loss in [0, 1])")
    if loss is None:
        c_raw = np.asarray(correct).ravel()
        if len(c_raw) != n:
            raise CalibrationError(f"scores has {n} values but correct has {len(c_raw)}")
        if c_raw.dtype != bool and not np.isin(c_raw, (0, 1)).all():
            raise CalibrationError("correct must hold booleans (or 0/1): whether each answer matched the reference")
        return (~c_raw.astype(bool)).astype(float)
    try:
        v = np.asarray(loss, dtype=float).ravel()
    except (TypeError, ValueError):
        raise CalibrationError("loss must be an array of numbers in [0, 1] (0: agrees with the reference)") from None
    if len(v) != n:
        raise CalibrationError(f"scores has {n} values but loss has {len(v)}")
    bad = np.flatnonzero(~(np.isfinite(v) & (v >= 0) & (v <= 1)))
    if len(bad):
        raise CalibrationError(f"loss[{int(bad[0])}] is {v[bad[0]]}; each record's loss must be in [0, 1]")
    return v
