r"""Tone mapping: an HDR radiance map compressed to display values in ``[0, 1]``."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["TONEMAP_METHODS", "tonemap_radiance"]

#: The operators of :func:`tonemap_radiance`.
TONEMAP_METHODS = ("reinhard", "gamma")


def tonemap_radiance(
    e: Tensor,
    method: str = "reinhard",
    key: float = 0.18,
    gamma: float = 2.2,
    percentile: float = 99.0,
) -> Tensor:
    r"""Compress radiance ``e`` ``(..., C, H, W)`` (finite, ``>= 0``) to ``[0, 1]``.

    ``"reinhard"`` (global operator): with luminance :math:`L` (Rec. 709 weights for 3
    channels, the mean otherwise) and its log-average :math:`\bar L`,

    .. math::

        L_m = \frac{a}{\bar L} L, \qquad L_d = \frac{L_m}{1 + L_m}, \qquad
        \text{out} = \left(\frac{L_d}{L}\, E\right)^{1/\gamma}

    ``"gamma"``: :math:`\text{out} = \mathrm{clip}(E / E_{p}, 0, 1)^{1/\gamma}` with
    :math:`E_p` the ``percentile`` of :math:`E` per image.

    Inputs are trusted (:func:`deepinv_icrf.hdr.tonemap` checks them); the only full-size
    temporary is the result, in ``e``'s dtype.

    :param torch.Tensor e: radiance ``(..., C, H, W)``.
    :param str method: ``"reinhard"`` (default) or ``"gamma"``.
    :param float key: Reinhard's key value :math:`a` (default 0.18).
    :param float gamma: display gamma :math:`\gamma` (default 2.2).
    :param float percentile: percentile mapped to white by ``"gamma"`` (default 99).
    :return: (:class:`torch.Tensor`) display values in ``[0, 1]``, the shape of ``e``.

    |sep|

    :Example:

    >>> import torch
    >>> out = tonemap_radiance(torch.tensor([0.01, 1.0, 100.0]).view(1, 1, 3), "gamma")
    >>> [round(v, 3) for v in out.flatten().tolist()]
    [0.015, 0.123, 1.0]
    """
    tiny = 1e-12
    if method == "reinhard":
        if e.shape[-3] == 3:
            lum = e[..., 0:1, :, :] * 0.2126
            lum.add_(e[..., 1:2, :, :] * 0.7152).add_(e[..., 2:3, :, :] * 0.0722)
        else:
            lum = e.mean(dim=-3, keepdim=True)
        log_avg = torch.exp(torch.log(lum + tiny).mean(dim=(-3, -2, -1), keepdim=True))
        lm = key / log_avg * lum
        ratio = lm.div_(lm + 1.0).div_(lum.add_(tiny))  # L_d / L
        out = e * ratio
    else:
        flat = e.reshape(*e.shape[:-3], -1)
        k = max(1, min(flat.shape[-1], math.ceil(percentile / 100.0 * flat.shape[-1])))
        white = flat.kthvalue(k, dim=-1).values.clamp_min(tiny)
        out = e / white.reshape(*white.shape, 1, 1, 1)
    return out.clamp_(0.0, 1.0).pow_(1.0 / gamma)
