from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

import deepinv_icrf.calibration.alternation as alternation
from deepinv_icrf.calibration.refine import (
    AMBIGUITY_WARNING,
    describe_refinement,
    estimate_log_exposures,
    fit_refined,
    pairwise_log_ratios,
)
from deepinv_icrf.data import demo_scene
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack, get_response


def _reference_ratios(x, select, lower, upper):
    # straightforward loops over pairs and values
    n = x.shape[0]
    x = x.reshape(n, -1)
    s = select.reshape(n, -1)
    out = []
    for a, b in itertools.combinations(range(n), 2):
        sa = sb = 0.0
        used = []
        for k in range(x.shape[1]):
            if lower <= s[a, k] <= upper and lower <= s[b, k] <= upper:
                sa += x[a, k]
                sb += x[b, k]
                used.append(k)
        ratio = sa / sb
        resid = sum((x[a, k] - ratio * x[b, k]) ** 2 for k in used)
        out.append((a, b, math.log(ratio), math.sqrt(resid) / sa, len(used)))
    return out


def test_pairwise_log_ratios_matches_loops(device):
    gen = np.random.default_rng(1)
    x = gen.uniform(0.05, 1.0, size=(4, 2, 13, 11))
    select = gen.uniform(0.0, 1.0, size=(4, 2, 13, 11))
    a, b, rho, se = pairwise_log_ratios(
        torch.tensor(x, device=device), torch.tensor(select, device=device), 0.2, 0.9
    )
    ref = _reference_ratios(x, select, 0.2, 0.9)
    assert a.tolist() == [r[0] for r in ref] and b.tolist() == [r[1] for r in ref]
    for k, (_, _, r_rho, r_se, used) in enumerate(ref):
        assert used >= 20
        assert rho[k].item() == pytest.approx(r_rho, rel=1e-10, abs=1e-12)
        assert se[k].item() == pytest.approx(r_se, rel=1e-10)


def test_pairwise_log_ratios_flags_pairs_without_values(device):
    x = torch.rand(3, 1, 40, device=device, dtype=torch.float64) + 0.1
    select = torch.full_like(x, 0.5)
    select[2] = 0.99  # image 2 never well exposed
    _, _, rho, se = pairwise_log_ratios(x, select)
    assert torch.isfinite(se[0]) and torch.isinf(se[1:]).all()
    assert (rho[1:] == 0).all()


def test_pairwise_log_ratios_bad_inputs():
    x = torch.rand(3, 10)
    with pytest.raises(ValueError, match="lower"):
        pairwise_log_ratios(x, x, lower=0.9, upper=0.1)
    with pytest.raises(ValueError, match="select"):
        pairwise_log_ratios(x, x[:, :5])


def _exact_pairs(tau):
    a, b = torch.triu_indices(tau.shape[0], tau.shape[0], offset=1)
    return a, b, tau[a] - tau[b]


def test_estimate_log_exposures_projects_prior_on_ambiguity():
    # exact data: the MAP is the least-squares fit of the prior by g * tau_true + c
    gen = np.random.default_rng(2)
    tau = torch.tensor(np.log([0.01, 0.021, 0.039, 0.082, 0.17]), dtype=torch.float64)
    a, b, rho = _exact_pairs(tau)
    rho = 0.7 * rho  # measured through f**0.7
    prior = tau + torch.tensor(gen.uniform(-0.1, 0.1, 5))
    est, g, std = estimate_log_exposures(a, b, rho, torch.full_like(rho, 1e-7), prior)
    design = np.stack([tau.numpy(), np.ones(5)], 1)
    coef, *_ = np.linalg.lstsq(design, prior.numpy(), rcond=None)
    assert est.numpy() == pytest.approx(design @ coef, abs=1e-6)
    assert g == pytest.approx(coef[0] / 0.7, rel=1e-6)
    assert std.shape == (5,) and bool((std >= 0).all())


def test_estimate_log_exposures_recovers_truth_from_orthogonal_perturbation():
    tau = torch.log(torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0], dtype=torch.float64))
    a, b, rho = _exact_pairs(tau)
    delta = torch.tensor([1.0, -2.0, 0.0, 2.0, -1.0], dtype=torch.float64)
    # orthogonal to 1 and to tau: invisible to the exponent/offset fit
    delta -= delta.mean()
    centred = tau - tau.mean()
    delta -= (delta @ centred) / (centred @ centred) * centred
    prior = tau + 0.08 * delta / delta.abs().max()
    est, g, _ = estimate_log_exposures(a, b, rho, torch.full_like(rho, 1e-6), prior)
    assert (est.exp() / tau.exp() - 1).abs().max() < 1e-6
    assert g == pytest.approx(1.0, abs=1e-6)


def test_estimate_log_exposures_weak_data_follow_prior():
    tau = torch.log(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64))
    a, b, rho = _exact_pairs(tau)
    prior = tau + torch.tensor([0.05, -0.05, 0.02], dtype=torch.float64)
    est, _, _ = estimate_log_exposures(
        a, b, rho, torch.full_like(rho, torch.inf), prior
    )
    assert est.numpy() == pytest.approx(prior.numpy(), abs=1e-9)


def test_estimate_log_exposures_bad_prior_std():
    a, b, rho = _exact_pairs(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="prior_std"):
        estimate_log_exposures(a, b, rho, torch.ones(3), torch.zeros(3), prior_std=0.0)


class _TrueCurveFit:
    # a stand-in for the core single fit of the alternation: returns the true ICRF raised to
    # the exponent its times imply
    def __init__(self, curve, true_log_times):
        self.curve = curve
        self.true = true_log_times
        self.calls = []

    def __call__(self, stack, exposure_times, options, **call):
        from deepinv_icrf.calibration.report import FitReport

        self.calls.append((options, call))
        tau = torch.as_tensor(exposure_times, dtype=torch.float64)[0].log()
        t_c, s_c = self.true - self.true.mean(), tau - tau.mean()
        g = float((t_c @ s_c) / (t_c @ t_c))
        icrf = ICRF(channels=self.curve.shape[0], init=self.curve.clamp(0, 1) ** g)
        return icrf, FitReport("linearity", options.steps, 0.0, None, None, None), None


def _stack(times, sigma=0.0, seed=0, channels=1):
    from deepinv.physics import GaussianNoise

    torch.manual_seed(seed)
    noise = GaussianNoise(sigma=sigma) if sigma else None
    x = demo_scene(40, 52, channels=channels, dynamic_range_stops=9)
    return ExposureStack(times, response="srgb", noise_model=noise)(x)[0]


def _relative_error(est, true):
    d = (est.log() - est.log().mean()) - (true.log() - true.log().mean())
    return float(d.abs().max())


def test_fit_refined_recovers_times_with_true_curve(monkeypatch):
    true = torch.tensor([0.1, 0.19, 0.42, 0.77, 1.64], dtype=torch.float64)
    nominal = torch.tensor([0.1, 0.2, 0.4, 0.8, 1.6], dtype=torch.float64)
    y = _stack(true)
    curve = get_response("srgb").icrf_curve(n_points=256, channels=1)
    fake = _TrueCurveFit(curve, true.log())
    monkeypatch.setattr(alternation, "fit_once", fake)
    icrf = fit_refined(
        y, nominal, max_iter=3, steps=5, max_pixels=123, method="linearity"
    )
    report = icrf.fit_report
    assert torch.equal(report.nominal_exposure_times, nominal)
    assert all(o.max_pixels == 123 and c["progress"] is False for o, c in fake.calls)
    # the nominal times are off by up to 5%; the refined ones by the exponent part only
    tau = true.log() - true.log().mean()
    delta = nominal.log() - true.log()
    g_err = float((delta @ tau) / (tau @ tau))
    assert _relative_error(report.exposure_times, true) < abs(g_err) * 3.5 + 2e-3
    assert _relative_error(report.exposure_times, true) < _relative_error(nominal, true)
    assert all(o.steps == 5 for o, _ in fake.calls)
    assert report.refinement.iterations >= 1


def test_fit_refined_without_times_warns_and_orders_by_brightness(monkeypatch):
    true = torch.tensor([1.6, 0.1, 0.8, 0.2, 0.4], dtype=torch.float64)  # shuffled
    y = _stack(true)
    curve = get_response("srgb").icrf_curve(n_points=256, channels=1)
    monkeypatch.setattr(alternation, "fit_once", _TrueCurveFit(curve, true.log()))
    with pytest.warns(UserWarning, match="not identifiable") as record:
        icrf = fit_refined(y, None, max_iter=3, steps=5, method="linearity")
    assert "1 stop(s) apart" in str(record[0].message)
    report = icrf.fit_report
    assert report.nominal_exposure_times is None
    assert torch.argsort(report.exposure_times).tolist() == torch.argsort(true).tolist()
    # exposures truly one stop apart: the convention is right, the refined times exact
    assert _relative_error(report.exposure_times, true) < 5e-3
    assert len(report.extra["assumed_exposure_times"]) == 5


def test_ambiguity_warning_text():
    text = AMBIGUITY_WARNING.format(stops=0.5)
    assert "f**g" in text and "t**g" in text and "0.5 stop(s)" in text


def test_fit_refined_with_fit_icrf_end_to_end(device):
    true = torch.tensor([0.1, 0.21, 0.38, 0.82], dtype=torch.float64)
    nominal = torch.tensor([0.1, 0.2, 0.4, 0.8], dtype=torch.float64)
    y = _stack(true)[..., :24, :30].to(device)
    icrf = fit_refined(y, nominal, max_iter=1, steps=10, max_pixels=500, device=device)
    assert icrf.curve.device.type == device.type
    report = icrf.fit_report
    assert report.exposure_times.shape == (4,)
    assert torch.all(report.exposure_times > 0)
    assert "refined" in report.method
    text = describe_refinement(icrf)
    # the table (5 lines), a note on moves of consistent times (the true times are 5% off,
    # within the check's tolerance), the exponent note
    noted = "consistent with the images" in text
    assert report.time_check.consistent
    assert len(text.splitlines()) == 6 + noted and "%" in text
    assert "t**g" in text.splitlines()[-1] and report.extra["exponent_std"] > 0
    # the last inner fit's report of the stack is kept (the CLI reads sigma and outliers)
    channels = y.shape[-3]
    assert len(report.extra["sigma"]) == channels and report.extra["pixels"] <= 500
    assert len(report.extra["outliers"]) == channels
    # a clean stack: at most a stray code or two left out
    assert max(report.extra["outliers"]) < 0.01


def test_fit_refined_bad_inputs():
    y = _stack(torch.tensor([0.1, 0.2, 0.4], dtype=torch.float64))
    with pytest.raises(ValueError, match="exposure_times"):
        fit_refined(y, [0.1, 0.2])
    with pytest.raises(ValueError, match="exposure_times"):
        fit_refined(y, [0.1, -0.2, 0.4])
    with pytest.raises(ValueError, match="max_iter"):
        fit_refined(y, [0.1, 0.2, 0.4], max_iter=0)
    with pytest.raises(TypeError, match="refine_exposures"):
        fit_refined(y, [0.1, 0.2, 0.4], refine_exposures=True)


@pytest.mark.parametrize(
    ("refined", "noted"), [((1.0, 2.1), False), ((1.0, 2.4), True)]
)
def test_describe_refinement_notes_moves_of_consistent_times(refined, noted):
    from types import SimpleNamespace

    icrf = ICRF(channels=1, n_points=4)
    icrf.fit_report = SimpleNamespace(
        exposure_times=torch.tensor(refined, dtype=torch.float64),
        nominal_exposure_times=torch.tensor([1.0, 2.0], dtype=torch.float64),
        time_check=SimpleNamespace(consistent=True),
    )
    text = describe_refinement(icrf)
    assert ("found every listed step consistent" in text) is noted
    if noted:  # 2.4 / 2 = 1.2: exp(log(1.2) / 2) - 1 = 9.5% about the geometric mean
        assert "moved the times by up to 9.5%" in text
    icrf.fit_report.time_check = SimpleNamespace(
        consistent=False
    )  # wrong times: no note
    assert "consistent with the images" not in describe_refinement(icrf)


def test_describe_refinement_needs_report():
    with pytest.raises(ValueError, match="refine_exposures"):
        describe_refinement(ICRF(channels=1, n_points=4))


def test_fit_icrf_refine_without_times_warns_and_explains(device):
    from deepinv_icrf import fit_icrf

    true = torch.tensor([0.1, 0.2, 0.4, 0.8], dtype=torch.float64)
    y = _stack(true)[..., :24, :30].to(device)
    with pytest.warns(UserWarning, match="not identifiable"):
        icrf = fit_icrf(
            y, None, refine_exposures=True, max_iter=1, max_pixels=400, progress=False
        )
    report = icrf.fit_report
    assert report.nominal_exposure_times is None
    assert report.extra["exponent_std"] == 0.0
    assert torch.argsort(report.exposure_times).tolist() == [0, 1, 2, 3]
    text = describe_refinement(icrf)
    assert text.splitlines()[1].split()[1] == "-"
    assert "t**g" in text.splitlines()[-1] and "no exposure times" in text


def test_describe_refinement_exponent_note_value():
    from types import SimpleNamespace

    icrf = ICRF(channels=1, n_points=4)
    refined = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)
    icrf.fit_report = SimpleNamespace(
        exposure_times=refined,
        nominal_exposure_times=refined,
        refinement=SimpleNamespace(exponent_std=0.02, assumed_exposure_times=None),
    )
    last = describe_refinement(icrf).splitlines()[-1]
    # the extreme times sit log(2) from the geometric mean: expm1(0.02 log 2) = 1.4%
    assert "+-2.0%" in last and f"+-{100 * math.expm1(0.02 * math.log(2)):.1f}%" in last


def test_describe_refinement_change_is_against_the_kept_times():
    # a default fit keeps the times of the frames that agree and replaces one: the kept ones
    # show no change, the replaced one its own factor (not a share of it spread over all)
    from types import SimpleNamespace

    icrf = ICRF(channels=1, n_points=4)
    icrf.fit_report = SimpleNamespace(
        exposure_times=torch.tensor([1.0, 2.0, 4.0, 4.0], dtype=torch.float64),
        nominal_exposure_times=torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64),
    )
    rows = describe_refinement(icrf).splitlines()[1:5]
    assert [row.split()[-1] for row in rows] == [
        "+0.00%",
        "+0.00%",
        "+0.00%",
        "-50.00%",
    ]


def test_describe_refinement_anchors_on_the_times_the_check_kept():
    # a stuck shutter: frames 2 and 3 no brighter than their times say; the check keeps the
    # listed times of frames 0 and 1 and implies the others, and the table says so (the
    # median ratio, taken from the moved frames, showed the kept ones at +82%)
    from types import SimpleNamespace

    icrf = ICRF(channels=1, n_points=4)
    icrf.fit_report = SimpleNamespace(
        exposure_times=torch.tensor([1.0, 2.0, 2.2, 4.4], dtype=torch.float64),
        nominal_exposure_times=torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64),
        time_check=SimpleNamespace(consistent=False),
    )
    rows = [line.split() for line in describe_refinement(icrf).splitlines()[1:5]]
    assert [r[-1] for r in rows] == ["+0.00%", "+0.00%", "-45.00%", "-45.00%"]
    # the same times after a check that found them consistent: centred on the median
    icrf.fit_report.time_check = SimpleNamespace(consistent=True)
    rows = [line.split() for line in describe_refinement(icrf).splitlines()[1:5]]
    assert rows[0][-1] != "+0.00%"
