"""The report's statistics over time, per label and per period (used by :mod:`downsize.report`).

Small pure functions over rows already read from the store; definitions are in the
:mod:`downsize.report` docstring.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import numpy as np

from ..calibration import clopper_pearson
from ..cascade import AnsweredBy
from ..errors import AnswerError
from ..tasks import TaskConfig
from ..store import RequestLog, SpotCheck

__all__ = ["SPOT_CHECK_CONFIDENCE"]

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
_ESCALATED = (AnsweredBy.TEACHER, AnsweredBy.STUDENT_FALLBACK)
_CASCADE = (AnsweredBy.STUDENT, *_ESCALATED)
_ANSWERED = (*_CASCADE, AnsweredBy.SHADOW)
_TEACHER_PATH = (*_ESCALATED, AnsweredBy.SHADOW)
_ROW_COLS = (
    RequestLog.ts,
    RequestLog.task,
    RequestLog.model,
    RequestLog.request_id,
    RequestLog.input_hash,
    RequestLog.answered_by,
    RequestLog.student_version_id,
    RequestLog.student_label,
    RequestLog.teacher_label,
    RequestLog.teacher_input_tokens,
    RequestLog.teacher_output_tokens,
    RequestLog.teacher_cost_usd,
    RequestLog.teacher_only_cost_usd,
    RequestLog.latency_ms,
    RequestLog.teacher_latency_ms,
    RequestLog.student_cpu_ms,
    RequestLog.status_code,
)


# ---------------------------------------------------------------------------------
# small statistics
# ---------------------------------------------------------------------------------


def _dist(values: Iterable[float | None]) -> dict[str, Any]:
    """n, p50, p95 and the five-number summary of the non-null values (None when empty)."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {
            "n": 0,
            "p50": None,
            "p95": None,
            "mean": None,
            "min": None,
            "max": None,
            "p5": None,
            "p25": None,
            "p75": None,
            "p99": None,
        }
    q = np.percentile(v, [5, 25, 50, 75, 95, 99])
    return {
        "n": int(v.size),
        "p50": float(q[2]),
        "p95": float(q[4]),
        "mean": float(v.mean()),
        "min": float(v.min()),
        "max": float(v.max()),
        "p5": float(q[0]),
        "p25": float(q[1]),
        "p75": float(q[3]),
        "p99": float(q[5]),
    }


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
        by_period.append(
            {
                "start": _iso(start),
                "n": len(agrees),
                "agree": sum(agrees),
                "rate": sum(agrees) / len(agrees),
                "lo": plo,
                "hi": phi,
            }
        )
    return {
        "n": len(done),
        "agree": k,
        "rate": _ratio(k, len(done)),
        "lo": lo,
        "hi": hi,
        "teacher_failed": len(spots) - len(done),
        "confidence": SPOT_CHECK_CONFIDENCE,
        "method": "Clopper-Pearson",
        "bucket": unit,
        "by_period": by_period,
    }


def _timeline(
    rows: list[Any],
    spots: list[SpotCheck],
    unit: str,
    first: datetime | None,
    last: datetime | None,
    *,
    decisions: bool = True,
) -> dict[str, Any]:
    if first is None or last is None or (not rows and not spots):
        return {"bucket": unit, "points": []}
    pts = {
        b: {
            "start": b,
            "requests": 0,
            "decided": 0,
            "escalated": 0,
            "spent_usd": 0.0,
            "teacher_only_usd": 0.0,
        }
        for b in _buckets(first, last, unit)
    }
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
    return {
        "comparison": comparison,
        "earlier": {
            "start": _iso(spans[0][0]),
            "end": _iso(spans[0][1]),
            "n": len(a),
            "escalated": sum(a),
            "rate": ra,
        },
        "later": {
            "start": _iso(spans[1][0]),
            "end": _iso(spans[1][1]),
            "n": len(b),
            "escalated": sum(b),
            "rate": rb,
        },
        "rise": rb - ra,
        "p_value": p,
        "test": "one-sided two-proportion z-test",
    }


class Pieces:
    """The task kind's :meth:`~downsize.tasks.TaskConfig.parts` and ``pairs`` on the log's encoded
    answers (decoded once each). An answer the task cannot read (the task left the config, or its
    labels changed since) is one piece, as logged."""

    _RAW = object()

    def __init__(self, task: TaskConfig | None) -> None:
        self.task = task
        self._cache: dict[str, Any] = {}

    def _decode(self, text: str) -> Any:
        if text not in self._cache:
            try:
                self._cache[text] = self.task.decode(text) if self.task is not None else self._RAW
            except AnswerError:
                self._cache[text] = self._RAW
        return self._cache[text]

    def parts(self, text: str) -> list[str]:
        a = self._decode(text)
        return [text] if a is self._RAW else self.task.parts(a)  # type: ignore[union-attr]

    def pairs(self, student: str, teacher: str) -> list[tuple[str, str]]:
        s, t = self._decode(student), self._decode(teacher)
        if s is self._RAW or t is self._RAW:
            return [(teacher, student)]
        return self.task.pairs(s, t)  # type: ignore[union-attr]


def _answer_label(r: Any) -> str | None:
    return (
        r.teacher_label
        if r.answered_by == "teacher" and r.teacher_label is not None
        else r.student_label
    )


def _label_escalation(rows: list[Any], pieces: Pieces) -> list[dict[str, Any]]:
    """Per label (per field, per entity type): requests whose answer has it, and how many escalated."""
    n: Counter[str] = Counter()
    e: Counter[str] = Counter()
    for r in rows:
        if r.answered_by in _CASCADE and (ans := _answer_label(r)) is not None:
            for lab in pieces.parts(ans):
                n[lab] += 1
                e[lab] += r.answered_by in _ESCALATED
    out = [{"label": lab, "n": n[lab], "escalated": e[lab], "rate": e[lab] / n[lab]} for lab in n]
    return sorted(out, key=lambda d: (-d["rate"], -d["n"], d["label"]))


def _confusion(rows: list[Any], spots: list[SpotCheck], order: list[str], pieces: Pieces) -> dict[str, Any]:
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    n_log = 0
    for r in rows:
        if r.student_label is not None and r.teacher_label is not None:
            pairs += pieces.pairs(r.student_label, r.teacher_label)
            seen.add(r.request_id)
            n_log += 1
    n_spot = 0
    for sc in spots:
        if sc.teacher_label is not None and sc.request_id not in seen:
            pairs += pieces.pairs(sc.student_label, sc.teacher_label)
            n_spot += 1
    labels = [lab for lab in order if any(lab in p for p in pairs)]
    labels += sorted({lab for p in pairs for lab in p} - set(labels))
    idx = {lab: i for i, lab in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for t, s in pairs:
        m[idx[t]][idx[s]] += 1
    agree = sum(m[i][i] for i in range(len(labels)))
    return {
        "labels": labels,
        "matrix": m,
        "n": len(pairs),
        "agree": agree,
        "agreement": _ratio(agree, len(pairs)),
        "rows": "teacher",
        "columns": "student",
        "sources": {"request_log": n_log, "spot_checks": n_spot},
    }
