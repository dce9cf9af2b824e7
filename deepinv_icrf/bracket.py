r"""The bracket at the door: user input turned into checked codes, bit depth and exposure times.

Everything a user passes as a bracketed stack (numpy ``uint8``/``uint16`` images as readers
return them, float tensors of codes, lists or arrays of exposure times, a bit depth) is
checked here, by one function per rule, and nowhere else:

- **image to codes**: :func:`image_codes` decides what images are (integer codes and their
  bit depth, or floats in :math:`[0, 1]`), :func:`codes_to_unit` divides integer codes by
  :math:`2^b - 1`; :func:`as_stack_tensor` builds the float stack ``(B, N, C, H, W)`` on them;
- **exposure times**: :func:`check_exposure_times` (shape, finite, ``> 0``, distinct where
  that matters);
- **bit depth**: :func:`check_bit_depth`.

Each is the only place that raises its rule's errors (``tests/test_rules_once.py`` checks
that no copy creeps back), with one exception type per kind of error: :class:`TypeError` for
a bad type, :class:`ValueError` for a bad value or shape. Public entry points, the
:mod:`deepinv_icrf.functional` functions included, call them once; the code below an entry
point takes the results as trusted values and does not check them again.
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf._checks import check_range, check_shape

__all__ = [
    "Bracket",
    "as_stack_tensor",
    "check_bit_depth",
    "check_exposure_times",
    "code_bits",
    "codes_to_unit",
    "image_codes",
    "integer_stack",
]

#: Integer image dtypes (as image readers decode them) and their bits per code.
_CODE_BITS = {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16}
#: Most times listed in an error message.
_LISTED = 64


# ---------------------------------------------------------------------- bit depth
def check_bit_depth(
    bit_depth: object,
    name: str = "bit_depth",
    *,
    optional: bool = True,
    high: int = 32,
    allowed: Sequence[int] | None = None,
) -> int | None:
    r"""Check a bit depth: an ``int`` (not a ``bool``) in ``[1, high]`` or one of ``allowed``.

    The one place where a bit depth given by a user is checked.

    :param object bit_depth: the value, bits per code.
    :param str name: the argument's name, used in the messages (default ``"bit_depth"``).
    :param bool optional: accept ``None`` (default ``True``), returned as is.
    :param int high: the largest accepted bit depth (default 32; the tables of
        :func:`~deepinv_icrf.functional.code_values` stop at 24).
    :param Sequence, None allowed: the only accepted bit depths, e.g. ``(8, 10, 12, 14, 16)``
        for the joint code histograms (default ``None``: any in ``[1, high]``).
    :return: (int, None) the bit depth as an ``int`` (numpy integers included), or ``None``.
    :raises TypeError: if it is not an integer (or ``None`` where allowed).
    :raises ValueError: if it is out of range or not one of ``allowed``.

    |sep|

    :Example:

    >>> check_bit_depth(12), check_bit_depth(None)
    (12, None)
    >>> check_bit_depth(9, allowed=(8, 10, 12, 14, 16))
    Traceback (most recent call last):
    ...
    ValueError: Expected `bit_depth` to be one of (8, 10, 12, 14, 16) or None, but got 9.
    """
    if bit_depth is None and optional:
        return None
    or_none = " or None" if optional else ""
    if isinstance(bit_depth, bool) or not isinstance(bit_depth, numbers.Integral):
        raise TypeError(
            f"Expected `{name}` to be an int{or_none}, but got {bit_depth!r}."
        )
    bits = int(bit_depth)
    if allowed is not None:
        ok, what = bits in tuple(allowed), f"one of {tuple(allowed)}"
    else:
        ok, what = 1 <= bits <= high, f"in [1, {high}]"
    if not ok:
        raise ValueError(f"Expected `{name}` to be {what}{or_none}, but got {bits}.")
    return bits


# ---------------------------------------------------------------------- image to codes
def code_bits(dtype: object) -> int | None:
    r"""Bits per code of an integer image dtype: 8 for ``uint8``, 16 for ``uint16``, else
    ``None``.

    :param object dtype: a numpy dtype (or anything :class:`numpy.dtype` takes).
    :return: (int, None) the bits, or ``None`` for any other dtype.

    |sep|

    :Example:

    >>> import numpy as np
    >>> code_bits(np.uint16), code_bits(np.float32)
    (16, None)
    """
    try:
        return _CODE_BITS.get(np.dtype(dtype))
    except TypeError:
        return None


def image_codes(
    images: object, name: str = "images", *, float_arrays: bool = True
) -> tuple[Tensor, int | None]:
    r"""What images are: integer codes and their bit depth, or floats in :math:`[0, 1]`.

    The one place that decides which images the package takes and what their codes are:

    - a numpy ``uint8``/``uint16`` array holds integer codes of 8/16 bits: returned as an
      integer tensor sharing its memory (no copy, read-only arrays included: it is never
      written to);
    - a float tensor (or a float numpy array, with ``float_arrays``) holds codes divided by
      :math:`2^b - 1`: its values must be finite and in :math:`[0, 1]` (one device sync);
    - anything else (integer tensors, other numpy dtypes, lists) is refused.

    The layout is left as given (the caller knows where its channels are); integer codes
    become floats with :func:`codes_to_unit`.

    :param object images: the images, any shape.
    :param str name: the argument's name, used in the messages (default ``"images"``).
    :param bool float_arrays: accept float numpy arrays (default ``True``; ``False`` where
        numpy input means decoded images, channels last, as in :mod:`deepinv_icrf.hdr`).
    :return: (tuple) the codes as a tensor (integer, or float as given) and their bit depth
        (``None`` for floats).
    :raises TypeError: for a type or dtype that holds no codes.
    :raises ValueError: for float values outside :math:`[0, 1]` or not finite.

    |sep|

    :Example:

    >>> import numpy as np
    >>> codes, bits = image_codes(np.array([[0, 128, 255]], dtype=np.uint8))
    >>> codes.dtype, bits
    (torch.uint8, 8)
    """
    if isinstance(images, np.ndarray):
        bits = code_bits(images.dtype)
        if bits is not None:
            with (
                warnings.catch_warnings()
            ):  # read-only arrays are fine: never written to
                warnings.simplefilter("ignore", UserWarning)
                return torch.from_numpy(np.ascontiguousarray(images)), bits
        if float_arrays and np.issubdtype(images.dtype, np.floating):
            values = torch.from_numpy(np.ascontiguousarray(images))
            return check_range(values, name, 0.0, 1.0), None
        floats = "floats in [0, 1]" if float_arrays else "a float tensor in [0, 1]"
        raise TypeError(
            f"Expected `{name}` as uint8/uint16 codes or {floats}, but got a numpy array "
            f"of dtype {images.dtype}."
        )
    if isinstance(images, Tensor):
        if not torch.is_floating_point(images):
            raise TypeError(
                f"Expected `{name}` as a float tensor in [0, 1] (codes divided by "
                f"2**bits - 1) or a uint8/uint16 numpy array, but got dtype {images.dtype}."
            )
        return check_range(images, name, 0.0, 1.0), None
    raise TypeError(
        f"Expected `{name}` to be a numpy array or a torch.Tensor, but got "
        f"{type(images).__name__}."
    )


def codes_to_unit(
    codes: Tensor, bits: int | None, dtype: torch.dtype = torch.float32
) -> Tensor:
    r"""Codes in :math:`[0, 1]` in ``dtype``: integer codes divided by :math:`2^b - 1`.

    The arithmetic of :func:`image_codes` (trusted input: integer codes of ``bits`` bits, or
    floats, which are only copied into ``dtype``). The result is a new tensor.

    :param torch.Tensor codes: integer codes, or float values in :math:`[0, 1]`.
    :param int, None bits: the bit depth :math:`b` of integer codes (``None`` for floats).
    :param torch.dtype dtype: the float dtype of the result (default ``torch.float32``).
    :return: (:class:`torch.Tensor`) the values :math:`k / (2^b - 1)`, shape of ``codes``.

    |sep|

    :Example:

    >>> import torch
    >>> codes_to_unit(torch.tensor([0, 51, 255], dtype=torch.uint8), 8)
    tensor([0.0000, 0.2000, 1.0000])
    """
    if codes.is_floating_point():
        return codes.to(dtype, copy=True)
    return codes.to(dtype) / (2**bits - 1)


def as_stack_tensor(
    stack: np.ndarray | Tensor, name: str = "stack"
) -> tuple[Tensor, int | None]:
    r"""Turn images as readers return them into the float stack layout ``(B, N, C, H, W)``.

    Accepts a numpy ``uint8``/``uint16`` array ``(N, H, W, C)`` or ``(N, H, W)`` (codes, divided by
    ``2**bits - 1``), a float tensor or array ``(N, C, H, W)`` in ``[0, 1]``, or a float tensor
    ``(B, N, C, H, W)`` (:func:`image_codes`).

    :param numpy.ndarray, torch.Tensor stack: the bracketed images.
    :param str name: argument name used in error messages.
    :return: (tuple) the float stack ``(B, N, C, H, W)`` (``B = 1`` unless given) and the bit
        depth (``None`` for floats).

    |sep|

    :Example:

    >>> import numpy as np
    >>> y, bits = as_stack_tensor(np.full((3, 4, 5, 3), 255, dtype=np.uint8))
    >>> tuple(y.shape), bits, float(y.max())
    ((1, 3, 3, 4, 5), 8, 1.0)
    """
    if isinstance(stack, np.ndarray) and code_bits(stack.dtype) is not None:
        stack = integer_stack(stack, name)
    codes, bits = image_codes(stack, name)
    y = codes if bits is None else codes_to_unit(codes, bits).permute(0, 3, 1, 2)
    if y.ndim == 4:
        y = y.unsqueeze(0)
    dims = check_shape(y, name, ["B", "N", "C", "H", "W"])
    if dims["N"] < 2:
        raise ValueError(
            f"Expected `{name}` to hold at least 2 exposures, but got {dims['N']}."
        )
    return y, bits


def integer_stack(stack: np.ndarray, name: str = "stack") -> np.ndarray:
    r"""Check an integer image stack ``(N, H, W, C)`` / ``(N, H, W)``; return it 4-D.

    :param numpy.ndarray stack: ``uint8``/``uint16`` images.
    :param str name: argument name used in error messages.
    :return: (numpy.ndarray) the stack ``(N, H, W, C)``.
    """
    if stack.ndim == 3:
        stack = stack[..., None]
    if stack.ndim != 4:
        raise ValueError(
            f"Expected `{name}` as an integer array of shape (N, H, W, C) or (N, H, W), "
            f"but got shape {stack.shape}."
        )
    if stack.shape[0] < 2:
        raise ValueError(
            f"Expected `{name}` to hold at least 2 exposures, but got {stack.shape[0]}."
        )
    return stack


# ---------------------------------------------------------------------- exposure times
def _times_tensor(exposure_times: object, name: str) -> Tensor:
    r"""The times as a real float tensor (float tensors as given; anything else float64)."""
    if exposure_times is None:
        raise ValueError(
            f"Expected `{name}` (seconds, one per exposure), but got None; only a folder "
            "read from disk brings its own (EXIF or a sidecar file)."
        )
    if isinstance(exposure_times, Tensor):
        if exposure_times.dtype == torch.bool or exposure_times.is_complex():
            raise TypeError(
                f"Expected `{name}` to hold real numbers, but got dtype "
                f"{exposure_times.dtype}."
            )
        if exposure_times.is_floating_point():
            return exposure_times
        return exposure_times.to(torch.float64)
    try:
        values = np.array(exposure_times, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"Expected `{name}` to be a sequence of numbers or a tensor, but got "
            f"{exposure_times!r}."
        ) from err
    return torch.from_numpy(values)


def check_exposure_times(
    exposure_times: object,
    n: int | None = None,
    batch: int | None = 1,
    *,
    distinct: bool = False,
    varied: bool = False,
    values: bool = True,
    name: str = "exposure_times",
) -> Tensor:
    r"""Exposure times as a tensor ``(B, N)``, checked: the one place the rule is written.

    Takes a sequence, numpy array or tensor of ``N`` times, ``(N,)`` (every stack) or
    ``(B, N)``/``(1, N)`` (one row per stack); the times are finite and ``> 0`` (checked on
    the values: one device sync), in any order, and with ``distinct`` differ within each
    stack (repeated frames of one exposure carry no exposure ratio: a fit needs distinct
    times, a merge, a loss or the physics takes repeated frames as valid measurements).

    :param object exposure_times: the times in seconds.
    :param int, None n: the number of exposures of the stack (``None``: any ``N >= 2``).
    :param int, None batch: the number of stacks ``B``: the result is ``(B, N)``, a row
        ``(N,)`` or ``(1, N)`` expanded to every stack (default 1); ``None`` accepts any
        ``(N,)`` or ``(B, N)`` and keeps its shape.
    :param bool distinct: refuse equal times within a stack (default ``False``).
    :param bool varied: refuse a stack whose times are all equal (default ``False``): times
        a fit implied may repeat (frames a camera took at one exposure), but a stack needs
        two different ones for an exposure ratio.
    :param bool values: check the values (default ``True``); ``False`` checks the shape
        only, for times that were checked when they were stored.
    :param str name: the argument's name, used in the messages (default
        ``"exposure_times"``).
    :return: (:class:`torch.Tensor`) the times: a float tensor as given (dtype, device and
        autograd kept, no copy), anything else as a float64 CPU tensor.
    :raises TypeError: for values that are not real numbers.
    :raises ValueError: for a shape that does not match the stack, times that are not
        finite or not ``> 0``, (``distinct``) repeated times or (``varied``) one time
        only.

    |sep|

    :Example:

    >>> check_exposure_times([0.5, 1.0, 2.0], 3)
    tensor([[0.5000, 1.0000, 2.0000]], dtype=torch.float64)
    >>> check_exposure_times([1.0, 1.0, 2.0], 3, distinct=True)
    Traceback (most recent call last):
    ...
    ValueError: Expected distinct `exposure_times`, but got [1.0, 1.0, 2.0] (duplicates): repeated frames of one exposure carry no exposure ratio.
    """
    times = _times_tensor(exposure_times, name)
    size = times.shape[-1] if times.ndim else 0
    rows = times.shape[0] if times.ndim == 2 else 1
    if (
        times.ndim not in (1, 2)
        or (n is not None and size != n)
        or (n is None and size < 2)
        or (batch is not None and rows not in (1, batch))
    ):
        count = "N" if n is None else str(n)
        shapes = [f"({count},)"]
        if batch is None:
            shapes.append(f"(B, {count})")
        else:
            shapes += [f"({b}, {count})" for b in dict.fromkeys((1, batch))]
        what = (
            "with N >= 2 exposures"
            if n is None
            else f"to match the {n} exposures of the stack"
        )
        raise ValueError(
            f"Expected `{name}` to have shape {', '.join(shapes[:-1])} or {shapes[-1]} "
            f"{what}, but got shape {tuple(times.shape)}."
        )
    if values:
        _check_time_values(times, name, distinct, varied)
    if batch is None:
        return times
    return (times if times.ndim == 2 else times.unsqueeze(0)).expand(batch, size)


def _check_time_values(
    times: Tensor, name: str, distinct: bool, varied: bool = False
) -> None:
    r"""Finite, ``> 0``, (``distinct``) distinct and (``varied``) not all equal per row; one
    device sync when they are."""
    t = times.detach()
    if not bool((torch.isfinite(t) & (t > 0)).all()):
        t = t.cpu()
        listed = f": {t.tolist()}" if t.numel() <= _LISTED else ""
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            raise ValueError(
                f"Expected `{name}` to be finite, but it holds {int((~finite).sum())} NaN "
                f"or infinite value(s){listed}."
            )
        raise ValueError(
            f"Expected `{name}` to be > 0 everywhere, but got minimum "
            f"{float(t.min()):.6g}{listed}."
        )
    if not (distinct or varied):
        return
    for row in t.reshape(-1, t.shape[-1]).cpu():
        count = row.unique().numel()
        if distinct and count != row.numel():
            raise ValueError(
                f"Expected distinct `{name}`, but got {row.tolist()} (duplicates): "
                "repeated frames of one exposure carry no exposure ratio."
            )
        if varied and count < 2:
            raise ValueError(
                f"Expected `{name}` with at least two different values, but got "
                f"{row.tolist()}: one exposure carries no exposure ratio."
            )


@dataclass(frozen=True)
class Bracket:
    r"""A checked bracketed stack: codes, bit depth and exposure times.

    Made by :meth:`from_input` at a public entry point; the code below takes it as trusted.

    :param numpy.ndarray, torch.Tensor codes: integer codes ``(N, H, W, C)`` (``uint8`` or
        ``uint16``, kept as given so a sample can be taken before any conversion) or a float
        stack ``(B, N, C, H, W)`` in ``[0, 1]``.
    :param int, None bit_depth: bits of integer codes (``None`` for float input; the fit
        detects quantised floats itself).
    :param torch.Tensor, None exposure_times: checked times ``(B, N)`` float64, or ``None``.
    """

    codes: np.ndarray | Tensor
    bit_depth: int | None
    exposure_times: Tensor | None

    @property
    def batch(self) -> int:
        r"""Number of stacks ``B``."""
        return 1 if isinstance(self.codes, np.ndarray) else int(self.codes.shape[0])

    @property
    def n_exposures(self) -> int:
        r"""Number of exposures ``N``."""
        return int(self.codes.shape[0 if isinstance(self.codes, np.ndarray) else 1])

    @property
    def channels(self) -> int:
        r"""Number of channels ``C``."""
        return int(self.codes.shape[3 if isinstance(self.codes, np.ndarray) else 2])

    def float_stack(self) -> Tensor:
        r"""The codes as a float stack ``(B, N, C, H, W)`` in ``[0, 1]``."""
        if isinstance(self.codes, np.ndarray):
            return as_stack_tensor(self.codes)[0]
        return self.codes

    def single(self) -> Bracket:
        r"""The bracket of one stack (``B = 1``), its times ``(1, N)``; raises for a batch."""
        if self.batch != 1:
            raise ValueError(
                f"Expected one stack, but got a batch of {self.batch} stacks."
            )
        return self

    def stack_codes(self) -> np.ndarray | Tensor:
        r"""The codes of the first (or only) stack, exposures first: integer
        ``(N, H, W, C)`` or float ``(N, C, H, W)``."""
        return self.codes if isinstance(self.codes, np.ndarray) else self.codes[0]

    @classmethod
    def from_input(
        cls,
        stack: np.ndarray | Tensor,
        exposure_times: object = None,
        require_times: bool = True,
        distinct: bool = True,
    ) -> Bracket:
        r"""Check what a user passed and make the bracket.

        :param numpy.ndarray, torch.Tensor stack: ``uint8``/``uint16`` images ``(N, H, W, C)``
            or ``(N, H, W)``, a float tensor or array ``(N, C, H, W)`` or
            ``(B, N, C, H, W)`` in ``[0, 1]``.
        :param object exposure_times: ``(N,)`` or ``(B, N)`` seconds, distinct within a
            stack (:func:`check_exposure_times`), or ``None``.
        :param bool require_times: raise when ``exposure_times`` is ``None`` (default True).
        :param bool distinct: refuse equal times within a stack (default True); ``False``
            for times a fit implied, where frames the camera took at one exposure share one
            (at least two must still differ).
        :return: (:class:`Bracket`) the checked bracket.

        |sep|

        :Example:

        >>> import numpy as np
        >>> b = Bracket.from_input(np.zeros((3, 4, 5, 3), np.uint8), [1.0, 2.0, 4.0])
        >>> b.batch, b.n_exposures, b.channels, b.bit_depth
        (1, 3, 3, 8)
        """
        bits = code_bits(stack.dtype) if isinstance(stack, np.ndarray) else None
        if bits is not None:
            # integer codes stay as decoded: a sample can be taken before any conversion
            codes: np.ndarray | Tensor = integer_stack(stack, "stack")
            batch, n = 1, codes.shape[0]
        else:
            codes, bits = as_stack_tensor(stack)
            batch, n = codes.shape[0], codes.shape[1]
        times = None
        if exposure_times is not None or require_times:
            times = check_exposure_times(
                exposure_times, n, batch, distinct=distinct, varied=not distinct
            )
            times = times.detach().to("cpu", torch.float64).contiguous()
        return cls(codes=codes, bit_depth=bits, exposure_times=times)
