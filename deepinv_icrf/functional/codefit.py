r"""Code-domain fitting: the camera response fitted where the noise lives, in the codes.

Model of one exposure stack (one channel): every pixel :math:`p` has an unknown log radiance
:math:`s_p`, the camera a monotone response :math:`R` with :math:`R(0) = 0`, :math:`R(1) = 1`,
and

.. math::

    Y_{k, p} = \eta\Big(R\big(\min(e^{s_p} t_k, 1)\big) + \varepsilon_{k, p}\Big),
    \qquad \varepsilon \sim \mathcal{N}(0, \sigma^2),

with :math:`\eta` clipping to :math:`[0, 1]` and rounding to :math:`b` bits. Codes
strictly inside the range are Gaussian observations of :math:`R`; the clipped codes 0 and
:math:`2^b - 1` are *censored*: they only say that :math:`R + \varepsilon` lies below
:math:`q / 2` or above :math:`1 - q / 2` (:math:`q = 1 / (2^b - 1)`). The negative
log-likelihood (:func:`censored_code_nll`) is the Tobit one. Unlike the linearity loss,
Debevec or Robertson, which push noisy codes through the inverse curve (errors in variables,
biased near saturation), it is unbiased.

:func:`fit_code_domain` minimises it jointly over the response and the per-pixel radiances
of a stratified pixel sample by Gauss-Newton: the Hessian is block-arrow (diagonal in the
radiances, tridiagonal in the knots of the response, which is piecewise linear in
:math:`v = (e^{s + \log t})^{1/2.2}`), so the radiances are eliminated (Schur complement)
and each step costs one small solve per channel. The noise level :math:`\sigma` is
estimated from the residuals of the stack itself (:func:`estimate_code_noise` gives a
fit-free estimate). The ICRF is the inverse of the fitted response.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from deepinv_icrf._checks import (
    check_finite,
    check_float,
    check_int,
    check_positive,
    check_shape,
    check_threshold,
    compute_dtype,
)
from deepinv_icrf.functional.censored import (  # noqa: F401 (re-exported)
    _censoring,
    _nll_derivatives,
    _quantum,
    censored_code_nll,
    estimate_code_noise,
)
from deepinv_icrf.functional.code_outliers import (  # noqa: F401 (re-exported)
    _MIN_SIGMA,
    _group_quantiles,
    _inlier_weights,
    _robust_sigma,
    code_inlier_mask,
)
from deepinv_icrf.functional.code_sample import (  # noqa: F401 (re-exported)
    CLIP_PRIORITIES,
    stratified_pixel_sample,
)
from deepinv_icrf.functional.interp import interp_curve, invert_curve
from deepinv_icrf.functional.metrics import JUMP_HIGH, JUMP_LOW, curve_jump

__all__ = [
    "censored_code_nll",
    "code_inlier_mask",
    "estimate_code_noise",
    "stratified_pixel_sample",
    "CodeFitResult",
    "fit_code_domain",
    "CLIP_PRIORITIES",
]


#: Reference exponent of the response grid: knots uniform in ``(radiance * t) ** (1 / 2.2)``.
_GRID_GAMMA = 2.2
#: Iterations during which the noise level is re-estimated from the residuals.
_SIGMA_ITERATIONS = 6
#: The outlier set has settled when fewer than this share of the codes change sides in an
#: iteration: codes near the threshold flip back and forth as the curve moves by 1e-4.
_SETTLED_FLIPS = 5e-4
#: Outlier rejection refits only when at least this fraction of a channel's codes is left out.
_MIN_OUTLIERS = 1e-3
#: ... and at least this many codes (a stray code or two in a small sample is no object).
_MIN_OUTLIER_CODES = 10


@dataclass
class CodeFitResult:
    r"""Result of :func:`fit_code_domain`.

    :param torch.Tensor curve: the fitted ICRF ``(C, L)``, non-decreasing, ``0`` at 0 and
        ``1`` at 1.
    :param torch.Tensor response: the fitted response at its knots ``(C, K)``, on the grid
        :math:`v_j = j / (K - 1)`, :math:`v = (e^{u})^{1/2.2}` with :math:`u` the log exposure
        relative to saturation.
    :param torch.Tensor log_radiance: the per-pixel log radiances :math:`s_p` ``(C, P)``
        (saturation at :math:`s + \log t = 0`, times divided by the longest one).
    :param torch.Tensor sigma: the estimated code noise per channel ``(C,)``.
    :param torch.Tensor nll: mean censored NLL per channel at the solution ``(C,)``.
    :param int iterations: outer iterations run.
    :param torch.Tensor, None outlier_fraction: fraction of the codes left out as outliers per
        channel ``(C,)`` (``None`` without ``outlier_threshold``; 0 when the plain fit stood).
    :param torch.Tensor, None floor: the response at zero exposure per channel ``(C,)``, in
        :math:`[0, 1]` code units (``None`` when it was pinned at 0): the code the camera or
        film gives to no light. The ICRF is 0 up to it.
    :param torch.Tensor, None log_time_offset: the refined log-time offsets :math:`\delta`
        ``(N,)`` (refined times :math:`t_k e^{\delta_k}`), ``None`` when the times were fixed.
    """

    curve: Tensor
    response: Tensor
    log_radiance: Tensor
    sigma: Tensor
    nll: Tensor
    iterations: int
    outlier_fraction: Tensor | None = None
    floor: Tensor | None = None
    log_time_offset: Tensor | None = None

    def code_jump(self, codes: int = 256) -> Tensor:
        r"""Largest ratio of adjacent values of the ICRF over codes 64..239 (of 255), per
        channel (:func:`~deepinv_icrf.functional.curve_jump`), with the ICRF sampled at
        ``codes`` points from the response, whatever the ``n_points`` of :attr:`curve`.

        :param int codes: samples of the ICRF (default 256: every 8-bit code).
        :return: (:class:`torch.Tensor`) the largest ratio per channel ``(C,)``.
        """
        return curve_jump(_invert_response(self.response, codes))


def _second_difference_gram(k: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    r""":math:`D^\top D` of the second-difference operator on ``k`` knots."""
    eye = torch.eye(k, dtype=dtype, device=device)
    d = eye[:-2] - 2.0 * eye[1:-1] + eye[2:]
    return d.T @ d


def _response_at(
    u: Tensor, knots: Tensor, offsets: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Response at log exposures ``u`` ``(C, P, N)`` (piecewise linear in
    :math:`v = e^{u / 2.2}`, flat at 1 above saturation): value, slope :math:`dR/du`,
    flat index of the left knot and the interpolation weight of the right one."""
    k = knots.shape[1]
    v = torch.exp(u * (1.0 / _GRID_GAMMA))
    pos = (v * (k - 1)).clamp_(max=k - 1)
    left = pos.floor().clamp_(max=k - 2)
    theta = pos - left
    index = left.long() + offsets
    flat = knots.reshape(-1)
    lo = flat.take(index)
    step = flat.take(index + 1) - lo
    value = lo + theta * step
    slope = step * ((k - 1) / _GRID_GAMMA) * v * (pos < k - 1)
    return value, slope, index, theta


def _invert_response(knots: Tensor, n_points: int) -> Tensor:
    r"""ICRF on ``n_points`` codes from response knots ``(C, K)`` (non-decreasing, 0 to 1)."""
    c, k = knots.shape
    codes = torch.linspace(0.0, 1.0, n_points, dtype=knots.dtype, device=knots.device)
    codes = codes.expand(c, n_points).contiguous()
    left = (torch.searchsorted(knots.contiguous(), codes, right=True) - 1).clamp(
        0, k - 2
    )
    lo = torch.gather(knots, 1, left)
    hi = torch.gather(knots, 1, left + 1)
    frac = ((codes - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)
    v = (left.to(knots.dtype) + frac) / (k - 1)
    curve = v.pow(_GRID_GAMMA)
    curve[:, 0] = 0.0
    curve[:, -1] = 1.0
    return torch.cummax(curve, dim=1).values


def _residual_sigma(value: Tensor, y: Tensor, uncensored: Tensor) -> Tensor:
    r"""Noise level per channel from the residuals of the codes away from clipping,
    corrected for the one radiance fitted per pixel (factor :math:`n_p / (n_p - 1)`).
    ``uncensored``: the codes that count (neither clipped nor rejected)."""
    per_pixel = uncensored.sum(dim=2, keepdim=True).to(value.dtype)
    mid = uncensored & (value > 0.05) & (value < 0.95)
    r2 = ((value - y) ** 2 * mid).sum(dim=(1, 2))
    dof = (mid * (1.0 - 1.0 / per_pixel.clamp_min(2.0))).sum(dim=(1, 2))
    return (r2 / dof.clamp_min(1.0)).sqrt().clamp_min(_MIN_SIGMA)


def _median_radiance(
    s: Tensor, y: Tensor, lt: Tensor, knots: Tensor, uncensored: Tensor
) -> Tensor:
    r"""Per-pixel log radiance as the median over its unclipped codes of
    :math:`\log \mathrm{ICRF}(y_k) - \log t_k` (the current response inverted): one code
    changed by a moving object does not move it. Pixels without such codes keep ``s``.
    """
    curve = _invert_response(knots, 1024)
    x = interp_curve(y, curve, channel_dim=0)
    valid = uncensored & (x > 0)
    est = (torch.log(x.clamp_min(1e-30)) - lt).where(valid, math.nan)
    med = est.nanmedian(dim=2).values
    return torch.where(valid.any(dim=2), med, s)


def _radiance_step(
    s: Tensor,
    lt: Tensor,
    knots: Tensor,
    offsets: Tensor,
    y_in: Tensor,
    inv_sigma: Tensor,
    cens: tuple[Tensor, Tensor, Tensor],
    weight: Tensor | None = None,
) -> Tensor:
    r"""One Gauss-Newton step on every log radiance, the response fixed (clamped to 1)."""
    value, slope, _, _ = _response_at(s.unsqueeze(-1) + lt, knots, offsets)
    _, d1, d2 = _nll_derivatives(y_in, value, inv_sigma, *cens)
    if weight is not None:
        d1, d2 = d1 * weight, d2 * weight
    grad = (d1 * slope).sum(-1)
    hess = (d2 * slope * slope).sum(-1)
    return s - (grad / (hess + 1e-12)).clamp(-1.0, 1.0)


def _joint_step(
    s: Tensor,
    lt: Tensor,
    knots: Tensor,
    offsets: Tensor,
    pix: Tensor,
    y_in: Tensor,
    inv_sigma: Tensor,
    cens: tuple[Tensor, Tensor, Tensor],
    gram: Tensor,
    smoothness: float,
    weight: Tensor | None = None,
    free_floor: bool = False,
    times: tuple[Tensor, Tensor] | None = None,
    at: tuple[Tensor, Tensor, Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    r"""Gauss-Newton direction for the response and all radiances jointly.

    The Hessian is block-arrow: diagonal in the radiances, tridiagonal in the knots, with a
    coupling :math:`B` (pixels by knots). The radiances are eliminated (Schur complement
    :math:`H_{RR} - B^\top H_{ss}^{-1} B`, one small solve per channel), then back-substituted.
    The response is then projected onto non-decreasing curves in :math:`[0, 1]`. ``weight``
    (0 or 1 per code) leaves rejected codes out. With ``free_floor`` the first knot (the
    response at zero exposure) moves too; the last one stays pinned at 1.

    With ``times = (offset, prior_precision)`` the ``N`` log-time offsets :math:`\delta_k`
    (shared by the channels; ``lt`` already includes them) are solved for as well: they add
    ``N`` rows to the reduced system (knots of every channel plus times, radiances
    eliminated), and ``prior_precision`` ``(N,)`` is the curvature of their prior around 0
    (the prior's gradient is ``prior_precision * offset``). ``at``: :func:`_response_at`
    of these radiances, times and knots when the caller has it already. Returns the steps
    of the knots, the radiances and (or ``None``) the offsets.
    """
    c, k = knots.shape
    p = s.shape[1]
    dtype, device = knots.dtype, knots.device
    if at is None:
        at = _response_at(s.unsqueeze(-1) + lt, knots, offsets)
    value, slope, index, theta = at
    _, d1, d2 = _nll_derivatives(y_in, value, inv_sigma, *cens)
    if weight is not None:
        d1, d2 = d1 * weight, d2 * weight
    a = 1.0 - theta
    # radiance block (diagonal)
    grad_s = (d1 * slope).sum(-1)
    d2s = d2 * slope
    hess_s = (d2s * slope).sum(-1)
    hess_s = hess_s + 1e-9 * hess_s.mean(dim=1, keepdim=True) + 1e-12
    # response block (tridiagonal)
    # five sums per knot, each gathered on its own (no stacked copy of the codes' terms)
    acc = torch.zeros(5, c * k, dtype=dtype, device=device)
    flat_index = index.reshape(-1)
    for row, term in enumerate(
        (d2 * a * a, d2 * theta * theta, d2 * a * theta, d1 * a, d1 * theta)
    ):
        acc[row].index_add_(0, flat_index, term.reshape(-1))
    acc = acc.view(5, c, k)
    diag = acc[0].clone()
    diag[:, 1:] += acc[1, :, :-1]
    grad_r = acc[3].clone()
    grad_r[:, 1:] += acc[4, :, :-1]
    off = acc[2, :, :-1]
    hess_r = (
        torch.diag_embed(diag) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    )
    # coupling (pixels x knots, dense)
    local = index - offsets + pix
    coupling = torch.zeros(c * p * k, dtype=dtype, device=device)
    coupling.index_add_(0, local.reshape(-1), (d2s * a).reshape(-1))
    coupling.index_add_(0, (local + 1).reshape(-1), (d2s * theta).reshape(-1))
    inner = slice(0 if free_floor else 1, k - 1)
    coupling = coupling.view(c, p, k)[:, :, inner]
    scaled = coupling / hess_s.unsqueeze(-1)
    lam = smoothness * diag[:, inner].mean(dim=1).clamp_min(1e-12).view(c, 1, 1)
    schur = hess_r[:, inner, inner] + lam * gram[inner, inner]
    schur = schur - coupling.transpose(1, 2) @ scaled
    rhs = grad_r[:, inner] + lam[:, :, 0] * (knots @ gram.T)[:, inner]
    rhs = rhs - (scaled.transpose(1, 2) @ grad_s.unsqueeze(-1)).squeeze(-1)
    damp = 1e-6 * torch.diagonal(schur, dim1=1, dim2=2).mean(-1).view(c, 1, 1)
    eye = torch.eye(schur.shape[-1], dtype=dtype, device=device)
    step_full = torch.zeros_like(knots)
    if times is None:
        step_r = torch.linalg.solve(schur + damp * eye, rhs.unsqueeze(-1))
        step_s = (grad_s - (coupling @ step_r).squeeze(-1)) / hess_s
        step_full[:, inner] = step_r.squeeze(-1)
        return step_full, step_s.clamp(-1.0, 1.0), None
    offset, precision = times
    n = offset.shape[0]
    ki = schur.shape[-1]
    # time block: every code of exposure k depends on its offset like on its radiance
    h_sd = d2s * slope  # (C, P, N): radiance-time coupling
    grad_d = (d1 * slope).sum(dim=(0, 1)) + precision * offset
    # knot-time coupling: (C * K, N), the codes' weights at their two knots, per exposure
    col = torch.arange(n, device=device).expand_as(index)
    h_rd = torch.zeros(c * k * n, dtype=dtype, device=device)
    h_rd.index_add_(0, (index * n + col).reshape(-1), (d2s * a).reshape(-1))
    h_rd.index_add_(0, ((index + 1) * n + col).reshape(-1), (d2s * theta).reshape(-1))
    h_rd = h_rd.view(c, k, n)[:, inner, :]
    s_rd = h_rd - scaled.transpose(1, 2) @ h_sd  # (C, Ki, N)
    s_dd = torch.diag(h_sd.sum(dim=(0, 1)) + precision)
    s_dd = s_dd - torch.einsum("cpk,cpl->kl", h_sd / hess_s.unsqueeze(-1), h_sd)
    rhs_d = grad_d - torch.einsum("cpk,cp->k", h_sd, grad_s / hess_s)
    system = torch.zeros(c * ki + n, c * ki + n, dtype=dtype, device=device)
    for ch in range(c):
        block = slice(ch * ki, (ch + 1) * ki)
        system[block, block] = schur[ch] + damp[ch] * eye
        system[block, c * ki :] = s_rd[ch]
        system[c * ki :, block] = s_rd[ch].T
    system[c * ki :, c * ki :] = s_dd + 1e-9 * s_dd.diagonal().mean() * torch.eye(
        n, dtype=dtype, device=device
    )
    step = torch.linalg.solve(system, torch.cat([rhs.reshape(-1), rhs_d]))
    step_r = step[: c * ki].view(c, ki)
    step_d = step[c * ki :]
    step_s = (
        grad_s - (coupling @ step_r.unsqueeze(-1)).squeeze(-1) - h_sd @ step_d
    ) / hess_s
    step_full[:, inner] = step_r
    return step_full, step_s.clamp(-1.0, 1.0), step_d.clamp(-1.0, 1.0)


def _project(
    knots: Tensor, min_log_slope: float = 0.0, max_jump: float | None = None
) -> Tensor:
    r"""Nearest-from-below non-decreasing curve in :math:`[0, 1]` (running maximum).

    With ``min_log_slope`` :math:`\kappa > 0` the response above its floor :math:`b = R_0`
    also grows at least as fast as :math:`e^{\kappa u}` between knots,
    :math:`R_{j+1} - b \ge (R_j - b)\,(v_{j+1} / v_j)^{2.2 \kappa}` (a running maximum of
    :math:`\log(R_j - b) - 2.2 \kappa \log v_j`), clipped at 1. With ``max_jump`` :math:`J`
    it then rises fast enough over the codes of :func:`curve_jump` for its ICRF to keep
    adjacent codes within a ratio :math:`J` (:func:`_jump_floor`).
    """
    knots = torch.cummax(knots.clamp(0.0, 1.0), dim=1).values
    if min_log_slope > 0.0:
        floor = knots[:, :1]
        grid = torch.arange(1, knots.shape[1], dtype=knots.dtype, device=knots.device)
        bound = (_GRID_GAMMA * min_log_slope) * grid.log()
        above = (knots[:, 1:] - floor).clamp_min(torch.finfo(knots.dtype).tiny).log()
        lifted = torch.cummax(above - bound, dim=1).values + bound
        knots = torch.cat([floor, (floor + lifted.exp()).clamp(max=1.0)], dim=1)
    if max_jump is not None:
        knots = _jump_floor(knots, max_jump)
    return knots


def _jump_floor(knots: Tensor, max_jump: float) -> Tensor:
    r"""Raise a non-decreasing response so that its ICRF has no jump above ``max_jump``.

    Between knots :math:`j \ge 1` and :math:`j + 1` the response is linear in
    :math:`v = j / (K - 1)` and the ICRF is :math:`\propto v^{2.2}`, so adjacent 8-bit codes
    there differ by a ratio of at most :math:`(1 + 1 / (255\, j\, \Delta_j))^{2.2}` with
    :math:`\Delta_j = R_{j+1} - R_j` (a code that straddles knots rises a little more, within
    :math:`J^{(j + 1) / j}`; the refit asks for x1.09 to stay within x1.10). Keeping it
    within :math:`J` asks
    :math:`\Delta_j \ge d_j = 1 / (255\, j\, (J^{1/2.2} - 1))` over the codes of
    :func:`curve_jump` (from the first interval that reaches :data:`JUMP_LOW` to the last
    that starts below :data:`JUMP_HIGH`): a running maximum of
    :math:`R_j - \sum_{i<j} d_i`, clipped at 1. A real response rises 7 or more
    codes per stop there; a flat stretch (frames that disagree with each other or with their
    times) is lifted to the least rise the bound allows.
    """
    c, k = knots.shape
    if k < 3:
        return knots  # no interval above the first: nothing to bound
    j = torch.arange(1, k - 1, dtype=knots.dtype, device=knots.device)
    need = 1.0 / (255.0 * j * (max_jump ** (1.0 / _GRID_GAMMA) - 1.0))
    # D_m: the least rise from knot 1 to knot m (m = 1..K-1)
    rise = torch.cat([need.new_zeros(1), torch.cumsum(need, 0)])
    inner = knots[:, 1:]
    # the chain starts at the first interval whose upper knot is above the range's first code
    starts = inner[:, 1:] > JUMP_LOW
    first = torch.argmax(starts.to(torch.uint8), dim=1, keepdim=True)
    index = torch.arange(k - 1, device=knots.device).expand(c, k - 1)
    active = (index >= first) & starts.any(dim=1, keepdim=True)
    base = torch.where(active, inner - rise, -math.inf)
    lifted = torch.maximum(inner, torch.cummax(base, dim=1).values + rise)
    # an interval rises in full while its lower knot is below the range's last code; above,
    # the response may flatten (a shoulder): the knots keep their own values, kept monotone
    lower = torch.cat([knots[:, :1], lifted[:, :-1]], dim=1)
    lifted = torch.where(lower < JUMP_HIGH, lifted, inner)
    lifted = torch.cummax(lifted, dim=1).values.clamp(max=1.0)
    return torch.cat([knots[:, :1], lifted], dim=1)


def _unflatten_top(
    knots: Tensor, s: Tensor, min_log_slope: float = 0.0, max_jump: float | None = None
) -> tuple[Tensor, Tensor]:
    r"""Move saturation to where the response first reaches 1 (no flat top).

    A response that reaches 1 at :math:`v^* < 1` and stays flat explains a stack exactly as
    well as the same response stretched to reach 1 at :math:`v = 1`, with every radiance
    multiplied by :math:`v^{*\,2.2}`: the clipping of the sensor and that of the response cannot
    be told apart (for any curve with a hard clip: linear, gamma, sRGB). The convention
    :math:`\mathrm{ICRF}(1) = 1` at the first point the response reaches 1 picks the stretched
    one, whose ICRF has no jump at the top code: :math:`R'(v) = R(v v^*)`,
    :math:`s' = s - 2.2 \log v^*`. Channels without a flat top are unchanged.
    """
    c, k = knots.shape
    flat = knots[:, -2] >= 1.0 - 1e-6
    if not bool(flat.any()):
        return knots, s
    grid = torch.linspace(0.0, 1.0, k, dtype=knots.dtype, device=knots.device)
    first = torch.argmax((knots >= 1.0 - 1e-6).to(torch.uint8), dim=1).clamp_min(1)
    lo = torch.gather(knots, 1, (first - 1).unsqueeze(1)).squeeze(1)
    hi = torch.gather(knots, 1, first.unsqueeze(1)).squeeze(1)
    frac = ((1.0 - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)
    v_sat = (first.to(knots.dtype) - 1.0 + frac) / (k - 1)
    v_sat = torch.where(flat, v_sat.clamp_min(1.0 / (k - 1)), 1.0)
    stretched = interp_curve(grid * v_sat.unsqueeze(1), knots, channel_dim=0)
    stretched[:, 0] = 0.0
    stretched[:, -1] = 1.0
    stretched = _project(stretched, min_log_slope, max_jump)
    s = s - (_GRID_GAMMA * torch.log(v_sat)).unsqueeze(1)
    return stretched, s


def fit_code_domain(
    y: Tensor,
    log_times: Tensor,
    *,
    bit_depth: int | None = 8,
    n_points: int = 256,
    n_knots: int = 32,
    iterations: int = 30,
    radiance_steps: int = 2,
    smoothness: float = 0.1,
    sigma: float | None = None,
    tol: float = 1e-4,
    init_curve: Tensor | None = None,
    outlier_threshold: float | None = None,
    floor: bool = True,
    time_prior: float | None = None,
    time_init: Tensor | None = None,
    min_log_slope: float = 0.0,
    max_jump: float | None = None,
    callback: Callable[[int, float], None] | None = None,
) -> CodeFitResult:
    r"""Fit a monotone camera response and per-pixel radiances to codes (censored Tobit NLL).

    Minimises over the response :math:`R` (piecewise linear on ``n_knots`` knots uniform in
    :math:`v = (e^{u})^{1/2.2}`, :math:`R(1) = 1` pinned, flat at 1 above saturation
    :math:`u = 0`, and :math:`R(0) = b` the *floor*: the code of no light, fitted) and the
    log radiances :math:`s_p`

    .. math::

        \sum_{c, p, k} \ell\big(Y_{c, p, k}, R_c(s_{c, p} + \log t_{p, k})\big)
        + \lambda_c \sum_j (R_{c, j-1} - 2 R_{c, j} + R_{c, j+1})^2

    with :math:`\ell` the censored NLL of :func:`censored_code_nll` and :math:`\lambda_c`
    ``smoothness`` times the mean data curvature per knot. After ``radiance_steps``
    Gauss-Newton steps on the radiances alone (from a hat-weighted merge with the initial
    curve), every iteration takes one joint Gauss-Newton step (radiances eliminated through
    the Schur complement of the block-arrow Hessian, one small solve per channel) and
    projects :math:`R` onto non-decreasing curves. :math:`\sigma` is re-estimated from the
    residuals (away from clipping) during the first iterations unless given. Stops when the
    response moves less than ``tol``, or (after 5 iterations) when its moves stop
    shrinking. The ICRF is :math:`R^{-1}`, normalised by saturation
    (:math:`\mathrm{ICRF}(1) = 1`), and 0 for codes up to the floor :math:`b`.

    **Floor.** Digital cameras give code 0 to no light, but film scans and some cameras never
    go below a floor (the Memorial Church scans sit at codes 11 to 19 in the dark, fog and
    the scanner's black point): pinning :math:`R(0) = 0` forces the response to climb from 0
    to the floor within its first knot and bends the whole dark end (on those scans the fit's
    noise estimate fell from 0.018-0.025 to 0.007 with the floor fitted). ``floor=True``
    (default) fits :math:`b \ge 0` with the response; on cameras without a floor it stays near
    0. Codes near the floor carry almost no information on the exposure: merge with a lower
    cutoff above it (``merge_hdr(lower=...)``). Saturation is where the response first reaches 1: a
    response that reaches 1 earlier and stays flat fits a stack exactly as well as the same
    response stretched to reach 1 at :math:`u = 0` with every radiance scaled (the clipping of
    the sensor and that of the response cannot be told apart for a hard-clipped curve such as
    a linear camera's), so after every step such a response is stretched; otherwise the ICRF
    would jump at the top code.

    **Exposure times.** With ``time_prior`` :math:`\tau`, every exposure gets a log-time
    offset :math:`\delta_k` (shared by the channels), solved jointly with the response and the
    radiances (``N`` more unknowns in the reduced Gauss-Newton system) under a Cauchy prior
    :math:`\sum_k \tfrac12 \log(1 + \delta_k^2 / \tau^2)` around the given times. The images
    fix the offsets up to a common scale and a common power (:math:`R(g u)` with
    :math:`t^g` explains a stack as well as :math:`R(u)` with :math:`t`): the prior sets
    those, so frames whose listed times agree keep them, and a frame grossly off costs a
    bounded amount and does not drag the exponent.

    **Minimum slope.** The projection onto non-decreasing curves makes the response flat
    wherever a step would make it fall. Over a stretch of exposures, that is a response no
    camera has, and its ICRF jumps between two adjacent codes. Such flats come from photos
    that disagree with each other or with their times (frames at the wrong stop, few frames
    far apart). With ``min_log_slope`` :math:`\kappa > 0` the projection also keeps the
    response above its floor growing at least as :math:`e^{\kappa u}`,
    :math:`d \log(R - b) / du \ge \kappa`. Real responses stay well above
    :math:`\kappa = 0.05` on codes 64..239 (a gamma-4 curve has 0.25, a BT.709 video
    knee about 0.09). A log-slope bounds the jump of the ICRF only loosely in the shadows
    (:math:`\kappa = 0.05` allows x1.37 between codes 64 and 65), so ``max_jump`` :math:`J`
    bounds it directly: over codes 64..239 the response rises by at least one code per
    :math:`\log J` of log exposure (for :math:`J = 1.1`, 7.3 codes per stop; sRGB rises 18 at
    code 64 and 69 at code 239). :func:`~deepinv_icrf.calibration.fit_icrf` refits with both when a
    fit's curve jumps.

    **Outliers.** A static scene is assumed: a pixel that changes between exposures (a moving
    person, a branch in the wind, a misregistered edge) breaks the model, and a few percent of
    such codes bend the whole curve. With ``outlier_threshold`` :math:`\tau`, once the fit
    has converged (or half the iterations are spent) the codes are grouped by channel and by
    the level of the fitted response (16 levels), and a code is left out when it lies more
    than :math:`\tau` robust stds (:math:`1.4826` times the median absolute deviation, at
    least the noise level :math:`\hat\sigma` of the median absolute residual) from its
    group's median residual (a clipped code: when the response lies that far on the wrong
    side of its threshold). Judging each level against its own spread keeps a curve that is
    still off at some level from losing that level's codes, while moving objects, a minority
    at every level, stand out. The fit then restarts every radiance at the median over its
    pixel's unclipped codes of :math:`\log \mathrm{ICRF}(y_k) - \log t_k` (which one moved
    code does not pull) and goes on without the outliers, re-deciding at every iteration.
    When less than 0.1% of every channel's codes (or fewer than 10 codes) would be left out
    the plain fit stands unchanged: for Gaussian noise :math:`\tau = 5` leaves out about one code in
    :math:`10^6`.

    :param torch.Tensor y: codes ``(C, P, N)``: ``P`` pixels of ``N`` exposures per channel,
        in :math:`[0, 1]` (a sample, see :func:`stratified_pixel_sample`).
    :param torch.Tensor log_times: log exposure times, ``(N,)`` or per pixel ``(P, N)``
        (pixels from several stacks); only differences matter.
    :param int, None bit_depth: bits of the codes (default 8), for censoring.
    :param int n_points: samples of the returned ICRF (default 256).
    :param int n_knots: knots of the response (default 32).
    :param int iterations: most outer iterations (default 30).
    :param int radiance_steps: Gauss-Newton steps on the radiances alone before the joint
        steps (default 2).
    :param float smoothness: relative weight of the second-difference penalty (default 0.1).
        One-stop brackets do not fix the shape of the response within a stop (Grossberg and
        Nayar 2002): the penalty decides it, strongly where few codes fall (the highlights of
        a dark scene), weakly where many do.
    :param float, None sigma: code noise std; ``None`` (default) estimates it.
    :param float tol: stop when the largest change of the response is below (default 1e-4).
    :param torch.Tensor, None init_curve: initial ICRF ``(C, L)`` or ``(1, L)`` (non-decreasing,
        0 to 1); ``None`` (default): :math:`y^{2.2}`.
    :param float, None outlier_threshold: leave out codes the response misses by more than
        this many noise stds (see above); ``None`` (default): keep every code.
    :param bool floor: fit the response at zero exposure (default True; see above), else pin
        it at 0.
    :param float, None time_prior: refine the exposure times too (see above): the scale
        :math:`\tau` of the Cauchy prior of each log-time offset, e.g. 0.05; ``None``
        (default): the times are fixed. Needs ``log_times`` of shape ``(N,)``.
    :param torch.Tensor, None time_init: starting log-time offsets ``(N,)`` (default 0),
        e.g. the corrections of :func:`~deepinv_icrf.functional.check_exposure_ratios`.
    :param float min_log_slope: least growth :math:`\kappa \ge 0` of the response above
        its floor, per unit of log exposure (default 0: monotone only; see above).
    :param float, None max_jump: largest ratio :math:`J > 1` of the ICRF at adjacent 8-bit
        codes over codes 64..239 (:func:`~deepinv_icrf.functional.curve_jump`) that the
        projection lets the response make (see above); ``None`` (default): no bound.
    :param Callable, None callback: called as ``callback(iteration, change)`` after every
        iteration (``change``: largest move of the response), e.g. for a progress bar.
    :return: (:class:`CodeFitResult`) curve, response, radiances, noise level, NLL,
        iterations, the floor and, with ``outlier_threshold``, the fraction of codes left
        out.

    |sep|

    :Example:

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> radiance = torch.rand(1, 3000, 1, generator=g) * 0.9 + 0.05
    >>> t = torch.tensor([0.25, 0.5, 1.0, 2.0])
    >>> codes = torch.round((radiance * t).clamp(max=1) ** (1 / 2.4) * 255) / 255
    >>> res = fit_code_domain(codes, t.log())
    >>> truth = torch.linspace(0, 1, 256) ** 2.4
    >>> bool((res.curve[0, 8:248] - truth[8:248]).abs().max() < 0.01)
    True
    """
    check_float(y, "y")
    sizes = check_shape(y, "y", ["C", "P", "N"])
    c, p, n = sizes["C"], sizes["P"], sizes["N"]
    if n < 2 or p < 1:
        raise ValueError(
            f"Expected `y` of shape (C, P, N) with P >= 1 pixels and N >= 2 exposures, but "
            f"got shape {tuple(y.shape)}."
        )
    check_float(log_times, "log_times")
    check_finite(log_times, "log_times")
    if log_times.shape not in ((n,), (p, n)):
        raise ValueError(
            f"Expected `log_times` of shape ({n},) or ({p}, {n}), but got shape "
            f"{tuple(log_times.shape)}."
        )
    for name, value, low in (
        ("n_points", n_points, 2),
        ("n_knots", n_knots, 4),
        ("iterations", iterations, 1),
        ("radiance_steps", radiance_steps, 1),
    ):
        check_int(value, name, low)
    if not isinstance(floor, bool):
        raise TypeError(f"Expected `floor` to be a bool, but got {floor!r}.")
    time_prior = check_threshold(time_prior, "time_prior", optional=True)
    if time_prior is not None and log_times.shape != (n,):
        raise ValueError(
            f"Expected `log_times` of shape ({n},) (one stack) to refine the times with "
            f"`time_prior`, but got shape {tuple(log_times.shape)}."
        )
    if time_init is not None:
        check_float(time_init, "time_init")
        check_finite(time_init, "time_init")
        if time_init.shape != (n,):
            raise ValueError(
                f"Expected `time_init` of shape ({n},), but got {tuple(time_init.shape)}."
            )
    if not (math.isfinite(smoothness) and smoothness >= 0):
        raise ValueError(f"Expected `smoothness` >= 0, but got {smoothness!r}.")
    if (
        isinstance(min_log_slope, bool)
        or not isinstance(min_log_slope, (int, float))
        or not (math.isfinite(min_log_slope) and min_log_slope >= 0)
    ):
        raise ValueError(
            f"Expected `min_log_slope` to be a finite number >= 0, but got {min_log_slope!r}."
        )
    min_log_slope = float(min_log_slope)
    max_jump = check_threshold(max_jump, "max_jump", optional=True, above=1.0)
    if sigma is not None:
        check_positive(torch.tensor(float(sigma)), "sigma")
    outlier_threshold = check_threshold(
        outlier_threshold, "outlier_threshold", optional=True
    )
    if init_curve is not None:
        check_float(init_curve, "init_curve")
        if (
            init_curve.ndim != 2
            or init_curve.shape[0] not in (1, c)
            or init_curve.shape[1] < 2
        ):
            raise ValueError(
                f"Expected `init_curve` of shape ({c}, L) or (1, L), but got shape "
                f"{tuple(init_curve.shape)}."
            )
        check_finite(init_curve, "init_curve")
    q = _quantum(bit_depth)
    dtype = compute_dtype(y, log_times)
    device = y.device
    with torch.no_grad():
        y = y.detach().to(dtype)
        lt = log_times.detach().to(device=device, dtype=dtype)
        # saturation of the brightest pixel of the longest exposure: 0
        lt0 = (lt - lt.max()).expand(p, n)
        # log-time offsets (refined with a robust prior when time_prior is given)
        delta = torch.zeros(n, dtype=dtype, device=device)
        if time_init is not None:
            delta = time_init.detach().to(device=device, dtype=dtype).clone()
        lt = lt0 + delta
        delta_precision = None if time_prior is None else 1.0 / time_prior**2

        def prior_weights() -> Tensor:
            # Cauchy prior on each offset (iteratively reweighted): a frame whose listed time
            # is grossly wrong costs a bounded amount and does not drag the others
            return delta_precision / (1.0 + delta * delta * delta_precision)

        low, high = _censoring(y, q)
        uncensored = ~(low | high)
        censored_index = (~uncensored).reshape(-1).nonzero().squeeze(1)
        top = high.reshape(-1).index_select(0, censored_index)
        sign = torch.where(top, 1.0, -1.0).to(dtype)
        threshold = torch.where(top, 1.0 - 0.5 * q, 0.5 * q).to(dtype)
        y_in = torch.where(uncensored, y, 0.0)

        # start: the initial ICRF, radiance from a hat-weighted merge
        v = torch.linspace(0.0, 1.0, n_knots, dtype=dtype, device=device)
        if init_curve is None:
            init = torch.linspace(0.0, 1.0, 256, dtype=dtype, device=device).pow(2.2)
            init = init.expand(c, 256)
        else:
            init = init_curve.detach().to(device=device, dtype=dtype).expand(c, -1)
        init = torch.cummax(init.clamp(0.0, 1.0), dim=1).values.contiguous()
        lin = interp_curve(y.clamp_min(max(q, 1e-3)), init, channel_dim=0)
        weight = ((y > 0.02) & (y < 0.98)).to(dtype) + 1e-6
        lin = lin.clamp_min(1e-8) / lt.exp()
        s = torch.log((weight * lin).sum(-1) / weight.sum(-1))
        x = v.pow(_GRID_GAMMA).expand(c, n_knots).contiguous()
        knots = _project(invert_curve(x, init, channel_dim=0), min_log_slope, max_jump)
        knots[:, 0] = 0.0
        knots[:, -1] = 1.0
        offsets = (torch.arange(c, device=device) * n_knots).view(c, 1, 1)
        gram = _second_difference_gram(n_knots, dtype, device)
        cens = (censored_index, threshold, sign)
        if sigma is None:
            value, _, _, _ = _response_at(s.unsqueeze(-1) + lt, knots, offsets)
            sig = _residual_sigma(value, y, uncensored)
        else:
            sig = torch.full((c,), float(sigma), dtype=dtype, device=device)

        pix = (torch.arange(c * p, device=device).view(c, p, 1) * n_knots).to(
            torch.long
        )
        done = 0
        previous = math.inf
        # outlier rejection: off until the plain fit has settled (or half the budget is spent)
        weight: Tensor | None = None
        robust_from = math.inf if outlier_threshold is None else (iterations + 1) // 2
        phase_start, moved = 0, False
        # the response at the current radiances, times and knots, when already computed
        at: tuple[Tensor, Tensor, Tensor, Tensor] | None = None
        for it in range(iterations):
            done = it + 1
            inv_sigma = (1.0 / sig).view(c, 1, 1)
            if it == 0:
                for _ in range(radiance_steps):
                    s = _radiance_step(s, lt, knots, offsets, y_in, inv_sigma, cens)
                at = None
            if it >= robust_from:
                if at is None:
                    at = _response_at(s.unsqueeze(-1) + lt, knots, offsets)
                value = at[0]
                robust = (
                    sig if sigma is not None else _robust_sigma(value, y, uncensored)
                )
                kept = _inlier_weights(
                    value, y, low, high, robust, q, float(outlier_threshold)
                )
                if weight is None:
                    dropped = (1.0 - kept).sum(dim=(1, 2))
                    enough = dropped >= max(_MIN_OUTLIERS * p * n, _MIN_OUTLIER_CODES)
                    if not bool(enough.any()):
                        done = it
                        break  # (almost) nothing to leave out: the plain fit stands
                    phase_start, previous = it, math.inf
                    # radiances the moving objects did not pull, then decide again
                    s = _median_radiance(s, y, lt, knots, uncensored)
                    at = _response_at(s.unsqueeze(-1) + lt, knots, offsets)
                    value = at[0]
                    if sigma is None:
                        robust = _robust_sigma(value, y, uncensored)
                    kept = _inlier_weights(
                        value, y, low, high, robust, q, float(outlier_threshold)
                    )
                # the set of codes left out still changes (beyond a few at the boundary)
                moved = weight is None or bool(
                    (kept != weight).sum() > _SETTLED_FLIPS * kept.numel()
                )
                weight, sig = kept, robust
                inv_sigma = (1.0 / sig).view(c, 1, 1)
            step_r, step_s, step_d = _joint_step(
                s,
                lt,
                knots,
                offsets,
                pix,
                y_in,
                inv_sigma,
                cens,
                gram,
                smoothness,
                weight,
                free_floor=floor,
                times=None if delta_precision is None else (delta, prior_weights()),
                at=at,
            )
            at = None
            new = _project(knots - step_r, min_log_slope, max_jump)
            s = s - step_s
            moved_times = 0.0
            if step_d is not None:
                delta = delta - step_d
                lt = lt0 + delta
                moved_times = float(step_d.abs().max())
            # keep the gauge: saturation where the response first reaches 1
            new, s = _unflatten_top(new, s, min_log_slope, max_jump)
            # offsets are in log units: 10 tol of them weigh like tol of the response
            change = max(float((new - knots).abs().max()), 0.1 * moved_times)
            knots = new
            if callback is not None:
                callback(it, change)
            if sigma is None and weight is None and it < _SIGMA_ITERATIONS:
                at = _response_at(s.unsqueeze(-1) + lt, knots, offsets)
                sig = _residual_sigma(at[0], y, uncensored)
            # converged, or no longer contracting (a cycle of the monotone projection)
            settled = change < tol or (
                it - phase_start >= 5 and change >= 0.95 * previous
            )
            if weight is not None and moved and it - phase_start < 10:
                settled = False  # the set of codes left out is still changing
            if settled and weight is None and robust_from < math.inf:
                robust_from = it + 1  # now leave the outliers out
            elif settled:
                break
            previous = change

        if at is None:
            at = _response_at(s.unsqueeze(-1) + lt, knots, offsets)
        terms = censored_code_nll(y, at[0], sig.view(c, 1, 1), bit_depth)
        outliers = None
        if weight is None:
            nll = terms.mean(dim=(1, 2))
            if outlier_threshold is not None:
                outliers = torch.zeros(c, dtype=dtype, device=device)
        else:
            nll = (terms * weight).sum(dim=(1, 2)) / weight.sum(dim=(1, 2)).clamp_min(1)
            outliers = 1.0 - weight.mean(dim=(1, 2))
        curve = _invert_response(knots, n_points)
    return CodeFitResult(
        curve=curve,
        response=knots,
        log_radiance=s,
        sigma=sig,
        nll=nll,
        iterations=done,
        outlier_fraction=outliers,
        floor=knots[:, 0].clone() if floor else None,
        log_time_offset=None if time_prior is None else delta,
    )
