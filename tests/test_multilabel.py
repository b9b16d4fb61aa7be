"""The multi-label student: decoding, the stacked confidence, the sklearn contract, persistence."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from downsize.errors import CorruptArtifactError, NotFittedError, StudentError
from downsize.students import (
    FAMILIES,
    STUDENTS,
    MultiLabelStudent,
    load_student,
    make_student,
    minilm_available,
)
from downsize.students.multilabel.decode import StackedConfidence, decode, describe, row_f1, set_lookup
from downsize.tasks.multilabel import set_f1

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def debtags() -> list[dict]:
    with gzip.open(DATA / "debtags-sample.jsonl.gz", "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.fixture(scope="module")
def fitted(debtags) -> tuple[MultiLabelStudent, list[dict]]:
    train, held = debtags[:450], debtags[450:]
    labels = sorted({x for r in debtags for x in r["labels"]})
    st = MultiLabelStudent(labels=labels, calibration_cv=3, max_labels=4)
    st.fit([r["text"] for r in train], [r["labels"] for r in train])
    return st, held


# -- decoding -------------------------------------------------------------------------------------
def test_exact_decoding_is_the_independent_mode_cut_to_max_labels() -> None:
    P = np.array([[0.9, 0.6, 0.4, 0.1], [0.2, 0.1, 0.3, 0.05], [0.9, 0.8, 0.7, 0.6]])
    M = decode(P, "exact", max_labels=None, allow_empty=True)
    assert M.tolist() == [[True, True, False, False], [False] * 4, [True] * 4]
    M = decode(P, "exact", max_labels=2, allow_empty=False)
    assert M.tolist() == [[True, True, False, False], [False, False, True, False], [True, True, False, False]]


def test_f1_decoding_maximises_the_plug_in_expected_f1() -> None:
    rng = np.random.default_rng(0)
    P = rng.uniform(0, 1, size=(200, 6)) ** 3
    M = decode(P, "f1", max_labels=None, allow_empty=False)
    for p, m in zip(P, M):
        order = np.argsort(-p)
        value = [2 * p[order[:k]].sum() / (k + p.sum()) for k in range(7)]
        assert m.sum() >= 1 and value[int(m.sum())] == pytest.approx(max(value[1:]))
        assert set(np.flatnonzero(m)) == set(order[: m.sum()])  # a prefix of the most probable


def test_f1_decoding_says_nothing_applies_only_when_allowed_and_likely() -> None:
    P = np.array([[0.02, 0.01, 0.03], [0.9, 0.01, 0.03]])
    assert decode(P, "f1", max_labels=None, allow_empty=True).sum(1).tolist() == [0, 1]
    assert decode(P, "f1", max_labels=None, allow_empty=False).sum(1).tolist() == [1, 1]


def test_row_f1_matches_the_kinds_set_f1() -> None:
    rng = np.random.default_rng(1)
    M, Y = rng.random((300, 5)) < 0.3, rng.random((300, 5)) < 0.3
    for m, y, f in zip(M, Y, row_f1(M, Y)):
        assert f == pytest.approx(set_f1(list(np.flatnonzero(m).astype(str)), list(np.flatnonzero(y).astype(str))))


def test_the_stacked_confidence_fits_fractional_targets_and_round_trips() -> None:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 15))
    t = 1 / (1 + np.exp(-2 * X[:, 0]))
    sc = StackedConfidence.fit(X, t)
    assert np.corrcoef(sc.predict(X), t)[0, 1] > 0.95
    again = StackedConfidence.from_json(json.loads(json.dumps(sc.to_json())))
    assert np.allclose(again.predict(X), sc.predict(X))
    with pytest.raises(ValueError, match="descriptors"):
        StackedConfidence.from_json({**sc.to_json(), "descriptors": ["x"]})


def test_descriptors_are_finite_for_empty_and_full_sets() -> None:
    P = np.array([[0.99, 0.98], [0.01, 0.02], [0.5, 0.5]])
    M = np.array([[True, True], [False, False], [True, False]])
    D = describe(P, M, set_lookup({"0,1": 3}, 2), np.array([5, 7]), 10)
    assert np.isfinite(D).all() and D[0, -3] == pytest.approx(np.log1p(3))


def test_set_lookup_counts_the_same_sets_as_their_string_keys() -> None:
    """The packed-bytes keys find exactly the training sets (empty set, sets past 8 labels and
    sets differing only in their last label included)."""
    from downsize.students.multilabel.decode import packed_sets, set_key

    rng = np.random.default_rng(1)
    Y = rng.random((300, 19)) < 0.15
    Y[:5] = False
    Y[5, 18] = Y[6, 17] = True
    counts: dict[str, int] = {}
    for r in Y:
        counts[set_key(np.flatnonzero(r))] = counts.get(set_key(np.flatnonzero(r)), 0) + 1
    lookup = set_lookup(counts, 19)
    M = np.vstack([Y[::3], rng.random((50, 19)) < 0.15])
    assert [lookup.get(k, 0) for k in packed_sets(M)] == [counts.get(set_key(np.flatnonzero(r)), 0) for r in M]


# -- the student on real debtags ------------------------------------------------------------------
def test_answers_are_label_sets_of_the_task_within_max_labels(fitted) -> None:
    st, held = fitted
    texts = [r["text"] for r in held]
    for loss in ("exact", "f1"):
        answers, conf = st.predict_with_confidence(texts, loss=loss)
        assert len(answers) == len(conf) == len(held)
        assert all(isinstance(a, tuple) and list(a) == sorted(set(a)) and 1 <= len(a) <= 4 for a in answers)
        assert {x for a in answers for x in a} <= set(st.classes_) - set(st.dropped_labels_)
        assert ((conf > 0) & (conf < 1)).all()
    assert not st.allow_empty_  # no debtags answer is empty, so the student never says "none"
    P = st.predict_proba(texts)
    assert P.shape == (len(held), len(st.classes_)) and ((P >= 0) & (P <= 1)).all()


def test_the_record_confidence_ranks_right_answers_above_wrong_ones(fitted) -> None:
    st, held = fitted
    texts, gold = [r["text"] for r in held], [tuple(sorted(r["labels"])) for r in held]
    answers, conf = st.predict_with_confidence(texts, loss="exact")
    right = np.array([a == g for a, g in zip(answers, gold)])
    assert 0 < right.sum() < len(right) and conf[right].mean() > conf[~right].mean() + 0.1
    answers, conf = st.predict_with_confidence(texts, loss="f1")
    f1 = np.array([set_f1(a, g) for a, g in zip(answers, gold)])
    top = conf >= np.median(conf)
    assert f1[top].mean() > f1[~top].mean() + 0.1


def test_rare_labels_get_no_head_and_are_listed(fitted) -> None:
    st, _ = fitted
    counts = dict(zip(st.classes_, st.label_counts_))
    assert st.dropped_labels_ == [lab for lab in st.classes_ if counts[lab] < 5]
    assert len(st.dropped_labels_) > 0


def test_save_load_round_trip_without_pickle(fitted, tmp_path) -> None:
    st, held = fitted
    texts = [r["text"] for r in held]
    st.save(tmp_path / "s")
    again = load_student(tmp_path / "s")
    assert isinstance(again, MultiLabelStudent) and list(again.classes_) == list(st.classes_)
    for loss in ("exact", "f1"):
        a1, c1 = st.predict_with_confidence(texts, loss=loss)
        a2, c2 = again.predict_with_confidence(texts, loss=loss)
        assert a1 == a2 and np.allclose(c1, c2)
    assert again.size_bytes() == st.size_bytes_ > 0
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    assert manifest["name"] == "multilabel" and "cache_dir" not in manifest["params"]
    (tmp_path / "s" / "heads.npz").write_bytes(b"garbage")
    with pytest.raises(CorruptArtifactError, match="heads.npz"):
        load_student(tmp_path / "s")


def test_empty_answers_are_learned_when_the_training_data_has_them() -> None:
    X = [f"{w} item {i}" for i in range(10) for w in ("apple", "pear", "nothing")]
    y = [s for _ in range(10) for s in (["fruit", "red"], ["fruit"], [])]
    st = MultiLabelStudent(min_df=1, char_ngrams=None, calibration_cv=3).fit(X, y)
    assert st.allow_empty_
    assert st.predict(["nothing item 3", "apple item 4"], loss="f1") == [(), ("fruit", "red")]
    assert st.predict(["nothing item 3"], loss="exact") == [()]


# -- the contract and bad input -------------------------------------------------------------------
def test_registered_for_the_multilabel_kind() -> None:
    assert STUDENTS["multilabel"] is MultiLabelStudent
    assert FAMILIES[("multilabel", "tfidf")][0] is MultiLabelStudent
    st = make_student("minilm" if minilm_available() else "tfidf", task_kind="multilabel", labels=["a", "b"])
    assert isinstance(st, MultiLabelStudent) and st.labels == ["a", "b"]
    assert clone(st).get_params() == st.get_params()


@pytest.mark.parametrize(("y", "match"), [
    ("ab", "not a string"),
    ([["a"], "b"] * 6, r"y\[1\] is str"),
    ([["a"], ["zzz"]] * 6, r"y\[1\] holds 'zzz'"),
    ([["a"]] * 11, "11 label sets"),
])
def test_bad_label_sets_are_refused_with_the_row(y, match) -> None:
    X = [f"text {i}" for i in range(12)]
    with pytest.raises(StudentError, match=match):
        MultiLabelStudent(labels=["a", "b"], min_df=1).fit(X, y)


def test_too_few_examples_and_bad_parameters() -> None:
    X = [f"text {i}" for i in range(12)]
    with pytest.raises(StudentError, match="no label has min_examples_per_label=5"):
        MultiLabelStudent(min_df=1).fit(X, [["a"]] * 3 + [[]] * 9)
    with pytest.raises(StudentError, match="invalid parameter loss"):
        MultiLabelStudent(loss="hamming").fit(X, [["a"]] * 12)
    with pytest.raises(NotFittedError):
        MultiLabelStudent().predict(["x"])


@pytest.mark.skipif(not minilm_available(), reason="needs the [minilm] extra")
def test_minilm_features(debtags, tmp_path) -> None:
    train, held = debtags[:200], debtags[500:540]
    st = make_student("minilm", task_kind="multilabel", calibration_cv=2)
    st.fit([r["text"] for r in train], [r["labels"] for r in train])
    answers, _ = st.predict_with_confidence([r["text"] for r in held], loss="f1")
    f1 = np.mean([set_f1(a, r["labels"]) for a, r in zip(answers, held)])
    assert f1 > 0.3
    again = load_student(st.save(tmp_path / "m"))
    assert again.predict_with_confidence([r["text"] for r in held], loss="f1")[0] == answers


def test_neighbours_are_the_most_similar_training_texts(debtags):
    """The sparse top-k equals a brute-force ranking of the dense cosine matrix wherever the
    k-th neighbour shares a term (below that, zero-similarity padding), self excluded in training."""
    from downsize.students.multilabel.neighbours import Neighbours

    texts = [r["text"] for r in debtags]
    Y = np.zeros((len(texts), 3), dtype=bool)
    nb = Neighbours(k=5, max_df=0.2).fit(texts[:300], Y[:300])
    for query, training in ((texts[300:], False), (texts[:300], True)):
        idx, sim = nb.query(None if training else query, training=training)
        B = nb.A if training else nb.vectorizer.transform(query)
        G = (B @ nb.A.T).toarray()
        if training:
            np.fill_diagonal(G, -1.0)
        best = -np.sort(-G, axis=1)[:, :5]
        full = best[:, -1] > 0
        assert full.mean() > 0.5  # the check covers most rows
        np.testing.assert_allclose(sim[full], best[full], rtol=1e-6)
        np.testing.assert_allclose(np.take_along_axis(G, idx, 1)[full], best[full], rtol=1e-6)
        assert np.all(np.diff(sim, axis=1) <= 0) and np.all(sim >= 0)
        nz = (sim > 0).sum(1)
        assert np.array_equal(nz, np.minimum((np.maximum(G, 0) > 0).sum(1), 5))


def test_neighbour_vectors_from_the_features_equal_their_own_vectoriser(fitted, tmp_path):
    """Predicting reuses the features' word TF-IDF rows for the neighbour index instead of
    tokenising the texts again: the vectors (and so the confidences) are the vectoriser's own,
    after a save/load too; an index term missing from the features turns the shortcut off."""
    st, held = fitted
    texts = [r["text"] for r in held]
    nb = st.neighbours_
    _, words = st.features_.transform_parts(texts)
    assert nb._link is not None
    own = nb.vectorizer.transform(texts).toarray()
    np.testing.assert_allclose(nb._from_words(words).toarray(), own, rtol=1e-5, atol=1e-7)
    back = load_student(st.save(tmp_path / "ml"))
    assert back.neighbours_._link is not None
    np.testing.assert_allclose(back.confidence(texts), st.confidence(texts), rtol=1e-6)
    vocab, idf = st.features_.word_terms()
    first = nb.vocabulary()[0]
    nb.link(({t: c for t, c in vocab.items() if t != first}, idf))
    try:
        assert nb._link is None
        assert nb.query(texts, words=words)[0].shape == (len(texts), nb.k)  # its own vectoriser then
    finally:
        nb.link((vocab, idf))


def test_a_batch_answered_in_threaded_blocks_equals_one_text_at_a_time(fitted, debtags, monkeypatch):
    """A large batch is cut into blocks answered in threads: the sets and confidences are the
    ones each text gets on its own (and the blocks really ran, several of them, in order)."""
    from downsize.students import _threads

    st, _ = fitted
    texts = [r["text"] for r in debtags] * 2  # 1,200 texts: above the block-parallel threshold
    monkeypatch.setattr(_threads, "cores", lambda: 2)
    calls: list[int] = []
    answer = st._answer
    monkeypatch.setattr(st, "_answer", lambda t, loss, threads: calls.append(len(t)) or answer(t, loss, threads=threads))
    for loss in ("exact", "f1"):
        calls.clear()
        sets, conf = st.predict_with_confidence(texts, loss=loss)
        assert len(calls) >= 2 and sum(calls) == len(texts)
        one = [st.predict_with_confidence([t], loss=loss) for t in texts[:600:7]]
        assert sets[:600:7] == [s[0] for s, _ in one]
        np.testing.assert_allclose(conf[:600:7], [c[0] for _, c in one], rtol=1e-9)
        assert sets[600:] == sets[:600]
        np.testing.assert_allclose(conf[600:], conf[:600], rtol=1e-12)
