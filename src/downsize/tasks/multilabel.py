"""``kind: multilabel``: every label from a fixed set that applies to a text (possibly none).

The answer is a sorted tuple of label names; the teacher is asked for ``{"labels": [...]}``. The
loss is ``exact`` (1 when the set differs from the reference at all) or ``f1`` (1 − F1 of the set
against the reference; two empty sets agree): the calibration bounds its mean over answered
requests, so ``loss: f1`` reads "answered records differ from the teacher's by at most α in
1 − F1, on average".
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import Field, field_validator

from ..errors import AnswerError, StudentError
from ._json import match_name, read_json
from .base import Scores, TaskConfig, dumps_answer

__all__ = ["MultiLabelTask", "set_f1"]


def set_f1(a: Sequence[str], b: Sequence[str]) -> float:
    """F1 of two label sets (1.0 for two empty sets)."""
    sa, sb = set(a), set(b)
    if not sa and not sb:
        return 1.0
    return 2 * len(sa & sb) / (len(sa) + len(sb))


class MultiLabelTask(TaskConfig):
    """Every label that applies (``kind: multilabel``)."""

    kind: Literal["multilabel"] = "multilabel"
    labels: dict[str, str] = Field(description="label name -> what it means (shown to the teacher)")
    max_labels: int | None = Field(default=None, ge=1, description="at most this many labels per text")
    loss: Literal["exact", "f1"] = Field(default="exact", description="the record loss the calibration bounds")

    @property
    def binary_loss(self) -> bool:  # type: ignore[override]
        return self.loss == "exact"

    students: ClassVar[tuple[str, ...]] = ("tfidf", "minilm")
    answer_key: ClassVar[str] = "labels"

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) < 2:
            raise ValueError(f"a multilabel task needs at least 2 labels, got {len(v)}")
        if any(not str(n).strip() for n in v):
            raise ValueError("label names must be non-empty")
        return v

    # -- the teacher's side ---------------------------------------------------------------
    def prompt(self) -> str:
        lines = [self.instructions.strip(), "", "Labels:"]
        lines += [f"- {n}: {d}" if d else f"- {n}" for n, d in self.labels.items()]
        most = f" (at most {self.max_labels})" if self.max_labels else ""
        lines += ["", f'Answer with a JSON object {{"labels": [...]}} listing every label that applies{most}, '
                  "each written exactly as shown; an empty list if none applies. Nothing else."]
        return "\n".join(lines)

    def answer_schema(self) -> dict[str, Any]:
        items: dict[str, Any] = {"type": "array", "items": {"type": "string", "enum": list(self.labels)},
                                 "uniqueItems": True}
        if self.max_labels:
            items["maxItems"] = self.max_labels
        return {"type": "object", "properties": {"labels": items}, "required": ["labels"],
                "additionalProperties": False}

    def parse(self, raw: str, text: str | None = None) -> tuple[str, ...]:
        value = read_json(raw)
        if isinstance(value, dict):
            extra = sorted(set(value) - {"labels"})
            if extra:
                raise AnswerError(f"unexpected key(s) {extra}: the answer is {{\"labels\": [...]}} only")
        return self.normalise(value)

    def repair_message(self, error: AnswerError) -> str:
        return (f"That answer is not valid: {error}. Answer again with a JSON object {{\"labels\": [...]}} whose "
                "labels are taken exactly from the list, and nothing else.")

    # -- the answer type --------------------------------------------------------------------
    def normalise(self, value: Any, text: str | None = None) -> tuple[str, ...]:
        if isinstance(value, dict):
            if "labels" not in value:
                raise AnswerError(f"{dumps_answer(value)[:120]} has no 'labels' list")
            value = value["labels"]
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise AnswerError(f"{value!r} is not a list of labels")
        names = list(self.labels)
        out = set()
        for item in value:
            hit = match_name(item, names) if isinstance(item, str) else None
            if hit is None:
                raise AnswerError(f"{item!r} is not one of the labels ({', '.join(names[:20])}"
                                  f"{', ...' if len(names) > 20 else ''})")
            out.add(hit)
        if self.max_labels and len(out) > self.max_labels:
            raise AnswerError(f"{len(out)} labels, more than max_labels={self.max_labels}")
        return tuple(sorted(out))

    def encode(self, answer: tuple[str, ...]) -> str:
        return dumps_answer(list(answer))

    def decode(self, text: str) -> tuple[str, ...]:
        try:
            value = json.loads(text)
        except ValueError:
            raise AnswerError(f"{text[:120]!r} is not a JSON list of labels") from None
        return self.normalise(value)

    def to_json(self, answer: tuple[str, ...]) -> dict[str, Any]:
        return {"labels": list(answer)}

    def piece_names(self) -> list[str]:
        return list(self.labels)

    def parts(self, answer: tuple[str, ...]) -> list[str]:
        return list(answer)

    def disagreement(self, answer: tuple[str, ...], reference: tuple[str, ...]) -> float:
        if self.loss == "exact":
            return 0.0 if set(answer) == set(reference) else 1.0
        return 1.0 - set_f1(answer, reference)

    def metrics(self, answers: Sequence[tuple[str, ...] | None], gold: Sequence[tuple[str, ...]]) -> dict[str, float]:
        names = list(self.labels)
        exact = np.mean([a is not None and set(a) == set(g) for a, g in zip(answers, gold)]) if gold else 0.0
        tp: Counter[str] = Counter()
        fp: Counter[str] = Counter()
        fn: Counter[str] = Counter()
        for a, g in zip(answers, gold):
            sa, sg = set(a or ()), set(g)
            tp.update(sa & sg)
            fp.update(sa - sg)
            fn.update(sg - sa)
        t, p, n = sum(tp.values()), sum(fp.values()), sum(fn.values())
        micro = 2 * t / (2 * t + p + n) if (t + p + n) else 1.0
        per = [2 * tp[x] / (2 * tp[x] + fp[x] + fn[x]) for x in names if tp[x] + fp[x] + fn[x]]
        return {"exact_match": float(exact), "micro_f1": float(micro),
                "macro_f1": float(np.mean(per)) if per else 1.0,
                "mean_f1": float(np.mean([set_f1(a or (), g) for a, g in zip(answers, gold)])) if gold else 0.0}

    # -- students ---------------------------------------------------------------------------
    def targets(self, answers: Sequence[tuple[str, ...]]) -> list[tuple[str, ...]]:
        return [tuple(a) for a in answers]

    def student_params(self, family: str) -> dict[str, Any]:
        return {"labels": list(self.labels), "max_labels": self.max_labels,
                "min_examples_per_label": self.min_examples_per_label, "features": family}

    def score(self, student: Any, texts: Sequence[str]) -> Scores:
        answers, conf = student.predict_with_confidence(list(texts), loss=self.loss)
        return [tuple(sorted(a)) for a in answers], np.asarray(conf, dtype=float)

    def check_training(self, task_name: str, answers: Sequence[tuple[str, ...]]) -> dict[str, int]:
        counts: Counter[str] = Counter(x for a in answers for x in a)
        if not counts:
            raise StudentError(f"task {task_name!r}: none of the {len(answers)} labelled examples has a label; "
                               "a student needs examples of at least one label")
        return dict(counts)
