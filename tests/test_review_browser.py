"""The review page in a real browser: headless Chromium over CDP (the report test's pipe client),
against the real gateway on loopback. Ten items are reviewed by keyboard, then the store is checked;
HTML in a text is shown, never run; no request leaves the gateway; without a key nothing shows.
Skipped only when /usr/bin/chromium is absent (CI installs the Debian ``chromium`` package).
"""

from __future__ import annotations

import base64
import os
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _review_data import config, log_traffic, reuters
from sqlalchemy import select
from test_report_browser import CHROMIUM, Browser

from downsize.review import ReviewQueue, add_texts, fill_queue
from downsize.server import ServerThread, create_app
from downsize.server.keys import create_key
from downsize.store import Label, Review, Store

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="headless Chromium not installed at /usr/bin/chromium")

EVIL = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b id="bold">bold</b> & done'


class Tab:
    """One tab: navigate, evaluate, press keys, collect console problems and requests."""

    def __init__(self, browser: Browser, url: str) -> None:
        self.b = browser
        self.target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.sid = browser.send("Target.attachToTarget", {"targetId": self.target, "flatten": True})["sessionId"]
        for domain in ("Runtime", "Log", "Network", "Page"):
            browser.send(f"{domain}.enable", session=self.sid)
        browser.send("Emulation.setDeviceMetricsOverride",
                     {"width": 1280, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=self.sid)
        self.problems: list[str] = []
        self.requests: list[str] = []
        browser.send("Page.navigate", {"url": url}, session=self.sid)

    def drain(self) -> None:
        while True:
            try:
                ev = self.b.events.get_nowait()
            except queue.Empty:
                return
            if ev.get("sessionId") != self.sid:
                continue
            m, p = ev["method"], ev.get("params", {})
            if m == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning", "assert"):
                self.problems.append(f"console.{p['type']}: {p.get('args')}")
            elif m == "Runtime.exceptionThrown":
                self.problems.append(f"exception: {p['exceptionDetails']}")
            elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
                self.problems.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}")
            elif m == "Network.requestWillBeSent":
                self.requests.append(p["request"]["url"])

    def js(self, expr: str) -> Any:
        res = self.b.send("Runtime.evaluate", {"expression": expr, "returnByValue": True}, session=self.sid)
        if "exceptionDetails" in res:
            raise AssertionError(f"{expr}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait(self, expr: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.js(f"(() => {{ try {{ return {expr}; }} catch (e) {{ return false; }} }})()")
            if got:
                return got
            time.sleep(0.02)
        state = self.js("document.body.dataset.state + ' / ' + document.getElementById('status').textContent")
        raise AssertionError(f"timed out waiting for {expr}; page: {state}")

    def key(self, key: str, *, modifiers: int = 0) -> None:
        if len(key) == 1:
            code = f"Digit{key}" if key.isdigit() else f"Key{key.upper()}"
            vk = ord(key.upper())
        else:
            code, vk = key, {"Enter": 13, "Escape": 27}[key]
        base = {"key": key, "code": code, "windowsVirtualKeyCode": vk, "modifiers": modifiers}
        text = {"text": key if len(key) == 1 else "\r"} if not modifiers else {}
        self.b.send("Input.dispatchKeyEvent", {"type": "keyDown", **base, **text}, session=self.sid)
        self.b.send("Input.dispatchKeyEvent", {"type": "keyUp", **base}, session=self.sid)

    def press(self, key: str, **kw: Any) -> None:
        """Press a key that completes an action, and wait until the page shows its result."""
        done = self.js("window.__review.done")
        self.key(key, **kw)
        self.wait(f"window.__review.done > {done} && !window.__review.busy")

    def screenshot(self, path: Path) -> None:
        shot = self.b.send("Page.captureScreenshot", {"format": "png"}, session=self.sid)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self.b.send("Target.closeTarget", {"targetId": self.target})


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[dict[str, Any]]:
    cfg = config(tmp_path, task={"review_sample_rate": 0.05})
    with Store(cfg.store_url()) as store:
        texts, labels = reuters(120)
        log_traffic(store, texts, labels)
        fill_queue(store, cfg, "news")
        add_texts(store, cfg, "news", [EVIL], source="evil.csv", priority=200.0)  # shown first
        key = create_key(store, "alice")
        with ServerThread(create_app(cfg, store=store)) as srv:
            yield {"cfg": cfg, "store": store, "key": key, "srv": srv, "texts": texts}


def _current(tab: Tab) -> dict[str, Any]:
    return tab.js("window.__review.item")


def test_ten_items_by_keyboard(browser: Browser, gateway: dict[str, Any], tmp_path: Path) -> None:
    store, key, srv = gateway["store"], gateway["key"], gateway["srv"]
    tab = Tab(browser, f"{srv.url}/review#key={key.secret}")
    try:
        tab.wait("document.body.dataset.state === 'item'")
        assert "key=" not in tab.js("location.href")  # the key left the address bar
        # HTML in the text: shown as text, never parsed or run
        first = _current(tab)
        assert first["text"] == EVIL
        assert tab.js("document.getElementById('text').textContent") == EVIL
        assert tab.js("document.querySelector('#text *') === null && !document.getElementById('bold')")
        assert tab.js("window.__pwned === undefined")

        expected: dict[int, str] = {}
        plan = ["1", "a", "s", "2", "a", "3", "s", "e", "4", "a"]
        for k in plan:
            it = _current(tab)
            opts = it["choices"]["options"]
            if k == "e":
                tab.key("e")
                tab.wait("window.__review.editing")
                tab.key("a", modifiers=2)  # select the prefilled JSON, then type over it
                tab.b.send("Input.insertText", {"text": '{"label": "crude"}'}, session=tab.sid)
                tab.press("Enter", modifiers=2)
                expected[it["id"]] = "crude"
                continue
            if k.isdigit():
                want = opts[int(k) - 1]
            else:
                side = it["teacher" if k == "a" else "student"]
                if side is None:  # nothing to accept on this item: pick the first label instead
                    k, want = "1", opts[0]
                else:
                    want = side["answer"]
            tab.press(k)
            expected[it["id"]] = want
        assert len(expected) == 10

        # skip one, undo the skip (it comes back), then undo an answer and answer it again
        skipped = _current(tab)["id"]
        tab.press("k")
        assert _current(tab)["id"] != skipped
        tab.press("u")
        assert _current(tab)["id"] == skipped
        tab.press("1")
        tab.press("u")  # the answer to `skipped` is undone: the item is shown again
        assert _current(tab)["id"] == skipped
        tab.press("2")
        expected[skipped] = "acq"

        tab.drain()
        assert tab.problems == []
        # an invalid edit is refused by the server (400, which Chromium logs) and shown; nothing is written
        before = tab.js("window.__review.done")
        tab.key("e")
        tab.wait("window.__review.editing")
        tab.key("a", modifiers=2)
        tab.b.send("Input.insertText", {"text": '{"label": "not-a-label"}'}, session=tab.sid)
        tab.key("Enter", modifiers=2)
        tab.wait("document.getElementById('edit-error').textContent.includes('not one of the labels')")
        tab.key("Escape")
        assert tab.js("window.__review.done") == before and not tab.js("window.__review.editing")
        tab.drain()
        assert len(tab.problems) == 1 and "status of 400" in tab.problems[0], tab.problems

        shot = Path(os.environ.get("DOWNSIZE_REVIEW_SCREENSHOT", tmp_path / "review.png"))
        tab.screenshot(shot)
        assert shot.stat().st_size > 20_000
        latencies = tab.js("window.__review.latencies")
        text = tab.js("document.body.innerText")
        tab.drain()
    finally:
        tab.close()

    with store.session() as s:
        reviews = s.scalars(select(Review).where(Review.reviewer == key.key_id).order_by(Review.id)).all()
        labels = {lab.id: lab for lab in s.scalars(select(Label).where(Label.source == "human"))}
    answers = {}
    for rv in reviews:
        if rv.action != "skip" and rv.undone_at is None:
            answers[rv.item_id] = rv.answer
            assert labels[rv.label_id].revoked_at is None and labels[rv.label_id].label == rv.answer
    assert answers == expected
    undone = [rv for rv in reviews if rv.undone_at is not None]
    assert [rv.action for rv in undone] == ["skip", "pick"]
    assert labels[undone[1].label_id].revoked_at is not None  # the undone answer's label is out of effect
    assert {r.action for r in reviews} >= {"pick", "teacher", "student", "edit", "skip"}
    # the page showed who reviewed what, and made no request to anything but the gateway
    assert "alice" in text
    assert tab.requests and all(u.startswith(srv.url) for u in tab.requests), tab.requests
    assert len(latencies) >= 14 and all(ms < 10_000 for ms in latencies)


def test_no_key_shows_no_data(browser: Browser, gateway: dict[str, Any]) -> None:
    srv, store, cfg = gateway["srv"], gateway["store"], gateway["cfg"]
    tab = Tab(browser, f"{srv.url}/review")
    try:
        tab.wait("document.body.dataset.state === 'login'")
        text = tab.js("document.documentElement.outerHTML")
        top = ReviewQueue(store, cfg).next_item("news", "someone-else")
        assert top is not None
        for t in (top["text"][:40], EVIL[:20], gateway["texts"][0][:40]):
            assert t not in text
        # a wrong key: refused, still nothing shown
        tab.js("document.getElementById('key').value = 'dsk_wrong'")
        tab.js("document.getElementById('login-form').requestSubmit()")
        tab.wait("document.getElementById('login-error').textContent.includes('invalid or revoked')")
        assert tab.js("document.body.dataset.state") == "login"
        assert top["text"][:40] not in tab.js("document.documentElement.outerHTML")
    finally:
        tab.close()


def test_a_one_megabyte_text_on_the_page(browser: Browser, gateway: dict[str, Any]) -> None:
    store, cfg, key, srv = gateway["store"], gateway["cfg"], gateway["key"], gateway["srv"]
    big = ("<i>a long text</i> " * 60_000)[:1_000_000]
    add_texts(store, cfg, "news", [big], source="big.csv", priority=1000.0)
    tab = Tab(browser, f"{srv.url}/review#key={key.secret}")
    try:
        tab.wait("document.body.dataset.state === 'item'")
        assert tab.js("document.getElementById('text').textContent.length") == 1_000_000
        assert tab.js("document.querySelector('#text i') === null")
        assert "1,000,000 characters" in tab.js("document.getElementById('chars').textContent")
        tab.press("3")
        assert _current(tab)["text"] != big
        tab.drain()
        assert tab.problems == []
    finally:
        tab.close()
    assert {e.text: e.label for e in store.labelled_examples("news")}[big] == "crude"


def test_a_list_of_labels_by_keyboard(browser: Browser, tmp_path: Path) -> None:
    """A multilabel task: number keys toggle, Enter saves, e edits the JSON."""
    from test_review_kinds import kinds_config

    cfg = kinds_config(tmp_path)
    with Store(cfg.store_url()) as store:
        add_texts(store, cfg, "tags", ["refund now, the app crashed", "just saying hi"], source="x.csv")
        key = create_key(store, "alice")
        with ServerThread(create_app(cfg, store=store)) as srv:
            tab = Tab(browser, f"{srv.url}/review?task=tags#key={key.secret}")
            try:
                tab.wait("document.body.dataset.state === 'item'")
                first = _current(tab)["text"]
                for k in ("1", "3", "1", "2"):  # urgent on, bug on, urgent off, refund on
                    tab.key(k)
                tab.wait("document.querySelectorAll('#choices li.on').length === 2")
                tab.press("Enter")
                tab.key("e")
                tab.wait("window.__review.editing")
                tab.key("a", modifiers=2)
                tab.b.send("Input.insertText", {"text": '{"labels": []}'}, session=tab.sid)
                tab.press("Enter", modifiers=2)
                tab.drain()
                assert tab.problems == []
            finally:
                tab.close()
        got = {e.text: e.label for e in store.labelled_examples("tags")}
    assert got == {first: '["bug","refund"]', ({"refund now, the app crashed", "just saying hi"} - {first}).pop(): "[]"}
