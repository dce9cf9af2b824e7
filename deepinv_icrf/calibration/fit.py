r"""The one-call ICRF fit: a stack of bracketed images in, a fitted
:class:`~deepinv_icrf.models.ICRF` out.

:func:`fit_icrf` checks the input once (:class:`~deepinv_icrf.bracket.Bracket`), fits the
curve (:mod:`deepinv_icrf.calibration.core`), checks the listed exposure times against the
images and refines them when they disagree (:mod:`deepinv_icrf.calibration.times`), and
optionally estimates a confidence band (:mod:`deepinv_icrf.calibration.bands`).
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf.bracket import Bracket
from deepinv_icrf.calibration.alternation import refine_by_alternation
from deepinv_icrf.calibration.bands import icrf_confidence_band
from deepinv_icrf.calibration.core import fit_once
from deepinv_icrf.calibration.options import (
    METHODS,
    CodeFitOptions,
    FitOptions,
    LinearityFitOptions,
    TimeOptions,
    options_from_keywords,
)
from deepinv_icrf.calibration.report import FitReport, Refinement
from deepinv_icrf.calibration.times import check_times, refine_code_fit
from deepinv_icrf.functional.exposure_order import ORDER_VALUES, check_exposure_order
from deepinv_icrf.functional.times import TimeCheck
from deepinv_icrf.models.icrf_base import ICRFBase

__all__ = ["fit_icrf", "FitReport", "METHODS", "REFINE_MODES", "SEED_RANGE"]

#: Values of ``refine_exposures``.
REFINE_MODES = (True, False, "auto")
#: Smallest and largest ``seed``: non-negative (as numpy's), and below 2**63 so that the
#: seeds derived from it (``seed + k`` of the bootstrap refits) stay within what
#: :meth:`torch.Generator.manual_seed` takes.
SEED_RANGE = (0, 2**63 - 1)


def fit_icrf(
    stack: np.ndarray | Tensor | str | os.PathLike,
    exposure_times: Tensor | np.ndarray | list[float] | None = None,
    *,
    method: str = "code",
    options: CodeFitOptions | LinearityFitOptions | None = None,
    refine_exposures: bool | str = "auto",
    time_options: TimeOptions | None = None,
    band: bool = False,
    align: bool = False,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    reconstructor: bool = True,
    **keywords: Any,
) -> ICRFBase:
    r"""Fit the inverse camera response of a bracketed stack of one static scene.

    ``method="code"`` (default) maximises the censored-Gaussian likelihood of the codes over a
    monotone response (with a fitted floor, the code of no light) and one radiance per sampled
    pixel (:func:`deepinv_icrf.functional.fit_code_domain`, Gauss-Newton with the radiances
    eliminated, noise level estimated from the stack):

    .. math::

        \min_{R,\, s} \sum_{c,p,k} \ell\big(Y_{c,p,k},\, R_c(s_{c,p} + \log t_k)\big),
        \qquad \mathrm{ICRF}_c = R_c^{-1},

    with :math:`\ell` the Tobit NLL of :func:`deepinv_icrf.functional.censored_code_nll`.
    ``method="linearity"`` minimises the clair-torch objective over the ICRF :math:`f`,

    .. math::

        \mathcal{L}(f) = \sum_c L_c(f) + \mathrm{range}(f) [+ \mathrm{mono}(f)]
        + \delta\,\mathrm{smooth}(f),

    with the radiometric linearity :math:`L_c` evaluated on the joint code histograms of the
    whole stack (Adam, cosine learning-rate decay). Both return a monotone ICRF with
    :math:`f(0) = 0`, :math:`f(1) = 1`, and attach a
    :class:`~deepinv_icrf.calibration.FitReport` as ``icrf.fit_report``.

    **Exposure times** are checked against the images on every fit of one stack: the
    ratios of neighbouring exposures are measured through the fitted curve and a step off
    the listed one by more than half a stop is reported
    (``fit_report.time_check``, :func:`~deepinv_icrf.functional.check_exposure_ratios`).
    With ``refine_exposures="auto"`` (default) the times are then refined from the images
    (:mod:`deepinv_icrf.calibration.times`) and a :class:`UserWarning` names the frames;
    times that agree are kept as listed. ``True`` refines them in any case (cameras round
    times and drift by a few percent), ``False`` never.

    **Exposure**: a :class:`UserWarning` says when the photos never reach the top of the code
    range (the brightest code held, 0.01% of the codes aside, below 3/4 of it) or never go
    down to its bottom: the curve there is extrapolated, not measured
    (:func:`~deepinv_icrf.calibration.coverage.observed_code_range`).

    :param numpy.ndarray, torch.Tensor, str, os.PathLike stack: ``uint8``/``uint16`` array
        ``(N, H, W, C)`` as image readers return it, a float tensor ``(N, C, H, W)`` in
        ``[0, 1]``, a batch ``(B, N, C, H, W)`` of stacks of the same camera, or a folder of
        bracketed photos (read with :func:`deepinv_icrf.data.read_exposure_folder`).
    :param torch.Tensor, list, None exposure_times: the ``N`` exposure times in seconds, any
        order (``(B, N)`` for a batch); optional for a folder (then read from it) and with
        ``refine_exposures=True`` (then assumed one stop apart in order of brightness, with
        a warning).
    :param str method: ``"code"`` (default) or ``"linearity"``.
    :param CodeFitOptions, LinearityFitOptions, None options: the method's options (default:
        its defaults), see :class:`~deepinv_icrf.calibration.CodeFitOptions` and
        :class:`~deepinv_icrf.calibration.LinearityFitOptions`.
    :param bool, str refine_exposures: ``"auto"`` (default), ``True`` or ``False`` (see
        above); the refined times are in ``icrf.fit_report.exposure_times``, the given ones
        in ``nominal_exposure_times``. One stack only.
    :param TimeOptions, None time_options: tolerance of the check and prior of the refinement
        (:class:`~deepinv_icrf.calibration.TimeOptions`).
    :param bool band: also estimate the 95% confidence band of the curve (default False),
        with :func:`deepinv_icrf.calibration.icrf_confidence_band` (refits at the fit's
        times, widened by the exponent the prior sets after a refinement); stored in
        ``icrf.band`` ``(2, C, L)`` (saved by :meth:`~deepinv_icrf.models.ICRF.save`) and
        ``icrf.fit_report.band``.
    :param bool align: first align the exposures of a handheld bracket (integer
        translations, :func:`~deepinv_icrf.data.align_exposures`, cropped to the region every
        exposure covers) and fit the aligned stack; the shifts ``(dy, dx)`` per exposure are
        in ``fit_report.shifts``. One stack only. Default False.
    :param str, torch.device device: where to fit (default: the stack's device).
    :param int seed: seed of the pixel sampling (default 0), an int in
        :math:`[0, 2^{63} - 1]` (:data:`SEED_RANGE`).
    :param bool progress: show a tqdm progress bar (default True).
    :param bool reconstructor: return an :class:`~deepinv_icrf.models.ICRF`, a deepinv
        reconstructor (default True), or with ``False`` the same fit as an
        :class:`~deepinv_icrf.models.icrf_base.ICRFBase`, a plain :class:`torch.nn.Module`
        with the same curve, methods and files: the fit then never imports deepinv, whose
        import (torchvision, ``torch._dynamo``) costs 1.5-3 s (the command line's choice).
    :param keywords: fields of the options objects given one by one (``steps=30``,
        ``n_knots=16``, ``prior_std=0.05``, ...), as the fit took them before the options
        objects; see :func:`~deepinv_icrf.calibration.options.options_from_keywords`.
    :return: (:class:`~deepinv_icrf.models.ICRF`) the fitted ICRF, on ``device``, in eval mode,
        with ``fit_report`` (an :class:`~deepinv_icrf.models.icrf_base.ICRFBase` with
        ``reconstructor=False``).
    :raises ValueError: besides bad values and shapes, for a stack that cannot constrain a
        curve: fewer usable pixel positions than the curve has knots, frames that are all one
        image, listed times spanning less than ``time_options.tolerance`` or in an order the
        images contradict
        (:func:`~deepinv_icrf.functional.exposure_order.check_exposure_order`), or images
        showing less exposure change than that tolerance (see docs/bad_inputs.rst).

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf import fit_icrf
    >>> from deepinv_icrf.data import demo_scene, demo_exposure_times
    >>> from deepinv_icrf.physics import ExposureStack, GammaResponse
    >>> t = demo_exposure_times(5, shortest=1.0)
    >>> y = ExposureStack(t, response=GammaResponse(2.4))(demo_scene(32, 40))
    >>> icrf = fit_icrf(y[0], t, progress=False)
    >>> truth = GammaResponse(2.4).icrf_curve(256)
    >>> bool((icrf.curve.detach()[:, 8:248] - truth[:, 8:248].float()).abs().max() < 0.02)
    True
    >>> icrf.fit_report.method, icrf.fit_report.time_check.consistent
    ('code', True)
    """
    start = time.perf_counter()
    if isinstance(stack, (str, os.PathLike)):
        from deepinv_icrf.data import read_exposure_folder

        folder = read_exposure_folder(stack)
        stack = folder.images
        if exposure_times is None:
            exposure_times = folder.exposure_times
    options, time_options = options_from_keywords(
        method, options, time_options, **keywords
    )
    if not (isinstance(refine_exposures, bool) or refine_exposures == "auto"):
        raise ValueError(
            "Expected `refine_exposures` to be True, False or 'auto', but got "
            f"{refine_exposures!r}."
        )
    for name, value in (
        ("band", band),
        ("align", align),
        ("progress", progress),
        ("reconstructor", reconstructor),
    ):
        if not isinstance(value, bool):
            raise TypeError(f"Expected `{name}` to be a bool, but got {value!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"Expected `seed` to be an int, but got {seed!r}.")
    if not SEED_RANGE[0] <= seed <= SEED_RANGE[1]:
        raise ValueError(
            f"Expected `seed` to be an int in [0, 2**63 - 1], but got {seed}."
        )
    bracket = Bracket.from_input(
        stack, exposure_times, require_times=refine_exposures is not True
    )
    shifts = None
    if align:
        from deepinv_icrf.data.align import align_exposures

        bracket.single()
        times = bracket.exposure_times
        aligned, shifts = align_exposures(
            bracket.stack_codes(),
            exposure_times=None if times is None else times[0].numpy(),
        )
        bracket = Bracket.from_input(
            aligned, times, require_times=refine_exposures is not True
        )
    if bracket.batch > 1 and refine_exposures is True:
        raise ValueError(
            "Expected one stack (not a batch) with refine_exposures=True, but got a batch of "
            f"{bracket.batch} stacks."
        )
    if bracket.batch > 1 and band:
        raise ValueError(
            f"Expected one stack (not a batch) for band=True, but got {bracket.batch}."
        )
    _check_frames(bracket, time_options.tolerance)
    icrf, report = _fit_with_times(
        bracket, options, time_options, refine_exposures, device, seed, progress
    )
    # after the fit: a stack the fit refuses gets its error alone
    report.observed_code_range = _observed_codes(bracket)
    if band:
        _attach_band(icrf, report, bracket, options, device, seed)
    if shifts is not None:
        report.shifts = shifts.tolist()
    report.wall_time_s = time.perf_counter() - start
    icrf.fit_report = report
    if not reconstructor:
        return icrf
    from deepinv_icrf.models.icrf import ICRF  # imports deepinv

    return ICRF.from_base(icrf)


def _observed_codes(bracket: Bracket) -> list[list[float]]:
    r"""The codes the photos hold per channel (the fit report records them); a warning when
    they leave the top or the bottom of the curve unmeasured."""
    from deepinv_icrf.calibration.coverage import (
        extrapolation_note,
        observed_code_range,
    )

    bits = bracket.bit_depth
    observed = observed_code_range(bracket.codes, bits).round(4).tolist()
    note = extrapolation_note(observed, bits)
    if note:
        warnings.warn(f"{note}.", UserWarning, stacklevel=3)
    return observed


def _fit_with_times(
    bracket: Bracket,
    options: FitOptions,
    time_options: TimeOptions,
    refine: bool | str,
    device: str | torch.device | None,
    seed: int,
    progress: bool,
) -> tuple[ICRFBase, FitReport]:
    r"""The check of the listed times, then the fit: at the listed times when they agree
    with the images (or ``refine_exposures=False``), at the times the check implies when
    they do not (``"auto"``: only the disagreeing steps change), or with every time
    refined jointly (``True``)."""
    listed = None if bracket.exposure_times is None else bracket.exposure_times[0]
    if listed is None:  # refine_exposures=True without times: assumed spacing
        return _refine(
            bracket, None, None, options, time_options, device, seed, progress
        )
    if bracket.batch > 1:  # a batch: one time per stack and exposure, not checked
        icrf, report, _ = fit_once(
            bracket.codes, bracket.exposure_times, options, device=device, seed=seed
        )
        return icrf, report
    try:
        check, _ = check_times(bracket, listed, time_options, device=device, seed=seed)
    except ValueError:
        # the check's quick code fit refused the stack: say it in the chosen method's words
        fit_once(bracket.codes, listed.unsqueeze(0), options, device=device, seed=seed)
        raise
    _check_exposure_change(check)
    if refine is True:
        icrf, report = _refine(
            bracket, listed, check, options, time_options, device, seed, progress
        )
    else:
        corrected = refine == "auto" and not check.consistent
        times = check.implied if corrected else listed
        icrf, report, _ = fit_once(
            bracket.codes,
            times.unsqueeze(0),
            options,
            device=device,
            seed=seed,
            progress=progress,
        )
        if corrected:
            # the listed ratios kept where they agree: the exponent is the listed times'
            report.method += "+refined_exposures"
            report.nominal_exposure_times = listed.clone()
            report.refinement = Refinement(
                exponent=1.0, exponent_std=0.0, prior_std=time_options.prior_std
            )
    report.time_check = check
    if not check.consistent:
        action = (
            "the fit used times refined from the images (refine_exposures=False keeps the "
            "listed ones)"
            if refine in (True, "auto")
            else "the fit used them anyway (refine_exposures=False)"
        )
        warnings.warn(f"{check.describe()}\n{action}.", UserWarning, stacklevel=3)
    return icrf, report


def _check_frames(bracket: Bracket, tolerance: float) -> None:
    r"""Refuse a bracket that cannot constrain a curve: its frames all one image, its listed
    times spanning less than the time check's ``tolerance`` (log units), or listed in an
    order the images contradict
    (:func:`~deepinv_icrf.functional.exposure_order.check_exposure_order`; a fit at times
    in the wrong order is flat)."""
    codes = bracket.codes
    for b in range(bracket.batch):
        name = "stack" if bracket.batch == 1 else f"stack[{b}]"
        if isinstance(codes, np.ndarray):
            white = 2**bracket.bit_depth - 1
            frames = codes
            flat = codes.reshape(codes.shape[0], -1)
            y = torch.from_numpy(
                flat[:, :: max(1, flat.shape[1] // ORDER_VALUES)].astype(np.int32)
            )
        else:
            y, white = codes[b], 1.0
            frames = y
        if _all_one_image(frames) and _any_unclipped(
            frames[0], white
        ):  # else: NO_PIXEL
            raise ValueError(
                f"Expected the exposures of `{name}` to differ, but all {y.shape[0]} are the "
                "same image: one exposure repeated constrains no curve (the same file listed "
                "several times?)."
            )
        if bracket.exposure_times is None:
            continue
        times = bracket.exposure_times[b]
        span = float(times.max() / times.min())
        if span < math.exp(tolerance):
            raise ValueError(
                f"Expected the `exposure_times` of `{name}` to span more than "
                f"x{math.exp(tolerance):.2f} (the time check's tolerance), but they span "
                f"x{span:.2f} ({float(times.min()):.4g} to {float(times.max()):.4g} s): such "
                "times constrain no curve (rounded, or in the wrong unit?)."
            )
        check_exposure_order(y, times, white, f"`{name}`", warn=False)


#: Values compared at a time by the frame checks: no frame-sized temporaries (a 100 MP
#: frame's comparison mask alone is 300 MB).
_BLOCK_VALUES = 1 << 22


def _blocks(frame: np.ndarray | Tensor) -> Iterator[np.ndarray | Tensor]:
    flat = frame.reshape(-1)
    for start in range(0, flat.shape[0], _BLOCK_VALUES):
        yield flat[start : start + _BLOCK_VALUES]


def _all_one_image(frames: np.ndarray | Tensor) -> bool:
    r"""Whether every frame of ``frames`` ``(N, ...)`` equals the first, block by block."""
    equal = np.array_equal if isinstance(frames, np.ndarray) else torch.equal
    return all(
        all(
            equal(a, b) for a, b in zip(_blocks(frames[0]), _blocks(frame), strict=True)
        )
        for frame in frames[1:]
    )


def _any_unclipped(frame: np.ndarray | Tensor, white: float) -> bool:
    r"""Whether ``frame`` has a code strictly between black and ``white``."""
    return any(bool(((v > 0) & (v < white)).any()) for v in _blocks(frame))


def _check_exposure_change(check: TimeCheck) -> None:
    r"""Refuse a stack whose exposures the images show spanning less than the time check's
    tolerance (frames of one exposure listed at several times, times rounded to nearly one
    value): the ratios between them constrain no curve, and refining the times would divide
    by their (zero) spread."""
    implied = check.implied
    span = float(implied.max() / implied.min())
    if span < math.exp(check.tolerance):
        listed = float(check.listed.max() / check.listed.min())
        raise ValueError(
            "The exposures of `stack` barely differ: the images show the longest "
            f"x{span:.2f} the shortest (the listed times say x{listed:.2f}), less than the "
            f"time check's tolerance x{math.exp(check.tolerance):.2f}; such a bracket "
            "constrains no curve (frames of one exposure listed at several times?)."
        )


def _refine(
    bracket: Bracket,
    listed: Tensor | None,
    check: Any,
    options: FitOptions,
    time_options: TimeOptions,
    device: str | torch.device | None,
    seed: int,
    progress: bool,
) -> tuple[ICRFBase, FitReport]:
    # the code fit refines every time jointly, the linearity fit by alternation
    refine = (
        refine_code_fit
        if isinstance(options, CodeFitOptions)
        else refine_by_alternation
    )
    return refine(
        bracket,
        listed,
        check,
        options,
        time_options,
        device=device,
        seed=seed,
        progress=progress,
    )


def _attach_band(
    icrf: ICRFBase,
    report: FitReport,
    bracket: Bracket,
    options: FitOptions,
    device: str | torch.device | None,
    seed: int,
) -> None:
    r"""Estimate the confidence band of a fit and store it on the model and its report."""
    refinement = report.refinement
    exponent_std = 0.0 if refinement is None else refinement.exponent_std
    joint = None if refinement is None else refinement.joint_curve
    icrf_confidence_band(
        bracket.codes,
        report.exposure_times,
        icrf,
        seed=seed,
        options=options,
        device=device,
        store=True,
        exponent_std=exponent_std,
        other_estimates=() if joint is None else (joint,),
    )
    report.band = icrf.band
