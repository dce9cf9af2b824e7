from __future__ import annotations

import deepinv as dinv
import numpy as np
import pytest
import torch

from deepinv_icrf import fit_icrf
from deepinv_icrf.calibration.fit import FitReport
from deepinv_icrf.data import demo_exposure_times, demo_scene, write_synthetic_folder
from deepinv_icrf.functional import curve_rmse
from deepinv_icrf.physics import ExposureStack, get_response

H, W = 61, 67  # odd, non-square
#: measured RMSE (codes 8..247, no scale fit) of the default fit on the stack below: R 0.0010,
#: G 0.0030, B 0.0029; the linearity method (40 steps, 23x37): 0.039, 0.004, 0.032. Limits
#: with margin.
CODE_LIMIT = 0.005
LINEARITY_LIMIT = 0.06


def _stack(noise=0.01, seed=0, batch=1, h=H, w=W):
    torch.manual_seed(seed)
    response = get_response("gamma", gamma=(2.0, 2.2, 2.5))
    times = demo_exposure_times(7, shortest=0.5)
    physics = ExposureStack(
        times,
        response=response,
        noise_model=dinv.physics.GaussianNoise(sigma=noise),
    )
    scenes = torch.cat([demo_scene(h, w, seed=seed + k) for k in range(batch)])
    with torch.no_grad():
        y = physics(scenes)
    return y, times, response.icrf_curve(256, channels=3)


@pytest.fixture(scope="module")
def noisy_stack():
    return _stack()


def _rmse(icrf, truth):
    return curve_rmse(icrf.curve.detach().double().cpu(), truth)


def test_fit_code_default_recovers_curve(noisy_stack):
    y, t, truth = noisy_stack
    icrf = fit_icrf(y[0], t, progress=False)
    rmse = _rmse(icrf, truth)
    assert rmse.shape == (3,)
    assert bool((rmse < CODE_LIMIT).all()), rmse
    report = icrf.fit_report
    assert isinstance(report, FitReport) and report.method == "code"
    assert 1 <= report.steps <= 30 and report.wall_time_s > 0
    assert np.allclose(report.extra["sigma"], 0.01, atol=0.002)
    torch.testing.assert_close(report.exposure_times, t.double())
    assert not icrf.training


def test_fit_linearity_method_recovers_curve():
    y, t, truth = _stack(h=23, w=37)
    icrf = fit_icrf(y[0], t, method="linearity", steps=40, progress=False)
    assert bool((_rmse(icrf, truth) < LINEARITY_LIMIT).all())
    assert icrf.fit_report.method == "linearity" and icrf.fit_report.steps == 40


def test_fit_uint8_array_matches_float_accuracy(noisy_stack):
    y, t, truth = noisy_stack
    codes = (y[0] * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    icrf = fit_icrf(codes, t.numpy(), progress=False)
    assert bool((_rmse(icrf, truth) < CODE_LIMIT).all())
    assert icrf.bit_depth == 8


def test_fit_order_of_exposures_does_not_matter(noisy_stack):
    y, t, _ = noisy_stack
    perm = torch.tensor([3, 0, 6, 2, 5, 1, 4])
    a = fit_icrf(y[0], t, progress=False).curve.detach()
    b = fit_icrf(y[0][perm], t[perm], progress=False).curve.detach()
    torch.testing.assert_close(a, b, atol=2e-4, rtol=0)


def test_fit_batch_of_stacks():
    y, t, truth = _stack(batch=2, seed=3)
    icrf = fit_icrf(y, t, progress=False, max_pixels=2500)
    assert icrf.fit_report.extra["pixels"] == 5000
    assert bool((_rmse(icrf, truth) < CODE_LIMIT).all())


def test_fit_folder_reads_times(tmp_path):
    folder = write_synthetic_folder(
        tmp_path / "stack", n_exposures=5, height=40, width=48, response="srgb"
    )
    icrf = fit_icrf(folder, progress=False)
    truth = get_response("srgb").icrf_curve(256, channels=3)
    assert bool((_rmse(icrf, truth) < 0.02).all())
    assert icrf.fit_report.exposure_times.shape == (5,)


def test_fit_refine_exposures_delegates(noisy_stack):
    y, t, _ = noisy_stack
    icrf = fit_icrf(y[0], t * 1.03, refine_exposures=True, max_iter=1, progress=False)
    assert icrf.fit_report.nominal_exposure_times is not None
    assert icrf.fit_report.exposure_times.shape == (7,)


def test_fit_bad_inputs(noisy_stack):
    y, t, _ = noisy_stack
    with pytest.raises(ValueError, match="method"):
        fit_icrf(y[0], t, method="magic", progress=False)
    with pytest.raises(ValueError, match="steps"):
        fit_icrf(y[0], t, steps=0, progress=False)
    with pytest.raises(ValueError, match="exposure_times"):
        fit_icrf(y[0], t[:3], progress=False)
    with pytest.raises(ValueError, match="exposure_times"):
        fit_icrf(y[0], -t, progress=False)
    with pytest.raises(ValueError, match="exposure_times"):
        fit_icrf(y[0], None, progress=False)
    with pytest.raises(TypeError, match="float tensor"):
        fit_icrf((y[0] * 255).long(), t, progress=False)
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        fit_icrf(y[0] * 2, t, progress=False)
    with pytest.raises(ValueError, match="at least 2 exposures"):
        fit_icrf(np.zeros((1, 5, 5, 3), dtype=np.uint8), [1.0], progress=False)
    with pytest.raises(TypeError, match="unexpected option"):
        fit_icrf(y[0], t, prior_std=0.1, progress=False)
    with pytest.raises(ValueError, match="callback"):
        fit_icrf(y[0], t, callback=print, progress=False)
    with pytest.raises(TypeError, match="numpy array"):
        fit_icrf([[0.0]], t, progress=False)
    with pytest.raises(ValueError, match="distinct `exposure_times`"):
        fit_icrf(y[0], torch.ones(7), progress=False)


@pytest.mark.parametrize("method", ["code", "linearity"])
def test_fit_no_valid_pixel(method):
    with pytest.raises(ValueError, match="no valid pixel pair"):
        fit_icrf(
            torch.ones(3, 3, 13, 11), [1.0, 2.0, 4.0], method=method, progress=False
        )
    with pytest.raises(ValueError, match="no valid pixel pair"):
        fit_icrf(
            torch.zeros(3, 3, 13, 11), [1.0, 2.0, 4.0], method=method, progress=False
        )
