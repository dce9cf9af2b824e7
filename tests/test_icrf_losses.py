from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_linearity import make_batch, np_, ref_linearity
from test_penalties import ref_endpoint, ref_monotonicity, ref_range, ref_smoothness
from torch import nn

from deepinv_icrf.functional import (
    endpoint_penalty,
    monotonicity_penalty,
    radiometric_linearity,
    range_penalty,
    smoothness_penalty,
)
from deepinv_icrf.loss import (
    EndpointLoss,
    MonotonicityLoss,
    RadiometricLinearityLoss,
    RangeLoss,
    SmoothnessLoss,
    find_icrf,
)


# ------------------------------------------------------------------ duck-typed stand-ins
class DuckICRF(nn.Module):
    """Piecewise-linear per-channel curve (C, L) with the ICRF duck interface."""

    def __init__(self, curve: torch.Tensor, parameter: bool = True):
        super().__init__()
        # parameter=False keeps the given tensor itself, so gradcheck can differentiate it
        self.values = nn.Parameter(curve.clone()) if parameter else curve

    @property
    def curve(self) -> torch.Tensor:
        return self.values

    def _segment(self, y):
        n_seg = self.values.shape[-1] - 1
        pos = y.clamp(0, 1) * n_seg
        k0 = pos.floor().long().clamp(max=n_seg - 1)
        chan = torch.arange(self.values.shape[0], device=y.device).view(-1, 1, 1)
        return pos - k0, self.values[chan, k0], self.values[chan, k0 + 1], n_seg

    def forward(self, y, physics=None, **kwargs):
        frac, lo, hi, _ = self._segment(y)
        return lo + frac * (hi - lo)

    def derivative(self, y):
        _, lo, hi, n_seg = self._segment(y)
        return (hi - lo) * n_seg


def np_slope(curve: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Slope of the segment each code falls in, computed element by element."""
    out = np.empty_like(y)
    n_seg = curve.shape[-1] - 1
    for idx in np.ndindex(*y.shape):
        c = idx[2]
        k = min(int(np.floor(np.clip(y[idx], 0, 1) * n_seg)), n_seg - 1)
        out[idx] = (curve[c, k + 1] - curve[c, k]) * n_seg
    return out


def gamma_curve(channels=2, points=9, dtype=torch.float64):
    grid = torch.linspace(0, 1, points, dtype=dtype)
    return torch.stack([grid ** (1.8 + 0.4 * c) for c in range(channels)])


class Wrapper(nn.Module):
    def __init__(self, inner: nn.Module, attr: str):
        super().__init__()
        setattr(self, attr, inner)


def physics_for(times, y_std=None):
    return SimpleNamespace(exposure_times=times, y_std=y_std)


# ------------------------------------------------------------------ find_icrf
@pytest.mark.parametrize(
    "attr", ["icrf", "module", "_orig_mod", "model", "backbone_net"]
)
def test_find_icrf_unwraps(attr):
    icrf = DuckICRF(gamma_curve())
    assert find_icrf(icrf) is icrf
    assert find_icrf(Wrapper(icrf, attr)) is icrf
    assert find_icrf(Wrapper(Wrapper(icrf, attr), "module")) is icrf


def test_find_icrf_returns_none_without_icrf():
    assert find_icrf(None) is None
    assert find_icrf(nn.Linear(2, 2)) is None
    not_icrf = nn.Module()
    not_icrf.curve = torch.zeros(5)  # 1-D and no derivative
    assert find_icrf(not_icrf) is None
    looped = nn.Module()
    looped.__dict__["model"] = looped  # a cycle must not recurse forever
    assert find_icrf(looped) is None


# ------------------------------------------------------------------ RadiometricLinearityLoss
@pytest.mark.parametrize("relative", [True, False])
def test_linearity_loss_matches_reference(device, relative):
    y, x, times, _ = make_batch(device=device)
    loss = RadiometricLinearityLoss(relative=relative)
    out = loss(x_net=x, y=y, physics=physics_for(times))
    want = ref_linearity(np_(y), np_(x), np_(times), relative=relative)
    assert out.shape == (3,)
    np.testing.assert_allclose(np_(out), want.sum(axis=1), rtol=1e-6)
    per_channel = RadiometricLinearityLoss(relative=relative, per_channel=True)
    out_c = per_channel(x_net=x, y=y, physics=physics_for(times))
    assert out_c.shape == (3, 2)
    np.testing.assert_allclose(np_(out_c), want, rtol=1e-6)


def test_linearity_loss_agrees_with_functional(device):
    y, x, times, x_std = make_batch(device=device)
    kw = dict(relative=False, use_uncertainty_weighting=False, gaussian_scale=4.0)
    loss = RadiometricLinearityLoss(
        exposure_ratio_threshold=0.2, lower=0.02, upper=0.95, **kw
    )
    got = loss(x_net=x, y=y, physics=physics_for(times), x_std=x_std)
    want = radiometric_linearity(
        y, x, times, x_std=x_std, threshold=0.2, lower=0.02, upper=0.95, **kw
    ).sum(-1)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("source", ["kwarg", "physics"])
def test_linearity_loss_propagates_y_std_through_icrf(device, relative, source):
    y, _, times, y_std = make_batch(device=device)
    icrf = DuckICRF(gamma_curve()).to(device)
    x = icrf(y)
    model = Wrapper(icrf, "module")
    loss = RadiometricLinearityLoss(relative=relative, per_channel=True)
    if source == "kwarg":
        out = loss(x_net=x, y=y, physics=physics_for(times), model=model, y_std=y_std)
    else:
        out = loss(x_net=x, y=y, physics=physics_for(times, y_std), model=model)
    x_std = np.abs(np_slope(np_(icrf.curve), np_(y))) * np_(y_std)
    want = ref_linearity(np_(y), np_(x), np_(times), x_std, relative=relative)
    np.testing.assert_allclose(np_(out), want, rtol=1e-6)
    without = loss(x_net=x, y=y, physics=physics_for(times), model=model)
    if source == "kwarg":  # no std anywhere: plain value weights
        assert not torch.allclose(out, without)


def test_linearity_loss_accepts_one_row_of_times_for_the_batch():
    y, x, times, _ = make_batch()
    loss = RadiometricLinearityLoss()
    a = loss(x_net=x, y=y, physics=physics_for(times[:1]))
    b = loss(x_net=x, y=y, physics=physics_for(times[0]))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    want = ref_linearity(np_(y), np_(x), np_(times[0])).sum(axis=1)
    np.testing.assert_allclose(np_(a), want, rtol=1e-6)


def test_linearity_loss_x_std_overrides_y_std():
    y, x, times, x_std = make_batch()
    loss = RadiometricLinearityLoss()
    a = loss(
        x_net=x, y=y, physics=physics_for(times, 3 * x_std), x_std=x_std, y_std=x_std
    )
    b = loss(x_net=x, y=y, physics=physics_for(times), x_std=x_std)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_linearity_loss_y_std_needs_an_icrf():
    y, x, times, y_std = make_batch()
    loss = RadiometricLinearityLoss()
    with pytest.raises(ValueError, match="`model` to hold an ICRF"):
        loss(x_net=x, y=y, physics=physics_for(times), model=nn.Identity(), y_std=y_std)
    with pytest.raises(ValueError, match="channels"):
        loss(
            x_net=x,
            y=y,
            physics=physics_for(times),
            model=DuckICRF(gamma_curve(channels=3)),
            y_std=y_std,
        )


def test_linearity_loss_detach_std_matches_constant_std():
    y, _, times, y_std = make_batch(h=5, w=3)
    physics = physics_for(times)

    def grad(detach: bool, constant_std: bool):
        icrf = DuckICRF(gamma_curve())
        loss = RadiometricLinearityLoss(detach_std=detach)
        x = icrf(y)
        if constant_std:
            x_std = (icrf.derivative(y).abs() * y_std).detach()
            out = loss(x_net=x, y=y, physics=physics, x_std=x_std)
        else:
            out = loss(x_net=x, y=y, physics=physics, model=icrf, y_std=y_std)
        (g,) = torch.autograd.grad(out.sum(), icrf.values)
        return g

    torch.testing.assert_close(grad(True, False), grad(True, True), rtol=1e-12, atol=0)
    assert not torch.allclose(grad(False, False), grad(True, True))


@pytest.mark.parametrize("relative", [True, False])
def test_linearity_loss_gradcheck_wrt_curve(relative):
    gen = torch.Generator().manual_seed(5)
    y = 0.1 + 0.8 * torch.rand(2, 3, 2, 3, 2, generator=gen, dtype=torch.float64)
    y_std = 0.01 + 0.02 * torch.rand(2, 3, 2, 3, 2, generator=gen, dtype=torch.float64)
    times = torch.tensor([[1.0, 0.5, 2.0], [0.3, 0.6, 0.9]], dtype=torch.float64)
    loss = RadiometricLinearityLoss(relative=relative, detach_std=False)
    curve = (gamma_curve(points=6) + 0.05).requires_grad_(True)

    def fn(c):
        icrf = DuckICRF(c, parameter=False)
        return loss(
            x_net=icrf(y), y=y, physics=physics_for(times), model=icrf, y_std=y_std
        )

    assert torch.autograd.gradcheck(fn, (curve,))


@pytest.mark.parametrize("relative", [True, False])
def test_linearity_loss_gradcheck_wrt_x_net(relative):
    gen = torch.Generator().manual_seed(6)
    y = 0.1 + 0.8 * torch.rand(2, 3, 2, 3, 2, generator=gen, dtype=torch.float64)
    x = (
        0.1 + torch.rand(2, 3, 2, 3, 2, generator=gen, dtype=torch.float64)
    ).requires_grad_()
    y_std = 0.01 + 0.02 * torch.rand(2, 3, 2, 3, 2, generator=gen, dtype=torch.float64)
    icrf = DuckICRF(gamma_curve(points=6))
    loss = RadiometricLinearityLoss(relative=relative)
    physics = physics_for(torch.tensor([0.4, 0.2, 1.0], dtype=torch.float64), y_std)
    assert torch.autograd.gradcheck(
        lambda x: loss(x_net=x, y=y, physics=physics, model=icrf), (x,)
    )


def test_linearity_loss_linear_stack_is_zero_with_finite_gradient(device):
    times = torch.tensor([1.0, 0.25, 0.5], dtype=torch.float64, device=device)
    radiance = torch.linspace(
        0.05, 0.9, 2 * 13 * 11, dtype=torch.float64, device=device
    )
    x = (radiance.view(1, 1, 2, 13, 11) * times.view(1, 3, 1, 1, 1)).requires_grad_(
        True
    )
    y = x.detach() ** (1 / 2.2)
    for relative in (True, False):
        out = RadiometricLinearityLoss(relative=relative)(
            x_net=x, y=y, physics=physics_for(times)
        )
        assert float(out.detach().max()) < 1e-5
        (g,) = torch.autograd.grad(out.sum(), x)
        assert bool(torch.isfinite(g).all())


def test_linearity_loss_trainer_call_convention():
    y, x, times, _ = make_batch()
    loss = RadiometricLinearityLoss()
    out = loss(x=None, x_net=x, y=y, physics=physics_for(times), model=None, epoch=3)
    want = radiometric_linearity(y, x, times).sum(-1)
    torch.testing.assert_close(out, want, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("dtype", "out_dtype"),
    [
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_linearity_loss_dtypes(dtype, out_dtype, device):
    y, x, times, y_std = make_batch(h=5, w=3)
    icrf = DuckICRF(gamma_curve(dtype=torch.float32)).to(device)
    loss = RadiometricLinearityLoss()
    args = dict(
        y=y.to(device, dtype), x_net=x.to(device, dtype), y_std=y_std.to(device, dtype)
    )
    out = loss(physics=physics_for(times.to(device, dtype)), model=icrf, **args)
    assert (
        out.dtype == out_dtype and out.shape == (3,) and bool(torch.isfinite(out).all())
    )


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("x_net_shape", "`x_net`"),
        ("y_dims", "`y`"),
        ("one_exposure", "at least 2 exposures"),
        ("times_length", "`exposure_times`"),
        ("times_value", "`exposure_times`"),
        ("y_std_shape", "`y_std`"),
        ("x_std_shape", "`x_std`"),
        ("no_times", "`physics`"),
    ],
)
def test_linearity_loss_rejects_bad_inputs(case, match):
    y, x, times, std = make_batch(h=3, w=2)
    kw: dict = dict(
        x_net=x, y=y, physics=physics_for(times), model=DuckICRF(gamma_curve())
    )
    if case == "x_net_shape":
        kw["x_net"] = x[:, :, :, :, :1]
    elif case == "y_dims":
        kw["y"] = y[0]
    elif case == "one_exposure":
        kw.update(x_net=x[:, :1], y=y[:, :1], physics=physics_for(times[:, :1]))
    elif case == "times_length":
        kw["physics"] = physics_for(times[:, :3])
    elif case == "times_value":
        kw["physics"] = physics_for(times - 1.0)
    elif case == "y_std_shape":
        kw["y_std"] = std[:, :3]
    elif case == "x_std_shape":
        kw["x_std"] = std[:, :, :, :2]
    elif case == "no_times":
        kw["physics"] = SimpleNamespace()
    with pytest.raises(ValueError, match=match):
        RadiometricLinearityLoss()(**kw)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(relative="yes"), "`relative`"),
        (dict(use_uncertainty_weighting=None), "`use_uncertainty_weighting`"),
        (dict(per_channel=1.5), "`per_channel`"),
        (dict(detach_std="no"), "`detach_std`"),
        (dict(exposure_ratio_threshold=1.5), "`threshold`"),
        (dict(lower=0.8, upper=0.2), "`lower`"),
        (dict(gaussian_scale=-2.0), "`gaussian_scale`"),
    ],
)
def test_linearity_loss_rejects_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        RadiometricLinearityLoss(**kwargs)


# ------------------------------------------------------------------ curve losses
CURVE_LOSSES = [
    (MonotonicityLoss, monotonicity_penalty, ref_monotonicity),
    (RangeLoss, range_penalty, ref_range),
    (EndpointLoss, endpoint_penalty, ref_endpoint),
    (SmoothnessLoss, smoothness_penalty, ref_smoothness),
]
IDS = [c[0].__name__ for c in CURVE_LOSSES]


def wobbly(device="cpu", dtype=torch.float64, channels=3, points=11):
    gen = torch.Generator().manual_seed(4)
    grid = torch.linspace(0, 1, points, dtype=torch.float64)
    f = grid**0.6 + 0.2 * torch.randn(
        channels, points, generator=gen, dtype=torch.float64
    )
    return f.to(device, dtype)


@pytest.mark.parametrize(("cls", "fn", "ref"), CURVE_LOSSES, ids=IDS)
def test_curve_loss_matches_reference(cls, fn, ref, device):
    curve = wobbly(device)
    want = np.array([ref(row) for row in curve.tolist()])
    loss = cls(curve=curve)
    out = loss(x_net=torch.zeros(4, 3, 3, 5, 7, device=device))
    assert out.shape == (4,) and out.device.type == device.type
    np.testing.assert_allclose(np_(out), np.full(4, want.sum()), rtol=1e-10)
    out_c = cls(curve=curve, per_channel=True)(
        y=torch.zeros(2, 3, 3, 5, 7, device=device)
    )
    assert out_c.shape == (2, 3)
    np.testing.assert_allclose(np_(out_c), np.tile(want, (2, 1)), rtol=1e-10)
    torch.testing.assert_close(out_c[0], fn(curve), rtol=0, atol=0)
    assert cls(curve=curve)().shape == (1,)


def test_monotonicity_loss_linear_variant():
    curve = wobbly()
    want = sum(ref_monotonicity(row, squared=False) for row in curve.tolist())
    out = MonotonicityLoss(squared=False, curve=curve)(x_net=torch.zeros(2, 1))
    np.testing.assert_allclose(np_(out), [want, want], rtol=1e-10)


@pytest.mark.parametrize(("cls", "fn", "ref"), CURVE_LOSSES, ids=IDS)
@pytest.mark.parametrize(
    "attr", ["icrf", "module", "_orig_mod", "model", "backbone_net"]
)
def test_curve_loss_reads_the_model_icrf(cls, fn, ref, attr):
    curve = wobbly()
    icrf = DuckICRF(curve)
    x_net = torch.zeros(2, 3, 3, 4, 4)
    a = cls()(x_net=x_net, model=Wrapper(icrf, attr))
    b = cls(curve=curve)(x_net=x_net)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    a.mean().backward()  # what Trainer does: the mean of the batch is the penalty itself
    ref_curve = curve.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(fn(ref_curve).sum(), ref_curve)
    torch.testing.assert_close(icrf.values.grad, g)


def test_curve_loss_explicit_curve_wins_and_is_a_buffer():
    fixed = wobbly(dtype=torch.float32)
    loss = RangeLoss(curve=fixed)
    other = DuckICRF(torch.linspace(0, 1, 11).expand(3, 11).clone())
    assert loss(model=other).item() == pytest.approx(range_penalty(fixed).sum().item())
    assert "curve" in loss.state_dict()
    assert loss.to(torch.float64).curve.dtype == torch.float64


@pytest.mark.parametrize(("cls", "fn", "ref"), CURVE_LOSSES, ids=IDS)
def test_curve_loss_needs_a_curve(cls, fn, ref):
    with pytest.raises(ValueError, match="needs a curve"):
        cls()(x_net=torch.zeros(2, 3), model=nn.Identity())
    with pytest.raises(ValueError, match="`curve`"):
        cls(curve=torch.zeros(11))
    with pytest.raises(ValueError, match="`per_channel`"):
        cls(per_channel="yes")


def test_monotonicity_loss_rejects_bad_squared():
    with pytest.raises(ValueError, match="`squared`"):
        MonotonicityLoss(squared=2)


@pytest.mark.parametrize(("cls", "fn", "ref"), CURVE_LOSSES, ids=IDS)
def test_curve_loss_gradcheck(cls, fn, ref):
    curve = wobbly(points=7).requires_grad_(True)
    x_net = torch.zeros(3, 1, dtype=torch.float64)

    def run(c):
        return cls()(x_net=x_net, model=DuckICRF(c, parameter=False))

    assert torch.autograd.gradcheck(run, (curve,))


@pytest.mark.parametrize(
    ("dtype", "out_dtype"),
    [
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
@pytest.mark.parametrize(("cls", "fn", "ref"), CURVE_LOSSES, ids=IDS)
def test_curve_loss_dtypes(cls, fn, ref, dtype, out_dtype):
    out = cls(curve=wobbly(dtype=dtype))(x_net=torch.zeros(2, 3))
    assert out.dtype == out_dtype and out.shape == (2,)
