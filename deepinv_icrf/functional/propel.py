r"""PROPEL: the probabilistic parametric regression loss for Gaussian mixtures, in log space.

A model outputs, per sample, an equally weighted mixture of :math:`K` Gaussians with diagonal
covariances, :math:`P_k = \mathcal{N}(\mu_k, \operatorname{diag}(s_k^2))` in :math:`D`
dimensions; the target is the Gaussian :math:`P_{gt} = \mathcal{N}(x, \sigma^2 I)` centred on the
ground truth :math:`x`. With the overlap integral :math:`G(P, Q) = \int p\, q` and the
self-overlap :math:`H(P) = G(P, P)` (Asad et al., ICPR 2020):

.. math::

    G(P_i, P_j) = \frac{\exp\Big(-\sum_d \frac{(\mu_{id} - \mu_{jd})^2}{2 (s_{id}^2 + s_{jd}^2)}\Big)}
    {(2\pi)^{D/2} \prod_d \sqrt{s_{id}^2 + s_{jd}^2}}, \qquad
    H(P_i) = \frac{1}{(2\sqrt{\pi})^{D} \prod_d s_{id}},

.. math::

    T_1 = \frac{2}{K} \sum_i G(P_{gt}, P_i), \qquad
    T_2 = H(P_{gt}) + \frac{1}{K^2} \sum_i H(P_i) + \frac{2}{K^2} \sum_{i<j} G(P_i, P_j),
    \qquad L = \log_{10} \frac{T_2}{T_1}.

:math:`T_2 - T_1 = \int (p_{gt} - \frac{1}{K}\sum_k p_k)^2 \ge 0` is the integrated squared
error, so :math:`L \ge 0` with equality only for a perfect fit.

**How it is computed.** Every term is a log-overlap relative to :math:`H(P_{gt})`, in units of
:math:`\sigma`: with :math:`r_k = s_k / \sigma`, :math:`\alpha_k = r_k^2 / 2` and
:math:`\beta_k = (\mu_k - x) / (\sqrt{2}\sigma)` (per dimension; the target has
:math:`\alpha = 1/2`, :math:`\beta = 0`),

.. math::

    \log \frac{G(P_i, P_j)}{H(P_{gt})} = -\frac{1}{2} \sum_d \Big[\log(\alpha_{id} + \alpha_{jd})
    + \frac{(\beta_{id} - \beta_{jd})^2}{\alpha_{id} + \alpha_{jd}}\Big], \qquad
    \log \frac{H(P_k)}{H(P_{gt})} = -\sum_d \log r_{kd}.

With :math:`A_1` the log-mean-exp of the :math:`K` target terms and :math:`A_2` the
log-mean-exp of the :math:`K^2` terms of :math:`T_2` (the :math:`K` self-overlaps and the
:math:`K(K-1)/2` pairs :math:`i < j` counted twice),

.. math::

    \ln 10 \cdot L = \log\frac{1 + e^{A_2}}{2} - A_1,

which has no overflow or underflow for distant targets, tiny or huge scales and large
:math:`D`, is exactly 0 for a perfect fit and accurate near it. Rounding can still leave a
near-perfect fit a few ulps below 0: the standard loss is clamped at 0 (see
:func:`propel_loss`).

The work is laid out as ``(L, K, D, M)`` with the independent mixtures on the last
(contiguous) dimension: component pairs are gathered as whole slabs from index tensors cached
per :math:`(K, \text{device})` (no Python loop, no index list built per call), sums over
:math:`D` and :math:`K` run over outer dimensions, and :math:`A_1, A_2` come out of one
:class:`torch.autograd.Function` with a hand-written backward (first order) that keeps two
pair-sized buffers instead of autograd's dozen. The image layouts
(:func:`propel_loss_pixelwise`) are that layout already, without a copy.

**Official code.** The official implementation passes ``sigma ** 2`` and the squared
predicted stds where its :math:`G`/:math:`H` formulas take variances: numerically the
formulas above. It differs in three ways: its target self-overlap :math:`H(P_{gt})` is always
evaluated as if :math:`D = 1` (its ``sigma`` tensor has shape ``(1, 1, 1)``, so
:math:`H(P_{gt}) = 1 / (2\sqrt{\pi}\sigma)` whatever :math:`D`; for :math:`D > 1` its
:math:`T_2 - T_1` is then not the squared error and :math:`L` can be negative); it clamps every
denominator at the float64 machine epsilon (values there are wrong, not only clamped); and it
computes :math:`T_1` and :math:`T_2` directly, which underflow to 0 (``inf``/``nan`` loss) for
distant targets, small scales or large :math:`D`. ``convention="official"`` reproduces the
first difference, so it gives the official numbers wherever those are finite and unclamped.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

from deepinv_icrf._checks import (
    check_float,
    check_in,
    check_int,
    check_shape,
    compute_dtype,
)

__all__ = [
    "PROPEL_CONVENTIONS",
    "STD_ACTIVATIONS",
    "propel_log_overlap",
    "propel_log_self_overlap",
    "propel_log_t1",
    "propel_log_t2",
    "propel_loss",
    "propel_loss_pixelwise",
    "std_from_raw",
    "split_mixture",
    "mixture_mean",
    "mixture_std",
]

PROPEL_CONVENTIONS = ("standard", "official")
STD_ACTIVATIONS = ("softplus", "exp", None)

_LOG_2_SQRT_PI = math.log(2.0 * math.sqrt(math.pi))
_LN2 = math.log(2.0)
_LN10 = math.log(10.0)
_SQRT2 = math.sqrt(2.0)


@functools.lru_cache(maxsize=256)
def _pair_indices(k: int, device: torch.device) -> tuple[Tensor, Tensor]:
    r"""Indices ``(i, j)`` of the ``K (K - 1) / 2`` pairs ``i < j``, cached per ``(K, device)``."""
    # Built outside inference mode: cached tensors are reused by later calls under autograd.
    with torch.inference_mode(False):
        index_i, index_j = torch.triu_indices(k, k, offset=1, device=device)
    return index_i, index_j


def _shift(x: Tensor, other: Tensor | None = None) -> Tensor:
    r"""Max over dim 1 (and ``other``), clamped finite so that ``x - shift`` is never NaN."""
    shift = x.amax(1, keepdim=True)
    if other is not None:
        shift = torch.maximum(shift, other.amax(1, keepdim=True))
    big = torch.finfo(x.dtype).max
    return shift.clamp_(-big, big)


def _softmax_parts(
    x: Tensor, shift: Tensor, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    r"""``(scale * exp(x - shift), its sum over dim 1)``, the pieces of a log-sum-exp."""
    e = torch.exp(x - shift)
    if scale != 1.0:
        e.mul_(scale)
    return e, e.sum(1)


class _RelativeLogMeans(torch.autograd.Function):
    r""":math:`(A_1, A_2)` of the module docstring from :math:`r = s/\sigma` and :math:`\beta`.

    Inputs ``ratio, beta`` of shape ``(L, K, D, M)``; outputs two ``(L, M)`` tensors. The
    log-mean-exps are shifted by their maximum, so a sum of equal terms gives exactly 0.
    """

    @staticmethod
    def forward(ctx, ratio: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
        k = ratio.shape[1]
        alpha = ratio.square().mul_(0.5)
        # target terms: the reference Gaussian has alpha = 1/2, beta = 0
        inv_u1 = alpha.add(0.5)
        t1 = torch.log(inv_u1).sum(2)
        inv_u1.reciprocal_()
        q1 = beta * inv_u1  # beta / u
        t1.add_((beta * q1).sum(2)).mul_(-0.5)
        log_h = torch.log(ratio.abs()).sum(2).neg_()  # log H(P_k) / H(P_gt)
        shift1 = _shift(t1)
        w1, s1 = _softmax_parts(t1, shift1)
        log_mean_t1 = shift1.squeeze(1) + torch.log(s1 / k)
        w1.div_(s1.unsqueeze(1))  # d A1 / d t1
        inv_u = ratio_pair = cross = None
        if k > 1:
            index_i, index_j = _pair_indices(k, ratio.device)
            inv_u = alpha.index_select(1, index_i)
            inv_u.add_(alpha.index_select(1, index_j))
            diff = beta.index_select(1, index_i)
            diff.sub_(beta.index_select(1, index_j))
            cross = torch.log(inv_u).sum(2)
            inv_u.reciprocal_()
            ratio_pair = diff * inv_u  # (beta_i - beta_j) / u
            cross.add_(diff.mul_(ratio_pair).sum(2)).mul_(-0.5)
        shift2 = _shift(log_h, cross)
        wh, s2 = _softmax_parts(log_h, shift2)
        wc = None
        if k > 1:
            wc, s_cross = _softmax_parts(cross, shift2, 2.0)
            s2 = s2 + s_cross
            wc.div_(s2.unsqueeze(1))  # d A2 / d cross
        log_mean_t2 = shift2.squeeze(1) + torch.log(s2 / (k * k))
        wh.div_(s2.unsqueeze(1))  # d A2 / d log H(P_k)
        ctx.save_for_backward(ratio, inv_u1, q1, w1, wh, wc, inv_u, ratio_pair)
        return log_mean_t1, log_mean_t2

    @staticmethod
    @once_differentiable
    def backward(ctx, grad1: Tensor, grad2: Tensor) -> tuple[Tensor | None, ...]:
        ratio, inv_u1, q1, w1, wh, wc, inv_u, ratio_pair = ctx.saved_tensors
        k = ratio.shape[1]
        g1 = (w1 * grad1.unsqueeze(1)).unsqueeze(2)  # (L, K, 1, M)
        # d t1 / d beta = -beta / u, d t1 / d alpha = -1/2 (1/u - beta^2 / u^2)
        grad_beta = (q1 * g1).neg_()
        grad_alpha = torch.square(q1).sub_(inv_u1).mul_(g1).mul_(0.5)
        if k > 1:
            index_i, index_j = _pair_indices(k, ratio.device)
            gc = (wc * grad2.unsqueeze(1)).unsqueeze(2)  # (L, P, 1, M)
            w = ratio_pair * gc
            grad_beta.index_add_(1, index_i, w, alpha=-1.0).index_add_(1, index_j, w)
            torch.square(ratio_pair, out=w).sub_(inv_u).mul_(gc).mul_(0.5)
            grad_alpha.index_add_(1, index_i, w).index_add_(1, index_j, w)
        # alpha = r^2 / 2 and log H(P_k) / H(P_gt) = -sum log |r|
        gh = (wh * grad2.unsqueeze(1)).unsqueeze(2)
        grad_ratio = grad_alpha.mul_(ratio).sub_(gh / ratio)
        return grad_ratio, grad_beta


def _relative_log_means(
    means: Tensor, stds: Tensor, center: Tensor, sigma: Tensor
) -> tuple[Tensor, Tensor]:
    r"""``(A_1, A_2)`` for means/stds ``(L, K, D, M)``, center ``(L, D, M)``, both ``(L, M)``.

    ``sigma`` is 0-dim or broadcastable to ``(L, D, M)``. Divisions (not products by
    reciprocals) keep a perfect fit exact: ``s / sigma = 1``.
    """
    sig = sigma.unsqueeze(1) if sigma.ndim > 0 else sigma
    ratio = stds / sig
    beta = (means - center.unsqueeze(1)) / (sig * _SQRT2)
    return _RelativeLogMeans.apply(ratio.contiguous(), beta.contiguous())


def _log_half_one_plus_exp(a: Tensor) -> Tensor:
    r""":math:`\log((1 + e^a) / 2)`, accurate near :math:`a = 0` (exactly 0 there) and for large a."""
    small = a.clamp_max(0.5)
    large = a.clamp_min(0.5)
    return torch.where(
        a <= 0.5, torch.log1p(0.5 * torch.expm1(small)), F.softplus(large) - _LN2
    )


def _combine(
    log_mean_t1: Tensor, log_mean_t2: Tensor, sigma: Tensor, d: int, convention: str
) -> Tensor:
    r"""The loss from :math:`A_1, A_2`; ``sigma`` broadcastable to their shape (official)."""
    if convention == "standard":
        return (_log_half_one_plus_exp(log_mean_t2) - log_mean_t1).clamp_min(
            0.0
        ) / _LN10
    # official: H(P_gt) in T2 is one-dimensional, (2 sqrt(pi) sigma)^(D - 1) times the D-dim one
    offset = (d - 1) * (_LOG_2_SQRT_PI + torch.log(sigma))
    offset = offset.expand_as(log_mean_t2)
    return (torch.logaddexp(offset, log_mean_t2) - _LN2 - log_mean_t1) / _LN10


def _as_sigma(sigma: float | Tensor, like: Tensor, dtype: torch.dtype) -> Tensor:
    r"""``sigma`` as a tensor of ``dtype`` on ``like``'s device (floats checked > 0 here)."""
    if isinstance(sigma, Tensor):
        check_float(sigma, "sigma")
        return sigma.to(device=like.device, dtype=dtype)
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)):
        raise TypeError(
            f"Expected `sigma` to be a float or a torch.Tensor, but got {type(sigma).__name__}."
        )
    if not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"Expected `sigma` to be finite and > 0, but got {sigma!r}.")
    return torch.tensor(float(sigma), dtype=dtype, device=like.device)


def _check_sigma(
    sigma: Tensor, shape: torch.Size, convention: str, d_dim: int = -1
) -> None:
    r"""``sigma`` must broadcast to ``shape``, with size 1 on the ``D`` dim for the official."""
    try:
        fits = torch.broadcast_shapes(sigma.shape, shape) == shape
    except RuntimeError:
        fits = False
    if not fits:
        raise ValueError(
            f"Expected `sigma` to broadcast to the target shape {tuple(shape)}, but got "
            f"shape {tuple(sigma.shape)}."
        )
    full = (1,) * (len(shape) - sigma.ndim) + tuple(sigma.shape)
    if convention == "official" and full[d_dim] != 1:
        raise ValueError(
            "Expected `sigma` to be one scale per mixture (a scalar, or size 1 on the D "
            f"dimension) with convention='official', but got shape {tuple(sigma.shape)}."
        )


def _check_mixture(
    means: Tensor, stds: Tensor, target: Tensor | None
) -> tuple[int, int, torch.dtype]:
    check_float(means, "means")
    check_float(stds, "stds")
    sizes = check_shape(means, "means", ["*", "K", "D"])
    if stds.shape != means.shape:
        raise ValueError(
            f"Expected `stds` to have the shape of `means` {tuple(means.shape)}, but got shape "
            f"{tuple(stds.shape)}."
        )
    if target is not None:
        check_float(target, "target")
        expected = means.shape[:-2] + means.shape[-1:]
        if target.shape != expected:
            raise ValueError(
                f"Expected `target` to have shape {tuple(expected)} (the shape of `means` "
                f"without its component dimension K), but got shape {tuple(target.shape)}."
            )
    return sizes["K"], sizes["D"], compute_dtype(means, stds, target)


def _to_layout(
    means: Tensor,
    stds: Tensor,
    target: Tensor,
    sigma: float | Tensor,
    dtype: torch.dtype,
    convention: str,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    r"""``(..., K, D)`` inputs to the ``(1, K, D, N)`` work layout, ``N`` the batch size."""
    k, d = means.shape[-2:]
    sigma = _as_sigma(sigma, means, dtype)
    _check_sigma(sigma, target.shape, convention)

    def mixture(t: Tensor) -> Tensor:
        return t.to(dtype).reshape(-1, k, d).permute(1, 2, 0).unsqueeze(0)

    def point(t: Tensor) -> Tensor:
        return t.to(dtype).reshape(-1, d).mT.unsqueeze(0)

    if sigma.ndim > 0:
        sigma = point(sigma.expand(target.shape))
    return mixture(means), mixture(stds), point(target), sigma


def _from_layout(loss: Tensor, like: Tensor) -> Tensor:
    r"""``(1, N)`` back to the batch shape of ``like`` ``(..., D)``."""
    return loss.reshape(like.shape[:-1])


def propel_log_self_overlap(std: Tensor) -> Tensor:
    r"""Log self-overlap :math:`\log H(P)` of a Gaussian with diagonal stds, over the last dim.

    .. math::

        \log H(P) = \log \int p^2 = -D \log(2\sqrt{\pi}) - \sum_{d=1}^{D} \log |s_d|

    Stds enter squared (variance :math:`s^2`), so their sign does not matter.

    :param torch.Tensor std: standard deviations ``(..., D)``, nonzero.
    :return: (:class:`torch.Tensor`) :math:`\log H` of shape ``(...)``.

    |sep|

    :Example:

    >>> import torch
    >>> propel_log_self_overlap(torch.tensor([1.0])).exp()  # 1 / (2 sqrt(pi))
    tensor(0.2821)
    """
    check_float(std, "std")
    check_shape(std, "std", ["*", "D"])
    std = std.to(compute_dtype(std))
    return -(std.shape[-1] * _LOG_2_SQRT_PI + torch.log(std.abs()).sum(-1))


def propel_log_overlap(
    mean1: Tensor, std1: Tensor, mean2: Tensor, std2: Tensor
) -> Tensor:
    r"""Log overlap :math:`\log G(P_1, P_2) = \log \int p_1 p_2` of two diagonal Gaussians.

    .. math::

        \log G(P_1, P_2) = -\frac{D}{2}\log(2\pi)
        - \frac12 \sum_d \Big[\log(s_{1d}^2 + s_{2d}^2)
        + \frac{(\mu_{1d} - \mu_{2d})^2}{s_{1d}^2 + s_{2d}^2}\Big]

    computed relative to :math:`H(P_1)` (the :math:`K = 1` case of :math:`T_1` with
    :math:`P_{gt} = P_1`), so that no variance is formed in absolute terms. The four inputs
    broadcast together.

    :param torch.Tensor mean1: means of :math:`P_1`, ``(..., D)``.
    :param torch.Tensor std1: stds of :math:`P_1`, ``(..., D)``, nonzero (used squared).
    :param torch.Tensor mean2: means of :math:`P_2`, ``(..., D)``.
    :param torch.Tensor std2: stds of :math:`P_2`, ``(..., D)``, nonzero (used squared).
    :return: (:class:`torch.Tensor`) :math:`\log G` of shape ``(...)``.

    |sep|

    :Example:

    >>> import torch
    >>> one = torch.ones(1)
    >>> propel_log_overlap(0 * one, one, one, one).exp()  # N(0, 2) density at 1
    tensor(0.2197)
    """
    for name, t in (("mean1", mean1), ("std1", std1), ("mean2", mean2), ("std2", std2)):
        check_float(t, name)
        check_shape(t, name, ["*", "D"])
    try:
        shape = torch.broadcast_shapes(mean1.shape, std1.shape, mean2.shape, std2.shape)
    except RuntimeError:
        raise ValueError(
            "Expected `mean1`, `std1`, `mean2`, `std2` to broadcast together, but got shapes "
            f"{tuple(mean1.shape)}, {tuple(std1.shape)}, {tuple(mean2.shape)}, "
            f"{tuple(std2.shape)}."
        ) from None
    dtype = compute_dtype(mean1, std1, mean2, std2)
    mean1, std1, mean2, std2 = (
        t.to(dtype).expand(shape) for t in (mean1, std1, mean2, std2)
    )
    means, stds, center, sigma = _to_layout(
        mean2.unsqueeze(-2), std2.unsqueeze(-2), mean1, std1, dtype, "standard"
    )
    log_rel, _ = _relative_log_means(means, stds, center, sigma)
    return propel_log_self_overlap(std1) + _from_layout(log_rel, mean1)


def propel_log_t1(
    means: Tensor, stds: Tensor, target: Tensor, sigma: float | Tensor = 0.1
) -> Tensor:
    r"""Log of PROPEL's :math:`T_1 = \frac{2}{K}\sum_i G(P_{gt}, P_i)`.

    .. math::

        \log T_1 = \log\frac{2}{K} + \operatorname{logsumexp}_i \log G(P_{gt}, P_i)

    :param torch.Tensor means: component means ``(..., K, D)``.
    :param torch.Tensor stds: component stds ``(..., K, D)``, nonzero (used squared).
    :param torch.Tensor target: ground truth ``(..., D)``, the mean of :math:`P_{gt}`.
    :param float, torch.Tensor sigma: std of :math:`P_{gt}` (default 0.1), a float or a tensor
        broadcastable to ``(..., D)``, > 0.
    :return: (:class:`torch.Tensor`) :math:`\log T_1` of shape ``(...)``.

    |sep|

    :Example:

    >>> import torch
    >>> x = torch.zeros(1, 1)
    >>> propel_log_t1(x[:, None], torch.ones(1, 1, 1), x, 1.0).exp()  # 2 G = 2 / (2 sqrt(pi))
    tensor([0.5642])
    """
    k, d, dtype = _check_mixture(means, stds, target)
    work = _to_layout(means, stds, target, sigma, dtype, "standard")
    log_mean_t1, _ = _relative_log_means(*work)
    log_h = propel_log_self_overlap(
        _as_sigma(sigma, target, dtype).expand(target.shape)
    )
    return log_h + _LN2 + _from_layout(log_mean_t1, target)


def propel_log_t2(
    means: Tensor,
    stds: Tensor,
    sigma: float | Tensor = 0.1,
    convention: str = "standard",
) -> Tensor:
    r"""Log of PROPEL's :math:`T_2 = H(P_{gt}) + \frac{1}{K^2}\sum_{i,j} G(P_i, P_j)`.

    .. math::

        \log T_2 = \operatorname{logsumexp}\Big(\log H(P_{gt}),\
        \log H(P_i) - 2\log K,\ \log 2 - 2\log K + \log G(P_i, P_j)\ (i < j)\Big)

    :param torch.Tensor means: component means ``(..., K, D)``.
    :param torch.Tensor stds: component stds ``(..., K, D)``, nonzero (used squared).
    :param float, torch.Tensor sigma: std of :math:`P_{gt}` (default 0.1), > 0, broadcastable to
        ``(..., D)``.
    :param str convention: ``"standard"`` (default) or ``"official"``, where
        :math:`H(P_{gt})` is taken in one dimension as the official code does; then ``sigma``
        must be a scalar or have a last dimension of size 1.
    :return: (:class:`torch.Tensor`) :math:`\log T_2` of shape ``(...)``.

    |sep|

    :Example:

    >>> import torch
    >>> log_t2 = propel_log_t2(torch.zeros(1, 1, 1), torch.ones(1, 1, 1), 1.0)
    >>> log_t2.exp()  # H(P_gt) + H(P_1) = 2 / (2 sqrt(pi))
    tensor([0.5642])
    """
    check_in(convention, "convention", PROPEL_CONVENTIONS)
    k, d, dtype = _check_mixture(means, stds, None)
    center = means.new_zeros((), dtype=dtype).expand(
        means.shape[:-2] + means.shape[-1:]
    )
    work = _to_layout(means, stds, center, sigma, dtype, convention)
    _, log_mean_t2 = _relative_log_means(*work)
    log_mean_t2 = _from_layout(log_mean_t2, center)
    sigma = _as_sigma(sigma, center, dtype).expand(center.shape)
    log_h = propel_log_self_overlap(sigma)
    if convention == "standard":
        return log_h + F.softplus(log_mean_t2)
    log_h_1d = propel_log_self_overlap(
        sigma[..., :1]
    )  # the official one-dimensional H(P_gt)
    return torch.logaddexp(log_h_1d, log_h + log_mean_t2)


def propel_loss(
    means: Tensor,
    stds: Tensor,
    target: Tensor,
    sigma: float | Tensor = 0.1,
    convention: str = "standard",
) -> Tensor:
    r"""PROPEL loss :math:`L = \log_{10}(T_2 / T_1)` of a Gaussian mixture against a target.

    .. math::

        L = \log_{10} \frac{H(P_{gt}) + \frac{1}{K^2}\sum_{i,j} G(P_i, P_j)}
        {\frac{2}{K}\sum_i G(P_{gt}, P_i)}
        = \frac{1}{\ln 10}\Big(\log\frac{1 + e^{A_2}}{2} - A_1\Big)

    with :math:`A_1, A_2` the log-means of the overlaps relative to :math:`H(P_{gt})` (see the
    module docstring). Finite whenever the true value is representable; exactly 0 for a perfect
    fit (every component equal to :math:`P_{gt}`).

    With ``convention="standard"``, :math:`L \ge 0` (the integrated squared error is
    non-negative); rounding can leave a near-perfect fit a few ulps below 0, so the result is
    clamped at 0 (``clamp_min(0)``, which passes the gradient at 0). With
    ``convention="official"``, :math:`H(P_{gt})` in :math:`T_2` is the one-dimensional
    :math:`1 / (2\sqrt{\pi}\sigma)` as in the official code, giving its numbers (for
    :math:`D = 1` the two conventions coincide); for :math:`D > 1` that loss can be negative and
    is not clamped. The backward is hand-written (first order only: no double backward).

    :param torch.Tensor means: component means ``(..., K, D)``, any number of batch dims.
    :param torch.Tensor stds: component stds ``(..., K, D)``, nonzero; used squared (variance
        :math:`s^2`), so their sign does not matter.
    :param torch.Tensor target: ground truth ``(..., D)``.
    :param float, torch.Tensor sigma: std of the target Gaussian (default 0.1, the official
        default), > 0, a float or a tensor broadcastable to ``(..., D)`` (one value per mixture
        with ``convention="official"``).
    :param str convention: ``"standard"`` (default) or ``"official"``.
    :return: (:class:`torch.Tensor`) loss of shape ``(...)``, float32 or float64.

    |sep|

    :Example:

    >>> import torch
    >>> target = torch.tensor([[0.0, 1.0]])
    >>> stds = torch.full((1, 2, 2), 0.1)
    >>> propel_loss(torch.stack([target, target], 1), stds, target)  # perfect fit
    tensor([0.])
    >>> propel_loss(torch.stack([target, target + 0.1], 1), stds, target)
    tensor([0.0502])
    """
    check_in(convention, "convention", PROPEL_CONVENTIONS)
    k, d, dtype = _check_mixture(means, stds, target)
    means, stds, center, sigma = _to_layout(
        means, stds, target, sigma, dtype, convention
    )
    log_mean_t1, log_mean_t2 = _relative_log_means(means, stds, center, sigma)
    sigma = sigma[:, 0] if sigma.ndim > 0 else sigma
    loss = _combine(log_mean_t1, log_mean_t2, sigma, d, convention)
    return _from_layout(loss, target)


def propel_loss_pixelwise(
    means: Tensor,
    stds: Tensor,
    target: Tensor,
    sigma: float | Tensor = 0.1,
    convention: str = "standard",
) -> Tensor:
    r"""PROPEL loss of one mixture per pixel, components on dimension 1 (image layouts).

    The loss of :func:`propel_loss` for ``means`` ``(B, K, D, *S)`` against ``target``
    ``(B, D, *S)``: one :math:`D`-dimensional mixture per position of ``*S``. This is the
    native work layout, so no copy of the inputs is made (for one 1-D mixture per pixel and
    channel of an image ``(B, K, C, H, W)``, pass ``means.unsqueeze(2)``).

    :param torch.Tensor means: component means ``(B, K, D, *S)``.
    :param torch.Tensor stds: component stds ``(B, K, D, *S)``, nonzero (used squared).
    :param torch.Tensor target: ground truth ``(B, D, *S)``.
    :param float, torch.Tensor sigma: std of the target Gaussian (default 0.1), > 0, a float or
        a tensor broadcastable to ``(B, D, *S)`` (size 1 on ``D`` with
        ``convention="official"``).
    :param str convention: ``"standard"`` (default) or ``"official"``.
    :return: (:class:`torch.Tensor`) loss map ``(B, *S)``.

    |sep|

    :Example:

    >>> import torch
    >>> means = torch.zeros(2, 3, 1, 5, 4)  # B = 2, K = 3, D = 1, 5 x 4 pixels
    >>> propel_loss_pixelwise(means, torch.full_like(means, 0.1), torch.zeros(2, 1, 5, 4)).sum()
    tensor(0.)
    """
    check_in(convention, "convention", PROPEL_CONVENTIONS)
    for name, t in (("means", means), ("stds", stds), ("target", target)):
        check_float(t, name)
    if means.ndim < 3:
        raise ValueError(
            f"Expected `means` to have shape (B, K, D, *S), but got shape {tuple(means.shape)}."
        )
    if stds.shape != means.shape:
        raise ValueError(
            f"Expected `stds` to have the shape of `means` {tuple(means.shape)}, but got shape "
            f"{tuple(stds.shape)}."
        )
    expected = means.shape[:1] + means.shape[2:]
    if target.shape != expected:
        raise ValueError(
            f"Expected `target` to have shape {tuple(expected)} (the shape of `means` without "
            f"its component dimension K), but got shape {tuple(target.shape)}."
        )
    b, k, d = means.shape[:3]
    dtype = compute_dtype(means, stds, target)
    sigma = _as_sigma(sigma, means, dtype)
    _check_sigma(sigma, target.shape, convention, 1)
    if sigma.ndim > 0:
        sigma = sigma.expand(target.shape).reshape(b, d, -1)
    means = means.to(dtype).reshape(b, k, d, -1)
    stds = stds.to(dtype).reshape(b, k, d, -1)
    center = target.to(dtype).reshape(b, d, -1)
    log_mean_t1, log_mean_t2 = _relative_log_means(means, stds, center, sigma)
    sigma = sigma[:, 0] if sigma.ndim > 0 else sigma
    loss = _combine(log_mean_t1, log_mean_t2, sigma, d, convention)
    return loss.reshape(expected[:1] + expected[2:])


def std_from_raw(
    raw: Tensor, activation: str | None = "softplus", min_std: float = 1e-6
) -> Tensor:
    r"""Map raw network outputs to positive standard deviations.

    .. math::

        s = \operatorname{softplus}(r) + s_{\min} \quad\text{or}\quad s = e^{r} + s_{\min}
        \quad\text{or}\quad s = \max(|r|, s_{\min})

    :param torch.Tensor raw: raw outputs, any shape.
    :param str, None activation: ``"softplus"`` (default, :math:`\log(1 + e^r)`), ``"exp"``, or
        ``None`` (the values are the stds already; as they are only used squared, their sign is
        dropped and their magnitude floored at ``min_std``, so a zero std gives a large finite
        loss instead of NaN).
    :param float min_std: floor added after the activation (default ``1e-6``, >= 0), which keeps
        stds > 0 when the activation underflows; with ``activation=None``, the smallest
        magnitude kept.
    :return: (:class:`torch.Tensor`) stds, same shape.

    |sep|

    :Example:

    >>> import torch
    >>> std_from_raw(torch.tensor([-1.0, 0.0, 1.0]), "exp", 0.0)
    tensor([0.3679, 1.0000, 2.7183])
    """
    check_in(activation, "activation", STD_ACTIVATIONS)
    if not math.isfinite(min_std) or min_std < 0:
        raise ValueError(
            f"Expected `min_std` to be finite and >= 0, but got {min_std!r}."
        )
    if activation is None:
        return raw.abs().clamp_min(min_std) if min_std > 0 else raw
    out = F.softplus(raw) if activation == "softplus" else torch.exp(raw)
    return out + min_std if min_std > 0 else out


def split_mixture(
    x_net: Tensor, n_components: int | None = None
) -> tuple[Tensor, Tensor]:
    r"""Split a mixture output into means and raw stds, components on dimension 1.

    Three layouts, told apart by the number of dimensions:

    - official (3 dims): ``(B, K, 2 D)``, the first ``D`` entries of the last dimension are the
      means, the next ``D`` the stds; returns two ``(B, K, D)`` tensors;
    - channel-stacked image (4 dims, the output of a deepinv network whose head is widened to
      ``2 K C`` channels): ``(B, 2 K C, H, W)``, read as ``(B, K, 2, C, H, W)``; needs
      ``n_components``; returns two ``(B, K, C, H, W)`` tensors;
    - image (5 dims or more): ``(B, K, 2, C, *S)``, index 0 of dimension 2 holds the means and
      index 1 the stds per pixel; returns two ``(B, K, C, *S)`` tensors.

    :param torch.Tensor x_net: the mixture output.
    :param int, None n_components: number of components ``K``; required for the
        channel-stacked layout, checked against ``x_net`` otherwise. Default ``None``.
    :return: (tuple) ``(means, raw_stds)``, views of ``x_net``.

    |sep|

    :Example:

    >>> import torch
    >>> means, stds = split_mixture(torch.zeros(2, 4, 2, 3, 5, 5))
    >>> means.shape
    torch.Size([2, 4, 3, 5, 5])
    >>> split_mixture(torch.zeros(2, 24, 5, 5), n_components=4)[1].shape
    torch.Size([2, 4, 3, 5, 5])
    """
    check_float(x_net, "x_net")
    check_int(n_components, "n_components", 1, optional=True)
    if x_net.ndim == 4:
        if n_components is None or x_net.shape[1] % (2 * n_components) != 0:
            raise ValueError(
                "Expected `x_net` of the channel-stacked layout (B, 2*K*C, H, W) to come with "
                "`n_components` K dividing its channels by 2*K, but got shape "
                f"{tuple(x_net.shape)} and n_components={n_components!r}."
            )
        b, _, h, w = x_net.shape
        x_net = x_net.reshape(b, n_components, 2, -1, h, w)
    if x_net.ndim < 3:
        raise ValueError(
            "Expected `x_net` to have shape (B, K, 2D) (official layout), (B, 2*K*C, H, W) "
            f"(channel-stacked) or (B, K, 2, C, *S) (image layout), but got shape "
            f"{tuple(x_net.shape)}."
        )
    if n_components is not None and x_net.shape[1] != n_components:
        raise ValueError(
            f"Expected `x_net` to have n_components={n_components} components on dimension "
            f"1, but got shape {tuple(x_net.shape)}."
        )
    if x_net.ndim == 3:
        if x_net.shape[-1] % 2 != 0:
            raise ValueError(
                "Expected `x_net` of the official layout (B, K, 2D) to have an even last "
                f"dimension, but got shape {tuple(x_net.shape)}."
            )
        d = x_net.shape[-1] // 2
        return x_net[..., :d], x_net[..., d:]
    if x_net.shape[2] != 2:
        raise ValueError(
            "Expected `x_net` of the image layout (B, K, 2, C, *S) to have size 2 at "
            f"dimension 2 (means, stds), but got shape {tuple(x_net.shape)}."
        )
    return x_net[:, :, 0], x_net[:, :, 1]


def mixture_mean(x_net: Tensor, n_components: int | None = None) -> Tensor:
    r"""Mean of the equally weighted mixture, :math:`\bar\mu = \frac1K \sum_k \mu_k`.

    :param torch.Tensor x_net: mixture output, ``(B, K, 2D)``, ``(B, 2 K C, H, W)`` or
        ``(B, K, 2, C, *S)`` (see :func:`split_mixture`).
    :param int, None n_components: ``K``, needed for the channel-stacked layout (default
        ``None``).
    :return: (:class:`torch.Tensor`) ``(B, D)`` or ``(B, C, *S)``: an image for deepinv
        metrics and plots in the image layout.

    |sep|

    :Example:

    >>> import torch
    >>> x_net = torch.tensor([[[1.0, 0.5], [3.0, 0.5]]])  # K = 2 components, D = 1
    >>> mixture_mean(x_net)
    tensor([[2.]])
    """
    means, _ = split_mixture(x_net, n_components)
    return means.mean(1)


def mixture_std(
    x_net: Tensor,
    std_activation: str | None = "softplus",
    min_std: float = 1e-6,
    n_components: int | None = None,
) -> Tensor:
    r"""Standard deviation of the equally weighted mixture, per entry (an uncertainty map).

    .. math::

        \operatorname{std} = \sqrt{\frac1K \sum_k (s_k^2 + \mu_k^2) - \bar\mu^2}
        = \sqrt{\frac1K \sum_k s_k^2 + \frac1K \sum_k (\mu_k - \bar\mu)^2}

    computed in the second form (no cancellation).

    :param torch.Tensor x_net: mixture output, ``(B, K, 2D)``, ``(B, 2 K C, H, W)`` or
        ``(B, K, 2, C, *S)`` (see :func:`split_mixture`).
    :param str, None std_activation: mapping of the raw stds, see :func:`std_from_raw`
        (default ``"softplus"``).
    :param float min_std: floor of the mapped stds (default ``1e-6``).
    :param int, None n_components: ``K``, needed for the channel-stacked layout (default
        ``None``).
    :return: (:class:`torch.Tensor`) ``(B, D)`` or ``(B, C, *S)``.

    |sep|

    :Example:

    >>> import torch
    >>> x_net = torch.tensor([[[1.0, 0.0], [3.0, 0.0]]])  # means 1 and 3, stds 0
    >>> mixture_std(x_net, std_activation=None)
    tensor([[1.]])
    """
    means, raw = split_mixture(x_net, n_components)
    stds = std_from_raw(raw, std_activation, min_std)
    spread = means - means.mean(1, keepdim=True)
    return (stds.square().mean(1) + spread.square().mean(1)).sqrt()
