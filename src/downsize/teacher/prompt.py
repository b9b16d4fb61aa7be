"""The prompt protocol shared by the teacher, the replay teacher and the gateway.

The system message is the task's :meth:`~downsize.tasks.TaskConfig.prompt` (instructions, the
answer set or fields, how to answer); **the text is the whole content of the first user
message**. A repair retry appends the bad assistant answer and a user message asking again, so a
server that looks texts up (the replay teacher) finds the text in the first user message.

Generation (``downsize synth``): the system message starts with :data:`GENERATION_HEADER` and
describes the task (its prompt); the user message asks for one new input whose answer contains
one *target* (a label, or a field for extraction), on two lines a server can read back
(:func:`generation_target`): ``Target: <target as JSON>`` and ``Variation: <n>``. The answer is
the input text alone (no response_format).
"""

from __future__ import annotations

from typing import Any

from ..tasks import TaskConfig

__all__ = ["FORMAT_STYLES", "GENERATION_HEADER", "build_generation_messages", "build_messages", "content_text",
           "generation_target", "response_format"]

#: The first line of a generation request's system message.
GENERATION_HEADER = "You write realistic example inputs for a task that another model will answer."
#: How a generation request varies its examples (one angle per variation number, cycled).
ANGLES = ("typical", "short", "long and detailed", "informal", "formal", "unusual but clear",
          "with a specific name, number or place", "mixed with unrelated detail")

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


def build_generation_messages(task: TaskConfig, target: str, variation: int) -> list[dict[str, str]]:
    """The chat messages asking the teacher for one new input of ``task`` whose answer has ``target``.

    ``target`` is a label (classify, multilabel) or a field name (extract); ``variation`` numbers the
    request (its angle cycles through :data:`ANGLES`), so each is a different, cached call.
    """
    import json

    what = "the answer is" if task.kind == "classify" else "the answer includes"
    system = "\n".join([
        GENERATION_HEADER,
        "Here is the task exactly as that model sees it:", "---", task.prompt(), "---",
        f"Write ONE new input text for which {what} the target below. Make it natural and plausible, like "
        "real traffic, and different from other examples. Reply with the input text only: no quotes, no label, "
        "no explanation."])
    angle = ANGLES[variation % len(ANGLES)]
    user = f"Target: {json.dumps(target, ensure_ascii=False)}\nVariation: {variation}\nStyle: {angle}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


def generation_target(messages: list[dict[str, Any]]) -> tuple[str, int] | None:
    """``(target, variation)`` of a generation request (:func:`build_generation_messages`), else None."""
    import json
    import re

    if not messages or not (content_text(messages[0].get("content")) or "").startswith(GENERATION_HEADER):
        return None
    user = next((content_text(m.get("content")) or "" for m in messages if m.get("role") == "user"), "")
    t = re.search(r"^Target: (.+)$", user, flags=re.MULTILINE)
    v = re.search(r"^Variation: (\d+)$", user, flags=re.MULTILINE)
    if t is None or v is None:
        return None
    try:
        target = json.loads(t.group(1))
    except ValueError:
        return None
    return (target, int(v.group(1))) if isinstance(target, str) else None
