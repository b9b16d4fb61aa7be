"""Placing a teacher's values on the tokens of its text (see :mod:`.spans` for the rules).

A value is looked for at two levels: the same non-space characters (case-folded), else the
same letters and digits (``"PO Box"`` finds ``"P.O. Box"``); it must start at a token's start
or core and end at a token's core end or end, so glued punctuation may be in or out. When a
value occurs more than once, or values overlap, a bounded depth-first search picks the
placement (:func:`_place`). What cannot be placed is reported, never raised.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from .spans import OUTSIDE, Token, mention, normalise_value, spans_of

__all__ = ["Alignment", "align_fields", "align_entities"]

#: Depth-first search budget when several placements of the values compete.
_SEARCH_BUDGET = 400


@dataclass(slots=True)
class Alignment:
    """Tags for the tokens of one text, and the teacher values that could not be placed.

    ``missing`` holds ``(field or type, value, reason)`` triples; ``reason`` is ``"not found"``
    (no run of whole tokens, give or take glued punctuation, spells the value) or
    ``"conflict"`` (every place it could go is taken by another value's ends, or by a longer
    mention). ``edges`` holds ``(side, char, kept)`` for the glued punctuation next to each
    placed value's ends, for :meth:`EdgeRule.learn`.
    """

    tags: list[str]
    missing: list[tuple[str, str, str]] = field(default_factory=list)
    #: field/type → token spans ``(first, last)`` placed (inclusive)
    spans: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    edges: list[tuple[str, str, bool]] = field(default_factory=list)

# -- finding a value among the tokens --------------------------------------------------------
class _Skeleton:
    """The text's characters kept by ``keep``, case-folded, with their original offsets."""

    __slots__ = ("chars", "offsets")

    def __init__(self, text: str, keep) -> None:
        chars, offsets = [], []
        for i, c in enumerate(text):
            if keep(c):
                folded = unicodedata.normalize("NFKC", c).casefold()
                chars.append(folded)
                offsets.extend([i] * len(folded))
        self.chars = "".join(chars)
        self.offsets = offsets


def _not_space(c: str) -> bool:
    return not c.isspace()


def _alnum(c: str) -> bool:
    return c.isalnum()


class _Finder:
    """Where a value is spelt: same non-space characters (level 0), else same letters and
    digits (level 1), from a token's start or core start to a token's core end or end (glued
    punctuation may be in or out). Each place is ``(first, last, level, start, end)``."""

    def __init__(self, text: str, tokens: Sequence[Token]) -> None:
        self.levels = [_Skeleton(text, _not_space), _Skeleton(text, _alnum)]
        self.first_at: dict[int, int] = {}
        self.last_at: dict[int, int] = {}
        for i, t in enumerate(tokens):
            for c in range(t.start, t.core_start + 1):
                self.first_at[c] = i
            for c in range(t.core_end, t.end + 1):
                self.last_at[c] = i

    def spans(self, value: str) -> list[tuple[int, int, int, int, int]]:
        found: dict[tuple[int, int], tuple[int, int, int]] = {}
        for lv, (level, keep) in enumerate(zip(self.levels, (_not_space, _alnum))):
            key = _Skeleton(value, keep).chars
            if not key:
                continue
            pos = level.chars.find(key)
            while pos >= 0:
                a = level.offsets[pos]
                b = level.offsets[pos + len(key) - 1] + 1
                i, j = self.first_at.get(a), self.last_at.get(b)
                if i is not None and j is not None and i <= j:
                    found.setdefault((i, j), (lv, a, b))
                pos = level.chars.find(key, pos + 1)
        return [(i, j, lv, a, b) for (i, j), (lv, a, b) in found.items()]


def _edges(tokens: Sequence[Token], text: str, i: int, j: int, a: int, b: int):
    """What a value spelt ``text[a:b]`` over tokens ``i..j`` did with glued punctuation."""
    first, last = tokens[i], tokens[j]
    for c in range(first.core_start - 1, first.start - 1, -1):
        yield ("lead", text[c], c >= a)
        if c < a:
            break
    for c in range(last.core_end, last.end):
        yield ("trail", text[c], c < b)
        if c >= b:
            break


# -- fields -----------------------------------------------------------------------------------
def _field_tags(n: int, placed: Mapping[str, tuple[int, int]]) -> list[str] | None:
    """IO tags for placed field spans, or None when two values need the same end token."""
    tags = [OUTSIDE] * n
    order = sorted(placed, key=lambda f: (placed[f][1] - placed[f][0], placed[f][0], f))
    for f in order:
        for end in set(placed[f]):
            if tags[end] != OUTSIDE:
                return None
            tags[end] = f
    for f in order:  # shortest first: inner values keep their tokens
        i, j = placed[f]
        for t in range(i + 1, j):
            if tags[t] == OUTSIDE:
                tags[t] = f
    return tags

def align_fields(text: str, tokens: Sequence[Token], record: Mapping[str, str]) -> Alignment:
    """IO tags that :func:`~.spans.decode_fields` turns back into ``record`` (its placeable part).

    Each value is looked up among ``tokens`` (whitespace/case-insensitive, then ignoring
    punctuation); when a value occurs more than once, or values overlap, a bounded search picks
    a placement under which every placed value decodes back unchanged (see :func:`_place` for
    the preference). Values with no placement are listed in ``Alignment.missing`` and left
    untagged.

    >>> from downsize.students.spans import tokenize
    >>> text = "John & Jill Hester"
    >>> a = align_fields(text, tokenize(text), {"GivenName": "John & Jill", "And": "&", "Surname": "hester"})
    >>> a.tags, a.missing
    (['GivenName', 'And', 'GivenName', 'Surname'], [])
    >>> align_fields("Ann Lee", tokenize("Ann Lee"), {"GivenName": "Bob"}).missing
    [('GivenName', 'Bob', 'not found')]
    """
    finder = _Finder(text, tokens)
    missing: list[tuple[str, str, str]] = []
    cands: dict[str, list[tuple[int, int, int, int, int]]] = {}
    rank: dict[str, int] = {}
    for f, v in record.items():
        if not isinstance(v, str) or not normalise_value(v):
            continue  # an empty value means "absent"
        rank[f] = len(rank)
        spans = finder.spans(v)
        if spans:
            cands[f] = sorted(spans, key=lambda s: (s[2], s[0]))
        else:
            missing.append((f, v, "not found"))
    placed = _place(cands, rank, len(tokens))
    tags = _field_tags(len(tokens), {f: s[:2] for f, s in placed.items()}) or [OUTSIDE] * len(tokens)
    for f in cands:
        if f not in placed:
            missing.append((f, record[f], "conflict"))
    edges = [e for i, j, _, a, b in placed.values() for e in _edges(tokens, text, i, j, a, b)]
    return Alignment(tags, missing, {f: [s[:2]] for f, s in placed.items()}, edges)


def _place(
    cands: dict[str, list[tuple[int, int, int, int, int]]], rank: dict[str, int], n: int
) -> dict[str, tuple[int, int, int, int, int]]:
    """The best placement of the values: most placed, then fewest punctuation-blind matches,
    then fewest pairs placed in the opposite order to the record's (a teacher lists fields in
    reading or schema order; this settles "Chicago" the street vs "Chicago" the city), then
    fewest values nested in others.
    Depth-first over the values with the fewest candidates first, within a node budget."""
    order = sorted(cands, key=lambda f: (len(cands[f]), rank[f]))
    best: list = [None, {}]
    budget = [_SEARCH_BUDGET]

    def score(placed: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
        fs = sorted(placed, key=rank.__getitem__)
        inversions = sum(
            placed[f][0] > placed[g][0] for k, f in enumerate(fs) for g in fs[k + 1 :]
        )
        overlaps = sum(
            placed[f][0] <= placed[g][1] and placed[g][0] <= placed[f][1]
            for k, f in enumerate(fs)
            for g in fs[k + 1 :]
        )
        return (-len(placed), sum(s[2] for s in placed.values()), inversions, overlaps)

    def consider(placed: dict[str, tuple[int, ...]]) -> None:
        sc = score(placed)
        if best[0] is None or sc < best[0]:
            best[0], best[1] = sc, dict(placed)

    def search(k: int, placed: dict[str, tuple[int, ...]]) -> None:
        if k == len(order):
            consider(placed)
            return
        f = order[k]
        fitted = False
        for span in cands[f]:
            if budget[0] <= 0:
                break
            budget[0] -= 1
            placed[f] = span
            tags = _field_tags(n, {g: s[:2] for g, s in placed.items()})
            if tags is not None and spans_of(tags) == {g: s[:2] for g, s in placed.items()}:
                fitted = True
                search(k + 1, placed)
            del placed[f]
        if not fitted and budget[0] > 0:  # this value cannot go with the others: skip it
            search(k + 1, placed)
        elif budget[0] <= 0:
            consider(placed)

    search(0, {})
    return best[1]


def align_entities(
    text: str, tokens: Sequence[Token], mentions: Iterable[Sequence[str] | Mapping[str, str]]
) -> Alignment:
    """BIO tags marking every occurrence of each ``(text, type)`` mention.

    Longer mentions are placed first; a mention whose every occurrence overlaps an already
    placed one is listed in ``missing`` as a conflict (flat tags cannot nest).

    >>> from downsize.students.spans import tokenize
    >>> text = "Paris and paris, Texas"
    >>> a = align_entities(text, tokenize(text), [("Paris", "LOC"), ("Paris, Texas", "LOC")])
    >>> a.tags, a.missing
    (['B-LOC', 'O', 'B-LOC', 'I-LOC'], [])
    """
    finder = _Finder(text, tokens)
    tags = [OUTSIDE] * len(tokens)
    missing: list[tuple[str, str, str]] = []
    placed: dict[str, list[tuple[int, int]]] = {}
    edges: list[tuple[str, str, bool]] = []
    pairs = sorted({mention(m) for m in mentions}, key=lambda p: (-len(p[0]), p))
    for value, typ in pairs:
        if not normalise_value(value):
            continue
        where = {(i, j): (a, b) for i, j, _, a, b in finder.spans(value)}
        spans = list(where)
        if not spans:
            missing.append((typ, value, "not found"))
            continue
        free = [(i, j) for i, j in spans if all(tags[t] == OUTSIDE for t in range(i, j + 1))]
        covered = any(  # an occurrence already inside a same-type mention is not a conflict
            all(tags[t].endswith("-" + typ) for t in range(i, j + 1)) for i, j in spans
        )
        if not free:
            if not covered:
                missing.append((typ, value, "conflict"))
            continue
        for i, j in free:
            tags[i] = "B-" + typ
            for t in range(i + 1, j + 1):
                tags[t] = "I-" + typ
            placed.setdefault(typ, []).append((i, j))
            edges += _edges(tokens, text, i, j, *where[(i, j)])
    return Alignment(tags, missing, placed, edges)
