"""downsize.report.energy: CPU timing, the two kinds of energy figure and their labels."""

from __future__ import annotations

import threading
import time

import pytest

from downsize.config import Config, EnergyConfig
from downsize.report.energy import (
    ESTIMATED,
    MEASURED,
    cpu_timer,
    cpu_wh,
    student_energy,
    teacher_energy,
    teacher_wh_per_1k_tokens,
    tokens_wh,
)


def _burn(seconds: float) -> None:
    """Spin until this thread has used ``seconds`` of CPU (however busy the machine is)."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        x += 1


def test_cpu_timer_measures_cpu_not_wall_time() -> None:
    with cpu_timer() as busy:
        _burn(0.15)
    with cpu_timer() as idle:
        time.sleep(0.15)
    assert busy.ms >= 140.0  # the 150 ms of CPU it burned (less a clock tick)
    assert idle.ms < 30.0


def test_cpu_timer_thread_scope_ignores_other_threads() -> None:
    t = threading.Thread(target=_burn, args=(0.3,))
    with cpu_timer("thread") as mine, cpu_timer("process") as whole:
        t.start()
        time.sleep(0.25)
        t.join()
    assert mine.ms < 30.0
    assert whole.ms > mine.ms + 50.0


def test_cpu_timer_sets_ms_on_error_and_checks_scope() -> None:
    with pytest.raises(ZeroDivisionError), cpu_timer() as cpu:
        _burn(0.02)
        1 / 0  # noqa: B018
    assert cpu.ms > 0.0
    with pytest.raises(ValueError, match="wall"), cpu_timer("wall"):  # type: ignore[arg-type]
        pass


@pytest.mark.parametrize(
    ("ms", "watts", "want"), [(3_600_000, 15.0, 15.0), (1000, 36.0, 0.01), (0, 15.0, 0.0)]
)
def test_cpu_wh(ms: float, watts: float, want: float) -> None:
    assert cpu_wh(ms, watts) == pytest.approx(want)


def test_tokens_wh() -> None:
    assert tokens_wh(1000, 0.3) == pytest.approx(0.3)
    assert tokens_wh(250, 0.3) == pytest.approx(0.075)


def test_figures_carry_their_label_and_assumption() -> None:
    s = student_energy(7200.0, EnergyConfig(cpu_watts_per_core=10.0), n_measured=5, n_imputed=2)
    assert s.label == MEASURED == "measured (CPU time × W/core)"
    assert s.wh == pytest.approx(7.2 / 3600 * 10)
    assert "10 W" in s.assumption and "2 without a record" in s.assumption
    t = teacher_energy(2000, 0.3, detail="d")
    assert t.label == ESTIMATED == "estimated (tokens × Wh/1k tokens)"
    assert t.wh == pytest.approx(0.6)
    assert "0.3 Wh per 1k tokens" in t.assumption and t.assumption.endswith("; d")
    assert teacher_energy(None, 0.3).wh is None
    assert set(t.as_dict()) == {"wh", "label", "assumption"}


def test_teacher_energy_assumption_per_teacher() -> None:
    cfg = Config.model_validate(
        {
            "teachers": {
                "big": {
                    "base_url": "http://127.0.0.1:1/v1",
                    "model": "m",
                    "energy_wh_per_1k_tokens": 1.2,
                },
                "small": {"base_url": "http://127.0.0.1:1/v1", "model": "m"},
            },
            "tasks": {
                "a": {"teacher": "big", "instructions": "x", "labels": {"p": "p", "q": "q"}},
                "b": {"teacher": "small", "instructions": "x", "labels": {"p": "p", "q": "q"}},
            },
            "energy": {"teacher_wh_per_1k_tokens": 0.25},
        }
    )
    assert teacher_wh_per_1k_tokens(cfg, "a") == 1.2
    assert teacher_wh_per_1k_tokens(cfg, "b") == 0.25
    assert teacher_wh_per_1k_tokens(cfg, "unknown") == 0.25
    assert teacher_wh_per_1k_tokens(cfg) == 0.25
