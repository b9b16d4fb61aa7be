"""The task-kind contract: what a kind of task (classify, multi-label, extraction) must say.

A task kind is its own section of ``downsize.yaml`` — a pydantic model deriving from
:class:`TaskConfig` with a ``kind`` literal — that also implements the methods below. Everything
downstream (the teacher client, training, calibration, the cascade, the gateway, the audit log, the
report) talks to a task only through them, so a new kind is one new module here and one line in
:data:`downsize.tasks.KINDS`; nothing else branches on the kind.

=================  ============================================================================
part of a kind     methods
=================  ============================================================================
config section     the model's fields (``labels``, ``fields``...), validated when the YAML loads
teacher's answer   :meth:`~TaskConfig.prompt` (system message), :meth:`~TaskConfig.answer_schema`
                   (JSON schema sent as structured output), :meth:`~TaskConfig.parse` (strict:
                   a raw completion → an answer, or :class:`~downsize.errors.AnswerError`),
                   :meth:`~TaskConfig.repair_message` (the one retry's request)
answer type        :meth:`~TaskConfig.normalise` (any JSON-like value → the canonical answer,
                   the same rule for teacher, student, file and reviewer answers),
                   :meth:`~TaskConfig.encode` / :meth:`~TaskConfig.decode` (the store's text form)
loss               :meth:`~TaskConfig.disagreement`: the loss of an answer with a reference, in [0, 1];
                   the calibration bounds its mean over answered requests; :meth:`~TaskConfig.metrics`
                   (quality against gold, for ``downsize eval``)
rendering          :meth:`~TaskConfig.to_json` (the answer object), :meth:`~TaskConfig.answer_value`
                   (``predict``'s column), :meth:`~TaskConfig.render` (a chat completion's content),
                   :meth:`~TaskConfig.parts` / :meth:`~TaskConfig.pairs` (what the report counts)
students           :attr:`~TaskConfig.students` (families that fit, cheapest first),
                   :meth:`~TaskConfig.targets` (answers → what ``fit`` takes),
                   :meth:`~TaskConfig.score` (a fitted student's answers and confidences),
                   :meth:`~TaskConfig.strata` (how splits keep proportions),
                   :meth:`~TaskConfig.check_training` (is there enough to learn from) and
                   :meth:`~TaskConfig.teacher_only` (pieces too rare to learn: left to the teacher)
=================  ============================================================================

Answers are plain, hashable Python values (a label ``str`` for classify); ``None`` never is one.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from collections.abc import Collection, Sequence
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import AnswerError

__all__ = ["TaskConfig", "Scores", "dumps_answer", "NONE"]

#: The confusion matrices' name for "nothing here" (a label one side did not give, a field it left out).
NONE = "(none)"

#: (answers, confidences) of a student for a batch of texts.
Scores = tuple[list[Any], np.ndarray]


def dumps_answer(obj: Any) -> str:
    """Compact, key-sorted JSON: the one text form of structured answers (store, audit, chat)."""
    return json.dumps(obj, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


class TaskConfig(BaseModel):
    """A routine LLM task that a student may take over: the fields every kind shares, and the
    contract each kind implements (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str
    teacher: str = "default"
    instructions: str = Field(min_length=1)
    text_field: str = "text"
    alpha: float = Field(default=0.02, gt=0, lt=1, description="max mean loss (disagreement) when answering")
    delta: float = Field(default=0.05, gt=0, lt=1, description="1 - confidence of the guarantee")
    student: str = Field(default="auto", description="a student family that fits the kind, or auto")
    mode: Literal["cascade", "shadow"] = "cascade"
    spot_check_rate: float = Field(default=0.02, ge=0, le=1)
    log_text: bool = True
    bound: Literal["hoeffding_bentkus", "binomial", "betting"] = Field(
        default="hoeffding_bentkus",
        description="p-values of the threshold tests: Hoeffding-Bentkus (a little more conservative: "
        "realised test disagreement stays under alpha more often), the exact binomial (0/1 losses; a "
        "kind's bounded loss such as loss: f1 is tested with Hoeffding-Bentkus instead) or the "
        "Waudby-Smith-Ramdas betting test (any loss in [0, 1])",
    )
    calibration_fraction: float = Field(default=0.3, gt=0.05, lt=0.9,
                                        description="share held out for calibration when calibration_folds is 0")
    calibration_folds: int = Field(
        default=3, ge=0, le=10,
        description="cross-fitting: every row is answered by a student fitted on the other folds, the threshold "
        "is calibrated on those answers (all rows) and the student refitted on all rows; 0 holds out "
        "calibration_fraction instead",
    )
    min_examples_per_label: int = Field(default=5, ge=2)
    reference: Literal["teacher", "human"] = Field(
        default="teacher",
        description="what the calibration bounds disagreement with: the teacher's labels, or (once the "
        "calibration split has enough of them) the labels people gave (review corrections, gold)",
    )
    synthetic_weight: float = Field(
        default=1.0, ge=0, le=10,
        description="how much a synthetic example (downsize synth) counts in training, relative to a real one "
        "(0: not used); synthetic examples are never in the calibration split",
    )
    review_sample_rate: float = Field(
        default=0.01, ge=0, le=1,
        description="share of answered requests put in the review queue at random: the unbiased live estimate",
    )
    monitor_delta: float = Field(
        default=0.05, gt=0, lt=1,
        description="probability, over the task's whole life, that the live monitors ever suspend it (or warn) "
        "while the live risk is in fact <= alpha",
    )
    drift_spot_check_rate: float = Field(
        default=0.2, ge=0, le=1,
        description="spot-check rate while the drift monitor warns (confidence has moved): more checks, sooner verdict",
    )
    drift_boost_s: float = Field(default=900.0, gt=0, description="how long a drift warning raises the spot-check rate")
    retrain: Literal["manual", "auto"] = Field(
        default="manual",
        description="auto: a suspended task is retrained (or recalibrated) by the gateway itself, off the request "
        "path, each time retrain_min_labels new shadow labels have come in; the gate decides if it goes live",
    )
    retrain_min_labels: int = Field(
        default=400, ge=20,
        description="fresh labels (newer than any the candidate trains on) needed to retrain; fewer: recalibrate",
    )
    retrain_window: int = Field(default=20_000, ge=100, description="most recent labels a candidate trains on")

    #: Student families that fit this kind, cheapest first (``auto`` chooses among them).
    students: ClassVar[tuple[str, ...]] = ()
    #: The key of the answer in :meth:`to_json`'s object (also the column ``predict`` writes).
    answer_key: ClassVar[str] = "answer"

    @model_validator(mode="after")
    def _folds_are_two_or_more(self) -> TaskConfig:
        if self.calibration_folds == 1:
            raise ValueError("calibration_folds: 1 cannot cross-fit; use 0 (a held-out split) or 2 or more")
        return self

    @model_validator(mode="after")
    def _student_fits(self) -> TaskConfig:
        allowed = ("auto", *self.students)
        if self.student not in allowed:
            raise ValueError(f"student {self.student!r} does not fit a {self.kind} task; choose one of {allowed}")
        return self

    # -- the teacher's side ---------------------------------------------------------------
    @abstractmethod
    def prompt(self) -> str:
        """The system message: the instructions, the answer set or fields, how to answer."""

    @abstractmethod
    def answer_schema(self) -> dict[str, Any]:
        """JSON schema (an object) of one answer, sent to the teacher as structured output."""

    @abstractmethod
    def parse(self, raw: str, text: str | None = None) -> Any:
        """A teacher's raw completion for ``text`` → the normalised answer (kinds whose answers are
        spans of the text check them against it).

        Raises
        ------
        AnswerError
            The completion is not a valid answer; the message says why (it is shown to the teacher
            in the repair retry and recorded with the call).
        """

    def repair_message(self, error: AnswerError) -> str:
        """The user message of the one repair retry after an unusable answer."""
        return f"That answer is not valid: {error}. Answer again, exactly as instructed, and nothing else."

    # -- the answer type --------------------------------------------------------------------
    @abstractmethod
    def normalise(self, value: Any, text: str | None = None) -> Any:
        """Any JSON-like form of an answer (the schema's object, or a bare value) → the canonical
        answer, by one rule for every source (teacher, student, file, reviewer);
        :class:`AnswerError` if it does not fit the task (or, given ``text``, is not in it)."""

    @abstractmethod
    def encode(self, answer: Any) -> str:
        """The answer's text form in the store and the audit log."""

    @abstractmethod
    def decode(self, text: str) -> Any:
        """Inverse of :meth:`encode` (:class:`AnswerError` for text that is not an answer)."""

    @abstractmethod
    def to_json(self, answer: Any) -> dict[str, Any]:
        """The answer as the object :meth:`answer_schema` describes."""

    def answer_value(self, answer: Any) -> Any:
        """The answer as one JSON value: what ``predict`` writes in its answer column (named
        :attr:`answer_key`) and the batch API returns (the label, the label list, the fields
        object, the mention list)."""
        obj = self.to_json(answer)
        return obj[self.answer_key] if set(obj) == {self.answer_key} else obj

    def render(self, answer: Any, *, json_mode: bool = True) -> str:
        """A chat completion's content: the answer object as JSON (``json_mode=False`` is the
        plain-text form, which only kinds with a one-word answer have)."""
        return dumps_answer(self.to_json(answer))

    # -- what the report counts ---------------------------------------------------------------
    def piece_names(self) -> list[str]:
        """Every piece an answer can have, in the config's order (the report's rows and columns)."""
        return []

    def parts(self, answer: Any) -> list[str]:
        """The pieces of an answer the report counts one by one (labels, fields, entity types)."""
        return [str(answer)]

    def pairs(self, student: Any, teacher: Any) -> list[tuple[str, str]]:
        """(teacher's piece, student's piece) pairs of a confusion matrix; :data:`NONE` stands for a
        piece one side has and the other has not (or, for a field, a value that differs)."""
        t, s = set(self.parts(teacher)), set(self.parts(student))
        return [(x, x) for x in sorted(t & s)] + [(x, NONE) for x in sorted(t - s)] + [(NONE, x) for x in sorted(s - t)]

    # -- the loss ---------------------------------------------------------------------------
    @abstractmethod
    def disagreement(self, answer: Any, reference: Any) -> float:
        """Disagreement of ``answer`` with ``reference``, in [0, 1] (0: they agree)."""

    @property
    def binary_loss(self) -> bool:
        """Whether :meth:`disagreement` only takes the values 0 and 1 (then the exact binomial applies)."""
        return True

    def calibration_bound(self) -> str:
        """The ``bound`` the calibration uses: the configured one, except that the exact binomial is
        valid only for a 0/1 loss, so a bounded loss is tested with Hoeffding-Bentkus instead."""
        return "hoeffding_bentkus" if self.bound == "binomial" and not self.binary_loss else self.bound

    def disagreements(self, answers: Sequence[Any], references: Sequence[Any]) -> np.ndarray:
        """:meth:`disagreement` of each pair, as a float array."""
        return np.fromiter((self.disagreement(a, r) for a, r in zip(answers, references, strict=True)), float,
                           count=len(answers))

    @abstractmethod
    def metrics(self, answers: Sequence[Any], gold: Sequence[Any]) -> dict[str, float]:
        """Quality of ``answers`` against ``gold`` (``downsize eval``); a None answer (a failure) is wrong."""

    # -- students ---------------------------------------------------------------------------
    @abstractmethod
    def targets(self, answers: Sequence[Any]) -> Any:
        """What a student's ``fit`` takes as ``y`` for these answers."""

    def student_params(self, family: str) -> dict[str, Any]:
        """Parameters of a ``family`` student that come from the task (e.g. its labels or fields)."""
        return {}

    def strata(self, answers: Sequence[Any]) -> list[Any] | None:
        """Groups to keep in proportion when the labelled rows are split (None: a plain random split)."""
        return None

    @abstractmethod
    def score(self, student: Any, texts: Sequence[str]) -> Scores:
        """A fitted student's answer and confidence (on which λ is set) for each text."""

    def teacher_only(self, answers: Sequence[Any]) -> dict[str, str]:
        """Pieces (:meth:`parts`: labels) with too few examples in ``answers`` to learn, and why.

        Training leaves the examples that have one of them out of the student's training part
        (the student cannot give such an answer) but keeps them in the calibration split, where
        any student answer on them counts as an error (:meth:`needs_teacher`): the guarantee
        then covers live traffic that has them. The default: none.
        """
        return {}

    def needs_teacher(self, answer: Any, teacher_only: Collection[str]) -> bool:
        """Does ``answer`` (a reference) have a piece only the teacher can give?"""
        return bool(teacher_only) and any(p in teacher_only for p in self.parts(answer))

    @abstractmethod
    def check_training(self, task_name: str, answers: Sequence[Any]) -> dict[str, int]:
        """Validate the labelled answers before training; returns counts per answer class.

        Raises
        ------
        StudentError
            Naming what is missing (e.g. a label with too few examples) and how to fix it.
        """
