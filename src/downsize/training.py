"""Training and calibrating a task's student from what the store holds.

``train_task`` splits the task's labelled examples (effective labels: gold > human > teacher)
into a training part and a held-out calibration part (stratified, seeded), fits the student
(``auto`` picks among the candidates by calibrated coverage at the task's α), saves it as a new
version, and records the split so that ``calibrate_task`` uses exactly the held-out rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from .students.artifacts import sha256_bytes
from .calibration import ThresholdCalibrator, min_calibration_size
from .config import Config
from .tasks import TaskConfig
from .errors import AnswerError, CalibrationError, CorruptArtifactError, StudentError
from .store import CalibrationRun, Store, StudentVersion
from .students import OPT_IN, available, load_student, make_student

__all__ = ["TrainResult", "train_task", "calibrate_task", "load_student_version", "candidate_kinds"]


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


def candidate_kinds(task: TaskConfig) -> list[str]:
    """Students ``auto`` chooses among: the families that fit the task's kind and are installed
    (not the opt-in ones, :data:`~downsize.students.OPT_IN`: their fit takes minutes)."""
    return [f for f in task.students if f not in OPT_IN and available(f, task_kind=task.kind)]


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


def _select(task: TaskConfig, kinds: list[str], X: list[str], y: list[Any], seed: int,
            params: dict[str, Any]) -> tuple[str, list[dict[str, Any]], str]:
    """Fit each candidate on part of the training data; keep the best calibrated coverage at α."""
    if len(kinds) == 1:
        return kinds[0], [], f"only {kinds[0]!r} is available"
    alpha = task.alpha
    X_fit, X_sel, y_fit, y_sel = train_test_split(X, y, test_size=0.3, stratify=task.strata(y), random_state=seed)
    rows = []
    for kind in kinds:
        t0 = time.perf_counter()
        st = _student(task, kind, seed, params).fit(X_fit, task.targets(y_fit))
        fit_s = time.perf_counter() - t0
        pred, conf = task.score(st, X_sel)
        correct = task.disagreements(pred, y_sel) == 0
        try:
            cal = ThresholdCalibrator(alpha=alpha, delta=task.delta, bound=task.bound).fit(conf, correct)
            cov = cal.coverage_ if cal.threshold_ is not None else 0.0
        except CalibrationError:
            cov = 0.0
        rows.append({"kind": kind, "coverage": float(cov), "agreement": float(correct.mean()), "fit_seconds": fit_s})
    # best coverage; ties (within half a point) go to the cheaper candidate (listed first)
    best = max(rows, key=lambda r: r["coverage"])
    for r in rows:
        if r["coverage"] >= best["coverage"] - 0.005:
            best = r
            break
    others = "; ".join(f"{r['kind']}: {r['coverage']:.1%} covered, {r['agreement']:.1%} agreement" for r in rows)
    reason = f"picked {best['kind']!r} for the highest calibrated coverage at alpha={alpha:g} ({others})"
    return best["kind"], rows, reason


def train_task(store: Store, config: Config, task_name: str, *, kind: str | None = None,
               seed: int = 0, student_params: dict[str, dict[str, Any]] | None = None) -> TrainResult:
    """Train a new student version for ``task_name`` from the store's labels.

    Raises
    ------
    StudentError
        One label only, too few examples for a label (named with its count), unknown labels.
    """
    task = config.task(task_name)
    kind = kind or task.student
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
    idx_train, idx_cal = train_test_split(
        np.arange(len(X)), test_size=task.calibration_fraction, stratify=task.strata(y), random_state=seed
    )
    X_tr = [X[i] for i in idx_train]
    y_tr = [y[i] for i in idx_train]
    params = student_params or {}
    selection: list[dict[str, Any]] = []
    reason = f"configured student {kind!r}"
    if kind == "auto":
        kind, selection, reason = _select(task, candidate_kinds(task), X_tr, y_tr, seed, params)
    t0 = time.perf_counter()
    student = _student(task, kind, seed, params).fit(X_tr, task.targets(y_tr))
    train_s = time.perf_counter() - t0
    X_cal = [X[i] for i in idx_cal]
    agreement = float(np.mean(task.disagreements(task.score(student, X_cal)[0], [y[i] for i in idx_cal]) == 0))

    version = store.next_student_version(task_name)
    path = config.home_dir() / "students" / task_name / f"v{version}"
    if path.exists():
        raise StudentError(f"{path} already exists; refusing to overwrite a saved student")
    student.save(path)
    manifest = path / "manifest.json"
    row = StudentVersion(
        task=task_name, version=version, kind=kind, path=str(path), sha256=_sha256(manifest),
        size_bytes=_dir_size(path), labels=[str(c) for c in getattr(student, "classes_", [])], n_train=len(X_tr),
        n_calib=len(idx_cal), calib_example_ids=[int(ids[i]) for i in idx_cal], train_seconds=train_s,
        metrics={"holdout_agreement": agreement, "label_counts": dict(counts), "selection": selection,
                 "selection_reason": reason, "seed": seed},
    )
    store.add(row)
    return TrainResult(task_name, version, kind, row.id, str(path), len(X_tr), len(idx_cal), train_s,
                       row.size_bytes, agreement, dict(counts), selection, reason)


def load_student_version(sv: StudentVersion) -> Any:
    """Load a saved student, checking its manifest against the checksum in the store."""
    path = Path(sv.path)
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
                   delta: float | None = None) -> tuple[CalibrationRun, ThresholdCalibrator]:
    """Pick λ for the latest student on its held-out split and record the run.

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
    student = load_student_version(sv)
    cal_ids = set(sv.calib_example_ids)
    effective = {e.example_id: e for e in store.labelled_examples(task_name) if e.example_id in cal_ids}
    if not effective:
        raise CalibrationError(f"task {task_name!r}: the calibration split of v{sv.version} has no labelled rows")
    exs = [effective[i] for i in sorted(effective)]
    exs, people = _reference_rows(task, exs, alpha, delta)
    pred, conf = task.score(student, [e.text for e in exs])
    correct = task.disagreements(pred, _answers(task_name, task, exs)) == 0
    sources = {e.source for e in exs}
    reference = "human" if people["used"] else sources.pop() if len(sources) == 1 else "mixed"
    cal = ThresholdCalibrator(alpha=alpha, delta=delta, bound=task.bound).fit(conf, correct)
    guarantee = cal.guarantee_
    if people["used"]:
        guarantee = guarantee.replace("with the reference", "with your reviewers")
    curve = _thin([dict(r) for r in getattr(cal, "curve_", [])], cal.threshold_)
    run = CalibrationRun(
        task=task_name, student_version_id=sv.id, alpha=alpha, delta=delta,
        threshold=None if cal.threshold_ is None else float(cal.threshold_),
        coverage=float(cal.coverage_), coverage_lo=float(cal.coverage_interval_[0]),
        coverage_hi=float(cal.coverage_interval_[1]), n_calib=int(cal.n_), n_answered=int(cal.n_answered_),
        errors_answered=int(cal.errors_answered_), reference=reference, method=f"ltt-{task.bound.replace('_', '-')}-fst",
        details={"guarantee": guarantee, "risk_upper": _f(getattr(cal, "risk_upper_", None)),
                 "curve": curve, "student_version": sv.version,
                 "agreement_all": float(correct.mean()), "reference_rows": people},
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


def _thin(curve: list[dict[str, Any]], threshold: float | None, points: int = 200) -> list[dict[str, Any]]:
    """At most ``points`` evenly spaced rows of the calibration curve (plus the chosen λ) for the store."""
    if len(curve) <= points:
        return curve
    keep = set(np.linspace(0, len(curve) - 1, points).round().astype(int).tolist())
    keep |= {i for i, r in enumerate(curve) if threshold is not None and r.get("threshold") == threshold}
    return [curve[i] for i in sorted(keep)]


def _f(x: Any) -> float | None:
    return None if x is None else float(x)
