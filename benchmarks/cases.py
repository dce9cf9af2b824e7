r"""Synthetic calibration cases the package does not ship: responses, scenes, noise, times.

The package's own benchmarks simulate its demo scene through its built-in response curves
(:mod:`deepinv_icrf.physics.responses`: linear, gamma, sRGB, filmic, exp, log) with Gaussian
code noise. A fit tuned on those can look good and still fail on a camera it has never seen.
This module, imported by the benchmarks only (it is not part of the package), builds cases
from four other things:

- **response families** not shipped by the package (:data:`CURVES`): a film characteristic
  (H&D) curve with a density floor, Mitsunaga-Nayar polynomial responses, consumer tone
  curves (monotone splines in log exposure, with a black-level pedestal and a soft shoulder),
  and a video camera with a pedestal and a highlight knee;
- **scenes** (:data:`SCENES`): scikit-image's bundled photographs (no download) turned into
  radiance maps of 12-16 stops by a smooth illumination field, a window and light sources,
  a procedural scene of gradients and textures, and the package's demo scene as a control;
- **noise** (:data:`NOISES`): Gaussian code noise, shot + read noise in the linear domain
  before the response, in-camera sharpening or blur of the codes, JPEG compression (Pillow);
- **exposure-time scenarios** (:data:`TIME_SCENARIOS`): listed times right, off by up to
  +-10%, rounded to the conventional shutter series (1/60 for 1/64), or a run of frames stuck
  at one time while the listed times double (as in ``living_room1`` and ``desktop`` of
  ``shared/data/real``), on brackets of 3 to 9 exposures, 1 or 2 stops apart.

:func:`make_case` puts one of each together, deterministically from a seed (each part draws
from its own stream, so changing the noise leaves the scene and the times as they were);
:func:`case_grid` lists the cases of the benchmarks' quick and full modes and
:func:`select_cases` filters them. Everything is numpy (float64) apart from the true ICRF,
which is returned as a ``(C, L)`` torch tensor to score fits with
:func:`deepinv_icrf.functional.curve_rmse`.

Conventions: irradiance (exposure) ``x = E t`` is relative, the sensor saturates at ``x = 1``;
a response maps ``x`` in ``[0, 1]`` to codes in ``[floor, 1]`` (``R(0) = floor``, ``R(1) = 1``,
strictly increasing in between). The true ICRF is its inverse, ``0`` at and below the floor
(no exposure gives a darker code), ``1`` at code ``1``: the package's convention
``ICRF(0) = 0``, ``ICRF(1) = 1``. White balance scales a channel's radiance, so it changes
where that channel clips, not its normalised ICRF.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "Response",
    "FilmResponse",
    "PolynomialResponse",
    "ToneCurveResponse",
    "VideoResponse",
    "CURVES",
    "SCENES",
    "NOISES",
    "TIME_SCENARIOS",
    "make_scene",
    "bracket_times",
    "make_case",
    "case_grid",
    "select_cases",
    "case_name",
]


def _rng(seed: int, part: str) -> np.random.Generator:
    # one stream per part of a case, stable across Python runs (no hash randomisation)
    return np.random.default_rng([int(seed), zlib.crc32(part.encode())])


def _per_channel(value: float | Sequence[float], name: str) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(
            f"Expected `{name}` to be a finite float or sequence, but got {value!r}."
        )
    return arr


# ----------------------------------------------------------------------------- responses


class Response:
    r"""A camera response ``code = R_c(x)`` with a floor, and its inverse for scoring.

    Subclasses give the normalised shape :math:`s_c` (monotone, :math:`s_c(0) = 0`,
    :math:`s_c(1) = 1`) as ``_shape`` or its inverse as ``_shape_inverse`` (the other one is
    found by bisection, exact to float64 rounding):

    .. math::

        R_c(x) = b_c + (1 - b_c)\, s_c(\min(\max(x, 0), 1)), \qquad
        \mathrm{ICRF}_c(y) = s_c^{-1}\!\left(\frac{y - b_c}{1 - b_c}\right)
        \text{ for } y > b_c, \; 0 \text{ otherwise},

    with :math:`b_c` the code floor (black-level pedestal, film base density).

    :param str name: the curve's name in tables.
    :param float, tuple floor: code floor :math:`b` in ``[0, 1)`` (one value or one per
        channel). Default 0.
    :param dict params: per-channel parameters (floats or sequences), by name.
    """

    family = ""
    source = ""

    def __init__(self, name: str, floor: float | Sequence[float] = 0.0, **params):
        self.name = name
        self.floor = _per_channel(floor, "floor")
        if np.any(self.floor < 0) or np.any(self.floor >= 1):
            raise ValueError(f"Expected `floor` in [0, 1), but got {floor!r}.")
        self.params = {k: _per_channel(v, k) for k, v in params.items()}
        sizes = {v.size for v in [self.floor, *self.params.values()] if v.size > 1}
        if len(sizes) > 1:
            raise ValueError(
                f"Expected per-channel parameters of {name!r} to agree in length, but got "
                f"{sorted(sizes)}."
            )
        self.channels = sizes.pop() if sizes else None

    def _channel(self, c: int) -> tuple[float, dict[str, Any]]:
        def pick(v: np.ndarray) -> Any:
            return v[c % v.size] if v.ndim == 1 else v

        return float(pick(self.floor)), {k: pick(v) for k, v in self.params.items()}

    # subclasses implement at least one of these two on arrays of [0, 1]
    def _shape(self, x: np.ndarray, **p: Any) -> np.ndarray:
        return _bisect(lambda v: self._shape_inverse(v, **p), x)

    def _shape_inverse(self, y: np.ndarray, **p: Any) -> np.ndarray:
        return _bisect(lambda v: self._shape(v, **p), y)

    def __call__(self, x: np.ndarray, channel_axis: int = -3) -> np.ndarray:
        r"""Codes ``R_c(x)`` in ``[floor, 1]``; ``x`` is clipped to ``[0, 1]`` (saturation).

        :param numpy.ndarray x: relative exposure, channels along ``channel_axis``.
        :param int channel_axis: the channel axis of ``x`` (default -3, as in ``(N, C, H, W)``).
        :return: (:class:`numpy.ndarray`) codes in ``[0, 1]``, same shape.
        """
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        x = np.moveaxis(x, channel_axis, 0)
        out = np.empty_like(x)
        for c in range(x.shape[0]):
            floor, p = self._channel(c)
            out[c] = floor + (1.0 - floor) * self._shape(x[c], **p)
        return np.moveaxis(out, 0, channel_axis)

    def inverse(self, y: np.ndarray, c: int = 0) -> np.ndarray:
        r"""The true ICRF of channel ``c`` at codes ``y`` in ``[0, 1]`` (0 up to the floor)."""
        floor, p = self._channel(c)
        u = np.clip((np.asarray(y, dtype=np.float64) - floor) / (1.0 - floor), 0, 1)
        return self._shape_inverse(u, **p)

    def icrf_curve(self, n_points: int = 256, channels: int = 3) -> torch.Tensor:
        r"""The true ICRF sampled on ``n_points`` uniform codes of ``[0, 1]``: ``(C, L)``."""
        grid = np.linspace(0.0, 1.0, n_points)
        curve = np.stack([self.inverse(grid, c) for c in range(channels)])
        curve[:, 0], curve[:, -1] = 0.0, 1.0
        return torch.from_numpy(curve)

    def describe(self) -> str:
        ps = ", ".join(
            f"{k}={v[0]:g}" if v.size == 1 else f"{k}={'/'.join(f'{x:g}' for x in v)}"
            for k, v in self.params.items()
        )
        floor = (
            f", floor {'/'.join(f'{255 * b:.0f}' for b in self.floor)} codes"
            if np.any(self.floor > 0)
            else ""
        )
        return f"{self.name}: {self.family} ({ps}{floor})"


def _bisect(f: Callable[[np.ndarray], np.ndarray], target: np.ndarray) -> np.ndarray:
    # the solution v in [0, 1] of f(v) = target for a monotone increasing f with f(0) = 0,
    # f(1) = 1; 56 halvings reach float64 resolution
    target = np.asarray(target, dtype=np.float64)
    lo, hi = np.zeros_like(target), np.ones_like(target)
    for _ in range(56):
        mid = 0.5 * (lo + hi)
        below = f(mid) < target
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return np.where(target <= 0, 0.0, np.where(target >= 1, 1.0, 0.5 * (lo + hi)))


class FilmResponse(Response):
    r"""Film characteristic (H&D) curve: an S in log exposure with toe, shoulder and floor.

    Hurter and Driffield (1890) plotted density against log exposure and found the S shape
    every film datasheet still shows: a toe (little density for little light), a straight
    line (the film's gamma) and a shoulder. Written here as a generalised logistic (Richards,
    1959) in :math:`u = \log x`, normalised to reach 1 at saturation:

    .. math::

        s(x) = \frac{\ell(x)}{\ell(1)}, \qquad
        \ell(x) = \big(1 + \nu\, (x_0 / x)^{k}\big)^{-1/\nu},

    with contrast :math:`k`, speed point :math:`x_0` and asymmetry :math:`\nu` (toe and
    shoulder of different lengths); near 0, :math:`s \propto x^{k/\nu}`. The floor is the
    base + fog density of the scan: a film scan never reaches code 0 (Debevec's ``memorial``
    scans sit at codes 15-20 in the dark). The dye layers differ, so the parameters may differ
    per channel.
    """

    family = "film H&D curve"
    source = "Hurter & Driffield 1890 (characteristic curve); Richards 1959 (logistic)"

    def _shape(self, x, k, x0, nu):
        def ell(v):
            with np.errstate(divide="ignore", over="ignore"):
                return (1.0 + nu * (x0 / v) ** k) ** (-1.0 / nu)

        return np.where(x > 0, ell(np.maximum(x, 1e-300)) / ell(1.0), 0.0)


class PolynomialResponse(Response):
    r"""Mitsunaga-Nayar polynomial response: the ICRF is a low-order polynomial of the code.

    Mitsunaga and Nayar ("Radiometric self calibration", CVPR 1999) model the inverse response
    as :math:`g(y) = \sum_{n=1}^{N} c_n y^n` with :math:`\sum_n c_n = 1`, which fits many
    measured responses with :math:`N \le 5`. The coefficients below were chosen by hand, with
    a strictly positive derivative on :math:`[0, 1]` (checked); the response is its inverse.

    :param tuple coeffs: :math:`(c_1, \dots, c_N)` for every channel, or one tuple per channel.
    """

    family = "Mitsunaga-Nayar polynomial"
    source = "Mitsunaga & Nayar, Radiometric self calibration, CVPR 1999"

    def __init__(self, name, coeffs, floor=0.0):
        coeffs = np.asarray(coeffs, dtype=np.float64)
        coeffs = coeffs[None] if coeffs.ndim == 1 else coeffs
        super().__init__(name, floor=floor)
        self.coeffs = coeffs
        self.channels = coeffs.shape[0] if coeffs.shape[0] > 1 else self.channels
        grid = np.linspace(0.0, 1.0, 4097)
        for row in coeffs:
            if not math.isclose(row.sum(), 1.0, abs_tol=1e-12):
                raise ValueError(
                    f"Expected `coeffs` to sum to 1, but got {row.tolist()}."
                )
            deriv = sum(n * c * grid ** (n - 1) for n, c in enumerate(row, start=1))
            if deriv.min() <= 0:
                raise ValueError(
                    f"Expected an increasing polynomial, got {row.tolist()}."
                )

    def _channel(self, c):
        floor, _ = super()._channel(c)
        return floor, {"coeffs": self.coeffs[c % self.coeffs.shape[0]]}

    def _shape_inverse(self, y, coeffs):
        return sum(cn * y**n for n, cn in enumerate(coeffs, start=1))

    def describe(self):
        rows = "/".join("(" + ",".join(f"{c:g}" for c in r) + ")" for r in self.coeffs)
        return f"{self.name}: {self.family} (c={rows})"


class ToneCurveResponse(Response):
    r"""Consumer-camera tone curve: a monotone spline through points in a log-exposure plane.

    A JPEG camera's response is a designed tone curve: a toe that lifts the shadows, a
    mid-tone slope and a soft highlight shoulder, usually drawn through a few control points
    of code against stops. Here a monotone piecewise-cubic Hermite interpolant (Fritsch and
    Carlson, 1980; :class:`scipy.interpolate.PchipInterpolator`) passes through points
    :math:`(u_i, y_i)`, :math:`u` in stops below saturation from :math:`u_0 < 0` to 0, with
    :math:`y_0 = 0`, :math:`y_{\text{last}} = 1`; exposure maps to :math:`u` through
    :math:`\log_2(x + 2^{u_0})`, stretched so that :math:`x = 0 \mapsto u_0` and
    :math:`x = 1 \mapsto 0` (linear in :math:`x` far below :math:`2^{u_0}`, as a sensor is).
    With ``floor``, a black-level pedestal.

    :param tuple points: codes :math:`y_i` at the stops ``stops`` (one tuple, or one per
        channel); increasing, from 0 to 1.
    :param tuple stops: the :math:`u_i` (negative, increasing, ending at 0).
    """

    family = "tone curve (monotone spline in log exposure)"
    source = "PCHIP: Fritsch & Carlson 1980; tone curves as control points in stops"

    def __init__(self, name, stops, points, floor=0.0):
        super().__init__(name, floor=floor)
        self.stops = np.asarray(stops, dtype=np.float64)
        points = np.asarray(points, dtype=np.float64)
        self.points = points[None] if points.ndim == 1 else points
        if self.points.shape[0] > 1:
            self.channels = self.points.shape[0]
        if self.stops[-1] != 0 or np.any(np.diff(self.stops) <= 0):
            raise ValueError(f"Expected increasing `stops` ending at 0, got {stops!r}.")
        for row in self.points:
            if row[0] != 0 or row[-1] != 1 or np.any(np.diff(row) <= 0):
                raise ValueError(
                    f"Expected `points` increasing from 0 to 1, got {row!r}."
                )

    def _channel(self, c):
        floor, _ = super()._channel(c)
        return floor, {"points": self.points[c % self.points.shape[0]]}

    def _shape(self, x, points):
        from scipy.interpolate import PchipInterpolator

        u0 = self.stops[0]
        eps = 2.0**u0
        lo, hi = math.log2(eps), math.log2(1.0 + eps)
        u = u0 + (np.log2(x + eps) - lo) / (hi - lo) * (0.0 - u0)
        return np.clip(PchipInterpolator(self.stops, points)(u), 0.0, 1.0)

    def describe(self):
        rows = "/".join(
            "(" + ",".join(f"{p:.2f}" for p in r[1:-1]) + ")" for r in self.points
        )
        floor = (
            f", pedestal {255 * self.floor[0]:.0f} codes" if self.floor[0] > 0 else ""
        )
        return (
            f"{self.name}: {self.family} (codes {rows} at "
            f"{','.join(f'{s:g}' for s in self.stops[1:-1])} stops{floor})"
        )


class VideoResponse(Response):
    r"""Video camera: BT.709 transfer, highlight knee, black-level pedestal.

    Broadcast and many consumer video cameras encode with the ITU-R BT.709 opto-electronic
    transfer function :math:`V(L) = 4.5 L` for :math:`L < 0.018`, else
    :math:`1.099 L^{0.45} - 0.099`, raise black by a pedestal ("setup", here the floor) and
    compress highlights above a knee point :math:`y_k` so that ``stretch`` times more
    exposure than the nominal white fits under the top code (a kink at the knee, as in the
    cameras):

    .. math::

        v = V(m x), \quad s(x) = v \text{ for } v \le y_k, \quad
        s(x) = y_k + (1 - y_k) \frac{v - y_k}{V(m) - y_k} \text{ above}.
    """

    family = "video: BT.709 + knee + pedestal"
    source = "ITU-R BT.709 OETF; knee and setup of broadcast cameras"

    @staticmethod
    def _bt709(v):
        return np.where(
            v < 0.018, 4.5 * v, 1.099 * np.maximum(v, 0.018) ** 0.45 - 0.099
        )

    def _shape(self, x, knee, stretch):
        v = self._bt709(stretch * x)
        top = float(self._bt709(np.asarray(stretch)))
        return np.where(v <= knee, v, knee + (1 - knee) * (v - knee) / (top - knee))


def _curves() -> dict[str, Response]:
    curves: list[Response] = [
        FilmResponse("film-a", k=1.1, x0=0.2, nu=1.0, floor=16 / 255),
        FilmResponse(
            "film-b", k=(1.5, 1.6, 1.75), x0=(0.3, 0.25, 0.22), nu=0.9, floor=6 / 255
        ),
        FilmResponse("film-c", k=0.8, x0=0.08, nu=1.5, floor=0.0),
        PolynomialResponse("poly-a", (0.30, 0.15, 0.90, -0.35)),
        PolynomialResponse(
            "poly-b",
            (
                (0.12, 0.55, 0.55, -0.22),
                (0.10, 0.45, 0.75, -0.30),
                (0.08, 0.40, 0.90, -0.38),
            ),
        ),
        PolynomialResponse("poly-c", (0.05, 0.90, -1.20, 2.00, -0.75)),
        ToneCurveResponse(
            "tone-a",
            stops=(-12, -8, -6, -4, -2.5, -1.2, -0.5, 0),
            points=(0.0, 0.04, 0.11, 0.27, 0.47, 0.70, 0.87, 1.0),
        ),
        ToneCurveResponse(
            "tone-b",
            stops=(-12, -8, -6, -4, -2.5, -1.2, -0.5, 0),
            points=(0.0, 0.015, 0.05, 0.18, 0.42, 0.74, 0.93, 1.0),
            floor=4 / 255,
        ),
        ToneCurveResponse(
            "tone-c",
            stops=(-12, -8, -6, -4, -2.5, -1.2, -0.5, 0),
            points=(
                (0.0, 0.05, 0.13, 0.30, 0.50, 0.72, 0.88, 1.0),
                (0.0, 0.04, 0.11, 0.27, 0.47, 0.70, 0.87, 1.0),
                (0.0, 0.02, 0.07, 0.21, 0.42, 0.67, 0.85, 1.0),
            ),
        ),
        VideoResponse("video-a", knee=0.85, stretch=2.0, floor=8 / 255),
        VideoResponse("video-b", knee=0.8, stretch=4.0, floor=15 / 255),
    ]
    return {c.name: c for c in curves}


#: The response curves of the cases, by name: ``film-*`` (:class:`FilmResponse`),
#: ``poly-*`` (:class:`PolynomialResponse`), ``tone-*`` (:class:`ToneCurveResponse`),
#: ``video-*`` (:class:`VideoResponse`).
CURVES: dict[str, Response] = _curves()

# --------------------------------------------------------------------------------- scenes

#: scikit-image's sample photographs bundled in its wheel (no download needed).
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")
#: Scene names: the photos, ``procedural`` and the package's ``demo`` scene.
SCENES = (*PHOTOS, "procedural", "demo")


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _photo(name: str, height: int, width: int) -> np.ndarray:
    from PIL import Image
    from skimage import data

    img = getattr(data, name)()
    h, w = img.shape[:2]
    # centre crop to the wanted aspect, then an antialiased resize
    if h * width > w * height:
        ch = round(w * height / width)
        img = img[(h - ch) // 2 : (h - ch) // 2 + ch]
    else:
        cw = round(h * width / height)
        img = img[:, (w - cw) // 2 : (w - cw) // 2 + cw]
    img = Image.fromarray(np.ascontiguousarray(img)).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    return np.asarray(img, dtype=np.float64).transpose(2, 0, 1) / 255.0


def _smooth_field(rng, height, width, n_waves=6, max_freq=2.0) -> np.ndarray:
    # a smooth random field in [0, 1]: a few low-frequency plane waves
    yy, xx = np.meshgrid(
        np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij"
    )
    f = np.zeros((height, width))
    for _ in range(n_waves):
        fy, fx = rng.uniform(-max_freq, max_freq, 2)
        f += rng.uniform(0.5, 1.0) * np.cos(
            2 * np.pi * (fy * yy + fx * xx) + rng.uniform(0, 2 * np.pi)
        )
    return (f - f.min()) / max(np.ptp(f), 1e-12)


def _value_noise(rng, height, width, cells: int) -> np.ndarray:
    # texture: a random grid of cells x cells values, bilinearly upsampled
    from PIL import Image

    grid = rng.uniform(0, 1, (cells, cells)).astype(np.float32)
    return np.asarray(
        Image.fromarray(grid, mode="F").resize(
            (width, height), Image.Resampling.BILINEAR
        ),
        dtype=np.float64,
    )


def _procedural_reflectance(rng, height, width, channels) -> np.ndarray:
    yy, xx = np.meshgrid(
        np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij"
    )
    tex = 0.5 * _value_noise(rng, height, width, 6) + 0.5 * _value_noise(
        rng, height, width, 24
    )
    # gratings of a few frequencies and orientations in bands
    for band in range(3):
        theta = rng.uniform(0, np.pi)
        freq = rng.uniform(4, 24)
        wave = 0.5 + 0.5 * np.sin(
            2 * np.pi * freq * (np.cos(theta) * xx + np.sin(theta) * yy)
        )
        inside = (yy >= band / 3) & (yy < (band + 1) / 3) & (xx > 0.6)
        tex = np.where(inside, wave, tex)
    # a checkerboard patch (sharp edges) and a few disks
    cy, cx = rng.uniform(0.1, 0.5, 2)
    checker = ((np.floor(yy * 24) + np.floor(xx * 24)) % 2).astype(float)
    patch = (np.abs(yy - cy) < 0.15) & (np.abs(xx - cx) < 0.15)
    tex = np.where(patch, 0.1 + 0.9 * checker, tex)
    colours = rng.uniform(0.2, 1.0, (channels, 5))
    refl = np.broadcast_to(tex, (channels, height, width)).copy()
    for d in range(5):
        py, px, r = rng.uniform(0.1, 0.9), rng.uniform(0.1, 0.9), rng.uniform(0.03, 0.1)
        disk = (yy - py) ** 2 + ((xx - px) * width / height) ** 2 < r**2
        refl[:, disk] = colours[:, d, None] * rng.uniform(0.3, 1.0)
    tint = np.stack(
        [0.6 + 0.4 * _smooth_field(rng, height, width, 3, 1.0) for _ in range(channels)]
    )
    return np.clip(refl * tint, 0.0, 1.0)


def _illumination_log2(rng, height, width) -> np.ndarray:
    # log2 illumination before scaling: smooth shading, a window, a few light sources,
    # and a ramp across the frame (the gradient every scene gets)
    yy, xx = np.meshgrid(
        np.linspace(0, 1, height), np.linspace(0, 1, width), indexing="ij"
    )
    field = 3.0 * _smooth_field(rng, height, width) + 2.0 * (
        xx if rng.uniform() < 0.5 else 1 - xx
    )
    # a window: a bright soft-edged rectangle
    wy, wx = rng.uniform(0.05, 0.45), rng.uniform(0.05, 0.6)
    wh, ww = rng.uniform(0.2, 0.35), rng.uniform(0.15, 0.3)
    soft = 0.02
    win = (
        1
        / (1 + np.exp(-(yy - wy) / soft))
        * 1
        / (1 + np.exp((yy - wy - wh) / soft))
        * 1
        / (1 + np.exp(-(xx - wx) / soft))
        * 1
        / (1 + np.exp((xx - wx - ww) / soft))
    )
    field += 5.0 * win
    # light sources: small Gaussian blobs
    for _ in range(int(rng.integers(2, 5))):
        ly, lx, r = (
            rng.uniform(0.05, 0.95),
            rng.uniform(0.05, 0.95),
            rng.uniform(0.01, 0.03),
        )
        blob = np.exp(-((yy - ly) ** 2 + (xx - lx) ** 2) / (2 * r**2))
        field += rng.uniform(6.0, 9.0) * blob
    return field


def _dynamic_range(radiance: np.ndarray) -> float:
    lum = radiance.mean(axis=0)
    return float(np.log2(lum.max() / np.quantile(lum, 0.001)))


def make_scene(
    name: str,
    height: int = 96,
    width: int = 128,
    channels: int = 3,
    seed: int = 0,
    dynamic_range_stops: float = 14.0,
) -> np.ndarray:
    r"""A high-dynamic-range radiance map ``(C, H, W)``, float64, brightest value 1.

    Photos (:data:`PHOTOS`) are linearised (inverse sRGB) into reflectances (floor 0.5%),
    ``procedural`` draws reflectances of gradients, value-noise textures, gratings, a
    checkerboard patch and disks; both are lit by a log-domain illumination field (smooth
    shading, a ramp, a window and 2-4 light sources) scaled so that the luminance spans
    ``dynamic_range_stops`` stops from its 0.1% quantile to its maximum. ``demo`` is the
    package's :func:`deepinv_icrf.data.demo_scene` (its own definition of the range).

    :param str name: a scene of :data:`SCENES`.
    :param int height: image height.
    :param int width: image width.
    :param int channels: 1 (luminance) or 3.
    :param int seed: seed of the illumination and procedural textures.
    :param float dynamic_range_stops: target dynamic range (default 14 stops).
    :return: (:class:`numpy.ndarray`) radiance ``(C, H, W)`` in ``(0, 1]``.
    """
    if name not in SCENES:
        raise ValueError(f"Expected `name` to be one of {SCENES}, but got {name!r}.")
    if channels not in (1, 3):
        raise ValueError(f"Expected `channels` 1 or 3, but got {channels!r}.")
    if name == "demo":
        from deepinv_icrf.data import demo_scene

        scene = demo_scene(
            height,
            width,
            channels=channels,
            dynamic_range_stops=dynamic_range_stops,
            seed=seed,
            dtype=torch.float64,
        )
        return scene[0].numpy()
    rng = _rng(seed, "scene:" + name)
    if name == "procedural":
        refl = _procedural_reflectance(rng, height, width, channels)
    else:
        refl = _srgb_to_linear(_photo(name, height, width))
        if channels == 1:
            refl = np.tensordot([0.2126, 0.7152, 0.0722], refl, axes=1)[None]
    refl = 0.005 + 0.995 * refl
    field = _illumination_log2(rng, height, width)
    # scale the log illumination so that the scene spans the wanted range (bisection: the
    # range grows with the scale)
    lo, hi = 0.0, 4.0
    for _ in range(40):
        mid = 0.5 * (lo + hi)
        if _dynamic_range(refl * np.exp2(mid * field)) < dynamic_range_stops:
            lo = mid
        else:
            hi = mid
    radiance = refl * np.exp2(0.5 * (lo + hi) * field)
    return radiance / radiance.max()


# ---------------------------------------------------------------------------------- noise


@dataclass(frozen=True)
class Noise:
    r"""What happens to an exposure between the lens and the 8-bit file.

    In order: shot + read noise on the relative exposure :math:`x` (std
    :math:`\sqrt{x / w + r^2}`, ``full_well`` :math:`w` electrons at saturation, ``read``
    :math:`r` in units of saturation), the sensor clip to ``[0, 1]``, the response, Gaussian
    code noise (``code``, in ``[0, 1]`` units), in-camera blur (Gaussian ``blur`` pixels) or
    sharpening (unsharp mask of ``sharpen`` amount, radius 1 pixel) of the codes, rounding to
    8 bits and JPEG compression at ``jpeg`` quality (Pillow, its default 4:2:0 chroma
    subsampling for colour).
    """

    code: float = 0.0
    full_well: float | None = None
    read: float = 0.0
    blur: float = 0.0
    sharpen: float = 0.0
    jpeg: int | None = None


#: Noise models by name.
NOISES: dict[str, Noise] = {
    "none": Noise(),
    "gauss-0.005": Noise(code=0.005),
    "gauss-0.01": Noise(code=0.01),
    "gauss-0.02": Noise(code=0.02),
    "shot": Noise(full_well=2000.0, read=0.002),
    "shot-strong": Noise(full_well=400.0, read=0.004),
    "jpeg-90": Noise(code=0.003, jpeg=90),
    "jpeg-75": Noise(full_well=2000.0, read=0.002, jpeg=75),
    "sharpen": Noise(full_well=2000.0, read=0.002, sharpen=0.6, jpeg=90),
    "blur": Noise(code=0.005, blur=0.8),
}


def _gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma=(0, sigma, sigma), mode="reflect")


def _jpeg(codes: np.ndarray, quality: int) -> np.ndarray:
    # codes (C, H, W) uint8 through a JPEG encode/decode with Pillow
    import io

    from PIL import Image

    c = codes.shape[0]
    img = Image.fromarray(codes[0] if c == 1 else codes.transpose(1, 2, 0))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=int(quality))
    out = np.asarray(Image.open(io.BytesIO(buf.getvalue())))
    return out[None] if c == 1 else out.transpose(2, 0, 1)


def _expose(
    radiance: np.ndarray,
    t: float,
    response: Response,
    noise: Noise,
    rng: np.random.Generator,
) -> np.ndarray:
    x = radiance * t
    if noise.full_well is not None or noise.read > 0:
        var = (x / noise.full_well if noise.full_well else 0.0) + noise.read**2
        x = x + np.sqrt(var) * rng.standard_normal(x.shape)
    y = response(np.clip(x, 0.0, 1.0), channel_axis=0)
    if noise.code > 0:
        y = y + noise.code * rng.standard_normal(y.shape)
    if noise.blur > 0:
        y = _gaussian_blur(y, noise.blur)
    if noise.sharpen > 0:
        y = y + noise.sharpen * (y - _gaussian_blur(y, 1.0))
    codes = np.round(np.clip(y, 0.0, 1.0) * 255).astype(np.uint8)
    if noise.jpeg is not None:
        codes = _jpeg(codes, noise.jpeg)
    return codes


# ----------------------------------------------------------------------------------- times

#: Exposure-time scenarios: ``right`` (listed = true), ``jitter`` (true = listed x U(0.9,
#: 1.1)), ``rounded`` (true times powers of two, listed the conventional shutter speeds:
#: 1/60 for 1/64), ``plateau`` (a run of 2-5 consecutive frames stuck at one true time while
#: the listed times go on doubling, later frames continuing from there, as in the real
#: ``living_room1`` and ``desktop``), ``plateau-jitter`` (both).
TIME_SCENARIOS = ("right", "jitter", "rounded", "plateau", "plateau-jitter")

#: Conventional full-stop shutter speeds in seconds (what a camera lists for 2**k s).
_SHUTTER_SERIES = tuple(
    [1 / d for d in (8000, 4000, 2000, 1000, 500, 250, 125, 60, 30, 15, 8, 4, 2)]
    + [1.0, 2.0, 4.0, 8.0, 15.0, 30.0, 60.0]
)


def bracket_times(exposures: int, stops: float, middle: float) -> np.ndarray:
    r"""Times ``middle * 2**(stops * (i - (N - 1) / 2))``, increasing, ``(N,)``."""
    k = np.arange(exposures) - (exposures - 1) / 2
    return middle * np.exp2(stops * k)


def _scenario_times(
    scenario: str, nominal: np.ndarray, rng: np.random.Generator, jitter: float
) -> tuple[np.ndarray, np.ndarray]:
    # (listed, true) times for a nominal bracket of powers of two
    n = nominal.size
    listed, true = nominal.copy(), nominal.copy()
    if scenario == "rounded":
        series = np.asarray(_SHUTTER_SERIES)
        idx = np.abs(np.log2(series)[None] - np.log2(nominal)[:, None]).argmin(1)
        listed = series[idx]
    if scenario.startswith("plateau"):
        start = int(rng.integers(0, n - 1))
        run = int(rng.integers(2, min(5, n - start) + 1))
        stuck = np.arange(start, start + run)
        true[stuck] = nominal[start]
        after = np.arange(start + run, n)
        true[after] = nominal[after] * nominal[start] / nominal[start + run - 1]
    if scenario in ("jitter", "plateau-jitter"):
        true = true * (1.0 + jitter * rng.uniform(-1.0, 1.0, n))
    return listed, true


# ------------------------------------------------------------------------------------ cases


def case_name(spec: dict[str, Any]) -> str:
    r"""A case's short name: ``curve/scene/noise/times/NxS``."""
    return (
        f"{spec['curve']}/{spec['scene']}/{spec['noise']}/{spec['times']}/"
        f"{spec['exposures']}x{spec['stops']:g}"
        + ("/wb" if spec.get("white_balance") else "")
    )


def make_case(
    curve: str | Response = "film-a",
    scene: str = "coffee",
    noise: str | Noise = "gauss-0.01",
    times: str = "jitter",
    exposures: int = 5,
    stops: float = 1.0,
    height: int = 96,
    width: int = 128,
    channels: int = 3,
    seed: int = 0,
    dynamic_range_stops: float = 14.0,
    white_balance: Sequence[float] | None = None,
    jitter: float = 0.1,
    n_points: int = 256,
) -> dict[str, Any]:
    r"""One synthetic bracket with its ground truth.

    The scene's radiance is scaled so that the middle listed time is a power of two near
    1/64 s and its median pixel sits at 18% of saturation there; the frames are exposed at
    the true times, through the noise model and the response, to 8-bit files.

    :param str, Response curve: a name of :data:`CURVES` or a :class:`Response`.
    :param str scene: a name of :data:`SCENES`.
    :param str, Noise noise: a name of :data:`NOISES` or a :class:`Noise`.
    :param str times: a scenario of :data:`TIME_SCENARIOS`.
    :param int exposures: frames in the bracket (>= 2).
    :param float stops: stops between consecutive listed times.
    :param int height: image height.
    :param int width: image width.
    :param int channels: 1 or 3.
    :param int seed: seed of the scene, the times and the noise (each its own stream).
    :param float dynamic_range_stops: the scene's dynamic range (photos, procedural).
    :param tuple white_balance: per-channel gains multiplying the radiance (normalised to a
        largest gain of 1 before the scene's scaling), so that channels clip at different
        exposures; ``None``: none.
    :param float jitter: relative bound of the ``jitter`` scenarios (default 0.1).
    :param int n_points: samples of the returned true ICRF (256 or 4096, say).
    :return: dict with ``images`` (``uint8`` ``(N, H, W, C)``, increasing true exposure
        order as listed), ``listed_times`` and ``true_times`` (``(N,)`` float64 seconds),
        ``true_icrf`` (``(C, L)`` float64 tensor), ``name``, ``spec`` (the arguments),
        ``listed_over_true`` (``(N,)``), ``wrong_steps`` (indices ``i`` where the listed
        ratio of frames ``i``, ``i+1`` differs from the true one by a factor >= 1.5),
        ``radiance`` (``(C, H, W)``, at the scale of the times) and ``dynamic_range_stops``.
    """
    response = CURVES[curve] if isinstance(curve, str) else curve
    noise_model = NOISES[noise] if isinstance(noise, str) else noise
    if times not in TIME_SCENARIOS:
        raise ValueError(f"Expected `times` in {TIME_SCENARIOS}, but got {times!r}.")
    if exposures < 2:
        raise ValueError(f"Expected `exposures` >= 2, but got {exposures!r}.")
    spec = dict(
        curve=response.name,
        scene=scene,
        noise=noise if isinstance(noise, str) else "custom",
        times=times,
        exposures=int(exposures),
        stops=float(stops),
        height=height,
        width=width,
        channels=channels,
        seed=seed,
        dynamic_range_stops=dynamic_range_stops,
        white_balance=None if white_balance is None else tuple(white_balance),
        jitter=jitter,
    )
    radiance = make_scene(scene, height, width, channels, seed, dynamic_range_stops)
    if white_balance is not None:
        gains = np.asarray(white_balance, dtype=np.float64)[:channels]
        radiance = radiance * (gains / gains.max())[:, None, None]
    # the middle time: a power of two near 1/64 s, the scene scaled to put its median at
    # 18% of saturation there
    middle = 2.0**-6
    radiance = radiance * (0.18 / (np.median(radiance.mean(0)) * middle))
    nominal = bracket_times(exposures, stops, middle)
    # each part its own stream, keyed by what it depends on: the same scene for every case
    # of a seed, different time draws and noise for different cases
    key = f"{spec['curve']}:{scene}:{times}:{exposures}:{stops:g}"
    listed, true = _scenario_times(times, nominal, _rng(seed, "times:" + key), jitter)
    rng = _rng(seed, f"noise:{key}:{spec['noise']}:{white_balance}")
    frames = [_expose(radiance, t, response, noise_model, rng) for t in true]
    images = np.stack(frames).transpose(0, 2, 3, 1)
    ratio = listed / true
    step = np.exp(np.abs(np.diff(np.log(ratio))))
    return dict(
        images=np.ascontiguousarray(images),
        listed_times=listed,
        true_times=true,
        true_icrf=response.icrf_curve(n_points, channels),
        name=case_name(spec),
        spec=spec,
        listed_over_true=ratio,
        wrong_steps=[int(i) for i in np.flatnonzero(step >= 1.5)],
        radiance=radiance,
        dynamic_range_stops=_dynamic_range(radiance),
    )


def _spec(curve, scene, noise, times, exposures=5, stops=1.0, **kw) -> dict[str, Any]:
    return dict(
        curve=curve,
        scene=scene,
        noise=noise,
        times=times,
        exposures=exposures,
        stops=stops,
        **kw,
    )


def case_grid(mode: str = "quick") -> list[dict[str, Any]]:
    r"""The cases of the benchmarks: keyword arguments of :func:`make_case` (no sizes).

    Not a full product (thousands of fits): every family, scene, noise model, time scenario
    and bracket appears, each case pairing one of each so that no two cases share all but
    one of them by accident. ``quick``: 8 cases, one per family and time scenario, 5 or 7
    frames; ``full``: 24 cases, every curve and scene, brackets of 3 to 9 frames 1 or 2
    stops apart, white balance on a few.

    :param str mode: ``"quick"`` or ``"full"``.
    :return: (list) dicts of :func:`make_case` arguments.
    """
    quick = [
        _spec("film-a", "coffee", "gauss-0.01", "jitter"),
        _spec("poly-b", "astronaut", "shot", "jitter"),
        _spec("tone-a", "procedural", "jpeg-90", "jitter"),
        _spec("video-a", "chelsea", "gauss-0.02", "jitter"),
        _spec("tone-b", "rocket", "jpeg-75", "right"),
        _spec("film-b", "astronaut", "gauss-0.01", "rounded"),
        _spec("poly-a", "procedural", "shot", "plateau", exposures=7),
        _spec("video-b", "coffee", "sharpen", "plateau-jitter", exposures=7),
    ]
    if mode == "quick":
        return quick
    if mode != "full":
        raise ValueError(f"Expected `mode` 'quick' or 'full', but got {mode!r}.")
    wb = (2.0, 1.0, 1.6)
    return quick + [
        _spec("film-c", "chelsea", "shot-strong", "jitter", 9, 1.0),
        _spec("poly-c", "rocket", "gauss-0.005", "jitter", 5, 2.0),
        _spec("tone-c", "astronaut", "shot", "jitter", 7, 1.0, white_balance=wb),
        _spec("video-b", "procedural", "blur", "jitter", 3, 2.0),
        _spec("film-a", "demo", "gauss-0.02", "jitter", 9, 1.0),
        _spec("tone-b", "coffee", "jpeg-75", "jitter", 5, 1.0, white_balance=wb),
        _spec("film-b", "rocket", "sharpen", "right", 9, 1.0),
        _spec("poly-a", "chelsea", "jpeg-90", "right", 3, 1.0),
        _spec("video-a", "procedural", "gauss-0.01", "right", 5, 2.0),
        _spec("tone-c", "demo", "shot", "rounded", 7, 1.0),
        _spec("poly-b", "coffee", "gauss-0.02", "rounded", 5, 2.0),
        _spec("film-c", "astronaut", "jpeg-90", "plateau", 9, 1.0),
        _spec("tone-a", "chelsea", "gauss-0.01", "plateau", 5, 1.0),
        _spec("video-a", "rocket", "shot-strong", "plateau-jitter", 9, 1.0),
        _spec("poly-c", "procedural", "jpeg-75", "plateau-jitter", 7, 2.0),
        _spec("film-a", "rocket", "shot", "plateau-jitter", 3, 1.0),
    ]


def select_cases(cases: Iterable[dict[str, Any]], spec: str) -> list[dict[str, Any]]:
    r"""Filter cases by a selection ``"key=a,b;key=c"`` (keys: curve, family, scene, noise,
    times, exposures, stops); a value matches a case whose field starts with it (``film``
    matches ``film-a``), ``family`` is the curve name's prefix. ``""`` or ``"all"``: all.

    :param iterable cases: dicts of :func:`make_case` arguments.
    :param str spec: the selection.
    :return: (list) the matching cases, in order.
    """
    cases = list(cases)
    if spec in ("", "all"):
        return cases
    keys = ("curve", "family", "scene", "noise", "times", "exposures", "stops")
    rules: dict[str, list[str]] = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        key, sep, values = part.partition("=")
        key = key.strip()
        if not sep or key not in keys:
            raise ValueError(
                f"Expected `cases` as 'key=a,b;key=c' with keys {keys}, but got {part!r}."
            )
        rules[key] = [v.strip() for v in values.split(",") if v.strip()]

    def field_of(case: dict[str, Any], key: str) -> str:
        if key == "family":
            return case["curve"].split("-")[0]
        if key == "stops":
            return f"{case['stops']:g}"
        return str(case[key])

    return [
        c
        for c in cases
        if all(
            any(field_of(c, k) == v or field_of(c, k).startswith(v) for v in vals)
            for k, vals in rules.items()
        )
    ]
