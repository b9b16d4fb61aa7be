"""Issue 9, items 4-7: long-tail labels, relative student paths, health and audit of rejected
requests, strict request types, predict keeping the input's columns, calibrate --dry-run/--force.

Real parts only: SQLite files in tmp_path, the replay teacher on loopback, the gateway under
uvicorn (``ServerThread``) or the ASGI app through httpx, real tfidf students on Reuters rows.
"""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from downsize.cli import app
from downsize.data import read_texts
from downsize.project import Project
from downsize.replay import ReplayServer

REUTERS = Path(__file__).resolve().parents[1] / "src" / "downsize" / "_assets" / "reuters_r8_demo-train.csv.gz"
LABELS = ("earn", "acq", "crude", "trade", "money-fx", "interest", "ship", "grain")
runner = CliRunner()


def _config(url: str, *, extra: str = "") -> str:
    labels = "{" + ", ".join(f"{k}: x" for k in LABELS) + "}"
    return ("store: sqlite:///.downsize/downsize.db\nteachers:\n  default:\n"
            f"    base_url: {url}\n    model: replay\n    price_per_1m_input: 2.5\n    price_per_1m_output: 10\n"
            "    max_concurrency: 16\n    timeout_s: 5\n    max_retries: 1\n"
            f"tasks:\n  news:\n    instructions: Route the story.\n    labels: {labels}\n"
            f"    student: tfidf\n    alpha: 0.05\n{extra}")


def _write(path: Path, header: list[str], rows: list[list[Any]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def reuters() -> tuple[list[str], list[str]]:
    data = read_texts(REUTERS, label_col="label")
    return data.texts, data.labels or []


@pytest.fixture(scope="module")
def replay(reuters: tuple[list[str], list[str]]) -> Iterator[ReplayServer]:
    texts, labels = reuters
    with ReplayServer(dict(zip(texts, labels))) as srv:
        yield srv


def _project(d: Path, url: str, texts: list[str], labels: list[str], *, extra: str = "") -> Path:
    """A project in ``d`` with ``texts`` as gold labels (no teacher needed to train)."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "downsize.yaml").write_text(_config(url, extra=extra))
    _write(d / "gold.csv", ["text", "label"], [[t, y] for t, y in zip(texts, labels)])
    with Project.open(d / "downsize.yaml") as p:
        p.add_gold("news", d / "gold.csv")
    return d / "downsize.yaml"


# -- item 5: relative student paths ------------------------------------------------------
def test_a_copied_project_loads_its_own_student_after_the_original_is_deleted(
        tmp_path: Path, reuters: tuple[list[str], list[str]], replay: ReplayServer) -> None:
    texts, labels = reuters
    cfg = _project(tmp_path / "orig", replay.base_url, texts[:1500], labels[:1500])
    with Project.open(cfg) as p:
        p.train("news")
        run, _ = p.calibrate("news")
        sv = p.store.latest_student("news")
    assert run.threshold is not None
    assert not Path(sv.path).is_absolute(), sv.path  # stored relative to the project's home
    shutil.copytree(tmp_path / "orig", tmp_path / "copy")
    shutil.rmtree(tmp_path / "orig")
    _write(tmp_path / "copy" / "new.csv", ["text"], [[t] for t in texts[1500:1560]])
    with Project.open(tmp_path / "copy" / "downsize.yaml") as p:
        s = p.predict("news", tmp_path / "copy" / "new.csv", tmp_path / "copy" / "out.csv", progress=False)
    assert s.rows == 60 and s.answered_by.get("student", 0) > 0, s.answered_by


def test_an_old_absolute_row_still_loads(tmp_path: Path, reuters: tuple[list[str], list[str]],
                                         replay: ReplayServer) -> None:
    from downsize.store import StudentVersion
    from downsize.training import student_dir

    texts, labels = reuters
    cfg = _project(tmp_path / "p", replay.base_url, texts[:1500], labels[:1500])
    with Project.open(cfg) as p:
        p.train("news")
        home = p.config.home_dir()
        with p.store.session() as s:  # as rows were written before paths became relative
            row = s.query(StudentVersion).one()
            row.path = str(home / row.path)
        sv = p.store.latest_student("news")
        assert Path(sv.path).is_absolute() and student_dir(sv, home) == Path(sv.path)
        p.calibrate("news")
        assert p.cascade("news").student is not None


# -- item 4: long-tail labels -----------------------------------------------------------------
#: A news-routing set with a long tail: the four big desks as they come, three labels with 1-4 rows.
TAIL = {"ship": 4, "interest": 2, "grain": 1}


def _long_tail(texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    keep: list[tuple[str, str]] = []
    seen: Counter[str] = Counter()
    for t, y in zip(texts[:1500], labels[:1500]):
        if y in TAIL and seen[y] >= TAIL[y]:
            continue
        seen[y] += 1
        keep.append((t, y))
    assert {y: seen[y] for y in TAIL} == TAIL
    return [t for t, _ in keep], [y for _, y in keep]


@pytest.fixture(scope="module")
def tail_project(tmp_path_factory: pytest.TempPathFactory, reuters: tuple[list[str], list[str]],
                 replay: ReplayServer) -> Path:
    texts, labels = _long_tail(*reuters)
    # a held-out calibration split, whose bookkeeping these tests check (cross-fitting is in test_auto)
    return _project(tmp_path_factory.mktemp("tail"), replay.base_url, texts, labels,
                    extra="    calibration_folds: 0\n")


def test_train_leaves_rare_labels_to_the_teacher_and_says_so(tail_project: Path) -> None:
    r = runner.invoke(app, ["train", "news", "--config", str(tail_project)], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output  # before: "too few examples for label(s) 'grain': 1, ..." and exit 1
    assert "teacher-only labels" in r.output
    for lab, n in TAIL.items():
        assert f"{lab} ({n} example(s), fewer than min_examples_per_label=5)" in r.output, r.output
    with Project.open(tail_project) as p:
        sv = p.store.latest_student("news")
        assert set(sv.metrics["teacher_only"]) == set(TAIL)  # the version records them, and why
        assert set(sv.labels).isdisjoint(TAIL)  # the student cannot give them
        by_id = {e.example_id: e.label for e in p.store.labelled_examples("news")}
        in_cal = Counter(by_id[i] for i in sv.calib_example_ids)
        rows = sv.metrics["teacher_only_rows"]
        assert rows["calibration"] == sum(in_cal[lab] for lab in TAIL) >= 1  # the rare rows stay in the split
        assert rows["calibration"] + rows["not_trained_on"] == sum(TAIL.values())
        assert sv.n_train + sv.n_calib + rows["not_trained_on"] == len(by_id)


def test_calibration_counts_student_answers_on_teacher_only_texts_as_errors(tail_project: Path) -> None:
    from downsize.training import load_student_version

    with Project.open(tail_project) as p:
        if p.store.latest_student("news") is None:
            p.train("news")
        run, _ = p.calibrate("news")
        sv = p.store.latest_student("news")
        student = load_student_version(sv, p.config.home_dir())
        by_id = {e.example_id: e for e in p.store.labelled_examples("news")}
        split = [by_id[i] for i in sorted(sv.calib_example_ids)]
        task = p.config.task("news")
        pred, conf = task.score(student, [e.text for e in split])
    rare = [i for i, e in enumerate(split) if e.label in TAIL]
    assert run.details["teacher_only"] == {"labels": sorted(TAIL), "rows": len(rare)} and rare
    assert run.n_calib == len(split)  # nothing dropped from the calibration
    assert all(pred[i] not in TAIL for i in range(len(split)))
    if run.threshold is not None:  # the errors the run counts include every answered rare row
        answered = [i for i in range(len(split)) if conf[i] >= run.threshold]
        wrong = sum(pred[i] != split[i].label for i in answered)
        assert run.errors_answered == wrong and run.n_answered == len(answered)


def test_min_examples_per_label_is_still_the_knob(tmp_path: Path, reuters: tuple[list[str], list[str]],
                                                  replay: ReplayServer) -> None:
    texts, labels = _long_tail(*reuters)
    cfg = _project(tmp_path, replay.base_url, texts, labels, extra="    min_examples_per_label: 2\n")
    with Project.open(cfg) as p:
        r = p.train("news")
    assert set(r.teacher_only) == {"grain", "interest"} and r.teacher_only_rows == 3
    assert "fewer than 2 would be left to train on" in r.teacher_only["interest"]  # 2 rows: 1 to train on
    assert r.label_counts["ship"] == 4


def test_too_few_trainable_labels_is_still_a_clear_error(tmp_path: Path, reuters: tuple[list[str], list[str]],
                                                         replay: ReplayServer) -> None:
    from downsize.errors import StudentError

    texts, labels = reuters
    pick = [(t, y) for t, y in zip(texts, labels) if y == "earn"][:40] + \
        [(t, y) for t, y in zip(texts, labels) if y == "acq"][:3]
    cfg = _project(tmp_path, replay.base_url, [t for t, _ in pick], [y for _, y in pick])
    with Project.open(cfg) as p, pytest.raises(StudentError, match=r"left to the teacher: 'acq' \(3 example"):
        p.train("news")


# -- items 6 and 7: the gateway ------------------------------------------------------------------
def _chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "downsize/news", "messages": [{"role": "user", "content": text}], **extra}


@pytest.fixture(scope="module")
def gw_replay(gateway_project: Any) -> Iterator[ReplayServer]:
    with ReplayServer(gateway_project.records) as srv:
        yield srv


def test_strict_request_types_and_content_type(gateway_project: Any, gw_replay: ReplayServer, tmp_path: Path) -> None:
    import httpx

    from downsize.server import ServerThread, create_app
    from downsize.store import Store

    cfg = gateway_project.config(tmp_path, gw_replay.base_url)
    text = gateway_project.confident[3]
    with Store(cfg.store_url()) as st, ServerThread(create_app(cfg, store=st, auth=False)) as srv:
        url = f"{srv.base_url}/chat/completions"
        for field, value, expect in (("stream", "yes", "stream: Input should be a valid boolean (got the string \"yes\")"),
                                     ("temperature", "hot", "temperature: Input should be a valid number"),
                                     ("max_tokens", "5", "max_tokens: Input should be a valid integer"),
                                     ("temperature", True, "temperature: Input should be a valid number"),
                                     ("stream_options", {"include_usage": "no"}, "stream_options.include_usage")):
            r = httpx.post(url, json=_chat(text, **{field: value}))
            assert r.status_code == 400, (field, value, r.status_code, r.text[:200])  # before: 200
            assert r.json()["error"]["param"].startswith(field) and expect in r.json()["error"]["message"], r.text
        ok = httpx.post(url, json=_chat(text, temperature=0, top_p=1.0, stream=False, seed=7))
        assert ok.status_code == 200 and ok.headers["x-downsize-answered-by"] == "student"
        body = httpx.Request("POST", url, json=_chat(text)).content
        for ctype in ("text/plain", "application/x-www-form-urlencoded"):
            r = httpx.post(url, content=body, headers={"content-type": ctype})
            assert r.status_code == 415 and "application/json" in r.json()["error"]["message"], r.text
            r = httpx.post(f"{srv.url}/v1/tasks/news/predict", content=b'{"inputs": ["x"]}',
                           headers={"content-type": ctype})
            assert r.status_code == 415, r.text
        assert httpx.post(url, content=body, headers={"content-type": "application/json; charset=utf-8"}
                          ).status_code == 200
        assert httpx.post(url, content=body).status_code == 200  # no Content-Type at all: accepted


def test_refused_requests_are_audited_and_counted(gateway_project: Any, gw_replay: ReplayServer,
                                                  tmp_path: Path) -> None:
    import httpx
    from sqlalchemy import select

    from downsize.report import build_report
    from downsize.server import ServerThread, create_app
    from downsize.server.keys import create_key
    from downsize.store import RequestLog, Store

    cfg = gateway_project.config(tmp_path, gw_replay.base_url, server={"max_body_bytes": 4096})
    text = gateway_project.confident[5]
    with Store(cfg.store_url()) as st:
        key = create_key(st, "t").secret
        auth = {"authorization": f"Bearer {key}"}
        with ServerThread(create_app(cfg, store=st, rate_limit_per_minute=6)) as srv:
            url = f"{srv.base_url}/chat/completions"
            got = [httpx.post(url, json=_chat(text)).status_code,  # no key
                   httpx.post(url, json=_chat(text), headers={"authorization": "Bearer nope"}).status_code,
                   httpx.post(url, content=b"{not json", headers=auth).status_code,
                   httpx.post(url, json=_chat("x" * 5000), headers=auth).status_code,
                   httpx.post(url, json=_chat(text, model="downsize/nosuch"), headers=auth).status_code,
                   httpx.post(url, json=_chat(text), headers=auth).status_code]
            got += [httpx.post(url, json=_chat(text), headers=auth).status_code for _ in range(4)]
            metrics = httpx.get(f"{srv.url}/metrics").text
        assert got[:6] == [401, 401, 400, 413, 404, 200] and 429 in got[6:], got
        with st.session() as s:
            rows = list(s.scalars(select(RequestLog).where(RequestLog.answered_by == "error")))
        by_status = Counter(r.status_code for r in rows)
        assert by_status[401] == 2 and by_status[400] == 1 and by_status[413] == 1 and by_status[404] == 1
        assert by_status[429] == got.count(429)  # before: only the 404 had a row (counted as pass-through)
        for r in rows:
            assert r.reason and r.task is None, (r.status_code, r.reason)
        assert any("invalid or revoked API key" in r.reason for r in rows if r.status_code == 401)
        assert any("max_body_bytes" in r.reason for r in rows if r.status_code == 413)
        assert [r.model for r in rows if r.status_code == 404] == ["downsize/nosuch"]
        assert {r.client_key_id for r in rows if r.status_code == 429} != {None}
        assert 'downsize_rejected_requests_total{reason="request_too_large",status="413"} 1.0' in metrics
        assert 'downsize_rejected_requests_total{reason="invalid_api_key",status="401"} 2.0' in metrics
        report = build_report(st, cfg)
    assert report["passthrough"] is None and report["totals"]["passthrough_requests"] == 0  # before: 1 (the 404)
    assert report["rejected"]["requests"] == len(rows)  # none of them named a configured task
    assert {"model": "downsize/nosuch", "requests": 1} in report["rejected"]["models"]


def test_healthz_is_degraded_with_the_reason_when_a_task_lost_its_student(
        gateway_project: Any, gw_replay: ReplayServer, tmp_path: Path) -> None:
    import httpx
    from sqlalchemy import select

    from downsize.server import ServerThread, create_app
    from downsize.store import Store, StudentVersion
    from downsize.training import student_dir

    cfg = gateway_project.config(tmp_path, gw_replay.base_url)
    with Store(cfg.store_url()) as st:
        with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
            h = httpx.get(f"{srv.url}/healthz").json()
        task = h["tasks"]["news"]
        assert h["status"] == "ok" and h["reasons"] == [] and task["status"] == "ok"
        assert task["mode"] == "cascade" and "threshold" in task["reason"] and "shadow" not in task["reason"]
        with st.session() as s:
            sv = s.scalars(select(StudentVersion)).one()
            copy = tmp_path / "student-copy"
            shutil.copytree(student_dir(sv, cfg.home_dir()), copy)
            sv.path = str(copy)
        (copy / "manifest.json").write_text((copy / "manifest.json").read_text() + " ")
        with ServerThread(create_app(cfg, store=st, auth=False)) as srv:
            r = httpx.get(f"{srv.url}/healthz")
    h = r.json()
    assert r.status_code == 200 and h["status"] == "degraded", h  # before: "ok"
    task = h["tasks"]["news"]
    assert task["status"] == "degraded" and "checksum" in task["status_reason"] and task["mode"] == "shadow"
    assert any("'news'" in why and "without its student" in why for why in h["reasons"])
    assert "could not be loaded" in task["reason"]


def test_a_shadow_task_says_why_and_what_waits(gateway_project: Any, gw_replay: ReplayServer, tmp_path: Path) -> None:
    import httpx

    from downsize.server import ServerThread, create_app
    from downsize.store import Store

    cfg = gateway_project.config(tmp_path, gw_replay.base_url, task={"mode": "shadow"})
    with Store(cfg.store_url()) as st, ServerThread(create_app(cfg, store=st, auth=False)) as srv:
        h = httpx.get(f"{srv.url}/healthz").json()
    task = h["tasks"]["news"]
    assert h["status"] == "ok" and task["status"] == "ok" and task["mode"] == "shadow"
    assert task["reason"] == "mode: shadow in the config; calibrated tfidf student v1 waiting"


def test_an_answer_error_is_the_clients_fault() -> None:
    import asyncio

    import httpx
    from fastapi import FastAPI

    from downsize.errors import AnswerError
    from downsize.server._errors import install_handlers

    api = FastAPI()
    install_handlers(api)

    @api.post("/x")
    async def x() -> None:
        raise AnswerError("'sports' is not one of the labels")

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url="http://t") as c:
            return await c.post("/x")

    r = asyncio.run(go())
    assert r.status_code == 400 and r.json()["error"]["code"] == "AnswerError"  # before: 500


# -- item 7: predict keeps the input's columns; calibrate --dry-run and --force ------------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, reuters: tuple[list[str], list[str]],
            replay: ReplayServer) -> Path:
    texts, labels = reuters
    # a held-out split (≈450 rows), at which α = 0.008 qualifies nothing
    cfg = _project(tmp_path_factory.mktemp("trained"), replay.base_url, texts[:1500], labels[:1500],
                   extra="    calibration_folds: 0\n")
    with Project.open(cfg) as p:
        p.train("news")
        run, _ = p.calibrate("news")
    assert run.threshold is not None
    return cfg


def test_predict_keeps_the_input_columns_and_never_overwrites_a_label(
        trained: Path, reuters: tuple[list[str], list[str]]) -> None:
    texts, labels = reuters
    d = trained.parent
    src = _write(d / "in.csv", ["id", "text", "label", "row"],
                 [[f"id-{i}", t, y, "mine"] for i, (t, y) in enumerate(zip(texts[1500:1540], labels[1500:1540]))])
    r = runner.invoke(app, ["predict", "news", str(src), "-o", str(d / "out.csv"), "--config", str(trained)],
                      env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    assert "label → downsize_label" in r.output and "row → downsize_row" in r.output
    with open(d / "out.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:4] == ["id", "text", "label", "row"]  # before: row, text, label, ... (no id)
    assert [x["id"] for x in rows] == [f"id-{i}" for i in range(40)]
    assert [x["label"] for x in rows] == labels[1500:1540]  # the input's label, not the prediction
    assert [x["row"] for x in rows] == ["mine"] * 40
    assert all(x["downsize_label"] in LABELS and x["answered_by"] for x in rows)
    assert [int(x["downsize_row"]) for x in rows] == list(range(2, 42))
    r = runner.invoke(app, ["predict", "news", str(src), "-o", str(d / "few.jsonl"), "--keep-cols", "id",
                            "--config", str(trained)])
    assert r.exit_code == 0, r.output
    import json

    first = json.loads((d / "few.jsonl").read_text().splitlines()[0])
    assert list(first)[:4] == ["id", "row", "text", "label"] and first["id"] == "id-0" and first["row"] == 2
    r = runner.invoke(app, ["predict", "news", str(src), "-o", str(d / "x.csv"), "--keep-cols", "id,nope",
                            "--config", str(trained)])
    assert r.exit_code == 2 and "nope" in r.output and "Traceback" not in r.output
    assert "downsize_<name>" in " ".join(runner.invoke(app, ["predict", "--help"], env={"COLUMNS": "250"}).output.split())


def test_calibrate_dry_run_saves_nothing_and_a_failed_calibration_keeps_the_working_one(trained: Path) -> None:
    from downsize.store import CalibrationRun

    def runs() -> list[Any]:
        with Project.open(trained) as p, p.store.session() as s:
            return list(s.query(CalibrationRun).order_by(CalibrationRun.id))

    before = runs()
    working = before[-1]
    r = runner.invoke(app, ["calibrate", "news", "--alpha", "0.1", "--dry-run", "--config", str(trained)],
                      env={"COLUMNS": "250"})
    assert r.exit_code == 0 and "dry run, nothing saved" in r.output and "threshold λ" in r.output, r.output
    assert len(runs()) == len(before)  # before: there was no --dry-run
    r = runner.invoke(app, ["calibrate", "news", "--alpha", "0.008", "--config", str(trained)])
    assert r.exit_code != 0 and "kept the current calibration" in r.output and "--force" in r.output, r.output
    assert len(runs()) == len(before)  # before: saved, and the task went to the teacher at once
    with Project.open(trained) as p:
        assert p.cascade("news").threshold == working.threshold
    r = runner.invoke(app, ["calibrate", "news", "--alpha", "0.008", "--force", "--config", str(trained)])
    assert r.exit_code == 0 and "none qualifies" in r.output, r.output
    with Project.open(trained) as p:
        assert p.cascade("news").threshold is None
