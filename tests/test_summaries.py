r"""The summaries the command line prints, as library functions: fit and merge."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from deepinv_icrf.calibration import (
    FitReport,
    Refinement,
    describe_fit,
    fit_metadata,
    fit_summary,
)
from deepinv_icrf.calibration.summary import (
    REPORT_FIELDS,
    channel_names,
    channel_stats,
)
from deepinv_icrf.functional import check_exposure_ratios
from deepinv_icrf.hdr_summary import (
    describe_radiance,
    radiance_summary,
    recorded_code_std,
)
from deepinv_icrf.models import ICRF


def _codes(channels=3, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.integers(1, 255, size=(3, 7, 5, channels)).astype(np.uint8)
    codes[0, :2] = 0  # black: 2 rows of 7 in 1 of 3 exposures
    codes[2, :1] = 255  # clipped: 1 row
    return codes


# ---------------------------------------------------------------- fit
def test_channel_stats_values():
    curve = torch.stack([torch.linspace(0, 1, 5) ** g for g in (1.0, 2.0, 3.0)])
    stats = channel_stats(curve, _codes())
    assert [s["channel"] for s in stats] == ["R", "G", "B"]
    # on the 5-point grid the curve is interpolated linearly between its knots
    assert stats[0]["icrf_at_0.5"] == 0.5 and stats[0]["equivalent_gamma"] == 1.0
    assert stats[1]["icrf_at_0.5"] == 0.25 and stats[1]["equivalent_gamma"] == 2.0
    assert stats[2]["icrf_at_0.25"] == 0.015625 and stats[2]["icrf_at_0.75"] == 0.421875
    assert stats[1]["icrf_at_0.75"] == 0.5625
    # 3 rows of 3 x 7 rows hold 0 or 255 in every channel
    assert all(s["usable_pixel_fraction"] == round(1 - 3 / 21, 4) for s in stats)


def test_channel_stats_gamma_undefined_and_float_input():
    flat = torch.zeros(1, 4)
    flat[0, -1] = 1.0  # f(1/2) = 0: no equivalent gamma
    y = torch.tensor([0.0, 0.5, 1.0, 0.25]).view(1, 1, 2, 2)  # (N, C, H, W)
    (stats,) = channel_stats(flat, y)
    assert stats["equivalent_gamma"] is None
    assert stats["usable_pixel_fraction"] == 0.5
    assert channel_names(2) == ("0", "1")


def test_channel_stats_bit_depth_and_bad_inputs():
    codes = np.array([0, 512, 1023, 4095], dtype=np.uint16).reshape(1, 2, 2, 1)
    icrf = ICRF(channels=1, n_points=8)
    assert channel_stats(icrf, codes)[0]["usable_pixel_fraction"] == 0.75
    assert channel_stats(icrf, codes, bit_depth=10)[0]["usable_pixel_fraction"] == 0.25
    with pytest.raises(TypeError, match="images"):
        channel_stats(icrf, codes.astype(np.float32))
    with pytest.raises(ValueError, match=r"shape \(N, H, W, C\)"):
        channel_stats(icrf, codes[0])
    with pytest.raises(ValueError, match="2 channel"):
        channel_stats(ICRF(channels=2, n_points=8), _codes())
    diverged = icrf.curve.detach().clone()
    diverged[0, 3] = float("nan")
    with pytest.raises(ValueError, match="diverged"):
        channel_stats(diverged, codes)


def _refined_icrf():
    icrf = ICRF.from_response("gamma", channels=3)
    nominal = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    times = nominal * torch.tensor([1.0, 1.1, 0.9], dtype=torch.float64)
    step = torch.tensor([2.0, 2.0], dtype=torch.float64).log()
    icrf.fit_report = FitReport(
        "code+refined_exposures",
        12,
        0.2,
        None,
        exposure_times=times,
        nominal_exposure_times=nominal,
        refinement=Refinement(exponent=1.02, exponent_std=0.01, prior_std=0.1),
        outliers=[0.02, 0.0, 0.001],
        sigma=[0.01, 0.02, 0.015],
        shifts=[[0, 1], [0, 0], [1, 0]],
        floor=[0.0, 0.01, 0.0],
        time_check=check_exposure_ratios(step, torch.full((2,), 0.01), nominal),
        refit_jump=1.42,
        curve_jump=1.04,
        observed_code_range=[[0.0, 1.0], [0.0, 0.9961], [0.0039, 1.0]],
    )
    return icrf


def test_fit_summary_reads_the_report():
    icrf = _refined_icrf()
    summary = fit_summary(icrf, _codes(), context={"seed": 3, "folder": "/x"})
    assert list(summary)[:2] == ["seed", "folder"]  # the context first, as given
    assert summary["shape"] == [3, 7, 5] and summary["bit_depth"] == 8
    assert summary["band"] is False and len(summary["channels"]) == 3
    np.testing.assert_allclose(summary["refined_exposure_times"], [0.5, 1.1, 1.8])
    assert summary["refinement_exponent"] == 1.02
    assert summary["shifts"] == [[0, 1], [0, 0], [1, 0]]
    assert summary["outlier_fraction"] == [0.02, 0.0, 0.001]
    assert summary["code_std"] == [0.01, 0.02, 0.015]
    assert summary["floor"] == [0.0, 0.01, 0.0]
    assert summary["time_check"]["consistent"] is True
    assert summary["refit_jump"] == 1.42
    assert summary["curve_jump"] == 1.04
    assert summary["observed_code_range"] == [[0.0, 1.0], [0.0, 0.9961], [0.0039, 1.0]]
    assert fit_metadata(icrf) == {
        "code_std": [0.01, 0.02, 0.015],
        "floor": [0.0, 0.01, 0.0],
    }
    # every row of the table is a key of the summary when the report has it
    assert {f.key for f in REPORT_FIELDS} <= set(summary)


def test_fit_summary_without_report_and_plain_fit():
    icrf = ICRF.from_response("gamma", channels=3)
    icrf.metadata = {"camera": "test"}
    summary = fit_summary(icrf, _codes())
    assert not {f.key for f in REPORT_FIELDS} & set(summary)
    assert summary["icrf_metadata"] == {"camera": "test"}
    assert fit_metadata(icrf) == {}
    # a plain fit reports the times it used: they are not "refined"
    icrf.fit_report = FitReport(
        "code", 5, 0.1, None, torch.tensor([1.0, 2.0, 4.0]), None, sigma=[]
    )
    summary = fit_summary(icrf, _codes())
    assert "refined_exposure_times" not in summary and "code_std" not in summary
    with pytest.raises(ValueError, match=r"\['channels'\]"):
        fit_summary(icrf, _codes(), context={"channels": 1})


def test_fit_summary_of_a_real_fit():
    from deepinv_icrf import fit_icrf
    from deepinv_icrf.data import demo_exposure_times, demo_scene
    from deepinv_icrf.physics import ExposureStack

    times = demo_exposure_times(4, shortest=1.0)
    y = ExposureStack(times, response="gamma", bit_depth=8)(demo_scene(24, 30))
    icrf = fit_icrf(y[0], times, progress=False)
    summary = fit_summary(icrf, y[0])
    assert summary["shape"] == [3, 24, 30] and summary["bit_depth"] is None
    sigma = icrf.fit_report.extra["sigma"]
    assert summary["code_std"] == pytest.approx(sigma) and len(sigma) == 3
    for s in summary["channels"]:
        assert 1.9 < s["equivalent_gamma"] < 2.5  # the built-in gamma camera: 2.2


def test_describe_fit_notes():
    icrf = _refined_icrf()
    text = describe_fit(icrf, fit_summary(icrf, _codes()))
    lines = text.splitlines()
    assert lines[0].split() == [
        "exposure",
        "nominal",
        "(s)",
        "refined",
        "(s)",
        "change",
    ]
    # aligned (shifts in the report): no hint to align
    assert "left out 2.0% of the codes as outliers" in text and "--align" not in text
    # both causes are named: a changing scene, and codes beyond the noise model
    assert "scene changed" in text and "compression or grain" in text
    assert lines[-4].split()[:2] == ["channel", "f(0.25)"]
    assert [line.split()[0] for line in lines[-3:]] == ["R", "G", "B"]
    # below the note threshold
    icrf.fit_report = FitReport(
        "code", 1, 0.0, None, None, None, outliers=[0.004, 0, 0]
    )
    text = describe_fit(icrf, fit_summary(icrf, _codes()))
    assert "left out" not in text and "nominal" not in text
    icrf.fit_report = FitReport("code", 1, 0.0, None, None, None, outliers=[0.1, 0, 0])
    assert "try --align" in describe_fit(icrf, fit_summary(icrf, _codes()))
    summary = fit_summary(icrf, _codes(), context={"align": True})
    assert "try --align" not in describe_fit(icrf, summary)


# ---------------------------------------------------------------- merge
def test_radiance_summary_values_and_layouts():
    radiance = np.array(
        [[[0.25, 0.5], [8.0, 1.0]], [[0.0, 0.0], [2.0, -1.0]]], dtype=np.float32
    )
    saturated = np.zeros(radiance.shape, bool)
    saturated[0, 1, 0] = saturated[1, 1, :] = True
    summary = radiance_summary(radiance, saturated)
    assert summary == {
        "height": 2,
        "width": 2,
        "channels": 2,
        "min": -1.0,
        "max": 8.0,
        "stops": 5.0,  # 0.25 .. 8
        "saturated_pixels": 2,
    }
    as_tensor = radiance_summary(
        torch.from_numpy(radiance).movedim(-1, 0),
        torch.from_numpy(saturated).movedim(-1, 0),
    )
    assert as_tensor == summary
    assert radiance_summary(np.zeros((2, 3, 1)))["stops"] == 0.0
    assert "saturated_pixels" not in radiance_summary(radiance)
    assert describe_radiance(summary) == (
        "radiance 2x2 (2 channel(s)), range -1..8 (5.0 stops), "
        "2 pixel(s) saturated in every exposure"
    )
    with pytest.raises(ValueError, match="saturated"):
        radiance_summary(radiance, saturated[:1])
    with pytest.raises(ValueError, match="one image"):
        radiance_summary(radiance[None])
    with pytest.raises(TypeError, match="radiance"):
        radiance_summary([[1.0]])


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ({}, None),
        ({"code_std": 0.02}, 0.02),
        ({"code_std": [0.01, 0.03, 0.02]}, 0.03),
    ],
)
def test_recorded_code_std(metadata, expected):
    icrf = ICRF(channels=3, n_points=4)
    icrf.metadata = metadata
    assert recorded_code_std(icrf) == expected


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([0.01, -0.03, 0.02], r"numbers in \[0, 1\], one per channel, but got '-0.03'"),
        ([0.01, math.inf, 0.02], r"but got 'inf'"),
        (True, r"but got 'True'"),
        ("0.01", r"but got '0.01'"),
        ([], r"to hold 1 or 3 value\(s\) \(one per channel\), but got 0"),
        ([0.01, 0.02], r"but got 2"),
    ],
)
def test_recorded_code_std_refuses_bad_values(value, match):
    # a bad recorded noise is an error, not silently replaced by the default
    icrf = ICRF(channels=3, n_points=4)
    icrf.metadata = {"code_std": value}
    with pytest.raises(ValueError, match=r"the ICRF's metadata `code_std` .*" + match):
        recorded_code_std(icrf)


def test_recorded_code_std_falls_back_to_the_fit_report():
    icrf = ICRF(channels=3, n_points=4)
    icrf.fit_report = FitReport(
        "code", 5, 0.1, None, None, None, sigma=[0.01, 0.04, 0.02]
    )
    assert recorded_code_std(icrf) == 0.04
    icrf.metadata = {"code_std": [0.05]}  # the curve file's value wins
    assert recorded_code_std(icrf) == 0.05


# ---------------------------------------------------------------- observed codes
def _ends(codes: np.ndarray, top: int, share: float) -> tuple[float, float]:
    # written apart from the package: sort every code, count from each end
    flat = np.sort(codes.reshape(-1))
    need = max(1, int(np.ceil(share * flat.size)))
    return flat[need - 1] / top, flat[-need] / top


def _observed(codes, bit_depth=None):
    from deepinv_icrf.calibration.coverage import observed_code_range

    # as the fit report records it
    return np.round(observed_code_range(codes, bit_depth), 4).tolist()


def test_observed_code_range_matches_sorted_codes():
    from deepinv_icrf.calibration.coverage import OBSERVED_SHARE

    rng = np.random.default_rng(3)
    codes = rng.integers(20, 200, size=(4, 60, 50, 3)).astype(np.uint8)
    codes[0, 0, 0, 1] = 255  # one specular pixel does not measure the top
    codes[1, :, :5, 2] = 250  # a tenth of a frame does
    observed = _observed(codes)
    for k, ends in enumerate(observed):
        low, high = _ends(codes[..., k], 255, OBSERVED_SHARE)
        assert ends == [round(low, 4), round(high, 4)]
    assert observed[1][1] < 200 / 255 + 1e-6
    assert observed[2][1] == round(250 / 255, 4)


def test_observed_code_range_of_float_input_and_other_depths():
    y = torch.linspace(0.1, 0.6, 400).view(1, 1, 20, 20)
    ((low, high),) = _observed(y)
    assert abs(low - 0.1) < 1e-3 and abs(high - 0.6) < 1e-3
    codes = np.full((2, 3, 4, 1), 1000, np.uint16)
    codes[0, 0, 0] = 2000  # above a 10-bit range: clipped
    assert _observed(codes, bit_depth=10) == [[round(1000 / 1023, 4), 1.0]]


def test_describe_fit_says_where_the_curve_is_extrapolated():
    icrf = ICRF.from_response("gamma", channels=3)
    full = np.linspace(0, 255, 2 * 30 * 40 * 3).astype(np.uint8).reshape(2, 30, 40, 3)

    def described(codes):
        # the fit report records the codes the photos hold (fit_icrf does it)
        icrf.fit_report = FitReport(
            "code", 1, 0.0, None, None, None, observed_code_range=_observed(codes)
        )
        summary = fit_summary(icrf, codes)
        assert summary["observed_code_range"] == _observed(codes)
        return describe_fit(icrf, summary)

    text = described(full)
    assert "extrapolated" not in text
    dim = (full // 3).astype(np.uint8)  # the brightest frame reaches code 85
    text = described(dim)
    assert "reach code 85 of 255 at most" in text and "darker" not in text
    bright = (full // 3 + 170).astype(np.uint8)  # the darkest code is 170
    text = described(bright)
    assert "no darker than code 170 of 255" in text and "at most" not in text
    # the table still closes the text
    assert text.splitlines()[-4].split()[:2] == ["channel", "f(0.25)"]


def test_plot_shades_the_codes_no_photo_holds(tmp_path):
    from matplotlib.patches import Rectangle

    from deepinv_icrf.plot import plot_icrf

    grid = torch.linspace(0, 1, 64).expand(3, 64)

    def shaded(observed):
        fig = plot_icrf(grid**2.2, path=tmp_path / "f.png", observed=observed)
        spans = [p for p in fig.axes[0].patches if isinstance(p, Rectangle)]
        return sorted(
            (round(p.get_x(), 3), round(p.get_x() + p.get_width(), 3)) for p in spans
        )

    # the union over channels: only codes that no channel reaches are shaded
    assert shaded([[0.0, 0.4], [0.0, 0.42], [0.0, 0.41]]) == [(0.42, 1.0)]
    assert shaded([[0.5, 1.0], [0.3, 1.0], [0.6, 1.0]]) == [(0.0, 0.3)]
    assert shaded([[0.0, 1.0]] * 3) == []
    assert shaded([[0.005, 0.996]] * 3) == []  # slivers are not drawn
    with pytest.raises(ValueError, match="observed"):
        plot_icrf(grid**2.2, observed=[[0.6, 0.4]] * 3)
    with pytest.raises(ValueError, match="observed"):
        plot_icrf(grid**2.2, observed=[[0.0, 1.2]] * 3)
