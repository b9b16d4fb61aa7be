"""``TaggerStudent``: a linear-chain CRF that learns a teacher's extraction answers.

See :class:`TaggerStudent`. The parts: :mod:`.spans` (tokens, decoding, answer equality),
:mod:`.align` (teacher values onto tokens), :mod:`.features` (generic token features),
:mod:`.crf` (inference on crfsuite's weights), :mod:`.inference` (answers and their
probabilities), :mod:`.confidence` (the stacked record confidence),
:mod:`.checks` (per-field checks), :mod:`.tagger_persist` (saving without pickle).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator

from ...errors import NotFittedError, StudentError
from .confidence import DESCRIPTORS, Familiarity, StackedConfidence, describe
from .crf import LinearChain
from .features import item_attrs, token_keys
from .inference import Decoded, decode_batch, field_probabilities
from .persist import load_tagger, save_tagger, tagger_state
from .align import Alignment, align_entities, align_fields
from .spans import EdgeRule, normalise_entities, normalise_record, tokenize
from .checks import parse_checks, problems
from .train import train_crfs

__all__ = ["TaggerStudent", "same_answer"]

_TARGETS = ("fields", "entities")
_CONFIDENCES = ("stacked", "answer")


def same_answer(a: Any, b: Any) -> bool:
    """Whether two answers (field records, or entity lists) are the same once normalised."""
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return normalise_record(a) == normalise_record(b)
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return False
    return normalise_entities(a) == normalise_entities(b)


def _check_texts(X: Any) -> list[str]:
    if isinstance(X, (str, bytes)):
        raise StudentError("X must be a sequence of texts, not a single string: wrap it in a list")
    try:
        texts = list(X)
    except TypeError:
        raise StudentError(f"X must be a sequence of texts, got {type(X).__name__}") from None
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise StudentError(f"X[{i}] is {type(t).__name__}, expected str")
    return texts


def _check_answers(y: Any, n: int, target: str) -> list[Any]:
    answers = list(y) if not isinstance(y, (str, bytes, Mapping)) else None
    if answers is None:
        raise StudentError("y must be a sequence with one answer per text")
    if len(answers) != n:
        raise StudentError(f"X has {n} texts but y has {len(answers)} answers")
    for i, a in enumerate(answers):
        if target == "fields":
            if not isinstance(a, Mapping):
                raise StudentError(f"y[{i}] is {type(a).__name__}; a fields answer is a dict field → value")
            for k, v in a.items():
                if v is not None and not isinstance(v, str):
                    raise StudentError(f"y[{i}][{k!r}] is {type(v).__name__}; values are strings (or None)")
        else:
            if isinstance(a, (str, bytes, Mapping)):
                raise StudentError(f"y[{i}] must be a list of (text, type) mentions")
            for m in a:
                ok = (isinstance(m, Mapping) and {"text", "type"} <= set(m)) or (
                    isinstance(m, (tuple, list)) and len(m) == 2
                )
                if not ok:
                    raise StudentError(f"y[{i}] holds {m!r}; a mention is (text, type) or {{text, type}}")
    return answers


class TaggerStudent(BaseEstimator):
    """Extract fields or entity mentions with a CRF trained on a teacher's answers.

    ``fit(texts, answers)`` aligns each teacher answer onto the text's tokens (values the text
    does not spell are counted in ``alignment_`` and the record is left out of training: a
    teacher error, not a crash), trains a linear-chain CRF with crfsuite (L-BFGS, elastic net),
    and, with ``confidence="stacked"``, learns a record confidence from out-of-fold answers
    (:mod:`downsize.students.tagger.confidence`). ``predict`` returns one answer per text: a dict
    ``{field: value}`` (absent fields omitted; a field is one value, from its first tagged
    token to its last) or a sorted list of ``(text, type)`` mentions. Values are the text's own
    characters.

    Why a CRF rather than spaCy's trainable NER: the CRF's answers carry an exact probability,
    summed over every tag sequence that gives the same record
    (:mod:`downsize.students.tagger.inference`), and the stacked confidence starts from it;
    spaCy's transition-based NER exposes no probability of an answer (its beam variant only
    approximate entity scores). Speed decides too: spaCy's packaged ``en_core_web_sm`` runs at
    ~165 docs/s on the 2-core machine (``../shared/ASSETS.md``), 30× under the 5,000
    records/s the issue asks; the CRF trains in seconds and answers thousands of records a
    second (``benchmarks/bench_extract.py`` prints train time, records/s, exact match, field
    F1 and coverage at α = 5 % and 10 % against a plain CRF). spaCy was not measured here.

    Parameters
    ----------
    target : {"fields", "entities"}, default="fields"
        What an answer is: a record of named fields, or a list of entity mentions.
    c1, c2 : float, default=0.1, 0.1
        L1 and L2 penalties of the CRF (crfsuite's ``c1``, ``c2``).
    max_iterations : int, default=200
        L-BFGS iterations.
    confidence : {"stacked", "answer"}, default="stacked"
        ``"answer"``: the CRF's probability of the decoded answer. ``"stacked"``: a logistic
        regression on out-of-fold answers (falls back to ``"answer"`` when the training data
        has fewer than ``4 * confidence_cv`` records or its out-of-fold answers are all right
        or all wrong; ``confidence_`` says which was used).
    confidence_cv : int, default=5
        Folds for the stacked confidence (the CRF is trained ``confidence_cv + 1`` times).
    fields : dict or None, default=None
        Per-field checks, ``{field: {"type": "string"|"number"|"date"|"enum", "values": [...],
        "pattern": regex, "required": bool}}`` (see :mod:`downsize.students.tagger.checks`).
    invalid_factor : float, default=0.0
        A record failing a check has its confidence multiplied by this (0: the teacher answers).
    random_state : int, default=0
        Seeds the fold split.
    n_jobs : int or None, default=None
        Processes for the ``confidence_cv + 1`` CRF fits (crfsuite holds the GIL, so not
        threads): ``-1`` every core; ``None`` every core when the fits hold ≥ 2,000 records in
        all, one otherwise (:mod:`downsize.students.tagger.train`). The models do not depend on it.

    Attributes
    ----------
    labels_ : list of str
        Field names (or entity types) the tagger can answer.
    alignment_ : dict
        ``records``, ``values``, ``unplaced`` (values not found or in conflict),
        ``records_left_out`` (records with an unplaced value, not trained on).
    unplaced_ : list of (int, str, str, str)
        ``(row, field, value, reason)`` of the first 100 unplaced values.
    edge_rule_ : EdgeRule
        Glued punctuation kept at value ends.
    confidence_ : str
        ``"stacked"`` or ``"answer"``: what ``predict_confidence`` returns.
    oof_accuracy_ : float or None
        Share of out-of-fold answers equal to the teacher's (``"stacked"`` only).
    oof_confidence_, oof_correct_ : ndarray of shape (n_records,)
        With ``confidence_ == "stacked"``: each training record's confidence from a tagger and
        a regression that never saw its fold, and whether that answer was the teacher's. A
        calibration set as large as the training data (cross-fitted calibration), at no
        extra training. Not saved.
    n_train_ : int
        Records the CRF was trained on.
    train_seconds_ : float

    Examples
    --------
    >>> texts = ["12 Main St Springfield", "7 Oak Ave Dover", "3 Elm St Salem"] * 10
    >>> answers = [{"Number": t.split()[0], "Street": " ".join(t.split()[1:3]),
    ...             "City": t.split()[3]} for t in texts]
    >>> s = TaggerStudent(confidence="answer").fit(texts, answers)
    >>> s.predict(["9 Pine Rd Boston"])
    [{'Number': '9', 'Street': 'Pine Rd', 'City': 'Boston'}]
    """

    name: ClassVar[str] = "tagger"
    version: ClassVar[int] = 1

    def __init__(
        self,
        *,
        target: str = "fields",
        c1: float = 0.1,
        c2: float = 0.1,
        max_iterations: int = 200,
        confidence: str = "stacked",
        confidence_cv: int = 5,
        fields: dict[str, Any] | None = None,
        invalid_factor: float = 0.0,
        random_state: int = 0,
        n_jobs: int | None = None,
    ) -> None:
        self.target = target
        self.c1 = c1
        self.c2 = c2
        self.max_iterations = max_iterations
        self.confidence = confidence
        self.confidence_cv = confidence_cv
        self.fields = fields
        self.invalid_factor = invalid_factor
        self.random_state = random_state
        self.n_jobs = n_jobs

    # -- parameters ---------------------------------------------------------------------------
    def _check_params(self) -> None:
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise StudentError(f"invalid parameter {name}={getattr(self, name)!r}: expected {expected}")

        def num(v: Any) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool)

        need(self.target in _TARGETS, "target", " or ".join(map(repr, _TARGETS)))
        need(num(self.c1) and self.c1 >= 0, "c1", "a number ≥ 0")
        need(num(self.c2) and self.c2 >= 0, "c2", "a number ≥ 0")
        need(isinstance(self.max_iterations, int) and self.max_iterations >= 1, "max_iterations", "an integer ≥ 1")
        need(self.confidence in _CONFIDENCES, "confidence", " or ".join(map(repr, _CONFIDENCES)))
        need(isinstance(self.confidence_cv, int) and self.confidence_cv >= 2, "confidence_cv", "an integer ≥ 2")
        need(self.n_jobs is None or (isinstance(self.n_jobs, int) and not isinstance(self.n_jobs, bool)
                                     and self.n_jobs != 0), "n_jobs", "None or a non-zero integer")
        need(num(self.invalid_factor) and 0 <= self.invalid_factor <= 1, "invalid_factor", "a number in [0, 1]")
        if self.fields is not None and self.target != "fields":
            raise StudentError("fields (per-field checks) apply only to target='fields'")
        self._checks = parse_checks(self.fields)

    # -- fitting ------------------------------------------------------------------------------
    def _align(self, text: str, answer: Any) -> tuple[list, Alignment]:
        tokens = tokenize(text)
        if self.target == "fields":
            return tokens, align_fields(text, tokens, answer)
        return tokens, align_entities(text, tokens, answer)

    def fit(self, X: Sequence[str], y: Sequence[Any]) -> TaggerStudent:
        """Fit on texts and the teacher's answers (dicts for fields, mention lists for entities).

        Raises
        ------
        StudentError
            Bad parameters, ``len(X) != len(y)``, a non-string text or value (with its index),
            or no record that could be trained on.
        """
        t0 = time.perf_counter()
        self._check_params()
        texts = _check_texts(X)
        answers = _check_answers(y, len(texts), self.target)
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, attr)
        aligned = [self._align(t, a) for t, a in zip(texts, answers)]
        clean = [i for i, (tk, al) in enumerate(aligned) if not al.missing and tk]
        unplaced = [(i, *m) for i, (_, al) in enumerate(aligned) for m in al.missing]
        self.alignment_ = {
            "records": len(texts),
            "values": sum(len(al.spans) for _, al in aligned) + len(unplaced),
            "unplaced": len(unplaced),
            "records_left_out": len(texts) - len(clean),
        }
        self.unplaced_ = unplaced[:100]
        if not clean:
            raise StudentError(
                f"none of the {len(texts)} records can be trained on: every one is empty or has a "
                f"value the text does not spell (first: {unplaced[0] if unplaced else 'empty texts'})"
            )
        keep = set(clean)
        items = [item_attrs(token_keys(tk)) if i in keep else [] for i, (tk, _) in enumerate(aligned)]
        tags = [al.tags for _, al in aligned]
        self.confidence_, self.oof_accuracy_ = "answer", None
        # the final CRF and, for the stacked confidence, one per fold: independent fits, trained at once
        fold, parts = self._folds(len(texts), clean)
        jobs = [([items[i] for i in part], [tags[i] for i in part]) for part in [clean, *parts]]
        models = train_crfs(jobs, self._crf_params(), self.n_jobs)
        if parts:
            self._fit_stacked(texts, answers, aligned, fold, parts, models[1:])
        self._set_model(models[0], [aligned[i] for i in clean])
        self.n_train_ = len(clean)
        self.train_seconds_ = time.perf_counter() - t0
        return self

    def _set_model(self, model: bytes, aligned: list[tuple[list, Alignment]]) -> None:
        self.model_bytes_ = model
        self.chain_ = LinearChain.from_crfsuite(model)
        self.edge_rule_ = EdgeRule.learn(e for _, al in aligned for e in al.edges)
        self.familiarity_ = Familiarity.count(([t.core for t in tk], al.tags) for tk, al in aligned)
        labels = {t.partition("-")[2] if t[:2] in ("B-", "I-") else t for t in self.chain_.labels}
        self.labels_ = sorted(labels - {"O"})

    def _crf_params(self) -> dict[str, Any]:
        return {"c1": float(self.c1), "c2": float(self.c2), "max_iterations": int(self.max_iterations)}

    def _folds(self, n: int, clean: list[int]) -> tuple[np.ndarray, list[list[int]]]:
        """The stacked confidence's fold of each record and each fold model's training records
        (none: too few records, a fold with nothing to train on, or ``confidence="answer"``)."""
        cv = self.confidence_cv
        if self.confidence != "stacked" or n < 4 * cv:
            return np.zeros(n, dtype=int), []
        fold = np.random.default_rng(self.random_state).permutation(n) % cv
        parts = [[i for i in clean if fold[i] != k] for k in range(cv)]
        return (fold, parts) if all(parts) else (fold, [])

    def _fit_stacked(self, texts, answers, aligned, fold, parts, models) -> None:
        cv = self.confidence_cv
        X = np.zeros((len(texts), len(DESCRIPTORS)))
        right = np.zeros(len(texts), dtype=bool)
        decoded: list[Decoded | None] = [None] * len(texts)
        for k, (train, model) in enumerate(zip(parts, models)):
            held = np.flatnonzero(fold == k).tolist()
            self._set_model(model, [aligned[i] for i in train])
            for i, d in zip(held, self._decode([texts[i] for i in held])):
                X[i] = describe(d, self.familiarity_)
                right[i] = same_answer(d.answer, answers[i])
                decoded[i] = d
        self.oof_accuracy_ = float(right.mean())
        if right.all() or not right.any():
            return
        self.confidence_model_ = StackedConfidence.fit(X, right)
        self.confidence_ = "stacked"
        # out-of-fold confidences, the regression too fitted without the row's fold: a
        # calibration set as large as the training data, for cross-fitted calibration
        oof = np.zeros(len(texts))
        for k in range(cv):
            rows = fold == k
            if right[~rows].all() or not right[~rows].any():
                oof[rows] = self.confidence_model_.predict(X[rows])
            else:
                oof[rows] = StackedConfidence.fit(X[~rows], right[~rows]).predict(X[rows])
        self.oof_confidence_ = self._adjust(oof, decoded)
        self.oof_correct_ = right

    # -- predicting ---------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "chain_"):
            raise NotFittedError(
                f"this {type(self).__name__} is not fitted yet: call fit(X, y) or load() first"
            )

    def _decode(self, texts: list[str]) -> list[Decoded]:
        return decode_batch(self.chain_, texts, self.edge_rule_, self.target)

    def _scores(self, decoded: list[Decoded]) -> np.ndarray:
        if not decoded:
            return np.empty(0)
        if self.confidence_ == "stacked":
            conf = self.confidence_model_.predict(np.array([describe(d, self.familiarity_) for d in decoded]))
        else:
            conf = np.exp([d.log_p for d in decoded])
        return self._adjust(conf, decoded)

    def _adjust(self, conf: np.ndarray, decoded: Sequence[Decoded]) -> np.ndarray:
        conf = np.array(conf, dtype=float)
        conf[[not d.tokens for d in decoded]] = 1.0  # no token: the empty answer is the only one
        if self._checks:
            bad = [bool(problems(d.answer, self._checks)) for d in decoded]
            conf[bad] *= self.invalid_factor
        return np.clip(conf, 0.0, 1.0)

    def predict_with_confidence(self, X: Sequence[str]) -> tuple[list[Any], np.ndarray]:
        """Answers and their confidences in [0, 1] (the score λ is set on), in one pass."""
        self._check_fitted()
        if not hasattr(self, "_checks"):
            self._checks = parse_checks(self.fields)
        decoded = self._decode(_check_texts(X))
        return [d.answer for d in decoded], self._scores(decoded)

    def predict(self, X: Sequence[str]) -> list[Any]:
        """One answer per text: ``{field: value}``, or sorted ``[(text, type), ...]``."""
        return self.predict_with_confidence(X)[0]

    def predict_confidence(self, X: Sequence[str]) -> np.ndarray:
        """Confidence of each answer: high means it is likely the teacher's answer."""
        return self.predict_with_confidence(X)[1]

    def predict_field_confidence(self, X: Sequence[str]) -> list[dict[str, float]]:
        """Per record, P(field has exactly the predicted value) for each predicted field
        (CRF marginals over all tag sequences; ``target="fields"`` only)."""
        self._check_fitted()
        if self.target != "fields":
            raise StudentError("field confidences exist for target='fields' only")
        return field_probabilities(self.chain_, self._decode(_check_texts(X)))

    def validation_problems(self, answer: Mapping[str, str]) -> list[str]:
        """How an answer fails the ``fields`` checks (empty when it passes)."""
        return problems(answer, parse_checks(self.fields))

    # -- persistence --------------------------------------------------------------------------
    def save(self, directory: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write crfsuite's model file, ``tagger.json`` and a sha256 manifest; no pickle."""
        self._check_fitted()
        return save_tagger(self, directory, overwrite=overwrite)

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> TaggerStudent:
        """Load a student saved by :meth:`save`, checking every file against the manifest.

        Raises
        ------
        StudentError
            No manifest, another kind of student, or a newer format.
        CorruptArtifactError
            A file whose sha256 differs from the manifest's (named), or unreadable contents.
        """
        return load_tagger(cls, directory)

    def size_bytes(self) -> int:
        """Bytes of the saved files (model and state, without the manifest)."""
        self._check_fitted()
        return len(self.model_bytes_) + len(tagger_state(self))
