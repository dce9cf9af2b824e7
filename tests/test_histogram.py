from __future__ import annotations

import dataclasses
import logging
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_linearity import ref_linearity

import deepinv_icrf.functional.histogram as histogram_module
import deepinv_icrf.loss.linearity as loss_module
from deepinv_icrf.functional import (
    ContinuousInputError,
    LinearityHistogram,
    build_linearity_histogram,
    curve_slope,
    detect_bit_depth,
    exposure_pairs,
    gaussian_value_weights,
    interp_curve,
    linearity_from_histogram,
    propagate_std,
    radiometric_linearity,
)
from deepinv_icrf.loss import RadiometricLinearityLoss
from deepinv_icrf.models import ICRF

LOWER, UPPER = 1 / 255, 254 / 255
#: relative tolerance of the histogram path against the dense path, per dtype (issue 4)
RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # tiny tensors: threads only add synchronisation (and stall on a busy machine)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------ data
def coded_stack(
    bits: int = 8,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    h: int = 13,
    w: int = 11,
    channels: int = 3,
    seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two noisy scenes of 4 exposures of `bits`-bit codes with per-sample times.

    Scene 0: unsorted times, every pair valid. Scene 1: a duplicate time (invalid pair) and
    one exposure too long for the threshold (two more invalid pairs). Some pixels saturate
    at both ends, so the valid-range mask matters.
    """
    gen = np.random.default_rng(seed)
    times = np.array([[0.5, 4.0, 1.0, 2.0], [1.0, 1.0, 0.25, 30.0]])
    radiance = 10.0 ** gen.uniform(-2.3, 0.3, size=(2, 1, channels, h, w))
    linear = np.clip(radiance * times[:, :, None, None, None], 0, 1)
    code = linear ** (1 / 2.2) + gen.normal(0, 0.01, size=linear.shape)
    levels = 2**bits - 1
    y = np.round(np.clip(code, 0, 1) * levels) / levels
    as_t = lambda a: torch.tensor(a, dtype=dtype, device=device)  # noqa: E731
    return as_t(y), as_t(times)


def random_curve(
    n_points: int = 256,
    channels: int = 3,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    seed: int = 1,
) -> torch.Tensor:
    """A random increasing curve (C, L) from 0 to 1, a leaf that requires grad."""
    gen = torch.Generator().manual_seed(seed)
    steps = torch.rand(channels, n_points - 1, generator=gen, dtype=torch.float64) + 0.2
    curve = torch.cat(
        [torch.zeros(channels, 1, dtype=torch.float64), steps.cumsum(1)], 1
    )
    curve = (curve / curve[:, -1:]) ** 1.8
    return curve.to(dtype=dtype, device=device).requires_grad_(True)


def dense_value_grad(y, curve, times, x_std_fn=None, **kw):
    """Dense path on x = interp_curve(y, curve): (value (B, C), d sum / d curve)."""
    x = interp_curve(y, curve)
    x_std = None if x_std_fn is None else x_std_fn(curve)
    value = radiometric_linearity(y, x, times, x_std=x_std, **kw)
    (grad,) = torch.autograd.grad(value.sum(), curve)
    return value.detach(), grad


def hist_value_grad(curve, hist, **kw):
    value = linearity_from_histogram(curve, hist, **kw)
    (grad,) = torch.autograd.grad(value.sum(), curve)
    return value.detach(), grad


def assert_parity(got, want, rtol):
    """Elementwise, relative to the largest magnitude (small entries carry rounding)."""
    scale = want.abs().max().item()
    assert scale > 0
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * scale)


# ------------------------------------------------------------------ parity with the dense path
@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("scale", [10.0, 0.0], ids=["gauss", "flat"])
@pytest.mark.parametrize("bounds", [(LOWER, UPPER), (0.0, 1.0)], ids=["mask", "nomask"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("bits,n_points", [(8, 256), (10, 256), (10, 1024), (12, 256)])
def test_histogram_matches_dense_value_and_gradient(
    device, bits, n_points, dtype, bounds, scale, relative
):
    y, t = coded_stack(bits, dtype, device)
    curve = random_curve(n_points, dtype=dtype, device=device)
    lower, upper = bounds
    hist = build_linearity_histogram(
        y, t, lower=lower, upper=upper, gaussian_scale=scale
    )
    assert hist.exact and hist.bit_depth == bits and hist.n_bins == 2**bits
    want, want_grad = dense_value_grad(
        y, curve, t, lower=lower, upper=upper, gaussian_scale=scale, relative=relative
    )
    got, grad = hist_value_grad(curve, hist, relative=relative)
    assert got.dtype == dtype and got.shape == (2, 3)
    assert_parity(got, want, RTOL[dtype])
    assert_parity(grad, want_grad, RTOL[dtype])


def test_histogram_matches_independent_numpy_reference(device):
    y, t = coded_stack(8, torch.float64, device, seed=3)
    curve = random_curve(device=device).detach()
    hist = build_linearity_histogram(y, t)
    got = linearity_from_histogram(curve, hist)
    x = interp_curve(y, curve)
    want = ref_linearity(y.cpu().numpy(), x.cpu().numpy(), t.cpu().numpy())
    np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-10)


@pytest.mark.parametrize("detach_std", [True, False])
@pytest.mark.parametrize("relative", [True, False])
@pytest.mark.parametrize("table_kind", ["per_code", "constant"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_histogram_with_code_stds_matches_dense(
    device, dtype, table_kind, relative, detach_std
):
    y, t = coded_stack(8, dtype, device, seed=4)
    curve = random_curve(dtype=dtype, device=device)
    if table_kind == "per_code":
        codes = torch.arange(256, dtype=dtype, device=device) / 255
        table = (0.002 + 0.01 * codes.sqrt()).expand(3, 256) * torch.tensor(
            [[1.0], [0.7], [1.3]], dtype=dtype, device=device
        )
        y_std = table[
            torch.arange(3, device=device).view(1, 1, 3, 1, 1), (y * 255).round().long()
        ]
    else:
        table = torch.tensor([[0.01], [0.02], [0.005]], dtype=dtype, device=device)
        y_std = table.view(1, 1, 3, 1, 1).expand_as(y)

    def x_std_fn(c):
        slope = curve_slope(y, c)
        return propagate_std(y_std, slope.detach() if detach_std else slope)

    want, want_grad = dense_value_grad(y, curve, t, x_std_fn, relative=relative)
    hist = build_linearity_histogram(y, t, y_std_table=table)
    got, grad = hist_value_grad(curve, hist, relative=relative, detach_std=detach_std)
    assert_parity(got, want, RTOL[dtype])
    assert_parity(grad, want_grad, RTOL[dtype])


@pytest.mark.parametrize(
    "bits,max_bins,value_tol,grad_tol", [(12, 256, 3e-3, 0.1), (16, 4096, 1e-6, 1e-4)]
)
def test_coarse_binning_stays_close_to_dense(bits, max_bins, value_tol, grad_tol):
    # not exact (each entry evaluates the curve at its centroid codes): only close
    y, t = coded_stack(bits, torch.float64, h=31, w=29, seed=5)
    curve = random_curve()
    hist = build_linearity_histogram(y, t, max_bins=max_bins)
    assert not hist.exact and hist.n_bins == max_bins and hist.bit_depth == bits
    want, want_grad = dense_value_grad(y, curve, t)
    got, grad = hist_value_grad(curve, hist)
    assert ((got - want).abs() / want.abs()).max() < value_tol
    assert (grad - want_grad).norm() / want_grad.norm() < grad_tol


def test_shared_times_and_single_channel_curve(device):
    y, t = coded_stack(8, torch.float64, device, channels=2)
    y = y[:1].expand(3, -1, -1, -1, -1)
    times = t[0]  # (N,): shared by the 3 samples
    curve = random_curve(channels=1, device=device)
    hist = build_linearity_histogram(y, times)
    want, want_grad = dense_value_grad(y, curve, times)
    got, grad = hist_value_grad(curve, hist)
    assert got.shape == (3, 2)
    assert_parity(got, want, 1e-10)
    assert_parity(grad, want_grad, 1e-10)
    torch.testing.assert_close(got[0], got[2], rtol=0, atol=0)


def test_all_pairs_invalid_gives_zero_without_entries():
    y, _ = coded_stack(8, torch.float64)
    t = torch.tensor([1.0, 20.0, 400.0, 8000.0], dtype=torch.float64)
    curve = random_curve()
    hist = build_linearity_histogram(y, t)
    assert hist.n_entries == 0
    value, grad = hist_value_grad(curve, hist)
    assert torch.equal(value, torch.zeros(2, 3, dtype=torch.float64))
    assert torch.equal(grad, torch.zeros_like(grad))


def test_histogram_gradcheck():
    y, t = coded_stack(8, torch.float64, h=5, w=4, channels=2)
    curve = random_curve(16, channels=2)
    hist = build_linearity_histogram(y, t)
    for relative in (True, False):
        assert torch.autograd.gradcheck(
            lambda c: linearity_from_histogram(c, hist, relative=relative), (curve,)
        )
    table = torch.full((2, 256), 0.01, dtype=torch.float64)
    hist_std = build_linearity_histogram(y, t, y_std_table=table)
    assert torch.autograd.gradcheck(
        lambda c: linearity_from_histogram(c, hist_std, detach_std=False), (curve,)
    )


# ------------------------------------------------------------------ laws
@settings(max_examples=25, deadline=None)
@given(
    base=st.lists(st.integers(1, 255), min_size=6, max_size=30),
    n=st.integers(2, 4),
    unit=st.integers(-6, 6),
    perm_seed=st.integers(0, 1000),
    relative=st.booleans(),
)
def test_perfectly_linear_stack_gives_zero(base, n, unit, perm_seed, relative):
    # codes a 2^k of times 2^(k + unit): identity ICRF is exactly linear (saturated codes
    # are clipped to 255 and masked out)
    a = torch.tensor(base, dtype=torch.float64)
    k = torch.randperm(n, generator=torch.Generator().manual_seed(perm_seed))
    codes = (a.view(1, -1) * 2.0 ** k.view(-1, 1).double()).clamp(max=255)
    y = (codes / 255).view(1, n, 1, 1, -1)
    t = 2.0 ** (k.double() + unit)
    # k / 255 exactly (linspace's values may differ by an ulp)
    curve = (torch.arange(256, dtype=torch.float64) / 255).unsqueeze(0)
    curve.requires_grad_(True)
    hist = build_linearity_histogram(y, t)
    value, grad = hist_value_grad(curve, hist, relative=relative)
    assert torch.equal(value, torch.zeros(1, 1, dtype=torch.float64))
    assert torch.isfinite(grad).all()
    dense, _ = dense_value_grad(y, curve, t, relative=relative)
    assert torch.equal(dense, value)


@settings(max_examples=15, deadline=None)
@given(cuts=st.lists(st.integers(1, 12), min_size=1, max_size=3, unique=True))
def test_merge_of_row_shards_equals_whole_stack(cuts):
    y, t = coded_stack(8, torch.float64, seed=6)
    curve = random_curve()
    edges = [0, *sorted(cuts), y.shape[3]]
    shards = [
        build_linearity_histogram(y[..., a:b, :], t, bit_depth=8)
        for a, b in zip(edges[:-1], edges[1:], strict=True)
    ]
    merged = LinearityHistogram.merge(*shards)
    whole = build_linearity_histogram(y, t)
    assert merged.shape == whole.shape
    assert merged.n_entries == whole.n_entries  # coalesced
    got, grad = hist_value_grad(curve, merged)
    want, want_grad = hist_value_grad(curve, whole)
    assert_parity(got, want, 1e-12)
    assert_parity(grad, want_grad, 1e-12)


def test_merge_of_column_and_coarse_shards():
    y, t = coded_stack(16, torch.float64, h=12, w=11, seed=7)
    curve = random_curve()
    left = build_linearity_histogram(y[..., :5], t, bit_depth=16, max_bins=256)
    right = build_linearity_histogram(y[..., 5:], t, bit_depth=16, max_bins=256)
    merged = LinearityHistogram.merge(left, right)
    assert merged.shape == (2, 4, 3, 1, 12 * 11)
    assert merged.n_entries == left.n_entries + right.n_entries
    assert merged.points.shape[1] == left.points.shape[1] + right.points.shape[1]
    # every entry keeps its own centroid: the merged numerators and denominators are the
    # sums of the shards' ones
    num = [linearity_from_histogram(curve, h).detach() for h in (left, right, merged)]
    want, _ = dense_value_grad(y, curve, t)
    assert ((num[2] - want).abs() / want).max() < 1e-3
    torch.testing.assert_close(
        merged.weight_sum, left.weight_sum + right.weight_sum, rtol=1e-12, atol=0
    )


def test_merge_with_an_empty_shard():
    y, t = coded_stack(8, torch.float32)
    empty = build_linearity_histogram(y[..., :0, :], t, bit_depth=8)
    assert empty.n_entries == 0 and empty.shape == (2, 4, 3, 0, 11)
    whole = build_linearity_histogram(y, t)
    merged = LinearityHistogram.merge(empty, whole)
    curve = random_curve(dtype=torch.float32)
    torch.testing.assert_close(
        linearity_from_histogram(curve, merged),
        linearity_from_histogram(curve, whole),
        rtol=0,
        atol=0,
    )
    with pytest.raises(ContinuousInputError, match="empty"):
        build_linearity_histogram(y[..., :0, :], t)


def test_merge_rejects_histograms_of_other_stacks():
    y, t = coded_stack(8, torch.float64)
    a = build_linearity_histogram(y[..., :6, :], t)
    with pytest.raises(ValueError, match="exposure times"):
        LinearityHistogram.merge(a, build_linearity_histogram(y[..., 6:, :], t * 2))
    with pytest.raises(ValueError, match="gaussian_scale"):
        LinearityHistogram.merge(
            a, build_linearity_histogram(y[..., 6:, :], t, gaussian_scale=3.0)
        )
    with pytest.raises(ValueError, match="bit_depth"):
        LinearityHistogram.merge(
            a, build_linearity_histogram(y[..., 6:, :], t, bit_depth=16)
        )
    with pytest.raises(ValueError, match="at least one"):
        LinearityHistogram.merge()
    with pytest.raises(TypeError, match="argument 1"):
        LinearityHistogram.merge(a, y)
    assert LinearityHistogram.merge(a) is a


# ------------------------------------------------------------------ detection and validation
def test_detect_bit_depth_finds_the_smallest_depth():
    for bits in (8, 10, 12, 14, 16):
        y, _ = coded_stack(bits, torch.float32, h=40, w=40)
        assert detect_bit_depth(y) == bits
    assert detect_bit_depth(torch.rand(2, 3, 100, 100) * 0.9 + 0.01) is None
    assert detect_bit_depth(torch.tensor([0.0, 2.0])) is None  # out of [0, 1]
    assert detect_bit_depth(torch.tensor([0.5, float("nan")])) is None
    # a stack whose first values are codes but not the rest: the full scan catches it
    y, _ = coded_stack(8, torch.float64, h=64, w=64)
    y[-1, -1, -1, -1, -1] = 0.1234567
    assert detect_bit_depth(y) is None


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (dict(bit_depth=7), ValueError, "bit_depth"),
        (dict(max_bins=100), ValueError, "max_bins"),
        (dict(max_bins=True), ValueError, "max_bins"),
        (dict(threshold=1.5), ValueError, "threshold"),
        (dict(lower=0.9, upper=0.1), ValueError, "lower"),
        (dict(gaussian_scale=-1.0), ValueError, "gaussian_scale"),
        (dict(bit_depth=10), ContinuousInputError, "10-bit codes"),
        (dict(y_std_table=torch.ones(100)), ValueError, "y_std_table"),
        (dict(y_std_table=-torch.ones(256)), ValueError, "y_std_table"),
        (dict(y_std_table=torch.ones(1024)), ValueError, "y_std_table"),
    ],
)
def test_build_rejects_bad_options(kwargs, error, match):
    y, t = coded_stack(8, torch.float64)
    with pytest.raises(error, match=match):
        build_linearity_histogram(y, t, **kwargs)


def test_build_rejects_bad_inputs():
    y, t = coded_stack(8, torch.float64)
    with pytest.raises(ContinuousInputError, match="continuous"):
        build_linearity_histogram(y + 1e-3, t)
    assert issubclass(ContinuousInputError, ValueError)
    with pytest.raises(ValueError, match="exposure_times"):
        build_linearity_histogram(y, t[:, :3])
    with pytest.raises(ValueError, match="exposure_times"):
        build_linearity_histogram(y, -t)
    with pytest.raises(ValueError, match="at least 2 exposures"):
        build_linearity_histogram(y[:, :1], t[:, :1])
    with pytest.raises(ValueError, match="y"):
        build_linearity_histogram(y[0], t)
    with pytest.raises(TypeError, match="y"):
        build_linearity_histogram((y * 255).long(), t)


def test_evaluation_rejects_bad_inputs():
    y, t = coded_stack(8, torch.float64)
    hist = build_linearity_histogram(y, t)
    with pytest.raises(TypeError, match="LinearityHistogram"):
        linearity_from_histogram(random_curve(), (y, t))
    with pytest.raises(ValueError, match="curve"):
        linearity_from_histogram(random_curve(channels=2), hist)
    with pytest.raises(ValueError, match="curve"):
        linearity_from_histogram(torch.ones(3), hist)


def test_histogram_moves_between_devices(device):
    y, t = coded_stack(8, torch.float64)
    hist = build_linearity_histogram(y, t).to(device)
    assert hist.device.type == torch.device(device).type
    curve = random_curve(device=device)
    want, _ = dense_value_grad(y.to(device), curve, t.to(device))
    got, _ = hist_value_grad(curve, hist)
    assert_parity(got, want, 1e-10)


# ------------------------------------------------------------------ compact index tensors
@pytest.mark.parametrize("max_bins", [4096, 256], ids=["exact", "coarse"])
def test_index_tensors_are_int32_with_dense_parity(device, max_bins):
    y, t = coded_stack(12, torch.float64, device)
    curve = random_curve(device=device)
    hist = build_linearity_histogram(y, t, max_bins=max_bins)
    halves = LinearityHistogram.merge(
        build_linearity_histogram(y[..., :6, :], t, bit_depth=12, max_bins=max_bins),
        build_linearity_histogram(y[..., 6:, :], t, bit_depth=12, max_bins=max_bins),
    )
    for h in (hist, halves, hist.to(device)):
        assert h.index_i.dtype == h.index_j.dtype == h.group.dtype == torch.int32
    # no stored per-entry pair index: 4 + 4 + 4 + 8 + 8 bytes per entry
    assert "pair" not in {f.name for f in dataclasses.fields(hist)}
    # `pair` (derived from `group`) indexes (B, P): its weight sums are the channel sums
    bsz, n_pairs, channels = hist.weight_sum.shape
    assert hist.pair.shape == hist.group.shape
    assert int(hist.pair.min()) >= 0 and int(hist.pair.max()) < bsz * n_pairs
    per_pair = torch.zeros(bsz * n_pairs, dtype=torch.float64, device=device)
    per_pair.index_add_(0, hist.pair.long(), hist.weight)
    torch.testing.assert_close(
        per_pair, hist.weight_sum.sum(-1).reshape(-1), rtol=1e-12, atol=0
    )
    got, grad = hist_value_grad(curve, hist)
    if max_bins == 4096:  # exact bins: the dense value and gradient
        want, want_grad = dense_value_grad(y, curve, t)
        assert_parity(got, want, RTOL[torch.float64])
        assert_parity(grad, want_grad, RTOL[torch.float64])
    # the same histogram with int64 indices evaluates identically; merge narrows them back
    wide = dataclasses.replace(
        hist,
        index_i=hist.index_i.long(),
        index_j=hist.index_j.long(),
        group=hist.group.long(),
    )
    got64, grad64 = hist_value_grad(curve, wide)
    assert torch.equal(got64, got) and torch.equal(grad64, grad)
    assert LinearityHistogram.merge(wide, hist).group.dtype == torch.int32


def test_index_dtype_falls_back_to_int64_beyond_int32():
    big = 2**31
    assert histogram_module._index_dtype(1) == torch.int32
    assert histogram_module._index_dtype(big) == torch.int32  # indices 0 .. 2**31 - 1
    assert histogram_module._index_dtype(big + 1) == torch.int64
    index = torch.tensor([0, 5, big - 1])
    small = histogram_module._compact_index(index, big)
    assert small.dtype == torch.int32 and torch.equal(small.long(), index)
    index = torch.tensor([0, big, 3 * big])
    wide = histogram_module._compact_index(index, 3 * big + 1)
    assert wide.dtype == torch.int64 and torch.equal(wide, index)


# ------------------------------------------------------------------ build, entry by entry
def reference_cells(y, times, shift, lower=LOWER, upper=UPPER):
    """The histogram's cells written out: for every pair (exposure_pairs order), sample and
    channel, the sorted (bin_i, bin_j) of the pixels valid in both images, with their flat
    (sample, pair, channel) group, their pixel count and their pixels (in pixel order).
    """
    i_idx, j_idx, _, _ = exposure_pairs(times)
    bsz, _, channels = y.shape[:3]
    n_pairs = i_idx.shape[1]
    levels = 2**12 - 1
    cells = []
    for p in range(n_pairs):
        for s in range(bsz):
            i, j = int(i_idx[s, p]), int(j_idx[s, p])
            for c in range(channels):
                found = {}
                pixels = zip(
                    y[s, i, c].reshape(-1).tolist(),
                    y[s, j, c].reshape(-1).tolist(),
                    strict=True,
                )
                for v_i, v_j in pixels:
                    if lower <= v_i <= upper and lower <= v_j <= upper:
                        key = (
                            round(v_i * levels) >> shift,
                            round(v_j * levels) >> shift,
                        )
                        found.setdefault(key, []).append((v_i, v_j))
                group = (s * n_pairs + p) * channels + c
                cells += [(group, c, a, b, found[a, b]) for a, b in sorted(found)]
    return cells


def test_build_lists_every_cell_in_order_exact_bins():
    y, t = coded_stack(12, torch.float64, seed=5)
    hist = build_linearity_histogram(y, t)
    assert hist.exact and hist.weight_sum.shape == (2, 6, 3)  # every pair kept
    cells = reference_cells(y, t, shift=0)
    group, channel, bin_i, bin_j, pixels = zip(*cells, strict=True)
    as_index = lambda v: torch.tensor(v, dtype=torch.int32)  # noqa: E731
    count = torch.tensor([float(len(px)) for px in pixels], dtype=torch.float64)
    assert torch.equal(hist.group, as_index(group))
    assert torch.equal(
        hist.index_i,
        as_index([c * 4096 + a for c, a in zip(channel, bin_i, strict=True)]),
    )
    assert torch.equal(
        hist.index_j,
        as_index([c * 4096 + b for c, b in zip(channel, bin_j, strict=True)]),
    )
    assert torch.equal(hist.count, count)
    assert count.max() > 1 and hist.n_entries < count.sum()  # some cells shared
    g = gaussian_value_weights(hist.points.double(), 10.0).reshape(-1)
    weight = count * (g[hist.index_i.long()] + g[hist.index_j.long()])
    assert torch.equal(hist.weight, weight)
    weight_sum = torch.zeros(36, dtype=torch.float64).index_add_(0, hist.group, weight)
    assert torch.equal(hist.weight_sum.reshape(-1), weight_sum)


def test_build_lists_every_cell_in_order_coarse_bins():
    y, t = coded_stack(12, torch.float64, seed=5)
    hist = build_linearity_histogram(y, t, max_bins=256)
    cells = reference_cells(y, t, shift=4)
    group, channel, _, _, pixels = zip(*cells, strict=True)
    assert torch.equal(hist.group, torch.tensor(group, dtype=torch.int32))
    count = torch.tensor([float(len(px)) for px in pixels], dtype=torch.float64)
    assert torch.equal(hist.count, count)
    # channel c holds its entries' centroids in entry order: v_i at c T + k, v_j after them
    width = hist.points.shape[1]
    channel = torch.tensor(channel)
    for c in range(3):
        k = torch.arange(int((channel == c).sum()))
        assert torch.equal(hist.index_i[channel == c].long(), c * width + k)
        assert torch.equal(hist.index_j[channel == c].long(), c * width + len(k) + k)
    # the weighted mean codes of each cell's pixels, weights g(v_i) + g(v_j)
    g = lambda v: math.exp(-10.0 * (v - 0.5) ** 2)  # noqa: E731
    want = []
    for px in pixels:
        w = [g(v_i) + g(v_j) for v_i, v_j in px]
        sums = [sum(wk * v[k] for wk, v in zip(w, px, strict=True)) for k in (0, 1)]
        want.append([sums[0] / sum(w), sums[1] / sum(w)])
    points = hist.points.reshape(-1)
    got = torch.stack([points[hist.index_i.long()], points[hist.index_j.long()]], 1)
    want = torch.tensor(want, dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


# ------------------------------------------------------------------ chunked dense path
@pytest.mark.parametrize("chunk", [1, 2, 4, "auto"])
def test_chunked_dense_equals_unchunked(device, chunk):
    y, t = coded_stack(8, torch.float64, device)
    x = interp_curve(y, random_curve(device=device)).detach().requires_grad_(True)
    x_std = (0.01 + 0.02 * y).requires_grad_(True)
    out = {}
    for name, pc in (("whole", None), ("chunked", chunk)):
        value = radiometric_linearity(y, x, t, x_std=x_std, pair_chunk=pc)
        out[name] = (value, *torch.autograd.grad(value.sum(), (x, x_std)))
    for got, want in zip(out["chunked"], out["whole"], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-15)


def test_chunked_dense_keeps_only_one_chunk_for_backward():
    y, _ = coded_stack(8, torch.float64, h=32, w=32)
    t = torch.tensor([1.0, 1.5, 2.0, 3.0], dtype=torch.float64)  # 6 valid pairs

    def pair_sized_saves(chunk):
        """Bytes of the tensors saved for backward that are not (B, N, ...) stacks."""
        seen: dict[tuple, int] = {}

        def pack(tensor):
            if tensor.numel() >= y[:, 0].numel() and tensor.shape[:2] != y.shape[:2]:
                key = (tensor.data_ptr(), tensor.numel())
                seen[key] = tensor.numel() * tensor.element_size()
            return tensor

        x = interp_curve(y, random_curve()).detach().requires_grad_(True)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            value = radiometric_linearity(y, x, t, pair_chunk=chunk).sum()
        value.backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
        return sum(seen.values())

    pair_bytes = y[:, 0].numel() * 8  # one pair, (B, C, H, W) float64
    # unchunked: every pair's intermediates; chunked: the inputs only (each chunk's
    # intermediates are recomputed in the backward pass)
    assert pair_sized_saves(None) >= 6 * 4 * pair_bytes
    assert pair_sized_saves(1) == 0


def test_pair_chunk_is_validated():
    y, t = coded_stack(8, torch.float64)
    for bad in (0, -2, "big", 1.5, True):
        with pytest.raises(ValueError, match="pair_chunk"):
            radiometric_linearity(y, y, t, pair_chunk=bad)
    with pytest.raises(ValueError, match="pair_chunk"):
        RadiometricLinearityLoss(pair_chunk=0)


# ------------------------------------------------------------------ the loss module
def _icrf(dtype=torch.float64, device="cpu", channels=3):
    init = random_curve(channels=channels).detach()
    return ICRF(channels=channels, init=init, parameterization="free").to(
        dtype=dtype, device=device
    )


def _loss_value_and_grads(loss, icrf, y, t, **kw):
    icrf.zero_grad()
    physics = SimpleNamespace(exposure_times=t)
    value = loss(x_net=icrf(y), y=y, physics=physics, model=icrf, **kw)
    value.sum().backward()
    return value.detach(), [p.grad.clone() for p in icrf.parameters()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
def test_loss_auto_takes_histogram_path_with_dense_value_and_gradient(device, dtype):
    y, t = coded_stack(8, dtype, device)
    icrf = _icrf(dtype, device)
    auto = RadiometricLinearityLoss(per_channel=True)
    got, got_grads = _loss_value_and_grads(auto, icrf, y, t)
    assert auto.last_path == "histogram"
    dense = RadiometricLinearityLoss(per_channel=True, path="dense")
    want, want_grads = _loss_value_and_grads(dense, icrf, y, t)
    assert dense.last_path == "dense"
    assert got.shape == (2, 3)
    assert_parity(got, want, RTOL[dtype])
    for g, w in zip(got_grads, want_grads, strict=True):
        assert_parity(g, w, RTOL[dtype])


def test_loss_chooses_dense_path_and_says_why(caplog):
    y, t = coded_stack(8, torch.float64)
    icrf = _icrf()
    physics = SimpleNamespace(exposure_times=t)
    loss = RadiometricLinearityLoss()
    with caplog.at_level(logging.INFO, logger="deepinv_icrf"):
        loss(x_net=icrf(y), y=y, physics=physics, model=icrf)
    assert loss.last_path == "histogram"
    assert "histogram path" in caplog.text
    # `x_net` is compared with ICRF(y) once per stack and ICRF (not at every step)
    fresh = RadiometricLinearityLoss()
    fresh(x_net=y, y=y, physics=physics, model=icrf)
    assert fresh.last_path == "dense" and "not the ICRF" in fresh.last_reason
    cases = [
        (dict(x_net=y, y=y), "no ICRF"),
        (dict(x_net=icrf(y + 1e-4), y=y + 1e-4, model=icrf), "continuous"),
        (dict(x_net=icrf(y), y=y, model=icrf, y_std=0.01 + 0.01 * y), "per-pixel"),
        (dict(x_net=icrf(y), y=y, model=icrf, x_std=0.01 + 0.01 * y), "x_std"),
    ]
    for kwargs, reason in cases:
        loss(physics=physics, **kwargs)
        assert loss.last_path == "dense" and reason in loss.last_reason
    # stds that depend on the code only keep the histogram path, with the dense value
    y_std = torch.full((3, 1, 1), 0.01, dtype=torch.float64)
    value = loss(x_net=icrf(y), y=y, physics=physics, model=icrf, y_std=y_std)
    assert loss.last_path == "histogram"
    dense = RadiometricLinearityLoss(path="dense")
    want = dense(x_net=icrf(y), y=y, physics=physics, model=icrf, y_std=y_std)
    assert_parity(value.detach(), want.detach(), 1e-10)


def test_loss_forced_paths():
    y, t = coded_stack(8, torch.float64)
    icrf = _icrf()
    physics = SimpleNamespace(exposure_times=t)
    forced = RadiometricLinearityLoss(path="histogram")
    forced(x_net=icrf(y), y=y, physics=physics, model=icrf)
    assert forced.last_path == "histogram"
    with pytest.raises(ValueError, match="histogram path.*continuous"):
        forced(x_net=icrf(y * 0.999), y=y * 0.999, physics=physics, model=icrf)
    with pytest.raises(ValueError, match="histogram path.*no ICRF"):
        forced(x_net=y, y=y, physics=physics)
    dense = RadiometricLinearityLoss(path="dense")
    dense(x_net=icrf(y), y=y, physics=physics, model=icrf)
    assert dense.last_path == "dense"
    with pytest.raises(ValueError, match="path"):
        RadiometricLinearityLoss(path="sparse")
    for bad in (dict(bit_depth=9), dict(max_bins=3), dict(cache_size=-1)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            RadiometricLinearityLoss(**bad)


def test_loss_cache_builds_once_per_stack(monkeypatch):
    calls = []
    real = loss_module.build_linearity_histogram

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(loss_module, "build_linearity_histogram", counting)
    y, t = coded_stack(8, torch.float64)
    icrf = _icrf()
    physics = SimpleNamespace(exposure_times=t)
    loss = RadiometricLinearityLoss(cache_size=2)

    def call(stack, times=t):
        physics.exposure_times = times
        return loss(x_net=icrf(stack), y=stack, physics=physics, model=icrf)

    first = call(y)
    second = call(y)
    assert len(calls) == 1 and torch.equal(first, second)
    call(y.clone())  # a new tensor: built again
    assert len(calls) == 2
    call(y, t.clone())  # equal times in a new tensor: cache hit
    assert len(calls) == 2
    call(y, t * 2)  # new times: built again
    assert len(calls) == 3
    y[0, 0, 0, 0, 0] = 0.5  # in-place change: built again
    call(y)
    assert len(calls) == 4
    loss.clear_cache()
    call(y)
    assert len(calls) == 5
    # continuous stacks are detected once too
    yc = y * 0.999
    call(yc)
    call(yc)
    assert len(calls) == 6 and loss.last_path == "dense"


def test_loss_precompute_and_stats():
    y, t = coded_stack(8, torch.float64)
    icrf = _icrf()
    physics = SimpleNamespace(exposure_times=t)
    loss = RadiometricLinearityLoss(cache_size=0)
    stats = loss.precompute(y, t)
    assert isinstance(stats, LinearityHistogram) and stats.exact
    value = loss(x_net=icrf(y), y=y, physics=physics, model=icrf, stats=stats)
    assert loss.last_path == "histogram" and "precomputed" in loss.last_reason
    want = RadiometricLinearityLoss(path="dense")(
        x_net=icrf(y), y=y, physics=physics, model=icrf
    )
    assert_parity(value.detach(), want.detach(), 1e-10)
    with pytest.raises(ValueError, match="shape"):
        loss(x_net=icrf(y[:1]), y=y[:1], physics=physics, model=icrf, stats=stats)
    with pytest.raises(ValueError, match="gaussian_scale"):
        RadiometricLinearityLoss(gaussian_scale=2.0)(
            x_net=icrf(y), y=y, physics=physics, model=icrf, stats=stats
        )
    with pytest.raises(TypeError, match="LinearityHistogram"):
        loss(x_net=icrf(y), y=y, physics=physics, model=icrf, stats=(1, 2))
    with pytest.raises(ValueError, match="continuous"):
        loss.precompute(y * 0.999, t)


def test_loss_std_table_keyword_matches_dense():
    y, t = coded_stack(8, torch.float64, seed=8)
    icrf = _icrf()
    table = 0.003 + 0.01 * torch.linspace(0, 1, 256, dtype=torch.float64)
    auto = RadiometricLinearityLoss()
    got, got_grads = _loss_value_and_grads(auto, icrf, y, t, y_std_table=table)
    assert auto.last_path == "histogram"
    dense = RadiometricLinearityLoss(path="dense")
    want, want_grads = _loss_value_and_grads(dense, icrf, y, t, y_std_table=table)
    assert_parity(got, want, 1e-10)
    for g, w in zip(got_grads, want_grads, strict=True):
        assert_parity(g, w, 1e-10)
    with pytest.raises(ValueError, match="one std per code"):
        auto(
            x_net=icrf(y * 0.999),
            y=y * 0.999,
            physics=SimpleNamespace(exposure_times=t),
            model=icrf,
            y_std_table=table,
        )
