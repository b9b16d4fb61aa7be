"""Constructed LLM traffic from ../shared/data, written in every log format ``downsize.discover`` reads.

Eleven call sites of an imagined app (``SPECS``): three classification templates over Reuters R8
topics and four over Rotten Tomatoes sentiment (different system prompts and user wrappers,
some with the instructions in the user message; ``r8_tagger`` and ``rt_bare`` both send the bare
text as the user message, so only their system prompts tell them apart), two extraction templates over US addresses
(JSON fields answers), and two open-ended ones ("summarise this story", "reply to this review",
answered with varying recorded text). Some templates carry PII: every ``rt_ticket`` request
names its sender with an email address (some add a card number or an IBAN), a quarter of the
``r8_tagger`` requests end with a forwarding address and a phone number, and addresses name
recipients. Answers are the data sets' labels (the recorded teacher), with a 1 % tail of
chatty variants; token counts follow the text length, latencies a log-normal that grows with
the answer, timestamps spread over 14 days.

Formats: ``chat_pairs.jsonl``, ``batch_input.jsonl`` + ``batch_output.jsonl`` (OpenAI Batch API),
``spend_logs.json`` (LiteLLM ``/spend/logs``, current layout: request in ``proxy_server_request``),
``spend_logs.csv`` (a table dump, older layout: request in ``messages``), and ``gateway.db``
(downsize ``request_log`` pass-through rows, as ``downsize serve`` writes them with
``server.log_passthrough_text: true``: the last user message only). A few bad lines are put in
each file. ``truth.json`` maps each request id to its template.

Usage::

    python benchmarks/make_traffic.py --n 20000 --out /tmp/traffic
    python benchmarks/make_traffic.py --n 100000 --formats chat_pairs --out /tmp/traffic100k
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from downsize.discover.prices import cost

REPO = Path(__file__).resolve().parents[1]
# ../shared beside the repository (a worktree one level deeper looks one more level up)
SHARED = next((p / "shared" / "data" for p in (REPO.parent, REPO.parent.parent) if (p / "shared" / "data").is_dir()),
              REPO.parent / "shared" / "data")
R8 = "earn, acq, crude, trade, money-fx, interest, ship, grain"
FIRST = ["Ada", "Ben", "Chloe", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas", "Kemal", "Lena", "Marta", "Nils", "Olga", "Pablo", "Quinn", "Rosa", "Sami", "Tara"]
LAST = ["Smith", "Garcia", "Novak", "Okafor", "Larsen", "Rossi", "Tanaka", "Weber", "Kowalski", "Haddad", "Moreau", "Silva", "Jensen", "Ivanova", "Brown"]
FORMATS = ("chat_pairs", "openai_batch", "litellm", "downsize")


@dataclass(frozen=True)
class Spec:
    name: str
    kind: str  # classify | extract | open
    dataset: str  # reuters | rt | addresses
    system: str
    user: str
    weight: float
    model: str
    answer_style: str = "plain"


SPECS = [
    Spec("r8_desk", "classify", "reuters", f"You route newswire stories to the desk that covers them. Answer with "
         f"exactly one of: {R8}.", "Story: {text}\nAnswer with one label.", 0.14, "gpt-4o"),
    Spec("r8_tagger", "classify", "reuters", "You are a financial news tagger. Reply with the topic code only "
         f"({R8}).", "{text}{pii}", 0.08, "gpt-4.1", "upper"),
    Spec("r8_inline", "classify", "reuters", "", f"Classify the topic of the following Reuters article into one of "
         f"[{R8}].\n\nArticle:\n\"\"\"{{text}}\"\"\"\n\nTopic:", 0.06, "gpt-4o-mini"),
    Spec("rt_triage", "classify", "rt", "You triage movie reviews for the editors. Reply positive or negative.",
         "Review: {text}", 0.16, "gpt-4o"),
    Spec("rt_ticket", "classify", "rt", "You are a support assistant that tags customer feedback by sentiment: "
         "positive or negative.", "Ticket from {name} <{email}>{pii}: {text}\nAnswer with one label.", 0.10,
         "claude-3-5-sonnet-20241022", "title"),
    Spec("rt_bare", "classify", "rt", "Rate the sentiment of the movie review the user sends: positive or negative.",
         "{text}", 0.05, "gpt-4o-mini"),
    Spec("rt_inline", "classify", "rt", "", "Is this review positive or negative?\n{text}", 0.08,
         "gpt-4o-mini-2024-07-18"),
    Spec("addr_fields", "extract", "addresses", "Extract the postal address fields as a JSON object with keys "
         "such as AddressNumber, StreetName, StreetNamePostType, PlaceName, StateName, ZipCode; omit absent fields.",
         "Address: {text}", 0.10, "gpt-4o-2024-08-06"),
    Spec("addr_label", "extract", "addresses", "You parse shipping labels for the warehouse system.",
         "Parse this shipping label:\n{text}\nReturn JSON only.", 0.06, "gpt-4.1-mini", "fenced"),
    Spec("story_summary", "open", "reuters", "You are a helpful editor.", "Summarise this story in one sentence:\n"
         "{text}", 0.12, "gpt-4o"),
    Spec("review_reply", "open", "rt", "", "Write a short, friendly reply to this customer review:\n{text}", 0.10,
         "claude-3-5-haiku-20241022"),
]


_VERBS = ["route", "tag", "sort", "triage", "label", "screen", "review", "check", "file", "rate"]
_NOUNS = ["tickets", "messages", "notes", "reports", "emails", "stories", "posts", "reviews", "requests", "forms"]
_TEAMS = ["billing", "support", "sales", "legal", "security", "ops", "finance", "hr", "growth", "research"]
_HEADS = ["Ticket", "Message", "Note", "Report", "Email", "Story", "Post", "Review", "Request", "Item", "Input", "Text"]
_ASKS = ["Answer with one label.", "Reply with the category only.", "Which category is it?",
         "Give the label and nothing else.", "Classify it.", "Return one word."]


def many_specs(k: int, seed: int = 0) -> list[Spec]:
    """``k`` made-up call sites in the shapes apps use (a stress test of the template miner):
    own system prompt + bare text, a shared generic system prompt + instructions in the user
    message, ``Head: {text}`` wrappers, instructions after the text, a sender line, quoted text."""
    rng = random.Random(seed)
    specs, seen = [], set()
    while len(specs) < k:
        verb, noun, team, head, ask = (rng.choice(x) for x in (_VERBS, _NOUNS, _TEAMS, _HEADS, _ASKS))
        shape = rng.randrange(6)
        system = {0: f"You {verb} {noun} for the {team} team.", 1: "You are a helpful assistant.", 2: "",
                  3: f"You {verb} incoming {noun} ({team}).", 4: "", 5: "You are a helpful assistant."}[shape]
        user = {0: "{text}", 1: f"{verb.title()} this {noun[:-1]} for {team}:\n{{text}}", 2: f"{head}: {{text}}",
                3: f"{{text}}\n\n{ask}", 4: f"{head} from {{email}}: {{text}}\n{ask}",
                5: f"Please {verb} the {team} {noun[:-1]} below.\n\"\"\"{{text}}\"\"\""}[shape]
        if (system, user) in seen:
            continue
        seen.add((system, user))
        ds = rng.choice(["reuters", "rt", "addresses"])
        kind = "extract" if ds == "addresses" else rng.choice(["classify", "classify", "open"])
        specs.append(Spec(f"site{len(specs):02d}", kind, ds, system, user, rng.uniform(0.5, 2.0), "gpt-4o-mini"))
    return specs


@dataclass
class Call:
    id: str
    template: str
    kind: str
    messages: list[dict[str, str]]
    answer: str
    gold: Any
    model: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    ts: datetime


# -- data -------------------------------------------------------------------------------------
def load_data(split: str) -> dict[str, list[tuple[str, Any]]]:
    """``{dataset: [(text, label or fields)]}`` from ../shared/data."""
    def csv_rows(name: str) -> list[tuple[str, Any]]:
        with gzip.open(SHARED / f"{name}-{split}.csv.gz", "rt", encoding="utf-8") as fh:
            return [(r["text"], r["label"]) for r in csv.DictReader(fh)]

    with gzip.open(SHARED / f"us_addresses-{split}.jsonl.gz", "rt", encoding="utf-8") as fh:
        addresses = [(d["text"], d["fields"]) for d in map(json.loads, fh)]
    return {"reuters": csv_rows("reuters_r8"), "rt": csv_rows("rotten_tomatoes"), "addresses": addresses}


# -- PII that passes the checks --------------------------------------------------------------
def luhn_card(rng: random.Random) -> str:
    digits = [4] + [rng.randrange(10) for _ in range(14)]
    total = sum(d if i % 2 else (d * 2 - 9 if d * 2 > 9 else d * 2) for i, d in enumerate(reversed(digits)))
    digits.append((10 - total % 10) % 10)
    s = "".join(map(str, digits))
    return " ".join(s[i:i + 4] for i in range(0, 16, 4))


def german_iban(rng: random.Random) -> str:
    bban = "".join(str(rng.randrange(10)) for _ in range(18))
    check = 98 - int(bban + "131400") % 97
    s = f"DE{check:02d}{bban}"
    return " ".join(s[i:i + 4] for i in range(0, len(s), 4))


def person(rng: random.Random) -> tuple[str, str]:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return f"{first} {last}", f"{first.lower()}.{last.lower()}@{rng.choice(['example.com', 'mail.example.org'])}"


def _pii(spec: Spec, rng: random.Random) -> dict[str, str]:
    name, email = person(rng)
    extra = ""
    if spec.name == "r8_tagger" and rng.random() < 0.25:
        extra = f"\n\nForwarded by {email}, tel. +44 20 7946 {rng.randrange(1000):04d}"
    elif spec.name == "rt_ticket":
        u = rng.random()
        if u < 0.10:
            extra = f", card on file {luhn_card(rng)}"
        elif u < 0.15:
            extra = f", refund to IBAN {german_iban(rng)}"
    return {"name": name, "email": email, "pii": extra}


# -- answers ------------------------------------------------------------------------------------
_OPENERS = ["Thanks so much for your review!", "Thank you for sharing your thoughts.", "We really appreciate this.",
            "Thanks for taking the time to write.", "Great to hear from you!", "We hear you, and thank you."]
_CLOSERS = ["Hope to see you again soon.", "We'll pass this on to the team.", "Enjoy your next film!",
            "Your feedback helps us improve.", "Have a great week.", ""]


def make_answer(spec: Spec, text: str, gold: Any, rng: random.Random) -> str:
    if spec.kind == "classify":
        if rng.random() < 0.01:
            return f"{gold} (the text reads as {gold})" if spec.dataset == "rt" else f"{gold} - see the story"
        return {"upper": gold.upper(), "title": gold.title() + "."}.get(spec.answer_style, gold)
    if spec.kind == "extract":
        body = json.dumps(gold, ensure_ascii=False)
        return f"```json\n{body}\n```" if spec.answer_style == "fenced" and rng.random() < 0.5 else body
    words = text.split()
    if spec.name == "story_summary":
        k = rng.randint(10, 25)
        lead = rng.choice(["", "In short: ", "Summary: ", "The story reports that "])
        return (lead + " ".join(words[:k])).capitalize() + "."
    quote = " ".join(words[: rng.randint(3, 7)]).strip(".,;")
    return f"{rng.choice(_OPENERS)} You mentioned \"{quote}\" - noted. {rng.choice(_CLOSERS)}".strip()


def _tokens(s: str, rng: random.Random) -> int:
    return max(1, math.ceil(len(s) / 4 * rng.uniform(0.9, 1.1)))


def build(n: int, *, split: str = "train", seed: int = 0, specs: Sequence[Spec] = SPECS,
          start: datetime = datetime(2025, 6, 1), days: float = 14.0,
          data: dict[str, list[tuple[str, Any]]] | None = None) -> list[Call]:
    """``n`` calls over ``specs`` (by weight), time-ordered, from the ``split`` of the data sets."""
    rng = random.Random(seed)
    data = data or load_data(split)
    weights = [s.weight for s in specs]
    calls = []
    for i in range(n):
        spec = rng.choices(specs, weights)[0]
        text, gold = rng.choice(data[spec.dataset])
        user = spec.user.format(text=text, **_pii(spec, rng))
        msgs = ([{"role": "system", "content": spec.system}] if spec.system else []) + [{"role": "user", "content": user}]
        answer = make_answer(spec, text, gold, rng)
        tin = _tokens(spec.system + user, rng) + 4 * len(msgs)
        tout = _tokens(answer, rng)
        latency = rng.lognormvariate(math.log(300 + 15 * tout), 0.35)
        ts = start + timedelta(seconds=rng.uniform(0, days * 86400))
        calls.append(Call(f"req-{seed}-{i:07d}", spec.name, spec.kind, msgs, answer, gold, spec.model, tin, tout,
                          round(latency, 1), ts))
    calls.sort(key=lambda c: c.ts)
    return calls


def to_records(calls: Sequence[Call]) -> list[Any]:
    """The calls as :class:`downsize.discover.LogRecord` (what a reader would give), without a file."""
    from downsize.discover import LogRecord

    return [LogRecord(tuple((m["role"], m["content"]) for m in c.messages), c.answer, c.model, c.input_tokens,
                      c.output_tokens, c.latency_ms, c.ts, id=c.id, source=c.id) for c in calls]


# -- writers -------------------------------------------------------------------------------------
def _completion(c: Call) -> dict[str, Any]:
    return {"id": f"chatcmpl-{c.id}", "object": "chat.completion", "created": int(c.ts.timestamp()), "model": c.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": c.answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": c.input_tokens, "completion_tokens": c.output_tokens,
                      "total_tokens": c.input_tokens + c.output_tokens}}


BAD_JSONL = ['{"request": {"model": "gpt-4o", "messages": [', "[1, 2, 3]", "not json at all"]


def _write_lines(path: Path, lines: list[bytes], bad: Sequence[str], rng: random.Random) -> list[int]:
    """Write lines with the ``bad`` ones at random places; returns their 1-based line numbers."""
    at = sorted(rng.sample(range(len(lines) + len(bad)), len(bad)))
    out, bad_iter, k = [], iter(bad), 0
    for pos in range(len(lines) + len(bad)):
        if pos in at:
            out.append(next(bad_iter).encode())
        else:
            out.append(lines[k])
            k += 1
    path.write_bytes(b"\n".join(out) + b"\n")
    return [a + 1 for a in at]


def write_chat_pairs(calls: Sequence[Call], path: Path, rng: random.Random) -> list[int]:
    lines = [orjson.dumps({"id": c.id, "request": {"model": c.model, "messages": c.messages, "temperature": 0},
                           "response": _completion(c), "latency_ms": c.latency_ms,
                           "timestamp": c.ts.isoformat() + "Z"}) for c in calls]
    return _write_lines(path, lines, BAD_JSONL, rng)


def write_batch(calls: Sequence[Call], inp: Path, out: Path, rng: random.Random) -> list[int]:
    lines = [orjson.dumps({"custom_id": c.id, "method": "POST", "url": "/v1/chat/completions",
                           "body": {"model": c.model, "messages": c.messages, "max_tokens": 256}}) for c in calls]
    bad = _write_lines(inp, lines, ['{"custom_id": 17, "body": {}}', '{"method": "POST"'], rng)
    results = [orjson.dumps({"id": f"batch_req_{c.id}", "custom_id": c.id, "response": {
        "status_code": 200, "request_id": f"r-{c.id}", "body": _completion(c)}, "error": None}) for c in calls]
    rng.shuffle(results)  # the Batch API returns results in any order
    failed = ('{"id": "batch_req_x", "custom_id": "req-missing", "response": null, '
              '"error": {"code": "server_error", "message": "try again"}}')
    _write_lines(out, results, [failed, "{oops"], rng)
    return bad


def _spend_row(c: Call, layout: str) -> dict[str, Any]:
    body = {"model": c.model, "messages": c.messages}
    end = c.ts + timedelta(milliseconds=c.latency_ms)
    row = {"request_id": c.id, "call_type": "acompletion", "api_key": "88dc28d0f030c55ed4ab77ed8faf0981",
           "spend": cost(c.model, c.input_tokens, c.output_tokens) or 0.0, "total_tokens": c.input_tokens + c.output_tokens,
           "prompt_tokens": c.input_tokens, "completion_tokens": c.output_tokens, "startTime": c.ts.isoformat() + "Z",
           "endTime": end.isoformat() + "Z", "model": c.model, "model_group": c.model, "custom_llm_provider": "openai",
           "api_base": "https://api.openai.com/v1", "user": "", "cache_hit": "False", "cache_key": "Cache OFF",
           "request_tags": [], "status": "success", "response": _completion(c)}
    if layout == "current":
        row.update(messages={}, proxy_server_request=body, metadata={"user_api_key_alias": "app"})
    else:
        row.update(messages=c.messages, metadata={"user_api_key_alias": "app"})
    return row


def write_litellm_json(calls: Sequence[Call], path: Path) -> None:
    rows = [_spend_row(c, "current") for c in calls]
    rows.insert(len(rows) // 2, {"call_type": "acompletion"})  # no request_id: a bad row
    path.write_bytes(orjson.dumps(rows))


def write_litellm_csv(calls: Sequence[Call], path: Path, rng: random.Random) -> None:
    rows = [_spend_row(c, "older") for c in calls]
    cols = list(rows[0])
    with open(path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        bad_at = rng.randrange(len(rows))
        for i, r in enumerate(rows):
            if i == bad_at:
                w.writerow(["truncated", "row", "x", "y", "z", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10",
                            "11", "12", "13", "14", "15", "16", "17", "18", "19"])
            w.writerow([json.dumps(v) if isinstance(v, (dict, list)) else v for v in (r[c] for c in cols)])


def write_gateway_db(calls: Sequence[Call], url: str) -> None:
    from downsize.audit import AuditRecord
    from downsize.store import Store, text_hash

    rows = []
    for c in calls:
        text = c.messages[-1]["content"]
        rows.append(AuditRecord(
            request_id=c.id, ts=c.ts, task=None, model=c.model, input_hash=text_hash(text), input_text=text,
            answer=c.answer, answered_by="passthrough", reason=f"model {c.model!r} is not a downsize task",
            teacher_input_tokens=c.input_tokens, teacher_output_tokens=c.output_tokens,
            teacher_cost_usd=cost(c.model, c.input_tokens, c.output_tokens) or 0.0, latency_ms=c.latency_ms,
            teacher_latency_ms=c.latency_ms).row())
    with Store(url) as store:
        for i in range(0, len(rows), 5000):
            store.log_requests(rows[i:i + 5000])


_GATEWAY = """\
store: {url}
teachers:
  default: {{base_url: "{teacher}", model: replay, max_concurrency: 16, timeout_s: 30, max_retries: 1}}
server: {{log_passthrough_text: true}}
"""


def drive_gateway(calls: Sequence[Call], url: str, *, workers: int = 8) -> dict[str, str]:
    """Send ``calls`` through a real ``downsize serve`` (uvicorn, the openai SDK) in pass-through mode to
    the replay teacher answering each call's recorded answer; the gateway logs them into the store at
    ``url``. Returns ``{gateway request id: template}`` (from the ``x-request-id`` header)."""
    import tempfile
    from concurrent.futures import ThreadPoolExecutor

    from openai import OpenAI

    from downsize.config import load_config
    from downsize.replay import ReplayServer
    from downsize.server import ServerThread, create_app
    from downsize.server.keys import create_key
    from downsize.store import Store

    records: dict[str, str] = {}
    for c in calls:
        records.setdefault(c.messages[-1]["content"], c.answer)
    truth: dict[str, str] = {}
    with ReplayServer(records) as replay, tempfile.TemporaryDirectory() as tmp:
        cfg_path = Path(tmp) / "gateway.yaml"
        cfg_path.write_text(_GATEWAY.format(url=url, teacher=replay.base_url))
        cfg = load_config(cfg_path)
        with Store(cfg.store_url()) as store:
            key = create_key(store, "app").secret
            with ServerThread(create_app(cfg, store=store)) as gw:
                client = OpenAI(base_url=gw.base_url, api_key=key, max_retries=2)

                def send(c: Call) -> None:
                    r = client.chat.completions.with_raw_response.create(model=c.model, messages=c.messages)
                    truth[r.headers["x-request-id"]] = c.template

                with ThreadPoolExecutor(workers) as pool:
                    list(pool.map(send, calls))
    return truth


def write_all(calls: Sequence[Call], out: Path, formats: Sequence[str] = FORMATS, seed: int = 0) -> dict[str, list[str]]:
    """Write ``calls`` in each format under ``out``; returns ``{format: [paths]}``."""
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths: dict[str, list[str]] = {}
    def chat_pairs() -> list[str]:
        write_chat_pairs(calls, out / "chat_pairs.jsonl", rng)
        return [str(out / "chat_pairs.jsonl")]

    def openai_batch() -> list[str]:
        write_batch(calls, out / "batch_input.jsonl", out / "batch_output.jsonl", rng)
        return [str(out / "batch_input.jsonl"), str(out / "batch_output.jsonl")]

    def litellm() -> list[str]:
        write_litellm_json(calls, out / "spend_logs.json")
        write_litellm_csv(calls, out / "spend_logs.csv", rng)
        return [str(out / "spend_logs.json"), str(out / "spend_logs.csv")]

    def downsize() -> list[str]:
        url = f"sqlite:///{out / 'gateway.db'}"
        write_gateway_db(calls, url)
        return [url]

    writers: dict[str, Callable[[], list[str]]] = {"chat_pairs": chat_pairs, "openai_batch": openai_batch,
                                                   "litellm": litellm, "downsize": downsize}
    for f in formats:
        paths[f] = writers[f]()
    (out / "truth.json").write_bytes(orjson.dumps({c.id: c.template for c in calls}))
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--split", default="train", choices=["train", "test"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--formats", nargs="+", default=list(FORMATS), choices=FORMATS)
    a = ap.parse_args()
    calls = build(a.n, split=a.split, seed=a.seed)
    for fmt, ps in write_all(calls, a.out, a.formats, a.seed).items():
        print(f"{fmt:13s} {' '.join(ps)}")


if __name__ == "__main__":
    main()
