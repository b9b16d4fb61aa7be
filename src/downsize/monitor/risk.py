"""Anytime-valid test of "the live risk is ≤ α", fed one spot check at a time.

The calibrated guarantee (``downsize.calibration``) holds while live traffic is exchangeable
with the calibration rows. :class:`RiskMonitor` watches it: every spot check — a uniform
random sample of the *answered* requests re-asked of the teacher — gives a loss in [0, 1]
(0/1 disagreement, or 1 − F1 for multi-label / extraction records), and the monitor tests

    H0: the conditional mean of each check's loss, given the checks before it, is ≤ α.

Method
------
Testing by betting (Waudby-Smith & Ramdas 2023; Podkopaev & Ramdas 2022; Shafer & Vovk):
a gambler starts with wealth 1 and bets against H0, ``W_t = Π (1 + λ_s (x_s − α))`` with a
bet ``0 ≤ λ_s ≤ 1/(2α)`` fixed before loss ``x_s`` is seen. Under H0 the wealth is a
nonnegative supermartingale, so by Ville's inequality ``P(∃t: W_t ≥ 1/δ) ≤ δ``: the monitor
alarms when ``W_t ≥ 1/δ`` and its false-alarm probability over its **whole life**, however
many checks and however often anyone looks, is at most δ. Re-running a fixed-n binomial test
at level δ after every check has no such bound: in ``bench_monitor.py`` it alarms on a third
of unshifted streams of 5,000 checks at rate α, and on four in five when it re-tests a
sliding window of the last 500 checks.

The bets (``strategy="mixture"``, the default) are those of the **mean of two betting
martingales**, each started with half the wealth — a mean of test supermartingales is one:

* **aGRAPA on discounted estimates** (Waudby-Smith & Ramdas 2023, eq. (26)):
  ``λ = (μ̂ − α) / (σ̂² + (μ̂ − α)²)`` clipped to [0, 1/(2α)], with μ̂, σ̂² exponentially
  discounted over a half-life of 2/α checks. It bets 0 while the recent losses look ≤ α, so
  its wealth is not used up in calm periods, and it forgets, so it reacts to a jump after
  5,000 calm checks about as fast as after 500.
* **ONS** (online Newton step, Cutkosky & Orabona 2018; as in Shekhar & Ramdas 2023), the
  faster of the two when the risk is above α from the very first check — a calibration that
  failed, or traffic newer than the calibration rows from day one (issue 12's forum posts).

Why, from the strategy table of ``benchmarks/bench_monitor.py`` (α = 2 % and 5 %; the rate
jumps from α/2 to 2α or 3α at check 500 or 5,000, or is 2α from the start): the mixture's
median detection delay is within 17 % of the better single strategy in every scenario.
Discounted aGRAPA alone is up to 40 % slower when the risk is high from the start; ONS alone,
whose steps shrink as it accumulates gradients, is 2–2.7× slower after 5,000 calm checks;
the paper's aGRAPA on running means misses a doubling of the risk after 5,000 calm checks
in almost every stream. A monitor lives for months, so the bet must forget. Strategies are
chosen by power only: every one of them has the same lifetime guarantee.

Running upper bound
-------------------
:attr:`MonitorState.upper_bound` is a one-sided ``1 − δ`` confidence sequence for a
*constant* live risk (hedged-capital betting with predictable plug-in bets, Waudby-Smith &
Ramdas 2023, on a grid of 0.1 % steps below 10 %): "live risk ≤ x with 1 − δ", valid at
every check simultaneously while traffic is stationary. It averages the whole life of the
monitor, so under drift it lags; the alarm, not the bound, is the decision.

Several versions over a task's life
-----------------------------------
Each student version (and each explicit resume) is a fresh monitor. Give the v-th one
``delta = version_delta(monitor_delta, v)`` = ``monitor_delta · 6 / (π² v²)``: since
``Σ_v 6 / (π² v²) = 1``, the union bound keeps the false-alarm probability over the task's
whole life, all versions together, at most ``monitor_delta``.

What is assumed, and what not
-----------------------------
Each check must be a uniform draw among the answered requests of its time, chosen
independently of its loss; the check rate may change with the past (a drift warning may
raise it) without harming validity, because the test conditions on the past. Escalations
are not checks (selected by low confidence). A failed check (teacher error) is not fed at
all — neither as agreement nor as disagreement. The reference is the teacher: an alarm says
the student disagrees with the teacher more than α, not that the teacher is right.
A calibration that failed (it may, with probability ≤ δ_calibration) is not a false alarm:
H0 is then false from the first check and the monitor catches it too. Feed the checks in
the order they were *selected* (their store id at selection), not in the order the teacher
answered: if disagreements took longer to come back, completion order would depend on the
losses.

Why not MAPIE
-------------
MAPIE 1.6.0's ``mapie.exchangeability_testing.RiskMonitoring`` (Podkopaev & Ramdas 2022)
alarms when a conjugate-mixture empirical-Bernstein lower confidence sequence of the online
risk exceeds a threshold (we would pass ``threshold=α``). It does not fit here: it accepts
only binary ``BinaryRisk`` (``y_true``, ``y_pred``) pairs, not a record loss such as 1 − F1;
it keeps the whole history and recomputes the bound sequence from scratch at every update
(1.1 s for one update at 3,000 checks in ``bench_monitor.py``: O(n) per check, O(n²) per
life, and no state to save or rebuild from the store); it spends half its level on a
reference bound we do not need; its bound is stationary with a fixed tuning ``v_opt=1``. On
the benchmark's shifted streams it needs 4–5× as many checks as the mixture here (α = 5 %,
α/2 → 3α: median 523 against 114; α = 2 %, α/2 → 2α: it detects in under half the streams
within 2,500 checks). It also reports through ``warnings.warn``. (MAPIE's
``OnlineMartingaleTest`` is discussed in :mod:`downsize.monitor.drift`.) The betting test
here is ~200 lines of numpy.

References
----------
Waudby-Smith, Ramdas (2023). Estimating means of bounded random variables by betting. JRSS B.
Podkopaev, Ramdas (2022). Tracking the risk of a deployed model and detecting harmful
distribution shifts. ICLR.
Cutkosky, Orabona (2018). Black-box reductions for parameter-free online learning in Banach
spaces. COLT. (ONS betting.)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MonitorError
from ._bets import STRATEGIES, UpperCS, default_half_life

__all__ = ["MonitorState", "RiskMonitor", "version_delta"]

_FORMAT = "downsize.monitor.risk/1"
_SLACK = 1e-9  # losses within this of [0, 1] (1 − F1 rounding) are clipped, not refused


def version_delta(monitor_delta: float, version: int) -> float:
    """The share of ``monitor_delta`` given to the ``version``-th monitor of a task's life.

    ``monitor_delta · 6 / (π² version²)``; the shares over ``version = 1, 2, ...`` sum to
    ``monitor_delta``, so by the union bound the probability that *any* of a task's monitors
    ever raises a false alarm is at most ``monitor_delta``. Count every fresh monitor (each
    promoted version, each explicit resume), starting at 1.

    >>> round(version_delta(0.05, 1), 5), round(version_delta(0.05, 2), 5)
    (0.0304, 0.0076)
    """
    _check_level(monitor_delta, "monitor_delta")
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise MonitorError(f"version must be an int ≥ 1 (the first monitor is 1), got {version!r}")
    return float(monitor_delta) * 6.0 / (math.pi**2 * int(version) ** 2)


@dataclass(frozen=True)
class MonitorState:
    """What a :class:`RiskMonitor` knows after its checks; the evidence of an alarm.

    Attributes
    ----------
    alpha, delta : float
        The tested risk level and the monitor's lifetime false-alarm budget.
    n_checks : int
        Spot checks fed so far.
    loss_sum : float
        Their summed loss (the number of disagreements for 0/1 losses).
    log_wealth : float
        Log of the betting wealth against "live risk ≤ α" (the test statistic).
    threshold : float
        Alarm level of the wealth, ``1/delta``.
    rejected : bool
        The wealth has reached ``threshold`` at some check: the live risk is above α.
    alarm_at : int or None
        The 1-based check at which it first did.
    next_bet : float
        The bet λ the next check will be played with.
    upper_bound : float
        ``1 − delta`` upper confidence bound of the live risk (see the module docstring).
    """

    alpha: float
    delta: float
    n_checks: int
    loss_sum: float
    log_wealth: float
    threshold: float
    rejected: bool
    alarm_at: int | None
    next_bet: float
    upper_bound: float

    @property
    def mean_loss(self) -> float:
        """Mean loss of the checks (nan before the first)."""
        return self.loss_sum / self.n_checks if self.n_checks else math.nan

    @property
    def wealth(self) -> float:
        """The betting wealth itself (capped at e^700 to stay a float)."""
        return math.exp(min(self.log_wealth, 700.0))

    def describe(self) -> str:
        """One line for logs, events and reports."""
        if not self.n_checks:
            return f"no spot checks yet; alarm if the live risk is shown to exceed {self.alpha:.1%}"
        verdict = (f"ALARM at check {self.alarm_at:,}: live risk > {self.alpha:.1%}"
                   if self.rejected else f"no alarm (live risk ≤ {self.alpha:.1%} not refuted)")
        return (f"{self.n_checks:,} spot checks, loss {self.loss_sum:,.4g} ({self.mean_loss:.1%}); "
                f"evidence {self.wealth:.3g} vs alarm at {self.threshold:.3g} = 1/δ; {verdict}; "
                f"live risk ≤ {self.upper_bound:.1%} with {1 - self.delta:.1%} if stationary")


class RiskMonitor:
    """Sequential, anytime-valid test that the live risk stays ≤ α; see the module docstring.

    Parameters
    ----------
    alpha : float
        The risk level the calibration guarantees (the task's α).
    delta : float
        Lifetime false-alarm probability of this monitor; for the v-th monitor of a task use
        :func:`version_delta` ``(monitor_delta, v)``.
    strategy : {"mixture", "agrapa", "ons"}, default="mixture"
        How the bets are chosen (see the module docstring). Every strategy has the same
        guarantee; they differ in power.
    half_life : float or None, default=None
        Half-life in checks of the aGRAPA estimates (``"agrapa"`` and the mixture's aGRAPA
        part); ``None`` means 2/α, ``math.inf`` the undiscounted running means of the paper.

    Examples
    --------
    >>> mon = RiskMonitor(alpha=0.05, delta=0.05)
    >>> rng = np.random.default_rng(0)
    >>> calm = mon.extend((rng.random(2000) < 0.025).astype(float))   # half the allowed rate
    >>> calm.rejected
    False
    >>> drift = mon.extend((rng.random(2000) < 0.15).astype(float))   # three times the rate
    >>> drift.rejected and 2000 < drift.alarm_at < 2400
    True
    >>> RiskMonitor.from_dict(mon.to_dict()).state == mon.state
    True
    """

    def __init__(self, alpha: float, delta: float, *, strategy: str = "mixture",
                 half_life: float | None = None) -> None:
        _check_level(alpha, "alpha")
        _check_level(delta, "delta")
        if strategy not in STRATEGIES:
            raise MonitorError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        if half_life is not None and not (isinstance(half_life, (int, float)) and half_life > 0):
            raise MonitorError(f"half_life must be None or a number > 0 (checks), got {half_life!r}")
        self.alpha = float(alpha)
        self.delta = float(delta)
        self.strategy = strategy
        self.half_life = default_half_life(self.alpha) if half_life is None else float(half_life)
        self._bettor = STRATEGIES[strategy](self.alpha, self.half_life)
        self._cs = UpperCS(self.delta)
        self._bet = _floats(self._bettor.init())
        self._next_bet = float(self._bettor.bet(self._bet))
        self._ucb = self._cs.init()
        self._n = 0
        self._loss_sum = 0.0
        self._log_wealth = 0.0
        self._alarm_at: int | None = None

    # -- feeding -------------------------------------------------------------------------
    def update(self, loss: float) -> MonitorState:
        """Feed one spot check's loss in [0, 1]; return the new state.

        Raises
        ------
        MonitorError
            ``loss`` is not a finite number in [0, 1] (nothing is changed then).
        """
        x = self._check_loss(loss)
        self._log_wealth += math.log1p(self._next_bet * (x - self.alpha))
        self._bet = _floats(self._bettor.learn(self._bet, x))
        self._next_bet = float(self._bettor.bet(self._bet))
        self._ucb = self._cs.learn(self._ucb, x)
        self._n += 1
        self._loss_sum += x
        if self._alarm_at is None and self._log_wealth >= self._cs.log_threshold:
            self._alarm_at = self._n
        return self.state

    def extend(self, losses: Iterable[float]) -> MonitorState:
        """Feed several losses in order; return the state after the last.

        All are checked first: if one is invalid, none is fed.
        """
        for x in [self._check_loss(v, self._n + i + 1) for i, v in enumerate(losses)]:
            self.update(x)
        return self.state

    @classmethod
    def replay(cls, losses: Iterable[float], alpha: float, delta: float, *,
               strategy: str = "mixture", half_life: float | None = None) -> RiskMonitor:
        """A monitor rebuilt from the ordered sequence of check losses (order by store id)."""
        mon = cls(alpha, delta, strategy=strategy, half_life=half_life)
        mon.extend(losses)
        return mon

    def checks_to_alarm(self, loss: float = 1.0, *, limit: int = 10_000) -> int | None:
        """How many more checks, each with ``loss``, would raise the alarm (0 if raised).

        ``None`` if not within ``limit``. The monitor itself is not changed.
        """
        if self._alarm_at is not None:
            return 0
        x = self._check_loss(loss)
        bet, logw = dict(self._bet), self._log_wealth
        for k in range(1, limit + 1):
            logw += math.log1p(float(self._bettor.bet(bet)) * (x - self.alpha))
            if logw >= self._cs.log_threshold:
                return k
            bet = _floats(self._bettor.learn(bet, x))
        return None

    # -- reading -------------------------------------------------------------------------
    @property
    def state(self) -> MonitorState:
        """The current :class:`MonitorState`."""
        return MonitorState(
            alpha=self.alpha, delta=self.delta, n_checks=self._n, loss_sum=self._loss_sum,
            log_wealth=self._log_wealth, threshold=1.0 / self.delta,
            rejected=self._alarm_at is not None, alarm_at=self._alarm_at,
            next_bet=self._next_bet,
            upper_bound=float(self._cs.bound(self._ucb)) if self._n else 1.0,
        )

    def __repr__(self) -> str:
        return (f"RiskMonitor(alpha={self.alpha}, delta={self.delta}, strategy={self.strategy!r}, "
                f"half_life={self.half_life}) after {self._n} checks")

    # -- persistence ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The whole state as JSON-ready builtins; :meth:`from_dict` continues exactly."""
        u = self._ucb
        return {
            "format": _FORMAT, "alpha": self.alpha, "delta": self.delta,
            "strategy": self.strategy, "half_life": _num_out(self.half_life),
            "n_checks": self._n, "loss_sum": self._loss_sum, "log_wealth": self._log_wealth,
            "alarm_at": self._alarm_at, "bettor": {k: float(v) for k, v in self._bet.items()},
            "upper_cs": {"t": float(u["t"]), "s": float(u["s"]), "v": float(u["v"]),
                         "logk": [float(v) for v in u["logk"]],
                         "excluded": [int(i) for i in np.flatnonzero(u["out"])]},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RiskMonitor:
        """Rebuild a monitor saved by :meth:`to_dict`.

        Raises
        ------
        MonitorError
            ``data`` is not a saved risk monitor (names the first bad field).
        """
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise MonitorError(f"not a saved risk monitor: format is {got!r}, expected {_FORMAT!r}")
        try:
            mon = cls(data["alpha"], data["delta"], strategy=data["strategy"],
                      half_life=_num_in(data["half_life"]))
            bettor = {k: float(data["bettor"][k]) for k in mon._bet}
            u = data["upper_cs"]
            logk = np.asarray(u["logk"], dtype=float)
            out = np.zeros(logk.shape, bool)
            out[np.asarray(u["excluded"], dtype=int)] = True
            n, alarm = int(data["n_checks"]), data["alarm_at"]
            fields = [float(data["loss_sum"]), float(data["log_wealth"]), *bettor.values(),
                      float(u["t"]), float(u["s"]), float(u["v"])]
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise MonitorError(f"saved risk monitor is incomplete or malformed: {exc!r}") from None
        if logk.shape != mon._ucb["logk"].shape or not np.isfinite(logk).all():
            raise MonitorError(f"saved risk monitor: upper_cs.logk must be {mon._ucb['logk'].size} "
                               f"finite numbers, got shape {logk.shape}")
        if not all(math.isfinite(f) for f in fields) or n < 0 or float(u["t"]) != n:
            raise MonitorError(f"saved risk monitor is inconsistent: n_checks={n}, "
                               f"upper_cs.t={u['t']}, numbers {fields}")
        if alarm is not None and not (isinstance(alarm, int) and 1 <= alarm <= n):
            raise MonitorError(f"saved risk monitor: alarm_at={alarm!r} is not a check in 1..{n}")
        mon._n, mon._alarm_at = n, alarm
        mon._loss_sum, mon._log_wealth = fields[0], fields[1]
        mon._bet = bettor
        mon._next_bet = float(mon._bettor.bet(bettor))
        mon._ucb = {"t": float(u["t"]), "s": float(u["s"]), "v": float(u["v"]),
                    "logk": logk, "out": out}
        return mon

    # -- helpers -------------------------------------------------------------------------
    def _check_loss(self, loss: Any, index: int | None = None) -> float:
        try:
            x = float(loss)
        except (TypeError, ValueError):
            x = math.nan
        if not (-_SLACK <= x <= 1.0 + _SLACK):  # also refuses nan
            raise MonitorError(
                f"spot-check loss #{index or self._n + 1} is {loss!r}; a loss must be a finite number in "
                "[0, 1] (do not feed failed checks at all)")
        return min(max(x, 0.0), 1.0)


def _check_level(x: Any, name: str) -> None:
    if isinstance(x, bool) or not isinstance(x, (int, float, np.floating)) or not 0 < x < 1:
        raise MonitorError(f"{name} must be a number strictly between 0 and 1, got {x!r}")


def _floats(st: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in st.items()}


def _num_out(x: float) -> float | str:
    return "inf" if math.isinf(x) else x


def _num_in(x: Any) -> float:
    return math.inf if x == "inf" else float(x)
