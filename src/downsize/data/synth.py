"""``downsize synth``: a cold start, with the teacher writing the first training examples.

For each *target* of the task (a label for classify and multilabel, a field for extract: the
kind's :meth:`~downsize.tasks.TaskConfig.piece_names`) the teacher is asked, in rounds, for new
inputs whose answer has that target (:func:`downsize.teacher.prompt.build_generation_messages`;
each request a numbered variation with its own style, so each is a distinct, cached call). A
candidate is kept only if

1. it is not a duplicate: neither the same words (after case folding, punctuation dropped) nor
   a near duplicate (Jaccard similarity of the sets of character 5-grams of those words
   ≥ ``near_duplicate``, default 0.8: one word changed in a 15-word sentence is ~0.85) of a
   candidate kept before or of a text the task already has, and
2. the teacher, asked to answer it as the task (the ordinary labelling call, :func:`label_texts`),
   gives the target (classify: exactly the intended label; others: the target among the answer's
   parts).

Kept texts are stored with their verified answer as labels of source ``synthetic``: ``train``
mixes them in with the task's ``synthetic_weight`` and never puts one in the calibration split
(the guarantee is about real traffic). Every call goes through the teacher's cache and the
budget, so a re-run or a resumed run pays only for what it has not asked yet.

The near-duplicate check is hand-written (a set-overlap scan): a run keeps at most a few
thousand texts, where an exact pairwise scan is fast and has no false negatives, unlike MinHash.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..config import Config, TaskConfig
from ..errors import AnswerError, BudgetExceeded, TeacherError
from ..store import Store
from ..teacher import AsyncTeacher, Budget
from ..teacher.generate import generate
from ..teacher.prompt import build_generation_messages
from .labeling import _progress_bar, label_texts, run_with_teacher

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["NearDuplicates", "SynthSummary", "clean_generated", "synth_task", "synth_texts"]

_QUOTES = "\"'“”‘’`"
_LEAD = re.compile(r"^(?:input(?: text)?|text|example|review|message|here is[^:\n]*)\s*:\s*", re.IGNORECASE)
_WORD = re.compile(r"\w+")


def clean_generated(text: str) -> str:
    """The input text in a generated answer: no wrapping quotes, no "Input:" lead, whitespace tidied."""
    t = text.strip()
    if t.startswith("```"):
        t = t.strip("`").split("\n", 1)[-1]
    t = _LEAD.sub("", t).strip()
    if len(t) >= 2 and t[0] in _QUOTES and t[-1] in _QUOTES:
        t = t[1:-1].strip()
    return " ".join(t.split()) if "\n" not in t else "\n".join(" ".join(x.split()) for x in t.splitlines()).strip()


class NearDuplicates:
    """Texts seen so far; :meth:`add` says whether a text is new (neither exact nor near duplicate)."""

    def __init__(self, threshold: float = 0.8) -> None:
        self.threshold = threshold
        self._exact: set[str] = set()
        self._shingles: list[frozenset[str]] = []
        self._index: dict[str, list[int]] = {}

    @staticmethod
    def _key(text: str) -> str:
        return " ".join(_WORD.findall(text.casefold()))

    @classmethod
    def _grams(cls, text: str) -> frozenset[str]:
        k = cls._key(text)
        return frozenset(k[i:i + 5] for i in range(max(1, len(k) - 4)))

    def is_new(self, text: str) -> bool:
        if self._key(text) in self._exact:
            return False
        g = self._grams(text)
        hits: Counter[int] = Counter(i for s in g for i in self._index.get(s, ()))
        for i, inter in hits.items():
            if inter / len(g | self._shingles[i]) >= self.threshold:
                return False
        return True

    def add(self, text: str, *, check: bool = True) -> bool:
        if check and not self.is_new(text):
            return False
        self._exact.add(self._key(text))
        g = self._grams(text)
        for s in g:
            self._index.setdefault(s, []).append(len(self._shingles))
        self._shingles.append(g)
        return True


@dataclass
class SynthSummary:
    """What a synth run did, per target (``kept`` includes what earlier runs kept)."""

    task: str
    per_label: int
    targets: dict[str, dict[str, int]] = field(default_factory=dict)
    rounds: int = 0
    generation_calls: int = 0  # HTTP requests for generation (cache hits excluded)
    cached_generations: int = 0
    verification_calls: int = 0
    cached_verifications: int = 0
    cost_usd: float = 0.0
    failed: int = 0  # checks that failed (teacher errors, unparseable answers): asked again next run
    budget_usd: float | None = None
    stopped_reason: str | None = None  # None | a key of downsize.data.summary.EXIT_CODES
    errors: list[str] = field(default_factory=list)

    @property
    def kept(self) -> int:
        return sum(t["kept"] for t in self.targets.values())

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kept": self.kept}

    def render(self) -> Table:
        from rich.table import Table

        stop = {None: "finished", "budget": "stopped: budget reached"}
        t = Table(title=f"synthetic examples for {self.task}: {stop.get(self.stopped_reason, f'stopped: {self.stopped_reason}')}",
                  title_justify="left")
        for c in ("target", "kept", "written", "duplicates", "empty", "rejected by the teacher"):
            t.add_column(c, justify="left" if c == "target" else "right")
        for name, c in self.targets.items():
            style = "yellow" if c["kept"] < self.per_label else None
            t.add_row(name, f"{c['kept']} / {self.per_label}", str(c["written"]), str(c["duplicates"]), str(c["empty"]),
                      str(c["rejected"]), style=style)
        spend = f"${self.cost_usd:.4f}" + (f" of ${self.budget_usd:.4f}" if self.budget_usd is not None else "")
        t.caption = (f"{self.rounds} round(s); teacher calls: {self.generation_calls} to write, "
                     f"{self.verification_calls} to check ({self.cached_generations + self.cached_verifications} "
                     f"from the cache, free); cost {spend}. Stored as source 'synthetic': used for training "
                     "(synthetic_weight), never for calibration.")
        return t


def _existing(store: Store, task_name: str, task: TaskConfig) -> tuple[Counter[str], list[str]]:
    """Kept synthetic examples per target, and every labelled text of the task (for de-duplication)."""
    kept: Counter[str] = Counter()
    texts = []
    for e in store.labelled_examples(task_name):
        texts.append(e.text)
    for e in store.labelled_examples(task_name, sources=("synthetic",)):
        try:
            kept.update(set(task.parts(task.decode(e.label))))
        except AnswerError:
            continue
    return kept, texts


async def synth_texts(store: Store, teacher: AsyncTeacher, task_name: str, task: TaskConfig, per_label: int, *,
                      budget: Budget | None = None, progress: bool = True, stop: asyncio.Event | None = None,
                      max_rounds: int = 3, near_duplicate: float = 0.8, targets: list[str] | None = None,
                      max_tokens: int = 256) -> SynthSummary:
    """Have the teacher write up to ``per_label`` verified examples per target (see the module docstring).

    Each round asks, for every target still short, for the next ``per_label`` variations; at most
    ``max_rounds`` rounds (so at most ``max_rounds * per_label`` generation calls per target).
    """
    if per_label < 1:
        raise ValueError(f"per_label must be >= 1, got {per_label}")
    halt = stop if stop is not None else asyncio.Event()
    names = targets or task.piece_names()
    summary = SynthSummary(task=task_name, per_label=per_label, budget_usd=budget.limit_usd if budget else None)
    kept, known = _existing(store, task_name, task)
    seen = NearDuplicates(near_duplicate)
    for t in known:
        seen.add(t, check=False)
    summary.targets = {n: {"kept": min(kept[n], per_label), "written": 0, "duplicates": 0, "empty": 0, "rejected": 0}
                       for n in names}
    for r in range(max_rounds):
        short = [n for n in names if summary.targets[n]["kept"] < per_label]
        if not short or halt.is_set():
            break
        summary.rounds += 1
        jobs = [(n, k) for n in short for k in range(r * per_label, (r + 1) * per_label)]
        bar = _progress_bar() if progress else None
        job_bar = bar.add_task(f"{task_name}: writing", total=len(jobs), cost=0.0, failed=0) if bar else None
        if bar is not None:
            bar.start()

        async def one(n: str, k: int) -> tuple[str, str | None]:
            if halt.is_set():
                return n, None
            try:
                g = await generate(teacher, build_generation_messages(task, n, k), task_name=task_name, budget=budget,
                                   max_tokens=max_tokens)
            except BudgetExceeded as exc:
                summary.stopped_reason = "budget"
                summary.errors.append(str(exc))
                halt.set()
                return n, None
            except TeacherError as exc:
                if len(summary.errors) < 5:
                    summary.errors.append(str(exc))
                return n, None
            summary.generation_calls += g.http_requests
            summary.cached_generations += int(g.cached)
            summary.cost_usd += g.cost_usd
            if bar is not None:
                bar.advance(job_bar)
            return n, g.text

        try:
            written = await asyncio.gather(*(one(n, k) for n, k in jobs))
        finally:
            if bar is not None:
                bar.stop()
        intended: dict[str, str] = {}
        for n, text in written:
            if text is None:
                continue
            summary.targets[n]["written"] += 1
            text = clean_generated(text)
            if not text:
                summary.targets[n]["empty"] += 1
            elif not seen.add(text):
                summary.targets[n]["duplicates"] += 1
            else:
                intended[text] = n
        if not intended or summary.stopped_reason == "budget":
            continue

        def accept(text: str, answer: Any) -> bool:
            n = intended[text]
            c = summary.targets[n]
            if n in task.parts(answer) and c["kept"] < per_label:
                c["kept"] += 1
                return True
            c["rejected"] += 1
            return False

        s = await label_texts(store, teacher, task_name, task, list(intended), source="synthetic", budget=budget,
                              progress=progress, stop=halt, label_source="synthetic", accept=accept)
        summary.verification_calls += s.teacher_calls
        summary.failed += s.failed
        summary.cached_verifications += s.cached_calls
        summary.cost_usd += s.cost_usd
        summary.errors.extend(s.errors[: max(0, 5 - len(summary.errors))])
        if s.stopped_reason and s.stopped_reason != "interrupted":  # budget, or the circuit breaker
            summary.stopped_reason = s.stopped_reason
            if s.stop_message:
                summary.errors.append(s.stop_message)
            break
    if summary.stopped_reason is None and halt.is_set():
        summary.stopped_reason = "interrupted"
    return summary


def synth_task(config: Config, task_name: str, per_label: int, *, budget_usd: float | None = None,
               store: Store | None = None, progress: bool = True, max_rounds: int = 3,
               near_duplicate: float = 0.8) -> SynthSummary:
    """:func:`synth_texts` with the task's teacher (``downsize synth``); Ctrl-C stops after the calls in flight."""
    task = config.task(task_name)
    summary: SynthSummary = run_with_teacher(
        config, task_name, store, budget_usd,
        lambda st, teacher, budget, stop: synth_texts(st, teacher, task_name, task, per_label, budget=budget,
                                                      progress=progress, stop=stop, max_rounds=max_rounds,
                                                      near_duplicate=near_duplicate))
    return summary
