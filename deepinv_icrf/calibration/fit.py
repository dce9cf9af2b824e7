r"""The one-call ICRF fit: a stack of bracketed images in, a fitted :class:`~deepinv_icrf.models.ICRF` out.

Two methods:

- ``"code"`` (default): the code-domain maximum-likelihood fit of
  :func:`deepinv_icrf.functional.fit_code_domain` (per-pixel radiance, monotone response,
  clipped codes censored, noise level estimated from the stack) on a stratified sample of
  pixel positions. Unbiased under code noise and about a second on a 9-exposure 512x512 RGB
  stack.
- ``"linearity"``: the clair-torch objective (radiometric linearity plus curve penalties)
  minimised with Adam, on the joint code histograms of the whole stack
  (:func:`deepinv_icrf.functional.build_linearity_histogram`) when it holds integer codes, on
  sampled pixels otherwise.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf._checks import check_in, check_int
from deepinv_icrf.bracket import as_stack_tensor, check_exposure_times, integer_stack
from deepinv_icrf.functional.codefit import (
    CLIP_PRIORITIES,
    fit_code_domain,
    stratified_pixel_sample,
)
from deepinv_icrf.functional.histogram import (
    ContinuousInputError,
    build_linearity_histogram,
    linearity_from_histogram,
)
from deepinv_icrf.functional.interp import interp_curve
from deepinv_icrf.functional.linearity import radiometric_linearity
from deepinv_icrf.functional.penalties import (
    monotonicity_penalty,
    range_penalty,
    smoothness_penalty,
)
from deepinv_icrf.models import ICRF

__all__ = ["fit_icrf", "FitReport", "METHODS"]

#: Fitting methods of :func:`fit_icrf`.
METHODS = ("code", "linearity")
#: Default number of steps of each method (code: most Gauss-Newton iterations).
_DEFAULT_STEPS = {"code": 30, "linearity": 300}
#: Default number of pixel positions of each method (linearity: all, through histograms).
_DEFAULT_PIXELS = {"code": 5_000, "linearity": None}
#: Pixel positions drawn at random before the stratified selection, per wanted position.
_CANDIDATES_PER_PIXEL = 8
#: Message when nothing in a stack constrains the curve.
_NO_PIXEL = (
    "Found no valid pixel pair in `stack` (all saturated or black, or exposure ratios below "
    "the threshold): nothing constrains the curve."
)
#: Pixel positions of the dense linearity path (continuous input) when not given.
_DENSE_PIXELS = 4_000


@dataclass
class FitReport:
    r"""How an ICRF was fitted, attached to the returned model as ``icrf.fit_report``.

    :param str method: the method (``"code"``, ``"linearity"``, or a refinement of one).
    :param int steps: iterations (code) or optimiser steps (linearity) run.
    :param float wall_time_s: wall time of the fit in seconds.
    :param float, None final_loss: the final objective (code: mean censored NLL over channels;
        linearity: the total loss).
    :param torch.Tensor, None exposure_times: the exposure times used, ``(N,)`` or ``(B, N)``
        (the refined ones after an exposure refinement).
    :param torch.Tensor, None nominal_exposure_times: the times as given (``None`` if none).
    :param torch.Tensor, None band: the confidence band of the curve ``(2, C, L)`` (lower and
        upper edges, as ``icrf.band``), filled by ``fit_icrf(..., band=True)``; ``None``
        otherwise.
    :param dict extra: method-specific values (code: ``sigma``, the estimated code noise per
        channel, and ``pixels``).
    """

    method: str
    steps: int
    wall_time_s: float
    final_loss: float | None
    exposure_times: Tensor | None
    nominal_exposure_times: Tensor | None
    band: Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _code_sample(
    stack: np.ndarray | Tensor,
    bits: int | None,
    n_pixels: int,
    generator: torch.Generator,
    clip_priority: str = "stratum",
) -> tuple[list[Tensor], int]:
    r"""Stratified pixel sample of every stack of a batch, as ``(C, P_b, N)`` float tensors.

    Integer arrays are indexed before any conversion (only the candidates are converted).
    """
    if isinstance(stack, np.ndarray) and bits is not None:
        n, h, w, c = stack.shape
        flat = stack.reshape(n, h * w, c)
        m = min(h * w, _CANDIDATES_PER_PIXEL * n_pixels)
        cand = torch.randperm(h * w, generator=generator)[:m].numpy()
        picked = flat[:, np.sort(cand), :].astype(np.float32) / (2**bits - 1)
        stacks = [
            torch.from_numpy(picked).permute(0, 2, 1).unsqueeze(2)
        ]  # (N, C, 1, M)
    else:
        y = stack
        b, n, c, h, w = y.shape
        m = min(h * w, _CANDIDATES_PER_PIXEL * n_pixels)
        stacks = []
        for k in range(b):
            cand = torch.randperm(h * w, generator=generator)[:m].sort().values
            flat = y[k].reshape(n, c, h * w).index_select(-1, cand.to(y.device))
            stacks.append(flat.unsqueeze(2))
    out = []
    for s in stacks:
        idx = stratified_pixel_sample(
            s,
            n_pixels,
            bit_depth=bits,
            generator=generator,
            clip_priority=clip_priority,
        )
        out.append(s[:, :, 0, :].index_select(-1, idx).permute(1, 2, 0))  # (C, P, N)
    return out, c


@contextlib.contextmanager
def _small_problem_threads(device: torch.device) -> Iterator[None]:
    r"""Run the code fit single-threaded on CPU.

    Its tensors are small (a few hundred thousand values): intra-op threads cost more in
    synchronisation than they save, and on a busy machine they make the fit many times
    slower. The previous thread count is restored afterwards.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _initial_curve(init: str | Tensor, channels: int, n_points: int) -> Tensor | None:
    if isinstance(init, Tensor):
        return init.detach().to(torch.float64).reshape(-1, init.shape[-1])
    check_in(init, "init", ("gamma", "identity"))
    grid = torch.linspace(0.0, 1.0, n_points, dtype=torch.float64)
    return None if init == "gamma" else grid.expand(channels, n_points)


#: Default ``outlier_threshold`` of :func:`fit_icrf` (noise stds).
_DEFAULT_OUTLIER_THRESHOLD = 5.0


def fit_icrf(
    stack: np.ndarray | Tensor | str | os.PathLike,
    exposure_times: Tensor | np.ndarray | list[float] | None = None,
    *,
    method: str = "code",
    n_points: int = 256,
    parameterization: str = "monotone",
    init: str | Tensor = "gamma",
    steps: int | None = None,
    lr: float = 0.05,
    max_pixels: int | None = None,
    smoothness_weight: float = 1e5,
    relative: bool = True,
    n_knots: int = 32,
    noise_sigma: float | None = None,
    clip_priority: str = "stratum",
    outlier_threshold: float | None = _DEFAULT_OUTLIER_THRESHOLD,
    refine_exposures: bool = False,
    band: bool = False,
    align: bool = False,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = True,
    callback: Callable[[int, Tensor, ICRF], None] | None = None,
    **refine_options: Any,
) -> ICRF:
    r"""Fit the inverse camera response of a bracketed stack of one static scene.

    ``method="code"`` (default) maximises the censored-Gaussian likelihood of the codes over a
    monotone response and one radiance per sampled pixel
    (:func:`deepinv_icrf.functional.fit_code_domain`, Gauss-Newton with the radiances
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
    :math:`f(0) = 0`, :math:`f(1) = 1`, and attach a :class:`FitReport` as
    ``icrf.fit_report``.

    :param numpy.ndarray, torch.Tensor, str, os.PathLike stack: ``uint8``/``uint16`` array
        ``(N, H, W, C)`` as image readers return it, a float tensor ``(N, C, H, W)`` in
        ``[0, 1]``, a batch ``(B, N, C, H, W)`` of stacks of the same camera, or a folder of
        bracketed photos (read with :func:`deepinv_icrf.data.read_exposure_folder`).
    :param torch.Tensor, list, None exposure_times: the ``N`` exposure times in seconds, any
        order (``(B, N)`` for a batch); optional for a folder (then read from it).
    :param str method: ``"code"`` (default) or ``"linearity"``.
    :param int n_points: samples of the fitted curve (default 256).
    :param str parameterization: ``"monotone"`` (default) or ``"free"`` (of the returned model;
        the linearity fit optimises in it).
    :param str, torch.Tensor init: initial curve, ``"gamma"`` (default, :math:`y^{2.2}`),
        ``"identity"`` or a tensor ``(C, L)``.
    :param int, None steps: code: most Gauss-Newton iterations (default 30, stops earlier on
        convergence); linearity: Adam steps (default 300).
    :param float lr: Adam learning rate of the linearity fit (default 0.05).
    :param int, None max_pixels: pixel positions used per stack: code default 5000
        (stratified by brightness); linearity default all (histograms; 4000 sampled for
        continuous input).
    :param float smoothness_weight: weight :math:`\delta` of the smoothness penalty of the
        linearity fit (default 1e5).
    :param bool relative: relative (default) or absolute linearity residuals.
    :param int n_knots: knots of the response of the code fit (default 32).
    :param float, None noise_sigma: code noise std for the code fit; ``None`` (default)
        estimates it from the stack.
    :param str clip_priority: how the code fit's pixel sample treats positions with clipped
        codes: ``"stratum"`` (default), ``"global"`` or ``"none"``, see
        :func:`~deepinv_icrf.functional.stratified_pixel_sample`.
    :param float, None outlier_threshold: code fit: leave out codes the fitted response
        misses by more than this many noise stds (moving objects, misregistration), see
        :func:`~deepinv_icrf.functional.fit_code_domain`; the fraction left out is in
        ``fit_report.extra["outliers"]``. Default 5: on a static scene with Gaussian noise
        nothing is left out and the fit is the plain one. ``None``: keep every code. Only the
        code fit uses it (``method="linearity"`` accepts the default or ``None``).
    :param bool refine_exposures: refine the exposure times with the curve (default False),
        through :func:`deepinv_icrf.calibration.refine.fit_refined`; the refined times are in
        ``icrf.fit_report.exposure_times``.
    :param bool band: also estimate the 95% confidence band of the curve (default False),
        with :func:`deepinv_icrf.calibration.bands.icrf_confidence_band` (refits without band or
        refinement, at the refined times after a refinement); stored in ``icrf.band``
        ``(2, C, L)`` (saved by :meth:`~deepinv_icrf.models.ICRF.save`) and
        ``icrf.fit_report.band``.
    :param bool align: first align the exposures of a handheld bracket (integer
        translations, :func:`~deepinv_icrf.data.align_exposures`, cropped to the region every
        exposure covers) and fit the aligned stack (refinement and band included); the shifts
        ``(dy, dx)`` per exposure are in ``fit_report.extra["shifts"]``. One stack only (a
        batch raises :class:`ValueError`). Default False.
    :param str, torch.device device: where to fit (default: the stack's device).
    :param int seed: seed of the pixel sampling (default 0).
    :param bool progress: show a tqdm progress bar (default True).
    :param Callable callback: linearity only: called as ``callback(step, loss, icrf)`` after
        every step.
    :param refine_options: options of :func:`~deepinv_icrf.calibration.refine.fit_refined`
        (``prior_std``, ``max_iter``, ...), only with ``refine_exposures=True``.
    :return: (:class:`~deepinv_icrf.models.ICRF`) the fitted ICRF, on ``device``, in eval mode,
        with ``fit_report``.

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
    >>> icrf.fit_report.method
    'code'
    """
    if isinstance(stack, (str, os.PathLike)):
        from deepinv_icrf.data import read_exposure_folder

        folder = read_exposure_folder(stack)
        stack = folder.images
        if exposure_times is None:
            exposure_times = folder.exposure_times
    check_in(method, "method", METHODS)
    check_in(parameterization, "parameterization", ("monotone", "free"))
    shifts = None
    if not isinstance(align, bool):
        raise TypeError(f"Expected `align` to be a bool, but got {align!r}.")
    if align:
        # the aligned stack is what the refinement and the band's refits see
        from deepinv_icrf.data.align import align_exposures

        stack, shifts = align_exposures(
            stack, exposure_times=_single_times(exposure_times)
        )
    # the fit's own options, passed on to the refinement and to the band's refits
    options = dict(
        method=method,
        n_points=n_points,
        parameterization=parameterization,
        init=init,
        steps=steps,
        lr=lr,
        max_pixels=max_pixels,
        smoothness_weight=smoothness_weight,
        relative=relative,
        n_knots=n_knots,
        noise_sigma=noise_sigma,
        clip_priority=clip_priority,
        outlier_threshold=outlier_threshold,
    )
    if refine_exposures:
        try:
            from deepinv_icrf.calibration.refine import fit_refined
        # pragma: no cover - the module ships with the package
        except ImportError as err:
            raise NotImplementedError(
                "refine_exposures=True needs deepinv_icrf.calibration.refine, which is missing."
            ) from err
        extra = {} if callback is None else {"callback": callback}
        icrf = fit_refined(
            stack,
            exposure_times,
            device=device,
            seed=seed,
            progress=progress,
            **options,
            **extra,
            **refine_options,
        )
        if band:
            _attach_band(
                icrf, stack, icrf.fit_report.exposure_times, options, device, seed
            )
        _record_shifts(icrf, shifts)
        return icrf
    if refine_options:
        raise TypeError(
            f"fit_icrf() got unexpected option(s) {sorted(refine_options)} (they are only "
            "accepted with refine_exposures=True, for fit_refined)."
        )
    steps = _DEFAULT_STEPS[method] if steps is None else check_int(steps, "steps", 1)
    if max_pixels is not None:
        check_int(max_pixels, "max_pixels", 1)
    check_int(n_points, "n_points", 2)
    check_int(n_knots, "n_knots", 4)
    check_in(clip_priority, "clip_priority", CLIP_PRIORITIES)
    if method != "code" and clip_priority != "stratum":
        raise ValueError(
            f"Expected `clip_priority` only with method='code' (it orders the code fit's "
            f"pixel sample), but got clip_priority={clip_priority!r} with method={method!r}."
        )
    if outlier_threshold not in (None, _DEFAULT_OUTLIER_THRESHOLD) and method != "code":
        raise ValueError(
            "Expected `outlier_threshold` only with method='code' (it leaves codes out of the "
            f"code fit), but got outlier_threshold={outlier_threshold!r} with "
            f"method={method!r}."
        )
    if noise_sigma is not None and not (math.isfinite(noise_sigma) and noise_sigma > 0):
        raise ValueError(
            f"Expected `noise_sigma` > 0 or None, but got {noise_sigma!r}."
        )
    if method == "code" and callback is not None:
        raise ValueError(
            "Expected `callback` only with method='linearity' (the code fit is a few "
            "Gauss-Newton iterations), but got one with method='code'."
        )
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    if method == "code":
        icrf, report = _fit_code(
            stack,
            exposure_times,
            n_points=n_points,
            parameterization=parameterization,
            init=init,
            steps=steps,
            max_pixels=max_pixels or _DEFAULT_PIXELS["code"],
            n_knots=n_knots,
            noise_sigma=noise_sigma,
            clip_priority=clip_priority,
            outlier_threshold=outlier_threshold,
            device=device,
            generator=generator,
            progress=progress,
        )
    else:
        icrf, report = _fit_linearity(
            stack,
            exposure_times,
            n_points=n_points,
            parameterization=parameterization,
            init=init,
            steps=steps,
            lr=lr,
            max_pixels=max_pixels,
            smoothness_weight=smoothness_weight,
            relative=relative,
            device=device,
            generator=generator,
            progress=progress,
            callback=callback,
        )
    report.wall_time_s = time.perf_counter() - start
    icrf.fit_report = report
    icrf.eval()
    if band:
        _attach_band(icrf, stack, report.exposure_times, options, device, seed)
    _record_shifts(icrf, shifts)
    return icrf


def _single_times(exposure_times: object) -> object:
    r"""The exposure times of one stack, to order its exposures for alignment (``None`` when
    they are not one time per exposure; the fit checks them)."""
    if exposure_times is None:
        return None
    times = np.asarray(
        (
            exposure_times.detach().cpu()
            if isinstance(exposure_times, Tensor)
            else exposure_times
        ),
        dtype=np.float64,
    )
    return times if times.ndim == 1 else None


def _record_shifts(icrf: ICRF, shifts: Tensor | None) -> None:
    r"""Store the alignment shifts ``(dy, dx)`` per exposure in the fit report."""
    report = getattr(icrf, "fit_report", None)
    if shifts is not None and report is not None:
        report.extra["shifts"] = shifts.tolist()


def _attach_band(
    icrf: ICRF,
    stack: np.ndarray | Tensor,
    times: Tensor | None,
    options: dict[str, Any],
    device: str | torch.device | None,
    seed: int,
) -> None:
    r"""Estimate the confidence band of a fit and store it on the model and its report."""
    from deepinv_icrf.calibration.bands import icrf_confidence_band

    if times is None or times.ndim != 1:
        raise ValueError(
            "Expected one stack (not a batch) with exposure times for band=True, but got "
            f"times of shape {None if times is None else tuple(times.shape)}."
        )
    options = {k: v for k, v in options.items() if k != "init"}
    if device is not None:
        options["device"] = device
    report = getattr(icrf, "fit_report", None)
    extra = getattr(report, "extra", None) or {}
    icrf_confidence_band(
        stack,
        times,
        icrf,
        seed=seed,
        fit_options=options,
        store=True,
        exponent_std=float(extra.get("exponent_std", 0.0)),
    )
    if report is not None:
        report.band = icrf.band


def _fit_code(
    stack: np.ndarray | Tensor,
    exposure_times: object,
    *,
    n_points: int,
    parameterization: str,
    init: str | Tensor,
    steps: int,
    max_pixels: int,
    n_knots: int,
    noise_sigma: float | None,
    clip_priority: str,
    outlier_threshold: float | None,
    device: str | torch.device | None,
    generator: torch.Generator,
    progress: bool,
) -> tuple[ICRF, FitReport]:
    from tqdm.auto import tqdm

    if isinstance(stack, np.ndarray) and stack.dtype in (np.uint8, np.uint16):
        stack = integer_stack(stack, "stack")
        bits = 8 if stack.dtype == np.uint8 else 16
        batch, n = 1, stack.shape[0]
        stack_device = torch.device("cpu")
    else:
        stack, bits = as_stack_tensor(stack)
        from deepinv_icrf.functional.histogram import detect_bit_depth

        batch, n = stack.shape[:2]
        bits = detect_bit_depth(stack) if bits is None else bits
        stack_device = stack.device
    times = check_exposure_times(exposure_times, n, batch)
    device = torch.device(device) if device is not None else stack_device
    samples, channels = _code_sample(
        stack, bits, max_pixels, generator, clip_priority=clip_priority
    )
    log_times = torch.cat(
        [times[k].log().expand(s.shape[1], n) for k, s in enumerate(samples)]
    )
    y = torch.cat(samples, dim=1).to(device=device, dtype=torch.float32)
    if y.shape[1] == 0:
        raise ValueError(_NO_PIXEL)
    init_curve = _initial_curve(init, channels, n_points)
    if init_curve is not None:
        init_curve = init_curve.to(device=device, dtype=torch.float32)

    bar = tqdm(total=steps, desc="fit_icrf", disable=not progress, leave=False)

    def _tick(iteration: int, change: float) -> None:
        bar.update(1)
        bar.set_postfix(change=f"{change:.2g}")

    with _small_problem_threads(device):
        try:
            result = fit_code_domain(
                y,
                log_times.to(device=device, dtype=torch.float32),
                bit_depth=bits,
                n_points=n_points,
                n_knots=n_knots,
                iterations=steps,
                sigma=noise_sigma,
                init_curve=init_curve,
                outlier_threshold=outlier_threshold,
                callback=_tick,
            )
        finally:
            bar.close()
    icrf = ICRF(
        channels=channels,
        n_points=n_points,
        parameterization=parameterization,
        init=result.curve.detach().to("cpu", torch.float64),
        bit_depth=bits if bits is not None else 8,
    ).to(device)
    report = FitReport(
        method="code",
        steps=result.iterations,
        wall_time_s=0.0,
        final_loss=float(result.nll.mean()),
        exposure_times=times[0].clone() if batch == 1 else times.clone(),
        nominal_exposure_times=times[0].clone() if batch == 1 else times.clone(),
        extra={"sigma": result.sigma.tolist(), "pixels": int(y.shape[1])},
    )
    if result.outlier_fraction is not None:
        report.extra["outliers"] = result.outlier_fraction.tolist()
    return icrf, report


def _fit_linearity(
    stack: np.ndarray | Tensor,
    exposure_times: object,
    *,
    n_points: int,
    parameterization: str,
    init: str | Tensor,
    steps: int,
    lr: float,
    max_pixels: int | None,
    smoothness_weight: float,
    relative: bool,
    device: str | torch.device | None,
    generator: torch.Generator,
    progress: bool,
    callback: Callable[[int, Tensor, ICRF], None] | None,
) -> tuple[ICRF, FitReport]:
    from tqdm.auto import tqdm

    y, bits = as_stack_tensor(stack)
    batch, n, channels, h, w = y.shape
    times = check_exposure_times(exposure_times, n, batch)
    device = torch.device(device) if device is not None else y.device
    if max_pixels is not None and h * w > max_pixels:
        idx = torch.randperm(h * w, generator=generator)[:max_pixels].to(y.device)
        y = y.reshape(batch, n, channels, 1, h * w).index_select(-1, idx)
    y = y.to(device=device, dtype=torch.float32)
    t = times.to(device=device, dtype=torch.float32)
    try:
        hist = build_linearity_histogram(y, t)
        bits = hist.bit_depth
        if hist.n_entries == 0 or not bool((hist.weight_sum > 0).any()):
            raise ValueError(_NO_PIXEL)

        def linearity(curve: Tensor) -> Tensor:
            return linearity_from_histogram(curve, hist, relative=relative)

    except ContinuousInputError:
        b, _, _, hh, ww = y.shape
        if hh * ww > _DENSE_PIXELS:
            idx = torch.randperm(hh * ww, generator=generator)[:_DENSE_PIXELS]
            y = y.reshape(b, n, channels, 1, hh * ww).index_select(-1, idx.to(device))

        def linearity(curve: Tensor) -> Tensor:
            return radiometric_linearity(
                y, interp_curve(y, curve, channel_dim=-3), t, relative=relative
            )

    icrf = ICRF(
        channels=channels,
        n_points=n_points,
        parameterization=parameterization,
        init=init,
        bit_depth=bits if bits is not None else 8,
    ).to(device)
    optimizer = torch.optim.Adam(icrf.parameters(), lr=lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=steps, eta_min=lr * 0.02
    )
    icrf.train()
    total = torch.zeros(())
    bar = tqdm(range(steps), desc="fit_icrf", disable=not progress, leave=False)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        curve = icrf.curve
        total = linearity(curve).sum() + range_penalty(curve).sum()
        if parameterization == "free":
            total = total + monotonicity_penalty(curve).sum()
        if smoothness_weight > 0:
            total = total + smoothness_weight * smoothness_penalty(curve).sum()
        total.backward()
        optimizer.step()
        scheduler.step()
        if callback is not None:
            callback(step, total.detach(), icrf)
        if progress and (step % 25 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{float(total.detach()):.4g}")
    report = FitReport(
        method="linearity",
        steps=steps,
        wall_time_s=0.0,
        final_loss=float(total.detach()),
        exposure_times=times[0].clone() if batch == 1 else times.clone(),
        nominal_exposure_times=times[0].clone() if batch == 1 else times.clone(),
    )
    return icrf, report
