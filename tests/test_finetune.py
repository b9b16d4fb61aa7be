"""The fine-tuned MiniLM student: real fp32 weights, real torch training on a tiny real subset,
real ONNX export and int8 quantisation, served by onnxruntime in a process where torch cannot
be imported. Training tests skip (with the reason) when the [finetune] extra is absent."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from downsize.data import read_texts
from downsize.errors import CorruptArtifactError, StudentError
from downsize.students import OPT_IN, STUDENTS, FinetuneStudent, load_student, make_student
from downsize.students.batching import head_tail, length_batches, pad
from downsize.students.encoder import minilm_available
from downsize.students.finetune import finetune_available
from downsize.students.finetune._student import choose_max_length
from downsize.students.finetune.runtime import fit_temperature, parity, softmax

DATA = Path(__file__).resolve().parent / "data"
needs_finetune = pytest.mark.skipif(
    not (finetune_available() and minilm_available()),
    reason="the [finetune] extra is not installed: pip install torch==2.13.0 && pip install '.[finetune]'",
)
#: int8 against fp32 probabilities, the tolerance the docs state (README, FinetuneStudent).
PROB_TOL = 0.05
TINY = dict(max_length=32, max_epochs=1.0, eval_every=0.5, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def rt() -> dict[str, list[str]]:
    d = read_texts(DATA / "rotten_tomatoes-sample.csv.gz", label_col="label")
    return {"X": d.texts[:160], "y": d.labels[:160], "X_test": d.texts[300:600], "y_test": d.labels[300:600]}


@pytest.fixture(scope="module")
def student(rt: dict[str, list[str]]) -> FinetuneStudent:
    if not (finetune_available() and minilm_available()):
        pytest.skip("the [finetune] extra is not installed")
    return make_student("finetune", random_state=0, **TINY).fit(rt["X"], rt["y"])


# -- without torch: the pieces ------------------------------------------------------------------
def test_head_tail_keeps_both_ends_and_special_tokens() -> None:
    ids = [101, *range(1000, 1100), 102]
    cut = head_tail(ids, 18)
    assert len(cut) == 18 and cut[0] == 101 and cut[-1] == 102
    assert cut[1:13] == list(range(1000, 1012)) and cut[13:17] == list(range(1096, 1100))
    assert head_tail(ids, 18, "head") == ids[:17] + [102]
    assert head_tail([101, 5, 102], 18) == [101, 5, 102]


def test_length_batches_sort_and_bound_the_padding() -> None:
    lengths = np.array([5, 100, 7, 6, 100, 8, 50])
    batches = length_batches(lengths, batch_size=2, max_tokens=200)
    assert sorted(np.concatenate(batches).tolist()) == list(range(7))
    widths = [int(lengths[b].max()) for b in batches]
    assert widths == sorted(widths)
    assert all(len(b) * lengths[b].max() <= 200 or len(b) == 1 for b in batches)
    assert len(batches[0]) > 2  # short texts share bigger batches
    ids, mask = pad([[1, 2, 3], [4]])
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]


def test_max_length_follows_the_data_within_bounds() -> None:
    assert choose_max_length([10] * 96 + [400] * 4, 95, 128) == 16
    assert choose_max_length(list(range(1, 101)), 95, 128) == 96
    assert choose_max_length([300] * 10, 95, 128) == 128


def test_temperature_undoes_overconfidence() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(size=(4000, 3))
    y = np.array([rng.choice(3, p=p) for p in softmax(true)])
    t = fit_temperature(true * 3.0, y)  # logits three times too sharp
    assert 2.6 < t < 3.4


def test_parity_counts_flips_of_coin_tosses_apart() -> None:
    """The parity bar is judged on the texts the reference decides by the margin: a flip at
    0.52/0.48 does not count there, a flip at 0.9/0.1 does (and both count in ``same_label``)."""
    ref = np.array([[0.52, 0.48], [0.9, 0.1], [0.2, 0.8], [0.05, 0.95]])
    coin = np.array([[0.49, 0.51], [0.88, 0.12], [0.22, 0.78], [0.06, 0.94]])
    p = parity(ref, coin, margin=0.2)
    assert p["same_label"] == 0.75 and p["decided_share"] == 0.75 and p["same_label_decided"] == 1.0
    confident = np.array([[0.53, 0.47], [0.4, 0.6], [0.2, 0.8], [0.05, 0.95]])
    q = parity(ref, confident, margin=0.2)
    assert q["same_label"] == 0.75 and q["same_label_decided"] == pytest.approx(2 / 3)
    assert parity(ref, coin, margin=0.0)["same_label_decided"] == 0.75  # margin 0: every text counts


def test_registered_opt_in_and_bad_params() -> None:
    assert STUDENTS["finetune"] is FinetuneStudent and "finetune" in OPT_IN
    from downsize.tasks.classify import ClassifyTask
    from downsize.training import candidate_kinds

    task = ClassifyTask(labels={"a": "", "b": ""}, student="finetune", instructions="Classify.")
    assert "finetune" in task.students and "finetune" not in candidate_kinds(task)
    for bad in ({"max_length": 8}, {"max_epochs": 0}, {"validation_fraction": 0.9}, {"truncation": "tail"},
                {"parity_margin": 2}):
        with pytest.raises(StudentError, match=next(iter(bad))):
            FinetuneStudent(**bad).fit(["a b", "c d"] * 5, ["x", "y"] * 5)


@pytest.mark.skipif(finetune_available(), reason="torch is installed: the hint is for installs without it")
def test_without_torch_the_error_says_how_to_install() -> None:
    with pytest.raises(StudentError, match=r"torch==2\.13\.0.*\[finetune\]"):
        make_student("finetune")


# -- with torch: train, export, serve -----------------------------------------------------------
@needs_finetune
def test_int8_onnx_matches_the_torch_model(rt: dict[str, list[str]]) -> None:
    """Parity on 300 held-out texts: fp32 ONNX = torch (1e-4), int8 same label on ≥ 99.5 %
    and probabilities within PROB_TOL."""
    from downsize.students.batching import load_tokenizer
    from downsize.students.finetune.export import export_int8
    from downsize.students.finetune.runtime import OnnxClassifier, tokenize
    from downsize.students.finetune.train import TrainConfig, predict_logits, train

    tok = load_tokenizer()
    labels = sorted(set(rt["y"]))
    y = np.array([labels.index(v) for v in rt["y"]])
    rows = tokenize(tok, rt["X"], 32)
    cfg = TrainConfig(n_labels=2, batch_size=16, max_epochs=1.0, progress=False)
    model, report = train(rows[:140], y[:140], rows[140:], y[140:], cfg)
    assert report.steps == 9 and report.history and report.threads >= 1
    test_rows = tokenize(tok, rt["X_test"], 32)
    p_torch = softmax(predict_logits(model, test_rows))
    int8, fp32, notes = export_int8(model)
    assert len(int8) < len(fp32) / 3  # int8 weights
    p_fp32 = softmax(OnnxClassifier(fp32, max_length=32).logits_rows(test_rows))
    np.testing.assert_allclose(p_fp32, p_torch, atol=1e-4)
    p_int8 = softmax(OnnxClassifier(int8, max_length=32).logits_rows(test_rows))
    assert np.mean(p_int8.argmax(1) == p_torch.argmax(1)) >= 0.995
    assert np.abs(p_int8 - p_torch).max() <= PROB_TOL


@needs_finetune
def test_fit_predicts_calibrated_probabilities(student: FinetuneStudent, rt: dict[str, list[str]]) -> None:
    p = student.predict_proba(rt["X_test"])
    assert p.shape == (300, 2) and np.allclose(p.sum(1), 1.0)
    assert list(student.classes_) == ["negative", "positive"]
    assert 0.05 < student.temperature_ < 20 and student.max_length_ <= 32
    rep = student.train_report_
    assert rep["n_fit"] + rep["n_validation"] == 160 and rep["stopped"] and rep["history"]
    assert student.parity_["n"] == rep["n_validation"] and student.parity_["max_abs_diff"] <= PROB_TOL
    z = student.logits(rt["X_test"])  # probabilities are softmax(logits / T): the ranking is the model's
    assert np.array_equal(np.argsort(-z[:, 1] + z[:, 0]), np.argsort(-p[:, 1] + p[:, 0]))
    assert np.array_equal(student.predict(rt["X_test"]), student.classes_[p.argmax(1)])


@needs_finetune
def test_time_budget_keeps_the_best_state_so_far(rt: dict[str, list[str]]) -> None:
    st = make_student("finetune", **{**TINY, "max_epochs": 5.0, "max_seconds": 0.01}).fit(rt["X"], rt["y"])
    assert st.train_report_["steps"] == 1 and "time budget" in st.train_report_["stopped"]
    assert st.predict_proba(rt["X_test"][:5]).shape == (5, 2)


@needs_finetune
def test_saved_without_pickle_and_served_without_torch(
    student: FinetuneStudent, rt: dict[str, list[str]], tmp_path: Path
) -> None:
    path = student.save(tmp_path / "ft")
    manifest = json.loads((path / "manifest.json").read_text())
    assert sorted(manifest["files"]) == ["finetune.json", "model.onnx"]
    assert manifest["name"] == "finetune" and manifest["finetune"]["temperature"] == student.temperature_
    expected = student.predict_proba(rt["X_test"][:50])
    np.testing.assert_array_equal(load_student(path).predict_proba(rt["X_test"][:50]), expected)
    # a fresh interpreter in which torch and transformers cannot be imported
    code = (
        "import sys, json\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'transformers', 'onnx'):\n"
        "            raise ImportError(f'{name} is blocked in this test')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from downsize.students import load_student\n"
        "texts = json.loads(sys.stdin.read())\n"
        "proba = load_student(sys.argv[1]).predict_proba(texts).tolist()\n"
        "assert not {'torch', 'transformers'} & set(sys.modules)\n"
        "print(json.dumps(proba))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], input=json.dumps(rt["X_test"][:50]),
                         capture_output=True, text=True, check=True, timeout=120)
    np.testing.assert_allclose(np.array(json.loads(out.stdout)), expected, atol=1e-6)


@needs_finetune
def test_tampered_files_are_refused(student: FinetuneStudent, tmp_path: Path) -> None:
    path = student.save(tmp_path / "ft")
    blob = bytearray((path / "model.onnx").read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    (path / "model.onnx").write_bytes(bytes(blob))
    with pytest.raises(CorruptArtifactError, match="model.onnx"):
        load_student(path)


@pytest.mark.skipif(not minilm_available(), reason="the [minilm] extra is not installed")
def test_minilm_students_of_format_1_keep_cutting_the_head(rt: dict[str, list[str]], tmp_path: Path) -> None:
    from downsize.students.artifacts import _canonical, sha256_bytes

    st = make_student("minilm", calibration_cv=2).fit(rt["X"][:40], rt["y"][:40])
    assert st.truncation == "head_tail"
    path = st.save(tmp_path / "m")
    m = json.loads((path / "manifest.json").read_text())
    assert m["version"] == 2 and m["params"]["truncation"] == "head_tail"
    m.pop("checksum")
    m["version"] = 1
    del m["params"]["truncation"]
    m["checksum"] = sha256_bytes(_canonical(m))
    (path / "manifest.json").write_text(json.dumps(m))
    assert load_student(path).truncation == "head"


@pytest.mark.skipif(not minilm_available(), reason="the [minilm] extra is not installed")
def test_retraining_a_minilm_task_embeds_nothing_twice(rt: dict[str, list[str]], tmp_path: Path) -> None:
    """The project's embedding cache (home/cache/embeddings) outlives the process's memory cache:
    a second `train` + `calibrate` of the same labels runs the encoder on no text."""
    from downsize.config import Config
    from downsize.store import Store
    from downsize.students.minilm import _shared_encoder
    from downsize.training import calibrate_task, embedding_cache_dir, train_task

    cfg = Config.model_validate({
        "store": f"sqlite:///{tmp_path / 'd.db'}", "home": str(tmp_path / "home"),
        "teachers": {"default": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}},
        "tasks": {"rt": {"instructions": "Sentiment.", "labels": {"positive": "", "negative": ""},
                         "student": "minilm", "alpha": 0.3}},
    })
    store = Store(cfg.store_url())
    try:
        ids = store.add_examples("rt", rt["X"], source="test")
        store.add_labels("rt", list(zip(ids, rt["y"])), source="teacher")
        train_task(store, cfg, "rt")
        calibrate_task(store, cfg, "rt")
        cache = str(embedding_cache_dir(cfg.home_dir()))
        assert list(Path(cache).glob("*.sqlite"))
        assert _shared_encoder(128, 32, cache, "head_tail").n_encoded == len(rt["X"])
        _shared_encoder.cache_clear()  # as in a new process: empty memory caches
        train_task(store, cfg, "rt")
        calibrate_task(store, cfg, "rt")
        assert _shared_encoder(128, 32, cache, "head_tail").n_encoded == 0
    finally:
        store.close()


@needs_finetune
def test_int8_that_changes_answers_is_not_served(rt: dict[str, list[str]], student: FinetuneStudent,
                                                 tmp_path: Path) -> None:
    """Below the parity bar the fp32 ONNX graph serves instead: it matches torch, and says so."""
    assert student.weights_.startswith("uint8")
    st = make_student("finetune", random_state=0, max_prob_diff=0.0, **TINY).fit(rt["X"], rt["y"])
    assert st.weights_ == "float32" and "int8_parity" in st.train_report_["onnx"]
    assert st.parity_["same_label"] == 1.0 and st.parity_["max_abs_diff"] < 1e-3
    assert len(st.onnx_) > 3 * len(student.onnx_)
    st.save(tmp_path / "fp32")
    back = load_student(tmp_path / "fp32")
    assert back.weights_ == "float32"
    np.testing.assert_allclose(back.predict_proba(rt["X_test"][:20]), st.predict_proba(rt["X_test"][:20]), atol=1e-6)
