from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.special import logsumexp

from deepinv_icrf.functional import (
    mixture_mean,
    mixture_std,
    propel_log_overlap,
    propel_log_self_overlap,
    propel_log_t1,
    propel_log_t2,
    propel_loss,
    propel_loss_pixelwise,
    split_mixture,
    std_from_raw,
)
from deepinv_icrf.loss import PROPELLoss

EPS = 7.0 / 3 - 4.0 / 3 - 1  # the official code's clamp


# ----------------------------------------------------------------------------------------
# Independent references, one sample at a time, straight loops in numpy float64.
# ----------------------------------------------------------------------------------------
def official_reference(mu, std, x, sigma, target_dims=1):
    r"""The official formulas: variances ``std**2`` and ``sigma**2``, densities multiplied in
    linear space, eps clamps; ``H(P_gt)`` in ``target_dims`` dimensions (1 as in the official
    code, D for the integrated squared error)."""
    k, d = mu.shape
    var, var_gt = std**2, sigma**2

    def g(m1, v1, m2, v2):
        s = v1 + v2
        a = 1.0 / max(math.sqrt(2 * math.pi) ** d * math.sqrt(np.prod(s)), EPS)
        b = sum(
            (2 * m1[i] * m2[i] - m1[i] ** 2 - m2[i] ** 2) / max(2 * s[i], EPS)
            for i in range(d)
        )
        return a * math.exp(b)

    def h(v):
        return 1.0 / max(
            (2 * math.sqrt(math.pi)) ** len(v) * math.sqrt(np.prod(v)), EPS
        )

    gt = np.full(d, var_gt)
    t1 = sum(2.0 / k * g(x, gt, mu[i], var[i]) for i in range(k))
    t2 = h(np.full(target_dims, var_gt))
    t2 += sum(h(var[i]) for i in range(k)) / k**2
    t2 += (
        2.0
        / k**2
        * sum(
            g(mu[i], var[i], mu[j], var[j]) for i in range(k) for j in range(i + 1, k)
        )
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.log10(t2) - np.log10(t1))


def logspace_reference(mu, std, x, sigma):
    r"""The integrated-squared-error PROPEL loss from explicit log-terms and logsumexp."""
    k, d = mu.shape
    sig = np.broadcast_to(np.asarray(sigma, dtype=np.float64), (d,))

    def log_g(m1, v1, m2, v2):
        s = v1 + v2
        return -0.5 * float(np.sum(np.log(2 * math.pi * s) + (m1 - m2) ** 2 / s))

    def log_h(v):
        return -0.5 * float(np.sum(np.log(4 * math.pi * v)))

    var = std**2
    log_t1 = math.log(2.0 / k) + logsumexp(
        [log_g(x, sig**2, mu[i], var[i]) for i in range(k)]
    )
    terms = [log_h(sig**2)]
    terms += [log_h(var[i]) - 2 * math.log(k) for i in range(k)]
    terms += [
        math.log(2.0 / k**2) + log_g(mu[i], var[i], mu[j], var[j])
        for i in range(k)
        for j in range(i + 1, k)
    ]
    return (logsumexp(terms) - log_t1) / math.log(10)


def batch_reference(fn, mu, std, x, sigma, **kwargs):
    mu, std, x = (t.detach().cpu().double().numpy() for t in (mu, std, x))
    return np.array([fn(mu[b], std[b], x[b], sigma, **kwargs) for b in range(len(mu))])


def random_mixture(
    b, k, d, device, rng, dtype=torch.float64, spread=1.0, std=(0.05, 0.5)
):
    mu = spread * torch.randn(b, k, d, generator=rng, device=device, dtype=dtype)
    stds = std[0] + (std[1] - std[0]) * torch.rand(
        b, k, d, generator=rng, device=device, dtype=dtype
    )
    x = spread * torch.randn(b, d, generator=rng, device=device, dtype=dtype)
    return mu, stds, x


# ----------------------------------------------------------------------------------------
# Parity with the official formulas
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,d", [(2, 1), (3, 2), (4, 3), (6, 5), (8, 1)])
def test_official_convention_matches_official_formulas(device, rng, k, d):
    mu, stds, x = random_mixture(6, k, d, device, rng)
    sigma = 0.3
    ours = propel_loss(mu, stds, x, sigma, convention="official")
    ref = batch_reference(official_reference, mu, stds, x, sigma)
    assert np.isfinite(ref).all()
    np.testing.assert_allclose(ours.cpu().numpy(), ref, rtol=1e-6)


@pytest.mark.parametrize("k,d", [(1, 1), (2, 1), (3, 2), (5, 4), (7, 3)])
def test_standard_convention_matches_squared_error_form(device, rng, k, d):
    mu, stds, x = random_mixture(6, k, d, device, rng)
    ours = propel_loss(mu, stds, x, 0.2)
    ref = batch_reference(official_reference, mu, stds, x, 0.2, target_dims=d)
    np.testing.assert_allclose(ours.cpu().numpy(), ref, rtol=1e-6)


def test_conventions_agree_in_one_dimension(device, rng):
    mu, stds, x = random_mixture(5, 4, 1, device, rng)
    standard = propel_loss(mu, stds, x, 0.1)
    official = propel_loss(mu, stds, x, 0.1, convention="official")
    torch.testing.assert_close(standard, official, rtol=1e-12, atol=0)


def test_official_convention_can_go_negative_in_several_dimensions(device):
    # perfect fit in D = 3: the official one-dimensional H(P_gt) makes T2 < T1
    x = torch.zeros(1, 3, device=device, dtype=torch.float64)
    mu = x[:, None].expand(1, 2, 3)
    stds = torch.full((1, 2, 3), 0.1, device=device, dtype=torch.float64)
    official = propel_loss(mu, stds, x, 0.1, convention="official")
    ref = official_reference(
        mu[0].cpu().numpy(), stds[0].double().cpu().numpy(), x[0].cpu().numpy(), 0.1
    )
    assert official.item() < 0
    np.testing.assert_allclose(official.item(), ref, rtol=1e-6)
    assert propel_loss(mu, stds, x, 0.1).item() == 0.0


def test_module_official_layout_reproduces_official_numbers(device, rng):
    mu, stds, x = random_mixture(4, 3, 2, device, rng)
    x_net = torch.cat(
        [mu, -stds], -1
    )  # the official code squares the stds: sign irrelevant
    loss = PROPELLoss(sigma=0.25, std_activation=None, convention="official").to(device)
    ref = batch_reference(official_reference, mu, stds, x, 0.25)
    out = loss(x_net=x_net, x=x, y=None, physics=None, model=None, epoch=0)
    assert out.shape == (4,)
    np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-6)


def test_log_terms_match_references(device, rng):
    mu, stds, x = random_mixture(3, 4, 2, device, rng)
    sigma = 0.4
    m, s, t = (v.cpu().numpy() for v in (mu, stds, x))
    for b in range(3):
        log_g_gt = [
            np.sum(-0.5 * np.log(2 * np.pi * (sigma**2 + s[b, i] ** 2)))
            - np.sum((t[b] - m[b, i]) ** 2 / (2 * (sigma**2 + s[b, i] ** 2)))
            for i in range(4)
        ]
        t1 = 2 / 4 * np.exp(log_g_gt).sum()
        assert math.isclose(
            propel_log_t1(mu, stds, x, sigma)[b].item(), math.log(t1), rel_tol=1e-9
        )
        h = lambda v: np.prod(1 / np.sqrt(4 * np.pi * v))  # noqa: E731
        g = lambda i, j: np.prod(  # noqa: E731
            np.exp(-((m[b, i] - m[b, j]) ** 2) / (2 * (s[b, i] ** 2 + s[b, j] ** 2)))
            / np.sqrt(2 * np.pi * (s[b, i] ** 2 + s[b, j] ** 2))
        )
        t2 = (
            h(np.full(2, sigma**2))
            + sum(g(i, j) for i in range(4) for j in range(4)) / 16
        )
        assert math.isclose(
            propel_log_t2(mu, stds, sigma)[b].item(), math.log(t2), rel_tol=1e-9
        )
        t2_official = t2 - h(np.full(2, sigma**2)) + h(np.full(1, sigma**2))
        got = propel_log_t2(mu, stds, sigma, convention="official")[b].item()
        assert math.isclose(got, math.log(t2_official), rel_tol=1e-9)


def test_overlap_and_self_overlap_closed_form(device, rng):
    m1, s1, m2 = (
        torch.randn(5, 3, generator=rng, device=device, dtype=torch.float64)
        for _ in range(3)
    )
    s2 = 0.2 + torch.rand(5, 3, generator=rng, device=device, dtype=torch.float64)
    var = s1.square() + s2.square()
    expected = (-0.5 * (torch.log(2 * math.pi * var) + (m1 - m2).square() / var)).sum(
        -1
    )
    torch.testing.assert_close(
        propel_log_overlap(m1, s1, m2, s2), expected, rtol=1e-12, atol=1e-12
    )
    torch.testing.assert_close(
        propel_log_self_overlap(s2),
        (-0.5 * torch.log(4 * math.pi * s2.square())).sum(-1),
    )
    # H(P) = G(P, P)
    torch.testing.assert_close(
        propel_log_overlap(m2, s2, m2, s2), propel_log_self_overlap(s2)
    )


# ----------------------------------------------------------------------------------------
# Stability where the official formulation breaks
# ----------------------------------------------------------------------------------------
EXTREMES = [
    # name, K, D, spread, shift, std, sigma
    ("distant target", 4, 2, 1.0, 1e3, 0.1, 0.1),
    ("very distant target", 3, 3, 1.0, 1e5, 0.1, 0.1),
    ("tiny sigma", 4, 3, 1.0, 0.0, 0.1, 1e-7),
    ("huge sigma", 4, 3, 1.0, 0.0, 0.1, 1e7),
    ("tiny stds", 4, 3, 1.0, 0.0, 1e-6, 0.1),
    ("huge stds", 4, 3, 1.0, 0.0, 1e5, 0.1),
    ("D=64", 4, 64, 1.0, 0.0, 0.1, 0.1),
    ("D=64 small scales", 4, 64, 0.01, 0.0, 0.01, 0.01),
    ("K=64", 64, 3, 1.0, 0.0, 0.1, 0.1),
    ("K=64 D=64", 64, 64, 1.0, 2.0, 0.1, 0.1),
]


def extreme_case(device, rng, k, d, spread, shift, std, dtype=torch.float64):
    mu = spread * torch.randn(2, k, d, generator=rng, device=device, dtype=dtype)
    stds = std * (0.5 + torch.rand(2, k, d, generator=rng, device=device, dtype=dtype))
    x = spread * torch.randn(2, d, generator=rng, device=device, dtype=dtype) + shift
    return mu, stds, x


def test_official_formulas_break_on_extremes(device, rng):
    # the set is meaningful: the official formulas give inf there even in float64
    broken = set()
    for name, k, d, spread, shift, std, sigma in EXTREMES:
        mu, stds, x = extreme_case(device, rng, k, d, spread, shift, std)
        if not np.isfinite(
            batch_reference(official_reference, mu, stds, x, sigma)
        ).all():
            broken.add(name)
    assert broken >= {"distant target", "very distant target", "D=64", "K=64 D=64"}


@pytest.mark.parametrize("case", EXTREMES, ids=[c[0] for c in EXTREMES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_extremes_finite_loss_and_gradient(device, rng, case, dtype):
    _, k, d, spread, shift, std, sigma = case
    mu, stds, x = extreme_case(device, rng, k, d, spread, shift, std, dtype)
    mu.requires_grad_(True)
    stds.requires_grad_(True)
    loss = propel_loss(mu, stds, x, sigma)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    assert torch.isfinite(mu.grad).all() and torch.isfinite(stds.grad).all()
    ref = batch_reference(logspace_reference, mu, stds, x, sigma)
    tol = 1e-9 if dtype == torch.float64 else 2e-3
    np.testing.assert_allclose(
        loss.detach().double().cpu().numpy(), ref, rtol=tol, atol=tol
    )


def test_distant_target_gradient_points_to_target(device):
    x = torch.full((1, 1), 1e4, device=device)
    mu = torch.zeros(1, 2, 1, device=device, requires_grad=True)
    propel_loss(mu, torch.full((1, 2, 1), 0.1, device=device), x, 0.1).sum().backward()
    assert (mu.grad < 0).all()  # gradient descent moves the means toward the target


# ----------------------------------------------------------------------------------------
# Laws (hypothesis)
# ----------------------------------------------------------------------------------------
mixtures = st.tuples(
    st.integers(1, 5),
    st.integers(1, 4),
    st.integers(0, 2**31 - 1),
    st.floats(0.01, 10.0),
    st.floats(0.1, 5.0),
)


@settings(max_examples=40, deadline=None)
@given(mixtures)
def test_loss_is_nonnegative(params):
    k, d, seed, sigma, spread = params
    gen = torch.Generator().manual_seed(seed)
    mu = spread * torch.randn(3, k, d, generator=gen, dtype=torch.float64)
    stds = (
        torch.exp(2 * torch.randn(3, k, d, generator=gen, dtype=torch.float64)) * sigma
    )
    x = spread * torch.randn(3, d, generator=gen, dtype=torch.float64)
    assert (propel_loss(mu, stds, x, sigma) >= 0).all()


@settings(max_examples=40, deadline=None)
@given(mixtures, st.sampled_from([torch.float32, torch.float64]))
def test_loss_zero_for_perfect_match(params, dtype):
    k, d, seed, sigma, spread = params
    gen = torch.Generator().manual_seed(seed)
    x = spread * torch.randn(3, d, generator=gen, dtype=dtype)
    mu = x[:, None].expand(3, k, d)
    stds = torch.full((3, k, d), sigma, dtype=dtype)
    assert (propel_loss(mu, stds, x, sigma) == 0).all()


@settings(max_examples=40, deadline=None)
@given(
    mixtures,
    st.floats(0.1, 3.0),
    st.sampled_from(["mean", "std_up", "std_down"]),
)
def test_loss_positive_when_not_perfect(params, delta, which):
    k, d, seed, sigma, spread = params
    gen = torch.Generator().manual_seed(seed)
    x = spread * torch.randn(2, d, generator=gen, dtype=torch.float64)
    mu = x[:, None].expand(2, k, d).clone()
    stds = torch.full((2, k, d), sigma, dtype=torch.float64)
    comp, dim = seed % k, seed % d
    if which == "mean":
        mu[:, comp, dim] += delta * sigma
    elif which == "std_up":
        stds[:, comp, dim] *= 1 + delta
    else:
        stds[:, comp, dim] /= 1 + delta
    assert (propel_loss(mu, stds, x, sigma) > 0).all()


# ----------------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("k,d", [(1, 2), (2, 1), (4, 3)])
@pytest.mark.parametrize("convention", ["standard", "official"])
def test_gradcheck_functional(device, rng, k, d, convention):
    mu, stds, x = random_mixture(2, k, d, device, rng, std=(0.1, 0.4))
    sigma = torch.tensor(0.3, device=device, dtype=torch.float64)
    inputs = (mu.requires_grad_(), stds.requires_grad_(), x.requires_grad_())
    assert torch.autograd.gradcheck(
        lambda m, s, t: propel_loss(m, s, t, sigma, convention), inputs
    )


def test_gradcheck_log_terms(device, rng):
    mu, stds, x = random_mixture(2, 3, 2, device, rng, std=(0.1, 0.4))
    inputs = (mu.requires_grad_(), stds.requires_grad_(), x.requires_grad_())
    assert torch.autograd.gradcheck(lambda m, s, t: propel_log_t1(m, s, t, 0.2), inputs)
    assert torch.autograd.gradcheck(lambda m, s: propel_log_t2(m, s, 0.2), inputs[:2])
    assert torch.autograd.gradcheck(
        lambda m1, s1, m2: propel_log_overlap(m1[:, 0], s1[:, 0], m2, s1[:, 1]), inputs
    )


@pytest.mark.parametrize("joint", [False, True])
def test_gradcheck_module_image_layout(device, rng, joint):
    x_net = torch.randn(
        2, 3, 2, 2, 3, 2, generator=rng, device=device, dtype=torch.float64
    )
    x = torch.randn(2, 2, 3, 2, generator=rng, device=device, dtype=torch.float64)
    loss = PROPELLoss(sigma=0.5, joint_channels=joint).to(device)
    assert torch.autograd.gradcheck(
        lambda a: loss(x_net=a, x=x), (x_net.requires_grad_(),)
    )


def test_gradcheck_module_official_layout_softplus(device, rng):
    x_net = torch.randn(3, 2, 4, generator=rng, device=device, dtype=torch.float64)
    x = torch.randn(3, 2, generator=rng, device=device, dtype=torch.float64)
    loss = PROPELLoss(sigma=torch.tensor([0.5, 1.0]), std_activation="exp").to(device)
    assert torch.autograd.gradcheck(
        lambda a: loss(x_net=a, x=x), (x_net.requires_grad_(),)
    )


# ----------------------------------------------------------------------------------------
# Module: layouts, reductions, buffers, dtypes, mixture helpers
# ----------------------------------------------------------------------------------------
def test_image_layout_equals_per_pixel_problems(device, rng):
    b, k, c, h, w = 2, 3, 2, 13, 11
    x_net = torch.randn(
        b, k, 2, c, h, w, generator=rng, device=device, dtype=torch.float64
    )
    x = torch.randn(b, c, h, w, generator=rng, device=device, dtype=torch.float64)
    loss = PROPELLoss(sigma=0.3, reduction="none").to(device)
    means = x_net[:, :, 0].permute(0, 2, 3, 4, 1).reshape(-1, k, 1)
    stds = (
        std_from_raw(x_net[:, :, 1], "softplus", 1e-6)
        .permute(0, 2, 3, 4, 1)
        .reshape(-1, k, 1)
    )
    expected = propel_loss(means, stds, x.reshape(-1, 1), 0.3).reshape(b, c, h, w)
    torch.testing.assert_close(loss(x_net=x_net, x=x), expected, rtol=1e-12, atol=1e-12)
    # joint channels: one C-dimensional mixture per pixel
    joint = PROPELLoss(sigma=0.3, joint_channels=True, reduction="none").to(device)
    means = x_net[:, :, 0].permute(0, 3, 4, 1, 2).reshape(-1, k, c)
    stds = (
        std_from_raw(x_net[:, :, 1], "softplus", 1e-6)
        .permute(0, 3, 4, 1, 2)
        .reshape(-1, k, c)
    )
    expected = propel_loss(means, stds, x.permute(0, 2, 3, 1).reshape(-1, c), 0.3)
    torch.testing.assert_close(
        joint(x_net=x_net, x=x), expected.reshape(b, h, w), rtol=1e-12, atol=1e-12
    )


def test_reductions_and_channel_stacked_layout(device, rng):
    b, k, c, h, w = 2, 2, 3, 13, 11
    x_net = torch.randn(b, k, 2, c, h, w, generator=rng, device=device)
    x = torch.rand(b, c, h, w, generator=rng, device=device)
    per_pixel = PROPELLoss(reduction="none")(x_net=x_net, x=x)
    assert per_pixel.shape == (b, c, h, w)
    torch.testing.assert_close(
        PROPELLoss()(x_net=x_net, x=x), per_pixel.mean((1, 2, 3))
    )
    torch.testing.assert_close(
        PROPELLoss(reduction="sum")(x_net=x_net, x=x), per_pixel.sum((1, 2, 3))
    )
    stacked = x_net.reshape(b, k * 2 * c, h, w)  # a deepinv network's widened head
    torch.testing.assert_close(
        PROPELLoss(n_components=k)(x_net=stacked, x=x), per_pixel.mean((1, 2, 3))
    )


def test_per_channel_sigma(device, rng):
    x_net = torch.randn(
        2, 2, 2, 3, 5, 4, generator=rng, device=device, dtype=torch.float64
    )
    x = torch.randn(2, 3, 5, 4, generator=rng, device=device, dtype=torch.float64)
    sigmas = torch.tensor([0.1, 0.3, 0.7], dtype=torch.float64)
    out = PROPELLoss(sigma=sigmas, reduction="none").to(device)(x_net=x_net, x=x)
    for ch in range(3):
        single = PROPELLoss(sigma=float(sigmas[ch]), reduction="none")(
            x_net=x_net[:, :, :, ch : ch + 1], x=x[:, ch : ch + 1]
        )
        torch.testing.assert_close(out[:, ch : ch + 1], single, rtol=1e-12, atol=1e-12)


def test_sigma_is_a_buffer_and_moves(device):
    loss = PROPELLoss(sigma=0.2)
    assert "sigma" in dict(loss.named_buffers())
    assert "sigma" in loss.state_dict()
    loss = loss.to(device=device, dtype=torch.float64)
    assert loss.sigma.device.type == device.type and loss.sigma.dtype == torch.float64


def test_dtypes(device, rng):
    x_net = torch.randn(3, 2, 4, generator=rng, device=device)
    x = torch.randn(3, 2, generator=rng, device=device)
    loss = PROPELLoss().to(device)
    assert loss(x_net=x_net.half(), x=x.half()).dtype == torch.float32
    assert loss(x_net=x_net.bfloat16(), x=x).dtype == torch.float32
    assert loss(x_net=x_net.double(), x=x).dtype == torch.float64


def test_mixture_mean_and_std_closed_form(device, rng):
    x_net = torch.randn(
        2, 4, 2, 3, 5, 7, generator=rng, device=device, dtype=torch.float64
    )
    means = x_net[:, :, 0].cpu().numpy()
    stds = np.log1p(np.exp(x_net[:, :, 1].cpu().numpy())) + 1e-6
    ref_mean = means.mean(1)
    ref_std = np.sqrt((stds**2 + means**2).mean(1) - ref_mean**2)
    loss = PROPELLoss()
    np.testing.assert_allclose(loss.mean(x_net).cpu().numpy(), ref_mean, rtol=1e-12)
    np.testing.assert_allclose(loss.std(x_net).cpu().numpy(), ref_std, rtol=1e-9)
    stacked = x_net.reshape(2, 4 * 2 * 3, 5, 7)
    torch.testing.assert_close(mixture_mean(stacked, 4), loss.mean(x_net))
    torch.testing.assert_close(mixture_std(stacked, n_components=4), loss.std(x_net))
    two = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]], device=device)
    assert mixture_std(two, std_activation=None).item() == 1.0


def test_std_from_raw_mappings(device):
    raw = torch.tensor([-30.0, 0.0, 2.0], device=device, dtype=torch.float64)
    np.testing.assert_allclose(
        std_from_raw(raw).cpu().numpy(),
        np.log1p(np.exp(raw.cpu().numpy())) + 1e-6,
        rtol=1e-12,
    )
    np.testing.assert_allclose(
        std_from_raw(raw, "exp", 0.0).cpu().numpy(),
        np.exp(raw.cpu().numpy()),
        rtol=1e-12,
    )
    assert std_from_raw(raw, None, 0.0) is raw
    torch.testing.assert_close(std_from_raw(raw, None), raw.abs().clamp_min(1e-6))
    assert (std_from_raw(torch.tensor([-1e4]), "softplus") > 0).all()


def test_pixelwise_function_matches_module(device, rng):
    means = torch.randn(
        2, 3, 2, 5, 4, generator=rng, device=device, dtype=torch.float64
    )
    stds = 0.1 + torch.rand(
        2, 3, 2, 5, 4, generator=rng, device=device, dtype=torch.float64
    )
    x = torch.randn(2, 2, 5, 4, generator=rng, device=device, dtype=torch.float64)
    out = propel_loss_pixelwise(means, stds, x, 0.2)
    assert out.shape == (2, 5, 4)
    flat = propel_loss(
        means.permute(0, 3, 4, 1, 2).reshape(-1, 3, 2),
        stds.permute(0, 3, 4, 1, 2).reshape(-1, 3, 2),
        x.permute(0, 2, 3, 1).reshape(-1, 2),
        0.2,
    )
    torch.testing.assert_close(out, flat.reshape(2, 5, 4), rtol=1e-12, atol=1e-12)


def test_any_number_of_batch_dims(device, rng):
    mu, stds, x = random_mixture(12, 3, 2, device, rng)
    flat = propel_loss(mu, stds, x, 0.2)
    shaped = propel_loss(
        mu.reshape(3, 4, 3, 2), stds.reshape(3, 4, 3, 2), x.reshape(3, 4, 2), 0.2
    )
    assert shaped.shape == (3, 4)
    torch.testing.assert_close(shaped.reshape(-1), flat)


def test_cached_indices_survive_inference_mode(device, rng):
    mu, stds, x = random_mixture(2, 11, 2, device, rng)
    with torch.inference_mode():
        first = propel_loss(mu, stds, x, 0.2)
    mu.requires_grad_(True)
    again = propel_loss(mu, stds, x, 0.2)
    again.sum().backward()
    torch.testing.assert_close(again.detach(), first)
    assert torch.isfinite(mu.grad).all()


# ----------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------
def test_bad_options_raise():
    with pytest.raises(ValueError, match="convention"):
        PROPELLoss(convention="paper")
    with pytest.raises(ValueError, match="std_activation"):
        PROPELLoss(std_activation="relu")
    with pytest.raises(ValueError, match="reduction"):
        PROPELLoss(reduction="max")
    with pytest.raises(ValueError, match="sigma"):
        PROPELLoss(sigma=-0.1)
    with pytest.raises(TypeError, match="sigma"):
        PROPELLoss(sigma="0.1")
    with pytest.raises(ValueError, match="min_std"):
        PROPELLoss(min_std=-1.0)
    with pytest.raises(ValueError, match="n_components"):
        PROPELLoss(n_components=0)
    with pytest.raises(ValueError, match="joint_channels"):
        PROPELLoss(joint_channels="yes")


def test_bad_shapes_raise(device):
    loss = PROPELLoss()
    with pytest.raises(ValueError, match="even last"):
        loss(
            x_net=torch.zeros(2, 3, 5, device=device),
            x=torch.zeros(2, 2, device=device),
        )
    with pytest.raises(ValueError, match="target"):
        loss(
            x_net=torch.zeros(2, 3, 4, device=device),
            x=torch.zeros(2, 3, device=device),
        )
    with pytest.raises(ValueError, match="n_components"):
        loss(
            x_net=torch.zeros(2, 12, 5, 5, device=device),
            x=torch.zeros(2, 3, 5, 5, device=device),
        )
    with pytest.raises(ValueError, match="size 2 at dimension 2"):
        loss(
            x_net=torch.zeros(2, 3, 3, 1, 5, 5, device=device),
            x=torch.zeros(2, 1, 5, 5, device=device),
        )
    with pytest.raises(ValueError, match="`x` to have shape"):
        loss(
            x_net=torch.zeros(2, 3, 2, 1, 5, 5, device=device),
            x=torch.zeros(2, 1, 5, 4, device=device),
        )
    with pytest.raises(ValueError, match="ground truth|target `x`"):
        loss(x_net=torch.zeros(2, 3, 4, device=device), x=None)
    with pytest.raises(ValueError, match="stds"):
        propel_loss(torch.zeros(2, 3, 2), torch.ones(2, 3, 1), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="sigma"):
        propel_loss(
            torch.zeros(2, 3, 2), torch.ones(2, 3, 2), torch.zeros(2, 2), torch.ones(3)
        )
    with pytest.raises(ValueError, match="official"):
        propel_loss(
            torch.zeros(2, 3, 2),
            torch.ones(2, 3, 2),
            torch.zeros(2, 2),
            torch.ones(2),
            "official",
        )
    with pytest.raises(TypeError, match="floating-point"):
        propel_loss(
            torch.zeros(2, 3, 2, dtype=torch.long),
            torch.ones(2, 3, 2),
            torch.zeros(2, 2),
        )
    with pytest.raises(ValueError, match="n_components"):
        split_mixture(torch.zeros(2, 4, 2, 1, 3, 3), n_components=3)
