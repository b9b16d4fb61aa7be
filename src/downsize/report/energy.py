"""Energy accounting: what a request cost in watt-hours, and how sure we are of it.

Two very different kinds of figure are produced, and every one carries a label saying
which it is, together with the assumption behind it:

``"measured (CPU time × W/core)"`` — the student side
    The CPU time the process spent on student inference is *measured*
    (:func:`time.process_time`, summed over all threads of the process; the cascade and
    the gateway store it in ``request_log.student_cpu_ms``, see :func:`cpu_timer`).
    It is turned into energy with a per-core power figure,
    ``energy.cpu_watts_per_core`` (default 15 W). That figure is an assumption: a loaded
    server core draws roughly 4–15 W (a 280 W, 64-core EPYC is ~4.4 W/core at TDP; a
    desktop core 10–20 W). 15 W sits at the high end on purpose, so that the student's
    side is, if anything, over-counted and the savings under-stated. Idle power, memory
    and the rest of the machine are not attributed to requests.

``"estimated (tokens × Wh/1k tokens)"`` — the teacher side
    Nobody outside the provider can measure a hosted LLM's energy. The figure is tokens
    (input + output, as recorded for each call) × ``energy.teacher_wh_per_1k_tokens``
    (default 0.3 Wh per 1,000 tokens), or a teacher's own ``energy_wh_per_1k_tokens``.
    The default comes from published per-query estimates for GPT-4o-class models:
    Epoch AI (“How much energy does ChatGPT use?”, Feb 2025) put a typical GPT-4o query
    of a few hundred output tokens at ~0.3 Wh; OpenAI's CEO quoted 0.34 Wh for an
    average ChatGPT query (June 2025); Google reported 0.24 Wh for a median Gemini text
    prompt (Aug 2025). Treating that as “per 1k tokens” is an order-of-magnitude
    assumption, not a measurement: it ignores the difference between prefill (input,
    cheap per token) and decoding (output, expensive per token), the model's size, the
    batch size, the hardware and the datacenter's PUE. For short classification calls —
    mostly input tokens and one-word answers — it is more likely too high than too low.
    Treat teacher-side numbers as ±3× at least. Requests that never reached the teacher
    are charged the task's mean tokens per teacher call (also labelled as such).

Measuring instead of estimating: CodeCarbon
    We checked whether CodeCarbon (3.3.2, ``OfflineEmissionsTracker``) could measure real
    power on the development machine (a KVM guest in a container, 2 vCPUs,
    “AMD EPYC”). It cannot: there is no ``/sys/class/powercap`` (no Intel/AMD RAPL
    counters), no ``/dev/cpu/*/msr`` and no ``/sys/class/hwmon``; there is no GPU.
    CodeCarbon logs “No CPU tracking mode found”, does not know the CPU model, assumes a
    default of 4 W per thread (8 W “TDP”), and then scales that by psutil's
    *machine-wide* CPU load (its ``cpu_load`` mode); RAM is a flat estimate from its size
    (20 W for 23.5 GB). That is a TDP-table estimate of the whole machine, including other
    processes, so it would be no better than — and less attributable than — CPU time ×
    W/core, and CodeCarbon is *not* a dependency. On bare metal with readable RAPL files
    CodeCarbon (or reading ``/sys/class/powercap/intel-rapl:*/energy_uj`` directly) would
    give measured package energy; that remains a possible refinement.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal

from ..config import Config, EnergyConfig

__all__ = [
    "ESTIMATED",
    "MEASURED",
    "CpuTime",
    "EnergyFigure",
    "cpu_timer",
    "cpu_wh",
    "student_energy",
    "teacher_energy",
    "teacher_wh_per_1k_tokens",
    "tokens_wh",
]

#: Label of energy derived from measured CPU time and an assumed power per core.
MEASURED = "measured (CPU time × W/core)"
#: Label of energy derived from token counts and an assumed energy per 1k tokens.
ESTIMATED = "estimated (tokens × Wh/1k tokens)"


@dataclass
class CpuTime:
    """The CPU time spent inside a :func:`cpu_timer` block, in milliseconds (set on exit)."""

    ms: float = 0.0


@contextmanager
def cpu_timer(scope: Literal["process", "thread"] = "process") -> Iterator[CpuTime]:
    """Measure the CPU time of a block, for ``request_log.student_cpu_ms``.

    Parameters
    ----------
    scope : {"process", "thread"}
        ``"process"`` (default) uses :func:`time.process_time`: every thread of the process,
        which includes the intra-op threads of numpy/onnxruntime but also anything else the
        process does meanwhile (other requests in other threads). ``"thread"`` uses
        :func:`time.thread_time`: only the calling thread, exact for single-threaded
        inference but blind to worker threads.

    Yields
    ------
    CpuTime
        Whose ``ms`` holds the CPU milliseconds once the block has ended (also on error).

    Examples
    --------
    >>> with cpu_timer() as cpu:
    ...     _ = sum(range(10_000))
    >>> cpu.ms >= 0.0
    True
    """
    if scope not in ("process", "thread"):
        raise ValueError(f"scope must be 'process' or 'thread', got {scope!r}")
    clock = time.process_time if scope == "process" else time.thread_time
    out = CpuTime()
    start = clock()
    try:
        yield out
    finally:
        out.ms = (clock() - start) * 1000.0


def cpu_wh(cpu_ms: float, watts_per_core: float) -> float:
    """Watt-hours for ``cpu_ms`` milliseconds of CPU time at ``watts_per_core`` W.

    >>> round(cpu_wh(3_600_000, 15.0), 6)  # one CPU-hour at 15 W
    15.0
    """
    return cpu_ms / 1000.0 / 3600.0 * watts_per_core


def tokens_wh(tokens: float, wh_per_1k_tokens: float) -> float:
    """Watt-hours for ``tokens`` tokens at ``wh_per_1k_tokens``.

    >>> tokens_wh(2000, 0.3)
    0.6
    """
    return tokens / 1000.0 * wh_per_1k_tokens


def teacher_wh_per_1k_tokens(config: Config, task: str | None = None) -> float:
    """The teacher energy assumption for ``task``: its teacher's own figure, else the global one."""
    if task is not None and task in config.tasks:
        teacher = config.teachers.get(config.tasks[task].teacher)
        if teacher is not None and teacher.energy_wh_per_1k_tokens is not None:
            return teacher.energy_wh_per_1k_tokens
    return config.energy.teacher_wh_per_1k_tokens


@dataclass(frozen=True)
class EnergyFigure:
    """An energy amount with its provenance: ``label`` is :data:`MEASURED` or :data:`ESTIMATED`."""

    wh: float | None
    label: str
    assumption: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def student_energy(
    cpu_ms_total: float, energy: EnergyConfig, *, n_measured: int | None = None, n_imputed: int = 0
) -> EnergyFigure:
    """Student-side energy from summed CPU milliseconds (:data:`MEASURED`)."""
    note = (
        f"{energy.cpu_watts_per_core:g} W per busy core (energy.cpu_watts_per_core), an assumption"
    )
    if n_measured is not None:
        note += f"; CPU time recorded for {n_measured} student inference(s)"
    if n_imputed:
        note += f", {n_imputed} without a record charged the mean"
    return EnergyFigure(cpu_wh(cpu_ms_total, energy.cpu_watts_per_core), MEASURED, note)


def teacher_energy(tokens: float | None, wh_per_1k: float, *, detail: str = "") -> EnergyFigure:
    """Teacher-side energy from a token count (:data:`ESTIMATED`); ``None`` tokens → unknown."""
    note = f"{wh_per_1k:g} Wh per 1k tokens (published per-query estimates for GPT-4o-class models; ±3× at least)"
    if detail:
        note += f"; {detail}"
    return EnergyFigure(None if tokens is None else tokens_wh(tokens, wh_per_1k), ESTIMATED, note)
