"""What the replay teacher answers: a recorded answer as a completion's content, and its noise.

A recorded answer is a label (``classify``) or the JSON of a structured answer, as
:func:`downsize.data.read_texts` reads a file's answer column: a list of labels (``multilabel``),
an object of fields, or a list of ``{text, type}`` mentions (``extract``). Asked for JSON (a
``response_format``), the replay answers the object the task kind's schema describes:
``{"label": ...}``, ``{"labels": [...]}``, the fields object, ``{"entities": [...]}``; a structured
answer is always JSON.

Noise (a seeded, per-text-deterministic share of wrong answers) is kind-aware: another label; a
label dropped or added; a field dropped or altered (its last word cut, or a word of the text in
its place); a mention dropped.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from typing import Any

__all__ = ["content_for", "noisy", "structured_value", "vocabulary"]


def structured_value(recorded: str) -> Any:
    """The JSON value of a recorded structured answer, or None for a plain label."""
    s = recorded.strip()
    if not s or s[0] not in "[{":
        return None
    try:
        value = json.loads(s)
    except ValueError:
        return None
    return value if isinstance(value, (list, dict)) else None


def vocabulary(recorded: Sequence[str]) -> list[str]:
    """The labels noise may swap in: the plain labels, and every label of recorded label lists."""
    out: set[str] = set()
    for r in recorded:
        value = structured_value(r)
        if value is None:
            out.add(r)
        elif isinstance(value, list):
            out.update(x for x in value if isinstance(x, str))
    return sorted(out)


def content_for(recorded: str, *, json_mode: bool) -> str:
    """The message content for a recorded answer (see the module docstring)."""
    value = structured_value(recorded)
    if value is None:
        return json.dumps({"label": recorded}) if json_mode else recorded
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False)
    if value and all(isinstance(m, dict) for m in value):
        return json.dumps({"entities": value}, ensure_ascii=False)
    return json.dumps({"labels": value}, ensure_ascii=False)


def noisy(recorded: str, text: str, rng: random.Random, vocab: Sequence[str]) -> str:
    """A wrong version of ``recorded`` for ``text`` (``rng`` is seeded by the text: deterministic;
    ``vocab`` is :func:`vocabulary` of the records, or the task's labels)."""
    value = structured_value(recorded)
    if value is None:
        others = [x for x in vocab if x != recorded]
        return others[rng.randrange(len(others))] if others else recorded
    if isinstance(value, dict):
        if not value:
            return recorded
        key = sorted(value)[rng.randrange(len(value))]
        words = str(value[key]).split()
        if rng.random() < 0.5 or len(words) < 2:
            alt = [w for w in text.split() if w not in words]
            if rng.random() < 0.5 or not alt:
                value.pop(key)
            else:
                value[key] = alt[rng.randrange(len(alt))]
        else:
            value[key] = " ".join(words[:-1])
        return json.dumps(value, ensure_ascii=False)
    if value and all(isinstance(m, dict) for m in value):
        value.pop(rng.randrange(len(value)))
        return json.dumps(value, ensure_ascii=False)
    missing = [x for x in vocab if x not in value]
    if value and (rng.random() < 0.5 or not missing):
        value.pop(rng.randrange(len(value)))
    elif missing:
        value.append(missing[rng.randrange(len(missing))])
    return json.dumps(sorted(value), ensure_ascii=False)
