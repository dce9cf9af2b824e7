r"""One fit of the curve at given exposure times: the core that the orchestrator
(:func:`~deepinv_icrf.calibration.fit_icrf`), the time refinement and the confidence bands
call.

- code (default): the code-domain maximum-likelihood fit of
  :func:`deepinv_icrf.functional.fit_code_domain` (per-pixel radiance, monotone response with
  a floor, clipped codes censored, noise level estimated from the stack) on a stratified
  sample of pixel positions; optionally with the exposure times refined jointly.
- linearity: the clair-torch objective (radiometric linearity plus curve penalties)
  minimised with Adam, on the joint code histograms of the whole stack
  (:func:`deepinv_icrf.functional.build_linearity_histogram`) when it holds integer codes, on
  sampled pixels otherwise.

The inputs are trusted: the stack as the bracket module makes it (an integer array
``(N, H, W, C)`` or a float tensor ``(B, N, C, H, W)``) and checked times ``(B, N)``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf.bracket import code_bits, codes_to_unit
from deepinv_icrf.calibration.options import (
    CodeFitOptions,
    FitOptions,
    LinearityFitOptions,
)
from deepinv_icrf.calibration.report import FitReport
from deepinv_icrf.functional.codefit import (
    CodeFitResult,
    fit_code_domain,
    stratified_pixel_sample,
)
from deepinv_icrf.functional.histogram import (
    ContinuousInputError,
    build_linearity_histogram,
    detect_bit_depth,
    linearity_from_histogram,
)
from deepinv_icrf.functional.interp import interp_curve
from deepinv_icrf.functional.linearity import radiometric_linearity
from deepinv_icrf.functional.penalties import (
    monotonicity_penalty,
    range_penalty,
    smoothness_penalty,
)
from deepinv_icrf.models.icrf_base import ICRFBase

__all__ = [
    "fit_once",
    "code_sample",
    "NO_PIXEL",
    "MIN_LINEARITY_POSITIONS",
    "small_problem_threads",
]

#: Pixel positions drawn at random before the stratified selection, per wanted position.
_CANDIDATES_PER_PIXEL = 8
#: Message when nothing in a stack constrains the curve.
NO_PIXEL = (
    "Found no valid pixel pair in `stack` (all saturated or black, or exposure ratios below "
    "the threshold): nothing constrains the curve."
)
#: Pixel positions of the dense linearity path (continuous input) when not given.
_DENSE_PIXELS = 4_000
#: Fewest usable pixel positions the linearity fit accepts: the code fit's default number of
#: knots (its curve is constrained by no fewer positions, see :func:`_check_positions`).
MIN_LINEARITY_POSITIONS = CodeFitOptions.n_knots
#: Pixel positions examined at once when the linearity fit counts the usable ones.
_COUNT_CHUNK = 1 << 16
#: Largest ratio of adjacent ICRF values (codes 64..239 of 255) a code fit keeps: real
#: cameras give 1.03-1.04; above this the response is flat over a stretch.
MAX_CURVE_JUMP = 1.10
#: Least log-slope of the response (:func:`~deepinv_icrf.functional.fit_code_domain`'s
#: ``min_log_slope``) of the refit of a curve that jumped.
REFIT_LOG_SLOPE = 0.05
#: ... and the largest jump its projection allows (``max_jump``), as the log-slope alone
#: leaves the shadows free to jump (x1.37 between codes 64 and 65): a little inside
#: :data:`MAX_CURVE_JUMP`, so that a refit the bound holds lands below it after the
#: rounding and the resampling of the curve (x1.0995 for a bound of x1.10, on a JPEG copy
#: of the Memorial Church scans).
REFIT_MAX_JUMP = 1.09
#: Float32 rounding of a jump: a refit whose jump is within it of the first fit's is as good.
_JUMP_ROUNDING = 1e-4


def _check_positions(found: int, needed: int, what: str, limit: int | None) -> None:
    r"""Refuse a stack with fewer usable pixel positions than the fit has unknowns.

    A position is usable when every channel has at least two codes that are neither black
    nor saturated (:func:`~deepinv_icrf.functional.stratified_pixel_sample`): one such code
    sets the position's radiance, the others constrain the curve. With at least as many
    positions as the curve has free values (the code fit's knots), every value is
    constrained by at least one code (Debevec and Malik's count of equations against
    unknowns, with one equation per position at the least); with fewer, the fit returns
    mostly its starting curve and its prior, whatever the stack.

    :param int found: usable positions found (in the fit's sample).
    :param int needed: the fewest accepted.
    :param str what: what sets ``needed``, for the message.
    :param int, None limit: the sample's size limit (``max_pixels``), when it is below
        ``needed``.
    :raises ValueError: when ``found == 0`` (:data:`NO_PIXEL`) or ``found < needed``.
    """
    if found == 0:
        raise ValueError(NO_PIXEL)
    if found >= needed:
        return
    cap = "" if limit is None or limit >= needed else f" (max_pixels={limit})"
    raise ValueError(
        f"Found {found} usable pixel position(s) in `stack`{cap}, fewer than the {needed} "
        f"{what}: too few to constrain the curve (a usable position has at least two codes "
        "neither black nor saturated in every channel); use a larger or less clipped stack."
    )


def _usable_positions(y: Tensor, bits: int | None, want: int) -> int:
    r"""Usable pixel positions of a float stack ``(B, N, C, H, W)``, counted up to ``want``.

    Counted by :func:`~deepinv_icrf.functional.stratified_pixel_sample` over chunks of
    positions, stopping as soon as ``want`` are found (usually in the first chunk).
    """
    b, n, c, h, w = y.shape
    flat = y.reshape(b, n, c, 1, h * w)
    generator = torch.Generator().manual_seed(0)  # the count does not depend on it
    found = 0
    for k in range(b):
        for start in range(0, h * w, _COUNT_CHUNK):
            part = flat[k, ..., start : start + _COUNT_CHUNK]
            found += int(
                stratified_pixel_sample(
                    part, want - found, bit_depth=bits, generator=generator
                ).numel()
            )
            if found >= want:
                return found
    return found


def stack_shape(stack: np.ndarray | Tensor) -> tuple[int, int, int]:
    r"""``(B, N, C)`` of a trusted stack (integer ``(N, H, W, C)`` or float
    ``(B, N, C, H, W)``)."""
    if isinstance(stack, np.ndarray):
        return 1, stack.shape[0], stack.shape[3]
    return stack.shape[0], stack.shape[1], stack.shape[2]


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
    if isinstance(stack, np.ndarray):
        n, h, w, c = stack.shape
        flat = stack.reshape(n, h * w, c)
        m = min(h * w, _CANDIDATES_PER_PIXEL * n_pixels)
        cand = random_positions(h * w, m, generator).numpy()
        picked = codes_to_unit(torch.from_numpy(flat[:, np.sort(cand), :]), bits)
        stacks = [picked.permute(0, 2, 1).unsqueeze(2)]  # (N, C, 1, M)
    else:
        b, n, c, h, w = stack.shape
        m = min(h * w, _CANDIDATES_PER_PIXEL * n_pixels)
        stacks = []
        for k in range(b):
            cand = random_positions(h * w, m, generator).sort().values
            flat = stack[k].reshape(n, c, h * w).index_select(-1, cand.to(stack.device))
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


def code_sample(
    stack: np.ndarray | Tensor,
    options: CodeFitOptions,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
) -> tuple[list[Tensor], int]:
    r"""The pixel sample :func:`fit_once` draws for a code fit of ``stack`` with these
    options and seed, to pass back as its ``sample`` when the same stack is fitted again.

    :param numpy.ndarray, torch.Tensor stack: integer codes ``(N, H, W, C)`` or a float
        stack ``(B, N, C, H, W)`` in ``[0, 1]``.
    :param CodeFitOptions options: the options of the fits that will take the sample (its
        size and clip priority).
    :param str, torch.device, None device: where the fits run (sets the threads).
    :param int seed: the seed the fits are given (default 0).
    :return: (tuple) the samples ``(C, P_b, N)`` per stack of the batch and the channels.
    """
    _, n, _ = stack_shape(stack)
    where = torch.device(device) if device is not None else _stack_device(stack)
    with small_problem_threads(where):
        return _code_sample(
            stack,
            _bit_depth(stack),
            options.sample_size(n),
            torch.Generator().manual_seed(seed),
            clip_priority=options.clip_priority,
        )


def _stack_device(stack: np.ndarray | Tensor) -> torch.device:
    return torch.device("cpu") if isinstance(stack, np.ndarray) else stack.device


@contextlib.contextmanager
def small_problem_threads(device: torch.device) -> Iterator[None]:
    r"""Run the code fit (sampling, fit and time check) single-threaded on CPU.

    Its tensors are small (a few hundred thousand values): intra-op threads cost more in
    synchronisation than they save, and on a busy machine they make it many times slower
    (the pixel sample of a 10-exposure 384x255 stack: 0.04 s of CPU with one thread, 0.35 s
    with two, on a loaded 2-core machine). The previous thread count is restored
    afterwards.
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


#: Positions up to which a random subset is drawn from a full permutation (32 MB of int64);
#: beyond, by rejection: a permutation of a 100 MP stack alone takes 800 MB.
_PERMUTATION_LIMIT = 1 << 22


def random_positions(total: int, m: int, generator: torch.Generator) -> Tensor:
    r"""``min(m, total)`` distinct positions of ``range(total)``, drawn uniformly, in random
    order, in memory proportional to ``m`` (not ``total``) for large ``total``.

    :param int total: the number of positions.
    :param int m: how many to draw.
    :param torch.Generator generator: the random source.
    :return: (:class:`torch.Tensor`) int64 positions ``(min(m, total),)``.
    """
    m = min(m, total)
    if total <= _PERMUTATION_LIMIT or 4 * m > total:
        return torch.randperm(total, generator=generator)[:m]
    picked = torch.empty(0, dtype=torch.long)
    while picked.numel() < m:  # about one round: m is at most a quarter of total
        draw = torch.randint(total, (2 * (m - picked.numel()),), generator=generator)
        merged = torch.cat([picked, draw])
        picked = merged[_first_occurrences(merged).sort().values][:m]
    return picked


def _first_occurrences(values: Tensor) -> Tensor:
    r"""The index of the first occurrence of each distinct value of ``values``."""
    unique, inverse = torch.unique(values, return_inverse=True)
    first = torch.full((unique.numel(),), values.numel(), dtype=torch.long)
    return first.scatter_reduce_(
        0, inverse, torch.arange(values.numel()), reduce="amin"
    )


def _initial_curve(init: str | Tensor, channels: int, n_points: int) -> Tensor | None:
    if isinstance(init, Tensor):
        return init.detach().to(torch.float64).reshape(-1, init.shape[-1])
    grid = torch.linspace(0.0, 1.0, n_points, dtype=torch.float64)
    return None if init == "gamma" else grid.expand(channels, n_points)


def _bit_depth(stack: np.ndarray | Tensor) -> int | None:
    if isinstance(stack, np.ndarray):
        return code_bits(stack.dtype)
    return detect_bit_depth(stack)


def fit_once(
    stack: np.ndarray | Tensor,
    times: Tensor,
    options: FitOptions,
    *,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
    time_prior: float | None = None,
    time_init: Tensor | None = None,
    sample: tuple[list[Tensor], int] | None = None,
) -> tuple[ICRFBase, FitReport, CodeFitResult | None]:
    r"""Fit the curve of a trusted stack once, at the given times.

    :param numpy.ndarray, torch.Tensor stack: integer codes ``(N, H, W, C)`` or a float
        stack ``(B, N, C, H, W)`` in ``[0, 1]`` (as :mod:`deepinv_icrf.bracket` makes them).
    :param torch.Tensor times: checked times ``(B, N)`` float64.
    :param FitOptions options: :class:`~deepinv_icrf.calibration.CodeFitOptions` or
        :class:`~deepinv_icrf.calibration.LinearityFitOptions`.
    :param str, torch.device, None device: where to fit (default: the stack's device).
    :param int seed: seed of the pixel sampling (default 0).
    :param bool progress: show a progress bar (default False).
    :param float, None time_prior: code fit only: refine the log-times jointly with this
        prior scale (see :func:`~deepinv_icrf.functional.fit_code_domain`).
    :param torch.Tensor, None time_init: code fit only: starting log-time offsets ``(N,)``.
    :param tuple, None sample: code fit only: the pixel sample of ``stack`` drawn by
        :func:`code_sample` with these options and seed, when the caller fits the same stack
        again (the time check's rounds); drawn here when ``None``.
    :return: (tuple) the ICRF (eval mode, on ``device``), its report (without
        ``fit_report`` attached) and the code fit's raw result (``None`` for the linearity
        fit).
    """
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    if isinstance(options, CodeFitOptions):
        icrf, report, result = _fit_code(
            stack,
            times,
            options,
            device=device,
            generator=generator,
            progress=progress,
            time_prior=time_prior,
            time_init=time_init,
            sample=sample,
        )
    elif isinstance(options, LinearityFitOptions):
        if time_prior is not None:
            raise ValueError(
                "Expected `time_prior` only with the code fit: the linearity fit refines "
                "the times by alternation (calibration.refine)."
            )
        icrf, report = _fit_linearity(
            stack, times, options, device=device, generator=generator, progress=progress
        )
        result = None
    else:
        raise TypeError(
            "Expected `options` to be a CodeFitOptions or LinearityFitOptions, but got "
            f"{type(options).__name__}."
        )
    report.wall_time_s = time.perf_counter() - start
    icrf.eval()
    return icrf, report, result


def _fit_code(
    stack: np.ndarray | Tensor,
    times: Tensor,
    options: CodeFitOptions,
    *,
    device: str | torch.device | None,
    generator: torch.Generator,
    progress: bool,
    time_prior: float | None,
    time_init: Tensor | None,
    sample: tuple[list[Tensor], int] | None = None,
) -> tuple[ICRFBase, FitReport, CodeFitResult]:
    from tqdm.auto import tqdm

    bits = _bit_depth(stack)
    batch, n, _ = stack_shape(stack)
    device = torch.device(device) if device is not None else _stack_device(stack)
    max_pixels = options.sample_size(n)
    steps = options.steps or CodeFitOptions.DEFAULT_STEPS
    if sample is None:
        with small_problem_threads(device):
            sample = _code_sample(
                stack, bits, max_pixels, generator, clip_priority=options.clip_priority
            )
    samples, channels = sample
    # one stack: one time per exposure (what the time refinement needs); a batch: per pixel
    log_times = (
        times[0].log()
        if len(samples) == 1
        else torch.cat(
            [times[k].log().expand(s.shape[1], n) for k, s in enumerate(samples)]
        )
    )
    y = torch.cat(samples, dim=1).to(device=device, dtype=torch.float32)
    _check_positions(
        int(y.shape[1]),
        options.n_knots,
        f"knots of the code fit's response (n_knots={options.n_knots})",
        max_pixels,
    )
    init_curve = _initial_curve(options.init, channels, options.n_points)
    if init_curve is not None:
        init_curve = init_curve.to(device=device, dtype=torch.float32)

    bar = tqdm(total=steps, desc="fit_icrf", disable=not progress, leave=False)

    def _tick(iteration: int, change: float) -> None:
        bar.update(1)
        bar.set_postfix(change=f"{change:.2g}")

    def _run(min_log_slope: float, max_jump: float | None = None) -> CodeFitResult:
        return fit_code_domain(
            y,
            log_times.to(device=device, dtype=torch.float32),
            bit_depth=bits,
            n_points=options.n_points,
            n_knots=options.n_knots,
            iterations=steps,
            smoothness=options.smoothness,
            sigma=options.noise_sigma,
            init_curve=init_curve,
            outlier_threshold=options.outlier_threshold,
            floor=options.floor,
            time_prior=time_prior,
            time_init=(
                None
                if time_init is None
                else time_init.to(device=device, dtype=torch.float32)
            ),
            min_log_slope=min_log_slope,
            max_jump=max_jump,
            callback=_tick,
        )

    jump = None
    with small_problem_threads(device):
        try:
            result = _run(0.0)
            # a flat stretch of the response (photos that disagree with each other or with
            # their times): refit with a minimum slope, which real responses keep anyway
            first_jump = kept_jump = float(result.code_jump().max())
            if first_jump > MAX_CURVE_JUMP:
                bar.reset()
                refit = _run(REFIT_LOG_SLOPE, REFIT_MAX_JUMP)
                # a jump the minimum slope does not lower is no flat stretch: the refit
                # only costs likelihood there (x1.103 for x1.102 and a curve 2.5x further
                # from the truth, on a sharpened synthetic bracket), so the fit stays
                refit_jump = float(refit.code_jump().max())
                if refit_jump <= first_jump + _JUMP_ROUNDING:
                    jump, result, kept_jump = first_jump, refit, refit_jump
        finally:
            bar.close()
    icrf = ICRFBase(
        channels=channels,
        n_points=options.n_points,
        parameterization=options.parameterization,
        init=result.curve.detach().to("cpu", torch.float64),
        bit_depth=bits if bits is not None else 8,
    ).to(device)
    used = times[0].clone() if batch == 1 else times.clone()
    report = FitReport(
        method="code",
        steps=result.iterations,
        wall_time_s=0.0,
        final_loss=float(result.nll.mean()),
        exposure_times=used,
        nominal_exposure_times=used.clone(),
        sigma=result.sigma.tolist(),
        pixels=int(y.shape[1]),
        outliers=(
            None
            if result.outlier_fraction is None
            else result.outlier_fraction.tolist()
        ),
        floor=None if result.floor is None else result.floor.tolist(),
        refit_jump=jump,
        curve_jump=kept_jump,
    )
    return icrf, report, result


def _fit_linearity(
    stack: np.ndarray | Tensor,
    times: Tensor,
    options: LinearityFitOptions,
    *,
    device: str | torch.device | None,
    generator: torch.Generator,
    progress: bool,
) -> tuple[ICRFBase, FitReport]:
    from tqdm.auto import tqdm

    from deepinv_icrf.bracket import as_stack_tensor

    y, bits = as_stack_tensor(stack)
    batch, n, channels, h, w = y.shape
    steps = options.steps or LinearityFitOptions.DEFAULT_STEPS
    max_pixels = options.max_pixels
    device = torch.device(device) if device is not None else y.device
    if max_pixels is not None and h * w > max_pixels:
        idx = random_positions(h * w, max_pixels, generator).to(y.device)
        y = y.reshape(batch, n, channels, 1, h * w).index_select(-1, idx)
    y = y.to(device=device, dtype=torch.float32)
    _check_positions(
        _usable_positions(
            y,
            bits if bits is not None else detect_bit_depth(y),
            MIN_LINEARITY_POSITIONS,
        ),
        MIN_LINEARITY_POSITIONS,
        "the linearity fit needs (as many as the code fit's default knots)",
        max_pixels,
    )
    t = times.to(device=device, dtype=torch.float32)
    try:
        hist = build_linearity_histogram(y, t)
        bits = hist.bit_depth
        if hist.n_entries == 0 or not bool((hist.weight_sum > 0).any()):
            raise ValueError(NO_PIXEL)

        def linearity(curve: Tensor) -> Tensor:
            return linearity_from_histogram(curve, hist, relative=options.relative)

    except ContinuousInputError:
        b, _, _, hh, ww = y.shape
        if hh * ww > _DENSE_PIXELS:
            idx = random_positions(hh * ww, _DENSE_PIXELS, generator)
            y = y.reshape(b, n, channels, 1, hh * ww).index_select(-1, idx.to(device))

        def linearity(curve: Tensor) -> Tensor:
            return radiometric_linearity(
                y,
                interp_curve(y, curve, channel_dim=-3),
                t,
                relative=options.relative,
            )

    icrf = ICRFBase(
        channels=channels,
        n_points=options.n_points,
        parameterization=options.parameterization,
        init=options.init,
        bit_depth=bits if bits is not None else 8,
    ).to(device)
    optimizer = torch.optim.Adam(icrf.parameters(), lr=options.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=steps, eta_min=options.lr * 0.02
    )
    icrf.train()
    total = torch.zeros(())
    bar = tqdm(range(steps), desc="fit_icrf", disable=not progress, leave=False)
    for step in bar:
        optimizer.zero_grad(set_to_none=True)
        curve = icrf.curve
        total = linearity(curve).sum() + range_penalty(curve).sum()
        if options.parameterization == "free":
            total = total + monotonicity_penalty(curve).sum()
        if options.smoothness_weight > 0:
            total = total + options.smoothness_weight * smoothness_penalty(curve).sum()
        total.backward()
        optimizer.step()
        scheduler.step()
        if options.callback is not None:
            options.callback(step, total.detach(), icrf)
        if progress and (step % 25 == 0 or step == steps - 1):
            bar.set_postfix(loss=f"{float(total.detach()):.4g}")
    used = times[0].clone() if batch == 1 else times.clone()
    report = FitReport(
        method="linearity",
        steps=steps,
        wall_time_s=0.0,
        final_loss=float(total.detach()),
        exposure_times=used,
        nominal_exposure_times=used.clone(),
    )
    return icrf, report
