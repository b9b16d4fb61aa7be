"""Generic token features for the extraction tagger: nothing specific to one kind of text.

A token's features are the union of its own (*local*) attributes, the *context* attributes of
its neighbours up to ``WINDOW`` tokens away (prefixed with the offset, ``-1:w=main``), and
*position* attributes (distance to either end, bucketed length of the text). Every attribute of
a position comes from one token or from the position alone, never from a pair of tokens, so the
tagger can sum the weights of each token's attributes once per distinct token
(:meth:`downsize.students.crf.LinearChain.emissions` caches these sums) instead of once per
occurrence.

What the attributes are, and why: the lower-cased word and its digit-blind form (``0000`` for a
year or a number), the shape (``Xx``, ``dd-dd``) short and long, prefixes and suffixes of 1–3
characters, character-class flags, the length, and whether whitespace separates the token from
its neighbours, and the punctuation glued before and after it (``St.`` vs ``St,``). These are the standard features of CRF
taggers for names, addresses and NER (Lafferty et al. 2001; the CoNLL-2003 feature sets), with
no word lists of any language or domain.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .spans import Token

__all__ = [
    "WINDOW",
    "TokenKey",
    "token_keys",
    "key_core",
    "local_attrs",
    "context_attrs",
    "position_key",
    "position_keys",
    "position_attrs",
    "item_attrs",
]

#: Neighbours seen on each side.
WINDOW = 2
#: (token text, core start, core end — both relative to the token —, whitespace before,
#: whitespace after): everything a token's own attributes depend on, without slicing strings
#: for tokens whose attributes are already cached.
TokenKey = tuple[str, int, int, bool, bool]


def token_keys(tokens: Sequence[Token]) -> list[TokenKey]:
    n = len(tokens)
    return [
        (t.text, t.core_start - t.start, t.core_end - t.start, t.space_before,
         i + 1 == n or tokens[i + 1].space_before)
        for i, t in enumerate(tokens)
    ]


def key_core(key: TokenKey) -> str:
    return key[0][key[1] : key[2]]


def _shape(word: str, run: int) -> str:
    """Character classes (X x d, other characters kept), runs cut at ``run`` characters."""
    out: list[str] = []
    last, count = "", 0
    for c in word:
        k = "X" if c.isupper() else "x" if c.isalpha() else "d" if c.isdigit() else c
        if k == last:
            count += 1
            if count > run:
                continue
        else:
            last, count = k, 1
        out.append(k)
    return "".join(out)


def _length(n: int) -> str:
    return str(n) if n <= 6 else "7-9" if n <= 9 else "10+"


def local_attrs(key: TokenKey) -> list[str]:
    """The attributes a token contributes at its own position."""
    text, a, b, before, after = key
    word, lead, trail = text[a:b], text[:a], text[b:]
    low = word.lower()
    attrs = [
        "w=" + low,
        "lp=" + lead[-2:],
        "tp=" + trail[:2],
        "sh=" + _shape(word, 1),
        "shl=" + _shape(word[:12], 4),
        "len=" + _length(len(word)),
        "p1=" + low[:1],
        "s1=" + low[-1:],
    ]
    if len(word) > 2:
        attrs += ["p2=" + low[:2], "s2=" + low[-2:]]
    if len(word) > 3:
        attrs += ["p3=" + low[:3], "s3=" + low[-3:]]
    has_digit = any(c.isdigit() for c in word)
    has_alpha = any(c.isalpha() for c in word)
    if has_digit:
        attrs.append("n=" + "".join("0" if c.isdigit() else c for c in low))
        if word.isdigit():
            attrs.append("digits")
        elif has_alpha:
            attrs.append("alnum")
    if has_alpha:
        if word.isupper():
            attrs.append("upper")
        elif word[:1].isupper():
            attrs.append("title")
        elif word.islower():
            attrs.append("lower")
    if not has_digit and not has_alpha:
        attrs.append("punct")
    if not before:
        attrs.append("glued_left")
    if not after:
        attrs.append("glued_right")
    return attrs


def context_attrs(key: TokenKey) -> list[str]:
    """The attributes a token shows its neighbours (prefixed with the offset by the caller)."""
    text, a, b, _, _ = key
    word, lead, trail = text[a:b], text[:a], text[b:]
    low = word.lower()
    attrs = ["w=" + low, "sh=" + _shape(word, 1), "s3=" + low[-3:], "tp=" + trail[:2], "lp=" + lead[-2:]]
    if any(c.isdigit() for c in word):
        attrs.append("n=" + "".join("0" if c.isdigit() else c for c in low))
    return attrs


_BUCKETS = ("1", "2", "3", "4", "5-7", "8-12", "13+")


def _bucket(n: int) -> int:
    return n - 1 if n <= 4 else 4 if n <= 7 else 5 if n <= 12 else 6


def position_key(t: int, n: int) -> int:
    """All that :func:`position_attrs` depends on, as one integer: the distances to both ends
    (capped at 4) and the bucket of the text's length."""
    return (min(t, 4) * 5 + min(n - 1 - t, 4)) * 8 + _bucket(n)


def position_keys(lengths: np.ndarray) -> np.ndarray:
    """:func:`position_key` of every position of texts of the given lengths, concatenated."""
    n = np.repeat(lengths, lengths)
    starts = np.cumsum(lengths) - lengths
    t = np.arange(len(n)) - np.repeat(starts, lengths)
    b = np.select([n <= 4, n <= 7, n <= 12], [n - 1, 4, 5], 6)
    return (np.minimum(t, 4) * 5 + np.minimum(n - 1 - t, 4)) * 8 + b


def position_attrs(key: int) -> list[str]:
    """Attributes of a position (its :func:`position_key`), including missing neighbours."""
    ij, nb = divmod(key, 8)
    i, j = divmod(ij, 5)
    attrs = ["bias", f"i={i}", f"j={j}", "ntok=" + _BUCKETS[nb]]
    for o in range(1, WINDOW + 1):  # WINDOW < 4: the capped distances still tell
        if i < o:
            attrs.append(f"-{o}:BOS")
        if j < o:
            attrs.append(f"+{o}:EOS")
    return attrs


def item_attrs(keys: Sequence[TokenKey]) -> list[list[str]]:
    """Every attribute of every position: the training input of crfsuite."""
    n = len(keys)
    local = [local_attrs(k) for k in keys]
    ctx = [context_attrs(k) for k in keys]
    out = []
    for t in range(n):
        attrs = list(local[t])
        for o in range(1, WINDOW + 1):
            if t - o >= 0:
                attrs += [f"-{o}:{a}" for a in ctx[t - o]]
            if t + o < n:
                attrs += [f"+{o}:{a}" for a in ctx[t + o]]
        attrs += position_attrs(position_key(t, n))
        out.append(attrs)
    return out
