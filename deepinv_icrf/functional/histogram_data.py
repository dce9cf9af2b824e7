r"""The joint code histograms of a stack, as one sparse record: :class:`LinearityHistogram`.

Built by :func:`~deepinv_icrf.functional.build_linearity_histogram` and evaluated by
:func:`~deepinv_icrf.functional.linearity_from_histogram` (see
:mod:`deepinv_icrf.functional.histogram` for the statistics); histograms of disjoint pixel
shards of one stack combine with :meth:`LinearityHistogram.merge`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["LinearityHistogram"]


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
        >>> from deepinv_icrf.functional import (
        ...     build_linearity_histogram, linearity_from_histogram)
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
