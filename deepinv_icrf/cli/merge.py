r"""``deepinv-icrf merge FOLDER --icrf icrf.json --out x.exr``: photos to an HDR radiance map.

The merge options and outputs are shared with ``hdr`` (:func:`add_merge_options`,
:func:`stage_merge_outputs`, :func:`merge_maps`, :func:`write_merge_outputs`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from deepinv_icrf.cli._common import (
    LIBRARY_DEFAULT,
    PROG,
    CLIError,
    add_device_option,
    add_folder_arguments,
    aligned,
    check_device,
    folder_inputs,
    folder_reads,
    given,
    load_icrf,
    read_folder,
    threshold,
    unit_fraction,
)

__all__ = [
    "configure",
    "run_merge",
    "add_merge_options",
    "check_code_range",
    "stage_merge_outputs",
    "merge_maps",
    "write_merge_outputs",
]

HELP = "merge a folder of bracketed photos into an HDR radiance map (+ preview)"
#: Extensions of ``--preview`` (8-bit images).
PREVIEW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: Layers ``--layers`` can add to an OpenEXR ``--out``.
LAYERS = ("std", "saturated", "count")
#: Merge weights and tone-mapping methods offered (the library's; a test keeps them equal to
#: ``functional.merge.MERGE_WEIGHTS`` and ``hdr.TONEMAP_METHODS``, which import torch).
WEIGHTS = ("hat", "gaussian")
TONEMAPS = ("reinhard", "gamma")
#: OpenEXR compressions ``--exr-compression`` offers (``io.exr.EXR_COMPRESSIONS``, kept equal
#: by a test: that module imports numpy).
EXR_COMPRESSIONS = (
    "none",
    "rle",
    "zips",
    "zip",
    "piz",
    "pxr24",
    "b44",
    "b44a",
    "dwaa",
    "dwab",
)
#: ``--deghost`` without a value: the threshold in noise stds.
DEGHOST_THRESHOLD = 4.0
#: Code noise std ``--deghost`` assumes when the curve records none (2 codes of 8 bits).
DEGHOST_CODE_STD = 2.0 / 255.0
#: Options passed to :func:`~deepinv_icrf.hdr.merge_hdr` when given.
_MERGE_OPTIONS = {"weights": "weights", "lower": "lower", "upper": "upper"}


def add_merge_options(p: argparse.ArgumentParser) -> None:
    r"""The outputs and options of the merge (shared by ``merge`` and ``hdr``)."""
    p.add_argument(
        "--out",
        required=True,
        help="HDR radiance file: .exr (OpenEXR, float32), .hdr, .npy or .tif (float32)",
    )
    p.add_argument(
        "--preview", default=None, help="tone-mapped 8-bit preview (.png/.jpg)"
    )
    p.add_argument(
        "--std",
        default=None,
        help="also write the per-pixel std (.npy, .tif, .hdr, .exr)",
    )
    p.add_argument(
        "--layers",
        nargs="+",
        choices=LAYERS,
        default=[],
        help="also store these layers in the .exr --out (viewers show them as layers): "
        "std (the radiance's std; -1 where unbounded), saturated (pixels saturated in "
        "every exposure, 0/1), count (exposures merged per pixel)",
    )
    p.add_argument(
        "--exr-compression",
        choices=EXR_COMPRESSIONS,
        default=LIBRARY_DEFAULT,
        help="compression of .exr outputs (default: save_radiance's, none: a float32 "
        "radiance map shrinks by only 10-16%% with the lossless zip, zips, piz, at 10-20 "
        "times the time); pxr24, b44, b44a, dwaa, dwab are lossy",
    )
    p.add_argument(
        "--weights",
        choices=WEIGHTS,
        default=LIBRARY_DEFAULT,
        help="merge weights (default: merge_hdr's)",
    )
    p.add_argument(
        "--lower",
        type=unit_fraction,
        default=LIBRARY_DEFAULT,
        help="smallest code merged, as a fraction of the code range, e.g. 16/255 or 0.0627 "
        "(default: merge_hdr's, one code step above black)",
    )
    p.add_argument(
        "--upper",
        type=unit_fraction,
        default=LIBRARY_DEFAULT,
        help="largest code merged, as a fraction of the code range (default: merge_hdr's, "
        "one code step below white)",
    )
    p.add_argument(
        "--tonemap",
        choices=TONEMAPS,
        default=LIBRARY_DEFAULT,
        help="tone-mapping of the preview (default: tonemap's)",
    )
    p.add_argument(
        "--deghost",
        nargs="?",
        const=DEGHOST_THRESHOLD,
        default=None,
        type=threshold,
        metavar="THRESHOLD",
        help="leave out, per pixel, exposures whose radiance differs from the middle "
        "exposure's by more than THRESHOLD noise stds (default %(const)s): moving things "
        "appear as in the middle exposure, without ghosts. The code noise is the one the "
        "fit estimated (the ICRF file's metadata 'code_std') when known, else "
        f"{DEGHOST_CODE_STD * 255:g}/255; it also enters --std",
    )


def configure(p: argparse.ArgumentParser) -> None:
    r"""The arguments of ``merge``."""
    add_folder_arguments(p)
    p.add_argument(
        "--icrf", required=True, help="curve file written by 'fit' (icrf.json)"
    )
    add_merge_options(p)
    p.add_argument(
        "--align",
        action="store_true",
        help="align handheld brackets first (integer shifts, median threshold bitmaps); "
        "the radiance map covers the region every photo covers",
    )
    add_device_option(p, "merge")


def check_merge_arguments(args: argparse.Namespace) -> list[str]:
    r"""Check the merge's outputs and options before anything is read; return the layers."""
    from deepinv_icrf.io import RADIANCE_EXTENSIONS, OutputSet

    for flag, value, allowed in (
        ("--out", args.out, RADIANCE_EXTENSIONS),
        ("--std", args.std, RADIANCE_EXTENSIONS),
        ("--preview", args.preview, PREVIEW_EXTENSIONS),
    ):
        if value is None:
            continue
        if Path(value).suffix.lower() not in allowed:
            raise CLIError(
                f"{flag} {value!r}: expected one of the extensions {allowed}"
            )
        try:  # a typo in the folder is refused before the photos are decoded
            OutputSet.check_target(value, flag)
        except ValueError as err:
            raise CLIError(str(err)) from None
    layers = list(dict.fromkeys(args.layers))
    if layers and Path(args.out).suffix.lower() != ".exr":
        raise CLIError(
            f"--layers needs an OpenEXR --out (.exr), which holds layers; got {args.out!r}"
        )
    exrs = [v for v in (args.out, args.std) if v and Path(v).suffix.lower() == ".exr"]
    if args.exr_compression is not LIBRARY_DEFAULT and not exrs:
        raise CLIError(
            f"--exr-compression {args.exr_compression} needs an OpenEXR --out or --std "
            f"(.exr); got {args.out!r}"
        )
    bounds = given(args, {"lower": "lower", "upper": "upper"})
    if len(bounds) == 2 and not bounds["lower"] < bounds["upper"]:
        raise CLIError(
            f"--lower {bounds['lower']:g} must be below --upper {bounds['upper']:g}"
        )
    return layers


def check_code_range(args: argparse.Namespace, bit_depth: int, icrf=None) -> None:
    r"""``--lower``/``--upper`` against the defaults for the photos' bit depth (and the
    curve's floor), before any work: one given alone may cross the other's default
    (:func:`deepinv_icrf.hdr.merge_bounds`)."""
    from deepinv_icrf.hdr import merge_bounds

    bounds = given(args, {"lower": "lower", "upper": "upper"})
    if not bounds:
        return
    try:
        merge_bounds(bit_depth, icrf=icrf, **bounds)
    except ValueError as err:
        flags = "/".join(f"--{name}" for name in bounds)
        raise CLIError(f"{flags}: {err}") from None


def stage_merge_outputs(outputs, args: argparse.Namespace) -> dict[str, Path]:
    r"""Register ``--out``, ``--std`` and ``--preview`` in the command's output set."""
    return {
        flag: outputs.file(value, flag)
        for flag, value in (
            ("--out", args.out),
            ("--std", args.std),
            ("--preview", args.preview),
        )
        if value is not None
    }


def merge_maps(
    staged: dict[str, Path],
    args: argparse.Namespace,
    icrf,
    images,
    exposure_times,
    layers: list[str],
    *,
    device: str | None,
    command: str,
    noise_source: str,
    stream,
) -> dict[str, Any]:
    r"""Merge the photos into the maps the staged outputs need.

    The caller drops its photos before :func:`write_merge_outputs`: the outputs are then
    written without the stack in memory.

    :return: (dict) ``radiance``, ``std`` and ``count`` (``None`` unless an output needs
        them), ``saturated``, the deghosting threshold ``deghost`` and the code noise
        ``code_std`` used.
    """
    from deepinv_icrf.hdr import merge_hdr
    from deepinv_icrf.hdr_summary import recorded_code_std

    deghost = args.deghost
    code_std = 0.0
    if deghost is not None:
        code_std = recorded_code_std(icrf)
        source = noise_source
        if code_std is None:
            code_std, source = (
                DEGHOST_CODE_STD,
                f"default {DEGHOST_CODE_STD * 255:g}/255",
            )
        print(
            f"{PROG} {command}: deghosting, threshold {deghost:g} stds, code noise "
            f"{code_std:.4g} ({source})",
            file=stream,
        )
    options = given(args, _MERGE_OPTIONS)
    if device is not None:
        options["device"] = device
    # only the maps an output needs: without the std or the count, integer codes merge from
    # per-code tables (no floating-point copy of the stack, several times faster)
    want_std = "std" in layers or "--std" in staged
    want_count = "count" in layers
    merged = list(
        merge_hdr(
            images,
            exposure_times,
            icrf,
            return_std=want_std,
            return_saturated=True,
            return_count=want_count,
            code_std=code_std,
            deghost=deghost,
            **options,
        )
    )
    return {
        "radiance": merged.pop(0),
        "std": merged.pop(0) if want_std else None,
        "saturated": merged.pop(0),
        "count": merged.pop(0) if want_count else None,
        "deghost": deghost,
        "code_std": code_std,
    }


def write_merge_outputs(
    staged: dict[str, Path],
    args: argparse.Namespace,
    maps: dict[str, Any],
    layers: list[str],
) -> dict[str, Any]:
    r"""Write the maps of :func:`merge_maps` to the staged outputs; return what they hold.

    :return: (dict) :func:`deepinv_icrf.hdr_summary.radiance_summary` of the map, with the
        deghosting threshold and the code noise used.
    """
    import numpy as np

    from deepinv_icrf.hdr import save_radiance, tonemap
    from deepinv_icrf.hdr_summary import radiance_summary
    from deepinv_icrf.io import write_image

    radiance, std = maps["radiance"], maps["std"]
    compression = given(args, {"exr_compression": "exr_compression"})
    save_radiance(
        staged["--out"], radiance, **{k: maps[k] for k in layers}, **compression
    )
    if "--std" in staged:
        # pixels saturated everywhere have an unbounded std: stored as -1
        save_radiance(
            staged["--std"],
            np.where(np.isfinite(std), std, -1.0).astype(np.float32),
            **compression,
        )
    if "--preview" in staged:
        shown = tonemap(radiance, **given(args, {"tonemap": "method"}))
        shown *= 255.0  # in place: the preview costs one float map, not three
        write_image(staged["--preview"], np.round(shown, out=shown).astype(np.uint8))
        del shown
    return {
        **radiance_summary(radiance, maps["saturated"]),
        "deghost": maps["deghost"],
        "code_std": maps["code_std"],
    }


def written(args: argparse.Namespace, layers: list[str]) -> str:
    r"""The ``wrote ...`` line of the merge's outputs."""
    paths = [v for v in (args.out, args.std, args.preview) if v is not None]
    extra = f" (layers: {', '.join(layers)})" if layers else ""
    return f"wrote {', '.join(paths)}{extra}"


def run_merge(args: argparse.Namespace, stream=None) -> int:
    r"""``deepinv-icrf merge FOLDER``: merge bracketed photos into an HDR radiance map."""
    from deepinv_icrf.hdr_summary import describe_radiance
    from deepinv_icrf.io import OutputSet

    stream = sys.stdout if stream is None else stream
    layers = check_merge_arguments(args)
    device = check_device(args.device)
    icrf = load_icrf(args.icrf)
    stack = read_folder(args)
    check_code_range(args, stack.bit_depth, icrf)
    if stack.images.shape[-1] != icrf.channels and icrf.channels != 1:
        raise CLIError(
            f"the images have {stack.images.shape[-1]} channel(s) but the ICRF has "
            f"{icrf.channels}"
        )
    # every output checked (not an input, not another output, its folder exists) before
    # the merge costs anything; all of them land together at the end
    with OutputSet(
        inputs=[*folder_inputs(args, stack), Path(args.icrf)],
        reads=folder_reads(args),
    ) as outputs:
        staged = stage_merge_outputs(outputs, args)
        images = aligned(stack, "merge", stream)[0] if args.align else stack.images
        n_photos, times = len(stack.paths), stack.exposure_times
        del stack  # the photos: only `images` holds them now
        maps = merge_maps(
            staged,
            args,
            icrf,
            images,
            times,
            layers,
            device=device,
            command="merge",
            noise_source="the ICRF file",
            stream=stream,
        )
        del images  # merged: the outputs are written without the photos in memory
        merged = write_merge_outputs(staged, args, maps, layers)
    print(
        f"{PROG} merge: {n_photos} exposures -> {describe_radiance(merged)}",
        file=stream,
    )
    print(written(args, layers), file=stream)
    return 0
