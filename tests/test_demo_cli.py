from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepinv_icrf.bracket import as_stack_tensor
from deepinv_icrf.calibration import fit_icrf
from deepinv_icrf.cli import main
from deepinv_icrf.data import demo_exposure_times, demo_scene
from deepinv_icrf.functional import curve_rmse
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack, get_response


def test_demo_scene_is_deterministic_and_hdr():
    a = demo_scene(37, 31, seed=3)
    b = demo_scene(37, 31, seed=3)
    assert a.shape == (1, 3, 37, 31)
    assert torch.equal(a, b)
    assert not torch.equal(a, demo_scene(37, 31, seed=4))
    assert float(a.max()) == 1.0
    # more than 8 stops between the darkest and the brightest pixel
    assert float(a.max() / a.min()) > 2**8


def test_demo_exposure_times():
    t = demo_exposure_times(5, stops_apart=2.0, shortest=0.5)
    torch.testing.assert_close(t, 0.5 * 4.0 ** torch.arange(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="n_exposures"):
        demo_exposure_times(1)


def test_as_stack_tensor_layouts():
    codes = np.arange(2 * 3 * 4 * 3, dtype=np.uint16).reshape(2, 3, 4, 3) * 100
    y, bits = as_stack_tensor(codes)
    assert bits == 16 and y.shape == (1, 2, 3, 3, 4)
    assert float(y[0, 1, 2, 0, 3]) == pytest.approx(codes[1, 0, 3, 2] / 65535)
    y8, bits8 = as_stack_tensor(np.zeros((2, 5, 6), dtype=np.uint8))
    assert bits8 == 8 and y8.shape == (1, 2, 1, 5, 6)
    with pytest.raises(TypeError, match="stack"):
        as_stack_tensor(torch.zeros(2, 3, 4, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="at least 2 exposures"):
        as_stack_tensor(torch.zeros(1, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        as_stack_tensor(torch.full((2, 3, 4, 4), 1.5))


def test_fit_icrf_recovers_gamma_curve(device):
    times = demo_exposure_times(7)
    response = get_response("gamma", gamma=2.2)
    physics = ExposureStack(times, response=response, bit_depth=8, device=device)
    stack = physics(demo_scene(64, 80).to(device))
    icrf = fit_icrf(stack[0], times, steps=150, progress=False)
    assert isinstance(icrf, ICRF)
    truth = response.icrf_curve(256, channels=3).to(device)
    rmse = curve_rmse(icrf.curve.detach().double(), truth)
    # identity start is at RMSE ~0.2 from the truth; the fit must get within 0.02
    assert float(rmse.max()) < 0.02


def test_fit_icrf_bad_times():
    stack = torch.rand(3, 3, 8, 8)
    with pytest.raises(ValueError, match="exposure_times"):
        fit_icrf(stack, [1.0, 2.0], steps=1, progress=False)
    with pytest.raises(ValueError, match="exposure_times"):
        fit_icrf(stack, [1.0, -2.0, 4.0], steps=1, progress=False)


def test_cli_demo_writes_outputs(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "30", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "RMSE" in out
    for name in ("icrf.json", "icrf_fit.png", "summary.json"):
        assert (tmp_path / name).stat().st_size > 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["rmse"]) == {"R", "G", "B"}
    loaded = ICRF.load(tmp_path / "icrf.json")
    assert loaded.curve.shape == (3, 256)


def test_cli_bad_input_exits_nonzero(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--steps", "0", "--no-progress"]) == 2
    assert "steps" in capsys.readouterr().err
