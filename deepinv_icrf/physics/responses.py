r"""Built-in camera response curves as modules (the ground truth of simulations).

Each :class:`ResponseCurve` wraps one pair of pure functions of
:mod:`deepinv_icrf.functional.response`: ``forward`` is the camera response (CRF,
irradiance to code), ``inverse`` its exact inverse (the true ICRF), and
:meth:`ResponseCurve.icrf_curve` samples that inverse on the uniform grid an
:class:`deepinv_icrf.models.ICRF` uses. Parameters are buffers (float64, moved by ``.to``),
either one value for every channel or one value per channel (real cameras differ per
channel), e.g. ``GammaResponse(gamma=(2.0, 2.2, 2.4))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from deepinv_icrf._checks import check_float
from deepinv_icrf.functional.response import (
    exp_crf,
    exp_icrf,
    filmic_crf,
    filmic_icrf,
    gamma_crf,
    gamma_icrf,
    log_crf,
    log_icrf,
    srgb_crf,
    srgb_icrf,
)

__all__ = [
    "ResponseCurve",
    "LinearResponse",
    "GammaResponse",
    "SRGBResponse",
    "FilmicResponse",
    "ExpResponse",
    "LogResponse",
    "RESPONSE_NAMES",
    "get_response",
]


def _as_parameter(value: float | Sequence[float] | Tensor, name: str) -> Tensor:
    if isinstance(value, Tensor):
        t = value.detach().to(torch.float64).reshape(-1)
    else:
        try:
            t = torch.tensor(value, dtype=torch.float64).reshape(-1)
        except (TypeError, ValueError) as err:
            raise TypeError(
                f"Expected `{name}` to be a float or a sequence of floats (one per "
                f"channel), but got {value!r}."
            ) from err
    if t.numel() == 0:
        raise ValueError(f"Expected `{name}` to hold at least one value, but got none.")
    values = t.tolist()
    if not all(math.isfinite(v) and v > 0 for v in values):
        raise ValueError(
            f"Expected `{name}` to be finite and > 0 (one value, or one per channel), "
            f"but got {values}."
        )
    return t


class ResponseCurve(nn.Module):
    r"""Base class of the built-in camera response curves.

    A response curve :math:`f` maps irradiance :math:`x \in [0, 1]` to codes
    :math:`y = f(x) \in [0, 1]`, with :math:`f(0) = 0`, :math:`f(1) = 1`, strictly
    increasing; :meth:`inverse` is the exact inverse :math:`f^{-1}`. Subclasses set ``name``
    and ``param_names`` and implement ``_crf`` and ``_icrf`` with one pure-function call.

    Parameters are given as keyword arguments: a positive float (every channel) or a
    sequence of ``C`` positive floats (one per channel, applied along the channel dimension).

    :param params: the curve's parameters, by name (see the subclasses).
    """

    name: str = ""
    param_names: tuple[str, ...] = ()

    def __init__(self, **params: float | Sequence[float] | Tensor) -> None:
        super().__init__()
        unknown = sorted(set(params) - set(self.param_names))
        if unknown:
            raise TypeError(
                f"{type(self).__name__} got unexpected parameter(s) {unknown}; "
                f"expected a subset of {list(self.param_names)}."
            )
        sizes = set()
        for key in self.param_names:
            t = _as_parameter(params[key], key)
            if t.numel() > 1:
                sizes.add(t.numel())
            self.register_buffer(key, t)
        if len(sizes) > 1:
            raise ValueError(
                f"Expected per-channel parameters of {type(self).__name__} to have the same "
                f"number of channels, but got sizes {sorted(sizes)}."
            )

    @property
    def channels(self) -> int | None:
        r"""Number of channels of per-channel parameters (``None``: same for every channel)."""
        for key in self.param_names:
            n = getattr(self, key).numel()
            if n > 1:
                return n
        return None

    def _crf(self, x: Tensor, **params: Tensor) -> Tensor:
        raise NotImplementedError

    def _icrf(self, y: Tensor, **params: Tensor) -> Tensor:
        raise NotImplementedError

    def _params(self, ref: Tensor, channel_dim: int) -> dict[str, Tensor]:
        out: dict[str, Tensor] = {}
        for key in self.param_names:
            p = getattr(self, key).to(device=ref.device, dtype=ref.dtype)
            if p.numel() == 1:
                out[key] = p.reshape(())
                continue
            if ref.ndim == 0 or not -ref.ndim <= channel_dim < ref.ndim:
                raise ValueError(
                    f"{type(self).__name__} has {p.numel()} per-channel values of `{key}`; "
                    f"expected the input to have a channel dimension {channel_dim}, but got "
                    f"shape {tuple(ref.shape)}."
                )
            cd = channel_dim % ref.ndim
            if ref.shape[cd] != p.numel():
                raise ValueError(
                    f"{type(self).__name__} has {p.numel()} per-channel values of `{key}`; "
                    f"expected the input to have {p.numel()} channels at dimension "
                    f"{channel_dim}, but got shape {tuple(ref.shape)}."
                )
            out[key] = p.reshape([-1] + [1] * (ref.ndim - cd - 1))
        return out

    def forward(self, x: Tensor, channel_dim: int = -3) -> Tensor:
        r"""Camera response :math:`y = f(x)` (irradiance to codes).

        :param torch.Tensor x: irradiance in :math:`[0, 1]` (clamped), any shape; with
            per-channel parameters, dimension ``channel_dim`` holds the channels.
        :param int channel_dim: channel dimension of ``x``. Default ``-3``.
        :return: (:class:`torch.Tensor`) codes, shape and dtype of ``x``.
        """
        check_float(x, "x")
        return self._crf(x, **self._params(x, channel_dim))

    def inverse(self, y: Tensor, channel_dim: int = -3) -> Tensor:
        r"""Exact inverse response :math:`x = f^{-1}(y)` (the true ICRF).

        :param torch.Tensor y: codes in :math:`[0, 1]` (clamped), any shape; with
            per-channel parameters, dimension ``channel_dim`` holds the channels.
        :param int channel_dim: channel dimension of ``y``. Default ``-3``.
        :return: (:class:`torch.Tensor`) irradiance, shape and dtype of ``y``.
        """
        check_float(y, "y")
        return self._icrf(y, **self._params(y, channel_dim))

    def icrf_curve(
        self,
        n_points: int = 256,
        channels: int = 3,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> Tensor:
        r"""The true ICRF sampled on the uniform grid :math:`k / (L - 1)`.

        Ground truth for an :class:`deepinv_icrf.models.ICRF` with ``n_points`` samples:
        :math:`c_{ck} = f_c^{-1}(k / (L - 1))`, endpoints exactly 0 and 1.

        :param int n_points: number of grid points :math:`L \ge 2`. Default 256.
        :param int channels: number of channels :math:`C`; must equal the number of
            per-channel parameter values if there are any. Default 3.
        :param torch.dtype dtype: dtype of the result. Default ``torch.float64``.
        :param torch.device, str, None device: device of the result; ``None`` uses the
            device of the parameters (CPU when there are none).
        :return: (:class:`torch.Tensor`) the curve, shape ``(channels, n_points)``.

        :Example:

        >>> from deepinv_icrf.physics import GammaResponse
        >>> GammaResponse(gamma=2.0).icrf_curve(n_points=5, channels=1)
        tensor([[0.0000, 0.0625, 0.2500, 0.5625, 1.0000]], dtype=torch.float64)
        """
        if isinstance(n_points, bool) or not isinstance(n_points, int) or n_points < 2:
            raise ValueError(
                f"Expected `n_points` to be an int >= 2, but got {n_points!r}."
            )
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise ValueError(
                f"Expected `channels` to be an int >= 1, but got {channels!r}."
            )
        own = self.channels
        if own is not None and own != channels:
            raise ValueError(
                f"Expected `channels` to be {own} (the number of per-channel parameter values "
                f"of {type(self).__name__}), but got {channels}."
            )
        if device is None:
            bufs = list(self.buffers())
            device = bufs[0].device if bufs else torch.device("cpu")
        grid = torch.linspace(0.0, 1.0, n_points, dtype=torch.float64, device=device)
        curve = self.inverse(grid.expand(channels, n_points), channel_dim=-2)
        inner = curve[:, 1:-1]
        zeros = torch.zeros_like(curve[:, :1])
        curve = torch.cat([zeros, inner, torch.ones_like(zeros)], dim=1)
        return curve.to(dtype)

    def extra_repr(self) -> str:
        parts = []
        for key in self.param_names:
            values = getattr(self, key).tolist()
            parts.append(f"{key}={values[0] if len(values) == 1 else tuple(values)}")
        return ", ".join(parts)


class LinearResponse(ResponseCurve):
    r"""Linear response :math:`f(x) = x` (a raw sensor).

    :Example:

    >>> import torch
    >>> LinearResponse()(torch.tensor([0.25]))
    tensor([0.2500])
    """

    name = "linear"
    param_names = ()

    def _crf(self, x: Tensor) -> Tensor:
        return x.clamp(0.0, 1.0)

    def _icrf(self, y: Tensor) -> Tensor:
        return y.clamp(0.0, 1.0)


class GammaResponse(ResponseCurve):
    r"""Gamma response :math:`f(x) = x^{1/\gamma}` (:func:`deepinv_icrf.functional.gamma_crf`).

    :param float, tuple gamma: :math:`\gamma > 0`, one value or one per channel. Default 2.2.

    :Example:

    >>> import torch
    >>> f = GammaResponse(gamma=(1.0, 2.0, 4.0))
    >>> f(torch.full((3, 1, 1), 0.0625)).flatten()
    tensor([0.0625, 0.2500, 0.5000])
    """

    name = "gamma"
    param_names = ("gamma",)

    def __init__(self, gamma: float | Sequence[float] | Tensor = 2.2) -> None:
        super().__init__(gamma=gamma)

    def _crf(self, x: Tensor, gamma: Tensor) -> Tensor:
        return gamma_crf(x, gamma)

    def _icrf(self, y: Tensor, gamma: Tensor) -> Tensor:
        return gamma_icrf(y, gamma)


class SRGBResponse(ResponseCurve):
    r"""sRGB encoding (:func:`deepinv_icrf.functional.srgb_crf`).

    :Example:

    >>> import torch
    >>> SRGBResponse().inverse(torch.tensor([0.5], dtype=torch.float64))
    tensor([0.2140], dtype=torch.float64)
    """

    name = "srgb"
    param_names = ()

    def _crf(self, x: Tensor) -> Tensor:
        return srgb_crf(x)

    def _icrf(self, y: Tensor) -> Tensor:
        return srgb_icrf(y)


class FilmicResponse(ResponseCurve):
    r"""Filmic S-curve (:func:`deepinv_icrf.functional.filmic_crf`), toe and shoulder.

    :param float, tuple gamma: encoding exponent :math:`\gamma > 0`. Default 2.2.
    :param float, tuple contrast: sigmoid exponent :math:`a > 0`. Default 1.6.

    :Example:

    >>> import torch
    >>> FilmicResponse()(torch.tensor([0.18]))
    tensor([0.4341])
    """

    name = "filmic"
    param_names = ("gamma", "contrast")

    def __init__(
        self,
        gamma: float | Sequence[float] | Tensor = 2.2,
        contrast: float | Sequence[float] | Tensor = 1.6,
    ) -> None:
        super().__init__(gamma=gamma, contrast=contrast)

    def _crf(self, x: Tensor, gamma: Tensor, contrast: Tensor) -> Tensor:
        return filmic_crf(x, gamma, contrast)

    def _icrf(self, y: Tensor, gamma: Tensor, contrast: Tensor) -> Tensor:
        return filmic_icrf(y, gamma, contrast)


class ExpResponse(ResponseCurve):
    r"""Exponential-saturation response (:func:`deepinv_icrf.functional.exp_crf`).

    :param float, tuple k: saturation rate :math:`k > 0`. Default 4.

    :Example:

    >>> import torch
    >>> ExpResponse(k=4.0)(torch.tensor([0.5]))
    tensor([0.8808])
    """

    name = "exp"
    param_names = ("k",)

    def __init__(self, k: float | Sequence[float] | Tensor = 4.0) -> None:
        super().__init__(k=k)

    def _crf(self, x: Tensor, k: Tensor) -> Tensor:
        return exp_crf(x, k)

    def _icrf(self, y: Tensor, k: Tensor) -> Tensor:
        return exp_icrf(y, k)


class LogResponse(ResponseCurve):
    r"""Logarithmic response (:func:`deepinv_icrf.functional.log_crf`).

    :param float, tuple a: compression :math:`a > 0`. Default 50.

    :Example:

    >>> import torch
    >>> LogResponse(a=50.0)(torch.tensor([0.18]))
    tensor([0.5856])
    """

    name = "log"
    param_names = ("a",)

    def __init__(self, a: float | Sequence[float] | Tensor = 50.0) -> None:
        super().__init__(a=a)

    def _crf(self, x: Tensor, a: Tensor) -> Tensor:
        return log_crf(x, a)

    def _icrf(self, y: Tensor, a: Tensor) -> Tensor:
        return log_icrf(y, a)


_RESPONSES: dict[str, type[ResponseCurve]] = {
    cls.name: cls
    for cls in (
        LinearResponse,
        GammaResponse,
        SRGBResponse,
        FilmicResponse,
        ExpResponse,
        LogResponse,
    )
}

RESPONSE_NAMES: tuple[str, ...] = tuple(_RESPONSES)


def get_response(
    name: str, **params: float | Sequence[float] | Tensor
) -> ResponseCurve:
    r"""Build a built-in response curve by name.

    :param str name: one of :data:`RESPONSE_NAMES`: ``"linear"``, ``"gamma"``, ``"srgb"``,
        ``"filmic"``, ``"exp"``, ``"log"``.
    :param params: the curve's parameters (e.g. ``gamma=2.4``, or ``gamma=(2.0, 2.2, 2.4)``
        per channel).
    :return: (:class:`ResponseCurve`) the curve.

    :Example:

    >>> get_response("gamma", gamma=2.4)
    GammaResponse(gamma=2.4)
    """
    if name not in _RESPONSES:
        raise ValueError(
            f"Expected `name` to be one of {RESPONSE_NAMES}, but got {name!r}."
        )
    return _RESPONSES[name](**params)
