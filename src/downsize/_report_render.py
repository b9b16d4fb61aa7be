"""Presenting a built report: one self-contained HTML page, and plain text for the terminal.

The HTML has inline CSS, figures as base64 PNG, no JavaScript and no external URL. Key
figures are ``<span class="metric" data-scope data-task data-metric data-value>``, where
``data-metric`` is the dotted path of the figure in the report's JSON (under ``totals`` or
``tasks[<task>]``) and ``data-value`` its exact JSON value, so tests and scrapers can read
the page without parsing formatted text.
"""

from __future__ import annotations

import json
import re
import textwrap
from html import escape
from typing import Any

from . import _report_plots as plots

__all__ = ["render_html", "render_text"]


# ---------------------------------------------------------------------------------
# formatting
# ---------------------------------------------------------------------------------
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


def num(x: int | float | None) -> str:
    return "—" if x is None else f"{x:,}" if isinstance(x, int) else f"{x:,.3g}"


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
        scope = 'data-scope="totals"' if self.task is None else f'data-scope="task" data-task="{escape(self.task)}"'
        return (f'<span class="metric" id="m-{slug}-{path.replace(".", "-")}" {scope} '
                f'data-metric="{escape(path)}" data-value="{escape(json.dumps(value))}">{escape(shown)}</span>')


def _img(b64: str | None, alt: str) -> str:
    if not b64:
        return ""
    return f'<figure><img alt="{escape(alt)}" src="data:image/png;base64,{b64}"></figure>'


def _tile(label: str, value: str, sub: str = "", cls: str = "") -> str:
    return (f'<div class="tile {cls}"><div class="k">{escape(label)}</div><div class="big">{value}</div>'
            f'<div class="s">{sub}</div></div>')


def _table(head: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


# ---------------------------------------------------------------------------------
# HTML
# ---------------------------------------------------------------------------------
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


def _window_text(r: dict[str, Any]) -> str:
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


def _steps_html(steps: list[dict[str, Any]]) -> str:
    if not steps:
        return '<p class="note">Nothing needs doing: no rule fired.</p>'
    items = []
    for s in steps:
        cmd = f' <code>{escape(s["command"])}</code>' if s.get("command") else ""
        items.append(f'<li data-kind="{escape(s["kind"])}" data-task="{escape(s["task"] or "")}">'
                     f'<span class="sev {s["severity"]}">{s["severity"]}</span><strong>{escape(s["title"])}</strong>'
                     f'<div class="d">{escape(s["detail"])}{cmd}</div></li>')
    return '<ul class="steps">' + "".join(items) + "</ul>"


def _totals_band(r: dict[str, Any]) -> str:
    t = _Scope(r["totals"], None)
    tot = r["totals"]
    saved_cls = "good" if (tot["savings_usd"] or 0) >= 0 else "bad"
    return '<section class="band" id="totals">' + "".join([
        _tile("Requests", t.m("requests"),
              f'{t.m("teacher_calls_avoided")} teacher calls avoided'
              + (f' · {t.m("passthrough_requests")} pass-through' if tot["passthrough_requests"] else "")),
        _tile("Answered locally", t.m("local_share", pct), f'{t.m("student_answered")} by the student'),
        _tile("Saved", t.m("savings_usd", usd), f'{t.m("savings_pct", pct)} of the teacher-only cost', saved_cls),
        _tile("Spent vs teacher-only", t.m("spent_usd", usd), f'instead of {t.m("teacher_only_usd", usd)}'),
        _tile("$ per 1k requests", t.m("cost_per_1k_requests.cascade", usd),
              f'teacher-only {t.m("cost_per_1k_requests.teacher_only", usd)}'),
        _tile("Wh per 1k requests", t.m("energy_per_1k_requests.cascade", wh),
              f'teacher-only {t.m("energy_per_1k_requests.teacher_only", wh)}<br>'
              f'<span class="label">measured + estimated</span>'),
    ]) + "</section>"


def _shadow_band(name: str, t: dict[str, Any]) -> str:
    from ._report_advice import SHADOW_MIN_LABELLED

    m = _Scope(t, name).m
    tiles = [
        _tile("Answered by the teacher", m("answered"), "shadow mode: the student does not answer"),
        _tile("Labelled texts", m("labelled_examples.total"), f"{SHADOW_MIN_LABELLED} are enough to train"),
        _tile("Spent", m("cost.spent_usd", usd), f'{m("cost.per_1k_requests.cascade", usd)} per 1k requests'),
        _tile("Latency p50", m("latency_ms.cascade.p50", ms), f'p95 {m("latency_ms.cascade.p95", ms)}'),
        _tile("Wh per 1k requests", m("energy.per_1k_requests.cascade", wh), '<span class="label">estimated</span>'),
    ]
    if t["confusion"]["n"]:
        tiles.append(_tile("Student would agree", m("confusion.agreement", pct),
                           f'with the teacher on {m("confusion.n")} requests'))
    return '<div class="band">' + "".join(tiles) + "</div>"


def _task_band(name: str, t: dict[str, Any]) -> str:
    if t["mode"] == "shadow":
        return _shadow_band(name, t)
    m = _Scope(t, name).m
    sc = t["spot_checks"]
    lat = t["latency_ms"]
    tiles = [
        _tile("Answered locally", m("local_share", pct),
              f'{m("student_answered")} of {m("answered")} · escalated {m("escalation_rate", pct)}'),
        _tile("Saved", m("cost.savings_usd", usd), f'{m("cost.savings_pct", pct)} vs teacher-only',
              "good" if (t["cost"]["savings_usd"] or 0) >= 0 else "bad"),
        _tile("$ per 1k requests", m("cost.per_1k_requests.cascade", usd),
              f'teacher-only {m("cost.per_1k_requests.teacher_only", usd)}'),
        _tile("Latency p50", m("latency_ms.cascade.p50", ms),
              f'p95 {m("latency_ms.cascade.p95", ms)} · teacher alone p50 {m("latency_ms.teacher_only.p50", ms)}'),
        _tile("Wh per 1k requests", m("energy.per_1k_requests.cascade", wh),
              f'teacher-only {m("energy.per_1k_requests.teacher_only", wh)}'),
        _tile("Spot-check agreement", m("spot_checks.rate", pct),
              (f'{pct(sc["confidence"], 0)} CI {m("spot_checks.lo", pct)}–{m("spot_checks.hi", pct)} · '
               f'n = {m("spot_checks.n")}') if sc["n"] else "no spot checks yet",
              "" if not sc["n"] or t["alpha"] is None else ("good" if sc["lo"] >= 1 - t["alpha"] else
                                                             "bad" if sc["hi"] < 1 - t["alpha"] else "")),
    ]
    return '<div class="band">' + "".join(tiles) + "</div>"


def _guarantee_html(name: str, t: dict[str, Any]) -> str:
    cal = t["calibration"]
    m = _Scope(t, name).m
    if cal is None:
        if t["student"] is None:
            return ('<div class="card"><h3>The guarantee</h3><p>No student has been trained yet, so there is '
                    f'nothing to calibrate. Run <code>downsize train {escape(name)}</code> once the teacher has '
                    'labelled enough examples.</p></div>')
        return ('<div class="card"><h3>The guarantee</h3><p>No calibration has been run: the student may not '
                f'answer on its own. Run <code>downsize calibrate {escape(name)}</code>.</p></div>')
    if cal["threshold"] is None:
        head = (f'<p class="guarantee">No threshold met α = {pct(cal["alpha"])} at δ = {cal["delta"]:g}: the '
                "teacher answers every request.</p>")
    else:
        head = (f'<p class="guarantee">With probability ≥ {pct(1 - cal["delta"], 0)}, the student disagrees with the '
                f'{escape(cal["reference"])} on at most <strong>{m("calibration.alpha", pct)}</strong> of the '
                f'requests it answers, provided live traffic is exchangeable with the calibration data.</p>')
    ci = cal["coverage_interval"]
    rows = [
        ["α (max disagreement) / δ", f'{m("calibration.alpha", pct)} / {m("calibration.delta", lambda v: f"{v:g}")}'],
        ["threshold λ", m("calibration.threshold", lambda v: "none" if v is None else f"{v:.4f}")],
        ["coverage (share answered locally)",
         f'{m("calibration.coverage", pct)} <span class="note">[{pct(ci[0])}, {pct(ci[1])}]</span>'],
        ["calibration rows / answered / errors",
         f'{num(cal["n_calib"])} / {num(cal["n_answered"])} / {num(cal["errors_answered"])}'],
        ["empirical disagreement on answered", m("calibration.empirical_risk", pct)],
        ["reference / method", f'{escape(cal["reference"])} / {escape(cal["method"])}'],
        ["student", escape(f'v{cal["student_version"]}' + (f' ({cal["student_kind"]})' if cal["student_kind"] else ""))],
        ["calibrated at", escape((cal["created_at"] or "").replace("T", " ") + " UTC")],
    ]
    extra = f'<p class="note">{escape(str(cal["guarantee"]))}</p>' if cal.get("guarantee") else ""
    return '<div class="card"><h3>The guarantee</h3>' + head + _table(["", ""], rows, "kv") + extra + "</div>"


def _money_html(name: str, t: dict[str, Any]) -> str:
    m = _Scope(t, name).m
    c = t["cost"]
    by = t["by_answered_by"]
    n = t["requests"] or 1
    who = [[escape(k), num(v), pct(v / n)] for k, v in sorted(by.items(), key=lambda kv: -kv[1])]
    money = [
        ["spent on the teacher (requests)", m("cost.requests_usd", usd)],
        ["spent on spot checks", m("cost.spot_checks_usd", usd)],
        ["<strong>spent, total</strong>", f'<strong>{m("cost.spent_usd", usd)}</strong>'],
        ["teacher-only, same requests", m("cost.teacher_only_usd", usd)],
        ["<strong>saved</strong>", f'<strong>{m("cost.savings_usd", usd)}</strong> ({m("cost.savings_pct", pct)})'],
        ["teacher calls avoided", m("teacher_calls_avoided")],
    ]
    return ('<div class="card"><h3>Where the requests went</h3>'
            + _table(["answered by", "requests", "share"], who or [["—", "0", "—"]])
            + f'<p class="note">{m("requests")} requests; {m("errors")} errors.</p>'
            + "<h3>Money</h3>" + _table(["", ""], money, "kv") + "</div>")


def _latency_energy_html(name: str, t: dict[str, Any]) -> str:
    m = _Scope(t, name).m
    rows = []
    for key, label in (("student", "student answered"), ("escalated", "escalated (teacher path)"),
                       ("cascade", "cascade, all answered"), ("teacher_only", "teacher alone")):
        rows.append([label, m(f"latency_ms.{key}.n"), m(f"latency_ms.{key}.p50", ms),
                     m(f"latency_ms.{key}.p95", ms), m(f"latency_ms.{key}.mean", ms)])
    e = t["energy"]
    erows = [
        ["student", m("energy.student.wh", wh), m("energy.per_1k_requests.student", wh),
         f'<span class="label">{escape(e["student"]["label"])}</span>'],
        ["teacher (as run)", m("energy.teacher.wh", wh), m("energy.per_1k_requests.teacher", wh),
         f'<span class="label">{escape(e["teacher"]["label"])}</span>'],
        ["<strong>cascade</strong>", m("energy.cascade_wh", wh), m("energy.per_1k_requests.cascade", wh), ""],
        ["teacher-only", m("energy.teacher_only_wh", wh), m("energy.per_1k_requests.teacher_only", wh),
         f'<span class="label">{escape(e["teacher_only"]["label"])}</span>'],
    ]
    notes = "".join(f"<li><strong>{k}</strong>: {escape(e[k]['assumption'])}</li>"
                    for k in ("student", "teacher", "teacher_only"))
    return ('<div class="card"><h3>Latency</h3>'
            + _table(["path", "n", "p50", "p95", "mean"], rows)
            + "<h3 style='margin-top:16px'>Energy</h3>"
            + _table(["", "Wh", "per 1k req", "basis"], erows)
            + f'<p class="note">Saved {m("energy.saved_pct", pct)} of the teacher-only energy.</p>'
            + f'<details><summary>assumptions</summary><ul class="note">{notes}</ul></details></div>')


def _spot_eval_html(name: str, t: dict[str, Any]) -> str:
    sc = t["spot_checks"]
    parts = ['<div class="card"><h3>Live spot checks</h3>']
    if sc["n"]:
        m = _Scope(t, name).m
        parts.append(f'<p>The teacher agreed with {m("spot_checks.agree")} of {m("spot_checks.n")} re-checked '
                     f'student answers: <strong>{m("spot_checks.rate", pct)}</strong> '
                     f'({pct(sc["confidence"], 0)} {escape(sc["method"])} interval '
                     f'{pct(sc["lo"])}–{pct(sc["hi"])}'
                     + (f'; target ≥ {pct(1 - t["alpha"])}' if t["alpha"] is not None else "") + ").</p>")
        if sc["teacher_failed"]:
            parts.append(f'<p class="note">{sc["teacher_failed"]} spot checks got no teacher answer.</p>')
        parts.append(_img(plots.spot_checks_png(sc, t["alpha"]), "spot-check agreement over time"))
        rows = [[escape(p["start"][:10] if sc["bucket"] != "hour" else p["start"]), num(p["n"]),
                 pct(p["rate"]), f'{pct(p["lo"])} – {pct(p["hi"])}'] for p in sc["by_period"]]
        parts.append(f'<details><summary>per {sc["bucket"]}</summary>'
                     + _table([sc["bucket"], "checks", "agreement", "interval"], rows) + "</details>")
    else:
        parts.append('<p class="note">No spot checks recorded in this window.</p>')
    ev = t["eval"]
    parts.append("<h3 style='margin-top:16px'>Evaluation against gold</h3>")
    if ev is None:
        parts.append(f'<p class="note">No evaluation yet (<code>downsize eval {escape(name)} gold.csv</code>).</p>')
    else:
        metrics = ev["metrics"] or {}
        groups = {k: v for k, v in metrics.items() if isinstance(v, dict)}
        cols = list(dict.fromkeys(c for v in groups.values() for c, x in v.items()
                                  if isinstance(x, int | float) and not isinstance(x, bool)))
        if groups and cols:
            rows = [[escape(g)] + [_metric_cell(c, v.get(c)) for c in cols] for g, v in groups.items()]
            parts.append(_table([""] + [c.replace("_", " ") for c in cols], rows))
        scal = [[escape(k.replace("_", " ")), _metric_cell(k, v)] for k, v in metrics.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("n",)]
        if scal:
            parts.append(_table(["", ""], scal, "kv"))
        parts.append(f'<p class="note">{num(ev["n"])} gold rows from {escape(ev["data_path"])}, '
                     f'{escape((ev["created_at"] or "").replace("T", " "))} UTC.</p>')
    parts.append("</div>")
    return "".join(parts)


_RATE_WORDS = ("accuracy", "f1", "share", "agreement", "coverage", "rate", "risk", "precision", "recall")


def _metric_cell(key: str, v: Any) -> str:
    """Rates (by their name) as percentages, other numbers as they are."""
    if v is None:
        return "—"
    if isinstance(v, float) and 0 <= v <= 1 and any(w in key.lower() for w in _RATE_WORDS):
        return pct(v)
    return escape(num(v))


def _labels_html(name: str, t: dict[str, Any]) -> str:
    from ._report_advice import LABEL_MAX_ESCALATION, LABEL_MIN_REQUESTS

    conf = t["confusion"]
    parts = ['<div class="card"><h3>Student vs teacher</h3>']
    if conf["n"]:
        src = conf["sources"]
        parts.append(f'<p class="note">{conf["n"]} pairs: {src["request_log"]} escalated/shadow requests (the '
                     f'student\'s least confident) + {src["spot_checks"]} spot checks; agreement '
                     f'{_Scope(t, name).m("confusion.agreement", pct)}. Rows: teacher; columns: student.</p>')
        img = plots.confusion_png(conf)
        parts.append(_img(img, "confusion matrix, teacher rows by student columns"))
        table = _table(["teacher \\ student"] + [escape(x) for x in conf["labels"]],
                       [[escape(lab)] + [num(c) for c in row] for lab, row in zip(conf["labels"], conf["matrix"])])
        parts.append(table if not img else f"<details><summary>counts</summary>{table}</details>")
    else:
        parts.append('<p class="note">No request has both a student and a teacher label yet.</p>')
    parts.append('</div><div class="card"><h3>Escalation by label</h3>')
    rows, flagged = [], []
    for row in t["label_escalation"][:20]:
        flag = row["n"] >= LABEL_MIN_REQUESTS and row["rate"] >= LABEL_MAX_ESCALATION
        rows.append([escape(row["label"]), num(row["n"]), num(row["escalated"]), pct(row["rate"])])
        flagged.append(flag)
    if rows:
        body = "".join(f'<tr{" class=flag" if f else ""}>' + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
                       for r, f in zip(rows, flagged))
        parts.append("<table><thead><tr><th>label (answer given)</th><th>requests</th><th>escalated</th>"
                     f"<th>rate</th></tr></thead><tbody>{body}</tbody></table>")
        if len(t["label_escalation"]) > 20:
            parts.append(f'<p class="note">{len(t["label_escalation"]) - 20} more labels not shown.</p>')
    else:
        parts.append('<p class="note">No cascade decisions in this window.</p>')
    parts.append("</div>")
    return "".join(parts)


def _task_html(name: str, t: dict[str, Any]) -> str:
    mode = t["mode"]
    sv = t["student"]
    sub = f' <span class="note">student v{sv["version"]} ({escape(sv["kind"])})</span>' if sv else ""
    head = (f'<section class="task" id="task-{_slug(name)}" data-task="{escape(name)}">'
            f'<h2>{escape(name)}<span class="chip {mode}">{escape(mode)}</span>{sub}</h2>')
    if not t["requests"] and not t["spot_checks"]["n"]:
        return head + ('<p class="note">No requests for this task in this window.</p>'
                       + (f'<div class="grid">{_guarantee_html(name, t)}</div>' if t["calibration"] else "")
                       + "</section>")
    figs = [
        _img(plots.coverage_accuracy_png(t["calibration"], t["eval"]), "coverage vs accuracy"),
        _img(plots.cost_energy_png(t), "cost and energy per 1k requests"),
        _img(plots.latency_png(t["latency_ms"]), "latency distributions"),
        _img(plots.timeline_png(t["timeline"]), "escalation rate and savings over time"),
    ]
    fig_cards = "".join(f'<div class="card">{f}</div>' for f in figs if f)
    return (head + _task_band(name, t)
            + f'<div class="grid">{_money_html(name, t)}{_guarantee_html(name, t)}</div>'
            + f'<div class="grid" style="margin-top:16px">{fig_cards}</div>'
            + f'<div class="grid" style="margin-top:16px">{_latency_energy_html(name, t)}{_spot_eval_html(name, t)}</div>'
            + (f'<div class="grid" style="margin-top:16px">{_labels_html(name, t)}</div>'
               if t["confusion"]["n"] or t["label_escalation"] else "")
            + "</section>")


def _passthrough_html(p: dict[str, Any] | None) -> str:
    if not p:
        return ""
    models = _table(["model", "requests"], [[escape(x["model"]), num(x["requests"])] for x in p["models"]])
    by = ", ".join(f"{escape(k)} {num(v)}" for k, v in p["by_answered_by"].items())
    return ('<section id="passthrough"><h2>Pass-through traffic</h2><div class="grid"><div class="card">'
            f'<p>{num(p["requests"])} requests for models that are not downsize tasks ({by}); '
            f'spent {escape(usd(p["spent_usd"]))}; latency p50 {escape(ms(p["latency_ms"]["p50"]))}, '
            f'p95 {escape(ms(p["latency_ms"]["p95"]))}.</p>'
            f"{models}</div></div></section>")


def _footer(r: dict[str, Any]) -> str:
    a = r["assumptions"]
    vals = a["teacher_wh_per_1k_tokens"]
    wh1k = (f"{next(iter(vals.values())):g}" if len(set(vals.values())) == 1 else
            ", ".join(f"{escape(k)}: {v:g}" for k, v in vals.items())) if vals else "—"
    return (
        "<footer><dl>"
        "<dt>Answered locally</dt><dd>student answers ÷ answered requests; student_fallback (teacher failed, "
        "below-threshold student answer returned) is not counted as local.</dd>"
        "<dt>Escalation rate</dt><dd>(teacher + student_fallback) ÷ (student + teacher + student_fallback).</dd>"
        "<dt>Spent / teacher-only</dt><dd>Σ teacher cost actually paid (requests and spot checks) vs Σ what the "
        "teacher would have cost for the same requests.</dd>"
        f"<dt>Energy</dt><dd><span class=\"label\">measured (CPU time × W/core)</span> student CPU time at "
        f"{a['cpu_watts_per_core']:g} W per core; <span class=\"label\">estimated (tokens × Wh/1k tokens)</span> "
        f"teacher tokens at {wh1k} Wh per 1k tokens, from published per-query estimates for GPT-4o-class "
        "models (~0.3 Wh per query): an order of magnitude, not a measurement.</dd>"
        f"<dt>Intervals</dt><dd>Clopper–Pearson, {pct(a['spot_check_confidence'], 0)} two-sided.</dd>"
        f"</dl><p>Generated {escape((r['generated_at'] or '').replace('T', ' '))} UTC by downsize · "
        f"schema {escape(r['schema'])}</p></footer>")


def render_html(report: dict[str, Any]) -> str:
    """One self-contained HTML page (inline CSS, base64 PNG figures, no scripts, no external URLs)."""
    r = report
    head = ('<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            '<meta name="color-scheme" content="light"><link rel="icon" href="data:,">'
            f"<title>downsize report</title><style>{_CSS}</style></head><body>"
            f'<header class="top"><div class="in"><h1>downsize report</h1><p>{escape(_window_text(r))}</p>'
            "</div></header><main>")
    if r["empty"]:
        w = r["window"]
        before = (f" ({num(w['requests_before_window'])} requests were recorded before this window.)"
                  if w["requests_before_window"] else "")
        body = ('<section class="card empty" id="empty" data-empty="true"><p class="big">Nothing recorded yet</p>'
                f"<p>No request has been logged {'in this window' if w['start'] else 'so far'}.{escape(before)} "
                "Send traffic through <code>downsize serve</code> or run <code>downsize predict</code>; "
                "the report fills in from the audit log.</p></section>")
        if r["next_steps"]:
            body += '<h2>What to do next</h2><div class="card" id="next-steps">' + _steps_html(r["next_steps"]) + "</div>"
        return head + body + _footer(r) + "</main></body></html>"
    nav = " ".join(f'<a href="#task-{_slug(n)}">{escape(n)}</a>' for n in r["tasks"])
    body = (_totals_band(r)
            + '<h2>What to do next</h2><div class="card" id="next-steps">' + _steps_html(r["next_steps"]) + "</div>"
            + (f'<h2>Tasks</h2><nav class="tasks">{nav}</nav>' if len(r["tasks"]) > 1 else "")
            + "".join(_task_html(n, t) for n, t in r["tasks"].items())
            + _passthrough_html(r["passthrough"]))
    return head + body + _footer(r) + "</main></body></html>"


# ---------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------
_WIDTH = 100


def _kv(rows: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    """Aligned ``key  value`` lines, values wrapped to the text width."""
    w = max((len(k) for k, _ in rows), default=0)
    out = []
    for k, v in rows:
        lead = f"{indent}{k.ljust(w)}  "
        out += textwrap.wrap(v, _WIDTH, initial_indent=lead, subsequent_indent=" " * len(lead),
                             break_on_hyphens=False) or [lead.rstrip()]
    return out


def render_text(report: dict[str, Any]) -> str:
    """A plain-text summary for the terminal (no colours, fits 100 columns)."""
    r = report
    out = [f"downsize report · {_window_text(r)}", ""]
    if r["empty"]:
        before = r["window"]["requests_before_window"]
        out.append("Nothing recorded yet" + (" in this window" if r["window"]["start"] else "") + "."
                   + (f" ({before} requests before it.)" if before else ""))
        out.append("Send traffic through `downsize serve` or run `downsize predict`.")
    else:
        t = r["totals"]
        out += _kv([
            ("requests", f"{t['requests']:,}" + (f"  (+{t['passthrough_requests']:,} pass-through)"
                                                  if t["passthrough_requests"] else "")),
            ("answered locally", f"{pct(t['local_share'])}  ({t['teacher_calls_avoided']:,} teacher calls avoided)"),
            ("spent / teacher-only", f"{usd(t['spent_usd'])} / {usd(t['teacher_only_usd'])}"),
            ("saved", f"{usd(t['savings_usd'])}  ({pct(t['savings_pct'])})"),
            ("$ per 1k requests", f"{usd(t['cost_per_1k_requests']['cascade'])} vs "
                                  f"{usd(t['cost_per_1k_requests']['teacher_only'])} teacher-only"),
            ("Wh per 1k requests", f"{wh(t['energy_per_1k_requests']['cascade'])} vs "
                                   f"{wh(t['energy_per_1k_requests']['teacher_only'])} teacher-only "
                                   "(student measured, teacher estimated)"),
        ], indent="")
        for name, x in r["tasks"].items():
            out += ["", f"== {name} ({x['mode']}) =="]
            if not x["requests"]:
                out.append("  no requests in this window")
                continue
            lat, c, sc, cal = x["latency_ms"], x["cost"], x["spot_checks"], x["calibration"]
            rows = [
                ("requests", f"{x['requests']:,}  " + ", ".join(f"{k} {v:,}" for k, v in x["by_answered_by"].items())),
                ("answered locally", f"{pct(x['local_share'])}   escalation rate {pct(x['escalation_rate'])}"),
                ("spent / teacher-only", f"{usd(c['spent_usd'])} / {usd(c['teacher_only_usd'])}   saved "
                                         f"{usd(c['savings_usd'])} ({pct(c['savings_pct'])})"),
                ("$ per 1k requests", f"{usd(c['per_1k_requests']['cascade'])} vs "
                                      f"{usd(c['per_1k_requests']['teacher_only'])} teacher-only"),
                ("latency p50 / p95", f"student {ms(lat['student']['p50'])} / {ms(lat['student']['p95'])} · "
                                      f"escalated {ms(lat['escalated']['p50'])} / {ms(lat['escalated']['p95'])} · "
                                      f"cascade {ms(lat['cascade']['p50'])} / {ms(lat['cascade']['p95'])} · "
                                      f"teacher alone {ms(lat['teacher_only']['p50'])} / "
                                      f"{ms(lat['teacher_only']['p95'])}"),
                ("Wh per 1k requests", f"{wh(x['energy']['per_1k_requests']['cascade'])} vs "
                                       f"{wh(x['energy']['per_1k_requests']['teacher_only'])} teacher-only"),
            ]
            if cal:
                rows.append(("guarantee", "no threshold: teacher only" if cal["threshold"] is None else
                             f"disagreement ≤ {pct(cal['alpha'])} w.p. ≥ {pct(1 - cal['delta'], 0)}; "
                             f"λ = {cal['threshold']:.3f}, coverage {pct(cal['coverage'])} "
                             f"[{pct(cal['coverage_interval'][0])}, {pct(cal['coverage_interval'][1])}]"))
            else:
                rows.append(("guarantee", "not calibrated"))
            rows.append(("spot checks", f"{pct(sc['rate'])} agree ({sc['agree']}/{sc['n']}, "
                                        f"{pct(sc['confidence'], 0)} CI {pct(sc['lo'])}–{pct(sc['hi'])})"
                         if sc["n"] else "none"))
            if x["eval"]:
                mt = x["eval"]["metrics"] or {}
                acc = [f"{k} {pct(v.get('accuracy'))}" for k, v in mt.items()
                       if isinstance(v, dict) and isinstance(v.get("accuracy"), int | float)]
                rows.append(("eval vs gold", (", ".join(acc) or "recorded") + f" (n = {x['eval']['n']:,})"))
            out += _kv(rows)
        p = r["passthrough"]
        if p:
            out += ["", "== pass-through ==", *_kv([
                ("requests", f"{p['requests']:,}"), ("spent", usd(p["spent_usd"])),
                ("latency p50 / p95", f"{ms(p['latency_ms']['p50'])} / {ms(p['latency_ms']['p95'])}")])]
    if r["next_steps"]:
        out += ["", "What to do next"]
        marks = {"action": "!", "warning": "?", "info": "·"}
        for s in r["next_steps"]:
            out.append(f"  {marks[s['severity']]} {s['title']}")
            out += textwrap.wrap(s["detail"] + (f"  → {s['command']}" if s.get("command") else ""), _WIDTH,
                                 initial_indent=" " * 6, subsequent_indent=" " * 6, break_on_hyphens=False)
    return "\n".join(out) + "\n"
