r"""Refinement of the exposure times by alternation (the linearity fit's).

Curve fits at fixed times alternate with a closed-form re-estimate of the log-times from the
pairwise ratios of the linearized stack (:func:`estimate_log_exposures`), the listed times
acting as a Gaussian prior that also sets the exponent the images leave free. The code fit
refines the times jointly instead (:func:`~deepinv_icrf.calibration.times.refine_code_fit`).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from deepinv_icrf.bracket import Bracket
from deepinv_icrf.calibration.core import fit_once
from deepinv_icrf.calibration.options import LinearityFitOptions, TimeOptions
from deepinv_icrf.calibration.report import FitReport, Refinement
from deepinv_icrf.calibration.times import (
    icrf_with_curve,
    neighbour_sample,
    time_prior,
)
from deepinv_icrf.functional.times import TimeCheck, pairwise_log_ratios
from deepinv_icrf.models.icrf_base import ICRFBase

__all__ = ["estimate_log_exposures", "refine_by_alternation"]


def estimate_log_exposures(
    a_idx: Tensor,
    b_idx: Tensor,
    rho: Tensor,
    se: Tensor,
    prior_log_times: Tensor,
    prior_std: float = 0.1,
    iterations: int = 50,
) -> tuple[Tensor, float, Tensor]:
    r"""MAP log exposure times from pairwise log ratios, resolving the exponent by a prior.

    The log ratios :math:`\rho_{ab}` measured through a curve :math:`f` give the log-times in the
    units of :math:`f`; the same data read through :math:`f^g` give :math:`g \rho_{ab}`. So the
    log-times are :math:`\tau = g u + c` with :math:`u` (mean zero) and the exponent :math:`g`
    and offset :math:`c` chosen jointly with the Gaussian prior :math:`\tau \sim
    \mathcal{N}(\tau^0, \sigma_p^2)`:

    .. math::

        \min_{u, g, c}\ \sum_{(a, b)} \frac{(\rho_{ab} - u_a + u_b)^2}{\mathrm{se}_{ab}^2}
        + \sum_k \frac{(g u_k + c - \tau^0_k)^2}{\sigma_p^2},
        \qquad \textstyle\sum_k u_k = 0,

    solved by alternating the linear least-squares problems in :math:`u` and in :math:`(g, c)`.

    :param torch.Tensor a_idx: first image of each pair, shape ``(P,)``.
    :param torch.Tensor b_idx: second image of each pair, shape ``(P,)``.
    :param torch.Tensor rho: log ratios :math:`\log t_a - \log t_b` in the curve's units, ``(P,)``.
    :param torch.Tensor se: their standard errors ``(P,)`` (``inf``: pair unused).
    :param torch.Tensor prior_log_times: :math:`\tau^0`, shape ``(N,)``.
    :param float prior_std: :math:`\sigma_p`, prior std of each log-time (default 0.1, about 10%).
    :param int iterations: alternations (default 50).
    :return: (tuple) log-times :math:`\tau` ``(N,)`` (float64), the exponent :math:`g` (the curve
        that goes with :math:`\tau` is :math:`f^g`) and the posterior std of :math:`\tau` ``(N,)``
        (exponent held fixed).

    |sep|

    :Example:

    >>> import torch
    >>> a, b = torch.triu_indices(3, 3, offset=1)
    >>> true = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    >>> rho = 0.5 * (true[a] - true[b])  # measured through f**0.5
    >>> tau, g, _ = estimate_log_exposures(a, b, rho, torch.full((3,), 1e-3), true)
    >>> [round(v, 4) for v in tau.tolist()], round(g, 4)
    ([0.0, 1.0, 2.0], 2.0)
    """
    if not prior_std > 0 or not math.isfinite(prior_std):
        raise ValueError(
            f"Expected `prior_std` to be a finite float > 0, but got {prior_std!r}."
        )
    work = torch.float64
    tau0 = prior_log_times.detach().to("cpu", work)
    n = tau0.shape[0]
    a_idx, b_idx = a_idx.to("cpu"), b_idx.to("cpu")
    rho, se = rho.detach().to("cpu", work), se.detach().to("cpu", work)
    w = torch.where(torch.isfinite(se), 1.0 / se.clamp_min(1e-12) ** 2, 0.0)
    lap = torch.zeros(n, n, dtype=work)
    rhs = torch.zeros(n, dtype=work)
    e = torch.zeros(rho.shape[0], n, dtype=work)
    e[torch.arange(rho.shape[0]), a_idx] = 1.0
    e[torch.arange(rho.shape[0]), b_idx] = -1.0
    lap = e.T @ (w.unsqueeze(-1) * e)
    rhs = e.T @ (w * rho)
    ones = torch.ones(n, n, dtype=work)
    gauge = (lap.diagonal().sum() / n).clamp_min(1.0) * ones
    prec = 1.0 / prior_std**2
    # start: the prior's own spread, g from the data's spread
    u = tau0 - tau0.mean()
    g, c = 1.0, float(tau0.mean())
    for _ in range(iterations):
        system = lap + gauge + g * g * prec * torch.eye(n, dtype=work)
        u = torch.linalg.solve(system, rhs + g * prec * (tau0 - c))
        u = u - u.mean()
        denom = float((u * u).sum())
        if denom > 0:
            g_new = float((u * (tau0 - tau0.mean())).sum()) / denom
            g = g_new if g_new > 0 else g
        c = float((tau0 - g * u).mean())
    system = lap + gauge + g * g * prec * torch.eye(n, dtype=work)
    std = g * torch.linalg.inv(system).diagonal().clamp_min(0).sqrt()
    return g * u + c, g, std


def refine_by_alternation(
    bracket: Bracket,
    listed: Tensor | None,
    check: TimeCheck | None,
    options: LinearityFitOptions,
    time_options: TimeOptions,
    *,
    device: str | torch.device | None,
    seed: int,
    progress: bool,
) -> tuple[ICRFBase, FitReport]:
    r"""Refine the times of one stack by alternating curve fits and time estimates.

    At most ``time_options.max_iter`` times: a curve fit :math:`f` at the current times, the
    pairwise log ratios of the linearized stack (:func:`pairwise_log_ratios`, values selected
    by their neighbours' codes), and the MAP log-times :math:`\tau = g u + c`
    (:func:`estimate_log_exposures`), whose curve :math:`f^g` starts the next fit. A last fit
    at the refined times gives the curve unless the times have settled.

    :param deepinv_icrf.bracket.Bracket bracket: the checked stack (one stack).
    :param torch.Tensor, None listed: the listed times ``(N,)``, or ``None`` (assumed).
    :param TimeCheck, None check: the check of the listed times (its implied times start).
    :param LinearityFitOptions options: the fit's options.
    :param TimeOptions time_options: prior, ratios and alternations.
    :param str, torch.device, None device: where to fit.
    :param int seed: seed of the samples.
    :param bool progress: progress bars.
    :return: (tuple) the ICRF and its report.
    """
    tau0, prior_std, assumed = time_prior(bracket, listed, time_options)
    tau = tau0.clone() if check is None else check.implied.log()
    codes = bracket.stack_codes()
    own, other = neighbour_sample(codes, time_options.ratio_pixels, seed)
    n = tau0.shape[0]
    exponent, steps, iterations, converged = 1.0, 0, 0, False
    log_std = torch.full((n,), math.inf, dtype=torch.float64)
    call_options = options
    icrf = None

    def fit_at(times: Tensor) -> tuple[ICRFBase, FitReport]:
        icrf, report, _ = fit_once(
            bracket.codes,
            times.exp().unsqueeze(0),
            call_options,
            device=device,
            seed=seed,
            progress=progress,
        )
        return icrf, report

    for _ in range(time_options.max_iter):
        icrf, report = fit_at(tau)
        steps += report.steps
        iterations += 1
        device_ = icrf.curve.device
        with torch.no_grad():
            x = icrf(own.to(device_))
        a_idx, b_idx, rho, se = pairwise_log_ratios(
            x, other.to(device_), time_options.ratio_lower, time_options.ratio_upper
        )
        new_tau, g, log_std = estimate_log_exposures(
            a_idx, b_idx, rho, se, tau0, prior_std=prior_std
        )
        delta = float((new_tau - tau).abs().max())
        tau = new_tau
        exponent *= g
        curve = icrf.curve.detach().clamp(0.0, 1.0) ** g
        call_options = _with_init(options, curve)
        if delta < time_options.tol:
            converged = True
            break
    if converged:
        # the last fit raised to the exponent g is the curve of the refined times
        icrf = icrf_with_curve(icrf, curve)
    else:
        icrf, report = fit_at(tau)
        steps += report.steps
    centred = tau - tau.mean()
    refined = FitReport(
        method="linearity+refined_exposures",
        steps=steps,
        wall_time_s=0.0,
        final_loss=report.final_loss,
        exposure_times=tau.exp(),
        nominal_exposure_times=None if listed is None else listed.clone(),
        refinement=Refinement(
            exponent=exponent,
            exponent_std=(
                0.0
                if listed is None
                else prior_std / max(float(centred.square().sum().sqrt()), 1e-12)
            ),
            prior_std=prior_std,
            iterations=iterations,
            converged=converged,
            assumed_exposure_times=None if assumed is None else assumed.tolist(),
            log_time_std=log_std.tolist(),
        ),
    )
    return icrf, refined


def _with_init(options: LinearityFitOptions, curve: Tensor) -> LinearityFitOptions:
    return replace(options, init=curve.detach().float().cpu())
