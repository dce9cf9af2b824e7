r"""Calibration from handheld brackets: exposure alignment before the fit.

A handheld bracket moves by a pixel or more between exposures, and a fit that assumes one
radiance per pixel sees an edge wherever the scene has one. Synthetic 8-bit stacks of the demo
scene (5 exposures one stop apart, shortest 1/4 s, one channel, 10 stops of scene range), each
exposure a window of a larger scene moved by a random integer offset in
``[-max_shift, max_shift]`` per axis (independent noise per exposure, as the lead's experiment).
For each case: curve RMSE (codes 8..247, no scale fit) of ``fit_icrf`` without and with
``align=True``, the fraction of exactly recovered shifts (4 non-reference exposures per stack)
by ``align_exposures`` (default automatic threshold quantile) and with Ward's median threshold
(``quantile=0.5``), where OpenCV is installed the fraction that
``cv2.createAlignMTB().calculateShift`` recovers exactly (each exposure against the reference,
as its ``process`` does), and the time of ``align_exposures``.

Run: ``PYTHONPATH=. python benchmarks/handheld.py --quick``.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import numpy as np
import torch

MARGIN = 8
REFERENCE = 2


def make_stack(name: str, sigma: float, max_shift: int, seed: int, size: tuple):
    r"""Moved stack ``(5, 1, H, W)``, times ``(5,)``, true ICRF ``(1, 256)`` and the shifts
    ``(5, 2)`` that align each exposure to the middle one."""
    from deepinv.physics import GaussianNoise

    from deepinv_icrf.data import demo_exposure_times, demo_scene
    from deepinv_icrf.physics import ExposureStack, get_response

    h, w = size
    times = demo_exposure_times(5, shortest=0.25)
    response = get_response(name)
    torch.manual_seed(seed)
    scene = demo_scene(
        h + 2 * MARGIN, w + 2 * MARGIN, channels=1, dynamic_range_stops=10
    )
    g = torch.Generator().manual_seed(seed)
    offsets = torch.zeros(5, 2, dtype=torch.int64)
    if max_shift > 0:
        offsets = torch.randint(-max_shift, max_shift + 1, (5, 2), generator=g)
    noise = GaussianNoise(sigma=sigma) if sigma > 0 else None
    frames = []
    for k in range(5):
        dy, dx = (int(v) for v in offsets[k])
        window = scene[
            ..., MARGIN + dy : MARGIN + dy + h, MARGIN + dx : MARGIN + dx + w
        ]
        with torch.no_grad():
            full = ExposureStack(times, response=response, noise_model=noise)(window)
        frames.append(full[0, k : k + 1])
    # frame k shows the scene moved by -offset_k: aligning it to the reference moves it back
    truth_shifts = offsets - offsets[REFERENCE]
    return torch.cat(frames), times, response.icrf_curve(256, channels=1), truth_shifts


def opencv_exact(y: torch.Tensor, truth: torch.Tensor) -> int | None:
    r"""Exposures whose shift to the reference ``cv2.AlignMTB`` recovers exactly."""
    try:
        import cv2
    except ImportError:
        return None
    codes = [np.round(f[0].numpy() * 255).astype(np.uint8) for f in y]
    mtb = cv2.createAlignMTB()
    hits = 0
    for k in range(len(codes)):
        if k == REFERENCE:
            continue
        sx, sy = mtb.calculateShift(codes[REFERENCE], codes[k])
        hits += (sy, sx) == tuple(int(v) for v in truth[k])
    return hits


def run_case(name, sigma, max_shift, seed, size):
    from deepinv_icrf import fit_icrf
    from deepinv_icrf.data import align_exposures
    from deepinv_icrf.functional import curve_rmse

    y, times, truth, shifts = make_stack(name, sigma, max_shift, seed, size)
    truth = truth.double()
    start = time.perf_counter()
    _, found = align_exposures(y, reference=REFERENCE, exposure_times=times)
    t_align = time.perf_counter() - start
    _, median = align_exposures(
        y, reference=REFERENCE, exposure_times=times, quantile=0.5
    )
    plain = fit_icrf(y, times, progress=False)
    aligned = fit_icrf(y, times, progress=False, align=True)
    keep = [k for k in range(5) if k != REFERENCE]
    exact = sum(found[k].tolist() == shifts[k].tolist() for k in keep)
    return {
        "plain": float(curve_rmse(plain.curve.detach().double(), truth)),
        "aligned": float(curve_rmse(aligned.curve.detach().double(), truth)),
        "exact": exact / len(keep),
        "median": sum(median[k].tolist() == shifts[k].tolist() for k in keep)
        / len(keep),
        "cv2": None if (c := opencv_exact(y, shifts)) is None else c / len(keep),
        "time": t_align,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one curve, one seed")
    parser.add_argument("--seeds", type=int, default=2, help="seeds per case")
    parser.add_argument("--size", type=int, nargs=2, default=(192, 256), help="H W")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    curves = ("srgb",) if args.quick else ("srgb", "filmic", "gamma")
    seeds = 1 if args.quick else args.seeds
    print(
        f"{'curve':7s} {'noise':>6s} {'shift':>5s}  {'RMSE plain':>10s} {'aligned':>8s} "
        f"{'ratio':>6s}  {'exact':>6s} {'median':>6s} {'cv2':>6s} {'align s':>8s}"
    )
    for name in curves:
        for sigma in (0.005, 0.01):
            for max_shift in (0, 1, 2, 4):
                rows = [
                    run_case(name, sigma, max_shift, seed, tuple(args.size))
                    for seed in range(seeds)
                ]

                def mean(key, rows=rows):
                    values = [r[key] for r in rows if r[key] is not None]
                    return statistics.mean(values) if values else float("nan")

                print(
                    f"{name:7s} {sigma:6.3f} {max_shift:5d}  {mean('plain'):10.4f} "
                    f"{mean('aligned'):8.4f} {mean('plain') / mean('aligned'):6.1f}  "
                    f"{100 * mean('exact'):5.0f}% {100 * mean('median'):5.0f}% "
                    f"{100 * mean('cv2'):5.0f}% "
                    f"{mean('time'):8.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
