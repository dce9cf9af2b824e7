from __future__ import annotations

import copy
import pickle

import deepinv as dinv
import numpy as np
import pytest
import torch

from deepinv_icrf.functional import weighted_radiance_merge
from deepinv_icrf.functional.merge import merge_weights
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack, get_response

B, C, H, W = 2, 3, 13, 11


def _scene(device, dtype=torch.float32, seed=0):
    gen = torch.Generator(device).manual_seed(seed)
    # log-uniform radiance over two decades
    return torch.exp(
        torch.empty(B, C, H, W, device=device, dtype=dtype).uniform_(
            -5.0, 0.0, generator=gen
        )
    )


def test_exposure_stack_output_shape_and_codes(device):
    t = torch.tensor([0.5, 1.0, 2.0, 4.0], device=device)
    physics = ExposureStack(t, response="srgb", bit_depth=8, device=device)
    y = physics(_scene(device))
    assert y.shape == (B, 4, C, H, W)
    assert y.dtype == torch.float32 and y.device.type == device.type
    assert torch.equal(y, torch.round(y * 255) / 255)
    assert y.min() >= 0 and y.max() <= 1
    assert isinstance(physics, dinv.physics.Physics)


@pytest.mark.parametrize("name", ["srgb", "gamma", "filmic", "exp", "log"])
@pytest.mark.parametrize("bit_depth", [8, 12, None])
def test_exposure_stack_noiseless_matches_reference(device, name, bit_depth):
    times = [0.25, 1.0, 3.0]
    physics = ExposureStack(
        times, response=name, bit_depth=bit_depth, device=device, dtype=torch.float64
    )
    x = _scene(device, torch.float64) * 2.0
    y = physics(x).cpu().numpy()
    f = get_response(name)
    xn = x.cpu().numpy()
    for k, t in enumerate(times):
        v = torch.from_numpy(np.clip(t * xn, 0.0, 1.0))
        code = f(v).numpy()
        if bit_depth is not None:
            levels = 2**bit_depth - 1
            code = np.round(np.clip(code, 0.0, 1.0) * levels) / levels
        np.testing.assert_array_equal(y[:, k], code)


def test_exposure_stack_per_batch_exposure_times(device):
    physics = ExposureStack(
        [1.0, 2.0], response="gamma", bit_depth=None, device=device, dtype=torch.float64
    )
    x = _scene(device, torch.float64)
    per_batch = torch.tensor(
        [[0.5, 1.0, 2.0], [0.1, 0.2, 0.4]], dtype=torch.float64, device=device
    )
    physics.update(exposure_times=per_batch)
    assert physics.exposure_times.shape == (2, 3)
    y = physics(x)
    assert y.shape == (B, 3, C, H, W)
    for b in range(B):
        for k in range(3):
            ref = torch.clamp(per_batch[b, k] * x[b], 0, 1) ** (1 / 2.2)
            assert torch.allclose(y[b, k], ref, rtol=1e-12, atol=1e-14)
    physics.update(exposure_times=torch.tensor([4.0, 1.0]))
    assert (
        physics.exposure_times.shape == (2,)
        and physics.exposure_times.dtype == torch.float64
    )
    y = physics(x)
    assert torch.allclose(y[:, 0], torch.clamp(4.0 * x, 0, 1) ** (1 / 2.2), rtol=1e-12)
    y_call = physics.A(
        x, exposure_times=torch.tensor([0.3, 0.6], dtype=torch.float64, device=device)
    )
    assert torch.allclose(
        physics.exposure_times,
        torch.tensor([0.3, 0.6], dtype=torch.float64, device=device),
    )
    assert torch.allclose(
        y_call[:, 1], torch.clamp(0.6 * x, 0, 1) ** (1 / 2.2), rtol=1e-12
    )


def test_exposure_stack_rejects_mismatched_batch(device):
    physics = ExposureStack(torch.ones(3, 2).cumsum(1), device=device)
    with pytest.raises(ValueError, match="`exposure_times` to have shape"):
        physics(_scene(device))


@pytest.mark.parametrize(
    ("times", "match"),
    [
        ([1.0], "N >= 2"),
        ([[[1.0, 2.0]]], "shape"),
        ([1.0, 0.0], "> 0"),
        ([1.0, -2.0], "> 0"),
        ([1.0, float("nan")], "finite"),
        ([1.0, float("inf")], "finite"),
    ],
)
def test_exposure_stack_rejects_bad_exposure_times(device, times, match):
    with pytest.raises(ValueError, match=f"`exposure_times`.*{match}"):
        ExposureStack(times, device=device)
    physics = ExposureStack([1.0, 2.0], device=device)
    with pytest.raises(ValueError, match=f"`exposure_times`.*{match}"):
        physics.update(exposure_times=torch.tensor(times, device=device))
    assert physics.exposure_times.tolist() == [1.0, 2.0]


def test_exposure_stack_to_moves_every_buffer(device):
    physics = ExposureStack(
        [1.0, 2.0],
        response=get_response("gamma", gamma=(2.0, 2.2, 2.4)),
        noise_model=dinv.physics.GaussianNoise(sigma=0.01),
        y_std=torch.full((1, 2, 3, 1, 1), 0.01),
    )
    physics.to(device)
    for name, buf in physics.named_buffers():
        assert buf.device.type == device.type, name
    names = {n for n, _ in physics.named_buffers()}
    assert {
        "exposure_times",
        "y_std",
        "response_module.gamma",
        "noise_model.sigma",
    } <= names
    assert physics(_scene(device)).device.type == device.type


def test_exposure_stack_noise_is_on_codes_and_quantised(device):
    gen = torch.Generator(device).manual_seed(0)
    noise = dinv.physics.GaussianNoise(sigma=0.02, rng=gen)
    physics = ExposureStack(
        [0.5, 2.0], response="srgb", noise_model=noise, device=device
    )
    x = _scene(device)
    clean = physics.A(x)
    y = physics(x)
    assert torch.equal(y, torch.round(y * 255) / 255)
    resid = (y - clean)[(clean > 0.1) & (clean < 0.9)]
    assert 0.015 < resid.std().item() < 0.025
    assert y.min() >= 0 and y.max() <= 1


def test_exposure_stack_y_std_is_an_updatable_buffer(device):
    physics = ExposureStack([1.0, 2.0], device=device)
    assert physics.y_std is None
    std = torch.full((B, 2, C, H, W), 0.01, device=device)
    physics.update(y_std=std)
    assert torch.equal(physics.y_std, std)
    with pytest.raises(ValueError, match="`y_std` to be >= 0"):
        physics.update(y_std=-std)
    with pytest.raises(ValueError, match="`y_std` to be finite"):
        physics.update(y_std=std * float("nan"))


def test_exposure_stack_pickles_and_deepcopies(device):
    physics = ExposureStack([1.0, 2.0], response="filmic", bit_depth=10, device=device)
    x = _scene(device)
    clone = pickle.loads(pickle.dumps(physics))
    assert torch.equal(clone(x), physics(x))
    assert torch.equal(copy.deepcopy(physics)(x), physics(x))
    assert torch.equal(physics.clone()(x), physics(x))
    assert physics.bit_depth == 10


def test_exposure_stack_accepts_icrf_and_callables(device):
    times = [0.5, 2.0]
    x = _scene(device, torch.float64)
    reference = ExposureStack(
        times, response="gamma", bit_depth=None, device=device, dtype=torch.float64
    )
    icrf = ICRF.from_response(
        "gamma", n_points=4096, dtype=torch.float64, device=device
    )
    for response in (icrf, icrf.response):
        physics = ExposureStack(
            times, response=response, bit_depth=None, device=device, dtype=torch.float64
        )
        assert torch.allclose(physics(x), reference(x), atol=2e-3)
        y = reference(x)
        assert torch.allclose(physics.inverse_response(y), icrf(y))
    assert (
        dict(ExposureStack(times, response=icrf.response).named_modules()).get(
            "response_module"
        )
        is icrf
    )

    def my_gamma(v):
        return v ** (1 / 2.2)

    physics = ExposureStack(
        times, response=my_gamma, bit_depth=None, device=device, dtype=torch.float64
    )
    y = physics(x)
    assert torch.allclose(y, reference(x), rtol=1e-12)
    assert torch.allclose(physics.inverse_response(y), y**2.2, atol=1e-5)
    with pytest.raises(TypeError, match="`response`"):
        ExposureStack(times, response=3.0)
    with pytest.raises(ValueError, match="one of"):
        ExposureStack(times, response="sony")


@pytest.mark.parametrize("name", ["srgb", "filmic", "log"])
def test_exposure_stack_a_dagger_recovers_radiance_16bit(device, name):
    times = torch.tensor([4.0, 0.25, 1.0, 0.0625], device=device)  # any order
    physics = ExposureStack(times, response=name, bit_depth=16, device=device)
    x = _scene(device) * 4.0
    y = physics(x)
    x_hat = physics.A_dagger(y)
    assert x_hat.shape == x.shape
    well = ((y > 0.05) & (y < 0.95)).any(dim=1)
    assert well.float().mean() > 0.9
    rel = ((x_hat - x).abs() / x)[well]
    assert rel.max().item() < 1e-3


def test_exposure_stack_a_dagger_with_tabulated_inverse(device):
    def my_log(v):
        return torch.log1p(50.0 * v) / torch.log1p(torch.tensor(50.0, dtype=v.dtype))

    physics = ExposureStack(
        [0.25, 1.0, 4.0], response=my_log, bit_depth=16, device=device
    )
    x = _scene(device)
    y = physics(x)
    rel = ((physics.A_dagger(y) - x).abs() / x)[((y > 0.05) & (y < 0.95)).any(dim=1)]
    assert rel.max().item() < 1e-3


def _merge_reference(y, x_lin, t, lower, upper):
    y, x_lin, t = y.cpu().numpy(), x_lin.cpu().numpy(), t.cpu().numpy()
    b_, n_ = y.shape[:2]
    out = np.zeros((b_,) + y.shape[2:])
    for b in range(b_):
        tb = t[b] if t.ndim == 2 else t
        short, long_ = int(np.argmin(tb)), int(np.argmax(tb))
        for idx in np.ndindex(*y.shape[2:]):
            num = den = 0.0
            for k in range(n_):
                v = y[(b, k) + idx]
                if lower <= v <= upper:
                    w = 1 - abs(2 * v - 1)
                    num += w * x_lin[(b, k) + idx] / tb[k]
                    den += w
            if den > 1e-8:
                out[(b,) + idx] = num / den
            elif y[(b, short) + idx] > upper:
                out[(b,) + idx] = x_lin[(b, short) + idx] / tb[short]
            else:
                out[(b,) + idx] = x_lin[(b, long_) + idx] / tb[long_]
    return out


def test_weighted_radiance_merge_matches_loop_reference(device):
    gen = torch.Generator(device).manual_seed(4)
    y = torch.rand(2, 4, 3, 5, 3, generator=gen, device=device, dtype=torch.float64)
    y[0, :, 0, 0, 0] = 1.0  # saturated everywhere: shortest
    y[0, :, 1, 0, 0] = 0.0  # black everywhere: longest
    y[1, :, 2, 1, 1] = torch.tensor([0.0, 1.0, 0.0, 1.0], dtype=torch.float64)  # mixed
    y[1, 0, 0, 2, 2] = 1 / 255  # bounds are inclusive
    x_lin = y**2.2
    t = torch.tensor(
        [[2.0, 0.5, 1.0, 4.0], [0.1, 0.3, 0.2, 0.4]], dtype=torch.float64, device=device
    )
    out = weighted_radiance_merge(y, x_lin, t)
    ref = _merge_reference(y, x_lin, t, 1 / 255, 254 / 255)
    np.testing.assert_allclose(out.cpu().numpy(), ref, rtol=1e-12)
    assert out[0, 0, 0, 0].item() == pytest.approx(1.0 / 0.5)
    assert out[0, 1, 0, 0].item() == 0.0
    shared = weighted_radiance_merge(y[:1], x_lin[:1], t[0])
    assert torch.equal(shared, out[:1])


def test_weighted_radiance_merge_weights_and_errors(device):
    y = torch.rand(1, 3, 2, 4, 5, device=device)
    t = torch.tensor([1.0, 2.0, 4.0], device=device)
    x = y / 2
    hat = weighted_radiance_merge(y, x, t)
    assert torch.allclose(weighted_radiance_merge(y, x, t, weights="hat"), hat)
    custom = weighted_radiance_merge(y, x, t, weights=merge_weights(y, "gaussian"))
    assert torch.allclose(weighted_radiance_merge(y, x, t, weights="gaussian"), custom)
    with pytest.raises(ValueError, match="`weights`"):
        weighted_radiance_merge(y, x, t, weights="box")
    with pytest.raises(ValueError, match="`exposure_times` to have shape"):
        weighted_radiance_merge(y, x, torch.ones(2, device=device))
    with pytest.raises(ValueError, match="`x_lin` to have the shape"):
        weighted_radiance_merge(y, x[:, :2], t)
    with pytest.raises(ValueError, match="`lower` < `upper`"):
        weighted_radiance_merge(y, x, t, lower=0.9, upper=0.1)
