r"""Command line: ``deepinv-icrf`` (no arguments: fit the embedded demo stack).

Subcommands live in one table, :data:`SUBCOMMANDS`: each entry holds its help line, a
function that adds its arguments to an :class:`argparse.ArgumentParser` and a function that
runs it from the parsed arguments and returns the exit code. A new subcommand is one more
entry (see :func:`register_subcommand`).

Every command writes its output files as one set (:class:`deepinv_icrf.io.OutputSet`): into
a hidden folder beside the targets, moved into place at the end, so that an error, Ctrl-C or a
full disk leaves the previous outputs untouched and two runs into one folder leave one
complete set. An output path that is one of the command's inputs (or a link to one), or
another of its outputs, is refused before anything is computed. Bad input ends with exit
code 2 and one line ``deepinv-icrf: error: ...`` on stderr, no traceback, and no output; a
genuine bug still shows its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "main",
    "run_demo",
    "run_fit",
    "run_linearize",
    "run_merge",
    "SUBCOMMANDS",
    "Subcommand",
    "register_subcommand",
]

PROG = "deepinv-icrf"
_CHANNEL_NAMES = ("R", "G", "B")
_DEVICE_TYPES = ("cpu", "cuda", "mps")


class CLIError(ValueError):
    r"""Bad command-line input, reported as one ``deepinv-icrf: error: ...`` line."""


def _channel_names(c: int) -> tuple[str, ...]:
    return _CHANNEL_NAMES if c == 3 else tuple(str(k) for k in range(c))


def _save_plot(
    path: Path, curve, reference=None, title: str | None = None, band=None
) -> None:
    from deepinv_icrf.io import atomic_path
    from deepinv_icrf.plot import plot_icrf

    with atomic_path(path) as tmp:
        extra = {} if band is None else {"band": band}
        plot_icrf(curve, reference=reference, path=tmp, title=title, **extra)


def run_demo(
    out: str | Path = "deepinv_icrf_demo",
    steps: int | None = None,
    noise: float = 0.004,
    progress: bool = True,
    stream=None,
) -> dict:
    r"""Fit the ICRF of the embedded demo stack, print its error against the true curve, write a plot.

    The demo camera has a different known response per channel, so the printed error is a real
    measurement: RMSE of the fitted ICRF against the truth over codes 8..247.

    :param str, pathlib.Path out: output folder (created): ``icrf.json`` (the fitted curve),
        ``icrf_fit.png`` (fitted vs true curves and the error) and ``summary.json``.
    :param int, None steps: most optimisation steps (default ``None``: the fit's own, at most
        30 Gauss-Newton iterations for the default code-domain fit).
    :param float noise: standard deviation of the Gaussian noise on the codes (default 0.004).
    :param bool progress: show a progress bar.
    :param stream: where to print (default ``sys.stdout``).
    :return: (dict) the summary written to ``summary.json``.
    """
    from deepinv_icrf.io import OutputSet

    stream = stream if stream is not None else sys.stdout
    target = Path(out)
    with OutputSet() as outputs:
        summary = _demo(outputs.folder(target, "--out"), steps, noise, progress, stream)
    print(
        f"wrote {target / 'icrf.json'}, {target / 'icrf_fit.png'} and "
        f"{target / 'summary.json'}",
        file=stream,
    )
    return summary


def _demo(out: Path, steps, noise, progress, stream) -> dict:
    import deepinv as dinv
    import torch

    from deepinv_icrf.calibration.fit import fit_icrf
    from deepinv_icrf.data import demo_exposure_times, demo_scene
    from deepinv_icrf.functional.metrics import curve_rmse
    from deepinv_icrf.io import write_json
    from deepinv_icrf.physics import ExposureStack, get_response

    torch.manual_seed(0)
    scene = demo_scene()
    times = demo_exposure_times(9)
    response = get_response("gamma", gamma=(2.0, 2.2, 2.5))
    physics = ExposureStack(
        times,
        response=response,
        bit_depth=8,
        noise_model=dinv.physics.GaussianNoise(sigma=noise),
    )
    stack = physics(scene)
    truth = response.icrf_curve(256, channels=3)
    _, n, c, h, w = stack.shape
    print(
        f"deepinv-icrf demo: {n} exposures (1 stop apart) of a {c}x{h}x{w} synthetic HDR scene, "
        f"8-bit, camera response '{response.name}', code noise sigma {noise}",
        file=stream,
    )
    start = time.perf_counter()
    icrf = fit_icrf(stack[0], times, steps=steps, progress=progress)
    elapsed = time.perf_counter() - start
    fitted = icrf.curve.detach()
    rmse = curve_rmse(fitted, truth.to(fitted))
    worst = (fitted - truth.to(fitted)).abs()[:, 8:248].amax(dim=-1)
    names = ("R", "G", "B")
    print(
        f"fitted in {elapsed:.1f} s; error of the fitted ICRF against the true one (codes 8..247):",
        file=stream,
    )
    print("  channel   RMSE      max |error|", file=stream)
    for k in range(c):
        print(
            f"  {names[k]:<8}  {float(rmse[k]):.5f}   {float(worst[k]):.5f}",
            file=stream,
        )
    icrf.save(out / "icrf.json", source="deepinv-icrf demo")
    _save_plot(
        out / "icrf_fit.png",
        fitted,
        reference=truth,
        title="deepinv-icrf demo: fitted vs true ICRF",
    )
    summary = {
        "exposures": n,
        "shape": [c, h, w],
        "noise_sigma": noise,
        "fit_seconds": round(elapsed, 3),
        "rmse": {names[k]: float(rmse[k]) for k in range(c)},
        "max_abs_error": {names[k]: float(worst[k]) for k in range(c)},
    }
    write_json(out / "summary.json", summary)
    return summary


# ---------------------------------------------------------------------------- helpers
def _check_device(device: str | None) -> str | None:
    import torch

    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError) as err:
        raise CLIError(f"--device: not a torch device: {device!r}") from err
    if dev.type not in _DEVICE_TYPES:
        raise CLIError(
            f"--device {device}: expected one of the device types {_DEVICE_TYPES}"
        )
    available = {
        "cpu": True,
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None
        and torch.backends.mps.is_available(),
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


def _load_icrf(path: str | Path):
    from deepinv_icrf.models import ICRF

    path = Path(path)
    if not path.is_file():
        raise CLIError(f"--icrf: no such file {str(path)!r}")
    return ICRF.load(path)


def _channel_stats(curve, images: np.ndarray, bit_depth: int) -> list[dict]:
    r"""Per channel: curve at codes 1/4, 1/2, 3/4, equivalent gamma, share of usable pixels."""
    top = 2**bit_depth - 1
    stats = []
    c, n_points = curve.shape
    grid = np.linspace(0.0, 1.0, n_points)
    for k in range(c):
        f = curve[k]
        mid = float(np.interp(0.5, grid, f))
        codes = images[..., k]
        usable = float(np.mean((codes > 0) & (codes < top)))
        stats.append(
            {
                "channel": _channel_names(c)[k],
                "icrf_at_0.25": round(float(np.interp(0.25, grid, f)), 6),
                "icrf_at_0.5": round(mid, 6),
                "icrf_at_0.75": round(float(np.interp(0.75, grid, f)), 6),
                "equivalent_gamma": (
                    round(math.log(mid) / math.log(0.5), 4) if 0 < mid < 1 else None
                ),
                "usable_pixel_fraction": round(usable, 4),
            }
        )
    return stats


def _jsonable(value: object) -> object | None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value


# ---------------------------------------------------------------------------- fit
#: Share of codes left out as outliers above which ``fit`` says so.
_OUTLIER_NOTE = 0.005


def _configure_fit(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder of bracketed JPEG/PNG/TIFF images")
    p.add_argument(
        "--out",
        default="deepinv_icrf_fit",
        help="output folder for icrf.json, icrf_fit.png, summary.json (default: %(default)s)",
    )
    p.add_argument(
        "--sidecar",
        default=None,
        help="CSV (filename,exposure_time) or JSON ({filename: time}) exposure times "
        "(default: exposures.csv/.json in the folder, else EXIF)",
    )
    p.add_argument(
        "--pattern", default=None, help="glob selecting the images, e.g. '*.jpg'"
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="most optimisation steps (default: the fit's own, at most 30 Gauss-Newton "
        "iterations for the default code-domain fit)",
    )
    p.add_argument(
        "--device", default=None, help="torch device, e.g. cpu or cuda (default: cpu)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="random seed (default: %(default)s)"
    )
    p.add_argument(
        "--refine-exposures",
        action="store_true",
        help="refine the exposure times together with the curve",
    )
    p.add_argument(
        "--band",
        action="store_true",
        help="estimate the 95%% confidence band of the curve (saved and plotted)",
    )
    p.add_argument(
        "--outlier-threshold",
        type=_outlier_threshold,
        default=5.0,
        help="leave out codes the fitted response misses by more than this many noise stds "
        "(moving objects); 'none' keeps every code (default: %(default)s)",
    )
    p.add_argument(
        "--align",
        action="store_true",
        help="align handheld brackets first (integer shifts, median threshold bitmaps; "
        "the fit uses the region every photo covers)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _outlier_threshold(text: str) -> float | None:
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


def run_fit(args: argparse.Namespace, stream=None) -> int:
    r"""``deepinv-icrf fit FOLDER``: fit the ICRF of a folder of bracketed photos."""
    import torch

    from deepinv_icrf import fit_icrf
    from deepinv_icrf.data import read_exposure_folder
    from deepinv_icrf.io import OutputSet, write_json

    stream = stream if stream is not None else sys.stdout
    if args.steps is not None and args.steps < 1:
        raise CLIError(f"--steps must be >= 1, got {args.steps}")
    device = _check_device(args.device)
    options: dict[str, object] = {
        "seed": args.seed,
        "progress": not args.no_progress,
    }
    if args.steps is not None:
        options["steps"] = args.steps
    threshold = getattr(args, "outlier_threshold", 5.0)
    if threshold != 5.0:
        options["outlier_threshold"] = threshold
    if device is not None:
        options["device"] = device
    if args.refine_exposures:
        if "refine_exposures" not in inspect.signature(fit_icrf).parameters:
            raise CLIError(
                "--refine-exposures is not supported by this version of fit_icrf"
            )
        options["refine_exposures"] = True
    if getattr(args, "band", False):
        if "band" not in inspect.signature(fit_icrf).parameters:
            raise CLIError("--band is not supported by this version of fit_icrf")
        options["band"] = True
    if getattr(args, "align", False):
        options["align"] = True
    stack = read_exposure_folder(
        args.folder, sidecar=args.sidecar, pattern=args.pattern
    )
    n, h, w, c = stack.images.shape
    print(
        f"{PROG} fit: {n} exposures {w}x{h}, {c} channel(s), {stack.bit_depth}-bit, "
        f"times {stack.exposure_times[0]:.6g}..{stack.exposure_times[-1]:.6g} s "
        f"(from {stack.time_source})",
        file=stream,
    )
    target = Path(args.out)
    inputs = [*stack.paths, *([args.sidecar] if args.sidecar else [])]
    with OutputSet(inputs=inputs) as outputs:
        out = outputs.folder(target, "--out")
        start = time.perf_counter()
        icrf = fit_icrf(stack.images, stack.exposure_times, **options)
        elapsed = time.perf_counter() - start
        curve = icrf.curve.detach().to("cpu").double()
        if not bool(curve.isfinite().all()):
            raise CLIError(
                "the fit diverged (the curve holds NaN or inf); nothing written"
            )
        stats = _channel_stats(curve.numpy(), stack.images, stack.bit_depth)
        files = [p.name for p in stack.paths]
        times = [float(t) for t in stack.exposure_times]
        noise = {}
        sigma = (getattr(getattr(icrf, "fit_report", None), "extra", None) or {}).get(
            "sigma"
        )
        if sigma:
            # the code noise the fit estimated: `merge --deghost` reads it back
            noise["code_std"] = [float(v) for v in sigma]
        icrf.save(
            out / "icrf.json",
            source=f"{PROG} fit",
            folder=str(Path(args.folder).resolve()),
            files=files,
            exposure_times=times,
            time_source=stack.time_source,
            **noise,
        )
        band = getattr(icrf, "band", None)
        _save_plot(
            out / "icrf_fit.png",
            curve,
            title=f"{PROG}: ICRF of {Path(args.folder).name}",
            band=band.detach().to("cpu") if band is not None else None,
        )
        summary = {
            "folder": str(Path(args.folder).resolve()),
            "files": files,
            "exposure_times": times,
            "time_source": stack.time_source,
            "bit_depth": stack.bit_depth,
            "shape": [c, h, w],
            "steps": args.steps,
            "seed": args.seed,
            "device": device or "cpu",
            "refine_exposures": bool(args.refine_exposures),
            "band": band is not None,
            "fit_seconds": round(elapsed, 3),
            "channels": stats,
        }
        report = getattr(icrf, "fit_report", None)
        refined = getattr(report, "exposure_times", None)
        if args.refine_exposures and refined is not None:
            summary["refined_exposure_times"] = [
                float(t) for t in torch.as_tensor(refined).reshape(-1)
            ]
            extra = getattr(report, "extra", None) or {}
            if "exponent" in extra:
                summary["refinement_exponent"] = float(extra["exponent"])
        shifts = (getattr(report, "extra", None) or {}).get("shifts")
        if getattr(args, "align", False) and shifts is not None:
            summary["shifts"] = shifts
        outliers = (getattr(report, "extra", None) or {}).get("outliers")
        if outliers is not None:
            summary["outlier_fraction"] = [float(v) for v in outliers]
        meta = _jsonable(getattr(icrf, "metadata", None))
        if meta:
            summary["icrf_metadata"] = meta
        write_json(out / "summary.json", summary)
    print(f"fitted in {elapsed:.1f} s", file=stream)
    if outliers is not None and max(outliers) >= _OUTLIER_NOTE:
        hint = (
            ""
            if getattr(args, "align", False)
            else "; if the camera moved between the photos, try --align"
        )
        print(
            f"left out {100 * max(outliers):.1f}% of the codes as outliers (something in "
            f"the scene changed between exposures{hint})",
            file=stream,
        )
    if args.refine_exposures and refined is not None:
        from deepinv_icrf.calibration.refine import describe_refinement

        print(describe_refinement(icrf), file=stream)
    print("  channel  f(0.25)   f(0.5)    f(0.75)   gamma~   usable", file=stream)
    for s in stats:
        gamma = s["equivalent_gamma"]
        gamma_text = f"{gamma:.3f}" if gamma is not None else "  n/a"
        print(
            f"  {s['channel']:<7}  {s['icrf_at_0.25']:.5f}   {s['icrf_at_0.5']:.5f}   "
            f"{s['icrf_at_0.75']:.5f}   {gamma_text}   {s['usable_pixel_fraction']:.1%}",
            file=stream,
        )
    print(
        f"wrote {target / 'icrf.json'}, {target / 'icrf_fit.png'} and "
        f"{target / 'summary.json'}",
        file=stream,
    )
    return 0


# ---------------------------------------------------------------------------- linearize
_LINEAR_FORMATS = {"tif16": ".tif", "tif32": ".tif", "npy": ".npy"}


def _configure_linearize(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "inputs",
        nargs="+",
        help="a folder of images, or image files (JPEG/PNG/TIFF, 8 or 16-bit)",
    )
    p.add_argument(
        "--icrf", required=True, help="curve file written by 'fit' (icrf.json)"
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument(
        "--format",
        choices=tuple(_LINEAR_FORMATS),
        default="tif16",
        help="tif16: linear 16-bit TIFF (default); tif32: float TIFF; npy: float32 .npy",
    )


def _collect_images(inputs: Sequence[str]) -> list[Path]:
    from deepinv_icrf.io import IMAGE_EXTENSIONS

    paths: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                q
                for q in p.iterdir()
                if q.is_file()
                and not q.name.startswith(".")
                and q.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise CLIError(f"folder {item!r} holds no JPEG/PNG/TIFF image")
            paths.extend(found)
        elif p.is_file():
            paths.append(p)
        else:
            raise CLIError(f"no such file or folder {item!r}")
    stems = [q.stem for q in paths]
    clash = sorted({s for s in stems if stems.count(s) > 1})
    if clash:
        raise CLIError(f"several inputs share the output name(s) {clash}")
    return paths


def run_linearize(args: argparse.Namespace, stream=None) -> int:
    r"""``deepinv-icrf linearize``: apply a fitted ICRF to images, write linear images."""
    from deepinv_icrf.hdr import linearize
    from deepinv_icrf.io import OutputSet, read_image, write_image

    stream = stream if stream is not None else sys.stdout
    icrf = _load_icrf(args.icrf)
    paths = _collect_images(args.inputs)
    ext = _LINEAR_FORMATS[args.format]
    target = Path(args.out)
    # one image at a time into the staged folder: nothing lands unless every image works
    with OutputSet(inputs=[*paths, Path(args.icrf)]) as outputs:
        out = outputs.folder(target, "--out")
        for p in paths:
            img = read_image(p)
            if img.dtype not in (np.uint8, np.uint16):
                raise CLIError(
                    f"{str(p)!r} holds {img.dtype} values, not 8/16-bit codes"
                )
            if img.shape[-1] != icrf.channels and icrf.channels != 1:
                raise CLIError(
                    f"{str(p)!r} has {img.shape[-1]} channel(s) but the ICRF has "
                    f"{icrf.channels}"
                )
            x = linearize(img, icrf)
            if args.format == "tif16":
                x = np.round(np.clip(x, 0.0, 1.0) * 65535.0).astype(np.uint16)
            write_image(out / f"{p.stem}{ext}", x)
    print(
        f"{PROG} linearize: wrote {len(paths)} linear image(s) ({args.format}) to {target}",
        file=stream,
    )
    return 0


# ---------------------------------------------------------------------------- merge
_PREVIEW_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_LAYERS = ("std", "saturated", "count")
_DEGHOST_THRESHOLD = 4.0
# code noise std assumed by --deghost when the ICRF file records none
_DEGHOST_CODE_STD = 2.0 / 255.0


def _configure_merge(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="folder of bracketed JPEG/PNG/TIFF images")
    p.add_argument(
        "--icrf", required=True, help="curve file written by 'fit' (icrf.json)"
    )
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
        choices=_LAYERS,
        default=None,
        help="also store these layers in the .exr --out (viewers show them as layers): "
        "std (the radiance's std; -1 where unbounded), saturated (pixels saturated in "
        "every exposure, 0/1), count (exposures merged per pixel)",
    )
    p.add_argument(
        "--sidecar",
        default=None,
        help="exposure-time sidecar: CSV, JSON, OpenCV's list.txt or a list with a header",
    )
    p.add_argument("--pattern", default=None, help="glob selecting the images")
    p.add_argument(
        "--weights", choices=("hat", "gaussian"), default="hat", help="merge weights"
    )
    p.add_argument(
        "--tonemap",
        choices=("reinhard", "gamma"),
        default="reinhard",
        help="tone-mapping of the preview (default: %(default)s)",
    )
    p.add_argument(
        "--align",
        action="store_true",
        help="align handheld brackets first (integer shifts, median threshold bitmaps); "
        "the radiance map covers the region every photo covers",
    )
    p.add_argument(
        "--deghost",
        nargs="?",
        const=_DEGHOST_THRESHOLD,
        default=None,
        type=_outlier_threshold,
        metavar="THRESHOLD",
        help="leave out, per pixel, exposures whose radiance differs from the middle "
        "exposure's by more than THRESHOLD noise stds (default %(const)s): moving things "
        "appear as in the middle exposure, without ghosts. The code noise is the ICRF "
        "file's metadata 'code_std' when it has one, else 2/255; it also enters --std",
    )


def _code_noise(icrf) -> tuple[float, str]:
    r"""The code noise std recorded in an ICRF file's metadata, else the --deghost default."""
    value = (getattr(icrf, "metadata", None) or {}).get("code_std")
    values = value if isinstance(value, list) else [value]
    if values and all(
        isinstance(v, (int, float))
        and not isinstance(v, bool)
        and math.isfinite(v)
        and v >= 0
        for v in values
    ):
        return float(max(values)), "the ICRF file"
    return _DEGHOST_CODE_STD, "default 2/255"


def run_merge(args: argparse.Namespace, stream=None) -> int:
    r"""``deepinv-icrf merge FOLDER``: merge bracketed photos into an HDR radiance map."""
    from deepinv_icrf.data import read_exposure_folder
    from deepinv_icrf.io import RADIANCE_EXTENSIONS, OutputSet

    stream = stream if stream is not None else sys.stdout
    for flag, value, allowed in (
        ("--out", args.out, RADIANCE_EXTENSIONS),
        ("--std", args.std, RADIANCE_EXTENSIONS),
        ("--preview", args.preview, _PREVIEW_EXTENSIONS),
    ):
        if value is not None and Path(value).suffix.lower() not in allowed:
            raise CLIError(
                f"{flag} {value!r}: expected one of the extensions {allowed}"
            )
    layers = list(dict.fromkeys(getattr(args, "layers", None) or []))
    if layers and Path(args.out).suffix.lower() != ".exr":
        raise CLIError(
            f"--layers needs an OpenEXR --out (.exr), which holds layers; got {args.out!r}"
        )
    icrf = _load_icrf(args.icrf)
    stack = read_exposure_folder(
        args.folder, sidecar=args.sidecar, pattern=args.pattern
    )
    if stack.images.shape[-1] != icrf.channels and icrf.channels != 1:
        raise CLIError(
            f"the images have {stack.images.shape[-1]} channel(s) but the ICRF has "
            f"{icrf.channels}"
        )
    # every output checked (not an input, not another output, its folder exists) before
    # the merge costs anything; all of them land together at the end
    outputs = OutputSet(
        inputs=[
            *stack.paths,
            Path(args.icrf),
            *([Path(args.sidecar)] if args.sidecar else []),
        ]
    )
    with outputs:
        staged = {
            flag: outputs.file(value, flag)
            for flag, value in (
                ("--out", args.out),
                ("--std", args.std),
                ("--preview", args.preview),
            )
            if value is not None
        }
        radiance, saturated = _merge_into(staged, args, icrf, stack, layers, stream)
    positive = radiance[radiance > 0]
    stops = (
        math.log2(float(positive.max()) / float(positive.min()))
        if positive.size
        else 0.0
    )
    print(
        f"{PROG} merge: {len(stack.paths)} exposures -> radiance {radiance.shape[1]}x"
        f"{radiance.shape[0]} ({radiance.shape[2]} channel(s)), range "
        f"{float(radiance.min()):.4g}.."
        f"{float(radiance.max()):.4g} ({stops:.1f} stops), "
        f"{int(saturated.any(axis=-1).sum())} pixel(s) saturated in every exposure",
        file=stream,
    )
    written = [v for v in (args.out, args.std, args.preview) if v is not None]
    extra = f" (layers: {', '.join(layers)})" if layers else ""
    print(f"wrote {', '.join(written)}{extra}", file=stream)
    return 0


def _merge_into(staged, args, icrf, stack, layers, stream):
    r"""Merge and write every output of ``merge`` to its staged path."""
    from deepinv_icrf.hdr import merge_hdr, save_radiance, tonemap
    from deepinv_icrf.io import write_image

    images = stack.images
    if getattr(args, "align", False):
        from deepinv_icrf.data import align_exposures

        images, shifts = align_exposures(images, exposure_times=stack.exposure_times)
        print(f"{PROG} merge: aligned, shifts (dy, dx) {shifts.tolist()}", file=stream)
    deghost = getattr(args, "deghost", None)
    code_std = 0.0
    if deghost is not None:
        code_std, source = _code_noise(icrf)
        print(
            f"{PROG} merge: deghosting, threshold {deghost:g} stds, code noise "
            f"{code_std:.4g} ({source})",
            file=stream,
        )
    radiance, std, saturated, count = merge_hdr(
        images,
        stack.exposure_times,
        icrf,
        weights=args.weights,
        return_std=True,
        return_saturated=True,
        return_count=True,
        code_std=code_std,
        deghost=deghost,
    )
    given = {"std": std, "saturated": saturated, "count": count}
    save_radiance(staged["--out"], radiance, **{k: given[k] for k in layers})
    if "--std" in staged:
        # pixels saturated everywhere have an unbounded std: stored as -1
        save_radiance(
            staged["--std"], np.where(np.isfinite(std), std, -1.0).astype(np.float32)
        )
    if "--preview" in staged:
        shown = tonemap(radiance, method=args.tonemap)
        write_image(staged["--preview"], np.round(shown * 255.0).astype(np.uint8))
    return radiance, saturated


# ---------------------------------------------------------------------------- demo (table)
def _configure_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--out",
        default="deepinv_icrf_demo",
        help="output folder (default: %(default)s)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="most optimisation steps (default: the fit's own, at most 30 Gauss-Newton "
        "iterations for the default code-domain fit)",
    )
    p.add_argument(
        "--noise",
        type=float,
        default=0.004,
        help="code noise std (default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _run_demo_args(args: argparse.Namespace) -> int:
    run_demo(
        out=getattr(args, "out", "deepinv_icrf_demo"),
        steps=getattr(args, "steps", None),
        noise=getattr(args, "noise", 0.004),
        progress=not getattr(args, "no_progress", False),
    )
    return 0


# ---------------------------------------------------------------------------- validate
def _configure_validate(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "folder",
        help="folder of processed images with their linear captures (IMG.jpg + IMG.tif)",
    )
    p.add_argument(
        "--icrf", required=True, help="ICRF file written by `fit` (icrf.json)"
    )
    p.add_argument(
        "--min-count",
        type=int,
        default=20,
        help="pixels a code needs to be compared (default: %(default)s)",
    )
    p.add_argument(
        "--out", default=None, help="also write the result to this JSON file"
    )


def run_validate(args: argparse.Namespace, stream=None) -> int:
    r"""``deepinv-icrf validate FOLDER --icrf icrf.json``: compare a fitted curve with the curve
    measured directly from processed/linear pairs (:func:`deepinv_icrf.validate.validate_folder`).
    """
    from deepinv_icrf.io import OutputSet, write_json
    from deepinv_icrf.validate import format_validation, validate_folder

    stream = sys.stdout if stream is None else stream
    folder = Path(args.folder)
    inputs = [Path(args.icrf)] + (list(folder.iterdir()) if folder.is_dir() else [])
    with OutputSet(inputs=inputs) as outputs:
        staged = outputs.file(args.out, "--out") if args.out is not None else None
        result = validate_folder(args.folder, args.icrf, min_count=args.min_count)
        if staged is not None:
            write_json(staged, result)
    print(format_validation(result), file=stream)
    if args.out is not None:
        print(f"wrote {args.out}", file=stream)
    return 0


# ---------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Subcommand:
    r"""One ``deepinv-icrf`` subcommand.

    :param str help: one-line description shown by ``--help``.
    :param Callable configure: adds the subcommand's arguments to its parser.
    :param Callable run: runs it from the parsed arguments; returns the exit code. It raises
        :class:`ValueError` or :class:`OSError` for bad input (reported as one error line,
        exit code 2); other exceptions are bugs and keep their traceback.
    """

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: the subcommands, by name, in ``--help`` order
SUBCOMMANDS: dict[str, Subcommand] = {
    "demo": Subcommand(
        "fit the embedded demo stack and compare with the true curve",
        _configure_demo,
        _run_demo_args,
    ),
    "fit": Subcommand(
        "fit the ICRF of a folder of bracketed photos (icrf.json, icrf_fit.png, summary.json)",
        _configure_fit,
        run_fit,
    ),
    "linearize": Subcommand(
        "linearize images with a fitted ICRF (16-bit or float outputs)",
        _configure_linearize,
        run_linearize,
    ),
    "merge": Subcommand(
        "merge a folder of bracketed photos into an HDR radiance map (+ preview)",
        _configure_merge,
        run_merge,
    ),
    "validate": Subcommand(
        "compare a fitted ICRF with the curve measured from processed/linear image pairs",
        _configure_validate,
        run_validate,
    ),
}


def register_subcommand(
    name: str,
    help: str,
    configure: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
) -> None:
    r"""Add a subcommand to :data:`SUBCOMMANDS` (e.g. ``validate``); names must be new."""
    if name in SUBCOMMANDS:
        raise ValueError(f"Subcommand {name!r} already exists.")
    SUBCOMMANDS[name] = Subcommand(help, configure, run)


class _Parser(argparse.ArgumentParser):
    r"""An argument parser whose errors are one line: ``deepinv-icrf: error: ...``."""

    def error(self, message: str):  # noqa: D102 - argparse hook
        raise CLIError(message)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG,
        description="Fit inverse camera response functions (ICRF) with DeepInverse losses, "
        "linearize images and merge HDR radiance maps. With no command, fits the embedded "
        "demo stack.",
    )
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    for name, command in SUBCOMMANDS.items():
        command.configure(
            sub.add_parser(name, help=command.help, description=command.help)
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    r"""Entry point of the ``deepinv-icrf`` console script; returns the exit code.

    Exit codes: 0 success, 2 bad input or a system limit such as a full disk (one
    ``deepinv-icrf: error: ...`` line on stderr, no output written), 130 interrupted (no
    output written either).
    """
    try:
        args = _build_parser().parse_args(argv)
        command = args.command if args.command is not None else "demo"
        return SUBCOMMANDS[command].run(args)
    except SystemExit as stop:  # --help / --version
        return stop.code if isinstance(stop.code, int) else 0
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError) as err:
        # bad input (files, values) and system limits (disk full, permissions): one line;
        # anything else is a bug and keeps its traceback
        text = " ".join(str(err).split()) or type(err).__name__
        if (
            isinstance(err, OSError)
            and err.strerror
            and err.filename
            and not str(err).startswith(("Cannot", "No such"))
        ):
            text = f"{err.strerror}: {err.filename!r}"
        print(f"{PROG}: error: {text}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
