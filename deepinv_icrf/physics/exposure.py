r"""Exposure-stack physics: one static scene photographed at several exposure times."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from deepinv.physics import NoiseModel, Physics, ZeroNoise
from torch import Tensor, nn

from deepinv_icrf._checks import check_finite, check_float
from deepinv_icrf.bracket import check_bit_depth, check_exposure_times
from deepinv_icrf.functional.interp import invert_curve
from deepinv_icrf.functional.merge import weighted_radiance_merge
from deepinv_icrf.functional.response import quantize_to_bit_depth
from deepinv_icrf.physics.responses import get_response

__all__ = ["ExposureStack", "BitDepthQuantizer"]

# grid used to tabulate (and invert) a response that has no exact inverse
_TABLE_POINTS = 4097


class BitDepthQuantizer:
    r"""Sensor model of :class:`ExposureStack`: clip to :math:`[0, 1]`, round to ``bit_depth`` bits.

    A small picklable callable (:func:`deepinv_icrf.functional.quantize_to_bit_depth`).

    :param int, None bit_depth: bits (1 to 32); ``None`` only clips. Default 8.

    :Example:

    >>> import torch
    >>> BitDepthQuantizer(1)(torch.tensor([-0.2, 0.4, 0.6, 1.3]))
    tensor([0., 0., 1., 1.])
    """

    def __init__(self, bit_depth: int | None = 8) -> None:
        self.bit_depth = check_bit_depth(bit_depth)

    def __call__(self, x: Tensor) -> Tensor:
        return quantize_to_bit_depth(x, self.bit_depth)

    def __repr__(self) -> str:
        return f"BitDepthQuantizer(bit_depth={self.bit_depth})"


def _identity(x: Tensor, **kwargs: Any) -> Tensor:
    # stored as deepinv's `forw` (unused: ExposureStack overrides `A`) and as the function of
    # the default ZeroNoise: a named function instead of deepinv's lambda defaults, so the
    # physics pickles
    return x


def _exposure_times(value: object, dtype: torch.dtype | None) -> Tensor:
    r"""Checked times ``(N,)`` or ``(B, N)`` in ``dtype``: float tensors keep theirs unless
    ``dtype`` is given, anything else is float32 unless ``dtype`` is given."""
    keep = isinstance(value, Tensor) and value.is_floating_point()
    times = check_exposure_times(value, batch=None)
    if dtype is not None or not keep:
        times = times.to(dtype or torch.float32)
    return times


def _y_std(value: Tensor) -> Tensor:
    check_float(value, "y_std")
    check_finite(value, "y_std")
    if not bool((value >= 0).all()):
        raise ValueError(
            f"Expected `y_std` to be >= 0, but got minimum {float(value.min()):.6g}."
        )
    return value


class ExposureStack(Physics):
    r"""A camera taking ``N`` exposures of a static scene: radiance to a stack of codes.

    For a radiance map :math:`x` of shape ``(B, C, H, W)`` and exposure times :math:`t_k`,

    .. math::

        A(x)_k = f\left(\mathrm{clip}(t_k\, x, 0, 1)\right), \qquad
        y = \eta\left(N(A(x))\right), \qquad
        \eta(v) = \frac{\mathrm{round}\left(\mathrm{clip}(v, 0, 1)(2^b - 1)\right)}{2^b - 1},

    where :math:`f` is the camera response (CRF), :math:`N` any deepinv noise model acting on
    the codes and :math:`\eta` the sensor quantisation (:class:`BitDepthQuantizer`). The stack
    has shape ``(B, N, C, H, W)``.

    The exposure times are a buffer of shape ``(N,)`` (every sample) or ``(B, N)`` (one row
    per sample), updated per batch with ``physics.update(exposure_times=t)`` (deepinv's
    per-sample parameter mechanism, also used by :class:`deepinv.Trainer` for datasets that
    yield ``params``). ``y_std``, an optional per-pixel standard deviation of the codes, is a
    buffer updated the same way, for losses that weight by uncertainty.

    :param torch.Tensor, Sequence exposure_times: exposure times in seconds, shape ``(N,)`` or
        ``(B, N)``, finite, ``> 0``, ``N >= 2``, any order.
    :param str, deepinv_icrf.physics.ResponseCurve, torch.nn.Module, Callable response: the
        camera response: a name of :data:`deepinv_icrf.physics.RESPONSE_NAMES` (default
        ``"srgb"``), a :class:`ResponseCurve`, an :class:`deepinv_icrf.models.ICRF` (its
        :meth:`~deepinv_icrf.models.ICRF.response` is used) or its bound ``.response``, or any
        module or callable mapping irradiance ``(..., C, H, W)`` in :math:`[0, 1]` to codes.
        Modules are registered, so ``.to()`` moves them.
    :param int, None bit_depth: bits of the codes (1 to 32); ``None``: no quantisation (codes
        only clipped). Default 8.
    :param deepinv.physics.NoiseModel, None noise_model: noise added to the codes before
        quantisation, e.g. ``deepinv.physics.GaussianNoise(sigma=0.01)``. Default none.
    :param torch.Tensor, None y_std: per-pixel std of the codes (broadcastable to the stack).
        Default ``None``.
    :param torch.device, str, None device: device of the buffers (and of a named response).
    :param torch.dtype, None dtype: dtype of the buffers; ``None`` keeps a float tensor's
        dtype, float32 otherwise.
    :param kwargs: passed to :class:`deepinv.physics.Physics` (``max_iter``, ``tol``, ...).

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.physics import ExposureStack
    >>> physics = ExposureStack(torch.tensor([0.25, 1.0]), response="gamma", bit_depth=8)
    >>> x = torch.full((1, 3, 2, 2), 0.5)
    >>> y = physics(x)
    >>> y.shape
    torch.Size([1, 2, 3, 2, 2])
    >>> y[0, :, 0, 0, 0]
    tensor([0.3882, 0.7294])
    >>> physics.A_dagger(y)[0, 0, 0, 0]
    tensor(0.4992)
    """

    def __init__(
        self,
        exposure_times: Tensor | Sequence[float],
        response: str | nn.Module | Callable[[Tensor], Tensor] = "srgb",
        bit_depth: int | None = 8,
        noise_model: NoiseModel | None = None,
        y_std: Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ) -> None:
        if noise_model is None:
            # deepinv's default ZeroNoise stores a lambda (unpicklable); give it a function
            noise_model = ZeroNoise(noise_model=_identity)
        super().__init__(
            A=_identity,
            noise_model=noise_model,
            sensor_model=BitDepthQuantizer(bit_depth),
            **kwargs,
        )
        self.register_buffer(
            "exposure_times", _exposure_times(exposure_times, dtype).to(device)
        )
        self.register_buffer("y_std", None)
        if y_std is not None:
            self.y_std = _y_std(y_std).to(device=device)
        self.response_module: nn.Module | None = None
        self._response_call = ""
        self._response_fn: Callable[[Tensor], Tensor] | None = None
        self._set_response(response)
        if device is not None:
            if self.response_module is not None:
                self.response_module.to(device)
            self.noise_model.to(device)

    # ------------------------------------------------------------------ response handling
    def _set_response(self, response: object) -> None:
        if isinstance(response, str):
            self.response_module = get_response(response)
            self._response_call = "forward"
        elif isinstance(response, nn.Module):
            self.response_module = response
            icrf_like = callable(getattr(response, "response", None)) and callable(
                getattr(response, "derivative", None)
            )
            self._response_call = "response" if icrf_like else "forward"
        elif inspect.ismethod(response) and isinstance(response.__self__, nn.Module):
            self.response_module = response.__self__
            self._response_call = response.__name__
        elif callable(response):
            self._response_fn = response
        else:
            raise TypeError(
                "Expected `response` to be a response name, a ResponseCurve, an ICRF, an "
                f"nn.Module or a callable, but got {type(response).__name__}."
            )

    @property
    def response(self) -> Callable[[Tensor], Tensor]:
        r"""The camera response (irradiance to codes) used by :meth:`A`."""
        if self.response_module is None:
            return self._response_fn
        if self._response_call == "forward":
            return self.response_module
        return getattr(self.response_module, self._response_call)

    @property
    def bit_depth(self) -> int | None:
        r"""Bits of the codes (``None``: no quantisation)."""
        return self.sensor_model.bit_depth

    def crf(self, x: Tensor) -> Tensor:
        r"""Apply the camera response :math:`f` to irradiance ``x`` in :math:`[0, 1]`."""
        return self.response(x)

    def inverse_response(self, y: Tensor) -> Tensor:
        r"""The inverse response :math:`f^{-1}` (codes to irradiance).

        Exact for a :class:`ResponseCurve` (its ``inverse``) and an ICRF (its ``forward``);
        other responses are tabulated per channel on 4097 points and inverted piecewise
        linearly (they must be non-decreasing).

        :param torch.Tensor y: codes, channels at dimension -3.
        :return: (:class:`torch.Tensor`) irradiance, shape of ``y``.
        """
        module = self.response_module
        if module is not None and self._response_call == "forward":
            inverse = getattr(module, "inverse", None)
            if callable(inverse):
                return inverse(y)
        if module is not None and self._response_call == "response":
            return module(y)
        dtype = torch.float64 if y.dtype == torch.float64 else torch.float32
        channels = y.shape[-3]
        grid = torch.linspace(0.0, 1.0, _TABLE_POINTS, dtype=dtype, device=y.device)
        table = self.crf(grid.expand(channels, 1, _TABLE_POINTS)).reshape(channels, -1)
        return invert_curve(y, table.to(dtype), channel_dim=-3)

    # ------------------------------------------------------------------ parameters
    def update_parameters(
        self,
        exposure_times: Tensor | Sequence[float] | None = None,
        y_std: Tensor | None = None,
        **kwargs: Any,
    ) -> None:
        r"""Update the exposure times and/or the code stds (``None`` leaves a value unchanged).

        :param torch.Tensor, Sequence, None exposure_times: new times, ``(N,)`` or ``(B, N)``,
            finite, ``> 0``, ``N >= 2``; cast to the buffer's device and dtype.
        :param torch.Tensor, None y_std: new per-pixel code stds (finite, ``>= 0``).
        :param kwargs: other parameters, handled by :class:`deepinv.physics.Physics`.
        """
        buf = self.exposure_times
        if exposure_times is not None:
            t = _exposure_times(exposure_times, None)
            self.exposure_times = t.to(device=buf.device, dtype=buf.dtype)
        if y_std is not None:
            self.y_std = _y_std(y_std).to(device=buf.device)
        super().update_parameters(**kwargs)

    def _times_for(self, batch: int) -> Tensor:
        t = self.exposure_times  # checked when stored: its shape against the batch only
        check_exposure_times(t, batch=batch, values=False)
        return t.unsqueeze(0) if t.ndim == 1 else t

    # ------------------------------------------------------------------ operators
    def A(
        self, x: Tensor, exposure_times: Tensor | None = None, **kwargs: Any
    ) -> Tensor:
        r"""Noise-free stack :math:`f(\mathrm{clip}(t_k x, 0, 1))` before quantisation.

        :param torch.Tensor x: radiance, shape ``(B, C, H, W)``, float, ``>= 0``.
        :param torch.Tensor, None exposure_times: if given, replaces the stored times first.
        :return: (:class:`torch.Tensor`) codes in :math:`[0, 1]`, shape ``(B, N, C, H, W)``.
        """
        self.update_parameters(exposure_times=exposure_times, **kwargs)
        check_float(x, "x")
        if x.ndim != 4:
            raise ValueError(
                f"Expected `x` to have shape (B, C, H, W), but got shape {tuple(x.shape)}."
            )
        t = self._times_for(x.shape[0]).to(device=x.device, dtype=x.dtype)
        scaled = (t[:, :, None, None, None] * x.unsqueeze(1)).clamp(0.0, 1.0)
        return self.crf(scaled)

    def forward(self, x: Tensor, **kwargs: Any) -> Tensor:
        r"""Measured stack: quantised, clipped :math:`A(x)` plus noise (deepinv's forward).

        Raises :class:`ValueError` for NaN or infinite radiance (which clipping and
        quantisation would otherwise turn silently into codes).

        :param torch.Tensor x: radiance, shape ``(B, C, H, W)``, float, finite.
        :return: (:class:`torch.Tensor`) codes in :math:`[0, 1]`, shape ``(B, N, C, H, W)``.
        """
        check_float(x, "x")
        check_finite(x, "x")
        return super().forward(x, **kwargs)

    def A_dagger(
        self,
        y: Tensor,
        exposure_times: Tensor | None = None,
        weights: str | Tensor | None = None,
        lower: float | None = None,
        upper: float | None = None,
        **kwargs: Any,
    ) -> Tensor:
        r"""Radiance estimate: linearise with the true inverse response, then merge.

        :math:`\hat x = \mathrm{merge}(y, f^{-1}(y), t)`
        (:func:`deepinv_icrf.functional.weighted_radiance_merge`), the no-learning baseline.

        :param torch.Tensor y: stack, shape ``(B, N, C, H, W)``.
        :param torch.Tensor, None exposure_times: if given, replaces the stored times first.
        :param str, torch.Tensor, None weights: merge weights (default ``"hat"``).
        :param float, None lower: smallest valid code; default one code step
            :math:`1 / (2^b - 1)` (:math:`b = 8` when ``bit_depth`` is ``None``).
        :param float, None upper: largest valid code; default :math:`1 - 1 / (2^b - 1)`.
        :return: (:class:`torch.Tensor`) radiance, shape ``(B, C, H, W)``.
        """
        self.update_parameters(exposure_times=exposure_times, **kwargs)
        check_float(y, "y")
        if y.ndim != 5:
            raise ValueError(
                f"Expected `y` to have shape (B, N, C, H, W), but got shape {tuple(y.shape)}."
            )
        step = 1.0 / (2.0 ** (self.bit_depth or 8) - 1.0)
        lower = step if lower is None else lower
        upper = 1.0 - step if upper is None else upper
        t = self._times_for(y.shape[0])
        return weighted_radiance_merge(
            y, self.inverse_response(y), t, weights=weights, lower=lower, upper=upper
        )

    def extra_repr(self) -> str:
        t = self.exposure_times
        shape = tuple(t.shape)
        return f"exposure_times=shape{shape}, bit_depth={self.bit_depth}"
