from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import deepinv_icrf
from deepinv_icrf.cli import SUBCOMMANDS, main, register_subcommand
from deepinv_icrf.cli import demo as cli_demo
from deepinv_icrf.data import read_exposure_folder, write_synthetic_folder
from deepinv_icrf.hdr import linearize, merge_hdr
from deepinv_icrf.io import read_image
from deepinv_icrf.models import ICRF

H, W = 13, 11


@pytest.fixture
def photos(tmp_path):
    return write_synthetic_folder(
        tmp_path / "photos", n_exposures=4, height=H, width=W, response="gamma"
    )


@pytest.fixture
def gamma_icrf_file(tmp_path):
    path = tmp_path / "gamma.json"
    ICRF.from_response("gamma", channels=3).save(path)
    return path


def _install_fake_fit(monkeypatch, build=None) -> list:
    r"""Replace ``fit_icrf`` by a fake that records ``(stack, times, options)`` and returns
    ``build(stack, times)`` (default: a gamma ICRF)."""
    calls = []

    def fit(stack, exposure_times, **options):
        calls.append((stack, exposure_times, options))
        if build is not None:
            return build(stack, exposure_times)
        return ICRF.from_response("gamma", channels=stack.shape[-1])

    monkeypatch.setattr(deepinv_icrf, "fit_icrf", fit)
    return calls


@pytest.fixture
def fake_fit(monkeypatch):
    return _install_fake_fit(monkeypatch)


def _error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("deepinv-icrf: error: ")
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file())


# ---------------------------------------------------------------- end to end
def test_cli_end_to_end_on_exif_jpegs(photos, tmp_path, capsys):
    out = tmp_path / "fit"
    args = ["fit", str(photos), "--out", str(out), "--steps", "15", "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "4 exposures 11x13" in text and "from exif" in text
    assert all(f"\n  {c} " in text for c in "RGB")
    assert _files(out) == ["icrf.json", "icrf_fit.png", "summary.json"]
    icrf = ICRF.load(out / "icrf.json")
    assert icrf.metadata["exposure_times"] == [0.125, 0.25, 0.5, 1.0]
    # the estimated code noise, which `merge --deghost` reads back
    code_std = icrf.metadata["code_std"]
    assert len(code_std) == 3 and all(0 < v < 0.05 for v in code_std)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["time_source"] == "exif" and summary["steps"] == 15
    assert [c["channel"] for c in summary["channels"]] == ["R", "G", "B"]
    curve = icrf.curve.detach().double()
    for c in summary["channels"]:
        assert 0 < c["icrf_at_0.5"] < 0.5  # a gamma-like camera: darker than linear
    assert bool((curve[:, 1:] >= curve[:, :-1]).all())

    lin = tmp_path / "lin"
    assert (
        main(
            [
                "linearize",
                str(photos),
                "--icrf",
                str(out / "icrf.json"),
                "--out",
                str(lin),
            ]
        )
        == 0
    )
    assert _files(lin) == [f"exposure_{k:02d}.tif" for k in range(4)]
    first = read_image(lin / "exposure_00.tif")
    assert first.dtype == np.uint16 and first.shape == (H, W, 3)
    expect = linearize(read_image(photos / "exposure_00.jpg"), icrf)
    np.testing.assert_allclose(first / 65535.0, expect, atol=0.5 / 65535 + 1e-7)

    hdr, preview, std = (
        tmp_path / "hdr.npy",
        tmp_path / "preview.png",
        tmp_path / "std.npy",
    )
    args = ["merge", str(photos), "--icrf", str(out / "icrf.json"), "--out", str(hdr)]
    assert main(args + ["--preview", str(preview), "--std", str(std)]) == 0
    assert "4 exposures -> radiance 11x13" in capsys.readouterr().out
    rad = np.load(hdr)
    stack = read_exposure_folder(photos)
    np.testing.assert_allclose(
        rad, merge_hdr(stack.images, stack.exposure_times, icrf), rtol=1e-6
    )
    assert read_image(preview).dtype == np.uint8 and read_image(preview).shape == (
        H,
        W,
        3,
    )
    assert np.load(std).shape == (H, W, 3)


def test_cli_fit_says_the_top_of_the_curve_is_extrapolated(tmp_path, capsys):
    # a bracket whose longest exposure is still dark: nothing measures the top of the curve
    dark = write_synthetic_folder(
        tmp_path / "dark", n_exposures=4, height=40, width=48, shortest=0.01
    )
    stack = read_exposure_folder(dark)
    out = tmp_path / "fit"
    assert main(["fit", str(dark), "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    highest = [high for _, high in summary["observed_code_range"]]
    assert max(highest) <= stack.images.max() / 255 < 0.75
    top = round(max(highest) * 255)
    assert f"the photos reach code {top} of 255 at most" in text
    assert "a longer exposure would measure it" in text
    # a well-exposed bracket says nothing of the kind
    write_synthetic_folder(tmp_path / "ok", n_exposures=4, height=40, width=48)
    capsys.readouterr()
    assert main(["fit", str(tmp_path / "ok"), "--out", str(tmp_path / "f2")]) == 0
    assert "extrapolated" not in capsys.readouterr().out


def test_cli_no_arguments_runs_the_demo(monkeypatch):
    seen = {}

    def fake_demo(**kwargs):
        seen.update(kwargs)
        return {}

    monkeypatch.setattr(cli_demo, "run_demo", fake_demo)
    assert main([]) == 0
    assert seen == {
        "out": "deepinv_icrf_demo",
        "steps": None,
        "noise": 0.004,
        "progress": True,
    }


def test_cli_fit_passes_options(photos, tmp_path, fake_fit, capsys):
    args = [
        "fit",
        str(photos),
        "--out",
        str(tmp_path / "o"),
        "--steps",
        "7",
        "--seed",
        "3",
    ]
    assert main(args + ["--device", "cpu", "--no-progress"]) == 0
    ((stack, times, options),) = fake_fit
    assert stack.shape == (4, H, W, 3) and stack.dtype == np.uint8
    np.testing.assert_array_equal(times, [0.125, 0.25, 0.5, 1.0])
    assert options == {
        "steps": 7,
        "seed": 3,
        "progress": False,
        "device": "cpu",
        "reconstructor": False,  # the command line never imports deepinv
    }
    assert "refine_exposures" not in options


@pytest.mark.parametrize(("text", "expected"), [("none", None), ("3.5", 3.5)])
def test_cli_fit_outlier_threshold(photos, tmp_path, fake_fit, text, expected):
    out = str(tmp_path / "o")
    assert main(["fit", str(photos), "--out", out, "--outlier-threshold", text]) == 0
    ((_, _, options),) = fake_fit
    assert options["outlier_threshold"] == expected


@pytest.mark.parametrize("text", ["0", "-2", "nan", "many"])
def test_cli_fit_bad_outlier_threshold(photos, tmp_path, text, capsys):
    args = ["fit", str(photos), "--out", str(tmp_path / "o")]
    assert main(args + ["--outlier-threshold", text]) == 2
    assert "--outlier-threshold" in capsys.readouterr().err


def test_cli_fit_refine_exposures(photos, tmp_path, fake_fit, capsys):
    assert (
        main(["fit", str(photos), "--out", str(tmp_path / "o"), "--refine-exposures"])
        == 0
    )
    ((_, _, options),) = fake_fit
    assert options == {"refine_exposures": True, "reconstructor": False}


def test_cli_linearize_formats_and_files(photos, tmp_path, gamma_icrf_file, capsys):
    one = photos / "exposure_02.jpg"
    assert (
        main(
            [
                "linearize",
                str(one),
                "--icrf",
                str(gamma_icrf_file),
                "--out",
                str(tmp_path / "n"),
                "--format",
                "npy",
            ]
        )
        == 0
    )
    x = np.load(tmp_path / "n" / "exposure_02.npy")
    icrf = ICRF.load(gamma_icrf_file)
    np.testing.assert_array_equal(x, linearize(read_image(one), icrf))
    assert (
        main(
            [
                "linearize",
                str(one),
                "--icrf",
                str(gamma_icrf_file),
                "--out",
                str(tmp_path / "f"),
                "--format",
                "tif32",
            ]
        )
        == 0
    )
    np.testing.assert_array_equal(read_image(tmp_path / "f" / "exposure_02.tif"), x)


@pytest.mark.parametrize("ext", [".npy", ".tif", ".hdr"])
def test_cli_merge_formats(photos, tmp_path, gamma_icrf_file, ext, capsys):
    out = tmp_path / f"hdr{ext}"
    assert (
        main(
            [
                "merge",
                str(photos),
                "--icrf",
                str(gamma_icrf_file),
                "--out",
                str(out),
                "--tonemap",
                "gamma",
                "--preview",
                str(tmp_path / "p.jpg"),
            ]
        )
        == 0
    )
    rad = read_image(out)
    stack = read_exposure_folder(photos)
    expect = merge_hdr(stack.images, stack.exposure_times, ICRF.load(gamma_icrf_file))
    if ext == ".hdr":  # RGBE: one exponent per pixel, 8-bit mantissas (truncated)
        peak = expect.max(axis=-1, keepdims=True)
        assert float((np.abs(rad - expect) / peak).max()) <= 1 / 128
    else:
        np.testing.assert_allclose(rad, expect, rtol=1e-6, atol=1e-9)


def test_cli_help_exits_zero(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("fit", "linearize", "merge", "demo"))


def test_cli_subcommand_table_is_extensible(capsys):
    seen = []

    def configure(p):
        p.add_argument("curve")

    def run(args):
        seen.append(args.curve)
        return 0

    register_subcommand("checkcurve", "check a curve file", configure, run)
    try:
        assert main(["checkcurve", "icrf.json"]) == 0
        assert seen == ["icrf.json"]
        with pytest.raises(ValueError, match="already exists"):
            register_subcommand("checkcurve", "again", configure, run)
    finally:
        SUBCOMMANDS.pop("checkcurve")


# ---------------------------------------------------------------- bad input: exit 2, one line
def test_cli_bad_usage(capsys):
    assert main(["bogus"]) == 2
    assert "invalid choice" in _error_line(capsys)
    assert main(["fit"]) == 2
    assert "required" in _error_line(capsys)
    assert main(["fit", "x", "--steps", "many"]) == 2
    assert "--steps" in _error_line(capsys)


def test_cli_fit_bad_inputs_write_nothing(tmp_path, photos, fake_fit, capsys):
    out = tmp_path / "out"
    assert main(["fit", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "No such folder" in _error_line(capsys)
    assert main(["fit", str(photos), "--out", str(out), "--steps", "0"]) == 2
    assert "--steps" in _error_line(capsys)
    assert main(["fit", str(photos), "--out", str(out), "--device", "tpu9"]) == 2
    assert "--device" in _error_line(capsys)
    bare = write_synthetic_folder(
        tmp_path / "bare", n_exposures=2, height=4, width=5, exif=False
    )
    assert main(["fit", str(bare), "--out", str(out)]) == 2
    assert "No exposure time for 2 image(s)" in _error_line(capsys)
    assert not out.exists() and fake_fit == []


def test_cli_fit_failing_plot_leaves_no_partial_file(
    photos, tmp_path, fake_fit, monkeypatch, capsys
):
    import deepinv_icrf.plot as plot

    def broken(curve, path=None, title=None, **drawn):
        with open(path, "wb") as fh:
            fh.write(b"\x89PNG half")
        raise OSError("disk full")

    # every plot of the command line is drawn by draw_icrf (through _plot_job.draw_job)
    monkeypatch.setattr(plot, "draw_icrf", broken)
    out = tmp_path / "out"
    assert main(["fit", str(photos), "--out", str(out)]) == 2
    assert "disk full" in _error_line(capsys)
    assert not out.exists()  # the set is all or nothing: not even icrf.json
    assert not list(tmp_path.rglob("*.tmp*"))


def test_cli_linearize_bad_inputs(tmp_path, photos, gamma_icrf_file, capsys):
    out = tmp_path / "lin"
    assert (
        main(
            [
                "linearize",
                str(photos),
                "--icrf",
                str(tmp_path / "none.json"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "--icrf" in _error_line(capsys)
    (tmp_path / "broken.json").write_text(
        '{"format": "deepinv-icrf/icrf", "version": 1'
    )
    assert (
        main(
            [
                "linearize",
                str(photos),
                "--icrf",
                str(tmp_path / "broken.json"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "not valid JSON" in _error_line(capsys)
    grey = write_synthetic_folder(
        tmp_path / "grey", n_exposures=2, height=4, width=5, channels=1, fmt="png"
    )
    assert (
        main(
            ["linearize", str(grey), "--icrf", str(gamma_icrf_file), "--out", str(out)]
        )
        == 2
    )
    assert "1 channel(s) but the ICRF has 3" in _error_line(capsys)
    assert (
        main(
            [
                "linearize",
                str(tmp_path / "nope.png"),
                "--icrf",
                str(gamma_icrf_file),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "no such file" in _error_line(capsys)
    # one bad file among good ones: nothing is written
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 nope")
    assert (
        main(
            [
                "linearize",
                str(photos / "exposure_00.jpg"),
                str(tmp_path / "bad.jpg"),
                "--icrf",
                str(gamma_icrf_file),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "bad.jpg" in _error_line(capsys)
    assert not out.exists()


def test_cli_merge_bad_inputs_write_nothing(tmp_path, photos, gamma_icrf_file, capsys):
    base = ["merge", str(photos), "--icrf", str(gamma_icrf_file)]
    assert main(base + ["--out", str(tmp_path / "hdr.png")]) == 2
    assert "--out" in _error_line(capsys)
    assert (
        main(
            base
            + ["--out", str(tmp_path / "hdr.npy"), "--preview", str(tmp_path / "p.gif")]
        )
        == 2
    )
    assert "--preview" in _error_line(capsys)
    assert main(base[:2] + ["--out", str(tmp_path / "hdr.npy")]) == 2
    assert "--icrf" in _error_line(capsys)
    grey = ICRF(channels=1, n_points=8)
    grey.save(tmp_path / "grey.json")
    two = ICRF(channels=2, n_points=8)
    two.save(tmp_path / "two.json")
    assert (
        main(
            [
                "merge",
                str(photos),
                "--icrf",
                str(tmp_path / "two.json"),
                "--out",
                str(tmp_path / "hdr.npy"),
            ]
        )
        == 2
    )
    assert "ICRF has 2" in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "gamma.json",
        "grey.json",
        "photos",
        "two.json",
    ]


def test_cli_merge_writes_exr_without_plugin(tmp_path, photos, gamma_icrf_file):
    out = tmp_path / "hdr.exr"
    npy = tmp_path / "hdr.npy"
    for path in (out, npy):
        code = main(
            ["merge", str(photos), "--icrf", str(gamma_icrf_file), "--out", str(path)]
        )
        assert code == 0
    assert out.read_bytes()[:4] == b"\x76\x2f\x31\x01"
    np.testing.assert_array_equal(read_image(out), np.load(npy))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_cli_single_channel_icrf_applies_to_every_channel(tmp_path, photos, capsys):
    ICRF.from_response("gamma", channels=1).save(tmp_path / "one.json")
    assert (
        main(
            [
                "merge",
                str(photos),
                "--icrf",
                str(tmp_path / "one.json"),
                "--out",
                str(tmp_path / "h.npy"),
            ]
        )
        == 0
    )
    rad = np.load(tmp_path / "h.npy")
    expect = merge_hdr(
        read_exposure_folder(photos).images,
        [0.125, 0.25, 0.5, 1.0],
        ICRF.from_response("gamma", channels=1).curve.detach().expand(3, -1).clone(),
    )
    np.testing.assert_allclose(rad, expect, rtol=1e-6)
    assert torch.is_tensor(ICRF.load(tmp_path / "one.json").curve)


def test_cli_fit_band_and_refined_times(photos, tmp_path, monkeypatch, capsys):
    def refined(stack, exposure_times):
        from deepinv_icrf.calibration import FitReport, Refinement

        icrf = ICRF.from_response("gamma", channels=3)
        curve = icrf.curve.detach()
        icrf.band = torch.stack([curve * 0.9, (curve * 1.1).clamp(max=1.0)])
        nominal = torch.as_tensor(exposure_times, dtype=torch.float64)
        icrf.fit_report = FitReport(
            "code+refined_exposures",
            10,
            0.1,
            None,
            exposure_times=nominal * torch.tensor([1.0, 1.05, 0.97, 1.02]),
            nominal_exposure_times=nominal,
            refinement=Refinement(exponent=1.01, exponent_std=0.01, prior_std=0.1),
        )
        return icrf

    calls = _install_fake_fit(monkeypatch, refined)
    out = tmp_path / "o"
    args = ["fit", str(photos), "--out", str(out), "--refine-exposures", "--band"]
    assert main(args) == 0
    ((_, _, options),) = calls
    assert options == {"refine_exposures": True, "band": True, "reconstructor": False}
    text = capsys.readouterr().out
    assert "nominal (s)" in text and "refined (s)" in text
    summary = json.loads((out / "summary.json").read_text())
    np.testing.assert_allclose(
        summary["refined_exposure_times"],
        [0.125 * 1.0, 0.25 * 1.05, 0.5 * 0.97, 1.0 * 1.02],
        rtol=1e-6,
    )
    assert summary["band"] is True and summary["refinement_exponent"] == 1.01
    saved = json.loads((out / "icrf.json").read_text())
    assert set(saved["band"]) == {"lower", "upper"}
    assert (out / "icrf_fit.png").stat().st_size > 0


def test_cli_fit_without_steps_leaves_the_fit_its_default(photos, tmp_path, fake_fit):
    # no --steps: the fit keeps its own iteration count (the code fit's 30 at most)
    assert (
        main(["fit", str(photos), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    )
    ((_, _, options),) = fake_fit
    assert "steps" not in options
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["steps"] is None


def test_cli_fit_align_flag(photos, tmp_path, fake_fit):
    assert main(["fit", str(photos), "--out", str(tmp_path / "o"), "--align"]) == 0
    ((_, _, options),) = fake_fit
    assert options["align"] is True
    assert main(["fit", str(photos), "--out", str(tmp_path / "p")]) == 0
    assert "align" not in fake_fit[1][2]


def test_cli_fit_align_writes_shifts(photos, tmp_path):
    out = tmp_path / "o"
    assert (
        main(["fit", str(photos), "--out", str(out), "--align", "--no-progress"]) == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    shifts = summary["shifts"]
    assert len(shifts) == 4 and all(len(s) == 2 for s in shifts)
    assert shifts[2] == [0, 0]  # the reference: the middle exposure


def test_cli_merge_align(photos, tmp_path, gamma_icrf_file, capsys):
    from deepinv_icrf.data import align_exposures

    out = tmp_path / "hdr.npy"
    args = ["merge", str(photos), "--icrf", str(gamma_icrf_file), "--out", str(out)]
    assert main(args + ["--align"]) == 0
    assert "aligned, shifts (dy, dx)" in capsys.readouterr().out
    stack = read_exposure_folder(photos)
    images, _ = align_exposures(stack.images, exposure_times=stack.exposure_times)
    expect = merge_hdr(images, stack.exposure_times, ICRF.load(gamma_icrf_file))
    np.testing.assert_allclose(np.load(out), expect, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize(
    ("outliers", "align", "note"),
    [
        ([0.03, 0.0, 0.01], False, "try --align"),
        ([0.03, 0.0, 0.01], True, "left out 3.0%"),
        ([0.001, 0.0, 0.0], False, None),
    ],
)
def test_cli_fit_reports_outliers(
    photos, tmp_path, monkeypatch, capsys, outliers, align, note
):
    from deepinv_icrf.calibration import FitReport

    def fit(stack, exposure_times, **options):
        icrf = ICRF.from_response("gamma", channels=stack.shape[-1])
        icrf.fit_report = FitReport("code", 1, 0.0, None, None, None, outliers=outliers)
        return icrf

    monkeypatch.setattr(deepinv_icrf, "fit_icrf", fit)
    out = tmp_path / "o"
    args = ["fit", str(photos), "--out", str(out)] + (["--align"] if align else [])
    assert main(args) == 0
    printed = capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["outlier_fraction"] == outliers
    if note is None:
        assert "left out" not in printed
    else:
        assert note in printed and "left out 3.0% of the codes" in printed
        assert ("--align" in printed) is (not align)


# ---------------------------------------------------------------- merge --deghost
@pytest.mark.parametrize(
    ("flag", "code_std", "threshold", "std_used", "source"),
    [
        ([], None, None, 0.0, None),
        (["--deghost"], None, 4.0, 2 / 255, "default 2/255"),
        (["--deghost", "2.5"], [0.01, 0.03, 0.02], 2.5, 0.03, "the ICRF file"),
    ],
)
def test_cli_merge_deghost(
    photos, tmp_path, monkeypatch, capsys, flag, code_std, threshold, std_used, source
):
    import deepinv_icrf.hdr

    calls = []
    original = deepinv_icrf.hdr.merge_hdr

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(deepinv_icrf.hdr, "merge_hdr", spy)
    path = tmp_path / "icrf.json"
    meta = {} if code_std is None else {"code_std": code_std}
    ICRF.from_response("gamma", channels=3).save(path, **meta)
    out = tmp_path / "hdr.npy"
    args = ["merge", str(photos), "--icrf", str(path), "--out", str(out)] + flag
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert calls[0]["deghost"] == threshold
    assert calls[0]["code_std"] == pytest.approx(std_used, rel=1e-12)
    assert ("deghosting" in printed) is (threshold is not None)
    if source is not None:
        assert f"threshold {threshold:g} stds" in printed and source in printed
    stack = read_exposure_folder(photos)
    expect = original(
        stack.images,
        stack.exposure_times,
        ICRF.load(path),
        code_std=std_used,
        deghost=threshold,
    )
    np.testing.assert_allclose(read_image(out), expect, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("text", ["0", "-1", "nan", "many"])
def test_cli_merge_bad_deghost(photos, tmp_path, gamma_icrf_file, text, capsys):
    out = tmp_path / "hdr.npy"
    args = ["merge", str(photos), "--icrf", str(gamma_icrf_file), "--out", str(out)]
    assert main(args + ["--deghost", text]) == 2
    assert "--deghost" in _error_line(capsys)
    assert not out.exists()


# ---------------------------------------------------------------- outputs never lost
def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_cli_linearize_into_the_input_folder_is_refused(
    photos, gamma_icrf_file, capsys
):
    before = _snapshot(photos)
    args = [
        "linearize",
        str(photos),
        "--icrf",
        str(gamma_icrf_file),
        "--out",
        str(photos),
    ]
    assert main(args) == 2
    assert "is the folder of the input" in _error_line(capsys)
    assert _snapshot(photos) == before


def test_cli_merge_outputs_onto_inputs_or_each_other_are_refused(
    photos, tmp_path, gamma_icrf_file, capsys
):
    from deepinv_icrf.io import write_image

    tif = photos / "extra.tif"  # an input image with a radiance extension
    stack = read_exposure_folder(photos)
    write_image(tif, stack.images[-1], exposure_time=2.0)
    before = _snapshot(photos)
    base = ["merge", str(photos), "--icrf", str(gamma_icrf_file)]
    link = tmp_path / "link.tif"
    link.symlink_to(tif)
    hard = tmp_path / "hard.tif"
    hard.hardlink_to(tif)
    cases = [
        (["--out", str(tif)], "--out '.*extra.tif' is an input of this command"),
        (["--out", str(link)], "--out '.*link.tif' is an input"),
        (["--out", str(hard)], "--out '.*hard.tif' is an input"),
        (["--out", str(tmp_path / "r.exr"), "--std", str(tmp_path / "r.exr")],
         "--std '.*r.exr' is also the output of --out"),
        (["--out", str(tmp_path / "r.exr"), "--preview", str(photos / "exposure_00.jpg")],
         "--preview '.*exposure_00.jpg' is an input"),
        (["--out", str(gamma_icrf_file.with_suffix(".npy")), "--preview",
          str(tmp_path / "missing" / "p.png")], "--preview .*folder .*missing' does not exist"),
        (["--out", str(tmp_path / "r.hdr"), "--layers", "std"], "--layers needs an OpenEXR"),
    ]  # fmt: skip
    for extra, match in cases:
        assert main(base + extra) == 2, extra
        line = _error_line(capsys)
        assert re.search(match, line), line
    assert _snapshot(photos) == before
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_dir()) == sorted(
        ["gamma.json", "link.tif", "hard.tif"]
    )
    assert not list(tmp_path.rglob("*.tmp*"))


def test_cli_merge_layers_in_one_exr(photos, tmp_path, gamma_icrf_file, capsys):
    from deepinv_icrf.io import read_exr_layers

    out = tmp_path / "r.exr"
    args = ["merge", str(photos), "--icrf", str(gamma_icrf_file), "--out", str(out)]
    assert main(args + ["--layers", "std", "saturated", "count"]) == 0
    assert "(layers: std, saturated, count)" in capsys.readouterr().out
    layers = read_exr_layers(out)
    assert sorted(layers) == ["", "count", "saturated", "std"]
    stack = read_exposure_folder(photos)
    rad, std, sat, count = merge_hdr(
        stack.images,
        stack.exposure_times,
        ICRF.load(gamma_icrf_file),
        return_std=True,
        return_saturated=True,
        return_count=True,
    )
    np.testing.assert_array_equal(layers[""], rad)
    np.testing.assert_array_equal(layers["std"], np.where(np.isfinite(std), std, -1))
    np.testing.assert_array_equal(layers["saturated"], sat.astype(np.float32))
    np.testing.assert_array_equal(layers["count"], count.astype(np.float32))
    valid = (stack.images >= 1) & (stack.images <= 254)
    np.testing.assert_array_equal(
        count, valid.sum(axis=0)
    )  # hat weights: every valid one
    assert main(args) == 0  # without --layers: the radiance alone, as before
    assert sorted(read_exr_layers(out)) == [""]


def test_cli_fit_twice_into_one_folder_leaves_one_complete_set(
    photos, tmp_path, fake_fit, monkeypatch, capsys
):
    import deepinv_icrf.io as dio

    out = tmp_path / "out"
    assert main(["fit", str(photos), "--out", str(out), "--no-progress"]) == 0
    first = _snapshot(out)
    assert sorted(first) == ["icrf.json", "icrf_fit.png", "summary.json"]
    # a second run interrupted between its files (Ctrl-C after icrf.json and the plot)
    real = dio.write_json

    def interrupted(path, obj):
        raise KeyboardInterrupt

    monkeypatch.setattr(dio, "write_json", interrupted)
    assert main(["fit", str(photos), "--out", str(out), "--seed", "3"]) == 130
    assert capsys.readouterr().err.strip() == "deepinv-icrf: interrupted"
    assert _snapshot(out) == first
    # a second run on a full disk
    import errno

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(dio, "write_json", full)
    assert main(["fit", str(photos), "--out", str(out), "--seed", "3"]) == 2
    line = _error_line(capsys)
    assert re.fullmatch(
        r"deepinv-icrf: error: No space left on device: '.*/out/summary.json'", line
    )
    assert _snapshot(out) == first
    # a complete second run replaces the whole set
    monkeypatch.setattr(dio, "write_json", real)
    assert main(["fit", str(photos), "--out", str(out), "--seed", "3"]) == 0
    second = _snapshot(out)
    assert sorted(second) == sorted(first)
    assert json.loads(second["summary.json"])["seed"] == 3
    assert not list(tmp_path.rglob("*.tmp*"))


def test_cli_fit_out_into_the_photo_folder_is_refused(photos, fake_fit, capsys):
    before = _snapshot(photos)
    assert main(["fit", str(photos), "--out", str(photos)]) == 2
    assert "is the folder of the input" in _error_line(capsys)
    assert _snapshot(photos) == before


@pytest.mark.parametrize("device", ["meta", "cuda:99", "xla", "not a device"])
def test_cli_fit_bad_device(photos, tmp_path, fake_fit, device, capsys):
    assert (
        main(["fit", str(photos), "--out", str(tmp_path / "o"), "--device", device])
        == 2
    )
    assert "--device" in _error_line(capsys)
    assert not (tmp_path / "o").exists()


def test_cli_genuine_bug_keeps_its_traceback(photos, tmp_path, monkeypatch):
    def buggy(stack, exposure_times, **options):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(deepinv_icrf, "fit_icrf", buggy)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["fit", str(photos), "--out", str(tmp_path / "o")])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("curve_channels", [1, 3])
def test_cli_linearize_tif16_is_the_rounded_linear_image(
    tmp_path, bits, curve_channels
):
    # the 16-bit output is looked up from a table of every code: the same values, bit for
    # bit, as rounding the linearized image (what the command computed before)
    from deepinv_icrf.io import write_image

    g = np.random.default_rng(bits)
    dtype = np.uint8 if bits == 8 else np.uint16
    img = g.integers(0, np.iinfo(dtype).max + 1, size=(9, 14, 3), dtype=dtype)
    img[0, :3] = [0, np.iinfo(dtype).max, 1]  # both ends of the range
    src = tmp_path / "photo.png"
    write_image(src, img)
    # a curve per channel (a mix-up of channels shows), clipped at the top, flat at the start
    gammas = torch.tensor([1.8, 2.2, 2.6][:curve_channels]).view(-1, 1)
    ramp = torch.linspace(-0.05, 1.1, 256).clamp_min(0)
    icrf = ICRF(channels=curve_channels, init=(ramp**gammas).clamp(0, 1))
    curve = icrf.curve.detach()
    assert curve_channels == 1 or float(curve[0, 100] - curve[2, 100]) > 0.05
    curve_file = tmp_path / "c.json"
    icrf.save(curve_file)
    out = tmp_path / "lin"
    assert (
        main(["linearize", str(src), "--icrf", str(curve_file), "--out", str(out)]) == 0
    )
    got = read_image(out / "photo.tif")
    x = linearize(read_image(src), ICRF.load(curve_file))
    expect = np.round(np.clip(x, 0.0, 1.0) * 65535.0).astype(np.uint16)
    assert got.dtype == np.uint16
    np.testing.assert_array_equal(got, expect)
