"""Field values of extraction answers: the one normalisation, and per-field type checks.

A value is kept as the text spells it (the student learns spans of the text) and compared in a
canonical form: strings and enum values as :func:`normalise_value` (NFKC, case-folded,
whitespace collapsed), numbers as their decimal value (``"1,234.50"`` and ``"1234.5"`` agree),
dates as ISO dates (``"3 March 2026"`` and ``"2026-03-03"`` agree). Teacher, student, file and
reviewer answers all go through these functions.
"""

from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["FieldSpec", "normalise_value", "occurs_in"]

_SPACE = re.compile(r"\s+")
_NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:[, ]\d{3})+|\d+)?(?:[.,]\d+)?%?")
_CURRENCY = "$€£¥₹"


def normalise_value(value: str) -> str:
    """The form values are compared in: NFKC, case-folded, whitespace collapsed and stripped.

    >>> normalise_value("  Main\\n STREET ")
    'main street'
    """
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", value).casefold()).strip()


def occurs_in(value: str, text: str) -> bool:
    """Whether ``value`` is spelled in ``text`` (after whitespace and case normalisation)."""
    v = normalise_value(value)
    return bool(v) and v in normalise_value(text)


def _number(value: str) -> Decimal | None:
    v = value.strip().strip(_CURRENCY).strip()
    if not any(c.isdigit() for c in v) or not _NUMBER.fullmatch(v):
        return None
    v = v.rstrip("%").replace(" ", "")
    if "," in v and "." not in v and re.fullmatch(r"[+-]?\d+,\d{1,2}", v):
        v = v.replace(",", ".")  # a decimal comma: "12,50"
    try:
        return Decimal(v.replace(",", ""))
    except InvalidOperation:
        return None


def _date(value: str) -> str | None:
    if not any(c.isdigit() for c in value):
        return None
    from dateutil import parser

    try:
        return parser.parse(value, fuzzy=False).date().isoformat()
    except (ValueError, OverflowError):
        return None


class FieldSpec(BaseModel):
    """One field of an extraction task (``fields.<name>`` in ``downsize.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    type: Literal["string", "number", "date", "enum"] = "string"
    values: list[str] | None = Field(default=None, description="the allowed values of an enum field")
    pattern: str | None = Field(default=None, description="a regular expression the whole value must match")
    required: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> FieldSpec:
        if self.type == "enum" and not self.values:
            raise ValueError("an enum field needs its 'values'")
        if self.values is not None and self.type != "enum":
            raise ValueError(f"'values' applies to enum fields, not to a {self.type} field")
        if self.pattern is not None:
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
        return self

    def problem(self, value: str) -> str | None:
        """Why ``value`` is not a valid value of this field, or None."""
        v = value.strip()
        if self.type == "number" and _number(v) is None:
            return f"{value!r} is not a number"
        if self.type == "date" and _date(v) is None:
            return f"{value!r} is not a date"
        if self.type == "enum" and normalise_value(v) not in {normalise_value(x) for x in self.values or ()}:
            return f"{value!r} is not one of {self.values}"
        if self.pattern is not None and not re.fullmatch(self.pattern, v):
            return f"{value!r} does not match {self.pattern!r}"
        return None

    def canonical(self, value: str) -> str:
        """The form two values of this field are compared in (see the module docstring)."""
        if self.type == "number" and (n := _number(value)) is not None:
            return format(n.normalize(), "f")
        if self.type == "date" and (d := _date(value)) is not None:
            return d
        return normalise_value(value)

    def typed(self, value: str) -> Any:
        """The value as an answer object shows it: a JSON number, an ISO date, the enum's spelling."""
        if self.type == "number" and (n := _number(value)) is not None:
            return int(n) if n == n.to_integral_value() else float(n)
        if self.type == "date" and (d := _date(value)) is not None:
            return d
        if self.type == "enum":
            key = normalise_value(value)
            return next((x for x in self.values or () if normalise_value(x) == key), value)
        return value
