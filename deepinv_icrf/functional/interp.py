r"""Piecewise-linear per-channel curves on a uniform grid of :math:`[0, 1]`.

A curve is a tensor of shape ``(C, L)``: the values :math:`f_c(k / (L - 1))`,
:math:`k = 0, \dots, L - 1`, of one function per channel. These functions evaluate such a
curve, its slope and its inverse at any tensor of values whose channel dimension has size
``C`` (or at any tensor when ``C == 1``). Everything is vectorised (one gather on a
flattened per-channel index), works on any device and float dtype, and is differentiable
with respect to the curve.

Values that are integer codes :math:`k / (2^b - 1)` (the usual case: an ICRF applied to a
photo) can be looked up instead of interpolated: :func:`interp_curve` with ``bit_depth``
samples the curve at every code once (:func:`code_values`) and gathers, which costs about as
much as reading the values and writing the result.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from deepinv_icrf._checks import check_float, check_tensor
from deepinv_icrf.bracket import check_bit_depth

__all__ = [
    "code_values",
    "curve_slope",
    "interp_curve",
    "invert_curve",
    "lookup_codes",
]

_SNAP_CAP = 1e-3
#: Largest bit depth whose codes :func:`interp_curve` looks up in a table (``2**16`` entries
#: per channel); deeper codes are interpolated.
MAX_TABLE_BITS = 16
# elements processed at once by the code check on the CPU (two buffers that stay in cache)
_CPU_BLOCK = 1 << 17
# elements per tile of the code lookups on the CPU: below torch's parallel grain (32768),
# so that the many small operations of a tile run without thread synchronisation
_CPU_TILE = 1 << 15
# elements per tile on a GPU (large launches; the memory of a few such tiles is small)
_GPU_TILE = 1 << 24
# values of a strided sample checked first, so that continuous input is told apart cheaply
_PROBE = 4096
# float32 / float64 values of the form 1.5 * 2**m (m the mantissa bits): adding one to an
# integer-valued float below 2**(m - 1) leaves that integer in the low bits of its bit pattern
_MAGIC = {
    torch.float32: (1.5 * 2.0**23, torch.int32, 0x4B400000),
    torch.float64: (1.5 * 2.0**52, torch.int64, 0x4338000000000000),
}


def _work_dtype(values: Tensor, curve: Tensor) -> tuple[torch.dtype, torch.dtype]:
    out = torch.promote_types(values.dtype, curve.dtype)
    work = out if out in (torch.float32, torch.float64) else torch.float32
    return out, work


def _check_inputs(values: Tensor, curve: Tensor, channel_dim: int) -> int:
    check_float(values, "values")
    check_float(curve, "curve")
    return _check_channels(values, "values", curve, "curve", channel_dim)


def _check_channels(
    values: Tensor, name: str, curve: Tensor, curve_name: str, channel_dim: int
) -> int:
    r"""Check ``curve`` is ``(C, L)`` and ``values`` has ``C`` channels at ``channel_dim``;
    return that dimension, non-negative (0 for one curve)."""
    if curve.ndim != 2 or curve.shape[1] < 2:
        raise ValueError(
            f"Expected `{curve_name}` to have shape (C, L) with L >= 2, but got shape "
            f"{tuple(curve.shape)}."
        )
    n_channels = curve.shape[0]
    if n_channels == 1:
        return 0
    if values.ndim == 0 or not -values.ndim <= channel_dim < values.ndim:
        raise ValueError(
            f"Expected `channel_dim` to index a dimension of `{name}` (shape "
            f"{tuple(values.shape)}), but got {channel_dim}."
        )
    cd = channel_dim % values.ndim
    if values.shape[cd] != n_channels:
        raise ValueError(
            f"Expected `{name}` to have {n_channels} channels (the rows of `{curve_name}`) "
            f"at dimension {channel_dim}, but got shape {tuple(values.shape)}."
        )
    return cd


def _snap_tolerance(dtype: torch.dtype, n_points: int) -> float:
    r"""Largest distance of ``u = v (L - 1)`` to an integer treated as that integer."""
    return min(4.0 * torch.finfo(dtype).eps * (n_points - 1), _SNAP_CAP)


def _grid_position(values: Tensor, n_points: int, work: torch.dtype) -> Tensor:
    r"""Position ``u = clamp(v, 0, 1) (L - 1)`` with values within rounding of a knot snapped.

    Codes ``k / (L - 1)`` stored in a float dtype give ``u`` within a few ulps of ``k``; the
    snap makes the lookup return the curve value exactly. The snap keeps a unit gradient
    (straight-through), so ``u`` stays differentiable in ``values``.
    """
    tol = _snap_tolerance(values.dtype, n_points)
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


def code_values(
    bit_depth: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> Tensor:
    r"""Every :math:`b`-bit code as a value in :math:`[0, 1]`.

    .. math::

        v_k = \frac{k}{2^b - 1}, \quad k = 0, \dots, 2^b - 1,

    divided in ``dtype``, so that the values are bit for bit those of codes divided by
    :math:`2^b - 1` in that dtype (:func:`~deepinv_icrf.functional.quantize_to_bit_depth`,
    ``codes.float() / 255``).

    :param int bit_depth: bits :math:`b`, 1 to 24.
    :param torch.dtype dtype: float dtype of the values. Default ``torch.float32``.
    :param torch.device, str, None device: device of the values. Default CPU.
    :return: (:class:`torch.Tensor`) the codes, shape ``(2**b,)``.

    :Example:

    >>> code_values(2)
    tensor([0.0000, 0.3333, 0.6667, 1.0000])
    """
    bits = check_bit_depth(bit_depth, optional=False, high=24)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(
            f"Expected `dtype` to be a floating-point torch.dtype, but got {dtype!r}."
        )
    levels = 2**bits
    return torch.arange(levels, device=device, dtype=dtype) / (levels - 1)


def _around_channels(shape: Sequence[int], cd: int, n_channels: int) -> tuple[int, int]:
    r"""Sizes ``(before, after)`` of the dimensions before and after the channel dimension
    ``cd``, to view a tensor as ``(before, C, after)`` (all of it is ``after`` for one
    channel)."""
    before = math.prod(shape[:cd]) if n_channels > 1 else 1
    return before, math.prod(shape) // max(1, before * n_channels)


def _tiles(
    before: int, n_channels: int, after: int, block: int
) -> Iterator[tuple[slice, slice]]:
    r"""Slices ``(rows, cols)`` covering a ``(before, C, after)`` view in tiles of about
    ``block`` elements (every channel in each tile)."""
    cols = max(1, min(after, block // n_channels))
    rows = max(1, block // (n_channels * max(1, cols)))
    for r0 in range(0, before, rows):
        for c0 in range(0, after, cols):
            yield slice(r0, r0 + rows), slice(c0, c0 + cols)


def _tile_elements(device: torch.device, cpu: int) -> int:
    r"""Elements per tile: ``cpu`` on the CPU (cache-sized), :data:`_GPU_TILE` elsewhere."""
    return cpu if device.type == "cpu" else _GPU_TILE


def _code_index(
    values: Tensor, bit_depth: int, work: torch.dtype, cd: int, n_channels: int
) -> Tensor | None:
    r"""Flat table index ``k + c 2^b`` of every value if every value is a ``b``-bit code.

    A value is the code :math:`k` when :math:`u = \mathrm{clamp}(v, 0, 1)(2^b - 1)` is within
    the snap tolerance of :func:`_grid_position` of the integer :math:`k` (so, for
    :math:`2^b` knots, exactly the values the interpolation snaps to a knot). NaN or values
    farther from a code give ``None``. A strided sample of :data:`_PROBE` values (of a
    contiguous tensor) is checked first, so that most continuous inputs are rejected
    without reading the rest.

    On the CPU the values are processed in blocks of about :data:`_CPU_BLOCK` elements with
    two small reused buffers (they stay in cache; one check per block); elsewhere in one
    block (one device synchronisation). Returns an index of the shape of ``values`` in
    ``int32`` (float32 work) or ``int64`` (float64 work), or ``None``.
    """
    levels = 2**bit_depth
    scale = levels - 1
    tol = _snap_tolerance(values.dtype, levels)
    stride = values.numel() // _PROBE
    if stride > 1 and values.is_contiguous():
        probe = values.view(-1)[::stride].to(work).clamp(0.0, 1.0) * scale
        if not bool(((probe - probe.round()).abs() <= tol).all()):  # NaN fails too
            return None
    # integer codes without a float-to-int conversion (slow on CPU): an integer-valued k
    # plus 1.5 * 2**m holds k in the low bits of its bit pattern; the same subtraction takes
    # the pattern's high bits off and adds the channel's offset c * 2**b
    magic, int_dtype, magic_bits = _MAGIC[work]
    before, after = _around_channels(values.shape, cd, n_channels)
    v3 = values.reshape(before, n_channels, after)
    index = torch.empty(v3.shape, dtype=int_dtype, device=values.device)
    channel = torch.arange(n_channels, device=values.device, dtype=int_dtype)
    shift = magic_bits - channel.view(1, n_channels, 1) * levels
    block = _tile_elements(values.device, _CPU_BLOCK)
    size = min(values.numel(), max(block, n_channels))
    buffer = torch.empty(size, dtype=work, device=values.device)
    for rows, cols in _tiles(before, n_channels, after, block):
        src = v3[rows, :, cols]
        u = buffer[: src.numel()].view(src.shape)
        if src.dtype == work:
            torch.clamp(src, 0.0, 1.0, out=u)
        else:
            u.copy_(src).clamp_(0.0, 1.0)
        u.mul_(scale)
        dst = index[rows, :, cols]
        k = dst.view(work)
        torch.round(u, out=k)
        low, high = torch.aminmax(u.sub_(k))
        # NaN propagates to both bounds and fails the test
        if not bool((low >= -tol) & (high <= tol)):
            return None
        k.add_(magic)
        dst.sub_(shift)
    return index.view(values.shape)


def _code_table(
    curve: Tensor, bit_depth: int, values_dtype: torch.dtype, work: torch.dtype
) -> Tensor:
    r"""The curve at every ``b``-bit code (values in ``values_dtype``), ``(C, 2^b)``, in
    ``work``; the curve itself when its knots are the codes (exact, no interpolation).
    """
    levels = 2**bit_depth
    if levels == curve.shape[1]:
        return curve.to(work)
    grid = code_values(bit_depth, values_dtype, curve.device)
    return interp_curve(grid.expand(curve.shape[0], levels), curve, 0).to(work)


def interp_curve(
    values: Tensor,
    curve: Tensor,
    channel_dim: int = -3,
    *,
    bit_depth: int | None = None,
) -> Tensor:
    r"""Evaluate a per-channel piecewise-linear curve at ``values``.

    With :math:`u = \mathrm{clamp}(v, 0, 1)\,(L - 1)`, :math:`k = \lfloor u \rfloor` (at most
    :math:`L - 2`) and :math:`\theta = u - k`,

    .. math::

        f_c(v) = (1 - \theta)\, f_{c, k} + \theta\, f_{c, k + 1}.

    Codes :math:`k / (L - 1)` return the curve values exactly (positions within float
    rounding of a knot are snapped to it). NaN values give NaN.

    With ``bit_depth`` :math:`b` given, values that are all :math:`b`-bit codes
    :math:`k / (2^b - 1)` (within 4 ulps, checked on every value) are looked up in the table
    of the curve at every code (:func:`code_values`) instead of interpolated: the same values
    (bit for bit when the curve has :math:`2^b` points; else within the interpolation of a
    4-ulp change of the input), at the cost of one gather, and a gradient to the curve
    gathered by a scatter-add. Any other input (continuous values, NaN, values that need a
    gradient, dtypes other than float32 and float64, :math:`b > 16`, or fewer values than
    table entries) is interpolated.

    :param torch.Tensor values: values in :math:`[0, 1]` (clamped), any shape whose dimension
        ``channel_dim`` has size ``C``; any float dtype.
    :param torch.Tensor curve: curve samples ``(C, L)`` on the grid ``k / (L - 1)``, ``L >= 2``;
        ``C = 1`` applies one curve to every channel.
    :param int channel_dim: the channel dimension of ``values``. Default ``-3``
        (``(B, N, C, H, W)`` and ``(B, C, H, W)``).
    :param int, None bit_depth: bit depth :math:`b` (1 to 32) of the codes ``values`` may
        hold, to look them up in a table when they do; ``None`` (default) always
        interpolates.
    :return: (:class:`torch.Tensor`) the curve at ``values``, shape of ``values``, dtype
        promoted from ``values`` and ``curve``. Differentiable in ``curve`` and (piecewise)
        in ``values``.

    :Example:

    >>> import torch
    >>> curve = torch.tensor([[0.0, 0.25, 1.0]])
    >>> interp_curve(torch.tensor([[0.0, 0.25, 0.5, 0.75, 1.0]]), curve, channel_dim=0)
    tensor([[0.0000, 0.1250, 0.2500, 0.6250, 1.0000]])
    >>> interp_curve(torch.tensor([[0.0, 1 / 3, 2 / 3, 1.0]]), curve, 0, bit_depth=2)
    tensor([[0.0000, 0.1667, 0.5000, 1.0000]])
    """
    cd = _check_inputs(values, curve, channel_dim)
    out, work = _work_dtype(values, curve)
    n_channels, n_points = curve.shape
    if bit_depth is not None:
        bits = check_bit_depth(bit_depth)
        if (
            bits <= MAX_TABLE_BITS
            and values.dtype in _MAGIC
            and not (values.requires_grad and torch.is_grad_enabled())
            and values.numel() >= n_channels * 2**bits
        ):
            index = _code_index(values, bits, work, cd, n_channels)
            if index is not None:
                table = _code_table(curve, bits, values.dtype, work).reshape(-1)
                # index_select's backward is a scatter-add (index_add_) into the table
                return table.index_select(0, index.view(-1)).view(values.shape).to(out)
    u = _grid_position(values, n_points, work)
    # index arithmetic in floats (exact integers), one conversion to long at the end
    base = u.detach().floor().clamp_max_(n_points - 2)
    frac = u - base
    offsets = _channel_offsets(values.ndim, cd, n_channels, n_points, u)
    # NaN positions convert to the most negative long: clamp them to a valid entry (their
    # value stays NaN through frac)
    flat_idx = (base + offsets).long().clamp_(0, n_channels * n_points - 2)
    flat = curve.to(work).reshape(-1)
    # lerp is exact at both ends: theta = 0 gives lo, theta = 1 gives hi
    return torch.lerp(flat[:-1].take(flat_idx), flat[1:].take(flat_idx), frac).to(out)


def curve_slope(values: Tensor, curve: Tensor, channel_dim: int = -3) -> Tensor:
    r"""Slope :math:`f_c'(v)` of a per-channel piecewise-linear curve at ``values``.

    Inside segment :math:`k` the slope is :math:`s_{c,k} = (L - 1)(f_{c,k+1} - f_{c,k})`. At an
    interior knot it is the mean of the two adjacent segment slopes (a centred difference),
    at :math:`0` and :math:`1` the one-sided slope of the end segment (NaN at NaN values):

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
    # NaN positions convert to the most negative long: look up a valid entry, then NaN
    pos.clamp_(0, table.numel() - 1)
    slope = table.reshape(-1).take(pos).masked_fill_(u.isnan(), float("nan"))
    return slope.to(out)


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


def lookup_codes(codes: Tensor, table: Tensor, channel_dim: int = -3) -> Tensor:
    r"""Per-channel table lookup of integer codes: :math:`x = T_c[\text{code}]`.

    The tables are typically a curve at every code (:func:`interp_curve` at
    :func:`code_values`): this applies it to integer codes as decoded (``uint8``,
    ``uint16``, ...) without a floating-point copy of them, tile by tile (small tiles on the
    CPU, large ones on a GPU). Codes on another device than ``table`` are moved there tile by
    tile.

    :param torch.Tensor codes: integer codes, any shape whose dimension ``channel_dim`` has
        size ``C`` (any shape when ``C == 1``), values in ``[0, L)`` (an out-of-range code
        raises an error).
    :param torch.Tensor table: ``(C, L)`` tables, one per channel (``(1, L)``: one for
        every channel), ``L >= 2``.
    :param int channel_dim: the channel dimension of ``codes``. Default ``-3``; ``-1`` for
        channels last (``(..., H, W, C)``, as images are decoded).
    :return: (:class:`torch.Tensor`) the table values, shape of ``codes``, dtype and device
        of ``table``.

    :Example:

    >>> import torch
    >>> table = torch.tensor([[0.0, 0.1, 0.5, 1.0], [0.0, 0.2, 0.6, 1.0]])
    >>> lookup_codes(torch.tensor([[0, 1], [2, 3]], dtype=torch.uint8), table, channel_dim=0)
    tensor([[0.0000, 0.1000],
            [0.6000, 1.0000]])
    """
    check_tensor(codes, "codes")
    check_tensor(table, "table")
    if codes.is_floating_point() or codes.is_complex() or codes.dtype == torch.bool:
        raise TypeError(
            f"Expected `codes` to be an integer tensor, but got dtype {codes.dtype}."
        )
    cd = _check_channels(codes, "codes", table, "table", channel_dim)
    n_channels, levels = table.shape
    device = table.device
    out = torch.empty(codes.shape, dtype=table.dtype, device=device)
    before, after = _around_channels(codes.shape, cd, n_channels)
    c3 = codes.reshape(before, n_channels, after)
    o3 = out.view(before, n_channels, after)
    flat = table.reshape(-1)
    offsets = torch.arange(n_channels, device=device, dtype=torch.int32) * levels
    offsets = offsets.view(1, n_channels, 1)
    block = _tile_elements(device, _CPU_TILE)
    for rows, cols in _tiles(before, n_channels, after, block):
        index = c3[rows, :, cols].to(device=device, dtype=torch.int32).add_(offsets)
        o3[rows, :, cols] = flat.index_select(0, index.view(-1)).view(index.shape)
    return out
