"""The review queue is kind-generic: a multilabel task gets number keys that toggle, an extract task
gets only the JSON editor, and every answer is checked by the kind's ``normalise`` (spans against
the text) and stored in its encoded form."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from _review_data import config

from downsize.audit import AuditRecord
from downsize.errors import AnswerError
from downsize.review import ReviewQueue, add_texts, fill_queue, review_summary
from downsize.store import Store, text_hash

TAGS = {"kind": "multilabel", "instructions": "Tag the ticket.", "labels": {"urgent": "", "refund": "", "bug": ""}}
INVOICE = {"kind": "extract", "instructions": "Pull out the invoice fields.",
           "fields": {"number": "the invoice number", "total": {"description": "the amount due", "type": "number"}}}


def kinds_config(tmp_path: Path, **task: Any) -> Any:
    return config(tmp_path, tasks={"tags": {**TAGS, **task}, "invoice": INVOICE})


@pytest.fixture
def project(tmp_path: Path) -> Any:
    cfg = kinds_config(tmp_path, review_sample_rate=1.0)
    with Store(cfg.store_url()) as store:
        yield cfg, store


def test_a_multilabel_task(project: Any) -> None:
    cfg, store = project
    tags = cfg.tasks["tags"]
    store.log_requests([AuditRecord(
        request_id="t-1", task="tags", model="downsize/tags", input_hash=text_hash("x"), input_text="refund now!",
        answer=tags.encode(("refund",)), answered_by="teacher", latency_ms=1.0, confidence=0.95,
        student_label=tags.encode(("bug", "refund")), teacher_label=tags.encode(("refund",))).row()])
    assert fill_queue(store, cfg, "tags").by_reason == {"contradicted": 1, "sample": 1}
    q = ReviewQueue(store, cfg)
    it = q.next_item("tags", "alice")
    assert it["choices"] == {"mode": "multi", "key": "labels", "options": ["urgent", "refund", "bug"]}
    assert it["student"]["json"] == {"labels": ["bug", "refund"]} and it["draft"] == {"labels": ["refund"]}
    with pytest.raises(AnswerError):
        q.answer(it["id"], "alice", how="edit", value={"labels": ["refund", "nope"]})
    got = q.answer(it["id"], "alice", how="pick", value={"labels": ["urgent", "refund"]})
    assert got["answer"] == tags.encode(("refund", "urgent"))
    assert store.labelled_examples("tags")[0].label == got["answer"]
    sm = review_summary(store, cfg, "tags")["sample"]  # served ("refund",) vs the person's two labels
    assert (sm["n"], sm["agree"]) == (1, 0)


def test_an_extract_task_checks_spans_against_the_text(project: Any) -> None:
    cfg, store = project
    text = "Invoice INV-0042, total due 1,250.00 EUR"
    add_texts(store, cfg, "invoice", [text], source="inv.csv")
    q = ReviewQueue(store, cfg)
    it = q.next_item("invoice", "alice")
    assert it["choices"]["mode"] == "none" and it["kind"] == "extract"
    with pytest.raises(AnswerError, match="does not occur in the text"):
        q.answer(it["id"], "alice", how="edit", value={"number": "INV-9999"})
    with pytest.raises(AnswerError, match="unknown field"):
        q.answer(it["id"], "alice", how="edit", value={"customer": "ACME"})
    got = q.answer(it["id"], "alice", how="edit", value={"number": "INV-0042", "total": "1,250.00"})
    ex = cfg.tasks["invoice"]
    assert ex.decode(got["answer"]) == ex.normalise({"number": "INV-0042", "total": "1,250.00"}, text)
    assert store.labelled_examples("invoice")[0].source == "human"


def test_the_editor_starts_from_a_form_that_reads_back(project: Any) -> None:
    """A number field's typed value (1250) is no span of the text ("1,250.00"): the draft keeps the span."""
    cfg, store = project
    ex = cfg.tasks["invoice"]
    text = "Invoice INV-0042, total due 1,250.00 EUR"
    add_texts(store, cfg, "invoice", [text], source="inv.csv")
    q = ReviewQueue(store, cfg)
    it = q.next_item("invoice", "alice")
    first = q.answer(it["id"], "alice", how="edit", value={"number": "INV-0042", "total": "1,250.00"})
    draft = q.item(it["id"])["draft"]
    again = q.answer(it["id"], "alice", how="edit", value=draft)  # saved unchanged: the same answer
    assert again["answer"] == first["answer"] and ex.decode(first["answer"]) == ex.normalise(draft, text)
