"""Per-field checks from the task: a value of the wrong kind means the record is not trusted.

The checks are the task's own (:class:`downsize.tasks.FieldSpec`: ``type`` string | number |
date | enum with ``values``, a ``pattern`` the whole value must match, ``required``), so the
student judges its answers by exactly the rules the teacher's are parsed with. A record failing
any check is answered by the teacher (its confidence is scaled by the student's
``invalid_factor``, 0 by default).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from ...errors import StudentError
from ...tasks.fields import FieldSpec

__all__ = ["parse_checks", "problems"]


def parse_checks(spec: Mapping[str, Any] | None) -> dict[str, FieldSpec]:
    """The ``fields`` parameter of the student as :class:`FieldSpec` s; errors name the field and the key."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise StudentError(f"fields must be a mapping field → check, got {type(spec).__name__}")
    out = {}
    for name, check in spec.items():
        if isinstance(check, FieldSpec):
            out[str(name)] = check
            continue
        if check is None:
            check = {}
        if not isinstance(check, Mapping):
            raise StudentError(f"fields[{name!r}] must be a mapping, got {type(check).__name__}")
        try:
            out[str(name)] = FieldSpec.model_validate(dict(check))
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise StudentError(f"fields[{name!r}]{'.' + where if where else ''}: {err['msg']}") from None
    return out


def problems(record: Mapping[str, str], checks: Mapping[str, FieldSpec]) -> list[str]:
    """Every way ``record`` fails ``checks`` (empty when it passes)."""
    out = []
    for name, check in checks.items():
        value = record.get(name)
        if value is None:
            if check.required:
                out.append(f"{name}: required but absent")
            continue
        why = check.problem(value)
        if why:
            out.append(f"{name}: {why}")
    return out
