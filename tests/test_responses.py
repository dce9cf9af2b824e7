from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepinv_icrf.functional import (
    exp_crf,
    filmic_crf,
    gamma_crf,
    log_crf,
    quantize_to_bit_depth,
    srgb_crf,
    srgb_icrf,
)
from deepinv_icrf.physics import (
    RESPONSE_NAMES,
    FilmicResponse,
    GammaResponse,
    ResponseCurve,
    get_response,
)

HYPO = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _grid(device, n=20001):
    return torch.linspace(0.0, 1.0, n, device=device, dtype=torch.float64)


def test_response_names_cover_the_required_curves():
    assert {"gamma", "srgb", "filmic", "exp", "log"} <= set(RESPONSE_NAMES)
    for name in RESPONSE_NAMES:
        curve = get_response(name)
        assert isinstance(curve, ResponseCurve)
        assert curve.name == name


@pytest.mark.parametrize("name", RESPONSE_NAMES)
def test_response_endpoints_and_strictly_increasing(device, name):
    f = get_response(name).to(device)
    x = _grid(device)
    y = f(x)
    assert y[0].item() == 0.0
    assert y[-1].item() == 1.0
    assert bool((y.diff() > 0).all())
    ends = f.inverse(torch.tensor([0.0, 1.0], device=device, dtype=torch.float64))
    assert ends.tolist() == [0.0, 1.0]


@pytest.mark.parametrize("name", RESPONSE_NAMES)
def test_response_inverse_is_exact_float64(device, name):
    f = get_response(name).to(device)
    x = _grid(device)
    assert (f.inverse(f(x)) - x).abs().max().item() < 1e-10
    assert (f(f.inverse(x)) - x).abs().max().item() < 1e-10


@pytest.mark.parametrize("name", RESPONSE_NAMES)
def test_response_keeps_dtype_and_shape(device, name):
    f = get_response(name).to(device)
    x = torch.rand(2, 3, 13, 11, device=device)
    assert f(x).shape == x.shape and f(x).dtype == torch.float32
    assert f.inverse(x).dtype == torch.float32


def test_srgb_matches_standard_piecewise_formula(device):
    x = _grid(device).cpu().numpy()
    ref = np.where(x <= 0.0031308, 12.92 * x, 1.055 * x ** (1 / 2.4) - 0.055)
    out = srgb_crf(_grid(device)).cpu().numpy()
    np.testing.assert_allclose(out, ref, rtol=1e-6, atol=1e-7)
    y = x
    ref_inv = np.where(y <= 0.04045, y / 12.92, ((y + 0.055) / 1.055) ** 2.4)
    out_inv = srgb_icrf(_grid(device)).cpu().numpy()
    np.testing.assert_allclose(out_inv, ref_inv, rtol=1e-6, atol=1e-8)


def test_parametric_responses_match_reference_formulas(device):
    x = _grid(device, 1001)
    xn = x.cpu().numpy()
    cases = [
        (gamma_crf(x, 2.4), xn ** (1 / 2.4)),
        (exp_crf(x, 3.0), (1 - np.exp(-3.0 * xn)) / (1 - np.exp(-3.0))),
        (log_crf(x, 20.0), np.log(1 + 20.0 * xn) / np.log(21.0)),
    ]
    u = xn ** (1 / 2.0)
    cases.append((filmic_crf(x, 2.0, 1.5), u**1.5 / (u**1.5 + (1 - u) ** 1.5)))
    for out, ref in cases:
        np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-12, atol=1e-14)


def test_filmic_is_s_shaped():
    f = FilmicResponse(gamma=1.0, contrast=2.0)
    x = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    y = f(x)
    assert y[0] < 0.1 and abs(y[1].item() - 0.5) < 1e-12 and y[2] > 0.9


def test_per_channel_gamma_applies_along_channel_dim(device):
    f = GammaResponse(gamma=(1.0, 2.0, 4.0)).to(device)
    x = torch.rand(2, 4, 3, 13, 11, device=device, dtype=torch.float64)
    y = f(x)
    for c, g in enumerate((1.0, 2.0, 4.0)):
        assert torch.allclose(y[:, :, c], x[:, :, c] ** (1 / g), rtol=1e-12)
    assert torch.allclose(f.inverse(y), x, atol=1e-12)
    assert f.channels == 3
    curve = f.icrf_curve(n_points=5, channels=3)
    grid = torch.linspace(0, 1, 5, dtype=torch.float64, device=device)
    for c, g in enumerate((1.0, 2.0, 4.0)):
        assert torch.allclose(curve[c], grid**g)
    with pytest.raises(ValueError, match="`channels` to be 3"):
        f.icrf_curve(channels=1)
    with pytest.raises(ValueError, match="3 channels at dimension -3"):
        f(torch.rand(2, 4, 13, 11, device=device))


@pytest.mark.parametrize("name", RESPONSE_NAMES)
def test_icrf_curve_samples_the_inverse(device, name):
    f = get_response(name).to(device)
    curve = f.icrf_curve(n_points=256, channels=3)
    assert curve.shape == (3, 256) and curve.dtype == torch.float64
    assert curve.device.type == device.type or name in ("srgb", "linear")
    assert torch.equal(
        curve[:, 0], torch.zeros(3, dtype=torch.float64, device=curve.device)
    )
    assert torch.equal(
        curve[:, -1], torch.ones(3, dtype=torch.float64, device=curve.device)
    )
    grid = torch.arange(256, dtype=torch.float64, device=curve.device) / 255
    assert torch.allclose(
        curve, f.to(curve.device).inverse(grid).expand(3, -1), rtol=0, atol=1e-15
    )


@HYPO
@given(
    gamma=st.floats(0.3, 5.0),
    contrast=st.floats(0.5, 2.5),
    k=st.floats(0.05, 10.0),
    a=st.floats(0.5, 500.0),
)
def test_random_parameters_invert_exactly(device, gamma, contrast, k, a):
    x = torch.linspace(0.0, 1.0, 513, dtype=torch.float64, device=device)
    for f in (
        get_response("gamma", gamma=gamma),
        get_response("filmic", gamma=gamma, contrast=contrast),
        get_response("exp", k=k),
        get_response("log", a=a),
    ):
        f = f.to(device)
        y = f(x)
        assert bool((y.diff() > 0).all())
        assert (f.inverse(y) - x).abs().max().item() < 1e-9


def test_gamma_gradient_is_finite_at_zero(device):
    x = torch.tensor([0.0, 0.3], device=device, dtype=torch.float64, requires_grad=True)
    gamma_crf(x, 2.2).sum().backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad[0].item() == 0.0


def test_response_buffers_follow_to(device):
    f = get_response("filmic", gamma=(2.0, 2.2, 2.4), contrast=1.3).to(device)
    assert f.gamma.device.type == device.type and f.contrast.device.type == device.type
    assert f.gamma.dtype == torch.float64
    assert "gamma=(2.0, 2.2, 2.4)" in repr(f)


def test_get_response_rejects_bad_names_and_parameters():
    with pytest.raises(ValueError, match="'gamma', 'srgb'"):
        get_response("sony")
    with pytest.raises(ValueError, match="`gamma` to be finite and > 0"):
        get_response("gamma", gamma=-1.0)
    with pytest.raises(ValueError, match="`k` to be finite and > 0"):
        get_response("exp", k=float("nan"))
    with pytest.raises(ValueError, match="same number of channels"):
        get_response("filmic", gamma=(2.0, 2.2), contrast=(1.0, 1.1, 1.2))
    with pytest.raises(TypeError):
        get_response("srgb", gamma=2.0)
    with pytest.raises(TypeError, match="floating-point"):
        get_response("gamma")(torch.zeros(3, dtype=torch.int64))


def test_quantize_to_bit_depth_rounds_to_codes(device):
    x = torch.tensor(
        [-0.3, 0.0, 0.1, 0.5, 0.999, 1.4], device=device, dtype=torch.float64
    )
    for bits in (1, 8, 12, 16):
        levels = 2**bits - 1
        ref = [round(min(max(v, 0.0), 1.0) * levels) / levels for v in x.tolist()]
        out = quantize_to_bit_depth(x, bits).tolist()
        assert all(
            math.isclose(o, r, rel_tol=0, abs_tol=1e-15)
            for o, r in zip(out, ref, strict=True)
        )
    assert quantize_to_bit_depth(x, None).tolist() == [0.0, 0.0, 0.1, 0.5, 0.999, 1.0]
