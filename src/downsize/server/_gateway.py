"""The gateway's state, built in the app's lifespan and closed at its end: the task runtimes,
the teachers (behind deadlines and breakers), the audit writer, the metrics, the API keys,
the rate limiter and the health probes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from typing import Any

import httpx

from ..audit import AuditRecord, AuditWriter, decision_records
from ..cascade import AnsweredBy, Decision
from ..config import Config
from .keys import KeyRing
from ..project import Project
from ..store import Store
from ..teacher import AsyncTeacher
from ._limits import CircuitBreaker, RateLimiter
from ._metrics import Metrics
from ._runtime import TaskRuntime
from ._lifecycle import LifecycleLoop
from ._spot import SpotChecker
from ._teacher import GuardedTeacher

__all__ = ["Gateway"]

log = logging.getLogger("downsize.server")


class Gateway:
    """Everything one app needs at request time. Build with :meth:`open`, end with :meth:`aclose`."""

    health_ttl_s = 5.0
    probe_timeout_s = 2.0

    def __init__(self, config: Config, store: Store, *, owns_store: bool, auth: bool, writer: AuditWriter,
                 metrics: Metrics, keyring: KeyRing, limiter: RateLimiter, teachers: dict[str, GuardedTeacher],
                 tasks: dict[str, TaskRuntime], secrets: list[str]) -> None:
        self.config = config
        self.store = store
        self.owns_store = owns_store
        self.auth = auth
        self.writer = writer
        self.metrics = metrics
        self.keyring = keyring
        self.limiter = limiter
        self.teachers = teachers
        self.tasks = tasks
        self.default_teacher = teachers.get(config.server.default_teacher)
        self._secrets = [s for s in secrets if s and len(s) >= 4]
        self.spot_checks = SpotChecker(config, store, breakers={n: t.breaker for n, t in teachers.items()},
                                       writer=writer, metrics=metrics, redact=self.redact)
        self.lifecycle = LifecycleLoop(self, interval_s=config.server.lifecycle_interval_s)
        self._key_reload: asyncio.Task[bool] | None = None
        self._rng = random.Random()
        self._ids = random.Random(os.urandom(32))  # seeded in this process (workers never share a sequence)
        self._health: dict[str, dict[str, Any]] = {}
        self._probe_locks: dict[str, asyncio.Lock] = {}
        self._probe_client = httpx.AsyncClient(timeout=self.probe_timeout_s, trust_env=False)
        self.started = time.time()

    # -- lifecycle --------------------------------------------------------------------
    @classmethod
    async def open(cls, config: Config, *, store: Store | None = None, auth: bool = True,
                   rate_limit_per_minute: int | None = None) -> Gateway:
        """Open the store (unless given), the teachers, the audit writer; load each task's student."""
        owns = store is None
        store = store if store is not None else Store(config.store_url())
        writer = AuditWriter(store).start()
        metrics = Metrics()
        metrics.audit_stats = lambda: (dict(writer.stats), writer.pending)
        names = {t.teacher for t in config.tasks.values()}
        if config.server.default_teacher in config.teachers:
            names.add(config.server.default_teacher)
        teachers = {
            n: GuardedTeacher(n, config.teachers[n], AsyncTeacher.from_config(config.teachers[n], store=store),
                              CircuitBreaker())
            for n in sorted(names)
        }
        tasks: dict[str, TaskRuntime] = {}
        project = Project(config, store)
        for name, task in config.tasks.items():
            teacher = teachers[task.teacher]
            cascade = project.cascade(name, teacher=teacher, require_calibration=False)
            if cascade.load_error:
                log.error("task %s: %s; serving it in shadow mode (teacher only)", name, cascade.load_error)
            rt = tasks[name] = TaskRuntime(name, task, config.teachers[task.teacher], teacher, cascade=cascade,
                                           tokens=project.teacher_token_estimate(name), writer=writer)
            log.info("task %s: %s mode (%s)", name, rt.mode, rt.mode_reason)
        keyring = KeyRing(store)
        if auth:
            await asyncio.to_thread(keyring.reload)
            if not len(keyring):
                log.warning("no API keys yet: every request will be refused with 401; "
                            "create one with `downsize keys create NAME`")
        limiter = RateLimiter(rate_limit_per_minute or config.server.rate_limit_per_minute)
        log.info("gateway ready: %d task(s), API keys %s, pass-through to %s, rate limit %d/min",
                 len(tasks), f"required ({len(keyring)} active)" if auth else "OFF",
                 config.server.default_teacher if config.server.default_teacher in teachers else "nobody",
                 limiter.per_minute)
        secrets = [k for k in (t.api_key() for t in config.teachers.values()) if k]
        gw = cls(config, store, owns_store=owns, auth=auth, writer=writer, metrics=metrics, keyring=keyring,
                 limiter=limiter, teachers=teachers, tasks=tasks, secrets=secrets)
        gw.spot_checks.start()
        gw.lifecycle.start()
        return gw

    async def aclose(self, *, grace_s: float = 5.0) -> None:
        """Let background spot checks finish (up to ``grace_s``), close the teachers, flush the log."""
        if self._key_reload is not None:
            await asyncio.gather(self._key_reload, return_exceptions=True)
        await asyncio.to_thread(self.lifecycle.close)
        await asyncio.to_thread(self.spot_checks.close, grace_s)
        for rt in self.tasks.values():
            if rt.batcher is not None:
                rt.batcher.close()
        for t in self.teachers.values():
            await t.teacher.aclose()
        await self._probe_client.aclose()
        await asyncio.to_thread(self.writer.close)
        if self.owns_store:
            self.store.close()

    # -- helpers for the routes -----------------------------------------------------------
    def new_id(self, prefix: str) -> str:
        """A request id: ``prefix`` + 32 random hex digits (cheaper than uuid4's system call)."""
        return f"{prefix}{self._ids.getrandbits(128):032x}"

    def redact(self, text: str) -> str:
        """``text`` with every teacher API key replaced by ``***``."""
        for s in self._secrets:
            if s in text:
                text = text.replace(s, "***")
        return text

    def refresh_keys_soon(self) -> None:
        """Reload the API keys in the background when the ring is older than its refresh time."""
        if self.keyring.stale() and (self._key_reload is None or self._key_reload.done()):
            self._key_reload = asyncio.create_task(self._reload_keys())

    async def fetch_key(self, secret: str) -> str | None:
        """Look an unknown key up in the store (rate-limited): a key created a moment ago works."""
        if not self.keyring.may_fetch(secret):
            return None
        try:
            return await asyncio.to_thread(self.keyring.fetch, secret)
        except Exception as exc:
            log.error("could not look up an API key: %s", self.redact(str(exc)))
            return None

    async def _reload_keys(self) -> bool:
        try:
            await asyncio.to_thread(self.keyring.reload)
            return True
        except Exception as exc:  # keep the keys we have
            log.error("could not reload API keys: %s", self.redact(str(exc)))
            return False

    def record(self, rt: TaskRuntime, text: str, d: Decision, *, request_id: str, key_id: str | None,
               latency_ms: float, status: int = 200) -> None:
        """Audit record + metrics for one answered task request."""
        d.latency_ms = latency_ms
        rec = decision_records(rt.name, rt.cfg, [text], [d], tcfg=rt.tcfg, tokens=rt.tokens, channel="gateway",
                               threshold=rt.threshold, student_version_id=rt.student_version_id,
                               request_ids=[request_id], client_key_id=key_id, status_code=status,
                               redact=self.redact if self._secrets else None)[0]
        self.writer.submit(rec)
        purpose = "shadow" if d.answered_by is AnsweredBy.SHADOW else "answer"
        self.metrics.observe(rt.name, d.answered_by, latency_ms / 1000, cost=d.teacher_cost_usd,
                             teacher_only=rec.teacher_only_cost_usd, purpose=purpose,
                             student_s=None if d.student_latency_ms is None else d.student_latency_ms / 1000,
                             teacher_s=None if d.teacher_latency_ms is None else d.teacher_latency_ms / 1000)

    def record_error(self, *, task: str | None, model: str, input_hash: str, text: str | None, status: int,
                     message: str, request_id: str, key_id: str | None, latency_ms: float) -> None:
        """Audit record + metrics for a request that reached a task (or pass-through) and failed."""
        rt = self.tasks.get(task) if task else None
        log_text = rt.cfg.log_text if rt is not None else self.config.server.log_passthrough_text
        self.writer.submit(AuditRecord(
            request_id=request_id, task=task, model=model[:255], input_hash=input_hash,
            input_text=text if (log_text and text is not None) else None, answered_by=AnsweredBy.ERROR,
            reason=self.redact(message), latency_ms=latency_ms, client_key_id=key_id, status_code=status,
            threshold=rt.threshold if rt else None, student_version_id=rt.student_version_id if rt else None,
        ))
        self.metrics.error(task, status)

    def record_rejected(self, *, status: int, message: str, code: str | None, path: str, body: bytes | None,
                        key_id: str | None = None) -> None:
        """Audit row + counted metric for a request refused before it reached a task (401, 413, 429,
        415, an unknown route or task): no text is kept, only the body's hash and the model it named.
        ``body`` None: it could not be read (a body over the limit)."""
        code = code or {404: "not_found", 405: "method_not_allowed"}.get(status, "rejected")
        self.metrics.reject(status, code)
        model = _model_named(body) if body else None
        self.writer.submit(AuditRecord(
            request_id=self.new_id("rej-"), task=None, model=(model or "?")[:255],
            input_hash=hashlib.sha256(body or b"").hexdigest(), answered_by=AnsweredBy.ERROR,
            reason=self.redact(f"HTTP {status} {code} on {path}: {message}"), latency_ms=0.0,
            client_key_id=key_id, status_code=status,
        ))

    def maybe_spot_check(self, rt: TaskRuntime, text: str, d: Decision, request_id: str) -> None:
        """With probability ``spot_check_rate``, re-ask the teacher in the background (never waited for)."""
        rate = rt.spot_check_rate
        if rate > 0 and self._rng.random() < rate:
            self.spot_checks.submit(task=rt.name, task_cfg=rt.cfg, teacher=rt.teacher.name, text=text,
                                    answer=d.answer, request_id=request_id,
                                    student_version_id=rt.student_version_id)

    # -- health ---------------------------------------------------------------------------
    async def probe_teacher(self, name: str) -> dict[str, Any]:
        """``GET {base_url}/models`` with a short timeout, cached for ``health_ttl_s``."""
        cached = self._health.get(name)
        now = time.monotonic()
        if cached is not None and now - cached["_at"] < self.health_ttl_s:
            return cached
        lock = self._probe_locks.setdefault(name, asyncio.Lock())
        async with lock:
            cached = self._health.get(name)
            if cached is not None and time.monotonic() - cached["_at"] < self.health_ttl_s:
                return cached
            g = self.teachers[name]
            key = g.cfg.api_key()
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            t0 = time.perf_counter()
            res: dict[str, Any] = {"ok": False, "latency_ms": None, "error": None, "models": []}
            try:
                r = await self._probe_client.get(f"{g.cfg.base_url}/models", headers=headers)
                res["latency_ms"] = round((time.perf_counter() - t0) * 1000, 2)
                if r.status_code < 400 or r.status_code in (404, 405):  # up (some servers have no /models)
                    res["ok"] = True
                    try:
                        data = r.json().get("data", [])
                        res["models"] = [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
                    except Exception:
                        pass
                else:
                    res["error"] = f"GET /models answered HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                res["error"] = self.redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)
            res["circuit"] = g.breaker.state
            res["_at"] = time.monotonic()
            self._health[name] = res
            self.metrics.teacher_up.labels(name).set(1.0 if res["ok"] else 0.0)
            return res

    async def health(self) -> tuple[int, dict[str, Any]]:
        """(status code, body) of ``GET /healthz``: 503 only if the store is unreachable; ``degraded``
        (with ``reasons``) when a teacher is down or a task is not ``ok`` (:meth:`TaskRuntime.health`)."""
        store_ok, store_err = True, None
        try:
            await asyncio.wait_for(asyncio.to_thread(self.store.ping), self.probe_timeout_s)
        except Exception as exc:
            store_ok, store_err = False, self.redact(f"{type(exc).__name__}: {exc}")
        probes = await asyncio.gather(*(self.probe_teacher(n) for n in self.teachers))
        teachers = {n: {k: v for k, v in p.items() if not k.startswith("_") and k != "models"}
                    for n, p in zip(self.teachers, probes)}
        tasks = {n: rt.describe() for n, rt in self.tasks.items()}
        reasons = [f"teacher {n!r} is unreachable: {p.get('error')}" for n, p in zip(self.teachers, probes)
                   if not p["ok"]]
        reasons += [t["status_reason"] or f"task {n!r} is {t['status']}" for n, t in tasks.items()
                    if t["status"] != "ok"]
        if not store_ok:
            reasons.insert(0, f"the store is unreachable: {store_err}")
        status = "unhealthy" if not store_ok else "degraded" if reasons else "ok"
        body = {
            "status": status,
            "reasons": reasons,
            "store": {"ok": store_ok, "error": store_err},
            "teachers": teachers,
            "tasks": tasks,
            "audit": {"pending": self.writer.pending, "dropped": self.writer.stats["dropped"],
                      "failed_batches": self.writer.stats["failed_batches"]},
            "auth": self.auth,
            "uptime_s": round(time.time() - self.started, 1),
        }
        return (200 if store_ok else 503), body

    def teacher_models(self) -> list[str]:
        """Models a pass-through request can name: the default teacher's, plus those its /models listed."""
        if self.default_teacher is None:
            return []
        seen = [self.default_teacher.model]
        probe = self._health.get(self.default_teacher.name)
        for m in (probe or {}).get("models", []):
            if m not in seen:
                seen.append(m)
        return seen


def _model_named(body: bytes) -> str | None:
    """The ``model`` a refused request's JSON body names, if it is small and parses (else None)."""
    if len(body) > 1 << 20:
        return None
    try:
        obj = json.loads(body)
    except (ValueError, RecursionError):
        return None
    model = obj.get("model") if isinstance(obj, dict) else None
    return model if isinstance(model, str) else None
