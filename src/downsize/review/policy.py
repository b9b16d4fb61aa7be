"""The review queue's policy: which answers a person should look at, and in what order.

Items enter a task's queue from the audit log, read incrementally (the last ``request_log``,
``spot_checks`` and ``teacher_calls`` id seen per task is kept in ``review_cursors``, so a fill
only reads what is new), and from users (``downsize review add TASK FILE``):

==============  ========  ================================================================
reason          priority  what puts a row there
==============  ========  ================================================================
sample          90        a uniform random share ``review_sample_rate`` of answered
                          requests, chosen by a hash of the request id (independent of the
                          text, the answer and its confidence). The only unbiased estimate
                          of live quality: kept apart in every figure, and first in line so
                          that a queue reviewed from the top never starves it.
disagreement    80–85     spot checks whose teacher answer differs from the student's
                          (``spot_checks.loss`` > 0; the larger the loss, the earlier)
user            75        rows pushed by a user (``downsize review add``)
contradicted    70–75     escalations (``teacher`` or ``shadow`` rows) whose teacher answer
                          the student contradicted with confidence ≥ 0.8: one of the two
                          is confidently wrong (the more confident, the earlier)
fallback        60        ``student_fallback`` rows: the teacher failed and the student's
                          below-threshold answer was served
teacher_failed  55        teacher parse failures: ``teacher_calls`` in ``parse_error``
                          (labelling) and task requests that failed on the teacher
                          (``error`` rows with status ≥ 500)
==============  ========  ================================================================

One item per task and text hash: a text that comes back adds a reason to its item, and an item's
priority is the largest of its reasons' (ties: oldest first). Rows logged without their text
(``log_text: false``) cannot be shown to anyone; they are counted, not queued. A spot check whose
request row is not written yet (the audit writer batches) is retried by the next fill for five
minutes. Items whose student answer is unknown (parse failures, pushed rows) get the latest
student's answer and confidence when there is a student; pushed rows get the teacher's label the
store holds for the text, if any.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from ..config import Config
from ..errors import AnswerError, DownsizeError
from ..store import (
    Example,
    Label,
    RequestLog,
    ReviewCursor,
    ReviewItem,
    ReviewReason,
    SpotCheck,
    Store,
    TeacherCall,
    text_hash,
    utcnow,
)
from ..tasks import TaskConfig

__all__ = ["REASONS", "STRONG_CONFIDENCE", "Candidate", "FillSummary", "add_texts", "fill_queue", "queue_candidates",
           "sampled", "user_candidates"]

#: reason → (base priority, what the page calls it)
REASONS: dict[str, tuple[float, str]] = {
    "sample": (90.0, "random sample (unbiased live estimate)"),
    "disagreement": (80.0, "spot check: teacher and student disagree"),
    "user": (75.0, "pushed by a user"),
    "contradicted": (70.0, "escalation the student confidently contradicted"),
    "fallback": (60.0, "teacher failed: the student's unsure answer was served"),
    "teacher_failed": (55.0, "teacher answer unusable"),
}
#: A student this confident that says something else than the teacher "strongly contradicts" it.
STRONG_CONFIDENCE = 0.8
_ANSWERED = ("student", "teacher", "student_fallback", "shadow")
_SPOT_WAIT = timedelta(minutes=5)
_BATCH = 5000


@dataclass
class Candidate:
    """One reason for one text to be reviewed (a future :class:`~downsize.store.ReviewReason`)."""

    text: str
    reason: str
    source: str
    source_ref: str
    ts: datetime
    priority: float | None = None
    detail: str = ""
    answered_by: str | None = None
    served_answer: str | None = None
    student_answer: str | None = None
    student_confidence: float | None = None
    teacher_answer: str | None = None

    def __post_init__(self) -> None:
        if self.reason not in REASONS:
            raise ValueError(f"unknown review reason {self.reason!r} (reasons: {', '.join(REASONS)})")
        if self.priority is None:
            self.priority = REASONS[self.reason][0]
        self.detail = self.detail if len(self.detail) <= 255 else self.detail[:252] + "..."
        self.source_ref = self.source_ref[:255]


@dataclass
class FillSummary:
    """What one fill added: new items, new reasons (by reason), and rows it could not queue."""

    task: str
    new_items: int = 0
    new_reasons: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    no_text: int = 0
    scanned: dict[str, int] = field(default_factory=dict)
    more: bool = False  #: rows are left to read (``max_rows``)


def sampled(request_id: str, rate: float) -> bool:
    """Whether a request is in the random review sample: a hash of its id, uniform in [0, 1), < rate."""
    if rate <= 0:
        return False
    u = int(hashlib.sha256(request_id.encode("utf-8")).hexdigest()[:15], 16) / float(16**15)
    return u < rate


def _differs(task: TaskConfig, a: str, b: str) -> bool:
    try:
        return task.disagreement(task.decode(a), task.decode(b)) > 0
    except AnswerError:  # an answer the task no longer knows: compare the text forms
        return a != b


def _from_request(task: TaskConfig, r: Any, strong: float, text: str) -> list[Candidate]:
    out = []
    base = {"text": text, "source": "request_log", "source_ref": r.request_id, "ts": r.ts,
            "answered_by": r.answered_by, "served_answer": r.answer, "student_answer": r.student_label,
            "student_confidence": r.confidence, "teacher_answer": r.teacher_label}
    if r.answered_by in _ANSWERED and sampled(r.request_id, task.review_sample_rate):
        out.append(Candidate(reason="sample", detail=f"answered by the {r.answered_by}", **base))
    if r.answered_by == "student_fallback":
        out.append(Candidate(reason="fallback", detail=r.reason or "", **base))
    elif r.answered_by == "error" and (r.status_code or 0) >= 500:
        out.append(Candidate(reason="teacher_failed", detail=r.reason or "", **base))
    elif (r.answered_by in ("teacher", "shadow") and r.student_label is not None and r.teacher_label is not None
          and r.confidence is not None and r.confidence >= strong and _differs(task, r.student_label, r.teacher_label)):
        out.append(Candidate(reason="contradicted", priority=70.0 + 5.0 * float(r.confidence),
                             detail=f"student confidence {r.confidence:.3f}, teacher said otherwise", **base))
    return out


def _cursor(s: Any, task: str, source: str) -> ReviewCursor:
    row = s.scalar(select(ReviewCursor).where(ReviewCursor.task == task, ReviewCursor.source == source))
    if row is None:
        row = ReviewCursor(task=task, source=source, last_id=0)
        s.add(row)
    return row


def _first_user_message(prompt: Any) -> str | None:
    for m in prompt if isinstance(prompt, list) else []:
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str):
            return m["content"]
    return None


def _read_requests(s: Any, task_name: str, task: TaskConfig, after: int, strong: float
                   ) -> tuple[list[Candidate], int, int, int]:
    cols = (RequestLog.id, RequestLog.request_id, RequestLog.ts, RequestLog.input_text, RequestLog.answer,
            RequestLog.answered_by, RequestLog.reason, RequestLog.confidence, RequestLog.student_label,
            RequestLog.teacher_label, RequestLog.status_code)
    rows = s.execute(select(*cols).where(RequestLog.task == task_name, RequestLog.id > after)
                     .order_by(RequestLog.id).limit(_BATCH)).all()
    out, no_text = [], 0
    for r in rows:
        found = _from_request(task, r, strong, r.input_text or "")
        if r.input_text is None:
            no_text += bool(found)
        else:
            out += found
    return out, (rows[-1].id if rows else after), len(rows), no_text


def _read_spots(s: Any, task_name: str, after: int, now: datetime) -> tuple[list[Candidate], int, int, int]:
    rows = s.execute(select(SpotCheck).where(SpotCheck.task == task_name, SpotCheck.id > after)
                     .order_by(SpotCheck.id).limit(_BATCH)).scalars().all()
    bad = [sc for sc in rows if sc.loss is not None and sc.loss > 0]
    req: dict[str, Any] = {}
    ids = list({sc.request_id for sc in bad})
    for i in range(0, len(ids), 500):
        req.update({r.request_id: r for r in s.execute(
            select(RequestLog.request_id, RequestLog.input_text, RequestLog.confidence)
            .where(RequestLog.request_id.in_(ids[i:i + 500])))})
    out, last, no_text = [], after, 0
    for sc in rows:
        if sc.loss is not None and sc.loss > 0:
            r = req.get(sc.request_id)
            if r is None and now - sc.ts < _SPOT_WAIT:
                break  # its request row is still in the audit writer's queue: read it next time
            if r is None or r.input_text is None:
                no_text += 1
            else:
                out.append(Candidate(
                    text=r.input_text, reason="disagreement", priority=80.0 + 5.0 * float(sc.loss),
                    source="spot_checks", source_ref=sc.request_id, ts=sc.ts, detail=f"loss {sc.loss:.2f}",
                    answered_by="student", served_answer=sc.student_label, student_answer=sc.student_label,
                    student_confidence=r.confidence, teacher_answer=sc.teacher_label))
        last = sc.id
    return out, last, len(rows), no_text


def _read_calls(s: Any, task_name: str, after: int) -> tuple[list[Candidate], int, int]:
    rows = s.execute(select(TeacherCall.id, TeacherCall.status, TeacherCall.prompt, TeacherCall.error,
                            TeacherCall.created_at)
                     .where(TeacherCall.task == task_name, TeacherCall.id > after)
                     .order_by(TeacherCall.id).limit(_BATCH)).all()
    out = []
    for c in rows:
        text = _first_user_message(c.prompt) if c.status == "parse_error" else None
        if text is not None:
            out.append(Candidate(text=text, reason="teacher_failed", source="teacher_calls", source_ref=str(c.id),
                                 ts=c.created_at, detail=f"unparseable teacher answer: {c.error or ''}"))
    return out, (rows[-1].id if rows else after), len(rows)


def _score_missing(store: Store, task_name: str, task: TaskConfig, cands: list[Candidate], home: Any = None) -> None:
    """Fill in the latest student's answer and confidence where a candidate has none."""
    todo = [c for c in cands if c.student_answer is None]
    sv = store.latest_student(task_name) if todo else None
    if sv is None:
        return
    from ..training import load_student_version

    try:
        student = load_student_version(sv, home)
        texts = list(dict.fromkeys(c.text for c in todo))
        answers, conf = task.score(student, texts)
    except DownsizeError:
        return  # a student that cannot be loaded: the items simply show no student answer
    got = {t: (task.encode(a), float(p)) for t, a, p in zip(texts, answers, conf)}
    for c in todo:
        c.student_answer, c.student_confidence = got[c.text]


def queue_candidates(store: Store, task_name: str, cands: Sequence[Candidate], *, session: Any = None
                     ) -> tuple[int, Counter[str]]:
    """Insert candidates: new items for new texts, new reasons for new (item, reason, source row).

    Returns (new items, new reasons by reason). Concurrent fills are safe: a lost race on the
    unique constraints is retried once, and the second pass finds the other fill's rows.
    """
    if session is None:
        for attempt in (0, 1):
            try:
                with store.session() as s:
                    return queue_candidates(store, task_name, cands, session=s)
            except IntegrityError:
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover
    s = session
    hashes = {c.text: text_hash(c.text) for c in cands}
    items: dict[str, int] = {}
    uniq = list(set(hashes.values()))
    for i in range(0, len(uniq), 500):
        items.update(dict(s.execute(select(ReviewItem.text_hash, ReviewItem.id).where(
            ReviewItem.task == task_name, ReviewItem.text_hash.in_(uniq[i:i + 500]))).all()))
    new_items = [ReviewItem(task=task_name, text=t, text_hash=h) for t, h in hashes.items() if h not in items]
    s.add_all(new_items)
    s.flush()
    items.update({it.text_hash: it.id for it in new_items})
    have: set[tuple[int, str, str]] = set()
    ids = list(set(items.values()))
    for i in range(0, len(ids), 500):
        have.update(tuple(k) for k in s.execute(select(
            ReviewReason.item_id, ReviewReason.reason, ReviewReason.source_ref).where(
            ReviewReason.item_id.in_(ids[i:i + 500]))))
    added: Counter[str] = Counter()
    for c in cands:
        key = (items[hashes[c.text]], c.reason, c.source_ref)
        if key in have:
            continue
        have.add(key)
        s.add(ReviewReason(item_id=key[0], task=task_name, reason=c.reason, priority=c.priority, detail=c.detail,
                           source=c.source, source_ref=c.source_ref, ts=c.ts, answered_by=c.answered_by,
                           served_answer=c.served_answer, student_answer=c.student_answer,
                           student_confidence=c.student_confidence, teacher_answer=c.teacher_answer))
        added[c.reason] += 1
    return len(new_items), added


def fill_queue(store: Store, config: Config, task_name: str, *, strong: float = STRONG_CONFIDENCE,
               max_rows: int | None = None, now: datetime | None = None) -> FillSummary:
    """Read the audit rows written since the last fill and queue what the policy picks.

    Parameters
    ----------
    strong : float
        The student confidence from which an escalation it contradicted is queued.
    max_rows : int, optional
        Read at most about this many rows of each audit table (the rest waits for the next fill;
        ``FillSummary.more`` says so): the gateway's page fills a large backlog in steps.

    Raises
    ------
    ConfigError
        The task is not in the config (its items stay in the store).
    """
    task = config.task(task_name)
    now = now or utcnow()
    out = FillSummary(task_name)
    by: Counter[str] = Counter()
    for source in ("request_log", "spot_checks", "teacher_calls"):
        scanned = 0
        while True:
            with store.session() as s:
                start = s.scalar(select(ReviewCursor.last_id).where(
                    ReviewCursor.task == task_name, ReviewCursor.source == source)) or 0
                if source == "request_log":
                    cands, last, n, no_text = _read_requests(s, task_name, task, start, strong)
                elif source == "spot_checks":
                    cands, last, n, no_text = _read_spots(s, task_name, start, now)
                else:
                    (cands, last, n), no_text = _read_calls(s, task_name, start), 0
            _score_missing(store, task_name, task, cands, config.home_dir())
            for attempt in (0, 1):
                try:
                    with store.session() as s:
                        cur = _cursor(s, task_name, source)
                        if cur.last_id != start:  # another fill read these rows meanwhile
                            last, cands = cur.last_id, []
                        new_items, added = queue_candidates(store, task_name, cands, session=s)
                        cur.last_id = last
                    break
                except IntegrityError:
                    if attempt:
                        raise
            out.new_items += new_items
            out.new_reasons += sum(added.values())
            by.update(added)
            out.no_text += no_text
            scanned += n
            if n < _BATCH or last == start:
                break
            if max_rows is not None and scanned >= max_rows:
                out.more = True
                break
        out.scanned[source] = scanned
    out.by_reason = dict(by)
    return out


def user_candidates(task_name: str, texts: Iterable[str], *, source: str, rows: Sequence[int] | None = None,
                    priority: float | None = None) -> list[Candidate]:
    """Candidates for texts a user pushes (``source`` names the file; ``rows`` its line numbers)."""
    now = utcnow()
    texts = list(texts)
    rows = list(rows) if rows is not None else list(range(1, len(texts) + 1))
    return [Candidate(text=t, reason="user", source="user", source_ref=f"{source}:{r}", ts=now,
                      priority=priority, detail=f"pushed from {source}, row {r}") for t, r in zip(texts, rows)]


def _teacher_labels(store: Store, task_name: str, cands: list[Candidate]) -> None:
    """Give pushed texts the teacher's label the store has for them (the newest in effect), if any."""
    hashes: dict[str, list[Candidate]] = {}
    for c in cands:
        hashes.setdefault(text_hash(c.text), []).append(c)
    found: dict[str, str] = {}
    keys = list(hashes)
    with store.session() as s:
        for i in range(0, len(keys), 500):
            found.update({h: lab for h, lab in s.execute(
                select(Example.text_hash, Label.label).join(Label, Label.example_id == Example.id)
                .where(Example.task == task_name, Example.text_hash.in_(keys[i:i + 500]), Label.source == "teacher",
                       Label.revoked_at.is_(None)).order_by(Label.id))})
    for h, lab in found.items():
        for c in hashes[h]:
            c.teacher_answer = lab


def add_texts(store: Store, config: Config, task_name: str, texts: Iterable[str], *, source: str,
              rows: Sequence[int] | None = None, priority: float | None = None) -> FillSummary:
    """Push texts into a task's queue (reason ``user``), with the teacher's label the store has for
    them and the latest student's answer."""
    task = config.task(task_name)
    cands = [c for c in user_candidates(task_name, texts, source=source, rows=rows, priority=priority)
             if c.text.strip()]
    _teacher_labels(store, task_name, cands)
    _score_missing(store, task_name, task, cands, config.home_dir())
    new_items, added = queue_candidates(store, task_name, cands)
    return FillSummary(task_name, new_items, sum(added.values()), dict(added), 0, {"user": len(cands)})

