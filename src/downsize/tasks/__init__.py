"""Task kinds: the extension point of downsize (see :mod:`.base` for the contract).

:data:`KINDS` maps each ``kind:`` value of ``downsize.yaml`` to its model; :data:`TaskSection` is
the type of one entry under ``tasks:`` (dispatched on ``kind``, ``classify`` when it is absent).
"""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, Tag

from .base import Scores, TaskConfig, dumps_answer
from .classify import ClassifyTask, parse_label
from .extract import ExtractTask
from .fields import FieldSpec
from .multilabel import MultiLabelTask

__all__ = [
    "KINDS",
    "TaskSection",
    "TaskConfig",
    "ClassifyTask",
    "MultiLabelTask",
    "ExtractTask",
    "FieldSpec",
    "Scores",
    "dumps_answer",
    "parse_label",
]

#: ``kind:`` → the model of that kind of task.
KINDS: dict[str, type[TaskConfig]] = {"classify": ClassifyTask, "multilabel": MultiLabelTask, "extract": ExtractTask}


def _kind_of(value: Any) -> str | None:
    if isinstance(value, dict):
        return value.get("kind", "classify")
    return getattr(value, "kind", None)


def _section() -> Any:
    if len(KINDS) == 1:
        return next(iter(KINDS.values()))
    members = tuple(Annotated[cls, Tag(name)] for name, cls in KINDS.items())
    return Annotated[Union[members], Discriminator(  # noqa: UP007 (a runtime tuple of members)
        _kind_of, custom_error_type="unknown_kind",
        custom_error_message=f"kind must be one of {', '.join(KINDS)}")]


#: One task of ``downsize.yaml``: the model its ``kind`` names.
TaskSection = _section()
