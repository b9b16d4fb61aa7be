"""The prompt protocol: the messages sent to a teacher, the label schema, and parsing answers.

Shared by the teacher, the replay teacher and the gateway: the system message carries
the task's instructions and labels; **the text to classify is the whole content of the
first user message**. Re-exported by :mod:`downsize.teacher`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from .config import TaskConfig

__all__ = ["build_messages", "label_schema", "parse_label"]


def build_messages(task: TaskConfig, text: str) -> list[dict[str, str]]:
    """The chat messages that ask the teacher to label ``text``.

    The system message holds the instructions and the labels; the user message's content
    is exactly ``text`` (the protocol the replay teacher and the gateway rely on).
    """
    lines = [task.instructions.strip(), "", "Labels:"]
    for name, desc in task.labels.items():
        lines.append(f"- {name}: {desc}" if desc else f"- {name}")
    lines += ["", "Answer with exactly one label from the list, written exactly as shown, and nothing else."]
    return [{"role": "system", "content": "\n".join(lines)}, {"role": "user", "content": text}]


def label_schema(task: TaskConfig) -> dict[str, Any]:
    """JSON schema of an answer: ``{"label": <one of the task's labels>}``."""
    return {
        "type": "object",
        "properties": {"label": {"type": "string", "enum": list(task.labels)}},
        "required": ["label"],
        "additionalProperties": False,
    }


def _content_text(content: Any) -> str:
    """The text of a message's ``content``: a string, or OpenAI content parts joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def _response_format(schema: dict[str, Any], style: str) -> dict[str, Any] | None:
    if style == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "label", "strict": True, "schema": schema}}
    if style == "json_object":
        return {"type": "json_object", "schema": schema}
    return None


_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.S)
_OBJECT = re.compile(r"\{[^{}]*\}", re.S)
_PREFIX = re.compile(
    r"^(?:the\s+)?(?:label|answer|category|class|classification|topic)\s*(?:is)?\s*[:=\-]?\s*(.+)$",
    re.I | re.S,
)
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")


def _norm(s: str) -> str:
    """Compare labels ignoring case, whitespace and punctuation."""
    key = re.sub(r"[\W_]+", "", s.casefold())
    return key or " ".join(s.casefold().split())


def _match(candidate: str, labels: Sequence[str]) -> str | None:
    key = _norm(candidate)
    hits = [lab for lab in labels if _norm(lab) == key]
    return hits[0] if len(hits) == 1 else None


def parse_label(raw: str, labels: Sequence[str]) -> str | None:
    """Map a teacher's answer to exactly one of ``labels``, or None.

    Accepts ``{"label": "x"}`` (also inside a code fence or surrounded by prose), a JSON
    string, the bare label, a quoted label, ``Label: x`` / ``Answer: x``, ignoring case,
    whitespace and punctuation. Returns None when no label, or more than one, matches:
    it never guesses.

    Examples
    --------
    >>> parse_label('```json\\n{"label": "Billing"}\\n```', ["billing", "technical"])
    'billing'
    >>> parse_label("Label: technical.", ["billing", "technical"])
    'technical'
    >>> parse_label("billing or technical", ["billing", "technical"]) is None
    True
    """
    if not isinstance(raw, str) or not labels:
        return None
    text = raw.strip()
    fenced = _FENCE.match(text)
    if fenced:
        text = fenced.group(1).strip()
    candidates: list[str] = []
    for blob in [text, *_OBJECT.findall(text)]:
        try:
            obj = json.loads(blob)
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            value = next((v for k, v in obj.items() if str(k).casefold() == "label"), None)
            if isinstance(value, str):
                candidates.append(value)
        elif isinstance(obj, str):
            candidates.append(obj)
        break  # the first JSON value decides; never look further into prose
    if not candidates:
        candidates.append(text)
        m = _PREFIX.match(text)
        if m:
            candidates.append(m.group(1))
    for cand in candidates:
        cand = _EDGE.sub("", cand.strip()) or cand.strip()
        hit = _match(cand, labels)
        if hit is not None:
            return hit
    return None
