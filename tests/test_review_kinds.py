"""The review queue is kind-generic: a kind whose answer is a list of labels (defined here with only
what the queue uses) gets number keys that toggle, JSON edits checked by its ``normalise``, and
answers stored in its encoded form."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
from _review_data import config

from downsize.audit import AuditRecord
from downsize.config import Config
from downsize.errors import AnswerError
from downsize.review import ReviewQueue, fill_queue
from downsize.store import Store, text_hash
from downsize.tasks import TaskConfig, dumps_answer


class TagsTask(TaskConfig):
    """A minimal multi-label kind (only what the queue uses), to show the queue is kind-generic."""

    kind: Literal["tags"] = "tags"
    labels: dict[str, str]
    students: ClassVar[tuple[str, ...]] = ()

    def prompt(self) -> str:
        return self.instructions

    def answer_schema(self) -> dict[str, Any]:
        return {"type": "object", "properties": {"labels": {"type": "array", "items": {"enum": list(self.labels)}}}}

    def parse(self, raw: str) -> Any:
        return self.normalise(json.loads(raw))

    def normalise(self, value: Any) -> tuple[str, ...]:
        if isinstance(value, dict) and set(value) == {"labels"}:
            value = value["labels"]
        if not isinstance(value, list | tuple) or any(v not in self.labels for v in value):
            raise AnswerError(f"{value!r} is not a list of the labels ({', '.join(self.labels)})")
        return tuple(sorted(set(value)))

    def encode(self, answer: tuple[str, ...]) -> str:
        return dumps_answer(list(answer))

    def decode(self, text: str) -> tuple[str, ...]:
        return self.normalise(json.loads(text))

    def to_json(self, answer: tuple[str, ...]) -> dict[str, Any]:
        return {"labels": list(answer)}

    def loss(self, answer: Any, reference: Any) -> float:
        return 0.0 if answer == reference else 1.0

    def metrics(self, answers: Any, gold: Any) -> dict[str, float]:
        raise NotImplementedError

    def targets(self, answers: Any) -> Any:
        raise NotImplementedError

    def score(self, student: Any, texts: Any) -> Any:
        raise NotImplementedError

    def check_training(self, task_name: str, answers: Any) -> dict[str, int]:
        raise NotImplementedError


def test_a_kind_with_a_list_of_labels(tmp_path: Path) -> None:
    base = config(tmp_path)
    tags = TagsTask(instructions="Tag it.", labels={"urgent": "", "refund": "", "bug": ""})
    cfg = Config.model_construct(**{**dict(base), "tasks": {"tags": tags}})
    with Store(cfg.store_url()) as store:
        store.log_requests([AuditRecord(
            request_id="t-1", task="tags", model="downsize/tags", input_hash=text_hash("x"), input_text="refund now!",
            answer=tags.encode(("refund",)), answered_by="teacher", latency_ms=1.0, confidence=0.95,
            student_label=tags.encode(("bug", "refund")), teacher_label=tags.encode(("refund",))).row()])
        assert fill_queue(store, cfg, "tags").by_reason == {"contradicted": 1}
        q = ReviewQueue(store, cfg)
        it = q.next_item("tags", "alice")
        assert it["choices"] == {"mode": "multi", "key": "labels", "options": ["urgent", "refund", "bug"]}
        assert it["student"]["json"] == {"labels": ["bug", "refund"]} and it["draft"] == {"labels": ["refund"]}
        with pytest.raises(AnswerError, match="list of the labels"):
            q.answer(it["id"], "alice", how="edit", value={"labels": ["refund", "nope"]})
        got = q.answer(it["id"], "alice", how="edit", value={"labels": ["urgent", "refund", "refund"]})
        assert got["answer"] == '["refund","urgent"]'
        assert store.labelled_examples("tags")[0].label == '["refund","urgent"]'
