r"""Exposure times from text: bounded parsing and the list formats real brackets come with.

Times are parsed without unbounded arithmetic: a number is a decimal literal of at most
:data:`MAX_TIME_CHARS` characters (``0.004``, ``4e-3``) or a fraction of two such
(``1/250``, ``1/0.03125``), converted with :func:`float` (never :class:`fractions.Fraction`,
whose exact arithmetic on ``1e999999999`` builds a billion-digit integer). A time must be
finite, must not round to zero, and must lie in :data:`EXPOSURE_TIME_RANGE` seconds.

:func:`read_exposure_list` reads every list format below; the column that holds the time is
never guessed:

==================================  ==========================================================
file                                columns
==================================  ==========================================================
``*.csv``                           ``filename,exposure_time`` (seconds), an optional header
                                    line naming the columns (see below), ``,``, ``;`` or a
                                    tab between fields (with ``;``, the separator of
                                    spreadsheets whose decimal sign is the comma, numbers
                                    may have a decimal comma: ``0,5``)
``*.json``                          ``{"filename": exposure_time, ...}`` (numbers or strings)
``list.txt`` without a header       OpenCV's layout: ``filename 1/t`` (the *inverse* time,
                                    as OpenCV's HDR tutorial reads it)
any text list with a header line    whitespace-separated columns named by a header line such as
                                    ``# Filename exposure 1/shutter_speed f/stop gain(db)``
==================================  ==========================================================

Header names (case-insensitive): the file (``filename``, ``file``, ``name``, ``image``); the
time in seconds (``exposure``, ``exposure_time``, ``time``, ``t``, ``seconds``,
``shutter_speed``, ``shutter``); its inverse (``1/shutter_speed``, ``1/exposure``,
``1/exposure_time``, ``1/t``, ``1/time``); the aperture (``f/stop``, ``fnumber``,
``f_number``, ``aperture``); the gain (``gain(db)``, ``gain_db``: 3 dB doubles the exposure);
``iso``; neutral-density filters (``nd_filters``, ``nd``: only 0 is accepted, their unit is
not standard). When both a time and its inverse are given they must agree (within 1 %). The
relative exposure of each row is then

.. math::

    e = t \cdot \frac{\text{ISO}}{\text{ISO}_0} \cdot \left(\frac{N_0}{N}\right)^2
        \cdot 2^{(g - g_0) / 3}

relative to the first row's aperture :math:`N_0`, ISO and gain :math:`g_0` (dB): a list of
shutter times alone keeps its times. A list without a header is refused when it is not one of
the two headerless layouts above (which column is the time?). Text is UTF-8 (with or without
a byte-order mark) or UTF-16 with its byte-order mark (Windows' "Unicode" text).
"""

from __future__ import annotations

import codecs
import csv
import math
import os
import re
from pathlib import Path

from deepinv_icrf.io.jsonfile import loads_json
from deepinv_icrf.io.limits import read_limited

__all__ = [
    "EXPOSURE_TIME_RANGE",
    "MAX_TIME_CHARS",
    "MAX_LIST_ROWS",
    "MAX_LINE_CHARS",
    "parse_exposure_time",
    "check_exposure_time",
    "read_exposure_list",
]

#: accepted exposure times, seconds (1 ns to about 31 years)
EXPOSURE_TIME_RANGE: tuple[float, float] = (1e-9, 1e9)
#: longest text accepted for one time
MAX_TIME_CHARS: int = 40
#: most rows of an exposure list
MAX_LIST_ROWS: int = 100_000
#: longest line of an exposure list (a file name is at most 255 bytes on common file systems)
MAX_LINE_CHARS: int = 4096
_MAX_LIST_BYTES = 16 * 1024 * 1024

_UNSIGNED = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d{1,9})?"
_DECIMAL = r"\+?" + _UNSIGNED
_TIME_RE = re.compile(rf"({_DECIMAL})(?:\s*/\s*({_DECIMAL}))?")
_SIGNED_RE = re.compile(r"[+-]?" + _UNSIGNED)

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
_FILE_COLUMNS = ("filename", "file", "name", "image", "file_name")
_TIME_COLUMNS = (
    "exposure",
    "exposure_time",
    "exposuretime",
    "time",
    "t",
    "seconds",
    "shutter_speed",
    "shutter",
    "exposure_s",
)
_INVERSE_COLUMNS = ("1/shutter_speed", "1/exposure", "1/exposure_time", "1/t", "1/time")
_APERTURE_COLUMNS = ("f/stop", "fnumber", "f_number", "aperture", "f-number")
_GAIN_COLUMNS = ("gain(db)", "gain_db", "gain")
_ISO_COLUMNS = ("iso",)
_ND_COLUMNS = ("nd_filters", "nd", "nd_filter")


def check_exposure_time(seconds: float, where: str) -> float:
    r"""Refuse a time that is not finite, rounds to zero, or lies outside
    :data:`EXPOSURE_TIME_RANGE`.

    :param float seconds: the time.
    :param str where: how messages name its source.
    :return: (float) the time.
    :raises ValueError: naming ``where`` and the value.
    """
    if not math.isfinite(seconds):
        raise ValueError(
            f"{where}: exposure time {seconds!r} is not finite (it overflows a float)."
        )
    if seconds <= 0:
        raise ValueError(
            f"{where}: exposure times must be > 0 seconds, but got {seconds!r}"
            + (" (it rounds to zero)." if seconds == 0 else ".")
        )
    low, high = EXPOSURE_TIME_RANGE
    if not low <= seconds <= high:
        raise ValueError(
            f"{where}: exposure time {seconds:g} s is outside the accepted range "
            f"[{low:g}, {high:g}] seconds (a wrong unit?)."
        )
    return float(seconds)


def parse_exposure_time(value: object, where: str = "exposure time") -> float:
    r"""An exposure time in seconds from a number or a text such as ``"0.004"``, ``"4e-3"``,
    ``"1/250"`` or ``"1/0.03125"``, with bounded work.

    :param value: an int, a float or a string (at most :data:`MAX_TIME_CHARS` characters).
    :param str where: how messages name its source (e.g. ``"sidecar 'x.csv', row 3"``).
    :return: (float) seconds, within :data:`EXPOSURE_TIME_RANGE`.
    :raises ValueError: naming ``where``: not a number, zero or negative, overflowing,
        rounding to zero, out of range.

    |sep|

    :Example:

    >>> parse_exposure_time("1/250"), parse_exposure_time("1/0.03125"), parse_exposure_time(2)
    (0.004, 32.0, 2.0)
    >>> parse_exposure_time("1e999999999", "sidecar")
    Traceback (most recent call last):
    ...
    ValueError: sidecar: exposure time inf is not finite (it overflows a float).
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"{where}: exposure time {value!r} is not a number.")
    if isinstance(value, int):
        if not 0 < value <= EXPOSURE_TIME_RANGE[1]:
            shown = (
                value
                if abs(value) < 10**12
                else f"an integer of {len(str(value))} digits"
            )
            raise ValueError(
                f"{where}: exposure time {shown} is outside the accepted range "
                f"({EXPOSURE_TIME_RANGE[0]:g}, {EXPOSURE_TIME_RANGE[1]:g}] seconds."
            )
        return check_exposure_time(float(value), where)
    if isinstance(value, float):
        return check_exposure_time(value, where)
    if not isinstance(value, str):
        raise ValueError(
            f"{where}: exposure time of type {type(value).__name__} is not a number."
        )
    text = value.strip()
    if len(text) > MAX_TIME_CHARS:
        raise ValueError(
            f"{where}: exposure time {text[:20]!r}... is {len(text)} characters long, more "
            f"than {MAX_TIME_CHARS}; write it as a decimal or a fraction such as 1/250."
        )
    match = _TIME_RE.fullmatch(text)
    if match is None and text.startswith("-") and _TIME_RE.fullmatch(text[1:]):
        raise ValueError(
            f"{where}: exposure times must be > 0 seconds, but got {text!r}."
        )
    if match is None:
        raise ValueError(
            f"{where}: exposure time {text!r} is not a number (seconds, e.g. 0.004 or 1/250)."
        )
    num = float(match.group(1))
    seconds = num
    if match.group(2) is not None:
        den = float(match.group(2))
        if den == 0 or not math.isfinite(den):
            raise ValueError(
                f"{where}: exposure time {text!r} divides by "
                f"{'zero' if den == 0 else 'infinity'}."
            )
        seconds = num / den
    if seconds == 0:
        literal = re.split(r"[eE]", match.group(1))[0]
        underflow = num != 0 or bool(re.search(r"[1-9]", literal))
        raise ValueError(
            f"{where}: exposure times must be > 0 seconds, but got {text!r}"
            + (" (it rounds to zero)." if underflow else ".")
        )
    return check_exposure_time(seconds, where)


# ---------------------------------------------------------------------------- lists
def _role(name: str) -> str | None:
    key = name.strip().lower()
    for role, names in (
        ("file", _FILE_COLUMNS),
        ("time", _TIME_COLUMNS),
        ("inverse", _INVERSE_COLUMNS),
        ("aperture", _APERTURE_COLUMNS),
        ("gain", _GAIN_COLUMNS),
        ("iso", _ISO_COLUMNS),
        ("nd", _ND_COLUMNS),
    ):
        if key in names:
            return role
    return None


def _header(fields: list[str], where: str) -> dict[str, int] | None:
    r"""Column roles from a header line, ``None`` when the line is not a header."""
    names = [f for f in fields if f]
    if not names or _role(names[0]) != "file":
        return None
    roles: dict[str, int] = {}
    for k, name in enumerate(names):
        role = _role(name)
        if role is None:
            raise ValueError(
                f"{where}: header column {name!r} is not one this reader knows (file: "
                f"{_FILE_COLUMNS[0]}; time: {', '.join(_TIME_COLUMNS[:3])}; inverse time: "
                f"{_INVERSE_COLUMNS[0]}; f/stop, gain(db), iso, nd_filters)."
            )
        if role in roles:
            raise ValueError(
                f"{where}: the header names two {role} columns ({names[roles[role]]!r} and "
                f"{name!r}); which one holds the time is ambiguous."
            )
        roles[role] = k
    if "time" not in roles and "inverse" not in roles:
        raise ValueError(
            f"{where}: the header {' '.join(names)!r} names no exposure time column "
            "(exposure, exposure_time or 1/shutter_speed)."
        )
    return roles


#: A number written with a decimal comma (``0,5``, ``5,6``), as spreadsheets of locales whose
#: decimal sign is the comma export it (with ``;`` between fields).
_DECIMAL_COMMA_RE = re.compile(r"[+-]?\d+,\d+(?:[eE][+-]?\d+)?")


def _csv_delimiter(first: str) -> str:
    r"""The field separator of a CSV file from its first line: ``;`` where the line holds
    one (then a comma can only be a decimal comma), else a tab where it holds one and no
    comma, else ``,``."""
    if ";" in first:
        return ";"
    return "\t" if "\t" in first and "," not in first else ","


def _split(line: str, delimiter: str | None, where: str) -> list[str]:
    if delimiter is None:
        return line.split()
    try:
        fields = next(csv.reader([line], delimiter=delimiter))
    except csv.Error as err:  # e.g. an unclosed quote running past the field limit
        raise ValueError(f"{where}: not a CSV row ({err}).") from None
    fields = [f.strip() for f in fields]
    while fields and fields[-1] == "":
        fields.pop()  # a trailing separator
    return fields


def _number_in(text: str, where: str, what: str) -> float:
    value = text.strip()
    if len(value) > MAX_TIME_CHARS or _SIGNED_RE.fullmatch(value) is None:
        raise ValueError(f"{where}: {what} {value[:40]!r} is not a number.")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{where}: {what} {value[:40]!r} is not finite.")
    return number


def _rows_to_times(
    rows: list[tuple[int, list[str]]],
    roles: dict[str, int],
    where: str,
    decimal_comma: bool = False,
) -> dict[str, float]:
    table: dict[str, float] = {}
    reference: dict[str, float] = {}
    width = max(roles.values()) + 1
    for line_no, fields in rows:
        at = f"{where}, line {line_no}"
        if decimal_comma:  # every number, not the file name
            fields = [
                (
                    f.replace(",", ".")
                    if k != roles["file"] and _DECIMAL_COMMA_RE.fullmatch(f)
                    else f
                )
                for k, f in enumerate(fields)
            ]
        if len(fields) != width and not (len(fields) > width and "file" in roles):
            raise ValueError(
                f"{at}: expected {width} columns as the header names, but got "
                f"{len(fields)}."
            )
        name = fields[roles["file"]]
        if name in table:
            raise ValueError(f"{where}: file {name!r} is listed twice.")
        seconds = None
        if "time" in roles:
            seconds = parse_exposure_time(fields[roles["time"]], at)
        if "inverse" in roles:
            inverse = parse_exposure_time(
                fields[roles["inverse"]], at + " (inverse time)"
            )
            from_inverse = check_exposure_time(1.0 / inverse, at)
            if seconds is not None and abs(seconds * inverse - 1.0) > 0.01:
                raise ValueError(
                    f"{at}: the time {fields[roles['time']]!r} and the inverse time "
                    f"{fields[roles['inverse']]!r} disagree; which column is right?"
                )
            seconds = seconds if seconds is not None else from_inverse
        factor = 1.0
        if "aperture" in roles:
            n = _number_in(fields[roles["aperture"]], at, "f-number")
            if not 0.5 <= n <= 1000:
                raise ValueError(f"{at}: f-number {n:g} is outside [0.5, 1000].")
            n0 = reference.setdefault("aperture", n)
            factor *= (n0 / n) ** 2
        if "iso" in roles:
            iso = _number_in(fields[roles["iso"]], at, "ISO")
            if not 1 <= iso <= 1e7:
                raise ValueError(f"{at}: ISO {iso:g} is outside [1, 1e7].")
            factor *= iso / reference.setdefault("iso", iso)
        if "gain" in roles:
            gain = _number_in(fields[roles["gain"]], at, "gain (dB)")
            if not -100 <= gain <= 100:
                raise ValueError(f"{at}: gain {gain:g} dB is outside [-100, 100].")
            factor *= 2.0 ** ((gain - reference.setdefault("gain", gain)) / 3.0)
        if "nd" in roles:
            nd = _number_in(fields[roles["nd"]], at, "ND filter")
            if nd != 0:
                raise ValueError(
                    f"{at}: ND filter {nd:g} is not supported (its unit is not standard); "
                    "give the exposure of each photo as its time instead."
                )
        table[name] = check_exposure_time(seconds * factor, at)
    return table


def _text_list(text: str, where: str, opencv: bool, delimiter: str | None):
    lines = text.splitlines()
    if len(lines) > MAX_LIST_ROWS:
        raise ValueError(f"{where} holds more than {MAX_LIST_ROWS} lines.")
    roles = None
    rows: list[tuple[int, list[str]]] = []
    for k, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if len(line) > MAX_LINE_CHARS:
            raise ValueError(
                f"{where}, line {k}: {len(line)} characters, more than {MAX_LINE_CHARS}; "
                "expected a file name and its exposure time."
            )
        if line.startswith("#"):
            if roles is None and not rows:
                roles = _header(
                    _split(line[1:], delimiter, f"{where}, line {k}"), where
                )
            continue
        fields = _split(line, delimiter, f"{where}, line {k}")
        if not fields:
            continue
        if roles is None and not rows:
            header = _header(fields, where)
            if header is not None:
                roles = header
                continue
            if (
                delimiter is not None
                and len(fields) == 2
                and Path(fields[0]).suffix.lower() not in _IMAGE_SUFFIXES
            ):
                roles = {"file": 0, "time": 1}  # our CSV's own header, any names
                continue
        rows.append((k, fields))
    if not rows:
        raise ValueError(f"{where} lists no file (expected rows 'filename time').")
    if roles is None:
        widths = {len(f) for _, f in rows}
        if widths != {2}:
            raise ValueError(
                f"{where}: rows of {sorted(widths)} columns and no header line: which column "
                "holds the exposure time is ambiguous; add a header such as "
                "'# filename exposure_time'."
            )
        if opencv:
            roles = {"file": 0, "inverse": 1}
        elif delimiter is not None:
            roles = {"file": 0, "time": 1}
        else:
            raise ValueError(
                f"{where}: two columns and no header line: the second may hold the "
                "exposure times or their inverses (OpenCV's list.txt); add a header line "
                "'# filename exposure_time' (seconds) or '# filename 1/exposure_time'."
            )
    # ';' separates fields where the comma is the decimal sign (spreadsheets of those
    # locales export so); a tab does not say which locale wrote '1,000'
    return _rows_to_times(rows, roles, where, delimiter == ";")


def read_exposure_list(path: str | os.PathLike) -> dict[str, float]:
    r"""Relative exposures, in seconds, by file name, from a sidecar or list file.

    The formats are in the table of this module: CSV, JSON, OpenCV's ``list.txt`` and lists
    with a header line.

    :param str, os.PathLike path: the file (at most 16 MB, UTF-8).
    :return: (dict) file name to exposure, in the file's order.
    :raises FileNotFoundError: if the file does not exist.
    :raises ValueError: naming the file and the line: unreadable, a time that is not a number
        or out of range, a file listed twice, an ambiguous layout, columns that disagree.

    |sep|

    :Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "original_list.txt"
    >>> _ = path.write_text("# Filename  exposure  1/shutter_speed\na.png 0.5 2\nb.png 1/8 8\n")
    >>> read_exposure_list(path)
    {'a.png': 0.5, 'b.png': 0.125}
    >>> _ = (path.parent / "list.txt").write_text("a.png 2\nb.png 8\n")  # OpenCV: 1/t
    >>> read_exposure_list(path.parent / "list.txt")
    {'a.png': 0.5, 'b.png': 0.125}
    """
    path = Path(path)
    where = f"sidecar {os.fspath(path)!r}"
    data = read_limited(path, where, _MAX_LIST_BYTES)
    # Windows' "Unicode" text (Notepad, a spreadsheet's "Unicode text") is UTF-16 with a
    # byte-order mark, which says so
    utf16 = data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))
    try:
        text = data.decode("utf-16" if utf16 else "utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"Cannot read {where}: it is not UTF-8 text, nor UTF-16 with a byte-order mark "
            f"({err})."
        ) from None
    if "\x00" in text:
        # UTF-16 without its byte-order mark decodes as UTF-8 with a NUL beside every
        # letter; which byte order it is, the file does not say
        raise ValueError(
            f"Cannot read {where}: it holds NUL characters, which no list of times holds "
            "(UTF-16 text without a byte-order mark?); save it as UTF-8."
        )
    suffix = path.suffix.lower()
    if suffix == ".json":
        doc = loads_json(text, where)
        if not isinstance(doc, dict) or not doc:
            raise ValueError(
                f"{where}: expected a non-empty JSON object {{filename: exposure_time}}."
            )
        return {
            name: parse_exposure_time(value, f"{where}, entry {name!r}")
            for name, value in doc.items()
        }
    if suffix == ".csv":
        first = next((ln for ln in text.splitlines() if ln.strip()), "")
        return _text_list(text, where, opencv=False, delimiter=_csv_delimiter(first))
    return _text_list(
        text, where, opencv=path.name.lower() == "list.txt", delimiter=None
    )
