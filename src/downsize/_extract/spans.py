"""Tokens with character offsets, teacher records aligned onto them, tag sequences decoded back.

An *extract* teacher answers, for a text, a record of named fields (``{"ZipCode": "60201"}``)
and/or a list of entity mentions (``[("Paris", "LOC")]``); it gives values, never offsets. A
tagger learns one tag per token, so this module maps between the two:

* :func:`tokenize` splits a text into :class:`Token` s: a word (letters/digits, keeping inner
  ``- ' . /`` as in ``94080-4918``, ``O'Neil``, ``P.O``) with the punctuation glued to it
  (``"(St.,"``: core ``St``, leading ``(``, trailing ``.,``), or a free-standing run of
  punctuation (``&``, ``#``). Each token keeps its character offsets.
* :func:`align_fields` / :func:`align_entities` find each teacher value in the text,
  tolerating whitespace, case and punctuation differences (``"PO Box"`` finds ``"P.O. Box"``),
  and return per-token tags, the values they could not place (a teacher error for the caller
  to count, not an exception), and what the teacher did with glued punctuation at a value's
  ends (``"St.,"`` → ``"St."``: the period kept, the comma dropped).
* :class:`EdgeRule` learns that habit from the aligned answers (per character, the majority);
  :func:`decode_fields` / :func:`decode_entities` use it to turn tags back into values.

Keeping glued punctuation inside the token, rather than as tokens of its own, matters for a
linear-chain tagger: a separate ``.`` after ``N`` must be given the tag of ``N`` through the
transition weights alone, and the tagger gets that wrong often enough to cost whole records.

Field tags are IO tags (the field name, or ``"O"``). **A field is one value**: when its tag
appears in several places, the value is the text from the first tagged token to the last
(anything between included). That is also how the labelled sets downsize is measured on spell
multi-part values (``"Dr. Fandel & Dr."`` for a prefix around a surname), and it makes B/I tags
useless for fields, so the tagger has half the labels. Aligning overlapping values gives each
token to the shortest value that contains it but keeps the ends of every value, so the tags
decode back to the record. Entity tags are BIO (``"B-LOC"``, ``"I-LOC"``, ``"O"``): two
adjacent mentions of one type stay apart; an entity answer is a set of ``(text, type)`` pairs,
so every occurrence of a mention's text is tagged.

Values are returned as the text's own characters; comparisons between a student's and a
teacher's answer go through :func:`normalise_value` (Unicode NFKC, case-folded, whitespace
collapsed).
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

__all__ = [
    "Token",
    "Alignment",
    "EdgeRule",
    "tokenize",
    "normalise_value",
    "normalise_record",
    "normalise_entities",
    "align_fields",
    "align_entities",
    "decode_fields",
    "decode_entities",
    "OUTSIDE",
]

OUTSIDE = "O"
_PIECE = re.compile(r"(\w+(?:[-'’./]\w+)*)|[^\w\s]")
_SPACE = re.compile(r"\s+")
#: Depth-first search budget when several placements of the values compete.
_SEARCH_BUDGET = 400


class Token(NamedTuple):
    """``text[start:end]`` of the source: leading punctuation, ``text[core_start:core_end]``
    (the word, or the punctuation run of a free-standing token), trailing punctuation."""

    start: int
    core_start: int
    core_end: int
    end: int
    space_before: bool
    text: str

    @property
    def core(self) -> str:
        return self.text[self.core_start - self.start : self.core_end - self.start]

    @property
    def leading(self) -> str:
        return self.text[: self.core_start - self.start]

    @property
    def trailing(self) -> str:
        return self.text[self.core_end - self.start :]


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


def tokenize(text: str) -> list[Token]:
    """Split ``text`` into :class:`Token` s (words with their glued punctuation) with offsets.

    >>> [t.text for t in tokenize("P.O. Box 12, Chicago (IL) & co")]
    ['P.O.', 'Box', '12,', 'Chicago', '(IL)', '&', 'co']
    >>> tokenize("St., x")[0].trailing
    '.,'
    """
    pieces = [(m.start(), m.end(), m.group(1) is not None) for m in _PIECE.finditer(text)]
    out: list[Token] = []
    group: list[list[int]] = []  # [start, core_start, core_end, end, space_before]
    pending: list[int] | None = None  # punctuation waiting to lead a glued word
    prev_end = -1
    for a, b, word in pieces:
        glued = a == prev_end
        if word:
            if pending is not None and glued:
                group.append([pending[0], a, b, b, pending[4]])
            else:
                if pending is not None:
                    group.append(pending)
                group.append([a, a, b, b, not glued])
            pending = None
        elif glued and pending is not None:
            pending[2] = pending[3] = b
        elif glued and group:
            group[-1][3] = b
        else:
            if pending is not None:
                group.append(pending)
            pending = [a, a, b, b, not glued]
        prev_end = b
    if pending is not None:
        group.append(pending)
    for s, cs, ce, e, sp in group:
        out.append(Token(s, cs, ce, e, bool(sp), text[s:e]))
    return out


@dataclass(slots=True)
class EdgeRule:
    """Which glued punctuation a value keeps at its ends: per character, what the teacher did
    most often (``trailing["."] = True`` keeps ``St.``; ``trailing[","] = False`` drops the
    comma of ``Chicago,``). Characters never seen are dropped."""

    leading: dict[str, bool] = field(default_factory=dict)
    trailing: dict[str, bool] = field(default_factory=dict)

    @classmethod
    def learn(cls, edges: Iterable[tuple[str, str, bool]]) -> EdgeRule:
        counts: Counter[tuple[str, str, bool]] = Counter(edges)
        rule = cls()
        for side, table in (("lead", rule.leading), ("trail", rule.trailing)):
            chars = {c for sd, c, _ in counts if sd == side}
            for c in sorted(chars):
                table[c] = counts[(side, c, True)] > counts[(side, c, False)]
        return rule

    def value_range(self, first: Token, last: Token) -> tuple[int, int]:
        """Character range of a value from token ``first`` to token ``last``."""
        a = first.core_start
        while a > first.start and self.leading.get(first.text[a - 1 - first.start], False):
            a -= 1
        b = last.core_end
        while b < last.end and self.trailing.get(last.text[b - last.start], False):
            b += 1
        return a, b

    def to_json(self) -> dict[str, Any]:
        return {"leading": self.leading, "trailing": self.trailing}

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> EdgeRule:
        return cls(dict(obj.get("leading", {})), dict(obj.get("trailing", {})))


def normalise_value(value: str) -> str:
    """The form answers are compared in: NFKC, case-folded, whitespace collapsed and stripped.

    >>> normalise_value("  Main\\n STREET ")
    'main street'
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", value).casefold()).strip()


def normalise_record(record: Mapping[str, str]) -> dict[str, str]:
    """``{field: normalise_value(value)}`` without empty values: two records are the same
    answer when their normalised forms are equal."""
    out = {}
    for k, v in record.items():
        nv = normalise_value(v)
        if nv:
            out[k] = nv
    return out


def normalise_entities(mentions: Iterable[Sequence[str] | Mapping[str, str]]) -> list[tuple[str, str]]:
    """Sorted unique ``(normalised text, type)`` pairs (mentions as pairs or ``{text, type}``)."""
    return sorted({(normalise_value(t), ty) for t, ty in map(_mention, mentions) if normalise_value(t)})


def _mention(m: Sequence[str] | Mapping[str, str]) -> tuple[str, str]:
    if isinstance(m, Mapping):
        return str(m["text"]), str(m["type"])
    text, typ = m
    return str(text), str(typ)


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
    """IO tags that :func:`decode_fields` turns back into ``record`` (its placeable part).

    Each value is looked up among ``tokens`` (whitespace/case-insensitive, then ignoring
    punctuation); when a value occurs more than once, or values overlap, a bounded search picks
    a placement under which every placed value decodes back unchanged (see :func:`_place` for
    the preference). Values with no placement are listed in ``Alignment.missing`` and left
    untagged.

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
            if tags is not None and _spans_of(tags) == {g: s[:2] for g, s in placed.items()}:
                fitted = True
                search(k + 1, placed)
            del placed[f]
        if not fitted and budget[0] > 0:  # this value cannot go with the others: skip it
            search(k + 1, placed)
        elif budget[0] <= 0:
            consider(placed)

    search(0, {})
    return best[1]


def _spans_of(tags: Sequence[str]) -> dict[str, tuple[int, int]]:
    spans: dict[str, tuple[int, int]] = {}
    for t, tag in enumerate(tags):
        if tag != OUTSIDE:
            spans[tag] = (spans[tag][0], t) if tag in spans else (t, t)
    return spans


def decode_fields(
    text: str, tokens: Sequence[Token], tags: Sequence[str], rule: EdgeRule | None = None
) -> dict[str, str]:
    """``{field: text from its first tagged token to its last}``, in order of first token;
    glued punctuation at the ends is kept as ``rule`` says (by default: dropped).

    >>> text = "Dr. Ann Lee,"
    >>> decode_fields(text, tokenize(text), ["Prefix", "Given", "Surname"], EdgeRule(trailing={".": True}))
    {'Prefix': 'Dr.', 'Given': 'Ann', 'Surname': 'Lee'}
    """
    rule = rule or EdgeRule()
    out = {}
    for f, (i, j) in _spans_of(tags).items():
        a, b = rule.value_range(tokens[i], tokens[j])
        out[f] = text[a:b]
    return out


# -- entities ---------------------------------------------------------------------------------
def align_entities(
    text: str, tokens: Sequence[Token], mentions: Iterable[Sequence[str] | Mapping[str, str]]
) -> Alignment:
    """BIO tags marking every occurrence of each ``(text, type)`` mention.

    Longer mentions are placed first; a mention whose every occurrence overlaps an already
    placed one is listed in ``missing`` as a conflict (flat tags cannot nest).

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
    pairs = sorted({_mention(m) for m in mentions}, key=lambda p: (-len(p[0]), p))
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


def _segments(tags: Sequence[str]) -> list[tuple[int, int, str]]:
    """``(first, last, type)`` of each BIO segment; a stray ``I-x`` starts a segment."""
    segs: list[tuple[int, int, str]] = []
    for t, tag in enumerate(tags):
        if tag == OUTSIDE:
            continue
        prefix, _, typ = tag.partition("-")
        if prefix == "I" and segs and segs[-1][1] == t - 1 and segs[-1][2] == typ:
            segs[-1] = (segs[-1][0], t, typ)
        else:
            segs.append((t, t, typ))
    return segs


def decode_entities(
    text: str, tokens: Sequence[Token], tags: Sequence[str], rule: EdgeRule | None = None
) -> list[tuple[str, str]]:
    """Sorted unique ``(text, type)`` mentions of a BIO tag sequence (text as written;
    glued punctuation at the ends as ``rule`` says).

    >>> text = "Paris and Rome."
    >>> decode_entities(text, tokenize(text), ["B-LOC", "O", "B-LOC"])
    [('Paris', 'LOC'), ('Rome', 'LOC')]
    """
    rule = rule or EdgeRule()
    out = set()
    for i, j, typ in _segments(tags):
        a, b = rule.value_range(tokens[i], tokens[j])
        out.add((text[a:b], typ))
    return sorted(out)
