"""Find the work to downsize: read LLM traffic logs, group them into call sites, judge each one.

Usage::

    from downsize.discover import discover
    d = discover(["batch_input.jsonl", "batch_output.jsonl"])   # or a LiteLLM export, a store...
    rich.print(d.table())
    print(d.config_yaml())

Pieces: :mod:`.readers` (log formats), :mod:`.templates` (call sites), :mod:`.profile` (traffic,
cost, answers), :mod:`.pii`, :mod:`.verdict` (the three questions), :mod:`.certify` (the certified
local share), :mod:`.propose` (``downsize.yaml`` for the narrow ones), :mod:`.prices`.
"""

from ._discovery import Discovery, discover
from ._metrics import purity, template_scores
from .certify import Certification, Certifier, certify_classify, default_certifier
from .pii import PiiSummary, find_pii, iban_valid, luhn_valid, scan_pii
from .prices import PRICE_DATE, PRICES, cost, price_for
from .profile import TemplateProfile, normalise_answer, profile_template
from .propose import TaskProposal, config_yaml, propose_task
from .readers import (
    FORMATS,
    FileReport,
    LogRead,
    LogRecord,
    ReadReport,
    detect_format,
    read_logs,
    records_from_audit_rows,
)
from .templates import Template, TemplateMiner
from .verdict import Thresholds, Verdict, judge, with_certification

__all__ = [
    "FORMATS",
    "PRICES",
    "PRICE_DATE",
    "Certification",
    "Certifier",
    "Discovery",
    "FileReport",
    "LogRead",
    "LogRecord",
    "PiiSummary",
    "ReadReport",
    "TaskProposal",
    "Template",
    "TemplateMiner",
    "TemplateProfile",
    "Thresholds",
    "Verdict",
    "certify_classify",
    "config_yaml",
    "cost",
    "default_certifier",
    "detect_format",
    "discover",
    "find_pii",
    "iban_valid",
    "judge",
    "luhn_valid",
    "normalise_answer",
    "price_for",
    "profile_template",
    "propose_task",
    "purity",
    "read_logs",
    "records_from_audit_rows",
    "scan_pii",
    "template_scores",
    "with_certification",
]
