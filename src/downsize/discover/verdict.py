"""The three questions per call site: narrow or broad, private or not, and the cost at volume.

Narrow or broad (:func:`judge`), from the answers alone, first match wins:

* **extract-like**: ≥ 90 % of the answers are JSON objects, the keys form a closed set (keys seen
  in ≥ 1 % of the answers cover ≥ 98 % of key uses; ≤ 60 keys) and at most 10 % of the values sit
  in *free* fields (neither copied from the request, nor a closed set, number or boolean: a
  ``{"summary": ...}`` answer is generation, not extraction);
* **multilabel-like**: ≥ 90 % are JSON arrays of strings whose items form a closed set (items
  seen ≥ 3 times and in ≥ 0.2 % of the answers cover ≥ 95 % of item uses; ≤ 200 items);
* **classify-like**: the answers seen ≥ 3 times and in ≥ 0.2 % of the requests are 2–50 distinct
  normalised answers, cover ≥ 95 % of the answers, and answers are short (median ≤ 6 words);
* otherwise **broad** (open-ended): "keep on the large model", never recommended for a student.

Fewer than 50 answered requests get no verdict ("too few requests"). The thresholds are the
fields of :class:`Thresholds`.

Private: PII (:mod:`.pii`) of a strong kind (email, phone, valid card, valid IBAN) in ≥ 0.5 % of
the scanned inputs, or a person named in ≥ 50 % of them (spaCy finds names in 21–44 % of plain
reviews, news and addresses, mostly public figures and streets: a minority is not evidence of
customer data; a form or ticket that names its sender in every request is) → ``local_only``
recommended: run the student only, keep texts out of the teacher's logs.

Cost at volume: $/month now = requests/month (observed over the log's span, or given) × the
mean logged cost of a request. With the cascade, ``s`` of the requests are answered locally, so
$/month = now × (1 − s + s × spot-check rate). ``s`` is the *certified* projected local share
(:mod:`.certify`), never a guess: a narrow template without a certification has no projection.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .certify import Certification
from .profile import TemplateProfile

__all__ = ["Thresholds", "Verdict", "answers_for", "judge", "label_of", "with_certification"]

KEEP = "keep on the large model"


@dataclass(frozen=True, kw_only=True)
class Thresholds:
    """The cut-offs of :func:`judge` (see the module docstring)."""

    min_requests: int = 50
    max_labels: int = 50
    label_min_count: int = 3
    label_min_share: float = 0.002
    label_coverage: float = 0.95
    max_answer_words: float = 6
    json_share: float = 0.9
    key_min_share: float = 0.01
    key_coverage: float = 0.98
    max_keys: int = 60
    max_free_values: float = 0.1
    item_coverage: float = 0.95
    max_items: int = 200
    pii_min_share: float = 0.005
    names_min_share: float = 0.5
    spot_check_rate: float = 0.02


@dataclass(frozen=True)
class Verdict:
    """The answer to the three questions for one template.

    ``labels`` are the inferred answer set (classify: normalised labels; multilabel: items;
    extract: field names); ``local_share`` is the certified projection (``None`` without one).
    """

    template_id: int
    scope: str  # narrow | broad | too few
    kind: str | None  # classify | multilabel | extract
    reason: str
    labels: tuple[str, ...] = ()
    private: bool = False
    pii_kinds: tuple[str, ...] = ()
    pii_note: str = ""  # e.g. that names were not checked (spaCy not installed)
    requests_per_month: float | None = None
    rate_source: str = "unknown"  # observed | given | unknown
    cost_month_now: float | None = None
    certification: Certification | None = field(default=None, compare=False)
    certify_note: str = ""
    cost_month_cascade: float | None = None

    @property
    def local_share(self) -> float | None:
        return self.certification.coverage if self.certification else None

    @property
    def savings_month(self) -> float | None:
        if self.cost_month_now is None or self.cost_month_cascade is None:
            return None
        return self.cost_month_now - self.cost_month_cascade

    @property
    def recommendation(self) -> str:
        if self.scope == "too few":
            return "too few requests to judge"
        if self.scope == "broad":
            return KEEP
        if self.kind is None:
            return "the same answer every time: check the call site (no model needed?)"
        where = "local_only (PII in inputs)" if self.private else "cascade"
        cert = self.certification
        if cert is None:
            return f"distil candidate ({self.kind}, {where}): {self.certify_note or 'not certified yet'}"
        if cert.threshold is None:
            return f"distil later ({self.kind}): no certified local share on the logged pairs yet"
        lo, hi = cert.coverage_interval
        return (f"distil ({self.kind}, {where}): {100 * cert.coverage:.0f} % local "
                f"({100 * lo:.0f}–{100 * hi:.0f} %) at ≤ {100 * cert.alpha:g} % disagreement")

    def to_dict(self) -> dict[str, Any]:
        return {
            "template": self.template_id, "scope": self.scope, "kind": self.kind, "reason": self.reason,
            "labels": list(self.labels), "private": self.private, "pii_kinds": list(self.pii_kinds), "pii_note": self.pii_note,
            "requests_per_month": self.requests_per_month, "rate_source": self.rate_source,
            "cost_month_now": self.cost_month_now, "local_share": self.local_share,
            "certification": self.certification.to_dict() if self.certification else None,
            "certify_note": self.certify_note, "cost_month_cascade": self.cost_month_cascade,
            "savings_month": self.savings_month, "recommendation": self.recommendation,
        }


_SEP = re.compile(r"^[\s(\[,:;\u2013\u2014-]+")


def label_of(answer: str, labels: Sequence[str]) -> str:
    """The label an answer gives: itself, or the label it opens before an explanation of 2+ words.

    >>> label_of("earn - see the story", ["earn", "acq"]), label_of("money-fx", ["money", "acq"])
    ('earn', 'money-fx')
    """
    if answer in labels:
        return answer
    for lab in sorted(labels, key=len, reverse=True):
        if answer.startswith(lab) and len(answer) > len(lab):
            rest = answer[len(lab):]
            if _SEP.match(rest) and len(rest.split()) >= 2:
                return lab
    return answer


def _labels(counts: Sequence[tuple[str, int]], n: int, t: Thresholds) -> list[str]:
    """Frequent answers that are not a more frequent one with an explanation after it."""
    floor = max(t.label_min_count, t.label_min_share * n)
    out: list[str] = []
    for a, c in counts:
        if c >= floor and label_of(a, out) == a:
            out.append(a)
    return out


def _narrowness(p: TemplateProfile, t: Thresholds) -> tuple[str, str | None, str, tuple[str, ...]]:
    n = p.n_answered
    if p.json_object >= t.json_share:
        keys = [k for k in p.keys if k.present >= t.key_min_share]
        uses = sum(k.present for k in p.keys) or 1.0
        covered = sum(k.present for k in keys) / uses
        free = sum(k.present for k in keys if k.kind(max_labels=t.max_labels) == "free") / uses
        desc = f"{100 * p.json_object:.0f} % JSON objects, {len(keys)} keys covering {100 * covered:.0f} % of key uses"
        if covered >= t.key_coverage and len(keys) <= t.max_keys and free <= t.max_free_values:
            return "narrow", "extract", desc + f", {100 * free:.0f} % of values free text", tuple(k.name for k in keys)
        return "broad", None, desc + f" but {100 * free:.0f} % of values are free text or keys vary", ()
    if p.array_of_strings >= t.json_share:
        items = _labels(p.array_items, n, t)
        uses = sum(c for _, c in p.array_items) or 1
        covered = sum(c for a, c in p.array_items if a in set(items)) / uses
        desc = f"{100 * p.array_of_strings:.0f} % JSON arrays of strings, {len(items)} items covering {100 * covered:.0f} %"
        if covered >= t.item_coverage and 2 <= len(items) <= t.max_items:
            return "narrow", "multilabel", desc, tuple(items)
        return "broad", None, desc + " (an open item set)", ()
    labels = _labels(p.answers_top, n, t)
    covered = sum(c for a, c in p.answers_top if label_of(a, labels) in set(labels)) / max(1, n)
    desc = (f"{p.answers_distinct:,} distinct answers in {n:,}; {len(labels)} frequent ones cover "
            f"{100 * covered:.1f} %; median {p.answer_words_median:g} words")
    if len(labels) == 1 and covered >= t.label_coverage:
        return "narrow", None, desc + " (a single answer)", tuple(labels)
    if 2 <= len(labels) <= t.max_labels and covered >= t.label_coverage and p.answer_words_median <= t.max_answer_words:
        return "narrow", "classify", desc, tuple(labels)
    return "broad", None, desc + ": open-ended", ()


def judge(p: TemplateProfile, *, thresholds: Thresholds | None = None,
          requests_per_month: float | None = None) -> Verdict:
    """The verdict of one profiled template, before certification (see the module docstring)."""
    t = thresholds or Thresholds()
    rpm = requests_per_month if requests_per_month is not None else p.requests_per_month()
    source = "given" if requests_per_month is not None else ("observed" if rpm is not None else "unknown")
    now = rpm * p.cost_per_request if rpm is not None and p.cost_priced > 0 else None
    pii = p.pii
    kinds = [k for k in pii.kinds() if (k == "person" and pii.share(k) >= t.names_min_share)
             or (k != "person" and pii.share(k) >= t.pii_min_share)]
    base: dict[str, Any] = {"template_id": p.template.id, "private": bool(kinds), "pii_kinds": tuple(kinds),
                            "pii_note": pii.names_note, "requests_per_month": rpm, "rate_source": source, "cost_month_now": now}
    if p.n_answered < t.min_requests:
        return Verdict(scope="too few", kind=None, reason=f"{p.n_answered} answered requests (< {t.min_requests})", **base)
    scope, kind, reason, labels = _narrowness(p, t)
    return Verdict(scope=scope, kind=kind, reason=reason, labels=labels, **base)


def with_certification(v: Verdict, cert: Certification | None, *, note: str = "",
                       thresholds: Thresholds | None = None) -> Verdict:
    """The verdict with its certified local share and the projected $/month with the cascade."""
    cascade = None
    if cert is not None and v.cost_month_now is not None:
        s = cert.coverage
        cascade = v.cost_month_now * (1 - s + s * (thresholds or Thresholds()).spot_check_rate)
    return replace(v, certification=cert, certify_note=note, cost_month_cascade=cascade)


def answers_for(kind: str, normalised: Sequence[str], labels: Sequence[str]) -> list[Any]:
    """Answers in the task-kind contract's shape from normalised logged answers (see :data:`Certifier`)."""
    import orjson

    if kind == "classify":
        return [label_of(a, labels) for a in normalised]
    out: list[Any] = []
    for a in normalised:
        try:
            obj = orjson.loads(a)
        except orjson.JSONDecodeError:
            obj = None
        if kind == "multilabel":
            out.append(tuple(sorted({str(x) for x in obj})) if isinstance(obj, list) else ())
        else:
            out.append({k: " ".join(str(v).split()) for k, v in obj.items() if v not in (None, "")}
                       if isinstance(obj, dict) else {})
    return out
