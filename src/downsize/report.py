"""``downsize report``: what moving a task off the large model bought, and what it risked.

Everything is computed from the raw rows of the store (``request_log``, ``spot_checks``,
``calibration_runs``, ``eval_runs``, ``teacher_calls``, ``labels``) each time; no cached
totals are trusted. :func:`build_report` returns a plain, JSON-ready ``dict``;
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
    not decisions and are left out.
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
    see :mod:`downsize.energy`: student side measured (CPU time × W/core), teacher side
    estimated (tokens × Wh/1k tokens).

Times are UTC. The "what to do next" rules and their thresholds are in
:mod:`downsize._report_advice`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import func, select, true

from ._report_advice import advise
from ._report_render import render_html, render_text
from .config import Config
from .energy import student_energy, teacher_energy, teacher_wh_per_1k_tokens
from .errors import ConfigError
from .store import (
    CalibrationRun,
    EvalRun,
    Example,
    Label,
    RequestLog,
    SpotCheck,
    Store,
    StudentVersion,
    TeacherCall,
    utcnow,
)

__all__ = [
    "REPORT_SCHEMA",
    "build_report",
    "render_html",
    "render_text",
    "to_json",
    "write_report",
    "parse_duration",
    "clopper_pearson",
]

REPORT_SCHEMA = "downsize.report/1"
#: Two-sided confidence of the spot-check agreement intervals.
SPOT_CHECK_CONFIDENCE = 0.95
#: A window spanning at most this is bucketed per hour, then per day up to DAY_BUCKETS_UP_TO.
HOUR_BUCKETS_UP_TO = timedelta(days=2)
DAY_BUCKETS_UP_TO = timedelta(days=120)
#: Spot checks are grouped per day up to this span, per week beyond.
SPOT_DAYS_UP_TO = timedelta(days=60)
#: A window spanning at least this compares the last 7 days with the 7 before; else halves.
WEEKS_COMPARISON_FROM = timedelta(days=14)

_LOCAL = "student"
_ESCALATED = ("teacher", "student_fallback")
_CASCADE = ("student", "teacher", "student_fallback")
_ANSWERED = ("student", "teacher", "student_fallback", "shadow")
_TEACHER_PATH = ("teacher", "student_fallback", "shadow")
_ROW_COLS = (
    RequestLog.ts, RequestLog.task, RequestLog.model, RequestLog.request_id, RequestLog.input_hash,
    RequestLog.answered_by, RequestLog.student_version_id, RequestLog.student_label,
    RequestLog.teacher_label, RequestLog.teacher_input_tokens, RequestLog.teacher_output_tokens,
    RequestLog.teacher_cost_usd, RequestLog.teacher_only_cost_usd, RequestLog.latency_ms,
    RequestLog.teacher_latency_ms, RequestLog.student_cpu_ms,
)


# ---------------------------------------------------------------------------------
# small statistics
# ---------------------------------------------------------------------------------
def clopper_pearson(k: int, n: int, confidence: float = SPOT_CHECK_CONFIDENCE) -> tuple[float, float]:
    """Exact two-sided binomial interval for ``k`` successes in ``n`` trials.

    >>> lo, hi = clopper_pearson(0, 0); (lo, hi)
    (0.0, 1.0)
    >>> lo, hi = clopper_pearson(10, 10); round(lo, 4), hi
    (0.6915, 1.0)
    """
    from scipy.stats import beta

    if n <= 0:
        return 0.0, 1.0
    a = 1.0 - confidence
    lo = 0.0 if k <= 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k >= n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def _dist(values: Iterable[float | None]) -> dict[str, Any]:
    """n, p50, p95 and the five-number summary of the non-null values (None when empty)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"n": 0, "p50": None, "p95": None, "mean": None, "min": None, "max": None,
                "p5": None, "p25": None, "p75": None, "p99": None}
    q = np.percentile(v, [5, 25, 50, 75, 95, 99])
    return {"n": int(v.size), "p50": float(q[2]), "p95": float(q[4]), "mean": float(v.mean()),
            "min": float(v.min()), "max": float(v.max()), "p5": float(q[0]), "p25": float(q[1]),
            "p75": float(q[3]), "p99": float(q[5])}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def _per_1k(total: float | None, n: int) -> float | None:
    return None if total is None or not n else total / n * 1000.0


def _iso(ts: datetime | None) -> str | None:
    return None if ts is None else ts.isoformat(timespec="seconds")


def _floor(ts: datetime, unit: str) -> datetime:
    if unit == "hour":
        return ts.replace(minute=0, second=0, microsecond=0)
    day = ts.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday()) if unit == "week" else day


_STEP = {"hour": timedelta(hours=1), "day": timedelta(days=1), "week": timedelta(days=7)}


def _buckets(first: datetime, last: datetime, unit: str) -> list[datetime]:
    out, b = [], _floor(first, unit)
    while b <= last:
        out.append(b)
        b += _STEP[unit]
    return out


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_duration(text: str) -> timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"2w"``, ``"90s"`` → :class:`~datetime.timedelta` (for ``--since``).

    >>> parse_duration("7d")
    datetime.timedelta(days=7)

    Raises
    ------
    ValueError
        For anything else, quoting the text.
    """
    m = _DURATION.match(text or "")
    if not m:
        raise ValueError(f"cannot read {text!r} as a duration: use a number and s, m, h, d or w (e.g. 7d)")
    n, unit = float(m.group(1)), m.group(2)
    return timedelta(**{{"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[unit]: n})


# ---------------------------------------------------------------------------------
# building
# ---------------------------------------------------------------------------------
def _naive_utc(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    if now.tzinfo is not None:
        now = now.astimezone(timezone.utc).replace(tzinfo=None)
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
    names = _task_names(store, config, tasks)

    def window(q: Any, col: Any) -> Any:
        q = q.where(col <= end)
        return q.where(col >= start) if start is not None else q

    with store.session() as s:
        task_filter = RequestLog.task.in_(names) if tasks is not None else true()
        rows = s.execute(window(select(*_ROW_COLS).where(task_filter), RequestLog.ts).order_by(RequestLog.ts)).all()
        spots = s.execute(
            window(select(SpotCheck).where(SpotCheck.task.in_(names)), SpotCheck.ts).order_by(SpotCheck.ts)
        ).scalars().all()
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
        name: _task_report(store, config, name, by_task.get(name, []), spots_by_task.get(name, []),
                           unit=unit, spot_unit=spot_unit, first=first, last=last)
        for name in names
    }
    passthrough = _passthrough(by_task.get(None, [])) if tasks is None else None
    report: dict[str, Any] = {
        "schema": REPORT_SCHEMA,
        "generated_at": _iso(utcnow()),
        "window": {
            "start": _iso(start), "end": _iso(end),
            "since_seconds": None if since is None else since.total_seconds(),
            "first_ts": _iso(first), "last_ts": _iso(last), "bucket": unit, "spot_check_bucket": spot_unit,
            "requests_before_window": earlier,
        },
        "empty": not rows and not spots,
        "tasks": task_reports,
        "passthrough": passthrough,
        "totals": _totals(task_reports, passthrough),
        "assumptions": {
            "cpu_watts_per_core": config.energy.cpu_watts_per_core,
            "teacher_wh_per_1k_tokens": {n: teacher_wh_per_1k_tokens(config, n) for n in names},
            "spot_check_confidence": SPOT_CHECK_CONFIDENCE,
            "timezone": "UTC",
        },
    }
    report["next_steps"] = advise(report)
    return _clean(report)


def _clean(obj: Any) -> Any:
    """Plain JSON types only; NaN and infinities become None."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, bool | np.bool_):
        return bool(obj)
    if isinstance(obj, int | np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, datetime):
        return _iso(obj)
    return obj


def _mean_tokens(store: Store, task: str, rows: list[Any]) -> tuple[float | None, str]:
    """Mean input+output tokens per teacher call: from the window's calls, else the task's labelling calls."""
    called = [r.teacher_input_tokens + r.teacher_output_tokens for r in rows
              if (r.teacher_input_tokens or 0) + (r.teacher_output_tokens or 0) > 0]
    if called:
        return float(np.mean(called)), f"mean of {len(called)} teacher call(s) in the window"
    with store.session() as s:
        toks = [a + b for a, b in s.execute(
            select(TeacherCall.input_tokens, TeacherCall.output_tokens).where(
                TeacherCall.task == task, TeacherCall.input_tokens + TeacherCall.output_tokens > 0))]
    if toks:
        return float(np.mean(toks)), f"mean of {len(toks)} recorded labelling call(s)"
    return None, "no token counts recorded"


def _task_report(store: Store, config: Config, name: str, rows: list[Any], spots: list[SpotCheck], *,
                 unit: str, spot_unit: str, first: datetime | None, last: datetime | None) -> dict[str, Any]:
    tcfg = config.tasks.get(name)
    by = Counter(r.answered_by for r in rows)
    n = len(rows)
    answered = sum(by[k] for k in _ANSWERED)
    mode = tcfg.mode if tcfg else ("shadow" if by["shadow"] and not by["student"] + by["teacher"] else "cascade")
    # in shadow mode nothing is decided: a student_fallback there means the teacher failed, not an escalation
    dec_rows = [] if mode == "shadow" else rows
    decided = sum(1 for r in dec_rows if r.answered_by in _CASCADE)
    escalated = sum(1 for r in dec_rows if r.answered_by in _ESCALATED)

    req_spent = math.fsum(r.teacher_cost_usd or 0.0 for r in rows)
    spot_spent = math.fsum(sc.teacher_cost_usd or 0.0 for sc in spots)
    spent = req_spent + spot_spent
    teacher_only = math.fsum(r.teacher_only_cost_usd or 0.0 for r in rows)

    cal = _calibration(store, name)
    alpha = cal["alpha"] if cal else (tcfg.alpha if tcfg else None)
    latest_sv = store.latest_student(name)
    return {
        "task": name,
        "in_config": tcfg is not None,
        "mode": mode,
        "labels": list(tcfg.labels) if tcfg else None,
        "alpha": alpha,
        "delta": cal["delta"] if cal else (tcfg.delta if tcfg else None),
        "requests": n,
        "answered": answered,
        "by_answered_by": dict(sorted(by.items())),
        "student_answered": by["student"],
        "escalated": escalated,
        "errors": by["error"],
        "local_share": _ratio(by["student"], answered),
        "fallback_share": _ratio(by["student_fallback"], answered),
        "escalation_rate": _ratio(escalated, decided),
        "teacher_calls_avoided": max(0, by["student"] - len(spots)),
        "cost": {
            "spent_usd": spent, "requests_usd": req_spent, "spot_checks_usd": spot_spent,
            "teacher_only_usd": teacher_only, "savings_usd": teacher_only - spent,
            "savings_pct": _ratio(teacher_only - spent, teacher_only),
            "per_1k_requests": {"cascade": _per_1k(spent, n), "teacher_only": _per_1k(teacher_only, n)},
        },
        "latency_ms": {
            "student": _dist(r.latency_ms for r in rows if r.answered_by == _LOCAL),
            "escalated": _dist(r.latency_ms for r in rows if r.answered_by in _TEACHER_PATH),
            "cascade": _dist(r.latency_ms for r in rows if r.answered_by in _ANSWERED),
            "teacher_only": _dist(r.teacher_latency_ms for r in rows),
        },
        "energy": _energy(store, config, name, rows, len(spots)),
        "calibration": cal,
        "student": None if latest_sv is None else {
            "id": latest_sv.id, "version": latest_sv.version, "kind": latest_sv.kind,
            "created_at": _iso(latest_sv.created_at), "n_train": latest_sv.n_train,
        },
        "student_versions_in_log": dict(Counter(
            str(r.student_version_id) for r in rows if r.student_version_id is not None)),
        "spot_checks": _spot_checks(spots, spot_unit),
        "eval": _eval(store, name),
        "timeline": _timeline(rows, spots, unit, first, last, decisions=mode != "shadow"),
        "escalation_trend": _trend(dec_rows),
        "label_escalation": _label_escalation(dec_rows),
        "confusion": _confusion(rows, spots, list(tcfg.labels) if tcfg else []),
        "labelled_examples": _labelled_count(store, name, rows) if mode == "shadow" or by["shadow"] else None,
    }


def _energy(store: Store, config: Config, name: str, rows: list[Any], n_spots: int) -> dict[str, Any]:
    n = len(rows)
    wh1k = teacher_wh_per_1k_tokens(config, name)
    tcfg = config.teachers.get(config.tasks[name].teacher) if name in config.tasks else None
    priced = tcfg is not None and (tcfg.price_per_1m_input > 0 or tcfg.price_per_1m_output > 0)
    mean_tok, tok_src = _mean_tokens(store, name, rows)
    # student side: CPU time wherever the student ran (it did wherever it gave a label)
    ran = [r for r in rows if r.student_label is not None or r.student_cpu_ms is not None]
    measured = [r.student_cpu_ms for r in ran if r.student_cpu_ms is not None]
    missing = len(ran) - len(measured)
    mean_cpu = float(np.mean(measured)) if measured else 0.0
    cpu_total = math.fsum(measured) + missing * mean_cpu
    stud = student_energy(cpu_total, config.energy, n_measured=len(measured),
                          n_imputed=missing if measured else 0)
    # teacher side, as run: recorded tokens, spot checks at the mean tokens per call. With a priced
    # teacher, an answer with tokens but no cost came from the cache: no teacher compute, no energy.
    rec_tok = sum((r.teacher_input_tokens or 0) + (r.teacher_output_tokens or 0) for r in rows)
    cached = [r for r in rows if priced and not r.teacher_cost_usd
              and (r.teacher_input_tokens or 0) + (r.teacher_output_tokens or 0) > 0]
    cached_tok = sum(r.teacher_input_tokens + r.teacher_output_tokens for r in cached)
    spot_tok = n_spots * mean_tok if (n_spots and mean_tok is not None) else 0.0
    detail = f"{rec_tok - cached_tok} recorded token(s)"
    if cached:
        detail += f" ({len(cached)} cached answer(s) not counted: no teacher compute)"
    if n_spots:
        detail += (f" + {n_spots} spot check(s) at {mean_tok:.0f} tokens ({tok_src})" if mean_tok is not None
                   else f"; {n_spots} spot check(s) not counted (no token counts recorded)")
    teach = teacher_energy(rec_tok - cached_tok + spot_tok, wh1k, detail=detail)
    # teacher-only: every request at its recorded tokens, else the mean
    lacking = sum(1 for r in rows if (r.teacher_input_tokens or 0) + (r.teacher_output_tokens or 0) <= 0)
    only_tok = None if (lacking and mean_tok is None) else rec_tok + lacking * (mean_tok or 0.0)
    only = teacher_energy(only_tok, wh1k, detail=(
        f"{n - lacking} request(s) at recorded tokens, {lacking} at {mean_tok:.0f} tokens ({tok_src})"
        if mean_tok is not None else f"{lacking} request(s) without token counts: unknown" if lacking else
        "every request at its recorded tokens"))
    cascade_wh = (stud.wh or 0.0) + (teach.wh or 0.0)
    return {
        "student": {**stud.as_dict(), "cpu_ms_total": cpu_total},
        "teacher": {**teach.as_dict(), "tokens": rec_tok - cached_tok + spot_tok, "cached_answers": len(cached)},
        "teacher_only": {**only.as_dict(), "tokens": only_tok},
        "cascade_wh": cascade_wh,
        "teacher_only_wh": only.wh,
        "per_1k_requests": {"cascade": _per_1k(cascade_wh, n), "teacher_only": _per_1k(only.wh, n),
                            "student": _per_1k(stud.wh, n), "teacher": _per_1k(teach.wh, n)},
        "saved_pct": None if not only.wh else (only.wh - cascade_wh) / only.wh,
        "mean_tokens_per_call": mean_tok,
        "wh_per_1k_tokens": wh1k,
        "cpu_watts_per_core": config.energy.cpu_watts_per_core,
    }


def _calibration(store: Store, name: str) -> dict[str, Any] | None:
    run = store.latest_calibration(name)
    if run is None:
        return None
    sv = store.student(run.student_version_id)
    details = run.details or {}
    curve = [c for c in details.get("curve") or [] if isinstance(c, dict)]
    return {
        "id": run.id, "created_at": _iso(run.created_at), "alpha": run.alpha, "delta": run.delta,
        "threshold": run.threshold, "coverage": run.coverage,
        "coverage_interval": [run.coverage_lo, run.coverage_hi],
        "n_calib": run.n_calib, "n_answered": run.n_answered, "errors_answered": run.errors_answered,
        "empirical_risk": _ratio(run.errors_answered, run.n_answered),
        "reference": run.reference, "method": run.method,
        "student_version_id": run.student_version_id,
        "student_version": sv.version if sv else details.get("student_version"),
        "student_kind": sv.kind if sv else None,
        "guarantee": details.get("guarantee"),
        "risk_upper": details.get("risk_upper"),
        "curve": [{k: c.get(k) for k in ("threshold", "coverage", "risk", "p_value")} for c in curve],
    }


def _eval(store: Store, name: str) -> dict[str, Any] | None:
    with store.session() as s:
        run = s.scalar(select(EvalRun).where(EvalRun.task == name).order_by(EvalRun.id.desc()).limit(1))
    if run is None:
        return None
    return {"id": run.id, "created_at": _iso(run.created_at), "n": run.n, "data_path": run.data_path,
            "student_version_id": run.student_version_id, "calibration_run_id": run.calibration_run_id,
            "metrics": run.metrics if isinstance(run.metrics, dict) else {"value": run.metrics}}


def _spot_checks(spots: list[SpotCheck], unit: str) -> dict[str, Any]:
    done = [sc for sc in spots if sc.agree is not None]
    k = sum(bool(sc.agree) for sc in done)
    lo, hi = clopper_pearson(k, len(done))
    periods: dict[datetime, list[bool]] = {}
    for sc in done:
        periods.setdefault(_floor(sc.ts, unit), []).append(bool(sc.agree))
    by_period = []
    for start, agrees in sorted(periods.items()):
        plo, phi = clopper_pearson(sum(agrees), len(agrees))
        by_period.append({"start": _iso(start), "n": len(agrees), "agree": sum(agrees),
                          "rate": sum(agrees) / len(agrees), "lo": plo, "hi": phi})
    return {"n": len(done), "agree": k, "rate": _ratio(k, len(done)), "lo": lo, "hi": hi,
            "teacher_failed": len(spots) - len(done), "confidence": SPOT_CHECK_CONFIDENCE,
            "method": "Clopper-Pearson", "bucket": unit, "by_period": by_period}


def _timeline(rows: list[Any], spots: list[SpotCheck], unit: str, first: datetime | None,
              last: datetime | None, *, decisions: bool = True) -> dict[str, Any]:
    if first is None or last is None or (not rows and not spots):
        return {"bucket": unit, "points": []}
    pts = {b: {"start": b, "requests": 0, "decided": 0, "escalated": 0, "spent_usd": 0.0,
               "teacher_only_usd": 0.0} for b in _buckets(first, last, unit)}
    for r in rows:
        p = pts[_floor(r.ts, unit)]
        p["requests"] += 1
        p["decided"] += decisions and r.answered_by in _CASCADE
        p["escalated"] += decisions and r.answered_by in _ESCALATED
        p["spent_usd"] += r.teacher_cost_usd or 0.0
        p["teacher_only_usd"] += r.teacher_only_cost_usd or 0.0
    for sc in spots:
        pts[_floor(sc.ts, unit)]["spent_usd"] += sc.teacher_cost_usd or 0.0
    out, cum = [], 0.0
    for b in sorted(pts):
        p = pts[b]
        p["escalation_rate"] = _ratio(p["escalated"], p["decided"])
        p["savings_usd"] = p["teacher_only_usd"] - p["spent_usd"]
        cum += p["savings_usd"]
        p["cumulative_savings_usd"] = cum
        p["start"] = _iso(b)
        out.append(p)
    return {"bucket": unit, "points": out}


def _trend(rows: list[Any]) -> dict[str, Any] | None:
    """Escalation rate, earlier vs later part of the window (last 7 days vs the 7 before, else halves)."""
    from scipy.stats import norm

    dec = [(r.ts, r.answered_by in _ESCALATED) for r in rows if r.answered_by in _CASCADE]
    if len(dec) < 2:
        return None
    first, last = dec[0][0], dec[-1][0]
    if last - first >= WEEKS_COMPARISON_FROM:
        cut, lo = last - timedelta(days=7), last - timedelta(days=14)
        comparison = "the last 7 days vs the 7 days before"
        a = [e for t, e in dec if lo < t <= cut]
        b = [e for t, e in dec if t > cut]
        spans = ((lo, cut), (cut, last))
    elif last > first:
        cut = first + (last - first) / 2
        comparison = "the first vs the second half of the window"
        a = [e for t, e in dec if t < cut]
        b = [e for t, e in dec if t >= cut]
        spans = ((first, cut), (cut, last))
    else:
        return None
    if not a or not b:
        return None
    ra, rb = sum(a) / len(a), sum(b) / len(b)
    pool = (sum(a) + sum(b)) / (len(a) + len(b))
    se = math.sqrt(pool * (1 - pool) * (1 / len(a) + 1 / len(b)))
    p = float(norm.sf((rb - ra) / se)) if se > 0 else (0.0 if rb > ra else 1.0)
    return {"comparison": comparison,
            "earlier": {"start": _iso(spans[0][0]), "end": _iso(spans[0][1]), "n": len(a),
                        "escalated": sum(a), "rate": ra},
            "later": {"start": _iso(spans[1][0]), "end": _iso(spans[1][1]), "n": len(b),
                      "escalated": sum(b), "rate": rb},
            "rise": rb - ra, "p_value": p, "test": "one-sided two-proportion z-test"}


def _answer_label(r: Any) -> str | None:
    return r.teacher_label if r.answered_by == "teacher" and r.teacher_label is not None else r.student_label


def _label_escalation(rows: list[Any]) -> list[dict[str, Any]]:
    n: Counter[str] = Counter()
    e: Counter[str] = Counter()
    for r in rows:
        if r.answered_by in _CASCADE and (lab := _answer_label(r)) is not None:
            n[lab] += 1
            e[lab] += r.answered_by in _ESCALATED
    out = [{"label": lab, "n": n[lab], "escalated": e[lab], "rate": e[lab] / n[lab]} for lab in n]
    return sorted(out, key=lambda d: (-d["rate"], -d["n"], d["label"]))


def _confusion(rows: list[Any], spots: list[SpotCheck], order: list[str]) -> dict[str, Any]:
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    n_log = 0
    for r in rows:
        if r.student_label is not None and r.teacher_label is not None:
            pairs.append((r.teacher_label, r.student_label))
            seen.add(r.request_id)
            n_log += 1
    n_spot = 0
    for sc in spots:
        if sc.teacher_label is not None and sc.request_id not in seen:
            pairs.append((sc.teacher_label, sc.student_label))
            n_spot += 1
    labels = [lab for lab in order if any(lab in p for p in pairs)]
    labels += sorted({lab for p in pairs for lab in p} - set(labels))
    idx = {lab: i for i, lab in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for t, s in pairs:
        m[idx[t]][idx[s]] += 1
    agree = sum(m[i][i] for i in range(len(labels)))
    return {"labels": labels, "matrix": m, "n": len(pairs), "agree": agree,
            "agreement": _ratio(agree, len(pairs)), "rows": "teacher", "columns": "student",
            "sources": {"request_log": n_log, "spot_checks": n_spot}}


def _labelled_count(store: Store, name: str, rows: list[Any]) -> dict[str, Any]:
    """Distinct texts with a label: the labels table plus shadow rows the teacher answered."""
    with store.session() as s:
        hashes = set(s.scalars(select(Example.text_hash).join(Label, Label.example_id == Example.id)
                               .where(Example.task == name)))
    from_labels = len(hashes)
    per_label: Counter[str] = Counter()
    for r in rows:
        if r.answered_by == "shadow" and r.teacher_label is not None and r.input_hash not in hashes:
            hashes.add(r.input_hash)
            per_label[r.teacher_label] += 1
    return {"total": len(hashes), "from_labels_table": from_labels,
            "from_shadow_log": len(hashes) - from_labels, "distinct_shadow_labels": len(per_label)}


def _passthrough(rows: list[Any]) -> dict[str, Any] | None:
    if not rows:
        return None
    models = Counter(r.model for r in rows)
    return {
        "requests": len(rows),
        "by_answered_by": dict(sorted(Counter(r.answered_by for r in rows).items())),
        "spent_usd": math.fsum(r.teacher_cost_usd or 0.0 for r in rows),
        "latency_ms": _dist(r.latency_ms for r in rows),
        "models": [{"model": m, "requests": c} for m, c in models.most_common(10)],
        "other_models": max(0, len(models) - 10),
    }


def _totals(tasks: dict[str, dict[str, Any]], passthrough: dict[str, Any] | None) -> dict[str, Any]:
    t = list(tasks.values())
    n = sum(x["requests"] for x in t)
    answered = sum(x["answered"] for x in t)
    local = sum(x["student_answered"] for x in t)
    spent = math.fsum(x["cost"]["spent_usd"] for x in t)
    only = math.fsum(x["cost"]["teacher_only_usd"] for x in t)
    e_cas = math.fsum(x["energy"]["cascade_wh"] for x in t)
    e_only_parts = [x["energy"]["teacher_only_wh"] for x in t if x["requests"]]
    e_only = None if any(v is None for v in e_only_parts) else math.fsum(e_only_parts)
    return {
        "requests": n, "answered": answered, "student_answered": local,
        "local_share": _ratio(local, answered),
        "teacher_calls_avoided": sum(x["teacher_calls_avoided"] for x in t),
        "spent_usd": spent, "teacher_only_usd": only, "savings_usd": only - spent,
        "savings_pct": _ratio(only - spent, only),
        "cost_per_1k_requests": {"cascade": _per_1k(spent, n), "teacher_only": _per_1k(only, n)},
        "energy_wh": {"cascade": e_cas, "teacher_only": e_only},
        "energy_per_1k_requests": {"cascade": _per_1k(e_cas, n), "teacher_only": _per_1k(e_only, n)},
        "energy_saved_pct": None if not e_only else (e_only - e_cas) / e_only,
        "passthrough_requests": passthrough["requests"] if passthrough else 0,
    }


# ---------------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------------
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
) -> Path:
    """Build the report and write it to ``path`` (parents created) as HTML, JSON or text."""
    renderers = {"html": render_html, "json": to_json, "text": render_text}
    if format not in renderers:
        raise ValueError(f"format must be one of {sorted(renderers)}, got {format!r}")
    report = build_report(store, config, tasks=tasks, since=since, now=now)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(renderers[format](report), encoding="utf-8")
    return path
