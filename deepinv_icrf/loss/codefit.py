r"""Code-domain measurement consistency: the censored-Gaussian likelihood of an exposure stack."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from deepinv.loss import Loss
from torch import Tensor

from deepinv_icrf._checks import check_float, check_threshold, compute_dtype
from deepinv_icrf.bracket import check_bit_depth
from deepinv_icrf.functional.codefit import (
    censored_code_nll,
    code_inlier_mask,
    estimate_code_noise,
)

if TYPE_CHECKING:
    from deepinv.physics import Physics

__all__ = ["CodeDomainLoss"]


class CodeDomainLoss(Loss):
    r"""Censored-Gaussian likelihood of the observed codes given a radiance and the physics.

    deepinv's measurement consistency with the noise model of real codes: with the exposure
    physics :math:`A` (:class:`deepinv_icrf.physics.ExposureStack`, whose response may be a
    learnable :class:`deepinv_icrf.models.ICRF`), a radiance estimate :math:`\hat x` and the
    observed stack :math:`y`,

    .. math::

        \mathcal{L}(\hat x, y) = \frac{1}{NCHW} \sum_{k, c, h, w}
        \ell\big(y_{k,c,h,w},\, A(\hat x)_{k,c,h,w};\ \sigma_c\big)

    with :math:`\ell` the Tobit NLL of :func:`deepinv_icrf.functional.censored_code_nll`:
    Gaussian for codes inside the range, censored for the clipped codes 0 and
    :math:`2^b - 1`. Minimising it over the response and the radiance is the code-domain
    ICRF fit (:func:`deepinv_icrf.functional.fit_code_domain` does it fast for a stack);
    as a loss it trains a reconstruction network and the response jointly. Unbiased under
    code noise, unlike losses that linearise noisy codes.

    The noise level is ``sigma`` if given, else the physics' ``y_std`` (per pixel) when set,
    else estimated from ``y`` itself per sample and channel
    (:func:`deepinv_icrf.functional.estimate_code_noise`, without gradient).

    With ``outlier_threshold`` :math:`\tau`, codes that the prediction misses by more than
    :math:`\tau` robust stds of their sample, channel and level
    (:func:`deepinv_icrf.functional.code_inlier_mask`, the rule of the code fit: moving
    objects, misregistered edges) count 0 in the mean, decided again at every call without
    gradient.

    :param float, None sigma: code noise std :math:`> 0`; ``None`` (default) as above.
    :param int, None bit_depth: bits of the codes for the censoring thresholds (default 8;
        ``None``: continuous codes, censored only at exactly 0 and 1).
    :param float, None outlier_threshold: leave out codes missed by more than this many
        robust stds; ``None`` (default): every code counts.

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.loss import CodeDomainLoss
    >>> from deepinv_icrf.models import ICRF
    >>> from deepinv_icrf.physics import ExposureStack
    >>> icrf = ICRF(channels=1, init="gamma")
    >>> physics = ExposureStack(torch.tensor([0.5, 1.0, 2.0]), response=icrf)
    >>> x = torch.full((2, 1, 3, 4), 0.3)
    >>> y = physics.A(x).detach()
    >>> loss = CodeDomainLoss(sigma=0.01)
    >>> loss(x_net=x, y=y, physics=physics).shape
    torch.Size([2])
    """

    def __init__(
        self,
        sigma: float | None = None,
        bit_depth: int | None = 8,
        outlier_threshold: float | None = None,
    ) -> None:
        super().__init__()
        self.outlier_threshold = check_threshold(
            outlier_threshold, "outlier_threshold", optional=True
        )
        if sigma is not None:
            if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
                raise TypeError(
                    f"Expected `sigma` to be a float or None, but got {sigma!r}."
                )
            if not (math.isfinite(sigma) and sigma > 0):
                raise ValueError(f"Expected `sigma` > 0 and finite, but got {sigma!r}.")
        self.sigma = None if sigma is None else float(sigma)
        self.bit_depth = check_bit_depth(bit_depth)

    def forward(
        self, x_net: Tensor, y: Tensor, physics: Physics, **kwargs: Any
    ) -> Tensor:
        r"""Mean censored NLL per sample.

        :param torch.Tensor x_net: radiance estimate ``(B, C, H, W)``.
        :param torch.Tensor y: observed stack ``(B, N, C, H, W)`` in :math:`[0, 1]`.
        :param deepinv.physics.Physics physics: the exposure physics (its ``A`` maps the
            radiance to the noise-free stack).
        :return: (:class:`torch.Tensor`) shape ``(B,)``.
        """
        check_float(x_net, "x_net")
        check_float(y, "y")
        if y.ndim != 5 or x_net.ndim != 4:
            raise ValueError(
                "Expected `y` of shape (B, N, C, H, W) and `x_net` of shape (B, C, H, W), "
                f"but got {tuple(y.shape)} and {tuple(x_net.shape)}."
            )
        y_hat = physics.A(x_net)
        if y_hat.shape != y.shape:
            raise ValueError(
                f"Expected `physics.A(x_net)` to have the shape of `y` {tuple(y.shape)}, but "
                f"got {tuple(y_hat.shape)}."
            )
        dtype = compute_dtype(y, y_hat)
        sigma = self._sigma(y, physics)
        if isinstance(sigma, Tensor):
            sigma = sigma.to(device=y.device, dtype=dtype)
        nll = censored_code_nll(y.to(dtype), y_hat.to(dtype), sigma, self.bit_depth)
        if self.outlier_threshold is not None:
            nll = nll * self._inliers(y, y_hat, sigma)
        return nll.flatten(1).mean(dim=1)

    def _inliers(self, y: Tensor, y_hat: Tensor, sigma: float | Tensor) -> Tensor:
        r"""0/1 mask of ``y``'s shape: each sample and channel judged apart."""
        b, n, c, h, w = y.shape
        if isinstance(sigma, Tensor):  # (B, 1, C, 1, 1) estimate or per-pixel y_std
            full = (
                sigma.detach().expand(b, n, c, h, w).transpose(1, 2).reshape(b * c, -1)
            )
            sigma = full.median(dim=1).values
        mask = code_inlier_mask(
            y.transpose(1, 2).reshape(b * c, -1),
            y_hat.transpose(1, 2).reshape(b * c, -1),
            sigma,
            self.outlier_threshold,
            self.bit_depth,
        )
        return mask.view(b, c, n, h, w).transpose(1, 2)

    def _sigma(self, y: Tensor, physics: Physics) -> float | Tensor:
        if self.sigma is not None:
            return self.sigma
        y_std = getattr(physics, "y_std", None)
        if y_std is not None:
            return y_std.clamp_min(1e-6)
        est = estimate_code_noise(y, self.bit_depth)  # (B, C), no gradient
        return est.clamp_min(1e-4).view(y.shape[0], 1, y.shape[2], 1, 1)
