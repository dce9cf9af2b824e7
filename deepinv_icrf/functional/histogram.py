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
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from deepinv_icrf._checks import (
    check_finite,
    check_float,
    check_positive,
    check_shape,
    compute_dtype,
)
from deepinv_icrf.functional.interp import curve_slope, interp_curve
from deepinv_icrf.functional.linearity import (
    _MEAN_EPS,
    _check_options,
    _gather_pairs,
    _in_range,
    _inverse_uncertainty,
    aggregate_pairs,
    exposure_pairs,
    gaussian_value_weights,
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

#: Bit depths tried, in this order, when the bit depth is detected.
BIT_DEPTHS = (8, 10, 12, 14, 16)
#: Largest number of cells of the dense per-pair count table (beyond it: sort-based counts).
_MAX_TABLE_CELLS = 2**23
#: Relative slack on the ratio threshold when choosing the pairs to histogram, so that a pair
#: valid in float32 or float64 at evaluation always has its entries.
_THRESHOLD_SLACK = 1e-6
#: Values sampled by the bit-depth detection before it scans a whole stack.
_PROBE = 4096


class ContinuousInputError(ValueError):
    r"""The stack does not hold integer codes (at the requested bit depth): the histogram path
    does not apply, use the dense path."""


@dataclass(frozen=True)
class LinearityHistogram:
    r"""Joint code histograms of every exposure pair and channel of a stack (sparse).

    Built by :func:`build_linearity_histogram`; evaluated by :func:`linearity_from_histogram`.
    Entry :math:`e` is one occupied cell :math:`(a, b)` of pair :math:`p` and channel
    :math:`c` of sample :math:`s`. Every tensor lives on the device of the stack it was built
    from (move it with :meth:`to`). Histograms of disjoint pixel shards of one stack combine
    with :meth:`merge` (counts and weights add up).

    :param torch.Tensor points: code values ``(C, T)`` at which the curve is evaluated; with
        exact bins the value of every code (``T = 2**bit_depth``), else the weighted centroid
        of each entry's codes.
    :param torch.Tensor, None std_points: standard deviation of the raw codes at ``points``
        ``(C, T)``, or ``None``.
    :param torch.Tensor index_i: ``(M,)`` flat index into ``points`` of the shorter exposure's
        code of each entry; int32 when ``points`` has at most :math:`2^{31}` values, else
        int64.
    :param torch.Tensor index_j: ``(M,)`` same for the longer exposure.
    :param torch.Tensor group: ``(M,)`` flat index of the entry's ``(sample, pair, channel)``
        in ``(B, P, C)``; int32 when :math:`BPC \le 2^{31}`, else int64. The entry's
        ``(sample, pair)`` index in ``(B, P)`` is :attr:`pair` (``group // C``).
    :param torch.Tensor count: ``(M,)`` float64 number of pixels.
    :param torch.Tensor weight: ``(M,)`` float64 sum of the value weights
        :math:`g(Y_i) + g(Y_j)` of its pixels.
    :param torch.Tensor weight_sum: ``(B, P, C)`` float64 sum of ``weight`` per group.
    :param torch.Tensor exposure_times: ``(B, N)`` exposure times of the stack.
    :param tuple shape: shape ``(B, N, C, H, W)`` of the stack.
    :param int bit_depth: bit depth :math:`b` of the codes.
    :param int n_bins: bins per code axis, ``2**bit_depth`` when exact.
    :param float threshold: exposure ratio threshold used to select the pairs.
    :param float lower: smallest valid code (inclusive).
    :param float upper: largest valid code (inclusive).
    :param float gaussian_scale: sharpness of the value weights.
    """

    points: Tensor
    std_points: Tensor | None
    index_i: Tensor
    index_j: Tensor
    group: Tensor
    count: Tensor
    weight: Tensor
    weight_sum: Tensor
    exposure_times: Tensor
    shape: tuple[int, ...]
    bit_depth: int
    n_bins: int
    threshold: float
    lower: float
    upper: float
    gaussian_scale: float

    @property
    def exact(self) -> bool:
        r"""``True`` when every code has its own bin (then the value is the dense one)."""
        return self.n_bins == 2**self.bit_depth

    @property
    def pair(self) -> Tensor:
        r"""``(M,)`` flat index of each entry's ``(sample, pair)`` in ``(B, P)`` (computed from
        :attr:`group`, dtype of :attr:`group`)."""
        return self.group // self.shape[2]

    @property
    def n_entries(self) -> int:
        r"""Number :math:`M` of occupied bins over all samples, pairs and channels."""
        return int(self.group.shape[0])

    @property
    def device(self) -> torch.device:
        r"""Device of the tensors."""
        return self.group.device

    def options(self) -> tuple[float, float, float, float]:
        r"""``(threshold, lower, upper, gaussian_scale)`` the histogram was built with."""
        return (self.threshold, self.lower, self.upper, self.gaussian_scale)

    def to(self, device: torch.device | str) -> LinearityHistogram:
        r"""The same histogram with every tensor on ``device``."""
        moved = {
            f.name: getattr(self, f.name).to(device)
            for f in dataclasses.fields(self)
            if isinstance(getattr(self, f.name), Tensor)
        }
        return dataclasses.replace(self, **moved)

    def coalesce(self) -> LinearityHistogram:
        r"""The same histogram with the entries of one cell summed into one.

        Only exact histograms (:attr:`exact`) have shared code points, so only their
        duplicate cells (after :meth:`merge`) can be summed; a coarse histogram is returned
        as it is (its entries evaluate the curve at their own centroids).

        :return: (:class:`LinearityHistogram`) an equivalent histogram, each
            ``(sample, pair, channel, a, b)`` cell once, sorted.
        """
        if not self.exact or self.n_entries == 0:
            return self
        t = self.points.shape[1]
        key = (self.group.long() * t + self.index_i % t) * t + self.index_j % t
        keys, inverse = torch.unique(key, return_inverse=True)
        if keys.numel() == key.numel():
            return self
        n = keys.numel()
        sums = torch.zeros(n, 2, dtype=torch.float64, device=self.device)
        sums.index_add_(0, inverse, torch.stack([self.count, self.weight], dim=1))
        first = torch.zeros(n, dtype=torch.int64, device=self.device)
        first.scatter_(0, inverse, torch.arange(key.numel(), device=self.device))
        return dataclasses.replace(
            self,
            index_i=self.index_i.take(first),
            index_j=self.index_j.take(first),
            group=self.group.take(first),
            count=sums[:, 0].contiguous(),
            weight=sums[:, 1].contiguous(),
        )

    @classmethod
    def merge(cls, *hists: LinearityHistogram) -> LinearityHistogram:
        r"""The histogram of the union of disjoint pixel shards of one stack.

        Every histogram must come from the same samples and exposures (equal
        ``exposure_times``; shards split the pixels ``H, W``, not the samples) with equal
        options, ``bit_depth`` and ``n_bins``: pass ``bit_depth`` explicitly when building
        shards, so that the detection cannot differ between them. Counts and weights add
        up; exact histograms are :meth:`coalesce`\ d, coarse ones keep every entry (each
        with its own centroid). With exact bins, the merged histogram gives the value and
        gradient of the whole stack (to float rounding).

        Across processes (pixel shards of one stack on each rank), gather and merge, e.g.
        with ``torch.distributed``::

            shards = [None] * dist.get_world_size()
            dist.all_gather_object(shards, hist.to("cpu"))
            hist = LinearityHistogram.merge(*shards).to(device)

        :param LinearityHistogram hists: one or more histograms, on one device.
        :return: (:class:`LinearityHistogram`) the merged histogram. Its ``shape`` is
            ``(B, N, C, sum H, W)`` when the shards share ``W`` (row bands), else
            ``(B, N, C, 1, sum H W)``.
        :raises ValueError: if the histograms are not shards of one stack.

        :Example:

        >>> import torch
        >>> t = torch.tensor([1.0, 2.0, 4.0])
        >>> radiance = torch.linspace(0.02, 0.24, 35).view(1, 1, 1, 5, 7)
        >>> y = torch.round((radiance * t.view(1, 3, 1, 1, 1)) ** (1 / 2.2) * 255) / 255
        >>> top = build_linearity_histogram(y[..., :2, :], t, bit_depth=8)
        >>> bottom = build_linearity_histogram(y[..., 2:, :], t, bit_depth=8)
        >>> merged = LinearityHistogram.merge(top, bottom)
        >>> curve = torch.linspace(0, 1, 256).unsqueeze(0)
        >>> linearity_from_histogram(curve, merged)
        tensor([[1.3051]])
        """
        if not hists:
            raise ValueError(
                "Expected at least one LinearityHistogram to merge, got none."
            )
        for k, h in enumerate(hists):
            if not isinstance(h, LinearityHistogram):
                raise TypeError(
                    f"Expected LinearityHistogram arguments, but argument {k} is a "
                    f"{type(h).__name__}."
                )
        first = hists[0]
        if len(hists) == 1:
            return first
        for k, h in enumerate(hists[1:], start=1):
            _check_mergeable(first, h, k)
        sizes = [h.shape[3] * h.shape[4] for h in hists]
        if all(h.shape[4] == first.shape[4] for h in hists):
            shape = (*first.shape[:3], sum(h.shape[3] for h in hists), first.shape[4])
        else:
            shape = (*first.shape[:3], 1, sum(sizes))
        cat = {
            name: torch.cat([getattr(h, name) for h in hists])
            for name in ("count", "weight")
        }
        cat["group"] = _compact_index(
            torch.cat([h.group for h in hists]), first.weight_sum.numel()
        )
        weight_sum = torch.stack([h.weight_sum for h in hists]).sum(dim=0)
        if first.exact:
            points, std_points = first.points, first.std_points
            index_i = torch.cat([h.index_i for h in hists])
            index_j = torch.cat([h.index_j for h in hists])
        else:
            # one column block per shard: flat index c T_k + t -> c T + offset_k + t
            widths = [h.points.shape[1] for h in hists]
            total = sum(widths)
            offsets = [sum(widths[:k]) for k in range(len(hists))]

            def remap(idx: Tensor, width: int, offset: int) -> Tensor:
                idx = idx.long()
                return (idx // width) * total + offset + idx % width

            points = torch.cat([h.points for h in hists], dim=1)
            std_points = None
            if first.std_points is not None:
                std_points = torch.cat([h.std_points for h in hists], dim=1)
            index_i = torch.cat(
                [
                    remap(h.index_i, w, o)
                    for h, w, o in zip(hists, widths, offsets, strict=True)
                ]
            )
            index_j = torch.cat(
                [
                    remap(h.index_j, w, o)
                    for h, w, o in zip(hists, widths, offsets, strict=True)
                ]
            )
        merged = dataclasses.replace(
            first,
            points=points,
            std_points=std_points,
            index_i=_compact_index(index_i, points.numel()),
            index_j=_compact_index(index_j, points.numel()),
            weight_sum=weight_sum,
            shape=shape,
            **cat,
        )
        return merged.coalesce()


def _index_dtype(size: int) -> torch.dtype:
    r"""The index dtype of a tensor of ``size`` elements: int32 when every index
    ``0 .. size - 1`` fits in it, else int64."""
    return torch.int32 if size <= torch.iinfo(torch.int32).max + 1 else torch.int64


def _compact_index(index: Tensor, size: int) -> Tensor:
    r"""``index`` (values in ``[0, size)``) in :func:`_index_dtype` of ``size``: int32 halves
    the memory of the histogram's index tensors; ``index_select`` and ``index_add`` take it
    as it is."""
    return index.to(_index_dtype(size))


def _check_mergeable(a: LinearityHistogram, b: LinearityHistogram, k: int) -> None:
    r"""Raise a :class:`ValueError` unless ``b`` (argument ``k``) is a shard like ``a``."""
    what = None
    if tuple(a.shape[:3]) != tuple(b.shape[:3]):
        what = f"stack shape (B, N, C) {tuple(b.shape[:3])} != {tuple(a.shape[:3])}"
    elif (a.bit_depth, a.n_bins) != (b.bit_depth, b.n_bins):
        what = (
            f"(bit_depth, n_bins) {(b.bit_depth, b.n_bins)} != "
            f"{(a.bit_depth, a.n_bins)}"
        )
    elif a.options() != b.options():
        what = (
            f"(threshold, lower, upper, gaussian_scale) {b.options()} != {a.options()}"
        )
    elif a.device != b.device:
        what = f"device {b.device} != {a.device}"
    elif (a.std_points is None) != (b.std_points is None):
        what = "one has code stds (`y_std_table`) and the other not"
    elif not torch.equal(a.exposure_times, b.exposure_times):
        what = "different exposure times"
    elif a.exact and not (
        a.points.shape == b.points.shape
        and torch.allclose(a.points, b.points, rtol=1e-6, atol=0.0)
        and (
            a.std_points is None
            or torch.allclose(a.std_points, b.std_points, rtol=1e-6, atol=0.0)
        )
    ):
        what = "different code values or code stds"
    if what is not None:
        raise ValueError(
            f"Expected histograms of pixel shards of one stack, but argument {k} has "
            f"{what}."
        )


# ------------------------------------------------------------------ checks and detection
def _check_stack(y: Tensor, name: str = "y") -> dict[str, int]:
    check_float(y, name)
    sizes = check_shape(y, name, ["B", "N", "C", "H", "W"])
    if sizes["N"] < 2:
        raise ValueError(
            f"Expected `{name}` to hold at least 2 exposures (dimension 1), "
            f"but got shape {tuple(y.shape)}."
        )
    return sizes


def _check_times(times: Tensor, batch: int, n: int) -> Tensor:
    name = "exposure_times"
    check_float(times, name)
    if times.ndim == 1:
        check_shape(times, name, [n])
        times = times.unsqueeze(0)
    elif times.ndim != 2 or times.shape[0] not in (1, batch):
        check_shape(times, name, [batch, n])
    else:
        check_shape(times, name, ["B", n])
    check_finite(times, name)
    check_positive(times, name)
    return times.expand(batch, n)


def _check_bit_depth(bit_depth: object, name: str = "bit_depth") -> None:
    if bit_depth is not None and bit_depth not in BIT_DEPTHS:
        raise ValueError(
            f"Expected `{name}` to be None (detect) or one of {BIT_DEPTHS}, "
            f"but got {bit_depth!r}."
        )


def _check_max_bins(max_bins: object) -> int:
    ok = isinstance(max_bins, int) and not isinstance(max_bins, bool)
    if not ok or not 2 <= max_bins <= 2**16 or max_bins & (max_bins - 1):
        raise ValueError(
            "Expected `max_bins` to be a power of two in [2, 65536], "
            f"but got {max_bins!r}."
        )
    return max_bins


def _code_tolerance(dtype: torch.dtype, bit_depth: int) -> float:
    r"""Largest distance of ``y (2^b - 1)`` to an integer accepted as a code."""
    return max(1e-3, 8.0 * torch.finfo(dtype).eps * (2**bit_depth - 1))


def _is_coded(y: Tensor, bit_depth: int) -> bool:
    r"""Whether every value of ``y`` is a ``bit_depth``-bit code (one device sync).

    A strided sample of at most :data:`_PROBE` values is tried first: continuous values are
    rejected after reading a few of them, not the whole stack.
    """
    tol = _code_tolerance(y.dtype, bit_depth)
    flat = y.reshape(-1)
    stride = flat.numel() // _PROBE
    parts = (flat[::stride], flat) if stride > 1 else (flat,)
    for part in parts:
        scaled = part * (2**bit_depth - 1)
        if not bool((scaled - scaled.round()).abs().amax() <= tol):
            return False
    return True


def detect_bit_depth(y: Tensor) -> int | None:
    r"""Smallest bit depth :math:`b` in (8, 10, 12, 14, 16) at which ``y`` holds integer codes.

    ``y`` holds :math:`b`-bit codes when every value lies in :math:`[0, 1]` and
    :math:`y (2^b - 1)` is within rounding (at least :math:`10^{-3}`) of an integer. This
    scans the whole tensor (one device synchronisation per bit depth tried): call it once
    per stack, not at every step.

    :param torch.Tensor y: values, any shape, float.
    :return: (int, None) the bit depth, or ``None`` for continuous (or out-of-range) values.

    :Example:

    >>> import torch
    >>> detect_bit_depth(torch.tensor([0.0, 3 / 255, 1.0]))
    8
    >>> detect_bit_depth(torch.tensor([5 / 1023, 512 / 1023]))
    10
    >>> detect_bit_depth(torch.tensor([0.123456])) is None
    True
    """
    check_float(y, "y")
    with torch.no_grad():
        y = y.detach().to(compute_dtype(y))
        if y.numel() == 0:
            return None
        if not bool(torch.isfinite(y).all() & (y.amin() >= 0) & (y.amax() <= 1)):
            return None
        for bits in BIT_DEPTHS:
            if _is_coded(y, bits):
                return bits
    return None


def _std_table(table: Tensor, channels: int) -> Tensor:
    r"""Check a per-code std table and broadcast it to ``(C, L_t)`` (``L_t`` 1 or ``2**b``)."""
    name = "y_std_table"
    check_float(table, name)
    if table.ndim == 0:
        table = table.reshape(1, 1)
    elif table.ndim == 1:
        table = table.unsqueeze(0)
    if table.ndim != 2 or table.shape[0] not in (1, channels):
        raise ValueError(
            f"Expected `{name}` to have shape (L,), ({channels}, L) or (1, L) with L = 1 "
            f"(a constant) or 2**bit_depth (one std per code), but got shape "
            f"{tuple(table.shape)}."
        )
    levels = table.shape[1]
    if levels != 1 and levels not in [2**b for b in BIT_DEPTHS]:
        raise ValueError(
            f"Expected `{name}` to hold 1 or 2**bit_depth values per channel with "
            f"bit_depth in {BIT_DEPTHS}, but got {levels}."
        )
    check_finite(table, name)
    if bool((table < 0).any()):
        raise ValueError(f"Expected `{name}` to be >= 0 everywhere.")
    return table.expand(channels, levels)


def _resolve_bit_depth(y: Tensor, bit_depth: int | None, table: Tensor | None) -> int:
    from_table = None
    if table is not None and table.shape[-1] > 1:
        from_table = int(math.log2(table.shape[-1]))
        if bit_depth is not None and bit_depth != from_table:
            raise ValueError(
                f"Expected `y_std_table` to hold 2**bit_depth = {2**bit_depth} values per "
                f"channel, but got {table.shape[-1]}."
            )
        bit_depth = from_table
    if y.numel() == 0:  # an empty pixel shard: nothing to detect or check
        if bit_depth is None:
            raise ContinuousInputError(
                "Expected `y` to hold pixels to detect the bit depth of, but it is empty; "
                "pass `bit_depth`."
            )
        return bit_depth
    if bit_depth is not None:
        in_range = bool(torch.isfinite(y).all() & (y.amin() >= 0) & (y.amax() <= 1))
        if not (in_range and _is_coded(y, bit_depth)):
            source = "" if from_table is None else " (implied by `y_std_table`)"
            raise ContinuousInputError(
                f"Expected `y` to hold {bit_depth}-bit codes{source} (values "
                f"k / {2**bit_depth - 1} in [0, 1]), but it does not: continuous input, "
                "use the dense path."
            )
        return bit_depth
    detected = detect_bit_depth(y)
    if detected is None:
        raise ContinuousInputError(
            "Expected `y` to hold integer codes (values k / (2**b - 1) in [0, 1] for b in "
            f"{BIT_DEPTHS}), but it holds continuous values: the histogram path needs codes, "
            "use the dense path."
        )
    return detected


def _code_std(y: Tensor, table: Tensor) -> Tensor:
    r"""Per-pixel std of the raw codes from a per-code table ``(C, 2**b)`` (or ``(C, 1)``).

    ``y`` ``(B, N, C, H, W)``; returns the same shape, dtype of ``table``.
    """
    levels = table.shape[-1]
    channels = table.shape[0]
    if levels == 1:
        return table.view(1, 1, channels, 1, 1).expand(
            *y.shape[:2], channels, *y.shape[3:]
        )
    codes = (y.detach().to(compute_dtype(y)) * (levels - 1)).round().long()
    codes = codes.clamp_(0, levels - 1)
    offsets = torch.arange(channels, device=y.device).view(1, 1, -1, 1, 1) * levels
    return table.reshape(-1).take(codes + offsets)


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
    i_idx, j_idx, _, valid64 = exposure_pairs(times.double(), threshold)
    loose = threshold * (1.0 - _THRESHOLD_SLACK)
    _, _, _, valid32 = exposure_pairs(times.float(), loose)
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
    times = _check_times(exposure_times, bsz, n)
    _check_options(threshold, lower, upper, gaussian_scale)
    _check_bit_depth(bit_depth)
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


# ------------------------------------------------------------------ evaluation
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
    _, _, ratio, pair_valid = exposure_pairs(
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
