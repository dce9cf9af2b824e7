r"""Input validation shared by every public entry point.

One-line guards in the spirit of ``KORNIA_CHECK_SHAPE``: each raises the built-in
:class:`ValueError` (bad value or shape) or :class:`TypeError` (bad type) with a message
that names the argument, the constraint and what was received. Nothing here uses
``assert`` (removed by ``python -O``), and nothing here synchronises with the device unless
the check is about values (``check_finite``, ``check_range``, ``check_positive``), which
callers only use at public boundaries, never inside a training hot path.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "check_tensor",
    "check_shape",
    "check_float",
    "check_finite",
    "check_range",
    "check_positive",
    "check_in",
    "check_threshold",
    "check_band",
    "check_bounds",
    "check_channel_values",
    "compute_dtype",
]


def check_tensor(x: object, name: str) -> Tensor:
    r"""Raise :class:`TypeError` unless ``x`` is a :class:`torch.Tensor`."""
    if not isinstance(x, Tensor):
        raise TypeError(
            f"Expected `{name}` to be a torch.Tensor, but got {type(x).__name__}."
        )
    return x


def check_shape(x: Tensor, name: str, dims: Sequence[str | int]) -> dict[str, int]:
    r"""Check that ``x`` matches a named shape pattern and return the named sizes.

    ``dims`` holds one entry per dimension: an ``int`` (that exact size), a letter (any size,
    the same letter must have the same size everywhere), or ``"*"`` as the first entry (any
    number of leading dimensions).

    :param torch.Tensor x: tensor to check.
    :param str name: the argument's name, used in the message.
    :param list dims: the pattern, e.g. ``["B", "N", "C", "H", "W"]``.
    :return: (dict) the size bound to each letter.

    :Example:

    >>> import torch
    >>> check_shape(torch.zeros(2, 3, 4), "y", ["B", "C", 4])
    {'B': 2, 'C': 3}
    """
    check_tensor(x, name)
    dims = list(dims)
    star = len(dims) > 0 and dims[0] == "*"
    pattern = dims[1:] if star else dims
    expected = "(" + ", ".join(str(d) for d in dims) + ")"
    if (star and x.ndim < len(pattern)) or (not star and x.ndim != len(pattern)):
        raise ValueError(
            f"Expected `{name}` to have shape {expected}, but got shape {tuple(x.shape)}."
        )
    sizes: dict[str, int] = {}
    offset = x.ndim - len(pattern)
    for k, d in enumerate(pattern):
        size = x.shape[offset + k]
        if isinstance(d, int):
            if size != d:
                raise ValueError(
                    f"Expected `{name}` to have shape {expected} with size {d} at dimension "
                    f"{offset + k}, but got shape {tuple(x.shape)}."
                )
        elif d in sizes and sizes[d] != size:
            raise ValueError(
                f"Expected `{name}` to have shape {expected} with equal sizes for {d!r}, "
                f"but got shape {tuple(x.shape)}."
            )
        else:
            sizes[d] = size
    return sizes


def check_float(x: Tensor, name: str) -> Tensor:
    r"""Raise :class:`TypeError` unless ``x`` is a floating-point tensor."""
    check_tensor(x, name)
    if not torch.is_floating_point(x):
        raise TypeError(
            f"Expected `{name}` to be a floating-point tensor (codes divided by 2**bits - 1), "
            f"but got dtype {x.dtype}."
        )
    return x


def compute_dtype(*tensors: Tensor | None) -> torch.dtype:
    r"""The dtype losses compute in: float64 if any input is float64, else float32.

    Half-precision inputs (``float16``, ``bfloat16``) are promoted so that losses never
    return a half-precision value.
    """
    for t in tensors:
        if t is not None and t.dtype == torch.float64:
            return torch.float64
    return torch.float32


def _extremes(x: Tensor) -> tuple[Tensor, Tensor] | None:
    r"""The least and largest value of a non-empty real float ``x`` in one pass
    (:func:`torch.aminmax`; a NaN anywhere makes both NaN, an infinity reaches them), or
    ``None`` for other tensors. 14x faster than ``isfinite(x).all()`` on a 24 MP radiance
    map, which allocates a boolean copy of ``x`` first."""
    if x.numel() == 0 or not x.is_floating_point():
        return None
    return torch.aminmax(x)


def _raise_not_finite(x: Tensor, name: str) -> None:
    n_bad = int((~torch.isfinite(x)).sum())
    raise ValueError(
        f"Expected `{name}` to be finite, but it holds {n_bad} NaN or infinite value(s)."
    )


def check_finite(x: Tensor, name: str) -> Tensor:
    r"""Raise :class:`ValueError` if ``x`` holds NaN or infinite values (syncs the device)."""
    ends = _extremes(x)
    if ends is None:
        if not bool(torch.isfinite(x).all()):
            _raise_not_finite(x, name)
    elif not bool(torch.isfinite(ends[0]) & torch.isfinite(ends[1])):
        _raise_not_finite(x, name)
    return x


def check_range(x: Tensor, name: str, low: float = 0.0, high: float = 1.0) -> Tensor:
    r"""Raise :class:`ValueError` unless every value of ``x`` lies in ``[low, high]``."""
    ends = _extremes(x)
    if ends is None:
        check_finite(x, name)
        lo, hi = float(x.min()), float(x.max())
    else:
        lo, hi = float(ends[0]), float(ends[1])
        if not (math.isfinite(lo) and math.isfinite(hi)):
            _raise_not_finite(x, name)
    if lo < low or hi > high:
        raise ValueError(
            f"Expected `{name}` to hold values in [{low}, {high}], but got values in "
            f"[{lo:.6g}, {hi:.6g}]."
        )
    return x


def check_int(
    value: object, name: str, low: int = 0, optional: bool = False
) -> int | None:
    r"""Raise :class:`ValueError` unless ``value`` is an ``int`` (not a ``bool``) ``>= low``
    (or ``None`` when ``optional``)."""
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        what = "None or an int" if optional else "an int"
        raise ValueError(f"Expected `{name}` to be {what} >= {low}, but got {value!r}.")
    return value


def check_positive(x: Tensor, name: str) -> Tensor:
    r"""Raise :class:`ValueError` unless every value of ``x`` is finite and ``> 0``."""
    check_finite(x, name)
    if not bool((x > 0).all()):
        raise ValueError(
            f"Expected `{name}` to be > 0 everywhere, but got minimum {float(x.min()):.6g}."
        )
    return x


def check_in(value: object, name: str, allowed: Sequence[object]) -> object:
    r"""Raise :class:`ValueError` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(
            f"Expected `{name}` to be one of {tuple(allowed)}, but got {value!r}."
        )
    return value


def check_broadcastable(
    x: Tensor, name: str, shape: Sequence[int], target: str
) -> Tensor:
    r"""Raise :class:`ValueError` unless ``x`` broadcasts with ``shape`` (``target`` names what
    has that shape, e.g. ``"the stack"``)."""
    try:
        torch.broadcast_shapes(x.shape, tuple(shape))
    except RuntimeError:
        raise ValueError(
            f"Expected `{name}` to be broadcastable to {target} {tuple(shape)}, but got shape "
            f"{tuple(x.shape)}."
        ) from None
    return x


def check_threshold(
    value: object, name: str, optional: bool = False, above: float = 0.0
) -> float | None:
    r"""Raise :class:`ValueError` unless ``value`` is a finite number ``> above`` (default 0:
    a threshold, a number of stds; a ratio ``> 1``; not a bool), or ``None`` when
    ``optional``. Returns it as a float.
    """
    if value is None and optional:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or value <= above
    ):
        allowed = "None or " if optional else ""
        raise ValueError(
            f"Expected `{name}` to be {allowed}a finite number > {above:g}, but got "
            f"{value!r}."
        )
    return float(value)


def check_band(lower: Tensor, upper: Tensor, name: str = "`band`") -> None:
    r"""Raise :class:`ValueError` unless the edges of a band are finite and
    ``lower <= upper`` everywhere (edges swapped or crossed are refused).

    :param torch.Tensor lower: the lower edge.
    :param torch.Tensor upper: the upper edge, same shape.
    :param str name: how the message names the band (e.g. ``"`band`"``).

    |sep|

    :Example:

    >>> import torch
    >>> check_band(torch.zeros(1, 3), torch.ones(1, 3))
    >>> check_band(torch.ones(1, 3), torch.zeros(1, 3))
    Traceback (most recent call last):
    ...
    ValueError: Expected `band` to have its lower edge <= its upper edge everywhere, but lower > upper at 3 of 3 values (by up to 1): are the edges swapped?
    """
    for edge, value in (("lower", lower), ("upper", upper)):
        if not bool(torch.isfinite(value).all()):
            n_bad = int((~torch.isfinite(value)).sum())
            raise ValueError(
                f"Expected {name} to be finite, but its {edge} edge holds {n_bad} NaN or "
                "infinite value(s)."
            )
    excess = lower - upper
    n_inverted = int((excess > 0).sum())
    if n_inverted:
        raise ValueError(
            f"Expected {name} to have its lower edge <= its upper edge everywhere, but "
            f"lower > upper at {n_inverted} of {excess.numel()} values (by up to "
            f"{float(excess.max()):.3g}): are the edges swapped?"
        )


def check_bounds(
    lower: object,
    upper: object,
    names: tuple[str, str] = ("lower", "upper"),
    low: float = 0.0,
    high: float = 1.0,
) -> tuple[float, float]:
    r"""Raise unless ``lower`` and ``upper`` are real numbers with
    ``low <= lower < upper <= high`` (e.g. a range of codes in ``[0, 1]``).

    :param object lower: the lower bound.
    :param object upper: the upper bound.
    :param tuple names: how the message names them (e.g. ``("lower", "upper")``).
    :param float low: smallest accepted value (default 0).
    :param float high: largest accepted value (default 1).
    :return: (tuple) ``(lower, upper)`` as floats.
    :raises TypeError: for a bound that is not a real number (a string, a bool, ``None``).
    :raises ValueError: for a NaN, a bound outside ``[low, high]`` or ``lower >= upper``.

    |sep|

    :Example:

    >>> check_bounds(1 / 255, 254 / 255)
    (0.00392156862745098, 0.996078431372549)
    >>> check_bounds(0.9, 0.1)
    Traceback (most recent call last):
    ...
    ValueError: Expected 0 <= `lower` < `upper` <= 1, but got lower=0.9 and upper=0.1.
    """
    for name, value in zip(names, (lower, upper), strict=True):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise TypeError(
                f"Expected `{name}` to be a number, but got {type(value).__name__} "
                f"{value!r}."
            )
    lo, hi = float(lower), float(upper)
    if not low <= lo < hi <= high:
        raise ValueError(
            f"Expected {low:g} <= `{names[0]}` < `{names[1]}` <= {high:g}, but got "
            f"{names[0]}={lo:.6g} and {names[1]}={hi:.6g}."
        )
    return lo, hi


def check_channel_values(
    value: object, name: str, channels: int, low: float = 0.0, high: float = 1.0
) -> list[float]:
    r"""A value recorded per channel (e.g. a curve file's ``floor`` or ``code_std``), checked:
    one number for every channel or one per channel, each in ``[low, high]``.

    :param object value: a number, or a list (tuple, array, tensor) of numbers.
    :param str name: how the message names it.
    :param int channels: the number of channels :math:`C`.
    :param float low: smallest accepted value (default 0).
    :param float high: largest accepted value (default 1).
    :return: (list) the values as floats (one or ``C``).
    :raises ValueError: for another number of values, or a value that is not a number (a
        string, a bool, a nested list), not finite or outside ``[low, high]``.

    |sep|

    :Example:

    >>> check_channel_values([0.01, 0.02, 0.015], "`code_std`", 3)
    [0.01, 0.02, 0.015]
    >>> check_channel_values("0.3", "`floor`", 3)
    Traceback (most recent call last):
    ...
    ValueError: Expected `floor` to hold numbers in [0, 1], one per channel, but got '0.3'.
    """
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):
        value = value.tolist()  # numpy arrays, tensors
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) not in (1, channels):
        raise ValueError(
            f"Expected {name} to hold 1 or {channels} value(s) (one per channel), but got "
            f"{len(values)}."
        )
    for v in values:
        if (
            isinstance(v, bool)
            or not isinstance(v, numbers.Real)
            or not low <= float(v) <= high
        ):
            raise ValueError(
                f"Expected {name} to hold numbers in [{low:g}, {high:g}], one per channel, "
                f"but got {str(v)[:40]!r}."
            )
    return [float(v) for v in values]
