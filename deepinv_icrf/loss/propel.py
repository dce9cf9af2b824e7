r"""PROPEL as a deepinv loss: train a network to output a Gaussian mixture per sample or pixel.

The formulas live in :mod:`deepinv_icrf.functional.propel`; this module stores the
configuration (target scale ``sigma``, std mapping, convention, layout, reduction) and routes
the network output through them.
"""

from __future__ import annotations

import math

import torch
from deepinv.loss import Loss
from torch import Tensor

from deepinv_icrf._checks import check_float, check_in, check_int, check_positive
from deepinv_icrf.functional.propel import (
    PROPEL_CONVENTIONS,
    STD_ACTIVATIONS,
    mixture_mean,
    mixture_std,
    propel_loss,
    propel_loss_pixelwise,
    split_mixture,
    std_from_raw,
)

__all__ = ["PROPELLoss"]

_REDUCTIONS = ("mean", "sum", "none")


class PROPELLoss(Loss):
    r"""PROPEL loss (Asad et al., ICPR 2020) of a Gaussian-mixture output against the target.

    The network outputs, per sample (or per pixel), an equally weighted mixture of :math:`K`
    Gaussians :math:`P_k = \mathcal{N}(\mu_k, \operatorname{diag}(s_k^2))`; the target ``x`` is
    turned into :math:`P_{gt} = \mathcal{N}(x, \sigma^2 I)` and

    .. math::

        L = \log_{10} \frac{H(P_{gt}) + \frac{1}{K^2}\sum_{i,j} G(P_i, P_j)}
        {\frac{2}{K} \sum_i G(P_{gt}, P_i)} \ge 0,

    with :math:`G(P, Q) = \int p q` and :math:`H(P) = G(P, P)`, computed in log space (see
    :func:`deepinv_icrf.functional.propel_loss`): finite where the official code returns
    ``inf``/``nan`` (distant targets, tiny or huge scales, large :math:`D`), and 0 exactly
    for a perfect fit.

    **Layouts** of ``x_net`` (told apart by its number of dimensions, see
    :func:`deepinv_icrf.functional.split_mixture`):

    - official ``(B, K, 2D)`` (means, then stds, on the last dimension), target ``x`` ``(B, D)``;
    - image ``(B, K, 2, C, *S)`` (dimension 2: means, stds), target ``(B, C, *S)``;
    - channel-stacked image ``(B, 2 K C, H, W)``, the output of a deepinv network whose last
      layer has ``2 K C`` channels, read as ``(B, K, 2, C, H, W)``; needs ``n_components``.

    In the image layouts every pixel and channel is a 1-D mixture (``joint_channels=False``)
    or every pixel a :math:`C`-dimensional one (``joint_channels=True``); the per-pixel losses
    are averaged (or summed) per sample.

    **Stds.** The std entries of ``x_net`` are raw network outputs mapped to positive values by
    ``std_activation``: ``"softplus"`` (default), :math:`s = \log(1 + e^r) + s_{\min}`;
    ``"exp"``, :math:`s = e^r + s_{\min}`; ``None``, taken as the stds themselves (used
    squared, so their sign does not matter, as in the official code).

    **Official numbers.** The official code squares ``sigma`` and the predicted stds and uses
    them as variances, which is what the formulas above do with stds; but its target
    self-overlap :math:`H(P_{gt})` is always one-dimensional, :math:`1/(2\sqrt{\pi}\sigma)`, so
    for :math:`D > 1` its :math:`T_2 - T_1` is not the squared error and its loss can be
    negative. ``convention="official"`` with ``std_activation=None`` reproduces it (to rounding,
    wherever the official value is finite and no epsilon clamp of the official code is
    active: it clamps densities' denominators at ``2.2e-16``). With :math:`D = 1` (every image
    layout with ``joint_channels=False``) both conventions agree.

    :param float, torch.Tensor sigma: std :math:`\sigma` of the target Gaussian (default 0.1,
        the official default), > 0: a float, a 0-dim tensor, or a 1-D tensor of size ``D``
        (official layout, or image layout with ``joint_channels=True``) or ``C`` (image layout,
        one scale per channel). Stored as the buffer ``sigma`` (float64 when given as a float,
        so that float64 inputs see it exactly; cast to the compute dtype at each call).
    :param str, None std_activation: ``"softplus"`` (default), ``"exp"`` or ``None``.
    :param float min_std: :math:`s_{\min}` added after the activation (default ``1e-6``, >= 0).
    :param str convention: ``"standard"`` (default) or ``"official"``.
    :param int, None n_components: :math:`K`; required for the channel-stacked layout, checked
        otherwise. Default ``None``.
    :param bool joint_channels: image layouts: one :math:`C`-dimensional mixture per pixel
        instead of one 1-D mixture per pixel and channel. Default ``False``.
    :param str reduction: over the pixels of the image layouts: ``"mean"`` (default), ``"sum"``,
        or ``"none"`` (the per-pixel map ``(B, C, *S)``, or ``(B, *S)`` with
        ``joint_channels``). The official layout always gives ``(B,)``.

    |sep|

    :Example:

    >>> import torch
    >>> loss = PROPELLoss(sigma=0.1, std_activation=None)
    >>> target = torch.tensor([[0.0, 1.0]])  # (B, D) = (1, 2)
    >>> x_net = torch.tensor([[[0.0, 1.0, 0.1, 0.1], [0.1, 1.1, 0.1, 0.1]]])  # (B, K, 2D)
    >>> loss(x_net=x_net, x=target)
    tensor([0.0502])
    >>> image = torch.zeros(2, 4, 2, 3, 13, 11)  # (B, K, 2, C, H, W), raw stds 0
    >>> PROPELLoss()(x_net=image, x=torch.zeros(2, 3, 13, 11)).shape
    torch.Size([2])
    """

    def __init__(
        self,
        sigma: float | Tensor = 0.1,
        std_activation: str | None = "softplus",
        min_std: float = 1e-6,
        convention: str = "standard",
        n_components: int | None = None,
        joint_channels: bool = False,
        reduction: str = "mean",
    ):
        super().__init__()
        check_in(std_activation, "std_activation", STD_ACTIVATIONS)
        check_in(convention, "convention", PROPEL_CONVENTIONS)
        check_in(joint_channels, "joint_channels", (True, False))
        check_in(reduction, "reduction", _REDUCTIONS)
        if isinstance(min_std, bool) or not isinstance(min_std, (int, float)):
            raise TypeError(
                f"Expected `min_std` to be a float, but got {type(min_std).__name__}."
            )
        if not math.isfinite(min_std) or min_std < 0:
            raise ValueError(
                f"Expected `min_std` to be finite and >= 0, but got {min_std!r}."
            )
        check_int(n_components, "n_components", 1, optional=True)
        if isinstance(sigma, Tensor):
            check_float(sigma, "sigma")
            if sigma.ndim > 1:
                raise ValueError(
                    "Expected `sigma` to be a float, a 0-dim or a 1-D tensor, but got shape "
                    f"{tuple(sigma.shape)}."
                )
            sigma = sigma.detach().clone()
        elif isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
            raise TypeError(
                "Expected `sigma` to be a float or a torch.Tensor, but got "
                f"{type(sigma).__name__}."
            )
        else:
            sigma = torch.tensor(float(sigma), dtype=torch.float64)  # full precision
        check_positive(sigma, "sigma")
        self.register_buffer("sigma", sigma)
        self.std_activation = std_activation
        self.min_std = float(min_std)
        self.convention = convention
        self.n_components = n_components
        self.joint_channels = joint_channels
        self.reduction = reduction

    def split(self, x_net: Tensor) -> tuple[Tensor, Tensor]:
        r"""Means and (mapped, positive) stds of the mixture, components on dimension 1.

        :param torch.Tensor x_net: network output in one of the layouts.
        :return: (tuple) ``(means, stds)``, each ``(B, K, D)`` or ``(B, K, C, *S)``.
        """
        means, raw = split_mixture(x_net, self.n_components)
        return means, std_from_raw(raw, self.std_activation, self.min_std)

    def mean(self, x_net: Tensor) -> Tensor:
        r"""Mixture mean, ``(B, D)`` or the image ``(B, C, *S)`` for deepinv metrics and plots.

        :param torch.Tensor x_net: network output in one of the layouts.
        :return: (:class:`torch.Tensor`) the mean of the equally weighted mixture.
        """
        return mixture_mean(x_net, self.n_components)

    def std(self, x_net: Tensor) -> Tensor:
        r"""Per-entry std of the mixture: the uncertainty map ``(B, C, *S)`` (or ``(B, D)``).

        :param torch.Tensor x_net: network output in one of the layouts.
        :return: (:class:`torch.Tensor`) std of the equally weighted mixture, per entry.
        """
        return mixture_std(x_net, self.std_activation, self.min_std, self.n_components)

    def forward(self, x_net: Tensor, x: Tensor, **kwargs) -> Tensor:
        r"""Compute the loss.

        :param torch.Tensor x_net: network output: ``(B, K, 2D)``, ``(B, K, 2, C, *S)`` or
            ``(B, 2 K C, H, W)``.
        :param torch.Tensor x: target, ``(B, D)`` or ``(B, C, *S)``.
        :return: (:class:`torch.Tensor`) ``(B,)`` (the per-pixel map with
            ``reduction="none"`` in the image layouts), float32 or float64.
        """
        if x is None:
            raise ValueError(
                "PROPELLoss is supervised: expected a target `x`, but got None (a dataset "
                "without ground truth)."
            )
        check_float(x, "x")
        means, stds = self.split(x_net)
        sigma = self.sigma
        if means.ndim == 3:  # official layout: (B, K, D) against (B, D)
            return propel_loss(means, stds, x, sigma, self.convention)
        expected = means.shape[:1] + means.shape[2:]
        if x.shape != expected:
            raise ValueError(
                f"Expected the target `x` to have shape {tuple(expected)} (B, C, *S) to match "
                f"`x_net` of shape {tuple(x_net.shape)}, but got shape {tuple(x.shape)}."
            )
        if sigma.ndim == 1:  # one scale per channel: (C,) -> (1, C, 1, ...) like x
            sigma = sigma.reshape(1, -1, *([1] * (x.ndim - 2)))
        if self.joint_channels:  # one C-dim mixture per pixel: D = C
            loss = propel_loss_pixelwise(means, stds, x, sigma, self.convention)
        else:  # one 1-D mixture per pixel and channel: D = 1
            loss = propel_loss_pixelwise(
                means.unsqueeze(2),
                stds.unsqueeze(2),
                x.unsqueeze(1),
                sigma.unsqueeze(0) if sigma.ndim > 0 else sigma,
                self.convention,
            )
        if self.reduction == "none":
            return loss
        flat = loss.reshape(loss.shape[0], -1)
        return flat.mean(1) if self.reduction == "mean" else flat.sum(1)
