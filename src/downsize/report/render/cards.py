"""The cards of a task's section in the HTML report (money, guarantee, latency/energy,
spot checks/eval, student vs teacher, reviewed by people)."""

from __future__ import annotations

from html import escape
from typing import Any

from . import plots
from ..advice import LABEL_MAX_ESCALATION, LABEL_MIN_REQUESTS
from .format import _img, _Scope, _table, ms, num, pct, usd, wh

__all__ = ["guarantee_card", "labels_cards", "latency_energy_card", "money_card", "review_card", "spot_eval_card"]

#: How the guarantee names its reference (``calibration_runs.reference``).
_REFERENCE_WORDS = {"human": "your reviewers"}


def guarantee_card(name: str, t: dict[str, Any]) -> str:
    cal = t["calibration"]
    m = _Scope(t, name).m
    if cal is None:
        if t["student"] is None:
            return (
                '<div class="card"><h3>The guarantee</h3><p>No student has been trained yet, so there is '
                f"nothing to calibrate. Run <code>downsize train {escape(name)}</code> once the teacher has "
                "labelled enough examples.</p></div>"
            )
        return (
            '<div class="card"><h3>The guarantee</h3><p>No calibration has been run: the student may not '
            f"answer on its own. Run <code>downsize calibrate {escape(name)}</code>.</p></div>"
        )
    if cal["threshold"] is None:
        head = (
            f'<p class="guarantee">No threshold met α = {pct(cal["alpha"])} at δ = {cal["delta"]:g}: the '
            "teacher answers every request.</p>"
        )
    else:
        head = (
            f'<p class="guarantee">With probability ≥ {pct(1 - cal["delta"], 0)}, the student disagrees with '
            f"{escape(_REFERENCE_WORDS.get(cal['reference'], 'the ' + cal['reference']))} on at most "
            f"<strong>{m('calibration.alpha', pct)}</strong> of the "
            f"requests it answers, provided live traffic is exchangeable with the calibration data.</p>"
        )
    ci = cal["coverage_interval"]
    rows = [
        [
            "α (max disagreement) / δ",
            f"{m('calibration.alpha', pct)} / {m('calibration.delta', lambda v: f'{v:g}')}",
        ],
        ["threshold λ", m("calibration.threshold", lambda v: "none" if v is None else f"{v:.4f}")],
        [
            "coverage (share answered locally)",
            f'{m("calibration.coverage", pct)} <span class="note">[{pct(ci[0])}, {pct(ci[1])}]</span>',
        ],
        [
            "calibration rows / answered / errors",
            f"{num(cal['n_calib'])} / {num(cal['n_answered'])} / {num(cal['errors_answered'])}",
        ],
        ["empirical disagreement on answered", m("calibration.empirical_risk", pct)],
        ["reference / method", f"{escape(cal['reference'])} / {escape(cal['method'])}"],
        [
            "student",
            escape(
                f"v{cal['student_version']}"
                + (f" ({cal['student_kind']})" if cal["student_kind"] else "")
            ),
        ],
        ["calibrated at", escape((cal["created_at"] or "").replace("T", " ") + " UTC")],
    ]
    extra = f'<p class="note">{escape(str(cal["guarantee"]))}</p>' if cal.get("guarantee") else ""
    return (
        '<div class="card"><h3>The guarantee</h3>'
        + head
        + _table(["", ""], rows, "kv")
        + extra
        + "</div>"
    )


def money_card(name: str, t: dict[str, Any]) -> str:
    m = _Scope(t, name).m
    by = t["by_answered_by"]
    n = t["requests"] or 1
    who = [[escape(k), num(v), pct(v / n)] for k, v in sorted(by.items(), key=lambda kv: -kv[1])]
    money = [
        ["spent on the teacher (requests)", m("cost.requests_usd", usd)],
        ["spent on spot checks", m("cost.spot_checks_usd", usd)],
        ["<strong>spent, total</strong>", f"<strong>{m('cost.spent_usd', usd)}</strong>"],
        ["teacher-only, same requests", m("cost.teacher_only_usd", usd)],
        [
            "<strong>saved</strong>",
            f"<strong>{m('cost.savings_usd', usd)}</strong> ({m('cost.savings_pct', pct)})",
        ],
        ["teacher calls avoided", m("teacher_calls_avoided")],
    ]
    return (
        '<div class="card"><h3>Where the requests went</h3>'
        + _table(["answered by", "requests", "share"], who or [["—", "0", "—"]])
        + f'<p class="note">{m("requests")} requests; {m("errors")} errors.</p>'
        + "<h3>Money</h3>"
        + _table(["", ""], money, "kv")
        + "</div>"
    )


def latency_energy_card(name: str, t: dict[str, Any]) -> str:
    m = _Scope(t, name).m
    rows = []
    for key, label in (
        ("student", "student answered"),
        ("escalated", "escalated (teacher path)"),
        ("cascade", "cascade, all answered"),
        ("teacher_only", "teacher alone"),
    ):
        rows.append(
            [
                label,
                m(f"latency_ms.{key}.n"),
                m(f"latency_ms.{key}.p50", ms),
                m(f"latency_ms.{key}.p95", ms),
                m(f"latency_ms.{key}.mean", ms),
            ]
        )
    e = t["energy"]
    erows = [
        [
            "student",
            m("energy.student.wh", wh),
            m("energy.per_1k_requests.student", wh),
            f'<span class="label">{escape(e["student"]["label"])}</span>',
        ],
        [
            "teacher (as run)",
            m("energy.teacher.wh", wh),
            m("energy.per_1k_requests.teacher", wh),
            f'<span class="label">{escape(e["teacher"]["label"])}</span>',
        ],
        [
            "<strong>cascade</strong>",
            m("energy.cascade_wh", wh),
            m("energy.per_1k_requests.cascade", wh),
            "",
        ],
        [
            "teacher-only",
            m("energy.teacher_only_wh", wh),
            m("energy.per_1k_requests.teacher_only", wh),
            f'<span class="label">{escape(e["teacher_only"]["label"])}</span>',
        ],
    ]
    notes = "".join(
        f"<li><strong>{k}</strong>: {escape(e[k]['assumption'])}</li>"
        for k in ("student", "teacher", "teacher_only")
    )
    return (
        '<div class="card"><h3>Latency</h3>'
        + _table(["path", "n", "p50", "p95", "mean"], rows)
        + "<h3 style='margin-top:16px'>Energy</h3>"
        + _table(["", "Wh", "per 1k req", "basis"], erows)
        + f'<p class="note">Saved {m("energy.saved_pct", pct)} of the teacher-only energy.</p>'
        + f'<details><summary>assumptions</summary><ul class="note">{notes}</ul></details></div>'
    )


def spot_eval_card(name: str, t: dict[str, Any]) -> str:
    sc = t["spot_checks"]
    parts = ['<div class="card"><h3>Live spot checks</h3>']
    if sc["n"]:
        m = _Scope(t, name).m
        parts.append(
            f"<p>The teacher agreed with {m('spot_checks.agree')} of {m('spot_checks.n')} re-checked "
            f"student answers: <strong>{m('spot_checks.rate', pct)}</strong> "
            f"({pct(sc['confidence'], 0)} {escape(sc['method'])} interval "
            f"{pct(sc['lo'])}–{pct(sc['hi'])}"
            + (f"; target ≥ {pct(1 - t['alpha'])}" if t["alpha"] is not None else "")
            + ").</p>"
        )
        if sc["teacher_failed"]:
            parts.append(
                f'<p class="note">{sc["teacher_failed"]} spot checks got no teacher answer.</p>'
            )
        parts.append(_img(plots.spot_checks_png(sc, t["alpha"]), "spot-check agreement over time"))
        rows = [
            [
                escape(p["start"][:10] if sc["bucket"] != "hour" else p["start"]),
                num(p["n"]),
                pct(p["rate"]),
                f"{pct(p['lo'])} – {pct(p['hi'])}",
            ]
            for p in sc["by_period"]
        ]
        parts.append(
            f"<details><summary>per {sc['bucket']}</summary>"
            + _table([sc["bucket"], "checks", "agreement", "interval"], rows)
            + "</details>"
        )
    else:
        parts.append('<p class="note">No spot checks recorded in this window.</p>')
    ev = t["eval"]
    parts.append("<h3 style='margin-top:16px'>Evaluation against gold</h3>")
    if ev is None:
        parts.append(
            f'<p class="note">No evaluation yet (<code>downsize eval {escape(name)} gold.csv</code>).</p>'
        )
    else:
        metrics = ev["metrics"] or {}
        groups = {k: v for k, v in metrics.items() if isinstance(v, dict)}
        cols = list(
            dict.fromkeys(
                c
                for v in groups.values()
                for c, x in v.items()
                if isinstance(x, int | float) and not isinstance(x, bool)
            )
        )
        if groups and cols:
            rows = [
                [escape(g)] + [_metric_cell(c, v.get(c)) for c in cols] for g, v in groups.items()
            ]
            parts.append(_table([""] + [c.replace("_", " ") for c in cols], rows))
        scal = [
            [escape(k.replace("_", " ")), _metric_cell(k, v)]
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k not in ("n",)
        ]
        if scal:
            parts.append(_table(["", ""], scal, "kv"))
        parts.append(
            f'<p class="note">{num(ev["n"])} gold rows from {escape(ev["data_path"])}, '
            f"{escape((ev['created_at'] or '').replace('T', ' '))} UTC.</p>"
        )
    parts.append("</div>")
    return "".join(parts)


_RATE_WORDS = (
    "accuracy",
    "f1",
    "share",
    "agreement",
    "coverage",
    "rate",
    "risk",
    "precision",
    "recall",
)


def _metric_cell(key: str, v: Any) -> str:
    """Rates (by their name) as percentages, other numbers as they are."""
    if v is None:
        return "—"
    if isinstance(v, float) and 0 <= v <= 1 and any(w in key.lower() for w in _RATE_WORDS):
        return pct(v)
    return escape(num(v))


def labels_cards(name: str, t: dict[str, Any]) -> str:
    conf = t["confusion"]
    parts = ['<div class="card"><h3>Student vs teacher</h3>']
    if conf["n"]:
        src = conf["sources"]
        parts.append(
            f'<p class="note">{conf["n"]} pairs: {src["request_log"]} escalated/shadow requests (the '
            f"student's least confident) + {src['spot_checks']} spot checks; agreement "
            f"{_Scope(t, name).m('confusion.agreement', pct)}. Rows: teacher; columns: student.</p>"
        )
        img = plots.confusion_png(conf)
        parts.append(_img(img, "confusion matrix, teacher rows by student columns"))
        table = _table(
            ["teacher \\ student"] + [escape(x) for x in conf["labels"]],
            [
                [escape(lab)] + [num(c) for c in row]
                for lab, row in zip(conf["labels"], conf["matrix"])
            ],
        )
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
        body = "".join(
            f"<tr{' class=flag' if f else ''}>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>"
            for r, f in zip(rows, flagged)
        )
        parts.append(
            "<table><thead><tr><th>label (answer given)</th><th>requests</th><th>escalated</th>"
            f"<th>rate</th></tr></thead><tbody>{body}</tbody></table>"
        )
        if len(t["label_escalation"]) > 20:
            parts.append(
                f'<p class="note">{len(t["label_escalation"]) - 20} more labels not shown.</p>'
            )
    else:
        parts.append('<p class="note">No cascade decisions in this window.</p>')
    parts.append("</div>")
    return "".join(parts)


def review_card(name: str, t: dict[str, Any]) -> str:
    """People's reviews: the random sample's live accuracy (unbiased), apart from the targeted queue."""
    rv = t.get("review")
    parts = ['<div class="card review"><h3>Reviewed by people</h3>']
    if rv is None:
        parts.append(
            f'<p class="note">Nothing queued for review yet: open <code>/review</code> on the gateway or run '
            f"<code>downsize review {escape(name)}</code>.</p></div>"
        )
        return "".join(parts)
    m = _Scope(t, name).m
    sm = rv["sample"]
    conf = pct(rv["confidence"], 0)
    if sm and sm["n"]:
        parts.append(
            f'<p class="guarantee">On a uniform random sample of live requests, people agreed with the '
            f"cascade's answer on <strong>{m('review.sample.accuracy', pct)}</strong> of "
            f"{m('review.sample.n')} ({conf} Clopper–Pearson interval {m('review.sample.lo', pct)}–"
            f"{m('review.sample.hi', pct)}).</p>"
        )
        st = sm["student"]
        if st["n"]:
            target = f"; the guarantee's target is ≥ {pct(1 - t['alpha'])}" if t.get("alpha") is not None else ""
            parts.append(
                f"<p>Of those the student answered: {m('review.sample.student.accuracy', pct)} of "
                f"{m('review.sample.student.n')} (interval {m('review.sample.student.lo', pct)}–"
                f"{m('review.sample.student.hi', pct)}){target}.</p>"
            )
    if sm:
        parts.append(
            f'<p class="note">{m("review.sample.sampled")} requests sampled at random (rate '
            f"{pct(sm['rate'], 1)}), {m('review.sample.reviewed')} reviewed so far. The only unbiased "
            "estimate of live quality: it is kept apart from the targeted items below.</p>"
        )
    q = rv["queue"]
    rows = [
        ["open / reviewed items", f"{m('review.queue.open')} / {m('review.queue.reviewed')}"],
        ["items where reviewers disagree", m("review.queue.conflicts")],
        ["reviewers", m("review.queue.reviewers")],
    ]
    tg = rv["targeted"]
    if tg and tg["reviewed"]:
        sw = tg["sided_with"]
        rows.append([
            "targeted items reviewed (hard cases, not an estimate)",
            f"{num(tg['reviewed'])}: sided with the teacher {num(sw['teacher'])}, the student "
            f"{num(sw['student'])}, neither {num(sw['neither'])}",
        ])
    open_by = ", ".join(f"{escape(k)} {num(v)}" for k, v in sorted(q["by_reason"].items()) if v)
    parts.append(_table(["", ""], rows, "kv"))
    if open_by:
        parts.append(f'<p class="note">open by reason: {open_by}</p>')
    parts.append("</div>")
    return "".join(parts)
