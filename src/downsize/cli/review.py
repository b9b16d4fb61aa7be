"""Human review: ``downsize review TASK`` (the queue in the terminal), ``review add``, ``review fill``,
``review export`` and ``review import``.

The terminal takes the page's keys: number keys pick a label (toggle, then Enter, for a list of
labels), ``a`` accepts the teacher, ``s`` the student, ``e`` asks for the answer as a line of
JSON (or a bare label), ``k`` skips, ``u`` undoes, ``q`` quits. Keys are read one at a time from a
terminal, and as characters from a pipe (``printf '1as' | downsize review news``).
"""

from __future__ import annotations

import getpass
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from rich.panel import Panel
from rich.text import Text
from typer.core import TyperGroup

from ..errors import AnswerError
from ._common import ConfigOpt, _errors, app, console

_SHOW_CHARS = 2000


class _TaskFirst(TyperGroup):
    """``downsize review TASK`` is ``downsize review work TASK``."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["work", *args]
        return super().resolve_command(ctx, args)


review_app = typer.Typer(cls=_TaskFirst, no_args_is_help=True,
                         help="Human review: a queue of the answers that matter; answers become human labels.")
app.add_typer(review_app, name="review")


def _open(config: Path) -> tuple[Any, Any]:
    from ..config import load_config
    from ..store import Store

    cfg = load_config(config)
    return cfg, Store(cfg.store_url())


def _keys() -> Iterator[str]:
    """Single keys: from the terminal without Enter, or characters from a pipe ('enter' for a newline)."""
    tty = sys.stdin.isatty()
    while True:
        ch = click.getchar() if tty else sys.stdin.read(1)
        if ch == "":
            return
        if ch in "\r\n":
            yield "enter"
        elif ch in ("\x1b", "\x03", "\x04"):  # Esc, Ctrl-C, Ctrl-D
            return
        elif not ch.isspace():
            yield ch


def _read_line(prompt: str) -> str:
    if sys.stdin.isatty():
        return console.input(prompt)
    line = sys.stdin.readline()  # the rest of the line after `e`, or else the next line
    return (line if line.strip() else sys.stdin.readline()).strip()


def _show(item: dict[str, Any], stats: dict[str, Any], draft: set[str]) -> None:
    head = Text(f"#{item['id']}  ", style="bold")
    head.append(" · ".join(r["label"] + (f" ({r['detail']})" if r["detail"] else "") for r in item["reasons"]),
                style="magenta")
    body = Text(item["text"][:_SHOW_CHARS])  # Text: never read as markup
    if item["chars"] > _SHOW_CHARS:
        body.append(f"\n… ({item['chars'] - _SHOW_CHARS:,} more characters)", style="dim")
    console.print(Panel(body, title=head, title_align="left",
                        subtitle=f"{stats['open']:,} open · {stats['reviewed']:,} reviewed", subtitle_align="right"))
    line = Text()
    for key, who in (("s", "student"), ("a", "teacher")):
        a = item[who]
        line.append(f"[{key}] {who}: ", style="bold")
        line.append(a["shown"] if a else "—")
        if a and a.get("confidence") is not None:
            line.append(f" ({a['confidence']:.3f})", style="dim")
        line.append("    ")
    console.print(line)
    ch = item["choices"]
    if ch["options"]:
        opts = Text()
        for i, o in enumerate(ch["options"][:10]):
            opts.append(f"[{(i + 1) % 10}] ", style="bold")
            opts.append(o + ("*" if o in draft else "") + "  ")
        console.print(opts)
    others = [r for r in item["reviews"] if not r["undone"] and r["action"] != "skip"]
    if others:
        who = "; ".join(f"{r['reviewer_name']}: {r['shown']}" for r in others)
        console.print(Text(("conflict: " if item["conflict"] else "reviewed: ") + who, style="yellow"))
    hint = "Enter saves the selection · " if ch["mode"] == "multi" else ""
    console.print(Text(f"{hint}e edit · k skip · u undo · q quit", style="dim"))


def run_terminal(queue: Any, task: str, reviewer: str, keys: Iterator[str],
                 read_line: Callable[[str], str]) -> int:
    """Work the queue until it is empty (and no undo follows) or the keys end; returns actions done."""
    done, t0 = 0, time.monotonic()
    item = queue.next_item(task, reviewer)
    draft: set[str] = set()
    shown = None
    while True:
        if item is None:
            if shown != "empty":
                console.print("nothing left to review in this task (u undoes your last action, q quits)")
                shown = "empty"
        elif shown != item["id"]:
            _show(item, queue.stats(task, reviewer), draft)
            shown = item["id"]
        k = next(keys, "q")
        if k == "q":
            break
        try:
            if k == "u":
                back = queue.undo(task, reviewer)
                console.print("nothing to undo" if back is None else f"undone: item #{back} is back")
                item, draft, shown = (queue.item(back) if back is not None else item), set(), None
                done += back is not None
                continue
            if item is None:
                continue
            ch = item["choices"]
            result = None
            if k.isdigit() and ch["mode"] != "none":
                i = (int(k) - 1) % 10
                if i >= len(ch["options"]):
                    continue
                if ch["mode"] == "single":
                    result = queue.answer(item["id"], reviewer, how="pick", value={ch["key"]: ch["options"][i]})
                else:
                    draft ^= {ch["options"][i]}
                    shown = None
                    continue
            elif k == "enter" and ch["mode"] == "multi":
                result = queue.answer(item["id"], reviewer, how="pick", value={ch["key"]: sorted(draft)})
            elif k in ("a", "s"):
                result = queue.answer(item["id"], reviewer, how="teacher" if k == "a" else "student")
            elif k == "e":
                raw = read_line("answer (JSON, or a bare label)> ")
                result = queue.answer(item["id"], reviewer, how="edit", value=_parse(raw))
            elif k == "k":
                queue.skip(item["id"], reviewer)
                console.print(f"skipped #{item['id']}")
            else:
                continue
        except AnswerError as exc:
            console.print(Text(f"not saved: {exc}", style="red"))
            continue
        done += 1
        if result is not None:
            rate = done * 60 / max(time.monotonic() - t0, 1e-9)
            msg = Text(f"saved {result['shown']!r} as a human label ({done} done, {rate:.1f}/min)", style="green")
            if result["conflict"]:
                msg.append("; conflict: " + ", ".join(f"{c['reviewer_name']} said {c['shown']}"
                                                      for c in result["conflict"]), style="yellow")
            console.print(msg)
        item, draft = queue.next_item(task, reviewer), set()
    return done


def _parse(raw: str) -> Any:
    import json

    try:
        return json.loads(raw)
    except ValueError:
        return raw.strip()


@review_app.command("work")
@_errors
def work(
    task: Annotated[str, typer.Argument(help="Task name from downsize.yaml.")],
    reviewer: Annotated[str | None, typer.Option(help="Who is reviewing (default: cli:<login name>).")] = None,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Work TASK's review queue in the terminal (`downsize review TASK`)."""
    from ..review import ReviewQueue, fill_queue

    cfg, store = _open(config)
    with store:
        queue = ReviewQueue(store, cfg)
        queue.task(task)  # a deleted task: the error says its items are kept
        got = fill_queue(store, cfg, task)
        if got.new_items:
            console.print(f"{got.new_items} new item(s) from the audit log")
        who = reviewer or f"cli:{getpass.getuser()}"
        n = run_terminal(queue, task, who, _keys(), _read_line)
    console.print(f"{n} action(s) by {who}")


@review_app.command("add")
@_errors
def add(
    task: Annotated[str, typer.Argument()],
    data: Annotated[Path, typer.Argument(help="CSV, TSV, JSONL or Parquet file of texts to review.")],
    text_col: Annotated[str | None, typer.Option(help="Column with the text (default: the task's text_field).")] = None,
    priority: Annotated[float, typer.Option(help="Queue priority (sample 90, disagreement 80, user 75...).")] = 75.0,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Push rows of a file into TASK's review queue."""
    from ..data import read_texts
    from ..review import add_texts

    cfg, store = _open(config)
    rows = read_texts(data, text_col or cfg.task(task).text_field)
    with store:
        got = add_texts(store, cfg, task, rows.texts, source=data.name, rows=rows.rows, priority=priority)
    console.print(f"queued {got.new_items} new text(s) for review in {task} "
                  f"({len(rows.texts) - got.new_items} already queued)")


@review_app.command("fill")
@_errors
def fill(task: Annotated[str, typer.Argument()], config: ConfigOpt = Path("downsize.yaml")) -> None:
    """Read the audit rows written since the last fill into TASK's queue, and show the queue."""
    from ..review import ReviewQueue, fill_queue

    cfg, store = _open(config)
    with store:
        got = fill_queue(store, cfg, task)
        st = ReviewQueue(store, cfg).stats(task)
    by = ", ".join(f"{k} {v}" for k, v in sorted(got.by_reason.items())) or "nothing new"
    console.print(f"{task}: {got.new_items} new item(s) ({by}); {st['open']:,} open, {st['reviewed']:,} reviewed, "
                  f"{st['conflicts']} conflict(s)" + (f"; {got.no_text} row(s) logged without text" if got.no_text else ""))


@review_app.command("export")
@_errors
def export(
    task: Annotated[str, typer.Argument()],
    output: Annotated[Path, typer.Argument(help="OUT.jsonl")],
    include_reviewed: Annotated[bool, typer.Option("--all", help="Reviewed items too.")] = False,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Write TASK's open review items as JSONL: fill in `answer`, then `downsize review import`."""
    from ..review import export_queue, fill_queue

    cfg, store = _open(config)
    with store:
        fill_queue(store, cfg, task)
        n = export_queue(store, cfg, task, output, include_reviewed=include_reviewed)
    console.print(f"wrote {n:,} item(s) to {output}")


@review_app.command("import")
@_errors
def import_(
    data: Annotated[Path, typer.Argument(help="JSONL from `review export` with `answer` filled in.")],
    reviewer: Annotated[str | None, typer.Option(help="Who answered, for lines without a reviewer.")] = None,
    config: ConfigOpt = Path("downsize.yaml"),
) -> None:
    """Record the answers of a JSONL file as reviews (checked against each task first)."""
    from ..review import import_reviews

    cfg, store = _open(config)
    with store:
        got = import_reviews(store, cfg, data, reviewer=reviewer or f"import:{data.name}")
    console.print(f"imported {got.answered} answer(s) from {data} ({got.blank} line(s) without an answer"
                  + (f"; {len(got.conflicts)} item(s) where reviewers now disagree" if got.conflicts else "") + ")")
