"""From logged traffic to a serving student, on real parts, through the command line:

an app's traffic (a Reuters topic call site and an open-ended "summarise" one) goes through the
gateway in pass-through mode to the replay teacher (real uvicorn, the openai SDK) and lands in the
gateway's log → ``downsize audit gateway.db`` (table + downsize.yaml + HTML) → ``downsize audit
import`` (twice: the second adds nothing, and no teacher call is made) → ``downsize train`` →
``downsize calibrate`` → the gateway serves the task (the openai SDK again).
"""

from __future__ import annotations

import csv
import gzip
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from openai import OpenAI
from typer.testing import CliRunner

from downsize.cli import app
from downsize.config import load_config
from downsize.project import Project
from downsize.replay import ReplayServer
from downsize.server import ServerThread, create_app
from downsize.server.keys import create_key
from downsize.store import Store

ASSETS = Path(__file__).resolve().parents[1] / "src" / "downsize" / "_assets"
SYSTEM = "You route news wires to the right desk. Reply with the topic only."
WRAP = "Wire story:\n{text}\nWhich desk: earn, acq, crude, trade, money-fx, interest, ship or grain?"
SUMMARY = "Summarise this story in one sentence for the morning briefing:\n{text}"
GATEWAY = """\
store: sqlite:///{db}
teachers:
  default: {{base_url: "{url}", model: gpt-4o-mini, price_per_1m_input: 0.15, price_per_1m_output: 0.6,
             max_concurrency: 8, timeout_s: 10, max_retries: 1}}
server: {{log_passthrough_text: true}}
"""
runner = CliRunner()


def _reuters(split: str) -> list[tuple[str, str]]:
    with gzip.open(ASSETS / f"reuters_r8_demo-{split}.csv.gz", "rt", encoding="utf-8") as fh:
        return [(r["text"], r["label"]) for r in csv.DictReader(fh)]


def _summary(text: str) -> str:
    words = text.split()
    return "In short: " + " ".join(words[3:14]) + "."  # recorded text that differs for every story


def _send(client: OpenAI, system: str | None, user: str) -> str:
    msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return client.chat.completions.create(model="gpt-4o-mini", messages=msgs).choices[0].message.content or ""


def test_audit_to_yaml_to_import_to_train_calibrate_serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train, test = _reuters("train")[:1000], _reuters("test")[:60]
    stories = [t for t, _ in _reuters("train")[1000:1150]]
    records = {WRAP.format(text=t): y for t, y in train + test}
    records |= {SUMMARY.format(text=t): _summary(t) for t in stories}
    monkeypatch.chdir(tmp_path)
    with ReplayServer(records) as replay:
        # 1. a week of the app's traffic through `downsize serve` in pass-through mode
        (tmp_path / "gateway.yaml").write_text(GATEWAY.format(db=tmp_path / "gateway.db", url=replay.base_url))
        cfg = load_config(tmp_path / "gateway.yaml")
        with Store(cfg.store_url()) as store:
            key = create_key(store, "app").secret
            with ServerThread(create_app(cfg, store=store)) as gw:
                client = OpenAI(base_url=gw.base_url, api_key=key, max_retries=0)
                jobs = [(SYSTEM, WRAP.format(text=t)) for t, _ in train] + [(None, SUMMARY.format(text=t)) for t in stories]
                with ThreadPoolExecutor(8) as pool:
                    got = list(pool.map(lambda j: _send(client, *j), jobs))
        assert got[:3] == [y for _, y in train[:3]]
        paid = replay.stats["requests"]
        assert paid == len(jobs)

        # 2. the audit: the ranked table, a downsize.yaml for the narrow template, an HTML page
        r = runner.invoke(app, ["audit", str(tmp_path / "gateway.db"), "--yaml", "downsize.yaml", "--html",
                                "audit.html", "--no-names"], env={"COLUMNS": "220"})
        assert r.exit_code == 0, r.output
        assert "narrow (classify)" in r.output and "open-ended" in r.output and "keep on the large model" in r.output
        page = (tmp_path / "audit.html").read_text()
        assert 'data-metric="verdict" data-value=\'&quot;open-ended&quot;\'' in page
        text = (tmp_path / "downsize.yaml").read_text()
        names = re.findall(r"^  ([a-z0-9_]+):\n    kind: classify", text, flags=re.MULTILINE)
        assert len(names) == 1 and "kind: extract" not in text  # the summaries are not proposed
        name = names[0]
        # point the proposed teacher at the replay teacher (as a user edits base_url), loosen α for 1,000 rows, the cheap student
        text = re.sub(r"base_url: \S+", f"base_url: {replay.base_url}", text)
        text = text.replace("    kind: classify\n", "    kind: classify\n    alpha: 0.1\n    student: tfidf\n")
        (tmp_path / "downsize.yaml").write_text(text)
        labels = set(load_config(tmp_path / "downsize.yaml").task(name).labels)
        assert labels == {y for _, y in train}

        # 3. the logged pairs become labels: no teacher call, and a re-run adds nothing
        distinct = {WRAP.format(text=t) for t, _ in train}
        for added in (f"added {len(distinct):,}", "added 0 "):
            r = runner.invoke(app, ["audit", "import", str(tmp_path / "gateway.db"), "--task", name,
                                    "-c", "downsize.yaml"], env={"COLUMNS": "220"})
            assert r.exit_code == 0, r.output
            assert added in r.output, r.output
        assert replay.stats["requests"] == paid
        with Project.open(tmp_path / "downsize.yaml") as p:
            ex = p.store.labelled_examples(name)
            assert len(ex) == len(distinct) and {e.source for e in ex} == {"audit"}
            assert {e.text: e.label for e in ex} == {t: records[t] for t in distinct}  # the logged answers

        # 4. train and calibrate on them
        r = runner.invoke(app, ["train", name, "-c", "downsize.yaml"], env={"COLUMNS": "220"})
        assert r.exit_code == 0, r.output
        r = runner.invoke(app, ["calibrate", name, "-c", "downsize.yaml"], env={"COLUMNS": "220"})
        assert r.exit_code == 0, r.output
        with Project.open(tmp_path / "downsize.yaml") as p:
            run = p.store.latest_calibration(name)
            assert run is not None and run.reference == "audit" and run.threshold is not None and run.coverage > 0.3

            # 5. the app now calls the task: the student answers what it may, the teacher the rest
            key = create_key(p.store, "app").secret
            with ServerThread(create_app(p.config, store=p.store)) as srv:
                client = OpenAI(base_url=srv.base_url, api_key=key, max_retries=0)
                by = []
                for t, y in test:
                    resp = client.chat.completions.with_raw_response.create(
                        model=f"downsize/{name}", messages=[{"role": "system", "content": SYSTEM},
                                                            {"role": "user", "content": WRAP.format(text=t)}])
                    answer = p.config.task(name).parse(resp.parse().choices[0].message.content or "")
                    by.append(resp.headers["x-downsize-answered-by"])
                    if by[-1] == "teacher":
                        assert answer == y
            assert "student" in by and set(by) <= {"student", "teacher"}
            assert replay.stats["requests"] - paid <= by.count("teacher") + len(test)  # escalations and spot checks only


def test_audit_reports_bad_lines_and_fails_only_when_nothing_is_read(tmp_path: Path) -> None:
    good = tmp_path / "pairs.jsonl"
    import json

    rows = [json.dumps({"request": {"model": "gpt-4o", "messages": [{"role": "user", "content": f"Topic of: {w}"}]},
                        "response": {"choices": [{"message": {"content": "x"}}]}}) for w in ("a", "b", "c")]
    good.write_text(rows[0] + "\n{broken\n" + rows[1] + "\n" + rows[2] + "\n")
    r = runner.invoke(app, ["audit", str(good), str(tmp_path / "missing.jsonl"), "--no-names"],
                      env={"COLUMNS": "220"})
    assert r.exit_code == 0, r.output
    assert "line 2" in r.output and "missing.jsonl: no such file" in r.output
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{broken\nnot json either\n")
    r = runner.invoke(app, ["audit", str(bad), "--format", "chat_pairs"], env={"COLUMNS": "220"})
    assert r.exit_code == 2 and "no request could be read" in r.output and "line 1" in r.output
