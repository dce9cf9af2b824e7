r"""Benchmark: ``fit_icrf`` against OpenCV's ``CalibrateDebevec`` and ``CalibrateRobertson``.

Synthetic noisy 8-bit stacks of the embedded demo scene (``3 x S x S``, 9 exposures one stop
apart) from known camera responses; every method sees the same ``uint8`` images. Score: RMSE
of the recovered ICRF against the truth over codes 8..247 after a per-channel least-squares
scale fit (every method alike, OpenCV's curves are only defined up to scale), mean over
channels; wall time of each fit in the same run. Prints a markdown table with the ratios
ours / best OpenCV (accuracy) and ours / Robertson (time).

Run::

    PYTHONPATH=. python benchmarks/fit_accuracy.py          # 512x512, noise 0.005/0.01/0.02
    PYTHONPATH=. python benchmarks/fit_accuracy.py --quick  # 256x256, noise 0.01/0.02

With ``--cases``: the same scoring on the cases of ``benchmarks/cases.py`` instead (response
families and scenes the package does not ship, shot noise, JPEG, sharpening; the times of every
case are set right, so that only the curve is scored)::

    PYTHONPATH=. python benchmarks/fit_accuracy.py --cases all --quick   # 8 cases, 128x192
    PYTHONPATH=. python benchmarks/fit_accuracy.py --cases all           # 24 cases, 256x384
    PYTHONPATH=. python benchmarks/fit_accuracy.py --cases "family=film,poly;scene=coffee"

Needs ``opencv-python-headless`` (benchmark-only extra).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _curves() -> dict[str, object]:
    from deepinv_icrf.physics import get_response

    return {
        "gamma 2.2": get_response("gamma", gamma=2.2),
        "sRGB": get_response("srgb"),
        "filmic S-curve": get_response("filmic", gamma=2.2, contrast=1.6),
        "camera A (exp, k=3/4/5)": get_response("exp", k=(3.0, 4.0, 5.0)),
        "camera B (log, a=20/50/100)": get_response("log", a=(20.0, 50.0, 100.0)),
    }


def make_stack(response, noise: float, size: int, seed: int = 0):
    r"""``uint8`` stack ``(9, S, S, 3)``, exposure times ``(9,)`` and the true ICRF ``(3, 256)``."""
    import deepinv as dinv

    from deepinv_icrf.data import demo_exposure_times, demo_scene
    from deepinv_icrf.physics import ExposureStack

    torch.manual_seed(seed)
    scene = demo_scene(size, size, seed=seed)
    times = demo_exposure_times(9)
    noise_model = dinv.physics.GaussianNoise(sigma=noise) if noise > 0 else None
    physics = ExposureStack(
        times, response=response, bit_depth=8, noise_model=noise_model
    )
    with torch.no_grad():
        y = physics(scene)[0]
    codes = (y * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()
    return codes, times.numpy(), response.icrf_curve(256, channels=3)


def opencv_fit(images: np.ndarray, times: np.ndarray, which: str):
    r"""OpenCV's calibration on the same images: curve ``(3, 256)`` (up to scale), seconds."""
    import cv2

    imgs = [np.ascontiguousarray(im) for im in images]
    t = np.asarray(times, dtype=np.float32)
    cal = (
        cv2.createCalibrateDebevec()
        if which == "debevec"
        else cv2.createCalibrateRobertson()
    )
    start = time.perf_counter()
    response = cal.process(imgs, t)
    elapsed = time.perf_counter() - start
    return torch.from_numpy(response[:, 0, :].T.copy()).double(), elapsed


def score(curve: torch.Tensor, truth: torch.Tensor) -> float:
    from deepinv_icrf.functional.metrics import curve_rmse

    return float(curve_rmse(curve.double(), truth.double(), fit_scale=True).mean())


def run(size: int, noises: list[float], curves: list[str] | None = None) -> list[dict]:
    from deepinv_icrf import fit_icrf

    rows = []
    for name, response in _curves().items():
        if curves and name not in curves:
            continue
        for noise in noises:
            images, times, truth = make_stack(response, noise, size)
            deb, t_deb = opencv_fit(images, times, "debevec")
            rob, t_rob = opencv_fit(images, times, "robertson")
            start = time.perf_counter()
            icrf = fit_icrf(images, times, progress=False)
            t_ours = time.perf_counter() - start
            ours = score(icrf.curve.detach(), truth)
            e_deb, e_rob = score(deb, truth), score(rob, truth)
            rows.append(
                dict(
                    curve=name,
                    noise=noise,
                    ours=ours,
                    debevec=e_deb,
                    robertson=e_rob,
                    t_ours=t_ours,
                    t_deb=t_deb,
                    t_rob=t_rob,
                    iterations=icrf.fit_report.steps,
                )
            )
            print(
                f"  {name}, noise {noise}: ours {ours:.5f} ({t_ours:.2f} s), "
                f"Debevec {e_deb:.5f}, Robertson {e_rob:.5f} ({t_rob:.2f} s)",
                flush=True,
            )
    return rows


def run_cases(
    selection: str, quick: bool, height: int, width: int, seed: int = 0
) -> list[dict]:
    r"""Score every method on the cases of ``benchmarks/cases.py`` (times set right)."""
    from deepinv_icrf import fit_icrf

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from cases import case_grid, make_case, select_cases

    grid = case_grid("quick" if quick else "full")
    specs = select_cases(grid, selection)
    if not specs:
        raise SystemExit(f"--cases {selection!r} selects none of the {len(grid)} cases")
    rows = []
    for spec in specs:
        # only the curve is scored here: every method gets the true times
        case = make_case(
            **dict(spec, times="right"), height=height, width=width, seed=seed
        )
        images, times, truth = case["images"], case["true_times"], case["true_icrf"]
        deb, t_deb = opencv_fit(images, times, "debevec")
        rob, t_rob = opencv_fit(images, times, "robertson")
        start = time.perf_counter()
        icrf = fit_icrf(images, times, progress=False)
        t_ours = time.perf_counter() - start
        ours = score(icrf.curve.detach(), truth)
        e_deb, e_rob = score(deb, truth), score(rob, truth)
        rows.append(
            dict(
                curve=case["name"].replace("/right/", "/"),
                noise=spec["noise"],
                ours=ours,
                debevec=e_deb,
                robertson=e_rob,
                t_ours=t_ours,
                t_deb=t_deb,
                t_rob=t_rob,
                iterations=icrf.fit_report.steps,
            )
        )
        print(
            f"  {rows[-1]['curve']}: ours {ours:.5f} ({t_ours:.2f} s), "
            f"Debevec {e_deb:.5f}, Robertson {e_rob:.5f} ({t_rob:.2f} s)",
            flush=True,
        )
    return rows


def _best(row: dict) -> float:
    # the better OpenCV method; one that failed (NaN, Robertson on a curve with a floor)
    # does not count
    return float(np.nanmin([row["debevec"], row["robertson"]]))


def table(rows: list[dict]) -> str:
    lines = [
        "| curve | noise | RMSE ours | RMSE Debevec | RMSE Robertson | ratio ours/best "
        "| time ours (s) | time Robertson (s) | ratio |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        best = _best(r)
        lines.append(
            f"| {r['curve']} | {r['noise']} | {r['ours']:.5f} | {r['debevec']:.5f} | "
            f"{r['robertson']:.5f} | {r['ours'] / best:.3f} | {r['t_ours']:.2f} | "
            f"{r['t_rob']:.2f} | {r['t_ours'] / r['t_rob']:.2f} |"
        )
    acc = max(r["ours"] / _best(r) for r in rows)
    spd = max(r["t_ours"] / r["t_rob"] for r in rows)
    lines.append("")
    lines.append(
        f"worst accuracy ratio {acc:.3f} (target <= 0.5); worst time ratio {spd:.2f} "
        "(target <= 1)"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="256x256, two noise levels"
    )
    parser.add_argument(
        "--size", type=int, default=None, help="image side (default 512)"
    )
    parser.add_argument(
        "--noise", type=float, nargs="+", default=None, help="code noise levels"
    )
    parser.add_argument(
        "--cases",
        default=None,
        help="score the cases of benchmarks/cases.py instead: 'all' (quick or full grid) "
        "or a selection 'key=a,b;key=c' (keys curve, family, scene, noise, exposures, "
        "stops)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the cases")
    args = parser.parse_args()
    if args.cases is not None:
        height = args.size or (128 if args.quick else 256)
        width = args.size or (192 if args.quick else 384)
        print(
            f"fit_icrf vs OpenCV on the {'quick' if args.quick else 'full'} cases of "
            f"benchmarks/cases.py (selection {args.cases!r}, times set right), "
            f"3x{height}x{width}, 8-bit, seed {args.seed}, torch threads "
            f"{torch.get_num_threads()}",
            flush=True,
        )
        rows = run_cases(args.cases, args.quick, height, width, args.seed)
        print()
        print(table(rows).replace("| curve | noise |", "| case | noise |", 1))
        return
    size = args.size or (256 if args.quick else 512)
    noises = args.noise or ([0.01, 0.02] if args.quick else [0.005, 0.01, 0.02])
    print(
        f"fit_icrf vs OpenCV: 9 exposures one stop apart, 3x{size}x{size}, 8-bit, "
        f"torch threads {torch.get_num_threads()}",
        flush=True,
    )
    rows = run(size, noises)
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
