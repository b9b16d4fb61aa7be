"""downsize.report: every figure equals an independent recomputation from the raw rows."""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _report_data import NOW, START, config, populate
from scipy.stats import binomtest
from sqlalchemy import func, select

from downsize.report.energy import ESTIMATED, MEASURED
from downsize.errors import ConfigError
from downsize.audit import parse_duration
from downsize.calibration import clopper_pearson
from downsize.report import (
    build_report,
    render_html,
    render_text,
    to_json,
    write_report,
)
from downsize.store import (
    CalibrationRun,
    EvalRun,
    RequestLog,
    SpotCheck,
    Store,
    StudentVersion,
    utcnow,
)


# ---------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Any]:
    path = tmp_path_factory.mktemp("report")
    cfg = config(path)
    store = Store(cfg.store_url())
    populate(store)
    yield store, cfg
    store.close()


@pytest.fixture(scope="module")
def report(filled: tuple[Store, Any]) -> dict[str, Any]:
    store, cfg = filled
    return build_report(store, cfg, now=NOW)


@pytest.fixture(scope="module")
def html(report: dict[str, Any]) -> str:
    return render_html(report)


# ---------------------------------------------------------------------------------
# the independent recomputation (plain loops over select() rows; nothing from report)
# ---------------------------------------------------------------------------------
def raw_rows(
    store: Store, task: str | None, start: datetime | None, end: datetime = NOW
) -> tuple[list, list]:
    with store.session() as s:
        q = select(RequestLog).where(RequestLog.ts <= end)
        q = q.where(RequestLog.task.is_(None)) if task is None else q.where(RequestLog.task == task)
        if start is not None:
            q = q.where(RequestLog.ts >= start)
        rows = list(s.scalars(q))
        spots = []
        if task is not None:
            q = select(SpotCheck).where(SpotCheck.task == task, SpotCheck.ts <= end)
            if start is not None:
                q = q.where(SpotCheck.ts >= start)
            spots = list(s.scalars(q))
    return rows, spots


def expected(
    rows: list, spots: list, *, watts: float, wh_per_1k: float, shadow: bool
) -> dict[str, Any]:
    kinds = Counter(r.answered_by for r in rows)
    n = len(rows)
    answered = n - kinds["error"]
    decided = 0 if shadow else kinds["student"] + kinds["teacher"] + kinds["student_fallback"]
    spent = sum(r.teacher_cost_usd for r in rows) + sum(sc.teacher_cost_usd for sc in spots)
    only = sum(r.teacher_only_cost_usd for r in rows)

    def pctl(values: list[float], q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    lat = {
        "student": [r.latency_ms for r in rows if r.answered_by == "student"],
        "escalated": [
            r.latency_ms for r in rows if r.answered_by in ("teacher", "student_fallback", "shadow")
        ],
        "cascade": [r.latency_ms for r in rows if r.answered_by != "error"],
        "teacher_only": [r.teacher_latency_ms for r in rows if r.teacher_latency_ms is not None],
    }
    # energy
    cpu = [r.student_cpu_ms for r in rows if r.student_cpu_ms is not None]
    no_cpu = sum(1 for r in rows if r.student_label is not None and r.student_cpu_ms is None)
    cpu_total = sum(cpu) + (no_cpu * (sum(cpu) / len(cpu)) if cpu else 0.0)
    student_wh = cpu_total / 1000 / 3600 * watts
    toks = [r.teacher_input_tokens + r.teacher_output_tokens for r in rows]
    called = [t for t in toks if t > 0]
    mean_tok = sum(called) / len(called) if called else None
    paid = [
        r.teacher_input_tokens + r.teacher_output_tokens for r in rows if r.teacher_cost_usd > 0
    ]
    paid_spots = sum(1 for sc in spots if sc.teacher_cost_usd > 0)
    teacher_wh = (
        (sum(paid) + paid_spots * (mean_tok or 0)) / 1000 * wh_per_1k
    )  # cached answers: no compute
    only_wh = sum(t if t > 0 else mean_tok for t in toks) / 1000 * wh_per_1k if mean_tok else None
    # spot checks
    done = [sc for sc in spots if sc.agree is not None]
    agree = sum(1 for sc in done if sc.agree)
    ci = binomtest(agree, len(done)).proportion_ci(0.95, method="exact") if done else None
    # confusion: rows with both labels + spot checks not already counted
    pairs = [
        (r.teacher_label, r.student_label)
        for r in rows
        if r.teacher_label is not None and r.student_label is not None
    ]
    both = {
        r.request_id for r in rows if r.teacher_label is not None and r.student_label is not None
    }
    pairs += [
        (sc.teacher_label, sc.student_label)
        for sc in spots
        if sc.teacher_label is not None and sc.request_id not in both
    ]
    # escalation per answered label
    per_label: dict[str, list[bool]] = {}
    for r in rows:
        if not shadow and r.answered_by in ("student", "teacher", "student_fallback"):
            lab = r.teacher_label if r.answered_by == "teacher" else r.student_label
            per_label.setdefault(lab, []).append(r.answered_by != "student")
    return {
        "requests": n,
        "answered": answered,
        "kinds": kinds,
        "local_share": kinds["student"] / answered if answered else None,
        "escalation_rate": (kinds["teacher"] + kinds["student_fallback"]) / decided
        if decided
        else None,
        "avoided": kinds["student"] - len(spots),
        "spent": spent,
        "only": only,
        "savings": only - spent,
        "savings_pct": (only - spent) / only if only else None,
        "per_1k": (spent / n * 1000, only / n * 1000) if n else (None, None),
        "latency": {k: (pctl(v, 50), pctl(v, 95), len(v)) for k, v in lat.items()},
        "student_wh": student_wh,
        "teacher_wh": teacher_wh,
        "only_wh": only_wh,
        "spot": (len(done), agree, ci),
        "pairs": Counter(pairs),
        "per_label": {k: (len(v), sum(v)) for k, v in per_label.items()},
    }


def approx(x: float | None) -> Any:
    return None if x is None else pytest.approx(x, rel=1e-9, abs=1e-12)


# ---------------------------------------------------------------------------------
# figures vs raw rows
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize("since", [None, timedelta(days=3), timedelta(hours=30)])
@pytest.mark.parametrize("task", ["tickets", "emails"])
def test_task_figures_equal_raw_recomputation(
    filled: tuple[Store, Any], since: timedelta | None, task: str
) -> None:
    store, cfg = filled
    rep = build_report(store, cfg, since=since, now=NOW)
    t = rep["tasks"][task]
    rows, spots = raw_rows(store, task, NOW - since if since else None)
    e = expected(
        rows,
        spots,
        watts=cfg.energy.cpu_watts_per_core,
        wh_per_1k=cfg.energy.teacher_wh_per_1k_tokens,
        shadow=cfg.tasks[task].mode == "shadow",
    )

    assert t["requests"] == e["requests"] > 0
    assert t["answered"] == e["answered"]
    assert t["by_answered_by"] == dict(e["kinds"])
    assert t["local_share"] == approx(e["local_share"])
    assert t["escalation_rate"] == approx(e["escalation_rate"])
    assert (t["escalation_rate"] is None) == (task == "emails")
    assert t["teacher_calls_avoided"] == max(0, e["avoided"])
    c = t["cost"]
    assert c["spent_usd"] == approx(e["spent"])
    assert c["teacher_only_usd"] == approx(e["only"])
    assert c["savings_usd"] == approx(e["savings"])
    assert c["savings_pct"] == approx(e["savings_pct"])
    assert c["per_1k_requests"]["cascade"] == approx(e["per_1k"][0])
    assert c["per_1k_requests"]["teacher_only"] == approx(e["per_1k"][1])
    for path, (p50, p95, n) in e["latency"].items():
        assert t["latency_ms"][path]["n"] == n
        assert t["latency_ms"][path]["p50"] == approx(p50)
        assert t["latency_ms"][path]["p95"] == approx(p95)
    en = t["energy"]
    assert en["student"]["wh"] == approx(e["student_wh"])
    assert en["teacher"]["wh"] == approx(e["teacher_wh"])
    assert en["teacher_only"]["wh"] == approx(e["only_wh"])
    assert en["cascade_wh"] == approx(e["student_wh"] + e["teacher_wh"])
    assert en["per_1k_requests"]["cascade"] == approx(
        (e["student_wh"] + e["teacher_wh"]) / e["requests"] * 1000
    )
    assert en["per_1k_requests"]["teacher_only"] == approx(e["only_wh"] / e["requests"] * 1000)
    assert en["teacher"]["cached_answers"] == sum(
        1
        for r in rows
        if r.teacher_cost_usd == 0 and r.teacher_input_tokens + r.teacher_output_tokens > 0
    )
    assert (en["teacher"]["cached_answers"] > 0) == (task == "tickets")
    assert en["student"]["label"] == MEASURED and en["teacher"]["label"] == ESTIMATED
    assert en["teacher_only"]["label"] == ESTIMATED
    n_spot, agree, ci = e["spot"]
    sc = t["spot_checks"]
    assert (sc["n"], sc["agree"]) == (n_spot, agree)
    if n_spot:
        assert sc["rate"] == approx(agree / n_spot)
        assert sc["lo"] == pytest.approx(ci.low, abs=1e-9) and sc["hi"] == pytest.approx(
            ci.high, abs=1e-9
        )
        assert sum(p["n"] for p in sc["by_period"]) == n_spot
    conf = t["confusion"]
    got = Counter(
        {
            (conf["labels"][i], conf["labels"][j]): v
            for i, row in enumerate(conf["matrix"])
            for j, v in enumerate(row)
            if v
        }
    )
    assert got == e["pairs"]
    assert conf["n"] == sum(e["pairs"].values())
    assert {d["label"]: (d["n"], d["escalated"]) for d in t["label_escalation"]} == e["per_label"]
    # the timeline adds up to the same totals
    pts = t["timeline"]["points"]
    assert sum(p["requests"] for p in pts) == e["requests"]
    assert sum(p["savings_usd"] for p in pts) == pytest.approx(e["savings"])
    assert pts[-1]["cumulative_savings_usd"] == pytest.approx(e["savings"])


def test_totals_add_up(report: dict[str, Any]) -> None:
    tasks = report["tasks"].values()
    tot = report["totals"]
    assert tot["requests"] == sum(t["requests"] for t in tasks)
    assert tot["spent_usd"] == pytest.approx(sum(t["cost"]["spent_usd"] for t in tasks))
    assert tot["savings_usd"] == pytest.approx(tot["teacher_only_usd"] - tot["spent_usd"])
    assert tot["local_share"] == pytest.approx(
        sum(t["student_answered"] for t in tasks) / sum(t["answered"] for t in tasks)
    )
    assert tot["energy_wh"]["cascade"] == pytest.approx(
        sum(t["energy"]["cascade_wh"] for t in tasks)
    )


def test_calibration_and_eval_are_the_latest_runs(
    filled: tuple[Store, Any], report: dict[str, Any]
) -> None:
    store, _ = filled
    with store.session() as s:
        run = s.scalars(
            select(CalibrationRun)
            .where(CalibrationRun.task == "tickets")
            .order_by(CalibrationRun.created_at.desc())
        ).first()
        ev = s.scalars(
            select(EvalRun).where(EvalRun.task == "tickets").order_by(EvalRun.id.desc())
        ).first()
        sv = s.get(StudentVersion, run.student_version_id)
    cal = report["tasks"]["tickets"]["calibration"]
    assert (cal["alpha"], cal["delta"], cal["threshold"]) == (run.alpha, run.delta, run.threshold)
    assert cal["coverage"] == run.coverage
    assert cal["coverage_interval"] == [run.coverage_lo, run.coverage_hi]
    assert cal["empirical_risk"] == pytest.approx(run.errors_answered / run.n_answered)
    assert cal["student_version"] == sv.version == 2
    assert len(cal["curve"]) == len(run.details["curve"])
    assert report["tasks"]["tickets"]["eval"]["metrics"] == ev.metrics
    assert report["tasks"]["emails"]["calibration"] is None


def test_passthrough_is_separate(filled: tuple[Store, Any], report: dict[str, Any]) -> None:
    store, _ = filled
    rows, _ = raw_rows(store, None, None)
    p = report["passthrough"]
    assert p["requests"] == len(rows) == report["totals"]["passthrough_requests"]
    assert p["spent_usd"] == pytest.approx(sum(r.teacher_cost_usd for r in rows))
    assert sum(m["requests"] for m in p["models"]) == len(rows)
    assert report["totals"]["requests"] == sum(t["requests"] for t in report["tasks"].values())


def test_since_filters_the_window(filled: tuple[Store, Any]) -> None:
    store, cfg = filled
    since = timedelta(days=2)
    rep = build_report(store, cfg, since=since, now=NOW)
    with store.session() as s:
        inside = s.scalar(
            select(func.count()).select_from(RequestLog).where(RequestLog.ts >= NOW - since)
        )
        before = s.scalar(
            select(func.count()).select_from(RequestLog).where(RequestLog.ts < NOW - since)
        )
    assert rep["totals"]["requests"] + rep["totals"]["passthrough_requests"] == inside
    assert rep["window"]["requests_before_window"] == before
    assert rep["window"]["start"] == (NOW - since).isoformat(timespec="seconds")
    assert rep["window"]["bucket"] == "hour"
    assert all(
        datetime.fromisoformat(p["start"]) >= (NOW - since).replace(minute=0, second=0)
        for p in rep["tasks"]["tickets"]["timeline"]["points"]
    )
    assert build_report(store, cfg, now=NOW)["window"]["bucket"] == "day"


def test_now_may_be_timezone_aware(filled: tuple[Store, Any]) -> None:
    store, cfg = filled
    aware = NOW.replace(tzinfo=UTC).astimezone(timezone(timedelta(hours=2)))
    a = build_report(store, cfg, since=timedelta(days=1), now=aware)
    b = build_report(store, cfg, since=timedelta(days=1), now=NOW)
    assert a["window"] == b["window"] and a["totals"] == b["totals"]


def test_task_selection(filled: tuple[Store, Any]) -> None:
    store, cfg = filled
    rep = build_report(store, cfg, tasks=["tickets"], now=NOW)
    assert list(rep["tasks"]) == ["tickets"]
    assert rep["passthrough"] is None
    assert rep["totals"]["requests"] == rep["tasks"]["tickets"]["requests"]
    assert {s["task"] for s in rep["next_steps"]} == {"tickets"}
    with pytest.raises(ConfigError, match="tickts.*tickets"):
        build_report(store, cfg, tasks=["tickts"], now=NOW)


# ---------------------------------------------------------------------------------
# what to do next
# ---------------------------------------------------------------------------------
def test_next_steps_from_the_data(report: dict[str, Any]) -> None:
    steps = {(s["task"], s["kind"]): s for s in report["next_steps"]}
    # the escalation rate of tickets rises in the second half of the week
    tr = report["tasks"]["tickets"]["escalation_trend"]
    assert tr["later"]["rate"] - tr["earlier"]["rate"] >= 0.05 and tr["p_value"] < 0.05
    assert f"{100 * tr['earlier']['rate']:.1f} %" in steps[("tickets", "retrain")]["detail"]
    # 'account' is escalated about 3 times in 4
    assert "'account'" in steps[("tickets", "add_examples")]["title"]
    assert not any(k == "add_examples" and "billing" in s["title"] for (_, k), s in steps.items())
    # emails runs in shadow mode with > 200 labelled texts and no student
    assert steps[("emails", "train_student")]["command"] == "downsize train emails"
    assert ("tickets", "teacher_failing") in steps
    assert ("tickets", "calibrate") not in steps
    order = [s["severity"] for s in report["next_steps"]]
    assert order == sorted(order, key=["action", "warning", "info"].index)


def _small_store(
    tmp_path: Path,
    *,
    spot_agree: list[bool],
    calibrated: bool = True,
    newer_student: bool = False,
    mode: str = "cascade",
) -> tuple[Store, Any]:
    import uuid

    cfg = config(tmp_path)
    if mode == "shadow":
        cfg = cfg.model_copy(
            update={
                "tasks": {
                    **cfg.tasks,
                    "tickets": cfg.tasks["tickets"].model_copy(update={"mode": "shadow"}),
                }
            }
        )
    store = Store(cfg.store_url())
    with store.session() as s:
        sv = StudentVersion(
            task="tickets",
            version=1,
            kind="tfidf",
            path="p",
            sha256="0" * 64,
            size_bytes=1,
            labels=["a", "b"],
            n_train=10,
            n_calib=10,
            calib_example_ids=[],
            train_seconds=0.1,
        )
        s.add(sv)
        s.flush()
        if calibrated:
            s.add(
                CalibrationRun(
                    task="tickets",
                    student_version_id=sv.id,
                    alpha=0.05,
                    delta=0.05,
                    threshold=0.9,
                    coverage=0.8,
                    coverage_lo=0.7,
                    coverage_hi=0.9,
                    n_calib=500,
                    n_answered=400,
                    errors_answered=5,
                    reference="teacher",
                    method="ltt",
                    details={},
                )
            )
        if newer_student:
            s.add(
                StudentVersion(
                    task="tickets",
                    version=2,
                    kind="tfidf",
                    path="p2",
                    sha256="1" * 64,
                    size_bytes=1,
                    labels=["a", "b"],
                    n_train=10,
                    n_calib=10,
                    calib_example_ids=[],
                    train_seconds=0.1,
                )
            )
        for i, ok in enumerate(spot_agree):
            rid = uuid.uuid4().hex
            ts = NOW - timedelta(hours=1 + i * 0.01)
            s.add(
                RequestLog(
                    request_id=rid,
                    ts=ts,
                    task="tickets",
                    model="m",
                    input_hash=str(i),
                    answered_by="student",
                    student_label="billing",
                    latency_ms=2.0,
                    teacher_only_cost_usd=0.001,
                    student_cpu_ms=1.0,
                )
            )
            s.add(
                SpotCheck(
                    request_id=rid,
                    task="tickets",
                    ts=ts,
                    student_label="billing",
                    teacher_label="billing" if ok else "other",
                    agree=ok,
                    teacher_cost_usd=0.001,
                )
            )
    return store, cfg


def test_broken_guarantee_says_recalibrate(tmp_path: Path) -> None:
    store, cfg = _small_store(tmp_path, spot_agree=[True] * 170 + [False] * 30)
    rep = build_report(store, cfg, now=NOW)
    step = next(s for s in rep["next_steps"] if s["kind"] == "guarantee")
    assert step["severity"] == "action"  # 85 % agreement, upper bound well under 95 %
    assert step["command"] == "downsize calibrate tickets"
    assert rep["tasks"]["tickets"]["spot_checks"]["hi"] < 0.95


def test_few_spot_checks_is_only_info(tmp_path: Path) -> None:
    store, cfg = _small_store(tmp_path, spot_agree=[True] * 20)
    rep = build_report(store, cfg, now=NOW)
    step = next(s for s in rep["next_steps"] if s["kind"] == "spot_checks")
    assert step["severity"] == "info"
    need = math.ceil(
        math.log(0.025) / math.log(0.95)
    )  # all agreeing: lower bound = 0.025 ** (1 / n)
    assert f"about {need} checks" in step["detail"]
    assert not any(s["kind"] == "guarantee" for s in rep["next_steps"])


def test_uncalibrated_and_stale_calibration(tmp_path: Path) -> None:
    store, cfg = _small_store(tmp_path / "a", spot_agree=[True] * 3, calibrated=False)
    kinds = {s["kind"] for s in build_report(store, cfg, now=NOW)["next_steps"]}
    assert "calibrate" in kinds
    store, cfg = _small_store(tmp_path / "b", spot_agree=[True] * 3, newer_student=True)
    steps = build_report(store, cfg, now=NOW)["next_steps"]
    assert any(s["kind"] == "recalibrate" and "v2" in s["detail"] for s in steps)


def test_calibrated_shadow_task_may_go_live(tmp_path: Path) -> None:
    store, cfg = _small_store(tmp_path, spot_agree=[True], mode="shadow")
    steps = build_report(store, cfg, now=NOW)["next_steps"]
    assert any(s["kind"] == "go_live" for s in steps)


# ---------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------
def test_empty_store(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store_url())
    rep = build_report(store, cfg, now=NOW)
    assert rep["empty"] is True
    assert rep["totals"]["requests"] == 0 and rep["totals"]["local_share"] is None
    assert rep["tasks"]["tickets"]["cost"]["per_1k_requests"]["cascade"] is None
    assert json.loads(to_json(rep)) == rep
    page = render_html(rep)
    assert 'id="empty"' in page and "Nothing recorded yet" in page
    assert "Nothing recorded yet" in render_text(rep)
    assert build_report(Store(f"sqlite:///{tmp_path / 'other.db'}"), config(tmp_path), now=NOW)[
        "empty"
    ]


def test_window_with_nothing_in_it(filled: tuple[Store, Any]) -> None:
    store, cfg = filled
    rep = build_report(store, cfg, since=timedelta(days=1), now=START - timedelta(days=30))
    assert rep["empty"]
    assert "Nothing recorded yet" in render_html(rep)
    rep = build_report(store, cfg, since=timedelta(hours=1), now=NOW + timedelta(days=30))
    assert rep["empty"] and rep["window"]["requests_before_window"] > 0
    assert "before this window" in render_html(rep)


def test_json_round_trip(report: dict[str, Any]) -> None:
    text = to_json(report)
    assert json.loads(text) == report
    assert "NaN" not in text and "Infinity" not in text


def test_html_is_self_contained(html: str, report: dict[str, Any]) -> None:
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html.lower()
    assert not re.search(r"https?://", html), "no external URL"
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert refs and all(r.startswith(("data:", "#")) for r in refs)
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 8
    # key figures carry their exact JSON values
    m = re.search(r'id="m-t-tickets-local_share"[^>]*data-value="([^"]+)"', html)
    assert m and json.loads(m.group(1)) == report["tasks"]["tickets"]["local_share"]
    assert MEASURED in html and ESTIMATED in html


def test_text_summary(report: dict[str, Any]) -> None:
    text = render_text(report)
    t = report["tasks"]["tickets"]
    assert "== tickets (cascade) ==" in text and "== emails (shadow) ==" in text
    assert f"{100 * t['local_share']:.1f} %" in text
    assert "What to do next" in text and "downsize train emails" in text
    assert max(len(line) for line in text.splitlines()) <= 100


@pytest.mark.parametrize("fmt", ["html", "json", "text"])
def test_write_report(filled: tuple[Store, Any], tmp_path: Path, fmt: str) -> None:
    store, cfg = filled
    out = write_report(
        store, cfg, tmp_path / "out" / f"r.{fmt}", format=fmt, tasks=["tickets"], now=NOW
    )
    body = out.read_text(encoding="utf-8")
    if fmt == "json":
        assert list(json.loads(body)["tasks"]) == ["tickets"]
    else:
        assert "tickets" in body


def test_write_report_rejects_unknown_format(filled: tuple[Store, Any], tmp_path: Path) -> None:
    store, cfg = filled
    with pytest.raises(ValueError, match="pdf"):
        write_report(store, cfg, tmp_path / "r.pdf", format="pdf")  # type: ignore[arg-type]


def test_rows_without_token_counts(tmp_path: Path) -> None:
    """No token counts anywhere: teacher-only energy is unknown, not zero, and nothing crashes."""
    cfg = config(tmp_path)
    store = Store(cfg.store_url())
    store.log_requests(
        [
            {
                "request_id": "r1",
                "ts": NOW - timedelta(minutes=5),
                "task": "tickets",
                "model": "m",
                "input_hash": "h",
                "answered_by": "student",
                "student_label": "billing",
                "latency_ms": 1.0,
                "teacher_only_cost_usd": 0.002,
            }
        ]
    )
    rep = build_report(store, cfg, now=NOW)
    en = rep["tasks"]["tickets"]["energy"]
    assert en["teacher_only_wh"] is None and en["saved_pct"] is None
    assert "without token counts: unknown" in en["teacher_only"]["assumption"]
    assert rep["totals"]["energy_per_1k_requests"]["teacher_only"] is None
    render_html(rep)
    render_text(rep)


# ---------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------
@pytest.mark.parametrize(("k", "n"), [(0, 5), (5, 5), (37, 40), (1, 1000), (999, 1000)])
def test_clopper_pearson_matches_scipy(k: int, n: int) -> None:
    ci = binomtest(k, n).proportion_ci(0.95, method="exact")
    assert clopper_pearson(k, n) == (
        pytest.approx(ci.low, abs=1e-9),
        pytest.approx(ci.high, abs=1e-9),
    )


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("2w", timedelta(weeks=2)),
        ("1.5d", timedelta(hours=36)),
    ],
)
def test_parse_duration(text: str, want: timedelta) -> None:
    assert parse_duration(text) == want


@pytest.mark.parametrize("bad", ["", "7", "d", "7 days", "-1d"])
def test_parse_duration_rejects(bad: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_default_now_is_utc(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    rep = build_report(Store(cfg.store_url()), cfg)
    end = datetime.fromisoformat(rep["window"]["end"])
    assert abs((end - utcnow()).total_seconds()) < 60
    assert math.isclose(cfg.energy.cpu_watts_per_core, rep["assumptions"]["cpu_watts_per_core"])


def test_tasks_only_in_the_store_are_reported(filled: tuple[Store, Any]) -> None:
    from downsize.config import Config

    store, _ = filled
    rep = build_report(store, Config(), now=NOW)
    assert set(rep["tasks"]) == {"tickets", "emails"}
    assert (
        rep["tasks"]["emails"]["mode"] == "shadow" and rep["tasks"]["tickets"]["mode"] == "cascade"
    )
    assert rep["tasks"]["tickets"]["labels"] is None
    render_html(rep)


def test_import_is_light_and_stays_in_its_layer() -> None:
    """Importing the report pulls in neither the gateway, the CLI nor matplotlib."""
    import subprocess
    import sys

    code = (
        "import sys, downsize.report, downsize.report.energy; "
        "bad = [m for m in sys.modules if m.startswith(('downsize.server', 'downsize.cli', "
        "'matplotlib', 'jinja2', 'fastapi', 'typer'))]; print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _log(i: int, **kw: Any) -> dict[str, Any]:
    row = {
        "request_id": f"r{i}",
        "ts": NOW - timedelta(minutes=i + 1),
        "task": "tickets",
        "model": "m",
        "input_hash": f"h{i}",
        "answered_by": "student",
        "student_label": "billing",
        "latency_ms": 2.0,
        "teacher_only_cost_usd": 0.001,
    }
    row.update(kw)
    return row


EDGE_CASES = {
    "only errors": lambda: [
        _log(i, answered_by="error", student_label=None, status_code=500) for i in range(6)
    ],
    "thirty labels": lambda: [
        _log(
            i,
            answered_by="teacher",
            student_label=f"l{i % 30}",
            teacher_label=f"l{(i * 7) % 30}",
            teacher_input_tokens=100,
            teacher_output_tokens=2,
            teacher_cost_usd=0.001,
        )
        for i in range(300)
    ],
    "costs more than the teacher": lambda: [
        _log(
            i,
            answered_by="teacher",
            teacher_label="billing",
            teacher_cost_usd=0.003,
            teacher_input_tokens=100,
            teacher_output_tokens=2,
        )
        for i in range(10)
    ],
    "pass-through only": lambda: [
        _log(i, task=None, answered_by="passthrough", student_label=None) for i in range(5)
    ],
}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_render(tmp_path: Path, case: str) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store_url())
    store.log_requests(EDGE_CASES[case]())
    rep = build_report(store, cfg, now=NOW)
    assert json.loads(to_json(rep)) == rep
    page = render_html(rep)
    assert "<script" not in page and not rep["empty"]
    render_text(rep)
    kinds = {s["kind"] for s in rep["next_steps"]}
    if case == "only errors":
        assert "errors" in kinds
    if case == "costs more than the teacher":
        assert "no_savings" in kinds and rep["tasks"]["tickets"]["cost"]["savings_usd"] < 0
        assert "−$" in page
    if case == "thirty labels":
        assert len(rep["tasks"]["tickets"]["confusion"]["labels"]) == 30
        assert "teacher \\ student" in page  # too many labels for a heat map: a table instead


def test_spot_checks_without_requests_in_the_window(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store_url())
    store.log_requests([_log(0, ts=NOW - timedelta(days=3))])
    store.add(
        SpotCheck(
            request_id="r0",
            task="tickets",
            ts=NOW - timedelta(hours=1),
            student_label="billing",
            teacher_label="billing",
            agree=True,
            teacher_cost_usd=0.001,
        )
    )
    rep = build_report(store, cfg, since=timedelta(days=1), now=NOW)
    t = rep["tasks"]["tickets"]
    assert t["requests"] == 0 and t["spot_checks"]["n"] == 1
    assert t["cost"]["spent_usd"] == pytest.approx(0.001)
    render_html(rep)
    render_text(rep)


def test_no_qualifying_threshold(tmp_path: Path) -> None:
    store, cfg = _small_store(tmp_path, spot_agree=[True] * 3)
    with store.session() as s:
        sv_id = s.scalar(select(StudentVersion.id))
        s.add(
            CalibrationRun(
                task="tickets",
                student_version_id=sv_id,
                alpha=0.01,
                delta=0.05,
                threshold=None,
                coverage=0.0,
                coverage_lo=0.0,
                coverage_hi=0.02,
                n_calib=80,
                n_answered=0,
                errors_answered=0,
                reference="gold",
                method="ltt",
                details={},
            )
        )
    rep = build_report(store, cfg, now=NOW)
    assert rep["tasks"]["tickets"]["calibration"]["threshold"] is None
    assert any(s["kind"] == "no_threshold" for s in rep["next_steps"])
    assert "No threshold met" in render_html(rep)


def test_write_report_reuses_a_built_report(filled: tuple[Store, Any], tmp_path: Path) -> None:
    store, cfg = filled
    rep = build_report(store, cfg, tasks=[], since=timedelta(days=2), now=NOW)
    assert (
        set(rep["tasks"]) == {"tickets", "emails"} and rep["passthrough"] is not None
    )  # [] means all
    out = write_report(store, cfg, tmp_path / "r.json", format="json", report=rep)
    assert json.loads(out.read_text(encoding="utf-8")) == rep
