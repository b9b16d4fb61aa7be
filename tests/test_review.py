"""The review queue: what the policy picks from the audit log, answers as human labels, two reviewers,
undo, JSONL export/import, deleted tasks, a kind with a list of labels; real SQLite stores."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _review_data import LABELS, config, log_traffic, reuters
from sqlalchemy import func, select

from downsize.audit import AuditRecord, SpotCheckRecord
from downsize.errors import AnswerError, ConfigError, DataError
from downsize.review import (
    REASONS,
    ReviewQueue,
    add_texts,
    export_queue,
    fill_queue,
    import_reviews,
    sampled,
)
from downsize.store import Label, Review, ReviewItem, ReviewReason, Store, text_hash


@pytest.fixture
def project(tmp_path: Path) -> Any:
    cfg = config(tmp_path, task={"review_sample_rate": 0.1})
    with Store(cfg.store_url()) as store:
        yield cfg, store


def _reasons(store: Store) -> dict[str, set[str]]:
    """text → the reasons of its item."""
    with store.session() as s:
        rows = s.execute(select(ReviewItem.text, ReviewReason.reason).join(
            ReviewReason, ReviewReason.item_id == ReviewItem.id)).all()
    out: dict[str, set[str]] = {}
    for t, r in rows:
        out.setdefault(t, set()).add(r)
    return out


def test_the_policy_picks_what_it_says(project: Any) -> None:
    cfg, store = project
    texts, labels = reuters(300)
    tr = log_traffic(store, texts, labels)
    got = fill_queue(store, cfg, "news")
    reasons = _reasons(store)
    for name in ("disagreement", "contradicted", "fallback", "teacher_failed"):
        want = getattr(tr, name)
        assert want and all(name in reasons[t] for t in want), name
        assert got.by_reason[name] == len(want)
    frame = {r.input_text for r in tr.answered if sampled(r.request_id, 0.1)}
    assert {t for t, rs in reasons.items() if "sample" in rs} == frame  # the random sample, exactly
    assert 0 < len(frame) < len(tr.answered)
    for t in tr.ignored:  # unsure escalations, agreeing checks, client errors: only ever sampled
        assert reasons.get(t, set()) <= {"sample"}
    # priority order: the random sample first, then disagreements, contradictions, failures
    q = ReviewQueue(store, cfg)
    seen = []
    while (it := q.next_item("news", "alice", exclude=[i["id"] for i in seen])) is not None:
        seen.append(it)
    prios = [it["priority"] for it in seen]
    assert prios == sorted(prios, reverse=True) and len(seen) == sum(1 for _ in reasons)
    assert seen[0]["reasons"][0]["reason"] == "sample"
    assert REASONS["sample"][0] > REASONS["disagreement"][0] > REASONS["contradicted"][0] > REASONS["fallback"][0]


def test_fill_is_incremental_and_deduplicated_by_text(project: Any) -> None:
    cfg, store = project
    texts, labels = reuters(100)
    log_traffic(store, texts, labels, tag="a")
    first = fill_queue(store, cfg, "news")
    again = fill_queue(store, cfg, "news")
    assert again.new_items == 0 and again.new_reasons == 0 and again.scanned["request_log"] == 0
    log_traffic(store, texts, labels, tag="b")  # the same texts again, as new requests
    more = fill_queue(store, cfg, "news")
    assert more.scanned["request_log"] == 100 and more.new_items <= more.by_reason.get("sample", 0)
    with store.session() as s:
        n_items = s.scalar(select(func.count()).select_from(ReviewItem))
        dup = s.scalar(select(func.count()).select_from(
            select(ReviewItem.text_hash).group_by(ReviewItem.task, ReviewItem.text_hash)
            .having(func.count() > 1).subquery()))
    assert dup == 0 and n_items == first.new_items + more.new_items
    assert more.new_reasons >= first.by_reason["disagreement"]  # each new disagreement is a new reason


def test_the_sample_is_uniform_and_deterministic() -> None:
    ids = [f"chatcmpl-{i:08x}" for i in range(20_000)]
    hits = np.array([sampled(i, 0.05) for i in ids])
    assert abs(hits.mean() - 0.05) < 4 * np.sqrt(0.05 * 0.95 / len(ids))
    assert [sampled(i, 0.05) for i in ids[:500]] == list(hits[:500])
    assert not any(sampled(i, 0.0) for i in ids[:100]) and all(sampled(i, 1.0) for i in ids[:100])


def test_a_spot_check_waits_for_its_request_row(project: Any) -> None:
    cfg, store = project
    x = "a spot-checked text whose request row is still in the writer's queue"
    sc = SpotCheckRecord(request_id="late-1", task="news", student_label="earn", teacher_label="acq", loss=1.0)
    store.add_spot_checks([sc.row()])
    assert fill_queue(store, cfg, "news").new_items == 0
    store.log_requests([AuditRecord(request_id="late-1", task="news", model="downsize/news", input_hash=text_hash(x),
                                    input_text=x, answer="earn", answered_by="student", latency_ms=1.0,
                                    confidence=0.99, student_label="earn").row()])
    got = fill_queue(store, cfg, "news")
    assert got.by_reason.get("disagreement") == 1 and "disagreement" in _reasons(store)[x]


def test_rows_logged_without_text_are_counted_not_queued(project: Any) -> None:
    cfg, store = project
    texts, labels = reuters(50)
    log_traffic(store, texts, labels, log_text=False)
    got = fill_queue(store, cfg, "news")
    assert got.new_items == 0 and got.no_text >= 15


def test_answers_become_human_labels_that_train_uses_and_undo_revokes(project: Any) -> None:
    cfg, store = project
    texts, labels = reuters(60)
    log_traffic(store, texts, labels)
    fill_queue(store, cfg, "news")
    q = ReviewQueue(store, cfg)
    done = {}
    for how in ("teacher", "student", "pick", "edit"):
        it, skip = q.next_item("news", "alice"), []
        while how in ("teacher", "student") and it[how] is None:  # an item with that answer to accept
            skip.append(it["id"])
            it = q.next_item("news", "alice", exclude=skip)
        value = {"label": "trade"} if how == "pick" else json.loads('"crude"') if how == "edit" else None
        got = q.answer(it["id"], "alice", how=how, value=value)
        want = {"teacher": (it["teacher"] or {}).get("answer"), "student": (it["student"] or {}).get("answer"),
                "pick": "trade", "edit": "crude"}[how]
        assert got["answer"] == want and got["conflict"] == []
        done[it["text"]] = want
    effective = {e.text: (e.label, e.source) for e in store.labelled_examples("news")}
    assert all(effective[t] == (a, "human") for t, a in done.items())
    undone = q.undo("news", "alice")
    last_text = q.item(undone)["text"]
    assert last_text not in {e.text for e in store.labelled_examples("news")}  # its only label is revoked
    assert q.next_item("news", "alice")["id"] == undone  # and the item is open again
    assert q.stats("news", "alice")["reviewed"] == 3


def test_two_reviewers_on_one_item_both_kept_and_the_conflict_shown(project: Any) -> None:
    cfg, store = project
    add_texts(store, cfg, "news", ["oil prices rose and the trade gap widened"], source="mine.csv")
    q = ReviewQueue(store, cfg)
    item = q.next_item("news", "alice")
    bob_sees = q.next_item("news", "bob")
    assert bob_sees["id"] == item["id"]  # both opened the item before either answered
    a = q.answer(item["id"], "alice", how="pick", value="crude")
    b = q.answer(item["id"], "bob", how="pick", value="trade")
    assert a["conflict"] == [] and [c["reviewer"] for c in b["conflict"]] == ["alice"]
    view = q.item(item["id"])
    assert view["conflict"] and [r["answer"] for r in view["reviews"]] == ["crude", "trade"]
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Label).where(Label.source == "human")) == 2
    assert store.labelled_examples("news")[0].label == "trade"  # the last write is in effect
    assert q.stats("news")["conflicts"] == 1
    q.answer(item["id"], "carol", how="pick", value="trade")  # agreeing with the newest is still a conflict
    assert q.item(item["id"])["conflict"]


def test_a_label_not_in_the_task_is_refused_and_nothing_written(project: Any) -> None:
    cfg, store = project
    add_texts(store, cfg, "news", ["a text"], source="x.csv")
    q = ReviewQueue(store, cfg)
    it = q.next_item("news", "alice")
    for value in ("sports", {"label": "sports"}, {"label": "earn", "extra": 1}, None, ["earn"]):
        with pytest.raises(AnswerError, match="labels"):
            q.answer(it["id"], "alice", how="pick", value=value)
    with pytest.raises(AnswerError, match="no teacher answer"):
        q.answer(it["id"], "alice", how="teacher")
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Review)) == 0
        assert s.scalar(select(func.count()).select_from(Label)) == 0


def test_items_of_a_task_deleted_from_the_config_are_kept_and_named(project: Any, tmp_path: Path) -> None:
    cfg, store = project
    two = config(tmp_path, tasks={"old": {"instructions": "x", "labels": {"a": "a", "b": "b"}}})
    add_texts(store, two, "old", ["t1", "t2", "t3"], source="old.csv")
    q = ReviewQueue(store, cfg)  # the config without `old`
    for call in (lambda: q.next_item("old", "alice"), lambda: fill_queue(store, cfg, "old"),
                 lambda: q.undo("old", "alice"), lambda: export_queue(store, cfg, "old", tmp_path / "o.jsonl")):
        with pytest.raises(ConfigError, match="no task 'old'"):
            call()
    with pytest.raises(ConfigError, match="3 review item"):
        q.task("old")
    with store.session() as s:
        first = s.scalar(select(ReviewItem.id).where(ReviewItem.task == "old"))
    with pytest.raises(ConfigError):
        q.answer(first, "alice", how="pick", value="a")
    assert {t["task"]: t["in_config"] for t in q.tasks()} == {"news": True, "old": False}
    bad = tmp_path / "old.jsonl"
    bad.write_text(json.dumps({"item": first, "answer": "a"}) + "\n")
    with pytest.raises(DataError, match=r"old.jsonl:1: task 'old' is not in the config"):
        import_reviews(store, cfg, bad, reviewer="x")


def test_html_and_a_one_megabyte_text_round_trip(project: Any, tmp_path: Path) -> None:
    cfg, store = project
    big = ("<b>x</b> & é " * 100_000)[:1_000_000]
    add_texts(store, cfg, "news", [big], source="big.csv")
    q = ReviewQueue(store, cfg)
    it = q.next_item("news", "alice")
    assert it["text"] == big and it["chars"] == 1_000_000
    q.answer(it["id"], "alice", how="pick", value="earn")
    assert store.labelled_examples("news")[0].text == big
    out = tmp_path / "all.jsonl"
    assert export_queue(store, cfg, "news", out, include_reviewed=True) == 1
    assert json.loads(out.read_text(encoding="utf-8"))["text"] == big


def test_export_then_import_records_the_answers(project: Any, tmp_path: Path) -> None:
    cfg, store = project
    texts, labels = reuters(80)
    log_traffic(store, texts, labels)
    fill_queue(store, cfg, "news")
    out = tmp_path / "queue.jsonl"
    n = export_queue(store, cfg, "news", out)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == n > 10 and [x["item"] for x in lines][:1] == [ReviewQueue(store, cfg).next_item("news", "z")["id"]]
    for i, line in enumerate(lines[:10]):
        line["answer"] = LABELS[i % 4] if i % 2 else {"label": LABELS[i % 4]}
    lines[3]["reviewer"] = "dana"
    extra = {"task": "news", "text": "a brand new text reviewed elsewhere", "answer": "acq"}
    out.write_text("\n".join(json.dumps(x) for x in [*lines, extra]) + "\n")
    got = import_reviews(store, cfg, out, reviewer="team")
    assert (got.answered, got.blank, got.new_items) == (11, n - 10, 1)
    with store.session() as s:
        rows = s.execute(select(Review.item_id, Review.reviewer, Review.answer, Review.action)).all()
    assert {r.action for r in rows} == {"import"} and len(rows) == 11
    assert {r.item_id: r.answer for r in rows if r.item_id != max(r.item_id for r in rows)} == {
        x["item"]: LABELS[i % 4] for i, x in enumerate(lines[:10])}
    assert {r.reviewer for r in rows} == {"team", "dana"}
    assert export_queue(store, cfg, "news", tmp_path / "rest.jsonl") == n - 10


def test_import_reports_every_bad_line_by_number_and_imports_nothing(project: Any, tmp_path: Path) -> None:
    cfg, store = project
    add_texts(store, cfg, "news", ["one", "two"], source="x.csv")
    with store.session() as s:
        ids = list(s.scalars(select(ReviewItem.id).order_by(ReviewItem.id)))
    lines = [
        json.dumps({"item": ids[0], "answer": "earn"}),  # fine
        "{not json",
        json.dumps({"item": 999_999, "answer": "earn"}),
        json.dumps({"item": ids[1], "answer": "sports"}),
        json.dumps({"item": ids[1], "answer": "earn", "text_hash": "0" * 64}),
        json.dumps({"item": ids[1], "task": "other", "answer": "earn"}),
        json.dumps({"text": "no task", "answer": "earn"}),
        "",
        json.dumps({"item": ids[1], "answer": None}),  # not reviewed yet: fine
    ]
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as exc:
        import_reviews(store, cfg, f, reviewer="x")
    msg = str(exc.value)
    assert "6 bad line(s), nothing imported" in msg
    for n, why in ((2, "not JSON"), (3, "no review item #999999"), (4, 'answer "sports": \'sports\' is not one of the labels'),
                   (5, f"item #{ids[1]} holds another text"), (6, f"item #{ids[1]} belongs to task 'news', not 'other'"), (7, "a line needs an item id")):
        assert f"bad.jsonl:{n}: {why}" in msg
    assert "bad.jsonl:1:" not in msg and "bad.jsonl:9:" not in msg
    with store.session() as s:
        assert s.scalar(select(func.count()).select_from(Review)) == 0


def test_pushed_rows_carry_the_stores_teacher_label(project: Any) -> None:
    cfg, store = project
    ids = store.add_examples("news", ["labelled by the teacher", "never labelled"])
    store.add_labels("news", [(ids[0], "acq")], source="teacher")
    add_texts(store, cfg, "news", ["labelled by the teacher", "never labelled"], source="mine.csv")
    q = ReviewQueue(store, cfg)
    first = q.next_item("news", "alice")
    second = q.next_item("news", "alice", exclude=[first["id"]])
    by_text = {it["text"]: it for it in (first, second)}
    assert by_text["labelled by the teacher"]["teacher"]["answer"] == "acq"
    assert by_text["never labelled"]["teacher"] is None
    got = q.answer(by_text["labelled by the teacher"]["id"], "alice", how="teacher")
    assert got["answer"] == "acq"


def test_an_older_store_gains_the_review_tables_in_place(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "old.db"
    with Store(f"sqlite:///{db}") as store:
        ids = store.add_examples("news", ["an old text"])
        store.add_labels("news", [(ids[0], "earn")], source="teacher")
    con = sqlite3.connect(db)
    for table in ("reviews", "review_reasons", "review_items", "review_cursors"):
        con.execute(f"DROP TABLE {table}")
    con.execute("ALTER TABLE labels DROP COLUMN revoked_at")
    con.commit()
    con.close()
    cfg = config(tmp_path)
    with Store(f"sqlite:///{db}") as store:  # opening upgrades it: new tables, the new column
        assert [(e.text, e.label) for e in store.labelled_examples("news")] == [("an old text", "earn")]
        add_texts(store, cfg, "news", ["an old text"], source="x.csv")
        q = ReviewQueue(store, cfg)
        q.answer(q.next_item("news", "alice")["id"], "alice", how="pick", value="trade")
        assert store.labelled_examples("news")[0].label == "trade"


def test_a_large_backlog_is_read_in_steps(project: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from downsize.review import policy

    cfg, store = project
    texts, labels = reuters(50)
    log_traffic(store, texts, labels)
    monkeypatch.setattr(policy, "_BATCH", 7)
    steps = []
    while True:
        got = fill_queue(store, cfg, "news", max_rows=14)
        steps.append(got.scanned["request_log"])
        if not got.more:
            break
    assert steps == [14, 14, 14, 8] and sum(steps) == 50
    whole = config(Path(cfg.store_url().removeprefix("sqlite:///")).parent / "other", task={"review_sample_rate": 0.1})
    with Store(whole.store_url()) as other:  # the same traffic read at once queues the same items
        log_traffic(other, texts, labels)
        fill_queue(other, whole, "news")
        assert _reasons(other) == _reasons(store)


def test_a_reviewer_who_answers_again_changes_only_their_own_answer(project: Any) -> None:
    cfg, store = project
    add_texts(store, cfg, "news", ["first crude, then trade"], source="x.csv")
    q = ReviewQueue(store, cfg)
    item = q.next_item("news", "alice")["id"]
    q.answer(item, "alice", how="pick", value="crude")
    assert q.answer(item, "alice", how="pick", value="trade")["conflict"] == []
    assert not q.item(item)["conflict"] and q.stats("news")["conflicts"] == 0
    assert q.answer(item, "bob", how="pick", value="crude")["conflict"][0]["answer"] == "trade"
    assert q.stats("news")["conflicts"] == 1
