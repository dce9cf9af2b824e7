r"""Integer codes looked up in a table (``interp_curve(..., bit_depth=b)``, ``ICRF.forward``).

The table path must give the values and gradients of the interpolating path: bit for bit when
the curve's knots are the codes, to float rounding otherwise; anything that is not all codes
(continuous values, NaN, a single stray value) is interpolated.
"""

from __future__ import annotations

import pytest
import torch

import deepinv_icrf.functional.interp as interp_module
from deepinv_icrf.functional import code_values, curve_slope, interp_curve
from deepinv_icrf.models import ICRF


def _codes(bits, shape, device, dtype, rng):
    k = torch.randint(0, 2**bits, shape, generator=rng, device=device)
    return k, k.to(dtype) / (2**bits - 1)


def _spy(monkeypatch) -> list[bool]:
    r"""Record, per call of the code check, whether it accepted the values as codes."""
    calls: list[bool] = []
    original = interp_module._code_index

    def spy(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr(interp_module, "_code_index", spy)
    return calls


def _grads(fn, curve, grad_out):
    leaf = curve.detach().clone().requires_grad_(True)
    out = fn(leaf)
    out.backward(grad_out)
    return out.detach(), leaf.grad


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_table_path_is_bit_identical_for_8bit_codes(device, rng, dtype, monkeypatch):
    calls = _spy(monkeypatch)
    curve = torch.rand(3, 256, generator=rng, device=device, dtype=dtype)
    k, y = _codes(8, (2, 5, 3, 17, 13), device, dtype, rng)
    grad_out = torch.randn(y.shape, generator=rng, device=device, dtype=dtype)
    out, grad = _grads(lambda c: interp_curve(y, c, bit_depth=8), curve, grad_out)
    assert calls == [True]
    ref, ref_grad = _grads(lambda c: interp_curve(y, c), curve, grad_out)
    assert out.dtype == dtype
    assert torch.equal(out, ref)
    for c in range(3):  # and it is the curve at the codes
        assert torch.equal(out[:, :, c], curve[c][k[:, :, c]])
    torch.testing.assert_close(grad, ref_grad)  # summation order only
    # the gradient is the scatter-add of grad_out onto the codes
    expected = torch.zeros_like(curve)
    for c in range(3):
        expected[c].index_add_(0, k[:, :, c].reshape(-1), grad_out[:, :, c].reshape(-1))
    torch.testing.assert_close(grad, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [10, 12, 16])
def test_table_path_matches_interpolation_for_deeper_codes(
    device, rng, dtype, bits, monkeypatch
):
    calls = _spy(monkeypatch)
    curve = torch.sort(torch.rand(3, 256, generator=rng, device=device, dtype=dtype))[0]
    shape = (1, 2, 3, 200, 200) if bits == 16 else (1, 4, 3, 37, 31)
    _, y = _codes(bits, shape, device, dtype, rng)
    grad_out = torch.randn(y.shape, generator=rng, device=device, dtype=dtype)
    out, grad = _grads(lambda c: interp_curve(y, c, bit_depth=bits), curve, grad_out)
    assert calls == [True]
    ref, ref_grad = _grads(lambda c: interp_curve(y, c), curve, grad_out)
    eps = torch.finfo(dtype).eps
    torch.testing.assert_close(out, ref, rtol=0.0, atol=4 * eps)
    torch.testing.assert_close(
        grad,
        ref_grad,
        rtol=1e-5 if dtype == torch.float32 else 1e-12,
        atol=1e-4 if dtype == torch.float32 else 1e-10,
    )


def test_table_path_for_8bit_codes_on_a_finer_curve(device, rng, monkeypatch):
    calls = _spy(monkeypatch)
    curve = torch.rand(3, 1024, generator=rng, device=device, dtype=torch.float64)
    _, y = _codes(8, (1, 3, 3, 31, 29), device, torch.float32, rng)
    out = interp_curve(y, curve, bit_depth=8)
    assert calls == [True] and out.dtype == torch.float64
    assert torch.equal(out, interp_curve(y, curve))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_values_are_interpolated(device, rng, dtype, monkeypatch):
    calls = _spy(monkeypatch)
    curve = torch.rand(3, 256, generator=rng, device=device, dtype=dtype)
    y = torch.rand(2, 4, 3, 23, 19, generator=rng, device=device, dtype=dtype)
    assert torch.equal(interp_curve(y, curve, bit_depth=8), interp_curve(y, curve))
    assert calls == [False]


def test_one_stray_value_off_the_probe_sends_everything_to_interpolation(
    device, rng, monkeypatch
):
    # codes everywhere but one value half-way between two codes, off the strided sample
    monkeypatch.setattr(interp_module, "_CPU_BLOCK", 512)  # several blocks on the CPU
    calls = _spy(monkeypatch)
    curve = torch.rand(3, 256, generator=rng, device=device)
    _, y = _codes(8, (1, 9, 3, 64, 64), device, torch.float32, rng)
    stride = y.numel() // interp_module._PROBE
    flat = y.view(-1)
    spot = y.numel() - stride // 2 - 1
    assert spot % stride != 0
    flat[spot] = 100.5 / 255
    out = interp_curve(y, curve, bit_depth=8)
    assert calls == [False]
    assert torch.equal(out, interp_curve(y, curve))
    c = (spot // (64 * 64)) % 3
    torch.testing.assert_close(
        out.view(-1)[spot], 0.5 * (curve[c, 100] + curve[c, 101])
    )


def test_values_within_rounding_of_codes_use_the_table(device, rng, monkeypatch):
    # codes written three ways (a few ulps apart) are snapped by both paths alike
    calls = _spy(monkeypatch)
    curve = torch.rand(3, 256, generator=rng, device=device)
    k = torch.randint(0, 256, (3, 3, 40, 40), generator=rng, device=device)
    y = torch.stack(
        [
            k[0].float() / 255,
            k[1].float() * (1.0 / 255),
            (k[2].double() / 255).float(),
        ]
    ).unsqueeze(0)
    out = interp_curve(y, curve, bit_depth=8)
    assert calls == [True]
    assert torch.equal(out, interp_curve(y, curve))


def test_out_of_range_codes_are_clamped_like_interpolation(device, rng):
    curve = torch.rand(3, 256, generator=rng, device=device)
    _, y = _codes(8, (1, 2, 3, 20, 20), device, torch.float32, rng)
    y[0, 0, :, 0, :3] = torch.tensor([-1.0, 2.0, 3.0], device=device)
    out = interp_curve(y, curve, bit_depth=8)
    assert torch.equal(out, interp_curve(y, curve))
    assert torch.equal(out[0, 0, :, 0, 0], curve[:, 0])
    assert torch.equal(out[0, 0, :, 0, 1], curve[:, -1])


@pytest.mark.parametrize(
    ("shape", "channel_dim", "channels"),
    [
        ((3, 41, 43), 0, 3),
        ((600, 3, 7), 1, 3),
        ((2, 5, 30, 30, 3), -1, 3),
        ((5, 40, 40), -3, 1),
    ],
)
def test_table_path_layouts(device, rng, shape, channel_dim, channels, monkeypatch):
    monkeypatch.setattr(interp_module, "_CPU_BLOCK", 1000)  # blocks of rows and columns
    calls = _spy(monkeypatch)
    curve = torch.rand(channels, 256, generator=rng, device=device)
    _, y = _codes(8, shape, device, torch.float32, rng)
    out = interp_curve(y, curve, channel_dim, bit_depth=8)
    assert calls == [True]
    assert torch.equal(out, interp_curve(y, curve, channel_dim))
    # a strided (non-contiguous) view of the codes, along a dimension other than channels
    dim = y.ndim - 1 if channel_dim % y.ndim != y.ndim - 1 else y.ndim - 2
    view = y[(slice(None),) * dim + (slice(None, None, 2),)]
    assert not view.is_contiguous()
    out = interp_curve(view, curve, channel_dim, bit_depth=8)
    assert calls == [True, True]
    assert torch.equal(out, interp_curve(view, curve, channel_dim))


def test_values_needing_a_gradient_are_interpolated(device, rng, monkeypatch):
    calls = _spy(monkeypatch)
    curve = torch.rand(3, 256, generator=rng, device=device, dtype=torch.float64)
    _, y = _codes(8, (1, 2, 3, 20, 20), device, torch.float64, rng)
    y.requires_grad_(True)
    interp_curve(y, curve, bit_depth=8).sum().backward()
    assert calls == [] and y.grad is not None
    with torch.no_grad():
        interp_curve(y, curve, bit_depth=8)
    assert calls == [True]


def test_small_and_low_precision_inputs_are_interpolated(device, rng, monkeypatch):
    calls = _spy(monkeypatch)
    curve = torch.rand(3, 256, generator=rng, device=device)
    _, y = _codes(8, (1, 3, 10, 10), device, torch.float32, rng)  # 300 < 3 * 256 values
    assert torch.equal(interp_curve(y, curve, bit_depth=8), interp_curve(y, curve))
    _, y = _codes(8, (1, 3, 30, 30), device, torch.float16, rng)
    assert torch.equal(interp_curve(y, curve, bit_depth=8), interp_curve(y, curve))
    _, y = _codes(8, (1, 3, 30, 30), device, torch.float32, rng)
    assert torch.equal(interp_curve(y, curve, bit_depth=20), interp_curve(y, curve))
    assert calls == []


def test_table_path_gradcheck_in_curve(device, rng):
    for bits, n_points in ((4, 16), (3, 16)):  # knots at the codes, and between them
        curve = torch.rand(
            2, n_points, generator=rng, device=device, dtype=torch.float64
        ).requires_grad_(True)
        _, y = _codes(bits, (3, 2, 5, 4), device, torch.float64, rng)
        assert torch.autograd.gradcheck(
            lambda c, y=y, bits=bits: interp_curve(y, c, channel_dim=1, bit_depth=bits),
            (curve,),
        )


def test_icrf_forward_gradcheck_through_parameters(device, rng):
    model = ICRF(channels=2, n_points=8, init="gamma", bit_depth=3, dtype=torch.float64)
    model = model.to(device)
    _, y = _codes(3, (1, 2, 2, 4, 4), device, torch.float64, rng)
    raw = tuple(p.detach().clone().requires_grad_(True) for p in model.params)

    def functional(*raw):
        inc = torch.cumsum(torch.nn.functional.softplus(torch.stack(raw)), dim=1)
        curve = torch.cat([torch.zeros_like(inc[:, :1]), inc / inc[:, -1:]], dim=1)
        return interp_curve(y, curve, bit_depth=3)

    assert torch.autograd.gradcheck(functional, raw)
    # and the model's forward has that gradient
    model.zero_grad()
    g = torch.randn(y.shape, generator=rng, device=device, dtype=torch.float64)
    model(y).backward(g)
    functional(*raw).backward(g)
    for p, r in zip(model.params, raw, strict=True):
        torch.testing.assert_close(p.grad, r.grad)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_icrf_forward_equals_interpolation(device, rng, dtype, monkeypatch):
    calls = _spy(monkeypatch)
    model = ICRF.from_response("srgb", dtype=dtype).to(device)
    _, y = _codes(8, (2, 3, 3, 19, 23), device, dtype, rng)
    out = model(y)
    assert calls == [True]
    assert torch.equal(out, interp_curve(y, model.curve))
    g = torch.randn(y.shape, generator=rng, device=device, dtype=dtype)
    out.backward(g)
    grads = [p.grad.clone() for p in model.params]
    model.zero_grad()
    interp_curve(y, model.curve).backward(g)
    for a, p in zip(grads, model.params, strict=True):
        torch.testing.assert_close(a, p.grad)


@pytest.mark.parametrize("size", [(4, 4), (40, 40)])  # interpolated, and probed codes
def test_nan_codes_give_nan(device, rng, size):
    model = ICRF().to(device)
    _, y = _codes(8, (1, 2, 3, *size), device, torch.float32, rng)
    clean = model(y)
    y[0, 1, 2, 3, 1] = float("nan")
    out = model(y)
    nan = torch.zeros_like(y, dtype=torch.bool)
    nan[0, 1, 2, 3, 1] = True
    assert torch.equal(out.isnan(), nan)
    assert torch.equal(out[~nan], clean[~nan])
    slope = curve_slope(y, model.curve.detach())
    assert torch.equal(slope.isnan(), nan)
    assert torch.equal(interp_curve(y, model.curve.detach()).isnan(), nan)


def test_code_values_match_divided_codes(device):
    for bits, dtype in ((8, torch.float32), (12, torch.float64), (16, torch.float32)):
        k = torch.arange(2**bits, device=device)
        assert torch.equal(
            code_values(bits, dtype, device), k.to(dtype) / (2**bits - 1)
        )
    with pytest.raises(
        TypeError, match="Expected `bit_depth` to be an int, but got 8.0"
    ):
        code_values(8.0)
    with pytest.raises(ValueError, match=r"`bit_depth` to be in \[1, 24\], but got 25"):
        code_values(25)
    with pytest.raises(TypeError, match="floating-point torch.dtype"):
        code_values(8, torch.int32)


def test_interp_curve_rejects_bad_bit_depth(device):
    curve = torch.rand(1, 4, device=device)
    y = torch.rand(5, device=device)
    with pytest.raises(
        ValueError, match=r"`bit_depth` to be in \[1, 32\] or None, but got 0"
    ):
        interp_curve(y, curve, bit_depth=0)
    with pytest.raises(
        TypeError, match="Expected `bit_depth` to be an int or None, but got True"
    ):
        interp_curve(y, curve, bit_depth=True)
