"""The fit's handling of exposure times, its floor and its option groups."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from deepinv.physics import GaussianNoise

from deepinv_icrf import fit_icrf
from deepinv_icrf.bracket import Bracket
from deepinv_icrf.calibration import (
    CodeFitOptions,
    LinearityFitOptions,
    TimeOptions,
)
from deepinv_icrf.calibration.options import options_from_keywords
from deepinv_icrf.data import demo_scene
from deepinv_icrf.functional import curve_rmse, fit_code_domain
from deepinv_icrf.hdr import floor_cutoff, merge_hdr
from deepinv_icrf.physics import ExposureStack, get_response

H, W = 61, 79
LISTED = 2.0 ** torch.arange(7, dtype=torch.float64) / 16
# a camera at its shutter limit: frames 3 and 4 stay at frame 2's exposure, then it goes on
PLATEAU = LISTED.clone()
PLATEAU[3:5] = PLATEAU[2]
PLATEAU[5:] = LISTED[5:] / 4


def _stack(times, response="srgb", sigma=0.005, seed=0, channels=1):
    torch.manual_seed(seed)
    scene = demo_scene(H, W, channels=channels, seed=seed)
    noise = GaussianNoise(sigma=sigma) if sigma else None
    physics = ExposureStack(times.float(), response=response, noise_model=noise)
    with torch.no_grad():
        return physics(scene)[0]


def _no_time_warning(record) -> bool:
    return not any("listed exposure times" in str(w.message) for w in record)


def test_right_times_are_kept_without_a_warning():
    y = _stack(LISTED)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        icrf = fit_icrf(y, LISTED, progress=False)
    assert _no_time_warning(record)
    report = icrf.fit_report
    assert report.time_check.consistent and report.refinement is None
    assert torch.equal(report.exposure_times, LISTED)
    assert report.method == "code"


def test_wrong_times_are_named_and_refined():
    y = _stack(PLATEAU)
    with pytest.warns(UserWarning, match=r"frame 2 -> frame 3.*x1\.00.*x2\.00"):
        icrf = fit_icrf(y, LISTED, progress=False)
    report = icrf.fit_report
    check = report.time_check
    assert check.disagreeing_steps == [(2, 3), (3, 4)]
    assert "refined" in report.method and report.refinement is not None
    refined = report.exposure_times
    # every consecutive ratio as the images show it, within 2%
    torch.testing.assert_close(
        refined.log().diff(), PLATEAU.log().diff(), atol=0.02, rtol=0
    )
    # and the curve about as good as with the true times
    truth = get_response("srgb").icrf_curve(256, channels=1).double()
    distinct = [0, 1, 2, 5, 6]  # equal times are refused: the frames with distinct ones
    exact = fit_icrf(y[distinct], PLATEAU[distinct], progress=False)
    err = float(curve_rmse(icrf.curve.detach().double(), truth))
    err_exact = float(curve_rmse(exact.curve.detach().double(), truth))
    assert err < max(2 * err_exact, 0.01)
    listed_fit = fit_icrf(y, LISTED, refine_exposures=False, progress=False)
    assert err < 0.5 * float(curve_rmse(listed_fit.curve.detach().double(), truth))


def test_refinement_off_keeps_the_listed_times_but_warns():
    y = _stack(PLATEAU)
    with pytest.warns(UserWarning, match="used them anyway"):
        icrf = fit_icrf(y, LISTED, refine_exposures=False, progress=False)
    assert torch.equal(icrf.fit_report.exposure_times, LISTED)
    assert not icrf.fit_report.time_check.consistent


def test_refinement_of_jittered_times_beats_the_listed_ones():
    gen = torch.Generator().manual_seed(5)
    true = LISTED[:5] * (1 + 0.1 * (2 * torch.rand(5, generator=gen) - 1)).double()
    y = _stack(true, response="gamma", sigma=0.005, seed=2)
    icrf = fit_icrf(y, LISTED[:5], refine_exposures=True, progress=False)
    refined = icrf.fit_report.exposure_times

    def error(est: torch.Tensor, best_exponent: bool) -> float:
        e, t = est.log() - est.log().mean(), true.log() - true.log().mean()
        if best_exponent:
            e = e * (e @ t) / (e @ e)
        return float((e - t).abs().max())

    assert error(refined, True) < 0.01 < error(LISTED[:5], False)
    assert error(refined, True) < 0.25 * error(LISTED[:5], False)
    assert icrf.fit_report.refinement.exponent_std > 0


def test_a_batch_is_not_checked():
    y = torch.stack([_stack(LISTED, seed=0), _stack(LISTED, seed=1)])
    icrf = fit_icrf(y, LISTED, progress=False, max_pixels=800)
    assert icrf.fit_report.time_check is None
    with pytest.raises(ValueError, match="batch"):
        fit_icrf(y, LISTED, refine_exposures=True, progress=False)


# ---------------------------------------------------------------- joint times, functional


def test_fit_code_domain_refines_times_up_to_the_exponent(device):
    gen = torch.Generator().manual_seed(0)
    radiance = torch.rand(1, 3000, 1, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    true = torch.tensor([0.25, 0.55, 0.9, 2.1, 3.8], dtype=torch.float64)
    codes = ((radiance * true).clamp(max=1.0) ** (1 / 2.2) * 255).round() / 255
    listed = torch.tensor([0.25, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    res = fit_code_domain(codes.to(device), listed.log().to(device), time_prior=0.1)
    tau = listed.log() + res.log_time_offset.cpu().double()
    e, t = tau - tau.mean(), true.log() - true.log().mean()
    e = e * (e @ t) / (e @ e)
    assert float((e - t).abs().max()) < 0.01
    assert res.log_time_offset.device.type == device.type
    assert fit_code_domain(codes, listed.log()).log_time_offset is None
    with pytest.raises(ValueError, match="one stack"):
        fit_code_domain(codes, listed.log().expand(3000, 5), time_prior=0.1)
    with pytest.raises(ValueError, match="time_init"):
        fit_code_domain(codes, listed.log(), time_prior=0.1, time_init=torch.zeros(4))
    with pytest.raises(ValueError, match="time_prior"):
        fit_code_domain(codes, listed.log(), time_prior=-1.0)


# ---------------------------------------------------------------- floor


def test_the_floor_of_a_film_scan_is_fitted_and_merged_above():
    # a film-like response that never goes below code 40: fog and the scanner's black
    gen = torch.Generator().manual_seed(0)
    radiance = torch.rand(1, 4000, 1, generator=gen, dtype=torch.float64) ** 3 + 1e-4
    t = 2.0 ** torch.arange(6, dtype=torch.float64) / 32
    floor = 40 / 255
    noise = 0.004 * torch.randn(1, 4000, 6, generator=gen, dtype=torch.float64)
    clean = floor + (1 - floor) * (radiance * t).clamp(max=1.0) ** (1 / 2.2)
    codes = ((clean + noise).clamp(0, 1) * 255).round() / 255
    res = fit_code_domain(codes, t.log())
    assert float(res.floor[0]) == pytest.approx(floor, abs=3 / 255)
    assert float(res.curve[0, 35]) == 0.0  # no light below the floor
    pinned = fit_code_domain(codes, t.log(), floor=False)
    assert pinned.floor is None
    assert float(res.sigma[0]) < 0.8 * float(pinned.sigma[0])  # it fits better
    # merge_hdr's default cutoff sits above the floor a fit records
    images = (codes[0].T.reshape(6, 40, 100, 1) * 255).round().numpy().astype(np.uint8)
    icrf = fit_icrf(images, t, progress=False)
    cutoff = floor_cutoff(icrf)
    assert cutoff == pytest.approx(
        max(icrf.fit_report.floor) + 3 * max(icrf.fit_report.sigma)
    )
    assert floor / 1.1 < cutoff < floor + 20 / 255
    merged = merge_hdr(images, t, icrf)
    explicit = merge_hdr(images, t, icrf, lower=cutoff)
    np.testing.assert_array_equal(merged, explicit)


def test_no_floor_no_cutoff():
    y = _stack(LISTED[:5], response="gamma", sigma=0.0)
    icrf = fit_icrf(y, LISTED[:5], progress=False)
    assert max(icrf.fit_report.floor) < 1 / 255
    assert floor_cutoff(icrf) is None
    assert floor_cutoff(icrf.curve.detach()) is None


# ---------------------------------------------------------------- options and bracket


def test_options_objects_and_keywords():
    y = _stack(LISTED[:4])
    a = fit_icrf(y, LISTED[:4], options=CodeFitOptions(steps=5), progress=False)
    b = fit_icrf(y, LISTED[:4], steps=5, progress=False)
    assert torch.equal(a.curve, b.curve)
    opts, times = options_from_keywords("linearity", lr=0.1, tolerance=0.5)
    assert isinstance(opts, LinearityFitOptions) and opts.lr == 0.1
    assert times.tolerance == 0.5
    with pytest.raises(ValueError, match="method='code'"):
        fit_icrf(y, LISTED[:4], method="linearity", n_knots=8, progress=False)
    with pytest.raises(ValueError, match="method='linearity'"):
        fit_icrf(y, LISTED[:4], lr=0.1, progress=False)
    with pytest.raises(TypeError, match="unexpected option `knots`"):
        fit_icrf(y, LISTED[:4], knots=8, progress=False)
    with pytest.raises(TypeError, match="LinearityFitOptions"):
        fit_icrf(
            y, LISTED[:4], method="linearity", options=CodeFitOptions(), progress=False
        )
    with pytest.raises(ValueError, match="refine_exposures"):
        fit_icrf(y, LISTED[:4], refine_exposures="sometimes", progress=False)
    with pytest.raises(ValueError, match="refine_exposures"):
        fit_icrf(y, LISTED[:4], refine_exposures=1, progress=False)
    for bad in (
        dict(n_knots=3),
        dict(smoothness=-1.0),
        dict(floor="yes"),
        dict(clip_priority="top"),
        dict(noise_sigma=0.0),
    ):
        with pytest.raises((ValueError, TypeError), match=next(iter(bad))):
            CodeFitOptions(**bad)
    with pytest.raises(ValueError, match="ratio_lower"):
        TimeOptions(ratio_lower=0.9, ratio_upper=0.5)
    with pytest.raises(ValueError, match="tolerance"):
        TimeOptions(tolerance=math.inf)


def test_bracket_from_input():
    codes = np.zeros((3, 5, 7, 3), dtype=np.uint16)
    b = Bracket.from_input(codes, [1.0, 2.0, 4.0])
    assert (b.batch, b.n_exposures, b.channels, b.bit_depth) == (1, 3, 3, 16)
    assert b.codes is not None and b.exposure_times.shape == (1, 3)
    assert b.float_stack().shape == (1, 3, 3, 5, 7)
    f = Bracket.from_input(torch.rand(2, 3, 1, 4, 4), [[1.0, 2.0, 3.0]] * 2)
    assert (f.batch, f.n_exposures, f.channels, f.bit_depth) == (2, 3, 1, None)
    assert Bracket.from_input(codes, None, require_times=False).exposure_times is None
    with pytest.raises(ValueError, match="exposure_times"):
        Bracket.from_input(codes, None)
    with pytest.raises(ValueError, match="distinct"):
        Bracket.from_input(codes, [1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="one stack"):
        f.single()


def test_time_check_reuses_one_sample_with_the_same_result(monkeypatch):
    # the check's rounds share one pixel sample: a fit given it equals a fit drawing its own
    from deepinv_icrf.calibration import core
    from deepinv_icrf.calibration import times as times_module
    from deepinv_icrf.calibration.times import CHECK_FIT

    y = _stack(PLATEAU)
    bracket = Bracket.from_input(y, LISTED)
    sample = core.code_sample(bracket.codes, CHECK_FIT, seed=3)
    own, _, own_result = core.fit_once(
        bracket.codes, LISTED.unsqueeze(0), CHECK_FIT, seed=3
    )
    given, _, given_result = core.fit_once(
        bracket.codes, LISTED.unsqueeze(0), CHECK_FIT, seed=3, sample=sample
    )
    assert torch.equal(own.curve, given.curve)
    assert torch.equal(own_result.log_radiance, given_result.log_radiance)
    # and the check draws the sample once, however many rounds it runs
    draws, rounds = [], []
    real_sample, real_fit = times_module.code_sample, times_module.fit_once
    monkeypatch.setattr(
        times_module,
        "code_sample",
        lambda *a, **k: draws.append(1) or real_sample(*a, **k),
    )
    monkeypatch.setattr(
        times_module,
        "fit_once",
        lambda *a, **k: rounds.append(k["sample"]) or real_fit(*a, **k),
    )
    check, _ = times_module.check_times(bracket, LISTED, TimeOptions(), seed=3)
    assert not check.consistent
    assert len(draws) == 1 and len(rounds) >= 2
    assert rounds[0] is not None and all(r is rounds[0] for r in rounds)


def test_fit_warns_when_the_photos_leave_an_end_of_the_curve_unmeasured():
    dark = _stack(LISTED[:3])  # the three shortest exposures: nothing bright
    with pytest.warns(
        UserWarning, match=r"reach code 0\.\d+ of 1 at most: the curve above"
    ):
        fit_icrf(dark, LISTED[:3], progress=False, steps=5)
    codes = (dark.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    highest = int(np.sort(codes.reshape(-1))[-2])  # 0.01% of 3x61x79 codes: the 2nd
    with pytest.warns(UserWarning, match=f"reach code {highest} of 255 at most"):
        icrf = fit_icrf(codes, LISTED[:3], progress=False, steps=5)
    # the report records the range the warning was read from, once per fit
    assert [round(h * 255) for _, h in icrf.fit_report.observed_code_range] == [highest]
    # (the bottom end: tests/test_summaries.py, the same note)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit_icrf(_stack(LISTED), LISTED, progress=False, steps=5)
    assert not any("extrapolated" in str(w.message) for w in record)
