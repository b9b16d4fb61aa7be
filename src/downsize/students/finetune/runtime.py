"""Serving the fine-tuned student without torch: onnxruntime + the bundled tokenizer.

Also the temperature that calibrates its probabilities (fitted on held-out logits of the
int8 model, the one that serves) and the parity figures between two sets of probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ...errors import CorruptArtifactError, StudentError
from ..batching import head_tail, length_batches, load_tokenizer, pad

__all__ = ["OnnxClassifier", "tokenize", "fit_temperature", "softmax", "parity"]


def tokenize(tokenizer: Any, texts: Sequence[str], max_length: int, truncation: str = "head_tail") -> list[list[int]]:
    """Token ids of ``texts`` (``[CLS] … [SEP]``), cut to ``max_length`` by :func:`head_tail`."""
    return [head_tail(e.ids, max_length, truncation) for e in tokenizer.encode_batch(list(texts))]


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature T > 0 minimising the log loss of ``softmax(logits / T)`` on labels ``y``
    (Guo et al. 2017): one parameter, so the ranking of confidences, hence the cascade's
    order of answers, is unchanged; only the probabilities get honest."""
    from scipy.optimize import minimize_scalar

    y = np.asarray(y, dtype=np.int64)

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def parity(p_ref: np.ndarray, p_new: np.ndarray, margin: float = 0.0) -> dict[str, float]:
    """Same-label share and probability differences of ``p_new`` against ``p_ref``.

    ``same_label_decided`` is the same-label share on the rows that ``p_ref`` decides by at
    least ``margin`` (its top probability minus the runner-up; ``decided_share`` says how many):
    a text the reference model itself calls 0.52/0.48 is a coin toss that any perturbation may
    flip, and that no useful α answers locally."""
    p_ref, p_new = np.asarray(p_ref), np.asarray(p_new)
    diff = np.abs(p_ref - p_new)
    n = len(p_ref)
    same = p_ref.argmax(1) == p_new.argmax(1)
    top2 = np.sort(p_ref, axis=1)[:, -2:]
    decided = top2[:, -1] - top2[:, 0] >= margin
    return {
        "n": int(n),
        "same_label": float(same.mean()) if n else 1.0,
        "margin": float(margin),
        "decided_share": float(decided.mean()) if n else 1.0,
        "same_label_decided": float(same[decided].mean()) if decided.any() else 1.0,
        "max_abs_diff": float(diff.max()) if n else 0.0,
        "p99_abs_diff": float(np.percentile(diff.max(1), 99)) if n else 0.0,
        "mean_abs_diff": float(diff.mean()) if n else 0.0,
    }


class OnnxClassifier:
    """An ONNX classifier (``input_ids``, ``attention_mask`` → ``logits``) on onnxruntime.

    Texts are tokenised with the bundled MiniLM tokenizer, cut to ``max_length``, sorted by
    length and run in batches padded to their own width.
    """

    def __init__(self, onnx_bytes: bytes, *, max_length: int, truncation: str = "head_tail",
                 batch_size: int = 32, threads: int | None = None, where: str = "model.onnx") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise StudentError(
                "serving the fine-tuned student needs onnxruntime: pip install 'downsize[minilm]'"
            ) from None
        from ..encoder import _cpu_count

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads or _cpu_count())
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own, unrelated types
            raise CorruptArtifactError(f"{where}: onnxruntime cannot load it ({exc})") from None
        names = {i.name for i in self.session.get_inputs()}
        if names != {"input_ids", "attention_mask"}:
            raise CorruptArtifactError(f"{where}: inputs {sorted(names)}, expected input_ids and attention_mask")
        self.tokenizer = load_tokenizer()
        self.max_length = int(max_length)
        self.truncation = truncation
        self.batch_size = int(batch_size)

    def logits_rows(self, rows: list[list[int]]) -> np.ndarray:
        lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
        out: np.ndarray | None = None
        for idx in length_batches(lengths, self.batch_size, self.batch_size * self.max_length):
            ids, mask = pad([rows[j] for j in idx])
            z = self.session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
            if out is None:
                out = np.empty((len(rows), z.shape[1]), dtype=np.float32)
            out[idx] = z
        assert out is not None
        return out

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        return self.logits_rows(tokenize(self.tokenizer, texts, self.max_length, self.truncation))
