r"""Radiometric linearity loss of a linearised exposure stack, as a deepinv loss."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deepinv.loss import Loss
from torch import Tensor, nn

from deepinv_icrf._checks import check_in, compute_dtype
from deepinv_icrf.functional.linearity import (
    _check_linearity_inputs,
    _check_options,
    _check_std_shape,
    _radiometric_linearity,
    propagate_std,
)
from deepinv_icrf.loss._utils import find_icrf

if TYPE_CHECKING:
    from deepinv.physics import Physics

__all__ = ["RadiometricLinearityLoss"]


class RadiometricLinearityLoss(Loss):
    r"""Radiometric linearity loss of an ICRF on exposure stacks (clair-torch).

    The measurement ``y`` is a raw exposure stack :math:`Y` ``(B, N, C, H, W)`` whose exposure
    times are ``physics.exposure_times`` (``(N,)``, ``(1, N)`` or ``(B, N)``, any order, set
    per batch with ``physics.update(exposure_times=...)``), and the network output ``x_net``
    is the linearised stack :math:`X = \mathrm{ICRF}(Y)`. For every channel,

    .. math::

        L_c = \sqrt{\sum_{p = (i, j)} m_{p, c}^2}, \qquad
        m_{p, c} = \frac{\sum w\, v\, d(X_i, r X_j)}{\max(\sum w\, v, 10^{-8})},

    over the exposure pairs with :math:`t_i < t_j` and :math:`r = t_i / t_j \geq`
    ``exposure_ratio_threshold``, the pixels :math:`v` valid in both raw images, the relative
    (or absolute) residual :math:`d` and the weights :math:`w = g(Y_i) + g(Y_j)
    [+ 1 / (\sigma + 10^{-6})]`; see :func:`deepinv_icrf.functional.radiometric_linearity`.
    The loss is :math:`\sum_c L_c` per sample (the total that clair-torch minimises with one
    optimizer), or the vector :math:`(L_c)_c` with ``per_channel=True``.

    Per-pixel standard deviations of the raw codes, from the ``y_std`` keyword or from
    ``physics.y_std`` when it exists and is not ``None``, are propagated through the ICRF,
    :math:`s_X = |\mathrm{ICRF}'(Y)|\, s_Y`, using the ICRF found in ``model`` (see
    :func:`deepinv_icrf.loss.find_icrf`). A ready ``x_std`` keyword is used as it is.

    :param bool relative: relative (``True``, default) or absolute residuals.
    :param bool use_uncertainty_weighting: add inverse-uncertainty weights when standard
        deviations are available. Default ``True``.
    :param float exposure_ratio_threshold: smallest accepted ratio :math:`t_i / t_j`, in
        ``[0, 1]``. Default ``0.1``.
    :param float lower: smallest valid raw code, inclusive. Default ``1/255``.
    :param float upper: largest valid raw code, inclusive. Default ``254/255``.
    :param float gaussian_scale: sharpness of the value weights :math:`g`. Default ``10.0``.
    :param bool per_channel: return ``(B, C)`` instead of the channel sum ``(B,)``. Default
        ``False``.
    :param bool detach_std: treat the propagated standard deviations as constants (no gradient
        through :math:`\mathrm{ICRF}'`), as clair-torch does. Default ``True``.

    |sep|

    :Examples:

    >>> import torch
    >>> from types import SimpleNamespace
    >>> t = torch.tensor([1.0, 2.0, 4.0])
    >>> x = torch.linspace(0.01, 0.2, 35).view(1, 1, 1, 5, 7) * t.view(1, 3, 1, 1, 1)
    >>> y = x ** (1 / 2.2)
    >>> loss = RadiometricLinearityLoss()
    >>> loss(x_net=y, y=y, physics=SimpleNamespace(exposure_times=t))
    tensor([1.3036])
    """

    def __init__(
        self,
        relative: bool = True,
        use_uncertainty_weighting: bool = True,
        exposure_ratio_threshold: float = 0.1,
        lower: float = 1 / 255,
        upper: float = 254 / 255,
        gaussian_scale: float = 10.0,
        per_channel: bool = False,
        detach_std: bool = True,
    ):
        super().__init__()
        check_in(relative, "relative", (True, False))
        check_in(use_uncertainty_weighting, "use_uncertainty_weighting", (True, False))
        check_in(per_channel, "per_channel", (True, False))
        check_in(detach_std, "detach_std", (True, False))
        _check_options(exposure_ratio_threshold, lower, upper, gaussian_scale)
        self.relative = relative
        self.use_uncertainty_weighting = use_uncertainty_weighting
        self.exposure_ratio_threshold = float(exposure_ratio_threshold)
        self.lower = float(lower)
        self.upper = float(upper)
        self.gaussian_scale = float(gaussian_scale)
        self.per_channel = per_channel
        self.detach_std = detach_std

    def forward(
        self,
        x_net: Tensor,
        y: Tensor,
        physics: Physics,
        model: nn.Module | None = None,
        y_std: Tensor | None = None,
        x_std: Tensor | None = None,
        **kwargs,
    ) -> Tensor:
        r"""Compute the loss.

        :param torch.Tensor x_net: linearised stack :math:`\mathrm{ICRF}(Y)`, ``(B, N, C, H, W)``.
        :param torch.Tensor y: raw exposure stack :math:`Y` in ``[0, 1]``, same shape.
        :param deepinv.physics.Physics physics: physics with an ``exposure_times`` attribute
            (``(N,)``, ``(1, N)`` or ``(B, N)``) and optionally ``y_std``.
        :param torch.nn.Module, None model: the model holding the ICRF, needed only to propagate
            ``y_std``. Default ``None``.
        :param torch.Tensor, None y_std: per-pixel std of ``y`` (overrides ``physics.y_std``),
            shape of ``y`` or broadcastable to it. Default ``None``.
        :param torch.Tensor, None x_std: per-pixel std of ``x_net``, used as given (overrides
            ``y_std``). Default ``None``.
        :return: (:class:`torch.Tensor`) shape ``(B,)``, or ``(B, C)`` with ``per_channel``.
        """
        times = getattr(physics, "exposure_times", None)
        if times is None:
            raise ValueError(
                "Expected `physics` to have an `exposure_times` tensor of shape (N,) or (B, N), "
                f"but {type(physics).__name__} has none."
            )
        _check_linearity_inputs(y, x_net, times, x_name="x_net")
        if x_std is not None:
            _check_std_shape(x_std, "x_std", y.shape)
        else:
            if y_std is None:
                y_std = getattr(physics, "y_std", None)
            if y_std is not None:
                _check_std_shape(y_std, "y_std", y.shape)
                x_std = self._propagate(y, y_std, model)
        value = _radiometric_linearity(
            y,
            x_net,
            times,
            x_std,
            self.exposure_ratio_threshold,
            self.lower,
            self.upper,
            self.relative,
            self.use_uncertainty_weighting,
            self.gaussian_scale,
        )
        return value if self.per_channel else value.sum(dim=-1)

    def _propagate(self, y: Tensor, y_std: Tensor, model: nn.Module | None) -> Tensor:
        icrf = find_icrf(model)
        if icrf is None:
            raise ValueError(
                "Expected `model` to hold an ICRF (a 2-D `curve` and a `derivative` method) "
                "to propagate `y_std`, but none was found; pass `x_std` instead."
            )
        channels = icrf.curve.shape[0]
        if channels != y.shape[2]:
            raise ValueError(
                f"Expected the ICRF `curve` to have {y.shape[2]} channels like `y` "
                f"{tuple(y.shape)}, but got {channels}."
            )
        slope = icrf.derivative(y.to(compute_dtype(y)))
        if self.detach_std:
            slope = slope.detach()
        return propagate_std(y_std, slope)
