r"""What the commands share: the program name, the error type, argument types, the device.

Nothing here imports torch, numpy or the rest of the package at module level: the parsers of
every command are built from this module, and ``deepinv-icrf --help`` or a usage error must
answer without them. Heavy imports happen inside the functions that need them.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

PROG = "deepinv-icrf"
#: Device types ``--device`` accepts.
DEVICE_TYPES = ("cpu", "cuda", "mps")


class CLIError(ValueError):
    r"""Bad command-line input, reported as one ``deepinv-icrf: error: ...`` line."""


# ---------------------------------------------------------------------------- argument types
def positive_int(text: str) -> int:
    r"""``argparse`` type: an integer ``>= 1``."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def threshold(text: str) -> float | None:
    r"""``argparse`` type: a number ``> 0``, or ``none`` (``None``)."""
    if text.strip().lower() == "none":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"expected a number > 0 or 'none', got {text!r}"
        )
    return value


def unit_fraction(text: str) -> float:
    r"""``argparse`` type: a number in ``[0, 1]`` (a code as a fraction of the code range),
    also written as a ratio such as ``16/255``."""
    try:
        top, _, bottom = text.partition("/")
        value = float(top) / float(bottom) if bottom else float(top)
    except (ValueError, ZeroDivisionError):
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}")
    return value


class _LibraryDefault:
    r"""The default of an option the library sets: the option is not passed on."""

    def __repr__(self) -> str:
        return "the library's"


#: ``default=`` of every option that a library function defaults: such an option is passed on
#: only when given (:func:`given`), so that each default is written once, in the library.
LIBRARY_DEFAULT = _LibraryDefault()


def given(args: argparse.Namespace, names: dict[str, str]) -> dict[str, Any]:
    r"""The options the user gave, as keyword arguments of a library function.

    :param argparse.Namespace args: the parsed arguments.
    :param dict names: ``{argument destination: keyword of the library function}``.
    :return: (dict) the keywords of the options that were given.
    """
    return {
        keyword: getattr(args, dest)
        for dest, keyword in names.items()
        if getattr(args, dest) is not LIBRARY_DEFAULT
    }


# ---------------------------------------------------------------------------- device
def add_device_option(p: argparse.ArgumentParser, what: str) -> None:
    r"""The ``--device`` option of a command (checked by :func:`check_device`)."""
    p.add_argument(
        "--device",
        default=None,
        help=f"torch device to {what} on: cpu, cuda, cuda:1 or mps (default: the library's, "
        "the CPU for photos)",
    )


def check_device(device: str | None) -> str | None:
    r"""``--device``, checked: a torch device of a type in :data:`DEVICE_TYPES`, available here.

    :param str, None device: the option's value.
    :return: (str, None) the device as torch writes it, or ``None`` when not given.
    :raises CLIError: for a string torch does not parse, another device type, or a device
        this machine does not have.
    """
    if device is None:
        return None
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise CLIError(f"--device: not a torch device: {device!r}") from err
    if dev.type not in DEVICE_TYPES:
        raise CLIError(
            f"--device {device}: expected one of the device types {DEVICE_TYPES}"
        )
    mps = getattr(torch.backends, "mps", None)
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": mps is not None and mps.is_available(),
    }
    if not available[dev.type]:
        raise CLIError(
            f"--device {device}: {dev.type} is not available on this machine"
        )
    if dev.type == "cuda" and dev.index is not None:
        if dev.index >= torch.cuda.device_count():
            raise CLIError(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA "
                "device(s)"
            )
    return str(dev)


# ---------------------------------------------------------------------------- files
def load_icrf(path: str | Path):
    r"""The curve file of ``--icrf`` (:func:`deepinv_icrf.models.read_icrf_file`: the checks
    and curve of ``ICRF.load``, without importing deepinv); a missing file is one error
    line, not a traceback."""
    from deepinv_icrf.models.curve_file import read_icrf_file

    path = Path(path)
    if path.exists() and not path.is_file():
        raise CLIError(f"--icrf {str(path)!r} is not a file (a folder?)")
    if not path.is_file():
        raise CLIError(f"--icrf: no such file {str(path)!r}")
    return read_icrf_file(path)


def save_plot(
    path: Path,
    curve,
    reference=None,
    title: str | None = None,
    band=None,
    observed=None,
) -> None:
    r"""Plot a curve (with its reference, band or observed codes) into ``path``,
    atomically: drawn here as the drawing process of :class:`PlotJobs` draws it
    (:func:`deepinv_icrf.cli._plot_job.draw_job`)."""
    import os

    from deepinv_icrf.cli._plot_job import draw_job
    from deepinv_icrf.plot import icrf_plot_arrays

    arrays = icrf_plot_arrays(curve, reference=reference, band=band, observed=observed)
    draw_job({"path": os.fspath(path), "title": title, "arrays": arrays})


class PlotJobs:
    r"""Plots drawn in processes of their own, beside the command's work (``hdr``: the merge).

    :meth:`start` checks the plot's inputs (:func:`deepinv_icrf.plot.icrf_plot_arrays`) and
    hands the arrays to ``python -m deepinv_icrf.cli._plot_job``, which draws them with the
    function :func:`save_plot` draws with (the same PNG, byte for byte). Drawing takes
    0.4-0.6 s, mostly matplotlib's import; on a second core it overlaps the merge instead of
    preceding it.
    :meth:`finish` waits for every plot (at most ``timeout`` seconds each) and draws here any
    plot whose process could not start or did not write it, so a plot is never lost to the
    process; :meth:`cancel` (in a ``finally``: error, Ctrl-C) stops the ones still running.
    Used as a ``plot`` of :func:`deepinv_icrf.cli.fit.fit_and_save`.
    """

    #: the drawing process's arguments after the interpreter (``-P`` from Python 3.11: the
    #: current folder is not put first on its path, so no file there shadows a module)
    command: tuple[str, ...] = (
        *(("-P",) if sys.version_info >= (3, 11) else ()),
        "-m",
        "deepinv_icrf.cli._plot_job",
    )

    def __init__(self, timeout: float = 120.0) -> None:
        self.timeout = timeout
        self._jobs: list[tuple[Any, dict[str, Any]]] = []

    def start(
        self, path: Path, curve, title: str | None = None, band=None, observed=None
    ) -> None:
        r"""Start drawing the plot of :func:`save_plot` (same arguments, no reference)."""
        import json
        import os
        import subprocess

        import deepinv_icrf
        from deepinv_icrf.plot import icrf_plot_arrays

        arrays = icrf_plot_arrays(curve, band=band, observed=observed)
        job = {
            "path": os.fspath(path),
            "title": title,
            "arrays": {k: None if v is None else v.tolist() for k, v in arrays.items()},
        }
        # the child imports this very package, wherever it was imported from
        env = dict(os.environ)
        root = str(Path(deepinv_icrf.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(
            [root, *filter(None, [env.get("PYTHONPATH")])]
        )
        proc = None
        try:
            proc = subprocess.Popen(
                [sys.executable, *self.command],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            )
            proc.stdin.write(json.dumps(job).encode())
            proc.stdin.close()
        except OSError:
            # no process to draw it in, or it died at once: drawn here at finish()
            if proc is not None:
                _stop(proc)
            proc = None
        self._jobs.append((proc, job))

    def finish(self) -> None:
        r"""Wait for every plot; draw here each one its process did not write."""
        from deepinv_icrf.cli._plot_job import draw_job

        jobs, self._jobs = self._jobs, []
        for proc, job in jobs:
            status = None
            if proc is not None:
                try:
                    status = proc.wait(timeout=self.timeout)
                except Exception:  # noqa: BLE001 - a hung drawing: stopped, drawn here
                    _stop(proc)
            if status != 0 or not Path(job["path"]).is_file():
                draw_job(job)

    def cancel(self) -> None:
        r"""Stop the plots still being drawn (their staged files go with the command's)."""
        jobs, self._jobs = self._jobs, []
        for proc, _ in jobs:
            if proc is not None:
                _stop(proc)

    def __enter__(self) -> PlotJobs:
        return self

    def __exit__(self, *exc: object) -> None:
        # after a finish() nothing is left; after an error or Ctrl-C, the plots are stopped
        # before the staged outputs they write into are removed
        self.cancel()


def _stop(proc) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()


def describe_folder(command: str, stack) -> str:
    r"""The first line of a command that read a folder of photos."""
    n, h, w, c = stack.images.shape
    return (
        f"{PROG} {command}: {n} exposures {w}x{h}, {c} channel(s), {stack.bit_depth}-bit, "
        f"times {stack.exposure_times[0]:.6g}..{stack.exposure_times[-1]:.6g} s "
        f"(from {stack.time_source})"
    )


# ---------------------------------------------------------------------------- folders
def add_folder_arguments(p: argparse.ArgumentParser) -> None:
    r"""The folder of bracketed photos and how its exposure times are found."""
    p.add_argument("folder", help="folder of bracketed JPEG/PNG/TIFF images")
    p.add_argument(
        "--sidecar",
        default=None,
        help="exposure-time sidecar: CSV (filename,exposure_time), JSON ({filename: time}), "
        "OpenCV's list.txt or a list with a header (default: one found in the folder, "
        "else EXIF)",
    )
    p.add_argument(
        "--pattern", default=None, help="glob selecting the images, e.g. '*.jpg'"
    )


def read_folder(args: argparse.Namespace):
    r"""The photos of ``args.folder`` (:func:`deepinv_icrf.data.read_exposure_folder`), their
    listed times checked against their brightness (:func:`check_times_order`)."""
    from deepinv_icrf.data import read_exposure_folder

    stack = read_exposure_folder(
        args.folder, sidecar=args.sidecar, pattern=args.pattern
    )
    check_times_order(args, stack)
    return stack


def check_times_order(args: argparse.Namespace, stack) -> None:
    r"""The listed times against the brightness of the photos, naming the files
    (:func:`~deepinv_icrf.functional.exposure_order.check_exposure_order`; the library
    checks again, naming frames by index)."""
    import torch

    from deepinv_icrf.functional.exposure_order import check_exposure_order

    check_exposure_order(
        torch.from_numpy(stack.images),
        torch.from_numpy(stack.exposure_times),
        2**stack.bit_depth - 1,
        name=f"{str(args.folder)!r} (times from {stack.time_source})",
        names=[p.name for p in stack.paths],
        warn=False,  # a few steps out of order: the fit's time check or the merge says so
    )


def folder_inputs(args: argparse.Namespace, stack) -> list[Path]:
    r"""The files a command on a folder reads (no output may be one of them)."""
    return [*stack.paths, *([Path(args.sidecar)] if args.sidecar else [])]


def folder_reads(args: argparse.Namespace):
    r"""``reads(path)`` of the command's output set: whether a run on ``args.folder`` would
    read a file at ``path`` as a photo or a sidecar (no output may be such a file:
    :func:`deepinv_icrf.data.folder_reads`)."""
    from deepinv_icrf.data import folder_reads as reads

    return lambda path: reads(args.folder, path, args.pattern)


def aligned(stack, command: str, stream):
    r"""The photos aligned (:func:`deepinv_icrf.data.align_exposures`) and their shifts."""
    from deepinv_icrf.data import align_exposures

    images, shifts = align_exposures(stack.images, exposure_times=stack.exposure_times)
    print(f"{PROG} {command}: aligned, shifts (dy, dx) {shifts.tolist()}", file=stream)
    return images, shifts.tolist()
