from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from deepinv.physics import GaussianNoise

from deepinv_icrf.data import demo_exposure_times, demo_scene
from deepinv_icrf.functional import consistent_exposures, weighted_radiance_merge
from deepinv_icrf.hdr import linearize, merge_hdr
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack

H, W, N, SIDE = 37, 53, 5, 9
SIGMA = 0.003
BLOCK = (0.30, 0.45, 0.20)  # radiance of the moving block, per channel
CORNERS = [(3, 4), (20, 10), (12, 22), (25, 32), (4, 40)]  # its top-left, per exposure


def _moving_block_stack(device, sigma=SIGMA, moving=True):
    """8-bit sRGB bracket of the demo scene; a block moves between the exposures."""
    times = demo_exposure_times(N, shortest=0.25)
    scene = demo_scene(H, W, channels=3, dynamic_range_stops=6, seed=1)
    physics = ExposureStack(
        times,
        response="srgb",
        noise_model=GaussianNoise(sigma=sigma) if sigma > 0 else None,
    )
    frames, region = [], torch.zeros(H, W, dtype=torch.bool)
    for k in range(N):
        frame = scene.clone()
        if moving:
            y0, x0 = CORNERS[k]
            frame[..., y0 : y0 + SIDE, x0 : x0 + SIDE] = torch.tensor(BLOCK).view(
                1, 3, 1, 1
            )
            region[y0 : y0 + SIDE, x0 : x0 + SIDE] = True
        frames.append(frame)
    y = torch.cat([physics(f)[:, k] for k, f in enumerate(frames)])  # (N, C, H, W)
    truth = frames[N // 2][0]  # the scene as the reference (middle) exposure saw it
    return y.to(device), times.to(device), truth.to(device), region.to(device)


def _rel_error(radiance, truth, region):
    return ((radiance - truth).abs() / truth)[:, region]


def test_deghost_removes_moving_block_ghosts(device):
    y, t, truth, region = _moving_block_stack(device)
    icrf = ICRF.from_response("srgb", channels=3).to(device)
    plain = merge_hdr(y, t, icrf, code_std=SIGMA)
    clean = merge_hdr(y, t, icrf, code_std=SIGMA, deghost=4.0)
    # without deghosting the blocks of the other exposures show through
    assert _rel_error(plain, truth, region).mean() > 1.0
    # with it, the ghost regions hold the reference frame's scene, to the noise level
    err = _rel_error(clean, truth, region)
    assert err.mean() < 0.03 and err.max() < 0.15
    assert _rel_error(clean, truth, ~region).mean() < 0.03


def test_deghost_static_stack(device):
    icrf = ICRF.from_response("srgb", channels=3).to(device)
    # quantisation only: never flagged (the code std is floored at one step), bit-identical
    y, t, _, _ = _moving_block_stack(device, sigma=0.0, moving=False)
    assert torch.equal(merge_hdr(y, t, icrf, deghost=4.0), merge_hdr(y, t, icrf))
    # Gaussian code noise: only rare near-clipped exposures are dropped
    y, t, _, _ = _moving_block_stack(device, moving=False)
    plain = merge_hdr(y, t, icrf, code_std=SIGMA)
    clean = merge_hdr(y, t, icrf, code_std=SIGMA, deghost=4.0)
    changed = (plain != clean).any(dim=0)
    assert changed.float().mean() < 0.02
    assert ((plain - clean).abs() / plain).mean() < 1e-3


def test_deghost_none_is_bit_identical(device):
    y, t, _, _ = _moving_block_stack(device)
    icrf = ICRF.from_response("srgb", channels=3).to(device)
    band = torch.full((3, 64), 1e-3, device=device)
    kwargs = dict(return_std=True, return_saturated=True, band=band, code_std=SIGMA)
    before = merge_hdr(y, t, icrf, **kwargs)
    after = merge_hdr(y, t, icrf, deghost=None, **kwargs)
    for a, b in zip(before, after, strict=True):
        assert torch.equal(a, b)
    expect = weighted_radiance_merge(
        y[None], linearize(y, icrf)[None], t, lower=1 / 255, upper=254 / 255
    )[0]
    assert torch.equal(after[0], expect)
    # numpy codes too, and the std stays finite with deghosting
    codes = (y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    times = t.cpu().numpy()
    np.testing.assert_array_equal(
        merge_hdr(codes, times, icrf), merge_hdr(codes, times, icrf, deghost=None)
    )
    _, std = merge_hdr(codes, times, icrf, return_std=True, deghost=4.0)
    assert np.isfinite(std).all() and (std > 0).all()


def _consistent_reference(e, v, valid, t, reference, threshold):
    """Straightforward loops over numpy arrays."""
    batch, n, channels = e.shape[:3]
    keep = np.ones((batch, n, 1) + e.shape[3:], dtype=bool)
    for b in range(batch):
        order = list(
            np.argsort(t[b], kind="stable")
        )  # exposure indices, shortest first
        r0 = order.index(reference) if reference is not None else n // 2
        candidates = [order[r0]]
        for d in range(1, n):
            candidates += [order[r0 - d]] if r0 - d >= 0 else []
            candidates += [order[r0 + d]] if r0 + d < n else []
        for idx in np.ndindex(*e.shape[3:]):
            px = (slice(None),) + idx
            good = [k for k in candidates if valid[(b, k) + px].any()]
            if not good:
                continue
            r = good[0]
            for k in range(n):
                for c in range(channels):
                    if not (valid[(b, k, c) + idx] and valid[(b, r, c) + idx]):
                        continue
                    bound = threshold * math.sqrt(
                        v[(b, k, c) + idx] + v[(b, r, c) + idx]
                    )
                    if abs(e[(b, k, c) + idx] - e[(b, r, c) + idx]) > bound:
                        keep[(b, k, 0) + idx] = False
    return keep


@pytest.mark.parametrize("reference", [None, 0, 3])
def test_consistent_exposures_matches_loop(device, rng, reference):
    batch, n, channels, height, width = 2, 4, 3, 5, 3
    shape = (batch, n, channels, height, width)
    t = torch.tensor([[0.5, 2.0, 1.0, 4.0], [8.0, 1.0, 2.0, 0.25]], device=device)
    e = 1.0 + 0.05 * torch.randn(shape, generator=rng, device=device)
    e = e.double() + 0.5 * (torch.rand(shape, generator=rng, device=device) < 0.2)
    v = (0.01 + 0.02 * torch.rand(shape, generator=rng, device=device)).double() ** 2
    valid = torch.rand(shape, generator=rng, device=device) < 0.6
    valid[0, :, :, 0, 0] = False  # no valid exposure: everything kept
    valid[1, :, :, 1, 1] = False
    valid[1, 1, 0, 1, 1] = True  # a lone valid exposure
    keep = consistent_exposures(e, v, valid, t, reference=reference, threshold=2.5)
    assert keep.shape == (batch, n, 1, height, width) and keep.dtype == torch.bool
    expect = _consistent_reference(
        e.cpu().numpy(),
        v.cpu().numpy(),
        valid.cpu().numpy(),
        t.cpu().numpy(),
        reference,
        2.5,
    )
    np.testing.assert_array_equal(keep.cpu().numpy(), expect)
    assert 0 < (~keep).sum() < keep.numel() // 2  # the test exercises both outcomes


def test_consistent_exposures_reference_fallback(device):
    # the middle exposure (t = 2) is clipped: the shorter neighbour (t = 1) is the reference
    t = torch.tensor([4.0, 2.0, 1.0, 0.5, 8.0], device=device)
    e = torch.tensor([9.0, 0.0, 1.0, 1.01, 5.0], device=device).view(1, 5, 1, 1, 1)
    valid = torch.tensor([True, False, True, True, True], device=device)
    valid = valid.view(1, 5, 1, 1, 1)
    keep = consistent_exposures(e, torch.full_like(e, 1e-4), valid, t)
    assert keep.flatten().tolist() == [False, True, True, True, False]


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, "4", True])
def test_deghost_bad_threshold(bad):
    y = torch.rand(3, 1, 4, 5)
    with pytest.raises(ValueError, match="`deghost`"):
        merge_hdr(
            y, [1.0, 2.0, 4.0], ICRF.from_response("gamma", channels=1), deghost=bad
        )
    e = torch.rand(1, 3, 1, 4, 5)
    valid = torch.ones_like(e, dtype=torch.bool)
    with pytest.raises(ValueError, match="`threshold`"):
        consistent_exposures(e, e, valid, torch.tensor([1.0, 2.0, 4.0]), threshold=bad)


def test_consistent_exposures_bad_inputs():
    e = torch.rand(1, 3, 2, 4, 5)
    t = torch.tensor([1.0, 2.0, 4.0])
    valid = torch.ones_like(e, dtype=torch.bool)
    with pytest.raises(ValueError, match="`valid`"):
        consistent_exposures(e, e, valid.float(), t)
    with pytest.raises(ValueError, match="`valid`"):
        consistent_exposures(e, e, valid[:, :2], t)
    with pytest.raises(ValueError, match="`variances`"):
        consistent_exposures(e, e[..., :2], valid, t)
    with pytest.raises(ValueError, match="`reference`"):
        consistent_exposures(e, e, valid, t, reference=3)
    with pytest.raises(ValueError, match="`exposure_times`"):
        consistent_exposures(e, e, valid, t[:2])


def test_deghost_lone_reference_takes_its_estimate(device):
    # the short and long exposures saw something else: the middle one's x / t alone
    icrf = ICRF.from_response("gamma", channels=1).to(device)
    t = torch.tensor([0.5, 1.0, 2.0], device=device, dtype=torch.float64)
    y = torch.tensor([0.2, 0.5, 0.3], device=device, dtype=torch.float64)
    y = y.view(3, 1, 1, 1)
    x = linearize(y, icrf)
    radiance, std = merge_hdr(y, t, icrf, return_std=True, deghost=4.0)
    assert torch.allclose(radiance.flatten(), x[1].flatten() / 1.0, rtol=1e-12)
    plain = merge_hdr(y, t, icrf)
    assert not torch.allclose(plain, radiance, rtol=0.05)
    # the same as a merge where only the middle exposure is valid
    alone = merge_hdr(y, t, icrf, return_std=True, lower=0.4, upper=0.6)
    assert torch.allclose(radiance, alone[0], rtol=1e-12)
    assert torch.allclose(std, alone[1], rtol=1e-12)
