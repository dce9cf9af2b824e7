r"""Calibration: fit the inverse camera response of a bracket, check and refine its exposure
times, and estimate how far the fitted curve can be trusted.

:func:`fit_icrf` is the one-call fit (also ``deepinv_icrf.fit_icrf``); its options are
grouped by method (:class:`CodeFitOptions`, :class:`LinearityFitOptions`) and for the times
(:class:`TimeOptions`); it reports in :class:`FitReport`. :func:`fit_refined` refines the
relative exposure times with the curve; :func:`icrf_confidence_band` estimates a band;
:func:`fit_summary` and :func:`describe_fit` say what a fit found (the command line's
``summary.json`` and printout).
"""

from __future__ import annotations

from deepinv_icrf.calibration.bands import icrf_confidence_band  # noqa: F401
from deepinv_icrf.calibration.fit import REFINE_MODES, fit_icrf  # noqa: F401
from deepinv_icrf.calibration.options import (  # noqa: F401
    METHODS,
    CodeFitOptions,
    FitOptions,
    LinearityFitOptions,
    TimeOptions,
)
from deepinv_icrf.calibration.refine import (  # noqa: F401
    describe_refinement,
    fit_refined,
)
from deepinv_icrf.calibration.report import FitReport, Refinement  # noqa: F401
from deepinv_icrf.calibration.summary import (  # noqa: F401
    describe_fit,
    fit_metadata,
    fit_summary,
)
from deepinv_icrf.functional.times import TimeCheck  # noqa: F401
