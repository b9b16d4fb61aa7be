"""A task's review queue in the store: the next item for a reviewer, answers that become ``human``
labels, skips, undo, and the figures the page and the terminal show.

Every action is a new :class:`~downsize.store.Review` row. An answer also writes a new ``human``
:class:`~downsize.store.Label` for the text (creating its example if the text is new), so the next
``downsize train`` learns from it and, with ``reference: human``, the next calibration bounds
disagreement with it; the label priority gold > human > teacher applies, and between people the
newest answer is in effect. Two reviewers on one item are both kept, and the item shows the
conflict (a reviewer who answers an item again only changes their own answer). An undo marks
the reviewer's last action undone and revokes the label it wrote.

An item is *open* until someone answers it; a skip only hides it from the reviewer who skipped.
Answers are validated by the task's kind (:meth:`~downsize.tasks.TaskConfig.normalise`), so
the queue works the same for every kind; the page offers number keys for an answer schema with
one enumerated property (a label, or a list of labels).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import distinct, func, or_, select
from sqlalchemy.exc import IntegrityError

from ..config import Config
from ..errors import AnswerError, ConfigError, DownsizeError
from ..store import ApiKey, Example, Label, Review, ReviewItem, ReviewReason, Store, utcnow
from ..tasks import TaskConfig
from .policy import REASONS

__all__ = ["ANSWER_ACTIONS", "NoSuchItem", "ReviewQueue", "choices"]

#: How a reviewer answered: accepted the teacher's or the student's answer, picked a label,
#: edited the answer, or it came from an imported file.
ANSWER_ACTIONS = ("teacher", "student", "pick", "edit", "import")
_THROUGHPUT_WINDOW = timedelta(minutes=10)


class NoSuchItem(DownsizeError, LookupError):
    """No review item with that id (in that task)."""


def choices(task: TaskConfig) -> dict[str, Any]:
    """What number keys can pick, read from the kind's answer schema: ``single`` (one enumerated
    property: a label), ``multi`` (one array of enumerated items: labels to toggle) or ``none``."""
    props = (task.answer_schema() or {}).get("properties") or {}
    if len(props) == 1:
        key, p = next(iter(props.items()))
        if isinstance(p, dict) and isinstance(p.get("enum"), list):
            return {"mode": "single", "key": key, "options": [str(o) for o in p["enum"]]}
        items = p.get("items") if isinstance(p, dict) else None
        if isinstance(p, dict) and p.get("type") == "array" and isinstance(items, dict) and isinstance(
                items.get("enum"), list):
            return {"mode": "multi", "key": key, "options": [str(o) for o in items["enum"]]}
    return {"mode": "none", "key": None, "options": []}


def _editable(task: TaskConfig, answer: Any, encoded: str, text: str | None) -> Any:
    """The JSON a reviewer edits: the answer object if it reads back as the same answer, else the
    store's JSON form (an object whose typed values are no longer spans of the text, e.g. a number
    field's ``1250`` for the text's ``1,250.00``, would be refused unchanged)."""
    forms = [task.to_json(answer)]
    try:
        forms.append(json.loads(encoded))
    except ValueError:
        pass
    for form in forms:
        try:
            if task.normalise(form, text) == answer:
                return form
        except AnswerError:
            continue
    return forms[0]


def _shown(task: TaskConfig, encoded: str | None, text: str | None = None) -> dict[str, Any] | None:
    """An encoded answer as the page shows it (``json`` is None if the task no longer takes it)."""
    if encoded is None:
        return None
    try:
        a = task.decode(encoded)
        return {"answer": encoded, "shown": task.render(a, json_mode=False),
                "json": _editable(task, a, encoded, text), "valid": True}
    except AnswerError as exc:
        return {"answer": encoded, "shown": encoded, "json": None, "valid": False, "error": str(exc)}


def _in_effect(reviews: Iterable[Any]) -> dict[str, Any]:
    """Each reviewer's newest answer that is not undone (a reviewer who answers again changes their
    own answer; two reviewers who differ are a conflict)."""
    out: dict[str, Any] = {}
    for v in sorted(reviews, key=lambda v: v.id):
        if v.undone_at is None and v.action != "skip":
            out[v.reviewer] = v
    return out


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat(timespec="seconds")


class ReviewQueue:
    """The review queues of a project's tasks.

    Parameters
    ----------
    store : Store
    config : Config
        Its tasks validate the answers; a task deleted from it keeps its items in the store, and
        every action on them raises :class:`~downsize.errors.ConfigError` naming how many.
    """

    def __init__(self, store: Store, config: Config) -> None:
        self.store = store
        self.config = config

    # -- tasks --------------------------------------------------------------------------
    def task(self, name: str) -> TaskConfig:
        """The task's config, or a ConfigError that says its items are kept."""
        if name in self.config.tasks:
            return self.config.tasks[name]
        with self.store.session() as s:
            n = int(s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.task == name)) or 0)
        known = ", ".join(sorted(self.config.tasks)) or "none"
        kept = f"; its {n} review item(s) stay in the store (put the task back in the config to review them)" if n else ""
        raise ConfigError(f"no task {name!r} in the config (tasks: {known}){kept}")

    def tasks(self) -> list[dict[str, Any]]:
        """Every task with a queue or in the config: open and reviewed counts, and whether it is configured."""
        with self.store.session() as s:
            total = dict(s.execute(select(ReviewItem.task, func.count()).group_by(ReviewItem.task)).all())
            done = dict(s.execute(select(Review.task, func.count(distinct(Review.item_id)))
                                  .where(Review.undone_at.is_(None), Review.action != "skip")
                                  .group_by(Review.task)).all())
        names = [*self.config.tasks, *sorted(set(total) - set(self.config.tasks))]
        return [{"task": n, "in_config": n in self.config.tasks, "open": total.get(n, 0) - done.get(n, 0),
                 "reviewed": done.get(n, 0), "kind": self.config.tasks[n].kind if n in self.config.tasks else None}
                for n in names]

    # -- items --------------------------------------------------------------------------
    def next_item(self, task: str, reviewer: str, *, exclude: Iterable[int] = ()) -> dict[str, Any] | None:
        """The open item of highest priority that ``reviewer`` has not skipped (None: nothing left)."""
        self.task(task)
        prio = func.max(ReviewReason.priority)
        blocked = select(Review.id).where(
            Review.item_id == ReviewItem.id, Review.undone_at.is_(None),
            or_(Review.action != "skip", Review.reviewer == reviewer)).exists()
        q = (select(ReviewItem.id).join(ReviewReason, ReviewReason.item_id == ReviewItem.id)
             .where(ReviewItem.task == task, ~blocked).group_by(ReviewItem.id)
             .order_by(prio.desc(), ReviewItem.id).limit(1))
        exclude = list(exclude)
        if exclude:
            q = q.where(ReviewItem.id.not_in(exclude))
        with self.store.session() as s:
            item_id = s.scalar(q)
        return None if item_id is None else self.item(item_id)

    def item(self, item_id: int, *, task: str | None = None) -> dict[str, Any]:
        """One item as the page shows it: text, reasons, both answers, every review, conflict, choices."""
        with self.store.session() as s:
            item = s.get(ReviewItem, item_id)
            if item is None or (task is not None and item.task != task):
                raise NoSuchItem(f"no review item #{item_id}" + (f" in task {task!r}" if task else ""))
            cfg = self.task(item.task)
            reasons = s.scalars(select(ReviewReason).where(ReviewReason.item_id == item_id)
                                .order_by(ReviewReason.priority.desc(), ReviewReason.id)).all()
            reviews = s.scalars(select(Review).where(Review.item_id == item_id).order_by(Review.id)).all()
            names = self._names(s)
        student = next((r for r in reasons if r.student_answer is not None), None)
        teacher = next((r for r in reasons if r.teacher_answer is not None), None)
        active = [v for v in reviews if v.undone_at is None and v.action != "skip"]
        text = item.text
        draft = next((x for x in (_shown(cfg, v.answer, text) for v in reversed(active)) if x and x["valid"]),
                     None) or _shown(cfg, teacher.teacher_answer if teacher else None, text) or \
            _shown(cfg, student.student_answer if student else None, text)
        return {
            "id": item.id, "task": item.task, "kind": cfg.kind, "text": item.text, "text_hash": item.text_hash,
            "chars": len(item.text), "priority": max((r.priority for r in reasons), default=0.0),
            "reasons": [{"reason": r.reason, "label": REASONS.get(r.reason, (0, r.reason))[1], "detail": r.detail,
                         "priority": r.priority, "source": r.source, "source_ref": r.source_ref, "ts": _iso(r.ts),
                         "answered_by": r.answered_by, "served": _shown(cfg, r.served_answer, text)} for r in reasons],
            "student": None if student is None else {**(_shown(cfg, student.student_answer, text) or {}),
                                                     "confidence": student.student_confidence},
            "teacher": None if teacher is None else {**(_shown(cfg, teacher.teacher_answer, text) or {}),
                                                     "confidence": None},
            "reviews": [self._review(cfg, v, names) for v in reviews],
            "conflict": len({v.answer for v in _in_effect(reviews).values()}) > 1,
            "choices": choices(cfg),
            "draft": None if draft is None or not draft["valid"] else draft["json"],
        }

    # -- actions ------------------------------------------------------------------------
    def answer(self, item_id: int, reviewer: str, *, how: str, value: Any = None,
               task: str | None = None) -> dict[str, Any]:
        """Record ``reviewer``'s answer to an item as a new ``human`` label.

        ``how`` is ``teacher`` / ``student`` (accept that answer), or ``pick`` / ``edit`` /
        ``import`` with ``value`` (any form the kind's ``normalise`` takes).

        Returns
        -------
        dict
            ``review_id``, ``item_id``, ``answer`` (encoded), ``shown``, and ``conflict``: the other
            reviewers' answers in effect on this item that differ from this one.

        Raises
        ------
        AnswerError
            The value does not fit the task (a label not in it...), or there is no such answer to accept.
        NoSuchItem, ConfigError
            No such item; its task is no longer in the config.
        """
        if how not in ANSWER_ACTIONS:
            raise ValueError(f"how must be one of {ANSWER_ACTIONS}, got {how!r}")
        for attempt in (0, 1):
            try:
                return self._answer(item_id, reviewer, how, value, task)
            except IntegrityError:  # its example was created concurrently: the retry finds it
                if attempt:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _answer(self, item_id: int, reviewer: str, how: str, value: Any, task: str | None) -> dict[str, Any]:
        with self.store.session() as s:
            item = s.get(ReviewItem, item_id)
            if item is None or (task is not None and item.task != task):
                raise NoSuchItem(f"no review item #{item_id}" + (f" in task {task!r}" if task else ""))
            cfg = self.task(item.task)
            if how in ("teacher", "student"):
                col = ReviewReason.teacher_answer if how == "teacher" else ReviewReason.student_answer
                enc = s.scalar(select(col).where(ReviewReason.item_id == item_id, col.is_not(None))
                               .order_by(ReviewReason.priority.desc(), ReviewReason.id).limit(1))
                if enc is None:
                    raise AnswerError(f"item #{item_id} has no {how} answer to accept: pick or edit one")
                answer = cfg.decode(enc)
            else:
                answer = cfg.normalise(value, item.text)  # kinds whose answers are spans check them
            encoded = cfg.encode(answer)
            eid = s.scalar(select(Example.id).where(Example.task == item.task, Example.text_hash == item.text_hash))
            if eid is None:
                ex = Example(task=item.task, text=item.text, text_hash=item.text_hash, source="review")
                s.add(ex)
                s.flush()
                eid = ex.id
            label = Label(example_id=eid, task=item.task, label=encoded, source="human")
            s.add(label)
            s.flush()
            rv = Review(item_id=item_id, task=item.task, reviewer=reviewer[:255], action=how, answer=encoded,
                        label_id=label.id)
            s.add(rv)
            s.flush()
            others = [v for v in _in_effect(s.scalars(select(Review).where(Review.item_id == item_id))).values()
                      if v.answer != encoded]
            names = self._names(s)
            return {"review_id": rv.id, "item_id": item_id, "answer": encoded,
                    "shown": cfg.render(answer, json_mode=False),
                    "conflict": [self._review(cfg, v, names) for v in others]}

    def skip(self, item_id: int, reviewer: str, *, task: str | None = None) -> dict[str, Any]:
        """Hide the item from ``reviewer`` (it stays open for everyone else)."""
        with self.store.session() as s:
            item = s.get(ReviewItem, item_id)
            if item is None or (task is not None and item.task != task):
                raise NoSuchItem(f"no review item #{item_id}" + (f" in task {task!r}" if task else ""))
            self.task(item.task)
            rv = Review(item_id=item_id, task=item.task, reviewer=reviewer[:255], action="skip")
            s.add(rv)
        return {"review_id": rv.id, "item_id": item_id}

    def undo(self, task: str, reviewer: str) -> int | None:
        """Undo ``reviewer``'s last action in ``task`` (its label is revoked); returns the item's id."""
        self.task(task)
        now = utcnow()
        with self.store.session() as s:
            rv = s.scalar(select(Review).where(Review.task == task, Review.reviewer == reviewer[:255],
                                               Review.undone_at.is_(None)).order_by(Review.id.desc()).limit(1))
            if rv is None:
                return None
            rv.undone_at = now
            if rv.label_id is not None:
                label = s.get(Label, rv.label_id)
                if label is not None:
                    label.revoked_at = now
            return rv.item_id

    # -- figures ------------------------------------------------------------------------
    def stats(self, task: str, reviewer: str | None = None, *, now: datetime | None = None) -> dict[str, Any]:
        """Queue size (open / reviewed, per reason), conflicts, reviewers and throughput."""
        now = now or utcnow()
        active = (Review.task == task, Review.undone_at.is_(None))
        answered = select(Review.item_id).where(*active, Review.action != "skip").distinct()
        with self.store.session() as s:
            total = int(s.scalar(select(func.count()).select_from(ReviewItem).where(ReviewItem.task == task)) or 0)
            reviewed = int(s.scalar(select(func.count()).select_from(answered.subquery())) or 0)
            by_reason = {}
            for reason, n, done in s.execute(
                    select(ReviewReason.reason, func.count(distinct(ReviewReason.item_id)),
                           func.count(distinct(ReviewReason.item_id)).filter(ReviewReason.item_id.in_(answered)))
                    .where(ReviewReason.task == task).group_by(ReviewReason.reason)):
                by_reason[reason] = {"items": int(n), "reviewed": int(done), "open": int(n) - int(done)}
            many = select(Review.item_id).where(*active, Review.action != "skip").group_by(Review.item_id) \
                .having(func.count(distinct(Review.answer)) > 1)
            by_item: dict[int, list[Review]] = {}
            for v in s.scalars(select(Review).where(Review.item_id.in_(many))):
                by_item.setdefault(v.item_id, []).append(v)
            conflicts = sum(len({v.answer for v in _in_effect(vs).values()}) > 1 for vs in by_item.values())
            who = dict(s.execute(select(Review.reviewer, func.count()).where(*active, Review.action != "skip")
                                 .group_by(Review.reviewer)).all())
            q = select(Review.created_at).where(*active, Review.created_at >= now - _THROUGHPUT_WINDOW)
            if reviewer is not None:
                q = q.where(Review.reviewer == reviewer)
            stamps = sorted(s.scalars(q))
            names = self._names(s)
        span = (stamps[-1] - stamps[0]).total_seconds() if len(stamps) > 1 else 0.0
        return {
            "task": task, "items": total, "open": total - reviewed, "reviewed": reviewed, "by_reason": by_reason,
            "conflicts": conflicts,
            "reviewers": {names.get(k, k): int(v) for k, v in sorted(who.items(), key=lambda kv: -kv[1])},
            "throughput": {"window_minutes": _THROUGHPUT_WINDOW.total_seconds() / 60, "actions": len(stamps),
                           "per_minute": (len(stamps) - 1) * 60.0 / span if span > 0 else None,
                           "reviewer": None if reviewer is None else names.get(reviewer, reviewer)},
        }

    def recent(self, task: str, *, limit: int = 15) -> list[dict[str, Any]]:
        """The latest actions in ``task``: who reviewed what (undone ones marked)."""
        cfg = self.config.tasks.get(task)
        with self.store.session() as s:
            rows = s.execute(select(Review, func.substr(ReviewItem.text, 1, 100))
                             .join(ReviewItem, ReviewItem.id == Review.item_id).where(Review.task == task)
                             .order_by(Review.id.desc()).limit(limit)).all()
            names = self._names(s)
        out = []
        for rv, snippet in rows:
            d = self._review(cfg, rv, names) if cfg is not None else {"reviewer": rv.reviewer, "answer": rv.answer}
            out.append({**d, "item_id": rv.item_id, "text": snippet})
        return out

    def reviewer_names(self) -> dict[str, str]:
        """Reviewer ids that are API keys → the keys' names."""
        with self.store.session() as s:
            return self._names(s)

    # -- helpers ------------------------------------------------------------------------
    @staticmethod
    def _names(s: Any) -> dict[str, str]:
        """Reviewer ids that are API keys → the keys' names."""
        return {k: n for k, n in s.execute(select(ApiKey.key_id, ApiKey.name)) if n}

    @staticmethod
    def _review(cfg: TaskConfig, v: Review, names: dict[str, str]) -> dict[str, Any]:
        shown = _shown(cfg, v.answer)
        return {"id": v.id, "reviewer": v.reviewer, "reviewer_name": names.get(v.reviewer, v.reviewer),
                "action": v.action, "answer": v.answer, "shown": shown["shown"] if shown else None,
                "at": _iso(v.created_at), "undone": v.undone_at is not None}
