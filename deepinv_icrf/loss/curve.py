r"""Shape penalties of the ICRF curve as deepinv losses (clair-torch's regularisers).

Each loss reads the curve ``(C, L)`` from the ICRF inside ``model`` (see
:func:`deepinv_icrf.loss.find_icrf`) or from a fixed ``curve`` given at construction, applies
its penalty from :mod:`deepinv_icrf.functional.penalties` and returns the channel sum,
repeated for every sample of the batch: shape ``(B,)`` (``(B, C)`` with ``per_channel=True``).
"""

from __future__ import annotations

from deepinv.loss import Loss
from torch import Tensor, nn

from deepinv_icrf._checks import check_float, check_in, check_shape
from deepinv_icrf.functional.penalties import (
    endpoint_penalty,
    monotonicity_penalty,
    range_penalty,
    smoothness_penalty,
)
from deepinv_icrf.loss._utils import find_icrf

__all__ = ["MonotonicityLoss", "RangeLoss", "EndpointLoss", "SmoothnessLoss"]


def _batch_size(*tensors: object) -> int:
    for t in tensors:
        if isinstance(t, Tensor) and t.ndim > 0:
            return t.shape[0]
    return 1


class _CurvePenaltyLoss(Loss):
    r"""Base of the curve losses: finds the curve, applies :meth:`penalty`, shapes the output.

    :param torch.Tensor, None curve: fixed curve ``(C, L)`` (stored as a buffer), used instead
        of the model's ICRF; ``None`` (default) reads ``find_icrf(model).curve``.
    :param bool per_channel: return ``(B, C)`` instead of the channel sum ``(B,)``. Default
        ``False``.
    """

    def __init__(self, curve: Tensor | None = None, per_channel: bool = False):
        super().__init__()
        check_in(per_channel, "per_channel", (True, False))
        if curve is not None:
            check_float(curve, "curve")
            check_shape(curve, "curve", ["C", "L"])
        self.per_channel = per_channel
        self.register_buffer("curve", curve)

    def penalty(self, curve: Tensor) -> Tensor:
        r"""The penalty per channel, ``(C, L)`` -> ``(C,)``."""
        raise NotImplementedError

    def forward(
        self,
        x_net: Tensor | None = None,
        y: Tensor | None = None,
        model: nn.Module | None = None,
        **kwargs,
    ) -> Tensor:
        r"""Compute the penalty.

        :param torch.Tensor, None x_net: network output, used only for the batch size ``B``.
        :param torch.Tensor, None y: measurement, used for ``B`` when ``x_net`` is ``None``.
        :param torch.nn.Module, None model: model holding the ICRF (ignored when a ``curve`` was
            given at construction).
        :return: (:class:`torch.Tensor`) shape ``(B,)`` (``(1,)`` without ``x_net`` and ``y``),
            or ``(B, C)`` with ``per_channel``.
        """
        curve = self.curve
        if curve is None:
            icrf = find_icrf(model)
            if icrf is None:
                raise ValueError(
                    f"{type(self).__name__} needs a curve: expected `model` to hold an ICRF "
                    "(a 2-D `curve` and a `derivative` method) or a `curve` tensor given at "
                    "construction, but found neither."
                )
            curve = icrf.curve
        value = self.penalty(curve)
        batch = _batch_size(x_net, y)
        if self.per_channel:
            return value.unsqueeze(0).expand(batch, -1)
        return value.sum(dim=-1).expand(batch)


class MonotonicityLoss(_CurvePenaltyLoss):
    r"""Penalty on non-increasing steps of the ICRF curve.

    .. math::

        \sum_c \sum_k [\Delta f_{c,k} \leq 0]\, \Delta f_{c,k}^2 \quad (\text{or }
        -\Delta f_{c,k} \text{ when not squared})

    See :func:`deepinv_icrf.functional.monotonicity_penalty`.

    :param bool squared: squared (``True``, default) or linear penalty.
    :param torch.Tensor, None curve: fixed curve ``(C, L)`` instead of the model's ICRF.
        Default ``None``.
    :param bool per_channel: return ``(B, C)`` instead of ``(B,)``. Default ``False``.

    |sep|

    :Examples:

    >>> import torch
    >>> loss = MonotonicityLoss(curve=torch.tensor([[0.0, 0.6, 0.4, 1.0]]))
    >>> loss(x_net=torch.zeros(2, 3, 1, 4, 4))
    tensor([0.0400, 0.0400])
    """

    def __init__(
        self,
        squared: bool = True,
        curve: Tensor | None = None,
        per_channel: bool = False,
    ):
        super().__init__(curve=curve, per_channel=per_channel)
        check_in(squared, "squared", (True, False))
        self.squared = squared

    def penalty(self, curve: Tensor) -> Tensor:
        return monotonicity_penalty(curve, squared=self.squared)


class RangeLoss(_CurvePenaltyLoss):
    r"""Penalty on ICRF curve values outside :math:`[0, 1]`.

    .. math::

        \sum_c \sum_k \mathrm{relu}(-f_{c,k}) + \mathrm{relu}(f_{c,k} - 1)

    See :func:`deepinv_icrf.functional.range_penalty`.

    :param torch.Tensor, None curve: fixed curve ``(C, L)`` instead of the model's ICRF.
        Default ``None``.
    :param bool per_channel: return ``(B, C)`` instead of ``(B,)``. Default ``False``.

    |sep|

    :Examples:

    >>> import torch
    >>> RangeLoss(curve=torch.tensor([[-0.5, 0.5, 1.0]]))()
    tensor([0.5000])
    """

    def penalty(self, curve: Tensor) -> Tensor:
        return range_penalty(curve)


class EndpointLoss(_CurvePenaltyLoss):
    r"""Penalty on ICRF curve endpoints away from 0 and 1.

    .. math::

        \sum_c f_{c,0}^2 + (f_{c,L-1} - 1)^2

    See :func:`deepinv_icrf.functional.endpoint_penalty`.

    :param torch.Tensor, None curve: fixed curve ``(C, L)`` instead of the model's ICRF.
        Default ``None``.
    :param bool per_channel: return ``(B, C)`` instead of ``(B,)``. Default ``False``.

    |sep|

    :Examples:

    >>> import torch
    >>> EndpointLoss(curve=torch.tensor([[0.1, 0.5, 0.8]]))()
    tensor([0.0500])
    """

    def penalty(self, curve: Tensor) -> Tensor:
        return endpoint_penalty(curve)


class SmoothnessLoss(_CurvePenaltyLoss):
    r"""Penalty on the discrete second derivative of the ICRF curve.

    .. math::

        \sum_c \sum_k (f_{c,k-1} - 2 f_{c,k} + f_{c,k+1})^2

    See :func:`deepinv_icrf.functional.smoothness_penalty`.

    :param torch.Tensor, None curve: fixed curve ``(C, L)`` instead of the model's ICRF.
        Default ``None``.
    :param bool per_channel: return ``(B, C)`` instead of ``(B,)``. Default ``False``.

    |sep|

    :Examples:

    >>> import torch
    >>> SmoothnessLoss(curve=torch.tensor([[0.0, 0.5, 0.6, 1.0]]))()
    tensor([0.2500])
    """

    def penalty(self, curve: Tensor) -> Tensor:
        return smoothness_penalty(curve)
