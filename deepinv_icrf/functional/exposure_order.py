r"""Exposure times against the images, before any curve: are the frames in the listed order?

A camera response is non-decreasing, so of two frames of a static scene the one exposed
longer has codes at least as high at every pixel where neither is clipped; noise only makes
codes of equally bright frames differ either way, about as often up as down. When a longer
listed exposure is darker at most of the pixels where the two frames differ, that step of the
listed times is in the wrong order. At half the steps or more, the listing as a whole is (a
sidecar sorted the other way, times listed for other files): refused. A few such steps are
what a frame listed at the wrong stop gives (a camera at its shutter limit): the time check
names and corrects those, and a merge warns. The time
check through a fitted curve (:func:`~deepinv_icrf.functional.check_exposure_ratios`) cannot
see it: a curve fitted at times in the wrong order is flat, and the ratios measured through
it say nothing.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch
from torch import Tensor

from deepinv_icrf._checks import check_tensor
from deepinv_icrf.bracket import check_exposure_times

__all__ = [
    "darker_fractions",
    "check_exposure_order",
    "DARKER_MAJORITY",
    "ORDER_VALUES",
]

#: Fraction of the differing pixels at which the longer of two exposures counts as darker:
#: far above the half that noise gives equally bright frames, far below the all-but-none
#: of frames a stop apart in the wrong order.
DARKER_MAJORITY = 0.75
#: Fewest pixels (unclipped in both frames, codes differing) for a pair of frames to count.
MIN_ORDER_PIXELS = 20
#: Values per exposure compared (a strided sample of larger stacks).
ORDER_VALUES = 1 << 16


def darker_fractions(
    y: Tensor, exposure_times: Tensor, white: float = 1.0
) -> tuple[Tensor, Tensor, Tensor]:
    r"""For consecutive exposures by listed time, how often the longer one is darker.

    With the exposures sorted by listed time and :math:`S_k` the values (pixels and channels)
    where exposures :math:`k` and :math:`k + 1` are both unclipped (:math:`0 < y < w`, ``w``
    the code of white) and differ,

    .. math::

        d_k = \frac{1}{|S_k|} \sum_{p \in S_k} [\, y_{k+1}(p) < y_k(p) \,].

    A stack of more than :data:`ORDER_VALUES` (65536) values per exposure is compared on a
    strided sample of them.

    :param torch.Tensor y: codes ``(N, ...)``, float in ``[0, 1]`` or integer (then give
        ``white``).
    :param torch.Tensor exposure_times: the listed times ``(N,)``.
    :param float white: the code of saturation (1 for codes in ``[0, 1]``, ``2**bits - 1``
        for integer codes).
    :return: (tuple) ``order`` ``(N,)`` (exposures by increasing listed time), the fractions
        :math:`d_k` ``(N - 1,)`` (float64, 0 where :math:`S_k` is empty) and the sizes
        :math:`|S_k|` ``(N - 1,)``.

    |sep|

    :Example:

    >>> import torch
    >>> y = torch.tensor([[0.2, 0.4, 0.6], [0.1, 0.2, 0.3]])  # the second frame is darker
    >>> order, darker, count = darker_fractions(y, torch.tensor([1.0, 2.0]))
    >>> darker.tolist(), count.tolist()
    ([1.0], [3])
    """
    check_tensor(y, "y")
    n = y.shape[0]
    exposure_times = check_exposure_times(exposure_times, n)[0]
    flat = y.reshape(n, -1)
    stride = max(1, flat.shape[1] // ORDER_VALUES)
    flat = flat[:, ::stride]
    if not flat.is_floating_point():
        flat = flat.to(torch.int64)  # uint16 codes have no comparisons in torch
    order = exposure_times.detach().cpu().argsort()
    a, b = flat[order[:-1].to(flat.device)], flat[order[1:].to(flat.device)]
    both = (a > 0) & (a < white) & (b > 0) & (b < white) & (a != b)
    count = both.sum(-1)
    darker = (both & (b < a)).sum(-1).double() / count.clamp_min(1).double()
    return order, darker.cpu(), count.cpu()


def check_exposure_order(
    y: Tensor,
    exposure_times: Tensor,
    white: float = 1.0,
    name: str = "`stack`",
    names: Sequence[str] | None = None,
    warn: bool = True,
) -> None:
    r"""Refuse listed exposure times whose order the images contradict.

    A step between consecutive exposures (by listed time) contradicts the listed order when
    the longer exposure is darker at more than :data:`DARKER_MAJORITY` of the pixels where
    the two differ (and at least 20 such pixels; :func:`darker_fractions`). When half the
    steps or more do, the listing is refused; fewer such steps (a frame listed at the wrong
    stop) give a ``UserWarning`` when ``warn`` (a fit's time check names and corrects them).
    Equally bright frames (a camera at its shutter limit) are neither.

    :param torch.Tensor y: codes ``(N, ...)`` of one stack, float in ``[0, 1]`` or integer.
    :param torch.Tensor exposure_times: the listed times ``(N,)``.
    :param float white: the code of saturation (default 1).
    :param str name: how the message names the stack (default ``"`stack`"``).
    :param Sequence, None names: how the message names each exposure (e.g. file names;
        default ``exposure k``, ``k`` its index in ``y``).
    :param bool warn: warn about contradicted steps that are fewer than half (default
        ``True``).
    :raises ValueError: naming the exposures and their listed times.

    |sep|

    :Example:

    >>> import torch
    >>> y = torch.linspace(0.1, 0.4, 40).expand(2, 40) * torch.tensor([[2.0], [1.0]])
    >>> check_exposure_order(y, torch.tensor([1.0, 2.0]))
    Traceback (most recent call last):
    ...
    ValueError: Expected `exposure_times` to grow with the brightness of the exposures of `stack`, but exposure 1 (listed 2 s) is darker than exposure 0 (listed 1 s) at 100% of the 40 pixels where they differ: are the times in the wrong order, or listed for other files?
    """
    order, darker, count = darker_fractions(y, exposure_times, white)
    times = exposure_times.detach().cpu().double()
    wrong = [
        k
        for k in range(len(darker))
        if int(count[k]) >= MIN_ORDER_PIXELS and float(darker[k]) > DARKER_MAJORITY
    ]
    if not wrong:
        return
    label = (lambda i: names[i]) if names is not None else (lambda i: f"exposure {i}")
    steps = [
        f"{label(int(order[k + 1]))} (listed {float(times[order[k + 1]]):.4g} s) is darker "
        f"than {label(int(order[k]))} (listed {float(times[order[k]]):.4g} s) at "
        f"{float(darker[k]):.0%} of the {int(count[k])} pixels where they differ"
        for k in wrong[:3]
    ]
    more = f"; and {len(wrong) - 3} more step(s)" if len(wrong) > 3 else ""
    if 2 * len(wrong) >= len(darker):
        raise ValueError(
            "Expected `exposure_times` to grow with the brightness of the exposures of "
            f"{name}, but {'; '.join(steps)}{more}: are the times in the wrong order, or "
            "listed for other files?"
        )
    if warn:
        warnings.warn(
            f"listed exposure times out of order in {name}: {'; '.join(steps)}{more} (a "
            "frame listed at the wrong stop?).",
            UserWarning,
            stacklevel=3,
        )
