"""Kernels of :class:`~downsize.monitor.DriftMonitor`: binning, smoothed conformal p-values,
the deterministic tie-breaking uniforms and the jumper martingale, vectorised over seeds so
that ``benchmarks/bench_monitor.py`` simulates through the same code.
"""

from __future__ import annotations

import bisect
import math
from typing import Any

import numpy as np

__all__ = ["BINS", "Fenwick", "Jumper", "bin_of", "pvalue", "sequential_pvalues", "to_bins", "uniform", "uniforms"]

#: confidences are binned on a fixed grid of the logit (a function of the confidence alone,
#: so exchangeability is untouched; ties are broken at random): 2048 bins over logit ±14
#: (the end bins take everything beyond), i.e. steps of 0.003 in confidence near 0.5 and
#: 1e-4 near 0.99
BINS = 2048
_Z = 14.0
_M64 = (1 << 64) - 1


#: interior bin edges in confidence space: logistic of the logit grid, rounded to 12
#: significant digits so that they are the same decimal literals on every platform
EDGES = tuple(float(f"{1.0 / (1.0 + math.exp(_Z - i * 2 * _Z / BINS)):.12g}") for i in range(1, BINS))
_EDGES = np.array(EDGES)


def bin_of(conf: float) -> int:
    """Bin index in ``0..BINS-1`` of one confidence in [0, 1] (validated by the caller).

    Comparisons with fixed edges only, so the incremental and the batch paths (and any
    machine) put every confidence in the same bin, bit for bit.
    """
    return bisect.bisect_right(EDGES, conf)


def to_bins(conf: Any) -> np.ndarray:
    """:func:`bin_of` of every confidence of an array (any shape)."""
    return np.searchsorted(_EDGES, np.asarray(conf, dtype=float), side="right").astype(np.int64)


def uniforms(seed: Any, t: Any) -> np.ndarray:
    """U(0, 1) tie-breakers for live points ``t`` (0-based): SplitMix64 of (seed, t).

    Counter-based, so a monitor rebuilt from the store draws the same ones; they never look
    at the data, which is all the smoothed p-value needs. ``seed``: int(s) ≥ 0, broadcast
    against ``t``.
    """
    with np.errstate(over="ignore"):
        z = (np.asarray(seed, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
             + (np.asarray(t, dtype=np.uint64) + np.uint64(1)) * np.uint64(0xBF58476D1CE4E5B9))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return ((z >> np.uint64(11)).astype(float) + 0.5) / 2.0**53


def uniform(seed: int, t: int) -> float:
    """:func:`uniforms` for one live point, in plain Python integers (same bits)."""
    z = (seed * 0x9E3779B97F4A7C15 + (t + 1) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    z ^= z >> 31
    return ((z >> 11) + 0.5) / 2.0**53


def pvalue(below: Any, equal: Any, n: Any, u: Any) -> Any:
    """Smoothed conformal p-value of a point with ``below`` earlier points in lower bins and
    ``equal`` in its own, among ``n`` earlier points: uniform under exchangeability."""
    return (below + u * (equal + 1.0)) / (n + 1.0)


class Fenwick:
    """Counts per bin with O(log BINS) prefix sums (pure Python: ~2 µs per query)."""

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = [int(c) for c in counts]
        tree = [0] * (BINS + 1)
        for i, c in enumerate(self.counts, start=1):
            tree[i] += c
            j = i + (i & -i)
            if j <= BINS:
                tree[j] += tree[i]
        self.tree = tree
        self.total = sum(self.counts)

    def below(self, b: int) -> int:
        """Points in bins ``< b``."""
        s, i, tree = 0, b, self.tree
        while i > 0:
            s += tree[i]
            i -= i & -i
        return s

    def add(self, b: int) -> None:
        self.counts[b] += 1
        self.total += 1
        i, tree = b + 1, self.tree
        while i <= BINS:
            tree[i] += 1
            i += i & -i


def sequential_pvalues(counts: np.ndarray, bins: np.ndarray, seed: Any, t0: int = 0,
                       block: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """p-values of live points ``bins`` (…, T), each among all points before it.

    ``counts`` (…, BINS) holds the earlier points (reference, then live points
    ``0..t0-1``); ``seed`` is an int or one per stream, shape (…, 1); returns the p-values
    and the updated counts. Batch twin of
    :meth:`DriftMonitor.update` (same integers, same float formula), used to replay a long
    stream and by the benchmark.
    """
    counts = np.array(counts, dtype=np.int64, copy=True)
    bins = np.asarray(bins, dtype=np.int64)
    T = bins.shape[-1]
    n0 = counts.sum(axis=-1, keepdims=True)
    u = uniforms(seed, np.arange(t0, t0 + T)) * np.ones(bins.shape)
    out = np.empty(bins.shape)
    for a in range(0, T, block):
        b = bins[..., a:a + block]
        L = b.shape[-1]
        cum = np.cumsum(counts, axis=-1) - counts  # points in lower bins
        below = np.take_along_axis(cum, b, axis=-1)
        equal = np.take_along_axis(counts, b, axis=-1)
        earlier = np.tri(L, k=-1, dtype=bool)  # [i, j]: j comes before i
        below = below + ((b[..., None, :] < b[..., :, None]) & earlier).sum(-1)
        equal = equal + ((b[..., None, :] == b[..., :, None]) & earlier).sum(-1)
        n = n0 + a + np.arange(L)
        out[..., a:a + L] = pvalue(below.astype(float), equal.astype(float), n.astype(float),
                                   u[..., a:a + L])
        flat = counts.reshape(-1, BINS)
        rows = np.repeat(np.arange(flat.shape[0]), L)
        np.add.at(flat, (rows, b.reshape(-1, L).ravel()), 1)
    return out, counts


class Jumper:
    """Vovk's "simple jumper" test martingale over four betting experts on the p-values.

    Experts: no bet (1); ``1 ∓ (p − ½)`` (live confidences lower / higher than the
    reference); and a plug-in bettor ``(1 − ω) + ω f̂(p)`` where f̂ is a histogram (10 bins,
    Dirichlet prior 1) of past p-values discounted with a half-life of 200 (a change of
    shape, e.g. a share of the traffic turning hard). Before each p-value a share ``J`` of the
    wealth is spread evenly over the experts, so the martingale tracks the best expert of
    each period at a cost of about log(4/J) per change. Every expert's bet has mean 1 under
    uniform p, so the mixture is a test martingale.
    """

    J = 0.001
    K = 10
    OMEGA = 0.5
    PRIOR = 1.0
    GAMMA = 2.0 ** (-1.0 / 200)
    N_EXPERTS = 4

    def init(self, shape: tuple[int, ...] = ()) -> dict[str, Any]:
        return {"w": np.full(shape + (self.N_EXPERTS,), 1.0 / self.N_EXPERTS),
                "logm": np.zeros(shape), "h": np.zeros(shape + (self.K,)), "hsum": np.zeros(shape)}

    def init_scalar(self) -> dict[str, Any]:
        """State of one stream in builtins (lists and floats), for :meth:`step_scalar`."""
        return {"w": [1.0 / self.N_EXPERTS] * self.N_EXPERTS, "logm": 0.0,
                "h": [0.0] * self.K, "hsum": 0.0}

    def step_scalar(self, st: dict[str, Any], p: float) -> dict[str, Any]:
        """One p-value on one stream (plain Python: ~4 µs instead of ~60 for :meth:`step`)."""
        K, om, prior = self.K, self.OMEGA, self.PRIOR
        k = min(int(p * K), K - 1)
        h = st["h"]
        dens = K * (h[k] + prior) / (st["hsum"] + K * prior)
        bets = (1.0, 1.0 - (p - 0.5), 1.0 + (p - 0.5), (1.0 - om) + om * dens)
        keep, share = 1.0 - self.J, self.J / self.N_EXPERTS
        w = [(keep * wi + share) * bi for wi, bi in zip(st["w"], bets)]
        tot = w[0] + w[1] + w[2] + w[3]
        h = [self.GAMMA * x for x in h]
        h[k] += 1.0
        return {"w": [x / tot for x in w], "logm": st["logm"] + math.log(tot), "h": h,
                "hsum": self.GAMMA * st["hsum"] + 1.0}

    def step(self, st: dict[str, Any], p: Any) -> dict[str, Any]:
        """One p-value on each of many streams (arrays; used by the benchmark)."""
        p = np.asarray(p, dtype=float)
        k = np.minimum((p * self.K).astype(np.int64), self.K - 1)
        hk = np.take_along_axis(st["h"], k[..., None], axis=-1)[..., 0]
        dens = self.K * (hk + self.PRIOR) / (st["hsum"] + self.K * self.PRIOR)
        bets = np.stack([np.ones_like(p), 1.0 - (p - 0.5), 1.0 + (p - 0.5),
                         (1.0 - self.OMEGA) + self.OMEGA * dens], axis=-1)
        w = ((1.0 - self.J) * st["w"] + self.J / self.N_EXPERTS) * bets
        tot = w.sum(axis=-1)
        h = self.GAMMA * st["h"]
        np.put_along_axis(h, k[..., None], np.take_along_axis(h, k[..., None], -1) + 1.0, -1)
        return {"w": w / tot[..., None], "logm": st["logm"] + np.log(tot), "h": h,
                "hsum": self.GAMMA * st["hsum"] + 1.0}
