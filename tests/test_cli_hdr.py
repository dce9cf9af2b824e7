r"""The command line's start-up, ``hdr`` (fit and merge in one process), ``--device``,
``--lower``/``--upper`` and the rule that library defaults are written once."""

from __future__ import annotations

import errno
import json
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import deepinv_icrf
from deepinv_icrf.cli import main
from deepinv_icrf.cli import merge as cli_merge
from deepinv_icrf.data import read_exposure_folder, write_synthetic_folder
from deepinv_icrf.hdr import merge_hdr
from deepinv_icrf.io import read_exr_layers, read_image
from deepinv_icrf.models import ICRF

ROOT = Path(__file__).resolve().parents[1]
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


@pytest.fixture
def fake_fit(monkeypatch):
    calls = []

    def fit(stack, exposure_times, **options):
        calls.append((stack, exposure_times, options))
        return ICRF.from_response("gamma", channels=stack.shape[-1])

    monkeypatch.setattr(deepinv_icrf, "fit_icrf", fit)
    return calls


@pytest.fixture
def merge_calls(monkeypatch):
    import deepinv_icrf.hdr

    calls = []
    original = deepinv_icrf.hdr.merge_hdr

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(deepinv_icrf.hdr, "merge_hdr", spy)
    return calls


def _error_line(capsys):
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("deepinv-icrf: error: ")
    return lines[0]


def _files(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_file())


# ---------------------------------------------------------------- start-up
_STARTUP = """
import sys
from deepinv_icrf.cli import main
argvs = [["--help"], ["fit", "--help"], ["hdr", "--help"], ["--version"], ["fit"],
         ["merge", "photos", "--out", "x.exr"], ["fit", "photos", "--steps", "0"],
         ["hdr", "photos", "--out", "x.exr", "--lower", "2"], ["bogus"]]
codes = [main(argv) for argv in argvs]
print(codes, sorted(m for m in ("torch", "numpy", "deepinv") if m in sys.modules))
"""


def _python(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, check=False
    )


def test_cli_help_and_usage_errors_do_not_import_torch():
    result = _python("-c", _STARTUP)
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]
    assert last == "[0, 0, 0, 0, 2, 2, 2, 2, 2] []"
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 5 and all(
        e.startswith("deepinv-icrf: error: ") for e in errors
    )
    assert "--lower" in errors[3] and "[0, 1]" in errors[3]


_MISSING_OUTPUT_FOLDER = """
import sys
from deepinv_icrf.cli import main
argvs = [["hdr", "photos", "--out", "no-such-folder/x.exr"],
         ["merge", "photos", "--icrf", "c.json", "--out", "x.exr",
          "--preview", "no-such-folder/p.jpg"]]
print([main(argv) for argv in argvs], "torch" in sys.modules)
"""


def test_cli_refuses_a_missing_output_folder_before_reading(tmp_path):
    # neither the photos (there are none) nor torch are touched: a typo costs no decode
    result = subprocess.run(
        [sys.executable, "-c", _MISSING_OUTPUT_FOLDER],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[2, 2] False"
    errors = result.stderr.strip().splitlines()
    assert errors == [
        "deepinv-icrf: error: --out 'no-such-folder/x.exr': folder 'no-such-folder' "
        "does not exist.",
        "deepinv-icrf: error: --preview 'no-such-folder/p.jpg': folder "
        "'no-such-folder' does not exist.",
    ]


def test_cli_runs_as_a_module_with_version():
    result = _python("-m", "deepinv_icrf", "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"deepinv-icrf {deepinv_icrf.__version__}"


def test_cli_version_in_process(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == "deepinv-icrf 0.1.0"


def test_package_top_level_is_lazy():
    result = _python(
        "-c",
        "import sys, deepinv_icrf; print('torch' in sys.modules); "
        "f = deepinv_icrf.fit_icrf; print('torch' in sys.modules, f.__module__)",
    )
    assert result.stdout.split() == ["False", "True", "deepinv_icrf.calibration.fit"]
    from deepinv_icrf.calibration import fit_icrf

    assert deepinv_icrf.fit_icrf is fit_icrf
    public = {
        info.name
        for info in pkgutil.iter_modules(deepinv_icrf.__path__)
        if not info.name.startswith("_") and info.name not in ("conftest", "__main__")
    }
    assert public <= set(dir(deepinv_icrf)) and "fit_icrf" in dir(deepinv_icrf)
    for name in public:
        assert getattr(deepinv_icrf, name).__name__ == f"deepinv_icrf.{name}"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        deepinv_icrf.nope  # noqa: B018


# ---------------------------------------------------------------- defaults, choices
def test_cli_choices_are_the_library_ones():
    from deepinv_icrf.functional.merge import MERGE_WEIGHTS
    from deepinv_icrf.hdr import TONEMAP_METHODS
    from deepinv_icrf.io.exr import EXR_COMPRESSIONS

    assert cli_merge.WEIGHTS == MERGE_WEIGHTS
    assert cli_merge.TONEMAPS == TONEMAP_METHODS
    assert cli_merge.EXR_COMPRESSIONS == tuple(EXR_COMPRESSIONS)


def test_cli_passes_only_given_options(photos, tmp_path, fake_fit, merge_calls):
    assert main(["fit", str(photos), "--out", str(tmp_path / "f")]) == 0
    # every default is the fit's own; the command line asks for the fit without deepinv
    assert fake_fit[0][2] == {"reconstructor": False}
    out = tmp_path / "r.npy"
    assert main(["hdr", str(photos), "--out", str(out)]) == 0
    assert fake_fit[1][2] == {"reconstructor": False}
    (_, kwargs), *_ = merge_calls
    assert set(kwargs) == {
        "return_std",
        "return_saturated",
        "return_count",
        "code_std",
        "deghost",
    }
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["steps"] is None and summary["seed"] is None


# ---------------------------------------------------------------- hdr
def test_cli_hdr_equals_fit_then_merge(photos, tmp_path, capsys):
    fit_dir, hdr_dir = tmp_path / "fit", tmp_path / "hdr"
    hdr_dir.mkdir()
    steps = ["--steps", "15", "--no-progress"]
    assert main(["fit", str(photos), "--out", str(fit_dir)] + steps) == 0
    merged = tmp_path / "m.npy"
    args = ["merge", str(photos), "--icrf", str(fit_dir / "icrf.json")]
    assert main(args + ["--out", str(merged)]) == 0
    capsys.readouterr()

    out = hdr_dir / "scene.npy"
    extra = ["--preview", str(hdr_dir / "p.png"), "--std", str(hdr_dir / "s.npy")]
    assert main(["hdr", str(photos), "--out", str(out)] + extra + steps) == 0
    printed = capsys.readouterr().out
    assert "deepinv-icrf hdr: 4 exposures 11x13" in printed
    assert "deepinv-icrf hdr: 4 exposures -> radiance 11x13" in printed
    assert "\n  R  " in printed and "scene.icrf.json" in printed
    assert _files(hdr_dir) == [
        "p.png",
        "s.npy",
        "scene.icrf.json",
        "scene.icrf_fit.png",
        "scene.npy",
        "scene.summary.json",
    ]
    one, two = ICRF.load(fit_dir / "icrf.json"), ICRF.load(hdr_dir / "scene.icrf.json")
    np.testing.assert_array_equal(one.curve.detach(), two.curve.detach())
    assert two.metadata["source"] == "deepinv-icrf hdr"
    assert two.metadata["code_std"] == one.metadata["code_std"]
    np.testing.assert_array_equal(np.load(out), np.load(merged))
    fitted = json.loads((fit_dir / "summary.json").read_text())
    summary = json.loads((hdr_dir / "scene.summary.json").read_text())
    for key in ("channels", "code_std", "exposure_times", "files", "steps", "shape"):
        assert summary[key] == fitted[key], key
    assert summary["merge"]["width"] == W and summary["merge"]["deghost"] is None
    assert summary["merge"]["stops"] > 3  # 4 exposures one stop apart of a gamma scene
    assert read_image(hdr_dir / "p.png").shape == (H, W, 3)


def test_cli_hdr_reads_aligns_and_decodes_once(
    photos, tmp_path, monkeypatch, fake_fit, merge_calls, capsys
):
    import deepinv_icrf.data as data

    reads, aligns = [], []
    read, align = data.read_exposure_folder, data.align_exposures

    def counted_read(*args, **kwargs):
        reads.append(args)
        return read(*args, **kwargs)

    def counted_align(*args, **kwargs):
        aligns.append(args)
        return align(*args, **kwargs)

    monkeypatch.setattr(data, "read_exposure_folder", counted_read)
    monkeypatch.setattr(data, "align_exposures", counted_align)
    out = tmp_path / "r.npy"
    assert main(["hdr", str(photos), "--out", str(out), "--align"]) == 0
    assert len(reads) == 1 and len(aligns) == 1
    ((images, times, options),) = fake_fit
    assert "align" not in options  # aligned once, before the fit
    ((args, _),) = merge_calls
    assert args[0] is images  # the merge gets the very codes the fit got
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["align"] is True and summary["shifts"][2] == [0, 0]
    assert "aligned, shifts (dy, dx)" in capsys.readouterr().out


def test_cli_hdr_deghost_uses_the_fit_noise(photos, tmp_path, merge_calls, capsys):
    out = tmp_path / "r.npy"
    argv = ["hdr", str(photos), "--out", str(out), "--deghost", "--no-progress"]
    assert main(argv) == 0
    code_std = ICRF.load(tmp_path / "r.icrf.json").metadata["code_std"]
    ((_, kwargs),) = merge_calls
    assert kwargs["deghost"] == 4.0 and kwargs["code_std"] == max(code_std)
    assert "code noise" in capsys.readouterr().out
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["merge"]["code_std"] == max(code_std)


def test_cli_hdr_layers_in_one_exr(photos, tmp_path, fake_fit, capsys):
    from deepinv_icrf.io import read_exr_layers

    out = tmp_path / "r.exr"
    assert main(["hdr", str(photos), "--out", str(out), "--layers", "count"]) == 0
    assert sorted(read_exr_layers(out)) == ["", "count"]
    assert "(layers: count)" in capsys.readouterr().out


def test_cli_hdr_bad_inputs_write_nothing(photos, tmp_path, monkeypatch, capsys):
    before = sorted(p.name for p in tmp_path.iterdir())
    base = ["hdr", str(photos)]
    cases = [
        (["--out", str(tmp_path / "r.png")], "--out .*expected one of the extensions"),
        (["--out", str(tmp_path / "r.npy"), "--layers", "std"], "--layers needs"),
        (
            ["--out", str(tmp_path / "r.npy"), "--preview", str(tmp_path / "r.icrf_fit.png")],
            "--out's plot '.*r.icrf_fit.png' is also the output of --preview",
        ),
        (["--out", str(tmp_path / "r.npy"), "--lower", "0.5", "--upper", "0.4"],
         "--lower 0.5 must be below --upper 0.4"),
        (["--out", str(tmp_path / "r.npy"), "--device", "meta"],
         "--device meta: expected one of the device types"),
        (["--out", str(tmp_path / "r.npy"), "--steps", "0"], "--steps"),
    ]  # fmt: skip
    for extra, match in cases:
        assert main(base + extra) == 2, extra
        line = _error_line(capsys)
        assert re.search(match, line), line
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    # a merge that fails after the fit: not even the curve is written
    import deepinv_icrf.hdr

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "r.npy"))

    monkeypatch.setattr(deepinv_icrf.hdr, "save_radiance", full)
    argv = base + ["--out", str(tmp_path / "r.npy"), "--no-progress", "--steps", "3"]
    assert main(argv) == 2
    assert "No space left on device" in _error_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not list(tmp_path.rglob("*.tmp"))


# ---------------------------------------------------------------- --device, --lower/--upper
def test_cli_device_reaches_fit_and_merge(
    photos, tmp_path, gamma_icrf_file, fake_fit, merge_calls
):
    out = tmp_path / "r.npy"
    assert main(["hdr", str(photos), "--out", str(out), "--device", "cpu"]) == 0
    assert fake_fit[0][2] == {"device": "cpu", "reconstructor": False}
    assert merge_calls[0][1]["device"] == "cpu"
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert summary["device"] == "cpu"
    argv = ["merge", str(photos), "--icrf", str(gamma_icrf_file), "--out", str(out)]
    assert main(argv + ["--device", "cpu"]) == 0
    assert merge_calls[1][1]["device"] == "cpu"
    stack = read_exposure_folder(photos)
    expect = merge_hdr(stack.images, stack.exposure_times, ICRF.load(gamma_icrf_file))
    np.testing.assert_allclose(np.load(out), expect, rtol=1e-6)


@pytest.mark.parametrize("device", ["meta", "cuda:99", "not a device"])
def test_cli_merge_bad_device(photos, tmp_path, gamma_icrf_file, device, capsys):
    out = tmp_path / "r.npy"
    argv = ["merge", str(photos), "--icrf", str(gamma_icrf_file), "--out", str(out)]
    assert main(argv + ["--device", device]) == 2
    assert "--device" in _error_line(capsys)
    assert not out.exists()


def test_cli_merge_lower_upper(photos, tmp_path, gamma_icrf_file, merge_calls, capsys):
    out = tmp_path / "r.npy"
    argv = ["merge", str(photos), "--icrf", str(gamma_icrf_file), "--out", str(out)]
    assert main(argv + ["--lower", "0.1", "--upper", "0.9"]) == 0
    kwargs = merge_calls[0][1]
    assert kwargs["lower"] == 0.1 and kwargs["upper"] == 0.9
    stack = read_exposure_folder(photos)
    expect = merge_hdr(
        stack.images,
        stack.exposure_times,
        ICRF.load(gamma_icrf_file),
        lower=0.1,
        upper=0.9,
    )
    np.testing.assert_allclose(np.load(out), expect, rtol=1e-6)
    default = merge_hdr(stack.images, stack.exposure_times, ICRF.load(gamma_icrf_file))
    assert not np.allclose(expect, default)  # the bounds changed the merge
    assert main(argv + ["--lower", "16/255"]) == 0
    assert merge_calls[-1][1]["lower"] == 16 / 255
    for bad in (
        ["--lower", "-0.1"],
        ["--upper", "nan"],
        ["--lower", "x"],
        ["--lower", "1/0"],
    ):
        assert main(argv + bad) == 2
        assert f"argument {bad[0]}: expected a number in [0, 1]" in _error_line(capsys)


def test_cli_merge_asks_only_for_the_maps_it_writes(
    photos, tmp_path, gamma_icrf_file, merge_calls
):
    base = ["merge", str(photos), "--icrf", str(gamma_icrf_file)]
    wanted = []
    for extra in (
        ["--out", str(tmp_path / "a.exr"), "--preview", str(tmp_path / "a.png")],
        ["--out", str(tmp_path / "b.exr"), "--std", str(tmp_path / "b_std.npy")],
        ["--out", str(tmp_path / "c.exr"), "--layers", "count", "saturated"],
    ):
        assert main(base + extra) == 0
        kwargs = merge_calls[-1][1]
        wanted.append((kwargs["return_std"], kwargs["return_count"]))
    assert wanted == [(False, False), (True, False), (False, True)]
    stack = read_exposure_folder(photos)
    icrf = ICRF.load(gamma_icrf_file)
    radiance, count = merge_hdr(
        stack.images, stack.exposure_times, icrf, return_count=True
    )
    layers = read_exr_layers(tmp_path / "c.exr")
    np.testing.assert_array_equal(layers[""], radiance)
    np.testing.assert_array_equal(layers["count"], count)
    np.testing.assert_array_equal(read_image(tmp_path / "a.exr"), radiance)
    np.testing.assert_array_equal(
        read_image(tmp_path / "b.exr"), read_image(tmp_path / "a.exr")
    )


def test_cli_merge_exr_compression(photos, tmp_path, gamma_icrf_file, capsys):
    import OpenEXR

    base = ["merge", str(photos), "--icrf", str(gamma_icrf_file)]
    for extra, stored in (
        ([], "NO_COMPRESSION"),
        (["--exr-compression", "zips"], "ZIPS_COMPRESSION"),
    ):
        out = tmp_path / f"{stored}.exr"
        assert main(base + ["--out", str(out), *extra]) == 0
        head = OpenEXR.File(str(out), header_only=True).parts[0].header
        assert head["compression"] == getattr(OpenEXR, stored)
    np.testing.assert_array_equal(
        read_image(tmp_path / "NO_COMPRESSION.exr"),
        read_image(tmp_path / "ZIPS_COMPRESSION.exr"),
    )
    npy = tmp_path / "r.npy"
    assert main(base + ["--out", str(npy), "--exr-compression", "zip"]) == 2
    assert "--exr-compression zip needs an OpenEXR --out or --std" in _error_line(
        capsys
    )
    assert not npy.exists()


# ---------------------------------------------------------------- the plot beside the merge
def _plot_inputs():
    import torch

    grid = torch.linspace(0, 1, 256, dtype=torch.float64)
    curve = torch.stack([grid**2.2, grid**2.0, grid**2.4])
    band = torch.stack([curve * 0.97, curve * 1.03])
    return curve, band, [[0.0, 0.9]] * 3


def test_plot_jobs_draw_the_plot_save_plot_draws(tmp_path):
    # the process beside the merge writes the very file the command drew itself before
    from deepinv_icrf.cli._common import PlotJobs, save_plot

    curve, band, observed = _plot_inputs()
    save_plot(tmp_path / "here.png", curve, title="t", band=band, observed=observed)
    with PlotJobs() as jobs:
        jobs.start(tmp_path / "job.png", curve, title="t", band=band, observed=observed)
        ((proc, _),) = jobs._jobs
        jobs.finish()
    assert proc.returncode == 0  # drawn by the process, not by the fallback
    assert (tmp_path / "job.png").read_bytes() == (tmp_path / "here.png").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here.png", "job.png"]


@pytest.mark.parametrize(
    "command", [("-c", "import sys; sys.exit(1)"), None], ids=["fails", "no-process"]
)
def test_plot_jobs_draw_here_what_the_process_did_not(tmp_path, monkeypatch, command):
    from deepinv_icrf.cli._common import PlotJobs, save_plot

    curve, band, observed = _plot_inputs()
    save_plot(tmp_path / "here.png", curve, band=band, observed=observed)
    if command is None:  # the interpreter cannot be started
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    else:
        monkeypatch.setattr(PlotJobs, "command", command)
    jobs = PlotJobs()
    jobs.start(tmp_path / "job.png", curve, band=band, observed=observed)
    jobs.finish()
    assert (tmp_path / "job.png").read_bytes() == (tmp_path / "here.png").read_bytes()


def test_plot_jobs_checks_the_plot_before_starting_it(tmp_path):
    from deepinv_icrf.cli._common import PlotJobs

    curve, band, _ = _plot_inputs()
    with pytest.raises(ValueError, match="lower edge <= its upper edge"):
        PlotJobs().start(tmp_path / "p.png", curve, band=band.flip(0))
    assert list(tmp_path.iterdir()) == []


def test_plot_jobs_cancel_stops_the_drawing(tmp_path, monkeypatch):
    # an error or Ctrl-C in the command: the drawing process is stopped and reaped before
    # the command's staged outputs are removed
    import time

    from deepinv_icrf.cli._common import PlotJobs

    monkeypatch.setattr(PlotJobs, "command", ("-c", "import time; time.sleep(60)"))
    curve, _, _ = _plot_inputs()
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        with PlotJobs() as jobs:
            jobs.start(tmp_path / "p.png", curve)
            ((proc, _),) = jobs._jobs
            raise KeyboardInterrupt
    assert proc.returncode is not None  # reaped
    assert time.perf_counter() - start < 30
    assert not (tmp_path / "p.png").exists()


# ---------------------------------------------------------------- the end of the process
_EXIT_SCRIPT = """
import atexit, sys, threading, weakref
class Kept:
    def __del__(self):  # at the modules' teardown only
        print("teardown")
kept = Kept()
weakref.finalize(kept, print, "finalized")
atexit.register(print, "exit handler")
if "torch" in sys.argv:
    import torch
if "thread" in sys.argv:
    threading.Thread(target=__import__("time").sleep, args=(0.5,)).start()
from deepinv_icrf.cli.app import exit_now
print("done", end="")  # no newline: still in the buffer of a pipe
sys.stderr.write("err")
exit_now(3)
"""


@pytest.mark.parametrize("case", ["torch", "", "torch thread"])
def test_exit_now_runs_the_exit_handlers_and_flushes(case):
    # with torch loaded the process ends without the modules' teardown, but after the exit
    # handlers and with the streams flushed; otherwise (no torch, a thread still running)
    # it ends as usual: the same output and status either way
    out = subprocess.run(
        [sys.executable, "-c", _EXIT_SCRIPT, *case.split()],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        timeout=120,
    )
    assert out.returncode == 3
    assert out.stdout.startswith("done")
    fast = case == "torch"
    printed = sorted(out.stdout[4:].split())
    assert printed == ["exit", "finalized", "handler"] + ([] if fast else ["teardown"])
    assert out.stderr == "err"


def test_console_script_is_run():
    # the installed command ends through exit_now, as python -m deepinv_icrf does
    import tomllib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"deepinv-icrf": "deepinv_icrf.cli.app:run"}
    assert "run()" in (ROOT / "deepinv_icrf" / "__main__.py").read_text()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="python -P is new in 3.11")
def test_plot_jobs_ignore_modules_in_the_current_folder(tmp_path, monkeypatch):
    # python -m puts the current folder first on the path: a json.py of the user's there
    # would run in the drawing process instead of the standard library's
    from deepinv_icrf.cli._common import PlotJobs

    (tmp_path / "json.py").write_text("raise SystemExit(7)\n")
    monkeypatch.chdir(tmp_path)
    # a relative entry such as PYTHONPATH=. would name the current folder by itself
    monkeypatch.delenv("PYTHONPATH", raising=False)
    curve, _, _ = _plot_inputs()
    jobs = PlotJobs()
    jobs.start(tmp_path / "p.png", curve)
    ((proc, _),) = jobs._jobs
    jobs.finish()
    assert proc.returncode == 0 and (tmp_path / "p.png").is_file()


@pytest.mark.parametrize("deghost", [False, True])
def test_hdr_draws_beside_the_merge_deghosting_or_not(
    photos, tmp_path, monkeypatch, deghost, capsys
):
    # the drawing process runs beside every merge: deghosting merges blocks of
    # single-threaded operations (deepinv_icrf._threads), which it does not stall
    from deepinv_icrf.cli._common import PlotJobs

    started, start = [], PlotJobs.start

    def recorded(self, *args, **kwargs):
        started.append(args)
        return start(self, *args, **kwargs)

    monkeypatch.setattr(PlotJobs, "start", recorded)
    out = tmp_path / "scene.npy"
    argv = ["hdr", str(photos), "--out", str(out), "--steps", "3", "--no-progress"]
    assert main(argv + (["--deghost"] if deghost else [])) == 0
    assert len(started) == 1
    assert (tmp_path / "scene.icrf_fit.png").is_file()


def test_a_reader_that_leaves_early_costs_the_report_not_the_outputs(photos, tmp_path):
    # deepinv-icrf fit ... | head -1: the pipe breaks at the second line; the command goes
    # on without its report and its outputs land (it ended with "Broken pipe", exit 2 and
    # no outputs when the report was written as it went)
    out = tmp_path / "fit"
    proc = subprocess.Popen(
        [sys.executable, "-m", "deepinv_icrf", "fit", str(photos), "--out", str(out)]
        + ["--steps", "3", "--no-progress"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"),
    )
    first = proc.stdout.readline()
    proc.stdout.close()  # the reader leaves
    _, err = proc.communicate(timeout=300)
    assert first.startswith(b"deepinv-icrf fit: 4 exposures")
    assert proc.returncode == 0, err
    assert b"Broken pipe" not in err
    assert sorted(p.name for p in out.iterdir()) == [
        "icrf.json",
        "icrf_fit.png",
        "summary.json",
    ]
