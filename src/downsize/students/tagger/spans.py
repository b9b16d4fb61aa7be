"""Tokens with character offsets, teacher records aligned onto them, tag sequences decoded back.

An *extract* teacher answers, for a text, a record of named fields (``{"ZipCode": "60201"}``)
and/or a list of entity mentions (``[("Paris", "LOC")]``); it gives values, never offsets. A
tagger learns one tag per token, so this module maps between the two:

* :func:`tokenize` splits a text into :class:`Token` s: a word (letters/digits, keeping inner
  ``- ' . /`` as in ``94080-4918``, ``O'Neil``, ``P.O``) with the punctuation glued to it
  (``"(St.,"``: core ``St``, leading ``(``, trailing ``.,``), or a free-standing run of
  punctuation (``&``, ``#``). Each token keeps its character offsets.
* :func:`~.align.align_fields` / :func:`~.align.align_entities` find each teacher value in the text,
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
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ...tasks.fields import normalise_value

__all__ = [
    "Token",
    "EdgeRule",
    "tokenize",
    "normalise_value",
    "normalise_record",
    "normalise_entities",
    "decode_fields",
    "decode_entities",
    "OUTSIDE",
]

OUTSIDE = "O"
_PIECE = re.compile(r"(\w+(?:[-'’./]\w+)*)|[^\w\s]")
_SPACE = re.compile(r"\s+")


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
    return sorted({(normalise_value(t), ty) for t, ty in map(mention, mentions) if normalise_value(t)})


def mention(m: Sequence[str] | Mapping[str, str]) -> tuple[str, str]:
    if isinstance(m, Mapping):
        return str(m["text"]), str(m["type"])
    text, typ = m
    return str(text), str(typ)

def spans_of(tags: Sequence[str]) -> dict[str, tuple[int, int]]:
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
    for f, (i, j) in spans_of(tags).items():
        a, b = rule.value_range(tokens[i], tokens[j])
        out[f] = text[a:b]
    return out


def segments(tags: Sequence[str]) -> list[tuple[int, int, str]]:
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
    for i, j, typ in segments(tags):
        a, b = rule.value_range(tokens[i], tokens[j])
        out.add((text[a:b], typ))
    return sorted(out)

