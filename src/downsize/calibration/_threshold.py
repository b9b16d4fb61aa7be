"""A confidence threshold with a finite-sample guarantee (Learn-then-Test).

The student answers a request itself when its confidence is at least a threshold λ and
hands it to the teacher otherwise. :class:`ThresholdCalibrator` picks λ on a held-out
calibration set so that, with probability at least 1 − δ over that set, the *selective
risk* — the share of answered requests on which the student disagrees with the reference
labels — is at most α (Angelopoulos, Bates, Candès, Jordan & Lei, "Learn then Test",
2021).

Method
------
Candidate thresholds are the distinct calibration scores, ordered from the most confident
down. For a candidate λ that answers ``n_λ`` calibration points with ``k_λ`` errors among
them, the null hypothesis "selective risk at λ > α" gets the exact binomial p-value
``P(Binom(n_λ, α) ≤ k_λ)``: given ``n_λ``, the answered points are an i.i.d. sample of
the requests with score ≥ λ, so ``k_λ`` is binomial with the true selective risk, and the
p-value is super-uniform under the null (this is the one-sided Clopper–Pearson test).
Hypotheses are tested at level δ in that fixed sequence and the sequence stops at the
first non-rejection (fixed-sequence testing controls the family-wise error at δ without
any multiplicity correction); λ̂ is the lowest threshold rejected before that.

Candidates answering fewer than ``min_answered`` points are not tested: with a handful of
points even zero errors cannot reject, and a single unlucky error among the first few
hundred would end the sequence for good. Because which candidates are skipped depends
only on how many points each answers — never on the errors — the family-wise guarantee
is unaffected. Using the calibration scores themselves as candidates is equivalent to
fixed-sequence testing over an arbitrarily fine fixed grid (the p-value only changes at
calibration scores), so the guarantee holds for λ̂ itself.

Losses need not be 0/1: ``fit(scores, loss=...)`` takes each record's loss in [0, 1] (a
kind's ``disagreements``, e.g. 1 − F1 of a label set), and the hypotheses become "mean loss of
the answered requests > α". ``bound="hoeffding_bentkus"`` (the LTT paper's p-value) and
``bound="betting"`` (Waudby-Smith–Ramdas) are valid for any loss in [0, 1]; the exact binomial
(the default) only for 0/1 losses, and ``fit`` refuses it for anything else.
See :mod:`downsize.calibration._bounds`.

Why not MAPIE
-------------
MAPIE 1.x's ``mapie.risk_control`` (``BinaryClassificationController`` with
``fwer_method="fixed_sequence"``) implements LTT for *binary classifiers' decision
thresholds*: it needs the classifier's ``predict_proba`` and the raw features, thresholds
a fixed grid (``np.linspace(0, 0.99, 100)`` by default), uses Hoeffding–Bentkus p-values,
and picks among valid thresholds by a secondary objective. Selective risk of a multi-class
student on precomputed confidences, with exact binomial p-values on the distinct scores,
is about forty lines with ``scipy.stats``; a dependency adds nothing but weight.

Assumptions
-----------
The calibration points and future requests are **exchangeable** (for instance i.i.d. draws
from the same traffic). Drift in the traffic voids the guarantee: recalibrate on recent
data. The guarantee is **relative to the reference labels** used for calibration — the
teacher's answers (then it bounds disagreement with the teacher, not errors against the
truth) or human gold labels.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator

from ..errors import CalibrationError, NotFittedError
from ._bounds import BOUNDS as _BOUNDS
from ._bounds import as_losses, clopper_pearson, min_calibration_size, p_values, risk_upper
from ._bounds import check_level as _check_level
from ._procedures import (
    METHODS,
    fixed_sequence,
    grid_indices,
    learn_split,
    learned_start_threshold,
    multiple_grid,
)

__all__ = ["ThresholdCalibrator"]


def _pct(x: float) -> str:
    v = 100 * x
    if v == 0 or v >= 10 or float(f"{v:.0f}") == v:
        return f"{v:.0f}"
    return f"{v:.1f}" if v >= 1 else f"{v:.2g}"


def _fmt_threshold(t: float) -> str:
    """Threshold rounded down to 2 decimals, with more digits while they are all nines."""
    digits = 2
    while digits < 6 and t < 1 and math.floor(t * 10**digits) == 10**digits - 1:
        digits += 1
    text = f"{math.floor(t * 10**digits) / 10**digits:.{digits}f}"
    return text.rstrip("0") if len(text) > 4 and text.endswith("0") else text


class ThresholdCalibrator(BaseEstimator):
    """Pick the lowest confidence threshold whose selective risk is provably ≤ α.

    With probability at least ``1 - delta`` over the calibration sample, the share of
    requests answered locally (confidence ≥ ``threshold_``) on which the student disagrees
    with the reference labels is at most ``alpha`` — assuming calibration data and future
    requests are exchangeable (e.g. i.i.d. from the same traffic). The guarantee is
    relative to the reference labels given to ``fit``: the teacher's labels bound
    disagreement with the teacher; gold labels bound errors. See the module docstring for
    the method (Learn-then-Test with fixed-sequence testing and exact binomial p-values).

    Parameters
    ----------
    alpha : float, default=0.1
        Largest acceptable selective risk (disagreement rate among answered requests).
    delta : float, default=0.05
        Allowed probability that the calibration sample misleads (1 - confidence).
    bound : {"binomial", "hoeffding_bentkus", "betting"}, default="binomial"
        p-value of each test: the exact binomial tail (0/1 losses only), the LTT paper's
        Hoeffding–Bentkus, or the Waudby-Smith–Ramdas betting test (both for any loss in [0, 1];
        see :mod:`downsize.calibration._bounds`).
    min_answered : int, float or None, default=None
        Thresholds answering fewer calibration points are not tested (the sequence starts
        below them). An int is a count; a float in (0, 1) a share of the calibration set;
        ``None`` means ``max(min_calibration_size(alpha, delta), ceil(0.1 * n))``. A larger
        value makes the result less sensitive to a stray confident error, at the price of
        never answering less than that share of traffic. λ̂ is monotone in ``alpha`` as long
        as this count does not depend on ``alpha``.

    Attributes
    ----------
    threshold_ : float or None
        λ̂: answer locally when confidence ≥ λ̂. ``None`` when no threshold qualifies: then
        every request goes to the teacher.
    coverage_ : float
        Share of calibration points with confidence ≥ λ̂ (0.0 when ``threshold_`` is None).
    coverage_interval_ : (float, float)
        Clopper–Pearson interval of the coverage at confidence ``1 - delta``.
    n_ : int
        Calibration points.
    n_answered_ : int
        Calibration points at or above λ̂.
    errors_answered_ : int
        Answered calibration points with a non-zero loss (disagreements, for a 0/1 loss).
    loss_answered_ : float
        Sum of the loss over them (``errors_answered_`` for a 0/1 loss).
    risk_upper_ : float or None
        One-sided ``1 - delta`` upper confidence bound of the selective risk at λ̂ (from the
        same bound as the tests; ≤ alpha by construction).
    start_answered_ : int
        Answered count of the first tested threshold (see ``min_answered``).
    curve_ : list of dict
        Per candidate λ, most confident first: ``threshold``, ``n_answered``, ``errors``, ``loss`` (sum),
        ``coverage``, ``risk`` (empirical), ``p_value``, ``tested``, ``rejected``.
    guarantee_ : str
        The guarantee in one plain-English sentence.

    Raises
    ------
    CalibrationError
        From ``fit``: invalid parameters or inputs, or fewer calibration points than even
        an error-free student needs, ``n < log(delta) / log(1 - alpha)`` (quoted).

    References
    ----------
    Angelopoulos, Bates, Candès, Jordan, Lei (2021). Learn then Test: Calibrating
    Predictive Algorithms to Achieve Risk Control. arXiv:2110.01052.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> scores = rng.uniform(size=2000)
    >>> correct = rng.uniform(size=2000) > 0.3 * (1 - scores) ** 2   # errors rarer when confident
    >>> cal = ThresholdCalibrator(alpha=0.05, delta=0.05).fit(scores, correct)
    >>> 0.2 < cal.threshold_ < 0.6 and cal.risk_upper_ <= 0.05
    True
    >>> cal.predict([0.99, 0.01]).tolist()
    [True, False]
    """

    def __init__(
        self,
        *,
        alpha: float = 0.1,
        delta: float = 0.05,
        bound: str = "binomial",
        min_answered: int | float | None = None,
        method: str = "fixed_sequence",
        grid_size: int = 20,
        learn_fraction: float = 0.3,
        learn_margin: float = 0.5,
        random_state: int = 0,
    ) -> None:
        self.alpha = alpha
        self.delta = delta
        self.bound = bound
        self.min_answered = min_answered
        self.method = method
        self.grid_size = grid_size
        self.learn_fraction = learn_fraction
        self.learn_margin = learn_margin
        self.random_state = random_state

    def _check_params(self, n: int) -> int:
        _check_level(self.alpha, "alpha")
        _check_level(self.delta, "delta")
        if self.bound not in _BOUNDS:
            raise CalibrationError(f"bound must be one of {', '.join(_BOUNDS)}, got {self.bound!r}")
        if self.method not in METHODS:
            raise CalibrationError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not (isinstance(self.grid_size, int) and self.grid_size >= 1):
            raise CalibrationError(f"grid_size must be an int ≥ 1, got {self.grid_size!r}")
        if not (0 < self.learn_fraction < 1 and 0 < self.learn_margin <= 1):
            raise CalibrationError(f"learn_fraction must be in (0, 1) and learn_margin in (0, 1], got "
                                   f"{self.learn_fraction!r}, {self.learn_margin!r}")
        floor = min_calibration_size(self.alpha, self.delta)
        m = self.min_answered
        if m is None and self.method in ("holm", "bonferroni"):
            start = floor  # a grid test is not ended by one bad region: no need to skip the top
        elif m is None:
            start = max(floor, math.ceil(0.1 * n))
        elif isinstance(m, (int, np.integer)) and not isinstance(m, bool) and m >= 1:
            start = max(floor, int(m))
        elif isinstance(m, float) and 0 < m < 1:
            start = max(floor, math.ceil(m * n))
        else:
            raise CalibrationError(
                f"min_answered must be None, an int ≥ 1 or a float in (0, 1), got {m!r}"
            )
        return start

    def fit(self, scores: Any, correct: Any = None, *, loss: Any = None) -> ThresholdCalibrator:
        """Calibrate on the student's confidences and each answer's loss against the reference.

        Parameters
        ----------
        scores : array-like of float, shape (n,)
            The student's confidence on each held-out calibration point.
        correct : array-like of bool, shape (n,), optional
            Whether the student's answer agreed with the reference (the 0/1 loss ``1 - correct``).
        loss : array-like of float in [0, 1], shape (n,), optional
            Each answer's loss against the reference (the task kind's ``disagreements``); give
            this or ``correct``, not both. ``bound="binomial"`` needs 0/1 losses.

        Returns
        -------
        self
        """
        try:
            if isinstance(scores, str):
                raise TypeError
            s = np.asarray(scores, dtype=float).ravel()
        except (TypeError, ValueError):
            raise CalibrationError(
                "scores must be an array of numbers (the student's confidences)"
            ) from None
        losses = as_losses(correct, loss, len(s))
        if not np.all(np.isfinite(s)):
            bad = int(np.flatnonzero(~np.isfinite(s))[0])
            raise CalibrationError(f"scores[{bad}] is {s[bad]}; scores must be finite")
        n = len(s)
        start = self._check_params(n)
        if self.bound == "binomial" and not np.isin(losses, (0.0, 1.0)).all():
            raise CalibrationError(
                "bound='binomial' is exact for 0/1 losses only, and this loss takes values between 0 and 1: "
                "use bound='hoeffding_bentkus' or 'betting' (both valid for any loss in [0, 1])"
            )
        floor = min_calibration_size(self.alpha, self.delta)
        if n < floor:
            raise CalibrationError(
                f"{n} calibration points are too few for alpha={self.alpha:g}, delta={self.delta:g}: even "
                f"answering all of them with zero errors gives p = (1 - alpha)^n = {(1 - self.alpha) ** n:.3g} > delta. "
                f"Need n ≥ log(delta)/log(1 - alpha) = {floor} (label {floor - n} more), or relax alpha/delta"
            )

        self.n_learn_ = 0
        self.learned_start_ = None
        if self.method == "learned_start":
            learn, test = learn_split(n, self.learn_fraction, self.random_state)
            self.n_learn_ = len(learn)
            self.learned_start_ = learned_start_threshold(s[learn], losses[learn], self.alpha, self.learn_margin,
                                                          min_calibration_size(self.alpha, self.delta))
            s, losses, n = s[test], losses[test], len(test)
            if n < floor:
                raise CalibrationError(
                    f"after setting {self.n_learn_} points aside to learn the start, {n} calibration points are "
                    f"too few for alpha={self.alpha:g}, delta={self.delta:g} (need {floor}): label more, or use "
                    "method='fixed_sequence'")
            if self.learned_start_ is not None:
                start = floor

        order = np.argsort(-s, kind="stable")
        s_sorted, loss_sorted = s[order], losses[order]
        cum_loss = np.cumsum(loss_sorted)
        cum_err = np.cumsum(loss_sorted > 0)
        # last index of each run of equal scores: candidate λ = that score, answering idx+1 points
        last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
        lam = s_sorted[last]
        n_ans = last + 1
        k = cum_loss[last]
        first = int(np.argmax(n_ans >= min(start, n)))  # candidates are in increasing n_ans
        if self.learned_start_ is not None:
            below = np.flatnonzero((lam <= self.learned_start_) & (n_ans >= min(start, n)))
            first = int(below[0]) if len(below) else len(lam)
        # every candidate's p-value for the curve (the betting test, costlier, only where tested)
        lo = min(first, len(lam)) if self.bound == "betting" else 0
        p = np.ones(len(lam))
        p[lo:] = p_values(k[lo:], n_ans[lo:], self.alpha, self.bound,
                          losses_by_rank=loss_sorted, order=order, delta=self.delta)
        if self.method in ("holm", "bonferroni"):
            grid = grid_indices(n_ans, n, first, self.grid_size)
            chosen, tested, rejected = multiple_grid(p, grid, self.delta, holm=self.method == "holm")
        else:
            chosen, tested, rejected = fixed_sequence(p, first, self.delta)

        self.n_ = n
        self.start_answered_ = int(n_ans[first]) if first < len(lam) else n
        self.curve_ = [
            {
                "threshold": float(lam[i]),
                "n_answered": int(n_ans[i]),
                "errors": int(cum_err[last[i]]),
                "loss": float(k[i]),
                "coverage": float(n_ans[i] / n),
                "risk": float(k[i] / n_ans[i]),
                "p_value": float(p[i]),
                "tested": bool(tested[i]),
                "rejected": bool(rejected[i]),
            }
            for i in range(len(lam))
        ]
        if chosen is None:
            self.threshold_ = None
            self.n_answered_ = 0
            self.errors_answered_ = 0
            self.loss_answered_ = 0.0
            self.coverage_ = 0.0
            self.coverage_interval_ = (0.0, 0.0)
            self.risk_upper_ = None
        else:
            self.threshold_ = float(lam[chosen])
            self.n_answered_ = int(n_ans[chosen])
            self.errors_answered_ = int(cum_err[last[chosen]])
            self.loss_answered_ = float(k[chosen])
            self.coverage_ = self.n_answered_ / n
            self.coverage_interval_ = clopper_pearson(self.n_answered_, n, 1 - self.delta)
            answered = np.sort(order[: self.n_answered_])
            self.risk_upper_ = risk_upper(
                self.loss_answered_, self.n_answered_, self.delta, self.bound, losses[answered]
            )
        self.guarantee_ = self._sentence()
        return self

    def _sentence(self) -> str:
        conf = _pct(1 - self.delta)
        a = _pct(self.alpha)
        if self.threshold_ is None:
            return (
                f"No confidence threshold qualifies: on {self.n_:,} calibration requests the student could not be "
                f"shown to disagree with the reference on at most {a} % of the requests it answers "
                f"(at {conf} % confidence), so every request goes to the teacher."
            )
        lo, hi = self.coverage_interval_
        return (
            f"With probability ≥ {conf} % over the calibration sample, the student disagrees with the reference "
            f"on at most {a} % of the requests it answers (confidence ≥ {_fmt_threshold(self.threshold_)}); "
            f"it answered {_pct(self.coverage_)} % ({_pct(lo)}–{_pct(hi)} %) of {self.n_:,} calibration requests."
        )

    def predict(self, scores: Any) -> np.ndarray:
        """Boolean mask: True where the student answers locally (score ≥ ``threshold_``)."""
        if not hasattr(self, "guarantee_"):
            raise NotFittedError(
                "this ThresholdCalibrator is not fitted yet: call fit(scores, correct) or fit(scores, loss=...) first"
            )
        s = np.asarray(scores, dtype=float)
        if self.threshold_ is None:
            return np.zeros(s.shape, dtype=bool)
        return s >= self.threshold_
