r"""Calibration: fit the inverse camera response of a bracket, with its exposure times and
a confidence band.

:func:`fit_icrf` is the one-call fit (also ``deepinv_icrf.fit_icrf``); :func:`fit_refined`
refines the relative exposure times with the curve; :func:`icrf_confidence_band` estimates
how far the fitted curve can be trusted; :func:`fit_summary` and :func:`describe_fit` say
what a fit found (the command line's ``summary.json`` and printout).
"""

from __future__ import annotations

from deepinv_icrf.calibration.bands import icrf_confidence_band  # noqa: F401
from deepinv_icrf.calibration.fit import METHODS, FitReport, fit_icrf  # noqa: F401
from deepinv_icrf.calibration.refine import (  # noqa: F401
    describe_refinement,
    fit_refined,
)
from deepinv_icrf.calibration.summary import (  # noqa: F401
    describe_fit,
    fit_metadata,
    fit_summary,
)
