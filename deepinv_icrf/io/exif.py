r"""EXIF exposure settings through Pillow: ``ExposureTime``, ``FNumber`` and ISO.

A bracket that varies the aperture or the gain (ISO) instead of, or besides, the shutter time
exposes each photo in proportion to

.. math::

    e = t \cdot \frac{\text{ISO}}{N^2},

with :math:`t` the exposure time, :math:`N` the f-number. :func:`relative_exposures` turns the
settings of a bracket into such relative exposures, in seconds at the aperture and ISO of the
first photo, so that a bracket of shutter times alone keeps its times unchanged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

from deepinv_icrf.io.exposures import check_exposure_time

__all__ = [
    "ExposureSettings",
    "read_exposure_settings",
    "read_exposure_time",
    "relative_exposures",
    "exif_bytes",
    "exposure_rational",
]

_EXIF_IFD = 0x8769
_EXPOSURE_TIME = 33434
_F_NUMBER = 33437
_ISO = 34855  # ISOSpeedRatings / PhotographicSensitivity
_ISO_SPEED = 34867
_F_NUMBER_RANGE = (0.5, 1000.0)
_ISO_RANGE = (1.0, 1e7)


@dataclass(frozen=True)
class ExposureSettings:
    r"""The exposure settings of one photo, each ``None`` when its EXIF does not say.

    :param float, None exposure_time: ``ExposureTime`` in seconds.
    :param float, None f_number: ``FNumber`` :math:`N`.
    :param float, None iso: ``ISOSpeedRatings`` (``PhotographicSensitivity``).
    """

    exposure_time: float | None = None
    f_number: float | None = None
    iso: float | None = None


def _number(value: object) -> float | None:
    r"""A finite float from an EXIF value (rational, int, a tuple of them), else ``None``."""
    if isinstance(value, (tuple, list)):
        if not value:
            return None
        if len(value) == 2 and all(isinstance(v, int) for v in value):
            num, den = value
            return num / den if den and abs(num) < 2**64 and abs(den) < 2**64 else None
        value = value[0]
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    return number if math.isfinite(number) else None


def _within(value: float | None, bounds: tuple[float, float]) -> float | None:
    return value if value is not None and bounds[0] <= value <= bounds[1] else None


def read_exposure_settings(path: str | os.PathLike) -> ExposureSettings:
    r"""The EXIF exposure time, f-number and ISO of an image file (``None`` for each one absent,
    zero, out of range or unreadable).

    Looks in the EXIF sub-IFD and in the main IFD (TIFF files often keep the tags there).

    :param str, os.PathLike path: a JPEG, PNG or TIFF file.
    :return: (:class:`ExposureSettings`) the settings.

    |sep|

    :Example:

    >>> import tempfile, pathlib, numpy as np
    >>> from deepinv_icrf.io import write_image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.jpg"
    >>> write_image(path, np.zeros((4, 6, 3), np.uint8), exposure_time=1 / 250)
    >>> read_exposure_settings(path)
    ExposureSettings(exposure_time=0.004, f_number=None, iso=None)
    """
    from deepinv_icrf.io.limits import pillow

    values: dict[int, object] = {}
    try:
        with pillow() as Image:
            with Image.open(path) as im:
                exif = im.getexif()
                sub = exif.get_ifd(_EXIF_IFD)
                for tag in (_EXPOSURE_TIME, _F_NUMBER, _ISO, _ISO_SPEED):
                    value = sub.get(tag)
                    values[tag] = value if value is not None else exif.get(tag)
    except Exception:  # noqa: BLE001 - unreadable or malformed EXIF: no settings
        return ExposureSettings()
    seconds = _number(values[_EXPOSURE_TIME])
    if seconds is not None:
        try:
            seconds = check_exposure_time(seconds, "EXIF ExposureTime")
        except ValueError:
            seconds = None
    iso = _number(values[_ISO])
    iso = iso if iso else _number(values[_ISO_SPEED])
    return ExposureSettings(
        exposure_time=seconds,
        f_number=_within(_number(values[_F_NUMBER]), _F_NUMBER_RANGE),
        iso=_within(iso, _ISO_RANGE),
    )


def read_exposure_time(path: str | os.PathLike) -> float | None:
    r"""The EXIF ``ExposureTime`` of an image file in seconds, or ``None`` if it has none.

    Looks in the EXIF sub-IFD and in the main IFD (TIFF files often keep it there).

    :param str, os.PathLike path: a JPEG, PNG or TIFF file.
    :return: (float, None) the exposure time, ``None`` when absent, zero or unreadable.

    |sep|

    :Example:

    >>> import tempfile, pathlib, numpy as np
    >>> from deepinv_icrf.io import write_image
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.jpg"
    >>> write_image(path, np.zeros((4, 6, 3), np.uint8), exposure_time=1 / 250)
    >>> read_exposure_time(path)
    0.004
    """
    return read_exposure_settings(path).exposure_time


def relative_exposures(
    settings: Sequence[ExposureSettings], names: Sequence[str] | None = None
) -> tuple[list[float], str]:
    r"""Relative exposures of a bracket from its EXIF settings.

    .. math::

        e_k = t_k \cdot \frac{\text{ISO}_k}{\text{ISO}_0} \cdot \left(\frac{N_0}{N_k}\right)^2

    (seconds at the aperture :math:`N_0` and ISO of the first photo). The f-number enters only
    when every photo has one, the ISO likewise; a setting that some photos record and others
    do not, with different values among those that do, is refused (the exposures cannot be
    compared).

    :param Sequence settings: one :class:`ExposureSettings` per photo, each with its
        ``exposure_time``.
    :param Sequence, None names: file names for messages.
    :return: (tuple) the exposures (list of floats) and a description of what entered them,
        e.g. ``"EXIF ExposureTime"`` or ``"EXIF ExposureTime x ISO / FNumber^2"``.
    :raises ValueError: for a missing exposure time or a setting recorded by some photos only
        and varying.

    |sep|

    :Example:

    >>> shots = [ExposureSettings(0.01, 8.0, 100), ExposureSettings(0.01, 4.0, 100),
    ...          ExposureSettings(0.01, 8.0, 400)]
    >>> relative_exposures(shots)
    ([0.01, 0.04, 0.04], 'EXIF ExposureTime x ISO / FNumber^2')
    """
    names = list(names) if names is not None else [str(k) for k in range(len(settings))]
    missing = [
        n for n, s in zip(names, settings, strict=True) if s.exposure_time is None
    ]
    if missing:
        raise ValueError(f"No EXIF ExposureTime for {missing}.")
    used = []
    factors = [1.0] * len(settings)
    for label, attr, power in (("FNumber", "f_number", -2), ("ISO", "iso", 1)):
        values = [getattr(s, attr) for s in settings]
        known = [v for v in values if v is not None]
        if len(known) == len(values) and len(set(known)) > 1:
            ref = known[0]
            factors = [
                f * (v / ref) ** power for f, v in zip(factors, values, strict=True)
            ]
            used.append(label)
        elif known and len(known) < len(values) and len(set(known)) > 1:
            without = [n for n, v in zip(names, values, strict=True) if v is None]
            raise ValueError(
                f"EXIF {label} varies between the photos ({sorted(set(known))}) but is missing "
                f"for {without}: their exposures cannot be compared; give the exposures in a "
                "sidecar file instead."
            )
    exposures = [s.exposure_time * f for s, f in zip(settings, factors, strict=True)]
    description = "EXIF ExposureTime"
    if used == ["FNumber"]:
        description += " / FNumber^2"
    elif used == ["ISO"]:
        description += " x ISO"
    elif used:
        description += " x ISO / FNumber^2"
    return exposures, description


def exposure_rational(seconds: float) -> tuple[int, int]:
    r"""``(numerator, denominator)`` of an exposure time, as EXIF stores it (denominators up
    to one million; ``1/250`` stays ``(1, 250)``).

    :param float seconds: the time, finite and > 0.
    :return: (tuple) the rational.

    |sep|

    :Example:

    >>> exposure_rational(0.004), exposure_rational(2.5)
    ((1, 250), (5, 2))
    """
    from fractions import Fraction

    frac = Fraction(float(seconds)).limit_denominator(1_000_000)
    if frac.numerator == 0:
        frac = Fraction(1, 1_000_000)
    return frac.numerator, frac.denominator


def exif_bytes(exposure_time: float) -> bytes:
    r"""An EXIF block (as Pillow writes it) holding ``ExposureTime``.

    :param float exposure_time: seconds, finite and > 0.
    :return: (bytes) the EXIF block.
    """
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    exif = Image.Exif()
    exif[_EXIF_IFD] = {_EXPOSURE_TIME: IFDRational(*exposure_rational(exposure_time))}
    return exif.tobytes()
