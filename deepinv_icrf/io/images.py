r"""Image files in and out, on maintained codec libraries, checked before they are decoded.

=========================  ==========================================  ==========================
extension                  read (library)                              write
=========================  ==========================================  ==========================
``.png``                   8/16-bit (imagecodecs: libpng)              ``uint8`` (Pillow),
                                                                       ``uint16`` (imagecodecs)
``.jpg``, ``.jpeg``        8-bit (imagecodecs: libjpeg-turbo;          ``uint8`` (Pillow)
                           Pillow for other JPEGs)
``.tif``, ``.tiff``        8/16-bit, float (tifffile)                  ``uint8``, ``uint16``, float32
``.npy``                   any numeric array (numpy, no pickle)        any numeric array
``.hdr`` (Radiance RGBE)   float32 (imagecodecs)                       float (imagecodecs)
``.exr`` (OpenEXR)         float32, every compression (OpenEXR)        float, layers (OpenEXR)
=========================  ==========================================  ==========================

Before decoding, each reader reads the declared size from the file's header (Pillow's lazy
open, tifffile's page tags, numpy's ``.npy`` header, the Radiance resolution line, the OpenEXR
header) and refuses an empty image or one above the pixel limit
(:mod:`deepinv_icrf.io.limits`); after decoding it checks the array against the declared size.
Files holding several frames (multi-page TIFF, animated PNG, multi-part OpenEXR) are refused
unless ``frame`` chooses one. A JPEG's EXIF ``Orientation`` tag and a TIFF's ``Orientation``
tag are applied, as image viewers and OpenCV's ``imread`` apply them: a camera held upright
stores its photo sideways with orientation 6 or 8, and the image is returned as it is seen
(with its height and width swapped by :func:`image_size` alike). Every failure is a
:class:`ValueError` naming the file (or :class:`FileNotFoundError` when it does not exist).
"""

from __future__ import annotations

import os
import tokenize
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from deepinv_icrf.io.atomic import atomic_path, atomic_write
from deepinv_icrf.io.exr import read_exr, write_exr
from deepinv_icrf.io.limits import check_pixels, pillow, read_limited

__all__ = [
    "IMAGE_EXTENSIONS",
    "RADIANCE_EXTENSIONS",
    "image_size",
    "read_image",
    "write_image",
]

#: extensions of the integer (camera) image formats read by :func:`read_image`
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: extensions :func:`write_image` accepts for float (radiance) images
RADIANCE_EXTENSIONS: tuple[str, ...] = (".npy", ".tif", ".tiff", ".hdr", ".exr")

#: The EXIF/TIFF tag that says how a stored image is displayed (1: as stored).
_ORIENTATION_TAG = 0x0112


def _orientation(value: object) -> int:
    r"""An ``Orientation`` tag value as 1..8; 1 (as stored) for a missing or invalid one."""
    try:
        number = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError, OverflowError):
        return 1
    return number if 1 <= number <= 8 else 1


def _orient(img: np.ndarray, orientation: int) -> np.ndarray:
    r"""``img`` (rows and columns first) turned as an EXIF ``orientation`` says it is
    displayed: 2 mirrored, 3 turned half a turn, 4 flipped, 5 transposed, 6 turned a quarter
    clockwise, 7 transposed across the other diagonal, 8 turned a quarter anticlockwise. A
    C-contiguous copy for 2..8 (torch takes no negative strides); ``img`` itself for 1.
    """
    if orientation == 2:
        img = img[:, ::-1]
    elif orientation == 3:
        img = img[::-1, ::-1]
    elif orientation == 4:
        img = img[::-1]
    elif orientation == 5:
        img = np.swapaxes(img, 0, 1)
    elif orientation == 6:
        img = np.swapaxes(img[::-1], 0, 1)
    elif orientation == 7:
        img = np.swapaxes(img[::-1, ::-1], 0, 1)
    elif orientation == 8:
        img = np.swapaxes(img[:, ::-1], 0, 1)
    else:
        return img
    return np.ascontiguousarray(img)


def _oriented_size(height: int, width: int, orientation: int) -> tuple[int, int]:
    return (width, height) if orientation >= 5 else (height, width)


def _pil_orientation(im: Any) -> int:
    r"""The EXIF orientation of an open Pillow image; 1 where its EXIF cannot be parsed (a
    malformed EXIF block costs the turn, not the photo, as it costs the exposure time in
    :func:`~deepinv_icrf.io.read_exposure_settings`)."""
    try:
        return _orientation(im.getexif().get(_ORIENTATION_TAG))
    # Pillow's EXIF parser meets hostile bytes with any error
    except Exception:  # noqa: BLE001
        return 1


def _tiff_orientation(page: Any) -> int:
    tag = page.tags.get(_ORIENTATION_TAG)
    return 1 if tag is None else _orientation(tag.value)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_FILTER_BITS = {0: 8, 1: 16, 2: 32, 3: 64, 4: 128}  # libpng PNG_FILTER_* flags
_RGBE_HEADER_BYTES = 65536


def _codec_error(err: BaseException) -> str:
    text = " ".join(str(err).split())[:200]
    return text or type(err).__name__


class _Unreadable(Exception):
    r"""A codec failure, turned into one ValueError naming the file by :func:`read_image`."""


def _imagecodecs():
    try:
        import imagecodecs
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError(
            "16-bit PNG and Radiance .hdr files need imagecodecs: pip install imagecodecs "
            "(a dependency of deepinv-icrf)."
        ) from err
    return imagecodecs


# ---------------------------------------------------------------------------- readers
def _frames(count: int, frame: int | None, where: str, kind: str) -> int:
    if frame is None:
        if count > 1:
            raise ValueError(
                f"{where} holds {count} {kind}; choose one with `frame` (0..{count - 1})."
            )
        return 0
    if isinstance(frame, bool) or not isinstance(frame, int) or not 0 <= frame < count:
        raise ValueError(
            f"Expected `frame` in 0..{count - 1} for {where}, but got {frame!r}."
        )
    return frame


def _png_ihdr(path: Path, where: str) -> tuple[int, int, int]:
    r"""``(width, height, bit depth)`` declared by a PNG's IHDR chunk (the first chunk)."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if not head.startswith(_PNG_SIGNATURE):
        raise ValueError(f"{where} is not a PNG file (bad signature).")
    if len(head) < 33 or head[12:16] != b"IHDR":
        raise ValueError(f"{where} is truncated or corrupted (no PNG IHDR chunk).")
    if zlib.crc32(head[12:29]) != int.from_bytes(head[29:33], "big"):
        raise ValueError(f"{where} is corrupted (CRC mismatch in the PNG IHDR chunk).")
    return (
        int.from_bytes(head[16:20], "big"),
        int.from_bytes(head[20:24], "big"),
        head[24],
    )


def _pil_array(im, where: str) -> np.ndarray:
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.array(im).astype(np.uint16)
    if mode == "I":
        arr = np.array(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{where}: 32-bit integer images are not supported.")
        return arr.astype(np.uint16)
    if mode in ("L", "RGB"):
        # a read-only view of the packed pixels (no copy yet): read_image copies it once,
        # into its `out` or into a writable array of its own
        return np.asarray(im)
    if mode in ("1", "LA"):
        return np.array(im.convert("L"))
    if mode == "F":
        return np.array(im).astype(np.float32)
    return np.array(im.convert("RGB"))


#: Channels of the Pillow modes of the JPEGs :func:`_decode_jpeg` decodes.
_JPEG_CHANNELS = {"RGB": 3, "L": 1}


def _decode_jpeg(
    path: Path, height: int, width: int, mode: str, out: np.ndarray | None
) -> np.ndarray | None:
    r"""An 8-bit grey or RGB JPEG decoded by libjpeg-turbo through imagecodecs, into ``out``
    when it fits; ``None`` where Pillow must decode it (and say what is wrong with it).

    Pillow decodes with the same library and settings (the same codes, checked by a test),
    but its numpy export packs the image into bytes and copies it twice more: at camera
    resolution that was half the time of reading a bracket. libjpeg-turbo fills a truncated
    scan with grey where Pillow refuses the file, so only a file that ends with its end
    marker is decoded here; anything imagecodecs refuses goes to Pillow, whose messages name
    the problem.
    """
    channels = _JPEG_CHANNELS[mode]
    shape = (height, width, channels)
    # compressed 8-bit JPEG data is far below 8 bytes a sample: larger files hold other
    # things (or are not what they say), and Pillow reads them as a stream
    if path.stat().st_size > 8 * height * width * channels + (1 << 20):
        return None
    data = path.read_bytes()
    if not data.endswith(b"\xff\xd9"):
        return None
    fits = (
        out is not None
        and out.shape == shape
        and out.dtype == np.uint8
        and out.flags.c_contiguous
    )
    try:
        arr = _imagecodecs().jpeg8_decode(data, out=out if fits else None)
    except (RuntimeError, ValueError):
        return None
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or arr.size != height * width * channels:
        return None
    return arr.reshape(shape)


def _read_pil(
    path: Path,
    where: str,
    max_pixels: int | None,
    frame: int | None,
    kind: str,
    out: np.ndarray | None = None,
) -> np.ndarray:
    with pillow() as Image:
        try:
            with Image.open(path) as im:
                width, height = im.size
                check_pixels(where, height, width, max_pixels)
                count = int(getattr(im, "n_frames", 1) or 1)
                # a JPEG's extra MPF images are previews: its first image is the photo
                index = 0 if kind == "jpeg" and frame is None else None
                if index is None:
                    index = _frames(count, frame, where, "frames (an animation)")
                turn = _pil_orientation(im)
                arr = None
                if kind == "jpeg" and not index and im.mode in _JPEG_CHANNELS:
                    # a turned image is decoded beside `out`, then turned into it
                    arr = _decode_jpeg(
                        path, height, width, im.mode, out if turn == 1 else None
                    )
                if arr is None:
                    if index:
                        im.seek(index)
                    im.load()
                    arr = _pil_array(im, where)
        except (OSError, SyntaxError, EOFError, Image.DecompressionBombError) as err:
            raise _Unreadable(_codec_error(err)) from err
    if arr.shape[:2] != (height, width):
        raise ValueError(
            f"Cannot read {where}: decoded {arr.shape[:2]}, declared {(height, width)}."
        )
    return _orient(arr, turn)


def _read_png(
    path: Path,
    where: str,
    max_pixels: int | None,
    frame: int | None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""A PNG through libpng (imagecodecs), any bit depth: libpng refuses image data shorter
    than the IHDR declares, which Pillow silently fills with zeros."""
    width, height, depth = _png_ihdr(path, where)
    check_pixels(where, height, width, max_pixels)
    with pillow() as Image:  # chunk walk up to the image data: animation frames
        try:
            with Image.open(path) as im:
                count = int(getattr(im, "n_frames", 1) or 1)
        except (OSError, SyntaxError, EOFError) as err:
            raise _Unreadable(_codec_error(err)) from err
    index = _frames(count, frame, where, "frames (an animation)")
    codecs = _imagecodecs()
    # a PNG is at most its raw rows (<= 8 bytes a pixel) plus zlib and chunk overhead, and
    # its other chunks: a larger file is not one (nor read whole into memory)
    data = read_limited(path, where, 2 * height * (1 + 8 * width) + 64 * 2**20)
    dtype = np.uint16 if depth == 16 else np.uint8
    # straight into `out` when it is the image's place (read_image): a stack of photos then
    # holds no decoded copy beside it (600 MB for 100 MP of 16-bit RGB)
    colour = data[
        25
    ]  # the IHDR colour type: 0 grey, 2 RGB (3 palette; 4, 6 with alpha)
    target = None
    if out is not None and out.dtype == dtype and out.flags.c_contiguous and count == 1:
        if colour == 2 and out.shape == (height, width, 3):
            target = out
        elif colour == 0 and out.shape == (height, width, 1):
            target = out[..., 0]
    try:
        if count > 1:
            arr = np.asarray(codecs.apng_decode(data, index=index))
        else:
            arr = np.asarray(codecs.png_decode(data, out=target))
    except (RuntimeError, ValueError) as err:
        raise _Unreadable(_codec_error(err)) from err
    if arr.shape[:2] != (height, width) or arr.dtype != dtype:
        raise ValueError(
            f"Cannot read {where}: decoded {arr.shape} {arr.dtype}, declared {depth}-bit "
            f"{height}x{width}."
        )
    return arr


def _rgbe_size(head: bytes, where: str) -> tuple[int, int, int]:
    r"""``(height, width, end of header)`` of a Radiance file (text lines, then the
    resolution line ``-Y H +X W``; the only orientation supported)."""
    if not (head.startswith(b"#?") or b"\n#?" in head[:4096]):
        raise ValueError(f"{where} is not a Radiance .hdr file (no '#?' signature).")
    end = head.find(b"\n\n")
    if end < 0:
        raise ValueError(
            f"{where} is truncated or not a Radiance .hdr file (no end of header in the "
            f"first {_RGBE_HEADER_BYTES} bytes)."
        )
    lines = head[:end].split(b"\n")
    formats = [ln for ln in lines if ln.startswith(b"FORMAT=")]
    if formats and formats[-1].strip() != b"FORMAT=32-bit_rle_rgbe":
        raise ValueError(
            f"{where}: only the RGBE variant of Radiance .hdr is supported, not "
            f"{formats[-1][7:40].decode('latin-1')!r}."
        )
    line_end = head.find(b"\n", end + 2)
    fields = head[end + 2 : line_end].split() if line_end > 0 else []
    if len(fields) != 4:
        raise ValueError(f"{where} is truncated (no Radiance resolution line).")
    if fields[0] != b"-Y" or fields[2] != b"+X":
        raise ValueError(
            f"{where}: Radiance orientation {b' '.join(fields[::2]).decode('latin-1')!r} is "
            "not supported (only '-Y +X', the standard one)."
        )
    sizes = []
    for text in (fields[1], fields[3]):
        if not text.isdigit() or len(text) > 12:
            raise ValueError(
                f"{where} is corrupted (Radiance resolution "
                f"{text[:20].decode('latin-1')!r} is not a size)."
            )
        sizes.append(int(text))
    return sizes[0], sizes[1], line_end + 1


def _read_rgbe(path: Path, where: str, max_pixels: int | None) -> np.ndarray:
    with open(path, "rb") as fh:
        head = fh.read(_RGBE_HEADER_BYTES)
    height, width, start = _rgbe_size(head, where)
    check_pixels(where, height, width, max_pixels)
    # RGBE is at most 4 bytes a pixel plus run-length overhead: a larger file is not one
    most = start + 4 * height * width + 4 * height + (4 * height * width) // 64 + 1024
    data = read_limited(path, where, most)
    try:
        arr = np.asarray(_imagecodecs().rgbe_decode(data))
    except (RuntimeError, ValueError) as err:
        raise _Unreadable(_codec_error(err)) from err
    if arr.shape != (height, width, 3):
        raise ValueError(
            f"Cannot read {where}: decoded {arr.shape}, declared {(height, width, 3)}."
        )
    return arr.astype(np.float32, copy=False)


def _tiff_page_size(page: Any, where: str) -> tuple[int, int]:
    r"""``(height, width)`` a TIFF page declares (its axes ``Y`` and ``X``)."""
    axes, shape = page.axes, page.shape
    if "Y" not in axes or "X" not in axes:
        raise ValueError(f"{where}: TIFF page axes {axes!r} hold no image.")
    return int(shape[axes.index("Y")]), int(shape[axes.index("X")])


def _read_tiff(
    path: Path,
    where: str,
    max_pixels: int | None,
    frame: int | None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            pages = len(tif.pages)
            index = _frames(pages, frame, where, "pages")
            page = tif.pages[index]
            shape = tuple(int(s) for s in page.shape)
            axes = page.axes
            check_pixels(where, *_tiff_page_size(page, where), max_pixels)
            if len(shape) > 3 or (len(shape) == 3 and min(shape) > 4):
                raise ValueError(
                    f"{where}: expected one 2-D image (axes YX or YXS), but got axes "
                    f"{axes!r} and shape {shape}."
                )
            # straight into `out` when it is the (H, W, C) image's place (read_image)
            turn = _tiff_orientation(page)
            target = None
            if (
                out is not None
                and turn == 1
                and out.dtype == page.dtype
                and out.flags.c_contiguous
            ):
                if axes == "YXS" and out.shape == shape:
                    target = out
                elif axes == "YX" and out.shape == (*shape, 1):
                    target = out[..., 0]
            img = page.asarray(out=target)
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001
        # tifffile parses the tags in Python: a hostile file reaches it with any error
        # (struct.error on a cut header, ZeroDivisionError on a zero tile size, its own
        # classes, KeyError, ...). Only the checks above run in this block besides it, and
        # they raise ValueError.
        raise _Unreadable(_codec_error(err)) from err
    if img.shape != shape:
        raise ValueError(f"Cannot read {where}: decoded {img.shape}, declared {shape}.")
    if axes in ("SYX", "CYX"):
        img = np.moveaxis(img, 0, -1)
    return _orient(img, turn)


def _read_npy(path: Path, where: str, max_pixels: int | None) -> np.ndarray:
    fmt = np.lib.format
    try:
        with open(path, "rb") as fh:
            version = fmt.read_magic(fh)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(fh)
            else:
                shape, fortran, dtype = fmt.read_array_header_2_0(fh)
            start = fh.tell()
    except (ValueError, OSError, SyntaxError, tokenize.TokenError) as err:
        # numpy parses the header dict as Python tokens: a broken one raises TokenError
        raise _Unreadable(_codec_error(err)) from err
    if dtype.hasobject or not (
        np.issubdtype(dtype, np.integer)
        or np.issubdtype(dtype, np.floating)
        or dtype == np.bool_
    ):
        raise ValueError(f"{where} holds dtype {dtype}, not real numbers.")
    if len(shape) not in (2, 3):
        raise ValueError(
            f"{where}: expected a 2-D or 3-D image array, but got shape {shape}."
        )
    check_pixels(where, shape[0], shape[1], max_pixels)
    channels = shape[2] if len(shape) == 3 else 1
    if not 1 <= channels <= 4:
        raise ValueError(f"{where}: expected 1 to 4 channels, but got shape {shape}.")
    size = os.path.getsize(path)
    expected = start + int(np.prod(shape)) * dtype.itemsize
    if size != expected:
        raise ValueError(
            f"Cannot read {where}: the file holds {size - start} data bytes, but its "
            f"header declares {expected - start} (truncated or corrupted)."
        )
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise _Unreadable(_codec_error(err)) from err


def _as_hwc(img: np.ndarray, where: str) -> np.ndarray:
    if img.ndim == 2:
        return img[..., None]
    if img.ndim != 3:
        raise ValueError(
            f"{where}: expected a 2-D or 3-D image array, but got shape {img.shape}."
        )
    if img.shape[-1] == 2:  # grey + alpha
        return img[..., :1]
    if img.shape[-1] == 4:  # RGBA
        return img[..., :3]
    return img


def image_size(
    path: str | os.PathLike, *, max_pixels: int | None = None
) -> tuple[int, int]:
    r"""The size ``(H, W)`` an integer image file declares, read from its header only.

    A PNG's IHDR chunk, a JPEG's frame header (Pillow's lazy open), a TIFF's first page:
    nothing is decoded, so a folder of photos can be checked for one size before any of
    them costs memory (:func:`deepinv_icrf.data.read_exposure_folder`).

    :param str, os.PathLike path: a ``.png``, ``.jpg``, ``.jpeg``, ``.tif`` or ``.tiff`` file.
    :param int, None max_pixels: the most pixels accepted, as for :func:`read_image`.
    :return: (tuple) ``(height, width)`` as declared.
    :raises FileNotFoundError: if the file does not exist.
    :raises ValueError: naming the file, for another extension, a header that cannot be
        read, or a size that is empty or above the pixel limit.

    |sep|

    :Example:

    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.png"
    >>> write_image(path, np.zeros((3, 5, 3), dtype=np.uint8))
    >>> image_size(path)
    (3, 5)
    """
    path = Path(path)
    where = f"image file {os.fspath(path)!r}"
    if not path.exists():
        raise FileNotFoundError(f"No such {where}.")
    size = _declared_size(path, where)
    check_pixels(where, *size, max_pixels)
    return size


def _declared_size(path: Path, where: str) -> tuple[int, int]:
    ext = path.suffix.lower()
    try:
        if ext == ".png":
            width, height, _ = _png_ihdr(path, where)
            return height, width
        if ext in (".jpg", ".jpeg"):
            with pillow() as Image, Image.open(path) as im:
                width, height = im.size
                turn = _pil_orientation(im)
                return _oriented_size(int(height), int(width), turn)
        if ext in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                page = tif.pages[0]
                return _oriented_size(
                    *_tiff_page_size(page, where), _tiff_orientation(page)
                )
    except ValueError as err:
        raise ValueError(f"Cannot read the size of {where}: {err}") from err
    # header parsers meet hostile bytes with any error (see _read_tiff)
    except Exception as err:  # noqa: BLE001
        raise ValueError(
            f"Cannot read the size of {where}: the header is unreadable, corrupted or "
            f"truncated ({_codec_error(err)})."
        ) from err
    raise ValueError(
        f"Cannot read the size of {where}: expected one of the extensions "
        f"{IMAGE_EXTENSIONS}, but got {ext!r}."
    )


def read_image(
    path: str | os.PathLike,
    *,
    max_pixels: int | None = None,
    frame: int | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    r"""Read an image file into an ``(H, W, C)`` array, checked before it is decoded.

    8-bit files give ``uint8``, 16-bit files ``uint16`` (16-bit colour PNGs included, which
    Pillow would silently reduce to 8 bits), float TIFF, ``.hdr``, ``.exr`` and ``.npy`` files
    give float arrays. Grey images get ``C = 1``; alpha channels are dropped.

    :param str, os.PathLike path: the file (``.png``, ``.jpg``, ``.jpeg``, ``.tif``, ``.tiff``,
        ``.npy``, ``.hdr``, ``.exr``).
    :param int, None max_pixels: the most pixels (``H * W``) accepted, checked against the
        size the file declares before decoding (default: the environment variable
        ``DEEPINV_ICRF_MAX_PIXELS``, else 100 million).
    :param int, None frame: the frame of a multi-frame file (TIFF page, animated PNG frame,
        OpenEXR part). Default ``None``: such files are refused (a JPEG's extra MPF preview
        images are ignored: its first image is the photo).
    :param numpy.ndarray, None out: an array to put the image in, such as one exposure of a
        preallocated stack: when the image has its shape ``(H, W, C)`` and dtype, the image is
        copied there (8-bit PNG straight from the decoder's buffer, without another copy;
        8-bit JPEG and TIFF decoded in it) and ``out`` is returned; otherwise ``out`` is left as it is and a new array is
        returned. Default ``None``: a new array.
    :return: (:class:`numpy.ndarray`) the image, ``(H, W, C)``: ``out`` when it took the
        image.
    :raises FileNotFoundError: if the file does not exist.
    :raises ValueError: naming the file, for an unknown extension, a size above the limit or
        empty, several frames without ``frame``, or an unreadable, corrupted or truncated file.

    |sep|

    :Example:

    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "grey16.png"
    >>> write_image(path, np.full((3, 5), 4097, dtype=np.uint16))
    >>> img = read_image(path)
    >>> img.shape, img.dtype, int(img[0, 0, 0])
    ((3, 5, 1), dtype('uint16'), 4097)
    """
    path = Path(path)
    where = f"image file {os.fspath(path)!r}"
    if not path.exists():
        raise FileNotFoundError(f"No such {where}.")
    if not path.is_file():
        raise ValueError(f"Cannot read {where}: it is not a regular file.")
    ext = path.suffix.lower()
    known = IMAGE_EXTENSIONS + RADIANCE_EXTENSIONS
    if ext not in known:
        raise ValueError(
            f"Cannot read {where}: expected one of the extensions {known}, but got {ext!r}."
        )
    try:
        if ext == ".npy":
            img = _read_npy(path, where, max_pixels)
        elif ext == ".hdr":
            img = _read_rgbe(path, where, max_pixels)
        elif ext == ".exr":
            img = read_exr(path, max_pixels=max_pixels, frame=frame, where=where)
        elif ext in (".tif", ".tiff"):
            img = _read_tiff(path, where, max_pixels, frame, out)
        elif ext == ".png":
            img = _read_png(path, where, max_pixels, frame, out)
        else:
            img = _read_pil(path, where, max_pixels, frame, "jpeg", out)
    except ValueError as err:
        text = str(err)
        if text.startswith("Cannot read") or text.startswith("Expected `frame`"):
            raise
        if text.startswith(where + ": "):
            text = text[len(where) + 2 :]
        elif text.startswith(where + " "):
            text = "it " + text[len(where) + 1 :]
        raise ValueError(f"Cannot read {where}: {text}") from err
    except (_Unreadable, OSError, EOFError) as err:
        raise ValueError(
            f"Cannot read {where}: the file is unreadable, corrupted or truncated "
            f"({_codec_error(err)})."
        ) from err
    except MemoryError as err:
        raise ValueError(
            f"Cannot read {where}: not enough memory to decode it; lower the pixel limit "
            "(`max_pixels`, DEEPINV_ICRF_MAX_PIXELS) or free memory."
        ) from err
    img = _as_hwc(np.asarray(img), where)
    if out is not None and out.shape == img.shape and out.dtype == img.dtype:
        if not np.shares_memory(out, img):  # a TIFF or a 16-bit PNG is decoded in place
            np.copyto(out, img)
        return out
    return img if img.flags.writeable else img.copy()


# ---------------------------------------------------------------------------- writing
def _png_with_exif(png: bytes, exif: bytes) -> bytes:
    r"""Insert an ``eXIf`` chunk after the IHDR chunk of an encoded PNG (our own bytes)."""
    body = exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
    chunk = (
        len(body).to_bytes(4, "big")
        + b"eXIf"
        + body
        + zlib.crc32(b"eXIf" + body).to_bytes(4, "big")
    )
    return png[:33] + chunk + png[33:]


def write_image(
    path: str | os.PathLike,
    image: np.ndarray,
    *,
    exposure_time: float | None = None,
    quality: int = 95,
    png_filters: tuple[int, ...] = (0,),
    exr_pixel_type: str = "float",
    exr_compression: str = "zip",
) -> None:
    r"""Write an ``(H, W)`` or ``(H, W, C)`` array to an image file, atomically.

    ``uint8`` goes to PNG, JPEG or TIFF; ``uint16`` to PNG or TIFF; float arrays to float32 TIFF,
    Radiance ``.hdr`` (RGBE, an 8-bit mantissa: about 1 % relative precision), OpenEXR ``.exr``
    (official bindings; 32-bit FLOAT exact or 16-bit HALF, any OpenEXR compression) or ``.npy``
    (which also takes any numeric array).

    :param str, os.PathLike path: destination; the format follows the extension.
    :param numpy.ndarray image: the image, ``C`` in ``{1, 3}`` (``.npy``: anything).
    :param float exposure_time: when given, stored as EXIF ``ExposureTime`` (PNG, JPEG, TIFF).
    :param int quality: JPEG quality (default 95).
    :param tuple png_filters: PNG row filter types (0 to 4) libpng may choose from for 16-bit
        PNGs (default ``(0,)``: no filtering).
    :param str exr_pixel_type: ``.exr`` pixel type: ``"float"`` (32-bit, exact for float32;
        default) or ``"half"`` (16-bit, about 0.05 % relative precision, values up to 65504).
    :param str exr_compression: ``.exr`` compression, one of
        :data:`deepinv_icrf.io.exr.EXR_COMPRESSIONS` (default ``"zip"``, lossless).
    :raises ValueError: for an unsupported extension/dtype pair, a non-finite float image, an
        unknown option or values beyond the HALF range; nothing is written then.

    |sep|

    :Example:

    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "radiance.tif"
    >>> write_image(path, np.full((2, 3, 3), 7.5, dtype=np.float32))
    >>> float(read_image(path).max())
    7.5
    >>> exr = path.with_suffix(".exr")
    >>> write_image(exr, np.array([[0.1, 2.0, 3e4]]), exr_pixel_type="half")
    >>> read_image(exr)[0, :, 0].tolist()
    [0.0999755859375, 2.0, 30000.0]
    """
    from deepinv_icrf._checks import check_in
    from deepinv_icrf.io.exif import exif_bytes, exposure_rational
    from deepinv_icrf.io.exr import EXR_COMPRESSIONS, EXR_PIXEL_TYPES

    check_in(exr_pixel_type, "exr_pixel_type", tuple(EXR_PIXEL_TYPES))
    check_in(exr_compression, "exr_compression", tuple(EXR_COMPRESSIONS))
    path = Path(path)
    where = os.fspath(path)
    ext = path.suffix.lower()
    image = np.ascontiguousarray(image)
    if ext == ".npy":
        if not np.issubdtype(image.dtype, np.number):
            raise ValueError(
                f"Cannot write {where!r}: dtype {image.dtype} is not numeric."
            )
        with atomic_write(path, "wb") as fh:
            np.save(fh, image, allow_pickle=False)
        return
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[-1] != 3):
        raise ValueError(
            f"Cannot write {where!r}: expected an (H, W) or (H, W, C) image with C in (1, 3), "
            f"but got shape {image.shape}."
        )
    if exposure_time is not None and not (
        isinstance(exposure_time, (int, float, np.floating, np.integer))
        and not isinstance(exposure_time, bool)
        and np.isfinite(exposure_time)
        and exposure_time > 0
    ):
        raise ValueError(
            f"Expected `exposure_time` to be finite and > 0, but got {exposure_time!r}."
        )
    is_float = np.issubdtype(image.dtype, np.floating)
    allowed = {
        np.dtype(np.uint8): (".png", ".jpg", ".jpeg", ".tif", ".tiff"),
        np.dtype(np.uint16): (".png", ".tif", ".tiff"),
    }
    if is_float:
        if ext not in RADIANCE_EXTENSIONS:
            raise ValueError(
                f"Cannot write float image to {where!r}: expected one of {RADIANCE_EXTENSIONS}."
            )
        if not np.isfinite(image).all():
            raise ValueError(
                f"Cannot write {where!r}: the image holds NaN or inf values."
            )
    elif ext not in allowed.get(image.dtype, ()):
        raise ValueError(
            f"Cannot write a {image.dtype} image to {where!r}: expected a uint8 image for "
            f"{allowed[np.dtype(np.uint8)]}, a uint16 one for {allowed[np.dtype(np.uint16)]} "
            f"or a float one for {RADIANCE_EXTENSIONS}."
        )
    if not png_filters or any(f not in _PNG_FILTER_BITS for f in png_filters):
        raise ValueError(
            f"Expected `png_filters` to hold PNG filter types 0..4, but got {png_filters!r}."
        )
    exif = exif_bytes(float(exposure_time)) if exposure_time is not None else None

    if ext in (".tif", ".tiff"):
        import tifffile

        data = image.astype(np.float32) if is_float else image
        extratags = []
        if exposure_time is not None:
            extratags.append(
                (33434, 5, 1, exposure_rational(float(exposure_time)), True)
            )
        with atomic_path(path) as tmp:
            tifffile.imwrite(
                tmp,
                data,
                photometric="rgb" if data.ndim == 3 else "minisblack",
                extratags=extratags,
            )
        return
    if ext == ".hdr":
        rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=-1)
        rgb = np.clip(rgb.astype(np.float32), 0.0, None)
        encoded = bytes(_imagecodecs().rgbe_encode(np.ascontiguousarray(rgb)))
        with atomic_write(path, "wb") as fh:
            fh.write(encoded)
        return
    if ext == ".exr":
        write_exr(path, image, pixel_type=exr_pixel_type, compression=exr_compression)
        return
    if ext == ".png" and image.dtype == np.uint16:
        flags = 0
        for f in png_filters:
            flags |= _PNG_FILTER_BITS[f]
        encoded = bytes(_imagecodecs().png_encode(image, level=6, filter=flags))
        if exif is not None:
            encoded = _png_with_exif(encoded, exif)
        with atomic_write(path, "wb") as fh:
            fh.write(encoded)
        return
    from PIL import Image

    kwargs: dict[str, Any] = {}
    if exif is not None:
        kwargs["exif"] = exif
    if ext in (".jpg", ".jpeg"):
        kwargs["quality"] = quality
    with atomic_path(path) as tmp:
        Image.fromarray(image).save(
            tmp, format="JPEG" if ext != ".png" else "PNG", **kwargs
        )
