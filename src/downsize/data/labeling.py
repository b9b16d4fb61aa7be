"""Labelling: send the unlabelled texts of a task to the teacher, resumably.

:func:`label_texts` adds the texts to the store, skips those the teacher already labelled,
and sends the rest through a fixed pool of workers (never one task per row), writing labels
in small batches as they arrive. Every paid call is recorded by the teacher *before* its
label is written, so a run killed at any point loses at most a few label rows, and the
re-run gets those from the cache for free. A budget stop or a first Ctrl-C lets the calls
in flight finish and be recorded; :class:`LabelSummary` says what happened.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ..config import Config, TaskConfig
from ..errors import BudgetExceeded, TeacherError
from ..store import Store, text_hash
from ..teacher import AsyncTeacher, Budget
from .files import read_texts

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["LabelSummary", "label_file", "label_texts", "run_interruptible"]

_FLUSH_ROWS = 64  # labels written per transaction at most...
_FLUSH_S = 0.25  # ...and at least this often while answers arrive
_MAX_ERRORS = 5  # example error messages kept in the summary


@dataclass
class LabelSummary:
    """What a labelling run did.

    ``rows`` counts distinct texts; ``rows == already_labelled + labelled + failed + rejected + remaining``.
    ``teacher_calls`` is the number of HTTP requests made (retries included) and
    ``cached_calls`` the calls answered by the store's cache at no cost.
    """

    task: str = ""
    rows: int = 0
    duplicates: int = 0
    already_labelled: int = 0
    labelled: int = 0
    failed: int = 0
    parse_errors: int = 0
    teacher_errors: int = 0
    errors: list[str] = field(default_factory=list)
    cached_calls: int = 0
    teacher_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    elapsed_s: float = 0.0
    stopped_reason: str | None = None  # None | "budget" | "interrupted"
    skipped_rows: int = 0
    skipped_note: str = ""
    budget_usd: float | None = None
    rejected: int = 0  # answered, but not what ``accept`` wanted (``downsize synth``: not the intended label)

    @property
    def remaining(self) -> int:
        """Rows not attempted because the run stopped early."""
        return self.rows - self.already_labelled - self.labelled - self.failed - self.rejected

    @property
    def rows_per_s(self) -> float:
        done = self.labelled + self.failed
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "remaining": self.remaining, "rows_per_s": self.rows_per_s}

    def render(self) -> Table:
        """A rich table for the terminal."""
        from rich.table import Table

        stop = {None: "finished", "budget": "stopped: budget reached", "interrupted": "stopped: interrupted"}
        t = Table(title=f"labelling {self.task}: {stop.get(self.stopped_reason, self.stopped_reason)}",
                  show_header=False, title_justify="left")
        t.add_column("what", style="bold")
        t.add_column("value", justify="right")
        t.add_row("rows", f"{self.rows:,}" + (f" (+{self.duplicates:,} duplicates)" if self.duplicates else ""))
        if self.skipped_rows:
            t.add_row("skipped rows", f"{self.skipped_rows:,}")
        t.add_row("already labelled", f"{self.already_labelled:,}")
        t.add_row("labelled now", f"{self.labelled:,}")
        t.add_row("failed", f"{self.failed:,} ({self.parse_errors} parse, {self.teacher_errors} teacher)")
        if self.rejected:
            t.add_row("rejected (not the intended answer)", f"{self.rejected:,}")
        if self.remaining:
            t.add_row("not attempted", f"{self.remaining:,}")
        t.add_row("teacher HTTP calls", f"{self.teacher_calls:,}")
        t.add_row("from cache (free)", f"{self.cached_calls:,}")
        t.add_row("tokens in / out", f"{self.input_tokens:,} / {self.output_tokens:,}")
        spend = f"${self.cost_usd:.4f}"
        if self.budget_usd is not None:
            spend += f" of ${self.budget_usd:.4f}"
        t.add_row("cost", spend)
        t.add_row("latency p50 / p95", f"{self.latency_p50_ms:.0f} / {self.latency_p95_ms:.0f} ms")
        t.add_row("elapsed", f"{self.elapsed_s:.1f} s ({self.rows_per_s:.0f} rows/s)")
        for e in self.errors:
            t.add_row("error", e[:160], style="red")
        if self.skipped_note:
            t.caption = self.skipped_note
        return t


def _progress_bar() -> Any:
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("${task.fields[cost]:.4f}"),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


async def label_texts(
    store: Store,
    teacher: AsyncTeacher,
    task_name: str,
    task: TaskConfig,
    texts: Iterable[str],
    *,
    source: str = "",
    budget: Budget | None = None,
    progress: bool = True,
    stop: asyncio.Event | None = None,
    label_source: str = "teacher",
    accept: Callable[[str, Any], bool] | None = None,
) -> LabelSummary:
    """Label every text of ``texts`` the teacher has not labelled yet.

    Parameters
    ----------
    store : Store
    teacher : AsyncTeacher
        Its ``max_concurrency`` sets the number of workers.
    task_name : str
    task : TaskConfig
    texts : iterable of str
    source : str
        Recorded with new examples (e.g. the file name).
    budget : Budget, optional
        Stop before a call could take the spend past it (``stopped_reason="budget"``).
    progress : bool
        Show a progress bar (rows, $ so far, ETA) on stderr.
    stop : asyncio.Event, optional
        Set it to stop after the calls in flight (``stopped_reason="interrupted"``).
    label_source : str, default="teacher"
        The source the labels are stored with (``synthetic`` for :mod:`.synth`); texts that
        already have a label from it are skipped.
    accept : callable, optional
        ``accept(text, answer)``: store the answer only if it returns True (else it is counted
        in ``rejected``; the paid call stays cached, so asking again is free).

    Returns
    -------
    LabelSummary

    Notes
    -----
    If the task running this is cancelled, calls in flight are abandoned, the labels
    received so far are written, and ``CancelledError`` propagates.
    """
    t0 = time.perf_counter()
    texts = list(texts)
    ids = store.add_examples(task_name, texts, source=source)
    done = store.labelled_hashes(task_name, source=label_source)
    summary = LabelSummary(task=task_name, budget_usd=budget.limit_usd if budget else None)
    pending: list[tuple[int, str]] = []
    seen: set[int] = set()
    for eid, text in zip(ids, texts):
        if eid in seen:
            summary.duplicates += 1
            continue
        seen.add(eid)
        if text_hash(text) in done:
            summary.already_labelled += 1
        else:
            pending.append((eid, text))
    summary.rows = len(seen)
    teacher.prefetch([text for _, text in pending], task=task)  # one cache query, not one per row

    latencies: list[float] = []
    buffer: list[tuple[int, str, int | None]] = []
    last_flush = time.monotonic()
    halt = asyncio.Event() if stop is None else stop
    over_budget = False
    work = iter(pending)  # shared by the workers: each row is taken once

    def flush() -> None:
        nonlocal last_flush
        if buffer:
            batch = list(buffer)
            buffer.clear()
            store.add_labels(
                task_name, [(e, lab) for e, lab, _ in batch], source=label_source,
                teacher_call_ids=[c for _, _, c in batch],
            )
        last_flush = time.monotonic()

    def note_error(msg: str) -> None:
        if len(summary.errors) < _MAX_ERRORS:
            summary.errors.append(msg)

    bar = _progress_bar() if progress and pending else None
    bar_task = bar.add_task(task_name, total=len(pending), cost=0.0, failed=0) if bar else None
    last_tick = 0.0

    def tick(force: bool = False) -> None:
        """Move the bar at most 20 times a second (per-row updates cost throughput)."""
        nonlocal last_tick
        now = time.monotonic()
        if bar is not None and (force or now - last_tick >= 0.05):
            last_tick = now
            bar.update(bar_task, completed=summary.labelled + summary.failed + summary.rejected, cost=summary.cost_usd,
                       failed=summary.failed)

    async def worker() -> None:
        nonlocal over_budget
        for eid, text in work:
            if halt.is_set():
                return
            try:
                ans = await teacher.ask(text, task_name=task_name, task=task, budget=budget)
            except BudgetExceeded as exc:  # nothing was sent; the others finish their calls
                if not over_budget:
                    over_budget = True
                    note_error(str(exc))
                halt.set()
                return
            except TeacherError as exc:
                summary.failed += 1
                summary.teacher_errors += 1
                summary.teacher_calls += getattr(exc, "attempts", 1)
                note_error(str(exc))
            else:
                summary.teacher_calls += ans.http_requests
                summary.cached_calls += ans.cache_hits
                summary.input_tokens += ans.input_tokens if not ans.cached else 0
                summary.output_tokens += ans.output_tokens if not ans.cached else 0
                summary.cost_usd += ans.cost_usd
                if not ans.cached:
                    latencies.append(ans.latency_ms)
                if ans.status == "ok" and ans.answer is not None and accept is not None and not accept(text, ans.answer):
                    summary.rejected += 1
                elif ans.status == "ok" and ans.answer is not None:
                    summary.labelled += 1
                    buffer.append((eid, task.encode(ans.answer), ans.call_id))
                    if len(buffer) >= _FLUSH_ROWS or time.monotonic() - last_flush >= _FLUSH_S:
                        flush()
                else:
                    summary.failed += 1
                    summary.parse_errors += 1
                    note_error(ans.error or f"parse error: {ans.raw[:100]!r}")
            tick()

    if bar is not None:
        bar.start()
    workers = [asyncio.create_task(worker()) for _ in range(min(teacher.max_concurrency, len(pending)))]
    try:
        await asyncio.gather(*workers)
    except BaseException:
        for w in workers:  # an error or a cancel: abandon the calls in flight
            w.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        raise
    finally:
        flush()  # labels already paid for are never lost, even on cancel or error
        if bar is not None:
            tick(force=True)
            bar.stop()
        summary.elapsed_s = time.perf_counter() - t0
        if latencies:
            summary.latency_p50_ms, summary.latency_p95_ms = map(float, np.percentile(latencies, [50, 95]))
    if over_budget:
        summary.stopped_reason = "budget"
    elif halt.is_set() and summary.remaining:
        summary.stopped_reason = "interrupted"
    return summary


def label_file(
    config: Config,
    task_name: str,
    path: str | os.PathLike[str],
    *,
    text_col: str | None = None,
    limit: int | None = None,
    budget_usd: float | None = None,
    store: Store | None = None,
    progress: bool = True,
) -> LabelSummary:
    """Label the texts of a data file with the task's teacher (``downsize label``).

    Reads ``text_col`` (default: the task's ``text_field``) with
    :func:`downsize.data.read_texts`; skipped rows are counted in the summary. The first
    Ctrl-C stops after the calls in flight and returns the summary
    (``stopped_reason="interrupted"``); a second one aborts with KeyboardInterrupt, the
    store still consistent.

    Raises
    ------
    ConfigError
        Unknown task.
    DataError
        Missing file or column, with the file and column named.
    """
    task = config.task(task_name)
    teacher_cfg = config.teacher_for(task_name)
    data = read_texts(path, text_col or task.text_field, limit=limit)
    own_store = store is None
    store = store if store is not None else Store(config.store_url())
    budget = Budget(budget_usd) if budget_usd is not None else None

    async def run(stop: asyncio.Event) -> LabelSummary:
        async with AsyncTeacher.from_config(teacher_cfg, store=store) as teacher:
            return await label_texts(
                store, teacher, task_name, task, data.texts,
                source=str(path), budget=budget, progress=progress, stop=stop,
            )

    try:
        summary = run_interruptible(run)
    finally:
        if own_store:
            store.close()
    summary.skipped_rows = len(data.skipped)
    summary.skipped_note = data.skipped_summary()
    return summary


T = TypeVar("T")


def run_interruptible(job: Callable[[asyncio.Event], Awaitable[T]]) -> T:
    """Run ``job(stop)`` in a new event loop; the first Ctrl-C sets ``stop`` (the job finishes the calls
    in flight and returns), a second one cancels it (``KeyboardInterrupt``)."""

    async def run() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        handled = False
        if threading.current_thread() is threading.main_thread():

            def on_sigint() -> None:
                if not stop.is_set():
                    stop.set()
                    print("\nstopping after the calls in flight (Ctrl-C again to abort)", file=sys.stderr)
                elif main is not None:
                    main.cancel()

            try:
                loop.add_signal_handler(signal.SIGINT, on_sigint)
                handled = True
            except (NotImplementedError, RuntimeError, ValueError):  # e.g. Windows
                pass
        try:
            return await job(stop)
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)

    try:
        return asyncio.run(run())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
