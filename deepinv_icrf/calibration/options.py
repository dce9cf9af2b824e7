r"""Options of the fit, grouped by the method they belong to.

:func:`~deepinv_icrf.calibration.fit_icrf` takes one options object: :class:`CodeFitOptions`
for the code-domain fit (default) or :class:`LinearityFitOptions` for the linearity fit, and
:class:`TimeOptions` for the check and refinement of the exposure times. Each field is
checked once, when the object is made. The fit's former keyword arguments (``steps=...``,
``n_knots=...``, ``lr=...``) still work: :func:`options_from_keywords` turns them into these
objects.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from torch import Tensor

from deepinv_icrf._checks import check_in, check_int, check_threshold
from deepinv_icrf.functional.codefit import CLIP_PRIORITIES
from deepinv_icrf.functional.times import HALF_STOP

__all__ = [
    "METHODS",
    "FitOptions",
    "CodeFitOptions",
    "LinearityFitOptions",
    "TimeOptions",
    "options_from_keywords",
]

#: Fitting methods of :func:`~deepinv_icrf.calibration.fit_icrf`.
METHODS = ("code", "linearity")


@dataclass(frozen=True)
class FitOptions:
    r"""Options every fitting method has.

    :param int n_points: samples of the fitted curve (default 256).
    :param str parameterization: of the returned model, ``"monotone"`` (default) or
        ``"free"``.
    :param str, torch.Tensor init: initial curve, ``"gamma"`` (default, :math:`y^{2.2}`),
        ``"identity"`` or a tensor ``(C, L)``.
    :param int, None steps: most iterations (``None``: the method's default).
    :param int, None max_pixels: pixel positions used per stack (``None``: the method's
        default).
    """

    n_points: int = 256
    parameterization: str = "monotone"
    init: str | Tensor = "gamma"
    steps: int | None = None
    max_pixels: int | None = None

    def __post_init__(self) -> None:
        check_int(self.n_points, "n_points", 2)
        check_in(self.parameterization, "parameterization", ("monotone", "free"))
        if not isinstance(self.init, Tensor):
            check_in(self.init, "init", ("gamma", "identity"))
        if self.steps is not None:
            check_int(self.steps, "steps", 1)
        if self.max_pixels is not None:
            check_int(self.max_pixels, "max_pixels", 1)

    @property
    def method(self) -> str:
        r"""The fitting method these options belong to."""
        raise NotImplementedError  # pragma: no cover - subclasses


@dataclass(frozen=True)
class CodeFitOptions(FitOptions):
    r"""Options of the code-domain fit (:func:`~deepinv_icrf.functional.fit_code_domain`).

    :param int, None steps: most Gauss-Newton iterations (default 30; it stops earlier on
        convergence).
    :param int, None max_pixels: pixel positions, stratified by brightness (default: about
        40000 codes per channel, :math:`40000 / N` positions for :math:`N` exposures, between
        2000 and 8000, see :meth:`sample_size`).
    :param int n_knots: knots of the response (default 32).
    :param float, None noise_sigma: code noise std; ``None`` (default) estimates it.
    :param str clip_priority: how the pixel sample treats positions with clipped codes,
        ``"stratum"`` (default), ``"global"`` or ``"none"``
        (:func:`~deepinv_icrf.functional.stratified_pixel_sample`).
    :param float, None outlier_threshold: leave out codes the response misses by more than
        this many noise stds (moving objects; default 5, ``None`` keeps every code).
    :param float smoothness: relative weight of the response's smoothness prior (default
        0.1).
    :param bool floor: fit the code of no light (film scans never reach 0; default True).
    """

    n_knots: int = 32
    noise_sigma: float | None = None
    clip_priority: str = "stratum"
    outlier_threshold: float | None = 5.0
    smoothness: float = 0.1
    floor: bool = True

    #: defaults of the fields the base class leaves open
    DEFAULT_STEPS = 30
    #: codes per channel of the default pixel sample, and its bounds in positions
    DEFAULT_CODES = 40_000
    PIXEL_BOUNDS = (2_000, 8_000)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int(self.n_knots, "n_knots", 4)
        check_threshold(self.noise_sigma, "noise_sigma", optional=True)
        check_in(self.clip_priority, "clip_priority", CLIP_PRIORITIES)
        check_threshold(self.outlier_threshold, "outlier_threshold", optional=True)
        if not (
            isinstance(self.smoothness, (int, float))
            and not isinstance(self.smoothness, bool)
            and math.isfinite(self.smoothness)
            and self.smoothness >= 0
        ):
            raise ValueError(
                f"Expected `smoothness` >= 0, but got {self.smoothness!r}."
            )
        if not isinstance(self.floor, bool):
            raise TypeError(f"Expected `floor` to be a bool, but got {self.floor!r}.")

    @property
    def method(self) -> str:
        return "code"

    def sample_size(self, n_exposures: int) -> int:
        r"""Pixel positions of the fit of ``n_exposures`` exposures: ``max_pixels``, or by
        default :data:`DEFAULT_CODES` codes per channel (the fit's cost is proportional to
        positions times exposures; 9 exposures: 4444 positions, within 10% of the accuracy of
        5000 on ``benchmarks/fit_accuracy.py``, 5 exposures: 8000)."""
        if self.max_pixels is not None:
            return self.max_pixels
        low, high = self.PIXEL_BOUNDS
        return min(max(self.DEFAULT_CODES // max(n_exposures, 1), low), high)


@dataclass(frozen=True)
class LinearityFitOptions(FitOptions):
    r"""Options of the linearity fit (clair-torch's objective, minimised with Adam).

    :param int, None steps: Adam steps (default 300).
    :param int, None max_pixels: pixel positions (default: all, through the joint code
        histograms; 4000 sampled for continuous input).
    :param float lr: learning rate (default 0.05).
    :param float smoothness_weight: weight of the smoothness penalty (default 1e5).
    :param bool relative: relative (default) or absolute linearity residuals.
    :param Callable, None callback: called as ``callback(step, loss, icrf)`` after every
        step.
    """

    lr: float = 0.05
    smoothness_weight: float = 1e5
    relative: bool = True
    callback: Callable[..., None] | None = None

    DEFAULT_STEPS = 300
    DEFAULT_PIXELS = None  # all, through the joint code histograms

    def __post_init__(self) -> None:
        super().__post_init__()
        check_threshold(self.lr, "lr")
        if not (math.isfinite(self.smoothness_weight) and self.smoothness_weight >= 0):
            raise ValueError(
                f"Expected `smoothness_weight` >= 0, but got {self.smoothness_weight!r}."
            )
        if not isinstance(self.relative, bool):
            raise TypeError(
                f"Expected `relative` to be a bool, but got {self.relative!r}."
            )
        if self.callback is not None and not callable(self.callback):
            raise TypeError(
                f"Expected `callback` to be callable, but got {self.callback!r}."
            )

    @property
    def method(self) -> str:
        return "linearity"


@dataclass(frozen=True)
class TimeOptions:
    r"""How the listed exposure times are checked against the images and refined.

    :param float tolerance: a step between neighbouring exposures disagrees with the listed
        times when the images show a ratio off by more than this, in log units (default
        half a stop, :math:`\log\sqrt2`), see
        :func:`~deepinv_icrf.functional.check_exposure_ratios`.
    :param float prior_std: scale of the robust (Cauchy) prior of each refined log-time
        around the listed one, and of the regression that sets the exponent the images
        leave free (default 0.1, about 10%).
    :param float assumed_stops: without any times, the exposures are assumed this many stops
        apart in order of brightness (default 1).
    :param int ratio_pixels: pixel positions used to measure the ratios (default 8000).
    :param float ratio_lower: smallest well-exposed code for the ratios (default 0.15).
    :param float ratio_upper: largest well-exposed code for the ratios (default 0.9).
    :param int max_iter: curve/time alternations of the linearity fit's refinement (the
        code fit refines the times jointly, in one fit; default 4).
    :param float tol: the alternation stops when no log-time moves more than this (default
        1e-3).
    """

    tolerance: float = HALF_STOP
    prior_std: float = 0.1
    assumed_stops: float = 1.0
    ratio_pixels: int = 8_000
    ratio_lower: float = 0.15
    ratio_upper: float = 0.9
    max_iter: int = 4
    tol: float = 1e-3

    def __post_init__(self) -> None:
        check_threshold(self.tol, "tol")
        check_threshold(self.tolerance, "tolerance")
        check_threshold(self.prior_std, "prior_std")
        check_threshold(self.assumed_stops, "assumed_stops")
        check_int(self.ratio_pixels, "ratio_pixels", 1)
        check_int(self.max_iter, "max_iter", 1)
        if not 0.0 <= self.ratio_lower < self.ratio_upper <= 1.0:
            raise ValueError(
                "Expected 0 <= `ratio_lower` < `ratio_upper` <= 1, but got "
                f"{self.ratio_lower!r} and {self.ratio_upper!r}."
            )


_OPTION_CLASSES = {"code": CodeFitOptions, "linearity": LinearityFitOptions}


def _field_names(cls: type) -> set[str]:
    return {f.name for f in fields(cls)}


def options_from_keywords(
    method: str,
    options: FitOptions | None = None,
    time_options: TimeOptions | None = None,
    **keywords: Any,
) -> tuple[FitOptions, TimeOptions]:
    r"""The options objects of a fit, from an options object and/or loose keywords.

    Keywords name fields of the method's options class or of :class:`TimeOptions` (the
    fit's keyword arguments before the options objects, e.g. ``steps=30``,
    ``n_knots=16``, ``prior_std=0.05``); they override the objects' fields. An option of
    the other method raises :class:`ValueError`, an unknown one :class:`TypeError`.

    :param str method: ``"code"`` or ``"linearity"``.
    :param FitOptions, None options: the method's options (default: its defaults).
    :param TimeOptions, None time_options: the time options (default: defaults).
    :param keywords: fields to set.
    :return: (tuple) ``(options, time_options)``.

    |sep|

    :Example:

    >>> opts, times = options_from_keywords("code", steps=10, prior_std=0.05)
    >>> opts.steps, opts.n_knots, times.prior_std
    (10, 32, 0.05)
    """
    check_in(method, "method", METHODS)
    cls = _OPTION_CLASSES[method]
    if options is None:
        options = cls()
    elif not isinstance(options, cls):
        raise TypeError(
            f"Expected `options` to be a {cls.__name__} for method={method!r}, but got "
            f"{type(options).__name__}."
        )
    if time_options is None:
        time_options = TimeOptions()
    elif not isinstance(time_options, TimeOptions):
        raise TypeError(
            f"Expected `time_options` to be a TimeOptions, but got "
            f"{type(time_options).__name__}."
        )
    fit_fields, time_fields = _field_names(cls), _field_names(TimeOptions)
    other = _OPTION_CLASSES["linearity" if method == "code" else "code"]
    for key in keywords:
        if key in fit_fields or key in time_fields:
            continue
        if key in _field_names(other):
            raise ValueError(
                f"Expected `{key}` only with method={other().method!r} (a field of "
                f"{other.__name__}), but got it with method={method!r}."
            )
        raise TypeError(f"fit_icrf() got an unexpected option `{key}`.")
    fit_updates = {k: v for k, v in keywords.items() if k in fit_fields}
    time_updates = {k: v for k, v in keywords.items() if k in time_fields}
    if fit_updates:
        options = replace(options, **fit_updates)
    if time_updates:
        time_options = replace(time_options, **time_updates)
    return options, time_options
