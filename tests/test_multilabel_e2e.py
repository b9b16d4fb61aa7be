"""``kind: multilabel`` through the whole loop on real parts: the replay teacher on loopback serving
recorded ``{"labels": [...]}`` answers from JSONL (``--answer-col labels``) → label → train (the
multi-label student) → calibrate (``loss: f1``, a bounded loss) → predict → serve (the unmodified
``openai`` SDK against a real uvicorn; JSON content, ``response_format`` json_schema honoured) →
eval → report."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from openai import OpenAI

from downsize.errors import AnswerError
from downsize.evaluation import evaluate_file
from downsize.project import Project
from downsize.replay import ReplayServer
from downsize.report import build_report, render_html
from downsize.server import ServerThread, create_app
from downsize.server.keys import create_key
from downsize.students import MultiLabelStudent, load_student

DATA = Path(__file__).parent / "data"

CONFIG = """\
store: sqlite:///.downsize/downsize.db
teachers:
  default: {{base_url: "{url}", model: replay, price_per_1m_input: 2.5, price_per_1m_output: 10,
             max_concurrency: 16, timeout_s: 10, max_retries: 1}}
tasks:
  tags:
    kind: multilabel
    instructions: Tag the Debian package with every tag that applies.
    labels: {labels}
    loss: f1
    student: tfidf
    alpha: 0.25
    calibration_fraction: 0.4
    spot_check_rate: 0
"""


@pytest.fixture(scope="module")
def debtags() -> list[dict]:
    with gzip.open(DATA / "debtags-sample.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh][:500]


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, debtags: list[dict]) -> Iterator[tuple[Project, ReplayServer, Path]]:
    d = tmp_path_factory.mktemp("multilabel")
    recorded = d / "recorded.jsonl"
    recorded.write_text("".join(json.dumps({"text": r["text"], "labels": r["labels"]}) + "\n" for r in debtags))
    labels = sorted({x for r in debtags for x in r["labels"]})
    with ReplayServer.from_file(recorded, label_col="labels") as replay:
        (d / "downsize.yaml").write_text(CONFIG.format(url=replay.base_url, labels=json.dumps({x: x for x in labels})))
        (d / "train.jsonl").write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in debtags[:400]))
        (d / "gold.jsonl").write_text("".join(json.dumps({"text": r["text"], "labels": r["labels"]}) + "\n"
                                              for r in debtags[400:]))
        with Project.open(d / "downsize.yaml") as p:
            yield p, replay, d


def test_labels_that_differ_only_in_punctuation_are_told_apart() -> None:
    from downsize.tasks.multilabel import MultiLabelTask

    task = MultiLabelTask(instructions="Tag it.", labels={"devel::lang:c": "", "devel::lang:c++": "", "x": ""})
    assert task.parse('{"labels": ["devel::lang:c", "DEVEL::LANG:C++"]}') == ("devel::lang:c", "devel::lang:c++")
    with pytest.raises(AnswerError, match="not one of the labels"):
        task.parse('{"labels": ["devel lang c"]}')  # spelt like both: never guessed


def test_label_train_calibrate_predict_eval(project: tuple[Project, ReplayServer, Path]) -> None:
    p, replay, d = project
    summary = p.label("tags", d / "train.jsonl", progress=False)
    assert summary.labelled == 400 and summary.failed == 0
    assert replay.stats["requests"] == 400  # one paid call per text
    again = p.label("tags", d / "train.jsonl", progress=False)
    assert again.already_labelled == 400 and replay.stats["requests"] == 400  # nothing paid twice
    tr = p.train("tags")
    assert tr.kind == "tfidf" and tr.n_train == tr.n_calib == 400 and tr.calibration == "out-of-fold (3 folds)"
    student = load_student(tr.path)
    assert isinstance(student, MultiLabelStudent) and student.features == "tfidf"
    run, cal = p.calibrate("tags")
    assert run.n_calib == tr.n_calib and run.method.startswith("ltt-hoeffding-bentkus")
    if cal.threshold_ is not None:  # a bounded loss: the answered calibration rows' mean 1 - F1 is at most α
        assert cal.loss_answered_ / cal.n_answered_ <= 0.25
    out = p.predict("tags", d / "gold.jsonl", d / "pred.jsonl", progress=False)
    assert out.rows == 100
    rows = [json.loads(x) for x in (d / "pred.jsonl").read_text().splitlines()]
    task = p.config.task("tags")
    assert len(rows) == 100 and all(isinstance(r["labels"], list) for r in rows)
    for r in rows:  # every answer is a valid label set of the task, whoever gave it
        assert list(task.normalise(r["labels"])) == sorted(r["labels"])
    res = evaluate_file(p, "tags", d / "gold.jsonl", gold_col="labels", progress=False)
    assert res.teacher is not None and res.teacher["exact_match"] == 1.0  # the replay is the gold
    assert 0.3 < res.student["micro_f1"] < 1.0 and 0 <= res.student["exact_match"] < 1.0
    assert res.curve and res.curve[0]["coverage"] == 1.0


def test_through_the_gateway_with_the_openai_sdk(project: tuple[Project, ReplayServer, Path],
                                                 debtags: list[dict]) -> None:
    p, replay, _ = project
    if p.store.latest_student("tags") is None:
        pytest.skip("needs the trained student of the test above")
    task = p.config.task("tags")
    key = create_key(p.store, "e2e").secret
    schema = {"name": "tags", "schema": task.answer_schema()}
    with ServerThread(create_app(p.config, store=p.store)) as srv:
        client = OpenAI(base_url=srv.base_url, api_key=key, max_retries=0)
        seen = set()
        for r in debtags[420:450]:
            resp = client.chat.completions.with_raw_response.create(
                model="downsize/tags", messages=[{"role": "user", "content": r["text"]}],
                response_format={"type": "json_schema", "json_schema": schema})
            content = resp.parse().choices[0].message.content
            obj = json.loads(content)
            assert set(obj) == {"labels"} and task.parse(content) == tuple(sorted(obj["labels"]))
            by = resp.headers["x-downsize-answered-by"]
            seen.add(by)
            if by == "teacher":
                assert sorted(obj["labels"]) == sorted(r["labels"])
        assert seen <= {"student", "teacher"}
        before = replay.stats["requests"]
        with pytest.raises(openai.BadRequestError, match="requires \\['tags'\\]"):
            client.chat.completions.create(
                model="downsize/tags", messages=[{"role": "user", "content": debtags[499]["text"]}],
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
                    "type": "object", "properties": {"tags": {"type": "array"}}, "required": ["tags"]}}})
        assert replay.stats["requests"] == before  # refused before paying
    rep = build_report(p.store, p.config)
    assert rep["tasks"]["tags"]
    render_html(rep)
