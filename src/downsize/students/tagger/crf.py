"""Linear-chain CRF inference in numpy, on weights trained by crfsuite.

crfsuite (through python-crfsuite) trains the model: L-BFGS on the L1/L2-penalised likelihood,
the CPU standard for CRF taggers, with its own model file. Its tagger, though, answers one
sequence at a time through Python calls, gives only the Viterbi path's probability and a single
marginal per call, and rebuilds every attribute string of every token. Predicting here instead
reads the weights once (``Tagger.info()``) and

* sums each distinct token's attribute weights once (:class:`_Rows` caches the sums, keyed by the
  token's text and spacing), so a batch costs a few array lookups per token;
* runs Viterbi and the scaled forward recursion for a whole batch at once (sequences sorted by
  length, padded within chunks);
* computes what the crfsuite tagger cannot: the probability of *every tag sequence allowed by a
  mask* (``log_partition(E, lengths, allowed)``), e.g. of all sequences that decode to the same
  record, and per-position marginals.

The score of a tag sequence is crfsuite's: the sum over positions of the state weights of the
position's attributes for its tag, plus the transition weights between consecutive tags (no
start or end transitions). ``tests/test_tagger.py`` checks the path and its probability against
crfsuite's own tagger.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence

import threading

import numpy as np

from .features import WINDOW, TokenKey, context_attrs, local_attrs, position_attrs, position_keys

__all__ = ["LinearChain"]

_CHUNK = 256
_CELLS = 256 * 64


class _Rows:
    """Row vectors computed once per key (in batches, by ``make``) and kept in one array."""

    def __init__(self, width: int, make: Callable[[list], np.ndarray], limit: int) -> None:
        self.make, self.limit, self.width = make, limit, width
        self.clear()

    def clear(self) -> None:
        self.index: dict[Hashable, int] = {}
        self.buf = np.zeros((1024, self.width))
        self.size = 1  # row 0: zeros (no neighbour)

    def ids(self, keys: Sequence[Hashable]) -> np.ndarray:
        if self.size + len(keys) > self.limit:
            self.clear()
        index = self.index
        new = list(dict.fromkeys(k for k in keys if k not in index))
        if new:
            need = self.size + len(new)
            if need > len(self.buf):
                grown = np.zeros((max(need, 2 * len(self.buf)), self.width))
                grown[: self.size] = self.buf[: self.size]
                self.buf = grown
            self.buf[self.size : need] = self.make(new)
            for k, key in enumerate(new):
                index[key] = self.size + k
            self.size = need
        return np.fromiter((index[k] for k in keys), dtype=np.intp, count=len(keys))


class LinearChain:
    """A trained linear-chain CRF: labels, state weights per attribute, transition matrix.

    Parameters
    ----------
    labels : list of str
    state : dict
        ``{attribute: {label: weight}}``.
    transitions : ndarray of shape (n_labels, n_labels)
        ``transitions[a, b]``: weight of tag ``b`` right after tag ``a``.
    cache_size : int
        Distinct tokens whose summed weights are kept (then the cache starts again).
    """

    def __init__(
        self,
        labels: list[str],
        state: dict[str, dict[str, float]],
        transitions: np.ndarray,
        cache_size: int = 200_000,
    ) -> None:
        self.labels = list(labels)
        self.label_index = {lab: i for i, lab in enumerate(self.labels)}
        L = len(self.labels)
        self.attr_index = {a: i for i, a in enumerate(state)}
        W = np.zeros((len(state) + 1, L))  # last row: unknown attribute
        for attr, by_label in state.items():
            for lab, w in by_label.items():
                W[self.attr_index[attr], self.label_index[lab]] = w
        self.W = W
        self.transitions = np.asarray(transitions, dtype=float)
        self._exp_t = np.exp(self.transitions)
        self._offsets = [*range(-WINDOW, 0), *range(1, WINDOW + 1)]
        self._lock = threading.Lock()
        self._ctx_index: dict[str, list[int]] | None = None
        self._local = _Rows(L, lambda ks: self._summed([local_attrs(k) for k in ks]), cache_size)
        self._ctx = _Rows(L * len(self._offsets), self._context_rows, cache_size)
        self._pos = _Rows(L, lambda ks: self._summed([position_attrs(k) for k in ks]), 10_000)

    def _summed(self, attr_lists: list[list[str]]) -> np.ndarray:
        """Sum of the weight rows of each list of attributes, ``(len(attr_lists), L)``."""
        from scipy.sparse import csr_matrix

        unknown = len(self.W) - 1
        get = self.attr_index.get
        cols = [get(a, unknown) for attrs in attr_lists for a in attrs]
        ptr = np.cumsum([0] + [len(a) for a in attr_lists])
        sel = csr_matrix((np.ones(len(cols)), cols, ptr), shape=(len(attr_lists), len(self.W)))
        return np.asarray(sel @ self.W)

    def _context_rows(self, keys: list) -> np.ndarray:
        from scipy.sparse import csr_matrix

        if self._ctx_index is None:  # attribute "-1:w=main" → row of "w=main" at each offset
            unknown = len(self.W) - 1
            pos = {o: k for k, o in enumerate(self._offsets)}
            index: dict[str, list[int]] = {}
            for attr, i in self.attr_index.items():
                head, sep, base = attr.partition(":")
                if sep and head[:1] in "+-" and head[1:].isdigit() and int(head) in pos:
                    index.setdefault(base, [unknown] * len(pos))[pos[int(head)]] = i
            self._ctx_index = index
        get, none = self._ctx_index.get, [len(self.W) - 1] * len(self._offsets)
        rows = [[get(a, none) for a in context_attrs(k)] for k in keys]
        L = len(self.labels)
        out = np.empty((len(keys), L * len(self._offsets)))
        ptr = np.cumsum([0] + [len(r) for r in rows])
        for k in range(len(self._offsets)):
            cols = [r[k] for row in rows for r in row]
            sel = csr_matrix((np.ones(len(cols)), cols, ptr), shape=(len(keys), len(self.W)))
            out[:, k * L : (k + 1) * L] = sel @ self.W
        return out

    @classmethod
    def from_crfsuite(cls, model: bytes) -> LinearChain:
        """Read the weights of a crfsuite model file (its bytes)."""
        import pycrfsuite

        tagger = pycrfsuite.Tagger()
        tagger.open_inmemory(model)
        info = tagger.info()
        labels = sorted(tagger.labels())
        state: dict[str, dict[str, float]] = {}
        for (attr, lab), w in info.state_features.items():
            state.setdefault(attr, {})[lab] = w
        index = {lab: i for i, lab in enumerate(labels)}
        trans = np.zeros((len(labels), len(labels)))
        for (a, b), w in info.transitions.items():
            trans[index[a], index[b]] = w
        tagger.close()
        return cls(labels, state, trans)

    # -- emissions --------------------------------------------------------------------------
    def emissions(self, seqs: Sequence[Sequence[TokenKey]]) -> tuple[np.ndarray, np.ndarray]:
        """Per-token label scores of all sequences, concatenated: ``(E, lengths)``.

        Thread-safe: the caches are filled under a lock.
        """
        with self._lock:
            return self._emissions(seqs)

    def _emissions(self, seqs: Sequence[Sequence[TokenKey]]) -> tuple[np.ndarray, np.ndarray]:
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.intp, count=len(seqs))
        flat = [k for s in seqs for k in s]
        N, L = len(flat), len(self.labels)
        lid = self._local.ids(flat)  # (ids first: filling the cache may replace .buf)
        E = self._local.buf[lid]
        pid = self._pos.ids(position_keys(lengths).tolist())
        E += self._pos.buf[pid]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(seqs) else lengths
        t_in = np.arange(N) - np.repeat(starts, lengths)
        n_of = np.repeat(lengths, lengths)
        cid = self._ctx.ids(flat)
        ctx = self._ctx.buf
        for k, o in enumerate(self._offsets):
            ok = (t_in + o >= 0) & (t_in + o < n_of)
            src = np.flatnonzero(ok)
            E[src] += ctx[cid[src + o], k * L : (k + 1) * L]
        return E, lengths

    # -- dynamic programmes on padded chunks -----------------------------------------------
    def chunks(self, E: np.ndarray, lengths: np.ndarray):
        """Yield ``(rows, Ep, lens)``: sequence indices, padded emissions ``(B, T, L)``, lengths."""
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
        order = np.argsort(lengths, kind="stable")
        c = 0
        while c < len(order):  # at most _CHUNK texts, and at most _CELLS padded positions
            longest = int(lengths[order[min(c + _CHUNK, len(order)) - 1]])
            rows = order[c : c + max(1, min(_CHUNK, _CELLS // max(longest, 1)))]
            c += len(rows)
            lens = lengths[rows]
            T = int(lens.max()) if len(lens) else 0
            Ep = np.zeros((len(rows), max(T, 1), len(self.labels)))
            for b, r in enumerate(rows.tolist()):
                Ep[b, : lens[b]] = E[starts[r] : starts[r] + lens[b]]
            yield rows, Ep, lens

    def viterbi(self, Ep: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Best tag indices ``(B, T)`` (padding repeats the last tag) and their scores ``(B,)``."""
        B, T, L = Ep.shape
        delta = Ep[:, 0].copy()
        back = np.zeros((B, T, L), dtype=np.intp)
        ident = np.arange(L)
        trans_t = np.ascontiguousarray(self.transitions.T)
        for t in range(1, T):
            cand = delta[:, None, :] + trans_t[None]  # cand[b, to, from]
            bp = cand.argmax(2)
            new = cand.max(2) + Ep[:, t]
            if lens.min() > t:  # chunks hold sequences of similar length: usually all live
                delta = new
                back[:, t] = bp
            else:
                live = (t < lens)[:, None]
                delta = np.where(live, new, delta)
                back[:, t] = np.where(live, bp, ident)
        path = np.zeros((B, T), dtype=np.intp)
        path[:, -1] = delta.argmax(1)
        for t in range(T - 1, 0, -1):
            path[:, t - 1] = back[np.arange(B), t, path[:, t]]
        return path, delta.max(1)

    def log_partition(
        self, Ep: np.ndarray, lens: np.ndarray, allowed: np.ndarray | None = None
    ) -> np.ndarray:
        """log Σ exp(score) over tag sequences (only those ``allowed[b, t, label]``), ``(B,)``.

        Scaled forward recursion: each step is one matrix product with ``exp(transitions)``.
        """
        B, T, L = Ep.shape
        m = Ep.max(2, keepdims=True)
        P = np.exp(Ep - m)
        if allowed is not None:
            P = P * allowed
        a = P[:, 0]
        s = a.sum(1)
        logz = np.log(s) + m[:, 0, 0]
        a = a / s[:, None]
        for t in range(1, T):
            new = (a @ self._exp_t) * P[:, t]
            s = new.sum(1)
            live = t < lens
            s_safe = np.where(live, s, 1.0)
            logz = logz + np.where(live, np.log(np.where(live, s, 1.0)) + m[:, t, 0], 0.0)
            a = np.where(live[:, None], new / s_safe[:, None], a)
        return logz

    def marginals(self, Ep: np.ndarray, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """P(tag at position t = label), ``(B, T, L)`` (zero on padding), and log Z ``(B,)``."""
        B, T, L = Ep.shape
        m = Ep.max(2, keepdims=True)
        P = np.exp(Ep - m)
        alpha = np.zeros((B, T, L))
        beta = np.ones((B, T, L))
        s = P[:, 0].sum(1)
        alpha[:, 0] = P[:, 0] / s[:, None]
        logz = np.log(s) + m[:, 0, 0]
        for t in range(1, T):
            a = (alpha[:, t - 1] @ self._exp_t) * P[:, t]
            s = a.sum(1)  # normalised on padding too (it would overflow), but not counted
            alpha[:, t] = a / s[:, None]
            logz += np.where(t < lens, np.log(s) + m[:, t, 0], 0.0)
        last = lens - 1
        exp_tt = np.ascontiguousarray(self._exp_t.T)
        for t in range(T - 2, -1, -1):
            b = (beta[:, t + 1] * P[:, t + 1]) @ exp_tt
            b = b / b.sum(1, keepdims=True)
            beta[:, t] = np.where((t < last)[:, None], b, 1.0)
        mu = alpha * beta
        mu /= mu.sum(2, keepdims=True)
        mu[np.arange(T)[None, :] >= lens[:, None]] = 0.0
        return mu, logz
