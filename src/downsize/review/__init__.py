"""Human review: a queue of the answers that matter, and corrections that become the reference.

* :mod:`.policy`: which audit rows enter a task's queue and in what order (:func:`fill_queue`,
  read incrementally; :func:`add_texts` for rows a user pushes);
* :mod:`.queue`: :class:`ReviewQueue`, the store side of reviewing (next item, answers that are
  new ``human`` labels, skip, undo, throughput, who reviewed what);
* :mod:`.io`: the queue as JSONL (:func:`export_queue`, :func:`import_reviews`, validated by the task);
* :mod:`.sample`: :func:`review_summary`, the report's live accuracy against people.

The gateway serves the page (``/review``, :mod:`downsize.server.routes.review`) and
``downsize review TASK`` the same queue in a terminal.
"""

from __future__ import annotations

from .io import ImportSummary, export_queue, import_reviews
from .policy import (
    REASONS,
    STRONG_CONFIDENCE,
    Candidate,
    FillSummary,
    add_texts,
    fill_queue,
    sampled,
)
from .queue import ANSWER_ACTIONS, NoSuchItem, ReviewQueue, choices
from .sample import review_summary

__all__ = [
    "ANSWER_ACTIONS",
    "REASONS",
    "STRONG_CONFIDENCE",
    "Candidate",
    "FillSummary",
    "ImportSummary",
    "NoSuchItem",
    "ReviewQueue",
    "add_texts",
    "choices",
    "export_queue",
    "fill_queue",
    "import_reviews",
    "review_summary",
    "sampled",
]
