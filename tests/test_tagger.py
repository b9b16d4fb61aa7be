"""The extraction student: tokens and alignment, decoding, the CRF, confidence, persistence."""

from __future__ import annotations

import gzip
import os
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from downsize.students.tagger.crf import LinearChain
from downsize.students.tagger.features import item_attrs, token_keys
from downsize.students.tagger.inference import decode_batch
from downsize.students.tagger.align import align_entities, align_fields
from downsize.students.tagger.spans import (
    EdgeRule,
    decode_entities,
    decode_fields,
    normalise_record,
    tokenize,
)
from downsize.students.tagger import TaggerStudent, same_answer
from downsize.errors import CorruptArtifactError, NotFittedError, StudentError

DATA = Path(__file__).resolve().parent / "data"


def _rows(name: str) -> list[dict]:
    with gzip.open(DATA / f"{name}-sample.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def addresses() -> list[dict]:
    return _rows("us_addresses")


@pytest.fixture(scope="module")
def names() -> list[dict]:
    return _rows("person_names")


@pytest.fixture(scope="module")
def fitted(addresses) -> tuple[TaggerStudent, list[dict]]:
    train, held = addresses[:350], addresses[350:]
    s = TaggerStudent(confidence_cv=3, max_iterations=60)
    s.fit([r["text"] for r in train], [r["fields"] for r in train])
    return s, held


# -- tokens and alignment ---------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab1 .,#&-'\n(")), max_size=40))
def test_tokens_cover_every_non_space_character_once(text):
    toks = tokenize(text)
    covered = [c for t in toks for c in range(t.start, t.end)]
    assert covered == sorted(set(covered))
    assert {i for i, c in enumerate(text) if not c.isspace()} == set(covered)
    for t in toks:
        assert text[t.start : t.end] == t.text and t.start <= t.core_start < t.core_end <= t.end


@pytest.mark.parametrize("name", ["us_addresses", "person_names"])
def test_alignment_round_trips_and_matches_the_gold_spans(name):
    rows = _rows(name)
    aligned = [(r, tokenize(r["text"])) for r in rows]
    aligned = [(r, tk, align_fields(r["text"], tk, r["fields"])) for r, tk in aligned]
    rule = EdgeRule.learn(e for _, _, a in aligned for e in a.edges)
    for r, tk, a in aligned:
        assert a.missing == []
        assert normalise_record(decode_fields(r["text"], tk, a.tags, rule)) == normalise_record(r["fields"])
        first = {}
        for s, _, f in r["spans"]:  # spans are only used to check where the values were put
            first.setdefault(f, s)
        for f, ((i, j),) in a.spans.items():
            assert rule.value_range(tk[i], tk[j]) == (first[f], first[f] + len(r["fields"][f]))


def test_alignment_tolerates_case_space_and_punctuation():
    text = "P.O. Box 12,  Springfield IL"
    tk = tokenize(text)
    a = align_fields(text, tk, {"BoxType": "po box", "BoxID": "12", "City": "SPRINGFIELD"})
    assert a.missing == []
    assert decode_fields(text, tk, a.tags, EdgeRule(trailing={".": True})) == {
        "BoxType": "P.O. Box", "BoxID": "12", "City": "Springfield"}


def test_values_not_in_the_text_are_reported_not_raised():
    text = "Ann Lee"
    a = align_fields(text, tokenize(text), {"GivenName": "Ann", "Surname": "Smith", "Empty": ""})
    assert a.missing == [("Surname", "Smith", "not found")]
    assert a.tags == ["GivenName", "O"]
    e = align_entities(text, tokenize(text), [("Bob", "PER"), ("Ann Lee", "PER")])
    assert e.missing == [("PER", "Bob", "not found")] and e.tags == ["B-PER", "I-PER"]


def test_a_field_in_two_places_spans_from_first_to_last():
    text = "judith & ceasar gianasi"
    tk = tokenize(text)
    rec = {"GivenName": "judith & ceasar", "And": "&", "Surname": "gianasi"}
    a = align_fields(text, tk, rec)
    assert a.tags == ["GivenName", "And", "GivenName", "Surname"]
    assert decode_fields(text, tk, a.tags) == rec


def test_entities_round_trip_and_stay_apart():
    text = "Paris and Rome met Paris."
    tk = tokenize(text)
    a = align_entities(text, tk, [{"text": "Paris", "type": "LOC"}, ("rome", "LOC")])
    assert a.tags == ["B-LOC", "O", "B-LOC", "O", "B-LOC"]
    assert decode_entities(text, tk, a.tags) == [("Paris", "LOC"), ("Rome", "LOC")]
    assert decode_entities(text, tk, ["B-LOC", "B-LOC", "I-LOC", "O", "O"]) == [
        ("Paris", "LOC"), ("and Rome", "LOC")]


# -- the CRF ---------------------------------------------------------------------------------
def test_inference_agrees_with_crfsuites_own_tagger(fitted):
    import pycrfsuite

    s, held = fitted
    tagger = pycrfsuite.Tagger()
    tagger.open_inmemory(s.model_bytes_)
    decoded = decode_batch(s.chain_, [r["text"] for r in held], s.edge_rule_, "fields")
    for r, d in zip(held, decoded):
        tags = tagger.tag(item_attrs(token_keys(tokenize(r["text"]))))
        assert tags == d.tags
        # the record's probability sums over paths: at least the path's (weights print to 6 dp)
        assert np.exp(d.log_p) >= tagger.probability(tags) - 1e-4


def test_log_partition_is_the_sum_over_all_paths():
    rng = np.random.default_rng(0)
    L, T = 3, 4
    chain = LinearChain(["A", "B", "O"], {}, rng.normal(size=(L, L)))
    E = rng.normal(size=(1, T, L))
    import itertools

    scores = [sum(E[0, t, y[t]] for t in range(T)) + sum(chain.transitions[y[t - 1], y[t]] for t in range(1, T))
              for y in itertools.product(range(L), repeat=T)]
    assert np.isclose(chain.log_partition(E, np.array([T]))[0], np.log(np.sum(np.exp(scores))))
    mask = np.ones((1, T, L), dtype=bool)
    mask[0, :, 2] = False
    allowed = [s for s, y in zip(scores, itertools.product(range(L), repeat=T)) if 2 not in y]
    assert np.isclose(chain.log_partition(E, np.array([T]), mask)[0], np.log(np.sum(np.exp(allowed))))
    mu, logz = chain.marginals(E, np.array([T]))
    assert np.allclose(mu.sum(2), 1.0) and np.isclose(logz[0], np.log(np.sum(np.exp(scores))))


# -- the student -----------------------------------------------------------------------------
def test_confidence_ranks_the_errors(fitted):
    from sklearn.metrics import roc_auc_score

    s, held = fitted
    pred, conf = s.predict_with_confidence([r["text"] for r in held])
    ok = np.array([same_answer(p, r["fields"]) for p, r in zip(pred, held)])
    assert 0.4 < ok.mean() < 1.0
    assert ((conf >= 0) & (conf <= 1)).all()
    assert roc_auc_score(ok, conf) > 0.7
    top = np.argsort(-conf)[: len(conf) // 4]
    assert ok[top].mean() > ok.mean() + 0.1  # the most confident quarter is clearly better


def test_field_confidences_are_probabilities_of_the_predicted_values(fitted):
    s, held = fitted
    texts = [r["text"] for r in held[:30]]
    pred = s.predict(texts)
    per_field = s.predict_field_confidence(texts)
    answer_p = np.exp([d.log_p for d in s._decode(texts)])
    for p, fc, ap in zip(pred, per_field, answer_p):
        assert set(fc) == set(p)
        assert all(ap - 1e-9 <= v <= 1 + 1e-9 for v in fc.values())  # a record needs all its fields


def test_it_learns_to_say_nothing_here():
    texts = ["call me at 5 pm", "see you soon", "order 12 boxes of tea", "ship 3 crates of rice"] * 8
    answers = [{} if "order" not in t and "ship" not in t else
               {"Qty": t.split()[1], "Item": t.split()[-1]} for t in texts]
    s = TaggerStudent(confidence="answer").fit(texts, answers)
    pred, conf = s.predict_with_confidence(["see you at 5 pm", "order 7 boxes of coffee", ""])
    assert pred == [{}, {"Qty": "7", "Item": "coffee"}, {}]
    assert conf[0] > 0.5 and conf[2] == 1.0


def test_validators_lower_the_confidence_of_bad_values(addresses):
    rows = addresses[:120]
    checks = {"ZipCode": {"type": "string", "pattern": r"\d{5}(-\d{4})?"},
              "AddressNumber": {"type": "number"}, "StateName": {"required": True}}
    s = TaggerStudent(confidence="answer", fields=checks, max_iterations=50)
    s.fit([r["text"] for r in rows], [r["fields"] for r in rows])
    texts = ["12 Main St Springfield IL 62701", "12 Main St Springfield IL 6270x", "12 Main St Springfield"]
    pred, conf = s.predict_with_confidence(texts)
    assert s.validation_problems(pred[0]) == [] and conf[0] > 0
    for p, c in zip(pred[1:], conf[1:]):
        assert s.validation_problems(p) and c == 0.0
    with pytest.raises(StudentError, match="ZipCode.*type"):
        TaggerStudent(fields={"ZipCode": {"type": "zip"}}).fit(["a"], [{}])


def test_entities_target(addresses):
    # mentions: each contiguous run of one field in the gold spans, typed by the field
    rows = addresses[:200]
    mentions = []
    for r in rows:
        m, prev = [], None
        for s, e, f in r["spans"]:
            if f == prev:
                m[-1] = (m[-1][0], e, f)
            else:
                m.append((s, e, f))
            prev = f
        mentions.append([(r["text"][s:e].rstrip(","), f) for s, e, f in m])
    s = TaggerStudent(target="entities", confidence_cv=3, max_iterations=30)
    s.fit([r["text"] for r in rows[:150]], mentions[:150])
    pred, conf = s.predict_with_confidence([r["text"] for r in rows[150:]])
    ok = np.array([same_answer(p, m) for p, m in zip(pred, mentions[150:])])
    assert all(isinstance(p, list) for p in pred) and ok.mean() > 0.3
    assert conf[ok].mean() > conf[~ok].mean()


def test_bad_input_is_named():
    with pytest.raises(StudentError, match=r"y\[1\]\['A'\] is int"):
        TaggerStudent().fit(["a b", "c d"], [{"A": "a"}, {"A": 3}])
    with pytest.raises(StudentError, match="2 texts but y has 1"):
        TaggerStudent().fit(["a", "b"], [{}])
    with pytest.raises(StudentError, match="none of the 2 records"):
        TaggerStudent().fit(["a", "b"], [{"A": "z"}, {"A": "y"}])
    with pytest.raises(NotFittedError):
        TaggerStudent().predict(["a"])


def test_unplaced_values_are_counted_and_left_out(names):
    rows = names[:80]
    answers = [dict(r["fields"]) for r in rows]
    answers[3]["Surname"] = "Nobody-In-This-Text"
    s = TaggerStudent(confidence="answer", max_iterations=30).fit([r["text"] for r in rows], answers)
    assert s.alignment_["unplaced"] == 1 and s.alignment_["records_left_out"] == 1
    assert s.unplaced_[0][:3] == (3, "Surname", "Nobody-In-This-Text") and s.n_train_ == 79


# -- persistence -----------------------------------------------------------------------------
def test_save_load_round_trip_without_pickle(fitted, tmp_path):
    s, held = fitted
    texts = [r["text"] for r in held[:50]]
    path = s.save(tmp_path / "tagger")
    assert sorted(p.name for p in path.iterdir()) == ["manifest.json", "model.crfsuite", "tagger.json"]
    for p in path.iterdir():
        assert not p.read_bytes().startswith(b"\x80")  # no pickle protocol header anywhere
    loaded = TaggerStudent.load(path)
    a, ca = s.predict_with_confidence(texts)
    b, cb = loaded.predict_with_confidence(texts)
    assert a == b and np.allclose(ca, cb)
    assert loaded.get_params() == s.get_params() and loaded.labels_ == s.labels_


@pytest.mark.parametrize("victim", ["model.crfsuite", "tagger.json"])
def test_a_corrupted_file_is_refused_by_name(fitted, tmp_path, victim):
    s, _ = fitted
    path = s.save(tmp_path / "tagger")
    f = path / victim
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(CorruptArtifactError, match=victim):
        TaggerStudent.load(path)


def test_out_of_fold_confidences_come_with_the_fit(fitted):
    s, held = fitted
    assert s.confidence_ == "stacked"
    assert s.oof_confidence_.shape == s.oof_correct_.shape == (350,)
    assert np.isclose(s.oof_correct_.mean(), s.oof_accuracy_)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(s.oof_correct_, s.oof_confidence_) > 0.7


def test_batching_does_not_change_answers(fitted):
    s, held = fitted
    texts = [r["text"] for r in held[:40]] + [" ".join(r["text"] for r in held[:150])]  # one long text
    batch, conf = s.predict_with_confidence(texts)
    for t, a, c in zip(texts, batch, conf):
        one, c1 = s.predict_with_confidence([t])
        assert one[0] == a and np.isclose(c1[0], c)


def test_fits_in_worker_processes_give_the_same_model(fitted, addresses):
    """The fold CRFs and the final one train in processes (crfsuite holds the GIL): same models."""
    s, held = fitted
    train = addresses[:350]
    p = TaggerStudent(confidence_cv=3, max_iterations=60, n_jobs=2)
    p.fit([r["text"] for r in train], [r["fields"] for r in train])
    assert p.model_bytes_ == s.model_bytes_
    np.testing.assert_array_equal(p.oof_confidence_, s.oof_confidence_)
    texts = [r["text"] for r in held]
    np.testing.assert_array_equal(p.predict_confidence(texts), s.predict_confidence(texts))


def test_worker_count_follows_n_jobs_and_the_size_of_the_fits():
    from downsize.students.tagger.train import PARALLEL_MIN_RECORDS, resolve_jobs

    small = [([[["w"]]] * 10, [["O"]] * 10)] * 4
    big = [([[["w"]]] * PARALLEL_MIN_RECORDS, [["O"]] * PARALLEL_MIN_RECORDS)] * 4
    assert resolve_jobs(None, small) == 1
    assert resolve_jobs(None, big) == min(4, os.cpu_count() or 1)
    assert resolve_jobs(1, big) == 1
    assert resolve_jobs(8, small[:2]) == 2  # never more workers than fits
    assert resolve_jobs(-1, big) == min(4, os.cpu_count() or 1)
    with pytest.raises(StudentError, match="n_jobs"):
        TaggerStudent(n_jobs=0).fit(["1 Main St"], [{"Number": "1"}])
