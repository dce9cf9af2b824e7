r"""The code fit's outlier rule: codes that no single radiance explains (moving objects).

Residuals of the unclipped codes are judged per group (channel, say) and per level of the
prediction against the group's own median and median absolute deviation, so that a curve still
off at some level does not lose that level's codes while a moving object, a minority at every
level, stands out (:func:`code_inlier_mask`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from deepinv_icrf._checks import check_float, check_threshold, compute_dtype
from deepinv_icrf.functional.censored import _censoring, _quantum

__all__ = ["code_inlier_mask"]

#: Smallest noise level used (a noise-free stack still has quantisation noise).
_MIN_SIGMA = 1e-4
#: Levels of the response within which outliers are judged against the local spread.
_OUTLIER_BINS = 16
#: Standard deviation of a normal distribution per unit of median absolute deviation.
_MAD_TO_STD = 1.482602218505602


def _robust_sigma(value: Tensor, y: Tensor, uncensored: Tensor) -> Tensor:
    r"""Noise level per channel that outliers do not inflate: :math:`1.4826` times the
    median absolute residual of the codes away from clipping (same per-pixel correction as
    :func:`_residual_sigma`)."""
    c = value.shape[0]
    per_pixel = uncensored.sum(dim=2, keepdim=True).to(value.dtype)
    mid = uncensored & (value > 0.05) & (value < 0.95)
    scale = (1.0 - 1.0 / per_pixel.clamp_min(2.0)).expand_as(value)
    r = ((value - y).abs() / scale.sqrt()).where(mid, math.nan)
    med = r.reshape(c, -1).nanmedian(dim=1).values.nan_to_num(0.0)
    return (_MAD_TO_STD * med).clamp_min(_MIN_SIGMA)


#: Histogram bins per group used to find an order statistic before the exact pick.
_QUANTILE_BINS = 1024


def _group_quantiles(
    x: Tensor, group: Tensor, n_groups: int, probs: tuple[float, ...]
) -> tuple[Tensor, Tensor]:
    r"""Quantiles ``probs`` of ``x`` (1-D) within each of ``n_groups`` groups (the sorted
    value at index :math:`\lfloor p (n - 1) \rfloor`, 0 for an empty group), shape
    ``(len(probs), n_groups)``, and the group sizes.

    Exact, without sorting all of ``x``: a histogram of each group (1024 bins over the range
    of ``x``, one ``bincount``) finds the bin holding the wanted order statistic, and only the
    values of those bins are sorted to pick it. On the code fit's 150k residuals this takes a
    fifth of the time of a full sort.
    """
    count = torch.bincount(group, minlength=n_groups)
    if x.numel() == 0:
        return x.new_zeros(len(probs), n_groups), count
    bins = _QUANTILE_BINS
    lo, hi = x.min(), x.max()
    width = (hi - lo).clamp_min(torch.finfo(x.dtype).tiny) / bins
    cell = ((x - lo) / width).long().clamp_(0, bins - 1)
    key = group * bins + cell
    hist = torch.bincount(key, minlength=n_groups * bins).view(n_groups, bins)
    below = hist.cumsum(dim=1)
    last = (count - 1).clamp_min(0).to(torch.float64)
    out = []
    for p in probs:
        rank = torch.floor(p * last).long()  # 0-based rank within the group
        target = torch.searchsorted(below, rank.unsqueeze(1), right=True).squeeze(1)
        target = target.clamp_(max=bins - 1)
        before = below.gather(1, target.unsqueeze(1)).squeeze(1) - hist.gather(
            1, target.unsqueeze(1)
        ).squeeze(1)
        # the values of each group's target bin, sorted by (group, value)
        chosen = key == (torch.arange(n_groups, device=x.device) * bins + target)[group]
        where = chosen.nonzero().squeeze(1)
        values, groups = x.index_select(0, where), group.index_select(0, where)
        span = 2.0 * float(hi - lo) + 1.0
        order = torch.sort(groups.to(torch.float64) * span + (values - lo).double())
        values = values[order.indices]
        first = torch.cumsum(torch.bincount(groups, minlength=n_groups), 0)
        first = first - torch.bincount(groups, minlength=n_groups)
        pick = (first + rank - before).clamp(0, max(values.numel() - 1, 0))
        picked = (
            values.index_select(0, pick) if values.numel() else x.new_zeros(n_groups)
        )
        out.append(torch.where(count > 0, picked, 0.0))
    return torch.stack(out), count


def _inlier_weights(
    value: Tensor,
    y: Tensor,
    low: Tensor,
    high: Tensor,
    sigma: Tensor,
    q: float,
    threshold: float,
) -> Tensor:
    r"""1 for the codes the fitted response explains, 0 for outliers (any shape ``(G, ...)``,
    ``G`` groups judged apart, e.g. channels; ``sigma`` ``(G,)``).

    The residuals :math:`y - R` of the unclipped codes are grouped by ``G`` and by the level
    of :math:`R` (``_OUTLIER_BINS`` bins); in each group a code is an outlier when it lies
    farther than ``threshold`` robust stds (:math:`1.4826` times the median absolute
    deviation, at least ``sigma``) from the group's median residual. Judging each level
    against its own spread keeps a curve that is still off somewhere (all residuals of that
    level shifted) from losing that level's codes, while a moving object, a minority at every
    level, stands out. A code clipped at the top is an outlier where :math:`R` lies more than
    that below :math:`1 - q/2` (at the bottom: above :math:`q/2`).
    """
    c = value.shape[0]
    bins = _OUTLIER_BINS
    shape = (c,) + (1,) * (value.ndim - 1)
    level = (value.clamp(0.0, 1.0) * bins).long().clamp_(max=bins - 1)
    group = level + torch.arange(c, device=value.device).view(shape) * bins
    # clipped codes go to one extra group, judged apart below (no compacted copy of the rest)
    g = torch.where(low | high, c * bins, group).reshape(-1)
    r = (y - value).reshape(-1)
    (center,), count = _group_quantiles(r, g, c * bins + 1, (0.5,))
    (spread,), _ = _group_quantiles((r - center[g]).abs(), g, c * bins + 1, (0.5,))
    center, spread, count = center[:-1], spread[:-1], count[:-1]
    floor = sigma.view(c, 1).expand(c, bins).reshape(-1)
    scale = torch.where(count >= 20, (_MAD_TO_STD * spread).maximum(floor), floor)
    center = torch.where(count >= 20, center, 0.0)
    band = threshold * scale.index_select(0, group.reshape(-1)).view_as(value)
    shift = center.index_select(0, group.reshape(-1)).view_as(value)
    far = (y - value - shift).abs() > band
    far = torch.where(high, value < 1.0 - 0.5 * q - band, far)
    far = torch.where(low, value > 0.5 * q + band, far)
    return (~far).to(value.dtype)


def code_inlier_mask(
    y: Tensor,
    y_hat: Tensor,
    sigma: float | Tensor,
    threshold: float = 5.0,
    bit_depth: int | None = 8,
) -> Tensor:
    r"""Which observed codes a prediction explains: 1, or 0 for outliers (moving objects).

    The outlier rule of :func:`fit_code_domain`: the residuals :math:`y - \hat y` of the
    unclipped codes are grouped by the first dimension (e.g. channels) and by the level of
    :math:`\hat y` (16 levels), and a code is an outlier when

    .. math::

        |y - \hat y - m_g| > \tau \max(1.4826\, \mathrm{MAD}_g,\ \sigma)

    with :math:`m_g` and :math:`\mathrm{MAD}_g` the median and the median absolute deviation
    of its group's residuals (groups of fewer than 20 codes: :math:`m_g = 0` and the scale
    :math:`\sigma`). A code clipped at the top (:math:`y \ge 1 - q/2`) is an outlier when
    :math:`\hat y < 1 - q/2 - \tau s_g`, one clipped at the bottom when
    :math:`\hat y > q/2 + \tau s_g`. Not differentiable (a mask).

    :param torch.Tensor y: observed codes in :math:`[0, 1]`, shape ``(G, ...)``.
    :param torch.Tensor y_hat: predicted noise-free codes, same shape.
    :param float, torch.Tensor sigma: smallest noise std per group, a number or ``(G,)``.
    :param float threshold: :math:`\tau`, in robust stds (default 5).
    :param int, None bit_depth: bits of the codes, for the clipping thresholds (default 8).
    :return: (:class:`torch.Tensor`) 0/1 mask of the shape of ``y``, float.

    |sep|

    :Example:

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y_hat = torch.rand(1, 2000, generator=g) * 0.8 + 0.1
    >>> y = y_hat + 0.01 * torch.randn(1, 2000, generator=g)
    >>> y[0, :10] = 0.05  # ten codes from something else
    >>> mask = code_inlier_mask(y, y_hat, 0.01, bit_depth=None)
    >>> int((mask[0, :10] == 0).sum()), int((mask[0, 10:] == 0).sum())
    (10, 0)
    """
    check_float(y, "y")
    check_float(y_hat, "y_hat")
    if y.shape != y_hat.shape or y.ndim < 1:
        raise ValueError(
            f"Expected `y` and `y_hat` of the same shape (G, ...), but got {tuple(y.shape)} "
            f"and {tuple(y_hat.shape)}."
        )
    threshold = check_threshold(threshold, "threshold")
    q = _quantum(bit_depth)
    dtype = compute_dtype(y, y_hat)
    with torch.no_grad():
        y, y_hat = y.detach().to(dtype), y_hat.detach().to(dtype)
        groups = y.shape[0]
        sigma = torch.as_tensor(sigma, dtype=dtype, device=y.device).detach()
        if sigma.numel() not in (1, groups):
            raise ValueError(
                f"Expected `sigma` to be a number or of shape ({groups},), but got shape "
                f"{tuple(sigma.shape)}."
            )
        sigma = sigma.reshape(-1).expand(groups).clamp_min(_MIN_SIGMA)
        low, high = _censoring(y, q)
        return _inlier_weights(y_hat, y, low, high, sigma, q, float(threshold))
