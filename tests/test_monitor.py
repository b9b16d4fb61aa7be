"""downsize.monitor: the live risk monitor and the drift warning (issue 12).

Validity is checked in simulation through the monitors' own kernels, vectorised over seeds
(a test pins that the kernels and the classes agree). Seeds are fixed; every "≤ δ" check
allows the slack of a one-sided binomial test at level 0.001, so a correct monitor fails it
with probability < 0.1 % per check and a monitor at twice its δ almost surely.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import stats

from downsize.errors import DownsizeError, MonitorError
from downsize.monitor import DriftMonitor, RiskMonitor, version_delta
from downsize.monitor._bets import GRID, STRATEGIES, UpperCS, default_half_life
from downsize.monitor._conformal import (
    BINS,
    EDGES,
    Jumper,
    bin_of,
    sequential_pvalues,
    to_bins,
    uniform,
    uniforms,
)

DELTA = 0.05


def _max_ok(n: int, p: float, level: float = 0.001) -> int:
    """Largest count of alarms among n seeds still consistent with probability ≤ p."""
    return int(stats.binom.ppf(1 - level, n, p))


def _first_alarm(X: np.ndarray, alpha: float, strategy: str) -> np.ndarray:
    bettor = STRATEGIES[strategy](alpha, default_half_life(alpha))
    st, logw, out = bettor.init((X.shape[0],)), np.zeros(X.shape[0]), np.full(X.shape[0], -1)
    for t in range(X.shape[1]):
        logw += np.log1p(bettor.bet(st) * (X[:, t] - alpha))
        out[(out < 0) & (logw >= math.log(1 / DELTA))] = t + 1
        st = bettor.learn(st, X[:, t])
    return out


def _bernoulli(seed: int, S: int, rates: np.ndarray) -> np.ndarray:
    return (np.random.default_rng(seed).random((S, rates.size)) < rates).astype(float)


# -- risk monitor: validity and power -------------------------------------------------------
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("alpha", [0.02, 0.05])
def test_false_alarms_at_most_delta_at_the_boundary_of_h0(strategy: str, alpha: float) -> None:
    S = 400
    X = _bernoulli(1, S, np.full(3000, alpha))  # mean exactly α: the hardest null
    k = int((_first_alarm(X, alpha, strategy) > 0).sum())
    assert k <= _max_ok(S, DELTA), f"{k}/{S} unshifted streams alarmed"


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_wealth_is_a_martingale_under_h0(strategy: str) -> None:
    alpha, S, T = 0.05, 4000, 100
    bettor = STRATEGIES[strategy](alpha, default_half_life(alpha))
    for rate, exact in ((alpha, True), (alpha / 2, False)):
        X = _bernoulli(2, S, np.full(T, rate))
        st, logw = bettor.init((S,)), np.zeros(S)
        for t in range(T):
            logw += np.log1p(bettor.bet(st) * (X[:, t] - alpha))
            st = bettor.learn(st, X[:, t])
        w = np.exp(logw)
        se = w.std() / math.sqrt(S)
        assert w.mean() <= 1 + 4 * se  # supermartingale: E W_T ≤ 1
        if exact:
            assert w.mean() >= 1 - 4 * se  # and a martingale when the mean is exactly α


def test_detects_a_clear_shift_fast() -> None:
    alpha = 0.05
    rates = np.r_[np.full(300, alpha / 2), np.full(1500, 3 * alpha)]
    hit = _first_alarm(_bernoulli(3, 200, rates), alpha, "mixture")
    delay = np.where(hit > 300, hit - 300, 10**6)
    assert ((hit > 0) & (hit <= 300)).sum() <= _max_ok(200, DELTA)
    assert np.median(delay) < 250 and np.mean(delay <= 600) >= 0.95  # oracle: 43 checks


@pytest.mark.parametrize(("strategy", "slowdown"), [("agrapa", 1.6), ("mixture", 2.0)])
def test_detection_does_not_slow_down_after_a_long_calm_period(strategy: str, slowdown: float) -> None:
    alpha = 0.05  # (ons alone slows down about 2.8 times here)
    short = np.r_[np.full(300, alpha / 2), np.full(1500, 2 * alpha)]
    long = np.r_[np.full(4000, alpha / 2), np.full(1500, 2 * alpha)]
    d_short = np.median(_first_alarm(_bernoulli(4, 150, short), alpha, strategy) - 300)
    d_long = np.median(_first_alarm(_bernoulli(5, 150, long), alpha, strategy) - 4000)
    assert 0 < d_long < slowdown * d_short


def test_kernels_match_the_class() -> None:
    X = _bernoulli(6, 3, np.r_[np.full(200, 0.02), np.full(400, 0.2)])
    for strategy in STRATEGIES:
        hits = _first_alarm(X, 0.05, strategy)
        for x, hit in zip(X, hits):
            st = RiskMonitor.replay(x, 0.05, DELTA, strategy=strategy).state
            assert st.alarm_at == hit > 0


def test_upper_bound_covers_a_constant_risk_and_tightens() -> None:
    S, T, rate = 200, 2000, 0.03
    X = _bernoulli(7, S, np.full(T, rate))
    cs = UpperCS(DELTA)
    st, miss = cs.init((S,)), np.zeros(S, bool)
    for t in range(T):
        st = cs.learn(st, X[:, t])
        miss |= cs.bound(st) < rate
    assert miss.sum() <= _max_ok(S, DELTA)
    assert np.median(cs.bound(st)) < 0.045  # at 2,000 checks the bound is within 1.5 points
    mon = RiskMonitor.replay(X[0], 0.05, DELTA)
    assert mon.state.upper_bound == pytest.approx(float(cs.bound({k: v[0] for k, v in st.items()})))
    assert RiskMonitor(0.05, DELTA).state.upper_bound == 1.0 and GRID[0] == 0.0


def test_checks_to_alarm_is_exact_and_read_only() -> None:
    mon = RiskMonitor.replay(np.zeros(300), 0.05, DELTA)
    before = mon.to_dict()
    k = mon.checks_to_alarm()
    assert mon.to_dict() == before and k is not None and k >= 1
    for _ in range(k - 1):
        assert not mon.update(1.0).rejected
    assert mon.update(1.0).alarm_at == 300 + k
    assert mon.checks_to_alarm() == 0
    assert RiskMonitor(0.05, DELTA).checks_to_alarm(0.0, limit=50) is None


# -- risk monitor: persistence and bad input ------------------------------------------------
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_to_dict_from_dict_and_replay_reproduce_the_state_exactly(strategy: str) -> None:
    rng = np.random.default_rng(8)
    losses = np.where(rng.random(700) < 0.3, rng.random(700), 0.0)  # 1 − F1 style losses
    live = RiskMonitor(0.05, DELTA, strategy=strategy)
    for x in losses[:500]:
        live.update(float(x))
    restored = RiskMonitor.from_dict(json.loads(json.dumps(live.to_dict())))
    assert restored.state == live.state and restored.to_dict() == live.to_dict()
    for x in losses[500:]:
        assert live.update(x) == restored.update(x)
    replayed = RiskMonitor.replay(losses, 0.05, DELTA, strategy=strategy)
    assert replayed.to_dict() == live.to_dict() == restored.to_dict()


@pytest.mark.parametrize("bad", [math.nan, -0.1, 1.5, math.inf, "x", None, [0.0]])
def test_bad_losses_raise_and_change_nothing(bad: object) -> None:
    mon = RiskMonitor.replay([0, 1, 0], 0.05, DELTA)
    before = mon.to_dict()
    with pytest.raises(MonitorError, match="loss #4"):
        mon.update(bad)  # type: ignore[arg-type]
    with pytest.raises(MonitorError, match="loss #5"):
        mon.extend([0.0, bad])  # type: ignore[list-item]
    assert mon.to_dict() == before


def test_rounding_noise_at_the_ends_is_clipped() -> None:
    mon = RiskMonitor(0.05, DELTA)
    mon.extend([1 + 1e-12, -1e-12, True, np.float32(0.5)])
    assert mon.state.loss_sum == 2.5


@pytest.mark.parametrize("kwargs", [{"alpha": 0, "delta": 0.05}, {"alpha": 0.05, "delta": 1},
                                    {"alpha": 0.05, "delta": 0.05, "strategy": "kelly"},
                                    {"alpha": 0.05, "delta": 0.05, "half_life": 0}, {"alpha": True, "delta": 0.05}])
def test_bad_parameters_raise(kwargs: dict) -> None:
    with pytest.raises(MonitorError) as e:
        RiskMonitor(**kwargs)
    assert isinstance(e.value, (DownsizeError, ValueError))


def test_corrupt_saved_states_are_refused() -> None:
    good = RiskMonitor.replay([0, 1, 0, 0], 0.05, DELTA).to_dict()
    bad_cases = [{"format": "something"}, {k: v for k, v in good.items() if k != "bettor"},
                 {**good, "n_checks": 99}, {**good, "alarm_at": 7},
                 {**good, "upper_cs": {**good["upper_cs"], "logk": [0.0] * 3}},
                 {**good, "log_wealth": "nan"}, [1, 2]]
    for bad in bad_cases:
        with pytest.raises(MonitorError):
            RiskMonitor.from_dict(bad)  # type: ignore[arg-type]


def test_version_delta_splits_the_budget() -> None:
    shares = [version_delta(DELTA, v) for v in range(1, 100_001)]
    assert sum(shares) <= DELTA and sum(shares) > DELTA * (1 - 1e-4)
    assert all(a > b > 0 for a, b in itertools.pairwise(shares))
    for bad in (0, -1, 1.5, True):
        with pytest.raises(MonitorError):
            version_delta(DELTA, bad)  # type: ignore[arg-type]


def test_state_describes_the_evidence() -> None:
    st = RiskMonitor.replay([1.0] * 40, 0.05, DELTA).state
    assert st.rejected and st.mean_loss == 1.0 and st.wealth >= st.threshold == 20.0
    assert f"ALARM at check {st.alarm_at}" in st.describe() and "40 spot checks" in st.describe()


# -- drift warning ----------------------------------------------------------------------------
def _conf(rng: np.random.Generator, shape: tuple[int, ...], shift: float = 0.0) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-rng.normal(2.5 + shift, 1.5, shape)))


def _drift_warnings(shift: float, S: int, seed: int, T: int = 1500) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ref, live = _conf(rng, (S, 1000)), _conf(rng, (S, T), shift)
    counts = np.zeros((S, BINS), np.int64)
    np.add.at(counts, (np.repeat(np.arange(S), 1000), to_bins(ref).ravel()), 1)
    p, _ = sequential_pvalues(counts, to_bins(live), np.arange(S, dtype=np.uint64)[:, None])
    jumper = Jumper()
    st, hit = jumper.init((S,)), np.full(S, -1)
    for t in range(p.shape[1]):
        st = jumper.step(st, p[:, t])
        hit[(hit < 0) & (st["logm"] >= math.log(1 / DELTA))] = t + 1
    return hit


def test_drift_false_warnings_at_most_delta_and_clear_shift_detected() -> None:
    assert (_drift_warnings(0.0, 250, 9) > 0).sum() <= _max_ok(250, DELTA)
    hit = _drift_warnings(-0.8, 60, 10, T=600)
    assert np.mean(hit > 0) >= 0.95 and np.median(hit[hit > 0]) < 300


def test_batch_and_incremental_paths_agree_bit_for_bit() -> None:
    t = np.arange(0, 10**6, 997)
    assert uniforms(12345, t).tolist() == [uniform(12345, int(i)) for i in t]
    c = np.r_[0.0, 1.0, np.random.default_rng(0).random(5000), EDGES, np.nextafter(EDGES, 0)]
    assert to_bins(c).tolist() == [bin_of(x) for x in c.tolist()]
    assert to_bins([0.0, 0.5, 1.0]).tolist() == [0, BINS // 2, BINS - 1]
    rng = np.random.default_rng(11)
    ref, live = _conf(rng, (800,)), np.r_[_conf(rng, (600,)), np.round(_conf(rng, (600,)), 2)]
    one = DriftMonitor(ref, DELTA, seed=3)
    for c in live:
        one.update(float(c))
    batch = DriftMonitor.replay(ref, live, DELTA, seed=3)
    half = DriftMonitor(ref, DELTA, seed=3)
    half.extend(live[:500])
    half = DriftMonitor.from_dict(json.loads(json.dumps(half.to_dict())))
    for c in live[500:]:
        half.update(c)
    assert one.to_dict() == batch.to_dict() == half.to_dict()
    assert one.state == batch.state and one.state.n_live == 1200
    # the vectorised jumper of the benchmark is the scalar one up to rounding
    p = rng.random(300)
    j, a, b = Jumper(), Jumper().init_scalar(), Jumper().init((2,))
    for x in p:
        a, b = j.step_scalar(a, float(x)), j.step(b, np.array([x, x]))
    assert b["logm"] == pytest.approx([a["logm"]] * 2, rel=1e-12)


def test_drift_monitor_warns_and_explains() -> None:
    rng = np.random.default_rng(12)
    mon = DriftMonitor(_conf(rng, (1500,)), DELTA)
    assert not mon.extend(_conf(rng, (800,))).warned
    st = mon.extend(_conf(rng, (800,), -1.0))
    assert st.warned and 800 < st.warned_at <= 1200 and st.live_mean < st.reference_mean
    assert f"WARNING since request {st.warned_at:,}" in st.describe()


@pytest.mark.parametrize("bad", [math.nan, -0.01, 1.01, "high", None])
def test_drift_bad_confidences_raise_and_change_nothing(bad: object) -> None:
    mon = DriftMonitor([0.9, 0.8, 0.95], DELTA)
    mon.update(0.9)
    before = mon.to_dict()
    with pytest.raises(MonitorError, match="#2"):
        mon.update(bad)  # type: ignore[arg-type]
    with pytest.raises(MonitorError, match="#3"):
        mon.extend([0.5, bad])  # type: ignore[list-item]
    assert mon.to_dict() == before
    for ref in ([], [0.5, 2.0], [[math.nan]]):
        with pytest.raises(MonitorError):
            DriftMonitor(ref, DELTA)
    with pytest.raises(MonitorError):
        DriftMonitor([0.5], 0.0)


def test_drift_corrupt_saved_states_are_refused() -> None:
    good = DriftMonitor.replay([0.9, 0.8], [0.7, 0.6], DELTA).to_dict()
    for bad in ({**good, "format": "x"}, {**good, "n_live": 5}, {**good, "bins": [[0, -1]]},
                {**good, "martingale": {**good["martingale"], "w": [1.0]}},
                {k: v for k, v in good.items() if k != "seed"}, {**good, "warned_at": 3}):
        with pytest.raises(MonitorError):
            DriftMonitor.from_dict(bad)
