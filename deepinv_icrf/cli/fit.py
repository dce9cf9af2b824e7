r"""``deepinv-icrf fit FOLDER``: fit the ICRF of a folder of bracketed photos.

Writes ``icrf.json`` (the curve, with the code noise the fit estimated), ``icrf_fit.png`` and
``summary.json`` (:func:`deepinv_icrf.calibration.fit_summary`) into ``--out``. The fit options
are shared with ``hdr`` (:func:`add_fit_options`, :func:`fit_and_save`).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deepinv_icrf.cli._common import (
    LIBRARY_DEFAULT,
    PROG,
    add_device_option,
    add_folder_arguments,
    check_device,
    describe_folder,
    folder_inputs,
    folder_reads,
    given,
    positive_int,
    read_folder,
    save_plot,
    threshold,
)

__all__ = ["configure", "run_fit", "add_fit_options", "fit_and_save", "CurveFiles"]

HELP = "fit the ICRF of a folder of bracketed photos (icrf.json, icrf_fit.png, summary.json)"
#: ``--out`` of ``fit`` when not given.
DEFAULT_OUT = "deepinv_icrf_fit"
#: Options passed to :func:`~deepinv_icrf.calibration.fit_icrf` when given: argument
#: destination -> keyword.
_VALUES = {"steps": "steps", "seed": "seed", "outlier_threshold": "outlier_threshold"}
#: Flags passed to :func:`~deepinv_icrf.calibration.fit_icrf` as ``True`` when given.
_FLAGS = {"band": "band"}
#: ``--refine-exposures`` choices and the values of ``fit_icrf(refine_exposures=...)``.
REFINE_CHOICES = {"auto": "auto", "always": True, "never": False}


def add_fit_options(p: argparse.ArgumentParser) -> None:
    r"""The options of the fit (shared by ``fit`` and ``hdr``); defaults are the library's."""
    p.add_argument(
        "--steps",
        type=positive_int,
        default=LIBRARY_DEFAULT,
        help="most optimisation steps (default: the fit's own; Gauss-Newton iterations of "
        "the default code-domain fit, which stops earlier on convergence)",
    )
    p.add_argument(
        "--seed",
        type=int,
        default=LIBRARY_DEFAULT,
        help="seed of the pixel sampling (default: the fit's)",
    )
    p.add_argument(
        "--refine-exposures",
        nargs="?",
        const="always",
        default=LIBRARY_DEFAULT,
        choices=tuple(REFINE_CHOICES),
        help="refine the exposure times with the curve: 'auto' when the images show the "
        "listed times wrong (the fit's default; it then names the frames), 'always' (also "
        "the value of the bare flag), 'never'",
    )
    p.add_argument(
        "--band",
        action="store_true",
        help="estimate the 95%% confidence band of the curve (saved and plotted)",
    )
    p.add_argument(
        "--outlier-threshold",
        type=threshold,
        default=LIBRARY_DEFAULT,
        help="leave out codes the fitted response misses by more than this many noise stds "
        "(moving objects); 'none' keeps every code (default: the fit's)",
    )
    p.add_argument(
        "--align",
        action="store_true",
        help="align handheld brackets first (integer shifts, median threshold bitmaps; "
        "the fit uses the region every photo covers)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_device_option(p, "fit")


def configure(p: argparse.ArgumentParser) -> None:
    r"""The arguments of ``fit``."""
    add_folder_arguments(p)
    p.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help="output folder for icrf.json, icrf_fit.png, summary.json (default: %(default)s)",
    )
    add_fit_options(p)


def _fit_options(args: argparse.Namespace, device: str | None) -> dict[str, Any]:
    options = given(args, _VALUES)
    options.update(
        {keyword: True for dest, keyword in _FLAGS.items() if getattr(args, dest)}
    )
    if args.refine_exposures is not LIBRARY_DEFAULT:
        options["refine_exposures"] = REFINE_CHOICES[args.refine_exposures]
    if args.no_progress:
        options["progress"] = False
    if device is not None:
        options["device"] = device
    return options


@dataclass(frozen=True)
class CurveFiles:
    r"""Where a fitted curve goes: its file, its plot and the summary of the fit."""

    curve: Path
    plot: Path
    summary: Path


def fit_and_save(
    args: argparse.Namespace,
    stack,
    images,
    files: CurveFiles,
    *,
    device: str | None,
    align: bool,
    command: str = "fit",
    context: dict[str, Any] | None = None,
    plot: Callable[..., None] = save_plot,
):
    r"""Fit the ICRF of ``images``, write its curve and plot; return it and its summary.

    :param argparse.Namespace args: the parsed arguments (the fit options).
    :param deepinv_icrf.data.ExposureFolder stack: the folder read (files, times, source).
    :param numpy.ndarray images: the codes to fit (``stack.images``, or them aligned).
    :param CurveFiles files: the staged paths to write the curve and its plot to (the summary
        is the caller's to write, after anything it adds).
    :param str, None device: the checked ``--device``.
    :param bool align: let the fit align the photos (``False`` when the caller did).
    :param str command: the command, for the curve file's ``source``.
    :param dict, None context: more values for the summary (e.g. alignment shifts).
    :param Callable plot: draws the plot, as :func:`~deepinv_icrf.cli._common.save_plot`
        (default) or :meth:`PlotJobs.start <deepinv_icrf.cli._common.PlotJobs.start>`.
    :return: (tuple) the ICRF and its summary (:func:`deepinv_icrf.calibration.fit_summary`).
    """
    import deepinv_icrf
    from deepinv_icrf.calibration import fit_metadata, fit_summary

    options = _fit_options(args, device)
    if align:
        options["align"] = True
    start = time.perf_counter()
    with warnings.catch_warnings():
        # the command line prints the time check itself, naming the files
        warnings.filterwarnings(
            "ignore", message="listed exposure times disagree", category=UserWarning
        )
        # and what the photos leave unmeasured, in the summary's notes
        warnings.filterwarnings(
            "ignore",
            message="the photos (reach code|go no darker)",
            category=UserWarning,
        )
        icrf = deepinv_icrf.fit_icrf(
            images, stack.exposure_times, reconstructor=False, **options
        )
    elapsed = time.perf_counter() - start
    folder = str(Path(args.folder).resolve())
    names = [p.name for p in stack.paths]
    times = [float(t) for t in stack.exposure_times]
    summary = fit_summary(
        icrf,
        images,
        bit_depth=stack.bit_depth,
        context={
            "folder": folder,
            "files": names,
            "exposure_times": times,
            "time_source": stack.time_source,
            "steps": options.get("steps"),
            "seed": options.get("seed"),
            "device": device or "cpu",
            "refine_exposures": (
                "auto"
                if args.refine_exposures is LIBRARY_DEFAULT
                else args.refine_exposures
            ),
            "align": bool(args.align),
            "fit_seconds": round(elapsed, 3),
            **(context or {}),
        },
    )
    icrf.save(
        files.curve,
        source=f"{PROG} {command}",
        folder=folder,
        files=names,
        exposure_times=times,
        time_source=stack.time_source,
        **fit_metadata(icrf),
    )
    band = icrf.band
    plot(
        files.plot,
        icrf.curve.detach().to("cpu").double(),
        title=f"{PROG}: ICRF of {Path(args.folder).name}",
        band=band.detach().to("cpu") if band is not None else None,
        observed=summary.get("observed_code_range"),
    )
    return icrf, summary


def print_fit(icrf, summary: dict[str, Any], stream) -> None:
    r"""What a fit found (:func:`deepinv_icrf.calibration.describe_fit`)."""
    from deepinv_icrf.calibration import describe_fit

    print(f"fitted in {summary['fit_seconds']:.1f} s", file=stream)
    print(describe_fit(icrf, summary), file=stream)


def run_fit(args: argparse.Namespace, stream=None) -> int:
    r"""``deepinv-icrf fit FOLDER``: fit the ICRF of a folder of bracketed photos."""
    from deepinv_icrf.io import OutputSet, write_json

    stream = sys.stdout if stream is None else stream
    device = check_device(args.device)
    stack = read_folder(args)
    print(describe_folder("fit", stack), file=stream)
    target = Path(args.out)
    with OutputSet(
        inputs=folder_inputs(args, stack), reads=folder_reads(args)
    ) as outputs:
        out = outputs.folder(target, "--out")
        files = CurveFiles(
            out / "icrf.json", out / "icrf_fit.png", out / "summary.json"
        )
        icrf, summary = fit_and_save(
            args, stack, stack.images, files, device=device, align=args.align
        )
        write_json(files.summary, summary)
    print_fit(icrf, summary, stream)
    print(
        f"wrote {target / 'icrf.json'}, {target / 'icrf_fit.png'} and "
        f"{target / 'summary.json'}",
        file=stream,
    )
    return 0
