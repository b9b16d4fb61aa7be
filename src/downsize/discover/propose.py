"""Propose downsize tasks for the narrow templates and write them as a ``downsize.yaml`` fragment.

A proposal takes its instructions from the template's system prompt (else from the fixed parts
of its user message), its labels from the frequent answers (classify: the most frequent raw
spelling of each normalised answer; multilabel: the items of the JSON arrays, with ``max_labels``
the most seen in one answer) or its fields from the stable JSON keys (type guessed from the
values, ``required`` when ≥ 95 % of the answers have the key). The YAML has one ``teachers``
entry per logged model (list prices of :mod:`.prices`) so it loads with
:func:`downsize.config.load_config` as it is; edit ``base_url`` to where the app sends its calls.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .prices import PRICE_DATE, price_for
from .profile import TemplateProfile
from .verdict import Verdict

__all__ = ["TaskProposal", "config_yaml", "propose_task"]

_STOP = frozenset(["a", "an", "the", "you", "are", "is", "of", "to", "for", "and", "or", "in", "on", "with", "this", "that", "these", "your", "as", "by", "be", "it", "from", "into", "one", "only", "exactly", "reply", "answer", "return", "json", "user", "sends", "following", "please"])
_NAME_OK = re.compile(r"[^a-z0-9]+")


@dataclass
class TaskProposal:
    """A task to add to ``downsize.yaml`` for one narrow template."""

    name: str
    kind: str
    template_id: int
    teacher: str
    model: str
    instructions: str
    labels: dict[str, str] | None = None
    max_labels: int | None = None
    fields: dict[str, dict[str, Any]] | None = None
    log_text: bool = True
    comments: list[str] = field(default_factory=list)
    answer_map: dict[str, str] = field(default_factory=dict)  # normalised logged answer -> label name

    def to_config(self) -> dict[str, Any]:
        """The task's mapping under ``tasks:`` (the shapes of :class:`downsize.config.TaskConfig`)."""
        out: dict[str, Any] = {"kind": self.kind, "teacher": self.teacher, "instructions": self.instructions}
        if self.labels is not None:
            out["labels"] = self.labels
        if self.max_labels is not None:
            out["max_labels"] = self.max_labels
        if self.fields is not None:
            out["fields"] = self.fields
        if not self.log_text:
            out["log_text"] = False
        return out


def _slug(text: str, n: int = 3) -> str:
    words = [w for w in _NAME_OK.sub(" ", text.lower()).split() if w not in _STOP and not w.isdigit()]
    return "_".join(words[:n]) or "task"


def _instructions(p: TemplateProfile) -> str:
    t = p.template
    sys_ = " ".join(t.system.split())
    if sys_:
        return sys_[:2000]
    pre = " ".join("\n" if x == "\n" else x for x in t.prefix if x != "<END>").replace(" \n ", "\n").strip()
    suf = " ".join("\n" if x == "\n" else x for x in t.suffix if x != "<START>").replace(" \n ", "\n").strip()
    return "\n".join(x for x in (pre, "{text}", suf) if x)[:2000] or "Answer as the logged calls were answered."


def _field_type(f: Any) -> str:
    kind = f.kind()
    if kind == "number":
        return "integer" if f.types.get("float", 0) == 0 else "number"
    return "boolean" if kind == "boolean" else "string"


def _field_description(f: Any) -> str:
    kind = f.kind()
    if kind == "span":
        return f"copied from the text (in {100 * f.present:.0f} % of the logged answers)"
    if kind == "enum":
        return "one of: " + ", ".join(v for v, _ in f.top[:12]) + (" …" if f.distinct > 12 else "")
    return f"{kind} (in {100 * f.present:.0f} % of the logged answers)"


def propose_task(p: TemplateProfile, v: Verdict, *, name: str | None = None, teacher: str | None = None) -> TaskProposal:
    """A :class:`TaskProposal` for a narrow template (``ValueError`` for a broad one)."""
    if v.scope != "narrow" or v.kind is None:
        raise ValueError(f"template {p.template.id} is {v.scope}: {v.recommendation}")
    model = next(iter(p.models), "")
    prop = TaskProposal(name=name or f"{_slug(p.template.system or ' '.join(p.template.prefix))}",
                        kind=v.kind, template_id=p.template.id, teacher=teacher or _teacher_name(model), model=model,
                        instructions=_instructions(p), log_text=not v.private)
    prop.comments.append(f"template {p.template.id}: {p.template.pattern(70)}")
    prop.comments.append(f"{p.n:,} logged requests; {v.reason}")
    if v.kind == "classify":
        prop.answer_map = {a: p.raw_forms.get(a, a).strip().rstrip(".") or a for a in v.labels}
        prop.labels = {name: name for name in prop.answer_map.values()}
        shares = {a: c / max(1, p.n_answered) for a, c in p.answers_top}
        prop.comments.append("labels (share of answers): " + ", ".join(
            f"{p.raw_forms.get(a, a).strip().rstrip('.')} {100 * shares.get(a, 0):.1f} %" for a in v.labels))
    elif v.kind == "multilabel":
        prop.labels = {a: a for a in v.labels}
        prop.max_labels = max(1, p.array_max_len)
    else:
        keep = set(v.labels)
        prop.fields = {f.name: {"description": _field_description(f), "type": _field_type(f),
                                "required": f.present >= 0.95} for f in p.keys if f.name in keep}
    if v.private:
        prop.comments.append(f"PII in inputs ({', '.join(v.pii_kinds)}): run local_only (student only) and keep "
                             "texts out of the log (log_text: false)")
    if v.certification is not None:
        prop.comments.append("certified: " + v.certification.guarantee)
    if v.cost_month_now is not None:
        cas = f", ~${v.cost_month_cascade:,.2f}/month with the cascade" if v.cost_month_cascade is not None else ""
        prop.comments.append(f"${v.cost_month_now:,.2f}/month now ({v.rate_source} rate){cas}")
    return prop


def _teacher_name(model: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "-", model.rsplit("/", 1)[-1]).strip("-.") or "default"
    return s[:64]


def _base_url(model: str) -> str:
    m = model.lower()
    if m.startswith(("gpt", "o1", "o3", "o4", "openai/")):
        return "https://api.openai.com/v1"
    if "claude" in m:
        return "https://api.anthropic.com/v1"
    if "gemini" in m:
        return "https://generativelanguage.googleapis.com/v1beta/openai"
    return "http://localhost:4000/v1"


_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]*")
_RESERVED = {"y", "n", "yes", "no", "on", "off", "true", "false", "null", "none", "~"}


def _q(s: Any) -> str:
    """A YAML scalar: plain when that is unambiguous, else JSON (JSON strings are valid YAML)."""
    if isinstance(s, str) and _PLAIN.fullmatch(s) and s.lower() not in _RESERVED:
        return s
    return json.dumps(s, ensure_ascii=False)


def _emit(lines: list[str], obj: Any, indent: int) -> None:
    pad = " " * indent
    for k, v in obj.items():
        if isinstance(v, dict):
            lines.append(f"{pad}{_q(k)}:" + (" {}" if not v else ""))
            _emit(lines, v, indent + 2)
        else:
            lines.append(f"{pad}{_q(k)}: {_q(v)}")


def _key_env(base_url: str) -> str:
    for host, env in (("openai.com", "OPENAI_API_KEY"), ("anthropic.com", "ANTHROPIC_API_KEY"),
                      ("googleapis.com", "GEMINI_API_KEY")):
        if host in base_url:
            return env
    return "LLM_API_KEY"


def config_yaml(proposals: Sequence[TaskProposal], *, prices: dict[str, tuple[float, float]] | None = None,
                store: str | None = None) -> str:
    """A ``downsize.yaml`` with a teacher per logged model and the proposed tasks (with comments)."""
    lines = ["# downsize.yaml proposed by `downsize audit` from logged traffic: review it before use.",
             f"# Prices are list prices (USD per 1M tokens) as of {PRICE_DATE}; base_url: where the app sends the calls."]
    if store:
        lines.append(f"store: {_q(store)}")
    lines.append("teachers:")
    seen: dict[str, str] = {}
    for p in proposals:
        if p.teacher in seen:
            continue
        seen[p.teacher] = p.model
        price = price_for(p.model, prices) or (0.0, 0.0)
        lines.append(f"  {_q(p.teacher)}:")
        url = _base_url(p.model)
        _emit(lines, {"base_url": url, "model": p.model, "api_key_env": _key_env(url),
                      "price_per_1m_input": price[0], "price_per_1m_output": price[1]}, 4)
    if not proposals:
        lines.append("  {}")
    lines.append("tasks:" + ("" if proposals else " {}"))
    names: set[str] = set()
    for p in proposals:
        name, k = p.name[:60], 2
        while name in names:
            name, k = f"{p.name[:57]}_{k}", k + 1
        names.add(name)
        lines.extend("  # " + " ".join(c.split()) for c in p.comments)
        lines.append(f"  {_q(name)}:")
        _emit(lines, p.to_config(), 4)
    return "\n".join(lines) + "\n"
