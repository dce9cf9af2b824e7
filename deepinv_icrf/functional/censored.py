r"""The censored-Gaussian (Tobit) likelihood of observed codes, and the code noise.

A code strictly inside the range is a Gaussian observation of the noise-free code; the clipped
codes 0 and :math:`2^b - 1` are *censored*: they only say that the noisy code lay below
:math:`q / 2` or above :math:`1 - q / 2` (:math:`q = 1 / (2^b - 1)`). The code-domain fit
(:mod:`deepinv_icrf.functional.codefit`) minimises this likelihood; its noise level starts from
:func:`estimate_code_noise`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

from deepinv_icrf._checks import check_float, check_shape, compute_dtype
from deepinv_icrf.bracket import check_bit_depth

__all__ = ["censored_code_nll", "estimate_code_noise"]

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _quantum(bit_depth: int | None) -> float:
    r"""One code step :math:`q = 1 / (2^b - 1)` (0 for continuous values)."""
    bits = check_bit_depth(bit_depth)
    return 0.0 if bits is None else 1.0 / (2.0**bits - 1.0)


def _censoring(y: Tensor, q: float) -> tuple[Tensor, Tensor]:
    r"""Masks of the codes clipped at the bottom (:math:`y \le q/2`) and top (:math:`y \ge 1 - q/2`)."""
    return y <= 0.5 * q, y >= 1.0 - 0.5 * q


def _censored_terms(
    z: Tensor, with_derivatives: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    r"""``-log Phi(z)`` and, optionally, its first two derivatives in ``z``:
    :math:`-\lambda` and :math:`\lambda (z + \lambda)` with :math:`\lambda = \phi / \Phi`.
    """
    log_cdf = torch.special.log_ndtr(z)
    if not with_derivatives:
        return -log_cdf, None, None
    mills = torch.exp(-0.5 * z * z - _HALF_LOG_2PI - log_cdf)
    return -log_cdf, -mills, mills * (z + mills)


def censored_code_nll(
    y: Tensor,
    y_hat: Tensor,
    sigma: float | Tensor,
    bit_depth: int | None = 8,
) -> Tensor:
    r"""Censored-Gaussian (Tobit) negative log-likelihood of observed codes, elementwise.

    With :math:`q = 1 / (2^b - 1)`, :math:`r = (\hat y - y) / \sigma` and :math:`\Phi` the
    standard normal CDF,

    .. math::

        \ell(y, \hat y) = \begin{cases}
            -\log \Phi\big((q/2 - \hat y) / \sigma\big) & y \le q / 2 \text{ (clipped at 0)} \\
            -\log \Phi\big((\hat y - 1 + q/2) / \sigma\big) & y \ge 1 - q / 2
                \text{ (clipped at 1)} \\
            \tfrac12 r^2 & \text{otherwise,}
        \end{cases}

    the negative log-likelihood of :math:`y = \eta(\hat y + \varepsilon)`,
    :math:`\varepsilon \sim \mathcal{N}(0, \sigma^2)`, up to the constant
    :math:`\log \sigma + \frac12 \log 2\pi` of the uncensored codes. Differentiable in
    ``y_hat`` (and ``sigma``); computed in a stable way (``log_ndtr``).

    :param torch.Tensor y: observed codes in :math:`[0, 1]`, any shape.
    :param torch.Tensor y_hat: predicted noise-free codes, broadcastable with ``y``.
    :param float, torch.Tensor sigma: noise standard deviation :math:`> 0`, broadcastable.
    :param int, None bit_depth: bits :math:`b` of the codes (default 8); ``None``: continuous
        values, censored only at exactly 0 and 1.
    :return: (:class:`torch.Tensor`) the elementwise NLL, broadcast shape, float32 or float64.

    |sep|

    :Example:

    >>> import torch
    >>> y = torch.tensor([0.0, 0.5, 1.0])
    >>> censored_code_nll(y, torch.tensor([0.0, 0.52, 1.0]), 0.01)
    tensor([0.5487, 2.0000, 0.5487])
    """
    check_float(y, "y")
    check_float(y_hat, "y_hat")
    q = _quantum(bit_depth)
    if not isinstance(sigma, Tensor):
        if not (math.isfinite(sigma) and sigma > 0):
            raise ValueError(
                f"Expected `sigma` to be finite and > 0, but got {sigma!r}."
            )
        sigma = torch.tensor(sigma)
    dtype = compute_dtype(y, y_hat, sigma)
    y, y_hat = y.to(dtype), y_hat.to(dtype)
    sigma = sigma.to(device=y_hat.device, dtype=dtype)
    low, high = _censoring(y, q)
    r = (y_hat - y) / sigma
    z = torch.where(high, y_hat - (1.0 - 0.5 * q), 0.5 * q - y_hat) / sigma
    censored, _, _ = _censored_terms(z, with_derivatives=False)
    return torch.where(low | high, censored, 0.5 * r * r)


def _nll_derivatives(
    y_in: Tensor,
    y_hat: Tensor,
    inv_sigma: Tensor,
    censored_index: Tensor,
    censored_threshold: Tensor,
    censored_sign: Tensor,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""NLL of the censored codes and the first/second derivatives in ``y_hat`` of every term.

    ``y_in`` holds the observed codes with the censored ones set to anything (they are
    overwritten); ``censored_index`` flat indices of the censored codes, with their threshold
    (:math:`q/2` or :math:`1 - q/2`) and sign (:math:`-1` bottom, :math:`+1` top). The terms
    are those of :func:`censored_code_nll`: :math:`z = \pm(\hat y - \text{thr}) / \sigma`.
    """
    inv2 = inv_sigma * inv_sigma
    d1 = (y_hat - y_in) * inv2
    d2 = inv2.expand_as(d1).contiguous()
    inv_c = inv_sigma.expand_as(y_hat).reshape(-1).index_select(0, censored_index)
    y_c = y_hat.reshape(-1).index_select(0, censored_index)
    z = censored_sign * (y_c - censored_threshold) * inv_c
    nll, g1, g2 = _censored_terms(z, with_derivatives=True)
    d1.view(-1).index_copy_(0, censored_index, g1 * censored_sign * inv_c)
    d2.view(-1).index_copy_(0, censored_index, g2 * inv_c * inv_c)
    return nll, d1, d2


def estimate_code_noise(y: Tensor, bit_depth: int | None = 8) -> Tensor:
    r"""Noise standard deviation of the codes, estimated from the images themselves.

    Immerkær's estimator: the :math:`3 \times 3` kernel
    :math:`M = [1, -2, 1]^\top [1, -2, 1]` cancels locally linear image content, and for
    Gaussian noise :math:`E|M * y| = 6 \sigma \sqrt{2 / \pi}`, so

    .. math::

        \hat\sigma = \sqrt{\frac{\pi}{2}}\, \frac{1}{6 |\Omega|} \sum_{\Omega} |(M * y)|

    over the set :math:`\Omega` of pixels whose whole neighbourhood is unclipped (codes
    strictly between 0 and 1), pooled over the exposures of each channel. Textured scenes
    bias it upwards; :func:`fit_code_domain` refines the level from its residuals.

    :param torch.Tensor y: stack ``(B, N, C, H, W)`` (or images ``(B, C, H, W)``), in
        :math:`[0, 1]`, ``H, W >= 3``.
    :param int, None bit_depth: bits of the codes (default 8), for the clipping thresholds.
    :return: (:class:`torch.Tensor`) :math:`\hat\sigma` per sample and channel ``(B, C)``;
        0 where no pixel qualifies.

    |sep|

    :Example:

    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> y = 0.5 + 0.02 * torch.randn(1, 4, 1, 64, 64, generator=g)
    >>> round(float(estimate_code_noise(y, bit_depth=None)), 3)
    0.02
    """
    check_float(y, "y")
    if y.ndim == 4:
        y = y.unsqueeze(1)
    sizes = check_shape(y, "y", ["B", "N", "C", "H", "W"])
    if sizes["H"] < 3 or sizes["W"] < 3:
        raise ValueError(
            f"Expected `y` with H, W >= 3, but got shape {tuple(y.shape)}."
        )
    q = _quantum(bit_depth)
    dtype = compute_dtype(y)
    b, n, c, h, w = y.shape
    with torch.no_grad():
        flat = y.detach().to(dtype).reshape(b * n * c, 1, h, w)
        row = torch.tensor([1.0, -2.0, 1.0], dtype=dtype, device=y.device)
        kernel = (row[:, None] * row[None, :]).view(1, 1, 3, 3)
        response = F.conv2d(flat, kernel).abs()
        low, high = _censoring(flat, q)
        clipped = (low | high).to(dtype)
        ok = F.max_pool2d(clipped, 3, stride=1) == 0
        total = (response * ok).reshape(b, n, c, -1).sum(dim=(1, 3))
        count = ok.reshape(b, n, c, -1).sum(dim=(1, 3)).to(dtype)
        scale = math.sqrt(math.pi / 2.0) / 6.0
        return torch.where(count > 0, scale * total / count.clamp_min(1.0), 0.0)
