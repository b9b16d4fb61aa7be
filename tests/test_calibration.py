"""ThresholdCalibrator: the Learn-then-Test guarantee, checked by simulation, and its edges."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from downsize.calibration import ThresholdCalibrator, clopper_pearson, min_calibration_size
from downsize.errors import CalibrationError, NotFittedError


def _draw(rng: np.random.Generator, n: int, p_err) -> tuple[np.ndarray, np.ndarray]:
    s = rng.uniform(size=n)
    return s, rng.uniform(size=n) >= p_err(s)


def _smooth(s: np.ndarray) -> np.ndarray:
    """Errors get rarer with confidence; selective risk R(λ) = 0.1 (1 - λ)²."""
    return 0.3 * (1 - s) ** 2


def _spiky(s: np.ndarray) -> np.ndarray:
    """Non-monotone: the most confident 10 % are wrong 60 % of the time."""
    return np.where(s >= 0.9, 0.6, 0.01)


def _violation_rate(
    p_err, risk, *, alpha: float, delta: float, n: int, runs: int, seed: int, **kw
) -> tuple[float, float, float]:
    """Share of runs whose true (and fresh-sample) selective risk at λ̂ exceeds alpha; mean coverage."""
    rng = np.random.default_rng(seed)
    true_bad = fresh_bad = 0
    coverage = []
    for _ in range(runs):
        cal = ThresholdCalibrator(alpha=alpha, delta=delta, **kw).fit(*_draw(rng, n, p_err))
        coverage.append(cal.coverage_)
        if cal.threshold_ is None:
            continue
        true_bad += risk(cal.threshold_) > alpha
        s, ok = _draw(rng, 20_000, p_err)
        answered = cal.predict(s)
        fresh_bad += answered.any() and (~ok[answered]).mean() > alpha
    return true_bad / runs, fresh_bad / runs, float(np.mean(coverage))


@pytest.mark.parametrize("bound", ["binomial", "hoeffding_bentkus"])
def test_guarantee_holds_over_resplits(bound: str) -> None:
    """Over 300 calibration samples, the realised selective risk exceeds alpha in ≤ delta of runs."""
    alpha, delta, runs = 0.05, 0.1, 300

    def risk(lam: float) -> float:
        return 0.1 * (1 - lam) ** 2

    true_rate, fresh_rate, coverage = _violation_rate(
        _smooth, risk, alpha=alpha, delta=delta, n=1000, runs=runs, seed=1, bound=bound
    )
    slack = 3 * math.sqrt(delta * (1 - delta) / runs)  # ≈ 0.05
    assert true_rate <= delta + slack, true_rate
    assert fresh_rate <= delta + slack + 0.02, fresh_rate  # the fresh sample adds its own noise
    assert coverage > 0.4  # and it is not vacuous: R(λ) ≤ 0.05 up to coverage 0.71


def test_guarantee_holds_when_the_sequence_starts_in_a_bad_region() -> None:
    """Non-monotone risk: the most confident 5 % are wrong 30 % of the time, so the first
    tested threshold (30 % coverage) has risk 0.067, just above alpha = 0.06 (true null)."""

    def p_err(s: np.ndarray) -> np.ndarray:
        return np.where(s >= 0.95, 0.3, 0.02)

    def risk(lam: float) -> float:
        return (0.3 * (1 - max(lam, 0.95)) + 0.02 * max(0.95 - lam, 0.0)) / (1 - lam)

    true_rate, fresh_rate, _ = _violation_rate(
        p_err, risk, alpha=0.06, delta=0.1, n=1000, runs=300, seed=2, min_answered=0.3
    )
    slack = 3 * math.sqrt(0.1 * 0.9 / 300)
    assert true_rate <= 0.1 + slack and fresh_rate <= 0.1 + slack + 0.02, (true_rate, fresh_rate)


def test_monotone_in_alpha() -> None:
    rng = np.random.default_rng(3)
    for profile in (_smooth, _spiky, lambda s: 0.25 * (1 - s)):
        for _ in range(15):
            scores, correct = _draw(rng, 3000, profile)
            fits = [
                ThresholdCalibrator(alpha=a, delta=0.05).fit(scores, correct)
                for a in (0.02, 0.05, 0.1, 0.2)
            ]
            lams = [math.inf if f.threshold_ is None else f.threshold_ for f in fits]
            covs = [f.coverage_ for f in fits]
            assert lams == sorted(lams, reverse=True), lams
            assert covs == sorted(covs), covs


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(200, 1500),
    err=st.floats(0.0, 0.4),
    alpha=st.sampled_from([0.02, 0.05, 0.1, 0.2]),
    seed=st.integers(0, 2**32 - 1),
)
def test_fitted_state_is_consistent(n: int, err: float, alpha: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = np.round(rng.uniform(size=n), 2)  # ties on purpose
    correct = rng.uniform(size=n) >= err * (1 - scores) * 2
    if n < min_calibration_size(alpha, 0.05):
        with pytest.raises(CalibrationError):
            ThresholdCalibrator(alpha=alpha).fit(scores, correct)
        return
    cal = ThresholdCalibrator(alpha=alpha).fit(scores, correct)
    assert cal.n_ == n
    curve = cal.curve_
    assert [c["n_answered"] for c in curve] == sorted(c["n_answered"] for c in curve)
    rejected = [c["rejected"] for c in curve]
    if cal.threshold_ is None:
        assert not any(rejected) and cal.coverage_ == 0.0 and cal.risk_upper_ is None
        assert not cal.predict(scores).any()
        return
    # the rejected candidates are one contiguous run that ends at the threshold
    idx = [i for i, r in enumerate(rejected) if r]
    assert idx == list(range(idx[0], idx[-1] + 1))
    assert curve[idx[-1]]["threshold"] == cal.threshold_
    assert all(curve[i]["p_value"] <= 0.05 for i in idx)
    answered = cal.predict(scores)
    assert answered.sum() == cal.n_answered_ == curve[idx[-1]]["n_answered"]
    assert (~correct[answered]).sum() == cal.errors_answered_
    assert cal.coverage_ == pytest.approx(answered.mean())
    lo, hi = cal.coverage_interval_
    assert lo <= cal.coverage_ <= hi
    assert cal.risk_upper_ <= alpha + 1e-12
    assert curve[idx[0]]["n_answered"] >= cal.start_answered_


def test_all_correct_answers_everything() -> None:
    rng = np.random.default_rng(4)
    cal = ThresholdCalibrator(alpha=0.02, delta=0.05).fit(
        rng.uniform(size=1200), np.ones(1200, bool)
    )
    assert cal.coverage_ == 1.0 and cal.threshold_ is not None and cal.errors_answered_ == 0
    assert cal.coverage_interval_[0] > 0.99


def test_coin_flip_student_gets_no_threshold() -> None:
    rng = np.random.default_rng(5)
    scores = rng.uniform(size=2000)
    cal = ThresholdCalibrator(alpha=0.1, delta=0.05).fit(scores, rng.uniform(size=2000) < 0.5)
    assert cal.threshold_ is None and cal.coverage_ == 0.0 and cal.n_answered_ == 0
    assert cal.coverage_interval_ == (0.0, 0.0)
    assert not cal.predict(scores).any()
    assert (
        cal.guarantee_.startswith("No confidence threshold qualifies")
        and "teacher" in cal.guarantee_
    )


def test_too_little_data_quotes_n_and_the_minimum() -> None:
    assert min_calibration_size(0.02, 0.05) == 149 == math.ceil(math.log(0.05) / math.log(0.98))
    with pytest.raises(
        CalibrationError, match=r"148 calibration points.*n ≥ .* = 149.*label 1 more"
    ):
        ThresholdCalibrator(alpha=0.02, delta=0.05).fit(np.ones(148), np.ones(148, bool))
    cal = ThresholdCalibrator(alpha=0.02, delta=0.05).fit(np.ones(149), np.ones(149, bool))
    assert cal.threshold_ == 1.0 and cal.coverage_ == 1.0  # exactly enough, with zero errors


def test_guarantee_sentence() -> None:
    rng = np.random.default_rng(6)
    scores, correct = _draw(rng, 1200, lambda s: 0.2 * (1 - s) ** 3)
    cal = ThresholdCalibrator(alpha=0.02, delta=0.05).fit(scores, correct)
    m = re.fullmatch(
        r"With probability ≥ 95 % over the calibration sample, the student disagrees with the reference "
        r"on at most 2 % of the requests it answers \(confidence ≥ (0\.\d+)\); it answered (\d+) % "
        r"\((\d+)–(\d+) %\) of 1,200 calibration requests\.",
        cal.guarantee_,
    )
    assert m, cal.guarantee_
    assert float(m.group(1)) <= cal.threshold_ < float(m.group(1)) + 0.01
    assert int(m.group(3)) <= int(m.group(2)) <= int(m.group(4))
    doc = ThresholdCalibrator.__doc__ or ""
    assert "exchangeable" in doc and "reference labels" in doc


def test_hoeffding_bentkus_is_more_conservative() -> None:
    rng = np.random.default_rng(7)
    for _ in range(10):
        scores, correct = _draw(rng, 2000, _smooth)
        exact = ThresholdCalibrator(alpha=0.05).fit(scores, correct)
        hb = ThresholdCalibrator(alpha=0.05, bound="hoeffding_bentkus").fit(scores, correct)
        assert hb.coverage_ <= exact.coverage_
        for a, b in zip(exact.curve_, hb.curve_):
            assert b["p_value"] >= a["p_value"] - 1e-12


def test_p_values_are_the_exact_binomial_tail() -> None:
    rng = np.random.default_rng(8)
    scores, correct = _draw(rng, 500, _smooth)
    cal = ThresholdCalibrator(alpha=0.1).fit(scores, correct)
    for c in cal.curve_[::37]:
        assert c["p_value"] == pytest.approx(stats.binom.cdf(c["errors"], c["n_answered"], 0.1))


@pytest.mark.parametrize(
    "k, n", [(0, 1), (0, 10), (3, 10), (5, 10), (10, 10), (17, 1200), (1190, 1200)]
)
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_clopper_pearson_matches_scipy_exact_interval(k: int, n: int, confidence: float) -> None:
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="exact")
    lo, hi = clopper_pearson(k, n, confidence)
    assert lo == pytest.approx(ref.low, abs=1e-9) and hi == pytest.approx(ref.high, abs=1e-9)


def test_bad_inputs_are_clear() -> None:
    ok_s, ok_c = np.linspace(0, 1, 500), np.ones(500, bool)
    with pytest.raises(CalibrationError, match="alpha must be"):
        ThresholdCalibrator(alpha=1.5).fit(ok_s, ok_c)
    with pytest.raises(CalibrationError, match="delta must be"):
        ThresholdCalibrator(delta=0).fit(ok_s, ok_c)
    with pytest.raises(CalibrationError, match="bound must be"):
        ThresholdCalibrator(bound="chebyshev").fit(ok_s, ok_c)
    with pytest.raises(CalibrationError, match="min_answered"):
        ThresholdCalibrator(min_answered=-3).fit(ok_s, ok_c)
    with pytest.raises(CalibrationError, match="500 values but correct has 499"):
        ThresholdCalibrator().fit(ok_s, ok_c[1:])
    bad = ok_s.copy()
    bad[7] = np.nan
    with pytest.raises(CalibrationError, match=r"scores\[7\] is nan"):
        ThresholdCalibrator().fit(bad, ok_c)
    with pytest.raises(CalibrationError, match="array of numbers"):
        ThresholdCalibrator().fit(["high"] * 500, ok_c)
    with pytest.raises(CalibrationError, match="booleans"):
        ThresholdCalibrator().fit(ok_s, np.full(500, 2))
    with pytest.raises(NotFittedError):
        ThresholdCalibrator().predict([0.5])
    with pytest.raises(ValueError):
        clopper_pearson(11, 10)


def test_docstring_examples() -> None:
    import doctest

    import downsize.calibration

    assert doctest.testmod(downsize.calibration).failed == 0


def test_min_answered_moves_the_start() -> None:
    rng = np.random.default_rng(9)
    scores, correct = _draw(rng, 2000, _smooth)
    assert ThresholdCalibrator(alpha=0.05).fit(scores, correct).start_answered_ == 200  # 10 % of n
    assert (
        ThresholdCalibrator(alpha=0.05, min_answered=500).fit(scores, correct).start_answered_
        == 500
    )
    assert (
        ThresholdCalibrator(alpha=0.05, min_answered=0.5).fit(scores, correct).start_answered_
        == 1000
    )
    # never below the count at which zero errors can pass
    assert (
        ThresholdCalibrator(alpha=0.02, min_answered=10).fit(scores, correct).start_answered_ == 149
    )


# -- bounded (real-valued) losses -----------------------------------------------------------------


def _bounded_draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Losses in [0, 1]: a miss costs a Beta(2, 3) share (a partial F1 miss), likelier when unsure
    (the true selective risk is :func:`_bounded_risk`)."""
    s = rng.uniform(size=n)
    miss = rng.uniform(size=n) < 0.6 * (1 - s) ** 2
    return s, np.where(miss, rng.beta(2, 3, size=n), 0.0)


def _bounded_risk(lam: float) -> float:
    # E[miss | s ≥ λ] = 0.6 ∫_λ^1 (1-s)^2 ds / (1-λ) = 0.2 (1-λ)^2; times E[Beta(2,3)] = 0.4
    return 0.08 * (1 - lam) ** 2


@pytest.mark.parametrize("bound", ["hoeffding_bentkus", "betting"])
def test_guarantee_holds_for_a_bounded_loss(bound: str) -> None:
    """Over 200 calibration samples of a real-valued loss, the true mean loss at λ̂ exceeds α in ≤ δ."""
    alpha, delta, runs = 0.03, 0.1, 200
    rng = np.random.default_rng(5)
    bad, cov = 0, []
    for _ in range(runs):
        s, loss = _bounded_draw(rng, 1000)
        cal = ThresholdCalibrator(alpha=alpha, delta=delta, bound=bound).fit(s, loss=loss)
        cov.append(cal.coverage_)
        bad += cal.threshold_ is not None and _bounded_risk(cal.threshold_) > alpha
    assert bad / runs <= delta + 3 * math.sqrt(delta * (1 - delta) / runs)
    assert np.mean(cov) > 0.2  # R(λ) ≤ 0.03 up to coverage 0.61: not vacuous


def test_a_bounded_loss_certifies_more_than_counting_every_partial_miss_as_an_error() -> None:
    rng = np.random.default_rng(6)
    s, loss = _bounded_draw(rng, 3000)
    for bound in ("hoeffding_bentkus", "betting"):
        real = ThresholdCalibrator(alpha=0.03, bound=bound).fit(s, loss=loss)
        zero_one = ThresholdCalibrator(alpha=0.03, bound=bound).fit(s, loss > 0)
        assert real.coverage_ > zero_one.coverage_ + 0.1, bound
        assert real.loss_answered_ / real.n_answered_ <= real.risk_upper_ <= 0.03
        assert real.errors_answered_ == int((loss[s >= real.threshold_] > 0).sum())


def test_zero_one_losses_give_the_same_answer_through_correct_and_loss() -> None:
    rng = np.random.default_rng(7)
    s, ok = _draw(rng, 2000, _smooth)
    for bound in ("binomial", "hoeffding_bentkus", "betting"):
        a = ThresholdCalibrator(alpha=0.05, bound=bound).fit(s, ok)
        b = ThresholdCalibrator(alpha=0.05, bound=bound).fit(s, loss=(~ok).astype(float))
        assert (a.threshold_, a.n_answered_, a.risk_upper_) == (b.threshold_, b.n_answered_, b.risk_upper_)


def test_betting_is_deterministic_and_close_to_the_exact_test_on_zero_one_losses() -> None:
    rng = np.random.default_rng(8)
    s, ok = _draw(rng, 3000, _smooth)
    first = ThresholdCalibrator(alpha=0.05, bound="betting").fit(s, ok)
    again = ThresholdCalibrator(alpha=0.05, bound="betting").fit(s, ok)
    exact = ThresholdCalibrator(alpha=0.05, bound="binomial").fit(s, ok)
    assert first.threshold_ == again.threshold_ and first.curve_ == again.curve_
    assert abs(first.coverage_ - exact.coverage_) < 0.1


def test_bounded_loss_inputs_are_checked() -> None:
    s = np.linspace(0, 1, 500)
    with pytest.raises(CalibrationError, match="exact for 0/1 losses only"):
        ThresholdCalibrator(bound="binomial").fit(s, loss=np.full(500, 0.5))
    with pytest.raises(CalibrationError, match=r"loss\[3\] is 1.5"):
        ThresholdCalibrator(bound="betting").fit(s, loss=np.r_[0, 0, 0, 1.5, np.zeros(496)])
    with pytest.raises(CalibrationError, match="exactly one of"):
        ThresholdCalibrator().fit(s, np.ones(500, bool), loss=np.zeros(500))
    with pytest.raises(CalibrationError, match="exactly one of"):
        ThresholdCalibrator().fit(s)
    with pytest.raises(CalibrationError, match="but loss has 3"):
        ThresholdCalibrator().fit(s, loss=[0, 0, 0])
