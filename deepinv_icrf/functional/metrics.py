r"""Accuracy of a fitted curve against a known one."""

from __future__ import annotations

import torch
from torch import Tensor

from deepinv_icrf._checks import check_float, check_shape
from deepinv_icrf.bracket import check_bit_depth

__all__ = ["curve_rmse"]


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
