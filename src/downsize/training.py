"""Training and calibrating a task's student from what the store holds.

``train_task`` cross-fits the task's labelled examples (effective labels: gold > human > teacher):
each row is answered by a student fitted on the other folds, ``auto`` keeps the candidate (or
ensemble) whose out-of-fold answers certify the most coverage by the calibration's own rule, and
the winner is refitted on every row and saved as a new version with the out-of-fold answers, on
which ``calibrate_task`` then calibrates. ``calibration_folds: 0`` holds out a split instead.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from .students.artifacts import sha256_bytes
from .calibration import ThresholdCalibrator, min_calibration_size
from .calibration.whatif import certified_by_alpha, held_back_by, labels_needed
from .calibration.crossfit import Event, OutOfFold, ensemble_oof, ensembles, folds, judge, out_of_fold
from .config import Config
from .tasks import TaskConfig
from .errors import AnswerError, CalibrationError, CorruptArtifactError, StudentError
from .store import CalibrationRun, Store, StudentVersion
from .students import EnsembleStudent, available, load_student, make_student

__all__ = ["TrainResult", "train_task", "calibrate_task", "load_student_version", "student_dir",
           "candidate_kinds"]


@dataclass
class TrainResult:
    """What ``downsize train`` prints."""

    task: str
    version: int
    kind: str
    student_version_id: int
    path: str
    n_train: int
    n_calib: int
    train_seconds: float
    size_bytes: int
    holdout_agreement: float
    label_counts: dict[str, int]
    selection: list[dict[str, Any]] = field(default_factory=list)
    selection_reason: str = ""
    calibration: str = "held out"


def candidate_kinds(task: TaskConfig) -> list[str]:
    """Students ``auto`` fits: the families that fit the task's kind and are installed (an ensemble
    is made of them, not fitted on its own)."""
    return [f for f in task.students if f != "ensemble" and available(f, task_kind=task.kind)]


def _answers(task_name: str, task: TaskConfig, examples: list[Any]) -> list[Any]:
    """The examples' effective labels as the kind's answers (the store holds their text form)."""
    out, bad = [], []
    for e in examples:
        try:
            out.append(task.decode(e.label))
        except AnswerError as exc:
            bad.append((e, str(exc)))
    if bad:
        values = sorted({e.label for e, _ in bad})
        e, why = bad[0]
        raise StudentError(
            f"task {task_name!r}: labels {values[:10]} are not among the configured labels of the task "
            f"({len(bad)} example(s), e.g. #{e.example_id} from {e.source}: {why}); fix the labels in the store "
            "or the task's config")
    return out


def _sha256(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _student(task: TaskConfig, family: str, seed: int, params: dict[str, dict[str, Any]]) -> Any:
    """A new ``family`` student for the task: the seed, what the task's kind fixes
    (:meth:`~downsize.tasks.TaskConfig.student_params`), then the caller's parameters."""
    return make_student(family, task_kind=task.kind,
                        **{"random_state": seed, **task.student_params(family), **params.get(family, {})})


def _pick(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Best certified coverage; a tie (within half a point) goes to the cheaper candidate (listed first)."""
    top = max(r["coverage"] for r in rows)
    return next(r for r in rows if r["coverage"] >= top - 0.005)


def _describe(r: dict[str, Any]) -> str:
    folds = r.get("coverage_folds") or []
    spread = f" (folds {min(folds):.1%}–{max(folds):.1%})" if folds else ""
    return (f"{r['kind']}: certified {r['coverage']:.1%}{spread}, {r['agreement']:.1%} agreement, "
            f"{r['fit_seconds']:.1f} s of fits")


def _fit_final(task: TaskConfig, best: dict[str, Any], X: list[str], y: list[Any], make: Any) -> Any:
    """The served model: the winner refitted on every training row (an ensemble: each member)."""
    if best["members"]:
        return EnsembleStudent.from_fitted({f: make(f).fit(X, task.targets(y)) for f in best["members"]})
    return make(best["kind"]).fit(X, task.targets(y))


def _fit_and_judge(task: TaskConfig, kind: str, X: list[str], y: list[Any], fold_of: np.ndarray, make: Any,
                   event: Event) -> tuple[list[dict[str, Any]], dict[str, Any], OutOfFold]:
    """Out-of-fold answers of every candidate (K fits each), each judged by the final rule; the winner."""
    auto = kind == "auto"
    families = candidate_kinds(task) if kind in ("auto", "ensemble") else [kind]
    if kind == "ensemble" and len(families) < 2:
        raise StudentError(f"student 'ensemble' needs at least two installed families, have {families}")
    k = int(fold_of.max()) + 1
    combos = auto and "ensemble" in task.students and len(families) > 1
    event(f"{'auto will try' if auto else 'fitting'} {', '.join(families)}"
          + (" and their ensembles (averaged probabilities: no extra fits)" if combos else "")
          + f": {k} fits each on {len(X):,} rows (out-of-fold answers for every row), then refit the "
          + ("winner" if auto else "student") + " on all of them")
    oofs = [out_of_fold(task, f, X, y, fold_of, make, event) for f in families]
    if kind == "ensemble":
        ens = ensemble_oof(task, oofs)
        if ens is None:
            raise StudentError(f"the members {families} do not give probabilities over the same labels: no ensemble")
        cands = [ens]
    else:
        cands = oofs + (ensembles(oofs, task) if combos else [])
    rows = [judge(task, c, y, alpha=task.alpha, delta=task.delta) for c in cands]
    for r in rows:
        event("  " + _describe(r))
    best = _pick(rows)
    best["chosen"] = True
    return rows, best, cands[rows.index(best)]


def train_task(store: Store, config: Config, task_name: str, *, kind: str | None = None,
               seed: int = 0, student_params: dict[str, dict[str, Any]] | None = None,
               progress: Event | None = None) -> TrainResult:
    """Train a new student version for ``task_name`` from the store's labels.

    With ``calibration_folds ≥ 2`` (the default) every row gets an out-of-fold answer from a
    student fitted on the other folds; those answers are what ``calibrate_task`` calibrates on
    (every label is used) and what ``auto`` chooses by, and the served student is refitted on all
    rows (see :mod:`downsize.calibration._crossfit` for what the guarantee is then about). With
    ``calibration_folds: 0`` a ``calibration_fraction`` is held out as before (``auto`` then
    cross-fits on the training part to choose). ``progress`` receives one line per step.

    Raises
    ------
    StudentError
        One label only, too few examples for a label (named with its count), unknown labels.
    """
    task = config.task(task_name)
    kind = kind or task.student
    event: Event = progress or (lambda _line: None)
    if kind != "auto" and kind not in task.students:
        raise StudentError(f"student {kind!r} does not fit a {task.kind} task; choose one of auto, "
                           f"{', '.join(task.students)}")
    if kind != "auto" and not available(kind, task_kind=task.kind):
        make_student(kind, task_kind=task.kind)  # raises the error that says which extra to install
    examples = store.labelled_examples(task_name)
    if not examples:
        raise StudentError(f"task {task_name!r} has no labelled examples yet: run `downsize label {task_name} DATA` first")
    X = [e.text for e in examples]
    y = _answers(task_name, task, examples)
    counts = task.check_training(task_name, y)
    ids = np.array([e.example_id for e in examples])
    crossfit = task.calibration_folds >= 2
    if crossfit:
        idx_train = idx_cal = np.arange(len(X))
    else:
        idx_train, idx_cal = train_test_split(
            np.arange(len(X)), test_size=task.calibration_fraction, stratify=task.strata(y), random_state=seed)
    X_tr = [X[i] for i in idx_train]
    y_tr = [y[i] for i in idx_train]
    params = student_params or {}

    def make(family: str) -> Any:
        return _student(task, family, seed, params)

    selection: list[dict[str, Any]] = []
    reason = f"configured student {kind!r}"
    oof: OutOfFold | None = None
    t0 = time.perf_counter()
    if crossfit or kind in ("auto", "ensemble"):
        fold_of = folds(len(X_tr), max(task.calibration_folds, 3), task.strata(y_tr), seed)
        selection, best, oof = _fit_and_judge(task, kind, X_tr, y_tr, fold_of, make, event)
        if kind == "auto":
            reason = (f"picked {best['kind']!r}: the most coverage certified at alpha={task.alpha:g} on out-of-fold "
                      "answers, by the rule the calibration uses (" + "; ".join(_describe(r) for r in selection) + ")")
        kind = "ensemble" if best["members"] else best["kind"]
        event(f"refitting {best['kind']} on all {len(X_tr):,} rows")
    else:
        best = {"kind": kind, "members": []}
    student = _fit_final(task, best, X_tr, y_tr, make)
    train_s = time.perf_counter() - t0
    if crossfit and oof is not None:
        agreement = float(np.mean(task.disagreements(oof.answers, y_tr) == 0))
    else:
        X_cal = [X[i] for i in idx_cal]
        agreement = float(np.mean(task.disagreements(task.score(student, X_cal)[0], [y[i] for i in idx_cal]) == 0))

    version = store.next_student_version(task_name)
    rel = Path("students") / task_name / f"v{version}"  # stored relative to the home: a moved project works
    path = config.home_dir() / rel
    if path.exists():
        raise StudentError(f"{path} already exists; refusing to overwrite a saved student")
    student.save(path)
    manifest = path / "manifest.json"
    metrics: dict[str, Any] = {"holdout_agreement": agreement, "label_counts": dict(counts), "selection": selection,
                               "selection_reason": reason, "seed": seed}
    if crossfit and oof is not None:
        metrics["oof"] = {"folds": int(oof.fold_of.max()) + 1, "ids": [int(i) for i in ids],
                          "answers": [None if a is None else task.encode(a) for a in oof.answers],
                          "confidence": [float(c) for c in oof.confidence]}
    row = StudentVersion(
        task=task_name, version=version, kind=kind, path=rel.as_posix(), sha256=_sha256(manifest),
        size_bytes=_dir_size(path), labels=[str(c) for c in getattr(student, "classes_", [])], n_train=len(X_tr),
        n_calib=len(idx_cal), calib_example_ids=[int(ids[i]) for i in idx_cal], train_seconds=train_s,
        metrics=metrics,
    )
    store.add(row)
    return TrainResult(task_name, version, kind, row.id, str(path), len(X_tr), len(idx_cal), train_s,
                       row.size_bytes, agreement, dict(counts), selection, reason,
                       calibration=f"out-of-fold ({metrics['oof']['folds']} folds)" if "oof" in metrics else "held out")


def student_dir(sv: StudentVersion, home: str | os.PathLike[str] | None) -> Path:
    """The directory of a saved student: its stored path resolved against the project's ``home``.

    Paths are stored relative to the home (``students/<task>/v<N>``), so a moved or copied project
    loads its own files. Rows written before that hold absolute paths: used as they are, or, when
    nothing is there any more (a moved project), the same place under ``home``.

    Raises
    ------
    StudentError
        A relative path and no ``home`` to resolve it against.
    """
    p = Path(sv.path)
    if p.is_absolute():
        if home is not None and not p.exists():
            here = Path(home) / "students" / sv.task / f"v{sv.version}"
            if (here / "manifest.json").exists():
                return here
        return p
    if home is None:
        raise StudentError(f"student {sv.task} v{sv.version}: its path {sv.path!r} is relative to the project's "
                           "home, and no home was given to resolve it")
    return Path(home) / p


def load_student_version(sv: StudentVersion, home: str | os.PathLike[str] | None = None) -> Any:
    """Load a saved student (its path resolved by :func:`student_dir`), checking its manifest against
    the checksum in the store."""
    path = student_dir(sv, home)
    manifest = path / "manifest.json"
    if not manifest.exists():
        raise StudentError(f"student {sv.task} v{sv.version}: {manifest} is missing (was {path} moved or deleted?)")
    if _sha256(manifest) != sv.sha256:
        raise CorruptArtifactError(
            f"student {sv.task} v{sv.version}: {manifest} does not match the checksum recorded when it was "
            "trained; the file was modified or corrupted: retrain with `downsize train`"
        )
    return load_student(path)


def calibrate_task(store: Store, config: Config, task_name: str, *, alpha: float | None = None,
                   delta: float | None = None, cost_per_request: float | None = None
                   ) -> tuple[CalibrationRun, ThresholdCalibrator]:
    """Pick λ for the latest student on its calibration rows and record the run.

    A cross-fitted version (the default) calibrates on the out-of-fold answers stored with it, so
    every labelled row counts; an older or ``calibration_folds: 0`` version on its held-out split.

    With the task's ``reference: human`` the split's rows labelled by people are the reference once
    there are enough of them (see :func:`_reference_rows`); ``details["reference_rows"]`` says how
    many there were and what was used, and the guarantee then reads "disagrees with your reviewers".

    Raises
    ------
    CalibrationError
        No student yet, or too little calibration data for the requested α and δ.
    """
    task = config.task(task_name)
    alpha = task.alpha if alpha is None else alpha
    delta = task.delta if delta is None else delta
    sv = store.latest_student(task_name)
    if sv is None:
        raise CalibrationError(f"task {task_name!r} has no trained student: run `downsize train {task_name}` first")
    student = load_student_version(sv, config.home_dir())
    cal_ids = set(sv.calib_example_ids)
    effective = {e.example_id: e for e in store.labelled_examples(task_name) if e.example_id in cal_ids}
    if not effective:
        raise CalibrationError(f"task {task_name!r}: the calibration split of v{sv.version} has no labelled rows")
    exs = [effective[i] for i in sorted(effective)]
    oof = (sv.metrics or {}).get("oof")
    if oof:  # cross-fitted: calibrate on the stored out-of-fold answers (rows labelled since are not in it)
        by_id = {int(i): (a, c) for i, a, c in zip(oof["ids"], oof["answers"], oof["confidence"], strict=True)}
        exs = [e for e in exs if e.example_id in by_id]
    exs, people = _reference_rows(task, exs, alpha, delta)
    if oof:
        pred = [None if by_id[e.example_id][0] is None else task.decode(by_id[e.example_id][0]) for e in exs]
        conf = np.array([by_id[e.example_id][1] for e in exs], dtype=float)
    else:
        pred, conf = task.score(student, [e.text for e in exs])
    refs = _answers(task_name, task, exs)
    loss = task.disagreements(pred, refs)
    correct = loss == 0
    sources = {e.source for e in exs}
    reference = "human" if people["used"] else sources.pop() if len(sources) == 1 else "mixed"
    bound = task.calibration_bound()
    cal = ThresholdCalibrator(alpha=alpha, delta=delta, bound=bound).fit(conf, loss=loss)
    guarantee = cal.guarantee_
    if people["used"]:
        guarantee = guarantee.replace("with the reference", "with your reviewers")
    curve = _thin([dict(r) for r in getattr(cal, "curve_", [])], cal.threshold_)
    run = CalibrationRun(
        task=task_name, student_version_id=sv.id, alpha=alpha, delta=delta,
        threshold=None if cal.threshold_ is None else float(cal.threshold_),
        coverage=float(cal.coverage_), coverage_lo=float(cal.coverage_interval_[0]),
        coverage_hi=float(cal.coverage_interval_[1]), n_calib=int(cal.n_), n_answered=int(cal.n_answered_),
        errors_answered=int(cal.errors_answered_), reference=reference, method=f"ltt-{bound.replace('_', '-')}-fst" + (f"-crossfit{oof['folds']}" if oof else ""),
        details={"guarantee": guarantee, "risk_upper": _f(getattr(cal, "risk_upper_", None)),
                 "curve": curve, "student_version": sv.version,
                 "agreement_all": float(correct.mean()), "mean_loss": float(loss.mean()),
                 "loss_answered": float(cal.loss_answered_), "reference_rows": people,
                 "what_if": _what_if(task, conf, loss, refs, cal, cost_per_request)},
    )
    store.add(run)
    return run, cal


#: Label sources that are people's answers (``reference: human`` calibrates against these).
_PEOPLE = ("human", "gold")


def _reference_rows(task: TaskConfig, exs: list[Any], alpha: float, delta: float) -> tuple[list[Any], dict[str, Any]]:
    """The calibration rows the task's ``reference`` asks for, and what was decided.

    ``reference: human`` keeps only the rows whose effective label came from a person (a review
    correction or gold) once there are at least :func:`~downsize.calibration.min_calibration_size`
    of them (fewer could never pass any threshold); until then the task calibrates against its
    whole split as before, and the returned note says so. People's rows are exchangeable with
    live traffic only if the reviewed texts were (the random review sample, a gold file); the
    targeted queue over-represents hard cases, which makes λ more conservative, not less.
    """
    n_people = sum(e.source in _PEOPLE for e in exs)
    note: dict[str, Any] = {"requested": task.reference, "n_split": len(exs), "n_people": n_people, "used": False}
    if task.reference != "human":
        return exs, note
    need = min_calibration_size(alpha, delta)
    note["needed"] = need
    if n_people < need:
        note["note"] = (f"reference: human, but only {n_people} of the {len(exs)} calibration rows have a label "
                        f"from a person (need {need} at alpha={alpha:g}, delta={delta:g}); calibrated against "
                        "the split's labels as they are")
        return exs, note
    note["used"] = True
    note["note"] = f"calibrated against the {n_people} calibration rows labelled by people (of {len(exs)})"
    return [e for e in exs if e.source in _PEOPLE], note


def _what_if(task: TaskConfig, conf: np.ndarray, loss: np.ndarray, refs: list[Any], cal: ThresholdCalibrator,
             cost: float | None) -> dict[str, Any]:
    """What other α would certify (and save at ``cost`` $ per teacher request), an estimate of the
    labels the configured α needs, and the labels that hold the student back."""
    bound = task.calibration_bound()
    by_alpha = certified_by_alpha(conf, loss, delta=cal.delta, bound=bound)
    for r in by_alpha:
        r["saved_usd_per_1k"] = None if cost is None else r["coverage"] * cost * 1000
    need = labels_needed(conf, loss, alpha=cal.alpha, delta=cal.delta, bound=bound)
    region = min(1.0, cal.coverage_ + 0.1) if cal.threshold_ is not None else 0.25
    return {"by_alpha": by_alpha, "labels_needed": need, "cost_per_request_usd": cost, "n": int(len(conf)),
            "held_back_by": held_back_by(conf, loss, refs, parts=task.parts, coverage=region), "region": region}


def _thin(curve: list[dict[str, Any]], threshold: float | None, points: int = 200) -> list[dict[str, Any]]:
    """At most ``points`` evenly spaced rows of the calibration curve (plus the chosen λ) for the store."""
    if len(curve) <= points:
        return curve
    keep = set(np.linspace(0, len(curve) - 1, points).round().astype(int).tolist())
    keep |= {i for i, r in enumerate(curve) if threshold is not None and r.get("threshold") == threshold}
    return [curve[i] for i in sorted(keep)]


def _f(x: Any) -> float | None:
    return None if x is None else float(x)
