"""One-vs-rest linear heads, their out-of-fold scores, and Platt scaling per label.

Each label gets a linear SVM (liblinear, as :class:`~downsize.students.TfidfStudent`'s default)
on the shared features. Its decision values become probabilities by Platt scaling (a logistic
regression on the one score, Platt 1999) fitted on **out-of-fold** scores: the heads are trained
``cv`` times on all folds but one and score the fold they did not see, so the scaling (and the
record confidence stacked on it, :mod:`.decode`) learns how wrong the heads are on texts they
never saw, then the heads are refitted on everything. ``OneVsRestClassifier`` would do the loop,
but not keep the weights as one matrix: weights below ``prune`` × the head's largest are dropped
(in the fold models too, so the scaling matches the saved heads) and the rest kept as one sparse
``(n_features, n_labels)`` matrix, so a batch is scored by one sparse product and a 96-label
student on 250k n-grams stays a few MB instead of 190.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._threads import map_blocks

__all__ = ["apply_platt", "fit_heads", "fit_platt", "out_of_fold", "scores"]

#: Decision value of a label that never (or always) occurs in the training rows.
_CONSTANT = 10.0


def _fit_one(F: Any, y: np.ndarray, C: float, seed: int | None, prune: float) -> tuple[np.ndarray, float]:
    from sklearn.svm import LinearSVC

    if y.all() or not y.any():
        return np.zeros(F.shape[1]), _CONSTANT if y.all() else -_CONSTANT
    m = LinearSVC(C=C, tol=1e-3, random_state=seed).fit(F, y)
    w = np.asarray(m.coef_[0], dtype=np.float64)
    if prune > 0 and w.size:
        w[np.abs(w) < prune * np.abs(w).max()] = 0.0
    return w, float(m.intercept_[0])


def fit_heads(F: Any, Y: np.ndarray, active: np.ndarray, *, C: float, seed: int | None,
              prune: float) -> tuple[Any, np.ndarray]:
    """Heads of the ``active`` labels: a CSR weight matrix ``(n_features, n_labels)`` (float32)
    and the intercepts; an inactive label has no weights and a very negative intercept."""
    import scipy.sparse as sp

    cols, b = [], np.full(Y.shape[1], -_CONSTANT)
    for j in range(Y.shape[1]):
        if active[j]:
            w, b[j] = _fit_one(F, Y[:, j], C, seed, prune)
            cols.append(sp.csc_matrix(w.astype(np.float32)[:, None]))
        else:
            cols.append(sp.csc_matrix((F.shape[1], 1), dtype=np.float32))
    return sp.hstack(cols, format="csr").astype(np.float32), b


#: Rows from which a batch product is split over the cores.
_PARALLEL_ROWS = 1024


def scores(F: Any, W: Any, b: np.ndarray) -> np.ndarray:
    """Decision values ``F @ W + b`` as a dense float64 array ``(n, n_labels)`` (``W`` sparse or dense).

    ``F`` is cast to ``W``'s float32 first (a float64 ``F`` makes scipy upcast the whole of
    ``W`` on every call: twice the time), and a large batch is cut into one block of rows per
    core, multiplied in threads (scipy's sparse kernels release the GIL)."""
    F = F.astype(W.dtype, copy=False)
    parts = map_blocks(lambda lo, hi: _dense(F[lo:hi] @ W), F.shape[0], block_rows=F.shape[0],
                       min_rows=_PARALLEL_ROWS)
    return (np.vstack(parts) if len(parts) > 1 else parts[0]) + b


def _dense(out: Any) -> np.ndarray:
    out = out.toarray() if hasattr(out, "toarray") else np.asarray(out)
    return out.astype(np.float64)


def out_of_fold(F: Any, Y: np.ndarray, active: np.ndarray, *, cv: int, C: float, seed: int | None,
                prune: float) -> np.ndarray:
    """Decision values of every training row by heads fitted without its fold."""
    from sklearn.model_selection import KFold

    S = np.empty(Y.shape, dtype=np.float64)
    for fit_rows, held in KFold(n_splits=cv, shuffle=True, random_state=seed).split(np.zeros(len(Y))):
        W, b = fit_heads(F[fit_rows], Y[fit_rows], active, C=C, seed=seed, prune=prune)
        S[held] = scores(F[held], W, b)
    return S


def fit_platt(S: np.ndarray, Y: np.ndarray, active: np.ndarray) -> np.ndarray:
    """``(n_labels, 2)`` slopes and intercepts: P(label) = sigmoid(a·score + c), per label, fitted
    on out-of-fold scores (a label seen in every row or none keeps slope 0 and its clipped rate)."""
    from sklearn.linear_model import LogisticRegression

    out = np.zeros((Y.shape[1], 2))
    n = len(Y)
    for j in range(Y.shape[1]):
        y = Y[:, j]
        if not active[j]:
            out[j] = (0.0, -_CONSTANT)
        elif y.all() or not y.any():
            rate = (y.sum() + 0.5) / (n + 1.0)
            out[j] = (0.0, float(np.log(rate / (1 - rate))))
        else:
            lr = LogisticRegression(C=100.0, max_iter=200).fit(S[:, j : j + 1], y)
            out[j] = (float(lr.coef_[0, 0]), float(lr.intercept_[0]))
    return out


def apply_platt(S: np.ndarray, platt: np.ndarray) -> np.ndarray:
    """Per-label probabilities from decision values."""
    z = np.clip(S * platt[:, 0] + platt[:, 1], -30.0, 30.0)
    return 1.0 / (1.0 + np.exp(-z))
