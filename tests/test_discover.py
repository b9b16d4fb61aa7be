"""downsize.discover: log readers, template mining, PII checks, verdicts, certification, yaml proposals.

The logs are constructed here (a small app with five call sites over made-up vocabulary) and
written to tmp_path in each format; nothing is read from ../shared.
"""

from __future__ import annotations

import csv
import json
import random
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from downsize.config import load_config
from downsize.discover import (
    LogRecord,
    TemplateMiner,
    Thresholds,
    certify_classify,
    detect_format,
    discover,
    find_pii,
    iban_valid,
    judge,
    luhn_valid,
    normalise_answer,
    price_for,
    profile_template,
    purity,
    read_logs,
    records_from_audit_rows,
)
from downsize.discover.prices import cost
from downsize.discover.verdict import label_of
from downsize.errors import DataError

FILLER = ("the a this that some our their new old big small early late more less very quite just also then "
          "here there today yesterday report note item part side case point group level").split()
TOPICS = {"sports": ["match", "goal", "team", "coach", "league", "score", "season", "player"],
          "finance": ["bank", "market", "stock", "profit", "shares", "bond", "rate", "earnings"],
          "weather": ["rain", "storm", "wind", "cloud", "sunny", "forecast", "snow", "heat"]}
ALL_WORDS = FILLER + [w for ws in TOPICS.values() for w in ws]
CITIES = "Oslo Lyon Porto Graz Turku Gent Bern Split".split()
FIRST = ["Ada", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro"]
# (name, system, user wrapper, kind)
SITES = [
    ("topic", "You sort short news notes by topic. Answer sports, finance or weather.", "Note: {text}", "classify"),
    ("topic_inline", "", "Which topic is this note about: sports, finance or weather?\n{text}", "classify"),
    ("orders", "Extract the order fields as JSON.", "Parse this order:\n{text}\nReturn JSON only.", "extract"),
    ("chat", "You are a helpful assistant.", "{text}", "open"),
    ("tickets", "You tag support tickets by topic.", "Ticket from {email}: {text}\nAnswer with one label.", "classify"),
]


def _sentence(rng: random.Random, words: list[str], n: int, topic: str | None = None) -> str:
    out = [rng.choice(words) for _ in range(n)]
    if topic:
        for _ in range(3):
            out.insert(rng.randrange(len(out) + 1), rng.choice(TOPICS[topic]))
    return " ".join(out)


def make_calls(n: int, seed: int = 0, sites: list[tuple[str, str, str, str]] = SITES) -> list[dict[str, Any]]:
    """Constructed calls: messages, answer, model, tokens, latency, ts, id and the true template."""
    rng = random.Random(seed)
    t0 = datetime(2025, 6, 1)
    calls = []
    for i in range(n):
        name, system, wrapper, kind = sites[i % len(sites)]
        email = f"{rng.choice(FIRST).lower()}{rng.randrange(99)}@example.com"
        if kind == "classify":
            topic = rng.choice(sorted(TOPICS))
            text, answer = _sentence(rng, FILLER, rng.randint(6, 14), topic), topic
        elif kind == "extract":
            oid, city = f"A{rng.randrange(10**5):05d}", rng.choice(CITIES)
            text = f"{_sentence(rng, FILLER, 3)} order {oid} to {city} {_sentence(rng, FILLER, 2)}"
            answer = json.dumps({"order_id": oid, "city": city} if rng.random() < 0.8 else
                                {"order_id": oid, "city": city, "note": rng.choice(FILLER)})
        else:
            text = _sentence(rng, ALL_WORDS, rng.randint(5, 15))
            answer = _sentence(rng, ALL_WORDS, rng.randint(8, 20)).capitalize() + "."
        user = wrapper.format(text=text, email=email)
        msgs = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        calls.append({"id": f"r{seed}-{i}", "template": name, "messages": msgs, "answer": answer,
                      "model": "gpt-4o-mini" if i % 2 else "gpt-4o", "tin": 20 + len(user) // 4,
                      "tout": 1 + len(answer) // 4, "latency": 200.0 + rng.random() * 300,
                      "ts": t0 + timedelta(minutes=10 * i)})
    return calls


def _completion(c: dict[str, Any]) -> dict[str, Any]:
    return {"id": f"cmpl-{c['id']}", "object": "chat.completion", "created": int(c["ts"].timestamp()),
            "model": c["model"], "choices": [{"index": 0, "message": {"role": "assistant", "content": c["answer"]}}],
            "usage": {"prompt_tokens": c["tin"], "completion_tokens": c["tout"]}}


def write_lines(path: Path, rows: list[Any], bad: dict[int, str]) -> None:
    """JSON lines with the ``bad`` texts at the given 1-based line numbers."""
    out, it = [], iter(rows)
    for line in range(1, len(rows) + len(bad) + 1):
        out.append(bad[line] if line in bad else orjson.dumps(next(it)).decode())
    path.write_text("\n".join(out) + "\n")


def spend_row(c: dict[str, Any], layout: str = "current") -> dict[str, Any]:
    row = {"request_id": c["id"], "call_type": "acompletion", "spend": 0.0001, "prompt_tokens": c["tin"],
           "completion_tokens": c["tout"], "startTime": c["ts"].isoformat() + "Z",
           "endTime": (c["ts"] + timedelta(milliseconds=c["latency"])).isoformat() + "Z", "model": c["model"],
           "status": "success", "response": _completion(c), "metadata": {}}
    if layout == "current":
        row.update(messages={}, proxy_server_request={"model": c["model"], "messages": c["messages"]})
    elif layout == "metadata":
        row.update(messages={}, metadata={"proxy_server_request": json.dumps({"messages": c["messages"]})})
    else:
        row.update(messages=c["messages"])
    return row


@pytest.fixture(scope="module")
def calls() -> list[dict[str, Any]]:
    return make_calls(1000)


def to_records(calls: list[dict[str, Any]]) -> list[LogRecord]:
    return [LogRecord(tuple((m["role"], m["content"]) for m in c["messages"]), c["answer"], c["model"], c["tin"],
                      c["tout"], c["latency"], c["ts"], id=c["id"]) for c in calls]


# -- readers ----------------------------------------------------------------------------------
def test_chat_pairs_reader_counts_bad_lines_with_numbers(tmp_path: Path, calls: list[dict[str, Any]]) -> None:
    rows = [{"id": c["id"], "request": {"model": c["model"], "messages": c["messages"]}, "response": _completion(c),
             "latency_ms": c["latency"], "timestamp": c["ts"].isoformat()} for c in calls[:50]]
    p = tmp_path / "pairs.jsonl"
    write_lines(p, rows, {3: "{not json", 10: "[1, 2]", 20: '{"request": {"model": "x"}, "response": "hi"}'})
    assert detect_format(p) == "chat_pairs"
    read = read_logs(p)
    rep = read.report.files[0]
    assert len(read.records) == 50 and rep.bad_count == 3
    assert [b.line for b in rep.bad] == [3, 10, 20]
    r0 = read.records[0]
    assert (r0.id, r0.model, r0.input_tokens, r0.response) == (calls[0]["id"], calls[0]["model"], calls[0]["tin"],
                                                                calls[0]["answer"])
    assert r0.latency_ms == pytest.approx(calls[0]["latency"]) and r0.ts == calls[0]["ts"]
    assert r0.text == calls[0]["messages"][-1]["content"] and r0.source == "pairs.jsonl:1"


def test_openai_batch_joins_out_of_order_and_counts_failures(tmp_path: Path, calls: list[dict[str, Any]]) -> None:
    cs = calls[:40]
    inputs = [{"custom_id": c["id"], "method": "POST", "url": "/v1/chat/completions",
               "body": {"model": c["model"], "messages": c["messages"]}} for c in cs]
    outputs = [{"id": f"b-{c['id']}", "custom_id": c["id"], "response": {"status_code": 200, "body": _completion(c)},
                "error": None} for c in cs[:-1]]  # the last request has no result
    outputs[5] = {"id": "b-x", "custom_id": cs[5]["id"], "response": None,
                  "error": {"code": "server_error", "message": "boom"}}
    random.Random(1).shuffle(outputs)
    write_lines(tmp_path / "in.jsonl", inputs, {7: '{"method": "POST"}'})
    write_lines(tmp_path / "out.jsonl", outputs, {2: "garbage"})
    assert detect_format(tmp_path / "out.jsonl") == "openai_batch"
    read = read_logs([tmp_path / "in.jsonl", tmp_path / "out.jsonl"])
    assert len(read.records) == 38
    assert [r.id for r in read.records] == [c["id"] for c in cs if c not in (cs[5], cs[-1])]  # input order
    assert all(r.batch for r in read.records)
    fin, fout = read.report.files
    assert [b.line for b in fin.bad] == [7] and [b.line for b in fout.bad] == [2]
    assert sum(fin.skipped.values()) == 1 and sum(fout.skipped.values()) == 1  # no result / failed
    by_id = {c["id"]: c for c in cs}
    assert all(r.response == by_id[r.id]["answer"] for r in read.records)


@pytest.mark.parametrize("layout", ["current", "metadata", "older"])
def test_litellm_json_jsonl_and_csv(tmp_path: Path, calls: list[dict[str, Any]], layout: str) -> None:
    cs = calls[:30]
    rows = [spend_row(c, layout) for c in cs]
    (tmp_path / "s.json").write_bytes(orjson.dumps(rows[:10] + [{"call_type": "x"}] + rows[10:]))
    write_lines(tmp_path / "s.jsonl", rows, {4: "{oops"})
    with open(tmp_path / "s.csv", "w", newline="") as fh:
        cols = list(rows[0])
        w = csv.writer(fh)
        w.writerow(cols)
        for i, r in enumerate(rows):
            w.writerow([json.dumps(v) if isinstance(v, (dict, list)) else v for v in (r[c] for c in cols)])
            if i == 4:
                w.writerow(["x"] * (len(cols) + 2))
    for name, bad_line in (("s.json", 11), ("s.jsonl", 4), ("s.csv", None)):
        assert detect_format(tmp_path / name) == "litellm"
        read = read_logs(tmp_path / name)
        rep = read.report.files[0]
        assert len(read.records) == 30 and rep.bad_count == 1, rep.summary()
        if bad_line is not None:
            assert rep.bad[0].line == bad_line
        r = read.records[7]
        assert (r.id, r.text, r.response, r.cost_usd) == (cs[7]["id"], cs[7]["messages"][-1]["content"],
                                                           cs[7]["answer"], 0.0001)
        assert r.latency_ms == pytest.approx(cs[7]["latency"], abs=1)


def test_litellm_without_stored_prompts_says_how_to_enable(tmp_path: Path, calls: list[dict[str, Any]]) -> None:
    rows = [{**spend_row(c), "messages": {}, "proxy_server_request": {}, "response": {}} for c in calls[:5]]
    (tmp_path / "s.json").write_bytes(orjson.dumps(rows))
    read = read_logs(tmp_path / "s.json")
    assert not read.records
    assert any("store_prompts_in_spend_logs" in n for n in read.report.files[0].notes)
    with pytest.raises(DataError, match="store_prompts_in_spend_logs"):
        discover(tmp_path / "s.json")


def _gateway_rows(cs: list[dict[str, Any]], *, log_text: bool = True) -> list[dict[str, Any]]:
    from downsize.audit import AuditRecord
    from downsize.store import text_hash

    rows = []
    for c in cs:
        text = c["messages"][-1]["content"]
        rows.append(AuditRecord(request_id=c["id"], ts=c["ts"], task=None, model=c["model"], input_hash=text_hash(text),
                                input_text=text if log_text else None, answer=c["answer"] if log_text else None,
                                answered_by="passthrough", teacher_input_tokens=c["tin"],
                                teacher_output_tokens=c["tout"], teacher_cost_usd=0.001,
                                latency_ms=c["latency"]).row())
    return rows


def test_gateway_log_reads_passthrough_rows_and_notes_missing_text(tmp_path: Path, calls: list[dict[str, Any]]) -> None:
    from downsize.audit import AuditRecord, export_log
    from downsize.store import Store

    url = f"sqlite:///{tmp_path / 'g.db'}"
    with Store(url) as store:
        store.log_requests(_gateway_rows(calls[:20]))
        store.log_requests(_gateway_rows(calls[20:25], log_text=False))
        store.log_requests([AuditRecord(task="topic", model="downsize/topic", input_hash="h", input_text="x",
                                        answer="sports", answered_by="student", latency_ms=1.0).row()])
        export_log(store, tmp_path / "log.jsonl")
    for src in (url, tmp_path / "g.db", tmp_path / "log.jsonl"):
        assert detect_format(src) == "downsize"
        read = read_logs(src)
        rep = read.report.files[0]
        assert len(read.records) == 20, rep.summary()
        assert read.records[0].messages == (("user", calls[0]["messages"][-1]["content"]),)
        assert read.records[0].cost_usd == pytest.approx(0.001) and read.records[0].id == calls[0]["id"]
        assert any("log_passthrough_text" in n for n in rep.notes)
    with Store(url) as store:
        from downsize.audit import read_log

        assert len(records_from_audit_rows(read_log(store)).records) == 20


def test_detect_format_errors_name_the_file(tmp_path: Path) -> None:
    p = tmp_path / "odd.jsonl"
    p.write_text('{"hello": 1}\n')
    with pytest.raises(DataError, match="odd.jsonl"):
        detect_format(p)
    with pytest.raises(DataError, match="no such file"):
        read_logs(tmp_path / "missing.jsonl")
    read = read_logs(p, format="chat_pairs")  # an explicit format reads it, counting the bad row
    assert read.report.files[0].bad_count == 1 and not read.records
    broken = tmp_path / "broken.json"
    broken.write_text('[{"request_id": "a", "spend": 1}, {"request_id": ')
    rep = read_logs(broken, format="litellm").report.files[0]  # a torn JSON array: one bad item, no crash
    assert rep.bad_count == 1 and rep.bad[0].line == 1
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"request": {"model"\n' + orjson.dumps({"request": {"model": "m", "messages": [
        {"role": "user", "content": "hi"}]}, "response": "hello"}).decode() + "\n")
    read = read_logs(torn)
    assert len(read.records) == 1 and [b.line for b in read.report.files[0].bad] == [1]


# -- templates --------------------------------------------------------------------------------
def test_template_purity_on_a_small_mix(calls: list[dict[str, Any]]) -> None:
    recs = to_records(calls)
    miner = TemplateMiner().fit(recs)
    p, c = purity(miner.labels_.tolist(), [x["template"] for x in calls])
    assert p >= 0.95 and c >= 0.95
    assert len(miner.templates_) == len(SITES)
    fresh = make_calls(300, seed=7)
    pred = miner.predict(to_records(fresh))
    assert (pred >= 0).mean() >= 0.95
    p2, _ = purity(pred.tolist(), [x["template"] for x in fresh])
    assert p2 >= 0.95
    t = miner.templates_[miner.labels_[0]]
    assert miner.variable_text(recs[0], t) in recs[0].text and len(miner.variable_text(recs[0], t)) < len(recs[0].text)


def test_repeated_texts_do_not_pose_as_templates(calls: list[dict[str, Any]]) -> None:
    recs = to_records([c for c in calls if c["template"] == "chat"])
    recs += [recs[0]] * 60  # one popular prompt, sent 60 times
    miner = TemplateMiner().fit(recs)
    assert len(miner.templates_) == 1


def test_system_prompts_with_names_and_dates_and_suffix_only_differences() -> None:
    rng = random.Random(4)
    recs, true = [], []
    for i in range(900):
        text = _sentence(rng, ALL_WORDS, rng.randint(6, 14))
        syl = ["ka", "lo", "mi", "ra", "ten", "vo", "sel", "da", "rin", "po", "ul", "ge"]
        who = " ".join("".join(rng.choice(syl) for _ in range(2)).title() for _ in range(2))  # many customers
        site = i % 3
        if site == 0:  # a per-customer system prompt with a date: one call site (few requests per customer)
            system = f"Today is 2025-06-{1 + i % 28:02d}. You help {who} with their account. Be brief."
            user = text
        else:  # same system and opening, different instructions after the text: two call sites
            system = "You are a helpful assistant."
            user = f"Message from {who.split()[0].lower()}@example.com: {text}\n" + (
                "Which category is it?" if site == 1 else "Give the label and nothing else.")
        recs.append(LogRecord((("system", system), ("user", user)), "x", "gpt-4o"))
        true.append(site)
    miner = TemplateMiner().fit(recs)
    p, c = purity(miner.labels_.tolist(), true)
    assert p >= 0.95 and c >= 0.95 and len(miner.templates_) == 3


# -- PII --------------------------------------------------------------------------------------
@pytest.mark.parametrize("number,ok", [("4111 1111 1111 1111", True), ("5500-0000-0000-0004", True),
                                       ("378282246310005", True), ("4111 1111 1111 1112", False),
                                       ("1234567812345678", False), ("4111x1111", False)])
def test_luhn(number: str, ok: bool) -> None:
    assert luhn_valid(number) is ok


@pytest.mark.parametrize("iban,ok", [("DE89 3704 0044 0532 0130 00", True), ("GB82WEST12345698765432", True),
                                     ("FR1420041010050500013M02606", True), ("DE89 3704 0044 0532 0130 01", False),
                                     ("GB82WEST1234569876543", False), ("XX00", False)])
def test_iban(iban: str, ok: bool) -> None:
    assert iban_valid(iban) is ok


def test_find_pii_finds_valid_ones_only_and_masks_them() -> None:
    text = ("Mail ada.lovelace@example.org or call +44 20 7946 0958; card 4111 1111 1111 1111, not 4111 1111 1111 1112;"
            " IBAN DE89 3704 0044 0532 0130 00; order 2024-05-01 qty 1234567 total 99.50")
    hits = find_pii(text)
    assert sorted(h.kind for h in hits) == ["card", "email", "iban", "phone"]
    for h in hits:
        assert text[h.start:h.end] not in h.masked
    assert find_pii("the 1987 88 season had 12 345 fans and 3.5 mln dlrs") == []


def test_names_are_checked_with_spacy_or_the_skip_is_said() -> None:
    from downsize.discover import scan_pii
    from downsize.discover.pii import names_available

    texts = [f"Ticket from {n} Smith about the invoice" for n in FIRST] * 5
    s = scan_pii(texts, name_sample=20)
    if names_available():
        assert s.n_names_scanned == 20 and s.share("person") >= 0.5 and not s.names_note
    else:
        assert s.n_names_scanned == 0 and "spaCy" in s.names_note and "person" not in s.with_kind
    assert scan_pii(texts, names=False).names_note.startswith("names not checked")


# -- profiles, verdicts, certification ---------------------------------------------------------
def _by_template(calls: list[dict[str, Any]]) -> dict[str, list[LogRecord]]:
    out: dict[str, list[LogRecord]] = {}
    for c, r in zip(calls, to_records(calls)):
        out.setdefault(c["template"], []).append(r)
    return out


def test_verdicts_classify_extract_open_and_private(calls: list[dict[str, Any]]) -> None:
    groups = _by_template(calls)
    miner = TemplateMiner().fit([r for rs in groups.values() for r in rs])
    got = {}
    for name, recs in groups.items():
        p = profile_template(miner.templates_[0], recs, names=False)
        got[name] = judge(p)
    assert (got["topic"].scope, got["topic"].kind) == ("narrow", "classify")
    assert set(got["topic"].labels) == set(TOPICS)
    assert (got["orders"].scope, got["orders"].kind) == ("narrow", "extract")
    assert set(got["orders"].labels) >= {"order_id", "city"}
    assert got["chat"].scope == "broad" and got["chat"].recommendation == "keep on the large model"
    assert got["tickets"].private and "email" in got["tickets"].pii_kinds and not got["topic"].private
    assert got["topic"].cost_month_now is not None and got["topic"].cost_month_now > 0


def test_multilabel_and_free_json_are_told_apart() -> None:
    rng = random.Random(3)
    tags = ["net", "db", "ui", "cli", "docs"]
    ml = [LogRecord((("user", f"Tag: {_sentence(rng, FILLER, 8)}"),), json.dumps(rng.sample(tags, rng.randint(0, 3))),
                    "gpt-4o") for _ in range(200)]
    free = [LogRecord((("user", f"Sum: {_sentence(rng, FILLER, 8)}"),),
                      json.dumps({"summary": _sentence(rng, FILLER + tags, 12)}), "gpt-4o") for _ in range(200)]
    miner = TemplateMiner().fit(ml + free)
    v_ml = judge(profile_template(miner.templates_[0], ml, names=False))
    v_free = judge(profile_template(miner.templates_[0], free, names=False))
    assert (v_ml.scope, v_ml.kind) == ("narrow", "multilabel") and set(v_ml.labels) == set(tags)
    assert v_free.scope == "broad"
    few = judge(profile_template(miner.templates_[0], ml[:10], names=False))
    assert few.scope == "too few" and few.recommendation.startswith("too few")


def test_answers_are_normalised_and_chatty_variants_map_to_their_label() -> None:
    assert normalise_answer(" Sports. ") == normalise_answer("label: SPORTS") == "sports"
    assert normalise_answer('```json\n{"b": 1, "a": 2}\n```') == '{"a":2,"b":1}'
    assert label_of("sports (the note is about a match)", ["sports", "finance"]) == "sports"
    assert label_of("sports-ish", ["sports"]) == "sports-ish"


def test_certify_classify_projects_a_share_under_the_guarantee(calls: list[dict[str, Any]]) -> None:
    more = make_calls(4000, seed=11, sites=[SITES[0]])
    texts = [c["messages"][-1]["content"] for c in more]
    cert = certify_classify(texts, [c["answer"] for c in more], alpha=0.05, max_examples=1500)
    assert cert.n_calib == 450 and cert.threshold is not None and cert.coverage > 0.5
    lo, hi = cert.coverage_interval
    assert lo <= cert.coverage <= hi and cert.risk_upper is not None and cert.risk_upper <= 0.05
    fresh = make_calls(1500, seed=12, sites=[SITES[0]])
    proba = cert.model.predict_proba([c["messages"][-1]["content"] for c in fresh])
    local = proba.max(1) >= cert.threshold
    wrong = cert.model.classes_[proba.argmax(1)][local] != [c["answer"] for c, k in zip(fresh, local) if k]
    assert wrong.mean() <= 0.05


# -- the whole audit and the yaml ----------------------------------------------------------------
def test_discover_ranks_certifies_and_writes_a_loadable_yaml(tmp_path: Path) -> None:
    cs = make_calls(3000, seed=5)
    rows = [{"id": c["id"], "request": {"model": c["model"], "messages": c["messages"]}, "response": _completion(c),
             "timestamp": c["ts"].isoformat()} for c in cs]
    write_lines(tmp_path / "pairs.jsonl", rows, {})
    d = discover(tmp_path / "pairs.jsonl", names=False)
    assert len(d.profiles) == len(SITES)
    kinds = {(v.scope, v.kind) for v in d.verdicts}
    assert ("broad", None) in kinds and ("narrow", "classify") in kinds and ("narrow", "extract") in kinds
    savings = [v.savings_month or 0.0 for v in d.verdicts]
    assert savings == sorted(savings, reverse=True)
    topic = next(v for p, v in zip(d.profiles, d.verdicts) if p.template.system.startswith("You sort"))
    assert topic.certification is not None and topic.local_share is not None and topic.local_share > 0
    assert topic.cost_month_cascade is not None and topic.cost_month_cascade < topic.cost_month_now
    assert all(v.recommendation == "keep on the large model" for v in d.verdicts if v.scope == "broad")
    text = d.config_yaml(top=None)
    (tmp_path / "downsize.yaml").write_text(text)
    classify_only = "\n".join(_drop_non_classify(text))
    (tmp_path / "classify.yaml").write_text(classify_only)
    cfg = load_config(tmp_path / "classify.yaml")
    tasks = {n: t for n, t in cfg.tasks.items()}
    assert len(tasks) == 3
    assert all(set(t.labels) == set(TOPICS) for t in tasks.values())
    assert any(t.log_text is False for t in tasks.values())  # the tickets carry emails
    texts, answers, dropped = d.labelled_pairs(topic.template_id)
    assert len(texts) == len(answers) and set(answers) <= set(TOPICS) and dropped == 0
    broad = next(v for v in d.verdicts if v.scope == "broad")
    with pytest.raises(DataError, match="nothing to import"):
        d.labelled_pairs(broad.template_id)
    props = {p.kind: p for p in d.proposals(top=None)}
    assert set(props["extract"].fields or {}) >= {"order_id", "city"}
    assert (props["extract"].fields or {})["order_id"]["required"] is True
    json.dumps(d.to_dict(), default=str)


def _drop_non_classify(text: str) -> list[str]:
    """The yaml with only its classify tasks (the config schema knows multilabel/extract later)."""
    out, skip = [], False
    for line in text.splitlines():
        if line.startswith("  ") and not line.startswith("    ") and not line.lstrip().startswith("#"):
            skip = False
        if line.startswith("    kind: ") and line.strip() != "kind: classify":
            skip = True
            while out and out[-1].startswith("  ") and not out[-1].startswith("    "):
                out.pop()  # the task's name line and its comments
            continue
        if not skip:
            out.append(line)
    return out


def test_prices_resolve_dated_and_prefixed_names_and_batch_discount() -> None:
    assert price_for("gpt-4o-2024-08-06") == price_for("openai/gpt-4o") == (2.5, 10.0)
    assert price_for("gpt-4o-mini") != price_for("gpt-4o")
    assert price_for("claude-3-5-sonnet-20241022") == (3.0, 15.0)
    assert price_for("my-model", {"my-model": (1.0, 2.0)}) == (1.0, 2.0)
    assert cost("gpt-4o", 1e6, 0, batch=True) == pytest.approx(1.25)
    assert cost("no-such-model", 10, 10) is None


def test_thresholds_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        Thresholds(10)  # type: ignore[misc]
    assert Thresholds(min_requests=10).min_requests == 10


def test_public_names_and_no_heavy_imports() -> None:
    import subprocess
    import sys

    import downsize.discover as dd

    public = {n for n in dir(dd) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(dd, n)).__name__ == "module"}
    assert set(dd.__all__) == public - modules
    code = "import sys, downsize.discover; print([m for m in ('spacy', 'drain3', 'fastapi') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
