r"""What a fit found, as plain data and as text: the summary ``deepinv-icrf fit`` writes.

:func:`fit_summary` turns a fitted :class:`~deepinv_icrf.models.ICRF` and the codes it was
fitted on into a JSON-ready dict: per channel the curve at codes 1/4, 1/2 and 3/4, the
equivalent gamma :math:`\log f(1/2) / \log(1/2)` and the share of usable (neither black nor
clipped) codes (:func:`channel_stats`), and what the fit report holds (refined exposure times,
alignment shifts, the share of codes left out as outliers, the estimated code noise, the
range of codes the photos hold, outside which the curve is extrapolated).
:func:`describe_fit` writes the same as the lines the command line prints, and
:func:`fit_metadata` the values worth keeping in the curve's file (the code noise, which
``merge --deghost`` reads back).

Values of the fit report enter through one table, :data:`REPORT_FIELDS`: a new field of the
report is one more row there (its key, how to read it from the report, whether the curve file
keeps it, and the note printed about it), and the summary, the curve file and the printed text
all follow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf.bracket import image_codes
from deepinv_icrf.calibration.coverage import extrapolation_note
from deepinv_icrf.models.icrf_base import ICRFBase

__all__ = [
    "ReportField",
    "REPORT_FIELDS",
    "OUTLIER_NOTE_FRACTION",
    "channel_names",
    "channel_stats",
    "fit_summary",
    "fit_metadata",
    "describe_fit",
]

#: Share of codes left out as outliers above which :func:`describe_fit` says so.
OUTLIER_NOTE_FRACTION = 0.005
#: Codes at which :func:`channel_stats` samples the curve (fractions of the code range).
_SAMPLED_CODES = (0.25, 0.5, 0.75)


def channel_names(channels: int) -> tuple[str, ...]:
    r"""Names of the channels of a curve: ``R``, ``G``, ``B`` for 3, else ``0``, ``1``, ...

    :param int channels: number of channels.
    :return: (tuple) one name per channel.

    |sep|

    :Example:

    >>> channel_names(3), channel_names(2)
    (('R', 'G', 'B'), ('0', '1'))
    """
    return ("R", "G", "B") if channels == 3 else tuple(str(k) for k in range(channels))


def _finite_curve(icrf: ICRFBase | Tensor) -> np.ndarray:
    curve = icrf.curve if isinstance(icrf, ICRFBase) else icrf
    if not isinstance(curve, Tensor) or curve.ndim != 2:
        raise TypeError(
            "Expected `icrf` to be an ICRF or a curve tensor (C, L), but got "
            f"{type(icrf).__name__}."
        )
    curve = curve.detach().to("cpu", torch.float64)
    if not bool(curve.isfinite().all()):
        raise ValueError(
            "Expected a finite fitted curve, but the ICRF holds NaN or inf: the fit diverged."
        )
    return curve.numpy()


#: Pixel positions per exposure above which :func:`_usable_fraction` counts every k-th row
#: only (a standard error below 0.04% of the share; 12 MP x 7: 0.36 s -> 0.06 s).
USABLE_SAMPLE = 2_000_000


def _usable_fraction(images: np.ndarray | Tensor, bit_depth: int | None) -> np.ndarray:
    r"""Per channel, the share of codes that are neither 0 nor the top code (counted on
    evenly spaced rows of frames larger than :data:`USABLE_SAMPLE` positions)."""
    codes, bits = image_codes(images, "images", float_arrays=False)
    if bits is None:  # float codes (..., C, H, W)
        flat = codes.detach().movedim(-3, -1).reshape(-1, codes.shape[-3])
        return ((flat > 0) & (flat < 1)).double().mean(dim=0).cpu().numpy()
    if codes.ndim != 4:
        raise ValueError(
            f"Expected `images` of shape (N, H, W, C), but got shape {tuple(codes.shape)}."
        )
    top = 2 ** (bit_depth or bits) - 1
    codes = (
        codes.cpu().numpy() if isinstance(codes, Tensor) else codes
    )  # no copy on CPU
    step = -(-codes.shape[1] * codes.shape[2] // USABLE_SAMPLE)  # ceil
    codes = codes[:, ::step]
    channels = codes.shape[-1]
    count = np.zeros(channels, dtype=np.int64)
    # 0 < v < top  <=>  v - 1 < top - 1 in unsigned arithmetic (0 wraps to the dtype's
    # largest value): one subtraction and one comparison per channel plane, into two
    # reused plane buffers (a sum of a (H, W, C) mask over its first axes is 3x slower)
    shifted = np.empty(codes.shape[1:3], codes.dtype)
    usable = np.empty(codes.shape[1:3], bool)
    one = codes.dtype.type(1)
    for frame in codes:  # one exposure at a time: no stack-sized temporaries
        for c in range(channels):
            np.subtract(frame[..., c], one, out=shifted)
            count[c] += np.count_nonzero(np.less(shifted, top - 1, out=usable))
    return count / max(1, codes.shape[0] * codes.shape[1] * codes.shape[2])


def channel_stats(
    icrf: ICRFBase | Tensor, images: np.ndarray | Tensor, bit_depth: int | None = None
) -> list[dict[str, Any]]:
    r"""Per channel: the curve at codes 1/4, 1/2 and 3/4, its equivalent gamma, usable codes.

    The equivalent gamma is the exponent :math:`\gamma` of the power curve
    :math:`f(y) = y^\gamma` through the curve's value at mid-grey,

    .. math::

        \gamma = \frac{\log f(1/2)}{\log (1/2)},

    (``None`` where :math:`f(1/2)` is 0 or 1); the usable share is the fraction of codes of
    the stack that are neither 0 nor the top code :math:`2^b - 1`.

    :param deepinv_icrf.models.ICRF, torch.Tensor icrf: the ICRF or its curve ``(C, L)``.
    :param numpy.ndarray, torch.Tensor images: the codes: ``uint8``/``uint16`` ``(N, H, W, C)``
        or a float tensor ``(..., C, H, W)`` in ``[0, 1]``.
    :param int, None bit_depth: bit depth of integer codes (default: 8 for ``uint8``, 16 for
        ``uint16``).
    :return: (list) one dict per channel: ``channel``, ``icrf_at_0.25``, ``icrf_at_0.5``,
        ``icrf_at_0.75``, ``equivalent_gamma``, ``usable_pixel_fraction``.

    |sep|

    :Example:

    >>> import numpy as np
    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF.from_response("gamma", channels=1)
    >>> codes = np.array([0, 64, 128, 255], dtype=np.uint8).reshape(2, 1, 2, 1)
    >>> stats = channel_stats(icrf, codes)[0]
    >>> stats["equivalent_gamma"], stats["usable_pixel_fraction"]
    (2.2, 0.5)
    """
    curve = _finite_curve(icrf)
    usable = _usable_fraction(images, bit_depth)
    if usable.shape[0] != curve.shape[0] and curve.shape[0] != 1:
        raise ValueError(
            f"Expected `images` with {curve.shape[0]} channel(s) like the ICRF, but got "
            f"{usable.shape[0]}."
        )
    channels, n_points = curve.shape
    grid = np.linspace(0.0, 1.0, n_points)
    names = channel_names(channels)
    stats = []
    for k in range(channels):
        at = [float(np.interp(code, grid, curve[k])) for code in _SAMPLED_CODES]
        mid = at[1]
        stats.append(
            {
                "channel": names[k],
                **{
                    f"icrf_at_{code}": round(value, 6)
                    for code, value in zip(_SAMPLED_CODES, at, strict=True)
                },
                "equivalent_gamma": (
                    round(math.log(mid) / math.log(0.5), 4) if 0 < mid < 1 else None
                ),
                "usable_pixel_fraction": round(
                    float(usable[min(k, usable.shape[0] - 1)]), 4
                ),
            }
        )
    return stats


# ---------------------------------------------------------------------------- the report
def _floats(value: object) -> list[float] | None:
    if value is None:
        return None
    return [float(v) for v in torch.as_tensor(value, dtype=torch.float64).reshape(-1)]


def _refinement(report: object) -> Any:
    return getattr(report, "refinement", None)


def _refined_times(report: object) -> list[float] | None:
    # a refinement reports how it set the exponent; a plain fit the times it used
    if _refinement(report) is None:
        return None
    return _floats(getattr(report, "exposure_times", None))


def _refinement_note(icrf: ICRFBase, summary: Mapping[str, Any]) -> str:
    from deepinv_icrf.calibration.refine import describe_refinement

    return describe_refinement(icrf)


def _outlier_note(icrf: ICRFBase, summary: Mapping[str, Any]) -> str | None:
    worst = max(summary["outlier_fraction"], default=0.0)
    if worst < OUTLIER_NOTE_FRACTION:
        return None
    aligned = bool(summary.get("align")) or "shifts" in summary
    hint = "" if aligned else "; if the camera moved between the photos, try --align"
    # static brackets two or more stops apart also reach 5-12% (JPEG and film grain that
    # the Gaussian noise model does not describe): name both causes
    return (
        f"left out {100 * worst:.1f}% of the codes as outliers (codes no single curve "
        "explains: something in the scene changed between exposures, or compression or "
        f"grain beyond the noise model{hint})"
    )


def _time_check(report: object) -> dict[str, Any] | None:
    check = getattr(report, "time_check", None)
    return None if check is None else check.to_dict()


def _time_note(icrf: ICRFBase, summary: Mapping[str, Any]) -> str | None:
    check = getattr(getattr(icrf, "fit_report", None), "time_check", None)
    if check is None or (check.consistent and not check.unmatched_steps):
        return None
    names = summary.get("files")
    if not isinstance(names, list) or len(names) != check.listed.numel():
        names = None
    text = check.describe(names)
    if not check.consistent:
        refined = _refinement(icrf.fit_report) is not None
        text += (
            "\n  the fit used exposure times refined from the images"
            if refined
            else "\n  the fit used the listed times (refinement was switched off)"
        )
    return text


def _jump_note(icrf: ICRFBase, summary: Mapping[str, Any]) -> str:
    from deepinv_icrf.calibration import core

    return (
        f"the first fit's curve jumped x{summary['refit_jump']:.2f} between adjacent codes (a "
        "flat stretch of the response: photos that disagree with each other or with their "
        f"times); refitted with a minimum slope (at most x{core.REFIT_MAX_JUMP:.2f} between "
        "adjacent codes); check the times and the frames"
    )


def _curve_jump_note(icrf: ICRFBase, summary: Mapping[str, Any]) -> str | None:
    from deepinv_icrf.calibration import core

    jump = summary["curve_jump"]
    if jump <= core.MAX_CURVE_JUMP:
        return None
    return (
        f"the fitted curve jumps x{jump:.2f} between adjacent codes (codes 64..239; real "
        "responses: x1.02-1.06); check the times and the frames"
    )


def _extrapolation_note(icrf: ICRFBase, summary: Mapping[str, Any]) -> str | None:
    return extrapolation_note(summary["observed_code_range"], summary.get("bit_depth"))


def _floor(report: object) -> list[float] | None:
    return _floats(getattr(report, "floor", None))


@dataclass(frozen=True)
class ReportField:
    r"""One value of a fit report that the summary records (a row of :data:`REPORT_FIELDS`).

    :param str key: its key in the summary (and in the curve file's metadata).
    :param Callable read: ``read(report)``: the JSON-ready value, or ``None`` when the report
        does not have it (the key is then left out).
    :param bool metadata: also keep it in the curve file's metadata (:func:`fit_metadata`).
    :param Callable, None note: ``note(icrf, summary)``: a line (or lines) for the printed
        summary, or ``None`` for nothing to say.
    """

    key: str
    read: Callable[[object], Any]
    metadata: bool = False
    note: Callable[[ICRFBase, Mapping[str, Any]], str | None] | None = None


#: The fit-report values of a summary, in the order they are printed. A new field of the
#: report is one more row.
REPORT_FIELDS: tuple[ReportField, ...] = (
    # the listed exposure times checked against the images (issue: times you cannot trust)
    ReportField("time_check", _time_check, note=_time_note),
    ReportField("refined_exposure_times", _refined_times, note=_refinement_note),
    ReportField(
        "refinement_exponent",
        lambda r: None if _refinement(r) is None else float(_refinement(r).exponent),
    ),
    ReportField("shifts", lambda r: getattr(r, "shifts", None)),
    ReportField(
        "outlier_fraction",
        lambda r: _floats(getattr(r, "outliers", None)),
        note=_outlier_note,
    ),
    # the code noise the fit estimated: `merge --deghost` reads it back from the curve file
    ReportField(
        "code_std",
        lambda r: _floats(getattr(r, "sigma", None)) or None,
        metadata=True,
    ),
    # the jump of a first fit that was refitted with a minimum slope
    ReportField(
        "refit_jump", lambda r: getattr(r, "refit_jump", None), note=_jump_note
    ),
    # the largest ratio of adjacent values of the final curve: a note above x1.10
    ReportField(
        "curve_jump", lambda r: getattr(r, "curve_jump", None), note=_curve_jump_note
    ),
    # the code of no light per channel ([0, 1] units): merge's lower cutoff lies above it
    ReportField("floor", _floor, metadata=True),
    # the lowest and highest code the photos hold per channel: outside, the curve is a guess
    ReportField(
        "observed_code_range",
        lambda r: getattr(r, "observed_code_range", None),
        note=_extrapolation_note,
    ),
)


def _report_values(icrf: ICRFBase, metadata_only: bool = False) -> dict[str, Any]:
    report = getattr(icrf, "fit_report", None)
    if report is None:
        return {}
    values = {}
    for field in REPORT_FIELDS:
        if metadata_only and not field.metadata:
            continue
        value = field.read(report)
        if value is not None:
            values[field.key] = value
    return values


def fit_metadata(icrf: ICRFBase) -> dict[str, Any]:
    r"""The values of a fit report worth keeping in the curve's file (its ``metadata``).

    The code noise the fit estimated (``code_std``, one std per channel in ``[0, 1]``
    units), which :func:`deepinv_icrf.hdr_summary.recorded_code_std` reads back for
    deghosting, and the floor (``floor``, the code of no light per channel), above which
    ``merge`` puts its lower cutoff. Pass the result to :meth:`~deepinv_icrf.models.ICRF.save` as keywords.

    :param deepinv_icrf.models.ICRF icrf: a fitted ICRF (with ``fit_report``; without one the
        result is empty).
    :return: (dict) JSON-ready values by key (rows of :data:`REPORT_FIELDS` with
        ``metadata=True``).

    |sep|

    :Example:

    >>> from deepinv_icrf.calibration import FitReport
    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF(channels=1, n_points=4)
    >>> icrf.fit_report = FitReport("code", 9, 0.1, None, None, None, sigma=[0.01])
    >>> fit_metadata(icrf)
    {'code_std': [0.01]}
    """
    return _report_values(icrf, metadata_only=True)


def _jsonable(value: object) -> object | None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return None
    return value


def fit_summary(
    icrf: ICRFBase,
    images: np.ndarray | Tensor,
    *,
    bit_depth: int | None = None,
    context: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    r"""A JSON-ready summary of a fit: the curve per channel and what the fit report holds.

    :param deepinv_icrf.models.ICRF icrf: the fitted ICRF (from
        :func:`~deepinv_icrf.calibration.fit_icrf`; its ``fit_report`` is read when present).
    :param numpy.ndarray, torch.Tensor images: the codes it was fitted on, ``uint8``/``uint16``
        ``(N, H, W, C)`` or a float tensor ``(N, C, H, W)`` in ``[0, 1]``.
    :param int, None bit_depth: bit depth of integer codes (default: from their dtype).
    :param Mapping, None context: values to record first, as given (where the images came
        from, the options of the fit, its wall time, ...); a key the summary computes itself
        raises :class:`ValueError`.
    :return: (dict) the ``context``, then ``bit_depth``, ``shape`` (``[C, H, W]``), ``band``
        (whether the ICRF carries a confidence band), ``channels`` (:func:`channel_stats`),
        one key per value of the fit report (:data:`REPORT_FIELDS`) and ``icrf_metadata`` (the
        ICRF's own metadata, when it has any).
    :raises ValueError: when the curve holds NaN or inf (a diverged fit).

    |sep|

    :Example:

    >>> import numpy as np
    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF.from_response("gamma", channels=3)
    >>> codes = np.full((2, 4, 5, 3), 128, dtype=np.uint8)
    >>> summary = fit_summary(icrf, codes, context={"seed": 0})
    >>> summary["seed"], summary["shape"], summary["channels"][0]["equivalent_gamma"]
    (0, [3, 4, 5], 2.2)
    """
    if isinstance(images, Tensor):
        shape = list(images.shape[-3:])
        bits = bit_depth
    else:
        shape = [images.shape[-1], *images.shape[1:3]] if images.ndim == 4 else None
        bits = bit_depth or {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}.get(
            images.dtype
        )
    computed: dict[str, Any] = {
        "bit_depth": bits,
        "shape": shape,
        "band": getattr(icrf, "band", None) is not None,
        "channels": channel_stats(icrf, images, bit_depth),
        **_report_values(icrf),
    }
    meta = _jsonable(getattr(icrf, "metadata", None))
    if meta:
        computed["icrf_metadata"] = meta
    context = dict(context or {})
    clash = sorted(set(context) & set(computed))
    if clash:
        raise ValueError(
            f"Expected `context` without the keys the summary computes, but got {clash}."
        )
    return {**context, **computed}


def describe_fit(icrf: ICRFBase, summary: Mapping[str, Any]) -> str:
    r"""The printed form of a :func:`fit_summary`: the notes on the report, then a table.

    One note per value of the report that has something to say (:data:`REPORT_FIELDS`: the
    refined exposure times, a share of outlier codes worth a look), then one line per channel:
    the curve at codes 1/4, 1/2 and 3/4, the equivalent gamma and the usable share.

    :param deepinv_icrf.models.ICRF icrf: the fitted ICRF the summary was made of.
    :param Mapping summary: the summary (:func:`fit_summary`).
    :return: (str) the text, without a final newline.

    |sep|

    :Example:

    >>> import numpy as np
    >>> from deepinv_icrf.models import ICRF
    >>> icrf = ICRF.from_response("gamma", channels=1)
    >>> codes = np.full((2, 4, 5, 1), 128, dtype=np.uint8)
    >>> print(describe_fit(icrf, fit_summary(icrf, codes)))
      channel  f(0.25)   f(0.5)    f(0.75)   gamma~   usable
      0        0.04737   0.21764   0.53105   2.200   100.0%
    """
    lines = []
    for field in REPORT_FIELDS:
        if field.note is not None and field.key in summary:
            note = field.note(icrf, summary)
            if note:
                lines.append(note)
    lines.append("  channel  f(0.25)   f(0.5)    f(0.75)   gamma~   usable")
    for s in summary["channels"]:
        gamma = s["equivalent_gamma"]
        gamma_text = f"{gamma:.3f}" if gamma is not None else "  n/a"
        lines.append(
            f"  {s['channel']:<7}  {s['icrf_at_0.25']:.5f}   {s['icrf_at_0.5']:.5f}   "
            f"{s['icrf_at_0.75']:.5f}   {gamma_text}   {s['usable_pixel_fraction']:.1%}"
        )
    return "\n".join(lines)
