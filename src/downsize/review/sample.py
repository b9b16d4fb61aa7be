"""What people's reviews say about live quality, for ``downsize report``.

Only the random sample (reason ``sample``: a hash of the request id picked it, whatever its text,
answer or confidence) estimates the cascade's live accuracy without bias: the served answer of
each sampled request is compared, by the task kind's loss, with the answer a person gave
(the newest one in effect). Its interval is Clopper–Pearson's. The same is given for the sampled
requests the student answered, the quantity the guarantee bounds (disagreement ≤ α), now against
people. Sampled items nobody has reviewed yet are counted apart: reviewers who skip some kinds of
text would bias the estimate, which is why the figure says how many were reviewed.

The targeted reasons (disagreements, contradictions, failures, pushed rows) are hard cases by
design; their reviews say whom the reviewers sided with, never how good the cascade is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select

from ..calibration import clopper_pearson
from ..config import Config
from ..errors import AnswerError
from ..store import Review, ReviewItem, ReviewReason, Store
from ..tasks import TaskConfig
from .queue import ReviewQueue

__all__ = ["review_summary"]


def _rate(k: int, n: int, confidence: float) -> dict[str, Any]:
    lo, hi = clopper_pearson(k, n, confidence)
    return {"n": n, "agree": k, "accuracy": k / n if n else None, "lo": lo, "hi": hi}


def _loss(cfg: TaskConfig, a: str | None, b: str | None) -> float | None:
    if a is None or b is None:
        return None
    try:
        return float(cfg.disagreement(cfg.decode(a), cfg.decode(b)))
    except AnswerError:
        return None


def review_summary(store: Store, config: Config, task: str, *, start: datetime | None = None,
                   end: datetime | None = None, confidence: float = 0.95) -> dict[str, Any] | None:
    """The review figures of one task (None: nothing was ever queued for it).

    ``start``/``end`` bound the time of the sampled requests (the report's window); the queue
    figures are the queue's now.

    Returns
    -------
    dict or None
        ``queue`` (open, reviewed, conflicts, reviewers), ``sample`` (sampled, reviewed, the
        cascade's accuracy against people with its interval, mean loss, and the same for the
        student's answers under ``student``) and ``targeted`` (reviewed hard cases: sided with
        the teacher / the student / neither).
    """
    with store.session() as s:
        if s.scalar(select(ReviewItem.id).where(ReviewItem.task == task).limit(1)) is None:
            return None
        human: dict[int, str] = {}
        for item_id, answer in s.execute(select(Review.item_id, Review.answer).where(
                Review.task == task, Review.undone_at.is_(None), Review.action != "skip").order_by(Review.id)):
            human[item_id] = answer
        q = select(ReviewReason).where(ReviewReason.task == task)
        if start is not None:
            q = q.where((ReviewReason.reason != "sample") | (ReviewReason.ts >= start))
        if end is not None:
            q = q.where((ReviewReason.reason != "sample") | (ReviewReason.ts <= end))
        reasons = s.scalars(q.order_by(ReviewReason.id)).all()
    stats = ReviewQueue(store, config).stats(task)
    out: dict[str, Any] = {
        "queue": {k: stats[k] for k in ("items", "open", "reviewed", "conflicts")} | {
            "reviewers": len(stats["reviewers"]),
            "by_reason": {r: v["open"] for r, v in stats["by_reason"].items()}},
        "sample": None, "targeted": None, "confidence": confidence, "method": "Clopper-Pearson",
    }
    cfg = config.tasks.get(task)
    if cfg is None:
        return out
    samples = [r for r in reasons if r.reason == "sample"]
    got = [(r, _loss(cfg, r.served_answer, human.get(r.item_id))) for r in samples]
    done = [(r, x) for r, x in got if x is not None]
    stud = [(r, x) for r, x in done if r.answered_by == "student"]
    out["sample"] = {
        "sampled": len(samples), "reviewed": sum(r.item_id in human for r in samples),
        **_rate(sum(x == 0 for _, x in done), len(done), confidence),
        "mean_loss": sum(x for _, x in done) / len(done) if done else None,
        "student": _rate(sum(x == 0 for _, x in stud), len(stud), confidence),
        "rate": cfg.review_sample_rate,
    }
    sided = {"teacher": 0, "student": 0, "neither": 0}
    seen: set[int] = set()
    for r in reasons:
        if r.reason == "sample" or r.item_id in seen or r.item_id not in human:
            continue
        seen.add(r.item_id)
        t, st = _loss(cfg, r.teacher_answer, human[r.item_id]), _loss(cfg, r.student_answer, human[r.item_id])
        sided["teacher" if t == 0 else "student" if st == 0 else "neither"] += 1
    out["targeted"] = {"reviewed": len(seen), "sided_with": sided}
    return out
