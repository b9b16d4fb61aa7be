"""The report's figures, computed from raw store rows (used by :mod:`downsize.report`).

Definitions are in the :mod:`downsize.report` docstring; each function here takes rows
already read from the store and returns plain JSON-ready values.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy import select

from .stats import (
    _ANSWERED,
    _CASCADE,
    _ESCALATED,
    _LOCAL,
    _TEACHER_PATH,
    Pieces,
    _confusion,
    _dist,
    _iso,
    _label_escalation,
    _per_1k,
    _ratio,
    _spot_checks,
    _timeline,
    _trend,
)
from ..config import Config
from .energy import student_energy, teacher_energy, teacher_wh_per_1k_tokens
from ..store import (
    EvalRun,
    Example,
    Label,
    SpotCheck,
    Store,
    TeacherCall,
)

__all__: list[str] = []


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
    called = [
        r.teacher_input_tokens + r.teacher_output_tokens
        for r in rows
        if (r.teacher_input_tokens or 0) + (r.teacher_output_tokens or 0) > 0
    ]
    if called:
        return float(np.mean(called)), f"mean of {len(called)} teacher call(s) in the window"
    with store.session() as s:
        toks = [
            a + b
            for a, b in s.execute(
                select(TeacherCall.input_tokens, TeacherCall.output_tokens).where(
                    TeacherCall.task == task,
                    TeacherCall.input_tokens + TeacherCall.output_tokens > 0,
                )
            )
        ]
    if toks:
        return float(np.mean(toks)), f"mean of {len(toks)} recorded labelling call(s)"
    return None, "no token counts recorded"


def _task_report(
    store: Store,
    config: Config,
    name: str,
    rows: list[Any],
    spots: list[SpotCheck],
    *,
    unit: str,
    spot_unit: str,
    first: datetime | None,
    last: datetime | None,
) -> dict[str, Any]:
    tcfg = config.tasks.get(name)
    pieces = Pieces(tcfg)
    by = Counter(r.answered_by for r in rows)
    n = len(rows)
    answered = sum(by[k] for k in _ANSWERED)
    mode = (
        tcfg.mode
        if tcfg
        else ("shadow" if by["shadow"] and not by["student"] + by["teacher"] else "cascade")
    )
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
        "labels": tcfg.piece_names() if tcfg else None,
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
            "spent_usd": spent,
            "requests_usd": req_spent,
            "spot_checks_usd": spot_spent,
            "teacher_only_usd": teacher_only,
            "savings_usd": teacher_only - spent,
            "savings_pct": _ratio(teacher_only - spent, teacher_only),
            "per_1k_requests": {
                "cascade": _per_1k(spent, n),
                "teacher_only": _per_1k(teacher_only, n),
            },
        },
        "latency_ms": {
            "student": _dist(r.latency_ms for r in rows if r.answered_by == _LOCAL),
            "escalated": _dist(r.latency_ms for r in rows if r.answered_by in _TEACHER_PATH),
            "cascade": _dist(r.latency_ms for r in rows if r.answered_by in _ANSWERED),
            "teacher_only": _dist(r.teacher_latency_ms for r in rows),
        },
        "energy": _energy(store, config, name, rows, spots),
        "calibration": cal,
        "student": None
        if latest_sv is None
        else {
            "id": latest_sv.id,
            "version": latest_sv.version,
            "kind": latest_sv.kind,
            "created_at": _iso(latest_sv.created_at),
            "n_train": latest_sv.n_train,
        },
        "student_versions_in_log": dict(
            Counter(str(r.student_version_id) for r in rows if r.student_version_id is not None)
        ),
        "spot_checks": _spot_checks(spots, spot_unit),
        "eval": _eval(store, name),
        "timeline": _timeline(rows, spots, unit, first, last, decisions=mode != "shadow"),
        "escalation_trend": _trend(dec_rows),
        "label_escalation": _label_escalation(dec_rows, pieces),
        "confusion": _confusion(rows, spots, tcfg.piece_names() if tcfg else [], pieces),
        "labelled_examples": _labelled_count(store, name, rows)
        if mode == "shadow" or by["shadow"]
        else None,
    }


def _energy(
    store: Store, config: Config, name: str, rows: list[Any], spots: list[SpotCheck]
) -> dict[str, Any]:
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
    stud = student_energy(
        cpu_total, config.energy, n_measured=len(measured), n_imputed=missing if measured else 0
    )
    # teacher side, as run: recorded tokens, spot checks at the mean tokens per call. With a priced
    # teacher, an answer with tokens but no cost came from the cache: no teacher compute, no energy.
    rec_tok = sum((r.teacher_input_tokens or 0) + (r.teacher_output_tokens or 0) for r in rows)
    cached = [
        r
        for r in rows
        if priced
        and not r.teacher_cost_usd
        and (r.teacher_input_tokens or 0) + (r.teacher_output_tokens or 0) > 0
    ]
    cached_tok = sum(r.teacher_input_tokens + r.teacher_output_tokens for r in cached)
    n_spots = sum(1 for sc in spots if sc.teacher_cost_usd or not priced)
    spot_tok = n_spots * mean_tok if (n_spots and mean_tok is not None) else 0.0
    detail = f"{rec_tok - cached_tok} recorded token(s)"
    if cached:
        detail += f" ({len(cached)} cached answer(s) not counted: no teacher compute)"
    if n_spots:
        detail += (
            f" + {n_spots} spot check(s) at {mean_tok:.0f} tokens ({tok_src})"
            if mean_tok is not None
            else f"; {n_spots} spot check(s) not counted (no token counts recorded)"
        )
    teach = teacher_energy(rec_tok - cached_tok + spot_tok, wh1k, detail=detail)
    # teacher-only: every request at its recorded tokens, else the mean
    lacking = sum(
        1 for r in rows if (r.teacher_input_tokens or 0) + (r.teacher_output_tokens or 0) <= 0
    )
    only_tok = None if (lacking and mean_tok is None) else rec_tok + lacking * (mean_tok or 0.0)
    only = teacher_energy(
        only_tok,
        wh1k,
        detail=(
            f"{n - lacking} request(s) at recorded tokens, {lacking} at {mean_tok:.0f} tokens ({tok_src})"
            if mean_tok is not None
            else f"{lacking} request(s) without token counts: unknown"
            if lacking
            else "every request at its recorded tokens"
        ),
    )
    cascade_wh = (stud.wh or 0.0) + (teach.wh or 0.0)
    return {
        "student": {**stud.as_dict(), "cpu_ms_total": cpu_total},
        "teacher": {
            **teach.as_dict(),
            "tokens": rec_tok - cached_tok + spot_tok,
            "cached_answers": len(cached),
        },
        "teacher_only": {**only.as_dict(), "tokens": only_tok},
        "cascade_wh": cascade_wh,
        "teacher_only_wh": only.wh,
        "per_1k_requests": {
            "cascade": _per_1k(cascade_wh, n),
            "teacher_only": _per_1k(only.wh, n),
            "student": _per_1k(stud.wh, n),
            "teacher": _per_1k(teach.wh, n),
        },
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
        "id": run.id,
        "created_at": _iso(run.created_at),
        "alpha": run.alpha,
        "delta": run.delta,
        "threshold": run.threshold,
        "coverage": run.coverage,
        "coverage_interval": [run.coverage_lo, run.coverage_hi],
        "n_calib": run.n_calib,
        "n_answered": run.n_answered,
        "errors_answered": run.errors_answered,
        "empirical_risk": _ratio(run.errors_answered, run.n_answered),
        "reference": run.reference,
        "method": run.method,
        "student_version_id": run.student_version_id,
        "student_version": sv.version if sv else details.get("student_version"),
        "student_kind": sv.kind if sv else None,
        "guarantee": details.get("guarantee"),
        "risk_upper": details.get("risk_upper"),
        "what_if": details.get("what_if"),
        "curve": [
            {k: c.get(k) for k in ("threshold", "coverage", "risk", "p_value")} for c in curve
        ],
    }


def _eval(store: Store, name: str) -> dict[str, Any] | None:
    with store.session() as s:
        run = s.scalar(
            select(EvalRun).where(EvalRun.task == name).order_by(EvalRun.id.desc()).limit(1)
        )
    if run is None:
        return None
    return {
        "id": run.id,
        "created_at": _iso(run.created_at),
        "n": run.n,
        "data_path": run.data_path,
        "student_version_id": run.student_version_id,
        "calibration_run_id": run.calibration_run_id,
        "metrics": run.metrics if isinstance(run.metrics, dict) else {"value": run.metrics},
    }


def _labelled_count(store: Store, name: str, rows: list[Any]) -> dict[str, Any]:
    """Distinct texts with a label: the labels table plus shadow rows the teacher answered."""
    with store.session() as s:
        hashes = set(
            s.scalars(
                select(Example.text_hash)
                .join(Label, Label.example_id == Example.id)
                .where(Example.task == name)
            )
        )
    from_labels = len(hashes)
    per_label: Counter[str] = Counter()
    for r in rows:
        if r.answered_by == "shadow" and r.teacher_label is not None and r.input_hash not in hashes:
            hashes.add(r.input_hash)
            per_label[r.teacher_label] += 1
    return {
        "total": len(hashes),
        "from_labels_table": from_labels,
        "from_shadow_log": len(hashes) - from_labels,
        "distinct_shadow_labels": len(per_label),
    }


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


def _rejected(rows: list[Any]) -> dict[str, Any] | None:
    """Gateway requests that reached no task and were not passed through: refused (401, 413, 429,
    a bad body) or naming no configured task (a 404 for ``downsize/<unknown>``). Errors, not traffic."""
    if not rows:
        return None
    models = Counter(r.model for r in rows)
    return {
        "requests": len(rows),
        "by_status": {str(k): v for k, v in sorted(Counter(r.status_code for r in rows).items())},
        "models": [{"model": m, "requests": c} for m, c in models.most_common(10)],
        "other_models": max(0, len(models) - 10),
    }


def _totals(tasks: dict[str, dict[str, Any]], passthrough: dict[str, Any] | None,
            rejected: dict[str, Any] | None = None) -> dict[str, Any]:
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
        "requests": n,
        "answered": answered,
        "student_answered": local,
        "local_share": _ratio(local, answered),
        "teacher_calls_avoided": sum(x["teacher_calls_avoided"] for x in t),
        "spent_usd": spent,
        "teacher_only_usd": only,
        "savings_usd": only - spent,
        "savings_pct": _ratio(only - spent, only),
        "cost_per_1k_requests": {"cascade": _per_1k(spent, n), "teacher_only": _per_1k(only, n)},
        "energy_wh": {"cascade": e_cas, "teacher_only": e_only},
        "energy_per_1k_requests": {
            "cascade": _per_1k(e_cas, n),
            "teacher_only": _per_1k(e_only, n),
        },
        "energy_saved_pct": None if not e_only else (e_only - e_cas) / e_only,
        "passthrough_requests": passthrough["requests"] if passthrough else 0,
        "rejected_requests": rejected["requests"] if rejected else 0,
    }
