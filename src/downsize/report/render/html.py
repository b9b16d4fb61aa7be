"""The report as one self-contained HTML page.

The HTML has inline CSS, figures as base64 PNG, no JavaScript and no external URL. Key
figures are ``<span class="metric" data-scope data-task data-metric data-value>``, where
``data-metric`` is the dotted path of the figure in the report's JSON (under ``totals`` or
``tasks[<task>]``) and ``data-value`` its exact JSON value, so tests and scrapers can read
the page without parsing formatted text.
"""

from __future__ import annotations

from html import escape
from typing import Any

from ..advice import SHADOW_MIN_LABELLED
from . import plots
from .cards import (
    guarantee_card,
    labels_cards,
    latency_energy_card,
    money_card,
    review_card,
    spot_eval_card,
)
from .format import _img, _Scope, _slug, _table, _tile, ms, num, pct, usd, wh, window_text

__all__ = ["render_html"]

_CSS = """
:root{--ink:#0f172a;--muted:#64748b;--line:#e2e8f0;--bg:#f8fafc;--card:#fff;--accent:#4338ca;
--student:#0f766e;--teacher:#c2410c;--good:#15803d;--bad:#b91c1c;--warn:#b45309}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--ink);font:15px/1.5 system-ui,-apple-system,"Segoe UI",
Roboto,"Helvetica Neue",Arial,sans-serif;font-variant-numeric:tabular-nums}
main{max-width:1180px;margin:0 auto;padding:0 24px 48px}
header.top{background:linear-gradient(120deg,#1e1b4b,#312e81 55%,#0f766e);color:#fff;padding:28px 0 22px;
margin-bottom:24px}
header.top .in{max-width:1180px;margin:0 auto;padding:0 24px}
header.top h1{margin:0;font-size:28px;letter-spacing:-.01em}
header.top p{margin:4px 0 0;color:#c7d2fe;font-size:14px}
h2{font-size:22px;margin:36px 0 10px;letter-spacing:-.01em}
h3{font-size:15px;margin:0 0 10px;color:#334155;text-transform:uppercase;letter-spacing:.04em}
.band{display:grid;grid-template-columns:repeat(auto-fit,minmax(165px,1fr));gap:12px;margin:8px 0 18px}
.tile{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:14px 16px;
box-shadow:0 1px 2px rgba(15,23,42,.04)}
.tile .k{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:var(--muted)}
.tile .big{font-size:26px;font-weight:700;line-height:1.2;margin-top:4px;white-space:nowrap;
overflow:hidden;text-overflow:ellipsis}
.tile .s{font-size:12.5px;color:var(--muted);margin-top:4px}
.tile.good .big{color:var(--good)}.tile.bad .big{color:var(--bad)}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:16px}
.card{background:var(--card);border:1px solid var(--line);border-radius:12px;padding:16px 18px;
box-shadow:0 1px 2px rgba(15,23,42,.04);min-width:0}
figure{margin:0}figure img{max-width:100%;height:auto;display:block;margin:0 auto}
table{border-collapse:collapse;width:100%;font-size:13.5px}
th{text-align:left;font-weight:600;color:#334155;border-bottom:2px solid var(--line);padding:6px 8px}
td{border-bottom:1px solid var(--line);padding:5px 8px;vertical-align:top}
td:not(:first-child){white-space:nowrap}
td:not(:first-child),th:not(:first-child){text-align:right}
table.kv td:first-child{color:#475569}
tbody tr:nth-child(even){background:#f8fafc}
tr.flag td{background:#fef3c7}
.chip{display:inline-block;font-size:11.5px;font-weight:600;padding:2px 9px;border-radius:999px;
background:#e0e7ff;color:#3730a3;vertical-align:middle;margin-left:6px;letter-spacing:.02em}
.chip.shadow{background:#f1f5f9;color:#475569}
.sev{display:inline-block;min-width:64px;text-align:center;font-size:11px;font-weight:700;
text-transform:uppercase;padding:2px 8px;border-radius:6px;margin-right:10px}
.sev.action{background:#fee2e2;color:var(--bad)}.sev.warning{background:#fef3c7;color:var(--warn)}
.sev.info{background:#e0f2fe;color:#0369a1}
ul.steps{list-style:none;padding:0;margin:0}
ul.steps li{padding:10px 0;border-bottom:1px solid var(--line)}ul.steps li:last-child{border:0}
ul.steps .d{color:#475569;font-size:13.5px;margin:2px 0 0 78px}
code{background:#f1f5f9;border-radius:4px;padding:1px 5px;font-size:12.5px}
.note{color:var(--muted);font-size:12.5px}
.label{font-size:11px;color:#475569;background:#f1f5f9;border-radius:4px;padding:1px 6px;white-space:nowrap}
.guarantee{font-size:15px;margin:0 0 10px;padding:10px 12px;border-left:4px solid var(--student);
background:#f0fdfa;border-radius:6px}
.empty{text-align:center;padding:64px 24px}.empty .big{font-size:34px;font-weight:700;margin:0}
nav.tasks{margin:0 0 8px;font-size:14px}nav.tasks a{margin-right:14px;color:var(--accent)}
details summary{cursor:pointer;color:var(--accent);font-size:13px;margin-top:8px}
footer{margin-top:40px;color:var(--muted);font-size:12.5px;border-top:1px solid var(--line);padding-top:14px}
footer dt{font-weight:600;color:#334155;margin-top:6px}footer dd{margin:0 0 0 16px}
"""


def _steps_html(steps: list[dict[str, Any]]) -> str:
    if not steps:
        return '<p class="note">Nothing needs doing: no rule fired.</p>'
    items = []
    for s in steps:
        cmd = f" <code>{escape(s['command'])}</code>" if s.get("command") else ""
        items.append(
            f'<li data-kind="{escape(s["kind"])}" data-task="{escape(s["task"] or "")}">'
            f'<span class="sev {s["severity"]}">{s["severity"]}</span><strong>{escape(s["title"])}</strong>'
            f'<div class="d">{escape(s["detail"])}{cmd}</div></li>'
        )
    return '<ul class="steps">' + "".join(items) + "</ul>"


def _totals_band(r: dict[str, Any]) -> str:
    t = _Scope(r["totals"], None)
    tot = r["totals"]
    saved_cls = "good" if (tot["savings_usd"] or 0) >= 0 else "bad"
    return (
        '<section class="band" id="totals">'
        + "".join(
            [
                _tile(
                    "Requests",
                    t.m("requests"),
                    f"{t.m('teacher_calls_avoided')} teacher calls avoided"
                    + (
                        f" · {t.m('passthrough_requests')} pass-through"
                        if tot["passthrough_requests"]
                        else ""
                    )
                    + (
                        f" · {num(tot['rejected_requests'])} refused or for no task (errors)"
                        if tot.get("rejected_requests")
                        else ""
                    ),
                ),
                _tile(
                    "Answered locally",
                    t.m("local_share", pct),
                    f"{t.m('student_answered')} by the student",
                ),
                _tile(
                    "Saved",
                    t.m("savings_usd", usd),
                    f"{t.m('savings_pct', pct)} of the teacher-only cost",
                    saved_cls,
                ),
                _tile(
                    "Spent vs teacher-only",
                    t.m("spent_usd", usd),
                    f"instead of {t.m('teacher_only_usd', usd)}",
                ),
                _tile(
                    "$ per 1k requests",
                    t.m("cost_per_1k_requests.cascade", usd),
                    f"teacher-only {t.m('cost_per_1k_requests.teacher_only', usd)}",
                ),
                _tile(
                    "Wh per 1k requests",
                    t.m("energy_per_1k_requests.cascade", wh),
                    f"teacher-only {t.m('energy_per_1k_requests.teacher_only', wh)}<br>"
                    f'<span class="label">measured + estimated</span>',
                ),
            ]
        )
        + "</section>"
    )


def _shadow_band(name: str, t: dict[str, Any]) -> str:
    m = _Scope(t, name).m
    tiles = [
        _tile("Answered by the teacher", m("answered"), "shadow mode: the student does not answer"),
        _tile(
            "Labelled texts",
            m("labelled_examples.total"),
            f"{SHADOW_MIN_LABELLED} are enough to train",
        ),
        _tile(
            "Spent",
            m("cost.spent_usd", usd),
            f"{m('cost.per_1k_requests.cascade', usd)} per 1k requests",
        ),
        _tile(
            "Latency p50", m("latency_ms.cascade.p50", ms), f"p95 {m('latency_ms.cascade.p95', ms)}"
        ),
        _tile(
            "Wh per 1k requests",
            m("energy.per_1k_requests.cascade", wh),
            '<span class="label">estimated</span>',
        ),
    ]
    if t["confusion"]["n"]:
        tiles.append(
            _tile(
                "Student would agree",
                m("confusion.agreement", pct),
                f"with the teacher on {m('confusion.n')} requests",
            )
        )
    return '<div class="band">' + "".join(tiles) + "</div>"


def _task_band(name: str, t: dict[str, Any]) -> str:
    if t["mode"] == "shadow":
        return _shadow_band(name, t)
    m = _Scope(t, name).m
    sc = t["spot_checks"]
    tiles = [
        _tile(
            "Answered locally",
            m("local_share", pct),
            f"{m('student_answered')} of {m('answered')} · escalated {m('escalation_rate', pct)}",
        ),
        _tile(
            "Saved",
            m("cost.savings_usd", usd),
            f"{m('cost.savings_pct', pct)} vs teacher-only",
            "good" if (t["cost"]["savings_usd"] or 0) >= 0 else "bad",
        ),
        _tile(
            "$ per 1k requests",
            m("cost.per_1k_requests.cascade", usd),
            f"teacher-only {m('cost.per_1k_requests.teacher_only', usd)}",
        ),
        _tile(
            "Latency p50",
            m("latency_ms.cascade.p50", ms),
            f"p95 {m('latency_ms.cascade.p95', ms)} · teacher alone p50 {m('latency_ms.teacher_only.p50', ms)}",
        ),
        _tile(
            "Wh per 1k requests",
            m("energy.per_1k_requests.cascade", wh),
            f"teacher-only {m('energy.per_1k_requests.teacher_only', wh)}",
        ),
        _tile(
            "Spot-check agreement",
            m("spot_checks.rate", pct),
            (
                f"{pct(sc['confidence'], 0)} CI {m('spot_checks.lo', pct)}–{m('spot_checks.hi', pct)} · "
                f"n = {m('spot_checks.n')}"
            )
            if sc["n"]
            else "no spot checks yet",
            ""
            if not sc["n"] or t["alpha"] is None
            else (
                "good" if sc["lo"] >= 1 - t["alpha"] else "bad" if sc["hi"] < 1 - t["alpha"] else ""
            ),
        ),
    ]
    return '<div class="band">' + "".join(tiles) + "</div>"


def _task_html(name: str, t: dict[str, Any]) -> str:
    mode = t["mode"]
    sv = t["student"]
    sub = (
        f' <span class="note">student v{sv["version"]} ({escape(sv["kind"])})</span>' if sv else ""
    )
    head = (
        f'<section class="task" id="task-{_slug(name)}" data-task="{escape(name)}">'
        f'<h2>{escape(name)}<span class="chip {mode}">{escape(mode)}</span>{sub}</h2>'
    )
    if not t["requests"] and not t["spot_checks"]["n"]:
        return head + (
            '<p class="note">No requests for this task in this window.</p>'
            + (f'<div class="grid">{guarantee_card(name, t)}</div>' if t["calibration"] else "")
            + "</section>"
        )
    figs = [
        _img(plots.coverage_accuracy_png(t["calibration"], t["eval"]), "coverage vs accuracy"),
        _img(plots.cost_energy_png(t), "cost and energy per 1k requests"),
        _img(plots.latency_png(t["latency_ms"]), "latency distributions"),
        _img(plots.timeline_png(t["timeline"]), "escalation rate and savings over time"),
    ]
    fig_cards = "".join(f'<div class="card">{f}</div>' for f in figs if f)
    return (
        head
        + _task_band(name, t)
        + f'<div class="grid">{money_card(name, t)}{guarantee_card(name, t)}</div>'
        + f'<div class="grid" style="margin-top:16px">{fig_cards}</div>'
        + f'<div class="grid" style="margin-top:16px">{latency_energy_card(name, t)}{spot_eval_card(name, t)}</div>'
        + (
            f'<div class="grid" style="margin-top:16px">{labels_cards(name, t)}</div>'
            if t["confusion"]["n"] or t["label_escalation"]
            else ""
        )
        + (
            f'<div class="grid" style="margin-top:16px">{review_card(name, t)}</div>'
            if t.get("review") is not None
            else ""
        )
        + "</section>"
    )


def _passthrough_html(p: dict[str, Any] | None) -> str:
    if not p:
        return ""
    models = _table(
        ["model", "requests"], [[escape(x["model"]), num(x["requests"])] for x in p["models"]]
    )
    by = ", ".join(f"{escape(k)} {num(v)}" for k, v in p["by_answered_by"].items())
    return (
        '<section id="passthrough"><h2>Pass-through traffic</h2><div class="grid"><div class="card">'
        f"<p>{num(p['requests'])} requests for models that are not downsize tasks ({by}); "
        f"spent {escape(usd(p['spent_usd']))}; latency p50 {escape(ms(p['latency_ms']['p50']))}, "
        f"p95 {escape(ms(p['latency_ms']['p95']))}.</p>"
        f"{models}</div></div></section>"
    )


def _footer(r: dict[str, Any]) -> str:
    a = r["assumptions"]
    vals = a["teacher_wh_per_1k_tokens"]
    wh1k = (
        (
            f"{next(iter(vals.values())):g}"
            if len(set(vals.values())) == 1
            else ", ".join(f"{escape(k)}: {v:g}" for k, v in vals.items())
        )
        if vals
        else "—"
    )
    return (
        "<footer><dl>"
        "<dt>Answered locally</dt><dd>student answers ÷ answered requests; student_fallback (teacher failed, "
        "below-threshold student answer returned) is not counted as local.</dd>"
        "<dt>Escalation rate</dt><dd>(teacher + student_fallback) ÷ (student + teacher + student_fallback).</dd>"
        "<dt>Spent / teacher-only</dt><dd>Σ teacher cost actually paid (requests and spot checks) vs Σ what the "
        "teacher would have cost for the same requests.</dd>"
        f'<dt>Energy</dt><dd><span class="label">measured (CPU time × W/core)</span> student CPU time at '
        f'{a["cpu_watts_per_core"]:g} W per core; <span class="label">estimated (tokens × Wh/1k tokens)</span> '
        f"teacher tokens at {wh1k} Wh per 1k tokens, from published per-query estimates for GPT-4o-class "
        "models (~0.3 Wh per query): an order of magnitude, not a measurement.</dd>"
        f"<dt>Intervals</dt><dd>Clopper–Pearson, {pct(a['spot_check_confidence'], 0)} two-sided.</dd>"
        f"</dl><p>Generated {escape((r['generated_at'] or '').replace('T', ' '))} UTC by downsize · "
        f"schema {escape(r['schema'])}</p></footer>"
    )


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page (inline CSS, base64 PNG figures, no scripts, no external URLs)."""
    r = report
    head = (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<meta name="color-scheme" content="light"><link rel="icon" href="data:,">'
        f"<title>downsize report</title><style>{_CSS}</style></head><body>"
        f'<header class="top"><div class="in"><h1>downsize report</h1><p>{escape(window_text(r))}</p>'
        "</div></header><main>"
    )
    if r["empty"]:
        w = r["window"]
        before = (
            f" ({num(w['requests_before_window'])} requests were recorded before this window.)"
            if w["requests_before_window"]
            else ""
        )
        body = (
            '<section class="card empty" id="empty" data-empty="true"><p class="big">Nothing recorded yet</p>'
            f"<p>No request has been logged {'in this window' if w['start'] else 'so far'}.{escape(before)} "
            "Send traffic through <code>downsize serve</code> or run <code>downsize predict</code>; "
            "the report fills in from the audit log.</p></section>"
        )
        if r["next_steps"]:
            body += (
                '<h2>What to do next</h2><div class="card" id="next-steps">'
                + _steps_html(r["next_steps"])
                + "</div>"
            )
        return head + body + _footer(r) + "</main></body></html>"
    nav = " ".join(f'<a href="#task-{_slug(n)}">{escape(n)}</a>' for n in r["tasks"])
    body = (
        _totals_band(r)
        + '<h2>What to do next</h2><div class="card" id="next-steps">'
        + _steps_html(r["next_steps"])
        + "</div>"
        + (f'<h2>Tasks</h2><nav class="tasks">{nav}</nav>' if len(r["tasks"]) > 1 else "")
        + "".join(_task_html(n, t) for n, t in r["tasks"].items())
        + _passthrough_html(r["passthrough"])
    )
    return head + body + _footer(r) + "</main></body></html>"
