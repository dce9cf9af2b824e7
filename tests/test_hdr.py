from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepinv_icrf.data import SyntheticExposureStackDataset
from deepinv_icrf.hdr import linearize, merge_hdr, save_radiance, tonemap
from deepinv_icrf.io import read_image
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack

N, C, H, W = 3, 3, 13, 11
L = 256


def _gamma_curve(gammas=(2.0, 2.2, 2.5), n_points=L):
    grid = np.linspace(0.0, 1.0, n_points)
    return np.stack([grid**g for g in gammas])


def _codes_stack(seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 256, size=(N, H, W, C)).astype(np.uint8)
    codes[:, 0, 0, :] = 255  # saturated in every exposure
    codes[:, 0, 1, :] = 0  # black in every exposure
    codes[0, 0, 2, :], codes[1:, 0, 2, :] = 0, 255  # black, then saturated
    return codes


def _reference_merge(codes, times, curve, band=None, code_std=0.0):
    r"""Straightforward per-pixel loops: radiance, std and saturation flags."""
    n, h, w, c = codes.shape
    top = 255.0
    lower, upper = 1 / top, 1 - 1 / top
    n_points = curve.shape[1]
    grid = np.linspace(0.0, 1.0, n_points)
    var_y = (1 / top) ** 2 / 12 + code_std**2
    rad = np.zeros((h, w, c))
    std = np.zeros((h, w, c))
    sat = np.zeros((h, w, c), bool)
    short, long_ = int(np.argmin(times)), int(np.argmax(times))
    for i in range(h):
        for j in range(w):
            for ch in range(c):
                num = den = var = 0.0
                est, sd = [], []
                for k in range(n):
                    y = codes[k, i, j, ch] / top
                    x = np.interp(y, grid, curve[ch])
                    knot = int(round(y * (n_points - 1)))
                    if knot == 0:
                        slope = curve[ch, 1] - curve[ch, 0]
                    elif knot == n_points - 1:
                        slope = curve[ch, -1] - curve[ch, -2]
                    else:
                        slope = (curve[ch, knot + 1] - curve[ch, knot - 1]) / 2
                    slope *= n_points - 1
                    v = slope**2 * var_y
                    if band is not None:
                        v += (
                            np.interp(y, np.linspace(0, 1, band.shape[1]), band[ch])
                            ** 2
                        )
                    wk = 1 - abs(2 * y - 1) if lower <= y <= upper else 0.0
                    num += wk * x / times[k]
                    den += wk
                    var += wk**2 * v / times[k] ** 2
                    est.append(x / times[k])
                    sd.append(math.sqrt(v) / times[k])
                if den > 1e-8:
                    rad[i, j, ch] = num / den
                    std[i, j, ch] = math.sqrt(var) / den
                else:
                    pick = short if codes[short, i, j, ch] / top > upper else long_
                    rad[i, j, ch] = est[pick]
                    std[i, j, ch] = sd[pick]
                if all(codes[k, i, j, ch] / top > upper for k in range(n)):
                    sat[i, j, ch] = True
                    std[i, j, ch] = math.inf
    return rad, std, sat


# ---------------------------------------------------------------- linearize
def test_linearize_numpy_matches_interpolation():
    curve = _gamma_curve()
    codes = _codes_stack()
    x = linearize(codes, torch.from_numpy(curve))
    assert x.shape == codes.shape and x.dtype == np.float32
    grid = np.linspace(0, 1, L)
    for ch in range(C):
        expect = np.interp(codes[..., ch] / 255.0, grid, curve[ch])
        np.testing.assert_allclose(x[..., ch], expect, rtol=1e-6, atol=1e-7)


def test_linearize_uint16_and_tensor_layouts(device):
    icrf = ICRF.from_response("gamma", channels=3, dtype=torch.float64).to(device)
    rng = np.random.default_rng(1)
    codes16 = rng.integers(0, 65536, size=(H, W, C)).astype(np.uint16)
    x16 = linearize(codes16, icrf)
    grid = np.linspace(0, 1, L)
    expect = np.interp(codes16 / 65535.0, grid, grid**2.2)  # between the curve's knots
    np.testing.assert_allclose(x16, expect, rtol=1e-5, atol=1e-7)
    y = torch.rand(2, N, C, H, W, dtype=torch.float64, device=device)
    out = linearize(y, icrf)
    assert out.device == y.device and out.shape == y.shape
    torch.testing.assert_close(out, icrf(y))


def test_linearize_bad_inputs():
    icrf = ICRF(channels=3, n_points=8)
    with pytest.raises(ValueError, match="3 channel"):
        linearize(np.zeros((4, 5, 1), np.uint8), icrf)
    with pytest.raises(TypeError, match="uint8/uint16"):
        linearize(np.zeros((4, 5, 3), np.float32), icrf)
    with pytest.raises(TypeError, match="float tensor"):
        linearize(torch.zeros(3, 4, 5, dtype=torch.int64), icrf)
    with pytest.raises(ValueError, match=r"\[0.0, 1.0\]"):
        linearize(torch.full((3, 4, 5), 2.0), icrf)
    with pytest.raises(TypeError, match="an ICRF, an ICRFFile or a float curve"):
        linearize(torch.zeros(3, 4, 5), "gamma")


# ---------------------------------------------------------------- merge: parity
@pytest.mark.parametrize("with_band", [False, True])
def test_merge_matches_reference_loops(with_band):
    curve = _gamma_curve()
    codes = _codes_stack()
    times = np.array([0.5, 0.125, 2.0])  # any order
    band = None
    if with_band:
        band = 0.002 + 0.01 * np.linspace(0, 1, 33) ** 2 * np.array(
            [[1.0], [2.0], [0.5]]
        )
    rad, std, sat = _reference_merge(codes, times, curve, band=band, code_std=0.01)
    y = torch.from_numpy(codes.astype(np.float64) / 255).permute(0, 3, 1, 2)
    got_rad, got_std, got_sat = merge_hdr(
        y,
        torch.from_numpy(times),
        torch.from_numpy(curve),
        return_std=True,
        return_saturated=True,
        band=None if band is None else torch.from_numpy(band),
        code_std=0.01,
    )
    assert got_rad.shape == (C, H, W) and got_rad.dtype == torch.float64
    np.testing.assert_allclose(got_rad.permute(1, 2, 0).numpy(), rad, rtol=1e-6)
    np.testing.assert_allclose(got_std.permute(1, 2, 0).numpy(), std, rtol=1e-6)
    np.testing.assert_array_equal(got_sat.permute(1, 2, 0).numpy(), sat)
    # numpy codes in, numpy (H, W, C) float32 out, same values
    np_rad, np_std = merge_hdr(
        codes,
        times,
        torch.from_numpy(curve),
        return_std=True,
        code_std=0.01,
        band=None if band is None else torch.from_numpy(band),
    )
    assert np_rad.shape == (H, W, C) and np_rad.dtype == np.float32
    np.testing.assert_allclose(np_rad, rad, rtol=1e-5)
    np.testing.assert_allclose(np_std, std, rtol=1e-5)


def test_merge_band_adds_in_quadrature():
    curve = torch.from_numpy(_gamma_curve())
    codes = _codes_stack(3)
    times = [0.25, 0.5, 1.0]
    _, s0 = merge_hdr(codes, times, curve, return_std=True)
    _, s_none = merge_hdr(codes, times, curve, return_std=True, band=torch.zeros(3, L))
    np.testing.assert_array_equal(s0, s_none)
    _, s1 = merge_hdr(
        codes, times, curve, return_std=True, band=torch.full((1, 5), 0.01)
    )
    finite = np.isfinite(s0)
    assert np.all(s1[finite] > s0[finite])


# ---------------------------------------------------------------- merge: recovery
@pytest.mark.parametrize(
    ("bits", "n_points", "median_tol", "max_tol"),
    [(16, 4096, 5e-5, 1e-3), (8, 256, 6e-3, 5e-2)],
)
def test_merge_recovers_known_radiance(bits, n_points, median_tol, max_tol, device):
    data = SyntheticExposureStackDataset(
        n_exposures=9,
        height=37,
        width=41,
        response="srgb",
        bit_depth=bits,
        noise_sigma=0.0,
    )
    y, t = data[0]
    x = data.radiance(0).double().to(device)
    icrf = ICRF.from_response(
        "srgb", n_points=n_points, bit_depth=bits, dtype=torch.float64
    ).to(device)
    rad, sat = merge_hdr(y.double().to(device), t, icrf, return_saturated=True)
    assert rad.device.type == device.type and not bool(sat.any())
    rel = ((rad - x).abs() / x).flatten()
    # measured: 16-bit median 7.6e-6, max 1.4e-4; 8-bit median 3.8e-3, max 3.2e-2
    assert float(rel.median()) < median_tol
    assert float(rel.max()) < max_tol


def test_merge_std_is_calibrated_on_noisy_stack():
    noise = 0.01
    data = SyntheticExposureStackDataset(
        n_exposures=7, height=48, width=64, response="srgb", noise_sigma=noise
    )
    y, t = data[0]
    x = data.radiance(0).double()
    icrf = ICRF.from_response("srgb", dtype=torch.float64)
    rad, std, sat = merge_hdr(
        y.double(), t, icrf, return_std=True, return_saturated=True, code_std=noise
    )
    z = ((rad - x) / std)[~sat]
    assert z.numel() > 5000
    # the predicted std matches the spread of the actual errors
    assert 0.8 < float(z.std()) < 1.3


def test_merge_saturation_handling():
    times = torch.tensor([0.25, 1.0, 4.0])
    x = torch.full((1, 1, 2, 3), 0.1, dtype=torch.float64)
    x[..., 0, 0] = 10.0  # brighter than 1 / t_min: saturated in every exposure
    x[..., 0, 1] = 1.0  # saturated in the two longer exposures only
    y = ExposureStack(times, response="gamma", bit_depth=8, dtype=torch.float64)(x)[0]
    icrf = ICRF.from_response("gamma", channels=1, dtype=torch.float64)
    rad, std, sat = merge_hdr(y, times, icrf, return_std=True, return_saturated=True)
    assert sat.tolist() == [[[True, False, False], [False, False, False]]]
    # the shortest exposure's estimate, ICRF(1) / t_min: a lower bound, flagged by inf std
    assert float(rad[0, 0, 0]) == pytest.approx(4.0)
    assert math.isinf(float(std[0, 0, 0]))
    assert float(rad[0, 0, 1]) == pytest.approx(1.0, rel=0.01)
    assert math.isfinite(float(std[0, 0, 1])) and float(std[0, 0, 1]) > 0
    torch.testing.assert_close(
        rad[0, 1], torch.full((3,), 0.1, dtype=torch.float64), rtol=0.01, atol=0
    )


def test_merge_batched_with_per_sample_times(device):
    curve = torch.from_numpy(_gamma_curve()).to(device)
    y = torch.rand(2, N, C, 5, 4, dtype=torch.float64, device=device)
    times = torch.tensor([[1.0, 2.0, 4.0], [0.5, 0.1, 0.2]], dtype=torch.float64)
    rad, std = merge_hdr(y, times, curve, return_std=True)
    assert rad.shape == (2, C, 5, 4) and std.shape == (2, C, 5, 4)
    for b in range(2):
        single, single_std = merge_hdr(y[b], times[b], curve, return_std=True)
        torch.testing.assert_close(rad[b], single)
        torch.testing.assert_close(std[b], single_std)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"exposure_times": [1.0, 2.0]}, ValueError, "exposure_times"),
        ({"exposure_times": [1.0, -2.0, 4.0]}, ValueError, "exposure_times"),
        ({"exposure_times": [1.0, 2.0, 2.0]}, ValueError, "distinct"),
        ({"exposure_times": [1.0, float("nan"), 2.0]}, ValueError, "finite"),
        ({"weights": "box"}, ValueError, "weights"),
        ({"band": torch.zeros(2, 5)}, ValueError, "band"),
        ({"band": torch.full((3, 5), -1.0)}, ValueError, "band"),
        ({"stack": np.zeros((1, 4, 5, 3), np.uint8)}, ValueError, "at least 2"),
        ({"stack": np.zeros((3, 4, 5, 1), np.uint8)}, ValueError, "channel"),
        ({"stack": torch.zeros(3, 3, 4, 5, dtype=torch.int32)}, TypeError, "float"),
        ({"stack": torch.zeros(4, 5)}, ValueError, "shape"),
    ],
)
def test_merge_bad_inputs(kwargs, error, match):
    args = {
        "stack": np.zeros((3, 4, 5, 3), np.uint8),
        "exposure_times": [1.0, 2.0, 4.0],
        "icrf": ICRF(channels=3, n_points=8),
        "return_std": True,
    }
    args.update(kwargs)
    stack, times, icrf = args.pop("stack"), args.pop("exposure_times"), args.pop("icrf")
    with pytest.raises(error, match=match):
        merge_hdr(stack, times, icrf, **args)


# ---------------------------------------------------------------- tonemap and saving
def test_tonemap_gamma_formula_and_layouts():
    rng = np.random.default_rng(4)
    rad = np.exp(rng.normal(0, 2, size=(H, W, C)))
    out = tonemap(rad, method="gamma", percentile=90)
    assert out.shape == (H, W, C) and out.dtype == np.float32
    white = np.sort(rad.ravel())[math.ceil(0.9 * rad.size) - 1]
    np.testing.assert_allclose(out, np.clip(rad / white, 0, 1) ** (1 / 2.2), rtol=1e-6)
    t = tonemap(torch.from_numpy(rad).permute(2, 0, 1), method="gamma", percentile=90)
    np.testing.assert_allclose(t.permute(1, 2, 0).numpy(), out, rtol=1e-6)


def test_tonemap_reinhard_range_and_order(device):
    ramp = torch.logspace(-3, 3, 40, dtype=torch.float64, device=device)
    rad = ramp.view(1, 1, 40).expand(3, 2, 40)
    out = tonemap(rad)
    assert out.shape == rad.shape and out.device == rad.device
    assert float(out.min()) > 0 and float(out.max()) < 1
    assert bool((out[0, 0, 1:] > out[0, 0, :-1]).all())  # order kept, nothing clipped
    lum = ramp  # grey: luminance equals every channel
    log_avg = torch.exp(torch.log(lum + 1e-12).mean())
    lm = 0.18 / log_avg * lum
    torch.testing.assert_close(out[1, 1], (lm / (1 + lm)) ** (1 / 2.2))


def test_tonemap_bad_inputs():
    with pytest.raises(ValueError, match="method"):
        tonemap(np.ones((2, 2, 3)), method="drago")
    with pytest.raises(ValueError, match="radiance"):
        tonemap(np.full((2, 2, 3), -1.0))
    with pytest.raises(ValueError, match="finite"):
        tonemap(torch.full((3, 2, 2), float("inf")))


@pytest.mark.parametrize("ext", [".npy", ".tif", ".hdr"])
def test_save_radiance_round_trip(tmp_path, ext):
    rad = torch.from_numpy(
        np.exp(np.random.default_rng(5).normal(0, 3, size=(C, H, W)))
    )
    save_radiance(tmp_path / f"r{ext}", rad.unsqueeze(0))
    back = read_image(tmp_path / f"r{ext}")
    assert back.shape == (H, W, C)
    expect = rad.permute(1, 2, 0).numpy().astype(np.float32)
    if ext == ".hdr":
        peak = expect.max(axis=-1, keepdims=True)
        assert (
            np.abs(back - expect) / peak
        ).max() <= 1 / 128  # 8-bit mantissa, truncated
    else:
        np.testing.assert_array_equal(back, expect)


def test_save_radiance_bad_inputs_write_nothing(tmp_path):
    with pytest.raises(ValueError, match="NaN or inf"):
        save_radiance(tmp_path / "r.npy", torch.full((3, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="extensions"):
        save_radiance(tmp_path / "r.png", torch.ones(3, 2, 2))
    with pytest.raises(ValueError, match="shape"):
        save_radiance(tmp_path / "r.npy", torch.ones(2, 3, 2, 2))
    with pytest.raises(ValueError, match="float array"):
        save_radiance(tmp_path / "r.npy", np.ones((2, 2, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_save_radiance_exr_round_trip(tmp_path):
    rad = np.random.default_rng(3).uniform(0.0, 40.0, (H, W, C)).astype(np.float32)
    save_radiance(tmp_path / "r.exr", rad)
    np.testing.assert_array_equal(read_image(tmp_path / "r.exr"), rad)
    assert [p.name for p in tmp_path.iterdir()] == ["r.exr"]


def test_merge_blocks_and_code_lookup_agree_with_float_path(monkeypatch):
    import deepinv_icrf.hdr as hdr

    rng = np.random.default_rng(7)
    codes = rng.integers(0, 65536, size=(N, H, W, C)).astype(np.uint16)
    codes[:, 2, 3, :] = 65535
    times = [0.5, 1.0, 2.0]
    icrf = ICRF.from_response("srgb", bit_depth=16, dtype=torch.float64)
    band = torch.full((3, 9), 1e-3, dtype=torch.float64)
    whole = merge_hdr(
        codes, times, icrf, return_std=True, return_saturated=True, band=band
    )
    import deepinv_icrf.functional.merge as fmerge

    # 2 rows per block (the float path) and per tile (the code path)
    monkeypatch.setattr(hdr, "_BLOCK_ELEMENTS", {"cpu": N * C * W * 2, "cuda": 1})
    monkeypatch.setattr(fmerge, "_MERGE_TILE_CPU", C * W * 2)
    blocks = merge_hdr(
        codes, times, icrf, return_std=True, return_saturated=True, band=band
    )
    for a, b in zip(whole, blocks, strict=True):
        np.testing.assert_array_equal(a, b)
    y = torch.from_numpy(codes.astype(np.float64) / 65535).permute(0, 3, 1, 2)
    rad, std, sat = merge_hdr(
        y, times, icrf, return_std=True, return_saturated=True, band=band
    )
    np.testing.assert_allclose(whole[0], rad.permute(1, 2, 0).numpy(), rtol=1e-6)
    np.testing.assert_allclose(whole[1], std.permute(1, 2, 0).numpy(), rtol=1e-5)
    np.testing.assert_array_equal(whole[2], sat.permute(1, 2, 0).numpy())
    assert whole[2][2, 3].all() and np.isinf(whole[1][2, 3]).all()
    # linearize: the code lookup equals interpolating the float codes
    np.testing.assert_allclose(
        linearize(codes, icrf),
        icrf(y).detach().permute(0, 2, 3, 1).numpy(),
        rtol=1e-6,
        atol=1e-9,
    )
