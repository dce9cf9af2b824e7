"""The least slope of the code fit's response, the curve-jump measure, and the refit of a
curve that jumped (real brackets whose frames disagree with their times)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest
import torch

from deepinv_icrf.functional import curve_jump, fit_code_domain
from deepinv_icrf.functional.codefit import _invert_response, _project

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"


def test_curve_jump_matches_a_loop(device):
    gen = torch.Generator().manual_seed(0)
    curve = torch.rand(2, 256, generator=gen, dtype=torch.float64).cumsum(1) + 0.1
    curve = (curve / curve[:, -1:]).to(device)
    got = curve_jump(curve)
    for c in range(2):
        row = curve[c].tolist()
        want = max(row[i + 1] / row[i] for i in range(64, 239))
        assert float(got[c]) == pytest.approx(want, rel=1e-12)
    assert got.device.type == device.type


def test_curve_jump_flat_zero_and_bad_range():
    curve = torch.linspace(0, 1, 256).expand(1, 256).clone()
    curve[0, 100:] = curve[0, 100:] * 0 + curve[0, 100]  # flat: no jump
    curve[0, 150:] = 1.0  # one jump from the flat level to 1
    assert float(curve_jump(curve)) == pytest.approx(1.0 / float(curve[0, 100]))
    assert float(curve_jump(torch.zeros(1, 256))) == 1.0  # no positive pair
    floor = torch.linspace(0, 1, 256).expand(1, 256).clone()
    floor[0, :100] = 0.0  # 0 up to a floor above code 64: no jump
    assert float(curve_jump(floor)) == pytest.approx(
        float(floor[0, 101] / floor[0, 100])
    )
    assert (
        float(curve_jump(torch.ones(1, 3), 0.5, 0.6)) == 1.0
    )  # fewer than two samples
    with pytest.raises(ValueError, match="`low` < `high`"):
        curve_jump(curve, 0.9, 0.1)
    with pytest.raises(ValueError, match="curve"):
        curve_jump(torch.ones(256))


@pytest.mark.parametrize("kappa", [0.0, 0.05, 0.3])
def test_project_keeps_the_least_log_slope(kappa, device):
    gen = torch.Generator().manual_seed(1)
    knots = torch.rand(3, 32, generator=gen, dtype=torch.float64).to(device)
    knots[:, 0] = torch.tensor([0.0, 0.05, 0.2], dtype=torch.float64)
    out = _project(knots, kappa)
    plain = torch.cummax(knots.clamp(0, 1), dim=1).values
    if kappa == 0.0:
        assert torch.equal(out, plain)
        return
    assert torch.all(out >= plain - 1e-12)  # only lifted
    assert torch.all(out <= 1.0) and torch.equal(out[:, 0], plain[:, 0])
    v = torch.arange(1, 32, dtype=torch.float64, device=device)
    above = (out[:, 1:] - out[:, :1]).log()
    growth = above[:, 1:] - above[:, :-1]
    need = 2.2 * kappa * (v[1:] / v[:-1]).log()
    below_top = out[:, 2:] < 1.0
    assert torch.all((growth >= need - 1e-9) | ~below_top)


def _jump_floor_loop(knots: list[float], max_jump: float) -> list[float]:
    # the rule written as a loop: from the first interval [R_j, R_j+1] (j >= 1) whose upper
    # knot is above code 64, each interval whose lower knot is below code 239 rises at
    # least 1 / (255 j (J^(1/2.2) - 1)); the others only stay monotone
    out = list(knots)
    k = len(out)
    start = next((j for j in range(1, k - 1) if out[j + 1] > 64 / 255), None)
    if start is None:
        return out
    for j in range(start, k - 1):
        rise = (
            1.0 / (255 * j * (max_jump ** (1 / 2.2) - 1.0)) if out[j] < 239 / 255 else 0
        )
        out[j + 1] = min(1.0, max(out[j + 1], out[j] + rise))
    return out


@pytest.mark.parametrize("max_jump", [1.05, 1.10, 1.3])
def test_project_bounds_the_jump_like_a_loop(max_jump, device):
    gen = torch.Generator().manual_seed(3)
    steps = torch.rand(4, 32, generator=gen, dtype=torch.float64)
    steps[:, 8:20] *= 0.02  # a flat stretch over the middle codes
    steps[1, 1:] *= 0.01  # a response that stays below code 64 but for its top knot
    knots = torch.cumsum(steps, 1)
    knots = knots / knots[:, -1:]
    knots[:, 0] = torch.tensor([0.0, 0.0, 0.05, 0.3], dtype=torch.float64)
    knots = torch.cummax(knots, 1).values
    out = _project(knots.to(device), 0.0, max_jump).cpu()
    for c in range(4):
        want = _jump_floor_loop(torch.cummax(knots[c], 0).values.tolist(), max_jump)
        assert out[c].tolist() == pytest.approx(want, abs=1e-12)
    # sampled at every code, the ICRF keeps within the bound (J ** ((j + 1) / j) for a code
    # that straddles knots j >= 16 and j + 1: 1.3108 for 1.3 when written)
    assert float(curve_jump(_invert_response(out, 256)).max()) <= max_jump ** (17 / 16)
    assert float(curve_jump(_invert_response(knots, 256)).max()) > max_jump
    # two knots: no interval to bound
    two = torch.tensor([[0.0, 1.0]], dtype=torch.float64)
    assert torch.equal(_project(two, 0.0, max_jump), two)
    # a response that meets the bound already is left as it is
    srgb_like = (
        torch.linspace(0, 1, 32, dtype=torch.float64).pow(2.2 / 2.4).expand(1, 32)
    )
    assert torch.equal(_project(srgb_like, 0.0, 1.10), _project(srgb_like, 0.0))


def test_fit_code_domain_min_log_slope_checked():
    y = torch.rand(1, 50, 3)
    with pytest.raises(ValueError, match="min_log_slope"):
        fit_code_domain(y, torch.zeros(3), min_log_slope=-0.1)
    with pytest.raises(ValueError, match="min_log_slope"):
        fit_code_domain(y, torch.zeros(3), min_log_slope=True)
    for bad in (1.0, 0.5, math.nan, True, "1.1"):
        with pytest.raises(ValueError, match="max_jump"):
            fit_code_domain(y, torch.zeros(3), max_jump=bad)


def test_fit_code_domain_slope_is_kept_by_the_fit(device):
    # a stack whose second frame is 4x brighter than its time says: the monotone fit goes
    # flat over a stretch (its ICRF jumps), the fit with a least slope much less
    gen = torch.Generator().manual_seed(2)
    radiance = torch.rand(1, 3000, 1, generator=gen, dtype=torch.float64) * 0.9 + 0.01
    times = torch.tensor([0.05, 0.2, 0.4, 1.6])
    stored = times.clone()
    stored[1] = 0.05  # frame 1 is 4x brighter than its listed time
    y = (radiance * times.double()).clamp(0, 1) ** (1 / 2.2)
    y = (y * 255).round() / 255
    plain = fit_code_domain(
        y.float().to(device), stored.log().to(device), iterations=20
    )
    steep = fit_code_domain(
        y.float().to(device), stored.log().to(device), iterations=20, min_log_slope=0.05
    )
    jump_plain = float(curve_jump(plain.curve).max())  # 2.05 when written
    jump_steep = float(curve_jump(steep.curve).max())  # 1.29
    assert jump_plain > 1.5 and jump_steep - 1.0 < 0.5 * (jump_plain - 1.0)


def test_fit_icrf_refits_a_jumping_curve_and_says_so(monkeypatch):
    from deepinv_icrf import fit_icrf
    from deepinv_icrf.calibration import core
    from deepinv_icrf.calibration.summary import describe_fit, fit_summary
    from deepinv_icrf.data import demo_exposure_times, demo_scene
    from deepinv_icrf.physics import ExposureStack

    t = demo_exposure_times(4)
    y = ExposureStack(t, response="gamma")(demo_scene(32, 48, channels=1))
    icrf = fit_icrf(y, t, progress=False, reconstructor=False, max_pixels=600)
    assert icrf.fit_report.refit_jump is None  # a clean stack: no refit
    assert "refit_jump" not in icrf.fit_report.extra
    monkeypatch.setattr(core, "MAX_CURVE_JUMP", 1.0)  # every curve "jumps"
    icrf = fit_icrf(y, t, progress=False, reconstructor=False, max_pixels=600)
    jump = icrf.fit_report.refit_jump
    assert (
        jump is not None and jump > 1.0 and icrf.fit_report.extra["refit_jump"] == jump
    )
    summary = fit_summary(icrf, y[0])
    assert summary["refit_jump"] == pytest.approx(jump)
    text = describe_fit(icrf, summary)
    assert f"jumped x{jump:.2f} between adjacent codes" in text
    assert f"at most x{core.REFIT_MAX_JUMP:.2f} between adjacent codes" in text


def test_a_refit_that_does_not_lower_the_jump_is_dropped(monkeypatch):
    # the minimum slope is for flat stretches; where it leaves the jump as high (or higher),
    # the refit only costs likelihood: the first fit stays, and no refit is reported
    from deepinv_icrf import fit_icrf
    from deepinv_icrf.calibration import core
    from deepinv_icrf.data import demo_exposure_times, demo_scene
    from deepinv_icrf.physics import ExposureStack

    t = demo_exposure_times(4)
    y = ExposureStack(t, response="gamma")(demo_scene(32, 48, channels=1))
    plain = fit_icrf(y, t, progress=False, reconstructor=False, max_pixels=600)
    fit = core.fit_code_domain
    slopes = []

    class Higher:
        def __init__(self, result):
            self._result = result

        def __getattr__(self, name):
            return getattr(self._result, name)

        def code_jump(self, codes=256):
            return self._result.code_jump(codes) * 1.5

    def refit_jumps_higher(*args, **kwargs):
        slopes.append(kwargs["min_log_slope"])
        result = fit(*args, **kwargs)
        return Higher(result) if kwargs["min_log_slope"] > 0 else result

    monkeypatch.setattr(core, "MAX_CURVE_JUMP", 1.0)  # every curve "jumps"
    monkeypatch.setattr(core, "fit_code_domain", refit_jumps_higher)
    icrf = fit_icrf(y, t, progress=False, reconstructor=False, max_pixels=600)
    assert core.REFIT_LOG_SLOPE in slopes  # the refit ran ...
    assert icrf.fit_report.refit_jump is None  # ... and was dropped
    torch.testing.assert_close(icrf.curve, plain.curve, rtol=0, atol=0)
    # the jump of the curve kept is reported, with a note above the bound (here 1.0)
    jump = float(curve_jump(icrf.curve.detach()).max())
    assert icrf.fit_report.curve_jump == pytest.approx(jump, rel=1e-5)
    assert plain.fit_report.curve_jump == pytest.approx(jump, rel=1e-5)
    from deepinv_icrf.calibration.summary import describe_fit, fit_summary

    summary = fit_summary(icrf, y[0])
    assert summary["curve_jump"] == pytest.approx(jump, rel=1e-5)
    assert f"the fitted curve jumps x{jump:.2f} between adjacent codes" in describe_fit(
        icrf, summary
    )
    monkeypatch.setattr(core, "MAX_CURVE_JUMP", 1.10)  # a real bound: nothing to say
    assert "the fitted curve jumps" not in describe_fit(icrf, summary)


def _subset(folder: Path, names: list[str], tmp_path: Path) -> Path:
    rows = {
        r["filename"]: r["exposure_time"]
        for r in csv.DictReader(open(folder / "exposures.csv"))
    }
    out = tmp_path / folder.name
    out.mkdir()
    with open(out / "exposures.csv", "w") as f:
        f.write("filename,exposure_time\n")
        for name in names:
            (out / name).symlink_to(folder / name)
            f.write(f"{name},{rows[name]}\n")
    return out


def test_real_bracket_three_stops_apart_with_wrong_times(tmp_path):
    # desktop every third frame: 3 stops apart, the last two listed 4.5x and 14x too long.
    # Read through a curve bent by those times, the right x8 steps came out x12-x14, the
    # fit at the times so implied jumped x2.5 between adjacent codes and its refit x1.18.
    # The check takes the common power of the read steps from the steps that agree: the
    # right steps stay x8 and the curve keeps every jump within the x1.10
    from deepinv_icrf import fit_icrf
    from deepinv_icrf.data import read_exposure_folder

    folder = REAL / "desktop"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (shared data folder not present)")
    names = [f"DSC_01{k:02d}.png" for k in (16, 13, 10, 7, 4)]
    stack = read_exposure_folder(_subset(folder, names, tmp_path))
    with pytest.warns(UserWarning, match="listed exposure times disagree"):
        icrf = fit_icrf(
            stack.images, stack.exposure_times, progress=False, reconstructor=False
        )
    assert float(curve_jump(icrf.curve.detach()).max()) <= 1.10
    check = icrf.fit_report.time_check
    assert check.disagreeing_steps == [(2, 3), (3, 4)]  # the stack is read by time
    assert check.suspect_frames == [3, 4]
    refined = icrf.fit_report.exposure_times.double()
    assert math.isclose(float(refined[1] / refined[0]), 8.0, rel_tol=0.05)
    assert math.isclose(float(refined[2] / refined[1]), 8.0, rel_tol=0.05)
    # the truth from the one-stop stack: x1.78 and x2.56
    assert 1.4 < float(refined[3] / refined[2]) < 2.2
    assert 2.0 < float(refined[4] / refined[3]) < 3.0


@pytest.mark.parametrize("n_points", [4, 16, 256])
def test_jump_is_judged_at_every_code_whatever_n_points(n_points):
    # a coarse curve's adjacent samples are far apart: they are not a jump, and a clean
    # stack is never refitted
    from deepinv_icrf import fit_icrf
    from deepinv_icrf.data import demo_exposure_times, demo_scene
    from deepinv_icrf.physics import ExposureStack

    t = demo_exposure_times(4)
    y = ExposureStack(t, response="gamma")(demo_scene(32, 48, channels=1))
    icrf = fit_icrf(
        y, t, progress=False, reconstructor=False, n_points=n_points, max_pixels=600
    )
    assert icrf.curve.shape[-1] == n_points
    assert icrf.fit_report.refit_jump is None


def test_real_bracket_through_jpeg_keeps_every_jump(tmp_path):
    # the Memorial Church scans saved as JPEG (quality 80, as a user might pass them on):
    # the blue channel's fit goes flat near code 175 (x1.46 between adjacent codes), and
    # the refit with a least log-slope alone still jumped x1.111; the refit's bound on the
    # ratio of adjacent codes keeps it within x1.10
    import io

    import numpy as np
    from PIL import Image

    from deepinv_icrf import fit_icrf
    from deepinv_icrf.data import read_exposure_folder

    folder = REAL / "memorial"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (shared data folder not present)")
    stack = read_exposure_folder(folder)
    frames = []
    for image in stack.images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="JPEG", quality=80)
        frames.append(np.asarray(Image.open(io.BytesIO(buffer.getvalue()))))
    icrf = fit_icrf(
        np.stack(frames), stack.exposure_times, progress=False, reconstructor=False
    )
    assert icrf.fit_report.refit_jump is not None  # the first fit jumped
    assert float(curve_jump(icrf.curve.detach()).max()) <= 1.10
    assert icrf.fit_report.curve_jump <= 1.10
