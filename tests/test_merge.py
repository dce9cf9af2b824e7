from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepinv_icrf.functional import weighted_radiance_merge_std

B, N, C, H, W = 2, 3, 2, 13, 11
LOWER, UPPER = 1 / 255, 254 / 255


def _std_reference(y, var, t, lower, upper, kind="hat"):
    """Straightforward per-pixel loop over numpy arrays."""
    out = np.zeros((y.shape[0],) + y.shape[2:])
    for b in range(y.shape[0]):
        short, long_ = int(np.argmin(t[b])), int(np.argmax(t[b]))
        for idx in np.ndindex(*y.shape[2:]):
            num, den = 0.0, 0.0
            for k in range(y.shape[1]):
                code = y[(b, k) + idx]
                if not lower <= code <= upper:
                    continue
                if kind == "hat":
                    w = 1.0 - abs(2.0 * code - 1.0)
                else:
                    w = math.exp(-16.0 * (code - 0.5) ** 2)
                num += w**2 * var[(b, k) + idx] / t[b, k] ** 2
                den += w
            if den > 1e-8:
                out[(b,) + idx] = math.sqrt(num) / den
            else:
                k = short if y[(b, short) + idx] > upper else long_
                out[(b,) + idx] = math.sqrt(var[(b, k) + idx]) / t[b, k]
    return out


def _stack(device):
    gen = torch.Generator(device).manual_seed(3)
    y = torch.rand(B, N, C, H, W, generator=gen, device=device, dtype=torch.float64)
    y[0, :, 0, 0, 0] = 1.0  # saturated everywhere: falls back on the shortest exposure
    y[0, :, 1, 2, 3] = 0.0  # black everywhere: falls back on the longest exposure
    # black in the shortest exposure, saturated in the longest: the longest one
    y[1, :, 1, 12, 10] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    y[1, 0, 0, 4, 5] = LOWER  # the valid range is inclusive
    var = torch.rand(B, N, C, H, W, generator=gen, device=device, dtype=torch.float64)
    var = 1e-4 * (var + 0.1)
    t = torch.tensor(
        [[1.0, 0.25, 4.0], [0.3, 0.1, 0.2]], device=device, dtype=torch.float64
    )
    return y, var, t


@pytest.mark.parametrize("kind", ["hat", "gaussian"])
def test_weighted_radiance_merge_std_matches_loop_reference(device, kind):
    y, var, t = _stack(device)
    out = weighted_radiance_merge_std(y, var, t, weights=kind)
    assert out.shape == (B, C, H, W) and out.dtype == torch.float64
    assert out.device.type == device.type
    ref = _std_reference(
        y.cpu().numpy(), var.cpu().numpy(), t.cpu().numpy(), LOWER, UPPER, kind
    )
    np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-6, atol=0)
    # the fallback branch: the shortest exposure (index 1) / the longest one (index 2)
    v = var.cpu()
    assert float(out[0, 0, 0, 0]) == pytest.approx(math.sqrt(v[0, 1, 0, 0, 0]) / 0.25)
    assert float(out[0, 1, 2, 3]) == pytest.approx(math.sqrt(v[0, 2, 1, 2, 3]) / 4.0)
    assert float(out[1, 1, 12, 10]) == pytest.approx(
        math.sqrt(v[1, 0, 1, 12, 10]) / 0.3
    )


def test_weighted_radiance_merge_std_weights_times_and_scaling(device):
    y, var, t = _stack(device)
    out = weighted_radiance_merge_std(y, var, t)
    # a tensor of weights equal to the hat weights, shared (N,) times, and std scaling
    hat = 1.0 - (2.0 * y - 1.0).abs()
    torch.testing.assert_close(weighted_radiance_merge_std(y, var, t, weights=hat), out)
    shared = weighted_radiance_merge_std(y[:1], var[:1], t[0])
    torch.testing.assert_close(shared, out[:1])
    torch.testing.assert_close(weighted_radiance_merge_std(y, 9.0 * var, t), 3.0 * out)
    single = weighted_radiance_merge_std(y.float(), var.float(), t.float())
    assert single.dtype == torch.float32


def test_weighted_radiance_merge_std_rejects_bad_inputs(device):
    y, var, t = _stack(device)
    with pytest.raises(ValueError, match=r"`var_x` to have the shape of `y`"):
        weighted_radiance_merge_std(y, var[:, :2], t)
    with pytest.raises(ValueError, match=r"`y` to have shape \(B, N, C, H, W\)"):
        weighted_radiance_merge_std(y[0, 0, 0], var[0, 0, 0], t)
    with pytest.raises(ValueError, match=r"`exposure_times` to have shape \(3,\)"):
        weighted_radiance_merge_std(y, var, t[:, :2])
    with pytest.raises(ValueError, match="`lower` < `upper`"):
        weighted_radiance_merge_std(y, var, t, lower=0.9, upper=0.1)
    with pytest.raises(ValueError, match="`weights`"):
        weighted_radiance_merge_std(y, var, t, weights="box")
    with pytest.raises(TypeError, match="`var_x`"):
        weighted_radiance_merge_std(y, var.long(), t)
