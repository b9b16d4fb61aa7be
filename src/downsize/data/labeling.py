"""Labelling: send the unlabelled texts of a task to the teacher, resumably.

:func:`label_texts` adds the texts to the store, skips those the teacher already labelled,
and sends the rest through a fixed pool of workers (never one task per row), writing labels
in small batches as they arrive. Every paid call is recorded by the teacher *before* its
label is written, so a run killed at any point loses at most a few label rows, and the
re-run gets those from the cache for free. Every call is claimed in the store before it is
sent (:mod:`downsize.store.claims`), so two runs on one store at once never pay for a text twice:
each does the texts the other is not asking about, then takes the other's answers from the store.

A budget stop, a first Ctrl-C or SIGTERM lets the calls in flight finish and be recorded; a
circuit breaker stops a run whose teacher fails call after call, or whose first answers all fail
to parse. After ``kill -9`` at most the calls in flight then (the teacher's ``max_concurrency``)
are sent again by the re-run, which counts them (``reclaimed``). :class:`LabelSummary` says what
happened and :attr:`LabelSummary.exit_code` what ``downsize label`` exits with.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

import numpy as np

from ..config import Config, TaskConfig
from .files import read_texts
from .summary import EXIT_CODES, LabelSummary
from ..errors import BudgetExceeded, TeacherError
from ..store import Store, text_hash
from ..teacher import AsyncTeacher, Budget, SharedBudget
from ..teacher.cache import CallInFlight

__all__ = ["LabelSummary", "EXIT_CODES", "label_texts", "label_file", "run_interruptible", "UNREACHABLE_AFTER",
           "UNPARSEABLE_AFTER"]

_FLUSH_ROWS = 64  # labels written per transaction at most...
_FLUSH_S = 0.25  # ...and at least this often while answers arrive
_MAX_ERRORS = 5  # example error messages kept in the summary
#: the circuit breaker: stop when this many teacher calls in a row failed (at least; twice the
#: workers, so that one round of calls failing together is not enough)...
UNREACHABLE_AFTER = 8
#: ...or when every one of this many first answers failed to parse
UNPARSEABLE_AFTER = 10


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
    keep_going: bool = False,
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
        Stop before a call could take the spend past it (``stopped_reason="budget"``); a
        :class:`~downsize.teacher.SharedBudget` counts what every process spends meanwhile.
    progress : bool
        Show a progress bar (rows, $ so far, ETA) on stderr.
    stop : asyncio.Event, optional
        Set it to stop after the calls in flight (``stopped_reason="interrupted"``).
    keep_going : bool
        Turn the circuit breaker off. Otherwise the run stops after the calls in flight when
        ``max(UNREACHABLE_AFTER, 2 x workers)`` teacher calls in a row failed
        (``"teacher_unreachable"``) or every one of the first ``UNPARSEABLE_AFTER`` answers
        failed to parse (``"unparseable"``), with ``stop_message`` saying what to check.
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
    A text another process is asking the teacher about (its call is claimed in the store) is
    put aside and done last, from that process's record: it is never paid twice. If the task
    running this is cancelled, calls in flight are abandoned, the labels received so far are
    written, and ``CancelledError`` propagates.
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
    n_workers = min(teacher.max_concurrency, len(pending))
    unreachable_after = max(UNREACHABLE_AFTER, 2 * n_workers)
    state: dict[str, Any] = {"over_budget": False, "broken": None, "fail_streak": 0, "answers": 0, "ok": 0}
    deferred: list[tuple[int, str]] = []  # texts another caller has in flight: done last

    def flush() -> None:
        nonlocal last_flush
        if buffer:
            batch = list(buffer)
            buffer.clear()
            store.add_labels(  # not over another run's label of the same text, written meanwhile
                task_name, [(e, lab) for e, lab, _ in batch], source=label_source,
                teacher_call_ids=[c for _, _, c in batch], unless_labelled=True,
            )
        last_flush = time.monotonic()

    def note_error(msg: str) -> None:
        if len(summary.errors) < _MAX_ERRORS:
            summary.errors.append(msg)

    def trip(reason: str, message: str) -> None:
        if not keep_going and state["broken"] is None:
            state["broken"] = reason
            summary.stop_message = message
            halt.set()

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

    async def worker(work: Any, wait: bool) -> None:
        for eid, text in work:
            if halt.is_set():
                return
            try:
                ans = await teacher.ask(text, task_name=task_name, task=task, budget=budget, wait=wait)
            except CallInFlight:
                deferred.append((eid, text))
                continue
            except BudgetExceeded as exc:  # nothing was sent; the others finish their calls
                if not state["over_budget"]:
                    state["over_budget"] = True
                    note_error(str(exc))
                halt.set()
                return
            except TeacherError as exc:
                summary.failed += 1
                summary.teacher_errors += 1
                summary.teacher_calls += getattr(exc, "attempts", 1)
                note_error(str(exc))
                state["fail_streak"] += 1
                if state["fail_streak"] >= unreachable_after:
                    trip("teacher_unreachable", (
                        f"stopped: {state['fail_streak']} teacher calls in a row failed (last: {str(exc)[:200]}). "
                        f"Check that the teacher at {teacher.base_url} is up and that its model and API key "
                        "are right; --keep-going labels on regardless."))
            else:
                state["fail_streak"] = 0
                state["answers"] += 1
                summary.teacher_calls += ans.http_requests
                summary.cached_calls += ans.cache_hits
                summary.reclaimed += ans.reclaimed
                summary.input_tokens += ans.input_tokens if not ans.cached else 0
                summary.output_tokens += ans.output_tokens if not ans.cached else 0
                summary.cost_usd += ans.cost_usd
                if not ans.cached:
                    latencies.append(ans.latency_ms)
                if ans.by_other:  # a concurrent run paid for it, and writes its label
                    summary.waited += 1
                    summary.already_labelled += 1
                elif ans.status == "ok" and ans.answer is not None and accept is not None and not accept(text, ans.answer):
                    state["ok"] += 1
                    summary.rejected += 1
                elif ans.status == "ok" and ans.answer is not None:
                    state["ok"] += 1
                    summary.labelled += 1
                    buffer.append((eid, task.encode(ans.answer), ans.call_id))
                    if len(buffer) >= _FLUSH_ROWS or time.monotonic() - last_flush >= _FLUSH_S:
                        flush()
                else:
                    summary.failed += 1
                    summary.parse_errors += 1
                    note_error(ans.error or f"parse error: {ans.raw[:100]!r}")
                    if state["ok"] == 0 and state["answers"] >= UNPARSEABLE_AFTER:
                        trip("unparseable", (
                            f"stopped: none of the first {state['answers']} answers fit the task "
                            f"(last: {(ans.error or ans.raw)[:200]}). Check the task's labels and instructions "
                            "against what the teacher answers; --keep-going labels on regardless."))
            tick()

    async def run(items: list[tuple[int, str]], wait: bool) -> None:
        work = iter(items)  # shared by the workers: each row is taken once
        workers = [asyncio.create_task(worker(work, wait)) for _ in range(min(n_workers, len(items)))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for w in workers:  # an error or a cancel: abandon the calls in flight
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise

    if bar is not None:
        bar.start()
    try:
        await run(pending, wait=False)
        if deferred and not halt.is_set():  # what other runs were asking: answered from their records
            await run(list(deferred), wait=True)
    finally:
        flush()  # labels already paid for are never lost, even on cancel or error
        if bar is not None:
            tick(force=True)
            bar.stop()
        summary.elapsed_s = time.perf_counter() - t0
        if latencies:
            summary.latency_p50_ms, summary.latency_p95_ms = map(float, np.percentile(latencies, [50, 95]))
    if state["broken"] is not None:
        summary.stopped_reason = state["broken"]
    elif state["over_budget"]:
        summary.stopped_reason = "budget"
    elif halt.is_set() and summary.remaining:
        summary.stopped_reason = "interrupted"
    return summary


_SIGNALS = {signal.SIGINT: ("interrupted", "Ctrl-C"), signal.SIGTERM: ("terminated", "SIGTERM")}


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
    keep_going: bool = False,
) -> LabelSummary:
    """Label the texts of a data file with the task's teacher (``downsize label``).

    Reads ``text_col`` (default: the task's ``text_field``) with
    :func:`downsize.data.read_texts`; skipped rows are counted in the summary. ``budget_usd``
    is a :class:`~downsize.teacher.SharedBudget`: it counts what other processes spend on the
    same store meanwhile. The first Ctrl-C or SIGTERM stops after the calls in flight and
    returns the summary (``stopped_reason`` ``"interrupted"`` or ``"terminated"``; nothing in
    flight is paid twice); a second one aborts with KeyboardInterrupt, the store still
    consistent (the abandoned calls are the only ones a re-run may pay again).

    Raises
    ------
    ConfigError
        Unknown task.
    DataError
        Missing file or column, with the file and column named.
    """
    task = config.task(task_name)
    data = read_texts(path, text_col or task.text_field, limit=limit)
    summary = run_with_teacher(config, task_name, store, budget_usd, lambda st, teacher, budget, stop: label_texts(
        st, teacher, task_name, task, data.texts,
        source=str(path), budget=budget, progress=progress, stop=stop, keep_going=keep_going,
    ))
    summary.skipped_rows = len(data.skipped)
    summary.skipped_note = data.skipped_summary()
    return summary


T = TypeVar("T")


def run_with_teacher(config: Config, task_name: str, store: Store | None, budget_usd: float | None,
                     job: Callable[[Store, AsyncTeacher, SharedBudget | None, asyncio.Event], Awaitable[Any]]) -> Any:
    """Run ``job(store, teacher, budget, stop)`` with the task's teacher, interruptibly (see
    :func:`run_interruptible`): opens (and closes) the project's store unless one is given, shares the
    budget through the store's ledger, and records which signal stopped the job in its summary's
    ``stopped_reason``. What ``label`` and ``synth`` share."""
    teacher_cfg = config.teacher_for(task_name)
    own_store = store is None
    st = store if store is not None else Store(config.store_url())
    budget = SharedBudget(budget_usd, st) if budget_usd is not None else None

    async def run(stop: asyncio.Event) -> Any:
        async with AsyncTeacher.from_config(teacher_cfg, store=st) as teacher:
            return await job(st, teacher, budget, stop)

    try:
        summary, got = run_interruptible(run)
    finally:
        if own_store:
            st.close()
    if summary.stopped_reason == "interrupted" and got:
        summary.stopped_reason = got[0]
    return summary


def run_interruptible(job: Callable[[asyncio.Event], Awaitable[T]]) -> tuple[T, list[str]]:
    """Run ``job(stop)`` in a new event loop: the first Ctrl-C or SIGTERM sets ``stop`` (the job finishes
    the calls in flight and returns), a second one cancels it (``KeyboardInterrupt``). Returns the job's
    result and the reason of the signal that stopped it (``[]``, ``["interrupted"]`` or ``["terminated"]``)."""
    got: list[str] = []

    async def run() -> T:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        main = asyncio.current_task()
        handled: list[int] = []

        def on_signal(sig: int) -> None:
            reason, name = _SIGNALS[sig]
            if not stop.is_set():
                got.append(reason)
                stop.set()
                print(f"\n{name}: stopping after the calls in flight ({name} again to abort)", file=sys.stderr)
            elif main is not None:
                main.cancel()

        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                try:
                    loop.add_signal_handler(sig, on_signal, sig)
                    handled.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):  # e.g. Windows
                    pass
        try:
            return await job(stop)
        finally:
            for sig in handled:
                loop.remove_signal_handler(sig)

    try:
        return asyncio.run(run()), got
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None
