r"""Calibration from imperfect photos: refined exposure times and confidence bands.

Synthetic 8-bit stacks from known response curves, code noise 0 / 0.005 / 0.01 / 0.02, true
exposure times perturbed by up to +-10% from the nominal (EXIF) one-stop times, and a case with
no times at all. For each stack:

- curve RMSE (codes 8..247, no scale fit) of ``fit_icrf`` with the exact times, with the nominal
  times, with refinement (``fit_refined``, nominal times as prior) and with no times;
- the "prior oracle": the refined times an estimator would get if the identifiable part were
  exact, the exponent set by the nominal times (the bound of any method: the images say
  nothing about the exponent), for each case and over 2000 random jitters, with the share of
  jitters for which the exponents consistent with the images and the +-bounds leave more than
  1% of room;
- relative-time error: the largest error of a time after removing the common scale (which no
  method can know), for the nominal and the refined times, and for the refined times after also
  removing the best exponent ``t**g`` (the part the data cannot identify, see ``refine.py``);
  and the largest error of the ratio of two consecutive exposures (the EXIF "stop");
- the fraction of codes 8..247 where the true curve lies inside the 95% band
  (``icrf_confidence_band`` around the refined fit, widened by the exponent uncertainty
  ``fit_report.extra["exponent_std"]`` that only the EXIF prior sets) and the band's mean
  width;
- "mod g" columns: the same errors after the best exponent ``t**g`` / ``f**g``, the part of
  the joint problem the images identify (``f`` with ``t`` and ``f**g`` with ``t**g`` fit a
  stack equally well, so only the prior sets ``g``);
- with ``--exact-band``: the coverage of the band around the fit with the exact times (no
  exponent widening), the band of a user whose times are right.

Run: ``PYTHONPATH=. python benchmarks/real_camera.py --quick`` (one curve, small images).
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings

import torch

from deepinv_icrf.calibration.bands import icrf_confidence_band
from deepinv_icrf.calibration.refine import estimate_log_exposures, fit_refined
from deepinv_icrf.data import demo_exposure_times, demo_scene
from deepinv_icrf.functional import curve_rmse
from deepinv_icrf.functional.uncertainty import band_coverage
from deepinv_icrf.physics import ExposureStack, get_response
from deepinv_icrf.training import fit_icrf


def _time_error(
    est: torch.Tensor, true: torch.Tensor, mod_exponent: bool = False
) -> float:
    e = est.log() - est.log().mean()
    t = true.log() - true.log().mean()
    if mod_exponent:
        e = e * float((e @ t) / (e @ e))
    return float((e - t).abs().max().expm1())


def _prior_oracle(nominal: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    # the best the EXIF prior can do even with the identifiable part exact: the package's own
    # MAP (estimate_log_exposures) fed the exact pairwise log ratios with negligible errors,
    # so only the exponent and offset come from the nominal times
    a_idx, b_idx = torch.triu_indices(true.shape[0], true.shape[0], offset=1)
    rho = true.log()[a_idx] - true.log()[b_idx]
    se = torch.full_like(rho, 1e-9)
    tau, _, _ = estimate_log_exposures(a_idx, b_idx, rho, se, nominal.log())
    return tau.exp()


def _exponent_interval(nominal: torch.Tensor, true: torch.Tensor, perturb: float):
    # smallest and largest exponent g for which some offset c puts g u + c within the +-perturb
    # bounds of every nominal log-time (u: the true centred log-times, all the images fix):
    # every g in it is consistent with the images and the EXIF times
    from scipy.optimize import linprog

    u = (true.log() - true.log().mean()).numpy()
    tau0 = nominal.log().numpy()
    lo, hi = math.log(1 - perturb), math.log(1 + perturb)
    a_ub = [[uk, 1.0] for uk in u] + [[-uk, -1.0] for uk in u]
    b_ub = [t + hi for t in tau0] + [-(t + lo) for t in tau0]
    bounds = [(None, None), (None, None)]
    g_min = linprog([1.0, 0.0], A_ub=a_ub, b_ub=b_ub, bounds=bounds).x[0]
    g_max = linprog([-1.0, 0.0], A_ub=a_ub, b_ub=b_ub, bounds=bounds).x[0]
    return g_min, g_max, float(abs(u).max())


def _oracle_fail_rate(args, draws: int = 2000) -> tuple[float, float, float]:
    # over random +-perturb jitters: the share for which the prior oracle misses 1%, the
    # median of its largest time error, and the share for which no estimator can promise 1%
    # (half the width of the consistent exponents, times the largest |u|, exceeds 1%)
    gen = torch.Generator().manual_seed(12345)
    nominal = demo_exposure_times(args.exposures, shortest=args.shortest)
    errors, undecidable = [], 0
    for _ in range(draws):
        jitter = 1.0 + args.perturb * (
            2 * torch.rand(args.exposures, generator=gen, dtype=torch.float64) - 1
        )
        true_t = nominal * jitter
        errors.append(_time_error(_prior_oracle(nominal, true_t), true_t))
        g_min, g_max, spread = _exponent_interval(nominal, true_t, args.perturb)
        undecidable += 0.5 * (g_max - g_min) * spread > math.log(1.01)
    errors_t = torch.tensor(errors)
    return (
        float((errors_t > 0.01).double().mean()),
        float(errors_t.median()),
        undecidable / draws,
    )


def _step_error(est: torch.Tensor, true: torch.Tensor) -> float:
    # ratios of consecutive exposures (in increasing order), the EXIF "stops"
    order = torch.argsort(true)
    e, t = est[order].log().diff(), true[order].log().diff()
    return float((e - t).abs().max().expm1())


def _rmse(curve: torch.Tensor, true: torch.Tensor) -> float:
    return float(curve_rmse(curve.detach().cpu(), true).mean())


def _rmse_mod_exponent(curve: torch.Tensor, true: torch.Tensor) -> float:
    # the part the data identify: RMSE of the best f**g (g in [0.8, 1.25]) against the truth
    f = curve.detach().cpu().to(torch.float64).clamp(0.0, 1.0)
    return min(_rmse(f**g, true) for g in torch.linspace(0.8, 1.25, 181).tolist())


def run_case(name, sigma, args, fit_options) -> dict:
    from deepinv.physics import GaussianNoise

    gen = torch.Generator().manual_seed(args.seed + int(sigma * 1e4))
    nominal = demo_exposure_times(args.exposures, shortest=args.shortest)
    jitter = 1.0 + args.perturb * (
        2 * torch.rand(args.exposures, generator=gen, dtype=torch.float64) - 1
    )
    true_t = nominal * jitter
    response = get_response(name)
    true_curve = response.icrf_curve(n_points=256, channels=args.channels)
    torch.manual_seed(args.seed)
    noise = GaussianNoise(sigma=sigma) if sigma > 0 else None
    scene = demo_scene(
        args.height, args.width, channels=args.channels, dynamic_range_stops=10
    )
    y = ExposureStack(true_t, response=response, noise_model=noise)(scene)[0]

    start = time.perf_counter()
    exact = fit_icrf(y, true_t, **fit_options)
    nominal_fit = fit_icrf(y, nominal, **fit_options)
    refined = fit_refined(y, nominal, max_iter=args.max_iter, **fit_options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        no_times = fit_refined(y, None, max_iter=args.max_iter, **fit_options)
    refined_t = refined.fit_report.exposure_times
    lower, upper = icrf_confidence_band(
        y,
        refined_t,
        refined,
        n_boot=args.n_boot,
        exponent_std=refined.fit_report.extra["exponent_std"],
        exposure_jackknife=not args.no_jackknife,
        clip_sensitivity=not args.no_clip_sensitivity,
        fit_options=fit_options,
        seed=args.seed,
    )
    coverage = float(band_coverage(lower.cpu(), upper.cpu(), true_curve).mean())
    width = float((upper - lower)[:, 8:248].mean())
    coverage_exact = math.nan
    if args.exact_band:
        # the band of a user who knows the times exactly: no exponent widening
        lower_e, upper_e = icrf_confidence_band(
            y,
            true_t,
            exact,
            n_boot=args.n_boot,
            exposure_jackknife=not args.no_jackknife,
            clip_sensitivity=not args.no_clip_sensitivity,
            fit_options=fit_options,
            seed=args.seed,
        )
        coverage_exact = float(
            band_coverage(lower_e.cpu(), upper_e.cpu(), true_curve).mean()
        )
    rmse_exact = _rmse(exact.curve, true_curve)
    return {
        "curve": name,
        "noise": sigma,
        "rmse_exact": rmse_exact,
        "rmse_nominal": _rmse(nominal_fit.curve, true_curve),
        "rmse_refined": _rmse(refined.curve, true_curve),
        "rmse_refined_mod_g": _rmse_mod_exponent(refined.curve, true_curve),
        "rmse_exact_mod_g": _rmse_mod_exponent(exact.curve, true_curve),
        "rmse_no_times": _rmse(no_times.curve, true_curve),
        "time_err_nominal": _time_error(nominal, true_t),
        "time_err_refined": _time_error(refined_t, true_t),
        "time_err_refined_mod_g": _time_error(refined_t, true_t, mod_exponent=True),
        "time_err_oracle": _time_error(_prior_oracle(nominal, true_t), true_t),
        "step_err_nominal": _step_error(nominal, true_t),
        "step_err_refined": _step_error(refined_t, true_t),
        "time_err_no_times": _time_error(no_times.fit_report.exposure_times, true_t),
        "coverage": coverage,
        "coverage_exact": coverage_exact,
        "band_width": width,
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one curve, small images")
    parser.add_argument("--curves", default="srgb,filmic,exp")
    parser.add_argument("--noise", default="0,0.005,0.01,0.02")
    parser.add_argument("--exposures", type=int, default=5)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--perturb", type=float, default=0.1)
    parser.add_argument(
        "--shortest",
        type=float,
        default=0.25,
        help="shortest nominal time; 0.25 saturates the highlights of the longer exposures "
        "as real brackets do (with 1/16 almost nothing saturates and the top of every curve "
        "is an extrapolation)",
    )
    parser.add_argument("--n-boot", type=int, default=12)
    parser.add_argument("--max-iter", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--fit-options",
        default="{}",
        help="JSON options of fit_icrf (default: its defaults)",
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--no-jackknife",
        action="store_true",
        help="bands from the bootstrap alone (no exposure jackknife), for comparison",
    )
    parser.add_argument(
        "--no-clip-sensitivity",
        action="store_true",
        help="bands without the second fit on the unclipped-first pixel sample",
    )
    parser.add_argument(
        "--exact-band",
        action="store_true",
        help="also the band around the fit with the exact times (no exponent widening), "
        "the band of a user whose times are right",
    )
    args = parser.parse_args()
    if args.quick:
        args.curves = args.curves if args.curves != "srgb,filmic,exp" else "srgb"
        args.height, args.width, args.n_boot = 96, 128, 8
    torch.set_num_threads(args.threads)
    fit_options = dict(json.loads(args.fit_options), progress=False)
    rows = []
    for name in args.curves.split(","):
        for sigma in [float(s) for s in args.noise.split(",")]:
            rows.append(run_case(name, sigma, args, fit_options))
            r = rows[-1]
            print(f"# done {name} noise={sigma} in {r['seconds']:.0f}s", flush=True)

    print()
    print(
        f"stacks: {args.exposures} exposures one stop apart (nominal), true times within "
        f"+-{100 * args.perturb:.0f}%, {args.channels}x{args.height}x{args.width} 8-bit, "
        f"fit_icrf options {json.dumps(json.loads(args.fit_options))}, "
        f"{args.n_boot} bootstrap refits, exposure jackknife "
        f"{'off' if args.no_jackknife else 'on'}, clip sensitivity "
        f"{'off' if args.no_clip_sensitivity else 'on'}, seed {args.seed}, "
        f"torch threads {args.threads}"
    )
    print()
    print(
        "| curve | noise | RMSE exact t | RMSE nominal t | RMSE refined | refined/exact "
        "| refined/exact mod g | RMSE no times | t err nominal | t err refined | t err oracle "
        "| t err refined mod g "
        "| step err nominal | step err refined | t err no times | band coverage "
        "| band width | band coverage exact t | s |"
    )
    print("|" + "---|" * 19)
    for r in rows:
        ratio = r["rmse_refined"] / max(r["rmse_exact"], 1e-12)
        ratio_g = r["rmse_refined_mod_g"] / max(r["rmse_exact_mod_g"], 1e-12)
        print(
            f"| {r['curve']} | {r['noise']:g} | {r['rmse_exact']:.4f} | {r['rmse_nominal']:.4f} "
            f"| {r['rmse_refined']:.4f} | {ratio:.2f}x | {ratio_g:.2f}x | {r['rmse_no_times']:.4f} "
            f"| {100 * r['time_err_nominal']:.2f}% | {100 * r['time_err_refined']:.2f}% "
            f"| {100 * r['time_err_oracle']:.2f}% "
            f"| {100 * r['time_err_refined_mod_g']:.2f}% "
            f"| {100 * r['step_err_nominal']:.2f}% | {100 * r['step_err_refined']:.2f}% "
            f"| {100 * r['time_err_no_times']:.2f}% "
            f"| {100 * r['coverage']:.1f}% | {r['band_width']:.4f} "
            f"| {100 * r['coverage_exact']:.1f}% | {r['seconds']:.0f} |"
        )
    print()
    ok_t = all(r["time_err_refined"] <= 0.01 for r in rows)
    ok_t_g = all(r["time_err_refined_mod_g"] <= 0.01 for r in rows)
    ok_step = all(r["step_err_refined"] <= 0.01 for r in rows)
    ok_rmse = all(r["rmse_refined"] <= 1.2 * r["rmse_exact"] for r in rows)
    ok_rmse_g = all(
        r["rmse_refined_mod_g"] <= 1.2 * max(r["rmse_exact_mod_g"], 5e-4) for r in rows
    )
    ok_band = all(r["coverage"] >= 0.9 for r in rows)
    print(f"target refined times within 1%: {'met' if ok_t else 'NOT met'}")
    print(
        f"  (identifiable part, after the best exponent t**g: {'met' if ok_t_g else 'NOT met'})"
    )
    print(
        f"  (ratios of consecutive exposures within 1%: {'met' if ok_step else 'NOT met'}; "
        "they too are raised to the unidentifiable power g)"
    )
    print(
        f"target refined RMSE <= 1.2x exact-time RMSE: {'met' if ok_rmse else 'NOT met'}"
    )
    print(
        f"  (identifiable part, both curves at their best exponent f**g, floor 5e-4: "
        f"{'met' if ok_rmse_g else 'NOT met'})"
    )
    fail, median, undecidable = _oracle_fail_rate(args)
    print(
        f"  prior oracle (identifiable part exact, exponent from the nominal times): misses 1% "
        f"on {100 * fail:.1f}% of 2000 random +-{100 * args.perturb:.0f}% jitters "
        f"(median largest error {100 * median:.2f}%); on {100 * undecidable:.1f}% of them the "
        "exponents consistent with the images and the +-bounds span more than 1% on the "
        "extreme times, so no estimator can promise 1% there"
    )
    print(
        "  the exponent g of times and curve is not identifiable from the images (f**g with "
        "t**g fits equally well); only the EXIF prior sets it, to about "
        "prior_std / sqrt(sum of squared centred log-times)"
    )
    print(
        f"target 95% band covers >= 90% of codes 8..247: {'met' if ok_band else 'NOT met'}"
    )
    if args.exact_band:
        ok_exact = all(r["coverage_exact"] >= 0.9 for r in rows)
        print(
            f"  (band around the exact-time fit: {'met' if ok_exact else 'NOT met'}; lowest "
            f"{100 * min(r['coverage_exact'] for r in rows):.1f}%)"
        )
    if not math.isfinite(sum(r["rmse_refined"] for r in rows)):
        raise SystemExit("non-finite RMSE")


if __name__ == "__main__":
    main()
