r"""Calibration: fit the inverse camera response of a bracket, with its exposure times and
a confidence band.

:func:`fit_icrf` is the one-call fit (also ``deepinv_icrf.fit_icrf``); :func:`fit_refined`
refines the relative exposure times with the curve; :func:`icrf_confidence_band` estimates
how far the fitted curve can be trusted.
"""

from __future__ import annotations

from deepinv_icrf.calibration.bands import icrf_confidence_band  # noqa: F401
from deepinv_icrf.calibration.fit import METHODS, FitReport, fit_icrf  # noqa: F401
from deepinv_icrf.calibration.refine import (  # noqa: F401
    describe_refinement,
    fit_refined,
)
