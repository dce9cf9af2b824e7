r"""Validation of a fitted ICRF against linear captures of the same shots.

When a folder holds processed images (JPEG/PNG/8-bit TIFF) and linear captures of the same
shots (16-bit linear TIFF, or RAW files read through ``rawpy`` where it is installed), the ICRF
can be measured directly: every processed code :math:`k` maps to the mean linear value of the
pixels that carry it. :func:`validate_icrf` compares a fitted ICRF with that measurement.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf.bracket import codes_to_unit, image_codes
from deepinv_icrf.models.icrf_base import ICRFBase

__all__ = [
    "measure_curve_from_pairs",
    "validate_icrf",
    "validate_folder",
    "format_validation",
    "PROCESSED_SUFFIXES",
    "LINEAR_SUFFIXES",
    "RAW_SUFFIXES",
]

PROCESSED_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff")
LINEAR_SUFFIXES = (".tif", ".tiff")
RAW_SUFFIXES = (".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef")
# top fraction of the measured codes used to extrapolate the linear value of the largest code
_TOP_FRACTION = 0.1
# stem suffixes that mark the linear capture of a shot, e.g. IMG_1.jpg and IMG_1_linear.tif
_LINEAR_TAGS = ("", "_linear", "-linear", ".linear", "_raw", "-raw")


def _as_hwc(image: np.ndarray | Tensor, name: str) -> tuple[np.ndarray, int | None]:
    # image -> float64 (H, W, C) and the bit depth of integer input (None for floats)
    if isinstance(image, Tensor):  # channels last here, as a numpy image
        image = image.detach().cpu().numpy()
    codes, bits = image_codes(image, name)
    if codes.ndim == 2:
        codes = codes[..., None]
    if codes.ndim != 3:
        raise ValueError(
            f"Expected `{name}` of shape (H, W, C) or (H, W), but got shape "
            f"{tuple(codes.shape)}."
        )
    return codes_to_unit(codes, bits, torch.float64).numpy(), bits


def measure_curve_from_pairs(
    processed: np.ndarray | Tensor | Sequence[np.ndarray | Tensor],
    linear: np.ndarray | Tensor | Sequence[np.ndarray | Tensor],
    bit_depth: int | None = None,
) -> tuple[Tensor, Tensor]:
    r"""The ICRF measured directly from processed images and linear captures of the same shots.

    For each channel :math:`c` and processed code :math:`k`, with :math:`S_{c,k}` the pixels of
    every pair whose processed code is :math:`k`:

    .. math::

        m_c(k) = \frac{1}{s_c |S_{c,k}|} \sum_{S_{c,k}} \ell, \qquad
        s_c = \text{the parabola through the top 10\% of measured codes, at } k_{\max},

    so that :math:`m_c(k_{\max}) = 1` as for an ICRF (the mean at the top code itself is biased
    by clipping). Codes that no pixel carries are ``nan``.

    :param numpy.ndarray, torch.Tensor, Sequence processed: processed image(s) ``(H, W, C)`` or
        ``(H, W)``, ``uint8``/``uint16`` codes or floats in :math:`[0, 1]`; a list for several
        shots (sizes may differ between shots).
    :param numpy.ndarray, torch.Tensor, Sequence linear: the linear capture(s), same shapes,
        ``uint16`` or floats (any positive scale; only ratios matter).
    :param int, None bit_depth: bit depth of the processed codes; ``None`` (default): from the
        dtype, 8 for floats.
    :return: (tuple) the measured curve ``(C, 2**bit_depth)`` (float64, ``nan`` where no data)
        and the number of pixels per code ``(C, 2**bit_depth)`` (int64).

    |sep|

    :Example:

    >>> import numpy as np
    >>> lin = np.linspace(0, 1, 256).reshape(16, 16, 1) ** 2.2
    >>> proc = np.round(lin ** (1 / 2.2) * 255).astype(np.uint8)
    >>> curve, counts = measure_curve_from_pairs(proc, lin)
    >>> round(float(curve[0, 128]), 4), int(counts.sum())
    (0.2195, 256)
    """
    many = isinstance(processed, (list, tuple))
    if many != isinstance(linear, (list, tuple)):
        raise TypeError(
            "Expected `processed` and `linear` both as single images or both as sequences."
        )
    procs = list(processed) if many else [processed]
    lins = list(linear) if many else [linear]
    if len(procs) != len(lins) or not procs:
        raise ValueError(
            f"Expected as many processed as linear images (at least one), but got "
            f"{len(procs)} and {len(lins)}."
        )
    sums = counts = None
    levels = None
    for k, (p_img, l_img) in enumerate(zip(procs, lins, strict=True)):
        p, p_bits = _as_hwc(p_img, f"processed[{k}]")
        lin = l_img.detach().cpu().numpy() if isinstance(l_img, Tensor) else l_img
        if not isinstance(lin, np.ndarray):
            raise TypeError(f"Expected `linear[{k}]` to be an array or a tensor.")
        lin = lin.astype(np.float64)
        if lin.ndim == 2:
            lin = lin[..., None]
        if lin.shape != p.shape:
            raise ValueError(
                f"Expected `linear[{k}]` of the shape of `processed[{k}]` {p.shape}, "
                f"but got {lin.shape}."
            )
        if not np.isfinite(lin).all() or lin.min() < 0:
            raise ValueError(f"Expected `linear[{k}]` finite and >= 0.")
        bits = bit_depth if bit_depth is not None else (p_bits or 8)
        if levels is None:
            levels = 2**bits
            c = p.shape[-1]
            sums = np.zeros((c, levels))
            counts = np.zeros((c, levels), dtype=np.int64)
        if 2**bits != levels or p.shape[-1] != sums.shape[0]:
            raise ValueError(
                "Expected every processed image with the same bit depth and channel count."
            )
        codes = np.rint(p * (levels - 1)).astype(np.int64)
        for ch in range(p.shape[-1]):
            sums[ch] += np.bincount(
                codes[..., ch].ravel(), weights=lin[..., ch].ravel(), minlength=levels
            )
            counts[ch] += np.bincount(codes[..., ch].ravel(), minlength=levels)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = sums / counts
    mean[counts == 0] = np.nan
    top = levels - 1
    for ch in range(mean.shape[0]):
        seen = np.flatnonzero(counts[ch] > 0)
        if seen.size == 0:
            continue
        upper = seen[seen >= seen.max() - max(2, int(_TOP_FRACTION * top))]
        if upper.size >= 2:
            coeffs = np.polyfit(upper, mean[ch, upper], min(2, upper.size - 1))
            scale = np.polyval(coeffs, top)
        else:
            scale = mean[ch, seen.max()] * top / max(seen.max(), 1)
        if scale > 0:
            mean[ch] /= scale
    return torch.from_numpy(mean), torch.from_numpy(counts)


def validate_icrf(
    icrf: ICRFBase | Tensor,
    processed: np.ndarray | Tensor | Sequence[np.ndarray | Tensor],
    linear: np.ndarray | Tensor | Sequence[np.ndarray | Tensor],
    *,
    low: int = 8,
    high: int | None = None,
    min_count: int = 20,
) -> dict[str, Any]:
    r"""Errors of a fitted ICRF against the curve measured from processed/linear pairs.

    With the fitted curve :math:`f_c`, the measured :math:`m_c` (:func:`measure_curve_from_pairs`)
    and the codes :math:`K_c` in ``[low, high]`` carried by at least ``min_count`` pixels:

    .. math::

        \mathrm{rmse}_c = \sqrt{\tfrac{1}{|K_c|} \textstyle\sum_{K_c} (f_c - m_c)^2}, \qquad
        \mathrm{rmse\_scaled}_c \text{ the same after the scale }
        s_c = \textstyle\sum f_c m_c / \sum m_c^2 \text{ on } m_c.

    :param deepinv_icrf.models.ICRF, torch.Tensor icrf: fitted ICRF (or its curve ``(C, L)``).
    :param numpy.ndarray, torch.Tensor, Sequence processed: as for
        :func:`measure_curve_from_pairs`.
    :param numpy.ndarray, torch.Tensor, Sequence linear: as for :func:`measure_curve_from_pairs`.
    :param int low: first code compared (default 8).
    :param int, None high: last code compared (default: 247 for 8 bits, ``top - 8`` otherwise).
    :param int min_count: pixels a code needs to be compared (default 20).
    :return: (dict) JSON-friendly: ``rmse``, ``rmse_scaled``, ``max_abs``, ``mean_abs``,
        ``scale`` and ``n_codes`` (lists, one value per channel), ``rmse_mean`` (float),
        ``band_coverage`` (per channel, or ``None`` without a band on the ICRF).

    |sep|

    :Example:

    >>> import numpy as np
    >>> from deepinv_icrf.models import ICRF
    >>> lin = np.linspace(0, 1, 4096).reshape(64, 64, 1) ** 2.2
    >>> proc = np.round(lin ** (1 / 2.2) * 255).astype(np.uint8)
    >>> errors = validate_icrf(ICRF(channels=1, init="gamma"), proc, lin, min_count=5)
    >>> errors["rmse"][0] < 1e-3, errors["n_codes"]
    (True, [240])
    """
    from deepinv_icrf.functional.interp import interp_curve

    band = icrf.band if isinstance(icrf, ICRFBase) else None
    curve = icrf.curve if isinstance(icrf, ICRFBase) else icrf
    if not isinstance(curve, Tensor) or curve.ndim != 2:
        raise TypeError(
            "Expected `icrf` to be an ICRF or a curve tensor of shape (C, L)."
        )
    curve = curve.detach().to("cpu", torch.float64)
    measured, counts = measure_curve_from_pairs(processed, linear)
    c, levels = measured.shape
    if c != curve.shape[0]:
        raise ValueError(
            f"Expected images with {curve.shape[0]} channels to match the ICRF, but got {c}."
        )
    top = levels - 1
    high = (top - 8) if high is None else high
    if not 0 <= low <= high <= top:
        raise ValueError(
            f"Expected 0 <= `low` <= `high` <= {top}, but got low={low!r}, high={high!r}."
        )
    codes = torch.arange(levels, dtype=torch.float64) / top
    fitted = interp_curve(codes.expand(c, -1), curve, channel_dim=-2)
    in_range = torch.zeros(levels, dtype=torch.bool)
    in_range[low : high + 1] = True
    keep = (counts >= min_count) & in_range & torch.isfinite(measured)
    out: dict[str, Any] = {
        "rmse": [],
        "rmse_scaled": [],
        "max_abs": [],
        "mean_abs": [],
        "scale": [],
        "n_codes": [],
        "band_coverage": None if band is None else [],
    }
    for ch in range(c):
        k = keep[ch]
        f, m = fitted[ch, k], measured[ch, k]
        n = int(k.sum())
        out["n_codes"].append(n)
        if n == 0:
            for key in ("rmse", "rmse_scaled", "max_abs", "mean_abs", "scale"):
                out[key].append(math.nan)
            if band is not None:
                out["band_coverage"].append(math.nan)
            continue
        err = f - m
        scale = float((f * m).sum() / (m * m).sum().clamp_min(1e-300))
        out["rmse"].append(float(err.pow(2).mean().sqrt()))
        out["rmse_scaled"].append(float((f - scale * m).pow(2).mean().sqrt()))
        out["max_abs"].append(float(err.abs().max()))
        out["mean_abs"].append(float(err.abs().mean()))
        out["scale"].append(scale)
        if band is not None:
            b = band.detach().to("cpu", torch.float64)[:, ch : ch + 1]
            lo = interp_curve(codes[k].unsqueeze(0), b[0], channel_dim=-2)[0]
            hi = interp_curve(codes[k].unsqueeze(0), b[1], channel_dim=-2)[0]
            out["band_coverage"].append(float(((m >= lo) & (m <= hi)).double().mean()))
    finite = [v for v in out["rmse"] if math.isfinite(v)]
    out["rmse_mean"] = float(np.mean(finite)) if finite else math.nan
    return out


def _read_linear(path: Path) -> np.ndarray:
    if path.suffix.lower() in RAW_SUFFIXES:
        try:
            import rawpy
        except ImportError as err:
            raise ValueError(
                f"Reading RAW file {str(path)!r} needs `rawpy` (pip install rawpy), which is "
                "not installed; convert it to a 16-bit linear TIFF instead."
            ) from err
        with rawpy.imread(str(path)) as raw:
            return raw.postprocess(
                gamma=(1, 1), no_auto_bright=True, output_bps=16, use_camera_wb=True
            )
    from deepinv_icrf.io import read_image

    image = read_image(path)
    if image.dtype != np.uint16 and not np.issubdtype(image.dtype, np.floating):
        raise ValueError(
            f"Expected linear capture {str(path)!r} as a 16-bit or float TIFF, "
            f"but it holds {image.dtype}."
        )
    return image


def _pair_files(folder: Path) -> list[tuple[Path, Path]]:
    files = sorted(p for p in folder.iterdir() if p.is_file())
    linear: dict[str, Path] = {}
    for p in files:
        suffix = p.suffix.lower()
        if suffix in RAW_SUFFIXES or (suffix in LINEAR_SUFFIXES and _tiff_bits(p) != 8):
            linear[p.stem] = p
    pairs = []
    for p in files:
        suffix = p.suffix.lower()
        if suffix not in PROCESSED_SUFFIXES or p in linear.values():
            continue
        for tag in _LINEAR_TAGS:
            match = linear.get(p.stem + tag)
            if match is not None and match != p:
                pairs.append((p, match))
                break
    return pairs


def _tiff_bits(path: Path) -> int | None:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return int(tif.pages[0].bitspersample)
    except Exception:  # noqa: BLE001 - unreadable TIFF: not a linear capture
        return None


def validate_folder(
    folder: str | os.PathLike, icrf_path: str | os.PathLike, min_count: int = 20
) -> dict[str, Any]:
    r"""Validate a saved ICRF against the processed/linear pairs of a folder.

    A processed image (``.jpg``, ``.jpeg``, ``.png``, 8-bit ``.tif``) pairs with the linear
    capture of the same stem (``IMG_1.jpg`` with ``IMG_1.tif`` or ``IMG_1_linear.tif``, a 16-bit
    or float TIFF, or a RAW file such as ``IMG_1.dng`` when ``rawpy`` is installed); the
    measured curve pools every pair (:func:`validate_icrf`).

    :param str, os.PathLike folder: the folder.
    :param str, os.PathLike icrf_path: an ICRF file written by :meth:`ICRF.save`.
    :param int min_count: pixels a code needs to be compared (default 20).
    :return: (dict) the errors of :func:`validate_icrf`, plus ``pairs`` (file names) and
        ``icrf`` (the path).
    :raises ValueError: no folder, no pair, unreadable files, mismatched sizes.

    |sep|

    :Example:

    >>> import tempfile, numpy as np
    >>> from deepinv_icrf.io import write_image
    >>> from pathlib import Path
    >>> from deepinv_icrf.models import ICRF
    >>> folder = Path(tempfile.mkdtemp())
    >>> lin = np.linspace(0, 1, 4096).reshape(64, 64, 1).repeat(3, -1) ** 2.2
    >>> write_image(folder / "a.png", np.round(lin ** (1 / 2.2) * 255).astype(np.uint8))
    >>> write_image(folder / "a.tif", np.round(lin * 65535).astype(np.uint16))
    >>> ICRF(init="gamma").save(folder / "curve.json")
    >>> result = validate_folder(folder, folder / "curve.json", min_count=5)
    >>> result["pairs"], result["rmse"][0] < 1e-3
    ([['a.png', 'a.tif']], True)
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(
            f"Expected `folder` to be a directory, but {str(folder)!r} is not."
        )
    icrf = ICRFBase.load(icrf_path)
    pairs = _pair_files(folder)
    if not pairs:
        raise ValueError(
            f"Found no processed/linear pair in {str(folder)!r}: expected e.g. IMG_1.jpg with "
            "IMG_1.tif (16-bit linear) or IMG_1.dng (RAW, needs rawpy)."
        )
    from deepinv_icrf.io import read_image

    processed, linear = [], []
    for proc_path, lin_path in pairs:
        # the package's reader: 16-bit PNGs stay 16-bit, sizes are checked before decoding
        proc = read_image(proc_path)
        lin = _read_linear(lin_path)
        if lin.ndim == 2:
            lin = lin[..., None]
        if lin.ndim == 3 and lin.shape[-1] == 4:
            lin = lin[..., :3]
        if proc.shape != lin.shape:
            raise ValueError(
                f"Expected {lin_path.name!r} of the size of {proc_path.name!r} {proc.shape}, "
                f"but got {lin.shape}."
            )
        processed.append(proc)
        linear.append(lin)
    result = validate_icrf(icrf, processed, linear, min_count=min_count)
    result["pairs"] = [[p.name, q.name] for p, q in pairs]
    result["icrf"] = os.fspath(icrf_path)
    return result


def format_validation(result: dict[str, Any]) -> str:
    r"""One line per channel of a :func:`validate_folder` / :func:`validate_icrf` result.

    :param dict result: the result.
    :return: (str) the text.

    |sep|

    :Example:

    >>> print(format_validation({"rmse": [0.01], "rmse_scaled": [0.005], "max_abs": [0.02],
    ...     "n_codes": [240], "band_coverage": None}))
    channel 0: rmse 0.0100, after scale 0.0050, max 0.0200 over 240 codes
    """
    lines = []
    band = result.get("band_coverage")
    for ch, (rmse, scaled, worst, n) in enumerate(
        zip(
            result["rmse"],
            result["rmse_scaled"],
            result["max_abs"],
            result["n_codes"],
            strict=True,
        )
    ):
        line = f"channel {ch}: rmse {rmse:.4f}, after scale {scaled:.4f}, max {worst:.4f} over {n} codes"
        if band is not None:
            line += f", inside band {100 * band[ch]:.0f}%"
        lines.append(line)
    return "\n".join(lines)
