r"""OpenEXR files through the official bindings (``pip install openexr``, module ``OpenEXR``).

Every compression the OpenEXR library implements is read (NO_COMPRESSION, RLE, ZIPS, ZIP,
PIZ, PXR24, B44, B44A, DWAA, DWAB and the newer ones of the installed version), scanline and
tiled, single- or multi-part (a part is chosen with ``frame``). The header is read first and
its data window checked against the pixel limit (:mod:`deepinv_icrf.io.limits`) before any
pixel is decoded; the decoded channels are then checked against the declared size.

Layers follow the OpenEXR naming convention that viewers show as layers: the image itself is
``R, G, B`` (or ``Y`` for one channel), a layer ``std`` is ``std.R, std.G, std.B`` (or
``std.Y``). :func:`write_exr` writes such a file, :func:`read_exr_layers` reads one back.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from deepinv_icrf.io.limits import check_pixels, resolve_max_pixels

__all__ = [
    "EXR_COMPRESSIONS",
    "EXR_PIXEL_TYPES",
    "read_exr",
    "read_exr_layers",
    "write_exr",
]

_MAGIC = b"\x76\x2f\x31\x01"
#: ``write_exr`` compression names -> OpenEXR attribute names (lossy ones marked in the docs)
EXR_COMPRESSIONS: dict[str, str] = {
    "none": "NO_COMPRESSION",
    "rle": "RLE_COMPRESSION",
    "zips": "ZIPS_COMPRESSION",
    "zip": "ZIP_COMPRESSION",
    "piz": "PIZ_COMPRESSION",
    "pxr24": "PXR24_COMPRESSION",
    "b44": "B44_COMPRESSION",
    "b44a": "B44A_COMPRESSION",
    "dwaa": "DWAA_COMPRESSION",
    "dwab": "DWAB_COMPRESSION",
}
#: ``write_exr`` pixel types -> numpy storage dtype (FLOAT, HALF)
EXR_PIXEL_TYPES: dict[str, np.dtype] = {
    "float": np.dtype(np.float32),
    "half": np.dtype(np.float16),
}
_HALF_MAX = 65504.0
_CHANNEL_ORDER = ("R", "G", "B")
# decoded bytes per declared pixel accepted (three float channels), times the pixel limit
_BYTES_PER_PIXEL = 12
_MAX_CHANNELS = 256


def _openexr():
    try:
        import OpenEXR
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError(
            "Reading and writing OpenEXR files needs the official OpenEXR bindings: "
            "pip install openexr (a dependency of deepinv-icrf)."
        ) from err
    return OpenEXR


@contextlib.contextmanager
def _quiet_stdio() -> Iterator[list[str]]:
    r"""Silence what the C++ library prints on the process's stdout/stderr (file descriptors
    1 and 2), and hand it back: its error details go into our one-line messages instead.
    """
    captured: list[str] = []
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no file descriptors to redirect (embedded interpreters)
        yield captured
        return
    text_sink = io.StringIO()
    with tempfile.TemporaryFile() as sink:
        try:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            with (
                contextlib.redirect_stdout(text_sink),
                contextlib.redirect_stderr(text_sink),
            ):
                yield captured
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            text = sink.read(65536).decode("utf-8", "replace")
            text += "\n" + text_sink.getvalue()[:65536]
            captured.extend(line.strip() for line in text.splitlines() if line.strip())


def _detail(err: BaseException, printed: list[str]) -> str:
    for line in printed:
        if "EXR_ERR" in line:
            return line.split(": ", 1)[-1][:200]
    return str(err)[:200] or type(err).__name__


def _part_info(header: Mapping, where: str) -> tuple[int, int, list[str]]:
    storage = str(header.get("type", "scanlineimage"))
    if "deep" in storage:
        raise ValueError(
            f"{where} holds deep OpenEXR data ({storage}), which is not an image; "
            "flatten it with another tool first."
        )
    try:
        low, high = header["dataWindow"]
        xmin, ymin = (int(v) for v in low)
        xmax, ymax = (int(v) for v in high)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{where} has no valid OpenEXR data window.") from err
    channels = [str(getattr(c, "name", c)) for c in header.get("channels", [])]
    for c in header.get("channels", []):
        sampling = (getattr(c, "xSampling", 1), getattr(c, "ySampling", 1))
        if sampling != (1, 1):
            raise ValueError(
                f"{where}: channel {getattr(c, 'name', c)!r} is subsampled "
                f"({sampling[0]}x{sampling[1]}), which is not supported; convert it to full "
                "resolution R, G, B or Y channels."
            )
    return ymax - ymin + 1, xmax - xmin + 1, channels


def _decode(OpenEXR, path: Path, where: str, index: int, separate: bool) -> dict:
    with _quiet_stdio() as printed:
        try:
            exr = OpenEXR.File(os.fspath(path), separate_channels=separate)
            part = exr.parts[index]
            return {
                str(name): np.asarray(ch.pixels) for name, ch in part.channels.items()
            }
        except (RuntimeError, ValueError, TypeError, IndexError) as err:
            raise ValueError(
                f"Cannot read {where}: the OpenEXR pixel data is unreadable, corrupted or "
                f"truncated ({_detail(err, printed)})."
            ) from None


def _open_checked(
    path: Path,
    where: str,
    max_pixels: int | None,
    frame: int | None,
    separate: bool = True,
):
    r"""Read the header, check the declared size, then decode the chosen part: its channels
    by name, or (``separate=False``) ``{"": (H, W, 3)}`` when the file's image is R, G, B
    of one pixel type."""
    OpenEXR = _openexr()
    with open(path, "rb") as fh:
        if fh.read(4) != _MAGIC:
            raise ValueError(f"{where} is not an OpenEXR file (bad magic number).")
    with _quiet_stdio() as printed:
        try:
            head = OpenEXR.File(os.fspath(path), header_only=True)
            headers = [part.header for part in head.parts]
        except (RuntimeError, ValueError, TypeError) as err:
            raise ValueError(
                f"Cannot read {where}: the OpenEXR header is unreadable, corrupted or "
                f"truncated ({_detail(err, printed)})."
            ) from None
    if not headers:
        raise ValueError(f"Cannot read {where}: the OpenEXR file holds no part.")
    if frame is None and len(headers) > 1:
        raise ValueError(
            f"{where} holds {len(headers)} OpenEXR parts; choose one with `frame` "
            f"(0..{len(headers) - 1})."
        )
    index = 0 if frame is None else frame
    if not 0 <= index < len(headers):
        raise ValueError(
            f"Expected `frame` in 0..{len(headers) - 1} for {where}, but got {frame}."
        )
    height, width, names = _part_info(headers[index], where)
    pixels = check_pixels(where, height, width, max_pixels)
    if len(names) > _MAX_CHANNELS or pixels * 4 * len(names) > _BYTES_PER_PIXEL * (
        resolve_max_pixels(max_pixels)
    ):
        raise ValueError(
            f"{where} declares {len(names)} channels of {width}x{height} pixels, more data "
            "than the pixel limit allows; if the file is genuine, raise the limit with "
            "`max_pixels` or the environment variable DEEPINV_ICRF_MAX_PIXELS."
        )
    try:
        planes = _decode(OpenEXR, path, where, index, separate)
    except ValueError:
        if separate:
            raise
        separate = True  # e.g. R, G, B of different pixel types: cannot be grouped
        planes = _decode(OpenEXR, path, where, index, separate)
    if not separate:
        # the bindings group R, G, B (and A) of one pixel type into one (H, W, 3|4) array:
        # no copy of ours is needed then (half the peak memory of a large file)
        rgb = planes.get("RGB", planes.get("RGBA"))
        if rgb is not None and rgb.shape[:2] == (height, width) and rgb.ndim == 3:
            return {"": rgb[..., :3]}
        planes = _decode(OpenEXR, path, where, index, True)
    for name, plane in planes.items():
        if plane.shape != (height, width):
            raise ValueError(
                f"Cannot read {where}: channel {name!r} decoded to shape {plane.shape}, "
                f"but the header declares {height}x{width} pixels."
            )
    if set(planes) != set(names):
        raise ValueError(
            f"Cannot read {where}: decoded channels {sorted(planes)} differ from the "
            f"declared {sorted(names)}."
        )
    return planes


def _group(planes: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    layers: dict[str, dict[str, np.ndarray]] = {}
    for name, plane in planes.items():
        layer, _, channel = name.rpartition(".")
        layers.setdefault(layer, {})[channel] = plane
    return layers


def _stack_layer(channels: Mapping[str, np.ndarray], where: str, label: str):
    if all(c in channels for c in _CHANNEL_ORDER):
        keep = list(_CHANNEL_ORDER)
    elif "Y" in channels:
        keep = ["Y"]
    elif len(channels) == 1:
        keep = list(channels)
    else:
        raise ValueError(
            f"{where}: cannot tell the image in the OpenEXR channels {sorted(channels)} of "
            f"{label}; expected R, G, B or Y."
        )
    first = channels[keep[0]]
    out = np.empty((*first.shape, len(keep)), np.float32)  # one copy, filled in place
    for k, c in enumerate(keep):
        out[..., k] = channels[c]
    return out


def read_exr(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = None,
    frame: int | None = None,
    layer: str | None = None,
    where: str | None = None,
) -> np.ndarray:
    r"""Read the image (or one layer) of an OpenEXR file as float32 ``(H, W, C)``.

    The image is the ``R, G, B`` channels (alpha and other layers are ignored), else ``Y``,
    else the file's only channel. UINT, HALF and FLOAT pixels all come back as float32.

    :param str, os.PathLike path: the file.
    :param int, None max_pixels: pixel limit (default: :func:`~deepinv_icrf.io.limits.resolve_max_pixels`).
    :param int, None frame: the part of a multi-part file (default ``None``: the file must have
        one part).
    :param str, None layer: a layer name such as ``"std"`` (default ``None``: the image).
    :param str, None where: how messages name the file (default ``"image file 'PATH'"``).
    :return: (:class:`numpy.ndarray`) float32 ``(H, W, C)``, ``C`` in 1..3.
    :raises ValueError: naming the file: not OpenEXR, corrupted or truncated, declaring more
        pixels than the limit, several parts and no ``frame``, deep or subsampled data, no
        such layer.

    |sep|

    :Example:

    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.exr"
    >>> write_exr(path, np.full((2, 3, 3), 0.5, np.float32), layers={"std": np.ones((2, 3, 3))})
    >>> read_exr(path, layer="std").shape, float(read_exr(path)[0, 0, 0])
    ((2, 3, 3), 0.5)
    """
    path = Path(path)
    where = where if where is not None else f"image file {os.fspath(path)!r}"
    planes = _open_checked(path, where, max_pixels, frame, separate=layer is not None)
    if "" in planes:  # the image, as the bindings grouped it
        return planes[""].astype(np.float32, copy=False)
    layers = _group(planes)
    key = "" if layer is None else layer
    if key not in layers:
        named = sorted(k for k in layers if k)
        raise ValueError(
            f"{where} has no OpenEXR layer {key!r}"
            + (f" (layers: {named})." if named else " (no layers).")
            if layer is not None
            else f"{where} holds only layers {named} and no top-level R, G, B or Y image."
        )
    return _stack_layer(layers[key], where, f"layer {key!r}" if key else "the image")


def read_exr_layers(
    path: str | os.PathLike, *, max_pixels: int | None = None, frame: int | None = None
) -> dict[str, np.ndarray]:
    r"""Every layer of an OpenEXR file, as float32 ``(H, W, C)`` arrays keyed by layer name.

    The image itself has the key ``""``; a layer ``std`` (channels ``std.R, std.G, std.B``)
    the key ``"std"``.

    :param str, os.PathLike path: the file.
    :param int, None max_pixels: pixel limit (default from the environment).
    :param int, None frame: the part of a multi-part file.
    :return: (dict) layer name to array.

    |sep|

    :Example:

    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "r.exr"
    >>> write_exr(path, np.ones((2, 2, 3)), layers={"count": np.full((2, 2), 3, np.uint8)})
    >>> {k: v.shape for k, v in read_exr_layers(path).items()}
    {'': (2, 2, 3), 'count': (2, 2, 1)}
    """
    path = Path(path)
    where = f"image file {os.fspath(path)!r}"
    layers = _group(_open_checked(path, where, max_pixels, frame))
    return {
        key: _stack_layer(channels, where, f"layer {key!r}")
        for key, channels in sorted(layers.items())
    }


def _as_hwc(image: np.ndarray, label: str, where: str) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3):
        raise ValueError(
            f"Cannot write {where}: expected {label} of shape (H, W) or (H, W, C) with C in "
            f"(1, 3), but got shape {np.shape(image)}."
        )
    return arr


def write_exr(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    layers: Mapping[str, np.ndarray] | None = None,
    pixel_type: str = "float",
    compression: str = "zip",
) -> None:
    r"""Write a float image, and optional layers, as one OpenEXR file, atomically.

    The image becomes the channels ``R, G, B`` (``Y`` for one channel); each layer ``name``
    becomes ``name.R, name.G, name.B`` (or ``name.Y``), which OpenEXR viewers show as layers.
    Float layers are stored with ``pixel_type``; boolean and integer layers (a mask, a count)
    as HALF, exact for integers up to 2048.

    :param str, os.PathLike path: destination (``.exr``); its folder must exist.
    :param numpy.ndarray image: ``(H, W)`` or ``(H, W, C)``, ``C`` in ``{1, 3}``, float.
    :param dict, None layers: name to ``(H, W)`` or ``(H, W, C)`` arrays of the image's size.
    :param str pixel_type: ``"float"`` (32-bit, exact for float32; default) or ``"half"``
        (16-bit, about 0.05 % relative precision, values up to 65504).
    :param str compression: one of :data:`EXR_COMPRESSIONS` (default ``"zip"``, lossless;
        ``"none"``, ``"rle"``, ``"zips"``, ``"piz"`` are lossless too, ``"pxr24"`` is lossy
        for FLOAT, ``"b44"``/``"b44a"`` for HALF, ``"dwaa"``/``"dwab"`` always).
    :raises ValueError: for bad shapes, layer names or options, values beyond the HALF range;
        nothing is written then.
    """
    from deepinv_icrf._checks import check_in
    from deepinv_icrf.io.atomic import atomic_path

    check_in(pixel_type, "exr_pixel_type", tuple(EXR_PIXEL_TYPES))
    check_in(compression, "exr_compression", tuple(EXR_COMPRESSIONS))
    OpenEXR = _openexr()
    where = repr(os.fspath(path))
    base = _as_hwc(image, "`image`", where)
    height, width = base.shape[:2]
    entries: list[tuple[str, np.ndarray]] = [("", base)]
    for name, value in (layers or {}).items():
        if not isinstance(name, str) or not name or not name.isidentifier():
            raise ValueError(
                f"Expected layer names to be identifiers such as 'std', but got {name!r}."
            )
        arr = _as_hwc(value, f"layer {name!r}", where)
        if arr.shape[:2] != (height, width):
            raise ValueError(
                f"Cannot write {where}: layer {name!r} has shape {arr.shape[:2]}, the image "
                f"{(height, width)}."
            )
        entries.append((name, arr))
    channels: dict[str, np.ndarray] = {}
    for name, arr in entries:
        if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
            stored = arr.astype(np.float16)
        elif np.issubdtype(arr.dtype, np.floating):
            with np.errstate(over="ignore"):  # no copy when it has the stored type
                stored = arr.astype(EXR_PIXEL_TYPES[pixel_type], copy=False)
            if pixel_type == "half" and (np.isinf(stored) & np.isfinite(arr)).any():
                raise ValueError(
                    f"Cannot write {where}: values up to {float(np.nanmax(np.abs(arr))):g} "
                    f"exceed the largest half value {_HALF_MAX:g}; use "
                    "`exr_pixel_type='float'`."
                )
        else:
            raise ValueError(
                f"Cannot write {where}: {'the image' if not name else repr(name)} has "
                f"dtype {arr.dtype}, not numbers."
            )
        if not name and stored.shape[-1] == 3:
            # the image as one interleaved (H, W, 3) array: the bindings write it as R, G, B
            # (the same file) straight from its memory, without the three channel copies
            channels["RGB"] = np.ascontiguousarray(stored)
            continue
        labels = ("Y",) if stored.shape[-1] == 1 else _CHANNEL_ORDER
        for k, label in enumerate(labels):
            full = f"{name}.{label}" if name else label
            channels[full] = np.ascontiguousarray(stored[..., k])
    header = {
        "compression": getattr(OpenEXR, EXR_COMPRESSIONS[compression]),
        "type": OpenEXR.scanlineimage,
    }
    with atomic_path(path) as tmp:
        with _quiet_stdio() as printed:
            try:
                OpenEXR.File(header, channels).write(os.fspath(tmp))
            except (RuntimeError, ValueError, TypeError) as err:
                raise OSError(
                    f"Cannot write {where}: the OpenEXR library failed "
                    f"({_detail(err, printed)})."
                ) from None
