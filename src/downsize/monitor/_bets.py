"""Betting kernels of :class:`~downsize.monitor.RiskMonitor`, vectorised over leading axes.

Every kernel is a small object whose state is a ``dict`` of floats (or of arrays of any
shape, so that ``benchmarks/bench_monitor.py`` runs thousands of simulated streams through
the very same code); ``init`` makes a state, ``bet`` reads the next bet from it (predictable:
it depends on past losses only) and ``learn`` returns the state after one more loss. The
monitor itself uses 0-d values, and its JSON holds the state as plain floats.

Wealth against H0 "mean loss ≤ α" multiplies by ``1 + λ (x − α)`` per loss ``x ∈ [0, 1]``
with ``0 ≤ λ ≤ CAP / α``: a supermartingale under H0 for any predictable λ, and a check with
loss 0 costs at most ``CAP`` of the wealth.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["CAP", "ONS", "STRATEGIES", "AGrapa", "Mixture", "UpperCS", "default_half_life"]

#: largest bet as a share of 1/α (Waudby-Smith & Ramdas truncate at c = 1/2 too)
CAP = 0.5
#: prior pseudo-checks of the aGRAPA estimates, placed at mean α (so the first bet is 0)
_PRIOR_CHECKS = 4.0


def default_half_life(alpha: float) -> float:
    """Half-life, in checks, of the discounted aGRAPA estimates: 2/α (40 checks at α = 5 %).

    About two expected disagreements per half-life at the target rate: short enough that
    after a long calm period the bet reacts to a jump within a few hundred checks, long
    enough that noise seldom makes it bet (chosen by ``bench_monitor.py``'s strategy table).
    """
    return 2.0 / alpha


class AGrapa:
    """Approximate GRAPA (Waudby-Smith & Ramdas 2023, eq. (26)) on discounted estimates.

    ``λ = clip((μ̂ − α) / (σ̂² + (μ̂ − α)²), 0, CAP/α)`` where μ̂, σ̂² are exponentially
    discounted mean and variance of past losses with half-life ``half_life`` checks
    (``inf``: plain running means, the paper's version).
    """

    name = "agrapa"

    def __init__(self, alpha: float, half_life: float) -> None:
        self.alpha = alpha
        self.half_life = half_life
        self.gamma = 1.0 if math.isinf(half_life) else 2.0 ** (-1.0 / half_life)

    def init(self, shape: tuple[int, ...] = ()) -> dict[str, Any]:
        a, n0 = self.alpha, _PRIOR_CHECKS
        return {"n": np.full(shape, n0), "s": np.full(shape, a * n0),
                "v": np.full(shape, a * (1.0 - a) * n0)}

    def bet(self, st: dict[str, Any]) -> Any:
        mu = st["s"] / st["n"]
        d = mu - self.alpha
        return np.minimum(np.maximum(d / (st["v"] / st["n"] + d * d), 0.0), CAP / self.alpha)

    def learn(self, st: dict[str, Any], x: Any) -> dict[str, Any]:
        g = self.gamma
        mu = st["s"] / st["n"]
        return {"n": g * st["n"] + 1.0, "s": g * st["s"] + x, "v": g * st["v"] + (x - mu) ** 2}


class ONS:
    """Online Newton step on the log-wealth (Cutkosky & Orabona 2018), as in Shekhar &
    Ramdas (2023) and Chugg et al. (2023): ``λ ← clip(λ + c z / (1 + Σ z²), 0, CAP/α)`` with
    ``z = (x − α) / (1 + λ (x − α))`` and ``c = 2 / (2 − log 3)``.
    """

    name = "ons"
    _C = 2.0 / (2.0 - math.log(3.0))

    def __init__(self, alpha: float, half_life: float) -> None:
        self.alpha = alpha
        self.half_life = half_life  # unused: ONS does not forget

    def init(self, shape: tuple[int, ...] = ()) -> dict[str, Any]:
        return {"lam": np.zeros(shape), "a": np.ones(shape)}

    def bet(self, st: dict[str, Any]) -> Any:
        return st["lam"] * 1.0

    def learn(self, st: dict[str, Any], x: Any) -> dict[str, Any]:
        g = x - self.alpha
        z = g / (1.0 + st["lam"] * g)
        a = st["a"] + z * z
        lam = np.minimum(np.maximum(st["lam"] + self._C * z / a, 0.0), CAP / self.alpha)
        return {"lam": lam, "a": a}


class Mixture:
    """The mean of the wealths of :class:`AGrapa` (discounted) and :class:`ONS`, started
    with 1/2 each: a test martingale too, and at most log 2 behind the better of the two.

    Played as one bettor: ``λ = w λ_agrapa + (1 − w) λ_ons`` where ``w`` is aGRAPA's share of
    the current wealth, so the monitor's wealth update is the same for every strategy.
    """

    name = "mixture"

    def __init__(self, alpha: float, half_life: float) -> None:
        self.alpha = alpha
        self.half_life = half_life
        self.parts = (("agrapa.", AGrapa(alpha, half_life)), ("ons.", ONS(alpha, half_life)))
        self._keys = {prefix: [(prefix + k, k) for k in part.init()] for prefix, part in self.parts}

    def init(self, shape: tuple[int, ...] = ()) -> dict[str, Any]:
        st = {"w": np.full(shape, 0.5)}
        for prefix, part in self.parts:
            st.update({prefix + k: v for k, v in part.init(shape).items()})
        return st

    def _sub(self, st: dict[str, Any], prefix: str) -> dict[str, Any]:
        return {short: st[full] for full, short in self._keys[prefix]}

    def _bets(self, st: dict[str, Any]) -> tuple[Any, Any]:
        (pa, a), (po, o) = self.parts
        return a.bet(self._sub(st, pa)), o.bet(self._sub(st, po))

    def bet(self, st: dict[str, Any]) -> Any:
        la, lo = self._bets(st)
        return st["w"] * la + (1.0 - st["w"]) * lo

    def learn(self, st: dict[str, Any], x: Any) -> dict[str, Any]:
        la, lo = self._bets(st)
        g = x - self.alpha
        wa, wo = st["w"] * (1.0 + la * g), (1.0 - st["w"]) * (1.0 + lo * g)
        out = {"w": wa / (wa + wo)}
        for prefix, part in self.parts:
            out.update({prefix + k: v for k, v in part.learn(self._sub(st, prefix), x).items()})
        return out


STRATEGIES = {"mixture": Mixture, "agrapa": AGrapa, "ons": ONS}

#: candidate upper bounds m: 0.001 steps below 10 %, 0.01 steps above
GRID = np.round(np.concatenate([np.arange(0, 100) / 1000, np.arange(10, 100) / 100]), 6)


class UpperCS:
    """Upper confidence sequence for a constant mean loss: hedged-capital betting with the
    predictable plug-in bet of Waudby-Smith & Ramdas (2023), one-sided, on the grid ``GRID``.

    For each m the wealth ``Π (1 + λ_t(m) (m − x_t))`` is a supermartingale when the mean
    loss is ≥ m; m is excluded for good once it reaches 1/δ. The bound is the grid point just
    above the largest m never excluded, so ``P(∃t: bound_t < μ) ≤ δ`` when the loss has
    constant mean μ (μ need not be on the grid). ``λ_t = min(√(2 log(1/δ) / (σ̂²_{t−1} t
    log(1+t))), CAP/(1−m))`` with the paper's estimates (prior mean 1/2, variance 1/4).
    """

    def __init__(self, delta: float) -> None:
        self.delta = delta
        self.log_threshold = math.log(1.0 / delta)
        self.cap = CAP / (1.0 - GRID)

    def init(self, shape: tuple[int, ...] = ()) -> dict[str, Any]:
        return {"t": np.zeros(shape), "s": np.zeros(shape), "v": np.zeros(shape),
                "logk": np.zeros(shape + GRID.shape), "out": np.zeros(shape + GRID.shape, bool)}

    def learn(self, st: dict[str, Any], x: Any) -> dict[str, Any]:
        t = st["t"] + 1.0
        var = (0.25 + st["v"]) / t  # σ̂²_{t−1}
        lam = np.sqrt(2.0 * self.log_threshold / (var * t * np.log1p(t)))
        lam = np.minimum(np.asarray(lam)[..., None], self.cap)
        xe = np.asarray(x)[..., None]
        logk = st["logk"] + np.log1p(lam * (GRID - xe))
        s = st["s"] + x
        mu = (0.5 + s) / (t + 1.0)
        return {"t": t, "s": s, "v": st["v"] + (x - mu) ** 2, "logk": logk,
                "out": st["out"] | (logk >= self.log_threshold)}

    @staticmethod
    def bound(st: dict[str, Any]) -> Any:
        """The upper bound: the grid point above the largest never-excluded m, else 1."""
        keep = ~st["out"]
        last = GRID.size - 1 - np.argmax(keep[..., ::-1], axis=-1)  # m = 0 is never excluded
        nxt = np.minimum(last + 1, GRID.size - 1)
        return np.where(last + 1 < GRID.size, GRID[nxt], 1.0)
