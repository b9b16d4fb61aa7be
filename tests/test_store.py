"""The store: append-only labels with source priority, dedup of examples, WAL, the call cache."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from downsize.store import Store, TeacherCall


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(f"sqlite:///{tmp_path / 'sub' / 'd.db'}")


def test_schema_created_on_first_use_in_wal_mode(store: Store, tmp_path: Path) -> None:
    db = tmp_path / "sub" / "d.db"
    assert db.exists()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    assert {"examples", "teacher_calls", "labels", "student_versions", "request_log"} <= tables


def test_examples_are_deduplicated_per_task(store: Store) -> None:
    a = store.add_examples("t", ["x", "y", "x"])
    assert a[0] == a[2] and a[0] != a[1]
    assert store.add_examples("t", ["y"]) == [a[1]]
    assert store.add_examples("other", ["x"])[0] not in a


def test_labels_are_appended_and_priority_is_gold_human_teacher(store: Store) -> None:
    ids = store.add_examples("t", ["a", "b", "c"])
    store.add_labels("t", [(ids[0], "p"), (ids[1], "p"), (ids[2], "p")], source="teacher")
    store.add_labels("t", [(ids[0], "q")], source="human")
    store.add_labels("t", [(ids[1], "r")], source="gold")
    store.add_labels("t", [(ids[1], "p")], source="teacher")  # a newer teacher label does not beat gold
    eff = {e.text: (e.label, e.source) for e in store.labelled_examples("t")}
    assert eff == {"a": ("q", "human"), "b": ("r", "gold"), "c": ("p", "teacher")}
    with store.session() as s:
        from sqlalchemy import func, select

        from downsize.store import Label

        assert s.scalar(select(func.count()).select_from(Label)) == 6  # nothing overwritten
    with pytest.raises(ValueError, match="source must be one of"):
        store.add_labels("t", [(ids[0], "x")], source="llm")


def test_a_call_paid_twice_is_recorded_twice_and_the_cache_answers_from_the_first(store: Store) -> None:
    def call() -> TeacherCall:
        return TeacherCall(request_hash="h" * 64, base_url="u", model="m", prompt=[], status="ok",
                           parsed_label="a", cost_usd=0.5)

    first = store.record_call(call())
    second = store.record_call(call())  # a second payment for the same request: never swallowed
    assert second.id != first.id and second.repeat_of == "h" * 64 and second.request_hash != "h" * 64
    assert store.cached_call("h" * 64).id == first.id
    assert store.teacher_spend() == pytest.approx(1.0)
    assert store.cached_call("h" * 64).parsed_label == "a"
