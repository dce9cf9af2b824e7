r"""Exposure alignment of handheld brackets: translate every exposure onto a reference one."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf._checks import check_int
from deepinv_icrf.bracket import as_stack_tensor, check_exposure_times
from deepinv_icrf.functional.align import mtb_shift

__all__ = ["align_exposures"]

#: Default exclusion half-width of the bitmaps, in ``[0, 1]`` units (4 codes of 8 bits).
_DEFAULT_TOLERANCE = 4 / 255


def align_exposures(
    stack: np.ndarray | Tensor,
    reference: int | None = None,
    max_shift: int = 32,
    tolerance: float | None = None,
    crop: bool = True,
    exposure_times: Tensor | np.ndarray | list[float] | None = None,
    quantile: float | str = "auto",
) -> tuple[np.ndarray | Tensor, Tensor]:
    r"""Align the exposures of a handheld bracket by integer translations (Ward's bitmaps).

    Each exposure is aligned to its neighbour toward the reference (exposures far apart look
    too different; neighbours share most well-exposed pixels) with
    :func:`deepinv_icrf.functional.mtb_shift`, and the shifts are accumulated:

    .. math::

        s_{\mathrm{ref}} = 0, \qquad s_k = s_{k \mp 1} + \mathrm{mtb}(Y_{k \mp 1}, Y_k),

    on the gray images (mean over channels). Exposure :math:`k` translated by :math:`s_k`
    (``out[i, j] = in[i - dy, j - dx]``) matches the reference. Neighbours are taken in the
    order of ``exposure_times`` when given, else in the stack's order (folders read with
    :func:`~deepinv_icrf.data.read_exposure_folder` are sorted by exposure time).

    :param numpy.ndarray, torch.Tensor stack: one stack as :func:`~deepinv_icrf.fit_icrf`
        takes it: a ``uint8``/``uint16`` array ``(N, H, W, C)`` or ``(N, H, W)``, or a float
        tensor or array ``(N, C, H, W)`` in ``[0, 1]``.
    :param int, None reference: index of the exposure the others are aligned to (default: the
        middle one in exposure order).
    :param int max_shift: largest shift searched between neighbours, in pixels (default 32).
    :param float, None tolerance: exclusion half-width of the bitmaps in ``[0, 1]`` units
        (default ``None``: 4/255, whatever the bit depth).
    :param bool crop: ``True`` (default): return the region every translated exposure covers
        (pure slicing, codes unchanged). ``False``: keep the size, positions shifted in from
        outside an exposure repeat its nearest edge value (they are not real data: leave them
        out of fits).
    :param torch.Tensor, numpy.ndarray, list, None exposure_times: the ``N`` exposure times,
        only used to order the exposures (default: the stack's order).
    :param float, str quantile: threshold quantile of the bitmaps, ``"auto"`` (default) or a
        value in ``(0, 1)`` (0.5: Ward's median), see :func:`~deepinv_icrf.functional.mtb_shift`.
    :return: (tuple) the aligned stack, of the input's type, dtype, layout and device
        (cropped to ``(N, H', W', C)`` or ``(N, C, H', W')``), and the shifts ``(N, 2)``
        (``int64``, ``(dy, dx)`` per exposure, on the CPU).

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.data import demo_scene, demo_exposure_times
    >>> from deepinv_icrf.physics import ExposureStack, GammaResponse
    >>> scene = demo_scene(80, 96, channels=1)
    >>> y = ExposureStack(demo_exposure_times(3), response=GammaResponse(2.2))(scene)[0]
    >>> y[2] = torch.roll(y[2], shifts=(2, -3), dims=(-2, -1))  # the last one moved
    >>> aligned, shifts = align_exposures(y)
    >>> shifts.tolist()
    [[0, 0], [0, 0], [-2, 3]]
    >>> tuple(aligned.shape)
    (3, 1, 78, 93)
    """
    gray, layout = _gray_stack(stack)
    n = gray.shape[0]
    order = _exposure_order(exposure_times, n)
    if reference is None:
        reference = order[n // 2]
    check_int(reference, "reference", 0)
    if reference >= n:
        raise ValueError(
            f"Expected `reference` to index one of the {n} exposures, but got {reference}."
        )
    check_int(max_shift, "max_shift", 0)
    tolerance = _DEFAULT_TOLERANCE if tolerance is None else tolerance
    if not (isinstance(tolerance, (int, float)) and 0 <= tolerance < 1):
        raise ValueError(
            f"Expected `tolerance` in [0, 1) or None, but got {tolerance!r}."
        )
    if not isinstance(crop, bool):
        raise TypeError(f"Expected `crop` to be a bool, but got {crop!r}.")
    shifts = torch.zeros(n, 2, dtype=torch.int64)
    start = order.index(reference)
    for step in (1, -1):
        pos = start + step
        while 0 <= pos < n:
            near, far = order[pos - step], order[pos]
            dy, dx = mtb_shift(
                gray[near], gray[far], max_shift, tolerance, quantile=quantile
            )
            shifts[far] = shifts[near] + torch.tensor([dy, dx])
            pos += step
    h, w = gray.shape[-2:]
    return _translate(stack, shifts, layout, h, w, crop), shifts


def _gray_stack(stack: Any) -> tuple[Tensor, str]:
    r"""Gray images ``(N, H, W)`` in ``[0, 1]`` of a stack, and its layout (``"NHWC"``,
    ``"NHW"`` or ``"NCHW"``)."""
    if isinstance(stack, Tensor) and stack.ndim == 5:
        raise ValueError(
            "Expected `stack` to be one stack (N, C, H, W), but got a batch of shape "
            f"{tuple(stack.shape)}: align each stack on its own (their crops differ)."
        )
    y, bits = as_stack_tensor(stack, "stack")
    if y.shape[0] != 1:
        raise ValueError(
            f"Expected `stack` to be one stack, but got a batch of shape {tuple(y.shape)}."
        )
    layout = ("NHW" if stack.ndim == 3 else "NHWC") if bits is not None else "NCHW"
    return y[0].mean(dim=1), layout


def _exposure_order(exposure_times: object, n: int) -> list[int]:
    r"""Stack indices in exposure order (the stack's order without times)."""
    if exposure_times is None:
        return list(range(n))
    times = check_exposure_times(exposure_times, n)[0].detach().cpu()
    return [int(k) for k in torch.argsort(times, stable=True)]


def _translate(
    stack: Any, shifts: Tensor, layout: str, h: int, w: int, crop: bool
) -> Any:
    r"""Translate every exposure by its shift; crop to the common region or pad by edges."""
    rows = 1 if layout != "NCHW" else 2
    lo_y, lo_x = (int(v) for v in shifts.clamp(min=0).amax(dim=0))
    hi_y, hi_x = (int(v) for v in shifts.clamp(max=0).amin(dim=0))
    if crop and (h - lo_y + hi_y <= 0 or w - lo_x + hi_x <= 0):
        raise ValueError(
            f"The shifts {shifts.tolist()} leave no region that every exposure covers: use "
            "crop=False or a smaller `max_shift`."
        )
    out = []
    for k in range(shifts.shape[0]):
        dy, dx = int(shifts[k, 0]), int(shifts[k, 1])
        if crop:
            iy = slice(lo_y - dy, h + hi_y - dy)
            ix = slice(lo_x - dx, w + hi_x - dx)
            out.append(stack[k][(slice(None),) * (rows - 1) + (iy, ix)])
        else:
            iy = np.clip(np.arange(h) - dy, 0, h - 1)
            ix = np.clip(np.arange(w) - dx, 0, w - 1)
            if isinstance(stack, Tensor):
                iy, ix = (torch.from_numpy(i).to(stack.device) for i in (iy, ix))
            picked = stack[k][(slice(None),) * (rows - 1) + (iy,)]
            out.append(picked[(slice(None),) * rows + (ix,)])
    if isinstance(stack, Tensor):
        return torch.stack(out)
    return np.ascontiguousarray(np.stack(out))
