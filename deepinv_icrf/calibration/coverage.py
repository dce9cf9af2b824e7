r"""What part of a curve a bracket measures: the range of codes its photos hold.

Outside the lowest and highest code the photos hold, a fitted curve is extrapolated, not
measured (an underexposed bracket leaves its top unmeasured, an overexposed one its bottom).
:func:`observed_code_range` finds that range, :func:`extrapolation_note` says what it leaves
unmeasured; :func:`~deepinv_icrf.calibration.fit_icrf` warns with it and the fit summary
records it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf.bracket import image_codes

__all__ = [
    "OBSERVED_SHARE",
    "OBSERVED_NOTE",
    "OBSERVED_SAMPLE",
    "observed_code_range",
    "extrapolation_note",
]

#: Share of the stack's codes beyond which :func:`observed_code_range` puts the ends of the
#: codes the photos hold (a few specular or dead pixels do not measure a curve's end).
OBSERVED_SHARE = 1e-4
#: :func:`extrapolation_note` says that the curve is extrapolated above the highest code the
#: photos hold when that lies below this fraction of the code range (below the lowest code
#: when that lies above one minus it).
OBSERVED_NOTE = 0.75
#: Pixel positions per exposure above which :func:`observed_code_range` counts every k-th row
#: only (each end of a 5-frame bracket still rests on 33 codes; 12 MP x 7 in 4 ms).
OBSERVED_SAMPLE = 65_536


def observed_code_range(
    images: np.ndarray | Tensor, bit_depth: int | None = None
) -> np.ndarray:
    r"""Per channel, the lowest and highest code a stack holds, as fractions of the code
    range: the codes with at least :data:`OBSERVED_SHARE` of the stack's codes at or beyond
    them (a few specular or dead pixels do not count). Outside this range a fitted curve is
    extrapolated, not measured.

    :param numpy.ndarray, torch.Tensor images: ``uint8``/``uint16`` codes ``(N, H, W, C)`` or
        a float tensor ``(..., C, H, W)`` in ``[0, 1]``.
    :param int, None bit_depth: bit depth of integer codes (default: from their dtype).
    :return: (:class:`numpy.ndarray`) ``(C, 2)``: lowest and highest code per channel.

    |sep|

    :Example:

    >>> import numpy as np
    >>> codes = np.linspace(0, 100, 4000).astype(np.uint8).reshape(2, 40, 50, 1)
    >>> (observed_code_range(codes) * 255).round().tolist()
    [[0.0, 100.0]]
    """
    codes, bits = image_codes(images, "images", float_arrays=False)
    if bits is None:  # float codes (..., C, H, W)
        flat = codes.detach().movedim(-3, -1).reshape(-1, codes.shape[-3]).double()
        step = -(-flat.shape[0] // OBSERVED_SAMPLE)
        flat = flat[::step]
        ends = torch.quantile(
            flat,
            torch.tensor(
                [OBSERVED_SHARE, 1.0 - OBSERVED_SHARE],
                dtype=flat.dtype,
                device=flat.device,
            ),
            dim=0,
        )
        return ends.T.clamp(0.0, 1.0).cpu().numpy()
    top = 2 ** (bit_depth or bits) - 1
    codes = codes.cpu().numpy() if isinstance(codes, Tensor) else codes
    step = -(-codes.shape[1] * codes.shape[2] // OBSERVED_SAMPLE)  # ceil
    codes = codes[:, ::step]
    channels = codes.shape[-1]
    levels = int(np.iinfo(codes.dtype).max) + 1
    hist = np.zeros(channels * levels, np.int64)
    offsets = np.arange(channels, dtype=np.intp) * levels
    for frame in codes:  # one exposure at a time: no stack-sized temporaries
        # every channel in one count: code + channel * levels
        index = frame.reshape(-1, channels).astype(np.intp)
        index += offsets
        hist += np.bincount(index.ravel(), minlength=hist.size)
    hist = hist.reshape(channels, levels)
    hist[:, top] += hist[:, top + 1 :].sum(axis=1)  # codes above the range: clipped
    hist = hist[:, : top + 1]
    need = np.maximum(1, np.ceil(OBSERVED_SHARE * hist.sum(axis=1)))
    low = np.argmax(np.cumsum(hist, axis=1) >= need[:, None], axis=1)
    high = top - np.argmax(np.cumsum(hist[:, ::-1], axis=1) >= need[:, None], axis=1)
    return np.stack([low, high], axis=1) / top


def extrapolation_note(
    observed: np.ndarray | Sequence[Sequence[float]], bit_depth: int | None
) -> str | None:
    r"""What the photos leave unmeasured of the curve, or ``None``: a line when the highest
    code they hold (:func:`observed_code_range`, any channel) lies below :data:`OBSERVED_NOTE` of
    the code range, one when the lowest lies above one minus it.

    :param numpy.ndarray, Sequence observed: per channel the lowest and highest code held,
        as fractions of the code range ``(C, 2)``.
    :param int, None bit_depth: bits of the codes (to name them; ``None``: fractions).
    :return: (str, None) the lines, or ``None``.
    """
    ranges = np.asarray(observed, dtype=np.float64).reshape(-1, 2)
    if ranges.size == 0:
        return None
    top = 2**bit_depth - 1 if bit_depth else None

    def code(value: float) -> str:
        return f"{round(value * top)} of {top}" if top else f"{value:.3f} of 1"

    high, low = float(ranges[:, 1].max()), float(ranges[:, 0].min())
    notes = []
    if high < OBSERVED_NOTE:
        notes.append(
            f"the photos reach code {code(high)} at most: the curve above it is "
            "extrapolated, not measured (a longer exposure would measure it)"
        )
    if low > 1.0 - OBSERVED_NOTE:
        notes.append(
            f"the photos go no darker than code {code(low)}: the curve below it is "
            "extrapolated, not measured (a shorter exposure would measure it)"
        )
    return "\n".join(notes) or None
