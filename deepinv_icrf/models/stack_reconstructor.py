r"""Radiance from a (split) exposure stack: an ICRF, a weighted merge and a residual CNN."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from deepinv.models import Reconstructor
from torch import Tensor, nn

from deepinv_icrf._checks import check_float, check_in
from deepinv_icrf.functional.merge import merge_weights, weighted_radiance_merge

if TYPE_CHECKING:
    from deepinv.physics import Physics

__all__ = ["StackReconstructor", "stack_split_parts"]


def stack_split_parts(physics: object) -> tuple[Tensor, Tensor | None]:
    r"""The exposure times and the splitting mask of a (possibly split) exposure-stack physics.

    ``physics`` is an :class:`deepinv_icrf.physics.ExposureStack` (no mask: the whole stack is
    measured), or the split physics :math:`M_1 A` that
    :meth:`deepinv.loss.SplittingLoss.split` builds from one (a composition whose parts are an
    ``ExposureStack`` and a :class:`deepinv.physics.Inpainting` holding the mask), or any object
    with an ``exposure_times`` tensor and an optional ``mask``.

    :param object physics: the physics handed to the reconstructor.
    :return: (tuple) ``exposure_times`` (``(N,)`` or ``(B, N)``) and the mask (broadcastable
        to the stack) or ``None``.
    :raises ValueError: if no exposure times can be found.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv.loss.measplit import SplittingLoss
    >>> from deepinv_icrf.physics import ExposureStack
    >>> physics = ExposureStack(torch.tensor([1.0, 4.0]))
    >>> mask = torch.ones(1, 2, 3, 4, 5)
    >>> _, split = SplittingLoss.split(mask, torch.zeros(1, 2, 3, 4, 5), physics)
    >>> times, found = stack_split_parts(split)
    >>> times.tolist(), tuple(found.shape)
    ([1.0, 4.0], (1, 2, 3, 4, 5))
    """
    times = getattr(physics, "exposure_times", None)
    mask = getattr(physics, "mask", None)
    for part in getattr(physics, "physics_list", ()):
        part_times = getattr(part, "exposure_times", None)
        if part_times is not None:
            times = part_times
        elif isinstance(getattr(part, "mask", None), Tensor):
            mask = part.mask if mask is None else mask * part.mask
    if not isinstance(times, Tensor):
        raise ValueError(
            "Expected `physics` to be an ExposureStack (or a split of one) with an "
            f"`exposure_times` tensor, but {type(physics).__name__} has none."
        )
    return times, mask if isinstance(mask, Tensor) else None


class StackReconstructor(Reconstructor):
    r"""HDR radiance from an exposure stack, with the ICRF as part of the model.

    For a stack :math:`y` ``(B, N, C, H, W)``, exposure times :math:`t` and a mask :math:`M`
    of the entries that were measured (a splitting mask during self-supervised training, all
    ones otherwise), the stack is linearised by the ICRF :math:`g`, merged over the kept valid
    entries, and refined, in the log domain, by a residual CNN :math:`\phi`:

    .. math::

        w_k = h(y_k)\, M_k\, [\ell \le y_k \le u], \qquad
        \bar x = \frac{\sum_k w_k\, g(y_k) / t_k}{\sum_k w_k}, \qquad
        \hat x = \exp\Big(\log \bar x + \phi\big(\log \bar x, \textstyle\sum_k w_k,
        [\sum_k w_k > 0]\big)\Big),

    with :math:`h` the hat weights of :func:`deepinv_icrf.functional.merge_weights` and
    :math:`\bar x` clamped to :math:`10^{-6}` in the logarithm. A pixel with no kept valid
    entry gets, in :math:`\bar x`, the largest kept :math:`g(y_k) / t_k` (the best lower bound
    when it is saturated). The CNN sees the merged radiance and its confidence only (not which
    exposure is missing), so what it learns from split stacks applies to whole ones; working
    in the log domain makes its corrections relative, the same at every brightness. The last
    layer of :math:`\phi` starts at zero: the untrained model is the weighted merge.

    The ICRF is a child module (``.icrf``, found by :func:`deepinv_icrf.loss.find_icrf`), so a
    single :class:`deepinv.Trainer` run can fit it with the ICRF losses next to a
    reconstruction loss. With ``detach_icrf=True`` (default) the reconstruction path does not
    backpropagate into the ICRF: the curve is then learned only by the losses that read it
    (e.g. :class:`deepinv_icrf.loss.RadiometricLinearityLoss` through
    :class:`deepinv_icrf.loss.LinearizedStackLoss`, the curve penalties, or a prediction loss
    whose physics uses the ICRF as its response).

    :param torch.nn.Module icrf: the ICRF (e.g. :class:`deepinv_icrf.models.ICRF`), mapping
        codes ``(B, N, C, H, W)`` to irradiance.
    :param int n_exposures: number of exposures :math:`N \ge 1`.
    :param int channels: number of colour channels :math:`C \ge 1`. Default 3.
    :param torch.nn.Module, None backbone: :math:`\phi`, a module mapping
        ``(B, 3 C, H, W)`` to ``(B, C, H, W)``; default ``None``: a plain CNN of
        ``depth`` 3x3 convolutions with ``features`` channels and ReLUs.
    :param int features: hidden channels of the default backbone. Default 32.
    :param int depth: convolutions of the default backbone, ``>= 2``. Default 4.
    :param bool detach_icrf: stop gradients from the reconstruction into the ICRF. Default
        ``True``.
    :param float lower: smallest valid code, inclusive. Default ``0.05`` (a few noise stds
        above black: codes that noise may have clipped are not used).
    :param float upper: largest valid code, inclusive. Default ``0.95``.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.models import ICRF, StackReconstructor
    >>> from deepinv_icrf.physics import ExposureStack
    >>> physics = ExposureStack(torch.tensor([1.0, 4.0]), response="srgb")
    >>> model = StackReconstructor(ICRF.from_response("srgb"), n_exposures=2)
    >>> x = torch.full((1, 3, 5, 4), 0.1)
    >>> x_hat = model(physics(x), physics)  # untrained: the weighted merge
    >>> tuple(x_hat.shape), round(float(x_hat.mean()), 3)
    ((1, 3, 5, 4), 0.1)
    """

    def __init__(
        self,
        icrf: nn.Module,
        n_exposures: int,
        channels: int = 3,
        backbone: nn.Module | None = None,
        features: int = 32,
        depth: int = 4,
        detach_icrf: bool = True,
        lower: float = 0.05,
        upper: float = 0.95,
    ) -> None:
        super().__init__()
        if not isinstance(icrf, nn.Module):
            raise TypeError(
                f"Expected `icrf` to be an nn.Module, but got {type(icrf).__name__}."
            )
        for name, value, low in (
            ("n_exposures", n_exposures, 1),
            ("channels", channels, 1),
            ("features", features, 1),
            ("depth", depth, 2),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(
                    f"Expected `{name}` to be an int >= {low}, but got {value!r}."
                )
        check_in(detach_icrf, "detach_icrf", (True, False))
        if not 0.0 <= lower < upper <= 1.0:
            raise ValueError(
                f"Expected 0 <= `lower` < `upper` <= 1, but got lower={lower} and "
                f"upper={upper}."
            )
        self.icrf = icrf
        self.n_exposures = n_exposures
        self.channels = channels
        self.detach_icrf = detach_icrf
        self.lower = float(lower)
        self.upper = float(upper)
        self.eps = 1e-6
        if backbone is None:
            c_in = 3 * channels
            layers: list[nn.Module] = [nn.Conv2d(c_in, features, 3, padding=1)]
            for _ in range(depth - 2):
                layers += [nn.ReLU(), nn.Conv2d(features, features, 3, padding=1)]
            layers += [nn.ReLU(), nn.Conv2d(features, channels, 3, padding=1)]
            nn.init.zeros_(layers[-1].weight)
            nn.init.zeros_(layers[-1].bias)
            backbone = nn.Sequential(*layers)
        elif not isinstance(backbone, nn.Module):
            raise TypeError(
                f"Expected `backbone` to be an nn.Module or None, but got "
                f"{type(backbone).__name__}."
            )
        self.backbone = backbone

    def forward(self, y: Tensor, physics: Physics, **kwargs: Any) -> Tensor:
        r"""Reconstruct the radiance.

        :param torch.Tensor y: (split) stack ``(B, N, C, H, W)``, codes in :math:`[0, 1]`.
        :param deepinv.physics.Physics physics: an ``ExposureStack`` or a split of one (see
            :func:`stack_split_parts`).
        :return: (:class:`torch.Tensor`) radiance ``(B, C, H, W)``.
        """
        check_float(y, "y")
        if y.ndim != 5 or y.shape[1:3] != (self.n_exposures, self.channels):
            raise ValueError(
                f"Expected `y` to have shape (B, {self.n_exposures}, {self.channels}, H, W), "
                f"but got shape {tuple(y.shape)}."
            )
        times, mask = stack_split_parts(physics)
        batch, n = y.shape[:2]
        t = times.to(device=y.device, dtype=y.dtype)
        t = t.reshape(-1, n).expand(batch, n)
        if mask is None:
            mask = torch.ones_like(y)
        else:
            mask = mask.to(device=y.device, dtype=y.dtype).expand_as(y)
        x_lin = self.icrf(y)
        if self.detach_icrf:
            x_lin = x_lin.detach()
        valid = (y >= self.lower) & (y <= self.upper)
        weights = merge_weights(y) * mask * valid.to(y.dtype)
        merged = weighted_radiance_merge(
            y, x_lin, t, weights=weights, lower=self.lower, upper=self.upper
        )
        bound = (x_lin / t.view(batch, n, 1, 1, 1) * mask).amax(dim=1)
        wsum = weights.sum(dim=1)
        merged = torch.where(wsum > 0, merged, bound.to(merged.dtype)).to(y.dtype)
        log_merged = torch.log(merged.clamp_min(self.eps))
        wsum = wsum.to(merged.dtype)
        feats = torch.cat([log_merged, wsum, (wsum > 0).to(merged.dtype)], dim=1)
        return torch.exp(log_merged + self.backbone(feats))
