"""How well mined templates match the true ones (for tests and benchmarks on constructed traffic)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

__all__ = ["purity", "template_scores"]


def purity(pred: Sequence[int], true: Sequence[Any]) -> tuple[float, float]:
    """(purity, completeness): share of requests in their cluster's majority template, and in
    their template's majority cluster (inverse purity)."""
    pairs = Counter(zip(pred, true))
    best_c: dict[Any, int] = {}
    best_t: dict[Any, int] = {}
    for (c, t), n in pairs.items():
        best_c[c] = max(best_c.get(c, 0), n)
        best_t[t] = max(best_t.get(t, 0), n)
    n = max(1, len(pred))
    return sum(best_c.values()) / n, sum(best_t.values()) / n


def template_scores(pred: Sequence[int], true: Sequence[Any]) -> dict[Any, dict[str, float]]:
    """Per true template: its majority cluster's share of it (``recall``) and that cluster's purity."""
    pairs = Counter(zip(pred, true))
    size_t = Counter(true)
    size_c = Counter(pred)
    out = {}
    for t in size_t:
        c, n = max(((c, n) for (c, tt), n in pairs.items() if tt == t), key=lambda x: x[1])
        out[t] = {"recall": n / size_t[t], "purity": n / size_c[c], "cluster": c}
    return out
