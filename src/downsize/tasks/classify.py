"""``kind: classify``: one label per text, from a fixed set.

The answer is the label (a ``str``); the loss is 0/1 disagreement; the teacher is asked for
``{"label": <one of the labels>}`` and its answer is parsed strictly by :func:`parse_label`.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator

from ..errors import AnswerError, StudentError
from ._json import match_name as _match
from ._json import norm_name as _norm  # noqa: F401  (tests compare with it)
from .base import Scores, TaskConfig, dumps_answer

__all__ = ["ClassifyTask", "parse_label"]


class ClassifyTask(TaskConfig):
    """One label per text (``kind: classify``)."""

    kind: Literal["classify"] = "classify"
    labels: dict[str, str] = Field(description="label name -> what it means (shown to the teacher)")

    students: ClassVar[tuple[str, ...]] = ("tfidf", "minilm", "finetune", "ensemble")
    answer_key: ClassVar[str] = "label"

    @field_validator("labels")
    @classmethod
    def _labels(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) < 2:
            raise ValueError(f"a classify task needs at least 2 labels, got {len(v)}")
        for name in v:
            if not str(name).strip():
                raise ValueError("label names must be non-empty")
        return v

    # -- the teacher's side ---------------------------------------------------------------
    def prompt(self) -> str:
        lines = [self.instructions.strip(), "", "Labels:"]
        for name, desc in self.labels.items():
            lines.append(f"- {name}: {desc}" if desc else f"- {name}")
        lines += ["", "Answer with exactly one label from the list, written exactly as shown, and nothing else."]
        return "\n".join(lines)

    def answer_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {"label": {"type": "string", "enum": list(self.labels)}},
            "required": ["label"],
            "additionalProperties": False,
        }

    def parse(self, raw: str, text: str | None = None) -> str:
        label = parse_label(raw, list(self.labels))
        if label is None:
            shown = raw if len(raw) <= 120 else raw[:117] + "..."
            raise AnswerError(f"answer {shown!r} is not exactly one of the labels ({', '.join(self.labels)})")
        return label

    def repair_message(self, error: AnswerError) -> str:
        return ("That answer is not one of the labels (" + ", ".join(self.labels)
                + "). Answer again with exactly one of them and nothing else.")

    # -- the answer type --------------------------------------------------------------------
    def normalise(self, value: Any, text: str | None = None) -> str:
        if isinstance(value, dict) and set(value) == {"label"}:
            value = value["label"]
        if isinstance(value, str) and value in self.labels:
            return value
        raise AnswerError(f"{value!r} is not one of the labels ({', '.join(self.labels)})")

    def encode(self, answer: str) -> str:
        return answer

    def decode(self, text: str) -> str:
        return self.normalise(text)

    def to_json(self, answer: str) -> dict[str, Any]:
        return {"label": answer}

    def render(self, answer: str, *, json_mode: bool = True) -> str:
        return dumps_answer(self.to_json(answer)) if json_mode else answer

    def piece_names(self) -> list[str]:
        return list(self.labels)

    def pairs(self, student: str, teacher: str) -> list[tuple[str, str]]:
        return [(teacher, student)]

    def disagreement(self, answer: str, reference: str) -> float:
        return 0.0 if answer == reference else 1.0

    def metrics(self, answers: Sequence[str | None], gold: Sequence[str]) -> dict[str, float]:
        from sklearn.metrics import accuracy_score, f1_score

        pred = [a if a is not None else "\0" for a in answers]  # a failure matches no label
        return {"accuracy": float(accuracy_score(gold, pred)),
                "macro_f1": float(f1_score(gold, pred, labels=list(self.labels), average="macro", zero_division=0))}

    # -- students ---------------------------------------------------------------------------
    def targets(self, answers: Sequence[str]) -> list[str]:
        return list(answers)

    def student_params(self, family: str) -> dict[str, Any]:
        # label counts are checked on the whole labelled set (min_examples_per_label); the
        # train/calibration split may leave fewer, so the student itself only insists on 2
        return {"min_examples_per_label": 2}

    def strata(self, answers: Sequence[str]) -> list[str]:
        return list(answers)

    def score(self, student: Any, texts: Sequence[str]) -> Scores:
        proba = student.predict_proba(list(texts))
        classes = student.classes_
        return [str(classes[i]) for i in proba.argmax(axis=1)], proba.max(axis=1)

    def teacher_only(self, answers: Sequence[str]) -> dict[str, str]:
        """Configured labels with fewer than ``min_examples_per_label`` examples (none counts), or
        so few that the calibration split would leave fewer than 2 to train on."""
        counts = Counter(answers)
        need = self.min_examples_per_label
        out = {}
        for lab in self.labels:
            n = counts[lab]
            if not n:
                out[lab] = "no examples"
            elif n < need:
                out[lab] = f"{n} example(s), fewer than min_examples_per_label={need}"
            elif n * (1 - self.calibration_fraction) < 2:
                out[lab] = (f"{n} example(s): fewer than 2 would be left to train on beside the "
                            f"calibration split (calibration_fraction={self.calibration_fraction:g})")
        return out

    def check_training(self, task_name: str, answers: Sequence[str]) -> dict[str, int]:
        counts = Counter(answers)
        allowed = list(self.labels)
        unknown = sorted(set(counts) - set(allowed))
        if unknown:
            raise StudentError(
                f"task {task_name!r}: labels {unknown} are not among the configured labels {allowed}; "
                "fix the labels in the store or add them to the task's `labels`"
            )
        if len(counts) < 2:
            only = next(iter(counts), "(none)")
            raise StudentError(
                f"task {task_name!r}: all {len(answers)} labelled examples have the label {only!r}; "
                "a student needs at least two labels with examples"
            )
        few = {lab: n for lab, n in counts.items() if n < self.min_examples_per_label}
        if few:
            detail = ", ".join(f"{lab!r}: {n}" for lab, n in sorted(few.items()))
            raise StudentError(
                f"task {task_name!r}: too few examples for label(s) {detail} "
                f"(need at least {self.min_examples_per_label} each; set min_examples_per_label or label more data)"
            )
        return dict(counts)


# -- parsing a teacher's label -------------------------------------------------------------
_FENCE = re.compile(r"^```[A-Za-z0-9_-]*\s*\n?(.*?)\n?```$", re.S)
_OBJECT = re.compile(r"\{[^{}]*\}", re.S)
_PREFIX = re.compile(
    r"^(?:the\s+)?(?:label|answer|category|class|classification|topic)\s*(?:is)?\s*[:=\-]?\s*(.+)$",
    re.I | re.S,
)
_EDGE = re.compile(r"^[\W_]+|[\W_]+$")


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
