"""Every task kind through the whole loop on real parts: the replay teacher on loopback serving
recorded structured answers → label → train → calibrate → predict → serve (the unmodified
``openai`` SDK against a real uvicorn) → eval → report."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from downsize.project import Project
from downsize.replay import ReplayServer
from downsize.report import build_report, render_html
from downsize.server import ServerThread, create_app
from downsize.server.keys import create_key
from downsize.students import available

DATA = Path(__file__).parent / "data"

CONFIG = """\
store: sqlite:///.downsize/downsize.db
teachers:
  default: {{base_url: "{url}", model: replay, price_per_1m_input: 2.5, price_per_1m_output: 10,
             max_concurrency: 16, timeout_s: 10, max_retries: 1}}
tasks:
  addr:
    kind: extract
    instructions: Pull the parts of the postal address out of the text.
    fields: {fields}
    alpha: 0.2
    calibration_fraction: 0.4
    spot_check_rate: 0
"""


def _rows(name: str, n: int) -> tuple[list[str], list[str]]:
    texts, answers = [], []
    with gzip.open(DATA / name, "rt", encoding="utf-8") as fh:
        for line in list(fh)[:n]:
            rec = json.loads(line)
            texts.append(rec["text"])
            answers.append(json.dumps(rec["fields"]))
    return texts, answers


@pytest.fixture(scope="module")
def addresses() -> tuple[list[str], list[str]]:
    return _rows("us_addresses-sample.jsonl.gz", 500)


@pytest.fixture(scope="module")
def extract_project(tmp_path_factory: pytest.TempPathFactory,
                    addresses: tuple[list[str], list[str]]) -> Iterator[tuple[Project, ReplayServer, Path]]:
    texts, answers = addresses
    fields = sorted({k for a in answers for k in json.loads(a)})
    d = tmp_path_factory.mktemp("extract")
    with ReplayServer(dict(zip(texts, answers))) as replay:
        (d / "downsize.yaml").write_text(CONFIG.format(url=replay.base_url, fields=json.dumps({f: f for f in fields})))
        with open(d / "train.jsonl", "w") as fh:
            fh.writelines(json.dumps({"text": t}) + "\n" for t in texts[:400])
        with open(d / "gold.jsonl", "w") as fh:
            fh.writelines(json.dumps({"text": t, "fields": json.loads(a)}) + "\n" for t, a in zip(texts[400:], answers[400:]))
        with Project.open(d / "downsize.yaml") as p:
            yield p, replay, d


def test_extract_label_train_calibrate_predict_eval(extract_project: tuple[Project, ReplayServer, Path]) -> None:
    p, replay, d = extract_project
    summary = p.label("addr", d / "train.jsonl", progress=False)
    assert summary.labelled == 400 and summary.failed == 0
    assert replay.stats["requests"] == 400  # one call per text: nothing paid twice
    again = p.label("addr", d / "train.jsonl", progress=False)
    assert again.already_labelled == 400 and replay.stats["requests"] == 400
    tr = p.train("addr")
    assert tr.kind == "crf" and tr.holdout_agreement > 0.4
    run, cal = p.calibrate("addr")
    assert run.n_calib == tr.n_calib
    out = p.predict("addr", d / "gold.jsonl", d / "pred.jsonl", progress=False)
    assert out.rows == 100
    rows = [json.loads(x) for x in (d / "pred.jsonl").read_text().splitlines()]
    # the input's gold "fields" column is kept; the prediction is beside it, renamed
    assert out.renamed.get("fields") == "downsize_fields"
    assert len(rows) == 100 and all(isinstance(r["downsize_fields"], dict) for r in rows)
    task = p.config.task("addr")
    for r in rows:  # every answer is a valid record of the task, whoever gave it
        task.normalise(r["downsize_fields"])
    from downsize.evaluation import evaluate_file

    res = evaluate_file(p, "addr", d / "gold.jsonl", gold_col="fields", progress=False)
    assert res.teacher is not None and res.teacher["exact_match"] == 1.0  # the replay is the gold
    assert 0.3 < res.student["exact_match"] <= 1.0 and "f1.AddressNumber" in res.student
    assert res.curve and res.curve[0]["coverage"] == 1.0


def test_extract_through_the_gateway_and_the_report(extract_project: tuple[Project, ReplayServer, Path],
                                                    addresses: tuple[list[str], list[str]]) -> None:
    p, replay, d = extract_project
    if p.store.latest_student("addr") is None:
        pytest.skip("needs the trained student of the test above")
    texts, answers = addresses
    key = create_key(p.store, "e2e").secret
    with ServerThread(create_app(p.config, store=p.store)) as srv:
        client = OpenAI(base_url=srv.base_url, api_key=key, max_retries=0)
        for text, ans in zip(texts[450:470], answers[450:470]):
            r = client.chat.completions.with_raw_response.create(
                model="downsize/addr", messages=[{"role": "user", "content": text}])
            content = r.parse().choices[0].message.content
            got = p.config.task("addr").parse(content, text)  # the content is a valid record
            assert r.headers["x-downsize-answered-by"] in ("student", "teacher")
            if r.headers["x-downsize-answered-by"] == "teacher":
                assert dict(got) == {k: " ".join(v.split()) for k, v in json.loads(ans).items()}
        r = client.chat.completions.create(model="downsize/addr", messages=[{"role": "user", "content": texts[460]}],
                                           response_format={"type": "json_object"})
        assert isinstance(json.loads(r.choices[0].message.content), dict)


def test_a_json_schema_that_cannot_hold_the_answers_is_refused_before_paying(
        extract_project: tuple[Project, ReplayServer, Path], addresses: tuple[list[str], list[str]]) -> None:
    import openai

    p, replay, _ = extract_project
    texts, _ = addresses
    key = create_key(p.store, "e2e-schema").secret
    before = replay.stats["requests"]
    with ServerThread(create_app(p.config, store=p.store)) as srv:
        client = OpenAI(base_url=srv.base_url, api_key=key, max_retries=0)
        with pytest.raises(openai.BadRequestError, match="requires \\['street'\\]"):
            client.chat.completions.create(
                model="downsize/addr", messages=[{"role": "user", "content": texts[499]}],
                response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {
                    "type": "object", "properties": {"street": {"type": "string"}}, "required": ["street"]}}})
    assert replay.stats["requests"] == before
    rep = build_report(p.store, p.config)
    assert {r["label"] for r in rep["tasks"]["addr"]["label_escalation"]} & {"AddressNumber", "StreetName"}
    render_html(rep)


def test_the_extract_family_is_registered() -> None:
    assert available("crf", task_kind="extract") and not available("crf", task_kind="classify")

