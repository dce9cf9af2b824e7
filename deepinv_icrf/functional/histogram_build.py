r"""Building the joint code histograms of a stack: :func:`build_linearity_histogram`.

Counts, once per stack and without gradient, the pixels of every exposure pair and channel by
their pair of (binned) codes, keeping only the occupied bins (see
:mod:`deepinv_icrf.functional.histogram` for the statistics and their evaluation).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from deepinv_icrf._checks import check_float, check_shape, compute_dtype
from deepinv_icrf.bracket import check_bit_depth, check_exposure_times
from deepinv_icrf.functional.codes import (
    BIT_DEPTHS,
    _code_std,
    _resolve_bit_depth,
    _std_table,
)
from deepinv_icrf.functional.histogram_data import (
    LinearityHistogram,
    _compact_index,
    _index_dtype,
)
from deepinv_icrf.functional.linearity import (
    _check_options,
    _exposure_pairs,
    _gather_pairs,
    _in_range,
    gaussian_value_weights,
)

__all__ = ["build_linearity_histogram"]

#: Largest number of cells of the dense per-pair count table (beyond it: sort-based counts).
_MAX_TABLE_CELLS = 2**23
#: Relative slack on the ratio threshold when choosing the pairs to histogram, so that a pair
#: valid in float32 or float64 at evaluation always has its entries.
_THRESHOLD_SLACK = 1e-6


def _check_stack(y: Tensor, name: str = "y") -> dict[str, int]:
    check_float(y, name)
    sizes = check_shape(y, name, ["B", "N", "C", "H", "W"])
    if sizes["N"] < 2:
        raise ValueError(
            f"Expected `{name}` to hold at least 2 exposures (dimension 1), "
            f"but got shape {tuple(y.shape)}."
        )
    return sizes


def _check_max_bins(max_bins: object) -> int:
    ok = isinstance(max_bins, int) and not isinstance(max_bins, bool)
    if not ok or not 2 <= max_bins <= 2**16 or max_bins & (max_bins - 1):
        raise ValueError(
            "Expected `max_bins` to be a power of two in [2, 65536], "
            f"but got {max_bins!r}."
        )
    return max_bins


# ------------------------------------------------------------------ counting
def _count_cells(
    row: Tensor, col: Tensor, n_rows: int
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Occupied cells of a 2-D integer histogram, sparse.

    ``row`` and ``col`` (int64, same shape) index cells; ``col`` may be ``-1``. Counts each
    row's occupied columns in a dense band ``[min col, max col]`` of that row (the codes of
    two exposures are strongly correlated, so the bands are narrow), or with a sort when the
    bands are too large.

    :return: ``(cell_row, cell_col, inverse)``: the occupied cells and, for every element, the
        index of its cell.
    """
    big = torch.iinfo(torch.int64).max
    col_min = torch.full((n_rows,), big, dtype=torch.int64, device=row.device)
    col_min.scatter_reduce_(0, row, col, "amin")
    col_max = torch.full((n_rows,), -1, dtype=torch.int64, device=row.device)
    col_max.scatter_reduce_(0, row, col, "amax")
    width = (col_max - col_min + 1).clamp_(min=0)
    start = torch.cumsum(width, 0) - width
    area = int(start[-1] + width[-1])
    if area <= max(_MAX_TABLE_CELLS, 2 * row.numel()):
        cell = (start - col_min).take(row) + col
        occupied = torch.zeros(area, dtype=torch.bool, device=row.device)
        occupied[cell] = True
        cells = occupied.nonzero().squeeze(1)
        rank = torch.full((area,), -1, dtype=torch.int64, device=row.device)
        rank[cells] = torch.arange(cells.numel(), device=row.device)
        inverse = rank.take(cell)
        cell_row = torch.searchsorted(start, cells, right=True) - 1
        # rows of width 0 share their start with the next row: searchsorted picks the last
        cell_col = cells - start.take(cell_row) + col_min.take(cell_row)
        return cell_row, cell_col, inverse
    key = row * (col_max.amax() + 2) + (col + 1)
    keys, inverse = torch.unique(key, return_inverse=True)
    width_all = col_max.amax() + 2
    return keys // width_all, keys % width_all - 1, inverse


def _pair_selection(
    times: Tensor, threshold: float
) -> tuple[Tensor, Tensor, list[int]]:
    r"""Pair indices ``(B, P)`` and the pairs valid for some sample in float32 or float64."""
    i_idx, j_idx, _, valid64 = _exposure_pairs(times.double(), threshold)
    loose = threshold * (1.0 - _THRESHOLD_SLACK)
    _, _, _, valid32 = _exposure_pairs(times.float(), loose)
    keep = (valid64 | valid32).any(dim=0)
    return i_idx, j_idx, keep.nonzero().squeeze(1).tolist()


# ------------------------------------------------------------------ build
def build_linearity_histogram(
    y: Tensor,
    exposure_times: Tensor,
    *,
    threshold: float = 0.1,
    lower: float = 1 / 255,
    upper: float = 254 / 255,
    gaussian_scale: float = 10.0,
    bit_depth: int | None = None,
    max_bins: int = 4096,
    y_std_table: Tensor | None = None,
) -> LinearityHistogram:
    r"""Joint code histograms of every exposure pair and channel of an integer-coded stack.

    For every exposure pair :math:`p = (i, j)` (see
    :func:`deepinv_icrf.functional.exposure_pairs`) and channel :math:`c` of every sample,
    counts the pixels valid in both raw images (:math:`l \le Y \le u`) by their pair of bins
    :math:`(a, b)`, and sums their value weights :math:`g(Y_i) + g(Y_j)`. Runs once per
    stack, without gradient; only occupied bins are kept.

    Codes of :math:`b` bits are binned to :math:`K = \min(2^b, \text{max\_bins})` bins per
    axis (:math:`\lfloor k / 2^{b - \log_2 K} \rfloor`). With :math:`K = 2^b` (always for
    8-bit with the default ``max_bins``) every code has its own bin and
    :func:`linearity_from_histogram` equals the dense
    :func:`deepinv_icrf.functional.radiometric_linearity` (to float rounding). With coarser
    bins, the curve is evaluated at each entry's weighted centroid codes (an approximation;
    the masks and value weights stay exact).

    :param torch.Tensor y: raw stack of integer codes :math:`k / (2^b - 1)`, shape
        ``(B, N, C, H, W)``, ``N >= 2``.
    :param torch.Tensor exposure_times: exposure times, ``(B, N)``, ``(1, N)`` or ``(N,)``,
        finite and ``> 0``, any order.
    :param float threshold: smallest accepted exposure ratio, in ``[0, 1]``. Default ``0.1``.
    :param float lower: smallest valid raw code (inclusive). Default ``1/255``.
    :param float upper: largest valid raw code (inclusive). Default ``254/255``.
    :param float gaussian_scale: sharpness of the value weights. Default ``10.0``.
    :param int, None bit_depth: bit depth of the codes, one of (8, 10, 12, 14, 16), or
        ``None`` (default) to detect it (see :func:`detect_bit_depth`; implied by a
        per-code ``y_std_table``).
    :param int max_bins: most bins per code axis, a power of two in ``[2, 65536]``. Default
        4096 (exact up to 12 bits).
    :param torch.Tensor, None y_std_table: standard deviation of the raw codes as a function
        of the code: shape ``(2**b,)`` or ``(C, 2**b)`` (one value per code), or ``()``,
        ``(1,)``, ``(C, 1)`` (a constant), or ``None`` (no uncertainty). Default ``None``.
    :return: (:class:`LinearityHistogram`) the statistics, on the device of ``y``.
    :raises ContinuousInputError: (a :class:`ValueError`) if ``y`` does not hold integer
        codes (continuous input: use the dense path).
    :raises ValueError: on bad shapes and options.

    :Example:

    >>> import torch
    >>> t = torch.tensor([1.0, 2.0, 4.0])
    >>> radiance = torch.linspace(0.02, 0.24, 35).view(1, 1, 1, 5, 7)
    >>> y = torch.round((radiance * t.view(1, 3, 1, 1, 1)) ** (1 / 2.2) * 255) / 255
    >>> hist = build_linearity_histogram(y, t)
    >>> hist.bit_depth, hist.n_bins, hist.n_entries
    (8, 256, 105)
    """
    sizes = _check_stack(y)
    bsz, n, channels = sizes["B"], sizes["N"], sizes["C"]
    times = check_exposure_times(exposure_times, n, bsz)
    _check_options(threshold, lower, upper, gaussian_scale)
    check_bit_depth(bit_depth, allowed=BIT_DEPTHS)
    max_bins = _check_max_bins(max_bins)
    table = None if y_std_table is None else _std_table(y_std_table, channels)

    with torch.no_grad():
        yw = y.detach().to(compute_dtype(y))
        bits = _resolve_bit_depth(yw, bit_depth, table)
        levels = 2**bits
        n_bins = min(levels, max_bins)
        shift = bits - int(math.log2(n_bins))
        exact = shift == 0

        # per-image codes, validity and value weights; invalid pixels go to a dump row
        # (shorter exposure) or to column -1 (longer exposure), dropped after counting
        codes = (yw * (levels - 1)).round_().to(torch.int32)
        bins = codes >> shift if shift else codes
        ok = _in_range(yw, lower, upper)
        n_rows = bsz * channels * n_bins
        row_base = torch.arange(bsz * channels, device=y.device, dtype=torch.int32)
        row_base = (row_base * n_bins).view(bsz, 1, channels, 1, 1)
        rows_img = torch.where(ok, row_base + bins, n_rows)
        cols_img = torch.where(ok, bins, -1)
        # the per-pixel codes are only needed through rows_img and cols_img from here on
        del codes, bins, ok, row_base
        g_img = std_img = None
        if not exact:
            g_img = gaussian_value_weights(yw.double(), gaussian_scale)
            if table is not None:
                std_img = _code_std(yw, table.double())

        i_idx, j_idx, pairs = _pair_selection(times, threshold)
        n_pairs = i_idx.shape[1]
        device = y.device
        layout = (n_bins, channels, n_pairs, bsz * n_pairs * channels)
        g_points = std_points = None
        if exact:
            values = _code_values(yw, levels)  # (levels,), dtype of yw
            points = values.unsqueeze(0).expand(channels, levels).contiguous()
            g_points = gaussian_value_weights(points.double(), gaussian_scale)
            if table is not None:
                std_points = (
                    table.expand(channels, levels) if table.shape[1] == 1 else table
                )
                std_points = std_points.contiguous()
        dtypes = (yw.dtype, None if table is None else table.dtype)
        # no per-entry int64 work tensor spans all pairs (that was the build peak): each
        # pair is kept compact once counted (exact bins: its cells and int counts, 12 bytes
        # an entry; else its finished entries), then finished and copied into place, one
        # pair at a time
        pending: list[tuple[int, Tensor, Tensor, Tensor] | dict[str, Tensor]] = []
        for p in pairs:
            ip, jp = i_idx[:, p : p + 1], j_idx[:, p : p + 1]
            row = _gather_pairs(rows_img, ip).reshape(-1).long()
            col = _gather_pairs(cols_img, jp).reshape(-1).long()
            cell_row, cell_col, inverse = _count_cells(row, col, n_rows + 1)
            keep = (cell_row < n_rows) & (cell_col >= 0)
            if exact:
                # counts only: every pixel of an entry has the same codes
                count = torch.bincount(inverse, minlength=cell_row.shape[0])[keep]
                count = count.to(_index_dtype(row.numel() + 1))
                cells = [_compact_index(v[keep], n_rows) for v in (cell_row, cell_col)]
                pending.append((p, *cells, count))
                del count, cells
            else:
                # weighted sums: weights, weighted codes (centroids), weighted stds
                w = (_gather_pairs(g_img, ip) + _gather_pairs(g_img, jp)).reshape(-1)
                cols = [
                    torch.ones_like(w),
                    w,
                    w * _gather_pairs(yw, ip).reshape(-1).double(),
                    w * _gather_pairs(yw, jp).reshape(-1).double(),
                ]
                if std_img is not None:
                    cols.append(w * _gather_pairs(std_img, ip).reshape(-1))
                    cols.append(w * _gather_pairs(std_img, jp).reshape(-1))
                source = torch.stack(cols, dim=1)
                del w, cols
                sums = torch.zeros(
                    cell_row.shape[0],
                    source.shape[1],
                    dtype=torch.float64,
                    device=device,
                )
                sums.index_add_(0, inverse, source)
                cells = (cell_row[keep], cell_col[keep], sums[keep])
                pending.append(_pair_entries(*cells, p, layout, g_points, dtypes))
                del source, sums, cells
            del row, col, cell_row, cell_col, inverse, keep
        del rows_img, cols_img, g_img, std_img
        if not pending:
            empty = torch.zeros(0, dtype=torch.int64, device=device)
            if exact:
                pending.append((0, empty, empty, empty))
            else:
                width = 4 if table is None else 6
                sums = torch.zeros(0, width, dtype=torch.float64, device=device)
                pending.append(
                    _pair_entries(empty, empty, sums, 0, layout, g_points, dtypes)
                )
        total = sum(
            part[-1].shape[0] if exact else part["count"].shape[0] for part in pending
        )
        cat: dict[str, Tensor] = {}
        start = 0
        while pending:
            part = pending.pop(0)
            if exact:
                p, cell_row, cell_col, count = part
                part = _pair_entries(
                    cell_row.long(), cell_col.long(), count, p, layout, g_points, dtypes
                )
                del cell_row, cell_col, count
            stop = start + part["count"].shape[0]
            for name, value in part.items():
                if name not in cat:
                    cat[name] = torch.empty(total, dtype=value.dtype, device=device)
                cat[name][start:stop] = value
            start = stop
            del part
        group, count, weight = cat.pop("group"), cat.pop("count"), cat.pop("weight")

        if exact:
            index_i, index_j = cat.pop("index_i"), cat.pop("index_j")
        else:
            channel = cat.pop("channel")
            points, index_i, index_j = _centroid_points(
                channel, cat.pop("v_i"), cat.pop("v_j"), channels, yw.dtype
            )
            if table is not None:
                std_points, _, _ = _centroid_points(
                    channel, cat.pop("s_i"), cat.pop("s_j"), channels, table.dtype
                )
            del channel
        weight_sum = torch.zeros(
            bsz * n_pairs * channels, dtype=torch.float64, device=device
        )
        weight_sum.index_add_(0, group, weight)

    return LinearityHistogram(
        points=points,
        std_points=std_points,
        index_i=_compact_index(index_i, points.numel()),
        index_j=_compact_index(index_j, points.numel()),
        group=_compact_index(group, weight_sum.numel()),
        count=count,
        weight=weight,
        weight_sum=weight_sum.view(bsz, n_pairs, channels),
        exposure_times=times.detach().clone(),
        shape=tuple(y.shape),
        bit_depth=bits,
        n_bins=n_bins,
        threshold=float(threshold),
        lower=float(lower),
        upper=float(upper),
        gaussian_scale=float(gaussian_scale),
    )


def _code_values(y: Tensor, levels: int) -> Tensor:
    r"""The value of every code ``k`` in ``y``'s dtype: as it occurs in ``y`` (so that the
    curve is evaluated at bit-identical values), else the rounded :math:`k / (2^b - 1)`.
    """
    flat = y.reshape(-1)
    codes = (flat * (levels - 1)).round().long().clamp_(0, levels - 1)
    grid = torch.arange(levels, device=y.device, dtype=torch.float64) / (levels - 1)
    values = grid.to(y.dtype)
    return values.scatter_reduce(0, codes, flat, "amax", include_self=False)


def _pair_entries(
    row: Tensor,
    col: Tensor,
    sums: Tensor,
    pair: int,
    layout: tuple[int, int, int, int],
    g_points: Tensor | None,
    dtypes: tuple[torch.dtype, torch.dtype | None],
) -> dict[str, Tensor]:
    r"""The entries of one exposure pair, in the dtypes the histogram stores them in.

    ``row`` (``(sample C + channel) K + bin`` of the shorter exposure), ``col`` (bin of the
    longer exposure) and ``sums`` (with exact bins the ``(M_p,)`` pixel counts, else the
    ``(M_p, 4 | 6)`` float64 counts, weights, weighted codes and weighted stds) of the
    pair's occupied valid cells, in order; ``layout`` is ``(K, C, P, B P C)`` and
    ``dtypes`` those of the stack and of the std table. With exact bins (``g_points``, the
    value weight of every code, given): ``index_i``, ``index_j``, ``group``, ``count`` and
    ``weight``; else ``channel``, ``group``, ``count``, ``weight`` and the centroid codes
    ``v_i``, ``v_j`` (and stds ``s_i``, ``s_j``). Elementwise: the same values as when
    computed over the entries of every pair at once.
    """
    n_bins, channels, n_pairs, n_groups = layout
    sample_channel = row // n_bins
    channel = sample_channel % channels
    group = (sample_channel // channels * n_pairs + pair) * channels + channel
    out = {"group": _compact_index(group, n_groups)}
    if g_points is not None:
        count = out["count"] = sums.double()
        index_i = channel * n_bins + row % n_bins
        index_j = channel * n_bins + col
        out["weight"] = count * (g_points.take(index_i) + g_points.take(index_j))
        out["index_i"] = _compact_index(index_i, g_points.numel())
        out["index_j"] = _compact_index(index_j, g_points.numel())
        return out
    out["count"] = sums[:, 0].contiguous()
    weight = sums[:, 1].contiguous()
    safe = weight.clamp(min=torch.finfo(torch.float64).tiny)
    out["weight"] = weight
    out["channel"] = _compact_index(channel, channels)
    out["v_i"] = (sums[:, 2] / safe).to(dtypes[0])
    out["v_j"] = (sums[:, 3] / safe).to(dtypes[0])
    if sums.shape[1] > 4:
        out["s_i"] = (sums[:, 4] / safe).to(dtypes[1])
        out["s_j"] = (sums[:, 5] / safe).to(dtypes[1])
    return out


def _centroid_points(
    channel: Tensor, v_i: Tensor, v_j: Tensor, channels: int, dtype: torch.dtype
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-entry values laid out as a ``(C, T)`` table: channel ``c`` holds its entries'
    ``v_i`` then ``v_j`` (in entry order, zero padded); returns the table and the flat
    indices (in :func:`_index_dtype` of the table).
    """
    n_per = torch.bincount(channel, minlength=channels).tolist()
    width = max(1, 2 * max(n_per)) if channel.numel() else 1
    index_dtype = _index_dtype(channels * width)
    index_i = torch.empty(channel.shape, dtype=index_dtype, device=channel.device)
    index_j = torch.empty_like(index_i)
    points = torch.zeros(channels * width, dtype=dtype, device=channel.device)
    # one channel at a time: its entries, in order, take the columns 0 .. n_c - 1 (and
    # n_c .. 2 n_c - 1 for v_j), without a sort or an int64 rank of every entry
    for c, n_c in enumerate(n_per):
        if n_c == 0:
            continue
        where = (channel == c).nonzero().squeeze(1)
        column = torch.arange(c * width, c * width + n_c, device=channel.device)
        index_i[where] = column.to(index_dtype)
        index_j[where] = (column + n_c).to(index_dtype)
        points[c * width : c * width + n_c] = v_i.take(where).to(dtype)
        points[c * width + n_c : c * width + 2 * n_c] = v_j.take(where).to(dtype)
    return points.view(channels, width), index_i, index_j
