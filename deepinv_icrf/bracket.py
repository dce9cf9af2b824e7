r"""The bracket at the door: user input turned into checked codes and exposure times.

Everything a user passes as a bracketed stack (numpy ``uint8``/``uint16`` images as readers
return them, float tensors of codes, lists or arrays of exposure times) is turned into the
package's data layout here, once, by the functions below. Each rule is written only here:
image-to-codes conversion (:func:`as_stack_tensor`), exposure times
(:func:`check_exposure_times`). The algorithms below the public entry points take the
results as trusted values.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf._checks import check_positive, check_range, check_shape

__all__ = ["as_stack_tensor", "check_exposure_times", "integer_stack"]


def as_stack_tensor(
    stack: np.ndarray | Tensor, name: str = "stack"
) -> tuple[Tensor, int | None]:
    r"""Turn images as readers return them into the float stack layout ``(B, N, C, H, W)``.

    Accepts a numpy ``uint8``/``uint16`` array ``(N, H, W, C)`` or ``(N, H, W)`` (codes, divided by
    ``2**bits - 1``), a float tensor or array ``(N, C, H, W)`` in ``[0, 1]``, or a float tensor
    ``(B, N, C, H, W)``.

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
    bits = None
    if isinstance(stack, np.ndarray):
        if stack.dtype == np.uint8 or stack.dtype == np.uint16:
            stack = integer_stack(stack, name)
            bits = 8 if stack.dtype == np.uint8 else 16
            y = torch.from_numpy(stack.astype(np.float32) / (2**bits - 1)).permute(
                0, 3, 1, 2
            )
        elif np.issubdtype(stack.dtype, np.floating):
            y = torch.from_numpy(np.ascontiguousarray(stack))
        else:
            raise TypeError(
                f"Expected `{name}` to be uint8, uint16 or floating point, but got dtype {stack.dtype}."
            )
    elif isinstance(stack, Tensor):
        if not torch.is_floating_point(stack):
            raise TypeError(
                f"Expected `{name}` as a float tensor in [0, 1] (codes divided by 2**bits - 1), "
                f"but got dtype {stack.dtype}."
            )
        y = stack
    else:
        raise TypeError(
            f"Expected `{name}` to be a numpy array, a torch.Tensor or a folder path, but got "
            f"{type(stack).__name__}."
        )
    if y.ndim == 4:
        y = y.unsqueeze(0)
    dims = check_shape(y, name, ["B", "N", "C", "H", "W"])
    if dims["N"] < 2:
        raise ValueError(
            f"Expected `{name}` to hold at least 2 exposures, but got {dims['N']}."
        )
    check_range(y, name, 0.0, 1.0)
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


def check_exposure_times(exposure_times: object, n: int, batch: int = 1) -> Tensor:
    r"""The exposure times of a bracket as float64 ``(B, N)``, checked once at the door.

    The one place where exposure times given by a user are turned into a tensor and
    checked: a sequence, array or tensor of ``N`` times (or ``(B, N)``), finite, > 0 and
    distinct within a stack (repeated frames of one exposure carry no exposure ratio).

    :param object exposure_times: the times in seconds, ``(N,)`` or ``(B, N)``.
    :param int n: the number of exposures of the stack.
    :param int batch: the number of stacks ``B`` (default 1).
    :return: (:class:`torch.Tensor`) the times ``(B, N)``, float64, on the CPU.

    |sep|

    :Example:

    >>> check_exposure_times([0.5, 1.0, 2.0], 3)
    tensor([[0.5000, 1.0000, 2.0000]], dtype=torch.float64)
    """
    if exposure_times is None:
        raise ValueError(
            "Expected `exposure_times` (seconds, one per exposure); they can be left out only "
            "when `stack` is a folder (read from EXIF or a sidecar file)."
        )
    try:
        times = torch.as_tensor(
            (
                np.asarray(exposure_times, dtype=np.float64)
                if not isinstance(exposure_times, Tensor)
                else exposure_times.detach().cpu()
            ),
            dtype=torch.float64,
        )
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"Expected `exposure_times` to be a sequence of numbers or a tensor, but got "
            f"{exposure_times!r}."
        ) from err
    if times.ndim == 1 and times.shape[0] == n:
        times = times.unsqueeze(0).expand(batch, n)
    elif not (times.ndim == 2 and times.shape == (batch, n)):
        raise ValueError(
            f"Expected `exposure_times` of shape ({n},) or ({batch}, {n}) to match the {n} "
            f"exposures of `stack`, but got shape {tuple(times.shape)}."
        )
    check_positive(times, "exposure_times")
    for row in times:
        if row.unique().numel() != n:
            raise ValueError(
                f"Expected distinct `exposure_times`, but got {row.tolist()} (duplicates): "
                "repeated frames of one exposure carry no exposure ratio."
            )
    return times.contiguous()
