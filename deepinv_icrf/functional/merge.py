r"""Weighted merge of a linearised exposure stack into one HDR radiance map."""

from __future__ import annotations

import torch
from torch import Tensor

from deepinv_icrf._checks import check_float, check_in, check_tensor

__all__ = ["merge_weights", "weighted_radiance_merge"]

MERGE_WEIGHTS = ("hat", "gaussian")


def merge_weights(y: Tensor, kind: str = "hat") -> Tensor:
    r"""Per-code confidence weights of the HDR merge.

    .. math::

        w_{\text{hat}}(y) = 1 - |2y - 1|, \qquad
        w_{\text{gaussian}}(y) = \exp\left(-16\,(y - \tfrac12)^2\right)

    :param torch.Tensor y: codes in :math:`[0, 1]`, any shape.
    :param str kind: ``"hat"`` (default, Debevec's triangle) or ``"gaussian"``.
    :return: (:class:`torch.Tensor`) weights, shape of ``y``.

    :Example:

    >>> import torch
    >>> merge_weights(torch.tensor([0.0, 0.25, 0.5, 1.0]))
    tensor([0.0000, 0.5000, 1.0000, 0.0000])
    """
    check_in(kind, "weights", MERGE_WEIGHTS)
    if kind == "hat":
        return 1.0 - (2.0 * y - 1.0).abs()
    return torch.exp(-16.0 * (y - 0.5) ** 2)


def _times(exposure_times: Tensor, batch: int, n: int) -> Tensor:
    check_tensor(exposure_times, "exposure_times")
    t = exposure_times
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or t.shape[1] != n or t.shape[0] not in (1, batch):
        raise ValueError(
            f"Expected `exposure_times` to have shape ({n},) or ({batch}, {n}) to match the "
            f"stack, but got shape {tuple(exposure_times.shape)}."
        )
    return t.expand(batch, n)


def weighted_radiance_merge(
    y: Tensor,
    x_lin: Tensor,
    exposure_times: Tensor,
    weights: str | Tensor | None = None,
    lower: float = 1.0 / 255.0,
    upper: float = 254.0 / 255.0,
    eps: float = 1e-8,
) -> Tensor:
    r"""HDR radiance from a linearised exposure stack, by a weighted mean of :math:`x_k / t_k`.

    .. math::

        E = \frac{\sum_k w(y_k)\, m_k\, x_k / t_k}{\sum_k w(y_k)\, m_k},
        \qquad m_k = [\ell \le y_k \le u],

    per pixel and channel, where :math:`y_k` are the raw codes, :math:`x_k` the linearised
    values (e.g. ``ICRF(y)``) and :math:`t_k` the exposure times. Pixels with no valid
    exposure (weight sum :math:`\le` ``eps``) fall back to one exposure: the shortest one if
    it is saturated (:math:`y > u`; its :math:`x / t` is the best lower bound), else the
    longest one (black in every exposure, or black then saturated).

    :param torch.Tensor y: raw codes in :math:`[0, 1]`, shape ``(B, N, C, H, W)`` (any
        ``(B, N, ...)``).
    :param torch.Tensor x_lin: linearised stack, shape of ``y``.
    :param torch.Tensor exposure_times: exposure times in seconds, ``(B, N)`` or ``(N,)``,
        ``> 0``, any order (not checked here).
    :param str, torch.Tensor, None weights: ``"hat"`` (default when ``None``), ``"gaussian"``
        (see :func:`merge_weights`), or a non-negative tensor broadcastable to ``y`` (e.g.
        inverse variances).
    :param float lower: smallest valid code :math:`\ell` (inclusive). Default ``1/255``.
    :param float upper: largest valid code :math:`u` (inclusive). Default ``254/255``.
    :param float eps: smallest weight sum treated as valid. Default ``1e-8``.
    :return: (:class:`torch.Tensor`) radiance, shape ``(B, *y.shape[2:])``, float32 or
        float64.

    :Example:

    >>> import torch
    >>> t = torch.tensor([1.0, 2.0])
    >>> x = torch.tensor([0.2, 0.4]).view(1, 2, 1, 1, 1)
    >>> weighted_radiance_merge(x, x, t).flatten()
    tensor([0.2000])
    """
    check_float(y, "y")
    check_float(x_lin, "x_lin")
    if y.ndim < 3:
        raise ValueError(
            f"Expected `y` to have shape (B, N, C, H, W), but got shape {tuple(y.shape)}."
        )
    if x_lin.shape != y.shape:
        raise ValueError(
            f"Expected `x_lin` to have the shape of `y` {tuple(y.shape)}, but got shape "
            f"{tuple(x_lin.shape)}."
        )
    if not lower < upper:
        raise ValueError(
            f"Expected `lower` < `upper`, but got lower={lower} and upper={upper}."
        )
    dtype = torch.float64 if torch.float64 in (y.dtype, x_lin.dtype) else torch.float32
    batch, n = y.shape[:2]
    t = _times(exposure_times, batch, n).to(device=y.device, dtype=dtype)
    t_b = t.reshape(batch, n, *([1] * (y.ndim - 2)))
    yc = y.to(dtype)
    est = x_lin.to(dtype) / t_b

    if weights is None or isinstance(weights, str):
        w = merge_weights(yc, "hat" if weights is None else weights)
    else:
        check_float(weights, "weights")
        w = weights.to(dtype)
    w = w * ((yc >= lower) & (yc <= upper)).to(dtype)
    wsum = w.sum(dim=1)
    merged = (w * est).sum(dim=1) / wsum.clamp_min(eps)

    rest = [1] * (y.ndim - 2)
    i_short = t.argmin(dim=1).view(batch, 1, *rest).expand(batch, 1, *y.shape[2:])
    i_long = t.argmax(dim=1).view(batch, 1, *rest).expand(batch, 1, *y.shape[2:])
    short_sat = torch.gather(yc, 1, i_short).squeeze(1) > upper
    fallback = torch.where(
        short_sat,
        torch.gather(est, 1, i_short).squeeze(1),
        torch.gather(est, 1, i_long).squeeze(1),
    )
    return torch.where(wsum > eps, merged, fallback)
