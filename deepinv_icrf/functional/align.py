r"""Exposure alignment by median threshold bitmaps (Ward 2003).

A bitmap that thresholds an image at its own median is nearly the same for every exposure of a
scene (the median follows the exposure), so the integer translation between two exposures is
the one that minimises the number of differing bits. Pixels close to the median (within a
tolerance) flip with noise and are excluded. The search runs on an image pyramid: at each
level, from the coarsest, the 9 offsets around twice the previous level's shift are tested.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from deepinv_icrf._checks import check_float, check_int, check_shape

__all__ = ["median_threshold_bitmap", "auto_quantile", "mtb_shift", "shift_image"]

#: Smallest short side of the coarsest pyramid level, in pixels.
_MIN_COARSE = 32


def _square(radius: int) -> tuple[tuple[int, int], ...]:
    r"""Every offset with both coordinates in ``[-radius, radius]``."""
    span = range(-radius, radius + 1)
    return tuple((dy, dx) for dy in span for dx in span)


#: The 9 offsets tested at each finer pyramid level around twice the previous level's shift.
_OFFSETS = _square(1)


def _shift_order(shift: tuple[int, int]) -> tuple[int, int, int, int]:
    r"""Sort key of candidate shifts: smaller first (L1, then L-inf), then a fixed order."""
    dy, dx = shift
    return abs(dy) + abs(dx), max(abs(dy), abs(dx)), dy, dx


def median_threshold_bitmap(
    gray: Tensor, tolerance: float, quantile: float = 0.5
) -> tuple[Tensor, Tensor]:
    r"""Median threshold bitmap and exclusion bitmap of a gray image.

    .. math::

        T = [\,g > \operatorname{median}(g)\,], \qquad
        E = [\,|g - \operatorname{median}(g)| > \tau\,],

    with the median over the last two dimensions (lower median for an even count; another
    order statistic with ``quantile``). ``E`` marks the pixels far enough from the median for
    their bit in ``T`` to be trusted.

    :param torch.Tensor gray: gray image(s) ``(..., H, W)``, float.
    :param float tolerance: :math:`\tau` (in the units of ``gray``), ``>= 0``.
    :param float quantile: the threshold's quantile in ``(0, 1)`` (default 0.5, the median).
    :return: (tuple) boolean tensors ``T`` and ``E``, both shaped like ``gray``.

    |sep|

    :Example:

    >>> import torch
    >>> tb, eb = median_threshold_bitmap(torch.tensor([[0.1, 0.5], [0.52, 0.9]]), 0.05)
    >>> tb.tolist(), eb.tolist()
    ([[False, False], [True, True]], [[True, False], [False, True]])
    """
    check_float(gray, "gray")
    check_shape(gray, "gray", ["*", "H", "W"])
    if not tolerance >= 0:
        raise ValueError(f"Expected `tolerance` >= 0, but got {tolerance!r}.")
    if not 0 < quantile < 1:
        raise ValueError(f"Expected `quantile` in (0, 1), but got {quantile!r}.")
    return _bitmaps(gray, _quantile_value(gray, quantile)[..., None, None], tolerance)


def _bitmaps(
    gray: Tensor, threshold: Tensor, tolerance: float
) -> tuple[Tensor, Tensor]:
    r"""Threshold bitmap and exclusion bitmap of ``gray`` at a given threshold."""
    return gray > threshold, (gray - threshold).abs() > tolerance


def _quantile_value(gray: Tensor, quantile: float) -> Tensor:
    r"""The lower order statistic at ``quantile`` over the last two dimensions (the median's
    rule at 0.5)."""
    flat = gray.flatten(-2)
    return flat.kthvalue(int(quantile * (flat.shape[-1] - 1)) + 1, dim=-1).values


def _overlap(h: int, w: int, dy: int, dx: int) -> tuple[slice, slice]:
    r"""Rows and columns of an ``(h, w)`` image covered by the other one shifted by (dy, dx)."""
    return slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0))


def shift_image(x: Tensor, dy: int, dx: int, fill: float | bool = 0) -> Tensor:
    r"""Translate an image by an integer offset: ``out[..., i, j] = x[..., i - dy, j - dx]``.

    Positions that come from outside the image are set to ``fill``.

    :param torch.Tensor x: image(s) ``(..., H, W)``, any dtype.
    :param int dy: rows down (negative: up).
    :param int dx: columns right (negative: left).
    :param float, bool fill: value of the uncovered positions (default 0).
    :return: (torch.Tensor) the translated image, shaped like ``x``.

    |sep|

    :Example:

    >>> import torch
    >>> shift_image(torch.arange(1, 7).reshape(2, 3), 0, 1).tolist()
    [[0, 1, 2], [0, 4, 5]]
    """
    h, w = x.shape[-2], x.shape[-1]
    out = torch.full_like(x, fill)
    if abs(dy) >= h or abs(dx) >= w:
        return out
    out[(..., *_overlap(h, w, dy, dx))] = x[(..., *_overlap(h, w, -dy, -dx))]
    return out


def _downsample(gray: Tensor) -> Tensor:
    r"""Halve an image by 2x2 averaging (an odd last row/column is dropped)."""
    return F.avg_pool2d(gray[None, None], 2)[0, 0]


def mtb_shift(
    reference: Tensor,
    image: Tensor,
    max_shift: int = 32,
    tolerance: float = 4 / 255,
    quantile: float | str = "auto",
) -> tuple[int, int]:
    r"""Integer translation that aligns ``image`` to ``reference`` (median threshold bitmaps).

    Finds :math:`(d_y, d_x)` such that ``shift_image(image, dy, dx)`` matches ``reference``,
    minimising the number of differing trusted bits

    .. math::

        c(d) = \sum_p \big(T^r_p \oplus T^i_{p-d}\big)\, E^r_p\, E^i_{p-d},

    with :math:`T, E` from :func:`median_threshold_bitmap` and positions shifted in from outside
    the image not counted. The thresholds are taken over the part of each image the other one
    covers at the current estimate (content shifted out of the frame would move them), at
    ``quantile``: Ward's median (``0.5``) or, by default (``"auto"``), the quantile of
    :func:`auto_quantile`, the one farthest from black and white in both images (the median of
    a dark or bright exposure sits among a few quantized codes). The search is Ward's pyramid:
    the images are halved (2x2 means) until the search covers ``max_shift``
    (:math:`2^{\text{levels}+1} - 1 \ge` ``max_shift``) or the next level would have fewer
    than 32 pixels on its short side (a bitmap of a few blobs, where a small moving object
    can outweigh the scene); the coarsest level tests every offset up to
    :math:`\lceil \text{max\_shift} / 2^{\text{levels}} \rceil` (by the share of
    differing bits among those both images trust there, as the overlap shrinks with the
    shift), then each finer level the 9 offsets around twice the previous shift (by their
    count); ties go to the smaller shift. The result may
    exceed ``max_shift`` slightly (by less than the next power of two).

    :param torch.Tensor reference: gray image ``(H, W)``, float in ``[0, 1]``.
    :param torch.Tensor image: gray image ``(H, W)``, same size and device.
    :param int max_shift: largest shift searched, in pixels (default 32), ``>= 0``.
    :param float tolerance: exclusion half-width around the median (default 4/255).
    :param float, str quantile: threshold quantile in ``(0, 1)``, or ``"auto"`` (default).
    :return: (tuple) ``(dy, dx)`` as Python ints.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.data import demo_scene
    >>> gray = demo_scene(64, 80, channels=1)[0, 0]
    >>> moved = shift_image(gray, 3, -5)
    >>> mtb_shift(gray, moved ** 0.5)
    (-3, 5)
    """
    check_float(reference, "reference")
    check_float(image, "image")
    check_shape(reference, "reference", ["H", "W"])
    check_shape(image, "image", [reference.shape[0], reference.shape[1]])
    if image.device != reference.device:
        raise ValueError(
            f"Expected `image` on the device of `reference` ({reference.device}), but got "
            f"{image.device}."
        )
    check_int(max_shift, "max_shift", 0)
    if not tolerance >= 0:
        raise ValueError(f"Expected `tolerance` >= 0, but got {tolerance!r}.")
    if quantile == "auto":
        quantile = auto_quantile(reference, image)
    elif not isinstance(quantile, (int, float)) or not 0 < quantile < 1:
        raise ValueError(
            f"Expected `quantile` in (0, 1) or 'auto', but got {quantile!r}."
        )
    if max_shift == 0:
        return 0, 0
    # halve while the search still needs it and the coarser level keeps enough pixels for
    # its bitmap to be a picture rather than a few blobs (a small moving object could
    # otherwise outweigh the scene there, and the finer levels only correct by one pixel)
    levels = 0
    while (2 << levels) - 1 < max_shift and min(reference.shape) >> (
        levels + 1
    ) >= _MIN_COARSE:
        levels += 1
    # the coarsest level searches every offset up to what the finer ones cannot reach
    radius = max(1, -(-max_shift // (1 << levels)))
    refs, imgs = [reference], [image]
    for _ in range(levels):
        refs.append(_downsample(refs[-1]))
        imgs.append(_downsample(imgs[-1]))
    dy = dx = 0
    for level in range(levels, -1, -1):
        offsets = _OFFSETS if level < levels else _square(radius)
        ref, img = refs[level], imgs[level]
        # thresholds over the part both images show at the current estimate, so that
        # content shifted in or out of the frame does not move the threshold
        h, w = ref.shape
        v_r = _quantile_value(ref[_overlap(h, w, 2 * dy, 2 * dx)], quantile)
        v_i = _quantile_value(img[_overlap(h, w, -2 * dy, -2 * dx)], quantile)
        tb_r, eb_r = _bitmaps(ref, v_r, tolerance)
        tb_i, eb_i = _bitmaps(img, v_i, tolerance)
        candidates = sorted(
            ((2 * dy + oy, 2 * dx + ox) for oy, ox in offsets), key=_shift_order
        )
        if level == levels and radius > 1:
            # many offsets, all at once (dy = dx = 0 here); the overlap shrinks by up to
            # half over such a range, so compare mismatch rates, not counts
            grid = _cost_grid(tb_r, eb_r, tb_i, eb_i, radius)
            grid = grid / _trusted_overlap(eb_r, eb_i, radius).clamp_min(1.0)
            costs = torch.stack(
                [grid[radius - cy, radius - cx] for cy, cx in candidates]
            )
        else:
            costs = torch.stack(
                [
                    (
                        (tb_r ^ shift_image(tb_i, cy, cx))
                        & eb_r
                        & shift_image(eb_i, cy, cx, fill=False)
                    ).sum()
                    for cy, cx in candidates
                ]
            )
        # candidates are sorted by size and argmin returns the first minimum: ties go to
        # the smaller shift; one sync per level
        dy, dx = candidates[int(torch.argmin(costs))]
    return dy, dx


def _cost_grid(
    tb_r: Tensor, eb_r: Tensor, tb_i: Tensor, eb_i: Tensor, radius: int
) -> Tensor:
    r"""The bitmap cost of every shift up to ``radius`` at once: entry
    ``[radius - dy, radius - dx]`` is the cost of ``(dy, dx)``. With
    :math:`T \oplus T' = T + T' - 2 T T'`, the cost is a sum of three cross-correlations of
    the reference's bitmaps with the image's (zero padded: positions from outside count 0).
    Counts of at most :math:`2^{24}` are exact in float32 (much faster here), larger ones
    use float64."""
    work = torch.float32 if tb_r.numel() < 1 << 24 else torch.float64
    a = (tb_r & eb_r).to(work)[None, None]
    b = eb_r.to(work)[None, None]
    pad = (radius,) * 4
    c = F.pad(eb_i.to(work), pad)[None, None]
    d = F.pad((tb_i & eb_i).to(work), pad)[None, None]
    grid = F.conv2d(c, a) + F.conv2d(d, b) - 2.0 * F.conv2d(d, a)
    return grid[0, 0]


def _trusted_overlap(eb_r: Tensor, eb_i: Tensor, radius: int) -> Tensor:
    r"""Number of positions both exclusion bitmaps trust, for every shift up to ``radius``
    (laid out like :func:`_cost_grid`)."""
    work = torch.float32 if eb_r.numel() < 1 << 24 else torch.float64
    pad = (radius,) * 4
    c = F.pad(eb_i.to(work), pad)[None, None]
    return F.conv2d(c, eb_r.to(work)[None, None])[0, 0]


#: Quantiles :func:`auto_quantile` chooses from.
_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def auto_quantile(reference: Tensor, image: Tensor) -> float:
    r"""The threshold quantile best exposed in both images.

    Picks, among :math:`q \in \{0.1, 0.2, \dots, 0.9\}`, the one whose value is farthest from
    black and white in both images,

    .. math::

        q^\star = \arg\max_q \min\big(v^r_q,\, v^i_q,\, 1 - v^r_q,\, 1 - v^i_q\big),

    with :math:`v_q` the quantile of each image (the one closest to the median on ties).

    :param torch.Tensor reference: gray image ``(H, W)`` in ``[0, 1]``.
    :param torch.Tensor image: gray image ``(H', W')`` in ``[0, 1]``.
    :return: (float) the quantile.

    |sep|

    :Example:

    >>> import torch
    >>> dark = torch.linspace(0, 1, 101).reshape(1, 101) ** 4
    >>> auto_quantile(dark, dark)
    0.8
    """
    check_float(reference, "reference")
    check_float(image, "image")
    values = torch.stack(
        [
            torch.stack([_quantile_value(x, q) for q in _QUANTILES])
            for x in (reference, image)
        ]
    )
    margin = torch.minimum(values, 1 - values).amin(dim=0).tolist()
    order = sorted(range(len(_QUANTILES)), key=lambda k: abs(_QUANTILES[k] - 0.5))
    return _QUANTILES[max(order, key=lambda k: margin[k])]
