"""From texts to decoded answers and their probabilities, a batch at a time.

For each text: the Viterbi tags, the answer they decode to, the probability of that *answer*
(not only of the tag path), and the smallest marginal probability among its tokens' tags.

The probability of a field record sums over every tag sequence that decodes to it. With IO tags
and the first-to-last rule of :mod:`.spans`, a sequence decodes to the record whose field ``f``
spans tokens ``i_f..j_f`` exactly when it tags ``i_f`` and ``j_f`` with ``f``, tags nothing
outside ``i_f..j_f`` with ``f``, and uses no other field; so one forward pass with a per-token
mask of allowed tags gives it exactly (``LinearChain.log_partition``). For entities (BIO), each
set of segments has one tag path, and the probability is the path's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .crf import LinearChain
from .features import token_keys
from .spans import OUTSIDE, EdgeRule, Token, decode_entities, decode_fields, tokenize

__all__ = ["Decoded", "decode_batch", "field_probabilities"]


@dataclass(slots=True)
class Decoded:
    """One text's decoded answer."""

    tokens: list[Token]
    words: list[str]  # lower-cased token cores
    tags: list[str]
    answer: dict[str, str] | list[tuple[str, str]]
    log_p: float  # log P(answer | text)
    min_marginal: float  # smallest P(tag of token t | text) along the decoded tags


def _one_hot(path: np.ndarray, lens: np.ndarray, L: int) -> np.ndarray:
    B, T = path.shape
    H = np.zeros((B, T, L), dtype=bool)
    H[np.arange(B)[:, None], np.arange(T)[None, :], path] = True
    H &= (np.arange(T)[None, :] < lens[:, None])[:, :, None]
    return H


def _extent(H: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """First and last position of each label, ``(B, L)``: ``T`` and ``-1`` when absent."""
    T = H.shape[1]
    present = H.any(1)
    first = np.where(present, H.argmax(1), T)
    last = np.where(present, T - 1 - H[:, ::-1].argmax(1), -1)
    return first, last


def _record_mask(path: np.ndarray, lens: np.ndarray, L: int, outside: int | None) -> np.ndarray:
    """Tags allowed at each position by "decodes to the same field record as ``path``"."""
    H = _one_hot(path, lens, L)
    first, last = _extent(H)
    t = np.arange(H.shape[1])[None, :, None]
    inside = (t >= first[:, None, :]) & (t <= last[:, None, :])
    if outside is not None:
        inside[:, :, outside] = True
    ends = ((t == first[:, None, :]) | (t == last[:, None, :])) & H
    forced = ends.any(2)
    return np.where(forced[:, :, None], H, inside)


def decode_batch(
    chain: LinearChain,
    texts: Sequence[str],
    rule: EdgeRule,
    target: str,
) -> list[Decoded]:
    """Decode every text; ``target`` is ``"fields"`` (IO tags) or ``"entities"`` (BIO)."""
    tokens = [tokenize(t) for t in texts]
    out: list[Decoded | None] = [None] * len(texts)
    idx = [i for i, tk in enumerate(tokens) if tk]
    for i, tk in enumerate(tokens):
        if not tk:  # nothing to tag: the only answer a substring-based record can have
            out[i] = Decoded(tk, [], [], {} if target == "fields" else [], 0.0, 1.0)
    if not idx:
        return out  # type: ignore[return-value]
    keys = [token_keys(tokens[i]) for i in idx]
    E, lengths = chain.emissions(keys)
    outside = chain.label_index.get(OUTSIDE)
    L = len(chain.labels)
    for rows, Ep, lens in chain.chunks(E, lengths):
        path, best = chain.viterbi(Ep, lens)
        mu, logz = chain.marginals(Ep, lens)
        if target == "fields":
            log_p = chain.log_partition(Ep, lens, _record_mask(path, lens, L, outside)) - logz
        else:
            log_p = best - logz
        mp = np.take_along_axis(mu, path[:, :, None], 2)[:, :, 0]
        mp[np.arange(Ep.shape[1])[None, :] >= lens[:, None]] = 1.0
        min_mp = mp.min(1)
        for b, r in enumerate(rows.tolist()):
            i = idx[r]
            tags = [chain.labels[k] for k in path[b, : lens[b]].tolist()]
            text, tk = texts[i], tokens[i]
            answer = (
                decode_fields(text, tk, tags, rule)
                if target == "fields"
                else decode_entities(text, tk, tags, rule)
            )
            words = [k[0][k[1] : k[2]].lower() for k in keys[r]]
            out[i] = Decoded(tk, words, tags, answer, float(min(log_p[b], 0.0)), float(min_mp[b]))
    return out  # type: ignore[return-value]


def field_probabilities(chain: LinearChain, decoded: Sequence[Decoded]) -> list[dict[str, float]]:
    """P(field has exactly its decoded value | text) for each field a record holds.

    One masked forward pass per field label: the field's ends forced onto its decoded ends, the
    field nowhere else outside them; every other tag free.
    """
    keep = [i for i, d in enumerate(decoded) if d.tokens]
    out: list[dict[str, float]] = [{} for _ in decoded]
    if not keep:
        return out
    E, lengths = chain.emissions([token_keys(decoded[i].tokens) for i in keep])
    L = len(chain.labels)
    outside = chain.label_index.get(OUTSIDE)
    for rows, Ep, lens in chain.chunks(E, lengths):
        B, T, _ = Ep.shape
        path = np.zeros((B, T), dtype=np.intp)
        for b, r in enumerate(rows.tolist()):
            tags = decoded[keep[r]].tags
            path[b, : len(tags)] = [chain.label_index[t] for t in tags]
            path[b, len(tags) :] = path[b, len(tags) - 1]
        H = _one_hot(path, lens, L)
        first, last = _extent(H)
        logz = chain.log_partition(Ep, lens)
        t = np.arange(T)[None, :]
        for lab in range(L):
            if lab == outside or not H[:, :, lab].any():
                continue
            has = H[:, :, lab].any(1)
            allowed = np.ones((B, T, L), dtype=bool)
            span = (t >= first[:, lab, None]) & (t <= last[:, lab, None])
            allowed[:, :, lab] = span
            ends = (t == first[:, lab, None]) | (t == last[:, lab, None])
            allowed[ends] = False
            allowed[:, :, lab] |= ends
            lp = chain.log_partition(Ep, lens, allowed) - logz
            for b in np.flatnonzero(has).tolist():
                out[keep[rows[b]]][chain.labels[lab]] = float(np.exp(min(lp[b], 0.0)))
    return out

