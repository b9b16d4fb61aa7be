"""From per-label probabilities to a label set, and a record confidence for each loss.

Decoding (per row, vectorised over the batch), with ``p`` the calibrated per-label probabilities:

* ``exact``: the most probable set if labels were independent, ``{j : p_j ≥ ½}``, cut to the
  ``max_labels`` most probable; an empty set becomes the single most probable label when the
  training answers never were empty;
* ``f1``: the prefix of the labels sorted by ``p`` that maximises the plug-in expected F1
  ``2 Σ_{i≤k} p_i / (k + Σ_j p_j)`` (Jansche 2007; Nan, Chai, Lee & Chieu 2012), the empty set's
  value being ``Π(1 − p_j)``, the probability that nothing applies.

The record confidence is **stacked** on out-of-fold answers (Wolpert 1992), as the extraction
tagger's is: the independence product is a fair start but tags are correlated and the heads are
overconfident on texts unlike their training data, so a logistic regression learns, from the
:data:`DESCRIPTORS` of each out-of-fold answer, P(the set equals the reference) for ``exact`` and
the expected F1 with the reference for ``f1`` (fractional targets: cross-entropy against the
realised F1). The descriptors are generic (probabilities, margins, sizes, how familiar the decoded
set and its labels are, how it agrees with the answers of the most similar training texts,
:mod:`.neighbours`); the regression weighs them per task. It is a few numbers, kept as JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import repeat
from typing import Any

import numpy as np

from .neighbours import NEIGHBOUR_DESCRIPTORS

__all__ = ["DESCRIPTORS", "STACKED", "StackedConfidence", "decode", "describe", "packed_sets", "row_f1", "set_key",
           "set_lookup"]

DESCRIPTORS = (
    "log_p_set",
    "logit_min_in",
    "logit_max_out",
    "min_margin",
    "log_size",
    "expected_count",
    "expected_f1",
    "log_set_seen",
    "log_rarest_label",
    "empty",
)
#: What the stacked confidence sees: :data:`DESCRIPTORS` then the neighbours' (:mod:`.neighbours`).
STACKED = DESCRIPTORS + NEIGHBOUR_DESCRIPTORS
_EPS = 1e-6
_LOGIT_CAP = 15.0


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return np.clip(np.log(p / (1 - p)), -_LOGIT_CAP, _LOGIT_CAP)


def _prefix(P: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Mask of the ``k[i]`` most probable labels of each row."""
    order = np.argsort(-P, axis=1, kind="stable")
    M = np.zeros(P.shape, dtype=bool)
    ranks = np.arange(P.shape[1])[None, :] < k[:, None]
    np.put_along_axis(M, order, ranks, axis=1)
    return M


def _expected_f1(P: np.ndarray, M: np.ndarray) -> np.ndarray:
    k = M.sum(1)
    total = P.sum(1)
    empty_value = np.exp(np.log1p(-np.clip(P, 0, 1 - _EPS)).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        f = 2 * (P * M).sum(1) / (k + total)
    return np.where(k == 0, empty_value, f)


def decode(P: np.ndarray, loss: str, *, max_labels: int | None, allow_empty: bool) -> np.ndarray:
    """Boolean ``(n, n_labels)`` mask of each row's decoded set (see the module docstring)."""
    L = P.shape[1]
    cap = min(max_labels or L, L)
    if loss == "exact":
        k = np.minimum((P >= 0.5).sum(1), cap)
    else:
        srt = -np.sort(-P, axis=1)[:, :cap]
        total = P.sum(1, keepdims=True)
        ks = np.arange(1, cap + 1)[None, :]
        value = 2 * np.cumsum(srt, axis=1) / (ks + total)
        k = value.argmax(1) + 1
        if allow_empty:
            empty_value = np.exp(np.log1p(-np.clip(P, 0, 1 - _EPS)).sum(1))
            k = np.where(empty_value > value.max(1), 0, k)
    if not allow_empty:
        k = np.maximum(k, 1)
    return _prefix(P, k)


def set_key(labels_idx: Any) -> str:
    """The key of a set of label indices in the training sets' counts."""
    return ",".join(str(int(i)) for i in sorted(labels_idx))


def packed_sets(M: np.ndarray) -> list[bytes]:
    """Each row's set as bytes (its mask bit-packed), for C-level dict lookups of a whole batch."""
    packed = np.ascontiguousarray(np.packbits(M, axis=1))
    return packed.view(f"S{packed.shape[1]}").ravel().tolist()


def set_lookup(set_counts: Mapping[str, int], n_labels: int) -> dict[bytes, int]:
    """The training sets' counts (keyed by :func:`set_key`) keyed by :func:`packed_sets` instead."""
    M = np.zeros((len(set_counts), n_labels), dtype=bool)
    for i, key in enumerate(set_counts):
        if key:
            M[i, [int(x) for x in key.split(",")]] = True
    return dict(zip(packed_sets(M), set_counts.values()))


def row_f1(M: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """F1 of each row's decoded set against the reference set (1 for two empty sets)."""
    tp = (M & Y).sum(1)
    size = M.sum(1) + Y.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(size == 0, 1.0, 2 * tp / np.maximum(size, 1))


def describe(P: np.ndarray, M: np.ndarray, sets: Mapping[bytes, int], label_counts: np.ndarray,
             n_train: int) -> np.ndarray:
    """The :data:`DESCRIPTORS` of each row's decoded set ``M`` given its probabilities ``P``
    (``sets``: the training sets' counts, :func:`set_lookup`)."""
    Pc = np.clip(P, _EPS, 1 - _EPS)
    log_p_set = np.where(M, np.log(Pc), np.log1p(-Pc)).sum(1)
    lg = _logit(P)
    k = M.sum(1)
    min_in = np.where(k > 0, np.where(M, lg, np.inf).min(1), _LOGIT_CAP)
    max_out = np.where(k < P.shape[1], np.where(M, -np.inf, lg).max(1), -_LOGIT_CAP)
    seen = np.fromiter(map(sets.get, packed_sets(M), repeat(0)), dtype=float, count=len(M))
    rarest = np.where(k > 0, np.where(M, label_counts, np.inf).min(1), n_train)
    return np.column_stack([
        np.maximum(log_p_set, -50.0),
        min_in,
        max_out,
        np.minimum(min_in, -max_out),
        np.log1p(k),
        P.sum(1),
        _expected_f1(P, M),
        np.log1p(seen),
        np.log1p(rarest),
        (k == 0).astype(float),
    ])


class StackedConfidence:
    """Standardise the descriptors, then a logistic regression → P(right) or expected F1.

    ``target`` in [0, 1] per row (0/1 for ``exact``, the realised F1 for ``f1``): fractional
    targets are fitted as two weighted copies of each row (label 1 with weight ``t``, label 0
    with weight ``1 − t``), i.e. cross-entropy against ``t``. Hand-written around scikit-learn's
    ``LogisticRegression`` so the fitted state is a few JSON numbers.
    """

    def __init__(self, mean: Any, scale: Any, coef: Any, intercept: float) -> None:
        self.mean, self.scale = np.asarray(mean, float), np.asarray(scale, float)
        self.coef, self.intercept = np.asarray(coef, float), float(intercept)

    @classmethod
    def fit(cls, X: np.ndarray, target: np.ndarray, C: float = 1.0) -> StackedConfidence:
        from sklearn.linear_model import LogisticRegression

        t = np.clip(np.asarray(target, float), 0.0, 1.0)
        mean, scale = X.mean(0), X.std(0)
        scale[scale == 0] = 1.0
        Z = (X - mean) / scale
        if t.min() == t.max():  # all right or all wrong: a constant
            p = float(np.clip(t[0], _EPS, 1 - _EPS))
            return cls(mean, scale, np.zeros(X.shape[1]), float(np.log(p / (1 - p))))
        Zz = np.vstack([Z, Z])
        yy = np.r_[np.ones(len(Z)), np.zeros(len(Z))]
        w = np.r_[t, 1 - t]
        keep = w > 0
        lr = LogisticRegression(C=C, max_iter=1000).fit(Zz[keep], yy[keep], sample_weight=w[keep])
        return cls(mean, scale, lr.coef_[0], lr.intercept_[0])

    def predict(self, X: np.ndarray) -> np.ndarray:
        z = ((np.asarray(X, float) - self.mean) / self.scale) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-np.clip(z, -30, 30)))

    def to_json(self) -> dict[str, Any]:
        return {"descriptors": list(STACKED), "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                "coef": self.coef.tolist(), "intercept": self.intercept}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> StackedConfidence:
        if list(obj.get("descriptors", [])) != list(STACKED) or len(obj["coef"]) != len(STACKED):
            raise ValueError(f"descriptors {obj.get('descriptors')} are not {list(STACKED)}")
        return cls(obj["mean"], obj["scale"], obj["coef"], obj["intercept"])
