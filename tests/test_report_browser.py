"""The rendered report in a real browser: headless Chromium driven over CDP (--remote-debugging-pipe).

Checks that the page loads with no console message of level error/warning, no uncaught
exception, no Log error, no request for anything but file:/data: URLs, that every figure
decodes, and that the figures in the DOM are the ones in the JSON. A canary page with a
deliberate console.error, an exception and an external image proves the harness sees them.
Skipped only when /usr/bin/chromium is absent (CI installs the Debian ``chromium`` package).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _report_data import NOW, config, populate

from downsize.report import build_report, render_html, to_json
from downsize.store import Store

CHROMIUM = Path("/usr/bin/chromium")
pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="headless Chromium not installed at /usr/bin/chromium (apt-get install chromium)",
)


class Browser:
    """The minimum of a CDP client over the pipe transport (fd 3 in, fd 4 out, NUL-separated JSON)."""

    def __init__(self, profile: Path) -> None:
        r, self._w = os.pipe()
        self._r, w = os.pipe()
        # the pipe transport wants fds 3 and 4 exactly: park the child's ends at fds >= 10 (so they
        # cannot collide with 3 or 4) and let bash move them there
        to_chrome_r, from_chrome_w = (
            fcntl.fcntl(r, fcntl.F_DUPFD, 10),
            fcntl.fcntl(w, fcntl.F_DUPFD, 10),
        )
        os.close(r)
        os.close(w)
        args = [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        script = (
            f'exec "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        )
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", script, "chromium", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(to_chrome_r, from_chrome_w),
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self._id = 0
        self._replies: dict[int, dict[str, Any]] = {}
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._r, 1 << 16)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    with self._cond:
                        self._replies[msg["id"]] = msg
                        self._cond.notify_all()
                else:
                    self.events.put(msg)

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        session: str | None = None,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        self._id += 1
        mid = self._id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._w, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        with self._cond:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no reply to {method} within {timeout}s")
                self._cond.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing anyway
            self.send("Browser.close", timeout=10)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._w)
        os.close(self._r)


def load_page(
    browser: Browser, url: str, *, width: int = 1280, screenshot: Path | None = None
) -> dict[str, Any]:
    """Open ``url`` in a fresh tab; return problems seen, requests made, DOM metrics and image status."""
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    sid = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        browser.send(f"{domain}.enable", session=sid)
    browser.send(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False},
        session=sid,
    )
    browser.send("Page.navigate", {"url": url}, session=sid)
    problems: list[str] = []
    requests: list[str] = []
    loaded = False
    deadline = time.monotonic() + 60
    quiet_until = None
    while time.monotonic() < deadline:
        try:
            ev = browser.events.get(timeout=0.2)
        except queue.Empty:
            if loaded and quiet_until is not None and time.monotonic() > quiet_until:
                break
            continue
        if ev.get("sessionId") != sid:
            continue
        m, p = ev["method"], ev.get("params", {})
        if m == "Page.loadEventFired":
            loaded = True
            quiet_until = time.monotonic() + 1.0  # late console messages / requests
        elif m == "Runtime.consoleAPICalled" and p["type"] in ("error", "warning", "assert"):
            problems.append(
                f"console.{p['type']}: "
                + " ".join(str(a.get("value", a.get("description"))) for a in p.get("args", []))
            )
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            problems.append(
                "exception: " + (d.get("exception", {}).get("description") or d.get("text", ""))
            )
        elif m == "Log.entryAdded" and p["entry"]["level"] in ("error", "warning"):
            problems.append(
                f"log.{p['entry']['level']}: {p['entry']['text']} {p['entry'].get('url', '')}"
            )
        elif m == "Network.requestWillBeSent":
            requests.append(p["request"]["url"])
        elif m == "Network.loadingFailed":
            problems.append(f"network: {p.get('errorText')}")
    assert loaded, f"{url} did not finish loading"
    js = """JSON.stringify({
      metrics: [...document.querySelectorAll('[data-metric]')].map(e => ({
          scope: e.dataset.scope, task: e.dataset.task || null, metric: e.dataset.metric,
          value: JSON.parse(e.dataset.value), text: e.textContent, id: e.id})),
      images: [...document.images].map(i => ({alt: i.alt, w: i.naturalWidth, h: i.naturalHeight,
          complete: i.complete})),
      empty: !!document.querySelector('#empty'),
      text: document.body ? document.body.innerText : '',
      steps: [...document.querySelectorAll('#next-steps li')].map(l => l.dataset.kind),
      scrollWidth: document.documentElement.scrollWidth})"""
    res = browser.send("Runtime.evaluate", {"expression": js, "returnByValue": True}, session=sid)
    dom = json.loads(res["result"]["value"])
    if screenshot is not None:
        size = browser.send("Page.getLayoutMetrics", session=sid)["cssContentSize"]
        browser.send(
            "Emulation.setDeviceMetricsOverride",
            {
                "width": width,
                "height": int(size["height"]),
                "deviceScaleFactor": 1,
                "mobile": False,
            },
            session=sid,
        )
        shot = browser.send(
            "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True}, session=sid
        )
        import base64

        screenshot.write_bytes(base64.b64decode(shot["data"]))
    browser.send("Target.closeTarget", {"targetId": target})
    return {"problems": problems, "requests": requests, "dom": dom}


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Any:
    b = Browser(tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield b
    finally:
        b.close()


def _resolve(d: Any, path: str) -> Any:
    for part in path.split("."):
        d = d[part]
    return d


def test_harness_sees_console_errors(browser: Browser, tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text(
        '<!DOCTYPE html><html><body><p>x</p><script>console.error("canary");'
        'undefinedFunction();</script><img src="http://192.0.2.1/x.png"></body></html>'
    )
    seen = load_page(browser, bad.as_uri())
    text = "\n".join(seen["problems"])
    assert "console.error: canary" in text
    assert "undefinedFunction" in text
    assert any(u.startswith("http://192.0.2.1") for u in seen["requests"])


def test_report_page_in_chromium(browser: Browser, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store_url())
    populate(store)
    report = build_report(store, cfg, now=NOW)
    page = tmp_path / "report.html"
    page.write_text(render_html(report), encoding="utf-8")
    shot = Path(os.environ.get("DOWNSIZE_REPORT_SCREENSHOT", tmp_path / "report.png"))
    seen = load_page(browser, page.as_uri(), screenshot=shot)

    assert seen["problems"] == []
    assert all(u.startswith(("file:", "data:")) for u in seen["requests"]), seen["requests"]
    dom = seen["dom"]
    assert not dom["empty"]
    assert dom["scrollWidth"] <= 1280, "the page scrolls sideways at 1280 px"
    assert len(dom["images"]) >= 8
    assert all(i["complete"] and i["w"] > 100 and i["h"] > 100 for i in dom["images"]), dom[
        "images"
    ]

    # every figure in the DOM is the JSON's figure at its path
    data = json.loads(to_json(report))
    assert len(dom["metrics"]) > 60
    ids = [m["id"] for m in dom["metrics"]]
    assert len(ids) == len(set(ids)) or all(
        m["value"] == n["value"]
        for m in dom["metrics"]
        for n in dom["metrics"]
        if m["id"] == n["id"]
    )
    for m in dom["metrics"]:
        root = data["totals"] if m["scope"] == "totals" else data["tasks"][m["task"]]
        assert m["value"] == _resolve(root, m["metric"]), m
    by = {(m["task"], m["metric"]): m for m in dom["metrics"]}
    t = data["tasks"]["tickets"]
    # the visible text agrees with the value too
    assert by[("tickets", "local_share")]["text"] == f"{100 * t['local_share']:.1f} %"
    assert by[(None, "requests")]["text"] == f"{data['totals']['requests']:,}"
    assert by[("tickets", "spot_checks.n")]["value"] == t["spot_checks"]["n"]
    assert "measured (CPU time × W/core)" in dom["text"]
    assert "estimated (tokens × Wh/1k tokens)" in dom["text"]
    assert set(dom["steps"]) >= {"retrain", "add_examples", "train_student"}
    assert shot.stat().st_size > 50_000


def test_empty_page_in_chromium(browser: Browser, tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store = Store(cfg.store_url())
    page = tmp_path / "empty.html"
    page.write_text(render_html(build_report(store, cfg, now=NOW)), encoding="utf-8")
    seen = load_page(browser, page.as_uri())
    assert seen["problems"] == []
    assert seen["dom"]["empty"]
    assert "Nothing recorded yet" in seen["dom"]["text"]
