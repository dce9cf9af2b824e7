r"""Built-in camera response curves (CRF) and their exact inverses (ICRF), as pure functions.

A camera response function (CRF) :math:`f` maps relative irradiance :math:`x \in [0, 1]` to
a code :math:`y = f(x) \in [0, 1]`. Every curve here has :math:`f(0) = 0`, :math:`f(1) = 1`,
is strictly increasing and smooth inside :math:`(0, 1)`, and comes with a closed-form exact
inverse (the true ICRF), used as ground truth by tests and benchmarks.

Inputs are clamped to :math:`[0, 1]`. Parameters are floats or tensors broadcastable to the
input (the :class:`deepinv_icrf.physics.ResponseCurve` modules reshape per-channel
parameters). Fractional powers are guarded so that gradients stay finite at 0.

Also here: :func:`quantize_to_bit_depth`, the sensor's rounding of codes.
"""

from __future__ import annotations

import torch
from torch import Tensor

from deepinv_icrf.bracket import check_bit_depth

__all__ = [
    "gamma_crf",
    "gamma_icrf",
    "srgb_crf",
    "srgb_icrf",
    "filmic_crf",
    "filmic_icrf",
    "exp_crf",
    "exp_icrf",
    "log_crf",
    "log_icrf",
    "quantize_to_bit_depth",
]

# sRGB: IEC 61966-2-1 uses the knee 0.0031308 where the linear and power branches differ by
# 2.9e-8 (the standard curve drops slightly there and has no exact inverse). The knee is
# moved to the exact intersection of the two branches (3e-7 lower), which makes the curve
# continuous, strictly increasing and exactly invertible; values differ from the standard by
# at most 2.9e-8.
_SRGB_SLOPE = 12.92
_SRGB_A = 1.055
_SRGB_EXP = 2.4
_SRGB_X_KNEE = 0.0031306684425007583
_SRGB_Y_KNEE = _SRGB_SLOPE * _SRGB_X_KNEE


def _unit(x: Tensor) -> Tensor:
    return x.clamp(0.0, 1.0)


def _pow(x: Tensor, p: float | Tensor) -> Tensor:
    r"""``x ** p`` for ``x`` in ``[0, 1]``, exactly 0 at 0 with a finite gradient there."""
    tiny = torch.finfo(x.dtype).tiny
    pos = x > 0
    return torch.where(pos, x.clamp_min(tiny) ** p, torch.zeros_like(x))


def gamma_crf(x: Tensor, gamma: float | Tensor = 2.2) -> Tensor:
    r"""Gamma camera response.

    .. math::

        f(x) = x^{1/\gamma}

    :param torch.Tensor x: irradiance in :math:`[0, 1]` (clamped).
    :param float, torch.Tensor gamma: exponent :math:`\gamma > 0` (broadcastable). Default 2.2.
    :return: (:class:`torch.Tensor`) codes, shape of ``x``.

    :Example:

    >>> import torch
    >>> gamma_crf(torch.tensor([0.0, 0.25, 1.0]), 2.0)
    tensor([0.0000, 0.5000, 1.0000])
    """
    return _pow(_unit(x), 1.0 / gamma)


def gamma_icrf(y: Tensor, gamma: float | Tensor = 2.2) -> Tensor:
    r"""Inverse of :func:`gamma_crf`.

    .. math::

        f^{-1}(y) = y^{\gamma}

    :param torch.Tensor y: codes in :math:`[0, 1]` (clamped).
    :param float, torch.Tensor gamma: exponent :math:`\gamma > 0`. Default 2.2.
    :return: (:class:`torch.Tensor`) irradiance, shape of ``y``.

    :Example:

    >>> import torch
    >>> gamma_icrf(torch.tensor([0.0, 0.5, 1.0]), 2.0)
    tensor([0.0000, 0.2500, 1.0000])
    """
    return _pow(_unit(y), gamma)


def srgb_crf(x: Tensor) -> Tensor:
    r"""sRGB encoding (IEC 61966-2-1).

    .. math::

        f(x) = \begin{cases} 12.92\, x & x \le x_0 \\
        1.055\,(x^{1/2.4} - 1) + 1 & x > x_0 \end{cases}

    (:math:`1.055 x^{1/2.4} - 0.055` written so that :math:`f(1) = 1` exactly), with the knee
    :math:`x_0 \approx 0.00313067` at the exact intersection of the two branches instead of
    the standard's rounded 0.0031308 (values differ by at most :math:`3 \cdot 10^{-8}`).

    :param torch.Tensor x: linear irradiance in :math:`[0, 1]` (clamped).
    :return: (:class:`torch.Tensor`) sRGB codes, shape of ``x``.

    :Example:

    >>> import torch
    >>> srgb_crf(torch.tensor([0.0, 0.001, 0.2, 1.0], dtype=torch.float64))
    tensor([0.0000, 0.0129, 0.4845, 1.0000], dtype=torch.float64)
    """
    x = _unit(x)
    power = _SRGB_A * (_pow(x, 1.0 / _SRGB_EXP) - 1.0) + 1.0
    return torch.where(x <= _SRGB_X_KNEE, _SRGB_SLOPE * x, power)


def srgb_icrf(y: Tensor) -> Tensor:
    r"""sRGB decoding, the exact inverse of :func:`srgb_crf`.

    .. math::

        f^{-1}(y) = \begin{cases} y / 12.92 & y \le 12.92\, x_0 \\
        \left(\frac{y - 1}{1.055} + 1\right)^{2.4} & \text{otherwise} \end{cases}

    :param torch.Tensor y: sRGB codes in :math:`[0, 1]` (clamped).
    :return: (:class:`torch.Tensor`) linear irradiance, shape of ``y``.

    :Example:

    >>> import torch
    >>> srgb_icrf(torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    tensor([0.0000, 0.2140, 1.0000], dtype=torch.float64)
    """
    y = _unit(y)
    base = ((y - 1.0) / _SRGB_A + 1.0).clamp_min(0.0)
    return torch.where(y <= _SRGB_Y_KNEE, y / _SRGB_SLOPE, _pow(base, _SRGB_EXP))


def _s_curve(u: Tensor, contrast: float | Tensor) -> Tensor:
    # s(u) = u^a / (u^a + (1 - u)^a)
    ua = _pow(u, contrast)
    va = _pow(1.0 - u, contrast)
    return ua / (ua + va)


def _s_curve_inverse(s: Tensor, contrast: float | Tensor) -> Tensor:
    # u = r / (1 + r), r = (s / (1 - s))^(1/a), written as s^(1/a) / (s^(1/a) + (1-s)^(1/a))
    return _s_curve(s, 1.0 / contrast)


def filmic_crf(
    x: Tensor, gamma: float | Tensor = 2.2, contrast: float | Tensor = 1.6
) -> Tensor:
    r"""Filmic S-curve: a gamma encoding followed by a symmetric sigmoid (toe and shoulder).

    .. math::

        f(x) = s\left(x^{1/\gamma}\right), \qquad s(u) = \frac{u^a}{u^a + (1 - u)^a}

    with contrast :math:`a > 0` (:math:`a > 1`: S-shaped, a dark toe and a soft shoulder
    that compresses highlights; :math:`a = 1`: plain gamma).

    :param torch.Tensor x: irradiance in :math:`[0, 1]` (clamped).
    :param float, torch.Tensor gamma: encoding exponent :math:`\gamma > 0`. Default 2.2.
    :param float, torch.Tensor contrast: sigmoid exponent :math:`a > 0`. Default 1.6.
    :return: (:class:`torch.Tensor`) codes, shape of ``x``.

    :Example:

    >>> import torch
    >>> filmic_crf(torch.tensor([0.0, 0.18, 1.0]))
    tensor([0.0000, 0.4341, 1.0000])
    """
    return _s_curve(gamma_crf(x, gamma), contrast)


def filmic_icrf(
    y: Tensor, gamma: float | Tensor = 2.2, contrast: float | Tensor = 1.6
) -> Tensor:
    r"""Inverse of :func:`filmic_crf`.

    .. math::

        f^{-1}(y) = \left(s^{-1}(y)\right)^{\gamma}, \qquad
        s^{-1}(y) = \frac{y^{1/a}}{y^{1/a} + (1 - y)^{1/a}}

    :param torch.Tensor y: codes in :math:`[0, 1]` (clamped).
    :param float, torch.Tensor gamma: encoding exponent :math:`\gamma > 0`. Default 2.2.
    :param float, torch.Tensor contrast: sigmoid exponent :math:`a > 0`. Default 1.6.
    :return: (:class:`torch.Tensor`) irradiance, shape of ``y``.

    :Example:

    >>> import torch
    >>> filmic_icrf(torch.tensor([0.0, 0.5, 1.0]))
    tensor([0.0000, 0.2176, 1.0000])
    """
    return gamma_icrf(_s_curve_inverse(_unit(y), contrast), gamma)


def exp_crf(x: Tensor, k: float | Tensor = 4.0) -> Tensor:
    r"""Exponential-saturation response (a gently concave, sensor-like curve).

    .. math::

        f(x) = \frac{1 - e^{-k x}}{1 - e^{-k}}

    :param torch.Tensor x: irradiance in :math:`[0, 1]` (clamped).
    :param float, torch.Tensor k: saturation rate :math:`k > 0`. Default 4.
    :return: (:class:`torch.Tensor`) codes, shape of ``x``.

    :Example:

    >>> import torch
    >>> exp_crf(torch.tensor([0.0, 0.5, 1.0]), 4.0)
    tensor([0.0000, 0.8808, 1.0000])
    """
    k = torch.as_tensor(k, dtype=x.dtype, device=x.device)
    return torch.expm1(-k * _unit(x)) / torch.expm1(-k)


def exp_icrf(y: Tensor, k: float | Tensor = 4.0) -> Tensor:
    r"""Inverse of :func:`exp_crf`.

    .. math::

        f^{-1}(y) = -\frac{1}{k} \log\left(1 - y\,(1 - e^{-k})\right)

    :param torch.Tensor y: codes in :math:`[0, 1]` (clamped).
    :param float, torch.Tensor k: saturation rate :math:`k > 0`. Default 4.
    :return: (:class:`torch.Tensor`) irradiance, shape of ``y``.

    :Example:

    >>> import torch
    >>> exp_icrf(torch.tensor([0.0, 0.5, 1.0]), 4.0)
    tensor([0.0000, 0.1687, 1.0000])
    """
    k = torch.as_tensor(k, dtype=y.dtype, device=y.device)
    y = _unit(y)
    # two algebraically equal forms, each exact at its own endpoint
    low = -torch.log1p(y * torch.expm1(-k)) / k
    high = 1.0 - torch.log1p((1.0 - y) * torch.expm1(k)) / k
    return torch.where(y <= 0.5, low, high)


def log_crf(x: Tensor, a: float | Tensor = 50.0) -> Tensor:
    r"""Logarithmic response (log-profile-like: steep shadows, compressed highlights).

    .. math::

        f(x) = \frac{\log(1 + a x)}{\log(1 + a)}

    :param torch.Tensor x: irradiance in :math:`[0, 1]` (clamped).
    :param float, torch.Tensor a: compression :math:`a > 0`. Default 50.
    :return: (:class:`torch.Tensor`) codes, shape of ``x``.

    :Example:

    >>> import torch
    >>> log_crf(torch.tensor([0.0, 0.18, 1.0]), 50.0)
    tensor([0.0000, 0.5856, 1.0000])
    """
    a = torch.as_tensor(a, dtype=x.dtype, device=x.device)
    return torch.log1p(a * _unit(x)) / torch.log1p(a)


def log_icrf(y: Tensor, a: float | Tensor = 50.0) -> Tensor:
    r"""Inverse of :func:`log_crf`.

    .. math::

        f^{-1}(y) = \frac{(1 + a)^{y} - 1}{a}

    :param torch.Tensor y: codes in :math:`[0, 1]` (clamped).
    :param float, torch.Tensor a: compression :math:`a > 0`. Default 50.
    :return: (:class:`torch.Tensor`) irradiance, shape of ``y``.

    :Example:

    >>> import torch
    >>> log_icrf(torch.tensor([0.0, 0.5, 1.0]), 50.0)
    tensor([0.0000, 0.1228, 1.0000])
    """
    a = torch.as_tensor(a, dtype=y.dtype, device=y.device)
    y = _unit(y)
    log_a = torch.log1p(a)
    # two algebraically equal forms, each exact at its own endpoint
    low = torch.expm1(y * log_a) / a
    high = 1.0 + (1.0 + a) * torch.expm1((y - 1.0) * log_a) / a
    return torch.where(y <= 0.5, low, high)


def quantize_to_bit_depth(x: Tensor, bit_depth: int | None = 8) -> Tensor:
    r"""Clip to :math:`[0, 1]` and round to the codes of a ``bit_depth``-bit sensor.

    .. math::

        q(v) = \frac{\mathrm{round}\left(\mathrm{clip}(v, 0, 1)\,(2^b - 1)\right)}{2^b - 1}

    :param torch.Tensor x: values, any shape and float dtype.
    :param int, None bit_depth: bits :math:`b` (1 to 32); ``None`` clips without rounding.
        Default 8.
    :return: (:class:`torch.Tensor`) quantised codes, shape and dtype of ``x``.

    :Example:

    >>> import torch
    >>> quantize_to_bit_depth(torch.tensor([-0.1, 0.3, 0.5, 1.2]), 2)
    tensor([0.0000, 0.3333, 0.6667, 1.0000])
    """
    bit_depth = check_bit_depth(bit_depth)
    x = x.clamp(0.0, 1.0)
    if bit_depth is None:
        return x
    levels = float(2**bit_depth - 1)
    return torch.round(x * levels) / levels
