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

from .cascade import Policy, Scored, decide
from .data import decode_answers, read_texts
from .errors import TeacherError
from .project import Project, percentile
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


async def _teacher_answers(project: Project, task: str, texts: list[str], progress: bool) -> list[Any]:
    """The teacher's :class:`~downsize.teacher.TeacherAnswer` per text (None where it failed)."""
    from rich.progress import Progress

    out: list[Any] = [None] * len(texts)
    t = project.config.task(task)
    async with project.teacher(task) as teacher:
        with Progress(disable=not progress) as bar:
            job = bar.add_task("teacher", total=len(texts))

            async def one(i: int) -> None:
                try:
                    ans = await teacher.ask(texts[i], task_name=task, task=t)
                    out[i] = ans if ans.answer is not None else None
                except TeacherError:
                    out[i] = None
                bar.advance(job)

            await asyncio.gather(*(one(i) for i in range(len(texts))))
    return out


async def _cascade_answers(policy: Policy, scored: list[Scored], teacher: list[Any]) -> list[Any]:
    """What the cascade answers for each row under ``policy``: :func:`~downsize.cascade.decide` itself,
    with the teacher's (already known) answers."""
    async def one(s: Scored, ans: Any) -> Any:
        async def ask() -> Any:
            return ans
        return (await decide(policy, s, ask if ans is not None else None)).answer

    return list(await asyncio.gather(*(one(s, a) for s, a in zip(scored, teacher))))


def evaluate_file(project: Project, task: str, path: str | os.PathLike[str], *, gold_col: str = "label",
                  text_col: str | None = None, limit: int | None = None, use_teacher: bool = True,
                  plot: str | os.PathLike[str] | None = None, progress: bool = True) -> EvalResult:
    """The kind's metrics vs gold (accuracy and macro-F1 for classify) for the student, the teacher and
    the cascade, and the coverage curve; record an EvalRun.

    Raises
    ------
    DataError
        Missing columns, or gold labels that the task does not configure (named with their rows).
    """
    t = project.config.task(task)
    data = read_texts(path, text_col or t.text_field, label_col=gold_col, limit=limit)
    gold = decode_answers(t, data.labels or [], data.rows, str(path))
    cas = project.cascade(task)
    texts = data.texts
    t0 = time.perf_counter()
    scored = cas.score(texts)
    batch_s = time.perf_counter() - t0
    single = []
    for x in texts[: min(200, len(texts))]:
        t1 = time.perf_counter()
        cas.score([x])
        single.append((time.perf_counter() - t1) * 1000)
    s_answers = [s.answer for s in scored]
    conf = np.array([s.confidence for s in scored])

    student = t.metrics(s_answers, gold)
    teacher_m = cascade_m = None
    t_answers: list[Any] = [None] * len(texts)
    failures = 0
    if use_teacher:
        t_answers = asyncio.run(_teacher_answers(project, task, texts, progress))
        failures = sum(x is None for x in t_answers)
        teacher_m = t.metrics([None if x is None else x.answer for x in t_answers], gold)
        teacher_m["failures"] = failures

    def cascade_at(policy: Policy) -> list[Any]:
        return asyncio.run(_cascade_answers(policy, scored, t_answers))

    if use_teacher:
        cascade_m = t.metrics(cascade_at(cas.policy), gold)
        local = [i for i, s in enumerate(scored) if cas.policy.local(s.confidence)]
        cascade_m["share_local"] = len(local) / len(texts) if texts else 0.0
        known = [i for i in local if t_answers[i] is not None]
        cascade_m["student_agreement_with_teacher_on_local"] = (
            float(np.mean(t.disagreements([s_answers[i] for i in known], [t_answers[i].answer for i in known]) == 0))
            if known else float("nan"))
    curve = []
    # thresholds at 5 % steps of coverage, each an observed confidence (the first answers everything)
    grid = np.unique(np.quantile(conf, np.linspace(0, 1, 21), method="lower")) if len(conf) else []
    for thr in grid:
        ans = np.flatnonzero(conf >= thr)
        row = {"threshold": float(thr), "coverage": float(len(ans) / len(conf)),
               "student_accuracy_answered": float(1 - t.disagreements([s_answers[i] for i in ans], [gold[i] for i in ans]).mean())
               if len(ans) else float("nan")}
        if use_teacher:
            row["cascade_accuracy"] = float(1 - t.disagreements(cascade_at(Policy(threshold=float(thr))), gold).mean())
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
