r"""Uncertainty of a fitted curve: bootstrap bands, their coverage, the code noise of a stack."""

from __future__ import annotations

from statistics import NormalDist

import torch
from torch import Tensor

from deepinv_icrf._checks import check_band, check_float, check_shape
from deepinv_icrf.bracket import check_bit_depth

__all__ = ["bootstrap_band", "band_coverage", "jackknife_std", "residual_code_std"]

_MAD_TO_STD = 1.4826


def bootstrap_band(
    samples: Tensor,
    center: Tensor,
    level: float = 0.95,
    extra_std: Tensor | None = None,
    alternatives: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    r"""A bias-aware confidence band of a curve from bootstrap refits.

    With the fitted curve :math:`\hat f`, the refits :math:`f^*_b` (:math:`b = 1..B`) on data
    simulated from :math:`\hat f`, their mean bias :math:`\beta = \overline{f^*} - \hat f` and
    standard deviation :math:`s`, and :math:`z` the normal quantile of ``level``:

    .. math::

        \mathrm{lower} = \min(\hat f, \hat f - \beta) - z s, \qquad
        \mathrm{upper} = \max(\hat f, \hat f - \beta) + z s,

    clamped to :math:`[0, 1]` with the endpoints pinned (:math:`0` at code 0, :math:`1` at the
    last). The band spans the fitted curve and its bias-corrected version (the basic
    bootstrap centre), widened by the spread: a fit whose error is mostly bias (noise in the
    codes biases every irradiance-domain method) is still covered. With ``alternatives``
    :math:`a_j` (the same curve from other estimators), the band is also moved onto each of
    them, :math:`\mathrm{lower} \leftarrow \min(\mathrm{lower}, \mathrm{lower} + a_j -
    \hat f)` and likewise for the upper bound: where reasonable estimators disagree, the
    data do not pin the curve.

    :param torch.Tensor samples: refitted curves ``(B, C, L)``, ``B >= 2``.
    :param torch.Tensor center: the fitted curve ``(C, L)``.
    :param float level: coverage level in ``(0, 1)`` (default 0.95).
    :param torch.Tensor, None extra_std: an independent uncertainty ``(C, L)`` the refits do not
        hold (e.g. of the exposure exponent), added to :math:`s` in quadrature (default None).
    :param torch.Tensor, None alternatives: curves ``(J, C, L)`` of other estimators the
        band must also cover, shifted by its own widths (default None).
    :return: (tuple) ``(lower, upper)``, each ``(C, L)``, dtype of ``center``.

    |sep|

    :Example:

    >>> import torch
    >>> grid = torch.linspace(0, 1, 5).expand(1, 5)
    >>> samples = torch.stack([grid**2 + 0.01, grid**2 + 0.03])
    >>> lower, upper = bootstrap_band(samples, grid**2)
    >>> lower, upper
    (tensor([[0.0000, 0.0148, 0.2023, 0.5148, 1.0000]]), tensor([[0.0000, 0.0902, 0.2777, 0.5902, 1.0000]]))
    """
    check_float(samples, "samples")
    check_float(center, "center")
    dims = check_shape(samples, "samples", ["B", "C", "L"])
    check_shape(center, "center", [dims["C"], dims["L"]])
    if dims["B"] < 2:
        raise ValueError(f"Expected at least 2 bootstrap samples, but got {dims['B']}.")
    if not 0.0 < level < 1.0:
        raise ValueError(f"Expected `level` in (0, 1), but got {level!r}.")
    work = torch.float64
    s = samples.to(work)
    c = center.to(s.device, work)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    bias = s.mean(0) - c
    spread = s.std(0, unbiased=True)
    if extra_std is not None:
        check_shape(extra_std, "extra_std", [dims["C"], dims["L"]])
        spread = (spread**2 + extra_std.to(s.device, work) ** 2).sqrt()
    corrected = c - bias
    lower = torch.minimum(c, corrected) - z * spread
    upper = torch.maximum(c, corrected) + z * spread
    if alternatives is not None:
        check_float(alternatives, "alternatives")
        check_shape(alternatives, "alternatives", ["J", dims["C"], dims["L"]])
        shift = alternatives.to(s.device, work) - c
        lower = lower + shift.amin(dim=0).clamp(max=0.0)
        upper = upper + shift.amax(dim=0).clamp(min=0.0)
    lower = lower.clamp(0.0, 1.0)
    upper = upper.clamp(0.0, 1.0)
    lower[:, 0] = 0.0
    upper[:, 0] = 0.0
    lower[:, -1] = 1.0
    upper[:, -1] = 1.0
    return lower.to(center.dtype), upper.to(center.dtype)


def jackknife_std(samples: Tensor) -> Tensor:
    r"""Delete-one jackknife standard deviation of an estimate from its leave-one-out values.

    With :math:`\hat\theta_{(i)}` the estimate computed without observation unit :math:`i`
    (:math:`i = 1..m`) and :math:`\bar\theta` their mean,

    .. math::

        \mathrm{sd}_J = \sqrt{\frac{m - 1}{m} \sum_{i=1}^m
            \big(\hat\theta_{(i)} - \bar\theta\big)^2},

    the factor :math:`m - 1` compensating for leave-one-out estimates being much closer to
    each other than independent ones. Applied to curves refitted without one exposure, it
    measures how much the fit depends on which exposures pin it (the top of a soft-shouldered
    curve is set by the few exposures that reach saturation).

    :param torch.Tensor samples: leave-one-out estimates ``(m, ...)``, ``m >= 2``.
    :return: (:class:`torch.Tensor`) elementwise :math:`\mathrm{sd}_J`, shape ``samples.shape[1:]``.

    |sep|

    :Example:

    >>> import torch
    >>> jackknife_std(torch.tensor([[1.0], [2.0], [3.0]]))
    tensor([1.1547])
    """
    check_float(samples, "samples")
    if samples.ndim < 1 or samples.shape[0] < 2:
        raise ValueError(
            f"Expected `samples` of shape (m, ...) with m >= 2 leave-one-out estimates, "
            f"but got shape {tuple(samples.shape)}."
        )
    m = samples.shape[0]
    centred = samples - samples.mean(dim=0, keepdim=True)
    return ((m - 1) / m * centred.square().sum(dim=0)).sqrt()


def band_coverage(
    lower: Tensor,
    upper: Tensor,
    reference: Tensor,
    low: int = 8,
    high: int = 247,
    bit_depth: int = 8,
) -> Tensor:
    r"""Fraction of codes where a reference curve lies inside a band, per channel.

    All curves are sampled on uniform grids of :math:`[0, 1]` and compared at the codes
    :math:`k / (2^b - 1)`, :math:`k = \text{low}, \dots, \text{high}`:

    .. math::

        \mathrm{coverage}_c = \frac{1}{K} \sum_k
        [\mathrm{lower}_c(k) \le g_c(k) \le \mathrm{upper}_c(k)].

    :param torch.Tensor lower: lower edge ``(C, L)``.
    :param torch.Tensor upper: upper edge ``(C, L)``, ``>= lower`` everywhere (finite).
    :param torch.Tensor reference: reference curve ``(C, L')``.
    :param int low: first code (default 8).
    :param int high: last code (default 247).
    :param int bit_depth: bit depth of the codes (default 8).
    :return: (:class:`torch.Tensor`) coverage per channel ``(C,)`` in :math:`[0, 1]`, float64.

    |sep|

    :Example:

    >>> import torch
    >>> grid = torch.linspace(0, 1, 256).expand(1, 256)
    >>> band_coverage(grid - 0.01, grid + 0.01, grid**1.02)
    tensor([1.], dtype=torch.float64)
    """
    from deepinv_icrf.functional.interp import interp_curve

    for name, t in (("lower", lower), ("upper", upper), ("reference", reference)):
        check_float(t, name)
    dims = check_shape(lower, "lower", ["C", "L"])
    check_shape(upper, "upper", [dims["C"], dims["L"]])
    check_band(lower, upper, "the band (`lower`, `upper`)")
    check_shape(reference, "reference", [dims["C"], "L'"])
    top = 2 ** check_bit_depth(bit_depth, optional=False) - 1
    if not 0 <= low <= high <= top:
        raise ValueError(
            f"Expected 0 <= `low` <= `high` <= {top}, but got low={low!r}, high={high!r}."
        )
    work = torch.float64
    codes = torch.arange(low, high + 1, dtype=work, device=lower.device) / top
    codes = codes.expand(dims["C"], -1)
    lo = interp_curve(codes, lower.to(work), channel_dim=-2)
    hi = interp_curve(codes, upper.to(work), channel_dim=-2)
    ref = interp_curve(codes, reference.to(lower.device, work), channel_dim=-2)
    tol = 1e-12
    inside = (ref >= lo - tol) & (ref <= hi + tol)
    return inside.to(work).mean(-1)


def residual_code_std(
    y: Tensor,
    y_hat: Tensor,
    n_valid: Tensor,
    lower: float = 0.05,
    upper: float = 0.95,
) -> Tensor:
    r"""Robust per-channel standard deviation of code noise from re-rendered codes.

    With the codes :math:`y` of a stack, their re-rendering :math:`\hat y` from a merged radiance
    (which used the very same codes, so residuals shrink by :math:`\sqrt{(m - 1) / m}` for
    :math:`m` merged exposures) and the codes in :math:`[l, u]` of pixels with :math:`m \ge 2`:

    .. math::

        \hat\sigma_c = 1.4826\ \mathrm{median}\Big(|y - \hat y| \sqrt{\tfrac{m}{m - 1}}\Big).

    :param torch.Tensor y: codes, shape ``(N, C, ...)``.
    :param torch.Tensor y_hat: re-rendered codes, shape of ``y``.
    :param torch.Tensor n_valid: number of merged exposures per pixel, broadcastable to ``y``.
    :param float lower: smallest code used (default 0.05).
    :param float upper: largest code used (default 0.95).
    :return: (:class:`torch.Tensor`) :math:`\hat\sigma` per channel ``(C,)``, float64 (0 where no
        code qualifies).

    |sep|

    :Example:

    >>> import torch
    >>> y = torch.full((2, 1, 4), 0.5)
    >>> y_hat = y + torch.tensor([0.01, -0.01, 0.01, -0.01])
    >>> residual_code_std(y, y_hat, torch.full((1, 1, 4), 2.0))
    tensor([0.0210], dtype=torch.float64)
    """
    check_float(y, "y")
    check_float(y_hat, "y_hat")
    if y.shape != y_hat.shape or y.ndim < 2:
        raise ValueError(
            f"Expected `y` and `y_hat` of one shape (N, C, ...), but got {tuple(y.shape)} "
            f"and {tuple(y_hat.shape)}."
        )
    work = torch.float64
    m = torch.as_tensor(n_valid, dtype=work, device=y.device).expand_as(y)
    ok = (y >= lower) & (y <= upper) & (m >= 2)
    factor = torch.sqrt(m / (m - 1).clamp_min(1.0))
    r = ((y.to(work) - y_hat.to(work)).abs() * factor).transpose(0, 1)
    r = torch.where(ok.transpose(0, 1), r, torch.nan).reshape(y.shape[1], -1)
    med = torch.nanmedian(r, dim=-1).values
    return torch.nan_to_num(_MAD_TO_STD * med, nan=0.0)
