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

import numpy as np

from .features import WINDOW, TokenKey, context_attrs, local_attrs, position_attrs, position_key

__all__ = ["LinearChain"]

_CHUNK = 512


class _Rows:
    """Row vectors computed once per key and kept in one growing array."""

    def __init__(self, width: int, make: Callable[[Hashable], np.ndarray], limit: int) -> None:
        self.make, self.limit, self.width = make, limit, width
        self.clear()

    def clear(self) -> None:
        self.index: dict[Hashable, int] = {None: 0}  # row 0: zeros (no neighbour)
        self.buf = np.zeros((1024, self.width))

    def ids(self, keys: Sequence[Hashable]) -> np.ndarray:
        index = self.index
        if len(index) + len(keys) > self.limit:
            self.clear()
            index = self.index
        out = np.empty(len(keys), dtype=np.intp)
        for k, key in enumerate(keys):
            i = index.get(key)
            if i is None:
                i = len(index)
                if i >= len(self.buf):
                    self.buf = np.concatenate([self.buf, np.zeros_like(self.buf)])
                self.buf[i] = self.make(key)
                index[key] = i
            out[k] = i
        return out


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
        self.state: dict[str, np.ndarray] = {}
        for attr, by_label in state.items():
            v = np.zeros(L)
            for lab, w in by_label.items():
                v[self.label_index[lab]] = w
            self.state[attr] = v
        self.transitions = np.asarray(transitions, dtype=float)
        self._exp_t = np.exp(self.transitions)
        zero = np.zeros(L)

        def summed(attrs: list[str]) -> np.ndarray:
            vs = [self.state[a] for a in attrs if a in self.state]
            return np.sum(vs, axis=0) if vs else zero

        self._local = _Rows(L, lambda k: summed(local_attrs(k)), cache_size)
        self._ctx = {
            o: _Rows(L, lambda k, o=o: summed([f"{o:+d}:{a}" for a in context_attrs(k)]), cache_size)
            for o in [*range(-WINDOW, 0), *range(1, WINDOW + 1)]
        }
        self._pos = _Rows(L, lambda k: summed(position_attrs(k)), 10_000)

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
        """Per-token label scores of all sequences, concatenated: ``(E, lengths)``."""
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.intp, count=len(seqs))
        flat = [k for s in seqs for k in s]
        lid = self._local.ids(flat)
        E = self._local.buf[lid]
        pos_keys = [position_key(t, n) for n in lengths.tolist() for t in range(n)]
        E += self._pos.buf[self._pos.ids(pos_keys)]
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(seqs) else lengths
        t_in = np.arange(len(flat)) - np.repeat(starts, lengths)
        n_of = np.repeat(lengths, lengths)
        for o, rows in self._ctx.items():
            src = np.arange(len(flat)) + o
            ok = (t_in + o >= 0) & (t_in + o < n_of)
            ids = np.zeros(len(flat), dtype=np.intp)
            if ok.any():
                ids[ok] = rows.ids([flat[i] for i in src[ok].tolist()])
            E += rows.buf[ids]
        return E, lengths

    # -- dynamic programmes on padded chunks -----------------------------------------------
    def chunks(self, E: np.ndarray, lengths: np.ndarray):
        """Yield ``(rows, Ep, lens)``: sequence indices, padded emissions ``(B, T, L)``, lengths."""
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
        order = np.argsort(lengths, kind="stable")
        for c in range(0, len(order), _CHUNK):
            rows = order[c : c + _CHUNK]
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
        for t in range(1, T):
            cand = delta[:, :, None] + self.transitions[None]
            bp = cand.argmax(1)
            new = np.take_along_axis(cand, bp[:, None, :], 1)[:, 0] + Ep[:, t]
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

    def marginals(self, Ep: np.ndarray, lens: np.ndarray) -> np.ndarray:
        """P(tag at position t = label), ``(B, T, L)``; zero on padding."""
        B, T, L = Ep.shape
        P = np.exp(Ep - Ep.max(2, keepdims=True))
        alpha = np.zeros((B, T, L))
        beta = np.ones((B, T, L))
        alpha[:, 0] = P[:, 0] / P[:, 0].sum(1, keepdims=True)
        for t in range(1, T):
            a = (alpha[:, t - 1] @ self._exp_t) * P[:, t]
            alpha[:, t] = a / a.sum(1, keepdims=True)
        last = lens - 1
        for t in range(T - 2, -1, -1):
            b = (beta[:, t + 1] * P[:, t + 1]) @ self._exp_t.T
            b = b / b.sum(1, keepdims=True)
            beta[:, t] = np.where((t < last)[:, None], b, 1.0)
        mu = alpha * beta
        mu /= mu.sum(2, keepdims=True)
        mu[np.arange(T)[None, :] >= lens[:, None]] = 0.0
        return mu

