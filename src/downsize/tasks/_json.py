"""Reading the JSON a teacher answered, and matching names the way every kind does."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from ..errors import AnswerError

__all__ = ["read_json", "match_name", "norm_name"]

_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.S)


def read_json(raw: str) -> Any:
    """The JSON value of a completion: the whole text, a fenced block, or the first JSON object or
    array in surrounding prose (the rest ignored). Truncated or invalid JSON is an
    :class:`~downsize.errors.AnswerError` saying where it broke.

    >>> read_json('Sure: ```json\\n{"labels": ["a"]}\\n```'.split(": ", 1)[1])
    {'labels': ['a']}
    >>> read_json('The answer is {"x": 1}.')
    {'x': 1}
    """
    if not isinstance(raw, str):
        raise AnswerError(f"expected JSON text, got {type(raw).__name__}")
    text = raw.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as first:
        starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
        if starts:
            try:
                value, _ = json.JSONDecoder().raw_decode(text[min(starts):])
                return value
            except (ValueError, RecursionError):
                pass
        shown = raw if len(raw) <= 120 else raw[:117] + "..."
        raise AnswerError(f"answer {shown!r} is not valid JSON ({first})") from None


def norm_name(s: str) -> str:
    """A name compared ignoring case, whitespace and punctuation."""
    key = re.sub(r"[\W_]+", "", s.casefold())
    return key or " ".join(s.casefold().split())


def match_name(candidate: str, names: Sequence[str]) -> str | None:
    """The one name of ``names`` that ``candidate`` spells (ignoring case, whitespace and
    punctuation), or None when none or several do: it never guesses. A name spelt exactly, or
    exactly but for case and whitespace, wins over names that differ from it only in punctuation
    (``devel::lang:c`` is not ambiguous with ``devel::lang:c++``)."""
    if candidate in names:
        return candidate
    for key_of in (lambda s: " ".join(s.casefold().split()), norm_name):
        key = key_of(candidate)
        hits = [n for n in names if key_of(n) == key]
        if hits:
            return hits[0] if len(hits) == 1 else None
    return None
