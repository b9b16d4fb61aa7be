"""Unsupervised early warning: has the student's live confidence left its calibration
distribution? Needs no teacher, so it watches every request, not only the spot checks.

Method
------
An exchangeability test martingale on conformal p-values (Vovk, Gammerman & Shafer 2005,
ch. 7; Vovk 2021, "Testing randomness online"). Each live confidence c_t gets the smoothed
p-value of its rank among **all earlier points — the calibration confidences and the live
ones before it** — with a random tie-break. If calibration rows and live requests are
exchangeable, these p-values are independent and uniform (Vovk's theorem), so a martingale
betting on them (:class:`~downsize.monitor._conformal.Jumper`: the "simple jumper" over
four experts — no bet, live confidence lower, live confidence higher, and a discounted
histogram of past p-values for changes of shape) is a test martingale, and warning at
``M_t ≥ 1/δ`` gives false warnings with probability ≤ δ over the monitor's whole life.

Why the reference grows: ranking each live point among the *fixed* calibration scores only
(the tempting shortcut) gives p-values that are uniform on average over calibration sets but
not independent given one, so over a long life a powerful bettor finds the calibration
set's own sampling error and warns on unshifted traffic: in ``bench_monitor.py`` the shortcut
warns on 20 % of unshifted streams of 4,000 requests against 2,000 calibration rows, and on
99 % of 10,000 against 300; the growing reference on 4.5 % and 4.1 %. Keeping the live points costs nothing:
confidences are counted in 2,048 fixed bins of the logit (``_conformal.BINS``), with a
Fenwick tree for ranks — O(log 2048) per request, fixed memory, ties broken by
counter-based pseudo-random uniforms so a monitor rebuilt from the store is identical.

What a warning means
--------------------
The confidence distribution moved: the traffic is no longer what the threshold was
calibrated on, so the guarantee may no longer hold. It does **not** say the risk is above α
(new traffic can be easy) — that is :class:`~downsize.monitor.RiskMonitor`'s job. A warning
should only raise the spot-check rate for a while; it never suspends. The warning is sticky:
to re-arm, start a new monitor (each new one spends another δ of false warnings).
Feed the confidence of **every** request the student scores (answered or escalated), because
the calibration confidences are those of all calibration rows.

Why not MAPIE
-------------
MAPIE 1.6.0's ``OnlineMartingaleTest`` implements the same two martingales (simple jumper
with experts ε ∈ {−1, 0, 1}, and a KDE plug-in) but needs a MAPIE conformal estimator and
labelled ``(X, y)`` to make its conformity scores (we have no labels here: the point is to
need no teacher), keeps every score and p-value in Python lists, computes each p-value
by a scan of all past scores (O(n) per request), draws its tie-breakers from a
``numpy.random.Generator`` (no JSON state, not rebuildable from the store), and warns through
``warnings.warn``. Its three linear experts alone are also weaker: in ``bench_monitor.py``
they detect a 10 % share of hard traffic in 23 % of streams within 3,000 requests (the
histogram expert here: 93 %, median 923 requests) and are 15–25 % slower on mean shifts.
The p-value formula and the jumper are a few lines; we write them here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MonitorError
from ._conformal import BINS, Fenwick, Jumper, bin_of, pvalue, sequential_pvalues, to_bins, uniform

__all__ = ["DriftMonitor", "DriftState"]

_FORMAT = "downsize.monitor.drift/1"


@dataclass(frozen=True)
class DriftState:
    """What a :class:`DriftMonitor` knows; the evidence of a warning.

    Attributes
    ----------
    delta : float
        Lifetime false-warning probability.
    n_reference, n_live : int
        Calibration confidences, and live confidences fed so far.
    reference_mean, live_mean : float
        Their mean confidences (``live_mean`` is nan before the first live one).
    log_martingale : float
        Log of the exchangeability martingale (the test statistic).
    threshold : float
        Warning level of the martingale, ``1/delta``.
    warned : bool
        The martingale has reached ``threshold``: live confidences are not exchangeable with
        the calibration ones.
    warned_at : int or None
        The 1-based live request at which it first did.
    last_p_value : float or None
        p-value of the latest live confidence (small: lower than usual).
    """

    delta: float
    n_reference: int
    n_live: int
    reference_mean: float
    live_mean: float
    log_martingale: float
    threshold: float
    warned: bool
    warned_at: int | None
    last_p_value: float | None

    @property
    def martingale(self) -> float:
        return math.exp(min(self.log_martingale, 700.0))

    def describe(self) -> str:
        """One line for logs, events and reports."""
        verdict = (f"WARNING since request {self.warned_at:,}: live confidence has drifted"
                   if self.warned else "no drift warning")
        live = f"{self.live_mean:.3f}" if self.n_live else "–"
        return (f"{self.n_live:,} live confidences (mean {live}) vs {self.n_reference:,} "
                f"calibration (mean {self.reference_mean:.3f}); evidence {self.martingale:.3g} "
                f"vs warning at {self.threshold:.3g} = 1/δ; {verdict}")


class DriftMonitor:
    """Sequential test that live confidences are exchangeable with the calibration ones.

    Parameters
    ----------
    reference : array-like of float
        The student's confidences on the calibration rows (all of them, in [0, 1]).
    delta : float
        Lifetime false-warning probability of this monitor.
    seed : int, default=0
        Seed of the tie-breaking uniforms (any fixed value is valid; keep it to replay).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> cal = 1 / (1 + np.exp(-rng.normal(2.5, 1.5, 2000)))
    >>> mon = DriftMonitor(cal, delta=0.05)
    >>> mon.extend(1 / (1 + np.exp(-rng.normal(2.5, 1.5, 1000)))).warned      # same traffic
    False
    >>> mon.extend(1 / (1 + np.exp(-rng.normal(1.5, 1.5, 1000)))).warned      # harder traffic
    True
    """

    def __init__(self, reference: Any, delta: float, *, seed: int = 0) -> None:
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0 < delta < 1:
            raise MonitorError(f"delta must be a number strictly between 0 and 1, got {delta!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise MonitorError(f"seed must be an int in [0, 2**63), got {seed!r}")
        ref = _check_confidences(reference, "reference confidence")
        if ref.size == 0:
            raise MonitorError("reference has no confidences: pass the calibration rows' ones")
        self.delta = float(delta)
        self.seed = int(seed)
        self._jumper = Jumper()
        self._log_threshold = math.log(1.0 / self.delta)
        self._n_ref = int(ref.size)
        self._ref_sum = float(ref.sum())
        self._fen = Fenwick(np.bincount(to_bins(ref), minlength=BINS))
        self._n_live = 0
        self._live_sum = 0.0
        self._st = self._jumper.init_scalar()
        self._warned_at: int | None = None
        self._last_p: float | None = None

    def update(self, confidence: float) -> DriftState:
        """Feed one live confidence in [0, 1]; return the new state.

        Raises
        ------
        MonitorError
            ``confidence`` is not a finite number in [0, 1] (nothing is changed then).
        """
        c = _check_one(confidence, self._n_live + 1)
        b = bin_of(c)
        fen = self._fen
        p = pvalue(float(fen.below(b)), float(fen.counts[b]), float(fen.total),
                   uniform(self.seed, self._n_live))
        fen.add(b)
        self._advance([c], [p])
        return self.state

    def extend(self, confidences: Iterable[float]) -> DriftState:
        """Feed many live confidences in order (batch ranks; same result as ``update``)."""
        c = _check_confidences(list(confidences), "live confidence",
                               offset=self._n_live)
        if c.size:
            p, counts = sequential_pvalues(np.asarray(self._fen.counts), to_bins(c), self.seed,
                                           t0=self._n_live)
            self._fen = Fenwick(counts)
            self._advance(c.tolist(), p.tolist())
        return self.state

    @classmethod
    def replay(cls, reference: Any, confidences: Iterable[float], delta: float, *,
               seed: int = 0) -> DriftMonitor:
        """A monitor rebuilt from the reference and the ordered live confidences."""
        mon = cls(reference, delta, seed=seed)
        mon.extend(confidences)
        return mon

    def _advance(self, c: list[float], p: list[float]) -> None:
        st, step, n0 = self._st, self._jumper.step_scalar, self._n_live
        for i, pi in enumerate(p):
            st = step(st, pi)
            self._live_sum += c[i]
            if self._warned_at is None and st["logm"] >= self._log_threshold:
                self._warned_at = n0 + i + 1
        self._st = st
        self._n_live = n0 + len(p)
        self._last_p = float(p[-1])

    @property
    def state(self) -> DriftState:
        """The current :class:`DriftState`."""
        return DriftState(
            delta=self.delta, n_reference=self._n_ref, n_live=self._n_live,
            reference_mean=self._ref_sum / self._n_ref,
            live_mean=self._live_sum / self._n_live if self._n_live else math.nan,
            log_martingale=float(self._st["logm"]), threshold=1.0 / self.delta,
            warned=self._warned_at is not None, warned_at=self._warned_at,
            last_p_value=self._last_p,
        )

    def __repr__(self) -> str:
        return (f"DriftMonitor(<{self._n_ref} reference confidences>, delta={self.delta}, "
                f"seed={self.seed}) after {self._n_live} live")

    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-ready builtins (bin counts sparse); see :meth:`from_dict`."""
        counts = self._fen.counts
        return {
            "format": _FORMAT, "delta": self.delta, "seed": self.seed,
            "n_reference": self._n_ref, "reference_sum": self._ref_sum,
            "n_live": self._n_live, "live_sum": self._live_sum,
            "warned_at": self._warned_at, "last_p_value": self._last_p,
            "bins": [[i, c] for i, c in enumerate(counts) if c],
            "martingale": dict(self._st),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DriftMonitor:
        """Rebuild a monitor saved by :meth:`to_dict`.

        Raises
        ------
        MonitorError
            ``data`` is not a saved drift monitor (names the first bad field).
        """
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise MonitorError(f"not a saved drift monitor: format is {got!r}, expected {_FORMAT!r}")
        try:
            mon = cls([0.5], data["delta"], seed=data["seed"])
            counts = np.zeros(BINS, dtype=np.int64)
            for i, c in data["bins"]:
                counts[int(i)] += int(c)
            n_ref, n_live = int(data["n_reference"]), int(data["n_live"])
            m = data["martingale"]
            st = {k: ([float(x) for x in m[k]] if isinstance(v, list) else float(m[k]))
                  for k, v in mon._st.items()}
            sums = (float(data["reference_sum"]), float(data["live_sum"]))
            warned, last_p = data["warned_at"], data["last_p_value"]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise MonitorError(f"saved drift monitor is incomplete or malformed: {exc!r}") from None
        shapes_ok = all(np.shape(st[k]) == np.shape(v) for k, v in mon._st.items())
        finite = all(np.isfinite(v).all() for v in st.values())
        if (counts.min() < 0 or n_ref < 1 or n_live < 0 or int(counts.sum()) != n_ref + n_live
                or not shapes_ok or not finite):
            raise MonitorError(f"saved drift monitor is inconsistent: {int(counts.sum())} counted "
                               f"points for n_reference={n_ref} + n_live={n_live}, or bad martingale")
        if warned is not None and not (isinstance(warned, int) and 1 <= warned <= n_live):
            raise MonitorError(f"saved drift monitor: warned_at={warned!r} is not in 1..{n_live}")
        mon._fen = Fenwick(counts)
        mon._n_ref, mon._n_live = n_ref, n_live
        mon._ref_sum, mon._live_sum = sums
        mon._st, mon._warned_at = st, warned
        mon._last_p = None if last_p is None else float(last_p)
        return mon


def _check_confidences(values: Any, what: str, offset: int = 0) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=float).ravel()
    except (TypeError, ValueError):  # find the element that is not a number
        items = list(values) if isinstance(values, (list, tuple)) else [values]
        arr = np.array([_as_float(v) for v in items])
    bad = ~((arr >= 0.0) & (arr <= 1.0))  # also nan
    if bad.any():
        i = int(np.argmax(bad))
        shown = values[i] if isinstance(values, (list, tuple)) else arr[i]
        where = f" #{offset + i + 1}" if arr.size > 1 or offset else ""
        raise MonitorError(f"{what}{where} is {shown!r}; confidences must be finite numbers in [0, 1]")
    return arr


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def _check_one(value: Any, index: int) -> float:
    c = _as_float(value)
    if not 0.0 <= c <= 1.0:  # also nan
        raise MonitorError(f"live confidence #{index} is {value!r}; confidences must be finite "
                           "numbers in [0, 1]")
    return c
