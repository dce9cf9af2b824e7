r"""The benchmark cases (benchmarks/cases.py, not part of the package) do what they say."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import cases  # noqa: E402

SMALL = dict(height=24, width=32)


def test_at_least_three_families_the_package_does_not_ship():
    from deepinv_icrf.physics import RESPONSE_NAMES

    families = {name.split("-")[0] for name in cases.CURVES}
    assert families == {"film", "poly", "tone", "video"}
    assert not families & set(RESPONSE_NAMES)


@pytest.mark.parametrize("name", sorted(cases.CURVES))
def test_curve_monotone_floor_to_top(name):
    response = cases.CURVES[name]
    x = np.linspace(0.0, 1.0, 20001)
    y = response(np.broadcast_to(x, (3, 1, x.size)), channel_axis=0)[:, 0]
    assert np.all(np.diff(y, axis=-1) > 0)
    floor = np.broadcast_to(response.floor, (3,))
    np.testing.assert_allclose(y[:, 0], floor, atol=1e-12)
    np.testing.assert_allclose(y[:, -1], 1.0, atol=1e-12)
    # beyond saturation the code stays at the top, below zero at the floor
    beyond = response(np.array([[2.0, -1.0]] * 3)[:, None], channel_axis=0)[:, 0]
    np.testing.assert_allclose(beyond, np.stack([np.ones(3), floor], axis=1))


@pytest.mark.parametrize("name", sorted(cases.CURVES))
def test_true_icrf_inverts_the_response(name):
    response = cases.CURVES[name]
    curve = response.icrf_curve(256, channels=3)
    assert curve.shape == (3, 256)
    assert float(curve[:, 0].abs().max()) == 0.0
    assert float((curve[:, -1] - 1).abs().max()) == 0.0
    grid = np.linspace(0.0, 1.0, 256)
    codes = response(curve.numpy()[:, None], channel_axis=0)[:, 0]
    for c in range(3):
        above = grid > np.broadcast_to(response.floor, (3,))[c] + 1e-9
        np.testing.assert_allclose(codes[c, above], grid[above], atol=1e-9)
        # 0 at and below the floor: no exposure gives a darker code
        assert np.all(curve.numpy()[c, ~above] == 0.0)


def test_polynomial_rejects_a_decreasing_inverse():
    with pytest.raises(ValueError, match="increasing polynomial"):
        cases.PolynomialResponse("bad", (-0.2, 0.6, 0.6))


def test_photo_scene_has_the_wanted_dynamic_range():
    scene = cases.make_scene("coffee", 48, 64, channels=3, dynamic_range_stops=14.0)
    assert scene.shape == (3, 48, 64)
    assert scene.max() == pytest.approx(1.0)
    lum = scene.mean(0)
    assert np.log2(lum.max() / np.quantile(lum, 0.001)) == pytest.approx(14.0, abs=0.05)


def test_make_case_is_deterministic_per_seed():
    spec = dict(curve="tone-b", scene="procedural", noise="jpeg-75", times="jitter")
    a = cases.make_case(**spec, seed=3, **SMALL)
    b = cases.make_case(**spec, seed=3, **SMALL)
    c = cases.make_case(**spec, seed=4, **SMALL)
    assert a["images"].dtype == np.uint8 and a["images"].shape == (5, 24, 32, 3)
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(a["true_times"], b["true_times"])
    assert not np.array_equal(a["images"], c["images"])
    assert not np.array_equal(a["true_times"], c["true_times"])
    assert a["name"] == "tone-b/procedural/jpeg-75/jitter/5x1"


def test_noise_does_not_change_scene_or_times():
    a = cases.make_case("film-a", "chelsea", "none", "jitter", seed=1, **SMALL)
    b = cases.make_case("film-a", "chelsea", "shot", "jitter", seed=1, **SMALL)
    np.testing.assert_array_equal(a["true_times"], b["true_times"])
    np.testing.assert_array_equal(a["radiance"], b["radiance"])
    assert not np.array_equal(a["images"], b["images"])


def test_jitter_and_rounded_times_stay_within_ten_percent():
    for seed in range(5):
        jit = cases.make_case("poly-a", "rocket", "none", "jitter", seed=seed, **SMALL)
        ratio = jit["listed_over_true"]
        assert np.all(np.abs(ratio - 1) <= 1 / 0.9 - 1) and np.ptp(ratio) > 0.01
    rounded = cases.make_case("poly-a", "rocket", "none", "rounded", 7, **SMALL)
    # true times are powers of two, listed the shutter series (1/60 for 1/64)
    assert np.all(np.log2(rounded["true_times"]) % 1 == 0)
    assert 1 / 60 in rounded["listed_times"].tolist()
    assert np.all(np.abs(rounded["listed_over_true"] - 1) < 0.07)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_plateau_frames_are_equally_bright_while_listed_times_double(seed):
    kw = dict(
        curve="video-a", scene="astronaut", times="plateau", exposures=7, seed=seed
    )
    clean = cases.make_case(noise="none", **kw, **SMALL)
    listed, true = clean["listed_times"], clean["true_times"]
    np.testing.assert_allclose(listed[1:] / listed[:-1], 2.0)
    stuck = np.flatnonzero(np.isclose(true[1:], true[:-1]))
    assert stuck.size >= 1 and clean["wrong_steps"] == stuck.tolist()
    run = np.arange(stuck[0], stuck[-1] + 2)
    assert np.all(np.diff(stuck) == 1)  # one run of consecutive frames
    # listed times double across the run: the frames are wrong by 2x, 4x, ...
    assert clean["listed_over_true"][run[-1]] >= 2.0
    # noise-free: the stuck frames are identical images; noisy: equal mean brightness
    for k in run[1:]:
        np.testing.assert_array_equal(clean["images"][k], clean["images"][run[0]])
    noisy = cases.make_case(noise="gauss-0.01", **kw, **SMALL)
    means = noisy["images"].reshape(7, -1).mean(1)
    assert np.ptp(means[run]) < 0.5
    others = np.setdiff1d(np.arange(7), run)
    assert np.min(np.abs(means[others][:, None] - means[run][None])) > 3.0


def test_grid_and_selection():
    quick, full = cases.case_grid("quick"), cases.case_grid("full")
    assert len(quick) == 8 and len(full) == 24
    assert {c["curve"].split("-")[0] for c in quick} == {
        "film",
        "poly",
        "tone",
        "video",
    }
    assert {c["times"] for c in full} == set(cases.TIME_SCENARIOS)
    assert {(c["exposures"], c["stops"]) for c in full} >= {
        (3, 1.0),
        (9, 1.0),
        (5, 2.0),
    }
    assert set(cases.SCENES) <= {c["scene"] for c in full}
    picked = cases.select_cases(full, "family=film;times=plateau")
    assert [cases.case_name(c) for c in picked] == [
        "film-c/astronaut/jpeg-90/plateau/9x1",
        "film-a/rocket/shot/plateau-jitter/3x1",
    ]
    assert cases.select_cases(full, "all") == full
    with pytest.raises(ValueError, match="Expected `cases` as 'key=a,b;key=c'"):
        cases.select_cases(full, "colour=red")
