"""What a labelling run did (:class:`LabelSummary`), and the exit code ``downsize label`` gives it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["LabelSummary", "EXIT_CODES", "STOP_TITLES"]

#: ``downsize label``'s exit codes, by outcome (the first that applies, in this order, wins).
EXIT_CODES = {
    "terminated": 143,  # SIGTERM: stopped after the calls in flight (128 + 15)
    "interrupted": 130,  # Ctrl-C: stopped after the calls in flight (128 + 2)
    "teacher_unreachable": 3,  # the circuit breaker: the teacher failed call after call
    "unparseable": 6,  # the circuit breaker: none of the first answers fit the task
    "budget": 4,  # stopped before a call could pass --budget
    "rows_failed": 5,  # finished, but some rows have no label (parse or teacher failures)
    "ok": 0,  # every row has a label
}

STOP_TITLES = {
    None: "finished",
    "budget": "stopped: budget reached",
    "interrupted": "stopped: interrupted",
    "terminated": "stopped: terminated (SIGTERM)",
    "teacher_unreachable": "stopped: the teacher is unreachable",
    "unparseable": "stopped: the teacher's answers do not fit the task",
}


@dataclass
class LabelSummary:
    """What a labelling run did.

    ``rows`` counts distinct texts; ``rows == already_labelled + labelled + failed + rejected + remaining``.
    ``teacher_calls`` is the number of HTTP requests made (retries included) and
    ``cached_calls`` the calls answered by the store's cache at no cost. ``waited`` counts texts
    another process was asking the teacher about meanwhile (claimed in the store): that process
    paid for them and writes their labels, so they count as ``already_labelled`` here. ``reclaimed`` counts calls sent again because the process that had
    claimed them died or ran out of lease with the call in flight: those may have been paid twice
    (at most that process's ``max_concurrency``).
    """

    task: str = ""
    rows: int = 0
    duplicates: int = 0
    already_labelled: int = 0
    labelled: int = 0
    failed: int = 0
    parse_errors: int = 0
    teacher_errors: int = 0
    errors: list[str] = field(default_factory=list)
    cached_calls: int = 0
    teacher_calls: int = 0
    waited: int = 0
    reclaimed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_p50_ms: float = 0.0
    latency_p95_ms: float = 0.0
    elapsed_s: float = 0.0
    # None | "budget" | "interrupted" | "terminated" | "teacher_unreachable" | "unparseable"
    stopped_reason: str | None = None
    stop_message: str = ""
    skipped_rows: int = 0
    skipped_note: str = ""
    budget_usd: float | None = None
    rejected: int = 0  # answered, but not what ``accept`` wanted (``downsize synth``: not the intended label)

    @property
    def remaining(self) -> int:
        """Rows not attempted because the run stopped early."""
        return self.rows - self.already_labelled - self.labelled - self.failed - self.rejected

    @property
    def rows_per_s(self) -> float:
        done = self.labelled + self.failed
        return done / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def outcome(self) -> str:
        """The key of :data:`EXIT_CODES` that describes this run."""
        if self.stopped_reason in EXIT_CODES:
            return self.stopped_reason
        attempted = self.labelled + self.failed
        if attempted and self.labelled == 0 and self.teacher_errors == self.failed:
            return "teacher_unreachable"  # --keep-going, and not one call got through
        return "rows_failed" if self.failed else "ok"

    @property
    def exit_code(self) -> int:
        """``downsize label``'s exit code (see :data:`EXIT_CODES`)."""
        return EXIT_CODES[self.outcome]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "remaining": self.remaining, "rows_per_s": self.rows_per_s,
                "outcome": self.outcome, "exit_code": self.exit_code}

    def render(self) -> Table:
        """A rich table for the terminal."""
        from rich.table import Table

        t = Table(title=f"labelling {self.task}: {STOP_TITLES.get(self.stopped_reason, self.stopped_reason)}",
                  show_header=False, title_justify="left")
        t.add_column("what", style="bold")
        t.add_column("value", justify="right")
        t.add_row("rows", f"{self.rows:,}" + (f" (+{self.duplicates:,} duplicates)" if self.duplicates else ""))
        if self.skipped_rows:
            t.add_row("skipped rows", f"{self.skipped_rows:,}")
        t.add_row("already labelled", f"{self.already_labelled:,}")
        t.add_row("labelled now", f"{self.labelled:,}")
        t.add_row("failed", f"{self.failed:,} ({self.parse_errors} parse, {self.teacher_errors} teacher)")
        if self.rejected:
            t.add_row("rejected (not the intended answer)", f"{self.rejected:,}")
        if self.remaining:
            t.add_row("not attempted", f"{self.remaining:,}")
        t.add_row("teacher HTTP calls", f"{self.teacher_calls:,}")
        t.add_row("from cache (free)", f"{self.cached_calls:,}")
        if self.waited:
            t.add_row("asked by another run (free)", f"{self.waited:,}")
        if self.reclaimed:
            t.add_row("re-sent after a run died", f"{self.reclaimed:,} (may have been paid twice)", style="yellow")
        t.add_row("tokens in / out", f"{self.input_tokens:,} / {self.output_tokens:,}")
        spend = f"${self.cost_usd:.4f}"
        if self.budget_usd is not None:
            spend += f" of ${self.budget_usd:.4f}"
        t.add_row("cost", spend)
        t.add_row("latency p50 / p95", f"{self.latency_p50_ms:.0f} / {self.latency_p95_ms:.0f} ms")
        t.add_row("elapsed", f"{self.elapsed_s:.1f} s ({self.rows_per_s:.0f} rows/s)")
        for e in self.errors:
            t.add_row("error", e[:160], style="red")
        caption = [c for c in (self.stop_message, self.skipped_note) if c]
        if caption:
            t.caption = "\n".join(caption)
        return t
