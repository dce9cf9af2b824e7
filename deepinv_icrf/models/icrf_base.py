r"""The inverse camera response function (ICRF) without deepinv: :class:`ICRFBase`.

Everything :class:`~deepinv_icrf.models.ICRF` does (the curve, its evaluation, files) lives
here, on a plain :class:`torch.nn.Module`; :class:`~deepinv_icrf.models.ICRF` adds deepinv's
:class:`~deepinv.models.Reconstructor` base. Importing deepinv costs 1.5-3 s (it imports
torchvision and ``torch._dynamo``), so the fits build an :class:`ICRFBase` and
:func:`~deepinv_icrf.fit_icrf` turns it into an :class:`~deepinv_icrf.models.ICRF` at the end;
the command line never imports deepinv.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from deepinv_icrf._checks import check_band, check_float, check_in
from deepinv_icrf.bracket import check_bit_depth
from deepinv_icrf.functional.interp import curve_slope, interp_curve, invert_curve
from deepinv_icrf.models.curve_file import (  # noqa: F401 - the format's names, also here
    CODE_METADATA,
    CURVE_TOL,
    FORMAT_TAG,
    FORMAT_VERSION,
    MIN_SLOPE,
    PARAMETERIZATIONS,
    SAVED_DTYPES,
    check_monotone_curve,
    curve_of,
    curve_to_raw,
    read_icrf_file,
)
from deepinv_icrf.physics.responses import ResponseCurve, get_response

if TYPE_CHECKING:
    from deepinv.physics import Physics

__all__ = ["ICRFBase"]

INITS = ("identity", "gamma")


def _check_int(value: object, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"Expected `{name}` to be an int, but got {value!r}.")
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"Expected `{name}` to be {bound}, but got {value}.")
    return value


class ICRFBase(nn.Module):
    r"""The ICRF as a plain :class:`torch.nn.Module`: :class:`~deepinv_icrf.models.ICRF`
    without deepinv's :class:`~deepinv.models.Reconstructor` base, so that using it never
    imports deepinv.

    The same arguments, curve, evaluation and files as :class:`~deepinv_icrf.models.ICRF`
    (which see for the maths); :meth:`ICRF.from_base <deepinv_icrf.models.ICRF.from_base>`
    turns one into the other. The fits build this class and
    :func:`~deepinv_icrf.fit_icrf` returns an :class:`~deepinv_icrf.models.ICRF` unless
    asked not to (``reconstructor=False``, what the command line does).

    |sep|

    :Example:

    >>> import torch
    >>> from deepinv_icrf.models.icrf_base import ICRFBase
    >>> model = ICRFBase(channels=1, n_points=5, init="gamma", gamma=2.0)
    >>> model(torch.tensor([0.5, 0.625]).view(1, 1, 2, 1)).detach().flatten()
    tensor([0.2500, 0.4062])
    """

    def __init__(
        self,
        channels: int = 3,
        n_points: int = 256,
        parameterization: str = "monotone",
        init: str | Tensor = "identity",
        gamma: float | Sequence[float] = 2.2,
        bit_depth: int | None = 8,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        # no device here: deepinv's Reconstructor takes one, nn.Module does not (the
        # parameters are made on `device` below)
        super().__init__()
        self._channels = _check_int(channels, "channels", 1)
        self._n_points = _check_int(n_points, "n_points", 2)
        check_in(parameterization, "parameterization", PARAMETERIZATIONS)
        self._parameterization = parameterization
        self._bit_depth = check_bit_depth(bit_depth)
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise TypeError(
                f"Expected `dtype` to be a floating-point torch.dtype, but got {dtype!r}."
            )
        self.metadata: dict[str, Any] = {}

        curve = self._initial_curve(init, gamma)  # float64 (C, L), on CPU
        raw = self._curve_to_raw(curve, "init")
        self.params = nn.ParameterList(
            [nn.Parameter(r.to(device=device, dtype=dtype)) for r in raw]
        )
        # optional confidence band (2, C, L): lower and upper edge; saved to JSON by save(),
        # kept out of state_dict so checkpoints of models with and without one load alike
        self.register_buffer("band", None, persistent=False)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "band" and value is not None:
            self._check_band(value)
        super().__setattr__(name, value)

    def _check_band(self, band: object) -> None:
        r"""Refuse a confidence band that is not ``(2, C, L)`` finite with lower <= upper."""
        shape = (2, self._channels, self._n_points)
        if not isinstance(band, Tensor) or not band.is_floating_point():
            raise TypeError(
                f"Expected `band` to be a float tensor {shape} (lower and upper edges), but "
                f"got {type(band).__name__}"
                + (f" of dtype {band.dtype}" if isinstance(band, Tensor) else "")
                + "."
            )
        if tuple(band.shape) != shape:
            raise ValueError(
                f"Expected `band` of shape {shape} (lower and upper edges of the curve), but "
                f"got shape {tuple(band.shape)}."
            )
        check_band(band[0], band[1], "`band`")

    # ------------------------------------------------------------------ construction
    def _initial_curve(
        self, init: str | Tensor, gamma: float | Sequence[float]
    ) -> Tensor:
        C, L = self._channels, self._n_points
        grid = torch.linspace(0.0, 1.0, L, dtype=torch.float64)
        if isinstance(init, Tensor):
            check_float(init, "init")
            curve = init.detach().to(device="cpu", dtype=torch.float64)
            if curve.ndim == 1:
                curve = curve.unsqueeze(0)
            if curve.ndim != 2 or curve.shape[1] != L or curve.shape[0] not in (1, C):
                raise ValueError(
                    f"Expected `init` to have shape ({C}, {L}) or ({L},) (channels, n_points), "
                    f"but got shape {tuple(init.shape)}."
                )
            if not bool(torch.isfinite(curve).all()):
                raise ValueError(
                    "Expected `init` to be finite, but it holds NaN or inf."
                )
            return curve.expand(C, L).clone()
        check_in(init, "init", INITS)
        if init == "identity":
            return grid.expand(C, L).clone()
        g = torch.tensor(gamma, dtype=torch.float64).reshape(-1)
        if g.numel() not in (1, C) or not all(
            math.isfinite(v) and v > 0 for v in g.tolist()
        ):
            raise ValueError(
                f"Expected `gamma` to be one positive float or {C} of them, but got {gamma!r}."
            )
        return grid.unsqueeze(0) ** g.unsqueeze(1).expand(C, 1)

    def _curve_to_raw(self, curve: Tensor, name: str) -> list[Tensor]:
        return curve_to_raw(curve, self._parameterization, name)

    # ------------------------------------------------------------------ properties
    @property
    def channels(self) -> int:
        r"""Number of channels :math:`C`."""
        return self._channels

    @property
    def n_points(self) -> int:
        r"""Number of grid points :math:`L`."""
        return self._n_points

    @property
    def bit_depth(self) -> int | None:
        r"""Bit depth of the codes the curve is meant for."""
        return self._bit_depth

    @property
    def parameterization(self) -> str:
        r"""``"monotone"`` or ``"free"``."""
        return self._parameterization

    @property
    def curve(self) -> Tensor:
        r"""The curve :math:`g_{c,k}`, shape ``(C, L)``, differentiable in the parameters."""
        return curve_of(torch.stack(list(self.params), dim=0), self._parameterization)

    def channel_parameters(self, c: int) -> list[nn.Parameter]:
        r"""The parameters that affect channel ``c`` only.

        :param int c: channel index in ``[0, C)``.
        :return: (list) the parameters of that channel.
        """
        if isinstance(c, bool) or not isinstance(c, int) or not 0 <= c < self._channels:
            raise ValueError(
                f"Expected `c` to be an int in [0, {self._channels}), but got {c!r}."
            )
        return [self.params[c]]

    # ------------------------------------------------------------------ evaluation
    def _check_y(self, y: Tensor, name: str) -> None:
        check_float(y, name)
        if y.ndim < 3 or y.shape[-3] != self._channels:
            raise ValueError(
                f"Expected `{name}` to have {self._channels} channels at dimension -3 "
                f"(shape (B, N, C, H, W) or (B, C, H, W)), but got shape {tuple(y.shape)}."
            )

    def forward(
        self, y: Tensor, physics: Physics | None = None, **kwargs: Any
    ) -> Tensor:
        r"""Linearise codes: :math:`x = g(y)`, per channel (dimension -3).

        When every value of ``y`` is a code :math:`k / (2^b - 1)` of the model's
        :attr:`bit_depth` (checked on every value, one device synchronisation), the curve is
        sampled at every code once and looked up (a gather; its gradient to the parameters a
        scatter-add); other input (continuous values, NaN) is interpolated. Both give the
        same values (:func:`deepinv_icrf.functional.interp_curve` with ``bit_depth``). NaN
        codes give NaN.

        :param torch.Tensor y: codes in :math:`[0, 1]`, shape ``(B, N, C, H, W)`` or
            ``(B, C, H, W)`` (any shape with ``C`` at dimension -3), float.
        :param deepinv.physics.Physics physics: unused (deepinv reconstructor interface).
        :return: (:class:`torch.Tensor`) irradiance, shape of ``y``.
        """
        self._check_y(y, "y")
        return interp_curve(y, self.curve, channel_dim=-3, bit_depth=self._bit_depth)

    def derivative(self, y: Tensor) -> Tensor:
        r"""Slope :math:`g_c'(y)` (centred difference at knots,
        :func:`deepinv_icrf.functional.curve_slope`).

        :param torch.Tensor y: codes, ``C`` at dimension -3.
        :return: (:class:`torch.Tensor`) slopes, shape of ``y``.
        """
        self._check_y(y, "y")
        return curve_slope(y, self.curve, channel_dim=-3)

    def response(self, x: Tensor) -> Tensor:
        r"""The camera response :math:`g^{-1}` (irradiance to codes), to simulate or re-encode.

        Exact inverse of :meth:`forward` for a strictly increasing curve (any ``"monotone"``
        one). A ``"free"`` curve that decreases somewhere has no inverse: the result is
        then unspecified (no error is raised, this is a hot path).

        :param torch.Tensor x: irradiance in :math:`[0, 1]`, ``C`` at dimension -3.
        :return: (:class:`torch.Tensor`) codes in :math:`[0, 1]`, shape of ``x``.
        """
        self._check_y(x, "x")
        return invert_curve(x, self.curve, channel_dim=-3)

    def extra_repr(self) -> str:
        return (
            f"channels={self._channels}, n_points={self._n_points}, "
            f"parameterization={self._parameterization!r}, bit_depth={self._bit_depth}"
        )

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_response(
        cls,
        response: ResponseCurve | str,
        n_points: int = 256,
        channels: int = 3,
        **kwargs: Any,
    ) -> ICRFBase:
        r"""The true ICRF of a built-in response curve.

        :param deepinv_icrf.physics.ResponseCurve, str response: the curve, or its name (default
            parameters; build the curve with :func:`deepinv_icrf.physics.get_response` for
            others).
        :param int n_points: grid size. Default 256.
        :param int channels: number of channels. Default 3.
        :param kwargs: other :class:`ICRF` arguments (``parameterization``, ``bit_depth``,
            ``dtype``, ``device``).
        :return: (:class:`ICRF`) the model, initialised with the sampled true inverse.

        :Example:

        >>> from deepinv_icrf.models import ICRF
        >>> model = ICRF.from_response("srgb", n_points=5, channels=1)
        >>> model.curve.detach()
        tensor([[0.0000, 0.0509, 0.2140, 0.5225, 1.0000]])
        """
        if isinstance(response, str):
            response = get_response(response)
        if "init" in kwargs:
            raise TypeError("ICRF.from_response() sets `init` itself; do not pass it.")
        curve = response.icrf_curve(n_points=n_points, channels=channels)
        return cls(channels=channels, n_points=n_points, init=curve, **kwargs)

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike, **metadata: Any) -> None:
        r"""Write the model to a plain JSON file (no pickle).

        The file holds ``format`` (``"deepinv-icrf/icrf"``), ``version``, ``channels``,
        ``n_points``, ``bit_depth``, ``parameterization``, ``curve`` (``C`` lists of ``L``
        values), ``parameters`` (the raw per-channel parameters, for an exact round trip) and
        ``metadata`` (the keyword arguments, which must be JSON-serialisable), and ``band``
        (``{"lower": ..., "upper": ...}``, ``C`` lists of ``L`` values each) when the model holds
        a confidence band (``model.band``, shape ``(2, C, L)``).

        :param str, os.PathLike path: file to write.
        :param metadata: user metadata (e.g. camera model, exposure times).
        """
        with torch.no_grad():
            curve = self.curve.detach().to("cpu", torch.float64)
            raw = [p.detach().to("cpu", torch.float64).tolist() for p in self.params]
        if not bool(torch.isfinite(curve).all()):
            raise ValueError("Cannot save an ICRF whose curve holds NaN or inf values.")
        doc = {
            "format": FORMAT_TAG,
            "version": FORMAT_VERSION,
            "channels": self._channels,
            "n_points": self._n_points,
            "bit_depth": self._bit_depth,
            "parameterization": self._parameterization,
            "dtype": str(self.params[0].dtype).replace("torch.", ""),
            "curve": curve.tolist(),
            "parameters": raw,
            "metadata": {**self.metadata, **metadata},
        }
        if self.band is not None:
            band = self.band.detach().to("cpu", torch.float64)
            doc["band"] = {"lower": band[0].tolist(), "upper": band[1].tolist()}
        try:
            text = json.dumps(doc, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise TypeError(f"ICRF metadata must be JSON-serialisable: {err}") from err
        from deepinv_icrf.io import atomic_write  # temp file + rename: no partial file

        with atomic_write(path) as fh:
            fh.write(text)

    @classmethod
    def load(
        cls, path: str | os.PathLike, device: torch.device | str = "cpu"
    ) -> ICRFBase:
        r"""Read a model written by :meth:`save`, validating every field.

        :param str, os.PathLike path: file to read.
        :param torch.device, str device: device of the parameters. Default ``"cpu"``.
        :return: (:class:`ICRF`) the model; its ``metadata`` attribute holds the saved metadata.
        :raises FileNotFoundError: if the file does not exist.
        :raises ValueError: naming the file and the problem (not JSON, or JSON beyond the
            limits of :func:`deepinv_icrf.io.read_json`: larger than 64 MB, nested deeper
            than 32, a number longer than 40 characters, a key given twice; wrong format tag
            or version, missing keys, wrong lengths, non-finite values, a dtype other than
            those of :data:`SAVED_DTYPES`, a curve the parameterization cannot represent, a
            band whose edges cross, a metadata ``floor`` or ``code_std`` that is not one
            number in ``[0, 1]`` per channel).
        """
        file = read_icrf_file(path)  # every check of the format: curve_file.py
        try:
            model = cls(
                channels=file.channels,
                n_points=file.n_points,
                parameterization=file.parameterization,
                init=file.table,
                bit_depth=file.bit_depth,
                dtype=file.dtype,
                device=device,
            )
        except ValueError as err:
            raise ValueError(f"ICRF file {os.fspath(path)!r}: {err}") from err
        if file.listed_parameters:  # an exact round trip of the saved parameters
            with torch.no_grad():
                for p, r in zip(model.params, file.parameters, strict=True):
                    p.copy_(r.to(p.dtype))
        model.metadata = dict(file.metadata)
        if file.band is not None:
            model.band = file.band.to(device=device, dtype=file.dtype)
        return model

    @classmethod
    def from_opencv_csv(
        cls,
        path: str | os.PathLike,
        parameterization: str = "free",
        device: torch.device | str = "cpu",
    ) -> ICRFBase:
        r"""An ICRF from a camera response saved in OpenCV's CSV layout.

        OpenCV's calibrators return, per 8-bit code :math:`k` and channel (B, G, R), the
        irradiance :math:`r_{c,k}` that gives the code, up to a scale per channel
        (:func:`deepinv_icrf.io.read_opencv_response`). The ICRF is that curve in R, G, B
        order, scaled to 1 at the top code:

        .. math::

            g_{c,k} = r_{c,k} / r_{c,255}.

        Its start :math:`g_{c,0}` is kept (OpenCV's curves do not pass through 0), so the
        default parameterization is ``"free"``; ``"monotone"`` needs a non-decreasing curve
        with :math:`g_{c,0} \le 10^{-4}`.

        :param str, os.PathLike path: the CSV file (256 rows; 3 columns B, G, R, or 1).
        :param str parameterization: ``"free"`` (default) or ``"monotone"``.
        :param torch.device, str device: device of the parameters. Default ``"cpu"``.
        :return: (:class:`ICRF`) 256 points, ``bit_depth`` 8; ``metadata`` records the file
            and the scales :math:`r_{c,255}`.
        :raises ValueError: naming the file: see :func:`deepinv_icrf.io.read_opencv_response`,
            a top code at 0, a curve the parameterization cannot represent.

        |sep|

        :Example:

        >>> import tempfile, pathlib, torch
        >>> from deepinv_icrf.models import ICRF
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "response.csv"
        >>> ICRF(init="gamma").save_opencv_csv(path)
        >>> back = ICRF.from_opencv_csv(path)
        >>> bool(torch.allclose(back.curve, ICRF(init="gamma").curve, atol=1e-6))
        True
        """
        from deepinv_icrf.io.curves import read_opencv_response

        check_in(parameterization, "parameterization", PARAMETERIZATIONS)
        where = f"OpenCV response file {os.fspath(path)!r}"
        table = (
            torch.from_numpy(read_opencv_response(path)).flip(1).T
        )  # (C, 256) R, G, B
        top = table[:, -1]
        if not bool((top > 0).all()):
            raise ValueError(
                f"{where}: the response at code 255 is 0 for channel(s) "
                f"{(top <= 0).nonzero().flatten().tolist()}; it cannot be scaled to 1."
            )
        curve = table / top[:, None]
        try:
            model = cls(
                channels=curve.shape[0],
                n_points=curve.shape[1],
                parameterization=parameterization,
                init=curve,
                bit_depth=8,
                device=device,
            )
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from err
        model.metadata = {
            "source": "OpenCV response CSV",
            "file": os.fspath(path),
            "opencv_scale": top.tolist(),
        }
        return model

    def save_opencv_csv(self, path: str | os.PathLike, delimiter: str = ",") -> None:
        r"""Write the curve in OpenCV's response CSV layout (256 rows, columns B, G, R).

        The curve is sampled at the 256 codes :math:`k / 255` (exactly its points when
        ``n_points`` is 256) and written, atomically, as
        :func:`deepinv_icrf.io.write_opencv_response` does; load it for OpenCV with
        ``np.loadtxt(path, delimiter=",").reshape(256, 1, 3).astype(np.float32)`` and pass
        it to ``cv2.createMergeDebevec().process(images, times, response)``.

        :param str, os.PathLike path: the destination.
        :param str delimiter: ``","`` (default) or ``";"``.
        :raises ValueError: for an ICRF with other than 1 or 3 channels, or a curve with
            negative or non-finite values.
        """
        from deepinv_icrf.io.curves import OPENCV_LEVELS, write_opencv_response

        if self._channels not in (1, 3):
            raise ValueError(
                f"OpenCV's layout holds 1 or 3 channels, but this ICRF has {self._channels}."
            )
        with torch.no_grad():
            curve = self.curve.detach().to("cpu", torch.float64)
            codes = torch.linspace(0.0, 1.0, OPENCV_LEVELS, dtype=torch.float64)
            sampled = interp_curve(
                codes.expand(self._channels, -1), curve, channel_dim=-2
            )
        write_opencv_response(path, sampled.flip(0).T.numpy(), delimiter=delimiter)
