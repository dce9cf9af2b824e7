r"""Determinism (same seed, same bits on CPU) and the laws of the losses and the ICRF model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepinv_icrf import fit_icrf
from deepinv_icrf.loss import PROPELLoss, RadiometricLinearityLoss
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack, GammaResponse
from deepinv_icrf.training import ICRFTrainer
from deepinv_icrf.training.distributed import fit_icrf_distributed

TIMES = [0.5, 1.0, 2.0, 4.0]


def _coded_stack(seed: int = 0, h: int = 13, w: int = 11) -> torch.Tensor:
    r"""An 8-bit, slightly noisy stack ``(N, C, H, W)`` of a random scene."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h, w, generator=g) * 0.4 + 0.01
    y = ExposureStack(TIMES, response=GammaResponse(2.2))(x)[0]
    noise = torch.randn(y.shape, generator=g) * 2 / 255
    return ((y + noise).clamp(0, 1) * 255).round() / 255


# ---------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("method", ["code", "linearity"])
def test_fit_icrf_same_seed_bit_identical(method):
    y = _coded_stack()
    fits = [
        fit_icrf(y, TIMES, method=method, steps=20, seed=7, progress=False)
        for _ in range(2)
    ]
    curves = [f.curve.detach() for f in fits]
    assert torch.equal(curves[0], curves[1])
    assert fits[0].fit_report.final_loss == fits[1].fit_report.final_loss


def test_fit_icrf_seed_changes_the_pixel_sample():
    y = _coded_stack(h=40, w=50)
    a, b = (
        fit_icrf(y, TIMES, steps=5, seed=s, max_pixels=300, progress=False)
        for s in (0, 1)
    )
    assert not torch.equal(a.curve.detach(), b.curve.detach())


def _train(seed: int) -> tuple[torch.Tensor, list]:
    torch.manual_seed(seed)
    trainer = ICRFTrainer.from_stack(
        _coded_stack(), TIMES, n_points=33, lr=0.05, epochs=5, verbose=False
    )
    icrf = trainer.train()
    return icrf.curve.detach(), trainer.channel_loss_history


def test_icrf_trainer_same_seed_bit_identical():
    (c1, h1), (c2, h2) = _train(3), _train(3)
    assert torch.equal(c1, c2)
    assert h1 == h2


def test_distributed_fit_one_process_bit_identical():
    y = _coded_stack()
    a, b = (fit_icrf_distributed(y, TIMES, steps=15) for _ in range(2))
    assert torch.equal(a.curve.detach(), b.curve.detach())


# ---------------------------------------------------------------------------- linearity laws
# times within a factor 8: every pair passes the ratio threshold 0.1
_times = st.lists(
    st.floats(1.0, 8.0, allow_nan=False), min_size=2, max_size=5, unique=True
).filter(lambda t: min(abs(a - b) for a in t for b in t if a != b) > 1e-3)


def _linear_stack(times: list[float], seed: int, h: int = 5, w: int = 7):
    r"""A perfectly linear float64 stack ``y_k = t_k x`` (unsaturated) ``(1, N, C, H, W)``."""
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor(times, dtype=torch.float64)
    x = (
        torch.rand(1, 2, h, w, generator=g, dtype=torch.float64) * 0.9 + 0.05
    ) / t.max()
    return (t.view(1, -1, 1, 1, 1) * x.unsqueeze(1)), t


def _loss(y, x_net, t, **options):
    physics = ExposureStack(t, dtype=torch.float64)
    loss = RadiometricLinearityLoss(path="dense", **options)
    return loss(x_net=x_net, y=y, physics=physics)


@settings(max_examples=15, deadline=None)
@given(times=_times, seed=st.integers(0, 1000), relative=st.booleans())
def test_linearity_zero_on_linear_stack(times, seed, relative):
    y, t = _linear_stack(times, seed)
    value = _loss(y, y, t, relative=relative, lower=0.0, upper=1.0)
    assert value.dtype == torch.float64
    assert float(value.abs().max()) < 1e-9


@settings(max_examples=15, deadline=None)
@given(times=_times, seed=st.integers(0, 1000), data=st.data())
def test_linearity_invariant_to_exposure_order(times, seed, data):
    y, t = _linear_stack(times, seed)
    y = y.clamp(0, 1) ** (1 / 2.2)  # a camera response: the loss is not 0
    x_net = y**1.7  # an imperfect ICRF
    perm = data.draw(st.permutations(range(len(times))))
    base = _loss(y, x_net, t)
    permuted = _loss(y[:, perm], x_net[:, perm], t[perm])
    assert float(base.abs().max()) > 0
    torch.testing.assert_close(permuted, base, rtol=1e-12, atol=0)


@settings(max_examples=15, deadline=None)
@given(
    times=_times,
    seed=st.integers(0, 1000),
    scale=st.floats(1e-3, 1e3, allow_nan=False),
)
def test_linearity_invariant_to_scaling_all_times(times, seed, scale):
    y, t = _linear_stack(times, seed)
    y = y.clamp(0, 1) ** (1 / 2.2)
    x_net = y**1.7
    torch.testing.assert_close(
        _loss(y, x_net, t * scale), _loss(y, x_net, t), rtol=1e-9, atol=0
    )


# ---------------------------------------------------------------------------- monotone ICRF
@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    optimizer=st.sampled_from(["adam", "sgd"]),
    lr=st.floats(1e-3, 1e3),
    steps=st.integers(1, 4),
)
def test_monotone_icrf_stays_monotone_after_any_step(seed, optimizer, lr, steps):
    g = torch.Generator().manual_seed(seed)
    icrf = ICRF(channels=3, n_points=17)
    make = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
    opt = make(icrf.parameters(), lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        weights = torch.randn(3, 17, generator=g) * 10 ** float(
            torch.randint(-3, 4, ())
        )
        (icrf.curve * weights).sum().backward()
        opt.step()
    curve = icrf.curve.detach()
    assert bool(torch.isfinite(curve).all())
    assert bool((curve.diff(dim=-1) >= 0).all())
    torch.testing.assert_close(curve[:, 0], torch.zeros(3), rtol=0, atol=1e-6)
    torch.testing.assert_close(curve[:, -1], torch.ones(3), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- PROPEL
@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    k=st.integers(1, 4),
    d=st.integers(1, 3),
    spread=st.floats(1e-2, 1e2),
    sigma=st.floats(1e-2, 10.0),
)
def test_propel_nonnegative(seed, k, d, spread, sigma):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(3, k, d, generator=g, dtype=torch.float64) * spread
    stds = torch.rand(3, k, d, generator=g, dtype=torch.float64) * spread + 1e-3
    target = torch.randn(3, d, generator=g, dtype=torch.float64) * spread
    loss = PROPELLoss(sigma=sigma, std_activation=None)
    value = loss(x_net=torch.cat([means, stds], dim=-1), x=target)
    assert value.shape == (3,) and bool(torch.isfinite(value).all())
    assert float(value.min()) >= -1e-12


def test_propel_zero_for_perfect_fit():
    target = torch.tensor([[0.3, -1.2]], dtype=torch.float64)
    x_net = torch.cat([target, torch.full((1, 2), 0.1, dtype=torch.float64)], dim=-1)
    value = PROPELLoss(sigma=0.1, std_activation=None)(x_net=x_net[:, None], x=target)
    assert abs(float(value[0])) < 1e-12
    assert np.isfinite(float(value[0]))
