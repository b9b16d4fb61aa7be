"""The multilabel and extract task kinds: config, strict parsing (the issue's bad inputs, each a
test), normalisation, disagreement, metrics, and the replay teacher's structured answers."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import httpx
import numpy as np
import pytest

from downsize.calibration import ThresholdCalibrator
from downsize.config import Config, load_config, write_template
from downsize.data import decode_answers, read_texts, write_rows
from downsize.errors import AnswerError, ConfigError, DataError
from downsize.replay import ReplayServer
from downsize.replay.answers import content_for, noisy, vocabulary
from downsize.tasks import ExtractTask, MultiLabelTask

ML = MultiLabelTask(instructions="Tag it.", labels={"net": "networking", "web": "the web", "db": "databases"},
                    max_labels=2)
ML_F1 = ML.model_copy(update={"loss": "f1"})
ADDR = ExtractTask(instructions="Pull the address.", fields={
    "Number": {"description": "house number", "pattern": r"\d+"}, "Street": "street name",
    "Zip": {"type": "string", "pattern": r"\d{5}", "required": False}, "Amount": {"type": "number"},
    "Due": {"type": "date"}, "Unit": {"type": "enum", "values": ["kg", "lb"]}})
ORGS = ExtractTask(instructions="Find the companies and people.", entities={"ORG": "a company", "PER": "a person"})
TEXT = "Ship 12 KG to 836 Majestic Ridge Ln 52314 by 3 March 2026, total $1,234.50"


# -- the bad inputs, one test each ------------------------------------------------------------
def test_a_label_outside_the_set_is_refused() -> None:
    with pytest.raises(AnswerError, match="'sports' is not one of the labels"):
        ML.parse('{"labels": ["net", "sports"]}')


def test_a_field_value_not_in_the_text_is_refused() -> None:
    with pytest.raises(AnswerError, match="'99 Elm St' does not occur in the text"):
        ADDR.parse('{"Street": "99 Elm St"}', TEXT)


def test_a_number_field_with_text_is_refused() -> None:
    with pytest.raises(AnswerError, match="'Majestic' is not a number"):
        ADDR.parse('{"Amount": "Majestic"}', TEXT)


@pytest.mark.parametrize("task,raw", [(ML, '{"labels": ["net"], "why": "x"}'), (ADDR, '{"Number": "836", "City": "X"}'),
                                      (ORGS, '{"entities": [], "note": 1}')])
def test_json_with_extra_keys_is_refused(task, raw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AnswerError, match="unexpected key|unknown field"):
        task.parse(raw, TEXT)


@pytest.mark.parametrize("task,raw", [(ML, '{"labels": ["net", "w'), (ADDR, '{"Number": "836"'), (ORGS, '{"entities": [{"text"')])
def test_truncated_json_is_refused(task, raw) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AnswerError, match="not valid JSON"):
        task.parse(raw, TEXT)


def test_a_jsonl_answer_column_that_is_not_json_names_the_rows(tmp_path: Path) -> None:
    p = tmp_path / "gold.jsonl"
    p.write_text(json.dumps({"text": "a", "labels": ["net"]}) + "\n" + json.dumps({"text": "b", "labels": "net, web"}) + "\n")
    data = read_texts(p, label_col="labels")
    assert data.labels == ['["net"]', "net, web"]
    with pytest.raises(DataError, match=r"gold\.jsonl: 1 row\(s\).*line 2.*not a JSON list of labels"):
        decode_answers(ML, data.labels, data.rows, str(p))


def test_a_task_with_zero_fields_is_a_config_error(tmp_path: Path) -> None:
    cfg = tmp_path / "downsize.yaml"
    cfg.write_text("teachers:\n  default: {base_url: 'http://x/v1', model: m}\n"
                   "tasks:\n  t:\n    kind: extract\n    instructions: pull\n    fields: {}\n")
    with pytest.raises(ConfigError, match=r"downsize\.yaml:\d+: tasks\.t: .*needs `fields`"):
        load_config(cfg)


def test_no_entities_is_a_valid_answer_and_round_trips() -> None:
    empty = ORGS.parse('{"entities": []}', "nothing to see")
    assert empty == () and ORGS.decode(ORGS.encode(empty)) == ()
    assert ORGS.disagreement((), ()) == 0.0 and ORGS.render(()) == '{"entities":[]}'


# -- normalisation, loss, metrics ----------------------------------------------------------------------
def test_multilabel_names_are_matched_and_sets_canonical() -> None:
    assert ML.parse('```json\n{"labels": ["Web", "NET", "net"]}\n```') == ("net", "web")
    assert ML.parse("[]") == ()
    with pytest.raises(AnswerError, match="more than max_labels=2"):
        ML.parse('{"labels": ["net", "web", "db"]}')
    assert ML.decode(ML.encode(("web", "net"))) == ("net", "web")


def test_multilabel_losses() -> None:
    assert ML.disagreement(("net",), ("net",)) == 0.0 and ML.disagreement(("net",), ("net", "web")) == 1.0
    assert ML_F1.disagreement(("net",), ("net", "web")) == pytest.approx(1 - 2 / 3)
    assert ML_F1.disagreement((), ()) == 0.0 and ML_F1.disagreement(("db",), ()) == 1.0
    m = ML.metrics([("net",), ("net", "web"), None], [("net",), ("net",), ("db",)])
    assert m["exact_match"] == pytest.approx(1 / 3) and 0 < m["micro_f1"] < 1 and "macro_f1" in m


def test_f1_loss_calibrates_with_a_bound_for_bounded_losses() -> None:
    """``loss: f1`` is not 0/1: the task accepts any bound, and calibrates a binomial one with
    Hoeffding-Bentkus (the exact binomial would not be valid); 0/1 losses keep the binomial."""
    f1 = MultiLabelTask(instructions="x", labels={"a": "", "b": ""}, loss="f1", bound="binomial")
    assert not f1.binary_loss and f1.calibration_bound() == "hoeffding_bentkus"
    assert f1.model_copy(update={"bound": "betting"}).calibration_bound() == "betting"
    exact = MultiLabelTask(instructions="x", labels={"a": "", "b": ""}, bound="binomial")
    assert exact.binary_loss and exact.calibration_bound() == "binomial"
    ext = ExtractTask(instructions="x", fields={"Zip": "", "City": ""}, loss="f1", bound="binomial")
    assert ext.calibration_bound() == "hoeffding_bentkus"
    # the kind's real losses calibrate: a partial miss costs less than a whole one
    rng = np.random.default_rng(0)
    answers = [("a",), ("a", "b"), ("b",), ()]
    refs = [answers[i] for i in rng.integers(0, 4, size=3000)]
    preds = [r if rng.uniform() < 0.9 else answers[rng.integers(0, 4)] for r in refs]
    loss_f1, loss_exact = f1.disagreements(preds, refs), exact.disagreements(preds, refs)
    assert (loss_f1 <= loss_exact).all() and ((loss_f1 > 0) & (loss_f1 < 1)).any()
    conf = rng.uniform(size=3000) * np.where(loss_exact > 0, 0.7, 1.0)  # misses are less confident
    cals = [ThresholdCalibrator(alpha=0.1, bound=f1.calibration_bound()).fit(conf, loss=v)
            for v in (loss_f1, loss_exact)]
    assert cals[0].coverage_ >= cals[1].coverage_ and cals[0].risk_upper_ <= 0.1


def test_fields_are_kept_as_spelled_and_compared_canonically() -> None:
    a = ADDR.parse('{"Number": "836", "Amount": "$1,234.50", "Due": "3 March 2026", "Unit": "KG"}', TEXT)
    assert dict(a) == {"Number": "836", "Amount": "$1,234.50", "Due": "3 March 2026", "Unit": "KG"}
    assert ADDR.to_json(a) == {"Number": "836", "Amount": 1234.5, "Due": "2026-03-03", "Unit": "kg"}
    same = ADDR.normalise({"Number": "836", "Amount": "1234.5", "Due": "2026-03-03", "Unit": "kg"})
    assert ADDR.disagreement(a, same) == 0.0
    f1 = ADDR.model_copy(update={"loss": "f1"})
    assert f1.disagreement((("Number", "836"),), (("Number", "836"), ("Street", "Majestic"))) == pytest.approx(1 / 3)
    with pytest.raises(AnswerError, match="not one of"):
        ADDR.parse('{"Unit": "Ship"}', TEXT)
    with pytest.raises(AnswerError, match="does not match"):
        ADDR.parse('{"Number": "Ship"}', TEXT)


def test_required_fields_must_be_there() -> None:
    t = ExtractTask(instructions="x", fields={"Zip": {"required": True}, "City": ""})
    with pytest.raises(AnswerError, match=r"required field\(s\) \['Zip'\] missing"):
        t.normalise({"City": "Dover"})


def test_extract_metrics_per_field() -> None:
    gold = [(("Number", "1"), ("Street", "Main")), (("Number", "2"),)]
    m = ADDR.metrics([(("Number", "1"), ("Street", "Oak")), None], gold)
    assert m["exact_match"] == 0.0 and m["f1.Number"] == pytest.approx(2 / 3) and m["f1.Street"] == 0.0


def test_one_of_fields_or_entities() -> None:
    with pytest.raises(ValueError, match="not both"):
        ExtractTask(instructions="x", fields={"a": ""}, entities={"ORG": ""})


def test_report_pieces_of_each_kind() -> None:
    assert ML.pairs(("net",), ("net", "web")) == [("net", "net"), ("web", "(none)")]
    assert ADDR.parts((("Number", "1"), ("Zip", "52314"))) == ["Number", "Zip"]
    assert ADDR.pairs((("Number", "1"),), (("Number", "2"), ("Zip", "1"))) == [("Number", "(none)"), ("Zip", "(none)")]
    assert ORGS.parts((("Acme", "ORG"), ("Bo", "PER"))) == ["ORG", "PER"]


# -- config templates --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,cls", [("classify", "ClassifyTask"), ("multilabel", "MultiLabelTask"),
                                      ("extract", "ExtractTask")])
def test_init_templates_load(tmp_path: Path, kind: str, cls: str) -> None:
    cfg = load_config(write_template(tmp_path / "d.yaml", kind=kind))
    assert [type(t).__name__ for t in cfg.tasks.values()] == [cls]


def test_a_task_without_kind_is_classify() -> None:
    c = Config.model_validate({"teachers": {"default": {"base_url": "http://x/v1", "model": "m"}},
                               "tasks": {"t": {"instructions": "x", "labels": {"a": "", "b": ""}}}})
    assert c.tasks["t"].kind == "classify"


# -- files ----------------------------------------------------------------------------------------------
def test_structured_answers_in_and_out_of_files(tmp_path: Path) -> None:
    p = tmp_path / "d.jsonl.gz"
    with gzip.open(p, "wt") as fh:
        fh.write(json.dumps({"text": "a", "fields": {"Number": "1"}}) + "\n")
        fh.write(json.dumps({"text": "b", "fields": {}}) + "\n")  # nothing found: still an answer
    data = read_texts(p, label_col="fields")
    assert decode_answers(ADDR, data.labels, data.rows, str(p)) == [(("Number", "1"),), ()]
    out = write_rows(tmp_path / "o.csv", [{"row": 1, "fields": {"Number": 1}}])
    assert '"{""Number"": 1}"' in out.read_text()


# -- the replay teacher ----------------------------------------------------------------------------------
def test_replay_content_and_noise_per_kind() -> None:
    assert content_for("billing", json_mode=False) == "billing"
    assert json.loads(content_for("billing", json_mode=True)) == {"label": "billing"}
    assert json.loads(content_for('["net"]', json_mode=False)) == {"labels": ["net"]}
    assert json.loads(content_for('{"Zip": "1"}', json_mode=True)) == {"Zip": "1"}
    assert json.loads(content_for('[{"text": "Acme", "type": "ORG"}]', json_mode=True)) == {
        "entities": [{"text": "Acme", "type": "ORG"}]}
    vocab = vocabulary(['["net"]', '["web", "db"]'])
    assert vocab == ["db", "net", "web"]
    for seed in range(20):
        rng = random.Random(seed)
        assert noisy('["net", "web"]', "t", rng, vocab) != '["net", "web"]'
        bad = json.loads(noisy('{"Number": "836", "Street": "Majestic Ridge"}', TEXT, rng, vocab))
        assert bad != {"Number": "836", "Street": "Majestic Ridge"}


def test_replay_serves_structured_answers_over_http() -> None:
    records = {TEXT: json.dumps({"Number": "836", "Zip": "52314"}), "x": json.dumps(["net"])}
    with ReplayServer(records) as srv:
        body = {"model": "m", "messages": [{"role": "system", "content": "s"}, {"role": "user", "content": TEXT}],
                "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": ADDR.answer_schema()}}}
        r = httpx.post(f"{srv.base_url}/chat/completions", json=body, timeout=10).json()
        assert ADDR.parse(r["choices"][0]["message"]["content"], TEXT) == (("Number", "836"), ("Zip", "52314"))
        body["messages"][1]["content"] = "x"
        r = httpx.post(f"{srv.base_url}/chat/completions", json=body, timeout=10).json()
        assert ML.parse(r["choices"][0]["message"]["content"]) == ("net",)


# -- the report works for every kind ------------------------------------------------------------------
def test_report_counts_labels_and_fields_of_structured_answers(tmp_path: Path) -> None:
    from downsize.audit import AuditRecord
    from downsize.report import build_report, render_html, render_text
    from downsize.store import Store

    cfg = Config.model_validate({
        "store": f"sqlite:///{tmp_path / 'ds.db'}",
        "teachers": {"default": {"base_url": "http://127.0.0.1:9/v1", "model": "m", "price_per_1m_input": 2.5}},
        "tasks": {"tags": ML.model_dump(exclude={"kind"}) | {"kind": "multilabel"},
                  "addr": ADDR.model_dump(exclude={"kind"}) | {"kind": "extract"}}})
    rows = []
    for i in range(40):
        s, t = ML.encode(("net",)), ML.encode(("net", "web") if i % 4 == 0 else ("net",))
        by = "teacher" if i % 4 == 0 else "student"
        rows.append(AuditRecord(request_id=f"m{i}", task="tags", model="downsize/tags", input_hash=str(i), answered_by=by,
                                latency_ms=1.0, answer=t if by == "teacher" else s, student_label=s,
                                teacher_label=t if by == "teacher" else None, confidence=0.9).row())
        a = ADDR.encode((("Number", "1"), ("Zip", "52314")))
        rows.append(AuditRecord(request_id=f"a{i}", task="addr", model="downsize/addr", input_hash=str(i),
                                answered_by="student", latency_ms=1.0, answer=a, student_label=a, confidence=0.9).row())
    with Store(cfg.store_url()) as store:
        store.log_requests(rows)
        rep = build_report(store, cfg)
    tags = {r["label"]: r for r in rep["tasks"]["tags"]["label_escalation"]}
    assert tags["net"]["n"] == 40 and tags["web"]["n"] == 10 and tags["web"]["rate"] == 1.0
    assert {r["label"] for r in rep["tasks"]["addr"]["label_escalation"]} == {"Number", "Zip"}
    conf = rep["tasks"]["tags"]["confusion"]
    assert "web" in conf["labels"] and "(none)" in conf["labels"]
    render_html(rep)
    render_text(rep)
