"""The report as plain text for the terminal (no colours, at most 100 columns)."""

from __future__ import annotations

import re
import textwrap
from typing import Any

from .format import ms, pct, usd, wh, window_text

__all__ = ["render_text"]


_WIDTH = 100


_UNIT = re.compile(r"(\d) (%|ms|s|mWh|Wh|kWh)(?=\W|$)")


def _wrap(text: str, first: str, rest: str) -> list[str]:
    """Wrap to the text width without parting a number from its unit."""
    glued = _UNIT.sub("\\1\u00a0\\2", text)
    lines = textwrap.wrap(
        glued, _WIDTH, initial_indent=first, subsequent_indent=rest, break_on_hyphens=False
    )
    return [line.replace("\u00a0", " ") for line in lines]


def _kv(rows: list[tuple[str, str]], indent: str = "  ") -> list[str]:
    """Aligned ``key  value`` lines, values wrapped to the text width."""
    w = max((len(k) for k, _ in rows), default=0)
    out = []
    for k, v in rows:
        lead = f"{indent}{k.ljust(w)}  "
        out += _wrap(v, lead, " " * len(lead)) or [lead.rstrip()]
    return out


def _vs(a: str, b: str) -> str:
    return f"{a} vs {b} teacher-only"


def _p(d: dict[str, Any]) -> str:
    return f"{ms(d['p50'])} / {ms(d['p95'])}"


def _totals(t: dict[str, Any]) -> list[str]:
    extra = f"  (+{t['passthrough_requests']:,} pass-through)" if t["passthrough_requests"] else ""
    if t.get("rejected_requests"):
        extra += f"  (+{t['rejected_requests']:,} refused or for no task: errors)"
    cost, energy = t["cost_per_1k_requests"], t["energy_per_1k_requests"]
    rows = [
        ("requests", f"{t['requests']:,}{extra}"),
        (
            "answered locally",
            f"{pct(t['local_share'])}  ({t['teacher_calls_avoided']:,} teacher calls avoided)",
        ),
        ("spent / teacher-only", f"{usd(t['spent_usd'])} / {usd(t['teacher_only_usd'])}"),
        ("saved", f"{usd(t['savings_usd'])}  ({pct(t['savings_pct'])})"),
        ("$ per 1k requests", _vs(usd(cost["cascade"]), usd(cost["teacher_only"]))),
        (
            "Wh per 1k requests",
            _vs(wh(energy["cascade"]), wh(energy["teacher_only"]))
            + " (student measured, teacher estimated)",
        ),
    ]
    return _kv(rows, indent="")


def _guarantee(cal: dict[str, Any] | None) -> str:
    if cal is None:
        return "not calibrated"
    if cal["threshold"] is None:
        return "no threshold: teacher only"
    lo, hi = cal["coverage_interval"]
    return (
        f"disagreement ≤ {pct(cal['alpha'])} w.p. ≥ {pct(1 - cal['delta'], 0)}; "
        f"λ = {cal['threshold']:.3f}, coverage {pct(cal['coverage'])} [{pct(lo)}, {pct(hi)}]"
    )


def _task(x: dict[str, Any]) -> list[str]:
    lat, c, sc = x["latency_ms"], x["cost"], x["spot_checks"]
    by = ", ".join(f"{k} {v:,}" for k, v in x["by_answered_by"].items())
    per1k, energy = c["per_1k_requests"], x["energy"]["per_1k_requests"]
    rows = [
        ("requests", f"{x['requests']:,}  {by}"),
        (
            "answered locally",
            f"{pct(x['local_share'])}   escalation rate {pct(x['escalation_rate'])}",
        ),
        (
            "spent / teacher-only",
            (
                f"{usd(c['spent_usd'])} / {usd(c['teacher_only_usd'])}   "
                f"saved {usd(c['savings_usd'])} ({pct(c['savings_pct'])})"
            ),
        ),
        ("$ per 1k requests", _vs(usd(per1k["cascade"]), usd(per1k["teacher_only"]))),
        (
            "latency p50 / p95",
            (
                f"student {_p(lat['student'])} · escalated {_p(lat['escalated'])} · "
                f"cascade {_p(lat['cascade'])} · teacher alone {_p(lat['teacher_only'])}"
            ),
        ),
        ("Wh per 1k requests", _vs(wh(energy["cascade"]), wh(energy["teacher_only"]))),
        ("guarantee", _guarantee(x["calibration"])),
        (
            "spot checks",
            (
                f"{pct(sc['rate'])} agree ({sc['agree']}/{sc['n']}, {pct(sc['confidence'], 0)} "
                f"CI {pct(sc['lo'])}–{pct(sc['hi'])})"
            )
            if sc["n"]
            else "none",
        ),
    ]
    rv = x.get("review")
    if rv is not None:
        sm = rv["sample"]
        rows.append((
            "reviewed sample",
            (
                f"{pct(sm['accuracy'])} agree with people ({sm['agree']}/{sm['n']}, "
                f"{pct(rv['confidence'], 0)} CI {pct(sm['lo'])}–{pct(sm['hi'])}; "
                f"{sm['reviewed']} of {sm['sampled']} sampled requests reviewed)"
            )
            if sm and sm["n"]
            else f"none reviewed yet ({sm['sampled'] if sm else 0} sampled)",
        ))
        q = rv["queue"]
        rows.append(("review queue", f"{q['open']:,} open, {q['reviewed']:,} reviewed, {q['conflicts']} conflict(s)"))
    if x["eval"]:
        mt = x["eval"]["metrics"] or {}
        acc = [
            f"{k} {pct(v['accuracy'])}"
            for k, v in mt.items()
            if isinstance(v, dict) and isinstance(v.get("accuracy"), float)
        ]
        rows.append(("eval vs gold", f"{', '.join(acc) or 'recorded'} (n = {x['eval']['n']:,})"))
    return _kv(rows)


def render_text(report: dict[str, Any]) -> str:
    """A plain-text summary for the terminal (no colours, at most 100 columns)."""
    r = report
    out = [f"downsize report · {window_text(r)}", ""]
    if r["empty"]:
        before = r["window"]["requests_before_window"]
        where = " in this window" if r["window"]["start"] else ""
        out.append(
            f"Nothing recorded yet{where}." + (f" ({before} requests before it.)" if before else "")
        )
        out.append("Send traffic through `downsize serve` or run `downsize predict`.")
    else:
        out += _totals(r["totals"])
        for name, x in r["tasks"].items():
            out += ["", f"== {name} ({x['mode']}) =="]
            out += _task(x) if x["requests"] else ["  no requests in this window"]
        p = r["passthrough"]
        if p:
            rows = [
                ("requests", f"{p['requests']:,}"),
                ("spent", usd(p["spent_usd"])),
                ("latency p50 / p95", _p(p["latency_ms"])),
            ]
            out += ["", "== pass-through ==", *_kv(rows)]
        rej = r.get("rejected")
        if rej:
            by = ", ".join(f"HTTP {k}: {v:,}" for k, v in rej["by_status"].items())
            top = ", ".join(f"{m['model']} ({m['requests']:,})" for m in rej["models"][:5])
            out += ["", "== refused, or for no configured task ==",
                    *_kv([("requests", f"{rej['requests']:,}  ({by})"), ("models named", top)])]
    if r["next_steps"]:
        out += ["", "What to do next"]
        marks = {"action": "!", "warning": "?", "info": "·"}
        for s in r["next_steps"]:
            out.append(f"  {marks[s['severity']]} {s['title']}")
            body = s["detail"] + (f"  → {s['command']}" if s.get("command") else "")
            out += _wrap(body, " " * 6, " " * 6)
    return "\n".join(out) + "\n"
