r"""Measures of a fitted curve: its error against a known one, its largest jump between codes."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from deepinv_icrf._checks import check_float, check_shape
from deepinv_icrf.bracket import check_bit_depth

__all__ = ["curve_rmse", "curve_jump"]

#: Codes (of 255) over which :func:`curve_jump` judges a curve by default: a response may
#: be flat in the shadows and at the shoulder, not in between.
JUMP_LOW, JUMP_HIGH = 64 / 255, 239 / 255


def curve_rmse(
    curve: Tensor,
    reference: Tensor,
    low: int = 8,
    high: int = 247,
    bit_depth: int = 8,
    fit_scale: bool = False,
) -> Tensor:
    r"""Root-mean-square error of a curve against a reference over a range of codes, per channel.

    Both curves are sampled on uniform grids of :math:`[0, 1]` (any numbers of samples) and
    compared at the codes :math:`k / (2^b - 1)` for :math:`k = \text{low}, \dots, \text{high}`:

    .. math::

        \mathrm{RMSE}_c = \sqrt{\frac{1}{K} \sum_k \big(s_c f_c(k) - g_c(k)\big)^2}

    where :math:`s_c = 1`, or the least-squares scale
    :math:`s_c = \sum_k f_c g_c / \sum_k f_c^2` when ``fit_scale`` is true (so that methods whose
    curve is only defined up to scale are compared alike).

    :param torch.Tensor curve: fitted curve ``(C, L)``.
    :param torch.Tensor reference: reference curve ``(C, L')``.
    :param int low: first code compared (default 8).
    :param int high: last code compared (default 247).
    :param int bit_depth: bit depth of the codes (default 8).
    :param bool fit_scale: fit a per-channel scale first (default False).
    :return: (:class:`torch.Tensor`) RMSE per channel ``(C,)``.

    |sep|

    :Example:

    >>> import torch
    >>> grid = torch.linspace(0, 1, 256).expand(3, 256)
    >>> curve_rmse(grid**2.2, grid**2.2)
    tensor([0., 0., 0.])
    >>> curve_rmse(0.5 * grid, grid, fit_scale=True)
    tensor([0., 0., 0.])
    """
    from deepinv_icrf.functional.interp import interp_curve

    check_float(curve, "curve")
    check_float(reference, "reference")
    c = check_shape(curve, "curve", ["C", "L"])["C"]
    check_shape(reference, "reference", [c, "L"])
    top = 2 ** check_bit_depth(bit_depth, optional=False) - 1
    if not 0 <= low <= high <= top:
        raise ValueError(
            f"Expected 0 <= `low` <= `high` <= {top}, but got low={low}, high={high}."
        )
    dtype = (
        torch.float64
        if torch.float64 in (curve.dtype, reference.dtype)
        else torch.float32
    )
    codes = torch.arange(low, high + 1, device=curve.device, dtype=dtype) / top
    codes = codes.expand(c, -1)
    f = interp_curve(codes, curve.to(dtype), channel_dim=-2)
    g = interp_curve(
        codes, reference.to(device=curve.device, dtype=dtype), channel_dim=-2
    )
    if fit_scale:
        s = (f * g).sum(-1, keepdim=True) / (f * f).sum(-1, keepdim=True).clamp_min(
            1e-30
        )
        f = s * f
    return ((f - g) ** 2).mean(-1).sqrt()


def curve_jump(curve: Tensor, low: float = JUMP_LOW, high: float = JUMP_HIGH) -> Tensor:
    r"""Largest ratio of adjacent values of a curve over a range of codes, per channel.

    For a curve sampled at :math:`L` uniform codes :math:`x_i = i / (L - 1)`,

    .. math::

        J_c = \max_{\text{low} \le x_i < x_{i+1} \le \text{high}} f_c(x_{i+1}) / f_c(x_i).

    A camera's response is smooth, so adjacent codes of its ICRF differ by a few percent
    (1.03-1.04 on the real brackets of the benchmarks): a jump far above that is a flat
    stretch of the response, which no camera has.

    :param torch.Tensor curve: curve ``(C, L)`` (an ICRF). Pairs with a value of 0 do not
        count: an ICRF is 0 up to the floor of its codes, by convention, not by a jump.
    :param float low: first code of the range, in :math:`[0, 1]` (default 64/255).
    :param float high: last code of the range (default 239/255).
    :return: (:class:`torch.Tensor`) the largest ratio per channel ``(C,)``; 1 where the
        range holds no pair of positive samples. Sample the curve at every code (256 points
        for 8 bits): on a coarser grid adjacent samples are further apart than codes.

    |sep|

    :Example:

    >>> import torch
    >>> grid = torch.linspace(0, 1, 256).expand(1, 256)
    >>> curve_jump(grid**2.2)
    tensor([1.0347])
    """
    check_float(curve, "curve")
    length = check_shape(curve, "curve", ["C", "L"])["L"]
    if not 0.0 <= low < high <= 1.0:
        raise ValueError(
            f"Expected 0 <= `low` < `high` <= 1, but got {low!r} and {high!r}."
        )
    # the codes of the range, robust to 64 / 255 * 255 landing a hair off 64
    first = max(0, math.ceil(low * (length - 1) - 1e-9))
    last = min(length - 1, math.floor(high * (length - 1) + 1e-9))
    if last <= first:
        return torch.ones(curve.shape[0], dtype=curve.dtype, device=curve.device)
    part = curve[:, first : last + 1]
    ratio = part[:, 1:] / part[:, :-1]
    ratio = torch.where((part[:, :-1] > 0) & (part[:, 1:] > 0), ratio, 1.0)
    return ratio.amax(dim=1).clamp_min(1.0)
