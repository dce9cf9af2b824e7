r"""clair-torch's ICRF objective as one weighted loss: the default loss of
:class:`~deepinv_icrf.training.ICRFTrainer`."""

from __future__ import annotations

from typing import Any

from deepinv_icrf.loss import (
    EndpointLoss,
    MonotonicityLoss,
    RadiometricLinearityLoss,
    RangeLoss,
    SmoothnessLoss,
    WeightedLossScheduler,
)

__all__ = ["icrf_objective"]


def icrf_objective(
    alpha: float = 1.0,
    beta: float = 1.0,
    gamma: float = 1.0,
    delta: float = 1.0,
    **linearity_options: Any,
) -> WeightedLossScheduler:
    r"""clair-torch's ICRF objective as one :class:`~deepinv_icrf.loss.WeightedLossScheduler`.

    .. math::

        \mathcal{L} = \sum_c L_c + \alpha\,\mathrm{mono} + \beta\,\mathrm{range}
        + \gamma\,\mathrm{endpoint} + \delta\,\mathrm{smooth}

    with the terms named ``"linearity"``, ``"monotonicity"``, ``"range"``, ``"endpoint"`` and
    ``"smoothness"`` (their log keys in :class:`ICRFTrainer`).

    :param float alpha: weight of the monotonicity penalty, default 1.
    :param float beta: weight of the range penalty, default 1.
    :param float gamma: weight of the endpoint penalty, default 1.
    :param float delta: weight of the smoothness penalty, default 1.
    :param linearity_options: options of :class:`~deepinv_icrf.loss.RadiometricLinearityLoss`
        (``relative``, ``exposure_ratio_threshold``, ``path``, ...).
    :return: (:class:`~deepinv_icrf.loss.WeightedLossScheduler`) the objective.

    |sep|

    :Example:

    >>> loss = icrf_objective(delta=100.0)
    >>> loss.names
    ['linearity', 'monotonicity', 'range', 'endpoint', 'smoothness']
    >>> loss.weights
    [1.0, 1.0, 1.0, 1.0, 100.0]
    """
    return WeightedLossScheduler(
        {
            "linearity": RadiometricLinearityLoss(**linearity_options),
            "monotonicity": MonotonicityLoss(),
            "range": RangeLoss(),
            "endpoint": EndpointLoss(),
            "smoothness": SmoothnessLoss(),
        },
        weights={
            "monotonicity": alpha,
            "range": beta,
            "endpoint": gamma,
            "smoothness": delta,
        },
    )
