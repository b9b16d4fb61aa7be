"""Training and calibrating a task's student from what the store holds.

``train_task`` cross-fits the task's labelled examples (effective labels: gold > human > teacher):
each row is answered by a student fitted on the other folds, ``auto`` keeps the candidate (or
ensemble) whose out-of-fold answers certify the most coverage by the calibration's own rule, and
the winner is refitted on every row and saved as a new version with the out-of-fold answers, on
which ``calibrate_task`` then calibrates. ``calibration_folds: 0`` holds out a split instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import train_test_split

from ..calibration.crossfit import (
    Event,
    OutOfFold,
    ensemble_oof,
    ensembles,
    folds,
    judge,
    out_of_fold,
)
from ..config import Config
from ..errors import StudentError
from ..store import Store, StudentVersion
from ..students import OPT_IN, EnsembleStudent, available, make_student
from ..tasks import TaskConfig
from ._calibrate import calibrate_task
from ._common import (
    _MIN_SPLIT,
    SYNTHETIC,
    _answers,
    _dir_size,
    _sha256,
    _with_embedding_cache,
    embedding_cache_dir,
    load_student_version,
    student_dir,
)

__all__ = ["SYNTHETIC", "TrainResult", "calibrate_task", "candidate_kinds", "embedding_cache_dir", "rare_text",
           "load_student_version", "student_dir", "train_task"]


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
    #: Labels too rare to learn (label → why): the student never gives them, the teacher answers.
    teacher_only: dict[str, str] = field(default_factory=dict)
    #: Labelled rows with such a label (none trained on; those in the calibration split count as errors).
    teacher_only_rows: int = 0
    n_synthetic: int = 0  # synthetic rows in the training part (after synthetic_weight)
    notes: list[str] = field(default_factory=list)


def candidate_kinds(task: TaskConfig) -> list[str]:
    """Students ``auto`` fits: the families that fit the task's kind and are installed, not the
    opt-in ones (:data:`~downsize.students.OPT_IN`: their fit takes minutes); an ensemble is made of
    them, not fitted on its own."""
    return [f for f in task.students if f != "ensemble" and f not in OPT_IN and available(f, task_kind=task.kind)]

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
                   event: Event, n_real: int) -> tuple[list[dict[str, Any]], dict[str, Any], OutOfFold]:
    """Out-of-fold answers of every candidate (K fits each) on the first ``n_real`` rows (the rest,
    synthetic, only train), each judged by the final rule; the winner."""
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
    oofs = [out_of_fold(task, f, X, y, fold_of, make, event).head(n_real) for f in families]
    y = y[:n_real]
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
    rows (see :mod:`downsize.calibration.crossfit` for what the guarantee is then about). With
    ``calibration_folds: 0`` a ``calibration_fraction`` is held out as before (``auto`` then
    cross-fits on the training part to choose). ``progress`` receives one line per step.
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
    event: Event = progress or (lambda _line: None)
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
        raise StudentError(f"{exc}; left to the teacher: {rare_text(rare)}") from None
    ids = np.array([e.example_id for e in real])
    notes: list[str] = []
    crossfit = task.calibration_folds >= 2 and len(real) >= 2 * _MIN_SPLIT
    if crossfit:  # every real row calibrates (the rare ones with the refit's answers: it never saw them)
        idx_cal = np.arange(len(X))
        idx_train = np.flatnonzero(learn)
    elif len(real) >= 2 * _MIN_SPLIT:
        idx_train, idx_cal = _split(task, y, learn, seed)
        idx_train = np.array([i for i in idx_train if learn[i]], dtype=int)  # the rare rows teach nothing
    else:  # nothing (or next to nothing) real: train on what there is, calibrate later on real traffic
        idx_train, idx_cal = np.flatnonzero(learn), np.arange(0)
        notes.append(f"only {len(real)} real labelled example(s) besides {len(synth)} synthetic ones: no calibration "
                     f"split; label real traffic (`downsize label`, `downsize audit import`) before `downsize calibrate`")
    # synthetic_weight w: each synthetic row is repeated floor(w) times, plus once more with probability
    # w - floor(w) (seeded): a weight every student family takes (their fit has no sample_weight). They
    # train every fold model and the refit, and are never answered out of fold nor calibrated on.
    rng = np.random.default_rng(seed)
    w = task.synthetic_weight
    copies = (np.floor(w).astype(int) + (rng.random(len(synth)) < w - np.floor(w))) * learn_syn
    n_real = len(idx_train)
    X_tr = [X[i] for i in idx_train] + [e.text for e, c in zip(synth, copies) for _ in range(c)]
    y_tr = [y[i] for i in idx_train] + [a for a, c in zip(y_syn, copies) for _ in range(c)]
    n_syn = int(copies.sum())
    if synth:
        notes.append(f"{len(synth)} synthetic example(s) in training with weight {w:g} ({n_syn} rows); "
                     "none in the calibration split")
    params = _with_embedding_cache(task, student_params or {}, config.home_dir())

    def make(family: str) -> Any:
        return _student(task, family, seed, params)

    selection: list[dict[str, Any]] = []
    reason = f"configured student {kind!r}"
    oof: OutOfFold | None = None
    t0 = time.perf_counter()
    if (crossfit or kind in ("auto", "ensemble")) and n_real >= 2 * _MIN_SPLIT:
        fold_of = np.r_[folds(n_real, max(task.calibration_folds, 3), task.strata(y_tr[:n_real]), seed),
                        np.full(n_syn, -1)]  # -1: synthetic rows, in every fold's training part
        selection, best, oof = _fit_and_judge(task, kind, X_tr, y_tr, fold_of, make, event, n_real)
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
        agreement = float(np.mean(task.disagreements(oof.answers, y_tr[:n_real]) == 0))
    else:
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
    metrics: dict[str, Any] = {
        "holdout_agreement": agreement, "label_counts": dict(counts), "selection": selection,
        "selection_reason": reason, "seed": seed, "teacher_only": dict(rare), "n_synthetic": n_syn, "notes": notes,
        "teacher_only_rows": {"calibration": int((~learn[idx_cal]).sum()),
                              "not_trained_on": int((~learn).sum() - (~learn[idx_cal]).sum())}}
    if crossfit and oof is not None:
        metrics["oof"] = _oof_record(task, student, oof, X, ids, idx_train)
    row = StudentVersion(
        task=task_name, version=version, kind=kind, path=rel.as_posix(), sha256=_sha256(manifest),
        size_bytes=_dir_size(path), labels=[str(c) for c in getattr(student, "classes_", [])], n_train=len(X_tr),
        n_calib=len(idx_cal), calib_example_ids=[int(ids[i]) for i in idx_cal], train_seconds=train_s,
        metrics=metrics,
    )
    store.add(row)
    return TrainResult(task_name, version, kind, row.id, str(path), len(X_tr), len(idx_cal), train_s,
                       row.size_bytes, agreement, dict(counts), selection, reason,
                       calibration=f"out-of-fold ({metrics['oof']['folds']} folds)" if "oof" in metrics else "held out",
                       teacher_only=dict(rare), teacher_only_rows=int((~learn).sum()), n_synthetic=n_syn, notes=notes)


def _oof_record(task: TaskConfig, student: Any, oof: OutOfFold, X: list[str], ids: np.ndarray,
                idx_train: np.ndarray) -> dict[str, Any]:
    """Every row's out-of-fold answer and confidence, by example id, for ``calibrate_task``: the
    learnable rows from the fold models, the teacher-only rows from the refit (it never saw them)."""
    answers: list[Any] = [None] * len(X)
    conf = np.zeros(len(X))
    for j, i in enumerate(idx_train):
        answers[i], conf[i] = oof.answers[j], oof.confidence[j]
    rest = np.setdiff1d(np.arange(len(X)), idx_train)
    if len(rest):
        pred, c = task.score(student, [X[i] for i in rest])
        for i, a, v in zip(rest, pred, c, strict=True):
            answers[i], conf[i] = a, v
    return {"folds": int(oof.fold_of.max()) + 1, "ids": [int(i) for i in ids],
            "answers": [None if a is None else task.encode(a) for a in answers], "confidence": conf.tolist()}


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


def rare_text(rare: dict[str, str]) -> str:
    """The labels left to the teacher and why, for an error message."""
    return "; ".join(f"{lab!r} ({why})" for lab, why in sorted(rare.items()))
