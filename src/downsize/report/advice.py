"""The report's "what to do next" list: rules over the computed figures, thresholds below.

Each rule reads only the report dict built by :func:`downsize.report.build_report` and
returns steps ``{"task", "kind", "severity", "title", "detail", "command"}`` with
severity ``action`` (do this), ``warning`` (look at this) or ``info``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["advise", "spot_checks_needed"]

#: Escalation drift → "retrain": both periods need this many cascade decisions...
DRIFT_MIN_DECISIONS = 30
#: ...the escalation rate must rise by at least this much (absolute, 0.05 = 5 points)...
DRIFT_MIN_RISE = 0.05
#: ...and the rise must be significant: one-sided two-proportion z-test p below this.
DRIFT_MAX_P = 0.05
#: "Add examples for label X": escalated at least this often...
LABEL_MAX_ESCALATION = 0.5
#: ...over at least this many requests answered with that label.
LABEL_MIN_REQUESTS = 20
#: Shadow mode → "train a student" once this many distinct texts carry a label...
SHADOW_MIN_LABELLED = 200
#: ...covering at least two labels.
SHADOW_MIN_LABELS = 2
#: The teacher is failing: student_fallback share of answered requests at or above this...
FALLBACK_MAX_SHARE = 0.01
#: ...and at least this many fallbacks.
FALLBACK_MIN = 5
#: Errors: share of requests at or above this, and at least ERROR_MIN of them.
ERROR_MAX_SHARE = 0.01
ERROR_MIN = 5

_ORDER = {"action": 0, "warning": 1, "info": 2}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def spot_checks_needed(alpha: float, confidence: float, rate: float = 1.0) -> int | None:
    """Spot checks needed for the Clopper–Pearson lower bound to reach 1 − α at agreement ``rate``.

    With every check agreeing the lower bound is ((1 − confidence) / 2) ** (1 / n); otherwise
    the smallest n with lower bound(⌊rate · n⌋, n) ≥ 1 − α is searched. ``None`` when
    ``rate`` ≤ 1 − α (no number of checks will do) or more than 10⁸ would be needed.

    >>> spot_checks_needed(0.02, 0.95)
    183
    >>> spot_checks_needed(0.05, 0.95, rate=0.94) is None
    True
    """
    target = 1 - alpha
    if rate >= 1.0:
        return math.ceil(math.log((1 - confidence) / 2) / math.log(target))
    if rate <= target:
        return None
    from scipy.stats import beta

    def ok(n: int) -> bool:
        k = math.floor(rate * n)  # never fewer disagreements than observed, pro rata
        return k > 0 and float(beta.ppf((1 - confidence) / 2, k, n - k + 1)) >= target

    hi = 1
    while not ok(hi):
        hi *= 2
        if hi > 10**8:
            return None
    lo = hi // 2
    while lo + 1 < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def _step(
    task: str | None, kind: str, severity: str, title: str, detail: str, command: str | None = None
) -> dict[str, Any]:
    return {
        "task": task,
        "kind": kind,
        "severity": severity,
        "title": title,
        "detail": detail,
        "command": command,
    }


def what_it_would_take(cal: dict[str, Any]) -> str | None:
    """One paragraph from the calibration's ``what_if``: coverage and $ saved per 1k requests at other
    α, the estimated labels for the configured α, and the labels that hold the student back."""
    w = cal.get("what_if")
    if not w:
        return None
    parts = []
    for r in w.get("by_alpha", []):
        usd = "" if r.get("saved_usd_per_1k") is None else f", ${r['saved_usd_per_1k']:.2f} saved per 1k requests"
        parts.append(f"α = {_pct(r['alpha'])}: {_pct(r['coverage'])} certified{usd}")
    text = "At the same calibration rows: " + "; ".join(parts) + "."
    need = w.get("labels_needed")
    if need and need["coverage"] > cal["coverage"] and need["more"] > 0:
        text += (f" Estimate: about {need['more']:,} more teacher labels would certify α = {_pct(cal['alpha'])} at "
                 f"about {_pct(need['coverage'])} coverage, if the error rate stays at the "
                 f"{_pct(need['observed_risk'])} observed now.")
    elif need is None:
        text += f" No confident share errs less than α = {_pct(cal['alpha'])}: more labels alone will not do it."
    held = w.get("held_back_by") or []
    if held:
        text += " Held back by: " + ", ".join(f"{h['label']} ({_pct(h['share_of_loss'])} of the confident errors)"
                                               for h in held[:3]) + "."
    return text


def _task_steps(name: str, t: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    life = t.get("lifecycle") or {}
    if life.get("state") == "suspended":
        sus = life.get("suspended") or {}
        out.append(_step(name, "suspended", "action", f"{name} is suspended: every request goes to the teacher",
                         f"since {sus.get('since', '?')}: {sus.get('reason', '')}. Its teacher answers are labels; "
                         "retrain when enough have come in (the gate promotes the new version only if it "
                         "certifies alpha on labels newer than its training data).", f"downsize retrain {name}"))
    cal = t["calibration"]
    shadow = t["mode"] == "shadow"
    decided = sum(t["by_answered_by"].get(k, 0) for k in ("student", "teacher", "student_fallback"))

    # -- shadow mode: is there enough to train (or to go live)? --------------------------
    if shadow:
        lab = t.get("labelled_examples") or {}
        total = lab.get("total", 0)
        if (
            t["student"] is None
            and total >= SHADOW_MIN_LABELLED
            and (
                lab.get("distinct_shadow_labels", 0) >= SHADOW_MIN_LABELS
                or lab.get("from_labels_table", 0)
            )
        ):
            out.append(
                _step(
                    name,
                    "train_student",
                    "action",
                    f"Train a student for {name}",
                    f"{total} distinct texts carry a teacher label (≥ {SHADOW_MIN_LABELLED}); the "
                    "teacher still answers every request in shadow mode.",
                    f"downsize train {name}",
                )
            )
        elif t["student"] is not None and cal is not None and cal["threshold"] is not None:
            out.append(
                _step(
                    name,
                    "go_live",
                    "info",
                    f"{name} is ready to leave shadow mode",
                    f"student v{cal['student_version']} is calibrated (λ = {cal['threshold']:.3f}, "
                    f"coverage {_pct(cal['coverage'])}); set `mode: cascade` to let it answer.",
                )
            )
        return out

    # -- calibration -------------------------------------------------------------------
    if t["student"] is None and (decided or t["in_config"]):
        out.append(
            _step(
                name,
                "train",
                "action",
                f"Train a student for {name}",
                "no student has been trained yet, so the teacher answers everything.",
                f"downsize train {name}",
            )
        )
    elif cal is None and t["student"] is not None:
        out.append(
            _step(
                name,
                "calibrate",
                "action",
                f"Calibrate {name}",
                "no calibration has been run: without a threshold the student may not answer.",
                f"downsize calibrate {name}",
            )
        )
    elif cal is not None:
        if cal["threshold"] is None:
            out.append(
                _step(
                    name,
                    "no_threshold",
                    "warning",
                    f"{name}: no threshold meets α",
                    f"calibration found no threshold with disagreement ≤ {_pct(cal['alpha'])} at "
                    f"δ = {cal['delta']:g} over {cal['n_calib']} calibration rows, so the teacher answers "
                    "everything: add labelled examples and retrain, or relax alpha.",
                    f"downsize train {name}",
                )
            )
        wit = what_it_would_take(cal)
        if wit is not None and cal["coverage"] < 0.5:
            out.append(_step(name, "what_it_would_take", "info", f"{name}: what it would take", wit,
                             f"downsize calibrate {name} --alpha 0.05"))
        if t["student"] is not None and cal["student_version_id"] != t["student"]["id"]:
            out.append(
                _step(
                    name,
                    "recalibrate",
                    "action",
                    f"Recalibrate {name}",
                    f"the latest student v{t['student']['version']} is not calibrated (the latest "
                    f"calibration is for v{cal['student_version']}).",
                    f"downsize calibrate {name}",
                )
            )

    # -- escalation drift --------------------------------------------------------------
    tr = t.get("escalation_trend")
    if (
        tr
        and min(tr["earlier"]["n"], tr["later"]["n"]) >= DRIFT_MIN_DECISIONS
        and tr["rise"] >= DRIFT_MIN_RISE
        and tr["p_value"] < DRIFT_MAX_P
    ):
        out.append(
            _step(
                name,
                "retrain",
                "action",
                f"Retrain {name}: escalations are rising",
                f"the escalation rate rose from {_pct(tr['earlier']['rate'])} to "
                f"{_pct(tr['later']['rate'])} ({tr['comparison']}; n = {tr['earlier']['n']} / "
                f"{tr['later']['n']}, p = {tr['p_value']:.2g}). The traffic may have drifted from what "
                "the student learnt: retrain on recent teacher labels, then recalibrate.",
                f"downsize train {name}",
            )
        )

    # -- labels the student cannot handle -----------------------------------------------
    for row in t["label_escalation"]:
        if row["n"] >= LABEL_MIN_REQUESTS and row["rate"] >= LABEL_MAX_ESCALATION:
            out.append(
                _step(
                    name,
                    "add_examples",
                    "action",
                    f"Add examples for label {row['label']!r}",
                    f"{name}: {row['escalated']} of {row['n']} requests answered {row['label']!r} "
                    f"({_pct(row['rate'])}) went to the teacher; the student is rarely confident "
                    "about this label. Label more such texts and retrain.",
                )
            )

    # -- the live guarantee: spot-check agreement vs 1 - alpha ----------------------------
    sc = t["spot_checks"]
    alpha = cal["alpha"] if cal else t["alpha"]
    if alpha is not None and t["student_answered"]:
        target = 1 - alpha
        if sc["n"] == 0:
            out.append(
                _step(
                    name,
                    "spot_checks",
                    "info",
                    f"{name}: no spot checks yet",
                    f"{t['student_answered']} student answers were never re-checked by the teacher; "
                    "set spot_check_rate > 0 to watch the guarantee live.",
                )
            )
        elif sc["lo"] < target:
            conf = sc["confidence"]
            if sc["hi"] < target:
                out.append(
                    _step(
                        name,
                        "guarantee",
                        "action",
                        f"{name}: the guarantee does not hold",
                        f"spot-check agreement {_pct(sc['rate'])} ({sc['agree']}/{sc['n']}, "
                        f"{conf:.0%} interval {_pct(sc['lo'])}–{_pct(sc['hi'])}) is below "
                        f"1 − α = {_pct(target)}. Recalibrate and check the traffic for drift.",
                        f"downsize calibrate {name}",
                    )
                )
            elif sc["rate"] < target:
                out.append(
                    _step(
                        name,
                        "guarantee",
                        "warning",
                        f"{name}: the guarantee may no longer hold",
                        f"spot-check agreement {_pct(sc['rate'])} ({sc['agree']}/{sc['n']}; lower "
                        f"bound {_pct(sc['lo'])}) is under 1 − α = {_pct(target)}: recalibrate / check "
                        "for drift.",
                        f"downsize calibrate {name}",
                    )
                )
            else:
                need = spot_checks_needed(alpha, conf, sc["rate"])
                more = (
                    f"at this agreement rate, confirming it takes about {need:,} checks"
                    if need is not None
                    else "at this agreement rate no number of checks would confirm it"
                )
                out.append(
                    _step(
                        name,
                        "spot_checks",
                        "info",
                        f"{name}: too few spot checks to confirm",
                        f"agreement {_pct(sc['rate'])} on {sc['n']} checks has lower bound "
                        f"{_pct(sc['lo'])} < 1 − α = {_pct(target)}; {more}. Raise spot_check_rate "
                        "or wait.",
                    )
                )

    # -- operations ------------------------------------------------------------------------
    fb = t["by_answered_by"].get("student_fallback", 0)
    if fb >= FALLBACK_MIN and (t["fallback_share"] or 0) >= FALLBACK_MAX_SHARE:
        out.append(
            _step(
                name,
                "teacher_failing",
                "warning",
                f"{name}: the teacher is failing",
                f"{fb} requests ({_pct(t['fallback_share'])}) got the student's below-threshold "
                "answer because the teacher failed; those answers carry no guarantee.",
            )
        )
    err = t["errors"]
    if err >= ERROR_MIN and err / max(1, t["requests"]) >= ERROR_MAX_SHARE:
        out.append(
            _step(
                name,
                "errors",
                "warning",
                f"{name}: {err} requests failed",
                f"{_pct(err / t['requests'])} of requests ended in an error; see request_log.reason.",
            )
        )
    if t["requests"] and t["cost"]["teacher_only_usd"] > 0 and t["cost"]["savings_usd"] < 0:
        out.append(
            _step(
                name,
                "no_savings",
                "warning",
                f"{name} costs more than the teacher alone",
                f"spent ${t['cost']['spent_usd']:.2f} vs ${t['cost']['teacher_only_usd']:.2f} "
                f"teacher-only (local share {_pct(t['local_share'])}); spot checks and escalations "
                "outweigh what the student saves.",
            )
        )
    return out


def advise(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Every step for every task in the report, most urgent first."""
    steps = [s for name, t in report["tasks"].items() for s in _task_steps(name, t)]
    return sorted(steps, key=lambda s: _ORDER[s["severity"]])
