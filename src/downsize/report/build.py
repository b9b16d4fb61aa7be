"""``downsize report``: what moving a task off the large model bought, and what it risked.

Everything is computed from the raw rows of the store (``request_log``, ``spot_checks``,
``calibration_runs``, ``eval_runs``, ``teacher_calls``, ``labels``, the review tables) each
time; no cached totals are trusted. :func:`build_report` returns a plain, JSON-ready ``dict``;
:func:`render_html`, :func:`render_text` and :func:`to_json` only present it.

Definitions (per task, over the rows of the window)
----------------------------------------------------
requests
    every ``request_log`` row of the task, whoever answered (errors included).
answered
    ``student`` + ``teacher`` + ``student_fallback`` + ``shadow`` rows.
local share
    ``student`` / answered. ``student_fallback`` (the teacher failed, the student's
    below-threshold answer was returned) is reported on its own, not as local.
escalation rate
    (``teacher`` + ``student_fallback``) / (``student`` + ``teacher`` + ``student_fallback``):
    of the requests the cascade decided, the share it sent to the teacher. Shadow rows are
    not decisions and are left out; a task in shadow mode has no escalation rate (its
    ``student_fallback`` rows mean the teacher failed, not that the student was unsure).
teacher calls avoided
    ``student`` rows minus the spot checks made (a spot check re-asks the teacher).
spent
    Σ ``request_log.teacher_cost_usd`` + Σ ``spot_checks.teacher_cost_usd``.
teacher-only
    Σ ``request_log.teacher_only_cost_usd``: what the teacher would have cost for the
    same requests. Savings = teacher-only − spent.
latency (ms)
    ``student``: rows the student answered; ``escalated``: rows that went to the teacher
    (``teacher``, ``student_fallback``, ``shadow``), end to end; ``cascade``: every answered
    row; ``teacher_only``: the teacher's own ``teacher_latency_ms`` wherever it was called,
    i.e. what a teacher-only deployment's latency looks like. Percentiles are numpy's
    default (linear interpolation).
per-label escalation
    grouped by the answer given: the teacher's label when it answered, else the student's.
confusion matrix
    teacher label (rows) × student label (columns) over ``request_log`` rows where both are
    known (escalated and shadow rows) plus spot checks with a teacher answer (a spot check
    whose request row already has both labels is not counted twice). Escalated rows are
    the student's *least* confident ones, so their agreement is lower than on the rows it
    answers; the spot checks measure those.
energy
    see :mod:`downsize.report.energy`: student side measured (CPU time × W/core), teacher side
    estimated (tokens × Wh/1k tokens). Like the dollars, the cascade's teacher energy is
    what was actually spent: with a priced teacher, an answer that has tokens but cost $0
    came from the content-addressed cache and is not charged; the teacher-only figure
    charges every request (its recorded tokens, else the task's mean tokens per call).
reviewed-sample accuracy
    see :mod:`downsize.review.sample`: of the requests the review queue sampled uniformly at
    random (``review_sample_rate``, by a hash of the request id) that a person answered, the
    share whose served answer agrees with the person's (the kind's loss is 0), with its
    Clopper–Pearson interval; also over the sampled requests the student answered. The
    targeted items (disagreements, contradictions, failures) are hard cases, reported apart.

Times are UTC. The "what to do next" rules and their thresholds are in
:mod:`downsize.report.advice`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import func, select, true

from .advice import advise
from .compute import _clean, _passthrough, _rejected, _task_report, _totals
from .render.html import render_html
from .stats import (
    _ROW_COLS,
    DAY_BUCKETS_UP_TO,
    HOUR_BUCKETS_UP_TO,
    SPOT_CHECK_CONFIDENCE,
    SPOT_DAYS_UP_TO,
    _iso,
)
from .render.text import render_text
from ..config import Config
from .energy import teacher_wh_per_1k_tokens
from ..errors import ConfigError
from ..review import review_summary
from ..store import CalibrationRun, RequestLog, SpotCheck, Store, StudentVersion, utcnow

__all__ = [
    "REPORT_SCHEMA",
    "build_report",
    "render_html",
    "render_text",
    "to_json",
    "write_report",
]

REPORT_SCHEMA = "downsize.report/1"

# ---------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------
def _naive_utc(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is not None:
        now = now.astimezone(UTC).replace(tzinfo=None)
    return now


def _task_names(store: Store, config: Config, tasks: Sequence[str] | None) -> list[str]:
    with store.session() as s:
        seen: set[str] = set()
        for col in (RequestLog.task, SpotCheck.task, CalibrationRun.task, StudentVersion.task):
            seen.update(t for t in s.scalars(select(col).distinct()) if t is not None)
    known = [*config.tasks, *sorted(seen - set(config.tasks))]
    if tasks is None:
        return known
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise ConfigError(
            f"no task {', '.join(map(repr, unknown))} in the config or the store "
            f"(tasks: {', '.join(known) or 'none'})"
        )
    return list(dict.fromkeys(tasks))


def build_report(
    store: Store,
    config: Config,
    *,
    tasks: Sequence[str] | None = None,
    since: timedelta | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Compute the report from the store's raw rows.

    Parameters
    ----------
    store, config :
        The project's store and configuration (prices, α/δ, energy assumptions).
    tasks : list of str, optional
        Only these tasks (pass-through traffic is then left out). Default: every task in the
        config or the store, plus pass-through traffic.
    since : timedelta, optional
        Only rows with ``ts`` in ``[now - since, now]``. Default: everything up to ``now``.
    now : datetime, optional
        The end of the window (UTC; naive datetimes are taken as UTC). Default: now.

    Returns
    -------
    dict
        JSON-ready (only str, int, float, bool, None, list, dict): ``schema``,
        ``generated_at``, ``window``, ``empty``, ``totals``, ``tasks`` (name → figures),
        ``passthrough``, ``next_steps`` and ``assumptions``.

    Raises
    ------
    ConfigError
        A requested task is neither in the config nor in the store.
    """
    end = _naive_utc(now)
    start = end - since if since is not None else None
    tasks = list(tasks) if tasks else None  # an empty selection (a CLI with no TASK) means all
    names = _task_names(store, config, tasks)

    def window(q: Any, col: Any) -> Any:
        q = q.where(col <= end)
        return q.where(col >= start) if start is not None else q

    with store.session() as s:
        task_filter = RequestLog.task.in_(names) if tasks is not None else true()
        rows = s.execute(
            window(select(*_ROW_COLS).where(task_filter), RequestLog.ts).order_by(RequestLog.ts)
        ).all()
        spots = (
            s.execute(
                window(select(SpotCheck).where(SpotCheck.task.in_(names)), SpotCheck.ts).order_by(
                    SpotCheck.ts
                )
            )
            .scalars()
            .all()
        )
        earlier = 0
        if start is not None:
            q = select(func.count()).select_from(RequestLog).where(RequestLog.ts < start)
            if tasks is not None:
                q = q.where(RequestLog.task.in_(names))
            earlier = int(s.scalar(q) or 0)

    by_task: dict[str | None, list[Any]] = {}
    for r in rows:
        by_task.setdefault(r.task, []).append(r)
    spots_by_task: dict[str, list[SpotCheck]] = {}
    for sc in spots:
        spots_by_task.setdefault(sc.task, []).append(sc)

    stamps = [r.ts for r in rows] + [sc.ts for sc in spots]
    first, last = (min(stamps), max(stamps)) if stamps else (None, None)
    span = since if since is not None else ((last - first) if stamps else timedelta(0))
    unit = "hour" if span <= HOUR_BUCKETS_UP_TO else "day" if span <= DAY_BUCKETS_UP_TO else "week"
    spot_unit = "day" if span <= SPOT_DAYS_UP_TO else "week"

    task_reports = {
        name: _task_report(
            store,
            config,
            name,
            by_task.get(name, []),
            spots_by_task.get(name, []),
            unit=unit,
            spot_unit=spot_unit,
            first=first,
            last=last,
        )
        for name in names
    }
    for name, tr in task_reports.items():
        tr["review"] = review_summary(store, config, name, start=start, end=end)
        tr["lifecycle"] = _lifecycle(store, name)
    no_task = by_task.get(None, [])  # pass-through traffic, and requests refused before any task
    passthrough = _passthrough([r for r in no_task if r.answered_by == "passthrough"]) if tasks is None else None
    rejected = _rejected([r for r in no_task if r.answered_by != "passthrough"]) if tasks is None else None
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "generated_at": _iso(utcnow()),
        "window": {
            "start": _iso(start),
            "end": _iso(end),
            "since_seconds": None if since is None else since.total_seconds(),
            "first_ts": _iso(first),
            "last_ts": _iso(last),
            "bucket": unit,
            "spot_check_bucket": spot_unit,
            "requests_before_window": earlier,
        },
        "empty": not rows and not spots,
        "tasks": task_reports,
        "passthrough": passthrough,
        "rejected": rejected,
        "totals": _totals(task_reports, passthrough, rejected),
        "assumptions": {
            "cpu_watts_per_core": config.energy.cpu_watts_per_core,
            "teacher_wh_per_1k_tokens": {n: teacher_wh_per_1k_tokens(config, n) for n in names},
            "spot_check_confidence": SPOT_CHECK_CONFIDENCE,
            "timezone": "UTC",
        },
    }
    report["next_steps"] = advise(report)
    return _clean(report)


# ---------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------
def _lifecycle(store: Store, name: str) -> dict[str, Any]:
    """The task's state now (live / suspended, why, the evidence) and its latest events."""
    from ..lifecycle import events, live

    now = live(store, name)
    out = now.describe()
    out["events"] = [{"ts": _iso(e.ts), "kind": e.kind, "message": e.message[:500],
                      "student_version_id": e.student_version_id} for e in events(store, name, limit=10)]
    return out


def to_json(report: dict[str, Any]) -> str:
    """The report as indented JSON (strict: no NaN)."""
    return json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False)


def write_report(
    store: Store,
    config: Config,
    path: str | Path,
    *,
    format: Literal["html", "json", "text"] = "html",
    tasks: Sequence[str] | None = None,
    since: timedelta | None = None,
    now: datetime | None = None,
    report: dict[str, Any] | None = None,
) -> Path:
    """Build the report and write it to ``path`` (parents created) as HTML, JSON or text.

    Parameters
    ----------
    store, config, tasks, since, now :
        As for :func:`build_report`.
    path : str or Path
        Where to write; parent directories are created.
    format : {"html", "json", "text"}
        :func:`render_html`, :func:`to_json` or :func:`render_text`.
    report : dict, optional
        An already built report (then ``tasks``, ``since`` and ``now`` are ignored), so a
        caller can print :func:`render_text` of the same report without building it twice.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        An unknown ``format``.
    ConfigError
        A requested task is neither in the config nor in the store.
    """
    renderers = {"html": render_html, "json": to_json, "text": render_text}
    if format not in renderers:
        raise ValueError(f"format must be one of {sorted(renderers)}, got {format!r}")
    if report is None:
        report = build_report(store, config, tasks=tasks, since=since, now=now)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(renderers[format](report), encoding="utf-8")
    return path
