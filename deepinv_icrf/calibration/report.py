r"""What a fit reports about itself: :class:`FitReport`, attached as ``icrf.fit_report``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from deepinv_icrf.functional.times import TimeCheck

__all__ = ["FitReport", "Refinement"]


@dataclass
class Refinement:
    r"""How the exposure times were refined (``fit_report.refinement``).

    :param float exponent: the power :math:`g` the prior set (the refined times are
        :math:`c\, t^g` of the times the images give, the curve :math:`f^g`).
    :param float exponent_std: std of :math:`g` that only the prior sets,
        :math:`\sigma_p / s`, :math:`s` the spread of the log-times within the groups of frames
        joined by agreeing steps (0 without listed times, where the
        spacing is assumed); it widens the confidence band.
    :param float prior_std: the prior's scale :math:`\sigma_p` (log units).
    :param int iterations: fits run by the refinement.
    :param bool converged: whether the refinement converged.
    :param list, None assumed_exposure_times: the times assumed when none were given.
    :param list, None log_time_std: posterior std of each refined log-time, where known.
    :param torch.Tensor, None joint_curve: the curve ``(C, L)`` of the joint fit of curve and
        times, before the curve was refitted at the refined times (a second estimate that
        the confidence band also reaches).
    """

    exponent: float
    exponent_std: float
    prior_std: float
    iterations: int = 1
    converged: bool = True
    assumed_exposure_times: list[float] | None = None
    log_time_std: list[float] | None = None
    joint_curve: Tensor | None = field(default=None, repr=False)


@dataclass
class FitReport:
    r"""How an ICRF was fitted, attached to the returned model as ``icrf.fit_report``.

    :param str method: the method (``"code"``, ``"linearity"``, with ``"+refined_exposures"``
        after a refinement of the times).
    :param int steps: iterations (code) or optimiser steps (linearity) run, all fits
        together.
    :param float wall_time_s: wall time of the fit in seconds.
    :param float, None final_loss: the final objective (code: mean censored NLL over
        channels; linearity: the total loss).
    :param torch.Tensor, None exposure_times: the exposure times used, ``(N,)`` or ``(B, N)``
        (the refined ones after a refinement).
    :param torch.Tensor, None nominal_exposure_times: the times as given (``None`` if none).
    :param torch.Tensor, None band: the confidence band of the curve ``(2, C, L)`` (as
        ``icrf.band``), with ``band=True``.
    :param list, None sigma: code fit: the estimated code noise per channel.
    :param int, None pixels: code fit: the pixel positions used.
    :param list, None outliers: code fit: the share of codes left out per channel.
    :param list, None floor: code fit: the code of no light per channel, in ``[0, 1]``
        (film scans: 0.05-0.08; most digital cameras: about 0).
    :param TimeCheck, None time_check: the listed exposure times checked against the images
        (:func:`~deepinv_icrf.functional.check_exposure_ratios`).
    :param Refinement, None refinement: how the times were refined, if they were.
    :param list, None shifts: alignment shifts ``(dy, dx)`` per exposure, with
        ``align=True``.
    :param float, None refit_jump: code fit: when the first fit's curve jumped between
        adjacent codes by more than
        :data:`~deepinv_icrf.calibration.core.MAX_CURVE_JUMP` (a flat stretch of the
        response, from photos that disagree with each other or with their times), that
        jump; the curve was then refitted with a minimum slope and a bound on that ratio
        (:data:`~deepinv_icrf.calibration.core.REFIT_MAX_JUMP`) (``None``: no refit, or a
        refit that did not lower the jump and was dropped).
    :param float, None curve_jump: code fit: the largest ratio of adjacent values of the
        final curve over codes 64..239 (any channel; real responses: 1.02-1.06).
    :param list, None observed_code_range: the lowest and highest code the photos hold per
        channel, as fractions of the code range
        (:func:`~deepinv_icrf.calibration.coverage.observed_code_range`): outside it the
        curve is extrapolated, not measured.
    """

    method: str
    steps: int
    wall_time_s: float
    final_loss: float | None
    exposure_times: Tensor | None
    nominal_exposure_times: Tensor | None
    band: Tensor | None = None
    sigma: list[float] | None = None
    pixels: int | None = None
    outliers: list[float] | None = None
    floor: list[float] | None = None
    time_check: TimeCheck | None = None
    refinement: Refinement | None = None
    shifts: list[list[int]] | None = None
    refit_jump: float | None = None
    curve_jump: float | None = None
    observed_code_range: list[list[float]] | None = None

    @property
    def extra(self) -> dict[str, Any]:
        r"""The optional values as a read-only dict (the former untyped ``extra``): ``sigma``,
        ``pixels``, ``outliers``, ``floor``, ``shifts``, ``refit_jump``, ``curve_jump``,
        ``observed_code_range`` and, after a refinement, ``exponent``, ``exponent_std``,
        ``prior_std``, ``iterations``, ``converged``, ``assumed_exposure_times``,
        ``log_time_std``; only those that are set. Prefer the fields."""
        out: dict[str, Any] = {}
        for key in (
            "sigma",
            "pixels",
            "outliers",
            "floor",
            "shifts",
            "refit_jump",
            "curve_jump",
            "observed_code_range",
        ):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.refinement is not None:
            for key, value in vars(self.refinement).items():
                if value is not None:
                    out[key] = value
        return out
