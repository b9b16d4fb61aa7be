"""What one call site costs and what its answers look like.

Per template (:func:`profile_template`): requests, tokens (as logged, else estimated at 4
characters a token), dollars (as logged, else at the list prices of :mod:`.prices`), p50
latency, the observed request rate, and the answers: distinct normalised answers and the
share the top k cover, JSON-ness (objects, arrays of strings), key-set stability and what each
key's values look like, length, and determinism (same input, same answer?).
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ._records import LogRecord
from .pii import PiiSummary, scan_pii
from .prices import Price, cost
from .templates import Template

__all__ = ["TOP_K", "FieldStats", "TemplateProfile", "normalise_answer", "parse_json_answer", "profile_template"]

TOP_K = (1, 2, 5, 10, 20, 50)
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?(.*?)\n?```$", re.DOTALL)
_LEAD = re.compile(r"^(?:answer|label|category|class|sentiment|topic|result)\s*[:=-]\s*", re.IGNORECASE)
_SPACE = re.compile(r"\s+")
DAYS_PER_MONTH = 30.44


def _unfence(s: str) -> str:
    s = s.strip()
    m = _FENCE.match(s)
    return m.group(1).strip() if m else s


def parse_json_answer(s: str) -> Any:
    """The answer as JSON (code fences stripped) when it is an object or an array, else ``None``."""
    s = _unfence(s)
    if not s[:1] in ("{", "["):
        return None
    try:
        return orjson.loads(s)
    except orjson.JSONDecodeError:
        return None


def normalise_answer(s: str) -> str:
    """Canonical form of an answer: JSON re-serialised with sorted keys; text case-folded, one
    space, without surrounding quotes, a ``label:``-style lead or a trailing full stop.

    >>> normalise_answer('  "Positive." '), normalise_answer('Label: EARN'), normalise_answer('{"b":1, "a":2}')
    ('positive', 'earn', '{"a":2,"b":1}')
    """
    obj = parse_json_answer(s)
    if obj is not None:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
    t = _SPACE.sub(" ", _unfence(s)).strip().strip("\"'`").strip()
    t = _LEAD.sub("", t).rstrip(".!").strip().strip("\"'`")
    return t.casefold()


@dataclass
class FieldStats:
    """One key of JSON-object answers."""

    name: str
    present: float  # share of object answers that have it
    types: dict[str, int]
    distinct: int
    top: list[tuple[str, int]]
    in_input: float  # share of its string values found in the request text
    median_chars: float

    def kind(self, *, max_labels: int = 50, min_in_input: float = 0.7) -> str:
        """``number`` | ``boolean`` | ``span`` (copied from the input) | ``enum`` (a closed set) | ``free``."""
        n = sum(self.types.values()) or 1
        if (self.types.get("int", 0) + self.types.get("float", 0)) / n >= 0.9:
            return "number"
        if self.types.get("bool", 0) / n >= 0.9:
            return "boolean"
        if self.in_input >= min_in_input:
            return "span"
        covered = sum(c for _, c in self.top[:max_labels])
        if self.distinct <= max_labels or covered >= 0.95 * n:
            return "enum"
        return "free"


@dataclass
class TemplateProfile:
    """Traffic, cost and answers of one template (see the module docstring)."""

    template: Template
    n: int
    n_answered: int
    models: dict[str, int]
    input_tokens: float  # mean per request
    output_tokens: float
    tokens_estimated: float  # share of requests whose tokens were estimated
    cost_usd: float  # all the template's logged requests
    cost_priced: float  # share of requests with a known cost (logged or listed price)
    cost_source: str  # logged | list prices | mixed | unknown
    latency_p50_ms: float | None
    first_ts: datetime | None
    last_ts: datetime | None
    answers_distinct: int
    answers_top: list[tuple[str, int]]
    coverage: dict[int, float]  # top-k distinct answers -> share of answers
    json_object: float
    json_array: float
    array_of_strings: float
    array_items: list[tuple[str, int]]
    array_max_len: int
    keys: list[FieldStats]
    modal_keyset: float
    answer_chars_median: float
    answer_words_median: float
    repeated_inputs: int
    deterministic: float | None  # share of repeated inputs that always got the same answer
    pii: PiiSummary = field(default_factory=PiiSummary)
    raw_forms: dict[str, str] = field(default_factory=dict)  # normalised answer -> most frequent raw form

    @property
    def cost_per_request(self) -> float:
        return self.cost_usd / max(1, round(self.n * self.cost_priced))

    @property
    def span_days(self) -> float | None:
        if self.first_ts is None or self.last_ts is None:
            return None
        d = (self.last_ts - self.first_ts).total_seconds() / 86400
        return d if d >= 1 / 24 else None

    def requests_per_month(self) -> float | None:
        """Observed rate (requests over the logged span), or ``None`` without an hour of timestamps."""
        d = self.span_days
        return self.n / d * DAYS_PER_MONTH if d else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "template": self.template.id, "pattern": self.template.pattern(), "n": self.n, "models": self.models,
            "input_tokens": round(self.input_tokens, 1), "output_tokens": round(self.output_tokens, 1),
            "tokens_estimated": self.tokens_estimated, "cost_usd": self.cost_usd, "cost_source": self.cost_source,
            "latency_p50_ms": self.latency_p50_ms, "requests_per_month": self.requests_per_month(),
            "answers_distinct": self.answers_distinct, "answers_top": self.answers_top[:10],
            "coverage": self.coverage, "json_object": self.json_object, "json_array": self.json_array,
            "array_of_strings": self.array_of_strings, "keys": [k.name for k in self.keys],
            "modal_keyset": self.modal_keyset, "answer_chars_median": self.answer_chars_median,
            "repeated_inputs": self.repeated_inputs, "deterministic": self.deterministic, "pii": self.pii.to_dict(),
        }


def _norm_text(s: str) -> str:
    return _SPACE.sub(" ", s).strip().casefold()


def _type(v: Any) -> str:
    return {bool: "bool", int: "int", float: "float", str: "str", type(None): "null", list: "list",
            dict: "dict"}.get(type(v), "other")


def _fields(objs: list[tuple[dict[str, Any], str]], limit: int = 2000) -> list[FieldStats]:
    n = len(objs)
    present = Counter(k for o, _ in objs for k in o)
    out = []
    for name, c in present.most_common():
        vals = [(o[name], t) for o, t in objs[: limit] if name in o]
        types = Counter(_type(v) for v, _ in vals)
        strs = [(v, t) for v, t in vals if isinstance(v, str) and v.strip()]
        in_input = sum(_norm_text(v) in t for v, t in strs) / len(strs) if strs else 0.0
        norm = Counter(orjson.dumps(v).decode() if not isinstance(v, str) else _norm_text(v) for v, _ in vals)
        out.append(FieldStats(name, c / n, dict(types), len(norm), norm.most_common(60), in_input,
                              statistics.median(len(str(v)) for v, _ in vals) if vals else 0.0))
    return out


def profile_template(template: Template, records: Sequence[LogRecord], *, prices: Mapping[str, Price] | None = None,
                     names: bool = True, max_scan: int = 5000, name_sample: int = 100) -> TemplateProfile:
    """Profile the ``records`` of one template (see :class:`TemplateProfile`)."""
    n = len(records)
    models = Counter(r.model for r in records)
    tin, tout, est, total, priced, logged = [], [], 0, 0.0, 0, 0
    for r in records:
        i = r.input_tokens if r.input_tokens is not None else sum(len(t) for _, t in r.messages) / 4 + 4 * len(r.messages)
        o = r.output_tokens if r.output_tokens is not None else len(r.response or "") / 4
        est += r.input_tokens is None or r.output_tokens is None
        tin.append(i)
        tout.append(o)
        c = r.cost_usd if r.cost_usd is not None else cost(r.model, i, o, batch=r.batch, prices=prices)
        if c is not None:
            total += c
            priced += 1
            logged += r.cost_usd is not None
    source = ("unknown" if not priced else "logged" if logged == priced else "list prices" if not logged else "mixed")
    lat = [r.latency_ms for r in records if r.latency_ms is not None]
    ts = [r.ts for r in records if r.ts is not None]
    answered = [r for r in records if r.response is not None]
    answers = [r.response or "" for r in answered]
    norm = [normalise_answer(a) for a in answers]
    counts = Counter(norm)
    top = set(dict(counts.most_common(300)))
    raw_forms: dict[str, Counter[str]] = {}
    for a, k in zip(answers, norm):
        if k in top:
            raw_forms.setdefault(k, Counter())[a.strip()] += 1
    ordered = [c for _, c in counts.most_common()]
    na = max(1, len(norm))
    coverage = {k: sum(ordered[:k]) / na for k in TOP_K}
    parsed = [parse_json_answer(a) for a in answers]
    objs = [(p, _norm_text(r.text)) for p, r in zip(parsed, answered) if isinstance(p, dict)]
    arrays = [p for p in parsed if isinstance(p, list)]
    str_arrays = [p for p in arrays if all(isinstance(x, str) for x in p)]
    keysets = Counter(frozenset(o) for o, _ in objs)
    by_input: dict[int, set[str]] = {}
    for r, k in zip(answered, norm):
        by_input.setdefault(hash(r.messages), set()).add(k)
    seen = Counter(hash(r.messages) for r in answered)
    repeated = [h for h, c in seen.items() if c >= 2]
    pii = scan_pii([r.text for r in records], names=names, max_scan=max_scan, name_sample=name_sample)
    return TemplateProfile(
        template=template, n=n, n_answered=len(answered), models=dict(models.most_common()),
        input_tokens=statistics.fmean(tin) if tin else 0.0, output_tokens=statistics.fmean(tout) if tout else 0.0,
        tokens_estimated=est / n if n else 0.0, cost_usd=total, cost_priced=priced / n if n else 0.0,
        cost_source=source, latency_p50_ms=statistics.median(lat) if lat else None,
        first_ts=min(ts) if ts else None, last_ts=max(ts) if ts else None,
        answers_distinct=len(counts), answers_top=counts.most_common(50), coverage=coverage,
        json_object=len(objs) / na, json_array=len(arrays) / na, array_of_strings=len(str_arrays) / na,
        array_items=Counter(x for p in str_arrays for x in dict.fromkeys(p)).most_common(300),
        array_max_len=max((len(dict.fromkeys(p)) for p in str_arrays), default=0),
        keys=_fields(objs), modal_keyset=keysets.most_common(1)[0][1] / len(objs) if objs else 0.0,
        answer_chars_median=statistics.median(len(a) for a in answers) if answers else 0.0,
        answer_words_median=statistics.median(len(a.split()) for a in answers) if answers else 0.0,
        repeated_inputs=len(repeated),
        deterministic=(sum(len(by_input[h]) == 1 for h in repeated) / len(repeated)) if repeated else None,
        pii=pii, raw_forms={k: c.most_common(1)[0][0] for k, c in raw_forms.items()},
    )
