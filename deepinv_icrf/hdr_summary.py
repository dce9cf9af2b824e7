r"""What a merge produced, as plain data and as text: the statistics ``deepinv-icrf merge`` prints.

Beside :mod:`deepinv_icrf.hdr`: :func:`radiance_summary` describes a radiance map returned
by :func:`~deepinv_icrf.hdr.merge_hdr` (size, range, dynamic range in stops, pixels saturated
in every exposure), :func:`describe_radiance` writes it as one line, and
:func:`recorded_code_std` reads the code noise a curve file records (what
``merge --deghost`` needs to tell moving things from noise).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["radiance_summary", "describe_radiance", "recorded_code_std"]


def _channels_last(value: Any, name: str) -> np.ndarray:
    if isinstance(value, np.ndarray):
        array = value
    elif hasattr(value, "detach") and hasattr(value, "movedim"):  # a torch.Tensor
        array = value.detach().movedim(-3, -1).cpu().numpy()
    else:
        raise TypeError(
            f"Expected `{name}` to be a numpy array (H, W, C) or a tensor (C, H, W), but got "
            f"{type(value).__name__}."
        )
    if array.ndim != 3:
        raise ValueError(
            f"Expected `{name}` of one image, (H, W, C) or (C, H, W), but got "
            f"{array.ndim} dimensions."
        )
    return array


def radiance_summary(radiance: Any, saturated: Any = None) -> dict[str, Any]:
    r"""Size, range and dynamic range of a radiance map, and its pixels saturated everywhere.

    The dynamic range is counted in stops between the smallest and the largest positive
    radiance,

    .. math::

        \text{stops} = \log_2 \frac{\max_{E > 0} E}{\min_{E > 0} E}

    (0 when no value is positive).

    :param numpy.ndarray, torch.Tensor radiance: the map, ``(H, W, C)`` (numpy, as
        :func:`~deepinv_icrf.hdr.merge_hdr` returns it for images) or ``(C, H, W)`` (tensor).
    :param numpy.ndarray, torch.Tensor, None saturated: the mask of pixels saturated in every
        exposure (``return_saturated=True`` of :func:`~deepinv_icrf.hdr.merge_hdr`), same
        layout; ``None`` (default) leaves ``saturated_pixels`` out.
    :return: (dict) ``height``, ``width``, ``channels``, ``min``, ``max``, ``stops`` and
        ``saturated_pixels`` (pixels saturated in some channel).

    |sep|

    :Example:

    >>> import numpy as np
    >>> radiance = np.array([[[0.5], [4.0]], [[0.0], [2.0]]], dtype=np.float32)
    >>> summary = radiance_summary(radiance, saturated=radiance > 3)
    >>> summary["stops"], summary["saturated_pixels"], summary["width"]
    (3.0, 1, 2)
    """
    array = _channels_last(radiance, "radiance")
    height, width, channels = array.shape
    top = float(array.max()) if array.size else 0.0
    smallest = (
        float(np.min(array, where=array > 0, initial=math.inf)) if array.size else 0.0
    )
    summary: dict[str, Any] = {
        "height": height,
        "width": width,
        "channels": channels,
        "min": float(array.min()) if array.size else 0.0,
        "max": top,
        "stops": math.log2(top / smallest) if math.isfinite(smallest) else 0.0,
    }
    if saturated is not None:
        mask = _channels_last(saturated, "saturated")
        if mask.shape != array.shape:
            raise ValueError(
                f"Expected `saturated` of shape {array.shape} like `radiance`, but got "
                f"{mask.shape}."
            )
        # pixels saturated in some channel: the channel planes OR-ed (6x faster than
        # numpy's any over the last axis of an (H, W, C) mask)
        some = mask[..., 0].astype(bool)  # a copy, OR-ed in place
        for c in range(1, mask.shape[-1]):
            some |= mask[..., c].astype(bool, copy=False)
        summary["saturated_pixels"] = int(np.count_nonzero(some))
    return summary


def describe_radiance(summary: Mapping[str, Any]) -> str:
    r"""One line of a :func:`radiance_summary`: size, range, stops, saturated pixels.

    :param Mapping summary: the summary.
    :return: (str) the line.

    |sep|

    :Example:

    >>> print(describe_radiance({"height": 2, "width": 3, "channels": 1, "min": 0.0,
    ...     "max": 4.0, "stops": 3.0, "saturated_pixels": 1}))
    radiance 3x2 (1 channel(s)), range 0..4 (3.0 stops), 1 pixel(s) saturated in every exposure
    """
    line = (
        f"radiance {summary['width']}x{summary['height']} ({summary['channels']} "
        f"channel(s)), range {summary['min']:.4g}..{summary['max']:.4g} "
        f"({summary['stops']:.1f} stops)"
    )
    if "saturated_pixels" in summary:
        line += f", {summary['saturated_pixels']} pixel(s) saturated in every exposure"
    return line


def recorded_code_std(icrf: Any) -> float | None:
    r"""The code noise std recorded with a curve, if any: the largest over the channels.

    ``deepinv-icrf fit`` records the noise its fit estimated in the curve file, one std per
    channel in ``[0, 1]`` units (``metadata["code_std"]``, from
    :func:`deepinv_icrf.calibration.fit_metadata`); a freshly fitted ICRF holds it in its fit
    report. The largest is returned, to pass to :func:`~deepinv_icrf.hdr.merge_hdr` as
    ``code_std``.

    :param deepinv_icrf.models.ICRF, deepinv_icrf.models.ICRFFile icrf: the ICRF, loaded (its
        ``metadata``) or fitted (its ``fit_report``, read when the metadata has no
        ``code_std``), or a curve file (its ``metadata``).
    :return: (float, None) the largest recorded std, or ``None`` when none is recorded.
    :raises ValueError: when the recorded value is not one number in ``[0, 1]`` per channel
        (negative, not finite, not a number, a list of another length); :meth:`ICRF.load
        <deepinv_icrf.models.ICRF.load>` refuses such a file.

    |sep|

    :Example:

    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF(channels=3, n_points=4)
    >>> recorded_code_std(icrf) is None
    True
    >>> icrf.metadata["code_std"] = [0.01, 0.03, 0.02]
    >>> recorded_code_std(icrf)
    0.03
    """
    from deepinv_icrf._checks import check_channel_values

    value = (getattr(icrf, "metadata", None) or {}).get("code_std")
    where = "the ICRF's metadata `code_std`"
    if value is None and getattr(icrf, "fit_report", None) is not None:
        # only a fitted ICRF has a report (a loaded curve file has none: no calibration import)
        from deepinv_icrf.calibration.summary import fit_metadata

        value = fit_metadata(icrf).get("code_std")
        where = "the code noise of the ICRF's fit report"
    if value is None:
        return None
    channels = getattr(icrf, "channels", 1)
    return max(check_channel_values(value, where, channels))
