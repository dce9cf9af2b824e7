"""Exposure times against the images: measured ratios, the check, the exponent."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from deepinv_icrf.functional import (
    HALF_STOP,
    check_exposure_ratios,
    common_exponent,
    consecutive_log_ratios,
    exponent_from_prior,
)

LOG2 = math.log(2.0)


# ---------------------------------------------------------------- consecutive ratios


def _reference_steps(x, select, order, lower, upper):
    # per step: median and 1.4826 MAD of the per-pixel log ratios, by loops
    x = x.reshape(x.shape[0], -1)
    s = select.reshape(select.shape[0], -1)
    out = []
    for a, b in zip(order[:-1], order[1:], strict=True):
        d = [
            math.log(x[b, k]) - math.log(x[a, k])
            for k in range(x.shape[1])
            if lower <= s[a, k] <= upper
            and lower <= s[b, k] <= upper
            and x[a, k] > 0
            and x[b, k] > 0
        ]
        med = float(np.median(d)) if len(d) % 2 else float(np.sort(d)[len(d) // 2 - 1])
        mad = np.abs(np.asarray(d) - med)
        mad = float(np.sort(mad)[(len(mad) - 1) // 2])
        out.append((med, 1.482602218505602 * mad, len(d)))
    return out


def test_consecutive_log_ratios_matches_loops(device):
    gen = np.random.default_rng(3)
    base = gen.uniform(0.05, 0.4, size=(1, 2, 9, 11))
    x = base * np.array([1.0, 2.1, 3.9, 8.3]).reshape(4, 1, 1, 1)
    x = x * gen.lognormal(0.0, 0.05, size=x.shape)
    select = gen.uniform(0.0, 1.0, size=x.shape)
    order = [2, 0, 3, 1]
    rho, se, spread = consecutive_log_ratios(
        torch.tensor(x, device=device),
        torch.tensor(select, device=device),
        torch.tensor(order, device=device),
        0.1,
        0.95,
    )
    for k, (med, mad, n) in enumerate(_reference_steps(x, select, order, 0.1, 0.95)):
        assert n >= 20
        # torch's nanmedian takes the lower of the two middle values, as the reference
        assert float(rho[k]) == pytest.approx(med, abs=1e-12)
        assert float(spread[k]) == pytest.approx(mad, abs=1e-12)
        assert float(se[k]) == pytest.approx(1.2533 * mad / math.sqrt(n), rel=1e-9)


def test_consecutive_log_ratios_needs_pixels_and_checks_inputs():
    x = torch.rand(3, 40, dtype=torch.float64) + 0.1
    select = torch.full_like(x, 0.5)
    select[1, :30] = 0.99  # only 10 pixels of the pairs with exposure 1 qualify
    rho, se, spread = consecutive_log_ratios(x, select, torch.tensor([0, 1, 2]))
    assert torch.isinf(se).all() and torch.isnan(spread).all()
    with pytest.raises(ValueError, match="lower"):
        consecutive_log_ratios(x, select, torch.tensor([0, 1, 2]), 0.9, 0.1)
    with pytest.raises(ValueError, match="select"):
        consecutive_log_ratios(x, select[:2], torch.tensor([0, 1, 2]))


# ---------------------------------------------------------------- the check


def test_check_flags_a_plateau_and_anchors_on_the_largest_group():
    # 7 frames listed a stop apart; frames 2..4 stay at frame 2's exposure
    listed = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0])
    true = torch.tensor([1.0, 2.0, 4.0, 4.0, 4.0, 8.0, 16.0])
    step = true.log().diff()
    check = check_exposure_ratios(step, torch.full((6,), 0.002), listed)
    assert not check.consistent
    assert check.disagreeing_steps == [(2, 3), (3, 4)]
    # groups {0,1,2} and {4,5,6} tie; the shortest times anchor
    assert check.suspect_frames == [3, 4, 5, 6]
    torch.testing.assert_close(check.implied, true.double())
    torch.testing.assert_close(
        check.factor, (listed / true).double(), rtol=1e-12, atol=0
    )
    text = check.describe([f"f{k}.jpg" for k in range(7)])
    assert (
        "f2.jpg -> f3.jpg: the images show x1.00 where the listed times say x2.00"
        in (text)
    )
    assert "f6.jpg x4" in text
    record = check.to_dict()
    json.dumps(record)
    assert record["consistent"] is False
    assert [s["frames"] for s in record["disagreeing_steps"]] == [[2, 3], [3, 4]]
    assert record["suspect_frames"][0] == {"frame": 3, "factor": pytest.approx(2.0)}


def test_check_keeps_rounded_and_jittered_times():
    gen = torch.Generator().manual_seed(0)
    listed = torch.tensor([1 / 64, 1 / 30, 1 / 15, 1 / 8, 1 / 4, 1 / 2])  # rounded
    true = (
        2.0 ** torch.arange(6.0)
        / 64
        * (1 + 0.1 * (2 * torch.rand(6, generator=gen) - 1))
    )
    check = check_exposure_ratios(true.log().diff(), torch.full((5,), 0.01), listed)
    assert check.consistent and check.suspect_frames == []
    torch.testing.assert_close(check.implied, listed.double())
    assert "agree" in check.describe()


def test_check_uses_the_noise_and_the_listed_order():
    listed = torch.tensor([4.0, 1.0, 2.0])  # any order
    measured = torch.tensor([LOG2, 0.3])  # 1 -> 2, 2 -> 4 (listed: ln 2 each)
    noisy = check_exposure_ratios(measured, torch.tensor([0.01, 0.2]), listed)
    assert noisy.consistent  # 0.39 off, but 4 standard errors of 0.2 cover it
    sure = check_exposure_ratios(measured, torch.tensor([0.01, 0.01]), listed)
    assert sure.disagreeing_steps == [(2, 0)]
    unmeasured = check_exposure_ratios(measured, torch.tensor([0.01, math.inf]), listed)
    assert unmeasured.consistent


def test_check_reports_images_that_do_not_match():
    listed = torch.tensor([1.0, 2.0, 4.0])
    measured = torch.tensor([LOG2, 0.1])  # looks off ...
    spread = torch.tensor([0.05, 0.9])  # ... but the pixels disagree wildly
    check = check_exposure_ratios(
        measured, torch.full((2,), 0.001), listed, spread=spread
    )
    assert check.consistent and check.unmatched_steps == [(1, 2)]
    assert "do not match pixel for pixel" in check.describe()
    plain = check_exposure_ratios(measured, torch.full((2,), 0.001), listed)
    assert plain.disagreeing_steps == [(1, 2)]


def test_check_bad_inputs():
    listed = torch.tensor([1.0, 2.0, 4.0])
    with pytest.raises(ValueError, match="log_ratio"):
        check_exposure_ratios(torch.zeros(3), torch.zeros(3), listed)
    with pytest.raises(ValueError, match="tolerance"):
        check_exposure_ratios(torch.zeros(2), torch.zeros(2), listed, tolerance=0.0)
    with pytest.raises(ValueError, match="spread"):
        check_exposure_ratios(
            torch.zeros(2), torch.zeros(2), listed, spread=torch.zeros(3)
        )
    assert HALF_STOP == pytest.approx(0.5 * LOG2)


# ---------------------------------------------------------------- the exponent


def _reference_common_exponent(rho_hat, rho, tol):
    # brute force over a fine grid of powers: the most steps within tol, ties to the power
    # that brings back the earliest step, then least squares over those steps; 1 unless
    # strictly more steps agree than at 1
    def agree(g):
        return [
            k
            for k, (a, b) in enumerate(zip(rho_hat, rho, strict=True))
            if abs(g * a - b) <= tol
        ]

    def count(g):
        return len(agree(g))

    grid = [math.exp(v) for v in np.linspace(math.log(0.5), math.log(2.0), 20001)]
    best = max(grid, key=lambda g: (count(g), -min(agree(g), default=99)))
    if count(best) <= count(1.0):
        return 1.0
    keep = [
        (a, b) for a, b in zip(rho_hat, rho, strict=True) if abs(best * a - b) <= tol
    ]
    return sum(a * b for a, b in keep) / sum(a * a for a, _ in keep)


@pytest.mark.parametrize(
    "read, listed",
    [
        ([13.0, 13.0, 1.5, 3.0], [8.0, 8.0, 8.0, 8.0]),  # a bent curve: two right steps
        ([2.0, 2.0, 1.0, 2.0], [2.0, 2.0, 2.0, 2.0]),  # one wrong step: read as is
        ([2.0, 2.0], [2.0, 4.0]),  # equal steps listed 1:2: no power makes both agree
        ([1.5, 1.5, 1.5], [2.0, 2.0, 2.0]),  # every step off alike: the power is free
        ([6.0, 1.0, 6.0, 1.0, 1.05], [4.0, 4.0, 4.0, 4.0, 4.0]),
        ([16.0, 34.0, 3.8], [8.0, 64.0, 8.0]),  # one step for each power: the first
        ([2.3, 2.6, 1.0], [2.0, 2.0, 2.0]),  # both agree between their own powers
    ],
)
def test_common_exponent_matches_a_brute_force_search(read, listed):
    rho_hat, rho = torch.tensor(read).log(), torch.tensor(listed).log()
    tol = math.log(1.15)
    g = common_exponent(rho_hat, rho)
    ref = _reference_common_exponent(rho_hat.tolist(), rho.tolist(), tol)
    assert g == pytest.approx(ref, rel=1e-6)


def test_common_exponent_values_and_bad_inputs():
    listed = torch.full((4,), math.log(8.0))
    read = torch.tensor([13.0, 13.0, 1.5, 3.0]).log()
    g = common_exponent(read, listed)
    assert g == pytest.approx(math.log(8.0) / math.log(13.0))
    # right steps come back at 1 exactly, whatever the rest
    assert (
        common_exponent(torch.tensor([2.0, 1.0, 2.1]).log(), torch.full((3,), LOG2))
        == 1.0
    )
    # unmeasured steps (NaN) are ignored
    nan = torch.tensor([math.nan, 13.0, 13.0]).log()
    assert common_exponent(nan, torch.full((3,), math.log(8.0))) == pytest.approx(
        math.log(8.0) / math.log(13.0)
    )
    with pytest.raises(ValueError, match="one shape"):
        common_exponent(torch.zeros(3), torch.zeros(2))
    with pytest.raises(ValueError, match="tolerance"):
        common_exponent(torch.zeros(2), torch.zeros(2), tolerance=-1.0)


def test_free_exponent_never_questions_times_that_agree_as_read():
    # a curve's errors read the two steps of a three-frame bracket 20% high and 20% low:
    # within half a stop as read; the power of the first step would push the second out
    listed = torch.tensor([1.0, 4.0, 16.0])
    read = torch.tensor([4.8, 3.2]).log()
    se = torch.full((2,), 0.002)
    assert common_exponent(read, listed.log().diff()) != 1.0
    check = check_exposure_ratios(read, se, listed, free_exponent=True)
    assert check.consistent and check.exponent == 1.0
    # frames that barely differ as read (x1.2 in all) are not made a bracket by a power
    barely = check_exposure_ratios(
        torch.tensor([1.2, 1.0]).log(), se, listed, free_exponent=True
    )
    assert barely.exponent == 1.0 and barely.disagreeing_steps == [(0, 1), (1, 2)]
    # where steps disagree as read, the power is taken
    read = torch.tensor([4.8, 1.0]).log()  # the second frame equal to the first
    check = check_exposure_ratios(read, se, listed, free_exponent=True)
    assert check.exponent == pytest.approx(math.log(4.0) / math.log(4.8))
    assert check.disagreeing_steps == [(1, 2)]


def test_check_with_a_free_exponent_anchors_on_the_steps_that_agree():
    # three stops apart, the last two frames listed far too long; read through a curve
    # bent by those times, every step comes out raised to a power (x8 read as x13)
    listed = torch.tensor([1.0, 8.0, 64.0, 512.0, 4096.0])
    true_step = torch.tensor([8.0, 8.0, 1.78, 2.56])
    g_bent = math.log(13.0) / math.log(8.0)
    read = true_step.log() * g_bent
    se = torch.full((4,), 0.005)
    as_read = check_exposure_ratios(read, se, listed)
    assert as_read.disagreeing_steps == [(0, 1), (1, 2), (2, 3), (3, 4)]
    check = check_exposure_ratios(read, se, listed, free_exponent=True)
    assert check.exponent == pytest.approx(1 / g_bent)
    assert check.disagreeing_steps == [(2, 3), (3, 4)] and check.suspect_frames == [
        3,
        4,
    ]
    torch.testing.assert_close(
        check.measured_step, true_step.double(), rtol=1e-5, atol=0
    )
    torch.testing.assert_close(
        check.implied, torch.tensor([1.0, 8.0, 64.0, 113.92, 291.6352]).double()
    )
    assert "raised to 0.811" in check.describe()
    assert check.to_dict()["exponent"] == pytest.approx(1 / g_bent)
    # right times: the same as reading them as they are
    right = check_exposure_ratios(
        torch.full((4,), math.log(8.0)), se, listed, free_exponent=True
    )
    assert right.consistent and right.exponent == 1.0
    assert "raised" not in right.describe()


@pytest.mark.parametrize("g_true", [0.6, 1.0, 1.7])
def test_exponent_from_prior_ignores_wrong_steps(g_true):
    listed = (2.0 ** torch.arange(8.0)).double()
    true = listed.clone()
    true[4:] = true[4:] / 4  # two frames at the previous one's exposure: a plateau
    true[3] = true[2]
    data = true.log() / g_true + 0.7  # what the images give: in units of f**(1/g)
    g, c = exponent_from_prior(data, listed.log())
    assert g == pytest.approx(g_true, rel=1e-9)
    refined = (g * data + c).exp()
    # the largest group of frames joined by agreeing steps (4..7) keeps its listed times
    torch.testing.assert_close(refined[4:], listed[4:], rtol=1e-9, atol=0)
    torch.testing.assert_close(refined / refined[4], true / true[4], rtol=1e-9, atol=0)


def test_exponent_from_prior_with_jitter_is_a_least_squares_slope():
    gen = torch.Generator().manual_seed(1)
    listed = (2.0 ** torch.arange(6.0)).double()
    data = listed.log() * 0.8 + 0.01 * torch.randn(
        6, generator=gen, dtype=torch.float64
    )
    g, c = exponent_from_prior(data, listed.log())
    step_hat, step = data.diff(), listed.log().diff()
    assert g == pytest.approx(float((step_hat @ step) / (step_hat @ step_hat)))
    assert c == pytest.approx(float((listed.log() - g * data).mean()))


def test_exponent_from_prior_bad_inputs():
    with pytest.raises(ValueError, match="N >= 2"):
        exponent_from_prior(torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="one shape"):
        exponent_from_prior(torch.zeros(3), torch.zeros(4))
