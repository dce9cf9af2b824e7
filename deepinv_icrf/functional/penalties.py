r"""Shape penalties of a sampled ICRF curve (clair-torch's regularisers).

A curve is a tensor ``(*, C, L)``: per channel, :math:`L` samples :math:`f_0, \dots, f_{L-1}` on a
uniform grid of :math:`[0, 1]`. Each penalty returns one value per channel, shape ``(*, C)``, in
float32 (float64 for float64 curves; half-precision curves are promoted).
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepinv_icrf._checks import check_float, check_shape, compute_dtype

__all__ = [
    "monotonicity_penalty",
    "range_penalty",
    "endpoint_penalty",
    "smoothness_penalty",
]


def _curve(curve: Tensor) -> Tensor:
    check_float(curve, "curve")
    sizes = check_shape(curve, "curve", ["*", "C", "L"])
    if sizes["L"] < 2:
        raise ValueError(
            f"Expected `curve` to have shape (*, C, L) with L >= 2 samples, "
            f"but got shape {tuple(curve.shape)}."
        )
    return curve.to(compute_dtype(curve))


def monotonicity_penalty(curve: Tensor, squared: bool = True) -> Tensor:
    r"""Penalty on non-increasing steps of the curve.

    With :math:`\Delta f_k = f_{k+1} - f_k`,

    .. math::

        P = \sum_k [\Delta f_k \leq 0]\, \Delta f_k^2 \quad \text{(squared)}, \qquad
        P = \sum_k [\Delta f_k \leq 0]\, (-\Delta f_k) \quad \text{(linear)}.

    It is zero exactly when the curve is non-decreasing (flat steps cost nothing).

    :param torch.Tensor curve: curve samples, shape ``(*, C, L)``, ``L >= 2``.
    :param bool squared: squared (``True``, default) or linear (``False``) penalty.
    :return: (:class:`torch.Tensor`) shape ``(*, C)``.

    :Example:

    >>> import torch
    >>> monotonicity_penalty(torch.tensor([[0.0, 0.5, 0.3, 1.0], [0.0, 0.2, 0.6, 1.0]]))
    tensor([0.0400, 0.0000])
    """
    f = _curve(curve)
    df = f[..., 1:] - f[..., :-1]
    step = df**2 if squared else -df
    return torch.where(df <= 0, step, torch.zeros_like(step)).sum(dim=-1)


def range_penalty(curve: Tensor) -> Tensor:
    r"""Penalty on curve values outside :math:`[0, 1]`.

    .. math::

        P = \sum_k \mathrm{relu}(-f_k) + \mathrm{relu}(f_k - 1)

    :param torch.Tensor curve: curve samples, shape ``(*, C, L)``, ``L >= 2``.
    :return: (:class:`torch.Tensor`) shape ``(*, C)``.

    :Example:

    >>> import torch
    >>> range_penalty(torch.tensor([[-0.25, 0.5, 1.5]]))
    tensor([0.7500])
    """
    f = _curve(curve)
    return (torch.relu(-f) + torch.relu(f - 1)).sum(dim=-1)


def endpoint_penalty(curve: Tensor) -> Tensor:
    r"""Penalty on endpoints away from :math:`f_0 = 0` and :math:`f_{L-1} = 1`.

    .. math::

        P = f_0^2 + (f_{L-1} - 1)^2

    :param torch.Tensor curve: curve samples, shape ``(*, C, L)``, ``L >= 2``.
    :return: (:class:`torch.Tensor`) shape ``(*, C)``.

    :Example:

    >>> import torch
    >>> endpoint_penalty(torch.tensor([[0.1, 0.5, 0.8]]))
    tensor([0.0500])
    """
    f = _curve(curve)
    return f[..., 0] ** 2 + (f[..., -1] - 1) ** 2


def smoothness_penalty(curve: Tensor) -> Tensor:
    r"""Penalty on the discrete second derivative of the curve.

    .. math::

        P = \sum_{k=1}^{L-2} (f_{k-1} - 2 f_k + f_{k+1})^2

    It is zero for a straight line (and for ``L = 2``).

    :param torch.Tensor curve: curve samples, shape ``(*, C, L)``, ``L >= 2``.
    :return: (:class:`torch.Tensor`) shape ``(*, C)``.

    :Example:

    >>> import torch
    >>> smoothness_penalty(torch.tensor([[0.0, 0.5, 0.6, 1.0]]))
    tensor([0.2500])
    """
    f = _curve(curve)
    second = f[..., :-2] - 2 * f[..., 1:-1] + f[..., 2:]
    return (second**2).sum(dim=-1)
