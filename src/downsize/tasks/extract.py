"""``kind: extract``: named fields, or entity mentions, pulled out of a text.

A task has either ``fields`` (the answer is a record: each field at most one value, a span of the
text) or ``entities`` (the answer is the set of ``(text, type)`` mentions, possibly empty). One
task, one of the two: a record and a mention list are different answers with different students
behind them; a team that needs both configures two tasks on the same text.

Answers keep the text's own spelling of each value (the student learns spans) and are compared in
canonical form (:mod:`.fields`). The loss is ``exact`` (1 if any field or mention differs) or
``f1`` (1 − F1 over the record's (field, value) pairs or its mentions).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from ..errors import AnswerError, StudentError
from ._json import read_json
from .base import NONE, Scores, TaskConfig, dumps_answer
from .fields import FieldSpec, normalise_value, occurs_in

__all__ = ["ExtractTask"]

Answer = tuple[tuple[str, str], ...]  # sorted (field, value) pairs, or sorted (text, type) mentions


def _f1(a: set[Any], b: set[Any]) -> float:
    return 1.0 if not a and not b else 2 * len(a & b) / (len(a) + len(b))


class ExtractTask(TaskConfig):
    """Fields or entity mentions (``kind: extract``)."""

    kind: Literal["extract"] = "extract"
    fields: dict[str, FieldSpec] = Field(default_factory=dict, description="field name -> description and type")
    entities: dict[str, str] = Field(default_factory=dict, description="entity type -> what it is")
    loss: Literal["exact", "f1"] = Field(default="exact", description="the record loss the calibration bounds")

    @property
    def binary_loss(self) -> bool:  # type: ignore[override]
        return self.loss == "exact"

    students: ClassVar[tuple[str, ...]] = ("crf",)

    @field_validator("fields", mode="before")
    @classmethod
    def _descriptions(cls, v: Any) -> Any:
        return {k: ({"description": s} if isinstance(s, str) else s) for k, s in v.items()} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _one_of(self) -> ExtractTask:
        if bool(self.fields) == bool(self.entities):
            raise ValueError("an extract task has either `fields` or `entities` (at least one of them, not both: "
                             "configure two tasks to get both)" if self.fields else
                             "an extract task needs `fields` (name -> description) or `entities` (type -> description)")
        return self

    @property
    def answer_key(self) -> str:  # type: ignore[override]
        return "fields" if self.fields else "entities"

    def piece_names(self) -> list[str]:
        return list(self.fields or self.entities)

    # -- the teacher's side ---------------------------------------------------------------
    def prompt(self) -> str:
        lines = [self.instructions.strip(), ""]
        if self.fields:
            lines.append("Fields:")
            for name, f in self.fields.items():
                extra = [f.type] + (["one of " + ", ".join(f.values)] if f.values else []) + \
                    (["required"] if f.required else [])
                lines.append(f"- {name} ({'; '.join(extra)})" + (f": {f.description}" if f.description else ""))
            lines += ["", "Answer with one JSON object whose keys are the fields found in the text and whose values "
                      "are copied exactly as they appear in the text; leave out a field that is not there "
                      "(an empty object if none is). Nothing else."]
        else:
            lines.append("Entity types:")
            lines += [f"- {t}: {d}" if d else f"- {t}" for t, d in self.entities.items()]
            lines += ["", 'Answer with a JSON object {"entities": [{"text": ..., "type": ...}, ...]} listing every '
                      "mention, its text copied exactly as it appears; an empty list if there is none. Nothing else."]
        return "\n".join(lines)

    def answer_schema(self) -> dict[str, Any]:
        if self.fields:
            props = {n: {"type": "string", "description": f.description} if f.description else {"type": "string"}
                     for n, f in self.fields.items()}
            return {"type": "object", "properties": props, "required": [n for n, f in self.fields.items() if f.required],
                    "additionalProperties": False}
        mention = {"type": "object", "properties": {"text": {"type": "string"},
                                                     "type": {"type": "string", "enum": list(self.entities)}},
                   "required": ["text", "type"], "additionalProperties": False}
        return {"type": "object", "properties": {"entities": {"type": "array", "items": mention}},
                "required": ["entities"], "additionalProperties": False}

    def parse(self, raw: str, text: str | None = None) -> Answer:
        return self.normalise(read_json(raw), text)

    def repair_message(self, error: AnswerError) -> str:
        return (f"That answer is not valid: {error}. Answer again with the JSON object described, values copied "
                "exactly from the text, and nothing else.")

    # -- the answer type --------------------------------------------------------------------
    def normalise(self, value: Any, text: str | None = None) -> Answer:
        return self._record(value, text) if self.fields else self._mentions(value, text)

    def _record(self, value: Any, text: str | None) -> Answer:
        if isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
            value = dict(value)  # the tuple form of a record
        if not isinstance(value, dict):
            raise AnswerError(f"{str(value)[:120]!r} is not a JSON object of fields")
        unknown = sorted(set(value) - set(self.fields))
        if unknown:
            raise AnswerError(f"unknown field(s) {unknown}; the fields are {self.piece_names()}")
        out = {}
        for name, v in value.items():
            if v is None or (isinstance(v, str) and not v.strip()):
                continue
            if isinstance(v, bool) or not isinstance(v, (str, int, float)):
                raise AnswerError(f"field {name}: {v!r} is not a text value")
            s = " ".join(str(v).split())
            if text is not None and not occurs_in(s, text):
                raise AnswerError(f"field {name}: {s!r} does not occur in the text")
            why = self.fields[name].problem(s)
            if why:
                raise AnswerError(f"field {name}: {why}")
            out[name] = s
        missing = [n for n, f in self.fields.items() if f.required and n not in out]
        if missing:
            raise AnswerError(f"required field(s) {missing} missing")
        return tuple(sorted(out.items()))

    def _mentions(self, value: Any, text: str | None) -> Answer:
        if isinstance(value, dict):
            extra = sorted(set(value) - {"entities"})
            if "entities" not in value or extra:
                raise AnswerError('the answer is {"entities": [...]} only' + (f" (unexpected keys {extra})" if extra else ""))
            value = value["entities"]
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise AnswerError(f"{str(value)[:120]!r} is not a list of mentions")
        out = set()
        for m in value:
            if isinstance(m, dict):
                if set(m) != {"text", "type"}:
                    raise AnswerError(f"mention {m!r}: a mention is {{\"text\": ..., \"type\": ...}}")
                t, ty = m["text"], m["type"]
            elif isinstance(m, (list, tuple)) and len(m) == 2:
                t, ty = m
            else:
                raise AnswerError(f"{m!r} is not a mention {{\"text\": ..., \"type\": ...}}")
            if not isinstance(t, str) or not t.strip():
                raise AnswerError(f"mention {m!r}: the text is empty")
            if ty not in self.entities:
                raise AnswerError(f"mention {m!r}: type {ty!r} is not one of {self.piece_names()}")
            t = " ".join(t.split())
            if text is not None and not occurs_in(t, text):
                raise AnswerError(f"mention {t!r} does not occur in the text")
            out.add((t, ty))
        return tuple(sorted(out))

    def encode(self, answer: Answer) -> str:
        return dumps_answer(dict(answer) if self.fields else [{"text": t, "type": ty} for t, ty in answer])

    def decode(self, text: str) -> Answer:
        try:
            value = json.loads(text)
        except ValueError:
            raise AnswerError(f"{text[:120]!r} is not a JSON answer") from None
        return self.normalise(value)

    def to_json(self, answer: Answer) -> dict[str, Any]:
        if self.fields:
            return {n: self.fields[n].typed(v) for n, v in answer}
        return {"entities": [{"text": t, "type": ty} for t, ty in answer]}

    def _items(self, answer: Answer | None) -> set[tuple[str, str]]:
        if not answer:
            return set()
        if self.fields:
            return {(n, self.fields[n].canonical(v)) for n, v in answer if n in self.fields}
        return {(normalise_value(t), ty) for t, ty in answer}

    def parts(self, answer: Answer) -> list[str]:
        return sorted({k for k, _ in answer} if self.fields else {ty for _, ty in answer})

    def pairs(self, student: Answer, teacher: Answer) -> list[tuple[str, str]]:
        if not self.fields:
            return super().pairs(student, teacher)  # entity types present on either side
        s, t = dict(self._items(student)), dict(self._items(teacher))
        return [(k, k if s.get(k) == t.get(k) else NONE) if k in t else (NONE, k) for k in sorted(s.keys() | t.keys())]

    def disagreement(self, answer: Answer, reference: Answer) -> float:
        a, b = self._items(answer), self._items(reference)
        return (0.0 if a == b else 1.0) if self.loss == "exact" else 1.0 - _f1(a, b)

    def metrics(self, answers: Sequence[Answer | None], gold: Sequence[Answer]) -> dict[str, float]:
        tp: Counter[str] = Counter()
        fp: Counter[str] = Counter()
        fn: Counter[str] = Counter()
        exact = []
        for a, g in zip(answers, gold):
            sa, sg = self._items(a), self._items(g)
            exact.append(a is not None and sa == sg)
            tp.update(k for k, _ in sa & sg)
            fp.update(k for k, _ in sa - sg)
            fn.update(k for k, _ in sg - sa)
        t, p, n = sum(tp.values()), sum(fp.values()), sum(fn.values())
        out = {"exact_match": float(np.mean(exact)) if exact else 0.0,
               "micro_f1": 2 * t / (2 * t + p + n) if (t + p + n) else 1.0}
        for k in self.piece_names():
            if tp[k] + fp[k] + fn[k]:
                out[f"f1.{k}"] = 2 * tp[k] / (2 * tp[k] + fp[k] + fn[k])
        return out

    # -- students ---------------------------------------------------------------------------
    def targets(self, answers: Sequence[Answer]) -> list[Any]:
        return [dict(a) for a in answers] if self.fields else [list(a) for a in answers]

    def student_params(self, family: str) -> dict[str, Any]:
        if self.fields:
            return {"target": "fields", "fields": {n: f.model_dump(exclude_none=True) for n, f in self.fields.items()}}
        return {"target": "entities"}

    def score(self, student: Any, texts: Sequence[str]) -> Scores:
        answers, conf = student.predict_with_confidence(list(texts))
        conf = np.array(conf, dtype=float)
        out: list[Answer] = []
        for i, a in enumerate(answers):
            try:
                out.append(self.normalise(a))
            except AnswerError:  # a value that fails its field's checks: the teacher answers this one
                out.append(tuple(sorted(a.items())) if isinstance(a, Mapping) else tuple(sorted(map(tuple, a))))
                conf[i] = 0.0
        return out, conf

    def check_training(self, task_name: str, answers: Sequence[Answer]) -> dict[str, int]:
        counts: Counter[str] = Counter(k for a in answers for k, _ in (a if self.fields else ((ty, t) for t, ty in a)))
        if not counts:
            what = "field" if self.fields else "entity mention"
            raise StudentError(f"task {task_name!r}: none of the {len(answers)} labelled examples has a {what}; "
                               "a student needs examples to learn from")
        return dict(counts)
