"""``downsize eval``: student alone, teacher alone and the cascade against gold labels.

The student's scores are computed once; the teacher is asked for every row (from the cache
where it already answered); the cascade's answer per row is then exactly what
:class:`~downsize.cascade.Cascade` would answer, for the calibrated λ and for every
threshold of the coverage–accuracy curve.
"""

from __future__ import annotations

import asyncio
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from .data import read_texts
from .errors import TeacherError
from .project import Project, _check_gold_labels, percentile
from .store import EvalRun

__all__ = ["EvalResult", "evaluate_file", "plot_curve"]


@dataclass
class EvalResult:
    task: str
    n: int
    threshold: float | None
    student: dict[str, float]
    teacher: dict[str, float] | None
    cascade: dict[str, float] | None
    curve: list[dict[str, float]]
    student_latency_p50_ms: float
    student_latency_p99_ms: float
    student_batch_rows_per_s: float
    teacher_failures: int = 0
    eval_run_id: int | None = None
    plot: str | None = None
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("skipped")
        return d


def _scores(gold: list[str], pred: list[str], labels: list[str]) -> dict[str, float]:
    return {
        "accuracy": float(accuracy_score(gold, pred)),
        "macro_f1": float(f1_score(gold, pred, labels=labels, average="macro", zero_division=0)),
    }


async def _teacher_labels(project: Project, task: str, texts: list[str], progress: bool) -> list[str | None]:
    from rich.progress import Progress

    out: list[str | None] = [None] * len(texts)
    t = project.config.task(task)
    async with project.teacher(task) as teacher:
        with Progress(disable=not progress) as bar:
            job = bar.add_task("teacher", total=len(texts))

            async def one(i: int) -> None:
                try:
                    ans = await teacher.classify(texts[i], task_name=task, task=t)
                    out[i] = ans.label
                except TeacherError:
                    out[i] = None
                bar.advance(job)

            await asyncio.gather(*(one(i) for i in range(len(texts))))
    return out


def evaluate_file(project: Project, task: str, path: str | os.PathLike[str], *, gold_col: str = "label",
                  text_col: str | None = None, limit: int | None = None, use_teacher: bool = True,
                  plot: str | os.PathLike[str] | None = None, progress: bool = True) -> EvalResult:
    """Accuracy and macro-F1 vs gold for the student, the teacher and the cascade; record an EvalRun.

    Raises
    ------
    DataError
        Missing columns, or gold labels that the task does not configure (named with their rows).
    """
    t = project.config.task(task)
    data = read_texts(path, text_col or t.text_field, label_col=gold_col, limit=limit)
    gold = data.labels or []
    labels = list(t.labels)
    _check_gold_labels(gold, data.rows, labels, str(path))
    cas = project.cascade(task)
    texts = data.texts
    t0 = time.perf_counter()
    s_labels, conf, _, _ = cas.student_scores(texts)
    batch_s = time.perf_counter() - t0
    sample = texts[: min(200, len(texts))]
    single = []
    for x in sample:
        t1 = time.perf_counter()
        cas.student.predict_proba([x])
        single.append((time.perf_counter() - t1) * 1000)

    student = _scores(gold, s_labels, labels)
    teacher_m = cascade_m = None
    t_labels: list[str | None] = []
    failures = 0
    if use_teacher:
        t_labels = asyncio.run(_teacher_labels(project, task, texts, progress))
        failures = sum(x is None for x in t_labels)
        teacher_m = _scores(gold, [x if x is not None else "\0" for x in t_labels], labels)
        teacher_m["failures"] = failures

    def cascade_at(thr: float | None) -> list[str]:
        out = []
        for i, (s, c) in enumerate(zip(s_labels, conf)):
            local = thr is not None and c >= thr
            out.append(s if local or not t_labels or t_labels[i] is None else t_labels[i])  # type: ignore[arg-type]
        return out

    if use_teacher:
        pred = cascade_at(cas.threshold)
        cascade_m = _scores(gold, pred, labels)
        cascade_m["share_local"] = float(np.mean([cas.answers_locally(float(c)) for c in conf]))
        local = [i for i, c in enumerate(conf) if cas.answers_locally(float(c))]
        cascade_m["student_agreement_with_teacher_on_local"] = (
            float(np.mean([s_labels[i] == t_labels[i] for i in local])) if local else float("nan"))
    curve = []
    # thresholds at 5 % steps of coverage, each an observed confidence (the first answers everything)
    grid = np.unique(np.quantile(conf, np.linspace(0, 1, 21), method="lower")) if len(conf) else []
    for thr in grid:
        ans = conf >= thr
        cov = float(ans.mean())
        row = {"threshold": float(thr), "coverage": cov,
               "student_accuracy_answered": float(np.mean([s_labels[i] == gold[i] for i in np.flatnonzero(ans)])) if ans.any() else float("nan")}
        if use_teacher:
            row["cascade_accuracy"] = float(accuracy_score(gold, cascade_at(float(thr))))
        curve.append(row)

    res = EvalResult(
        task=task, n=len(texts), threshold=cas.threshold, student=student, teacher=teacher_m, cascade=cascade_m,
        curve=curve, student_latency_p50_ms=percentile(single, 50) or 0.0,
        student_latency_p99_ms=percentile(single, 99) or 0.0,
        student_batch_rows_per_s=len(texts) / batch_s if batch_s > 0 else float("inf"),
        teacher_failures=failures, skipped=data.skipped,
    )
    if plot is not None:
        res.plot = str(plot_curve(res, plot))
    run = EvalRun(task=task, student_version_id=cas.student_version_id, calibration_run_id=cas.calibration_run_id,
                  data_path=str(path), n=res.n, metrics=_jsonable(res.as_dict()))
    project.store.add(run)
    res.eval_run_id = run.id
    return res


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and (np.isnan(obj) or np.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    return obj


def plot_curve(res: EvalResult, path: str | os.PathLike[str]) -> Path:
    """Coverage vs accuracy (student on what it answers; cascade overall), operating point marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cov = [r["coverage"] for r in res.curve]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    ax.plot(cov, [r["student_accuracy_answered"] for r in res.curve], "o-", label="student, on what it answers")
    if res.cascade is not None:
        ax.plot(cov, [r["cascade_accuracy"] for r in res.curve], "s-", label="cascade, all requests")
        ax.axhline(res.teacher["accuracy"], color="grey", ls="--", label="teacher only")  # type: ignore[index]
        ax.plot([res.cascade["share_local"]], [res.cascade["accuracy"]], "r*", ms=16, label="calibrated operating point")
    ax.set_xlabel("share answered by the student (coverage)")
    ax.set_ylabel("accuracy vs gold")
    ax.set_title(f"{res.task}: coverage vs accuracy (n={res.n})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
