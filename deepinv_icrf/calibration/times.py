r"""Exposure times you cannot trust: check the listed times against the images, and refine
them with the curve.

**Check** (every fit of one stack): the stack is linearized with the fitted curve on a
sample of pixel positions, the ratio of every pair of neighbouring exposures (in listed-time
order) is measured on the well-exposed pixels, selected by the codes of the pixel next to
them so that noise does not bias the selection
(:func:`~deepinv_icrf.functional.consecutive_log_ratios`), and a step whose ratio is off the
listed one by more than half a stop (and the noise) disagrees
(:func:`~deepinv_icrf.functional.check_exposure_ratios`). Frames at the wrong stop (a camera
at its shutter limit writes doubling times for equally bright frames) are caught; the
rounding of real cameras (1/60 for 1/64) and the errors of a fitted curve are not flagged.

**Refine** (code fit): one joint fit of the response, the radiances and a log-time offset per
exposure (:func:`~deepinv_icrf.functional.fit_code_domain` with ``time_prior``) from the
times the check implies, then the exponent and scale that the images leave free are set by
the listed times (:func:`~deepinv_icrf.functional.exponent_from_prior`): the curve is
:math:`f^g` and the times :math:`c\, t^g` of the joint fit's. The linearity fit alternates
curve fits with a re-estimate of the times instead (:mod:`deepinv_icrf.calibration.refine`).
"""

from __future__ import annotations

import dataclasses
import math
import warnings

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf.bracket import Bracket
from deepinv_icrf.calibration.core import (
    code_sample,
    fit_once,
    random_positions,
    small_problem_threads,
)
from deepinv_icrf.calibration.options import CodeFitOptions, FitOptions, TimeOptions
from deepinv_icrf.calibration.report import FitReport, Refinement
from deepinv_icrf.functional.times import (
    TimeCheck,
    check_exposure_ratios,
    consecutive_log_ratios,
    exponent_from_prior,
)
from deepinv_icrf.models.icrf_base import ICRFBase

__all__ = [
    "AMBIGUITY_WARNING",
    "CHECK_FIT",
    "JOINT_FIT",
    "check_times",
    "assumed_times",
    "neighbour_sample",
    "check_listed_times",
    "refine_code_fit",
    "time_prior",
    "curve_power",
]

AMBIGUITY_WARNING = (
    "exposure_times is None: the curve exponent and the exposure ratios are not identifiable "
    "together (the curve f**g with the times t**g fits the stack equally well for every g > 0). "
    "Assumed exposures {stops:g} stop(s) apart in order of increasing brightness "
    "(times 2**({stops:g} k)); the fitted curve and the refined times are correct only up to "
    "that exponent."
)


def neighbour_sample(
    codes: np.ndarray | Tensor, max_pixels: int, seed: int
) -> tuple[Tensor, Tensor]:
    r"""Codes of random pixel positions and of their right-hand (or lower) neighbours.

    :param numpy.ndarray, torch.Tensor codes: integer codes ``(N, H, W, C)`` or a float
        stack ``(N, C, H, W)`` in ``[0, 1]``.
    :param int max_pixels: most positions.
    :param int seed: seed of the positions.
    :return: (tuple) float codes ``(N, C, 1, P)`` of the positions and of their neighbours.
    """
    if isinstance(codes, np.ndarray):
        n, h, w, c = codes.shape
        scale = np.float32(np.iinfo(codes.dtype).max)
        flat = codes.reshape(n, h * w, c)
    else:
        n, c, h, w = codes.shape
        flat = codes.reshape(n, c, h * w)
    step, rows, cols = (1, h, w - 1) if w > 1 else (w, h - 1, w)
    count = max(rows * cols, 1)
    gen = torch.Generator().manual_seed(seed)
    pick = random_positions(count, max_pixels, gen)
    own = (pick // max(cols, 1)) * w + pick % max(cols, 1)
    other = own + (step if rows * cols > 0 else 0)
    if isinstance(codes, np.ndarray):
        own_np, other_np = own.numpy(), other.numpy()
        a = torch.from_numpy(flat[:, own_np, :].astype(np.float32) / scale)
        b = torch.from_numpy(flat[:, other_np, :].astype(np.float32) / scale)
        return a.permute(0, 2, 1).unsqueeze(2), b.permute(0, 2, 1).unsqueeze(2)
    own, other = own.to(flat.device), other.to(flat.device)
    return (
        flat.index_select(-1, own).unsqueeze(2),
        flat.index_select(-1, other).unsqueeze(2),
    )


def check_listed_times(
    icrf: ICRFBase,
    codes: np.ndarray | Tensor,
    times: Tensor,
    options: TimeOptions,
    seed: int = 0,
    pairs: tuple[Tensor, Tensor] | None = None,
) -> TimeCheck:
    r"""Check the listed times of one stack against the images, through a fitted curve.

    :param deepinv_icrf.models.ICRF icrf: the curve fitted with the listed times.
    :param numpy.ndarray, torch.Tensor codes: the stack, integer ``(N, H, W, C)`` or float
        ``(N, C, H, W)``.
    :param torch.Tensor times: the listed times ``(N,)``.
    :param TimeOptions options: tolerance and ratio options.
    :param int seed: seed of the pixel positions.
    :param tuple, None pairs: the positions' codes and their neighbours' as
        :func:`neighbour_sample` draws them with ``options.ratio_pixels`` and ``seed``, when
        the caller has them already (drawn here when ``None``).
    :return: (:class:`~deepinv_icrf.functional.TimeCheck`) the check.
    """
    device = icrf.curve.device
    with small_problem_threads(device), torch.no_grad():
        if pairs is None:
            pairs = neighbour_sample(codes, options.ratio_pixels, seed)
        own, other = pairs
        x = icrf(own.to(device))
        order = torch.argsort(times)
        rho, se, spread = consecutive_log_ratios(
            x, other.to(device), order, options.ratio_lower, options.ratio_upper
        )
    return check_exposure_ratios(
        rho, se, times, tolerance=options.tolerance, spread=spread, free_exponent=True
    )


#: The quick code fit whose curve the time check reads the images through: a small pixel
#: sample (1000 positions), few iterations (10), no outlier phase (a ratio off by half a stop shows through any
#: reasonable curve), so checking costs a fraction of the fit.
CHECK_FIT = CodeFitOptions(max_pixels=1_000, steps=10, outlier_threshold=None)
#: Sample and iterations of the joint fit of curve and times in :func:`refine_code_fit`, whose
#: curve is then refitted at the times it finds. On 7 cases of ``benchmarks/cases.py``
#: (256x384) the refined times and the final curve match those of a joint fit with the full
#: sample and iterations (curve RMSE within 0.0025 of it); over its 24 cases refinement costs
#: a median 1.1x and at most 1.9x the plain fit (3.5x with the full joint fit).
JOINT_FIT = CodeFitOptions(max_pixels=1_000, steps=10)
#: Most rounds of :func:`check_times`.
CHECK_ROUNDS = 4


def check_times(
    bracket: Bracket,
    listed: Tensor,
    options: TimeOptions,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> tuple[TimeCheck, int]:
    r"""Check the listed times of one stack against the images, with quick curve fits.

    A quick code fit (:data:`CHECK_FIT`) at the listed times gives a curve to read the
    neighbouring ratios through (:func:`check_listed_times`). Where steps disagree, that curve
    was bent by the wrong times and exaggerates the steps next to them (x3 for a true x2), so
    the quick fit is repeated at the times the check implies until the disagreeing steps and
    the implied times settle (at most :data:`CHECK_ROUNDS` rounds; two on the real brackets).

    :param deepinv_icrf.bracket.Bracket bracket: the checked stack (one stack).
    :param torch.Tensor listed: the listed times ``(N,)``.
    :param TimeOptions options: tolerance and ratio options.
    :param str, torch.device, None device: where to fit.
    :param int seed: seed of the samples.
    :return: (tuple) the check and the iterations the quick fits ran.
    """
    times = listed
    steps = 0
    check = None
    # every round reads the same pixels (the same seed): drawn once
    sample = code_sample(bracket.codes, CHECK_FIT, device=device, seed=seed)
    codes = bracket.stack_codes()
    pairs = neighbour_sample(codes, options.ratio_pixels, seed)
    for _ in range(CHECK_ROUNDS):
        quick, report, _ = fit_once(
            bracket.codes,
            times.unsqueeze(0),
            CHECK_FIT,
            device=device,
            seed=seed,
            sample=sample,
        )
        steps += report.steps
        new = check_listed_times(quick, codes, listed, options, seed=seed, pairs=pairs)
        settled = check is not None and (
            new.disagreeing_steps == check.disagreeing_steps
            and float((new.implied.log() - check.implied.log()).abs().max()) < 0.01
        )
        check = new
        if check.consistent or settled:
            break
        times = check.implied
    return check, steps


def assumed_times(codes: np.ndarray | Tensor, stops: float) -> Tensor:
    r"""Times ``2**(stops k)`` by rank of mean brightness (the brightest the longest)."""
    if isinstance(codes, np.ndarray):
        mean = torch.from_numpy(
            codes.reshape(codes.shape[0], -1).mean(axis=1, dtype=np.float64)
        )
    else:
        mean = codes.reshape(codes.shape[0], -1).to(torch.float64).mean(-1).cpu()
    rank = torch.argsort(torch.argsort(mean))
    return torch.exp(rank.to(torch.float64) * stops * math.log(2.0))


def icrf_with_curve(icrf: ICRFBase, curve: Tensor) -> ICRFBase:
    r"""A new ICRF like ``icrf`` (channels, samples, parameterization, bit depth, device), in
    eval mode, holding ``curve`` ``(C, L)``."""
    out = ICRFBase(
        channels=icrf.channels,
        n_points=icrf.n_points,
        parameterization=icrf.parameterization,
        init=curve.detach().cpu(),
        bit_depth=icrf.bit_depth,
    ).to(icrf.curve.device)
    out.eval()
    return out


def curve_power(icrf: ICRFBase, g: float) -> ICRFBase:
    r"""The ICRF :math:`f^g` (same channels, samples, parameterization and device)."""
    if g == 1.0:
        return icrf
    return icrf_with_curve(
        icrf, icrf.curve.detach().to(torch.float64).clamp(0.0, 1.0) ** g
    )


def time_prior(
    bracket: Bracket, listed: Tensor | None, options: TimeOptions
) -> tuple[Tensor, float, Tensor | None]:
    r"""The prior of a refinement: log-times, their scale and the assumed times.

    With listed times: their logs and ``options.prior_std``. Without: times assumed
    ``options.assumed_stops`` stops apart in order of brightness (:func:`assumed_times`),
    a scale of 10 so that the measured spacing wins but for the exponent and the scale,
    and a :class:`UserWarning` (:data:`AMBIGUITY_WARNING`).

    :return: (tuple) ``(prior_log_times (N,), prior_std, assumed_times or None)``.
    """
    if listed is not None:
        return listed.to(torch.float64).log(), options.prior_std, None
    warnings.warn(
        AMBIGUITY_WARNING.format(stops=options.assumed_stops), UserWarning, stacklevel=6
    )
    assumed = assumed_times(bracket.stack_codes(), options.assumed_stops)
    return assumed.log(), 10.0, assumed


def refine_code_fit(
    bracket: Bracket,
    listed: Tensor | None,
    check: TimeCheck | None,
    options: CodeFitOptions,
    time_options: TimeOptions,
    *,
    device: str | torch.device | None,
    seed: int,
    progress: bool,
) -> tuple[ICRFBase, FitReport]:
    r"""Refine the exposure times of one stack with the code fit, jointly.

    :param deepinv_icrf.bracket.Bracket bracket: the checked stack (one stack).
    :param torch.Tensor, None listed: the listed times ``(N,)``; ``None``: assumed from the
        brightness order (with a warning), and the exponent from that assumption.
    :param TimeCheck, None check: the check of the listed times (its implied times start the
        joint fit).
    :param CodeFitOptions options: the fit's options.
    :param TimeOptions time_options: prior and tolerance.
    :param str, torch.device, None device: where to fit.
    :param int seed: seed of the pixel sample.
    :param bool progress: progress bar.
    :return: (tuple) the refined ICRF and its report (times refined, ``refinement``
        filled).
    """
    prior_log, prior_std, assumed = time_prior(bracket, listed, time_options)
    start = torch.zeros_like(prior_log)
    # the joint fit gives the times only (the curve is refitted at them below): a quick
    # fit finds them as well as a full one
    n = int(prior_log.shape[0])
    fit_options: FitOptions = dataclasses.replace(
        options,
        max_pixels=min(JOINT_FIT.max_pixels, options.sample_size(n)),
        steps=min(JOINT_FIT.steps, options.steps or JOINT_FIT.steps),
    )
    if check is not None:
        start = check.implied.log() - prior_log
    joint, joint_report, result = fit_once(
        bracket.codes,
        prior_log.exp().unsqueeze(0),
        fit_options,
        device=device,
        seed=seed,
        time_prior=prior_std,
        time_init=start.float(),
    )
    tau = prior_log + result.log_time_offset.detach().to("cpu", torch.float64)
    g, c, spread = exponent_from_prior(
        tau,
        prior_log,
        tolerance=time_options.tolerance if listed is not None else 10.0,
        return_spread=True,
    )
    final = torch.exp(g * tau + c)
    # the curve at the refined times, held fixed: the joint fit trades curve shape against
    # time offsets within the prior; a fit at fixed times gives the curve those times
    # imply (started afresh: a start from the joint curve keeps its trade)
    icrf, report, _ = fit_once(
        bracket.codes,
        final.unsqueeze(0),
        options,
        device=device,
        seed=seed,
        progress=progress,
    )
    report.steps += joint_report.steps
    report.method = "code+refined_exposures"
    report.exposure_times = final
    report.nominal_exposure_times = None if listed is None else listed.clone()
    report.refinement = Refinement(
        exponent=g,
        exponent_std=0.0 if listed is None else prior_std / max(spread, 1e-12),
        prior_std=prior_std,
        iterations=2,
        converged=result.iterations < fit_options.steps,
        assumed_exposure_times=None if assumed is None else assumed.tolist(),
        joint_curve=curve_power(joint, g).curve.detach(),
    )
    return icrf, report
