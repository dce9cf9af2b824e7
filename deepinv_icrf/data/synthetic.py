r"""Synthetic exposure stacks with a known camera response: datasets and folders of photos."""

from __future__ import annotations

import csv
import io as _stdio
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf.bracket import check_bit_depth
from deepinv_icrf.data.demo import demo_exposure_times, demo_scene
from deepinv_icrf.io import atomic_write, write_image, write_json
from deepinv_icrf.physics import ExposureStack, ResponseCurve, get_response

__all__ = ["SyntheticExposureStackDataset", "write_synthetic_folder"]


def _response(response: str | ResponseCurve) -> ResponseCurve:
    if isinstance(response, str):
        return get_response(response)
    if not isinstance(response, ResponseCurve):
        raise TypeError(
            "Expected `response` to be a response name or a ResponseCurve, but got "
            f"{type(response).__name__}."
        )
    return response


def _check_count(value: object, name: str, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"Expected `{name}` to be an int >= {low}, but got {value!r}.")
    return value


class SyntheticExposureStackDataset(torch.utils.data.Dataset):
    r"""Exposure stacks of synthetic HDR scenes through a camera with a known response.

    Item ``i`` images the scene :func:`~deepinv_icrf.data.demo_scene` (seed ``seed + i``) with
    :class:`~deepinv_icrf.physics.ExposureStack`:

    .. math::

        y_k = \eta\left(f(\mathrm{clip}(t_k x, 0, 1)) + \sigma n_k\right), \qquad
        t_k = t_1\, 2^{s (k - 1)},

    with :math:`f` the response, :math:`n_k` standard Gaussian noise drawn from a generator
    seeded by ``seed + i`` (items are identical on every access) and :math:`\eta` the
    ``bit_depth`` quantisation. The true inverse response is :attr:`true_curve`.

    :param int n_samples: number of stacks (default 1).
    :param int n_exposures: exposures per stack :math:`N \ge 2` (default 9).
    :param int height: image height (default 64).
    :param int width: image width (default 80).
    :param int channels: colour channels (default 3).
    :param str, deepinv_icrf.physics.ResponseCurve response: the camera response (default
        ``"srgb"``), a name of :data:`deepinv_icrf.physics.RESPONSE_NAMES` or a curve.
    :param int bit_depth: bits of the codes (default 8).
    :param float noise_sigma: std :math:`\sigma` of the code noise (default 0.004; 0: none).
    :param float stops_apart: :math:`s`, stops between exposures (default 1).
    :param float shortest: :math:`t_1` in seconds (default 1/4).
    :param int seed: base seed (default 0).
    :param bool as_dict: items as ``{"y": y, "params": {"exposure_times": t}}`` for
        :class:`deepinv.Trainer` (default ``False``: ``(y, t)``).

    |sep|

    :Example:

    >>> from deepinv_icrf.data import SyntheticExposureStackDataset
    >>> data = SyntheticExposureStackDataset(n_exposures=3, height=8, width=6, response="gamma")
    >>> y, t = data[0]
    >>> tuple(y.shape), t.tolist(), tuple(data.true_curve.shape)
    ((3, 3, 8, 6), [0.25, 0.5, 1.0], (3, 256))
    """

    def __init__(
        self,
        n_samples: int = 1,
        n_exposures: int = 9,
        height: int = 64,
        width: int = 80,
        channels: int = 3,
        response: str | ResponseCurve = "srgb",
        bit_depth: int = 8,
        noise_sigma: float = 0.004,
        stops_apart: float = 1.0,
        shortest: float = 0.25,
        seed: int = 0,
        as_dict: bool = False,
    ) -> None:
        super().__init__()
        self.n_samples = _check_count(n_samples, "n_samples", 1)
        _check_count(n_exposures, "n_exposures", 2)
        self.height = _check_count(height, "height", 1)
        self.width = _check_count(width, "width", 1)
        self.channels = _check_count(channels, "channels", 1)
        self.bit_depth = check_bit_depth(bit_depth, optional=False)
        if not (np.isfinite(noise_sigma) and noise_sigma >= 0):
            raise ValueError(
                f"Expected `noise_sigma` to be finite and >= 0, but got {noise_sigma!r}."
            )
        self.response = _response(response)
        self.noise_sigma = float(noise_sigma)
        self.seed = int(seed)
        self.as_dict = as_dict
        self.exposure_times = demo_exposure_times(n_exposures, stops_apart, shortest)

    @property
    def true_curve(self) -> Tensor:
        r"""The true ICRF ``(C, 256)`` (float64) of the simulated camera."""
        return self.icrf_curve(256)

    def icrf_curve(self, n_points: int = 256) -> Tensor:
        r"""The true ICRF sampled at ``n_points`` uniform codes, ``(C, n_points)`` float64."""
        return self.response.icrf_curve(n_points=n_points, channels=self.channels)

    def radiance(self, index: int) -> Tensor:
        r"""The scene radiance ``(C, H, W)`` of item ``index`` (the HDR ground truth)."""
        if not 0 <= index < self.n_samples:
            raise IndexError(f"index {index} out of range for {self.n_samples} samples")
        return demo_scene(
            self.height, self.width, self.channels, seed=self.seed + index
        )[0]

    def physics(self, index: int = 0) -> ExposureStack:
        r"""The :class:`~deepinv_icrf.physics.ExposureStack` that simulates item ``index``."""
        import deepinv as dinv

        noise = None
        if self.noise_sigma > 0:
            rng = torch.Generator().manual_seed(self.seed + index)
            noise = dinv.physics.GaussianNoise(sigma=self.noise_sigma, rng=rng)
        return ExposureStack(
            self.exposure_times,
            response=self.response,
            bit_depth=self.bit_depth,
            noise_model=noise,
        )

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, index: int):
        x = self.radiance(index)
        with torch.no_grad():
            y = self.physics(index)(x.unsqueeze(0))[0]
        t = self.exposure_times.to(y.dtype)
        if self.as_dict:
            return {"y": y, "params": {"exposure_times": t}}
        return y, t


def write_synthetic_folder(
    folder: str | os.PathLike,
    *,
    n_exposures: int = 5,
    height: int = 32,
    width: int = 48,
    channels: int = 3,
    response: str | ResponseCurve = "srgb",
    bit_depth: int = 8,
    noise_sigma: float = 0.0,
    fmt: str = "jpg",
    exif: bool = True,
    sidecar: str | None = None,
    stops_apart: float = 1.0,
    shortest: float = 0.125,
    seed: int = 0,
) -> Path:
    r"""Write a synthetic bracketed stack as image files, for tests and examples.

    The stack is item 0 of :class:`SyntheticExposureStackDataset` (same arguments), written as
    ``exposure_00.<fmt>``, ``exposure_01.<fmt>``, ... (shortest first), each with its EXIF
    ``ExposureTime`` when ``exif`` is true, and optionally a sidecar file
    ``exposures.csv`` or ``exposures.json``.

    :param str, os.PathLike folder: destination folder (created).
    :param int n_exposures: number of exposures (default 5).
    :param int height: image height (default 32).
    :param int width: image width (default 48).
    :param int channels: 1 (grey) or 3 (default).
    :param str, deepinv_icrf.physics.ResponseCurve response: camera response (default ``"srgb"``).
    :param int bit_depth: 8 (default) or 16 (PNG or TIFF only).
    :param float noise_sigma: code noise std (default 0).
    :param str fmt: ``"jpg"`` (default), ``"png"`` or ``"tif"``.
    :param bool exif: write EXIF ``ExposureTime`` (default ``True``).
    :param str, None sidecar: ``None`` (default), ``"csv"`` or ``"json"``.
    :param float stops_apart: stops between exposures (default 1).
    :param float shortest: shortest exposure time in seconds (default 1/8).
    :param int seed: seed of the scene and noise (default 0).
    :return: (:class:`pathlib.Path`) the folder.

    |sep|

    :Example:

    >>> import tempfile
    >>> from deepinv_icrf.data import write_synthetic_folder
    >>> folder = write_synthetic_folder(tempfile.mkdtemp(), n_exposures=2, sidecar="csv")
    >>> sorted(p.name for p in folder.iterdir())
    ['exposure_00.jpg', 'exposure_01.jpg', 'exposures.csv']
    """
    if fmt not in ("jpg", "png", "tif"):
        raise ValueError(
            f"Expected `fmt` to be one of ('jpg', 'png', 'tif'), but got {fmt!r}."
        )
    check_bit_depth(bit_depth, optional=False, allowed=(8, 16))
    if bit_depth == 16 and fmt == "jpg":
        raise ValueError(
            "JPEG holds 8-bit codes only: use fmt='png' or 'tif' for 16 bits."
        )
    if channels not in (1, 3):
        raise ValueError(f"Expected `channels` to be 1 or 3, but got {channels!r}.")
    if sidecar not in (None, "csv", "json"):
        raise ValueError(
            f"Expected `sidecar` to be one of (None, 'csv', 'json'), but got {sidecar!r}."
        )
    data = SyntheticExposureStackDataset(
        n_samples=1,
        n_exposures=n_exposures,
        height=height,
        width=width,
        channels=channels,
        response=response,
        bit_depth=bit_depth,
        noise_sigma=noise_sigma,
        stops_apart=stops_apart,
        shortest=shortest,
        seed=seed,
    )
    y, t = data[0]
    scale = 2**bit_depth - 1
    codes = torch.round(y.double() * scale).permute(0, 2, 3, 1).numpy()
    codes = codes.astype(np.uint8 if bit_depth == 8 else np.uint16)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    times = t.double().tolist()
    names = []
    for k in range(n_exposures):
        name = f"exposure_{k:02d}.{fmt}"
        write_image(
            folder / name,
            codes[k],
            exposure_time=times[k] if exif else None,
            quality=98,
        )
        names.append(name)
    if sidecar == "json":
        write_json(folder / "exposures.json", dict(zip(names, times, strict=True)))
    elif sidecar == "csv":
        buf = _stdio.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["filename", "exposure_time"])
        writer.writerows(zip(names, [repr(v) for v in times], strict=True))
        with atomic_write(folder / "exposures.csv") as fh:
            fh.write(buf.getvalue())
    return folder
