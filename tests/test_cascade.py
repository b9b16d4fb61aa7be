"""The one decision rule (:func:`downsize.cascade.decide`), the classify kind's contract, and the
teacher cache running off the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from downsize.cascade import AnsweredBy, Cascade, Policy, Scored, decide
from downsize.errors import AnswerError, StudentError, TeacherError, TeacherResponseError, TeacherTimeout
from downsize.store import Store
from downsize.tasks import KINDS, ClassifyTask, TaskConfig
from downsize.teacher import TeacherAnswer
from downsize.teacher.cache import CallCache

TASK = ClassifyTask(instructions="Route it.", labels={"billing": "money", "technical": "bugs"})


def _ans(answer: Any, **kw: Any) -> TeacherAnswer:
    return TeacherAnswer(answer=answer, raw=str(answer), status="ok" if answer is not None else "parse_error", **kw)


def _run(policy: Policy, scored: Scored | None, ask: Any) -> Any:
    return asyncio.run(decide(policy, scored, ask))


SURE = Scored("billing", 0.99, 2.0, 1.0)
UNSURE = Scored("billing", 0.40, 2.0, 1.0)


def _teacher(answer: Any = "technical", exc: Exception | None = None, **kw: Any) -> Any:
    calls = []

    async def ask() -> TeacherAnswer:
        calls.append(1)
        if exc is not None:
            raise exc
        return _ans(answer, latency_ms=300.0, cost_usd=0.01, input_tokens=50, output_tokens=3, call_id=7, **kw)

    ask.calls = calls  # type: ignore[attr-defined]
    return ask


# -- decide: every branch ---------------------------------------------------------------------------
def test_confident_student_answers_and_the_teacher_is_not_asked() -> None:
    ask = _teacher()
    d = _run(Policy(threshold=0.9), SURE, ask)
    assert (d.answer, d.answered_by, d.confidence) == ("billing", AnsweredBy.STUDENT, 0.99)
    assert ask.calls == [] and d.teacher_cost_usd == 0.0 and ">= threshold 0.900" in d.reason


def test_unsure_student_escalates_to_the_teacher() -> None:
    d = _run(Policy(threshold=0.9), UNSURE, _teacher("technical"))
    assert (d.answer, d.answered_by) == ("technical", AnsweredBy.TEACHER)
    assert (d.student_answer, d.teacher_answer, d.teacher_call_id) == ("billing", "technical", 7)
    assert d.latency_ms == pytest.approx(302.0) and "< threshold 0.900" in d.reason


def test_no_threshold_means_teacher_only() -> None:
    d = _run(Policy(threshold=None), SURE, _teacher("technical"))
    assert d.answered_by is AnsweredBy.TEACHER and d.reason == "no calibrated threshold: teacher only"


@pytest.mark.parametrize("exc", [TeacherTimeout("slow"), TeacherError("down")])
def test_teacher_failure_falls_back_to_the_student(exc: Exception) -> None:
    d = _run(Policy(threshold=0.9), UNSURE, _teacher(exc=exc))
    assert (d.answer, d.answered_by) == ("billing", AnsweredBy.STUDENT_FALLBACK)
    assert type(exc).__name__ in d.reason and d.teacher_error


def test_unparseable_teacher_answer_falls_back_and_is_marked() -> None:
    d = _run(Policy(threshold=0.9), UNSURE, _teacher(None, error="not a label"))
    assert d.answered_by is AnsweredBy.STUDENT_FALLBACK and "unparseable" in d.reason
    assert d.teacher_error == "not a label" and d.teacher_cost_usd == 0.01  # it was paid for


def test_no_teacher_configured_falls_back() -> None:
    d = _run(Policy(threshold=0.9), UNSURE, None)
    assert d.answered_by is AnsweredBy.STUDENT_FALLBACK and d.reason.endswith("no teacher configured")


def test_shadow_mode_asks_the_teacher_even_when_the_student_is_sure() -> None:
    ask = _teacher("technical")
    d = _run(Policy(threshold=0.5, shadow="mode: shadow in the config"), SURE, ask)
    assert (d.answer, d.answered_by, d.student_answer) == ("technical", AnsweredBy.SHADOW, "billing")
    assert ask.calls == [1] and d.reason == "shadow mode: mode: shadow in the config"


def test_shadow_without_a_student_raises_when_the_teacher_fails() -> None:
    with pytest.raises(TeacherTimeout):
        _run(Policy(shadow="no student"), None, _teacher(exc=TeacherTimeout("slow")))
    with pytest.raises(TeacherResponseError, match="does not fit the task"):
        _run(Policy(shadow="no student"), None, _teacher(None, error="nope"))
    d = _run(Policy(shadow="no student"), None, _teacher("technical"))
    assert d.answered_by is AnsweredBy.SHADOW and d.confidence is None and d.student_answer is None


def test_policy_local_is_the_threshold_rule() -> None:
    p = Policy(threshold=0.7)
    assert p.local(0.7) and p.local(0.71) and not p.local(0.69)
    assert not Policy(threshold=None).local(1.0) and not Policy(threshold=0.1, shadow="x").local(1.0)


# -- the cascade scores each text once ---------------------------------------------------------------
class _CountingStudent:
    classes_ = np.array(["billing", "technical"])

    def __init__(self) -> None:
        self.calls = 0

    def predict_proba(self, X: list[str]) -> np.ndarray:
        self.calls += 1
        return np.array([[0.95, 0.05] if "invoice" in x else [0.55, 0.45] for x in X])


class _Teacher:
    def __init__(self) -> None:
        self.asked: list[str] = []

    async def ask(self, text: str, *, task_name: str, task: TaskConfig, budget: Any = None) -> TeacherAnswer:
        self.asked.append(text)
        return _ans("technical")


def test_apredict_scores_the_batch_once_and_escalates_only_the_unsure() -> None:
    st, te = _CountingStudent(), _Teacher()
    cas = Cascade(TASK, task_name="t", student=st, policy=Policy(threshold=0.9), teacher=te)
    out = asyncio.run(cas.apredict(["invoice 1", "crash", "invoice 2", "slow"]))
    assert st.calls == 1 and te.asked == ["crash", "slow"]
    assert [d.answered_by for d in out] == ["student", "teacher", "student", "teacher"]
    cas.threshold = 0.5  # the policy follows
    assert cas.policy == Policy(threshold=0.5)


# -- the classify kind's contract ----------------------------------------------------------------------
def test_classify_kind_contract() -> None:
    assert KINDS["classify"] is ClassifyTask
    assert TASK.parse('{"label": "Billing"}') == "billing"
    with pytest.raises(AnswerError, match="not exactly one of the labels"):
        TASK.parse("sports")
    assert TASK.decode(TASK.encode("technical")) == "technical"
    with pytest.raises(AnswerError):
        TASK.decode("sports")
    assert TASK.normalise({"label": "billing"}) == "billing"
    assert TASK.disagreement("billing", "billing") == 0.0 and TASK.disagreement("billing", "technical") == 1.0
    assert TASK.render("billing", json_mode=False) == "billing"
    assert TASK.render("billing") == '{"label":"billing"}'
    assert TASK.answer_schema()["properties"]["label"]["enum"] == ["billing", "technical"]
    assert "billing: money" in TASK.prompt()
    answers, conf = TASK.score(_CountingStudent(), ["invoice", "x"])
    assert answers == ["billing", "billing"] and np.allclose(conf, [0.95, 0.55])
    assert TASK.disagreements(["billing", "technical"], ["billing", "billing"]).tolist() == [0.0, 1.0]
    m = TASK.metrics(["billing", None], ["billing", "technical"])
    assert m["accuracy"] == 0.5


def test_classify_training_checks_name_the_label() -> None:
    with pytest.raises(StudentError, match=r"too few examples for label\(s\) 'technical': 1"):
        TASK.check_training("t", ["billing"] * 10 + ["technical"])
    assert TASK.check_training("t", ["billing"] * 5 + ["technical"] * 5) == {"billing": 5, "technical": 5}


def test_a_student_that_does_not_fit_the_kind_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="does not fit a classify task"):
        ClassifyTask(instructions="x", labels={"a": "", "b": ""}, student="crf")


def test_the_contract_cannot_be_instantiated_half_done() -> None:
    with pytest.raises(TypeError):
        TaskConfig(kind="x", instructions="x")  # type: ignore[abstract]


# -- the teacher cache stays off the event loop ----------------------------------------------------------
def test_cache_reads_and_writes_run_in_worker_threads(tmp_store: Store) -> None:
    seen: list[str] = []
    real_get, real_rec = tmp_store.cached_call, tmp_store.record_call

    def get(key: str) -> Any:
        seen.append(threading.current_thread().name)
        return real_get(key)

    def rec(call: Any, **kw: Any) -> Any:
        seen.append(threading.current_thread().name)
        return real_rec(call, **kw)

    tmp_store.cached_call, tmp_store.record_call = get, rec  # type: ignore[method-assign]
    from downsize.store import TeacherCall

    cache = CallCache(tmp_store)

    async def go() -> Any:
        assert await cache.get("k" * 64) is None
        await cache.record(TeacherCall(request_hash="k" * 64, base_url="u", model="m", task="t", prompt=[],
                                       status="ok", parsed_label="billing"))
        return await cache.get("k" * 64)

    row = asyncio.run(go())
    assert row is not None and row.parsed_label == "billing"
    assert len(seen) == 3 and threading.main_thread().name not in seen
