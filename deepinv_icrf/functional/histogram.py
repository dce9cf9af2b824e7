r"""Joint code histograms: the sufficient statistics of the radiometric linearity loss.

For a stack of integer codes (8-bit exactly; 10 to 16-bit after binning) without per-pixel
standard deviations (or with stds that depend on the code only), every pixel term of
:func:`deepinv_icrf.functional.radiometric_linearity` depends on the pixel only through its
pair of codes :math:`(a, b) = (Y_i, Y_j)`. The loss is then a weighted sum over the joint code
histogram :math:`n_{p, c}(a, b)` of every exposure pair :math:`p` and channel :math:`c`,

.. math::

    m_{p, c} = \frac{\sum_{a, b} W_{p, c}(a, b)\,
    d\big(f_c(a), f_c(b)\big)}{\max\left(\sum_{a, b} W_{p, c}(a, b), 10^{-8}\right)},
    \qquad W_{p, c}(a, b) = \sum_{\text{pixels in } (a, b)} g(Y_i) + g(Y_j),

which :func:`build_linearity_histogram` computes once per stack, outside autograd, keeping
only the occupied bins, and :func:`linearity_from_histogram` evaluates for any curve
:math:`f` in :math:`O(\text{pairs} \times C \times \text{occupied bins})`, independent of the
image size. When every code has its own bin, the value and the gradient with respect to the
curve are those of the dense path (to float rounding).

The statistics are sums over pixels, so the histograms of disjoint pixel shards of one stack
(for instance one shard per process) combine exactly with :meth:`LinearityHistogram.merge`.

This module is the histogram path's public face and evaluates the statistics; the record
(:class:`LinearityHistogram`) lives in :mod:`~deepinv_icrf.functional.histogram_data`, its
builder in :mod:`~deepinv_icrf.functional.histogram_build` and the bit-depth detection in
:mod:`~deepinv_icrf.functional.codes`. Every name is importable from here.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepinv_icrf._checks import check_float, compute_dtype
from deepinv_icrf.functional.codes import (  # noqa: F401
    BIT_DEPTHS,
    ContinuousInputError,
    _code_std,  # the private names are loss/linearity.py's (tests/test_lint.py)
    _std_table,
    detect_bit_depth,
)
from deepinv_icrf.functional.histogram_build import (  # noqa: F401
    _check_max_bins,
    build_linearity_histogram,
)
from deepinv_icrf.functional.histogram_data import (  # noqa: F401
    LinearityHistogram,
    _compact_index,  # read by tests/test_histogram.py
    _index_dtype,
)
from deepinv_icrf.functional.interp import curve_slope, interp_curve
from deepinv_icrf.functional.linearity import (
    _MEAN_EPS,
    _exposure_pairs,
    _inverse_uncertainty,
    aggregate_pairs,
    linearity_residual,
    propagate_std,
)

__all__ = [
    "ContinuousInputError",
    "LinearityHistogram",
    "detect_bit_depth",
    "build_linearity_histogram",
    "linearity_from_histogram",
]


def linearity_from_histogram(
    curve: Tensor,
    hist: LinearityHistogram,
    *,
    relative: bool = True,
    use_uncertainty_weighting: bool = True,
    detach_std: bool = True,
) -> Tensor:
    r"""Radiometric linearity of a curve, from the joint code histograms of a stack.

    With :math:`f_c` the piecewise-linear curve (see
    :func:`deepinv_icrf.functional.interp_curve`) evaluated at each entry's codes,

    .. math::

        m_{p, c} = \frac{\sum_e W_e\, d_e}{\max(\sum_e W_e, 10^{-8})}, \qquad
        L_c = \sqrt{\sum_p m_{p, c}^2},

    with :math:`d_e` from :func:`deepinv_icrf.functional.linearity_residual` at
    :math:`(f_c(a), f_c(b), r_p)` and :math:`W_e = \sum g(Y_i) + g(Y_j) [+ n_e / (\sigma_e +
    10^{-6})]` (the uncertainty term with a ``y_std_table`` and ``use_uncertainty_weighting``,
    :math:`s_X = |f_c'(Y)|\, s_Y`). The same value and gradient with respect to ``curve`` as
    :func:`deepinv_icrf.functional.radiometric_linearity` on ``x = interp_curve(y, curve)``
    when the bins are exact. Cost: :math:`O(M)`, no dependence on the image size.

    :param torch.Tensor curve: the ICRF curve ``(C, L)`` (or ``(1, L)``, shared), on the
        device of ``hist``; differentiable.
    :param LinearityHistogram hist: statistics from :func:`build_linearity_histogram`.
    :param bool relative: relative (``True``, default) or absolute residuals.
    :param bool use_uncertainty_weighting: add inverse-uncertainty weights when ``hist``
        holds stds. Default ``True``.
    :param bool detach_std: treat the propagated stds as constants (no gradient through
        :math:`f'`), as clair-torch does. Default ``True``.
    :return: (:class:`torch.Tensor`) shape ``(B, C)``, float32 (float64 when ``curve`` or the
        stack is float64).

    :Example:

    >>> import torch
    >>> t = torch.tensor([1.0, 2.0, 4.0])
    >>> radiance = torch.linspace(0.02, 0.24, 35).view(1, 1, 1, 5, 7)
    >>> y = torch.round((radiance * t.view(1, 3, 1, 1, 1)) ** (1 / 2.2) * 255) / 255
    >>> hist = build_linearity_histogram(y, t)
    >>> identity = torch.linspace(0, 1, 256).unsqueeze(0)
    >>> linearity_from_histogram(identity, hist)
    tensor([[1.3051]])
    >>> from deepinv_icrf.functional import interp_curve, radiometric_linearity
    >>> radiometric_linearity(y, interp_curve(y, identity), t)  # the dense path
    tensor([[1.3051]])
    """
    if not isinstance(hist, LinearityHistogram):
        raise TypeError(
            "Expected `hist` to be a LinearityHistogram (from build_linearity_histogram), "
            f"but got {type(hist).__name__}."
        )
    check_float(curve, "curve")
    channels = hist.shape[2]
    if curve.ndim != 2 or curve.shape[0] not in (1, channels) or curve.shape[1] < 2:
        raise ValueError(
            f"Expected `curve` to have shape ({channels}, L) or (1, L) with L >= 2, "
            f"but got shape {tuple(curve.shape)}."
        )
    if curve.device != hist.device:
        raise ValueError(
            f"Expected `curve` on the device of `hist` ({hist.device}), but got "
            f"{curve.device}; move the histogram once with `hist.to(device)`."
        )
    dtype = compute_dtype(curve, hist.points, hist.exposure_times)
    # the curve at every code (or centroid): the same values as the ICRF applied to the stack
    f_points = interp_curve(hist.points, curve, channel_dim=0).to(dtype).reshape(-1)
    # index_select (not take): its gradient is an index_add, much faster than put_
    f_i = f_points.index_select(0, hist.index_i)
    f_j = f_points.index_select(0, hist.index_j)
    _, _, ratio, pair_valid = _exposure_pairs(
        hist.exposure_times.to(dtype), hist.threshold
    )
    # the ratio of every entry's pair, through its group (no per-entry pair index stored)
    ratio_groups = ratio.unsqueeze(-1).expand(*ratio.shape, channels).reshape(-1)
    r = ratio_groups.index_select(0, hist.group)
    s_i = s_j = None
    if hist.std_points is not None:
        slope = curve_slope(hist.points, curve, channel_dim=0).to(dtype)
        if detach_std:
            slope = slope.detach()
        s_points = propagate_std(hist.std_points.to(dtype), slope).reshape(-1)
        s_i = s_points.index_select(0, hist.index_i)
        s_j = s_points.index_select(0, hist.index_j)
    d, sigma = linearity_residual(f_i, f_j, r, s_i, s_j, relative)

    n_groups = hist.weight_sum.numel()
    weight = hist.weight
    den = hist.weight_sum.reshape(-1)
    if sigma is not None and use_uncertainty_weighting:
        weight = weight + hist.count * _inverse_uncertainty(sigma).double()
        den = torch.zeros(n_groups, dtype=torch.float64, device=hist.device)
        den = den.index_add(0, hist.group, weight)
    num = torch.zeros(n_groups, dtype=torch.float64, device=hist.device)
    num = num.index_add(0, hist.group, weight * d.double())
    m = (num / den.clamp(min=_MEAN_EPS)).to(dtype)
    return aggregate_pairs(m.view(hist.weight_sum.shape), pair_valid)
