r"""Exposure refinement: fit the curve and the relative exposure times together.

Real EXIF times are nominal (a camera's "1/60" is often 1/64; aperture and gain drift a few
percent), sometimes wrong (a camera at its shutter limit writes doubling times for equally
bright frames) or missing. :func:`fit_refined` fits the curve with the times refined from the
images, the listed times acting as a robust prior: the code fit refines them jointly in one
fit (:func:`~deepinv_icrf.calibration.times.refine_code_fit`), the linearity fit alternates
curve fits with a closed-form re-estimate of the log-times from the linearized stack
(:func:`refine_by_alternation`, :func:`estimate_log_exposures`).

The joint problem has an exact ambiguity: if the curve :math:`f` and the times :math:`t_k` explain
a stack, so do :math:`f^g` and :math:`c\, t_k^g` for every :math:`g > 0, c > 0` (the radiance
becomes :math:`E^g / c`). The data fix the log-times only up to this affine map
:math:`\tau \mapsto g \tau + \log c`; the prior picks :math:`g` and :math:`c`. Without any times
there is no prior: a convention (exposures a fixed number of stops apart, in order of
brightness) is assumed and a warning says so.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf.calibration.alternation import (
    estimate_log_exposures,
    refine_by_alternation,
)
from deepinv_icrf.calibration.fit import fit_icrf
from deepinv_icrf.calibration.options import TimeOptions
from deepinv_icrf.calibration.times import AMBIGUITY_WARNING
from deepinv_icrf.functional.times import pairwise_log_ratios
from deepinv_icrf.models.icrf_base import ICRFBase

__all__ = [
    "AMBIGUITY_WARNING",
    "estimate_log_exposures",
    "fit_refined",
    "pairwise_log_ratios",
    "refine_by_alternation",
    "describe_refinement",
]


def fit_refined(
    stack: np.ndarray | Tensor,
    exposure_times: Tensor | np.ndarray | list[float] | None,
    *,
    prior_std: float = 0.1,
    max_iter: int = 4,
    tol: float = 1e-3,
    assumed_stops: float = 1.0,
    ratio_lower: float = 0.15,
    ratio_upper: float = 0.9,
    ratio_pixels: int = 8_000,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = False,
    **fit_options: Any,
) -> ICRFBase:
    r"""Fit the ICRF and refine the relative exposure times, the listed times as a prior.

    The same as :func:`~deepinv_icrf.calibration.fit_icrf` with ``refine_exposures=True``
    and these :class:`~deepinv_icrf.calibration.TimeOptions`: the code fit refines a log-time
    offset per exposure jointly with the curve, under a Cauchy prior of scale
    ``prior_std`` around the listed times, and the exponent and scale the images leave free
    are set by a robust regression on the listed times; the linearity fit alternates curve
    fits and time estimates (at most ``max_iter`` times, until the log-times move less than
    ``tol``).

    With ``exposure_times=None`` the exponent is not identifiable (:math:`f^g` and
    :math:`t^g` fit the stack equally well): the exposures are assumed ``assumed_stops``
    stops apart in order of increasing mean brightness, the prior is made very weak
    (:math:`\sigma_p = 10`) so the measured spacing wins except for the exponent and the
    offset, and a :class:`UserWarning` says so.

    :param numpy.ndarray, torch.Tensor stack: as for :func:`~deepinv_icrf.calibration.fit_icrf`.
    :param torch.Tensor, list, None exposure_times: nominal times ``(N,)`` in seconds, or ``None``.
    :param float prior_std: scale of the prior of the log-times (default 0.1, about 10%).
    :param int max_iter: curve/time alternations of the linearity fit (default 4).
    :param float tol: stop the alternation when no log-time moves more than this (default
        1e-3).
    :param float assumed_stops: spacing assumed without times (default 1.0).
    :param float ratio_lower: smallest well-exposed code for the ratios (default 0.15).
    :param float ratio_upper: largest well-exposed code for the ratios (default 0.9).
    :param int ratio_pixels: pixel positions used for the ratios (default 8000).
    :param int seed: seed of the pixel sampling (default 0).
    :param str, torch.device device: where to fit (default: the stack's device).
    :param bool progress: progress bars of the curve fits (default False).
    :param fit_options: other options of :func:`~deepinv_icrf.calibration.fit_icrf`.
    :return: (:class:`~deepinv_icrf.models.ICRF`) the fitted ICRF; ``icrf.fit_report`` holds
        ``exposure_times`` (refined, float64 ``(N,)``), ``nominal_exposure_times`` (the given
        ones or ``None``) and ``refinement`` (:class:`~deepinv_icrf.calibration.Refinement`:
        the exponent :math:`g`, its std that only the prior sets, ...).

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.calibration.refine import fit_refined
    >>> from deepinv_icrf.data import demo_scene, demo_exposure_times
    >>> from deepinv_icrf.physics import ExposureStack
    >>> t = demo_exposure_times(4, shortest=1 / 8)
    >>> y = ExposureStack(t, response="gamma")(demo_scene(24, 32, channels=1))
    >>> icrf = fit_refined(y[0], t * torch.tensor([1.05, 0.95, 1.0, 1.02]), steps=30)
    >>> icrf.fit_report.exposure_times.shape
    torch.Size([4])
    """
    for key in ("exposure_times", "refine_exposures", "band", "time_options"):
        if key in fit_options:
            raise TypeError(f"fit_refined() got an unexpected option `{key}`.")
    time_options = TimeOptions(
        prior_std=prior_std,
        max_iter=max_iter,
        tol=tol,
        assumed_stops=assumed_stops,
        ratio_lower=ratio_lower,
        ratio_upper=ratio_upper,
        ratio_pixels=ratio_pixels,
    )
    return fit_icrf(
        stack,
        exposure_times,
        refine_exposures=True,
        time_options=time_options,
        seed=seed,
        device=device,
        progress=progress,
        **fit_options,
    )


#: Largest move of a time (relative, a common scale removed) that
#: :func:`describe_refinement` reports without a note when the time check found the listed
#: times consistent: the tolerance the time-refinement targets give right times.
RIGHT_TIMES_MOVE = 0.05


def describe_refinement(icrf: ICRFBase) -> str:
    r"""A small table of nominal vs refined exposure times, for the command line.

    :param deepinv_icrf.models.ICRF icrf: a model returned by :func:`fit_refined`.
    :return: (str) one line per exposure: index, nominal, refined, change in percent
        (relative to the median ratio of refined to nominal times, so a common scale does not
        count and the times a fit kept show no change; when the time check disagreed and
        the fit kept some listed times, relative to those, as the check's warning says);
        then a note when the time
        check found the listed times consistent but the refinement moved one by more than
        :data:`RIGHT_TIMES_MOVE`; then, when the report says how well the prior pins the
        exponent (``refinement.exponent_std``) or that there were no times, a note on the
        exponent ambiguity.

    |sep|

    :Example:

    >>> import torch
    >>> from types import SimpleNamespace
    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF(channels=1, n_points=4)
    >>> icrf.fit_report = SimpleNamespace(exposure_times=torch.tensor([1.0, 2.1]),
    ...     nominal_exposure_times=torch.tensor([1.0, 2.0]))
    >>> print(describe_refinement(icrf))
    exposure  nominal (s)  refined (s)  change
           0            1            1   -2.41%
           1            2          2.1   +2.47%
    """
    report = getattr(icrf, "fit_report", None)
    refined = getattr(report, "exposure_times", None)
    if refined is None:
        raise ValueError(
            "Expected an ICRF fitted with refine_exposures=True (its `fit_report` holds "
            "`exposure_times`), but it has none."
        )
    refined = torch.as_tensor(refined, dtype=torch.float64)
    nominal = getattr(report, "nominal_exposure_times", None)
    refinement = getattr(report, "refinement", None)
    lines = [f"{'exposure':>8}  {'nominal (s)':>11}  {'refined (s)':>11}  change"]
    if nominal is None:
        for k, t in enumerate(refined.tolist()):
            lines.append(f"{k:>8}  {'-':>11}  {t:>11.4g}  {'-':>7}")
        if refinement is not None and refinement.assumed_exposure_times is not None:
            lines.append(
                "note: no exposure times: the images fix the times only up to a common "
                "power t**g (with the curve f**g); the spacing of the assumed times sets g, "
                "so these times are relative and valid only up to that power."
            )
        return "\n".join(lines)
    nominal = torch.as_tensor(nominal, dtype=torch.float64)
    check = getattr(report, "time_check", None)
    log_ratio = refined.log() - nominal.log()
    kept = log_ratio.abs() < 1e-9
    if (
        check is not None
        and not getattr(check, "consistent", True)
        and bool(kept.any())
    ):
        # the times the check implied: anchored on the frames that agree, which keep their
        # listed times (however few), as its warning says
        rel = log_ratio
    else:
        # the median ratio is the common scale: the times a fit kept show 0, and a scale
        # that only moves every time alike does not count
        rel = log_ratio - torch.quantile(log_ratio, 0.5)
    for k, (t0, t1, r) in enumerate(
        zip(nominal.tolist(), refined.tolist(), rel.tolist(), strict=True)
    ):
        change = 100 * math.expm1(r)
        change = 0.0 if abs(change) < 0.005 else change  # no "-0.00%"
        lines.append(f"{k:>8}  {t0:>11.4g}  {t1:>11.4g}  {change:>+6.2f}%")
    moved = max(abs(math.expm1(r)) for r in rel.tolist())
    if getattr(check, "consistent", False) and moved > RIGHT_TIMES_MOVE:
        lines.append(
            "note: the time check found every listed step consistent with the images, and "
            f"the refinement moved the times by up to {100 * moved:.1f}%: it trusts the "
            "images over the listed times. On real brackets with right times it moved them "
            "by up to 14-17% and predicted held-out exposures 7-8% worse (the fitting "
            "guide); the default (refine_exposures='auto', --refine-exposures auto) keeps "
            "times the check finds consistent."
        )
    std = None if refinement is None else refinement.exponent_std
    if isinstance(std, (int, float)) and std > 0:
        spread = float((refined.log() - refined.log().mean()).abs().max())
        lines.append(
            "note: the images fix the times only up to a common power t**g (with the curve "
            f"f**g); the EXIF prior sets g to +-{100 * std:.1f}%, about "
            f"+-{100 * math.expm1(std * spread):.1f}% on the extreme times (and every ratio of "
            "two times is raised to the same power g)."
        )
    return "\n".join(lines)
