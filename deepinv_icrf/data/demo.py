r"""The embedded demo data: a procedural HDR scene and the exposure stack a known camera makes of it.

Nothing is downloaded or shipped as a file: the scene is generated deterministically from a seed,
so the README command, the tests and the gallery all see the same pixels on every machine.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["demo_scene", "demo_exposure_times"]


def _smooth_noise(
    channels: int, height: int, width: int, cells: int, generator: torch.Generator
) -> Tensor:
    r"""Low-frequency random field in ``[0, 1]``: bicubic upsampling of a coarse random grid."""
    coarse = torch.rand(
        1, channels, cells, cells, generator=generator, dtype=torch.float64
    )
    field = torch.nn.functional.interpolate(
        coarse, size=(height, width), mode="bicubic", align_corners=True
    )
    return field.clamp(0.0, 1.0)


def demo_scene(
    height: int = 128,
    width: int = 160,
    channels: int = 3,
    dynamic_range_stops: float = 12.0,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    r"""A deterministic high-dynamic-range radiance map, the embedded demo scene.

    The luminance ramps log-linearly across the width over ``dynamic_range_stops`` stops, and is
    modulated by smooth colour fields, a checkerboard patch (sharp edges) and a few bright
    light sources, so that a bracketed stack of it covers every code of the camera. The
    brightest value is ``1`` and the darkest about :math:`2^{-\text{stops}}`:

    .. math::

        x(c, h, w) = 2^{-s (1 - w / (W - 1))} \, \big(0.35 + 0.65\, u_c(h, w)\big) \, k(h, w)
        + \text{lights}

    with :math:`u_c` a smooth random field per channel and :math:`k` the texture.

    :param int height: image height (default 128).
    :param int width: image width (default 160).
    :param int channels: number of colour channels (default 3).
    :param float dynamic_range_stops: stops between the darkest and the brightest region (default 12).
    :param int seed: seed of the random fields (default 0).
    :param torch.dtype dtype: floating dtype of the result (default float32).
    :return: (:class:`torch.Tensor`) radiance of shape ``(1, C, H, W)``, values in ``(0, 1]``.

    |sep|

    :Example:

    >>> from deepinv_icrf.data import demo_scene
    >>> x = demo_scene(height=32, width=40)
    >>> x.shape, bool(x.max() == 1), bool(x.min() > 0)
    (torch.Size([1, 3, 32, 40]), True, True)
    """
    if height < 2 or width < 2:
        raise ValueError(
            f"Expected `height` and `width` >= 2, but got {height} and {width}."
        )
    if channels < 1:
        raise ValueError(f"Expected `channels` >= 1, but got {channels}.")
    if not dynamic_range_stops > 0:
        raise ValueError(
            f"Expected `dynamic_range_stops` > 0, but got {dynamic_range_stops}."
        )
    if not dtype.is_floating_point:
        raise TypeError(f"Expected `dtype` to be a floating dtype, but got {dtype}.")
    g = torch.Generator().manual_seed(seed)
    hh = torch.linspace(0.0, 1.0, height, dtype=torch.float64).view(-1, 1)
    ww = torch.linspace(0.0, 1.0, width, dtype=torch.float64).view(1, -1)

    ramp = torch.exp2(-dynamic_range_stops * (1.0 - ww)).expand(height, width)
    colour = 0.35 + 0.65 * _smooth_noise(channels, height, width, 5, g)[0]
    # a vertical ripple so that every column holds a spread of values, not one level
    ripple = 0.55 + 0.45 * torch.cos(2 * math.pi * 3.0 * hh + 4.0 * ww)
    checker = ((torch.floor(hh * 8) + torch.floor(ww * 10)) % 2) * 0.5 + 0.5
    texture = torch.where((hh > 0.55) & (hh < 0.9), checker, ripple)

    scene = ramp * colour * texture
    # a few small bright light sources, above the rest of the scene
    for _ in range(4):
        cy, cx = torch.rand(2, generator=g, dtype=torch.float64)
        r = 0.012 + 0.02 * float(torch.rand(1, generator=g, dtype=torch.float64))
        blob = torch.exp(-((hh - cy) ** 2 + (ww - cx) ** 2) / (2 * r**2))
        scene = scene + 4.0 * blob
    scene = scene / scene.max()
    scene = scene.clamp_min(2.0 ** (-dynamic_range_stops - 1))
    return scene.unsqueeze(0).to(dtype)


def demo_exposure_times(
    n_exposures: int = 9, stops_apart: float = 1.0, shortest: float = 1.0 / 4
) -> Tensor:
    r"""Bracketed exposure times, ``stops_apart`` stops apart, starting at ``shortest`` seconds.

    :param int n_exposures: number of exposures (default 9, at least 2).
    :param float stops_apart: ratio between consecutive times in stops (default 1, a factor 2).
    :param float shortest: the shortest time in seconds (default 1/4).
    :return: (:class:`torch.Tensor`) times of shape ``(N,)``, increasing, float64.

    |sep|

    :Example:

    >>> from deepinv_icrf.data import demo_exposure_times
    >>> demo_exposure_times(4)
    tensor([0.2500, 0.5000, 1.0000, 2.0000], dtype=torch.float64)
    """
    if n_exposures < 2:
        raise ValueError(f"Expected `n_exposures` >= 2, but got {n_exposures}.")
    if not stops_apart > 0 or not shortest > 0:
        raise ValueError(
            f"Expected `stops_apart` > 0 and `shortest` > 0, but got {stops_apart} and {shortest}."
        )
    k = torch.arange(n_exposures, dtype=torch.float64)
    return shortest * torch.exp2(stops_apart * k)
