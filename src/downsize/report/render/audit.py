"""``downsize audit --html``: the call sites of logged traffic as a section, or a page of its own.

The input is :meth:`downsize.discover.Discovery.to_dict` plus ``rows``
(:meth:`~downsize.discover.Discovery.rows`); like the report, the page has inline CSS, no script
and no external URL, and each key figure is a ``<span class="metric">`` with its exact value in
``data-value`` (``data-scope="audit"``, ``data-task`` the template id).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from .format import _table, num, pct, usd
from .html import _CSS

__all__ = ["audit_page", "audit_section"]


def _m(template: int, metric: str, value: Any, shown: str) -> str:
    return (f'<span class="metric" data-scope="audit" data-task="{template}" data-metric="{escape(metric)}" '
            f"data-value='{escape(json.dumps(value), quote=True)}'>{escape(shown)}</span>")


def _row(r: dict[str, Any]) -> list[str]:
    t = r["template"]
    share = "–"
    if r["local_share"] is not None:
        lo, hi = r["local_interval"]
        share = _m(t, "local_share", r["local_share"], f"{pct(r['local_share'], 0)} ({pct(lo, 0)}–{pct(hi, 0)})")
    private = "yes: " + ", ".join(r["pii_kinds"]) if r["private"] else "no"
    return [
        str(t), f"<code>{escape(r['pattern'])}</code>", _m(t, "requests", r["requests"], num(r["requests"])),
        num(r["tokens"]), _m(t, "cost_month_now", r["cost_month_now"], usd(r["cost_month_now"])),
        _m(t, "cost_month_cascade", r["cost_month_cascade"], usd(r["cost_month_cascade"])),
        "–" if r["latency_p50_ms"] is None else f"{r['latency_p50_ms']:,.0f} ms",
        _m(t, "verdict", r["verdict"], r["verdict"]) + f'<div class="s">{escape(r["reason"])}</div>',
        _m(t, "private", r["private"], private), share, escape(r["recommendation"]),
    ]


def audit_section(summary: dict[str, Any]) -> str:
    """The ranked call sites as one ``<section>`` (for a page, or the report)."""
    rows = summary.get("rows", [])
    files = "".join(f"<li><code>{escape(f['path'])}</code> ({escape(f['format'])}): {num(f['records'])} records, "
                    f"{num(f['bad'])} bad" + (" (" + escape("; ".join(f"line {n}: {why}" for n, why in f["bad_lines"][:5]))
                                              + ")" if f["bad_lines"] else "") + "</li>"
                    for f in summary.get("read", []))
    table = _table(["#", "template", "requests", "tokens", "$/month now", "$/month cascade", "p50 latency",
                    "verdict", "private", "local (certified)", "recommendation"], [_row(r) for r in rows])
    notes = "".join(f"<li>{escape(n)}</li>" for n in summary.get("notes", []))
    return (f'<section class="card" id="audit"><h2>Call sites in the logged traffic</h2>'
            f"<p>Best savings first. Prices as of {escape(str(summary.get('price_date', '')))}; the local share "
            "is certified on the logged pairs (disagreement with the logged answers ≤ α on what the student "
            "answers, with probability ≥ 1 − δ, if future traffic is like the logged traffic).</p>"
            f"{table}<h3>Logs read</h3><ul>{files}</ul>" + (f"<ul>{notes}</ul>" if notes else "") + "</section>")


def audit_page(summary: dict[str, Any]) -> str:
    """A self-contained HTML page with :func:`audit_section`."""
    return ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1"><link rel="icon" href="data:,">'
            f"<title>downsize audit</title><style>{_CSS}</style></head><body>"
            '<header class="top"><div class="in"><h1>downsize audit</h1>'
            "<p>which LLM calls do not need the large model, and what it would save</p></div></header><main>"
            + audit_section(summary) + "</main></body></html>")
