"""Realistic store contents for the report tests: a week of gateway traffic, written via the ORM.

``populate(store)`` fills a store with
- task ``tickets`` (cascade): student v1 and v2, a calibration run for v2 with a curve, an
  eval run, ~700 requests over 7 days (student / teacher / student_fallback / error) whose
  escalation rate rises in the second half, a label (``account``) the student is rarely sure
  of, spot checks with a few disagreements, labelling teacher calls;
- task ``emails`` (shadow): no student, teacher labels and shadow rows;
- pass-through rows (task None).
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta

from downsize.config import Config
from downsize.store import (
    CalibrationRun,
    EvalRun,
    Example,
    Label,
    RequestLog,
    SpotCheck,
    Store,
    StudentVersion,
    TeacherCall,
    text_hash,
)

NOW = datetime(2025, 3, 8, 12, 0, 0)
START = NOW - timedelta(days=7)
LABELS = ["billing", "technical", "account", "other"]
PRICE_IN, PRICE_OUT = 2.5, 10.0  # $ per 1M tokens


def config(tmp_path) -> Config:
    return Config.model_validate(
        {
            "store": f"sqlite:///{tmp_path / 'ds.db'}",
            "teachers": {
                "default": {
                    "base_url": "http://127.0.0.1:9/v1",
                    "model": "gpt-4o",
                    "price_per_1m_input": PRICE_IN,
                    "price_per_1m_output": PRICE_OUT,
                }
            },
            "tasks": {
                "tickets": {
                    "instructions": "Route the ticket.",
                    "labels": {k: k for k in LABELS},
                    "alpha": 0.05,
                    "delta": 0.05,
                },
                "emails": {
                    "instructions": "Sort the email.",
                    "labels": {"spam": "spam", "ham": "ham"},
                    "mode": "shadow",
                },
            },
            "energy": {"cpu_watts_per_core": 12.0, "teacher_wh_per_1k_tokens": 0.3},
        }
    )


def _cost(i: int, o: int) -> float:
    return (i * PRICE_IN + o * PRICE_OUT) / 1e6


def populate(store: Store, *, seed: int = 7) -> None:
    rng = random.Random(seed)
    with store.session() as s:
        sv1 = StudentVersion(
            task="tickets",
            version=1,
            kind="tfidf",
            path="/x/v1",
            sha256="a" * 64,
            size_bytes=1000,
            labels=LABELS,
            n_train=300,
            n_calib=120,
            calib_example_ids=[],
            train_seconds=1.0,
            metrics={},
            created_at=START - timedelta(days=10),
        )
        sv2 = StudentVersion(
            task="tickets",
            version=2,
            kind="tfidf",
            path="/x/v2",
            sha256="b" * 64,
            size_bytes=1000,
            labels=LABELS,
            n_train=600,
            n_calib=400,
            calib_example_ids=[],
            train_seconds=2.0,
            metrics={},
            created_at=START - timedelta(days=2),
        )
        s.add_all([sv1, sv2])
        s.flush()
        s.add(
            CalibrationRun(
                task="tickets",
                student_version_id=sv1.id,
                alpha=0.05,
                delta=0.05,
                threshold=0.7,
                coverage=0.6,
                coverage_lo=0.5,
                coverage_hi=0.7,
                n_calib=120,
                n_answered=72,
                errors_answered=2,
                reference="teacher",
                method="ltt-binomial-fst",
                details={},
                created_at=START - timedelta(days=9),
            )
        )
        curve = [
            {
                "threshold": t / 20,
                "coverage": 1 - t / 22,
                "risk": max(0.0, 0.2 - t / 100),
                "p_value": 0.5 / (t + 1),
            }
            for t in range(20)
        ]
        s.add(
            CalibrationRun(
                task="tickets",
                student_version_id=sv2.id,
                alpha=0.05,
                delta=0.05,
                threshold=0.8125,
                coverage=0.72,
                coverage_lo=0.67,
                coverage_hi=0.765,
                n_calib=400,
                n_answered=288,
                errors_answered=7,
                reference="teacher",
                method="ltt-binomial-fst",
                details={
                    "curve": curve,
                    "guarantee": "P(risk <= 0.05) >= 0.95",
                    "student_version": 2,
                },
                created_at=START - timedelta(days=2),
            )
        )
        s.add(
            EvalRun(
                task="tickets",
                student_version_id=sv2.id,
                data_path="gold.csv",
                n=250,
                metrics={
                    "task": "tickets",
                    "n": 250,
                    "threshold": 0.8125,
                    "student": {"accuracy": 0.86, "macro_f1": 0.84},
                    "teacher": {"accuracy": 0.95, "macro_f1": 0.94, "failures": 0},
                    "cascade": {"accuracy": 0.93, "macro_f1": 0.92, "share_local": 0.7},
                    "curve": [
                        {
                            "threshold": t / 10,
                            "coverage": 1 - t / 11,
                            "student_accuracy_answered": 0.8 + t / 60,
                            "cascade_accuracy": 0.9 + t / 300,
                        }
                        for t in range(10)
                    ],
                    "student_latency_p50_ms": 1.2,
                },
                created_at=START - timedelta(days=1),
            )
        )
        # labelling calls (the task's mean tokens when a window has no teacher call)
        for k in range(30):
            i, o = rng.randint(150, 260), rng.randint(3, 8)
            s.add(
                TeacherCall(
                    request_hash=uuid.uuid4().hex,
                    base_url="http://127.0.0.1:9/v1",
                    model="gpt-4o",
                    task="tickets",
                    prompt=[],
                    parsed_label=rng.choice(LABELS),
                    input_tokens=i,
                    output_tokens=o,
                    cost_usd=_cost(i, o),
                    latency_ms=400.0,
                    status="ok",
                    created_at=START - timedelta(days=12),
                )
            )

        rows, spots = [], []
        n = 700
        for k in range(n):
            ts = START + timedelta(seconds=rng.uniform(0, 7 * 86400 - 60))
            late = ts > START + timedelta(days=3.5)
            true = rng.choices(LABELS, weights=[4, 3, 2, 1])[0]
            p_esc = 0.75 if true == "account" else (0.35 if late else 0.15)
            roll = rng.random()
            i_tok, o_tok = rng.randint(150, 260), rng.randint(3, 8)
            only = _cost(i_tok, o_tok)
            cpu = rng.uniform(0.3, 2.5) if rng.random() > 0.05 else None  # a few rows lack CPU time
            stud_lat = rng.uniform(0.5, 4.0)
            sv_id = sv2.id if ts > START + timedelta(days=1) else sv1.id
            base = {
                "request_id": uuid.uuid4().hex,
                "ts": ts,
                "channel": "gateway",
                "task": "tickets",
                "model": "downsize/tickets",
                "input_hash": text_hash(f"t{k}"),
                "input_text": f"ticket {k}",
                "student_version_id": sv_id,
                "threshold": 0.8125,
                "student_cpu_ms": cpu,
                "student_latency_ms": stud_lat,
                "teacher_only_cost_usd": only,
            }
            wrong = rng.choice([x for x in LABELS if x != true])
            if roll < 0.01:
                rows.append(
                    RequestLog(
                        **base,
                        answer=None,
                        answered_by="error",
                        reason="internal",
                        confidence=None,
                        student_label=None,
                        latency_ms=stud_lat,
                        status_code=500,
                    )
                )
            elif roll < p_esc:
                stud = true if rng.random() < 0.55 else wrong
                conf = rng.uniform(0.3, 0.8)
                if rng.random() < 0.04:  # the teacher failed
                    t_lat = rng.uniform(2000, 5000)
                    rows.append(
                        RequestLog(
                            **base,
                            answer=stud,
                            answered_by="student_fallback",
                            reason="teacher failed",
                            confidence=conf,
                            student_label=stud,
                            teacher_label=None,
                            latency_ms=stud_lat + t_lat,
                            teacher_latency_ms=None,
                        )
                    )
                else:
                    cached = (
                        rng.random() < 0.1
                    )  # served from the teacher cache: tokens, but nothing paid
                    t_lat = 3.0 if cached else rng.lognormvariate(6.0, 0.35)
                    rows.append(
                        RequestLog(
                            **base,
                            answer=true,
                            answered_by="teacher",
                            reason="low confidence",
                            confidence=conf,
                            student_label=stud,
                            teacher_label=true,
                            teacher_input_tokens=i_tok,
                            teacher_output_tokens=o_tok,
                            teacher_cost_usd=0.0 if cached else _cost(i_tok, o_tok),
                            latency_ms=stud_lat + t_lat,
                            teacher_latency_ms=t_lat,
                        )
                    )
            else:
                stud = true if rng.random() < 0.97 else wrong
                rid = base["request_id"]
                rows.append(
                    RequestLog(
                        **base,
                        answer=stud,
                        answered_by="student",
                        reason="confident",
                        confidence=rng.uniform(0.8125, 1.0),
                        student_label=stud,
                        latency_ms=stud_lat + rng.uniform(0.2, 1.0),
                    )
                )
                if rng.random() < 0.15:
                    failed = rng.random() < 0.05
                    spots.append(
                        SpotCheck(
                            request_id=rid,
                            task="tickets",
                            ts=ts + timedelta(seconds=5),
                            student_version_id=sv_id,
                            student_label=stud,
                            teacher_label=None if failed else true,
                            agree=None if failed else (stud == true),
                            teacher_cost_usd=0.0 if rng.random() < 0.1 else _cost(i_tok, o_tok),
                        )
                    )
        # shadow task: the teacher answers everything, the student is not trained yet
        for k in range(260):
            ts = START + timedelta(seconds=rng.uniform(0, 7 * 86400 - 60))
            lab = rng.choice(["spam", "ham"])
            i_tok, o_tok = rng.randint(80, 120), 2
            t_lat = rng.lognormvariate(5.8, 0.3)
            rows.append(
                RequestLog(
                    request_id=uuid.uuid4().hex,
                    ts=ts,
                    task="emails",
                    model="downsize/emails",
                    input_hash=text_hash(f"e{k}"),
                    answer=lab,
                    answered_by="shadow",
                    reason="shadow mode",
                    teacher_label=lab,
                    teacher_input_tokens=i_tok,
                    teacher_output_tokens=o_tok,
                    teacher_cost_usd=_cost(i_tok, o_tok),
                    teacher_only_cost_usd=_cost(i_tok, o_tok),
                    latency_ms=t_lat,
                    teacher_latency_ms=t_lat,
                )
            )
        for k in range(3):  # shadow mode, the teacher failed: not an escalation
            rows.append(
                RequestLog(
                    request_id=uuid.uuid4().hex,
                    ts=START + timedelta(days=k + 1),
                    task="emails",
                    model="downsize/emails",
                    input_hash=text_hash(f"ef{k}"),
                    answer="ham",
                    answered_by="student_fallback",
                    reason="shadow mode (no student); teacher failed",
                    student_label="ham",
                    latency_ms=5000.0,
                    teacher_only_cost_usd=_cost(100, 2),
                )
            )
        ex = Example(task="emails", text="hello", text_hash=text_hash("hello"), source="seed")
        s.add(ex)
        s.flush()
        s.add(Label(example_id=ex.id, task="emails", label="ham", source="teacher"))
        # pass-through
        for k in range(40):
            ts = START + timedelta(seconds=rng.uniform(0, 7 * 86400 - 60))
            lat = rng.uniform(300, 900)
            rows.append(
                RequestLog(
                    request_id=uuid.uuid4().hex,
                    ts=ts,
                    task=None,
                    model=rng.choice(["gpt-4o", "gpt-4o-mini"]),
                    input_hash=text_hash(f"p{k}"),
                    answered_by="passthrough",
                    teacher_cost_usd=0.001,
                    teacher_only_cost_usd=0.001,
                    latency_ms=lat,
                    teacher_latency_ms=lat,
                )
            )
        s.add_all(rows)
        s.add_all(spots)
