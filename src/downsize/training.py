"""Training and calibrating a task's student from what the store holds.

``train_task`` splits the task's labelled examples (effective labels: gold > human > teacher)
into a training part and a held-out calibration part (stratified, seeded), fits the student
(``auto`` picks among the candidates by calibrated coverage at the task's α), saves it as a new
version, and records the split so that ``calibrate_task`` uses exactly the held-out rows.
"""

from __future__ import annotations

import inspect
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from .calibration import ThresholdCalibrator, min_calibration_size
from .config import Config
from .errors import AnswerError, CalibrationError, CorruptArtifactError, StudentError
from .store import CalibrationRun, Store, StudentVersion
from .students import FAMILIES, OPT_IN, available, load_student, make_student
from .students.artifacts import sha256_bytes
from .tasks import TaskConfig

__all__ = [
    "TrainResult",
    "calibrate_task",
    "candidate_kinds",
    "embedding_cache_dir",
    "load_student_version",
    "student_dir",
    "train_task",
]


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
    #: Labels too rare to learn (label → why): the student never gives them, the teacher answers.
    teacher_only: dict[str, str] = field(default_factory=dict)
    #: Labelled rows with such a label (none trained on; those in the calibration split count as errors).
    teacher_only_rows: int = 0
    n_synthetic: int = 0  # synthetic rows in the training part (after synthetic_weight)
    notes: list[str] = field(default_factory=list)


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


#: The label source of ``downsize synth``: trained on (with ``synthetic_weight``), never calibrated on.
SYNTHETIC = "synthetic"
_MIN_SPLIT = 10  # real examples below 2x this: no calibration split


def _sha256(path: Path) -> str:
    return sha256_bytes(path.read_bytes())


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _student(task: TaskConfig, family: str, seed: int, params: dict[str, dict[str, Any]]) -> Any:
    """A new ``family`` student for the task: the seed, what the task's kind fixes
    (:meth:`~downsize.tasks.TaskConfig.student_params`), then the caller's parameters."""
    return make_student(family, task_kind=task.kind,
                        **{"random_state": seed, **task.student_params(family), **params.get(family, {})})


def embedding_cache_dir(home: str | os.PathLike[str]) -> Path:
    """Where MiniLM sentence vectors are cached (SQLite, keyed by text hash and model), so that
    re-training and re-calibrating a project never embeds the same text twice."""
    return Path(home) / "cache" / "embeddings"


def _with_embedding_cache(task: TaskConfig, params: dict[str, dict[str, Any]],
                          home: Path) -> dict[str, dict[str, Any]]:
    """``params`` plus the project's embedding cache for every family that takes a ``cache_dir``."""
    out = {f: dict(p) for f, p in params.items()}
    for family in task.students:
        cls = FAMILIES.get((task.kind, family), (None,))[0]
        if cls is not None and "cache_dir" in inspect.signature(cls).parameters:
            out.setdefault(family, {}).setdefault("cache_dir", os.fspath(embedding_cache_dir(home)))
    return out


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
        loss = task.disagreements(pred, y_sel)
        correct = loss == 0
        try:
            cal = ThresholdCalibrator(alpha=alpha, delta=task.delta, bound=task.calibration_bound()).fit(conf, loss=loss)
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

    Labels with fewer than the task's ``min_examples_per_label`` examples are left to the teacher
    (:meth:`~downsize.tasks.TaskConfig.teacher_only`): their rows are not trained on but keep their
    share of the calibration split, where :func:`calibrate_task` counts any student answer on them
    as an error; the version records them (``metrics["teacher_only"]``: label → why).

    Raises
    ------
    StudentError
        Fewer than two labels with enough examples (naming the ones left to the teacher), unknown labels.
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
    real = [e for e in examples if e.source != SYNTHETIC]
    synth = [e for e in examples if e.source == SYNTHETIC]
    X = [e.text for e in real]
    y = _answers(task_name, task, real)
    y_syn = _answers(task_name, task, synth)
    rare = task.teacher_only(y + y_syn)
    learn = np.array([not task.needs_teacher(a, rare) for a in y], dtype=bool)
    learn_syn = np.array([not task.needs_teacher(a, rare) for a in y_syn], dtype=bool)
    try:
        counts = task.check_training(task_name, [a for a, k in zip(y, learn) if k]
                                     + [a for a, k in zip(y_syn, learn_syn) if k])
    except StudentError as exc:
        if not rare:
            raise
        raise StudentError(f"{exc}; left to the teacher: {_rare_text(rare)}") from None
    ids = np.array([e.example_id for e in real])
    notes: list[str] = []
    if len(real) >= 2 * _MIN_SPLIT:
        idx_train, idx_cal = _split(task, y, learn, seed)
    else:  # nothing (or next to nothing) real: train on what there is, calibrate later on real traffic
        idx_train, idx_cal = np.arange(len(y)), np.arange(0)
        notes.append(f"only {len(real)} real labelled example(s) besides {len(synth)} synthetic ones: no calibration "
                     f"split; label real traffic (`downsize label`, `downsize audit import`) before `downsize calibrate`")
    idx_train = np.array([i for i in idx_train if learn[i]], dtype=int)  # the rare rows teach nothing
    # synthetic_weight w: each synthetic row is repeated floor(w) times, plus once more with probability
    # w - floor(w) (seeded): a weight every student family takes (their fit has no sample_weight)
    rng = np.random.default_rng(seed)
    w = task.synthetic_weight
    copies = (np.floor(w).astype(int) + (rng.random(len(synth)) < w - np.floor(w))) * learn_syn
    X_tr = [X[i] for i in idx_train] + [e.text for e, c in zip(synth, copies) for _ in range(c)]
    y_tr = [y[i] for i in idx_train] + [a for a, c in zip(y_syn, copies) for _ in range(c)]
    n_syn = int(copies.sum())
    if synth:
        notes.append(f"{len(synth)} synthetic example(s) in training with weight {w:g} ({n_syn} rows); "
                     "none in the calibration split")
    params = _with_embedding_cache(task, student_params or {}, config.home_dir())
    selection: list[dict[str, Any]] = []
    reason = f"configured student {kind!r}"
    if kind == "auto":
        kind, selection, reason = _select(task, candidate_kinds(task), X_tr, y_tr, seed, params)
    t0 = time.perf_counter()
    student = _student(task, kind, seed, params).fit(X_tr, task.targets(y_tr))
    train_s = time.perf_counter() - t0
    X_cal = [X[i] for i in idx_cal]
    agreement = (float(np.mean(task.disagreements(task.score(student, X_cal)[0], [y[i] for i in idx_cal]) == 0))
                 if X_cal else float("nan"))

    version = store.next_student_version(task_name)
    rel = Path("students") / task_name / f"v{version}"  # stored relative to the home: a moved project works
    path = config.home_dir() / rel
    if path.exists():
        raise StudentError(f"{path} already exists; refusing to overwrite a saved student")
    student.save(path)
    manifest = path / "manifest.json"
    row = StudentVersion(
        task=task_name, version=version, kind=kind, path=rel.as_posix(), sha256=_sha256(manifest),
        size_bytes=_dir_size(path), labels=[str(c) for c in getattr(student, "classes_", [])], n_train=len(X_tr),
        n_calib=len(idx_cal), calib_example_ids=[int(ids[i]) for i in idx_cal], train_seconds=train_s,
        metrics={"holdout_agreement": agreement, "label_counts": dict(counts), "selection": selection,
                 "selection_reason": reason, "seed": seed, "teacher_only": dict(rare), "n_synthetic": n_syn,
                 "notes": notes,
                 "teacher_only_rows": {"calibration": int((~learn[idx_cal]).sum()),
                                       "not_trained_on": int((~learn).sum() - (~learn[idx_cal]).sum())}},
    )
    store.add(row)
    return TrainResult(task_name, version, kind, row.id, str(path), len(X_tr), len(idx_cal), train_s,
                       row.size_bytes, agreement, dict(counts), selection, reason, dict(rare),
                       int((~learn).sum()), n_syn, notes)


#: The stratum of the teacher-only rows in the train/calibration split.
_TEACHER_ONLY = "(teacher only)"


def _split(task: TaskConfig, y: list[Any], learn: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and calibration indices: stratified by the kind's strata, the teacher-only rows one
    stratum of their own, so the calibration split holds them in about their share of the data
    (it must: live traffic has them, and the student gets them wrong). A single teacher-only row
    (too few to stratify) goes to the calibration split."""
    idx = np.arange(len(y))
    strata = task.strata(y)
    lone = idx[~learn] if (~learn).sum() == 1 else idx[:0]
    if strata is not None:
        strata = [s if k else _TEACHER_ONLY for s, k in zip(strata, learn)]
    if len(lone):
        keep = idx != lone[0]
        idx = idx[keep]
        strata = None if strata is None else [s for s, k in zip(strata, keep) if k]
    tr, cal = train_test_split(idx, test_size=task.calibration_fraction, stratify=strata, random_state=seed)
    return tr, np.concatenate([cal, lone])


def _rare_text(rare: dict[str, str]) -> str:
    return "; ".join(f"{lab!r} ({why})" for lab, why in sorted(rare.items()))


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


def load_student_version(sv: StudentVersion, home: str | os.PathLike[str] | None = None, *,
                         embedding_cache: bool = False) -> Any:
    """Load a saved student (its path resolved by :func:`student_dir`), checking its manifest against
    the checksum in the store. ``embedding_cache``: MiniLM students read and write the project's
    embedding cache (:func:`embedding_cache_dir`; calibration does, the request path does not)."""
    path = student_dir(sv, home)
    manifest = path / "manifest.json"
    if not manifest.exists():
        raise StudentError(f"student {sv.task} v{sv.version}: {manifest} is missing (was {path} moved or deleted?)")
    if _sha256(manifest) != sv.sha256:
        raise CorruptArtifactError(
            f"student {sv.task} v{sv.version}: {manifest} does not match the checksum recorded when it was "
            "trained; the file was modified or corrupted: retrain with `downsize train`"
        )
    if embedding_cache and home is not None:
        return load_student(path, cache_dir=os.fspath(embedding_cache_dir(home)))
    return load_student(path)


def calibrate_task(store: Store, config: Config, task_name: str, *, alpha: float | None = None,
                   delta: float | None = None, save: bool = True,
                   force: bool = False) -> tuple[CalibrationRun, ThresholdCalibrator]:
    """Pick λ for the latest student on its held-out split and record the run.

    ``save=False`` (``calibrate --dry-run``) computes and returns the run without recording it. A
    run in which no threshold qualifies at another α or δ is not recorded over a calibration of the
    same student that has one (that would send every request to the teacher at once) unless
    ``force``; at the same α and δ it is (the labels or the reference changed, and the old λ no
    longer holds).

    With the task's ``reference: human`` the split's rows labelled by people are the reference once
    there are enough of them (see :func:`_reference_rows`); ``details["reference_rows"]`` says how
    many there were and what was used, and the guarantee then reads "disagrees with your reviewers".

    Raises
    ------
    CalibrationError
        No student yet, too little calibration data for the requested α and δ, or (without
        ``force``) nothing qualifies at an α or δ other than the current calibration's, which has a
        threshold.
    """
    task = config.task(task_name)
    alpha = task.alpha if alpha is None else alpha
    delta = task.delta if delta is None else delta
    sv = store.latest_student(task_name)
    if sv is None:
        raise CalibrationError(f"task {task_name!r} has no trained student: run `downsize train {task_name}` first")
    if not sv.calib_example_ids:
        raise CalibrationError(
            f"task {task_name!r}: student v{sv.version} was trained without a calibration split (its labels are "
            "synthetic, or too few are real): calibration needs real traffic. Label some with `downsize label "
            f"{task_name} DATA` or `downsize audit import LOGS --task {task_name}`, then train and calibrate again")
    student = load_student_version(sv, config.home_dir(), embedding_cache=True)
    cal_ids = set(sv.calib_example_ids)
    effective = {e.example_id: e for e in store.labelled_examples(task_name) if e.example_id in cal_ids}
    if not effective:
        raise CalibrationError(f"task {task_name!r}: the calibration split of v{sv.version} has no labelled rows")
    exs = [effective[i] for i in sorted(effective)]
    exs, people = _reference_rows(task, exs, alpha, delta)
    pred, conf = task.score(student, [e.text for e in exs])
    refs = _answers(task_name, task, exs)
    rare = set((sv.metrics or {}).get("teacher_only") or {})
    teacher_only = np.array([task.needs_teacher(r, rare) for r in refs], dtype=bool)
    loss = task.disagreements(pred, refs)
    # the student could not have given a teacher-only answer: any answer it gives there is an error
    loss[teacher_only] = 1.0
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
        errors_answered=int(cal.errors_answered_), reference=reference, method=f"ltt-{bound.replace('_', '-')}-fst",
        details={"guarantee": guarantee, "risk_upper": _f(getattr(cal, "risk_upper_", None)),
                 "curve": curve, "student_version": sv.version,
                 "agreement_all": float(correct.mean()), "mean_loss": float(loss.mean()),
                 "loss_answered": float(cal.loss_answered_), "reference_rows": people,
                 "teacher_only": {"labels": sorted(rare), "rows": int(teacher_only.sum())}},
    )
    if not save:
        return run, cal
    prev = None if force or run.threshold is not None else store.latest_calibration(task_name, student_version_id=sv.id)
    # a new α or δ that nothing meets is a setting to reconsider; at the same α and δ the evidence
    # changed (corrected labels, another reference) and the working threshold no longer holds
    if prev is not None and prev.threshold is not None and (prev.alpha, prev.delta) != (alpha, delta):
        raise CalibrationError(
            f"task {task_name!r}: no threshold qualifies at alpha={alpha:g}, delta={delta:g} on {run.n_calib:,} "
            f"held-out rows of v{sv.version}; kept the current calibration (threshold {prev.threshold:.4f} at "
            f"alpha={prev.alpha:g}, {prev.coverage:.1%} answered locally). Pass --force (force=True) to replace "
            "it and send every request to the teacher, or --dry-run to see the figures")
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
