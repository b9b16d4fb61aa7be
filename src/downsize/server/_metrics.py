"""Prometheus metrics of one gateway app (its own ``CollectorRegistry``, no globals)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

__all__ = ["Metrics", "CONTENT_TYPE"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 5.0, 10.0, 30.0)
PASSTHROUGH = "(passthrough)"


class _Derived:
    """Collector for figures computed at scrape time (escalation rate, audit queue)."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        g = GaugeMetricFamily("downsize_escalation_ratio",
                              "Share of cascade requests the student passed to the teacher (since start).",
                              labels=["task"])
        for task, (n, esc) in sorted(self.m.cascade_counts.items()):
            g.add_metric([task], esc / n if n else 0.0)
        yield g
        if self.m.audit_stats is not None:
            stats, pending = self.m.audit_stats()
            yield GaugeMetricFamily("downsize_audit_pending_rows", "Audit rows queued, not yet written.",
                                    value=pending)
            c = CounterMetricFamily("downsize_audit_rows", "Audit-writer rows by outcome.", labels=["outcome"])
            c.add_metric(["written"], stats.get("written", 0))
            c.add_metric(["dropped"], stats.get("dropped", 0))
            yield c
            yield CounterMetricFamily("downsize_audit_failed_batches", "Audit batches that failed (retried).",
                                      value=stats.get("failed_batches", 0))


class Metrics:
    """The gateway's metrics; ``render()`` gives the Prometheus text format."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("downsize_requests", "Requests answered, by task and who answered.",
                                ["task", "answered_by"], registry=r)
        self.errors = Counter("downsize_errors", "Requests answered with an error status.",
                              ["task", "status"], registry=r)
        self.rejected = Counter("downsize_rejected_requests",
                                "API requests refused before reaching a task (auth, limits, bad body, unknown route).",
                                ["status", "reason"], registry=r)
        self.latency = Histogram("downsize_request_latency_seconds", "Time in the gateway per request.",
                                 ["task", "answered_by"], buckets=_LATENCY_BUCKETS, registry=r)
        self.student_latency = Histogram("downsize_student_latency_seconds",
                                         "Student inference time per request (its micro-batch).", ["task"],
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.teacher_latency = Histogram("downsize_teacher_latency_seconds", "Teacher call time.", ["task"],
                                         buckets=_LATENCY_BUCKETS, registry=r)
        self.teacher_cost = Counter("downsize_teacher_cost_usd", "Dollars spent on teacher calls.",
                                    ["task", "purpose"], registry=r)
        self.teacher_only_cost = Counter("downsize_teacher_only_cost_usd",
                                         "What the same requests would have cost on the teacher alone.",
                                         ["task"], registry=r)
        self.saved = Counter("downsize_saved_usd", "Teacher-only cost minus the cost paid, per request.",
                             ["task"], registry=r)
        self.escalations = Counter("downsize_escalations", "Cascade requests the student passed to the teacher.",
                                   ["task"], registry=r)
        self.spot_checks = Counter("downsize_spot_checks",
                                   "Background re-checks of student answers by the teacher.",
                                   ["task", "result"], registry=r)
        self.teacher_up = Gauge("downsize_teacher_up", "1 if the teacher answered the last health probe.",
                                ["teacher"], registry=r)
        self.task_suspended = Gauge("downsize_task_suspended",
                                    "1 while the task is suspended (its live risk monitor rejected; teacher only).",
                                    ["task"], registry=r)
        self.drift_warning = Gauge("downsize_drift_warning",
                                   "1 once the drift monitor of the live version warned (confidences moved).",
                                   ["task"], registry=r)
        self.risk_evidence = Gauge("downsize_risk_monitor_evidence",
                                   "Betting wealth against 'live risk <= alpha' (alarm at 1/delta).", ["task"],
                                   registry=r)
        self.cascade_counts: dict[str, list[int]] = {}
        self._children: dict[tuple[str, str], tuple[Any, ...]] = {}
        self.audit_stats: Callable[[], tuple[dict[str, int], int]] | None = None
        r.register(_Derived(self))

    def observe(self, task: str | None, answered_by: str, latency_s: float, *, cost: float = 0.0,
                teacher_only: float = 0.0, student_s: float | None = None, teacher_s: float | None = None,
                purpose: str = "answer") -> None:
        t = task or PASSTHROUGH
        key = (t, answered_by)
        kids = self._children.get(key)
        if kids is None:  # labelled children, looked up once per (task, answered_by)
            kids = self._children[key] = (self.requests.labels(t, answered_by), self.latency.labels(t, answered_by),
                                          self.student_latency.labels(t), self.teacher_latency.labels(t),
                                          self.teacher_only_cost.labels(t), self.saved.labels(t))
        kids[0].inc()
        kids[1].observe(latency_s)
        if student_s is not None:
            kids[2].observe(student_s)
        if teacher_s is not None:
            kids[3].observe(teacher_s)
        if cost:
            self.teacher_cost.labels(t, purpose).inc(cost)
        if teacher_only:
            kids[4].inc(teacher_only)
            if teacher_only > cost:
                kids[5].inc(teacher_only - cost)
        if task is not None and answered_by in ("student", "teacher", "student_fallback"):
            c = self.cascade_counts.setdefault(task, [0, 0])
            c[0] += 1
            if answered_by != "student":
                c[1] += 1
                self.escalations.labels(task).inc()

    def error(self, task: str | None, status: int) -> None:
        self.errors.labels(task or PASSTHROUGH, str(status)).inc()

    def reject(self, status: int, reason: str) -> None:
        self.rejected.labels(str(status), reason).inc()
        self.errors.labels(PASSTHROUGH, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
