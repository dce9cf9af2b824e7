r"""Confidence bands of a fitted ICRF by parametric (or pixel) bootstrap of the whole fit."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf._checks import check_in, check_int
from deepinv_icrf.bracket import Bracket
from deepinv_icrf.calibration.core import fit_once, random_positions
from deepinv_icrf.calibration.options import (
    CodeFitOptions,
    FitOptions,
    options_from_keywords,
)
from deepinv_icrf.functional.merge import weighted_radiance_merge
from deepinv_icrf.functional.response import quantize_to_bit_depth
from deepinv_icrf.functional.uncertainty import (
    bootstrap_band,
    jackknife_std,
    residual_code_std,
)
from deepinv_icrf.models.icrf_base import ICRFBase

__all__ = ["icrf_confidence_band", "BAND_METHODS"]

BAND_METHODS = ("parametric", "pixels")
# codes counted as well exposed when estimating the code noise and counting merged exposures
_NOISE_LOWER = 0.05
_NOISE_UPPER = 0.95
# range of the gamma exponents of the refits' starting curves (vary_init)
_INIT_GAMMAS = (1.5, 3.0)
#: Codes below the top that the top-sensitivity refit reads as clipped, at least: JPEG pulls
#: clipped highlights down by up to about ten 8-bit codes where they meet unclipped ones.
TOP_MARGIN_CODES = 10
#: The prior-sensitivity refit weakens the smoothness prior by this factor.
PRIOR_SENSITIVITY_FACTOR = 10.0


def _sample_positions(y: Tensor, max_pixels: int, generator: torch.Generator) -> Tensor:
    # (N, C, H, W) -> (N, C, 1, P) random pixel positions
    n, c, h, w = y.shape
    flat = y.reshape(n, c, 1, h * w)
    if h * w <= max_pixels:
        return flat
    idx = random_positions(h * w, max_pixels, generator).to(y.device)
    return flat.index_select(-1, idx)


def _report_sigma(icrf: ICRFBase) -> float:
    r"""The largest code noise the fit recorded (2/255 when it recorded none)."""
    sigma = getattr(getattr(icrf, "fit_report", None), "sigma", None)
    return max(sigma) if sigma else 2.0 / 255.0


def icrf_confidence_band(
    stack: np.ndarray | Tensor,
    exposure_times: Tensor | np.ndarray | list[float],
    icrf: ICRFBase,
    *,
    n_boot: int = 16,
    level: float = 0.95,
    method: str = "parametric",
    noise_std: float | None = None,
    max_pixels: int = 50_000,
    seed: int = 0,
    store: bool = True,
    vary_init: bool = False,
    exponent_std: float = 0.0,
    exposure_jackknife: bool = True,
    clip_sensitivity: bool = True,
    top_sensitivity: bool = True,
    prior_sensitivity: bool = True,
    options: FitOptions | None = None,
    device: str | torch.device | None = None,
    fit_options: dict[str, Any] | None = None,
    fit: Callable[..., ICRFBase] | None = None,
    other_estimates: Sequence[Tensor] = (),
) -> tuple[Tensor, Tensor]:
    r"""Per-code confidence band of a fitted ICRF, by bootstrapping the fit itself.

    ``"parametric"`` (default): the stack is explained by the fitted curve :math:`\hat f`,
    the merged radiance :math:`\hat E` of every pixel
    (:func:`~deepinv_icrf.functional.weighted_radiance_merge`) and the code noise
    :math:`\hat\sigma_c` measured from the residuals
    (:func:`~deepinv_icrf.functional.residual_code_std`, at least the quantisation std
    :math:`q / \sqrt{12}`); ``n_boot`` stacks

    .. math::

        y^*_k = \eta\big(\mathrm{clip}(\hat f^{-1}(\mathrm{clip}(t_k \hat E)) + \hat\sigma_c\,
        \varepsilon, 0, 1)\big), \qquad \varepsilon \sim \mathcal{N}(0, 1),

    (:math:`\eta` the quantisation of :attr:`ICRF.bit_depth`) are refitted with the same fit
    options, and :func:`~deepinv_icrf.functional.bootstrap_band` turns the refits into a band
    that covers both the bias and the spread of the fit. ``"pixels"``: the refits use pixel
    positions resampled with replacement (spread only, no bias).

    :param numpy.ndarray, torch.Tensor stack: the stack the ICRF was fitted on (as for
        :func:`~deepinv_icrf.calibration.fit_icrf`).
    :param torch.Tensor, list exposure_times: the times ``(N,)`` the fit used (the refined ones
        after exposure refinement).
    :param deepinv_icrf.models.ICRF icrf: the fitted ICRF.
    :param int n_boot: bootstrap refits, at least 2 (default 16).
    :param float level: coverage level in ``(0, 1)`` (default 0.95).
    :param str method: ``"parametric"`` (default) or ``"pixels"``.
    :param float, None noise_std: code noise std; ``None`` (default): measured from the stack.
    :param int max_pixels: pixel positions simulated or resampled (default 50000).
    :param int seed: seed of the sampling and of the noise; refit ``b`` uses ``seed + b``.
    :param bool store: also keep the band on the model, ``icrf.band`` ``(2, C, L)``, which
        :meth:`~deepinv_icrf.models.ICRF.save` writes (default True).
    :param bool vary_init: start refit :math:`b` from the gamma curve :math:`y^{\gamma_b}`,
        :math:`\gamma_b` spread over :math:`[1.5, 3]` (default False), so that the band also
        holds the optimisation error of a fit that depends on its start. Leave it off for the
        default code-domain fit: it converges from its own start, and a far start (gamma 3)
        can stall it, which would only widen the band.
    :param float exponent_std: std :math:`\sigma_g` of the exponent of the exposure times
        after a refinement (``fit_report.refinement.exponent_std``; default 0: times known).
        The images cannot tell :math:`f` from :math:`f^g` (with times :math:`t^g`), so the
        refits at fixed times miss this part; it widens the band by
        :math:`|\hat f \log \hat f|\, \sigma_g` in quadrature.
    :param bool exposure_jackknife: also refit the stack once without each exposure (stacks of
        at least 3 exposures) and add the delete-one jackknife std of those curves
        (:func:`~deepinv_icrf.functional.jackknife_std`) in quadrature (default True). The
        bootstrap refits happen in a world simulated from the fit itself, so they miss how
        weakly the real stack pins parts of the curve: the top of a soft-shouldered curve is
        set by the few exposures that reach saturation, and with noisy codes the fit's
        scale there can be off by far more than the bootstrap spread. Refits without one
        exposure see that dependence directly.
    :param bool clip_sensitivity: with the package's code fit (not with a ``fit`` given
        here), refit once with
        ``clip_priority="global"`` (a pixel sample without partly clipped positions as far as
        possible) and move the band onto that curve too (``alternatives`` of
        :func:`~deepinv_icrf.functional.bootstrap_band`; default True). Where saturation
        lies is weakly pinned on a soft-shouldered curve, and the partly clipped positions
        pull it one way: the two samples disagree exactly there, and the bootstrap of either
        alone misses it. ``benchmarks/real_camera.py`` (36 five-exposure stacks), when it
        was added: codes covered at least 90% on 36 stacks with it, 33 without; around fits
        with exact times, 35 and 21 (the fit has changed since: see ``prior_sensitivity``).
    :param bool top_sensitivity: with the package's code fit, refit once more with the codes
        within :math:`\max(2\hat\sigma, 10q)` of the top code (:data:`TOP_MARGIN_CODES`)
        read as clipped, and move the band onto that curve too (default True). Where
        saturation lies scales the whole ICRF, and JPEG compression pulls clipped highlights
        down where they meet unclipped ones (Pillow's JPEG 75-90 puts 30-45% of clipped
        pixels at codes 240-254): on the JPEG tone-curve cases of
        ``benchmarks/real_camera.py --cases all`` the fit's scale is 1.3-1.8x off; with a
        margin of 3 codes the band covered 75% of the codes of
        ``tone-b/rocket/jpeg-75/right``, with 10 codes 100%, while on Gaussian or shot noise
        the refit is the worse of the two; the band, which holds both, does not have to know
        which.
    :param bool prior_sensitivity: with the package's code fit, refit once more with a
        smoothness prior :data:`PRIOR_SENSITIVITY_FACTOR` times weaker and move the band onto
        that curve too (default True). The bootstrap refits share the fit's prior, so they
        miss its bias where the data are weak (the shoulder of a soft curve): on
        ``benchmarks/real_camera.py`` (seeds 0-2, 36 five-exposure stacks) the filmic and
        exp stacks were covered on 62-93% of the codes without it, 92-100% with it.
    :param FitOptions, None options: options of the refits, the fit's own
        (:class:`~deepinv_icrf.calibration.CodeFitOptions` or
        :class:`~deepinv_icrf.calibration.LinearityFitOptions`; default: the code fit's
        defaults). The refits are single fits at ``exposure_times``.
    :param str, torch.device, None device: where the refits run (default: the stack's).
    :param dict, None fit_options: the same options as keywords (``{"steps": 10}``; the
        fit's former keyword arguments, with ``"method"``), merged into ``options``.
    :param Callable, None fit: a fitting function to use instead, called as
        ``fit(stack, times, seed=..., **fit_options)`` and returning an ICRF (default: the
        package's single fit).
    :param Sequence other_estimates: other estimates of the curve, each ``(C, L)``, that the
        band also reaches (``alternatives`` of :func:`~deepinv_icrf.functional.bootstrap_band`;
        :func:`~deepinv_icrf.calibration.fit_icrf` passes the joint fit of curve and times
        when the curve was refitted at the refined times: where two estimators disagree, the
        band covers both).
    :return: (tuple) ``(lower, upper)``, each ``(C, L)`` on the ICRF's device.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf import fit_icrf
    >>> from deepinv_icrf.data import demo_scene, demo_exposure_times
    >>> from deepinv_icrf.physics import ExposureStack
    >>> from deepinv_icrf.calibration.bands import icrf_confidence_band
    >>> t = demo_exposure_times(4, shortest=1 / 8)
    >>> y = ExposureStack(t, response="gamma")(demo_scene(16, 20, channels=1))[0]
    >>> icrf = fit_icrf(y, t, steps=10, progress=False)
    >>> lower, upper = icrf_confidence_band(y, t, icrf, n_boot=2, fit_options={"steps": 10})
    >>> bool((lower <= upper).all()), icrf.band.shape
    (True, torch.Size([2, 1, 256]))
    """
    check_in(method, "method", BAND_METHODS)
    for name, value, low in (("n_boot", n_boot, 2), ("max_pixels", max_pixels, 1)):
        check_int(value, name, low)
    if not 0.0 < level < 1.0:
        raise ValueError(f"Expected `level` in (0, 1), but got {level!r}.")
    if not (isinstance(exponent_std, (int, float)) and exponent_std >= 0):
        raise ValueError(f"Expected `exponent_std` >= 0, but got {exponent_std!r}.")
    if noise_std is not None and not noise_std >= 0:
        raise ValueError(f"Expected `noise_std` >= 0 or None, but got {noise_std!r}.")
    if not isinstance(icrf, ICRFBase):
        raise TypeError(
            f"Expected `icrf` to be a deepinv_icrf.models.ICRF, but got {type(icrf).__name__}."
        )
    # times a fit implied may repeat (frames the camera took at one exposure); at least two
    # must differ (the bracket checks it)
    bracket = Bracket.from_input(stack, exposure_times, distinct=False)
    if bracket.batch != 1:
        raise ValueError(
            f"Expected one stack (not a batch), but got a batch of {bracket.batch}."
        )
    y = bracket.float_stack()
    bits = bracket.bit_depth
    n = y.shape[1]
    if y.shape[2] != icrf.channels:
        raise ValueError(
            f"Expected `stack` with {icrf.channels} channels to match `icrf`, "
            f"but got {y.shape[2]}."
        )
    times = bracket.exposure_times[0]
    keywords = dict(fit_options or {})
    if fit is None:
        fit_method = keywords.pop(
            "method", "code" if options is None else options.method
        )
        options, _ = options_from_keywords(fit_method, options, **keywords)

    def refit(stack_: Tensor, times_: Tensor, seed_: int, **changes: Any) -> Tensor:
        # one fit of a float stack (N, C, H, W) at fixed times, without band or refinement
        if fit is not None:
            call = dict(keywords, **changes)
            call.setdefault("progress", False)
            return fit(stack_, times_, seed=seed_, **call).curve.detach()
        opts = replace(options, **changes) if changes else options
        out, _, _ = fit_once(
            stack_.unsqueeze(0), times_.unsqueeze(0), opts, device=device, seed=seed_
        )
        return out.curve.detach()

    band_device = icrf.curve.device
    generator = torch.Generator().manual_seed(seed)
    sample = _sample_positions(y[0], max_pixels, generator).to(
        band_device, torch.float32
    )
    t = times.to(band_device, torch.float32)
    t_view = t.view(1, n, 1, 1, 1)
    bit_depth = bits if bits is not None else icrf.bit_depth
    with torch.no_grad():
        center = icrf.curve.detach()
        codes = sample.unsqueeze(0)
        if method == "parametric":
            x_lin = icrf(codes)
            radiance = weighted_radiance_merge(codes, x_lin, t.unsqueeze(0))
            clean = icrf.response((t_view * radiance.unsqueeze(1)).clamp(0.0, 1.0))
            if noise_std is None:
                ok = (codes >= _NOISE_LOWER) & (codes <= _NOISE_UPPER)
                m = ok.sum(1, keepdim=True).to(torch.float64)
                sigma = residual_code_std(codes[0], clean[0], m[0])
                if bit_depth is not None:
                    # the residuals hold the quantisation error too; keep at least its std
                    quant = 1.0 / ((2**bit_depth - 1) * 12.0**0.5)
                    sigma = sigma.clamp_min(quant)
            else:
                sigma = torch.full(
                    (icrf.channels,), float(noise_std), dtype=torch.float64
                )
            sigma = sigma.to(band_device, torch.float32).view(1, 1, -1, 1, 1)
    noise_gen = torch.Generator(device=band_device).manual_seed(seed)

    def refit_worlds(world: Tensor | None, count: int, first: int) -> Tensor:
        # `count` refits of stacks simulated from the clean codes `world` (parametric) or of
        # resampled pixels (world None)
        out = []
        for b in range(first, first + count):
            with torch.no_grad():
                if world is not None:
                    eps = torch.randn(
                        world.shape, generator=noise_gen, device=band_device
                    )
                    y_star = (world + sigma * eps).clamp(0.0, 1.0)
                    if bit_depth is not None:
                        y_star = quantize_to_bit_depth(y_star, bit_depth)
                    y_star = y_star[0]
                else:
                    p = sample.shape[-1]
                    idx = torch.randint(
                        p, (p,), generator=noise_gen, device=band_device
                    )
                    y_star = sample.index_select(-1, idx)
            changes: dict[str, Any] = {}
            if vary_init:
                gamma = _INIT_GAMMAS[0] * (_INIT_GAMMAS[1] / _INIT_GAMMAS[0]) ** (
                    (b + 0.5) / n_boot
                )
                grid = torch.linspace(0.0, 1.0, icrf.n_points, dtype=torch.float64)
                changes["init"] = (
                    (grid**gamma).expand(icrf.channels, -1).to(torch.float32)
                )
            out.append(refit(y_star, times, seed + b, **changes).to(band_device))
        return torch.stack(out)

    refits = refit_worlds(clean if method == "parametric" else None, n_boot, 0)
    variance = torch.zeros(center.shape, dtype=torch.float64, device=band_device)
    if exponent_std > 0:
        f = center.to(torch.float64).clamp(1e-12, 1.0)
        variance = variance + ((f * f.log()).abs() * float(exponent_std)) ** 2
    if exposure_jackknife and n >= 3:
        left_out = []
        for i in range(n):
            keep = torch.tensor([j for j in range(n) if j != i], device=y.device)
            try:
                curve = refit(y[0].index_select(0, keep), times[keep.cpu()], seed)
            except ValueError:
                # without this exposure the stack may have no usable pair: skip it
                continue
            left_out.append(curve.to(band_device, torch.float64))
        if len(left_out) >= 2:
            variance = variance + jackknife_std(torch.stack(left_out)) ** 2
    extra = variance.sqrt() if bool((variance > 0).any()) else None
    others = []
    # the second opinions change options of the package's code fit: none with another fit
    code_fit = fit is None and isinstance(options, CodeFitOptions)
    if clip_sensitivity and code_fit:
        others.append(refit(y[0], times, seed, clip_priority="global"))
    if top_sensitivity and code_fit:
        step = 1.0 / (2**bit_depth - 1) if bit_depth is not None else 0.0
        noise = float(sigma.max()) if method == "parametric" else _report_sigma(icrf)
        top = 1.0 - max(2.0 * noise, TOP_MARGIN_CODES * step)
        clipped = torch.where(y[0] >= top - 0.5 * step, 1.0, y[0])
        try:
            others.append(refit(clipped, times, seed))
        except ValueError:
            pass  # nothing left unclipped to fit: no second opinion
    if prior_sensitivity and code_fit:
        weaker = options.smoothness / PRIOR_SENSITIVITY_FACTOR
        others.append(refit(y[0], times, seed, smoothness=weaker))
    others.extend(o.detach() for o in other_estimates)
    alternatives = torch.stack([o.to(band_device) for o in others]) if others else None
    lower, upper = bootstrap_band(
        refits, center, level, extra_std=extra, alternatives=alternatives
    )
    if store:
        icrf.band = torch.stack([lower, upper]).to(center.dtype)
    return lower, upper
