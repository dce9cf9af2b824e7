r"""JSON from users, read with limits: size, nesting depth, number length, duplicate keys.

:func:`json.loads` trusts its input: a document nested 100000 deep raises
:class:`RecursionError`, an integer of a million digits costs seconds, ``NaN`` and
``Infinity`` pass, and an object naming a key twice silently keeps the last value.
:func:`read_json` checks each of these before or while parsing and raises one
:class:`ValueError` naming the file.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from deepinv_icrf.io.limits import MAX_TEXT_BYTES, read_limited

__all__ = ["MAX_JSON_DEPTH", "MAX_NUMBER_CHARS", "loads_json", "read_json"]

#: deepest nesting of arrays and objects accepted
MAX_JSON_DEPTH: int = 32
#: longest number literal accepted (a float64 printed in full takes 24 characters)
MAX_NUMBER_CHARS: int = 40


class _JsonLimit(ValueError):
    pass


def _depth(text: str) -> int:
    r"""Deepest nesting of ``[``/``{`` outside strings (one linear scan, no recursion)."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_JSON_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _number(text: str) -> str:
    if len(text) > MAX_NUMBER_CHARS:
        raise _JsonLimit(
            f"a number of {len(text)} characters ({text[:20]}...), more than "
            f"{MAX_NUMBER_CHARS}"
        )
    return text


def _parse_int(text: str) -> int:
    return int(_number(text))


def _parse_float(text: str) -> float:
    value = float(_number(text))
    if not math.isfinite(value):
        raise _JsonLimit(f"the number {text} overflows a float")
    return value


def _constant(text: str) -> None:
    raise _JsonLimit(f"{text} is not a JSON number")


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _JsonLimit(f"the key {key[:60]!r} appears twice in one object")
        out[key] = value
    return out


def loads_json(text: str, where: str) -> Any:
    r"""Parse JSON text with the limits of this module.

    :param str text: the document.
    :param str where: how messages name its source (e.g. ``"sidecar 'a.json'"``).
    :return: the parsed value (dicts, lists, str, int, float, bool, None).
    :raises ValueError: naming ``where`` and the problem: invalid JSON, nesting deeper than
        :data:`MAX_JSON_DEPTH`, a number longer than :data:`MAX_NUMBER_CHARS` characters or
        beyond the float range, ``NaN``/``Infinity``, a key given twice in one object.

    |sep|

    :Example:

    >>> loads_json('{"a.png": 0.5, "b.png": 1}', "sidecar")
    {'a.png': 0.5, 'b.png': 1}
    >>> loads_json('{"a.png": 0.5, "a.png": 1}', "sidecar")
    Traceback (most recent call last):
    ...
    ValueError: sidecar is not accepted JSON: the key 'a.png' appears twice in one object.
    """
    deepest = _depth(text)
    if deepest > MAX_JSON_DEPTH:
        raise ValueError(
            f"{where} is not accepted JSON: nested more than {MAX_JSON_DEPTH} levels deep."
        )
    try:
        return json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_constant,
        )
    except _JsonLimit as err:
        raise ValueError(f"{where} is not accepted JSON: {err}.") from None
    except (json.JSONDecodeError, RecursionError) as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from None


def read_json(
    path: str | os.PathLike, where: str | None = None, max_bytes: int = MAX_TEXT_BYTES
) -> Any:
    r"""Read a JSON file written by a user or another tool, with the limits of :func:`loads_json`.

    :param str, os.PathLike path: the file (UTF-8, an optional byte-order mark).
    :param str, None where: how messages name it (default ``"JSON file 'PATH'"``).
    :param int max_bytes: largest file accepted (default :data:`~deepinv_icrf.io.limits.MAX_TEXT_BYTES`).
    :return: the parsed value.
    :raises FileNotFoundError: if the file does not exist.
    :raises ValueError: naming the file: too large, not UTF-8, not valid or not accepted JSON.

    |sep|

    :Example:

    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "deep.json"
    >>> _ = path.write_text("[" * 100000 + "]" * 100000)
    >>> read_json(path)
    Traceback (most recent call last):
    ...
    ValueError: JSON file '.../deep.json' is not accepted JSON: nested more than 32 levels deep.
    """
    where = where if where is not None else f"JSON file {os.fspath(path)!r}"
    data = read_limited(path, where, max_bytes)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from None
    return loads_json(text, where)
