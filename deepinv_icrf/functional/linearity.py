r"""Radiometric linearity of a linearised exposure stack (the clair-torch ICRF loss).

A static scene photographed with exposure times :math:`t_1, \dots, t_N` and linearised by an
inverse camera response :math:`X = \mathrm{ICRF}(Y)` must satisfy :math:`X_i \approx r X_j`
with :math:`r = t_i / t_j`. The functions below build that loss from small, separable pieces,
all batched over scenes: stacks are ``(B, N, C, H, W)``, exposure times ``(B, N)`` (or ``(N,)``,
shared by every scene) in any order, and every exposure pair is indexed by a fixed set of
:math:`P = N (N - 1) / 2` index combinations so that the computation vectorises over the batch.
Pairs that clair-torch does not select (equal times, or a ratio below the threshold) are
carried along with ``pair_valid = False`` and contribute exactly zero.

Pipeline of :func:`radiometric_linearity`:

1. :func:`exposure_pairs`: pair indices, ratios and pair validity.
2. :func:`valid_pixel_mask`: pixels whose raw codes are well exposed in both images.
3. :func:`pair_value_weights`: Gaussian value weights :math:`g(Y_i) + g(Y_j)`.
4. :func:`pixelwise_linearity`: residuals :math:`d` and their propagated uncertainty
   :math:`\sigma` (see :func:`propagate_std`).
5. :func:`weighted_spatial_mean`: one value :math:`m_{p, c}` per pair and channel.
6. :func:`aggregate_pairs`: :math:`L_c = \sqrt{\sum_p m_{p, c}^2}`.

Steps 2 to 5 are evaluated for a few pairs at a time (``pair_chunk``), with recomputation in
the backward pass (:func:`torch.utils.checkpoint.checkpoint`), so that the memory held for
the gradient grows with the chunk and not with the number of pairs. For integer-coded stacks,
:mod:`deepinv_icrf.functional.histogram` gives the same value from joint code histograms.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from deepinv_icrf._checks import (
    check_float,
    check_shape,
    compute_dtype,
)
from deepinv_icrf.bracket import check_exposure_times

__all__ = [
    "exposure_pairs",
    "valid_pixel_mask",
    "gaussian_value_weights",
    "pair_value_weights",
    "propagate_std",
    "linearity_residual",
    "pixelwise_linearity",
    "weighted_spatial_mean",
    "weighted_spatial_mean_std",
    "aggregate_pairs",
    "radiometric_linearity",
]

#: Stabiliser of the relative residual's denominator and of the uncertainty (clair-torch).
_RESIDUAL_EPS = 1e-6
#: Floor of the weight sum of a spatial mean (clair-torch).
_MEAN_EPS = 1e-8
#: ``pair_chunk="auto"``: number of pair elements (``B C H W`` per pair) evaluated at once.
_CHUNK_ELEMENTS = 2**22


def _gather_pairs(stack: Tensor, idx: Tensor) -> Tensor:
    r"""Select ``stack[b, idx[b, p]]`` for every sample: ``(B, N, ...)`` -> ``(B, P, ...)``.

    ``idx`` may have a batch size of 1 (shared pairs), which broadcasts over ``stack``'s batch
    (and a ``stack`` batch of 1 broadcasts over ``idx``'s). One ``index_select`` on the
    flattened ``(B N)`` dimension, whose gradient is an ``index_add``.
    """
    n = stack.shape[1]
    batch = torch.arange(stack.shape[0], device=stack.device).unsqueeze(-1)
    flat = batch * n + idx
    picked = stack.flatten(0, 1).index_select(0, flat.reshape(-1))
    return picked.view(*flat.shape, *stack.shape[2:])


def _in_range(y: Tensor, lower: float, upper: float) -> Tensor:
    r"""Codes within ``[lower, upper]`` (bounds included), per image."""
    return (y >= lower) & (y <= upper)


def _inverse_uncertainty(sigma: Tensor) -> Tensor:
    r"""Inverse-uncertainty weight :math:`1 / (\sigma + 10^{-6})` added to the value weights."""
    return 1.0 / (sigma + _RESIDUAL_EPS)


def _pair_view(t: Tensor, ndim: int) -> Tensor:
    r"""Append singleton dimensions to a ``(B, P)`` tensor so it broadcasts to ``ndim`` dims."""
    return t.reshape(t.shape + (1,) * (ndim - t.ndim))


def _safe_sqrt(q: Tensor) -> Tensor:
    r"""``sqrt(q)`` for ``q >= 0`` whose gradient is 0 (not infinite) where ``q == 0``."""
    positive = q > 0
    return torch.where(
        positive, torch.sqrt(torch.where(positive, q, torch.ones_like(q))), 0.0
    )


def exposure_pairs(
    exposure_times: Tensor, threshold: float = 0.1
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""All exposure pairs of a stack, ordered shorter-then-longer, with their validity.

    For every index combination :math:`a < b` (there are :math:`P = N (N - 1) / 2`), the pair is
    ordered so that :math:`i` is the shorter and :math:`j` the longer exposure, and

    .. math::

        r = \frac{t_i}{t_j}, \qquad
        \mathrm{valid} = (t_i < t_j) \wedge (r \geq \mathrm{threshold}).

    Exposure times may come in any order and differ between samples. Pairs with equal times or a
    ratio below ``threshold`` are kept (so that ``P`` is fixed) but flagged invalid; every
    downstream reduction gives them zero weight, which is what selecting only the valid pairs
    (clair-torch) amounts to.

    :param torch.Tensor exposure_times: exposure times, shape ``(B, N)`` or ``(N,)``, finite,
        ``> 0``.
    :param float threshold: smallest accepted ratio :math:`t_i / t_j`, in ``[0, 1]``. Default
        ``0.1``.
    :return: (tuple) ``(i_idx, j_idx, ratio, pair_valid)``, each of shape ``(B, P)`` (``B = 1``
        for ``(N,)`` input): indices of the shorter and longer exposure (``int64``), their
        ratio (dtype of ``exposure_times``) and the validity (``bool``).

    :Example:

    >>> import torch
    >>> i, j, r, ok = exposure_pairs(torch.tensor([4.0, 1.0, 2.0]))
    >>> i, j
    (tensor([[1, 2, 1]]), tensor([[0, 0, 2]]))
    >>> r, ok
    (tensor([[0.2500, 0.5000, 0.5000]]), tensor([[True, True, True]]))
    """
    times = check_exposure_times(exposure_times, batch=None)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(
            f"Expected `threshold` to be in [0, 1], but got {threshold!r}."
        )
    return _exposure_pairs(times if times.ndim == 2 else times.unsqueeze(0), threshold)


def _exposure_pairs(
    exposure_times: Tensor, threshold: float
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""Unchecked core of :func:`exposure_pairs` (times ``(B, N)``, trusted)."""
    n = exposure_times.shape[-1]
    combos = torch.triu_indices(n, n, offset=1, device=exposure_times.device)
    a = combos[0].expand(exposure_times.shape[0], -1)
    b = combos[1].expand(exposure_times.shape[0], -1)
    t_a = exposure_times.gather(-1, a)
    t_b = exposure_times.gather(-1, b)
    a_first = t_a <= t_b
    i_idx = torch.where(a_first, a, b)
    j_idx = torch.where(a_first, b, a)
    t_i = torch.where(a_first, t_a, t_b)
    t_j = torch.where(a_first, t_b, t_a)
    ratio = t_i / t_j
    pair_valid = (t_i < t_j) & (ratio >= threshold)
    return i_idx, j_idx, ratio, pair_valid


def valid_pixel_mask(
    y: Tensor,
    i_idx: Tensor,
    j_idx: Tensor,
    lower: float = 1 / 255,
    upper: float = 254 / 255,
) -> Tensor:
    r"""Pixels that are well exposed in both images of a pair (raw codes, bounds included).

    .. math::

        v = (l \leq Y_i \leq u) \wedge (l \leq Y_j \leq u)

    :param torch.Tensor y: raw exposure stack, shape ``(B, N, C, H, W)``.
    :param torch.Tensor i_idx: index of the first image of each pair, shape ``(B, P)`` or ``(1, P)``.
    :param torch.Tensor j_idx: index of the second image of each pair, same shape as ``i_idx``.
    :param float lower: smallest valid code :math:`l`. Default ``1/255``.
    :param float upper: largest valid code :math:`u`. Default ``254/255``.
    :return: (:class:`torch.Tensor`) boolean mask of shape ``(B, P, C, H, W)``.

    :Example:

    >>> import torch
    >>> y = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1, 1)
    >>> valid_pixel_mask(y, torch.tensor([[0, 1]]), torch.tensor([[1, 1]])).flatten()
    tensor([False,  True])
    """
    ok = _in_range(y, lower, upper)
    return _gather_pairs(ok, i_idx) & _gather_pairs(ok, j_idx)


def gaussian_value_weights(v: Tensor, scale: float = 10.0) -> Tensor:
    r"""Gaussian weight favouring mid-range values.

    .. math::

        g(v) = \exp\left(-s (v - 0.5)^2\right)

    :param torch.Tensor v: values (codes in ``[0, 1]``), any shape.
    :param float scale: sharpness :math:`s`. Default ``10.0``.
    :return: (:class:`torch.Tensor`) weights, same shape as ``v``.

    :Example:

    >>> import torch
    >>> gaussian_value_weights(torch.tensor([0.0, 0.5, 1.0]))
    tensor([0.0821, 1.0000, 0.0821])
    """
    return torch.exp(-scale * (v - 0.5) ** 2)


def pair_value_weights(
    y: Tensor, i_idx: Tensor, j_idx: Tensor, scale: float = 10.0
) -> Tensor:
    r"""Value weights of each exposure pair, :math:`w = g(Y_i) + g(Y_j)`.

    See :func:`gaussian_value_weights` for :math:`g`.

    :param torch.Tensor y: raw exposure stack, shape ``(B, N, C, H, W)``.
    :param torch.Tensor i_idx: first image of each pair, shape ``(B, P)`` or ``(1, P)``.
    :param torch.Tensor j_idx: second image of each pair, same shape as ``i_idx``.
    :param float scale: Gaussian sharpness. Default ``10.0``.
    :return: (:class:`torch.Tensor`) weights of shape ``(B, P, C, H, W)``.

    :Example:

    >>> import torch
    >>> y = torch.tensor([0.5, 0.0]).view(1, 2, 1, 1, 1)
    >>> pair_value_weights(y, torch.tensor([[0]]), torch.tensor([[1]])).flatten()
    tensor([1.0821])
    """
    g = gaussian_value_weights(y, scale)
    return _gather_pairs(g, i_idx) + _gather_pairs(g, j_idx)


def propagate_std(y_std: Tensor, slope: Tensor) -> Tensor:
    r"""First-order propagation of code noise through the ICRF.

    .. math::

        s_X = \left|\mathrm{ICRF}'(Y)\right| s_Y

    :param torch.Tensor y_std: per-pixel standard deviation of the raw codes.
    :param torch.Tensor slope: :math:`\mathrm{ICRF}'(Y)` at the same pixels (broadcastable).
    :return: (:class:`torch.Tensor`) standard deviation of the linearised values.

    :Example:

    >>> import torch
    >>> propagate_std(torch.tensor([0.01, 0.02]), torch.tensor([-2.0, 0.5]))
    tensor([0.0200, 0.0100])
    """
    return slope.abs() * y_std


def linearity_residual(
    x_i: Tensor,
    x_j: Tensor,
    ratio: Tensor | float,
    s_i: Tensor | None = None,
    s_j: Tensor | None = None,
    relative: bool = True,
) -> tuple[Tensor, Tensor | None]:
    r"""Linearity residual of matched values of two exposures, and its propagated uncertainty.

    With :math:`e = r X_j + 10^{-6}`, the relative residual (default) and its uncertainty are

    .. math::

        d = \left|\frac{X_i - r X_j}{e}\right|, \qquad
        \sigma = \sqrt{\left(\frac{s_i}{e}\right)^2
        + \left(\frac{X_i s_j}{e \max(X_j, 10^{-6})}\right)^2 + 10^{-6}},

    and the absolute ones :math:`d = |X_i - r X_j|`, :math:`\sigma = \sqrt{s_i^2 + (r s_j)^2}`
    (whose gradient is taken as 0 where :math:`\sigma = 0`). This is the one place where the
    formula lives: the dense path (:func:`pixelwise_linearity`) applies it to every pixel, the
    histogram path (:func:`deepinv_icrf.functional.linearity_from_histogram`) to every
    occupied pair of codes.

    :param torch.Tensor x_i: linearised values :math:`X_i` of the shorter exposure, any shape.
    :param torch.Tensor x_j: matching values :math:`X_j` of the longer exposure, same shape.
    :param torch.Tensor, float ratio: :math:`r = t_i / t_j`, broadcastable to ``x_i``.
    :param torch.Tensor, None s_i: standard deviation of ``x_i`` (broadcastable), or ``None``
        (no uncertainty). Default ``None``.
    :param torch.Tensor, None s_j: standard deviation of ``x_j``; given with ``s_i``. Default
        ``None``.
    :param bool relative: relative (``True``, default) or absolute (``False``) residuals.
    :return: (tuple) ``(d, sigma)``, shape of ``x_i``; ``sigma`` is ``None`` without stds.

    :Example:

    >>> import torch
    >>> d, sigma = linearity_residual(torch.tensor([0.2]), torch.tensor([0.5]), 0.5,
    ...                               torch.tensor([0.03]), torch.tensor([0.08]),
    ...                               relative=False)
    >>> d, sigma
    (tensor([0.0500]), tensor([0.0500]))
    """
    expected = ratio * x_j
    if relative:
        denom = expected + _RESIDUAL_EPS
        d = ((x_i - expected) / denom).abs()
    else:
        d = (x_i - expected).abs()
    if s_i is None or s_j is None:
        return d, None
    if relative:
        term_i = (s_i / denom) ** 2
        term_j = (x_i * s_j / (denom * x_j.clamp(min=_RESIDUAL_EPS))) ** 2
        sigma = torch.sqrt(term_i + term_j + _RESIDUAL_EPS)
    else:
        sigma = _safe_sqrt(s_i**2 + (ratio * s_j) ** 2)
    return d, sigma


def pixelwise_linearity(
    x: Tensor,
    i_idx: Tensor,
    j_idx: Tensor,
    ratio: Tensor,
    x_std: Tensor | None = None,
    relative: bool = True,
) -> tuple[Tensor, Tensor | None]:
    r"""Per-pixel linearity residual of each exposure pair and its propagated uncertainty.

    Gathers both images of every pair and applies :func:`linearity_residual`: with
    :math:`e = r X_j + 10^{-6}`, the relative residual (default) and its uncertainty are

    .. math::

        d = \left|\frac{X_i - r X_j}{e}\right|, \qquad
        \sigma = \sqrt{\left(\frac{s_i}{e}\right)^2
        + \left(\frac{X_i s_j}{e \max(X_j, 10^{-6})}\right)^2 + 10^{-6}},

    and the absolute ones :math:`d = |X_i - r X_j|`, :math:`\sigma = \sqrt{s_i^2 + (r s_j)^2}`
    (whose gradient is taken as 0 where :math:`\sigma = 0`).

    :param torch.Tensor x: linearised stack :math:`X`, shape ``(B, N, C, H, W)``.
    :param torch.Tensor i_idx: shorter exposure of each pair, shape ``(B, P)`` or ``(1, P)``.
    :param torch.Tensor j_idx: longer exposure of each pair, same shape as ``i_idx``.
    :param torch.Tensor ratio: :math:`r = t_i / t_j`, shape ``(B, P)`` or ``(1, P)``.
    :param torch.Tensor, None x_std: per-pixel standard deviation :math:`s` of ``x`` (same
        shape), or ``None`` (no uncertainty). Default ``None``.
    :param bool relative: relative (``True``, default) or absolute (``False``) residuals.
    :return: (tuple) ``(d, sigma)``, each ``(B, P, C, H, W)``; ``sigma`` is ``None`` when
        ``x_std`` is ``None``.

    :Example:

    >>> import torch
    >>> x = torch.tensor([0.2, 0.5]).view(1, 2, 1, 1, 1)
    >>> d, _ = pixelwise_linearity(x, torch.tensor([[0]]), torch.tensor([[1]]),
    ...                            torch.tensor([[0.5]]), relative=False)
    >>> d.flatten()
    tensor([0.0500])
    """
    x_i = _gather_pairs(x, i_idx)
    x_j = _gather_pairs(x, j_idx)
    r = _pair_view(ratio, x_i.ndim)
    s_i = s_j = None
    if x_std is not None:
        s_i = _gather_pairs(x_std, i_idx)
        s_j = _gather_pairs(x_std, j_idx)
    return linearity_residual(x_i, x_j, r, s_i, s_j, relative)


def _weighted_mean(
    values: Tensor,
    weights: Tensor | None,
    mask: Tensor | None,
    dims: tuple[int, ...],
    eps: float,
    keepdim: bool = False,
) -> Tensor:
    if mask is not None:
        values = torch.where(mask, values, torch.zeros_like(values))
    if weights is None:
        w = torch.ones_like(values) if mask is None else mask.to(values.dtype)
    else:
        w = weights if mask is None else torch.where(mask, weights, 0.0)
        values = w * values
    w = w.expand_as(values)
    num = values.sum(dim=dims, keepdim=keepdim)
    den = w.sum(dim=dims, keepdim=keepdim).clamp(min=eps)
    return num / den


def weighted_spatial_mean(
    values: Tensor,
    weights: Tensor | None = None,
    mask: Tensor | None = None,
    dims: Sequence[int] = (-2, -1),
    eps: float = 1e-8,
) -> Tensor:
    r"""Weighted mean of the valid pixels.

    .. math::

        m = \frac{\sum w\, v\, [\mathrm{mask}]}{\max\left(\sum w\, [\mathrm{mask}],
        \varepsilon\right)}

    which is 0 where no pixel is valid. Masked-out values never reach the sum (even NaN ones).

    :param torch.Tensor values: values :math:`v`, e.g. ``(B, P, C, H, W)``.
    :param torch.Tensor, None weights: non-negative weights broadcastable to ``values``, or
        ``None`` (all 1). Default ``None``.
    :param torch.Tensor, None mask: boolean validity broadcastable to ``values``, or ``None``
        (all valid). Default ``None``.
    :param tuple dims: reduced dimensions. Default ``(-2, -1)`` (the pixels).
    :param float eps: floor :math:`\varepsilon` of the weight sum. Default ``1e-8``.
    :return: (:class:`torch.Tensor`) ``values`` reduced over ``dims``.

    :Example:

    >>> import torch
    >>> v = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    >>> weighted_spatial_mean(v, mask=torch.tensor([[True, True], [True, False]]))
    tensor(2.)
    """
    return _weighted_mean(values, weights, mask, tuple(dims), eps)


def weighted_spatial_mean_std(
    values: Tensor,
    weights: Tensor | None = None,
    mask: Tensor | None = None,
    dims: Sequence[int] = (-2, -1),
    eps: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    r"""Weighted mean (see :func:`weighted_spatial_mean`) and weighted standard deviation.

    .. math::

        s = \sqrt{\frac{\sum w\, (v - m)^2\, [\mathrm{mask}]}{\max\left(\sum w\,
        [\mathrm{mask}], \varepsilon\right)}}

    :param torch.Tensor values: values :math:`v`.
    :param torch.Tensor, None weights: weights broadcastable to ``values``, or ``None``.
        Default ``None``.
    :param torch.Tensor, None mask: boolean validity broadcastable to ``values``, or ``None``.
        Default ``None``.
    :param tuple dims: reduced dimensions. Default ``(-2, -1)``.
    :param float eps: floor of the weight sum. Default ``1e-8``.
    :return: (tuple) ``(mean, std)``, both ``values`` reduced over ``dims`` (0 where no pixel
        is valid).

    :Example:

    >>> import torch
    >>> weighted_spatial_mean_std(torch.tensor([[1.0, 3.0]]))
    (tensor(2.), tensor(1.))
    """
    dims = tuple(dims)
    mean = _weighted_mean(values, weights, mask, dims, eps, keepdim=True)
    var = _weighted_mean((values - mean) ** 2, weights, mask, dims, eps)
    return mean.squeeze(dims), _safe_sqrt(var)


def aggregate_pairs(m: Tensor, pair_valid: Tensor) -> Tensor:
    r"""Combine the per-pair values of each channel into one linearity value.

    .. math::

        L_c = \sqrt{\sum_{p\ \mathrm{valid}} m_{p, c}^2}

    with a gradient of 0 (not NaN) where :math:`L_c = 0` (a perfectly linear stack).

    :param torch.Tensor m: per-pair values, shape ``(B, P, C)``.
    :param torch.Tensor pair_valid: boolean pair validity, shape ``(B, P)`` or ``(1, P)``.
    :return: (:class:`torch.Tensor`) shape ``(B, C)``.

    :Example:

    >>> import torch
    >>> m = torch.tensor([[[3.0], [4.0], [7.0]]])
    >>> aggregate_pairs(m, torch.tensor([[True, True, False]]))
    tensor([[5.]])
    """
    valid = pair_valid.unsqueeze(-1)
    sq = torch.where(valid, m, torch.zeros_like(m)) ** 2
    return _safe_sqrt(sq.sum(dim=1))


def _check_std_shape(std: Tensor, name: str, shape: torch.Size) -> Tensor:
    check_float(std, name)
    try:
        ok = torch.broadcast_shapes(std.shape, shape) == shape
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(
            f"Expected `{name}` to have shape {tuple(shape)} (or one broadcastable to it), "
            f"but got shape {tuple(std.shape)}."
        )
    return std


def _check_linearity_inputs(
    y: Tensor,
    x: Tensor,
    exposure_times: Tensor,
    std: Tensor | None = None,
    *,
    y_name: str = "y",
    x_name: str = "x",
    times_name: str = "exposure_times",
    std_name: str = "x_std",
) -> Tensor:
    r"""Shape checks shared by :func:`radiometric_linearity` and the loss module.

    Checks the value of the exposure times (``O(B N)``, one device sync) but never scans the
    stacks' values. Returns the checked times ``(B, N)``.
    """
    check_float(y, y_name)
    sizes = check_shape(y, y_name, ["B", "N", "C", "H", "W"])
    check_float(x, x_name)
    check_shape(x, x_name, ["B", "N", "C", "H", "W"])
    if x.shape != y.shape:
        raise ValueError(
            f"Expected `{x_name}` to have the shape of `{y_name}` {tuple(y.shape)}, "
            f"but got shape {tuple(x.shape)}."
        )
    if sizes["N"] < 2:
        raise ValueError(
            f"Expected `{y_name}` to hold at least 2 exposures (dimension 1), "
            f"but got shape {tuple(y.shape)}."
        )
    times = check_exposure_times(
        exposure_times, sizes["N"], sizes["B"], name=times_name
    )
    if std is not None:
        _check_std_shape(std, std_name, y.shape)
    return times


def _check_options(threshold: float, lower: float, upper: float, scale: float) -> None:
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(
            f"Expected `threshold` (exposure ratio threshold) to be in [0, 1], "
            f"but got {threshold!r}."
        )
    if not lower <= upper:
        raise ValueError(
            f"Expected `lower` <= `upper`, but got lower={lower!r}, upper={upper!r}."
        )
    if not scale >= 0.0:
        raise ValueError(f"Expected `gaussian_scale` to be >= 0, but got {scale!r}.")


def _resolve_pair_chunk(
    pair_chunk: int | str | None, n_pairs: int, per_pair: int
) -> int:
    r"""Number of pairs evaluated at once (``n_pairs`` means no chunking)."""
    if pair_chunk is None:
        return n_pairs
    if pair_chunk == "auto":
        return max(1, min(n_pairs, _CHUNK_ELEMENTS // max(per_pair, 1)))
    return max(1, min(n_pairs, int(pair_chunk)))


def _check_pair_chunk(pair_chunk: object) -> None:
    ok = pair_chunk is None or pair_chunk == "auto"
    ok = ok or (
        isinstance(pair_chunk, int)
        and not isinstance(pair_chunk, bool)
        and pair_chunk >= 1
    )
    if not ok:
        raise ValueError(
            "Expected `pair_chunk` to be None, 'auto' or an int >= 1, "
            f"but got {pair_chunk!r}."
        )


def _pair_means(
    x: Tensor,
    ok: Tensor,
    g: Tensor,
    x_std: Tensor | None,
    i_idx: Tensor,
    j_idx: Tensor,
    ratio: Tensor,
    relative: bool,
    use_uncertainty_weighting: bool,
) -> Tensor:
    r"""Weighted spatial means ``m`` ``(B, P', C)`` of the pairs ``(i_idx, j_idx)`` ``(B, P')``.

    ``ok`` and ``g`` are the per-image validity and Gaussian value weights of the raw stack
    (``(B, N, C, H, W)``), from which each pair's mask and weights are gathered: the same as
    :func:`valid_pixel_mask` and :func:`pair_value_weights` without evaluating them per pair.
    """
    mask = _gather_pairs(ok, i_idx) & _gather_pairs(ok, j_idx)
    weights = _gather_pairs(g, i_idx) + _gather_pairs(g, j_idx)
    d, sigma = pixelwise_linearity(x, i_idx, j_idx, ratio, x_std, relative)
    if sigma is not None and use_uncertainty_weighting:
        weights = weights + _inverse_uncertainty(sigma)
    return _weighted_mean(d, weights, mask, (-2, -1), _MEAN_EPS)


def _radiometric_linearity(
    y: Tensor,
    x: Tensor,
    exposure_times: Tensor,
    x_std: Tensor | None,
    threshold: float,
    lower: float,
    upper: float,
    relative: bool,
    use_uncertainty_weighting: bool,
    gaussian_scale: float,
    pair_chunk: int | str | None = None,
) -> Tensor:
    r"""Unchecked core of :func:`radiometric_linearity` (inputs already validated)."""
    dtype = compute_dtype(y, x, x_std, exposure_times)
    # the raw codes are compared with the bounds in their own precision (a float32 code
    # 1/255 is valid whatever the dtype of the ICRF), as the histogram path does
    y_own = y.to(compute_dtype(y))
    y = y.to(dtype)
    x = x.to(dtype)
    times = exposure_times.to(dtype=dtype, device=x.device)
    times = times.expand(x.shape[0], -1) if times.ndim == 1 else times
    times = times.expand(x.shape[0], -1) if times.shape[0] == 1 else times
    if x_std is not None:
        x_std = x_std.to(dtype).expand_as(x)

    i_idx, j_idx, ratio, pair_valid = _exposure_pairs(times, threshold)
    # pairs invalid for every sample contribute 0: skip them (one small device sync, as the
    # checks of the exposure times already do)
    keep = pair_valid.any(dim=0)
    if not bool(keep.all()):
        cols = keep.nonzero().squeeze(1)
        i_idx, j_idx = i_idx[:, cols], j_idx[:, cols]
        ratio, pair_valid = ratio[:, cols], pair_valid[:, cols]
    # per-image validity and value weights (N images), gathered per pair inside the chunks
    with torch.no_grad():
        ok = _in_range(y_own, lower, upper)
        g = gaussian_value_weights(y, gaussian_scale)
    kernel = partial(
        _pair_means,
        relative=relative,
        use_uncertainty_weighting=use_uncertainty_weighting,
    )
    n_pairs = i_idx.shape[1]
    per_pair = x.shape[0] * x.shape[2] * x.shape[3] * x.shape[4]
    chunk = _resolve_pair_chunk(pair_chunk, n_pairs, per_pair)
    if chunk >= n_pairs:
        m = kernel(x, ok, g, x_std, i_idx, j_idx, ratio)
    else:
        needs_graph = torch.is_grad_enabled() and (
            x.requires_grad or (x_std is not None and x_std.requires_grad)
        )
        parts = []
        for start in range(0, n_pairs, chunk):
            sel = slice(start, start + chunk)
            args = (x, ok, g, x_std, i_idx[:, sel], j_idx[:, sel], ratio[:, sel])
            if needs_graph:
                # keep only the inputs; recompute this chunk's graph in the backward pass
                part = checkpoint(
                    kernel, *args, use_reentrant=False, preserve_rng_state=False
                )
            else:
                part = kernel(*args)
            parts.append(part)
        m = torch.cat(parts, dim=1)
    return aggregate_pairs(m, pair_valid)


def radiometric_linearity(
    y: Tensor,
    x: Tensor,
    exposure_times: Tensor,
    *,
    x_std: Tensor | None = None,
    threshold: float = 0.1,
    lower: float = 1 / 255,
    upper: float = 254 / 255,
    relative: bool = True,
    use_uncertainty_weighting: bool = True,
    gaussian_scale: float = 10.0,
    pair_chunk: int | str | None = "auto",
) -> Tensor:
    r"""Radiometric linearity of a linearised exposure stack, per sample and channel.

    For every valid exposure pair :math:`p = (i, j)` (see :func:`exposure_pairs`) and channel
    :math:`c`, the weighted mean of the residuals :math:`d` (see :func:`pixelwise_linearity`)
    over the pixels valid in both raw images (see :func:`valid_pixel_mask`),

    .. math::

        m_{p, c} = \frac{\sum w\, v\, d}{\max(\sum w\, v, 10^{-8})}, \qquad
        w = g(Y_i) + g(Y_j) \left[+ \frac{1}{\sigma + 10^{-6}}\right], \qquad
        L_c = \sqrt{\sum_p m_{p, c}^2},

    where the uncertainty term is added when ``x_std`` is given and
    ``use_uncertainty_weighting`` is on. This is clair-torch's ICRF linearity loss, batched.

    :param torch.Tensor y: raw exposure stack :math:`Y` in ``[0, 1]``, shape
        ``(B, N, C, H, W)``, ``N >= 2``.
    :param torch.Tensor x: linearised stack :math:`X = \mathrm{ICRF}(Y)`, same shape.
    :param torch.Tensor exposure_times: exposure times, shape ``(B, N)``, ``(1, N)`` or
        ``(N,)`` (shared by every scene), finite and ``> 0``, any order.
    :param torch.Tensor, None x_std: per-pixel standard deviation of ``x`` (see
        :func:`propagate_std`), shape of ``x`` or broadcastable to it, or ``None``. Default
        ``None``.
    :param float threshold: smallest accepted exposure ratio, in ``[0, 1]``. Default ``0.1``.
    :param float lower: smallest valid raw code (inclusive). Default ``1/255``.
    :param float upper: largest valid raw code (inclusive). Default ``254/255``.
    :param bool relative: relative (default) or absolute residuals.
    :param bool use_uncertainty_weighting: add inverse-uncertainty weights when ``x_std`` is
        given. Default ``True``.
    :param float gaussian_scale: sharpness of the value weights. Default ``10.0``.
    :param int, str, None pair_chunk: number of exposure pairs evaluated at once. With
        several chunks and a gradient to compute, each chunk's graph is recomputed in the
        backward pass instead of being kept, so the memory grows with the chunk, not with the
        number of pairs (same value and gradient, at the cost of one more forward pass).
        ``"auto"`` (default) takes about :math:`2^{22}` pixel values (``B C H W`` per pair)
        at a time, ``None`` all pairs at once, an int that many pairs.
    :return: (:class:`torch.Tensor`) shape ``(B, C)``, float32 (float64 for float64 inputs).

    :Example:

    >>> import torch
    >>> t = torch.tensor([1.0, 2.0, 4.0])
    >>> radiance = torch.linspace(0.01, 0.21, 35).view(1, 1, 1, 5, 7)
    >>> x = radiance * t.view(1, 3, 1, 1, 1)
    >>> y = x ** (1 / 2.2)  # a gamma camera
    >>> radiometric_linearity(y, x, t).abs().max() < 1e-5  # the true ICRF is linear
    tensor(True)
    >>> radiometric_linearity(y, y, t)  # the identity is not
    tensor([[1.3036]])
    """
    times = _check_linearity_inputs(y, x, exposure_times, x_std)
    _check_options(threshold, lower, upper, gaussian_scale)
    _check_pair_chunk(pair_chunk)
    return _radiometric_linearity(
        y,
        x,
        times,
        x_std,
        threshold,
        lower,
        upper,
        relative,
        use_uncertainty_weighting,
        gaussian_scale,
        pair_chunk,
    )
