r"""``deepinv-icrf demo`` (also ``deepinv-icrf`` with no command): fit the embedded demo stack."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from deepinv_icrf.cli._common import PROG, positive_int, save_plot

__all__ = ["configure", "run", "run_demo"]

HELP = "fit the embedded demo stack and compare with the true curve"
#: Defaults of :func:`run_demo` (and of the ``demo`` command's options).
DEFAULT_OUT = "deepinv_icrf_demo"
DEFAULT_NOISE = 0.004
#: Exposures of the demo bracket, one stop apart, and the gammas of its camera per channel.
_EXPOSURES = 9
_GAMMAS = (2.0, 2.2, 2.5)
#: Codes over which the demo compares the fitted curve with the truth.
_COMPARED = (8, 247)


def run_demo(
    out: str | Path = DEFAULT_OUT,
    steps: int | None = None,
    noise: float = DEFAULT_NOISE,
    progress: bool = True,
    stream=None,
) -> dict:
    r"""Fit the ICRF of the embedded demo stack, print its error against the true curve, write a plot.

    The demo camera has a different known response per channel, so the printed error is a real
    measurement: RMSE of the fitted ICRF against the truth over codes 8..247.

    :param str, pathlib.Path out: output folder (created): ``icrf.json`` (the fitted curve),
        ``icrf_fit.png`` (fitted vs true curves and the error) and ``summary.json``.
    :param int, None steps: most optimisation steps (default ``None``: the fit's own).
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

    from deepinv_icrf import fit_icrf
    from deepinv_icrf.calibration.summary import channel_names
    from deepinv_icrf.data import demo_exposure_times, demo_scene
    from deepinv_icrf.functional.metrics import curve_rmse
    from deepinv_icrf.io import write_json
    from deepinv_icrf.physics import ExposureStack, get_response

    torch.manual_seed(0)
    times = demo_exposure_times(_EXPOSURES)
    response = get_response("gamma", gamma=_GAMMAS)
    physics = ExposureStack(
        times,
        response=response,
        bit_depth=8,
        noise_model=dinv.physics.GaussianNoise(sigma=noise),
    )
    stack = physics(demo_scene())
    truth = response.icrf_curve(256, channels=3)
    _, n, c, h, w = stack.shape
    print(
        f"{PROG} demo: {n} exposures (1 stop apart) of a {c}x{h}x{w} synthetic HDR scene, "
        f"8-bit, camera response '{response.name}', code noise sigma {noise}",
        file=stream,
    )
    options = {} if steps is None else {"steps": steps}
    start = time.perf_counter()
    icrf = fit_icrf(stack[0], times, progress=progress, **options)
    elapsed = time.perf_counter() - start
    fitted = icrf.curve.detach()
    first, last = _COMPARED
    rmse = curve_rmse(fitted, truth.to(fitted))
    worst = (fitted - truth.to(fitted)).abs()[:, first : last + 1].amax(dim=-1)
    names = channel_names(c)
    print(
        f"fitted in {elapsed:.1f} s; error of the fitted ICRF against the true one "
        f"(codes {first}..{last}):",
        file=stream,
    )
    print("  channel   RMSE      max |error|", file=stream)
    for k in range(c):
        print(
            f"  {names[k]:<8}  {float(rmse[k]):.5f}   {float(worst[k]):.5f}",
            file=stream,
        )
    icrf.save(out / "icrf.json", source=f"{PROG} demo")
    save_plot(
        out / "icrf_fit.png",
        fitted,
        reference=truth,
        title=f"{PROG} demo: fitted vs true ICRF",
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


def configure(p: argparse.ArgumentParser) -> None:
    r"""The arguments of ``demo``."""
    p.add_argument(
        "--out", default=DEFAULT_OUT, help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="most optimisation steps (default: the fit's own)",
    )
    p.add_argument(
        "--noise",
        type=float,
        default=DEFAULT_NOISE,
        help="code noise std (default: %(default)s)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    r"""``deepinv-icrf demo`` from its parsed arguments."""
    run_demo(
        out=args.out,
        steps=args.steps,
        noise=args.noise,
        progress=not args.no_progress,
    )
    return 0
