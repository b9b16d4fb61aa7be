"""The review queue as JSONL, so a team can review in the tool it already has.

:func:`export_queue` writes one JSON object per item::

    {"item": 12, "task": "news", "text": "...", "text_hash": "...", "reasons": [...],
     "student": {"answer": {"label": "earn"}, "confidence": 0.91}, "teacher": {"answer": {...}},
     "reviews": [{"reviewer": "alice", "answer": "earn", "at": "..."}], "answer": null, "reviewer": null}

Fill in ``answer`` (the kind's answer object, e.g. ``{"label": "acq"}``, or a bare value such as
``"acq"``) and optionally ``reviewer``, then :func:`import_reviews`. A line may also name a text
instead of an item (``{"task": "news", "text": "...", "answer": ...}``): it is queued (reason
``user``) and answered. Every line is validated against its task first (the kind's ``normalise``);
one bad line and nothing is imported, and the error lists the bad lines by number.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ..config import Config
from ..errors import AnswerError, DataError
from ..store import Review, ReviewItem, Store, text_hash
from .policy import queue_candidates, user_candidates
from .queue import ReviewQueue

__all__ = ["ImportSummary", "export_queue", "import_reviews"]

_MAX_SHOWN_ERRORS = 20


@dataclass
class ImportSummary:
    """What an import recorded."""

    path: str
    answered: int = 0
    blank: int = 0  #: lines whose ``answer`` is null (not reviewed yet)
    new_items: int = 0
    conflicts: list[int] = field(default_factory=list)  #: items where people now disagree


def export_queue(store: Store, config: Config, task: str, path: str | os.PathLike[str], *,
                 include_reviewed: bool = False) -> int:
    """Write the task's open items (all of them with ``include_reviewed``), priority first; returns how many."""
    q = ReviewQueue(store, config)
    q.task(task)
    with store.session() as s:
        ids = list(s.scalars(select(ReviewItem.id).where(ReviewItem.task == task).order_by(ReviewItem.id)))
        done = set(s.scalars(select(Review.item_id).where(Review.task == task, Review.undone_at.is_(None),
                                                           Review.action != "skip")))
    views = [q.item(i) for i in ids if include_reviewed or i not in done]
    views.sort(key=lambda v: (-v["priority"], v["id"]))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for v in views:
            line = {
                "item": v["id"], "task": v["task"], "text": v["text"], "text_hash": v["text_hash"],
                "reasons": [{k: r[k] for k in ("reason", "detail", "priority", "source", "ts")} for r in v["reasons"]],
                "student": None if v["student"] is None else {"answer": v["student"]["json"] or v["student"]["answer"],
                                                              "confidence": v["student"]["confidence"]},
                "teacher": None if v["teacher"] is None else {"answer": v["teacher"]["json"] or v["teacher"]["answer"]},
                "reviews": [{"reviewer": r["reviewer_name"], "answer": r["answer"], "at": r["at"]}
                            for r in v["reviews"] if not r["undone"] and r["action"] != "skip"],
                "answer": None, "reviewer": None,
            }
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return len(views)


def _check(line: Any, n: int, config: Config, items: dict[int, ReviewItem]) -> tuple[str | None, tuple | None]:
    """(error, parsed) for one line: parsed is (task, item id or None, text, answer, reviewer) or None when blank."""
    if not isinstance(line, dict):
        return f"expected a JSON object, got {type(line).__name__}", None
    if line.get("answer") is None:
        return None, None
    item_id, task, text = line.get("item"), line.get("task"), line.get("text")
    if item_id is not None:
        if isinstance(item_id, bool) or not isinstance(item_id, int):
            return f"item must be an integer id, got {item_id!r}", None
        item = items.get(item_id)
        if item is None:
            return f"no review item #{item_id} in the store", None
        if task is not None and task != item.task:
            return f"item #{item_id} belongs to task {item.task!r}, not {task!r}", None
        if line.get("text_hash") not in (None, item.text_hash):
            return f"item #{item_id} holds another text than this line's (text_hash differs: an export of another store?)", None
        task, text = item.task, item.text
    elif not isinstance(task, str) or not isinstance(text, str) or not text.strip():
        return "a line needs an item id, or a task and a non-empty text", None
    if task not in config.tasks:
        return f"task {task!r} is not in the config (tasks: {', '.join(sorted(config.tasks)) or 'none'})", None
    try:
        config.tasks[task].normalise(line["answer"], text)
    except AnswerError as exc:
        return f"answer {json.dumps(line['answer'], ensure_ascii=False)[:80]}: {exc}", None
    reviewer = line.get("reviewer")
    if reviewer is not None and (not isinstance(reviewer, str) or not reviewer.strip()):
        return f"reviewer must be a non-empty string, got {reviewer!r}", None
    return None, (task, item_id, text, line["answer"], reviewer)


def import_reviews(store: Store, config: Config, path: str | os.PathLike[str], *, reviewer: str) -> ImportSummary:
    """Record the answers of a JSONL file (see the module docstring) as reviews and ``human`` labels.

    Parameters
    ----------
    reviewer : str
        Who answered, for lines without their own ``reviewer``.

    Raises
    ------
    DataError
        The file cannot be read, or any line is not JSON, names no known item or task, or has an
        answer that does not fit its task: ``path:line: why`` for each, and nothing is imported.
    """
    path = Path(path)
    try:
        raw = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the review file: {exc}") from None
    parsed: list[tuple[int, Any]] = []
    errors: list[str] = []
    for n, text in enumerate(raw, 1):
        if not text.strip():
            continue
        try:
            parsed.append((n, json.loads(text)))
        except ValueError as exc:
            errors.append(f"{path}:{n}: not JSON ({exc})")
    ids = [d["item"] for _, d in parsed if isinstance(d, dict) and isinstance(d.get("item"), int)]
    items: dict[int, ReviewItem] = {}
    with store.session() as s:
        for i in range(0, len(ids), 500):
            items.update({it.id: it for it in s.scalars(select(ReviewItem).where(ReviewItem.id.in_(ids[i:i + 500])))})
    todo, out = [], ImportSummary(str(path))
    for n, line in parsed:
        err, ok = _check(line, n, config, items)
        if err:
            errors.append(f"{path}:{n}: {err}")
        elif ok is None:
            out.blank += 1
        else:
            todo.append((n, ok))
    if errors:
        more = f"\n  ... and {len(errors) - _MAX_SHOWN_ERRORS} more" if len(errors) > _MAX_SHOWN_ERRORS else ""
        raise DataError(f"{path}: {len(errors)} bad line(s), nothing imported:\n  "
                        + "\n  ".join(errors[:_MAX_SHOWN_ERRORS]) + more)
    q = ReviewQueue(store, config)
    for n, (task, item_id, text, answer, who) in todo:
        if item_id is None:
            new, _ = queue_candidates(store, task, user_candidates(task, [text], source=path.name, rows=[n]))
            out.new_items += new
            with store.session() as s:
                item_id = s.scalar(select(ReviewItem.id).where(ReviewItem.task == task,
                                                               ReviewItem.text_hash == text_hash(text)))
        got = q.answer(item_id, who or reviewer, how="import", value=answer)
        out.answered += 1
        if got["conflict"]:
            out.conflicts.append(item_id)
    return out
