r"""``deepinv-icrf hdr FOLDER --out x.exr``: fit the curve and merge, in one process.

The photos are read (and aligned, with ``--align``) once; the fit and the merge use the same
codes. Beside the radiance map ``x.exr`` go the curve ``x.icrf.json`` (what ``fit`` writes as
``icrf.json``: ``merge --icrf x.icrf.json`` merges other photos of the same camera with it), its
plot ``x.icrf_fit.png`` and ``x.summary.json`` (the fit's summary, with the merge's under
``"merge"``). Every output is one staged set: all of them appear together, or none.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deepinv_icrf.cli._common import (
    PROG,
    PlotJobs,
    add_folder_arguments,
    aligned,
    check_device,
    describe_folder,
    folder_inputs,
    folder_reads,
    read_folder,
)
from deepinv_icrf.cli.fit import CurveFiles, add_fit_options, fit_and_save, print_fit
from deepinv_icrf.cli.merge import (
    add_merge_options,
    check_code_range,
    check_merge_arguments,
    merge_maps,
    stage_merge_outputs,
    write_merge_outputs,
    written,
)

__all__ = ["configure", "run_hdr", "curve_files"]

HELP = (
    "fit the ICRF and merge an HDR radiance map in one go (x.exr plus x.icrf.json, "
    "x.icrf_fit.png, x.summary.json)"
)


def configure(p: argparse.ArgumentParser) -> None:
    r"""The arguments of ``hdr``: the folder, the merge's outputs and options, the fit's."""
    add_folder_arguments(p)
    add_merge_options(p)
    add_fit_options(p)


def curve_files(out: str | Path) -> CurveFiles:
    r"""Where ``hdr --out x.exr`` writes the curve, its plot and the summary: beside ``x.exr``.

    :param str, pathlib.Path out: the radiance map.
    :return: (CurveFiles) ``x.icrf.json``, ``x.icrf_fit.png`` and ``x.summary.json``.

    |sep|

    :Example:

    >>> [p.name for p in vars(curve_files("night/scene.exr")).values()]
    ['scene.icrf.json', 'scene.icrf_fit.png', 'scene.summary.json']
    """
    out = Path(out)
    return CurveFiles(
        out.with_name(f"{out.stem}.icrf.json"),
        out.with_name(f"{out.stem}.icrf_fit.png"),
        out.with_name(f"{out.stem}.summary.json"),
    )


def run_hdr(args: argparse.Namespace, stream=None) -> int:
    r"""``deepinv-icrf hdr FOLDER --out x.exr``: fit the ICRF and merge, reading once."""
    from deepinv_icrf.hdr_summary import describe_radiance
    from deepinv_icrf.io import OutputSet, write_json

    stream = sys.stdout if stream is None else stream
    layers = check_merge_arguments(args)
    device = check_device(args.device)
    stack = read_folder(args)
    check_code_range(args, stack.bit_depth)  # the floor is checked after the fit
    print(describe_folder("hdr", stack), file=stream)
    targets = curve_files(args.out)
    # the fit's plot is drawn beside the merge, in a process of its own (stopped on an
    # error before the staged outputs it writes into are removed): the merge's blocks run
    # single-threaded operations (deepinv_icrf._threads), which a process beside them slows
    # by the core it takes, not by stalling every operation
    plots = PlotJobs()
    with (
        OutputSet(
            inputs=folder_inputs(args, stack), reads=folder_reads(args)
        ) as outputs,
        plots,
    ):
        staged = stage_merge_outputs(outputs, args)
        files = CurveFiles(
            *(
                outputs.file(path, f"--out's {what}")
                for what, path in zip(
                    ("curve", "plot", "summary"), vars(targets).values(), strict=True
                )
            )
        )
        images, context = stack.images, {}
        if args.align:
            images, context["shifts"] = aligned(stack, "hdr", stream)
        icrf, summary = fit_and_save(
            args,
            stack,
            images,
            files,
            device=device,
            align=False,  # aligned above, once for the fit and the merge
            command="hdr",
            context=context,
            plot=plots.start,
        )
        # the times the fit used: refined from the images where the listed ones were wrong
        report = getattr(icrf, "fit_report", None)
        times = (
            report.exposure_times.numpy()
            if getattr(report, "refinement", None) is not None
            else stack.exposure_times
        )
        n_photos = len(stack.paths)
        del stack  # the photos: only `images` holds them now
        maps = merge_maps(
            staged,
            args,
            icrf,
            images,
            times,
            layers,
            device=device,
            command="hdr",
            noise_source="the fit",
            stream=stream,
        )
        del images  # merged: the outputs are written without the photos in memory
        summary["merge"] = write_merge_outputs(staged, args, maps, layers)
        write_json(files.summary, summary)
        plots.finish()
    print_fit(icrf, summary, stream)
    print(
        f"{PROG} hdr: {n_photos} exposures -> "
        f"{describe_radiance(summary['merge'])}",
        file=stream,
    )
    print(
        f"{written(args, layers)}, {targets.curve}, {targets.plot} and {targets.summary}",
        file=stream,
    )
    return 0
