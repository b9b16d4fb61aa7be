"""The prompt protocol shared by the teacher, the replay teacher and the gateway.

The system message is the task's :meth:`~downsize.tasks.TaskConfig.prompt` (instructions, the
answer set or fields, how to answer); **the text is the whole content of the first user
message**. A repair retry appends the bad assistant answer and a user message asking again, so a
server that looks texts up (the replay teacher) finds the text in the first user message.
"""

from __future__ import annotations

from typing import Any

from ..tasks import TaskConfig

__all__ = ["FORMAT_STYLES", "build_messages", "content_text", "response_format"]

#: How the answer schema is sent, most specific first. OpenAI, vLLM and Ollama take
#: ``json_schema``. llama-cpp-python's server (checked with 0.3.36) validates
#: ``response_format.type`` against ``"text" | "json_object"`` and answers a
#: ``json_schema`` request with HTTP **500** ("Input should be 'text' or 'json_object'",
#: loc ``('body', 'response_format', 'type')``); it takes the schema as
#: ``{"type": "json_object", "schema": {...}}`` and turns it into a grammar. So a
#: rejection that names ``response_format`` is not retried: the client steps down to the
#: next style and remembers it for the rest of its life. ``none`` sends no
#: response_format and relies on the system prompt and the kind's strict parser.
FORMAT_STYLES = ("json_schema", "json_object", "none")


def build_messages(task: TaskConfig, text: str) -> list[dict[str, str]]:
    """The chat messages that ask the teacher to answer ``task`` for ``text``.

    The system message is the task's prompt; the user message's content is exactly ``text``
    (the protocol the replay teacher and the gateway rely on).
    """
    return [{"role": "system", "content": task.prompt()}, {"role": "user", "content": text}]


def response_format(schema: dict[str, Any], style: str) -> dict[str, Any] | None:
    """The ``response_format`` of a request in one of :data:`FORMAT_STYLES`."""
    if style == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "label", "strict": True, "schema": schema}}
    if style == "json_object":
        return {"type": "json_object", "schema": schema}
    return None


def content_text(content: Any) -> str | None:
    """A message's text: the string, or its text parts joined; None when it has no text.

    Parts may be dicts (``{"type": "text", "text": ...}``, as JSON arrives) or objects with a
    ``text`` attribute (as the gateway's request models hold them).
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") if isinstance(p, dict) else getattr(p, "text", None) for p in content]
        texts = [p for p in parts if isinstance(p, str)]
        return "".join(texts) if texts else None
    return None
