"""A record confidence that ranks the tagger's own mistakes: stacked on out-of-fold answers.

The CRF's probability of its answer is a good start but is overconfident exactly where
thresholding needs it not to be: on words it never saw, whose tag it guesses from suffixes and
shape with probability 0.95+ (a lone ``"HANNA"``: given name or surname?), and on words the
teacher itself tags inconsistently. What is wrong with a CRF's answers on held-out texts can
only be seen on held-out texts, so :class:`StackedConfidence` is fitted on *out-of-fold*
answers: the tagger is trained ``cv`` times on all folds but one, answers the fold it did not
see, and a logistic regression learns P(answer = teacher's answer) from a few generic
descriptors of each answer (:func:`describe`):

* the CRF's log-odds of the answer, and of its least certain token;
* the number of tokens and of fields/mentions, and whether the answer is empty;
* how familiar the text is to the tagger (:class:`Familiarity`, counted on its training
  data): the share of tokens never seen, the rarest (word, tag) pair, how consistently the
  teacher tagged each word with the tag given to it, how often the answer's sequence of tags
  (its "template") and its rarest field occurred.

None of these mention a domain; the regression weighs them per task. Stacking (Wolpert 1992)
is scikit-learn's ``StackingClassifier`` idea, written out here because the base model is a
sequence tagger and the meta-learner needs its decoded answers, not ``predict_proba`` columns.
The fitted scaler and coefficients are stored as JSON numbers.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .inference import Decoded
from .spans import OUTSIDE

__all__ = ["Familiarity", "describe", "StackedConfidence", "DESCRIPTORS"]

DESCRIPTORS = (
    "logit_p_answer",
    "logit_min_marginal",
    "log_tokens",
    "log_items",
    "empty",
    "unseen_share",
    "log_min_word_tag",
    "min_tag_consistency",
    "log_template",
    "log_rarest_label",
)


def _label(tag: str) -> str:
    return tag.partition("-")[2] if tag[:2] in ("B-", "I-") else tag


def template(tags: Sequence[str]) -> str:
    """The tag sequence with repeats collapsed: ``"AddressNumber StreetName ..."``."""
    return " ".join(k for k, _ in itertools.groupby(_label(t) for t in tags))


class Familiarity:
    """What the tagger saw in training: words, (word, tag) pairs, templates, labels."""

    def __init__(
        self,
        words: dict[str, int] | None = None,
        word_tags: dict[str, int] | None = None,
        templates: dict[str, int] | None = None,
        labels: dict[str, int] | None = None,
        n_records: int = 0,
    ) -> None:
        self.words = dict(words or {})
        self.word_tags = dict(word_tags or {})
        self.templates = dict(templates or {})
        self.labels = dict(labels or {})
        self.n_records = n_records

    @classmethod
    def count(cls, sequences: Iterable[tuple[Sequence[str], Sequence[str]]]) -> Familiarity:
        """From ``(token cores, tags)`` of the training texts."""
        words: Counter[str] = Counter()
        word_tags: Counter[str] = Counter()
        templates: Counter[str] = Counter()
        labels: Counter[str] = Counter()
        n = 0
        for ws, tags in sequences:
            n += 1
            for w, t in zip(ws, tags):
                w = w.lower()
                words[w] += 1
                word_tags[w + "\t" + t] += 1
            templates[template(tags)] += 1
            labels.update({_label(t) for t in tags if t != OUTSIDE})
        return cls(words, word_tags, templates, labels, n)

    def to_json(self) -> dict[str, Any]:
        return {
            "words": dict(self.words),
            "word_tags": dict(self.word_tags),
            "templates": dict(self.templates),
            "labels": dict(self.labels),
            "n_records": self.n_records,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Familiarity:
        return cls(obj["words"], obj["word_tags"], obj["templates"], obj["labels"], int(obj["n_records"]))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))


def describe(d: Decoded, fam: Familiarity) -> list[float]:
    """The :data:`DESCRIPTORS` of one decoded answer."""
    words = d.words
    n = len(words)
    wget, pget = fam.words.get, fam.word_tags.get
    seen = [wget(w, 0) for w in words]
    pair = [pget(w + "\t" + t, 0) for w, t in zip(words, d.tags)]
    consistency = [p / s if s else 0.5 for p, s in zip(pair, seen)]
    labels = list(d.answer) if isinstance(d.answer, dict) else sorted({t for _, t in d.answer})
    lget = fam.labels.get
    return [
        _logit(math.exp(d.log_p)),
        _logit(d.min_marginal),
        math.log1p(n),
        math.log1p(len(d.answer)),
        float(not d.answer),
        seen.count(0) / n if n else 0.0,
        math.log1p(min(pair)) if n else 0.0,
        min(consistency) if n else 1.0,
        math.log1p(fam.templates.get(template(d.tags), 0)),
        math.log1p(min((lget(lab, 0) for lab in labels), default=fam.n_records)),
    ]


class StackedConfidence:
    """Standardise the descriptors, then logistic regression → P(answer is right)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float):
        self.mean, self.scale = np.asarray(mean, float), np.asarray(scale, float)
        self.coef, self.intercept = np.asarray(coef, float), float(intercept)

    @classmethod
    def fit(cls, X: np.ndarray, correct: np.ndarray, C: float = 1.0) -> StackedConfidence:
        from sklearn.linear_model import LogisticRegression

        mean = X.mean(0)
        scale = X.std(0)
        scale[scale == 0] = 1.0
        lr = LogisticRegression(C=C, max_iter=1000).fit((X - mean) / scale, correct)
        return cls(mean, scale, lr.coef_[0], lr.intercept_[0])

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = ((np.asarray(X, float) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-z))

    def to_json(self) -> dict[str, Any]:
        return {
            "descriptors": list(DESCRIPTORS),
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> StackedConfidence:
        if list(obj.get("descriptors", [])) != list(DESCRIPTORS):
            raise ValueError(f"descriptors {obj.get('descriptors')} are not {list(DESCRIPTORS)}")
        return cls(obj["mean"], obj["scale"], obj["coef"], obj["intercept"])
