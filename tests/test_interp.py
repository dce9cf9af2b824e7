from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepinv_icrf.functional import curve_slope, interp_curve, invert_curve

HYPO = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def _increasing_curve(channels, n_points, device, dtype, rng, flat=False):
    inc = torch.rand(channels, n_points - 1, generator=rng, device=device, dtype=dtype)
    inc = inc + (0.0 if flat else 0.05)
    if flat:
        inc[:, ::3] = 0.0
    c = torch.cumsum(inc, dim=1)
    c = c / c[:, -1:]
    return torch.cat([torch.zeros(channels, 1, device=device, dtype=dtype), c], dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n_points", [256, 1024])
def test_interp_curve_exact_at_codes(device, rng, dtype, n_points):
    curve = torch.rand(3, n_points, generator=rng, device=device, dtype=dtype)
    codes = torch.arange(n_points, device=device)
    # three ways of writing codes in a float dtype, off the exact k / (L - 1) by a few ulps
    divided = codes.to(dtype) / (n_points - 1)
    scaled = codes.to(dtype) * (1.0 / (n_points - 1))
    cast = (codes.double() / (n_points - 1)).to(dtype)
    y = torch.stack([divided, scaled, cast]).view(1, 3, 1, -1).expand(2, 3, 3, -1)
    out = interp_curve(y, curve, channel_dim=-2)
    expected = curve[None, None].expand(2, 3, 3, n_points)
    assert out.dtype == dtype
    assert torch.equal(out, expected)


def test_interp_curve_exact_codes_stack_layout(device, rng):
    curve = torch.rand(3, 256, generator=rng, device=device)
    k = torch.randint(0, 256, (2, 4, 3, 13, 11), generator=rng, device=device)
    y = k.float() / 255.0
    out = interp_curve(y, curve)
    for c in range(3):
        assert torch.equal(out[:, :, c], curve[c][k[:, :, c]])


def test_interp_curve_matches_numpy_interp_float64(device, rng):
    n_points = 17
    curve = torch.randn(3, n_points, generator=rng, device=device, dtype=torch.float64)
    y = torch.rand(2, 3, 13, 11, generator=rng, device=device, dtype=torch.float64)
    out = interp_curve(y, curve, channel_dim=1).cpu().numpy()
    grid = np.linspace(0.0, 1.0, n_points)
    y_np, c_np = y.cpu().numpy(), curve.cpu().numpy()
    for c in range(3):
        ref = np.interp(y_np[:, c], grid, c_np[c])
        np.testing.assert_allclose(out[:, c], ref, rtol=1e-12, atol=1e-14)


def test_interp_curve_clamps_values_outside_unit_interval(device):
    curve = torch.tensor([[0.1, 0.4, 0.9]], device=device, dtype=torch.float64)
    y = torch.tensor([[-0.5, 1.5, 0.25]], device=device, dtype=torch.float64)
    out = interp_curve(y, curve, channel_dim=0)
    assert torch.allclose(
        out, torch.tensor([[0.1, 0.9, 0.25]], device=device, dtype=torch.float64)
    )


def test_interp_curve_single_row_applies_to_every_channel(device, rng):
    curve = torch.rand(1, 9, generator=rng, device=device, dtype=torch.float64)
    y = torch.rand(2, 3, 5, 4, generator=rng, device=device, dtype=torch.float64)
    out = interp_curve(y, curve)
    ref = interp_curve(y, curve.expand(3, 9).contiguous(), channel_dim=1)
    assert torch.equal(out, ref)


def test_interp_curve_half_input_promotes(device, rng):
    curve = torch.rand(3, 256, generator=rng, device=device)
    y = (
        torch.randint(0, 256, (2, 3, 4, 5), generator=rng, device=device) / 255.0
    ).half()
    out = interp_curve(y, curve, channel_dim=1)
    assert out.dtype == torch.float32
    ref = interp_curve(y.float(), curve, channel_dim=1)
    assert torch.allclose(out, ref, atol=2e-3)


def test_interp_curve_gradcheck_in_curve(device, rng):
    curve = torch.rand(3, 7, generator=rng, device=device, dtype=torch.float64)
    curve.requires_grad_(True)
    y = torch.rand(2, 3, 4, 5, generator=rng, device=device, dtype=torch.float64)
    y[0, :, 0, 0] = 0.5  # a knot
    assert torch.autograd.gradcheck(
        lambda c: interp_curve(y, c, channel_dim=1), (curve,)
    )


def test_interp_curve_gradcheck_in_values_away_from_knots(device, rng):
    curve = torch.rand(3, 7, generator=rng, device=device, dtype=torch.float64)
    u = torch.rand(2, 3, 4, generator=rng, device=device, dtype=torch.float64)
    y = ((torch.floor(u * 6) + 0.2 + 0.6 * u) / 6).requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda v: interp_curve(v, curve, channel_dim=1), (y,)
    )


def test_curve_slope_matches_finite_differences(device, rng):
    n_points = 11
    curve = torch.randn(3, n_points, generator=rng, device=device, dtype=torch.float64)
    k = torch.randint(0, n_points - 1, (4, 3, 13, 11), generator=rng, device=device)
    theta = 0.1 + 0.8 * torch.rand(
        k.shape, generator=rng, device=device, dtype=torch.float64
    )
    y = (k + theta) / (n_points - 1)
    h = 1e-6
    fd = (interp_curve(y + h, curve, 1) - interp_curve(y - h, curve, 1)) / (2 * h)
    assert torch.allclose(curve_slope(y, curve, 1), fd, rtol=1e-6, atol=1e-6)


def test_curve_slope_at_knots_is_mean_of_adjacent_segments(device, rng):
    n_points = 6
    curve = torch.randn(2, n_points, generator=rng, device=device, dtype=torch.float64)
    y = (
        torch.arange(n_points, device=device, dtype=torch.float64) / (n_points - 1)
    ).expand(2, -1)
    out = curve_slope(y, curve, channel_dim=0).cpu().numpy()
    c = curve.cpu().numpy()
    for ch in range(2):
        seg = [(c[ch, j + 1] - c[ch, j]) * (n_points - 1) for j in range(n_points - 1)]
        ref = (
            [seg[0]]
            + [(seg[j - 1] + seg[j]) / 2 for j in range(1, n_points - 1)]
            + [seg[-1]]
        )
        np.testing.assert_allclose(out[ch], ref, rtol=1e-12)


def test_curve_slope_gradcheck_in_curve(device, rng):
    curve = torch.rand(3, 5, generator=rng, device=device, dtype=torch.float64)
    curve.requires_grad_(True)
    y = torch.tensor([0.0, 0.1, 0.25, 0.6, 1.0], device=device, dtype=torch.float64)
    y = y.expand(3, -1).contiguous()
    assert torch.autograd.gradcheck(
        lambda c: curve_slope(y, c, channel_dim=0), (curve,)
    )


def test_invert_curve_matches_numpy_interp_float64(device, rng):
    curve = _increasing_curve(3, 33, device, torch.float64, rng)
    v = torch.rand(2, 3, 13, 11, generator=rng, device=device, dtype=torch.float64)
    out = invert_curve(v, curve, channel_dim=1).cpu().numpy()
    grid = np.linspace(0.0, 1.0, 33)
    c_np, v_np = curve.cpu().numpy(), v.cpu().numpy()
    for c in range(3):
        np.testing.assert_allclose(
            out[:, c], np.interp(v_np[:, c], c_np[c], grid), rtol=1e-12, atol=1e-14
        )


@HYPO
@given(seed=st.integers(0, 2**31 - 1), n_points=st.integers(2, 300))
def test_invert_curve_inverts_interp_curve(device, seed, n_points):
    gen = torch.Generator(device).manual_seed(seed)
    curve = _increasing_curve(3, n_points, device, torch.float64, gen)
    v = torch.rand(2, 3, 5, 7, generator=gen, device=device, dtype=torch.float64)
    back = invert_curve(interp_curve(v, curve, 1), curve, 1)
    assert torch.allclose(back, v, rtol=0, atol=1e-10)
    fwd = interp_curve(invert_curve(v, curve, 1), curve, 1)
    assert torch.allclose(fwd, v, rtol=0, atol=1e-10)


def test_invert_curve_out_of_range_and_flat_segments(device):
    curve = torch.tensor([[0.2, 0.5, 0.5, 0.8]], device=device, dtype=torch.float64)
    v = torch.tensor(
        [[0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0]], device=device, dtype=torch.float64
    )
    out = invert_curve(v, curve, channel_dim=0)
    expected = torch.tensor(
        [[0.0, 0.0, 1 / 6, 2 / 3, 5 / 6, 1.0, 1.0]], device=device, dtype=torch.float64
    )
    assert torch.allclose(out, expected)
    assert torch.isfinite(out).all()


def test_invert_curve_gradcheck_in_curve(device, rng):
    curve = _increasing_curve(2, 6, device, torch.float64, rng).requires_grad_(True)
    v = torch.tensor(
        [[0.13, 0.41, 0.77], [0.05, 0.52, 0.93]], device=device, dtype=torch.float64
    )
    assert torch.autograd.gradcheck(
        lambda c: invert_curve(v, c, channel_dim=0), (curve,)
    )


def test_interp_functions_reject_bad_inputs(device):
    curve = torch.rand(3, 8, device=device)
    with pytest.raises(ValueError, match="`values` to have 3 channels"):
        interp_curve(torch.rand(2, 4, 5, 6, device=device), curve)
    with pytest.raises(TypeError, match="`values` to be a floating-point"):
        interp_curve(torch.zeros(2, 3, 5, 6, dtype=torch.uint8, device=device), curve)
    with pytest.raises(ValueError, match="`curve` to have shape"):
        curve_slope(torch.rand(3, 5, 6, device=device), torch.rand(3, 1, device=device))
    with pytest.raises(ValueError, match="`curve` to have shape"):
        invert_curve(
            torch.rand(3, 5, 6, device=device), torch.rand(3, 4, 2, device=device)
        )
    with pytest.raises(ValueError, match="`channel_dim`"):
        interp_curve(torch.rand(3, device=device), curve, channel_dim=-3)
