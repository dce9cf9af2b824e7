r"""OpenCV's camera-response CSV layout, read and written.

OpenCV's calibrators (``cv2.createCalibrateDebevec``, ``cv2.createCalibrateRobertson``) return
the response as a ``256 x 1 x C`` float matrix: for each 8-bit code, the irradiance (times
exposure) that gives it, per channel in OpenCV's order **B, G, R**. Saved as text it is one
row per code, one column per channel, separated by ``,`` or ``;`` (OpenCV's own test data
ends each row with ``;``), numbers in any float notation (``9.99e-006`` included). That is an
inverse camera response up to one scale per channel; :meth:`deepinv_icrf.models.ICRF.from_opencv_csv`
and :meth:`~deepinv_icrf.models.ICRF.save_opencv_csv` convert it to and from an ICRF.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import numpy as np

from deepinv_icrf.io.atomic import atomic_write
from deepinv_icrf.io.limits import read_limited

__all__ = ["OPENCV_LEVELS", "read_opencv_response", "write_opencv_response"]

#: rows of an OpenCV response: one per 8-bit code
OPENCV_LEVELS: int = 256
_MAX_BYTES = 1024 * 1024
_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,4})?")


def read_opencv_response(path: str | os.PathLike) -> np.ndarray:
    r"""Read an OpenCV response CSV: ``256`` rows, ``C`` columns (``C`` = 1 or 3, B, G, R).

    :param str, os.PathLike path: the file (at most 1 MB).
    :return: (:class:`numpy.ndarray`) float64 ``(256, C)``, in the file's column order.
    :raises FileNotFoundError: if the file does not exist.
    :raises ValueError: naming the file and line: not 256 rows, rows of different lengths,
        a field that is not a finite number >= 0, a channel that is zero everywhere.

    |sep|

    :Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "response.csv"
    >>> _ = path.write_text("".join(f"{k}; {2 * k}; {3 * k};\n" for k in range(256)))
    >>> read_opencv_response(path)[255].tolist()
    [255.0, 510.0, 765.0]
    """
    path = Path(path)
    where = f"OpenCV response file {os.fspath(path)!r}"
    data = read_limited(path, where, _MAX_BYTES)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"Cannot read {where}: it is not text ({err}).") from None
    rows: list[list[float]] = []
    for line_no, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        fields = [f.strip() for f in re.split(r"[;,]", line)]
        if fields and fields[-1] == "":
            fields.pop()  # OpenCV's trailing ';'
        values = []
        for field in fields:
            if len(field) > 40 or _NUMBER_RE.fullmatch(field) is None:
                raise ValueError(
                    f"{where}, line {line_no}: {field[:40]!r} is not a number."
                )
            value = float(field)
            if not math.isfinite(value) or value < 0:
                raise ValueError(
                    f"{where}, line {line_no}: expected finite values >= 0, but got "
                    f"{field!r}."
                )
            values.append(value)
        if len(rows) >= OPENCV_LEVELS:
            raise ValueError(
                f"{where}: more than {OPENCV_LEVELS} rows; expected one row per 8-bit code."
            )
        rows.append(values)
    if len(rows) != OPENCV_LEVELS:
        raise ValueError(
            f"{where}: expected {OPENCV_LEVELS} rows (one per 8-bit code), but got "
            f"{len(rows)}."
        )
    widths = {len(r) for r in rows}
    if len(widths) != 1 or widths.pop() not in (1, 3):
        raise ValueError(
            f"{where}: expected every row to hold 1 or 3 values (B, G, R), but got "
            f"{sorted({len(r) for r in rows})}."
        )
    table = np.asarray(rows, dtype=np.float64)
    dead = [k for k in range(table.shape[1]) if not table[:, k].max() > 0]
    if dead:
        raise ValueError(f"{where}: column(s) {dead} are zero everywhere.")
    return table


def write_opencv_response(
    path: str | os.PathLike, table: np.ndarray, delimiter: str = ","
) -> None:
    r"""Write a ``(256, C)`` response table (columns in OpenCV's B, G, R order) as CSV,
    atomically, every value with 17 significant digits (float64 exact).

    :param str, os.PathLike path: the destination.
    :param numpy.ndarray table: ``(256, C)``, ``C`` in ``{1, 3}``, finite, ``>= 0``.
    :param str delimiter: ``","`` (default) or ``";"`` (then each row ends with ``;`` as
        in OpenCV's test data).
    :raises ValueError: for a bad shape, values or delimiter; nothing is written then.

    |sep|

    :Example:

    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "response.csv"
    >>> write_opencv_response(path, np.linspace(0, 1, 256)[:, None].repeat(3, 1))
    >>> path.read_text().splitlines()[255]
    '1,1,1'
    """
    if delimiter not in (",", ";"):
        raise ValueError(f"Expected `delimiter` in (',', ';'), but got {delimiter!r}.")
    table = np.asarray(table, dtype=np.float64)
    if (
        table.ndim != 2
        or table.shape[0] != OPENCV_LEVELS
        or table.shape[1] not in (1, 3)
    ):
        raise ValueError(
            f"Expected `table` of shape ({OPENCV_LEVELS}, 1) or ({OPENCV_LEVELS}, 3), but "
            f"got shape {table.shape}."
        )
    if not np.isfinite(table).all() or table.min() < 0:
        raise ValueError("Expected `table` to hold finite values >= 0.")
    end = ";" if delimiter == ";" else ""
    lines = [
        (delimiter + (" " if delimiter == ";" else "")).join(f"{v:.17g}" for v in row)
        + end
        for row in table
    ]
    with atomic_write(path) as fh:
        fh.write("\n".join(lines) + "\n")
