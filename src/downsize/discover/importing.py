"""``downsize audit import``: a template's logged pairs become the task's labels, with no teacher call.

The logged answers are the teacher's (the large model answered them in production), so they are
stored as labels with source ``audit``. Each distinct text counts once, with its most frequent
logged answer; answers the configured task refuses (a label the config no longer has, an
extracted value not in the text) are counted and left out. Re-running adds nothing: texts that
already have an ``audit`` label are skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..config import Config
from ..errors import AnswerError, DataError
from ..store import Store, text_hash
from ._discovery import Discovery
from .propose import propose_task

__all__ = ["ImportSummary", "find_template", "import_pairs"]


@dataclass
class ImportSummary:
    """What an import did (``distinct == added + already + refused``)."""

    task: str
    template_id: int
    logged_pairs: int
    distinct: int
    added: int
    already: int
    refused: int
    refused_examples: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _names(d: Discovery) -> dict[str, int]:
    """Task name → template id, named exactly as :meth:`Discovery.config_yaml` names them."""
    out: dict[str, int] = {}
    for prop in d.proposals(top=None):
        name, k = prop.name[:60], 2
        while name in out:
            name, k = f"{prop.name[:57]}_{k}", k + 1
        out[name] = prop.template_id
    return out


def find_template(d: Discovery, config: Config, task_name: str, template_id: int | None = None) -> int:
    """The template whose pairs belong to ``task_name``: given, or the one the yaml named so, or the
    narrow one with the task's kind and instructions.

    Raises
    ------
    DataError
        No such template, or several fit (the message lists them with their ids).
    """
    task = config.task(task_name)
    narrow = {v.template_id for v in d.verdicts if v.scope == "narrow" and v.kind}
    if template_id is not None:
        if template_id not in narrow:
            known = ", ".join(str(i) for i in sorted(narrow)) or "none"
            raise DataError(f"template {template_id} is not a narrow template of these logs (narrow ones: {known})")
        return template_id
    by_name = _names(d)
    if task_name in by_name:
        return by_name[task_name]
    fits = [p.template.id for p, v in zip(d.profiles, d.verdicts) if p.template.id in narrow and v.kind == task.kind
            and " ".join(propose_task(p, v).instructions.split()) == " ".join(task.instructions.split())]
    if len(fits) == 1:
        return fits[0]
    cands = "; ".join(f"{n} (template {i})" for n, i in by_name.items()) or "none"
    why = "several templates fit" if fits else "no template has that name or the task's instructions"
    raise DataError(f"task {task_name!r}: {why}; pass --template ID (narrow templates of these logs: {cands})")


def import_pairs(store: Store, config: Config, task_name: str, d: Discovery, template_id: int, *,
                 source: str = "") -> ImportSummary:
    """Store the logged pairs of ``template_id`` as ``audit`` labels of ``task_name`` (idempotent)."""
    task = config.task(task_name)
    proposed = d.task(template_id)
    texts, answers, refused = d.labelled_pairs(template_id)
    by_text: dict[str, Counter[str]] = {}
    forms: dict[str, Any] = {}
    bad: list[str] = []
    for t, a in zip(texts, answers):
        try:
            ans = task.normalise(proposed.to_json(a), t)
        except AnswerError as exc:
            refused += 1
            if len(bad) < 5:
                bad.append(str(exc))
            continue
        enc = task.encode(ans)
        forms[enc] = ans
        by_text.setdefault(t, Counter())[enc] += 1
    uniq = list(by_text)
    done = store.labelled_hashes(task_name, source="audit")
    new = [t for t in uniq if text_hash(t) not in done]
    if new:
        ids = store.add_examples(task_name, new, source=source or f"audit template {template_id}")
        store.add_labels(task_name, [(i, by_text[t].most_common(1)[0][0]) for i, t in zip(ids, new)], source="audit")
    return ImportSummary(task=task_name, template_id=template_id, logged_pairs=len(texts) + refused,
                         distinct=len(uniq), added=len(new), already=len(uniq) - len(new), refused=refused,
                         refused_examples=bad)


def summary_lines(s: ImportSummary) -> Sequence[str]:
    return [f"{s.logged_pairs:,} logged pairs of template {s.template_id} → {s.distinct:,} distinct texts",
            f"added {s.added:,} audit labels to {s.task} ({s.already:,} were already imported; "
            f"{s.refused:,} answers refused by the task)"]
