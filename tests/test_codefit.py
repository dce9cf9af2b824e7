from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import norm

from deepinv_icrf.functional import (
    censored_code_nll,
    curve_rmse,
    estimate_code_noise,
    fit_code_domain,
    stratified_pixel_sample,
)
from deepinv_icrf.loss import CodeDomainLoss
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack


def _reference_nll(y, y_hat, sigma, bits=8):
    q = 1.0 / (2**bits - 1)
    out = []
    for a, b in zip(y.tolist(), y_hat.tolist(), strict=True):
        if a <= 0.5 * q:
            out.append(-norm.logcdf((0.5 * q - b) / sigma))
        elif a >= 1 - 0.5 * q:
            out.append(-norm.logcdf((b - 1 + 0.5 * q) / sigma))
        else:
            out.append(0.5 * ((b - a) / sigma) ** 2)
    return torch.tensor(out, dtype=torch.float64)


def test_censored_nll_matches_reference(device):
    y = torch.tensor([0.0, 0.0, 3 / 255, 0.5, 254 / 255, 1.0, 1.0], dtype=torch.float64)
    y_hat = torch.tensor(
        [0.01, -0.02, 0.02, 0.47, 0.99, 0.97, 1.05], dtype=torch.float64
    )
    got = censored_code_nll(y.to(device), y_hat.to(device), 0.013)
    ref = _reference_nll(y, y_hat, 0.013)
    torch.testing.assert_close(got.cpu(), ref, rtol=1e-6, atol=1e-9)


def test_censored_nll_far_tail_is_finite():
    # a clipped code predicted far on the wrong side: -log Phi(-50) ~ 1250, no inf
    got = censored_code_nll(torch.tensor([1.0]), torch.tensor([0.5]), 0.01)
    ref = -norm.logcdf((0.5 - 1 + 0.5 / 255) / 0.01)
    assert math.isfinite(float(got)) and abs(float(got) - ref) / ref < 1e-5


def test_censored_nll_gradcheck():
    y = torch.tensor([0.0, 0.3, 1.0, 0.8], dtype=torch.float64)
    y_hat = torch.tensor(
        [0.02, 0.31, 0.98, 0.7], dtype=torch.float64, requires_grad=True
    )
    sigma = torch.tensor(0.02, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, s: censored_code_nll(y, a, s), (y_hat, sigma)
    )


def test_censored_nll_bad_sigma():
    with pytest.raises(ValueError, match="sigma"):
        censored_code_nll(torch.zeros(2), torch.zeros(2), 0.0)
    with pytest.raises(TypeError, match="y"):
        censored_code_nll(torch.zeros(2, dtype=torch.long), torch.zeros(2), 0.1)


def test_estimate_code_noise_recovers_sigma(device, rng):
    b, n, c, h, w = 2, 3, 2, 37, 31
    ramp = torch.linspace(0.2, 0.7, w, device=device).expand(b, n, c, h, w)
    y = (ramp + 0.015 * torch.randn(b, n, c, h, w, generator=rng, device=device)).clamp(
        0, 1
    )
    est = estimate_code_noise(y, bit_depth=None)
    assert est.shape == (b, c)
    assert torch.allclose(est, torch.full_like(est, 0.015), rtol=0.08)


def test_estimate_code_noise_bad_size():
    with pytest.raises(ValueError, match="H, W >= 3"):
        estimate_code_noise(torch.zeros(1, 2, 1, 2, 5))


def test_stratified_sample_balances_strata_and_skips_clipped(device):
    n, c, h, w = 3, 1, 13, 11
    # left columns dark and valid, a clipped block, most pixels mid-grey
    y = torch.full((n, c, h, w), 0.5, device=device)
    y[:, :, :, :2] = 0.1
    y[:, :, :2, :] = 1.0  # saturated in every exposure: no information
    idx = stratified_pixel_sample(y, 20, generator=torch.Generator().manual_seed(0))
    assert idx.numel() == 20 and idx.unique().numel() == 20
    rows = idx // w
    cols = idx % w
    assert bool((rows >= 2).all())
    # the dark stratum (22 pixels of 121) gets half of the sample
    assert int((cols < 2).sum()) == 10


def test_stratified_sample_prefers_positions_without_clipped_codes(device):
    n, c, h, w = 3, 1, 13, 11
    # one brightness stratum (mean code 0.5): rows 0-5 unclipped, rows 6-12 with the
    # longest exposure clipped; and a darker stratum in column 0
    y = torch.full((n, c, h, w), 0.5, device=device)
    y[:, :, 6:, :] = torch.tensor([0.25, 0.25, 1.0], device=device).view(3, 1, 1, 1)
    y[:, :, :, 0] = 0.1
    idx = stratified_pixel_sample(y, 40, generator=torch.Generator().manual_seed(0))
    rows, cols = idx // w, idx % w
    # the dark stratum (13 positions) is taken whole, the other 27 are all unclipped
    assert int((cols == 0).sum()) == 13
    assert bool((rows[cols > 0] < 6).all()) and int((cols > 0).sum()) == 27
    # "none": the clipped positions compete at random
    idx = stratified_pixel_sample(
        y, 40, generator=torch.Generator().manual_seed(0), clip_priority="none"
    )
    rows, cols = idx // w, idx % w
    assert int(((rows >= 6) & (cols > 0)).sum()) > 5


def test_stratified_sample_global_clip_priority(device):
    n, c, h, w = 3, 2, 13, 11
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(n, c, h, w, generator=g) * 0.8 + 0.1).to(device)
    y[-1, 0, :6, :] = 1.0  # rows 0-5: the longest exposure clipped in channel 0
    y[-1, :, :3, :] = 1.0  # rows 0-2: clipped in both channels
    gen = torch.Generator().manual_seed(0)
    # 77 positions have no clipped code: a sample of 70 takes only those
    idx = stratified_pixel_sample(y, 70, generator=gen, clip_priority="global")
    assert idx.numel() == 70 and bool((idx // w >= 6).all())
    # 100 = the 77 unclipped, then 23 of the 33 with one clipped code (rows 3-5)
    idx = stratified_pixel_sample(y, 100, generator=gen, clip_priority="global")
    rows = idx // w
    assert int((rows >= 6).sum()) == 77
    assert int(((rows >= 3) & (rows < 6)).sum()) == 23
    with pytest.raises(ValueError, match="clip_priority"):
        stratified_pixel_sample(y, 10, clip_priority="first")


def test_stratified_sample_bad_count():
    with pytest.raises(ValueError, match="n_pixels"):
        stratified_pixel_sample(torch.zeros(2, 1, 3, 3), 0)


#: measured RMSE (codes 8..247, scale fitted) of the fit below: 0.0022; limit with margin
RMSE_LIMIT = 0.0035


def _pixel_codes(gamma, noise, n_pixels=3000, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([0.125, 0.25, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    radiance = torch.exp(
        torch.rand(1, n_pixels, 1, generator=g, dtype=torch.float64) * -5.0
    )
    clean = (radiance * t).clamp(max=1.0) ** (1.0 / gamma)
    noisy = clean + noise * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    return torch.round(noisy.clamp(0, 1) * 255) / 255, t


def test_fit_code_domain_recovers_gamma_under_noise():
    y, t = _pixel_codes(2.4, 0.01)
    res = fit_code_domain(y.float(), t.log().float())
    truth = torch.linspace(0, 1, 256, dtype=torch.float64) ** 2.4
    rmse = curve_rmse(res.curve.double(), truth[None], fit_scale=True)
    assert float(rmse) < RMSE_LIMIT
    assert abs(float(res.sigma[0]) - 0.01) < 0.002
    assert res.curve.shape == (1, 256) and float(res.curve[0, -1]) == 1.0
    assert bool((res.curve.diff(dim=1) >= 0).all())


def test_unflatten_top_predicts_the_same_codes(device):
    # a response that reaches 1 at v* = 0.8 and stays flat (linear in v below, so that the
    # resampled knots represent the stretched curve exactly), and the stretched one with the
    # radiances shifted by -2.2 log v*: identical codes for every pixel and exposure
    from deepinv_icrf.functional.codefit import _response_at, _unflatten_top

    k = 11
    v = torch.linspace(0, 1, k, dtype=torch.float64, device=device)
    knots = torch.stack([(v / 0.8).clamp(max=1.0), v**1.5])  # (2, K)
    g = torch.Generator().manual_seed(0)
    s = (torch.rand(2, 40, generator=g, dtype=torch.float64) * -4.0).to(device)
    lt = torch.tensor([-2.0, -1.0, 0.0], dtype=torch.float64, device=device)
    offsets = (torch.arange(2, device=device) * k).view(2, 1, 1)
    before, _, _, _ = _response_at(s.unsqueeze(-1) + lt, knots, offsets)
    new_knots, new_s = _unflatten_top(knots, s)
    after, _, _, _ = _response_at(new_s.unsqueeze(-1) + lt, new_knots, offsets)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-12)
    # channel 0 no longer flat before the end; channel 1 (no flat top) untouched
    assert float(new_knots[0, -2]) < 1.0
    torch.testing.assert_close(new_s[0], s[0] - 2.2 * math.log(0.8))
    torch.testing.assert_close(new_knots[1], knots[1])
    torch.testing.assert_close(new_s[1], s[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_code_domain_recovers_linear_camera(seed):
    # a linear camera clips where its response reaches 1: without the no-flat-top
    # convention the fit ended on a flat-topped response (ICRF about 0.8 x code, jump to 1
    # at the top code): RMSE 0.246 / 0.226 / 0.220 for seeds 0 / 1 / 2. With it: 0.005 /
    # 0.030 / 0.064 (the top of a hard-clipped curve stays weakly pinned).
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([0.25, 0.5, 1.0, 2.0, 4.0], dtype=torch.float64)
    radiance = torch.exp(
        torch.rand(1, 4000, 1, generator=g, dtype=torch.float64) * -5.0
    )
    clean = (radiance * t).clamp(max=1.0)
    noisy = clean + 0.01 * torch.randn(clean.shape, generator=g, dtype=torch.float64)
    y = torch.round(noisy.clamp(0, 1) * 255) / 255
    res = fit_code_domain(y.float(), t.log().float())
    truth = torch.linspace(0, 1, 256, dtype=torch.float64)
    assert float(curve_rmse(res.curve.double(), truth[None])) < 0.1
    assert float(res.response[0, -2]) < 1.0


def test_fit_code_domain_bad_inputs():
    y = torch.rand(1, 10, 3)
    with pytest.raises(ValueError, match="log_times"):
        fit_code_domain(y, torch.zeros(4))
    with pytest.raises(ValueError, match="n_knots"):
        fit_code_domain(y, torch.zeros(3), n_knots=2)
    with pytest.raises(ValueError, match="shape"):
        fit_code_domain(torch.rand(10, 3), torch.zeros(3))
    with pytest.raises(ValueError, match="init_curve"):
        fit_code_domain(y, torch.zeros(3), init_curve=torch.rand(2, 2, 2))


def _loss_setup(device, dtype=torch.float64):
    icrf = ICRF(channels=2, n_points=9, init="gamma", dtype=dtype, device=device)
    t = torch.tensor([0.5, 1.0, 2.0], dtype=dtype, device=device)
    physics = ExposureStack(t, response=icrf, device=device, dtype=dtype)
    g = torch.Generator(device).manual_seed(1)
    x = 0.05 + 0.4 * torch.rand(2, 2, 5, 3, generator=g, device=device, dtype=dtype)
    y = physics.A(x).detach() + 0.02 * torch.randn(
        2, 3, 2, 5, 3, generator=g, device=device, dtype=dtype
    )
    y = torch.round(y.clamp(0, 1) * 255) / 255
    return icrf, physics, x, y


def test_code_loss_matches_functional(device):
    icrf, physics, x, y = _loss_setup(device)
    got = CodeDomainLoss(sigma=0.02)(x_net=x, y=y, physics=physics, x=None, model=icrf)
    ref = censored_code_nll(y, physics.A(x), 0.02).flatten(1).mean(1)
    assert got.shape == (2,)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)


def test_code_loss_gradcheck_and_response_gradient(device):
    icrf, physics, x, y = _loss_setup(device)
    loss = CodeDomainLoss(sigma=0.02)
    xr = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda a: loss(x_net=a, y=y, physics=physics), (xr,), atol=1e-6
    )
    loss(x_net=x, y=y, physics=physics).sum().backward()
    grads = [p.grad for p in icrf.parameters()]
    assert all(gr is not None and bool(gr.abs().sum() > 0) for gr in grads)


def test_code_loss_estimates_sigma_when_not_given(device):
    icrf, physics, x, y = _loss_setup(device)
    got = CodeDomainLoss()(x_net=x, y=y, physics=physics)
    sigma = estimate_code_noise(y).clamp_min(1e-4).view(2, 1, 2, 1, 1)
    ref = censored_code_nll(y, physics.A(x), sigma).flatten(1).mean(1)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=0)


def test_code_loss_bad_options_and_shapes():
    with pytest.raises(ValueError, match="sigma"):
        CodeDomainLoss(sigma=-1.0)
    with pytest.raises(ValueError, match="bit_depth"):
        CodeDomainLoss(bit_depth=0)
    icrf, physics, x, y = _loss_setup("cpu")
    with pytest.raises(ValueError, match="x_net"):
        CodeDomainLoss(sigma=0.1)(x_net=x[0], y=y, physics=physics)
