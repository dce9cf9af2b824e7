r"""Losses for self-supervised radiance reconstruction from split exposure stacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from deepinv.loss import Loss
from torch import Tensor, nn

from deepinv_icrf._checks import check_in, compute_dtype
from deepinv_icrf.functional.merge import merge_weights, stack_prediction_error
from deepinv_icrf.loss._utils import find_icrf
from deepinv_icrf.models.stack_reconstructor import stack_split_parts

if TYPE_CHECKING:
    from deepinv.physics import Physics

# stack_prediction_error lives in deepinv_icrf.functional; re-exported here for
# backward compatibility.
__all__ = ["StackPredictionLoss", "LinearizedStackLoss", "stack_prediction_error"]


class StackPredictionLoss(Loss):
    r"""Prediction loss of exposure-stack splitting, in the linearised domain.

    For the held-out part :math:`y_2 = M_2 y` of an exposure stack and its split physics
    (what :class:`deepinv_icrf.loss.EquivariantSplittingLoss` passes to its
    ``prediction_loss``), compares the re-exposed reconstruction :math:`t_k \hat x` with the
    held-out codes linearised by the physics' inverse response :math:`g = f^{-1}` (the true
    ICRF, or a learned :class:`deepinv_icrf.models.ICRF` given as the physics' response), in
    radiance units (those of the radiance PSNR), see
    :func:`deepinv_icrf.functional.stack_prediction_error`, with the
    weights

    .. math::

        w_k = M_{2,k}\, h(\tilde y_k)\, [\ell \le \tilde y_k \le u], \qquad
        \tilde y_k = f(\mathrm{clip}(t_k \hat x, 0, 1)),

    where :math:`h` is the hat weight of :func:`deepinv_icrf.functional.merge_weights`.
    The valid range and the weights are read on the *re-simulated* codes :math:`\tilde y`
    (without gradient), not on the noisy held-out codes: selecting entries by their own noisy
    value biases the target near the clipping bounds (codes just below saturation are kept
    only when their noise is negative), selecting them by the prediction does not.

    :param float lower: smallest valid code :math:`\ell`, inclusive. Default ``0.05``.
    :param float upper: largest valid code :math:`u`, inclusive. Default ``0.95``.
    :param bool detach_target: no gradient through the linearised target :math:`g(y_2)` (a
        learned ICRF is then trained by the ICRF losses only). Default ``True``.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.physics import ExposureStack
    >>> physics = ExposureStack(torch.tensor([1.0, 4.0]), response="gamma")
    >>> x = torch.full((1, 3, 4, 5), 0.1)
    >>> y = physics(x)
    >>> loss = StackPredictionLoss()
    >>> float(loss(x_net=x, y=y, physics=physics)) < 1e-5  # only quantisation left
    True
    >>> bool(loss(x_net=1.5 * x, y=y, physics=physics) > 1e-4)
    True
    """

    def __init__(
        self,
        lower: float = 0.05,
        upper: float = 0.95,
        detach_target: bool = True,
    ) -> None:
        super().__init__()
        if not 0.0 <= lower < upper <= 1.0:
            raise ValueError(
                f"Expected 0 <= `lower` < `upper` <= 1, but got lower={lower} and "
                f"upper={upper}."
            )
        check_in(detach_target, "detach_target", (True, False))
        self.lower = float(lower)
        self.upper = float(upper)
        self.detach_target = detach_target

    @staticmethod
    def _stack_physics(physics: Physics) -> Physics:
        for part in (physics, *getattr(physics, "physics_list", ())):
            if callable(getattr(part, "inverse_response", None)):
                return part
        raise ValueError(
            "Expected `physics` to be an ExposureStack (or a split of one) with an "
            f"`inverse_response`, but got {type(physics).__name__}."
        )

    def forward(
        self, x_net: Tensor, y: Tensor, physics: Physics, **kwargs: Any
    ) -> Tensor:
        r"""Compute the loss.

        :param torch.Tensor x_net: radiance ``(B, C, H, W)``.
        :param torch.Tensor y: (held-out part of the) stack ``(B, N, C, H, W)``.
        :param deepinv.physics.Physics physics: its (split) exposure-stack physics.
        :return: (:class:`torch.Tensor`) shape ``(B,)``.
        """
        if y.ndim != 5 or x_net.ndim != 4:
            raise ValueError(
                "Expected `y` (B, N, C, H, W) and `x_net` (B, C, H, W), but got shapes "
                f"{tuple(y.shape)} and {tuple(x_net.shape)}."
            )
        times, mask = stack_split_parts(physics)
        stack = self._stack_physics(physics)
        dtype = compute_dtype(x_net, y)
        x_lin = stack.inverse_response(y.to(dtype))
        if self.detach_target:
            x_lin = x_lin.detach()
        with torch.no_grad():
            t = times.to(device=y.device, dtype=dtype).reshape(-1, y.shape[1])
            z = t[:, :, None, None, None] * x_net.detach().to(dtype).unsqueeze(1)
            code = stack.crf(z.clamp(0.0, 1.0)).to(dtype)
            valid = (code >= self.lower) & (code <= self.upper)
            weights = merge_weights(code) * valid.to(dtype)
            if mask is not None:
                weights = weights * mask.to(device=y.device, dtype=dtype)
        return stack_prediction_error(x_net, x_lin, times, weights)


class LinearizedStackLoss(Loss):
    r"""Evaluate an ICRF loss on the model's own ICRF when the model outputs something else.

    ICRF losses such as :class:`deepinv_icrf.loss.RadiometricLinearityLoss` read the
    linearised stack :math:`\mathrm{ICRF}(y)` as ``x_net``. In joint training the model
    outputs a radiance instead (e.g. :class:`deepinv_icrf.models.StackReconstructor`), so this
    wrapper finds the ICRF inside the model (:func:`deepinv_icrf.loss.find_icrf`), computes
    :math:`\mathrm{ICRF}(y)` on the full stack ``y`` and calls the wrapped loss with it as
    ``x_net`` and the ICRF as ``model``:

    .. math::

        \mathcal{L}(\hat x, y, A, R) = \mathcal{L}_{\mathrm{inner}}(g(y), y, A, g),
        \qquad g = \mathrm{ICRF}(R).

    The wrapper is named after the wrapped loss in logs only through
    :class:`deepinv_icrf.loss.WeightedLossScheduler` names (give it one).

    :param deepinv.loss.Loss loss: the ICRF loss to evaluate.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.loss import RadiometricLinearityLoss
    >>> from deepinv_icrf.models import ICRF, StackReconstructor
    >>> from deepinv_icrf.physics import ExposureStack
    >>> physics = ExposureStack(torch.tensor([1.0, 2.0, 4.0]), response="gamma")
    >>> y = physics(torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(0)) / 4)
    >>> model = StackReconstructor(ICRF(init="gamma"), n_exposures=3)
    >>> loss = LinearizedStackLoss(RadiometricLinearityLoss())
    >>> value = loss(x_net=model(y, physics), y=y, physics=physics, model=model)
    >>> tuple(value.shape), bool(value < 0.05)
    ((1,), True)
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        if not isinstance(loss, nn.Module):
            raise TypeError(
                f"Expected `loss` to be a deepinv Loss, but got {type(loss).__name__}."
            )
        self.loss = loss

    def forward(
        self, y: Tensor, physics: Physics, model: nn.Module, **kwargs: Any
    ) -> Tensor:
        r"""Compute the wrapped loss at :math:`\mathrm{ICRF}(y)`.

        :param torch.Tensor y: the full raw stack ``(B, N, C, H, W)``.
        :param deepinv.physics.Physics physics: its physics (``exposure_times``).
        :param torch.nn.Module model: the model holding the ICRF.
        :param kwargs: passed to the wrapped loss (``x_net`` is replaced).
        :return: (:class:`torch.Tensor`) the wrapped loss' value.
        """
        icrf = find_icrf(model)
        if icrf is None:
            raise ValueError(
                "Expected `model` to hold an ICRF (a 2-D `curve` and a `derivative` method), "
                f"but {type(model).__name__} has none."
            )
        kwargs.pop("x_net", None)
        return self.loss(x_net=icrf(y), y=y, physics=physics, model=icrf, **kwargs)
