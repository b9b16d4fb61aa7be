"""Number and window formatting shared by the HTML and text reports, and small HTML builders."""

from __future__ import annotations

import json
import re
from html import escape
from typing import Any

__all__ = ["ms", "num", "pct", "usd", "wh", "window_text"]


def pct(x: float | None, d: int = 1) -> str:
    return "—" if x is None else f"{100 * x:.{d}f} %"


def usd(x: float | None) -> str:
    if x is None:
        return "—"
    sign = "−" if x < 0 else ""
    a = abs(x)
    body = f"{a:,.0f}" if a >= 1000 else f"{a:,.2f}" if a >= 1 or a == 0 else f"{a:.4f}"
    return f"{sign}${body}"


def ms(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:.1f} ms" if x < 10 else f"{x:,.0f} ms" if x < 1000 else f"{x / 1000:,.2f} s"


def wh(x: float | None) -> str:
    if x is None:
        return "—"
    if x >= 1000:
        return f"{x / 1000:,.2f} kWh"
    return f"{x:,.2f} Wh" if x >= 1 or x == 0 else f"{x * 1000:,.2f} mWh"


def num(x: float | None) -> str:
    return "—" if x is None else f"{x:,}" if isinstance(x, int) else f"{x:,.3g}"


def window_text(r: dict[str, Any]) -> str:
    w = r["window"]
    end = w["end"].replace("T", " ")
    if w["start"]:
        return f"Last {_duration(w['since_seconds'])}: {w['start'].replace('T', ' ')} → {end} UTC"
    if w["first_ts"]:
        return f"All traffic up to {end} UTC (first request {w['first_ts'].replace('T', ' ')})"
    return f"All traffic up to {end} UTC"


def _duration(seconds: float) -> str:
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", name)


def _get(d: dict[str, Any] | None, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)
    return d


class _Scope:
    """Writes metric spans for the totals or one task."""

    def __init__(self, data: dict[str, Any], task: str | None) -> None:
        self.data, self.task = data, task

    def m(self, path: str, fmt: Any = None, text: str | None = None) -> str:
        value = _get(self.data, path)
        shown = text if text is not None else (fmt(value) if fmt else num(value))
        slug = "totals" if self.task is None else "t-" + _slug(self.task)
        scope = (
            'data-scope="totals"'
            if self.task is None
            else f'data-scope="task" data-task="{escape(self.task)}"'
        )
        return (
            f'<span class="metric" id="m-{slug}-{path.replace(".", "-")}" {scope} '
            f'data-metric="{escape(path)}" data-value="{escape(json.dumps(value))}">{escape(shown)}</span>'
        )


def _img(b64: str | None, alt: str) -> str:
    if not b64:
        return ""
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{b64}"></figure>'


def _tile(label: str, value: str, sub: str = "", cls: str = "") -> str:
    return (
        f'<div class="tile {cls}"><div class="k">{escape(label)}</div><div class="big">{value}</div>'
        f'<div class="s">{sub}</div></div>'
    )


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'
