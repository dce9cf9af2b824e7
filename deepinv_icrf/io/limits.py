r"""Limits every reader checks before it allocates: pixels per image, bytes per text file.

A file declares its size in a header (PNG ``IHDR``, JPEG ``SOF``, TIFF tags, OpenEXR
``dataWindow``, the Radiance resolution line, a ``.npy`` header). The readers of
:mod:`deepinv_icrf.io` compare that declared size with a limit *before* they decode or allocate
anything, so a 50-byte file declaring :math:`10^{10}` pixels costs nothing:

.. math::

    H \cdot W \le \texttt{max\_pixels} \quad (\text{default } 10^8 = 100 \text{ MP})

The limit is larger than any consumer camera's sensor; raise it for a genuine larger image with
the ``max_pixels`` argument of the readers or the environment variable
``DEEPINV_ICRF_MAX_PIXELS`` (read at each call; also honoured by the command line).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "MAX_TEXT_BYTES",
    "resolve_max_pixels",
    "check_pixels",
    "read_limited",
    "pillow",
]

#: pixels per image (H x W) above which readers refuse a file (before decoding it)
DEFAULT_MAX_PIXELS: int = 100_000_000
#: environment variable that overrides :data:`DEFAULT_MAX_PIXELS`
MAX_PIXELS_ENV: str = "DEEPINV_ICRF_MAX_PIXELS"
#: largest text file (sidecar, exposure list, curve CSV, ICRF JSON) read, in bytes
MAX_TEXT_BYTES: int = 64 * 1024 * 1024


def resolve_max_pixels(max_pixels: int | None = None) -> int:
    r"""The pixel limit in force: ``max_pixels`` if given, else the environment variable
    ``DEEPINV_ICRF_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`.

    :param int, None max_pixels: an explicit limit (an int >= 1), or ``None``.
    :return: (int) the limit.
    :raises ValueError: for a limit (argument or environment variable) that is not an
        int >= 1.

    |sep|

    :Example:

    >>> resolve_max_pixels(), resolve_max_pixels(4096)
    (100000000, 4096)
    """
    if max_pixels is not None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int):
            raise TypeError(
                f"Expected `max_pixels` to be an int >= 1 or None, but got {max_pixels!r}."
            )
        if max_pixels < 1:
            raise ValueError(
                f"Expected `max_pixels` to be an int >= 1 or None, but got {max_pixels!r}."
            )
        return max_pixels
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    if not (text.isdigit() and len(text) <= 18 and int(text) >= 1):
        raise ValueError(
            f"Expected the environment variable {MAX_PIXELS_ENV} to be an int >= 1, but got "
            f"{text[:40]!r}."
        )
    return int(text)


def check_pixels(
    where: str, height: int, width: int, max_pixels: int | None = None
) -> int:
    r"""Refuse a declared image size that is empty or above the pixel limit.

    :param str where: the file, as named in messages (e.g. ``"image file 'a.png'"``).
    :param int height: declared height.
    :param int width: declared width.
    :param int, None max_pixels: the limit (default: :func:`resolve_max_pixels`).
    :return: (int) the number of pixels ``height * width``.
    :raises ValueError: naming the file, the declared size and the limit.

    |sep|

    :Example:

    >>> check_pixels("image file 'a.png'", 3000, 4000)
    12000000
    >>> check_pixels("image file 'bomb.png'", 100000, 100000)
    Traceback (most recent call last):
    ...
    ValueError: image file 'bomb.png' declares 100000x100000 pixels (10000000000), more than the limit of 100000000; if the file is genuine, raise the limit with `max_pixels` or the environment variable DEEPINV_ICRF_MAX_PIXELS.
    """
    limit = resolve_max_pixels(max_pixels)
    height, width = int(height), int(width)
    if height < 1 or width < 1:
        raise ValueError(
            f"{where} declares an empty image ({width}x{height} pixels); the file is "
            "corrupted."
        )
    pixels = height * width
    if pixels > limit:
        raise ValueError(
            f"{where} declares {width}x{height} pixels ({pixels}), more than the limit of "
            f"{limit}; if the file is genuine, raise the limit with `max_pixels` or the "
            f"environment variable {MAX_PIXELS_ENV}."
        )
    return pixels


def read_limited(
    path: str | os.PathLike, where: str, limit: int = MAX_TEXT_BYTES
) -> bytes:
    r"""The bytes of a file that must not exceed ``limit`` bytes (checked before reading).

    :param str, os.PathLike path: the file.
    :param str where: the file, as named in messages.
    :param int limit: the most bytes accepted (default :data:`MAX_TEXT_BYTES`).
    :return: (bytes) the content.
    :raises FileNotFoundError: if the file does not exist.
    :raises ValueError: if it is not a regular file or is larger than ``limit``.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"No such {where}.")
    if not path.is_file():
        raise ValueError(f"{where} is not a regular file.")
    with open(path, "rb") as fh:
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise ValueError(
            f"{where} is larger than {limit} bytes, too large for this kind of file."
        )
    return data


#: Pillow's bomb limit is a process-wide setting: one reader at a time changes it
_PIL_LOCK = threading.Lock()


@contextlib.contextmanager
def pillow() -> Iterator[Any]:
    r"""Pillow with its own decompression-bomb check off: :func:`check_pixels` applies ours
    (one limit, one message, an override that works for both)."""
    from PIL import Image

    with _PIL_LOCK:
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            yield Image
        finally:
            Image.MAX_IMAGE_PIXELS = saved
