"""Store contents for the review tests: a ``news`` task over Reuters texts and gateway traffic written
as real audit records (:class:`~downsize.audit.AuditRecord`, :class:`~downsize.audit.SpotCheckRecord`).

``log_traffic`` writes, per text, one request of a known kind, so each test knows which rows the
queue policy must pick: ``student`` answers (some spot-checked, some of those disagreeing),
``teacher`` escalations (confident contradictions and unsure ones), ``student_fallback`` rows,
teacher failures (``error`` 502) and client errors (``error`` 400, never queued).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from downsize.audit import AuditRecord, SpotCheckRecord
from downsize.config import Config
from downsize.data import read_texts
from downsize.store import Store, text_hash

REUTERS = Path(__file__).resolve().parents[1] / "src" / "downsize" / "_assets" / "reuters_r8_demo-train.csv.gz"
LABELS = ["earn", "acq", "crude", "trade"]


def config(tmp_path: Path, *, task: dict[str, Any] | None = None, tasks: dict[str, Any] | None = None) -> Config:
    """A project with the task ``news`` (classify, the four labels) and a teacher nobody calls."""
    return Config.model_validate({
        "store": f"sqlite:///{tmp_path / 'review.db'}", "home": str(tmp_path / ".downsize"),
        "teachers": {"default": {"base_url": "http://127.0.0.1:9/v1", "model": "gpt-4o"}},
        "tasks": {"news": {"instructions": "Route the newswire story to its desk.",
                           "labels": {k: k for k in LABELS}, "alpha": 0.05, **(task or {})}, **(tasks or {})},
    })


def reuters(n: int | None = None) -> tuple[list[str], list[str]]:
    """Texts and labels of the demo's Reuters rows whose label is one of :data:`LABELS`."""
    data = read_texts(REUTERS, label_col="label")
    rows = [(t, y) for t, y in zip(data.texts, data.labels or []) if y in LABELS]
    rows = rows[:n] if n is not None else rows
    return [t for t, _ in rows], [y for _, y in rows]


def _other(label: str) -> str:
    return LABELS[(LABELS.index(label) + 1) % len(LABELS)]


@dataclass
class Traffic:
    """What :func:`log_traffic` wrote, by the reason the queue policy should give (text lists)."""

    disagreement: list[str] = field(default_factory=list)
    contradicted: list[str] = field(default_factory=list)
    fallback: list[str] = field(default_factory=list)
    teacher_failed: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)  #: rows the policy must not queue (unless sampled)
    request_ids: dict[str, str] = field(default_factory=dict)  #: text → request id
    answered: list[AuditRecord] = field(default_factory=list)  #: rows with an answer (the sample's frame)


def _rec(text: str, answered_by: str, answer: str | None, *, i: int, tag: str, log_text: bool = True,
         **kw: Any) -> AuditRecord:
    return AuditRecord(request_id=f"{tag}-{i:05d}", task="news", model="downsize/news", input_hash=text_hash(text),
                       input_text=text if log_text else None, answer=answer, answered_by=answered_by,
                       latency_ms=5.0, **kw)


def log_traffic(store: Store, texts: list[str], labels: list[str], *, tag: str = "r", log_text: bool = True) -> Traffic:
    """One request per text, cycling through ten kinds of row (see the module docstring)."""
    out = Traffic()
    rows, spots = [], []
    for i, (x, y) in enumerate(zip(texts, labels)):
        kind = i % 10
        if kind in (0, 1, 2, 3):  # the student answers; 0 and 1 spot-checked, 0 disagreeing
            r = _rec(x, "student", y, i=i, tag=tag, log_text=log_text, confidence=0.97, student_label=y)
            if kind < 2:
                t = _other(y) if kind == 0 else y
                spots.append(SpotCheckRecord(request_id=r.request_id, task="news", student_label=y, teacher_label=t,
                                             loss=0.0 if t == y else 1.0).row())
            (out.disagreement if kind == 0 else out.ignored).append(x)
        elif kind in (4, 5):  # escalated: 4 confidently contradicted, 5 unsure and different
            conf = 0.9 if kind == 4 else 0.4
            r = _rec(x, "teacher", y, i=i, tag=tag, log_text=log_text, confidence=conf, student_label=_other(y),
                     teacher_label=y)
            (out.contradicted if kind == 4 else out.ignored).append(x)
        elif kind == 6:  # escalated, student agrees
            r = _rec(x, "teacher", y, i=i, tag=tag, log_text=log_text, confidence=0.85, student_label=y,
                     teacher_label=y)
            out.ignored.append(x)
        elif kind == 7:
            r = _rec(x, "student_fallback", y, i=i, tag=tag, log_text=log_text, confidence=0.3, student_label=y,
                     reason="confidence 0.300 < threshold 0.900; teacher answer unparseable")
            out.fallback.append(x)
        elif kind == 8:
            r = _rec(x, "error", None, i=i, tag=tag, log_text=log_text, status_code=502,
                     reason="the teacher 'default' failed: HTTP 500")
            out.teacher_failed.append(x)
        else:
            r = _rec(x, "error", None, i=i, tag=tag, log_text=log_text, status_code=400, reason="bad request")
            out.ignored.append(x)
        rows.append(r.row())
        out.request_ids[x] = r.request_id
        if r.answer is not None:
            out.answered.append(r)
    store.log_requests(rows)
    store.add_spot_checks(spots)
    return out
