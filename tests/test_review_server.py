"""The review API of the gateway over real HTTP (uvicorn on loopback): keys, bad answers, a deleted
task, two reviewers, a 1 MB text, strict request bodies, undo."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _review_data import config, log_traffic, reuters
from sqlalchemy import func, select

from downsize.review import add_texts, fill_queue
from downsize.server import ServerThread, create_app
from downsize.server.keys import create_key
from downsize.store import Label, Review, Store


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("review-server")
    both = config(tmp, tasks={"old": {"instructions": "x", "labels": {"a": "a", "b": "b"}}})
    cfg = config(tmp)  # the same store, with `old` deleted from the config
    with Store(cfg.store_url()) as store:
        texts, labels = reuters(80)
        log_traffic(store, texts, labels)
        fill_queue(store, cfg, "news")
        add_texts(store, both, "old", ["kept 1", "kept 2"], source="old.csv")
        alice, bob = create_key(store, "alice"), create_key(store, "bob")
        with ServerThread(create_app(cfg, store=store)) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
            yield {"url": srv.url, "http": http, "store": store, "cfg": cfg, "texts": texts,
                   "alice": {"Authorization": f"Bearer {alice.secret}"}, "alice_id": alice.key_id,
                   "bob": {"Authorization": f"Bearer {bob.secret}"}, "bob_id": bob.key_id}


def _reviews(store: Store) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(Review)) or 0)


def test_without_a_valid_key_nothing_is_shown(gw: dict[str, Any]) -> None:
    page = gw["http"].get("/review")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert not any(t[:30] in page.text for t in gw["texts"])
    for method, path in (("GET", "/review/api/tasks"), ("GET", "/review/api/news/next"),
                         ("GET", "/review/api/news/items/1"), ("POST", "/review/api/news/items/1"),
                         ("POST", "/review/api/news/undo"), ("POST", "/review/api/news/fill")):
        for headers in ({}, {"Authorization": "Bearer dsk_not-a-key"}, {"Authorization": "Basic abc"}):
            r = gw["http"].request(method, path, headers=headers, json={"how": "skip"})
            assert r.status_code == 401, (method, path, headers)
            assert not any(t[:30] in r.text for t in gw["texts"])
    assert _reviews(gw["store"]) == 0


def test_a_label_not_in_the_task_and_malformed_bodies_are_400(gw: dict[str, Any]) -> None:
    h = gw["alice"]
    item = gw["http"].get("/review/api/news/next", headers=h).json()["item"]
    before = _reviews(gw["store"])
    for body, msg in (({"how": "pick", "answer": {"label": "sports"}}, "'sports' is not one of the labels"),
                      ({"how": "edit", "answer_text": '{"label": "sports"}'}, "is not one of the labels"),
                      ({"how": "edit", "answer_text": "sports"}, "'sports' is not one of the labels"),
                      ({"how": "pick", "answer": "earn", "extra": 1}, "extra"),
                      ({"how": "approve"}, "how"),
                      ({}, "how")):
        r = gw["http"].post(f"/review/api/news/items/{item['id']}", headers=h, json=body)
        assert r.status_code == 400 and msg in r.json()["error"]["message"], (body, r.text)
    r = gw["http"].post(f"/review/api/news/items/{item['id']}", headers=h, content=b"{not json")
    assert r.status_code == 400
    r = gw["http"].post("/review/api/news/items/999999", headers=h, json={"how": "pick", "answer": "earn"})
    assert r.status_code == 404 and "no review item #999999" in r.json()["error"]["message"]
    assert _reviews(gw["store"]) == before
    ok = gw["http"].post(f"/review/api/news/items/{item['id']}", headers=h, json={"how": "edit", "answer_text": "acq"})
    assert ok.status_code == 200 and ok.json()["result"]["answer"] == "acq"


def test_a_task_deleted_from_the_config(gw: dict[str, Any]) -> None:
    h = gw["alice"]
    tasks = gw["http"].get("/review/api/tasks", headers=h).json()
    assert {t["task"]: (t["in_config"], t["open"]) for t in tasks["tasks"]}["old"] == (False, 2)
    assert tasks["reviewer_name"] == "alice"
    r = gw["http"].get("/review/api/old/next", headers=h)
    assert r.status_code == 404 and "its 2 review item(s) stay in the store" in r.json()["error"]["message"]
    with gw["store"].session() as s:
        from downsize.store import ReviewItem

        old_id = s.scalar(select(ReviewItem.id).where(ReviewItem.task == "old"))
    r = gw["http"].post(f"/review/api/news/items/{old_id}", headers=h, json={"how": "pick", "answer": "a"})
    assert r.status_code == 404  # an item of `old`, asked for under `news`
    r = gw["http"].post(f"/review/api/old/items/{old_id}", headers=h, json={"how": "pick", "answer": "a"})
    assert r.status_code == 404 and "no task 'old'" in r.json()["error"]["message"]


def test_two_reviewers_leases_and_the_conflict(gw: dict[str, Any]) -> None:
    store = gw["store"]
    a = gw["http"].get("/review/api/news/next", headers=gw["alice"]).json()["item"]
    b = gw["http"].get("/review/api/news/next", headers=gw["bob"]).json()["item"]
    assert a["id"] != b["id"]  # alice holds her item for a while: bob gets the next one
    ra = gw["http"].post(f"/review/api/news/items/{a['id']}", headers=gw["alice"], json={"how": "pick", "answer": "earn"})
    rb = gw["http"].post(f"/review/api/news/items/{a['id']}", headers=gw["bob"], json={"how": "pick", "answer": "trade"})
    assert ra.status_code == rb.status_code == 200
    assert [c["reviewer_name"] for c in rb.json()["result"]["conflict"]] == ["alice"]
    view = gw["http"].get(f"/review/api/news/items/{a['id']}", headers=gw["bob"]).json()
    assert view["item"]["conflict"] and view["stats"]["conflicts"] >= 1
    assert {r["reviewer_name"] for r in view["item"]["reviews"]} == {"alice", "bob"}
    with store.session() as s:
        rows = s.execute(select(Review.reviewer, Review.answer).where(Review.item_id == a["id"])).all()
    assert sorted(rows) == sorted([(gw["alice_id"], "earn"), (gw["bob_id"], "trade")])
    # bob undoes: his label is revoked, alice's is in effect again, and the item comes back to him
    u = gw["http"].post("/review/api/news/undo", headers=gw["bob"], json={}).json()
    assert u["undone"] == a["id"] and u["item"]["id"] == a["id"]
    effective = {e.text: e.label for e in store.labelled_examples("news")}
    assert effective[a["text"]] == "earn"
    recent = gw["http"].get("/review/api/news/next", headers=gw["bob"]).json()["recent"]
    assert any(r["reviewer_name"] == "bob" and r["undone"] for r in recent)


def test_a_one_megabyte_text(gw: dict[str, Any]) -> None:
    store, cfg = gw["store"], gw["cfg"]
    big = ("x" * 99 + "\n") * 10_000
    add_texts(store, cfg, "news", [big], source="big.csv", priority=500.0)
    r = gw["http"].get("/review/api/news/next", headers=gw["alice"])
    item = r.json()["item"]
    assert item["text"] == big and item["chars"] == 1_000_000
    r = gw["http"].post(f"/review/api/news/items/{item['id']}", headers=gw["alice"], json={"how": "pick",
                                                                                          "answer": "crude"})
    assert r.status_code == 200
    with store.session() as s:
        lab = s.scalar(select(Label).where(Label.source == "human").order_by(Label.id.desc()).limit(1))
    assert lab.label == "crude" and {e.text: e.label for e in store.labelled_examples("news")}[big] == "crude"


def test_fill_reads_new_traffic_through_the_page_api(gw: dict[str, Any]) -> None:
    store = gw["store"]
    before = gw["http"].get("/review/api/news/next", headers=gw["alice"]).json()["stats"]["items"]
    texts, labels = reuters(200)
    log_traffic(store, texts[100:], labels[100:], tag="late")
    after = gw["http"].post("/review/api/news/fill", headers=gw["alice"]).json()["stats"]["items"]
    assert after > before


def test_page_and_script_are_served_offline(gw: dict[str, Any], tmp_path: Path) -> None:
    page = gw["http"].get("/review").text
    js = gw["http"].get("/review/review.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    for body in (page, js.text):
        assert "http://" not in body and "https://" not in body  # nothing to fetch from elsewhere
    assert "innerHTML" not in js.text  # texts are written with textContent only
