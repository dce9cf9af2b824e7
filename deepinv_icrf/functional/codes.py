r"""Integer codes: bit-depth detection and per-code standard-deviation tables.

A stack holds :math:`b`-bit codes when every value is :math:`k / (2^b - 1)` for an integer
:math:`k`; the joint code histograms (:mod:`deepinv_icrf.functional.histogram`) need such
codes, and a table of one standard deviation per code turns codes into per-pixel stds.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from deepinv_icrf._checks import check_finite, check_float, compute_dtype

__all__ = ["ContinuousInputError", "detect_bit_depth"]

#: Bit depths tried, in this order, when the bit depth is detected.
BIT_DEPTHS = (8, 10, 12, 14, 16)
#: Values sampled by the bit-depth detection before it scans a whole stack.
_PROBE = 4096


class ContinuousInputError(ValueError):
    r"""The stack does not hold integer codes (at the requested bit depth): the histogram path
    does not apply, use the dense path."""


def _code_tolerance(dtype: torch.dtype, bit_depth: int) -> float:
    r"""Largest distance of ``y (2^b - 1)`` to an integer accepted as a code."""
    return max(1e-3, 8.0 * torch.finfo(dtype).eps * (2**bit_depth - 1))


def _is_coded(y: Tensor, bit_depth: int) -> bool:
    r"""Whether every value of ``y`` is a ``bit_depth``-bit code (one device sync).

    A strided sample of at most :data:`_PROBE` values is tried first: continuous values are
    rejected after reading a few of them, not the whole stack.
    """
    tol = _code_tolerance(y.dtype, bit_depth)
    flat = y.reshape(-1)
    stride = flat.numel() // _PROBE
    parts = (flat[::stride], flat) if stride > 1 else (flat,)
    for part in parts:
        scaled = part * (2**bit_depth - 1)
        if not bool((scaled - scaled.round()).abs().amax() <= tol):
            return False
    return True


def detect_bit_depth(y: Tensor) -> int | None:
    r"""Smallest bit depth :math:`b` in (8, 10, 12, 14, 16) at which ``y`` holds integer codes.

    ``y`` holds :math:`b`-bit codes when every value lies in :math:`[0, 1]` and
    :math:`y (2^b - 1)` is within rounding (at least :math:`10^{-3}`) of an integer. This
    scans the whole tensor (one device synchronisation per bit depth tried): call it once
    per stack, not at every step.

    :param torch.Tensor y: values, any shape, float.
    :return: (int, None) the bit depth, or ``None`` for continuous (or out-of-range) values.

    :Example:

    >>> import torch
    >>> detect_bit_depth(torch.tensor([0.0, 3 / 255, 1.0]))
    8
    >>> detect_bit_depth(torch.tensor([5 / 1023, 512 / 1023]))
    10
    >>> detect_bit_depth(torch.tensor([0.123456])) is None
    True
    """
    check_float(y, "y")
    with torch.no_grad():
        y = y.detach().to(compute_dtype(y))
        if y.numel() == 0:
            return None
        if not bool(torch.isfinite(y).all() & (y.amin() >= 0) & (y.amax() <= 1)):
            return None
        for bits in BIT_DEPTHS:
            if _is_coded(y, bits):
                return bits
    return None


def _std_table(table: Tensor, channels: int) -> Tensor:
    r"""Check a per-code std table and broadcast it to ``(C, L_t)`` (``L_t`` 1 or ``2**b``)."""
    name = "y_std_table"
    check_float(table, name)
    if table.ndim == 0:
        table = table.reshape(1, 1)
    elif table.ndim == 1:
        table = table.unsqueeze(0)
    if table.ndim != 2 or table.shape[0] not in (1, channels):
        raise ValueError(
            f"Expected `{name}` to have shape (L,), ({channels}, L) or (1, L) with L = 1 "
            f"(a constant) or 2**bit_depth (one std per code), but got shape "
            f"{tuple(table.shape)}."
        )
    levels = table.shape[1]
    if levels != 1 and levels not in [2**b for b in BIT_DEPTHS]:
        raise ValueError(
            f"Expected `{name}` to hold 1 or 2**bit_depth values per channel with "
            f"bit_depth in {BIT_DEPTHS}, but got {levels}."
        )
    check_finite(table, name)
    if bool((table < 0).any()):
        raise ValueError(f"Expected `{name}` to be >= 0 everywhere.")
    return table.expand(channels, levels)


def _resolve_bit_depth(y: Tensor, bit_depth: int | None, table: Tensor | None) -> int:
    from_table = None
    if table is not None and table.shape[-1] > 1:
        from_table = int(math.log2(table.shape[-1]))
        if bit_depth is not None and bit_depth != from_table:
            raise ValueError(
                f"Expected `y_std_table` to hold 2**bit_depth = {2**bit_depth} values per "
                f"channel, but got {table.shape[-1]}."
            )
        bit_depth = from_table
    if y.numel() == 0:  # an empty pixel shard: nothing to detect or check
        if bit_depth is None:
            raise ContinuousInputError(
                "Expected `y` to hold pixels to detect the bit depth of, but it is empty; "
                "pass `bit_depth`."
            )
        return bit_depth
    if bit_depth is not None:
        in_range = bool(torch.isfinite(y).all() & (y.amin() >= 0) & (y.amax() <= 1))
        if not (in_range and _is_coded(y, bit_depth)):
            source = "" if from_table is None else " (implied by `y_std_table`)"
            raise ContinuousInputError(
                f"Expected `y` to hold {bit_depth}-bit codes{source} (values "
                f"k / {2**bit_depth - 1} in [0, 1]), but it does not: continuous input, "
                "use the dense path."
            )
        return bit_depth
    detected = detect_bit_depth(y)
    if detected is None:
        raise ContinuousInputError(
            "Expected `y` to hold integer codes (values k / (2**b - 1) in [0, 1] for b in "
            f"{BIT_DEPTHS}), but it holds continuous values: the histogram path needs codes, "
            "use the dense path."
        )
    return detected


def _code_std(y: Tensor, table: Tensor) -> Tensor:
    r"""Per-pixel std of the raw codes from a per-code table ``(C, 2**b)`` (or ``(C, 1)``).

    ``y`` ``(B, N, C, H, W)``; returns the same shape, dtype of ``table``.
    """
    levels = table.shape[-1]
    channels = table.shape[0]
    if levels == 1:
        return table.view(1, 1, channels, 1, 1).expand(
            *y.shape[:2], channels, *y.shape[3:]
        )
    codes = (y.detach().to(compute_dtype(y)) * (levels - 1)).round().long()
    codes = codes.clamp_(0, levels - 1)
    offsets = torch.arange(channels, device=y.device).view(1, 1, -1, 1, 1) * levels
    return table.reshape(-1).take(codes + offsets)
