from __future__ import annotations

import numpy as np
import pytest
import torch
from deepinv.physics import GaussianNoise
from hypothesis import given, settings
from hypothesis import strategies as st

from deepinv_icrf import fit_icrf
from deepinv_icrf.data import align_exposures, demo_exposure_times, demo_scene
from deepinv_icrf.data.align import _translate
from deepinv_icrf.functional import (
    auto_quantile,
    curve_rmse,
    median_threshold_bitmap,
    mtb_shift,
    shift_image,
)
from deepinv_icrf.physics import ExposureStack, get_response

H, W = 97, 131
MARGIN = 20
TIMES = demo_exposure_times(5, shortest=0.25)


def _scene() -> torch.Tensor:
    return demo_scene(
        H + 2 * MARGIN, W + 2 * MARGIN, channels=1, dynamic_range_stops=10
    )


def _window(scene: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    r"""The ``(H, W)`` view of the scene moved by (dy, dx): ``shift_image`` of the still view."""
    return scene[..., MARGIN - dy : MARGIN - dy + H, MARGIN - dx : MARGIN - dx + W]


def _shoot(scene, response, sigma, seed):
    torch.manual_seed(seed)
    noise = GaussianNoise(sigma=sigma) if sigma > 0 else None
    return ExposureStack(TIMES, response=get_response(response), noise_model=noise)(
        scene
    )[0].clamp(0, 1)


# ---------------------------------------------------------------- functional
def test_median_threshold_bitmap_matches_numpy(rng, device):
    gray = torch.rand(13, 11, generator=rng, device=device, dtype=torch.float64)
    tb, eb = median_threshold_bitmap(gray, 0.1)
    g = gray.cpu().numpy()
    med = np.sort(g.ravel())[(g.size - 1) // 2]  # lower median
    np.testing.assert_array_equal(tb.cpu().numpy(), g > med)
    np.testing.assert_array_equal(eb.cpu().numpy(), np.abs(g - med) > 0.1)
    tb, _ = median_threshold_bitmap(gray, 0.0, quantile=0.8)
    q = np.sort(g.ravel())[int(0.8 * (g.size - 1))]
    np.testing.assert_array_equal(tb.cpu().numpy(), g > q)


@settings(max_examples=30, deadline=None)
@given(dy=st.integers(-15, 15), dx=st.integers(-13, 13))
def test_shift_image_matches_loops(dy, dx):
    x = torch.arange(13 * 11, dtype=torch.float64).reshape(13, 11) + 1
    out = shift_image(x, dy, dx, fill=-1.0).numpy()
    expect = np.full((13, 11), -1.0)
    for i in range(13):
        for j in range(11):
            if 0 <= i - dy < 13 and 0 <= j - dx < 11:
                expect[i, j] = x[i - dy, j - dx]
    np.testing.assert_array_equal(out, expect)


@pytest.mark.parametrize("response", ["srgb", "filmic"])
@pytest.mark.parametrize("sigma", [0.0, 0.01])
def test_mtb_shift_recovers_known_shifts(response, sigma, device):
    scene = _scene()
    for n, (dy, dx) in enumerate(
        [(0, 0), (1, -1), (-3, 3), (17, -17), (0, 1), (-17, 3)]
    ):
        still = _shoot(_window(scene, 0, 0), response, sigma, 2 * n).to(device)
        moved = _shoot(_window(scene, dy, dx), response, sigma, 2 * n + 1).to(device)
        for k in range(4):  # neighbouring exposures, both orders
            assert mtb_shift(still[k, 0], moved[k + 1, 0]) == (-dy, -dx)
            assert mtb_shift(moved[k + 1, 0], still[k, 0]) == (dy, dx)


def test_mtb_shift_median_and_limits(device):
    gray = _shoot(_window(_scene(), 0, 0), "gamma", 0.0, 0)[4, 0].to(device)
    moved = shift_image(gray, -2, 5)
    assert mtb_shift(gray, moved, quantile=0.5) == (2, -5)
    assert mtb_shift(gray, gray) == (0, 0)
    assert mtb_shift(gray, moved, max_shift=0) == (0, 0)
    # one level: at most one pixel per axis
    assert mtb_shift(gray, moved, max_shift=1) == (1, -1)


def test_auto_quantile_prefers_the_well_exposed_quantile():
    ramp = torch.linspace(0, 1, 1001, dtype=torch.float64).reshape(7, 143)
    assert auto_quantile(ramp, ramp) == 0.5
    assert auto_quantile(ramp**4, ramp**4) == 0.8  # 0.8**4 = 0.41 beats 0.9**4 = 0.66
    assert auto_quantile(ramp ** (1 / 4), ramp ** (1 / 4)) == 0.1


# ---------------------------------------------------------------- align_exposures
SHIFTS = [(2, -1), (0, 3), (0, 0), (-4, 1), (1, 1)]


def _moved_stack(response="srgb", sigma=0.0):
    scene = _scene()
    frames = [
        _shoot(_window(scene, dy, dx), response, sigma, 0)[k : k + 1]
        for k, (dy, dx) in enumerate(SHIFTS)
    ]
    return torch.cat(frames)


def _common_crop(x, dims):
    r"""The region every exposure shows, in still-scene coordinates, from each frame."""
    top = max(0, *(-dy for dy, _ in SHIFTS))
    bottom = H + min(0, *(-dy for dy, _ in SHIFTS))
    left = max(0, *(-dx for _, dx in SHIFTS))
    right = W + min(0, *(-dx for _, dx in SHIFTS))
    out = []
    for k, (dy, dx) in enumerate(SHIFTS):
        # frame k shows still pixel (i, j) at (i + dy, j + dx)
        sl = [slice(None)] * x[k].ndim
        sl[dims[0]] = slice(top + dy, bottom + dy)
        sl[dims[1]] = slice(left + dx, right + dx)
        out.append(x[k][tuple(sl)])
    return out


def test_align_exposures_round_trip_uint8():
    y = _moved_stack()
    codes = np.round(y.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    codes = np.repeat(codes, 3, axis=-1)
    aligned, shifts = align_exposures(codes)
    assert aligned.dtype == np.uint8 and aligned.shape[-1] == 3
    assert shifts.dtype == torch.int64
    assert shifts.tolist() == [[-dy, -dx] for dy, dx in SHIFTS]
    expect = _common_crop(codes, (0, 1))
    for k in range(5):
        np.testing.assert_array_equal(aligned[k], expect[k])
    assert aligned.shape[1:3] == (H - 4 - 2, W - 3 - 1)
    gray, _ = align_exposures(codes[..., 0])
    assert gray.shape == aligned.shape[:3]


def test_align_exposures_tensor_layout_and_times(device):
    y = _moved_stack().to(device, torch.float64)
    aligned, shifts = align_exposures(y)
    assert aligned.device == y.device and aligned.dtype == torch.float64
    assert shifts.tolist() == [[-dy, -dx] for dy, dx in SHIFTS]
    for got, want in zip(aligned, _common_crop(y, (1, 2)), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    # reversed stack with its times: the same shifts, chained in exposure order
    rev = torch.flip(y, dims=[0])
    _, rshifts = align_exposures(rev, exposure_times=TIMES.flip(0))
    assert rshifts.tolist() == shifts.flip(0).tolist()
    # another reference: shifts relative to it
    _, s0 = align_exposures(y, reference=0)
    assert s0.tolist() == (shifts - shifts[0]).tolist()


def test_align_exposures_no_crop_fills_edges():
    y = _moved_stack().double()
    aligned, shifts = align_exposures(y, crop=False)
    assert aligned.shape == y.shape
    x = y.numpy()
    for k in range(5):
        dy, dx = shifts[k].tolist()
        iy = np.clip(np.arange(H) - dy, 0, H - 1)
        ix = np.clip(np.arange(W) - dx, 0, W - 1)
        np.testing.assert_array_equal(aligned[k].numpy(), x[k][:, iy][:, :, ix])


@pytest.mark.parametrize(("response", "seed"), [("srgb", 0), ("filmic", 1)])
def test_fit_icrf_align_recovers_the_still_fit(response, seed):
    # one noisy shot of the larger scene, seen through moved windows: after alignment the
    # stack is exactly the still stack's common crop
    shot = _shoot(_scene(), response, 0.01, seed)
    still = _window(shot, 0, 0)
    moved = torch.cat(
        [_window(shot[k : k + 1], dy, dx) for k, (dy, dx) in enumerate(SHIFTS)]
    )
    truth = get_response(response).icrf_curve(n_points=256, channels=1).double()

    def rmse(icrf):
        return float(curve_rmse(icrf.curve.detach().double(), truth))

    base = rmse(fit_icrf(still, TIMES, progress=False))
    crop = rmse(fit_icrf(still[..., 4 : H - 2, 1 : W - 3], TIMES, progress=False))
    plain = rmse(fit_icrf(moved, TIMES, progress=False))
    fitted = fit_icrf(moved, TIMES, progress=False, align=True)
    assert fitted.fit_report.extra["shifts"] == [[-dy, -dx] for dy, dx in SHIFTS]
    assert rmse(fitted) == pytest.approx(crop, rel=1e-6)
    assert rmse(fitted) < 1.5 * base
    assert plain > 2.5 * base  # the 1-pixel shifts do hurt the unaligned fit


def test_fit_icrf_align_with_refinement_and_uint8():
    shot = _shoot(_scene(), "srgb", 0.01, 0)
    moved = torch.cat(
        [_window(shot[k : k + 1], dy, dx) for k, (dy, dx) in enumerate(SHIFTS)]
    )
    expect = [[-dy, -dx] for dy, dx in SHIFTS]
    refined = fit_icrf(moved, TIMES, progress=False, align=True, refine_exposures=True)
    assert refined.fit_report.extra["shifts"] == expect
    codes = np.round(moved.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
    from_codes = fit_icrf(codes, TIMES, progress=False, align=True)
    assert from_codes.fit_report.extra["shifts"] == expect
    still = fit_icrf(moved, TIMES, progress=False)
    assert "shifts" not in still.fit_report.extra


# ---------------------------------------------------------------- bad inputs
def test_align_bad_inputs():
    y = _moved_stack()
    with pytest.raises(ValueError, match="batch"):
        align_exposures(y[None].repeat(2, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="reference"):
        align_exposures(y, reference=5)
    with pytest.raises(ValueError, match="reference"):
        align_exposures(y, reference=-1)
    with pytest.raises(ValueError, match="tolerance"):
        align_exposures(y, tolerance=-0.1)
    with pytest.raises(ValueError, match="max_shift"):
        align_exposures(y, max_shift=-1)
    with pytest.raises(TypeError, match="crop"):
        align_exposures(y, crop="yes")
    with pytest.raises(ValueError, match="exposure_times"):
        align_exposures(y, exposure_times=[1.0, 2.0])
    with pytest.raises(ValueError, match="exposure_times"):
        align_exposures(y, exposure_times=[1.0, 2.0, -1.0, 3.0, 4.0])
    with pytest.raises(TypeError, match="stack"):
        align_exposures((y * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="stack"):
        align_exposures([1, 2])
    with pytest.raises(ValueError, match="stack"):
        align_exposures(y * 2)
    with pytest.raises(ValueError, match="no region"):
        _translate(y, torch.tensor([[0, 0], [H, 0]]), "NCHW", H, W, crop=True)
    with pytest.raises(ValueError, match="quantile"):
        mtb_shift(y[0, 0], y[1, 0], quantile=1.5)
    with pytest.raises(ValueError, match="quantile"):
        mtb_shift(y[0, 0], y[1, 0], quantile="median")
    with pytest.raises(ValueError, match="image"):
        mtb_shift(y[0, 0], y[1, 0, :-1])
    with pytest.raises(TypeError, match="reference"):
        mtb_shift(y[0, 0].to(torch.int32), y[1, 0])
    with pytest.raises(ValueError, match="tolerance"):
        median_threshold_bitmap(y[0, 0], -1.0)
    with pytest.raises(ValueError, match="batch"):
        fit_icrf(y[None].repeat(2, 1, 1, 1, 1), TIMES[None].repeat(2, 1), align=True)
    with pytest.raises(TypeError, match="align"):
        fit_icrf(y, TIMES, align="yes")


def test_cost_grid_matches_the_candidate_loop(device):
    from deepinv_icrf.functional.align import _cost_grid

    g = torch.Generator().manual_seed(5)
    tb_r, eb_r, tb_i, eb_i = (
        (torch.rand(41, 57, generator=g) > p).to(device) for p in (0.5, 0.2, 0.5, 0.3)
    )
    radius = 6
    grid = _cost_grid(tb_r, eb_r, tb_i, eb_i, radius)
    assert grid.shape == (2 * radius + 1, 2 * radius + 1)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            moved_t = shift_image(tb_i, dy, dx)
            moved_e = shift_image(eb_i, dy, dx, fill=False)
            expected = ((tb_r ^ moved_t) & eb_r & moved_e).sum()
            assert float(grid[radius - dy, radius - dx]) == float(expected)


def test_align_exposures_ignores_a_moving_object_in_the_reference(tmp_path):
    # a bright block in the middle (reference) photo of a small bracket: on a pyramid
    # reduced to a few pixels it outweighed the scene (shifts of 19-23 pixels came out)
    from deepinv_icrf.data import read_exposure_folder, write_synthetic_folder

    folder = write_synthetic_folder(
        tmp_path / "photos",
        n_exposures=5,
        height=120,
        width=160,
        response="srgb",
        noise_sigma=0.005,
        fmt="png",
        shortest=1 / 16,
    )
    stack = read_exposure_folder(folder)
    images = stack.images.copy()
    rng = np.random.default_rng(0)
    rolls = [tuple(int(v) for v in rng.integers(-2, 3, size=2)) for _ in range(5)]
    for k, roll in enumerate(rolls):
        images[k] = np.roll(images[k], roll, axis=(0, 1))
    images[2, 40:70, 60:90] = 200
    _, shifts = align_exposures(images, exposure_times=stack.exposure_times)
    ref = rolls[2]
    assert shifts.tolist() == [[ref[0] - dy, ref[1] - dx] for dy, dx in rolls]
