r"""Piecewise-linear per-channel curves on a uniform grid of :math:`[0, 1]`.

A curve is a tensor of shape ``(C, L)``: the values :math:`f_c(k / (L - 1))`,
:math:`k = 0, \dots, L - 1`, of one function per channel. These functions evaluate such a
curve, its slope and its inverse at any tensor of values whose channel dimension has size
``C`` (or at any tensor when ``C == 1``). Everything is vectorised (one gather on a
flattened per-channel index), works on any device and float dtype, and is differentiable
with respect to the curve.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepinv_icrf._checks import check_float

__all__ = ["interp_curve", "curve_slope", "invert_curve"]

_SNAP_CAP = 1e-3


def _work_dtype(values: Tensor, curve: Tensor) -> tuple[torch.dtype, torch.dtype]:
    out = torch.promote_types(values.dtype, curve.dtype)
    work = out if out in (torch.float32, torch.float64) else torch.float32
    return out, work


def _check_inputs(values: Tensor, curve: Tensor, channel_dim: int) -> int:
    check_float(values, "values")
    check_float(curve, "curve")
    if curve.ndim != 2 or curve.shape[1] < 2:
        raise ValueError(
            f"Expected `curve` to have shape (C, L) with L >= 2, but got shape "
            f"{tuple(curve.shape)}."
        )
    n_channels = curve.shape[0]
    if n_channels == 1:
        return 0
    if values.ndim == 0 or not -values.ndim <= channel_dim < values.ndim:
        raise ValueError(
            f"Expected `channel_dim` to index a dimension of `values` (shape "
            f"{tuple(values.shape)}), but got {channel_dim}."
        )
    cd = channel_dim % values.ndim
    if values.shape[cd] != n_channels:
        raise ValueError(
            f"Expected `values` to have {n_channels} channels (the rows of `curve`) at "
            f"dimension {channel_dim}, but got shape {tuple(values.shape)}."
        )
    return cd


def _grid_position(values: Tensor, n_points: int, work: torch.dtype) -> Tensor:
    r"""Position ``u = clamp(v, 0, 1) (L - 1)`` with values within rounding of a knot snapped.

    Codes ``k / (L - 1)`` stored in a float dtype give ``u`` within a few ulps of ``k``; the
    snap makes the lookup return the curve value exactly. The snap keeps a unit gradient
    (straight-through), so ``u`` stays differentiable in ``values``.
    """
    eps = torch.finfo(values.dtype).eps
    tol = min(4.0 * eps * (n_points - 1), _SNAP_CAP)
    u = values.to(work).clamp(0.0, 1.0) * (n_points - 1)
    u_round = torch.round(u)
    close = (u - u_round).abs() <= tol
    if not u.requires_grad:
        return torch.where(close, u_round, u)
    # straight-through: value u_round (exact, u - u_round is exact), gradient 1
    return u - torch.where(close, u - u_round, 0.0).detach()


def _channel_offsets(
    ndim: int, cd: int, n_channels: int, stride: int, like: Tensor
) -> Tensor | float:
    r"""Offsets ``c * stride`` of each channel's row in a flattened table, shaped to
    broadcast along dimension ``cd``, in the float dtype of ``like`` (exact integers).
    """
    if n_channels == 1:
        return 0.0
    shape = [1] * ndim
    shape[cd] = n_channels
    offsets = torch.arange(n_channels, device=like.device, dtype=like.dtype) * stride
    return offsets.view(shape)


def interp_curve(values: Tensor, curve: Tensor, channel_dim: int = -3) -> Tensor:
    r"""Evaluate a per-channel piecewise-linear curve at ``values``.

    With :math:`u = \mathrm{clamp}(v, 0, 1)\,(L - 1)`, :math:`k = \lfloor u \rfloor` (at most
    :math:`L - 2`) and :math:`\theta = u - k`,

    .. math::

        f_c(v) = (1 - \theta)\, f_{c, k} + \theta\, f_{c, k + 1}.

    Codes :math:`k / (L - 1)` return the curve values exactly (positions within float
    rounding of a knot are snapped to it).

    :param torch.Tensor values: values in :math:`[0, 1]` (clamped), any shape whose dimension
        ``channel_dim`` has size ``C``; any float dtype.
    :param torch.Tensor curve: curve samples ``(C, L)`` on the grid ``k / (L - 1)``, ``L >= 2``;
        ``C = 1`` applies one curve to every channel.
    :param int channel_dim: the channel dimension of ``values``. Default ``-3``
        (``(B, N, C, H, W)`` and ``(B, C, H, W)``).
    :return: (:class:`torch.Tensor`) the curve at ``values``, shape of ``values``, dtype
        promoted from ``values`` and ``curve``. Differentiable in ``curve`` and (piecewise)
        in ``values``.

    :Example:

    >>> import torch
    >>> curve = torch.tensor([[0.0, 0.25, 1.0]])
    >>> interp_curve(torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]]), curve, channel_dim=0)
    tensor([[0.0000, 0.1250, 0.2500, 0.6250, 1.0000]])
    """
    cd = _check_inputs(values, curve, channel_dim)
    out, work = _work_dtype(values, curve)
    n_channels, n_points = curve.shape
    u = _grid_position(values, n_points, work)
    # index arithmetic in floats (exact integers), one conversion to long at the end
    base = u.detach().floor().clamp_max_(n_points - 2)
    frac = u - base
    offsets = _channel_offsets(values.ndim, cd, n_channels, n_points, u)
    flat_idx = (base + offsets).long()
    flat = curve.to(work).reshape(-1)
    # lerp is exact at both ends: theta = 0 gives lo, theta = 1 gives hi
    return torch.lerp(flat[:-1].take(flat_idx), flat[1:].take(flat_idx), frac).to(out)


def curve_slope(values: Tensor, curve: Tensor, channel_dim: int = -3) -> Tensor:
    r"""Slope :math:`f_c'(v)` of a per-channel piecewise-linear curve at ``values``.

    Inside segment :math:`k` the slope is :math:`s_{c,k} = (L - 1)(f_{c,k+1} - f_{c,k})`. At an
    interior knot it is the mean of the two adjacent segment slopes (a centred difference),
    at :math:`0` and :math:`1` the one-sided slope of the end segment:

    .. math::

        f_c'(k / (L - 1)) = \tfrac12 (s_{c,k-1} + s_{c,k}), \quad
        f_c'(0) = s_{c,0}, \quad f_c'(1) = s_{c,L-2}.

    :param torch.Tensor values: values in :math:`[0, 1]` (clamped), any shape whose dimension
        ``channel_dim`` has size ``C``.
    :param torch.Tensor curve: curve samples ``(C, L)``, ``L >= 2``.
    :param int channel_dim: the channel dimension of ``values``. Default ``-3``.
    :return: (:class:`torch.Tensor`) the slope, shape of ``values``; differentiable in ``curve``.

    :Example:

    >>> import torch
    >>> curve = torch.tensor([[0.0, 0.25, 1.0]])
    >>> curve_slope(torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]]), curve, channel_dim=0)
    tensor([[0.5000, 0.5000, 1.0000, 1.5000, 1.5000]])
    """
    cd = _check_inputs(values, curve, channel_dim)
    out, work = _work_dtype(values, curve)
    n_channels, n_points = curve.shape
    c = curve.to(work)
    seg = (c[:, 1:] - c[:, :-1]) * (n_points - 1)  # (C, L - 1)
    knot = torch.cat([seg[:, :1], 0.5 * (seg[:, :-1] + seg[:, 1:]), seg[:, -1:]], dim=1)
    # one table per channel, knots and segments interleaved: [K0, S0, K1, S1, ..., K_{L-1}]
    table = torch.stack([knot[:, :-1], seg], dim=2).reshape(n_channels, -1)
    table = torch.cat([table, knot[:, -1:]], dim=1)  # (C, 2L - 1)
    u = _grid_position(values.detach(), n_points, work)
    whole = u.floor()
    offsets = _channel_offsets(values.ndim, cd, n_channels, 2 * n_points - 1, u)
    pos = (2.0 * whole + (u > whole).to(u.dtype) + offsets).long()
    return table.reshape(-1).take(pos).to(out)


def invert_curve(values: Tensor, curve: Tensor, channel_dim: int = -3) -> Tensor:
    r"""Inverse of a non-decreasing per-channel piecewise-linear curve.

    For each target :math:`v` finds the segment :math:`f_{c,k} \le v < f_{c,k+1}` and returns

    .. math::

        f_c^{-1}(v) = \frac{1}{L - 1}\left(k + \frac{v - f_{c,k}}{f_{c,k+1} - f_{c,k}}\right),

    clamped to :math:`[0, 1]` (targets below :math:`f_{c,0}` give 0, above :math:`f_{c,L-1}`
    give 1; a flat segment gives its left end). The curve must be non-decreasing along ``L``;
    this is not checked (hot path).

    :param torch.Tensor values: targets, any shape whose dimension ``channel_dim`` has size ``C``.
    :param torch.Tensor curve: non-decreasing curve samples ``(C, L)``, ``L >= 2``.
    :param int channel_dim: the channel dimension of ``values``. Default ``-3``.
    :return: (:class:`torch.Tensor`) the abscissae in :math:`[0, 1]`, shape of ``values``;
        differentiable in ``curve`` and ``values``.

    :Example:

    >>> import torch
    >>> curve = torch.tensor([[0.0, 0.25, 1.0]])
    >>> invert_curve(torch.tensor([[0.0, 0.125, 0.25, 0.625, 1.0]]), curve, channel_dim=0)
    tensor([[0.0000, 0.2500, 0.5000, 0.7500, 1.0000]])
    """
    cd = _check_inputs(values, curve, channel_dim)
    out, work = _work_dtype(values, curve)
    n_channels, n_points = curve.shape
    c = curve.to(work)
    v = values.to(work)
    moved = v.movedim(cd, 0) if n_channels > 1 else v.reshape(1, -1)
    v2 = moved.reshape(n_channels, -1).contiguous()
    pos = torch.searchsorted(c.detach().contiguous(), v2.detach(), right=True) - 1
    idx = pos.clamp(0, n_points - 2)
    lo = torch.gather(c, 1, idx)
    hi = torch.gather(c, 1, idx + 1)
    denom = hi - lo
    ok = denom > 0
    frac = torch.where(
        ok, (v2 - lo) / torch.where(ok, denom, torch.ones_like(denom)), 0.0
    )
    x = ((idx.to(work) + frac.clamp(0.0, 1.0)) / (n_points - 1)).clamp(0.0, 1.0)
    if n_channels > 1:
        x = x.reshape(moved.shape).movedim(0, cd)
    else:
        x = x.reshape(values.shape)
    return x.to(out)
