r"""Weighted merge of a linearised exposure stack into one HDR radiance map.

Also the std of that merge and the error of a radiance against the stack it re-exposes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepinv_icrf._checks import (
    check_broadcastable,
    check_float,
    check_in,
    check_shape,
    check_tensor,
    check_threshold,
    compute_dtype,
)
from deepinv_icrf._threads import run_blocks
from deepinv_icrf.bracket import check_exposure_times
from deepinv_icrf.functional.interp import (
    _around_channels,
    _tile_elements,
    _tiles,
    code_values,
)

__all__ = [
    "consistent_exposures",
    "merge_weights",
    "stack_prediction_error",
    "weighted_radiance_merge",
    "weighted_radiance_merge_codes",
    "weighted_radiance_merge_std",
]

MERGE_WEIGHTS = ("hat", "gaussian")
# codes per exposure merged at once by weighted_radiance_merge_codes on the CPU, a tile per
# thread of the pool (deepinv_icrf._threads): at 12 MP x 7, 2^15 took 1.05-1.08 s there
# (0.81 s in one thread: every small operation holds the GIL a while), 2^17 0.57-0.67 s,
# 2^18 and 2^19 the same as 2^17
_MERGE_TILE_CPU = 1 << 17


def merge_weights(y: Tensor, kind: str = "hat") -> Tensor:
    r"""Per-code confidence weights of the HDR merge.

    .. math::

        w_{\text{hat}}(y) = 1 - |2y - 1|, \qquad
        w_{\text{gaussian}}(y) = \exp\left(-16\,(y - \tfrac12)^2\right)

    :param torch.Tensor y: codes in :math:`[0, 1]`, any shape.
    :param str kind: ``"hat"`` (default, Debevec's triangle) or ``"gaussian"``.
    :return: (:class:`torch.Tensor`) weights, shape of ``y``.

    :Example:

    >>> import torch
    >>> merge_weights(torch.tensor([0.0, 0.25, 0.5, 1.0]))
    tensor([0.0000, 0.5000, 1.0000, 0.0000])
    """
    check_in(kind, "weights", MERGE_WEIGHTS)
    if kind == "hat":
        return 1.0 - (2.0 * y - 1.0).abs()
    return torch.exp(-16.0 * (y - 0.5) ** 2)


def consistent_exposures(
    estimates: Tensor,
    variances: Tensor,
    valid: Tensor,
    exposure_times: Tensor,
    reference: int | None = None,
    threshold: float = 4.0,
) -> Tensor:
    r"""Exposures whose radiance agrees with a reference exposure's, per pixel (deghosting).

    With :math:`e_k = x_k / t_k` the radiance estimate of exposure :math:`k`,
    :math:`v_k = \operatorname{Var}(x_k) / t_k^2` its variance, :math:`m_{k,c}` its validity
    and :math:`r` the reference exposure of the pixel, exposure :math:`k` is kept unless it
    disagrees with the reference in any channel where both are valid:

    .. math::

        \text{keep}_k = \neg \bigvee_c \Big( m_{k,c}\, m_{r,c}\;
        \big|e_{k,c} - e_{r,c}\big| > \tau \sqrt{v_{k,c} + v_{r,c}} \Big).

    The reference :math:`r` is ``reference`` (default: the middle exposure of the
    time-sorted stack, rank :math:`\lfloor N/2 \rfloor` from the shortest) where it is valid
    in at least one channel; elsewhere the valid exposure nearest to it in the time-sorted
    order (the shorter one on a tie). The reference itself is always kept; at pixels where no
    exposure is valid, every exposure is kept. A pixel-exposure is dropped as a whole (all
    channels) when any channel disagrees: with independent Gaussian noise, a static pixel is
    dropped with probability about :math:`C \cdot 2(1 - \Phi(\tau))` (:math:`6 \cdot
    10^{-5}` per channel at :math:`\tau = 4`).

    :param torch.Tensor estimates: radiance estimates :math:`x_k / t_k`, ``(B, N, C, H, W)``
        (any ``(B, N, C, ...)``).
    :param torch.Tensor variances: their variances :math:`v_k \ge 0`, broadcastable to
        ``estimates``.
    :param torch.Tensor valid: bool validity (e.g. neither clipped nor black),
        ``(B, N, C, ...)`` or ``(B, N, 1, ...)``.
    :param torch.Tensor exposure_times: ``(N,)`` or ``(B, N)`` seconds (only their order is
        used).
    :param int, None reference: index of the reference exposure in the stack (as given, not
        sorted), ``0 <= reference < N``; ``None`` (default) for the middle of the time-sorted
        stack.
    :param float threshold: :math:`\tau`, in standard deviations, ``> 0`` (default 4).
    :return: (:class:`torch.Tensor`) bool mask of the exposures to use, ``(B, N, 1, ...)``.

    :Example:

    >>> import torch
    >>> t = torch.tensor([1.0, 2.0, 4.0])
    >>> e = torch.tensor([0.50, 0.51, 0.90]).view(1, 3, 1, 1, 1)  # exposure 2 saw something else
    >>> valid = torch.ones(1, 3, 1, 1, 1, dtype=torch.bool)
    >>> consistent_exposures(e, torch.full_like(e, 1e-4), valid, t).flatten()
    tensor([ True,  True, False])
    """
    check_float(estimates, "estimates")
    check_float(variances, "variances")
    check_tensor(valid, "valid")
    if estimates.ndim < 3:
        raise ValueError(
            "Expected `estimates` to have shape (B, N, C, H, W), but got shape "
            f"{tuple(estimates.shape)}."
        )
    batch, n = estimates.shape[:2]
    rest = estimates.shape[3:]
    check_broadcastable(variances, "variances", estimates.shape, "`estimates`")
    if (
        valid.dtype != torch.bool
        or valid.ndim != estimates.ndim
        or tuple(valid.shape[:2]) != (batch, n)
        or valid.shape[2] not in (1, estimates.shape[2])
        or tuple(valid.shape[3:]) != tuple(rest)
    ):
        raise ValueError(
            f"Expected `valid` to be a bool tensor of shape {tuple(estimates.shape)} or with "
            f"1 channel, but got {valid.dtype} of shape {tuple(valid.shape)}."
        )
    threshold = check_threshold(threshold, "threshold")
    if reference is not None and (
        isinstance(reference, bool)
        or not isinstance(reference, int)
        or not 0 <= reference < n
    ):
        raise ValueError(
            f"Expected `reference` to be an exposure index in [0, {n}), but got "
            f"{reference!r}."
        )
    t = check_exposure_times(exposure_times, n, batch)
    return _consistent_exposures(estimates, variances, valid, t, reference, threshold)


def _consistent_exposures(
    estimates: Tensor,
    variances: Tensor,
    valid: Tensor,
    t: Tensor,
    reference: int | None,
    threshold: float,
) -> Tensor:
    r"""Unchecked core of :func:`consistent_exposures` (times ``(B, N)``, trusted inputs)."""
    batch, n = estimates.shape[:2]
    dtype = compute_dtype(estimates, variances)
    device = estimates.device
    t = t.to(device=device)
    rank = t.argsort(dim=1).argsort(dim=1)  # (B, N): position in the time-sorted stack
    if reference is None:
        ref_rank = torch.full((batch, 1), n // 2, device=device, dtype=rank.dtype)
    else:
        ref_rank = rank[:, reference : reference + 1]
    # preference order: the reference (0), then alternately shorter / longer neighbours
    order = 2 * (rank - ref_rank).abs() - (rank < ref_rank).to(rank.dtype)
    spatial = [1] * (estimates.ndim - 3)
    any_valid = valid.any(dim=2, keepdim=True)  # (B, N, 1, ...)
    score = order.view(batch, n, 1, *spatial) + 2 * n * (~any_valid).to(order.dtype)
    ref = score.argmin(dim=1, keepdim=True)  # (B, 1, 1, ...)
    est = estimates.to(dtype)
    var = variances.to(dtype).expand(estimates.shape)
    idx = ref.expand(batch, 1, *estimates.shape[2:])
    e_ref = torch.gather(est, 1, idx)
    v_ref = torch.gather(var, 1, idx)
    m_ref = torch.gather(valid, 1, ref.expand(batch, 1, *valid.shape[2:]))
    disagree = (est - e_ref) ** 2 > threshold**2 * (var + v_ref)
    return ~(disagree & valid & m_ref).any(dim=2, keepdim=True)


def weighted_radiance_merge(
    y: Tensor,
    x_lin: Tensor,
    exposure_times: Tensor,
    weights: str | Tensor | None = None,
    lower: float = 1.0 / 255.0,
    upper: float = 254.0 / 255.0,
    eps: float = 1e-8,
) -> Tensor:
    r"""HDR radiance from a linearised exposure stack, by a weighted mean of :math:`x_k / t_k`.

    .. math::

        E = \frac{\sum_k w(y_k)\, m_k\, x_k / t_k}{\sum_k w(y_k)\, m_k},
        \qquad m_k = [\ell \le y_k \le u],

    per pixel and channel, where :math:`y_k` are the raw codes, :math:`x_k` the linearised
    values (e.g. ``ICRF(y)``) and :math:`t_k` the exposure times. Pixels with no valid
    exposure (weight sum :math:`\le` ``eps``) fall back to one exposure: the shortest one if
    it is saturated (:math:`y > u`; its :math:`x / t` is the best lower bound), else the
    longest one (black in every exposure, or black then saturated).

    :param torch.Tensor y: raw codes in :math:`[0, 1]`, shape ``(B, N, C, H, W)`` (any
        ``(B, N, ...)``).
    :param torch.Tensor x_lin: linearised stack, shape of ``y``.
    :param torch.Tensor exposure_times: exposure times in seconds, ``(B, N)`` or ``(N,)``,
        finite, ``> 0``, any order.
    :param str, torch.Tensor, None weights: ``"hat"`` (default when ``None``), ``"gaussian"``
        (see :func:`merge_weights`), or a non-negative tensor broadcastable to ``y`` (e.g.
        inverse variances).
    :param float lower: smallest valid code :math:`\ell` (inclusive). Default ``1/255``.
    :param float upper: largest valid code :math:`u` (inclusive). Default ``254/255``.
    :param float eps: smallest weight sum treated as valid. Default ``1e-8``.
    :return: (:class:`torch.Tensor`) radiance, shape ``(B, *y.shape[2:])``, float32 or
        float64.

    :Example:

    >>> import torch
    >>> t = torch.tensor([1.0, 2.0])
    >>> x = torch.tensor([0.2, 0.4]).view(1, 2, 1, 1, 1)
    >>> weighted_radiance_merge(x, x, t).flatten()
    tensor([0.2000])
    """
    t = _check_stack(y, x_lin, "x_lin", exposure_times, lower, upper)
    return _radiance_merge(y, x_lin, t, weights, lower, upper, eps)


def _radiance_merge(
    y: Tensor,
    x_lin: Tensor,
    t: Tensor,
    weights: str | Tensor | None,
    lower: float,
    upper: float,
    eps: float = 1e-8,
) -> Tensor:
    r"""Unchecked core of :func:`weighted_radiance_merge` (times ``(B, N)``, trusted)."""
    dtype = compute_dtype(y, x_lin)
    t = t.to(device=y.device, dtype=dtype)
    t_b = t.reshape(*t.shape, *([1] * (y.ndim - 2)))
    yc = y.to(dtype)
    est = x_lin.to(dtype) / t_b
    w = _masked_weights(yc, weights, dtype, lower, upper)
    wsum = w.sum(dim=1)
    merged = (w * est).sum(dim=1) / wsum.clamp_min(eps)
    return torch.where(wsum > eps, merged, _fallback(yc, est, t, upper))


def weighted_radiance_merge_std(
    y: Tensor,
    var_x: Tensor,
    exposure_times: Tensor,
    weights: str | Tensor | None = None,
    lower: float = 1.0 / 255.0,
    upper: float = 254.0 / 255.0,
    eps: float = 1e-8,
) -> Tensor:
    r"""Standard deviation of :func:`weighted_radiance_merge` for independent exposures.

    With the weights :math:`w(y_k)\, m_k` of :func:`weighted_radiance_merge` held fixed and
    independent linearised values :math:`x_k` of variance :math:`\sigma_k^2`,

    .. math::

        \sigma_E = \frac{\sqrt{\sum_k w(y_k)^2\, m_k\, \sigma_k^2 / t_k^2}}
        {\sum_k w(y_k)\, m_k}, \qquad m_k = [\ell \le y_k \le u].

    Pixels with no valid exposure (weight sum :math:`\le` ``eps``) get the std
    :math:`\sigma_{k^*} / t_{k^*}` of the one exposure :math:`k^*` the merge falls back on
    (the shortest one if it is saturated, else the longest one). Pixels saturated in every
    exposure therefore get a finite std although their radiance is only a lower bound; mask
    them (:math:`y_k > u` for all :math:`k`) if that matters, as
    :func:`deepinv_icrf.hdr.merge_hdr` does with ``inf``.

    :param torch.Tensor y: raw codes in :math:`[0, 1]`, shape ``(B, N, C, H, W)`` (any
        ``(B, N, ...)``).
    :param torch.Tensor var_x: variance :math:`\sigma_k^2 \ge 0` of each linearised value,
        shape of ``y`` (not checked for sign here).
    :param torch.Tensor exposure_times: exposure times in seconds, ``(B, N)`` or ``(N,)``,
        finite, ``> 0``, any order.
    :param str, torch.Tensor, None weights: ``"hat"`` (default when ``None``), ``"gaussian"``
        (see :func:`merge_weights`), or a non-negative tensor broadcastable to ``y``; those
        given to :func:`weighted_radiance_merge`.
    :param float lower: smallest valid code :math:`\ell` (inclusive). Default ``1/255``.
    :param float upper: largest valid code :math:`u` (inclusive). Default ``254/255``.
    :param float eps: smallest weight sum treated as valid. Default ``1e-8``.
    :return: (:class:`torch.Tensor`) std of the radiance, shape ``(B, *y.shape[2:])``,
        float32 or float64.

    :Example:

    >>> import torch
    >>> t = torch.tensor([1.0, 2.0])
    >>> y = torch.tensor([0.2, 0.4]).view(1, 2, 1, 1, 1)
    >>> var = torch.tensor([0.01, 0.04]).view(1, 2, 1, 1, 1)
    >>> # sqrt(0.4^2 * 0.01 + 0.8^2 * 0.04 / 2^2) / (0.4 + 0.8)
    >>> weighted_radiance_merge_std(y, var, t).flatten()
    tensor([0.0745])
    """
    t = _check_stack(y, var_x, "var_x", exposure_times, lower, upper)
    return _radiance_merge_std(y, var_x, t, weights, lower, upper, eps)


def _radiance_merge_std(
    y: Tensor,
    var_x: Tensor,
    t: Tensor,
    weights: str | Tensor | None,
    lower: float,
    upper: float,
    eps: float = 1e-8,
) -> Tensor:
    r"""Unchecked core of :func:`weighted_radiance_merge_std` (times ``(B, N)``, trusted)."""
    dtype = compute_dtype(y, var_x)
    t = t.to(device=y.device, dtype=dtype)
    t_b = t.reshape(*t.shape, *([1] * (y.ndim - 2)))
    yc = y.to(dtype)
    var = var_x.to(dtype)
    w = _masked_weights(yc, weights, dtype, lower, upper)
    wsum = w.sum(dim=1)
    merged = (w**2 * var / t_b**2).sum(dim=1).sqrt() / wsum.clamp_min(eps)
    return torch.where(wsum > eps, merged, _fallback(yc, var.sqrt() / t_b, t, upper))


def weighted_radiance_merge_codes(
    codes: Tensor,
    exposure_times: Tensor,
    x_table: Tensor,
    var_table: Tensor | None = None,
    weights: str = "hat",
    lower: float = 1.0 / 255.0,
    upper: float = 254.0 / 255.0,
    eps: float = 1e-8,
    channel_dim: int = 2,
    out_dtype: torch.dtype | None = None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    r"""The merge of integer codes, from per-code tables: one gather per exposure and table.

    With :math:`v = \text{code} / (2^b - 1)`, :math:`x_k` the linearised value
    (``x_table`` at the code) and :math:`\sigma_k^2` its variance (``var_table``), this is
    :func:`weighted_radiance_merge` and :func:`weighted_radiance_merge_std` of
    :math:`(v, x)`, with the same weights, validity and fallbacks, and the mask of pixels
    saturated in every exposure (:math:`v_k > u` for all :math:`k`):

    .. math::

        E = \frac{\sum_k T^{wx}_k[\text{code}_k]}{\sum_k T^{w}[\text{code}_k]}, \quad
        T^{wx}_k = \frac{w(v)\, m(v)\, x}{t_k}, \quad T^{w} = w(v)\, m(v), \quad
        \sigma_E = \frac{\sqrt{\sum_k T^{w^2\sigma^2}_k[\text{code}_k]}}{\sum_k
        T^{w}[\text{code}_k]}.

    Every term depends on the pixel through its code only, so the tables (one entry per code
    and exposure) hold the whole per-pixel arithmetic but the sums, and the stack is read
    once, exposure by exposure, with no floating-point copy of it. Values equal those of
    the two merges of the decoded stack to float rounding (the order of the sums over
    exposures may differ, and the std is the square root of
    :math:`\sum_k T^{w^2\sigma^2}_k / (\sum_k T^w)^2`).

    :param torch.Tensor codes: integer codes ``(B, N, ...)`` (any integer dtype, values in
        ``[0, 2^b)``, not checked), channels at dimension ``channel_dim``.
    :param torch.Tensor exposure_times: ``(N,)`` or ``(B, N)`` seconds, finite, ``> 0``.
    :param torch.Tensor x_table: the linearised value of every code, ``(C, 2^b)`` or
        ``(1, 2^b)`` (one table for every channel), float32 or float64 (the compute dtype).
    :param torch.Tensor, None var_table: the variance of the linearised value of every code,
        shape of ``x_table``; ``None`` (default) computes no std.
    :param str weights: ``"hat"`` (default) or ``"gaussian"`` (:func:`merge_weights`).
    :param float lower: smallest valid code value :math:`\ell` (inclusive). Default ``1/255``.
    :param float upper: largest valid code value :math:`u` (inclusive). Default ``254/255``.
    :param float eps: smallest weight sum treated as valid. Default ``1e-8``.
    :param int channel_dim: the channel dimension of ``codes`` (default 2:
        ``(B, N, C, H, W)``; ``-1`` for channels last, ``(B, N, H, W, C)``).
    :param torch.dtype, None out_dtype: dtype of the radiance and std (default the compute
        dtype, that of ``x_table``: float32 or float64); the values are computed in the
        compute dtype and rounded once (e.g. float32 results of a float64 ICRF without a
        full-size float64 array).
    :return: (tuple) the radiance ``(B, ...)`` (``codes`` without its exposure dimension),
        its std (or ``None`` without ``var_table``) and the bool mask of pixels saturated in
        every exposure, both of that shape.

    :Example:

    >>> import torch
    >>> codes = torch.tensor([51, 102], dtype=torch.uint8).view(1, 2, 1, 1, 1)
    >>> x_table = (torch.arange(256) / 255.0).view(1, 256)  # a linear camera
    >>> e, _, sat = weighted_radiance_merge_codes(codes, torch.tensor([1.0, 2.0]), x_table)
    >>> e.flatten(), sat.flatten()
    (tensor([0.2000]), tensor([False]))
    """
    check_tensor(codes, "codes")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(
            f"Expected `codes` to be an integer tensor, but got dtype {codes.dtype}."
        )
    check_float(x_table, "x_table")
    if (
        x_table.ndim != 2
        or x_table.shape[1] < 2
        or x_table.shape[1] & (x_table.shape[1] - 1)
    ):
        raise ValueError(
            "Expected `x_table` to have shape (C, 2**b) (one value per b-bit code), but "
            f"got shape {tuple(x_table.shape)}."
        )
    if codes.ndim < 3:
        raise ValueError(
            "Expected `codes` to have shape (B, N, ...) with a channel dimension, but got "
            f"shape {tuple(codes.shape)}."
        )
    if not -codes.ndim <= channel_dim < codes.ndim or channel_dim % codes.ndim < 2:
        raise ValueError(
            f"Expected `channel_dim` to index a dimension of `codes` after (B, N) (shape "
            f"{tuple(codes.shape)}), but got {channel_dim}."
        )
    cd = channel_dim % codes.ndim
    channels = codes.shape[cd]
    if x_table.shape[0] not in (1, channels):
        raise ValueError(
            f"Expected `x_table` to have 1 or {channels} rows (the channels of `codes`), "
            f"but got shape {tuple(x_table.shape)}."
        )
    if var_table is not None:
        check_float(var_table, "var_table")
        if var_table.shape != x_table.shape:
            raise ValueError(
                f"Expected `var_table` to have the shape of `x_table` "
                f"{tuple(x_table.shape)}, but got shape {tuple(var_table.shape)}."
            )
    check_in(weights, "weights", MERGE_WEIGHTS)
    _check_bounds(lower, upper)
    t = check_exposure_times(exposure_times, codes.shape[1], codes.shape[0])
    return _radiance_merge_codes(
        codes, t, x_table, var_table, weights, lower, upper, eps, cd, out_dtype
    )


def _radiance_merge_codes(
    codes: Tensor,
    t: Tensor,
    x_table: Tensor,
    var_table: Tensor | None,
    weights: str,
    lower: float,
    upper: float,
    eps: float,
    cd: int,
    out_dtype: torch.dtype | None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    r"""Unchecked core of :func:`weighted_radiance_merge_codes` (times ``(B, N)``, channel
    dimension ``cd >= 2``, trusted)."""
    batch, n = codes.shape[:2]
    channels = codes.shape[cd]
    device = x_table.device
    dtype = x_table.dtype if x_table.dtype == torch.float64 else torch.float32
    t = t.to(device=device, dtype=dtype)
    levels = x_table.shape[1]
    unit = code_values(levels.bit_length() - 1, dtype, device)
    # the whole per-pixel arithmetic of the two merges, per code: (C 2^b,) tables
    w_table = _masked_weights(unit, weights, dtype, lower, upper)  # (2^b,)
    x_tab = x_table.to(dtype).expand(channels, levels)
    t_b = t.view(batch, n, 1, 1)
    wx_tab = (w_table * (x_tab / t_b)).reshape(batch, n, -1)  # (B, N, C 2^b)
    w_flat = w_table.expand(channels, levels).reshape(-1)
    x_flat = x_tab.reshape(-1)
    var_tab = v_flat = None
    if var_table is not None:
        var = var_table.to(device=device, dtype=dtype).expand(channels, levels)
        var_tab = (w_table**2 * var / t_b**2).reshape(batch, n, -1)
        v_flat = var.reshape(-1)
    # v > u exactly for the codes from first_sat on (v increases with the code)
    above = (unit > upper).nonzero()
    first_sat = int(above[0]) if above.numel() else levels
    order = t.argsort(dim=1)  # the shortest and longest exposures: fallbacks
    # tiles of about a hundred thousand codes per exposure on the CPU, merged by a pool of
    # threads that each run torch single-threaded (no thread waits for another at the end of
    # every operation, which stalled a busy machine), large ones on a GPU; the std's square
    # root is taken once at the end (torch's CPU sqrt goes through a threaded library
    # whatever the size: once per tile stalled a busy machine)
    rest = codes.shape[2:]
    before, after = _around_channels(rest, cd - 2, channels)
    offsets = torch.arange(channels, device=device, dtype=torch.int32) * levels
    offsets = offsets.view(1, channels, 1)
    out_dtype = dtype if out_dtype is None else out_dtype
    shape = (batch, before, channels, after)
    radiance = torch.empty(shape, device=device, dtype=out_dtype)
    std = torch.empty_like(radiance) if var_table is not None else None
    saturated = torch.empty(shape, device=device, dtype=torch.bool)
    block = _tile_elements(device, _MERGE_TILE_CPU)
    stacks = [codes[b].reshape(n, before, channels, after) for b in range(batch)]
    ends = [(int(order[b, 0]), int(order[b, -1])) for b in range(batch)]

    def merge_tile(tile_at: tuple[int, slice, slice]) -> None:
        # one tile of one stack, written into its slice of the outputs
        b, rows, cols = tile_at
        codes_b, (short, long) = stacks[b], ends[b]
        num = wsum = var_sum = lowest = None
        index = {}
        for k in range(n):
            code = codes_b[k, rows, :, cols].to(device=device, dtype=torch.int32)
            lowest = (
                code.clone()
                if lowest is None
                else torch.minimum(lowest, code, out=lowest)
            )
            flat = code.add_(offsets).view(-1)
            if k in (short, long):
                index[k] = code
            wx = wx_tab[b, k].index_select(0, flat)
            ww = w_flat.index_select(0, flat)
            num = wx if num is None else num.add_(wx)
            wsum = ww if wsum is None else wsum.add_(ww)
            if var_tab is not None:
                vv = var_tab[b, k].index_select(0, flat)
                var_sum = vv if var_sum is None else var_sum.add_(vv)
        tile = lowest.shape
        valid = (wsum > eps).view(tile)
        denom = wsum.clamp_min_(eps).view(tile)
        rad = num.view(tile).div_(denom)
        # the std squared: sum_k w_k^2 var_k / t_k^2 / (sum_k w_k)^2
        var = None if var_sum is None else var_sum.view(tile).div_(denom * denom)
        if not bool(valid.all()):
            # no valid exposure: the shortest one if it is saturated (its x / t is a
            # lower bound), else the longest one
            use_short = index[short] >= offsets + first_sat
            pick = torch.where(use_short, index[short], index[long]).view(-1)
            t_pick = torch.where(use_short, t[b, short], t[b, long])
            fallback = x_flat.index_select(0, pick).view(tile) / t_pick
            rad = torch.where(valid, rad, fallback)
            if var is not None:
                fb_var = v_flat.index_select(0, pick).view(tile) / (t_pick * t_pick)
                var = torch.where(valid, var, fb_var)
        radiance[b, rows, :, cols] = rad
        if std is not None:
            std[b, rows, :, cols] = var
        saturated[b, rows, :, cols] = lowest >= first_sat

    tiles = [
        (b, rows, cols)
        for b in range(batch)
        for rows, cols in _tiles(before, channels, after, block)
    ]
    run_blocks(merge_tile, tiles, device)
    if std is not None:
        std.sqrt_()
    shape = (batch, *rest)
    std = None if std is None else std.view(shape)
    return radiance.view(shape), std, saturated.view(shape)


def stack_prediction_error(
    x_net: Tensor,
    x_lin: Tensor,
    exposure_times: Tensor,
    weights: Tensor | None = None,
) -> Tensor:
    r"""Weighted squared error between a radiance and a linearised exposure stack.

    The radiance :math:`\hat x` is re-exposed, :math:`z_k = t_k \hat x`, and compared with
    the linearised codes :math:`X_k = g(y_k)`, in radiance units:

    .. math::

        e = \frac{1}{N C H W} \sum_{k, c, h, w} w_k \left(\frac{z_k - X_k}{t_k}\right)^2

    per sample (the mean over all entries, so that a split loss divides by the mean of the
    mask, as :class:`deepinv.loss.SplittingLoss` does). Per pixel, its minimiser over
    :math:`\hat x` is the weighted merge :func:`weighted_radiance_merge` with the same
    weights.

    :param torch.Tensor x_net: radiance ``(B, C, H, W)``.
    :param torch.Tensor x_lin: linearised stack :math:`g(y)` ``(B, N, C, H, W)``.
    :param torch.Tensor exposure_times: ``(N,)`` or ``(B, N)`` seconds, finite, ``> 0``.
    :param torch.Tensor, None weights: per-entry weights :math:`w_k \ge 0` broadcastable to
        the stack (e.g. a splitting mask times validity); default all ones.
    :return: (:class:`torch.Tensor`) shape ``(B,)``, float32 or float64.

    :Example:

    >>> import torch
    >>> x_lin = torch.tensor([0.5, 0.8]).view(1, 2, 1, 1, 1)
    >>> x = torch.full((1, 1, 1, 1), 0.3)
    >>> stack_prediction_error(x, x_lin, torch.tensor([1.0, 2.0]))  # ((0.2)^2 + (0.1)^2) / 2
    tensor([0.0250])
    """
    check_float(x_net, "x_net")
    check_float(x_lin, "x_lin")
    size = check_shape(x_lin, "x_lin", ["B", "N", "C", "H", "W"])
    batch, n = size["B"], size["N"]
    expected = (batch, size["C"], size["H"], size["W"])
    if tuple(x_net.shape) != expected:
        raise ValueError(
            f"Expected `x_net` to have shape (B, C, H, W) = {expected} to match `x_lin` "
            f"{tuple(x_lin.shape)}, but got shape {tuple(x_net.shape)}."
        )
    if weights is not None:
        check_float(weights, "weights")
        check_broadcastable(weights, "weights", x_lin.shape, "the stack")
    dtype = compute_dtype(x_net, x_lin)
    t = check_exposure_times(exposure_times, n, batch)
    t = t.to(device=x_lin.device, dtype=dtype)
    t = t[:, :, None, None, None]
    err = (x_net.to(dtype).unsqueeze(1) - x_lin.to(dtype) / t) ** 2
    if weights is not None:
        err = err * weights.to(dtype)
    return err.reshape(batch, -1).mean(dim=1)


def _check_stack(
    y: Tensor,
    x: Tensor,
    name: str,
    exposure_times: Tensor,
    lower: float,
    upper: float,
) -> Tensor:
    r"""Validate a merge's arguments; return the checked ``(B, N)`` times."""
    check_float(y, "y")
    check_float(x, name)
    if y.ndim < 3:
        raise ValueError(
            f"Expected `y` to have shape (B, N, C, H, W), but got shape {tuple(y.shape)}."
        )
    if x.shape != y.shape:
        raise ValueError(
            f"Expected `{name}` to have the shape of `y` {tuple(y.shape)}, but got shape "
            f"{tuple(x.shape)}."
        )
    _check_bounds(lower, upper)
    return check_exposure_times(exposure_times, y.shape[1], y.shape[0])


def _check_bounds(lower: float, upper: float) -> None:
    r"""The valid codes of a merge are ``[lower, upper]``: ``lower < upper``."""
    if not lower < upper:
        raise ValueError(
            f"Expected `lower` < `upper`, but got lower={lower} and upper={upper}."
        )


def _masked_weights(
    yc: Tensor,
    weights: str | Tensor | None,
    dtype: torch.dtype,
    lower: float,
    upper: float,
) -> Tensor:
    r"""The merge weights :math:`w(y_k)\, m_k`, zero outside ``[lower, upper]``."""
    if weights is None or isinstance(weights, str):
        w = merge_weights(yc, "hat" if weights is None else weights)
    else:
        check_float(weights, "weights")
        w = weights.to(dtype)
    return w * ((yc >= lower) & (yc <= upper)).to(dtype)


def _fallback(yc: Tensor, est: Tensor, t: Tensor, upper: float) -> Tensor:
    r"""``est`` of the exposure a pixel without a valid exposure falls back on.

    The shortest exposure if it is saturated (:math:`y > u`), else the longest one.
    """
    batch = t.shape[0]
    rest = [1] * (yc.ndim - 2)
    i_short = t.argmin(dim=1).view(batch, 1, *rest).expand(batch, 1, *yc.shape[2:])
    i_long = t.argmax(dim=1).view(batch, 1, *rest).expand(batch, 1, *yc.shape[2:])
    short_sat = torch.gather(yc, 1, i_short).squeeze(1) > upper
    return torch.where(
        short_sat,
        torch.gather(est, 1, i_short).squeeze(1),
        torch.gather(est, 1, i_long).squeeze(1),
    )
