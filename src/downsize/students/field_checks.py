"""Per-field checks from the task: a value of the wrong kind means the record is not trusted.

A task may describe its fields::

    {"ZipCode": {"type": "string", "pattern": "\\\\d{5}(-\\\\d{4})?", "required": true},
     "Amount": {"type": "number"}, "Date": {"type": "date"},
     "Unit": {"type": "enum", "values": ["kg", "lb"]}}

``type`` is ``string`` (anything), ``number`` (digits, an optional sign, decimal point and
thousands separators), ``date`` (read by ``dateutil``, with a digit in it) or ``enum`` (one of
``values``, compared as :func:`~.spans.normalise_value` forms); ``pattern`` is a regular
expression the whole value must match; ``required`` fields must be present. A record failing
any check is answered by the teacher (its confidence is scaled by the student's
``invalid_factor``, 0 by default).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import StudentError
from .spans import normalise_value

__all__ = ["FieldCheck", "parse_checks", "problems"]

_TYPES = ("string", "number", "date", "enum")
_NUMBER = re.compile(r"[+-]?(\d{1,3}([, ]\d{3})+|\d+)?([.,]\d+)?%?")


@dataclass(frozen=True, slots=True)
class FieldCheck:
    type: str = "string"
    values: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None
    required: bool = False

    def problem(self, value: str) -> str | None:
        """Why ``value`` fails, or None."""
        v = value.strip()
        if self.type == "number" and not (any(c.isdigit() for c in v) and _NUMBER.fullmatch(v)):
            return f"{value!r} is not a number"
        if self.type == "date" and not _is_date(v):
            return f"{value!r} is not a date"
        if self.type == "enum" and normalise_value(v) not in self.values:
            return f"{value!r} is not one of {sorted(self.values)}"
        if self.pattern is not None and not self.pattern.fullmatch(v):
            return f"{value!r} does not match {self.pattern.pattern!r}"
        return None


def _is_date(v: str) -> bool:
    if not any(c.isdigit() for c in v):
        return False
    from dateutil import parser

    try:
        parser.parse(v, fuzzy=False)
    except (ValueError, OverflowError):
        return False
    return True


def parse_checks(spec: Mapping[str, Any] | None) -> dict[str, FieldCheck]:
    """Validate the ``fields`` parameter of the student; errors name the field and the key."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise StudentError(f"fields must be a mapping field → check, got {type(spec).__name__}")
    out = {}
    for name, check in spec.items():
        if check is None:
            check = {}
        if not isinstance(check, Mapping):
            raise StudentError(f"fields[{name!r}] must be a mapping, got {type(check).__name__}")
        unknown = set(check) - {"type", "values", "pattern", "required", "description"}
        if unknown:
            raise StudentError(f"fields[{name!r}]: unknown keys {sorted(unknown)}")
        typ = check.get("type", "string")
        if typ not in _TYPES:
            raise StudentError(f"fields[{name!r}].type is {typ!r}; expected one of {', '.join(_TYPES)}")
        values = check.get("values")
        if typ == "enum" and not values:
            raise StudentError(f"fields[{name!r}] is an enum without 'values'")
        pattern = check.get("pattern")
        try:
            compiled = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise StudentError(f"fields[{name!r}].pattern {pattern!r} is not a regex: {exc}") from None
        out[str(name)] = FieldCheck(
            typ,
            frozenset(normalise_value(str(v)) for v in values or ()),
            compiled,
            bool(check.get("required", False)),
        )
    return out


def problems(record: Mapping[str, str], checks: Mapping[str, FieldCheck]) -> list[str]:
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
