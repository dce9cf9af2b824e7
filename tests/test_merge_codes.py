r"""Merging and linearising integer codes from per-code tables, tile by tile.

:func:`~deepinv_icrf.functional.weighted_radiance_merge_codes` must give the values of
:func:`~deepinv_icrf.functional.weighted_radiance_merge` and
:func:`~deepinv_icrf.functional.weighted_radiance_merge_std` of the decoded stack (to float
rounding), whatever the layout, tile size, batch and bit depth;
:func:`~deepinv_icrf.functional.lookup_codes` the table at the codes.
"""

from __future__ import annotations

import pytest
import torch

import deepinv_icrf.functional.interp as interp_module
import deepinv_icrf.functional.merge as merge_module
from deepinv_icrf.functional import (
    lookup_codes,
    weighted_radiance_merge,
    weighted_radiance_merge_codes,
    weighted_radiance_merge_std,
)


def _tables(channels, bits, device, dtype, rng):
    levels = 2**bits
    inc = torch.rand(channels, levels - 1, generator=rng, device=device, dtype=dtype)
    x = torch.cat([torch.zeros(channels, 1, device=device, dtype=dtype), inc], 1)
    x = x.cumsum(1) / x.sum(1, keepdim=True)
    var = torch.rand(channels, levels, generator=rng, device=device, dtype=dtype) * 1e-4
    return x, var


def _stack(shape, bits, device, rng):
    codes = torch.randint(0, 2**bits, shape, generator=rng, device=device)
    top = 2**bits - 1
    # pixels saturated everywhere, black everywhere, black then saturated
    codes[:, :, :, 0, 0] = top
    codes[:, :, :, 0, 1] = 0
    codes[:, :2, :, 0, 2] = 0
    codes[:, 2:, :, 0, 2] = top
    return codes


def _reference(codes, times, x, var, bits, weights="hat", lower=None, upper=None):
    r"""The two merges of the decoded stack, and the mask saturated in every exposure."""
    step = 1 / (2**bits - 1)
    lower = step if lower is None else lower
    upper = 1 - step if upper is None else upper
    dtype = x.dtype if x.dtype == torch.float64 else torch.float32
    unit = codes.to(dtype) / (2**bits - 1)
    chan = torch.arange(codes.shape[2], device=codes.device).view(1, 1, -1, 1, 1)
    x_lin = x.expand(codes.shape[2], -1)[chan, codes.long()]
    v_lin = var.expand(codes.shape[2], -1)[chan, codes.long()]
    opts = dict(weights=weights, lower=lower, upper=upper)
    rad = weighted_radiance_merge(unit, x_lin, times, **opts)
    std = weighted_radiance_merge_std(unit, v_lin, times, **opts)
    return rad, std, (unit > upper).all(dim=1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bits", [8, 12])
def test_merge_codes_equals_merge_of_decoded_stack(device, rng, dtype, bits):
    codes = _stack((2, 4, 3, 13, 11), bits, device, rng)
    times = torch.tensor([[1.0, 0.5, 4.0, 2.0], [0.1, 0.2, 0.4, 0.8]], device=device)
    x, var = _tables(3, bits, device, dtype, rng)
    step = 1 / (2**bits - 1)
    opts = dict(lower=step, upper=1 - step)
    rad, std, sat = weighted_radiance_merge_codes(codes, times, x, var, **opts)
    ref_rad, ref_std, ref_sat = _reference(codes, times, x, var, bits)
    assert rad.dtype == dtype and rad.shape == (2, 3, 13, 11)
    torch.testing.assert_close(rad, ref_rad)
    torch.testing.assert_close(std, ref_std)
    assert torch.equal(sat, ref_sat)
    assert bool(sat[:, :, 0, 0].all()) and not bool(sat[:, :, 0, 1:3].any())
    # the fallbacks: shortest exposure where saturated everywhere, else the longest
    short, long = times.argmin(1), times.argmax(1)
    for b in range(2):
        top = 2**bits - 1
        torch.testing.assert_close(rad[b, :, 0, 0], x[:, top] / times[b, short[b]])
        torch.testing.assert_close(rad[b, :, 0, 1], x[:, 0] / times[b, long[b]])


def test_merge_codes_layouts_one_table_and_options(device, rng):
    codes = _stack((1, 3, 3, 17, 9), 8, device, rng)
    times = torch.tensor([0.25, 1.0, 4.0], device=device)
    x, var = _tables(1, 8, device, torch.float32, rng)
    opts = dict(weights="gaussian", lower=0.05, upper=0.9)
    rad, std, sat = weighted_radiance_merge_codes(codes, times, x, var, **opts)
    ref = _reference(codes, times, x, var, 8, **opts)
    for got, want in zip((rad, std, sat), ref, strict=True):
        torch.testing.assert_close(got, want)
    # channels last, as images are decoded: the same values, permuted
    last = codes.permute(0, 1, 3, 4, 2).contiguous()
    out = weighted_radiance_merge_codes(last, times, x, var, channel_dim=-1, **opts)
    for got, want in zip(out, (rad, std, sat), strict=True):
        assert torch.equal(got, want.permute(0, 2, 3, 1))
    # without a variance table: no std, same radiance
    rad2, std2, _ = weighted_radiance_merge_codes(codes, times, x, **opts)
    assert std2 is None and torch.equal(rad2, rad)


def test_merge_codes_do_not_depend_on_the_tiles(device, rng, monkeypatch):
    codes = _stack((1, 5, 3, 21, 19), 8, device, rng).to(torch.uint8)
    times = torch.tensor([0.1, 0.2, 0.4, 0.8, 1.6], device=device)
    x, var = _tables(3, 8, device, torch.float32, rng)
    whole = weighted_radiance_merge_codes(codes, times, x, var)
    monkeypatch.setattr(merge_module, "_tile_elements", lambda device, cpu: cpu)
    for tile in (7, 50, 1000):
        monkeypatch.setattr(merge_module, "_MERGE_TILE_CPU", tile)
        tiled = weighted_radiance_merge_codes(codes, times, x, var)
        for a, b in zip(whole, tiled, strict=True):
            assert torch.equal(a, b)


def test_merge_codes_out_dtype(device, rng):
    codes = _stack((1, 3, 3, 11, 13), 8, device, rng)
    times = torch.tensor([0.5, 1.0, 2.0], device=device)
    x, var = _tables(3, 8, device, torch.float64, rng)
    rad, std, sat = weighted_radiance_merge_codes(codes, times, x, var)
    rad32, std32, sat32 = weighted_radiance_merge_codes(
        codes, times, x, var, out_dtype=torch.float32
    )
    assert rad.dtype == torch.float64 and rad32.dtype == torch.float32
    assert torch.equal(rad32, rad.float())
    # the std's square root is taken in the result's dtype
    torch.testing.assert_close(std32, std.float(), rtol=2e-7, atol=0.0)
    assert torch.equal(sat32, sat)


def test_merge_codes_uint16_codes_from_numpy(rng):
    import numpy as np

    codes = _stack((1, 3, 3, 9, 7), 16, torch.device("cpu"), rng)
    as_np = codes.numpy().astype(np.uint16)
    x, var = _tables(3, 16, torch.device("cpu"), torch.float64, rng)
    times = torch.tensor([1.0, 2.0, 4.0])
    step = 1 / 65535
    got = weighted_radiance_merge_codes(
        torch.from_numpy(as_np), times, x, var, lower=step, upper=1 - step
    )
    ref = _reference(codes, times, x, var, 16)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b)


def test_merge_codes_bad_inputs(device):
    x = torch.rand(3, 256, device=device)
    codes = torch.zeros(1, 2, 3, 4, 4, dtype=torch.uint8, device=device)
    t = torch.tensor([1.0, 2.0], device=device)
    with pytest.raises(TypeError, match="`codes` to be an integer tensor"):
        weighted_radiance_merge_codes(codes.float(), t, x)
    with pytest.raises(ValueError, match=r"`x_table` to have shape \(C, 2\*\*b\)"):
        weighted_radiance_merge_codes(codes, t, x[:, :100])
    with pytest.raises(ValueError, match="`x_table` to have 1 or 3 rows"):
        weighted_radiance_merge_codes(codes, t, x[:2])
    with pytest.raises(ValueError, match="`var_table` to have the shape of `x_table`"):
        weighted_radiance_merge_codes(codes, t, x, x[:1])
    with pytest.raises(ValueError, match="`channel_dim` to index a dimension"):
        weighted_radiance_merge_codes(codes, t, x, channel_dim=1)
    with pytest.raises(ValueError, match="`weights` to be one of"):
        weighted_radiance_merge_codes(codes, t, x, weights="box")
    with pytest.raises(ValueError, match="`lower` < `upper`"):
        weighted_radiance_merge_codes(codes, t, x, lower=0.5, upper=0.5)
    with pytest.raises(ValueError, match="`exposure_times` to have shape"):
        weighted_radiance_merge_codes(codes, t[:1], x)


@pytest.mark.parametrize(
    ("shape", "channel_dim", "channels"),
    [((2, 3, 9, 11), -3, 3), ((4, 9, 11, 3), -1, 3), ((5, 7), 0, 1)],
)
def test_lookup_codes_layouts_and_tiles(
    device, rng, shape, channel_dim, channels, monkeypatch
):
    table = torch.rand(channels, 256, generator=rng, device=device, dtype=torch.float64)
    codes = torch.randint(0, 256, shape, generator=rng, device=device).to(torch.uint8)
    out = lookup_codes(codes, table, channel_dim)
    assert out.dtype == torch.float64 and out.shape == codes.shape
    moved = codes.movedim(channel_dim, 0) if channels > 1 else codes.unsqueeze(0)
    expected = torch.stack([table[c][moved[c].long()] for c in range(moved.shape[0])])
    expected = expected.movedim(0, channel_dim) if channels > 1 else expected[0]
    assert torch.equal(out, expected)
    monkeypatch.setattr(interp_module, "_CPU_TILE", 5)
    monkeypatch.setattr(interp_module, "_GPU_TILE", 5)
    assert torch.equal(lookup_codes(codes, table, channel_dim), expected)


def test_lookup_codes_bad_inputs(device):
    table = torch.rand(3, 16, device=device)
    with pytest.raises(TypeError, match="`codes` to be an integer tensor"):
        lookup_codes(torch.zeros(3, 2, 2, device=device), table)
    with pytest.raises(ValueError, match="`codes` to have 3 channels"):
        lookup_codes(torch.zeros(2, 2, 2, dtype=torch.uint8, device=device), table)
    with pytest.raises(TypeError, match="`table` to be a torch.Tensor"):
        lookup_codes(torch.zeros(3, 2, 2, dtype=torch.uint8), [[0.0, 1.0]])


def test_lookup_codes_empty(device):
    table = torch.rand(3, 16, device=device)
    for shape in ((3, 0), (0, 3, 4)):
        codes = torch.zeros(shape, dtype=torch.uint8, device=device)
        cd = 0 if shape[0] == 3 else 1
        out = lookup_codes(codes, table, channel_dim=cd)
        assert out.shape == shape and out.dtype == table.dtype
