from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from deepinv_icrf.functional import (
    aggregate_pairs,
    exposure_pairs,
    gaussian_value_weights,
    pair_value_weights,
    pixelwise_linearity,
    propagate_std,
    radiometric_linearity,
    valid_pixel_mask,
    weighted_spatial_mean,
    weighted_spatial_mean_std,
)

LOWER, UPPER = 1 / 255, 254 / 255


# --------------------------------------------------------------------------------------
# Independent reference (clair-torch style: one scene at a time, times sorted, loops)
# --------------------------------------------------------------------------------------
def ref_sorted_pairs(
    times: np.ndarray, threshold: float
) -> list[tuple[int, int, float]]:
    """Valid pairs of one scene as (original index i, original index j, t_i / t_j)."""
    order = np.argsort(times, kind="stable")
    ts = times[order]
    pairs = []
    for a in range(len(ts)):
        for b in range(a + 1, len(ts)):
            if ts[a] < ts[b] and ts[a] / ts[b] >= threshold:
                pairs.append((int(order[a]), int(order[b]), ts[a] / ts[b]))
    return pairs


def ref_gauss(v: np.ndarray, scale: float = 10.0) -> np.ndarray:
    return np.exp(-scale * (v - 0.5) ** 2)


def ref_pixel(xi, xj, r, si=None, sj=None, relative=True):
    if relative:
        e = r * xj + 1e-6
        d = np.abs((xi - r * xj) / e)
    else:
        d = np.abs(xi - r * xj)
    if si is None:
        return d, None
    if relative:
        sig = np.sqrt(
            (si / e) ** 2 + (xi * sj / (e * np.maximum(xj, 1e-6))) ** 2 + 1e-6
        )
    else:
        sig = np.sqrt(si**2 + (r * sj) ** 2)
    return d, sig


def ref_linearity(
    y,
    x,
    times,
    x_std=None,
    threshold=0.1,
    lower=LOWER,
    upper=UPPER,
    relative=True,
    use_unc=True,
    scale=10.0,
):
    """(B, C) linearity, computed scene by scene, pair by pair, channel by channel."""
    y, x = np.asarray(y, np.float64), np.asarray(x, np.float64)
    bsz, _, chans = y.shape[:3]
    times = np.broadcast_to(np.asarray(times, np.float64), (bsz, y.shape[1]))
    out = np.zeros((bsz, chans))
    for b in range(bsz):
        for i, j, r in ref_sorted_pairs(times[b], threshold):
            for c in range(chans):
                yi, yj = y[b, i, c], y[b, j, c]
                valid = (yi >= lower) & (yi <= upper) & (yj >= lower) & (yj <= upper)
                si = sj = None
                if x_std is not None:
                    si, sj = x_std[b, i, c], x_std[b, j, c]
                d, sig = ref_pixel(x[b, i, c], x[b, j, c], r, si, sj, relative)
                w = ref_gauss(yi, scale) + ref_gauss(yj, scale)
                if sig is not None and use_unc:
                    w = w + 1.0 / (sig + 1e-6)
                den = max(w[valid].sum(), 1e-8)
                m = (w[valid] * d[valid]).sum() / den
                out[b, c] += m**2
    return np.sqrt(out)


def make_batch(dtype=torch.float64, device="cpu", h=13, w=11, seed=0):
    """Three scenes, 4 exposures each, exercising every corner of the pair logic."""
    gen = np.random.default_rng(seed)
    times = np.array(
        [
            [0.5, 4.0, 1.0, 2.0],  # unsorted
            [1.0, 0.05, 0.3, 2.0],  # pairs (0.05, 1) and (0.05, 2) below the threshold
            [1.0, 1.0, 2.0, 0.5],  # duplicate times
        ]
    )
    bsz, c = 3, 2
    radiance = gen.uniform(0.01, 0.4, size=(bsz, 1, c, h, w))
    x_true = radiance * times[:, :, None, None, None]
    y = np.clip(x_true, 0, 1) ** (1 / 2.2)
    y = np.round(y * 255) / 255
    y[0, 1] = 1.0  # the longest exposure of scene 0 is fully saturated: no valid pixel
    x = y**2.0 + gen.uniform(0, 0.01, size=y.shape)  # an imperfect ICRF
    x_std = gen.uniform(0.001, 0.02, size=y.shape)
    t = lambda a: torch.tensor(a, dtype=dtype, device=device)  # noqa: E731
    return t(y), t(x), t(times), t(x_std)


def np_(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


# --------------------------------------------------------------------------------------
# exposure_pairs
# --------------------------------------------------------------------------------------
def test_exposure_pairs_match_sorted_reference(device):
    _, _, times, _ = make_batch(device=device)
    i_idx, j_idx, ratio, ok = exposure_pairs(times)
    assert i_idx.shape == j_idx.shape == ratio.shape == ok.shape == (3, 6)
    for b in range(3):
        got = {
            (int(i), int(j)): float(r)
            for i, j, r, v in zip(i_idx[b], j_idx[b], ratio[b], ok[b], strict=True)
            if v
        }
        want = {(i, j): r for i, j, r in ref_sorted_pairs(np_(times[b]), 0.1)}
        assert got.keys() == want.keys()
        for key, r in want.items():
            assert got[key] == pytest.approx(r, rel=1e-12)
    # scene 1 rejects exactly the two pairs below the ratio threshold, scene 2 the tie
    assert ok.sum(dim=1).tolist() == [6, 4, 5]


def test_exposure_pairs_order_and_ratio_of_every_pair():
    times = torch.tensor([[3.0, 1.0, 2.0, 2.0]], dtype=torch.float64)
    i_idx, j_idx, ratio, ok = exposure_pairs(times, threshold=0.0)
    ti, tj = times[0, i_idx[0]], times[0, j_idx[0]]
    assert bool((ti <= tj).all())
    torch.testing.assert_close(ratio[0], ti / tj)
    assert ok[0].tolist() == (ti < tj).tolist()
    assert {
        frozenset((int(a), int(b))) for a, b in zip(i_idx[0], j_idx[0], strict=True)
    } == {frozenset(p) for p in [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]}


def test_exposure_pairs_shared_times_are_one_row():
    i_idx, j_idx, ratio, ok = exposure_pairs(torch.tensor([1.0, 0.25, 0.02]))
    assert i_idx.shape == (1, 3)
    assert ok.tolist() == [[True, False, False]]
    assert ratio[0, 0].item() == 0.25


def test_exposure_pairs_threshold_is_inclusive():
    _, _, ratio, ok = exposure_pairs(torch.tensor([10.0, 1.0], dtype=torch.float64))
    assert ratio.item() == 0.1 and ok.item()
    _, _, _, ok = exposure_pairs(torch.tensor([10.0, 0.999], dtype=torch.float64))
    assert not ok.item()


def test_exposure_pairs_rejects_bad_threshold():
    with pytest.raises(ValueError, match="threshold"):
        exposure_pairs(torch.ones(3), threshold=1.5)


# --------------------------------------------------------------------------------------
# masks, weights, std propagation
# --------------------------------------------------------------------------------------
def test_valid_pixel_mask_bounds_inclusive(device):
    codes = (
        torch.tensor([0.0, 1.0, 2.0, 128.0, 254.0, 255.0], dtype=torch.float64) / 255
    )
    y = torch.stack([codes, torch.full_like(codes, 0.5)]).view(1, 2, 1, 1, 6).to(device)
    mask = valid_pixel_mask(
        y, torch.tensor([[0]], device=device), torch.tensor([[1]], device=device)
    )
    assert mask.shape == (1, 1, 1, 1, 6)
    assert mask.flatten().tolist() == [False, True, True, True, True, False]


def test_valid_pixel_mask_matches_loop(device):
    y, _, times, _ = make_batch(device=device)
    i_idx, j_idx, _, _ = exposure_pairs(times)
    mask = valid_pixel_mask(y, i_idx, j_idx, lower=0.1, upper=0.8)
    yn = np_(y)
    for b in range(3):
        for p in range(6):
            yi, yj = yn[b, int(i_idx[b, p])], yn[b, int(j_idx[b, p])]
            want = (yi >= 0.1) & (yi <= 0.8) & (yj >= 0.1) & (yj <= 0.8)
            assert np.array_equal(mask[b, p].cpu().numpy(), want)


def test_gaussian_and_pair_value_weights_match_numpy(device):
    y, _, times, _ = make_batch(device=device)
    torch.testing.assert_close(
        np_(gaussian_value_weights(y, scale=7.0)),
        ref_gauss(np_(y), 7.0),
        rtol=1e-12,
        atol=0,
    )
    i_idx, j_idx, _, _ = exposure_pairs(times)
    w = pair_value_weights(y, i_idx, j_idx, scale=7.0)
    yn = np_(y)
    for b in range(3):
        for p in range(6):
            want = ref_gauss(yn[b, int(i_idx[b, p])], 7.0) + ref_gauss(
                yn[b, int(j_idx[b, p])], 7.0
            )
            np.testing.assert_allclose(np_(w[b, p]), want, rtol=1e-12)


def test_propagate_std_is_abs_slope_times_std():
    s = torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64)
    slope = torch.tensor([-2.0, 0.0, 3.0], dtype=torch.float64)
    assert propagate_std(s, slope).tolist() == pytest.approx([0.2, 0.0, 0.9], rel=1e-12)


# --------------------------------------------------------------------------------------
# pixelwise residuals and their uncertainty
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("with_std", [True, False])
def test_pixelwise_linearity_matches_formula(device, relative, with_std):
    _, x, times, x_std = make_batch(device=device)
    i_idx, j_idx, ratio, _ = exposure_pairs(times)
    d, sigma = pixelwise_linearity(
        x, i_idx, j_idx, ratio, x_std if with_std else None, relative=relative
    )
    assert d.shape == (3, 6, 2, 13, 11)
    assert (sigma is None) == (not with_std)
    xn, sn = np_(x), np_(x_std)
    for b in range(3):
        for p in range(6):
            i, j, r = int(i_idx[b, p]), int(j_idx[b, p]), float(ratio[b, p])
            si, sj = (sn[b, i], sn[b, j]) if with_std else (None, None)
            d_ref, s_ref = ref_pixel(xn[b, i], xn[b, j], r, si, sj, relative)
            np.testing.assert_allclose(np_(d[b, p]), d_ref, rtol=1e-6, atol=1e-15)
            if with_std:
                np.testing.assert_allclose(np_(sigma[b, p]), s_ref, rtol=1e-6)


def test_pixelwise_absolute_sigma_has_finite_gradient_at_zero_std():
    x = torch.rand(1, 2, 1, 3, 3, dtype=torch.float64)
    std = torch.zeros_like(x, requires_grad=True)
    idx0, idx1, r = (
        torch.tensor([[0]]),
        torch.tensor([[1]]),
        torch.tensor([[0.5]]).double(),
    )
    _, sigma = pixelwise_linearity(x, idx0, idx1, r, std, relative=False)
    sigma.sum().backward()
    assert torch.equal(sigma, torch.zeros_like(sigma))
    assert bool(torch.isfinite(std.grad).all())


# --------------------------------------------------------------------------------------
# spatial mean / std and pair aggregation
# --------------------------------------------------------------------------------------
def test_weighted_spatial_mean_std_match_numpy(device, rng):
    v = torch.rand(4, 2, 13, 11, generator=rng, device=device, dtype=torch.float64)
    w = torch.rand(4, 2, 13, 11, generator=rng, device=device, dtype=torch.float64)
    mask = torch.rand(4, 2, 13, 11, generator=rng, device=device) > 0.3
    mask[1, 0] = False  # no valid pixel at all
    mean, std = weighted_spatial_mean_std(v, w, mask)
    assert mean.shape == std.shape == (4, 2)
    vn, wn, mn = np_(v), np_(w), mask.cpu().numpy()
    for a in range(4):
        for c in range(2):
            sel = mn[a, c]
            if not sel.any():
                assert mean[a, c].item() == 0.0 and std[a, c].item() == 0.0
                continue
            ref_m = (wn[a, c][sel] * vn[a, c][sel]).sum() / wn[a, c][sel].sum()
            ref_s = math.sqrt(
                (wn[a, c][sel] * (vn[a, c][sel] - ref_m) ** 2).sum()
                / wn[a, c][sel].sum()
            )
            assert mean[a, c].item() == pytest.approx(ref_m, rel=1e-10)
            assert std[a, c].item() == pytest.approx(ref_s, rel=1e-10)
    torch.testing.assert_close(weighted_spatial_mean(v, w, mask), mean, rtol=0, atol=0)


def test_weighted_spatial_mean_unweighted_and_unmasked():
    v = torch.arange(12, dtype=torch.float64).view(1, 3, 4)
    assert weighted_spatial_mean(v).item() == pytest.approx(5.5)
    assert weighted_spatial_mean(v, dims=(-1,)).tolist() == [[1.5, 5.5, 9.5]]
    mask = v < 3
    assert weighted_spatial_mean(v, mask=mask).item() == pytest.approx(1.0)


def test_weighted_spatial_mean_ignores_nan_in_masked_pixels():
    v = torch.tensor([[1.0, float("nan")], [3.0, float("inf")]])
    mask = torch.tensor([[True, False], [True, False]])
    mean, std = weighted_spatial_mean_std(v, torch.ones_like(v), mask)
    assert mean.item() == 2.0 and std.item() == 1.0


def test_aggregate_pairs_drops_invalid_pairs_and_has_safe_gradient():
    m = torch.tensor([[[3.0, 0.0], [4.0, 0.0], [100.0, 5.0]]], requires_grad=True)
    ok = torch.tensor([[True, True, False]])
    out = aggregate_pairs(m, ok)
    assert out.tolist() == [[5.0, 0.0]]
    out.sum().backward()
    assert torch.allclose(m.grad[0, :, 0], torch.tensor([0.6, 0.8, 0.0]))
    assert torch.equal(m.grad[0, :, 1], torch.zeros(3))


# --------------------------------------------------------------------------------------
# radiometric_linearity: parity with the clair-torch-style reference
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("std_mode", ["none", "weighted", "unweighted"])
def test_radiometric_linearity_matches_reference(device, relative, std_mode):
    y, x, times, x_std = make_batch(device=device)
    s = None if std_mode == "none" else x_std
    use_unc = std_mode == "weighted"
    got = radiometric_linearity(
        y, x, times, x_std=s, relative=relative, use_uncertainty_weighting=use_unc
    )
    want = ref_linearity(
        np_(y),
        np_(x),
        np_(times),
        None if s is None else np_(s),
        relative=relative,
        use_unc=use_unc,
    )
    assert got.shape == (3, 2) and got.dtype == torch.float64
    np.testing.assert_allclose(np_(got), want, rtol=1e-6)
    assert bool((got > 0).all())


def test_radiometric_linearity_options_match_reference(device):
    y, x, times, x_std = make_batch(device=device)
    kw = dict(threshold=0.3, lower=0.05, upper=0.9)
    got = radiometric_linearity(y, x, times, x_std=x_std, gaussian_scale=3.0, **kw)
    want = ref_linearity(np_(y), np_(x), np_(times), np_(x_std), scale=3.0, **kw)
    np.testing.assert_allclose(np_(got), want, rtol=1e-6)


def test_radiometric_linearity_shared_times_equal_repeated_times(device):
    y, x, times, _ = make_batch(device=device)
    shared = times[0]
    a = radiometric_linearity(y, x, shared)
    b = radiometric_linearity(y, x, shared.expand(3, -1).clone())
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = radiometric_linearity(y, x, shared.unsqueeze(0))
    torch.testing.assert_close(a, c, rtol=0, atol=0)
    want = ref_linearity(np_(y), np_(x), np_(shared))
    np.testing.assert_allclose(np_(a), want, rtol=1e-6)


def test_radiometric_linearity_saturated_image_adds_nothing():
    y, x, times, _ = make_batch()
    # scene 0, exposure 1 is saturated: dropping it from the stack leaves the value unchanged
    keep = [0, 2, 3]
    full = radiometric_linearity(y[:1], x[:1], times[:1])
    reduced = radiometric_linearity(y[:1, keep], x[:1, keep], times[:1, keep])
    torch.testing.assert_close(full, reduced, rtol=1e-12, atol=0)


def test_radiometric_linearity_all_pairs_invalid_gives_zero():
    y, x, _, _ = make_batch()
    times = torch.tensor([1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    out = radiometric_linearity(y, x, times)
    assert torch.equal(out, torch.zeros(3, 2, dtype=torch.float64))


def test_radiometric_linearity_linear_stack_is_zero_with_finite_gradients(device, rng):
    times = torch.tensor(
        [[0.25, 1.0, 0.5], [2.0, 1.0, 4.0]], dtype=torch.float64, device=device
    )
    radiance = 0.2 * torch.rand(
        2, 1, 3, 13, 11, generator=rng, device=device, dtype=torch.float64
    )
    radiance = radiance + 0.01
    x = (radiance * times[:, :, None, None, None] / 4).requires_grad_(True)
    y = x.detach() ** (1 / 2.2)
    std = torch.full_like(x, 0.01, requires_grad=True)
    for relative in (True, False):
        out = radiometric_linearity(y, x, times, x_std=std, relative=relative)
        assert float(out.detach().max()) < 1e-5
        gx, gs = torch.autograd.grad(out.sum(), (x, std))
        assert bool(torch.isfinite(gx).all()) and bool(torch.isfinite(gs).all())


@pytest.mark.parametrize("relative", [True, False])
def test_radiometric_linearity_gradcheck(relative):
    gen = torch.Generator().manual_seed(3)
    y = torch.rand(2, 3, 2, 3, 2, generator=gen, dtype=torch.float64) * 0.8 + 0.1
    x = (
        torch.rand(2, 3, 2, 3, 2, generator=gen, dtype=torch.float64) + 0.1
    ).requires_grad_()
    s = (
        torch.rand(2, 3, 2, 3, 2, generator=gen, dtype=torch.float64) * 0.05 + 0.01
    ).requires_grad_()
    times = torch.tensor([[1.0, 0.5, 2.0], [0.3, 0.6, 0.9]], dtype=torch.float64)

    def fn(x, s):
        return radiometric_linearity(y, x, times, x_std=s, relative=relative)

    assert torch.autograd.gradcheck(fn, (x, s))


# --------------------------------------------------------------------------------------
# laws
# --------------------------------------------------------------------------------------
_times = st.lists(st.floats(0.01, 10.0), min_size=2, max_size=5)


def _no_boundary_ratios(times: list[float], threshold: float = 0.1) -> bool:
    """No ratio within rounding of the threshold, no two times within rounding of a tie."""
    return all(
        abs(a / b - threshold) > 1e-6 and b / a - 1 > 1e-9
        for a in times
        for b in times
        if a < b
    )


def _stack(times: list[float], seed: int):
    gen = torch.Generator().manual_seed(seed)
    t = torch.tensor(times, dtype=torch.float64)
    n = len(times)
    y = torch.rand(1, n, 2, 5, 3, generator=gen, dtype=torch.float64)
    x = y**2.2 + 0.01 * torch.rand(1, n, 2, 5, 3, generator=gen, dtype=torch.float64)
    s = 0.01 * torch.rand(1, n, 2, 5, 3, generator=gen, dtype=torch.float64)
    return y, x, t, s


@settings(max_examples=30, deadline=None)
@given(times=_times, seed=st.integers(0, 2**16), perm_seed=st.integers(0, 2**16))
def test_radiometric_linearity_invariant_to_exposure_order(times, seed, perm_seed):
    assume(_no_boundary_ratios(times))
    y, x, t, s = _stack(times, seed)
    perm = torch.randperm(
        len(times), generator=torch.Generator().manual_seed(perm_seed)
    )
    a = radiometric_linearity(y, x, t, x_std=s)
    b = radiometric_linearity(y[:, perm], x[:, perm], t[perm], x_std=s[:, perm])
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@settings(max_examples=30, deadline=None)
@given(times=_times, seed=st.integers(0, 2**16), k=st.floats(1e-3, 1e3))
def test_radiometric_linearity_invariant_to_time_units(times, seed, k):
    assume(_no_boundary_ratios(times))
    y, x, t, _ = _stack(times, seed)
    for relative in (True, False):
        a = radiometric_linearity(y, x, t, relative=relative)
        b = radiometric_linearity(y, x, t * k, relative=relative)
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------------------
# dtypes and bad inputs
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("dtype", "out_dtype"),
    [
        (torch.float16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_radiometric_linearity_dtypes(dtype, out_dtype, device):
    y, x, times, _ = make_batch()
    ref = radiometric_linearity(y, x, times)
    out = radiometric_linearity(
        y.to(device, dtype), x.to(device, dtype), times.to(device, dtype)
    )
    assert out.dtype == out_dtype and out.device.type == device.type
    tol = {torch.float16: 5e-2, torch.float32: 1e-4, torch.float64: 1e-12}[dtype]
    torch.testing.assert_close(out.cpu().double(), ref, rtol=tol, atol=tol)


def _good():
    y, x, times, s = make_batch(h=3, w=2)
    return y, x, times, s


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("one_exposure", "at least 2 exposures"),
        ("four_dims", "`y`"),
        ("x_shape", "`x`"),
        ("x_channels", "`x`"),
        ("times_length", "`exposure_times`"),
        ("times_batch", "`exposure_times`"),
        ("times_zero", "`exposure_times`.*> 0"),
        ("times_negative", "`exposure_times`.*> 0"),
        ("times_nan", "`exposure_times`.*finite"),
        ("std_shape", "`x_std`"),
        ("threshold", "`threshold`"),
        ("bounds", "`lower`"),
        ("scale", "`gaussian_scale`"),
    ],
)
def test_radiometric_linearity_rejects_bad_inputs(case, match):
    y, x, t, s = _good()
    kw: dict = {}
    if case == "one_exposure":
        y, x, t = y[:, :1], x[:, :1], t[:, :1]
    elif case == "four_dims":
        y = y[0]
    elif case == "x_shape":
        x = x[:, :, :, :2]
    elif case == "x_channels":
        x = x[:, :, :1]
    elif case == "times_length":
        t = t[:, :3]
    elif case == "times_batch":
        t = t[:2]
    elif case == "times_zero":
        t = t.clone()
        t[1, 2] = 0.0
    elif case == "times_negative":
        t = -t
    elif case == "times_nan":
        t = t.clone()
        t[0, 0] = float("nan")
    elif case == "std_shape":
        kw["x_std"] = s[:, :, :1, :1, :1].repeat(1, 1, 1, 2, 2)
    elif case == "threshold":
        kw["threshold"] = -0.1
    elif case == "bounds":
        kw.update(lower=0.9, upper=0.1)
    elif case == "scale":
        kw["gaussian_scale"] = -1.0
    with pytest.raises(ValueError, match=match):
        radiometric_linearity(y, x, t, **kw)


def test_radiometric_linearity_accepts_broadcastable_std():
    y, x, t, s = _good()
    per_pixel = s[:1].expand_as(s).clone()
    a = radiometric_linearity(y, x, t, x_std=s[:1])
    b = radiometric_linearity(y, x, t, x_std=per_pixel)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_radiometric_linearity_rejects_integer_stack():
    y, x, t, _ = _good()
    with pytest.raises(TypeError, match="`y`"):
        radiometric_linearity((y * 255).to(torch.uint8), x, t)
