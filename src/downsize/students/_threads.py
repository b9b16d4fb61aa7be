"""A batch cut into blocks of rows, answered in one thread per core.

The students' batch work is numpy and scipy kernels (sparse products, sorts, ``argpartition``)
that release the GIL, so threads share one model in memory and scale over the cores without
the pickling and start-up of a process pool. ``concurrent.futures`` does the pooling; this only
decides the cuts.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TypeVar

import numpy as np

__all__ = ["cores", "map_blocks"]

T = TypeVar("T")


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS tells it)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def map_blocks(fn: Callable[[int, int], T], n: int, *, block_rows: int, min_rows: int) -> list[T]:
    """``[fn(start, stop), …]`` over consecutive blocks of ``range(n)``, in order.

    Fewer than ``min_rows`` rows, or one core: a single call ``fn(0, n)``. Otherwise
    ``max(cores, n / block_rows)`` blocks of near-equal size, run in one thread per core (more
    blocks than cores even out blocks that take longer than others)."""
    k = cores()
    if n < min_rows or k < 2:
        return [fn(0, n)]
    n_blocks = max(k, round(n / block_rows))
    cuts = np.linspace(0, n, n_blocks + 1).astype(int)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(k, n_blocks)) as pool:
        return list(pool.map(lambda ab: fn(int(ab[0]), int(ab[1])), zip(cuts[:-1], cuts[1:])))
