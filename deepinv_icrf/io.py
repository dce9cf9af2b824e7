r"""Files in and out: atomic writes, 8/16-bit and float images, EXIF exposure times.

Every file this package writes goes through :func:`atomic_write` or :func:`atomic_path`: the
data is written to a temporary file in the destination folder and renamed over the destination
(:func:`os.replace`, atomic on POSIX and Windows) only once it is complete, so an interrupted or
failing writer never leaves a partial output file.

Image formats:

=========================  ===============================  =================================
extension                  read                             write
=========================  ===============================  =================================
``.png``                   8/16-bit, grey/RGB(A)            ``uint8``, ``uint16`` (EXIF supported)
``.jpg``, ``.jpeg``        8-bit                            ``uint8`` (EXIF supported)
``.tif``, ``.tiff``        8/16-bit, float                  ``uint8``, ``uint16``, float32 (EXIF)
``.npy``                   any numeric array                any numeric array
``.hdr`` (Radiance RGBE)   float32                          float (built-in RGBE codec)
``.exr`` (OpenEXR)         float32 (built-in codec; see     float as FLOAT or HALF, ZIP or
                           below)                           uncompressed (built-in codec)
=========================  ===============================  =================================

Images are returned as ``(H, W, C)`` arrays (grey images get ``C = 1``; an alpha channel is
dropped). Pillow silently reduces 16-bit colour PNGs to 8 bits, so 16-bit PNGs are decoded by a
small built-in decoder instead.

OpenEXR needs no plugin: the built-in codec (numpy and :mod:`zlib`) writes single-part scanline
files (channel ``Y`` for grey images, ``R, G, B`` for colour ones) and reads single-part
scanline files with UINT, HALF or FLOAT pixels, any data window, and NO_COMPRESSION, RLE, ZIPS
or ZIP compression. Other files (PIZ, PXR24, B44, DWA compression; tiled, multi-part or deep
files) are handed to an imageio plugin when one can read them, and otherwise rejected with a
:class:`ValueError` that names the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from deepinv_icrf._checks import check_in

__all__ = [
    "IMAGE_EXTENSIONS",
    "RADIANCE_EXTENSIONS",
    "atomic_path",
    "atomic_write",
    "write_json",
    "read_image",
    "write_image",
    "read_exposure_time",
]

#: extensions of the integer (camera) image formats read by :func:`read_image`
IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
#: extensions :func:`write_image` accepts for float (radiance) images
RADIANCE_EXTENSIONS: tuple[str, ...] = (".npy", ".tif", ".tiff", ".hdr", ".exr")

_EXIF_IFD = 0x8769
_EXPOSURE_TIME = 33434
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXR_MAGIC = b"\x76\x2f\x31\x01"


# ---------------------------------------------------------------------------- atomic writes
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    r"""Yield a temporary path beside ``path``; rename it over ``path`` if the block succeeds.

    The temporary file lives in the destination folder (so the final :func:`os.replace` is an
    atomic rename on one file system), is hidden (leading dot) and keeps the destination's
    extension, so writers that pick a format from the extension (matplotlib, imageio) work. If
    the block raises, the temporary file is removed and ``path`` is left untouched.

    :param str, os.PathLike path: the destination file. Its folder must exist.
    :return: (:class:`pathlib.Path`) the temporary path to write to.

    |sep|

    :Example:

    >>> import tempfile, pathlib
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> (folder / "a.txt").read_text(), len(list(folder.iterdir()))
    ('done', 1)
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(
            f"Cannot write {os.fspath(path)!r}: folder {os.fspath(folder)!r} does not exist."
        )
    fd, tmp_name = tempfile.mkstemp(
        dir=folder, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists():
            raise OSError(f"The writer of {os.fspath(path)!r} did not create its file.")
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_write(
    path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"
) -> Iterator[IO[Any]]:
    r"""Open a temporary file for writing; it replaces ``path`` only if the block succeeds.

    .. math::

        \text{write}(\texttt{tmp}) \;\rightarrow\; \text{fsync} \;\rightarrow\;
        \texttt{os.replace}(\texttt{tmp}, \texttt{path})

    :param str, os.PathLike path: the destination file. Its folder must exist.
    :param str mode: ``"w"`` (text, default) or ``"wb"`` (bytes).
    :param str, None encoding: text encoding (default ``"utf-8"``; ignored for ``"wb"``).
    :return: the open file object.

    |sep|

    :Example:

    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "curve.json"
    >>> try:
    ...     with atomic_write(target) as fh:
    ...         _ = fh.write("partial")
    ...         raise RuntimeError("writer failed")
    ... except RuntimeError:
    ...     pass
    >>> target.exists(), list(target.parent.iterdir())
    (False, [])
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"Expected `mode` to be one of ('w', 'wb'), but got {mode!r}.")
    with atomic_path(path) as tmp:
        kwargs = {} if mode == "wb" else {"encoding": encoding}
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


def write_json(path: str | os.PathLike, obj: Any) -> None:
    r"""Write ``obj`` as indented JSON, atomically (NaN and inf are refused).

    :param str, os.PathLike path: the destination file.
    :param obj: a JSON-serialisable object.

    |sep|

    :Example:

    >>> import json, tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "summary.json"
    >>> write_json(target, {"rmse": 0.01})
    >>> json.loads(target.read_text())
    {'rmse': 0.01}
    """
    try:
        text = json.dumps(obj, indent=2, allow_nan=False)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"Cannot write {os.fspath(path)!r}: not JSON-serialisable ({err})."
        ) from err
    with atomic_write(path) as fh:
        fh.write(text + "\n")


# ---------------------------------------------------------------------------- PNG (16-bit)
def _png_chunks(data: bytes, where: str) -> Iterator[tuple[bytes, bytes]]:
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError(f"{where} is not a PNG file (bad signature).")
    pos = len(_PNG_SIGNATURE)
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError(f"{where} is truncated (incomplete PNG chunk header).")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        if len(body) != length or pos + 12 + length > len(data):
            raise ValueError(f"{where} is truncated (incomplete {kind!r} chunk).")
        crc = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])[0]
        if zlib.crc32(kind + body) != crc:
            raise ValueError(f"{where} is corrupted (CRC mismatch in {kind!r} chunk).")
        yield kind, body
        if kind == b"IEND":
            return
        pos += 12 + length
    raise ValueError(f"{where} is truncated (no IEND chunk).")


def _png_header(path: Path) -> tuple[int, int] | None:
    r"""``(bit_depth, colour_type)`` of a PNG file, read from its IHDR chunk."""
    with open(path, "rb") as fh:
        head = fh.read(33)
    if len(head) < 33 or not head.startswith(_PNG_SIGNATURE) or head[12:16] != b"IHDR":
        return None
    return head[24], head[25]


_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


def _unfilter(raw: np.ndarray, height: int, stride: int, bpp: int, where: str):
    rows = raw.reshape(height, stride + 1)
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for r in range(height):
        ftype, line = rows[r, 0], rows[r, 1:]
        if ftype == 0:
            cur = line.copy()
        elif ftype == 1:
            cur = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).ravel()
        elif ftype == 2:
            cur = line + prev
        elif ftype in (3, 4):
            cur = line.astype(np.int32)
            up = prev.astype(np.int32)
            for i in range(0, stride, bpp):
                a = cur[i - bpp : i] if i else np.zeros(bpp, np.int32)
                b = up[i : i + bpp]
                if ftype == 3:
                    pred = (a + b) // 2
                else:
                    c = up[i - bpp : i] if i else np.zeros(bpp, np.int32)
                    p = a + b - c
                    pa, pb, pc = np.abs(p - a), np.abs(p - b), np.abs(p - c)
                    pred = np.where(
                        (pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c)
                    )
                cur[i : i + bpp] = (cur[i : i + bpp] + pred) % 256
            cur = cur.astype(np.uint8)
        else:
            raise ValueError(f"{where} is corrupted (unknown PNG filter type {ftype}).")
        out[r] = cur
        prev = cur
    return out


def _read_png16_cv2(path: Path) -> np.ndarray | None:
    r"""Decode a 16-bit PNG with OpenCV when it is installed (fast path), else ``None``."""
    try:
        import cv2
    except ImportError:
        return None
    img = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if img is None or img.dtype != np.uint16:
        return None
    if img.ndim == 3 and img.shape[-1] in (3, 4):
        img = img[..., [2, 1, 0, 3][: img.shape[-1]]]
    return img


def _read_png16(path: Path, where: str) -> np.ndarray:
    r"""Decode a non-interlaced 16-bit PNG (grey, grey+alpha, RGB, RGBA) to ``(H, W, C)``.

    The built-in decoder is exact but slow on rows filtered with the Average or Paeth filters
    (a Python loop per pixel); OpenCV, when installed, is used first.
    """
    fast = _read_png16_cv2(path)
    if fast is not None:
        return fast
    header = None
    idat = []
    for kind, body in _png_chunks(path.read_bytes(), where):
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
    if header is None:
        raise ValueError(f"{where} is corrupted (no IHDR chunk).")
    width, height, depth, colour, _, _, interlace = header
    if depth != 16 or colour not in _PNG_CHANNELS:
        raise ValueError(f"{where}: unsupported PNG layout (bit depth {depth}).")
    if interlace:
        raise ValueError(
            f"{where} is an interlaced 16-bit PNG, which is not supported; "
            "save it non-interlaced or as a 16-bit TIFF."
        )
    channels = _PNG_CHANNELS[colour]
    bpp = 2 * channels
    stride = width * bpp
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as err:
        raise ValueError(f"{where} is corrupted or truncated ({err}).") from err
    if len(raw) != height * (stride + 1):
        raise ValueError(f"{where} is truncated (image data too short).")
    data = _unfilter(np.frombuffer(raw, np.uint8), height, stride, bpp, where)
    img = data.view(">u2").reshape(height, width, channels).astype(np.uint16)
    return img


def _png_filter(line: np.ndarray, prev: np.ndarray, ftype: int, bpp: int) -> np.ndarray:
    cur = line.astype(np.int32)
    up = prev.astype(np.int32)
    left = np.concatenate([np.zeros(bpp, np.int32), cur[:-bpp]])
    upleft = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
    if ftype == 0:
        pred = np.zeros_like(cur)
    elif ftype == 1:
        pred = left
    elif ftype == 2:
        pred = up
    elif ftype == 3:
        pred = (left + up) // 2
    else:
        p = left + up - upleft
        pa, pb, pc = np.abs(p - left), np.abs(p - up), np.abs(p - upleft)
        pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
    return ((cur - pred) % 256).astype(np.uint8)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body))
    )


def _encode_png16(
    img: np.ndarray, exif: bytes | None, filters: tuple[int, ...]
) -> bytes:
    height, width, channels = img.shape
    colour = {1: 0, 3: 2}[channels]
    data = np.ascontiguousarray(img, dtype=">u2").view(np.uint8)
    data = data.reshape(height, width * 2 * channels)
    prev = np.zeros(data.shape[1], np.uint8)
    parts = []
    for r in range(height):
        ftype = filters[r % len(filters)]
        parts.append(
            bytes([ftype]) + _png_filter(data[r], prev, ftype, 2 * channels).tobytes()
        )
        prev = data[r]
    out = _PNG_SIGNATURE + _png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", width, height, 16, colour, 0, 0, 0)
    )
    if exif:
        out += _png_chunk(
            b"eXIf", exif[6:] if exif.startswith(b"Exif\x00\x00") else exif
        )
    out += _png_chunk(b"IDAT", zlib.compress(b"".join(parts), 6))
    return out + _png_chunk(b"IEND", b"")


# ---------------------------------------------------------------------------- Radiance RGBE
def _encode_rgbe(img: np.ndarray) -> bytes:
    height, width, _ = img.shape
    rgb = np.clip(img.astype(np.float64), 0.0, None)
    peak = rgb.max(axis=-1)
    mant, expo = np.frexp(peak)
    nonzero = peak > 1e-32
    scale = np.where(nonzero, mant * 256.0 / np.where(nonzero, peak, 1.0), 0.0)
    out = np.zeros((height, width, 4), np.uint8)
    out[..., :3] = np.clip(np.floor(rgb * scale[..., None]), 0, 255).astype(np.uint8)
    out[..., 3] = np.where(nonzero, expo + 128, 0).astype(np.uint8)
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y {height} +X {width}\n"
    return header.encode("ascii") + out.tobytes()


def _read_rgbe(path: Path, where: str) -> np.ndarray:
    data = path.read_bytes()
    if not (data.startswith(b"#?RADIANCE") or data.startswith(b"#?RGBE")):
        raise ValueError(f"{where} is not a Radiance .hdr file (bad signature).")
    end = data.find(b"\n\n")
    if end < 0:
        raise ValueError(f"{where} is truncated (no end of header).")
    if b"FORMAT=32-bit_rle_rgbe" not in data[:end]:
        raise ValueError(f"{where}: only the RGBE variant of .hdr is supported.")
    line_end = data.find(b"\n", end + 2)
    fields = data[end + 2 : line_end].split()
    if line_end < 0 or len(fields) != 4 or fields[0] != b"-Y" or fields[2] != b"+X":
        raise ValueError(f"{where}: unsupported .hdr resolution line.")
    height, width = int(fields[1]), int(fields[3])
    buf = np.frombuffer(data, np.uint8, offset=line_end + 1)
    out = np.zeros((height, width, 4), np.uint8)
    pos = 0
    try:
        for r in range(height):
            head = buf[pos : pos + 4]
            if (
                8 <= width < 32768
                and len(head) == 4
                and head[0] == 2
                and head[1] == 2
                and (int(head[2]) << 8 | int(head[3])) == width
            ):
                pos += 4
                for ch in range(4):
                    col = 0
                    while col < width:
                        count = int(buf[pos])
                        pos += 1
                        if count > 128:
                            count -= 128
                            out[r, col : col + count, ch] = buf[pos]
                            pos += 1
                        else:
                            out[r, col : col + count, ch] = buf[pos : pos + count]
                            pos += count
                        col += count
            else:
                out[r] = buf[pos : pos + 4 * width].reshape(width, 4)
                pos += 4 * width
    except (IndexError, ValueError) as err:
        raise ValueError(f"{where} is truncated or corrupted.") from err
    expo = out[..., 3].astype(np.int32)
    factor = np.where(expo > 0, np.ldexp(1.0, expo - 136), 0.0)
    return ((out[..., :3].astype(np.float64) + 0.5) * factor[..., None]).astype(
        np.float32
    )


# ---------------------------------------------------------------------------- OpenEXR
# Single-part scanline files (OpenEXR file layout, version 2): magic number, version field,
# header (attributes ``name\0 type\0 size value`` ended by a null byte), line offset table
# (one uint64 file position per scanline block, in increasing y), then the blocks
# ``int32 y, int32 size, data``. A block's data holds its lines one after the other, each line
# holding every channel (in the alphabetical order of the channel list) for the whole width,
# little-endian. Compressed blocks whose compressed size is not smaller than the raw size are
# stored raw.
_EXR_VERSION = 2
_EXR_TILED = 0x200
_EXR_LONG_NAMES = 0x400
_EXR_DEEP = 0x800
_EXR_MULTIPART = 0x1000
#: OpenEXR compression code -> (name, scanlines per block)
_EXR_COMPRESSION = {
    0: ("NO_COMPRESSION", 1),
    1: ("RLE", 1),
    2: ("ZIPS", 1),
    3: ("ZIP", 16),
    4: ("PIZ", 32),
    5: ("PXR24", 16),
    6: ("B44", 32),
    7: ("B44A", 32),
    8: ("DWAA", 32),
    9: ("DWAB", 256),
}
_EXR_BUILTIN_COMPRESSION = (0, 1, 2, 3)
#: OpenEXR pixel type code -> little-endian storage dtype (UINT, HALF, FLOAT)
_EXR_PIXEL_DTYPE = {0: np.dtype("<u4"), 1: np.dtype("<f2"), 2: np.dtype("<f4")}
#: ``write_image`` options -> codes
_EXR_WRITE_PIXEL_TYPES = {"float": 2, "half": 1}
_EXR_WRITE_COMPRESSIONS = {"zip": 3, "none": 0}
_EXR_REQUIRED = (
    "channels",
    "compression",
    "dataWindow",
    "displayWindow",
    "lineOrder",
    "pixelAspectRatio",
    "screenWindowCenter",
    "screenWindowWidth",
)
_EXR_CONVERT = "convert it with another tool to ZIP or uncompressed"


class _ExrUnsupported(ValueError):
    r"""A well-formed OpenEXR file that the built-in reader does not decode."""


def _exr_attribute(name: str, kind: str, value: bytes) -> bytes:
    return (
        name.encode("ascii")
        + b"\0"
        + kind.encode("ascii")
        + b"\0"
        + struct.pack("<i", len(value))
        + value
    )


def _exr_predict(raw: bytes) -> bytes:
    r"""ZIP/RLE pre-pass: bytes interleaved (even, then odd positions), then deltas + 128."""
    b = np.frombuffer(raw, np.uint8)
    t = np.concatenate([b[0::2], b[1::2]])
    d = t.copy()
    d[1:] = t[1:] - t[:-1] + 128  # uint8 arithmetic wraps modulo 256
    return d.tobytes()


def _exr_unpredict(data: bytes) -> np.ndarray:
    r"""Invert :func:`_exr_predict`: running sum of the deltas - 128, then de-interleave."""
    d = np.frombuffer(data, np.uint8).copy()
    d[1:] -= 128
    t = np.cumsum(d, dtype=np.uint8)
    out = np.empty_like(t)
    half = (t.size + 1) // 2
    out[0::2] = t[:half]
    out[1::2] = t[half:]
    return out


def _exr_rle_decode(payload: bytes, expected: int, where: str) -> bytes:
    r"""OpenEXR run-length decoding: a signed count byte ``n``; ``n < 0``: ``-n`` literal
    bytes follow; ``n >= 0``: the next byte repeated ``n + 1`` times."""
    out = bytearray()
    pos, size = 0, len(payload)
    while pos < size:
        count = payload[pos]
        pos += 1
        if count >= 128:
            run = payload[pos : pos + 256 - count]
            if len(run) != 256 - count:
                raise ValueError(f"{where} is truncated or corrupted (RLE data).")
            out += run
            pos += 256 - count
        else:
            if pos >= size:
                raise ValueError(f"{where} is truncated or corrupted (RLE data).")
            out += payload[pos : pos + 1] * (count + 1)
            pos += 1
        if len(out) > expected:
            break
    if len(out) != expected:
        raise ValueError(
            f"{where} is corrupted (an RLE block decodes to {len(out)} bytes, "
            f"expected {expected})."
        )
    return bytes(out)


def _exr_uncompress(payload: bytes, code: int, expected: int, where: str) -> np.ndarray:
    if len(payload) == expected:  # stored raw (always for NO_COMPRESSION)
        return np.frombuffer(payload, np.uint8)
    if code == 0 or len(payload) > expected:
        raise ValueError(
            f"{where} is corrupted (a scanline block holds {len(payload)} bytes, "
            f"expected {expected})."
        )
    if code == 1:
        return _exr_unpredict(_exr_rle_decode(payload, expected, where))
    inflate = zlib.decompressobj()
    try:
        data = inflate.decompress(payload, expected)
    except zlib.error as err:
        raise ValueError(f"{where} is corrupted or truncated ({err}).") from err
    if len(data) != expected or inflate.unconsumed_tail:
        raise ValueError(
            f"{where} is corrupted (a ZIP block does not inflate to {expected} bytes)."
        )
    return _exr_unpredict(data)


def _encode_exr(
    img: np.ndarray,
    pixel_type: str = "float",
    compression: str = "zip",
    where: str = "",
) -> bytes:
    r"""Encode an ``(H, W, 1)`` (channel ``Y``) or ``(H, W, 3)`` (``R, G, B``) float array as
    a single-part scanline OpenEXR file, FLOAT or HALF pixels, ZIP or no compression. Values
    are stored as they are (inf and NaN included)."""
    height, width, channels = img.shape
    names = ("Y",) if channels == 1 else ("R", "G", "B")
    order = sorted(range(channels), key=lambda i: names[i])
    code = _EXR_WRITE_PIXEL_TYPES[pixel_type]
    comp = _EXR_WRITE_COMPRESSIONS[compression]
    with np.errstate(over="ignore"):
        planes = img[..., order].astype(_EXR_PIXEL_DTYPE[code])
    if code == 1 and (np.isinf(planes) & np.isfinite(img[..., order])).any():
        raise ValueError(
            f"Cannot write {where}: values up to {float(np.nanmax(np.abs(img))):g} exceed the "
            "largest half value 65504; use `exr_pixel_type='float'`."
        )
    # (H, C, W): per line, each channel's whole row, channels in alphabetical order
    lines = np.ascontiguousarray(planes.transpose(0, 2, 1)).view(np.uint8)
    lines = lines.reshape(height, -1)
    chlist = b"".join(
        names[i].encode("ascii") + b"\0" + struct.pack("<iB3xii", code, 0, 1, 1)
        for i in order
    )
    window = struct.pack("<4i", 0, 0, width - 1, height - 1)
    header = b"".join(
        [
            _EXR_MAGIC,
            struct.pack("<I", _EXR_VERSION),
            _exr_attribute("channels", "chlist", chlist + b"\0"),
            _exr_attribute("compression", "compression", bytes([comp])),
            _exr_attribute("dataWindow", "box2i", window),
            _exr_attribute("displayWindow", "box2i", window),
            _exr_attribute("lineOrder", "lineOrder", b"\0"),  # INCREASING_Y
            _exr_attribute("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
            _exr_attribute("screenWindowCenter", "v2f", struct.pack("<2f", 0.0, 0.0)),
            _exr_attribute("screenWindowWidth", "float", struct.pack("<f", 1.0)),
            b"\0",
        ]
    )
    per_block = _EXR_COMPRESSION[comp][1]
    blocks = []
    for y in range(0, height, per_block):
        raw = lines[y : y + per_block].tobytes()
        data = raw
        if comp == 3:
            packed = zlib.compress(_exr_predict(raw), 6)
            if len(packed) < len(raw):
                data = packed
        blocks.append(struct.pack("<ii", y, len(data)) + data)
    position = len(header) + 8 * len(blocks)
    offsets = []
    for block in blocks:
        offsets.append(position)
        position += len(block)
    return header + struct.pack(f"<{len(blocks)}Q", *offsets) + b"".join(blocks)


def _exr_string(data: bytes, pos: int, where: str) -> tuple[bytes, int]:
    end = data.find(b"\0", pos)
    if end < 0:
        raise ValueError(f"{where} is truncated (incomplete OpenEXR header).")
    return data[pos:end], end + 1


def _exr_header(
    data: bytes, where: str
) -> tuple[dict[bytes, tuple[bytes, bytes]], int]:
    r"""Check magic number and version field; return the attributes and the header's end."""
    if len(data) < 8 or data[:4] != _EXR_MAGIC:
        raise ValueError(f"{where} is not an OpenEXR file (bad magic number).")
    version = struct.unpack_from("<I", data, 4)[0]
    if version & 0xFF != _EXR_VERSION:
        raise ValueError(
            f"{where}: unsupported OpenEXR version {version & 0xFF} (expected 2)."
        )
    for flag, kind in (
        (_EXR_MULTIPART, "multi-part"),
        (_EXR_DEEP, "deep"),
        (_EXR_TILED, "tiled"),
    ):
        if version & flag:
            raise _ExrUnsupported(
                f"{where} is a {kind} OpenEXR file, which the built-in reader does not "
                f"support; {_EXR_CONVERT} single-part scanline."
            )
    if version & ~(0xFF | _EXR_LONG_NAMES):
        raise ValueError(f"{where}: unknown OpenEXR version flags {version:#x}.")
    attrs: dict[bytes, tuple[bytes, bytes]] = {}
    pos = 8
    while True:
        name, pos = _exr_string(data, pos, where)
        if not name:
            return attrs, pos
        kind, pos = _exr_string(data, pos, where)
        if pos + 4 > len(data):
            raise ValueError(f"{where} is truncated (incomplete OpenEXR header).")
        size = struct.unpack_from("<i", data, pos)[0]
        value = data[pos + 4 : pos + 4 + size]
        if size < 0 or len(value) != size:
            raise ValueError(f"{where} is truncated (incomplete OpenEXR header).")
        attrs[name] = (kind, value)
        pos += 4 + size


def _exr_channels(value: bytes, where: str) -> list[tuple[str, np.dtype]]:
    channels = []
    pos = 0
    while True:
        name, pos = _exr_string(value, pos, where)
        if not name:
            break
        if pos + 16 > len(value):
            raise ValueError(f"{where} is corrupted (bad OpenEXR channel list).")
        ptype, _, xs, ys = struct.unpack_from("<iB3xii", value, pos)
        pos += 16
        label = name.decode("latin-1")
        if ptype not in _EXR_PIXEL_DTYPE:
            raise ValueError(
                f"{where} is corrupted (channel {label!r} has pixel type {ptype})."
            )
        if (xs, ys) != (1, 1):
            raise _ExrUnsupported(
                f"{where}: channel {label!r} is subsampled ({xs}x{ys}), which the built-in "
                "OpenEXR reader does not support; convert it with another tool to full "
                "resolution R, G, B or Y channels."
            )
        channels.append((label, _EXR_PIXEL_DTYPE[ptype]))
    if not channels:
        raise ValueError(f"{where} holds no channel.")
    return channels


def _decode_exr(data: bytes, where: str) -> np.ndarray:
    r"""Decode a single-part scanline OpenEXR file (NO_COMPRESSION, RLE, ZIPS or ZIP; UINT,
    HALF or FLOAT pixels; any data window) to a float32 ``(H, W, C)`` array: ``R, G, B`` when
    the file has them, else ``Y``, else its only channel (alpha is dropped)."""
    attrs, pos = _exr_header(data, where)
    for name in _EXR_REQUIRED:
        if name.encode() not in attrs:
            raise ValueError(
                f"{where} is corrupted (no {name!r} attribute in its OpenEXR header)."
            )
    kind = attrs.get(b"type", (b"", b"scanlineimage"))[1].rstrip(b"\0")
    if kind != b"scanlineimage":
        raise _ExrUnsupported(
            f"{where} holds a {kind.decode('latin-1')!r} OpenEXR part, which the built-in "
            f"reader does not support; {_EXR_CONVERT} scanline."
        )
    comp_value = attrs[b"compression"][1]
    code = comp_value[0] if len(comp_value) == 1 else -1
    if code not in _EXR_BUILTIN_COMPRESSION:
        label = _EXR_COMPRESSION.get(code, (f"unknown ({code})", 0))[0]
        raise _ExrUnsupported(
            f"{where} uses {label} compression, which the built-in OpenEXR reader does "
            f"not support; {_EXR_CONVERT}."
        )
    channels = _exr_channels(attrs[b"channels"][1], where)
    if len(attrs[b"dataWindow"][1]) != 16:
        raise ValueError(f"{where} is corrupted (bad OpenEXR data window).")
    xmin, ymin, xmax, ymax = struct.unpack("<4i", attrs[b"dataWindow"][1])
    width, height = xmax - xmin + 1, ymax - ymin + 1
    if width < 1 or height < 1 or width * height * len(channels) > 2**31:
        raise ValueError(
            f"{where} is corrupted (OpenEXR data window {xmin, ymin, xmax, ymax})."
        )
    starts = np.cumsum([0] + [width * dt.itemsize for _, dt in channels])
    line_bytes = int(starts[-1])
    per_block = _EXR_COMPRESSION[code][1]
    n_blocks = -(-height // per_block)
    if pos + 8 * n_blocks > len(data):
        raise ValueError(f"{where} is truncated (incomplete OpenEXR offset table).")
    offsets = struct.unpack_from(f"<{n_blocks}Q", data, pos)
    lines = np.empty((height, line_bytes), np.uint8)
    filled = np.zeros(n_blocks, bool)
    for offset in offsets:
        if offset + 8 > len(data):
            raise ValueError(f"{where} is truncated (a scanline block is missing).")
        y, size = struct.unpack_from("<ii", data, offset)
        row = y - ymin
        if row < 0 or row >= height or row % per_block:
            raise ValueError(
                f"{where} is corrupted (scanline block at y = {y} outside the data window)."
            )
        payload = data[offset + 8 : offset + 8 + size]
        if size < 0 or len(payload) != size:
            raise ValueError(f"{where} is truncated (incomplete scanline block).")
        n_lines = min(per_block, height - row)
        raw = _exr_uncompress(payload, code, n_lines * line_bytes, where)
        lines[row : row + n_lines] = raw.reshape(n_lines, line_bytes)
        filled[row // per_block] = True
    if not filled.all():
        raise ValueError(f"{where} is corrupted (scanline blocks are missing).")
    planes = {
        name: np.ascontiguousarray(lines[:, starts[i] : starts[i + 1]])
        .view(dt)
        .astype(np.float32)
        for i, (name, dt) in enumerate(channels)
    }
    if all(c in planes for c in "RGB"):
        keep = ["R", "G", "B"]
    elif "Y" in planes:
        keep = ["Y"]
    elif len(planes) == 1:
        keep = list(planes)
    else:
        raise ValueError(
            f"{where}: cannot tell the image in OpenEXR channels {sorted(planes)}; "
            "expected R, G, B or Y."
        )
    return np.stack([planes[c] for c in keep], axis=-1)


def _exr_plugins() -> tuple[str, ...]:
    return ("opencv", "EXR-FI")


def _read_exr_plugin(path: Path) -> np.ndarray | None:
    r"""Read an OpenEXR file through an imageio plugin, or ``None`` when none can."""
    try:
        import imageio.v3 as iio
    except ImportError:
        return None
    for plugin in _exr_plugins():
        try:
            img = (
                iio.imread(path, plugin=plugin, flags=-1)
                if plugin == "opencv"
                else iio.imread(path, plugin=plugin)
            )
        except Exception:  # noqa: BLE001 - try the next plugin
            continue
        img = np.asarray(img)
        if plugin == "opencv" and img.ndim == 3 and img.shape[-1] >= 3:
            img = img[..., 2::-1]
        return img.astype(np.float32)
    return None


def _read_exr(path: Path, where: str) -> np.ndarray:
    r"""Built-in decoder first; an imageio plugin for what it does not handle (PIZ, tiled...)."""
    try:
        return _decode_exr(path.read_bytes(), where)
    except _ExrUnsupported:
        img = _read_exr_plugin(path)
        if img is None:
            raise
        return img


# ---------------------------------------------------------------------------- reading
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


def _read_tiff(path: Path, where: str) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if not tif.series:
            raise ValueError(f"{where} holds no image.")
        series = tif.series[0]
        img = series.asarray()
        axes = series.axes
    if axes in ("YX", "YXS"):
        return img
    if axes in ("SYX", "CYX") and img.shape[0] <= 4:
        return np.moveaxis(img, 0, -1)
    raise ValueError(
        f"{where}: expected one 2-D image (axes YX or YXS), but got axes {axes!r} and shape "
        f"{img.shape}; multi-page TIFFs are not supported."
    )


def _read_pil(path: Path, where: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        mode = im.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
            return np.array(im).astype(np.uint16)
        if mode == "I":
            arr = np.array(im)
            if arr.min() < 0 or arr.max() > 65535:
                raise ValueError(f"{where}: 32-bit integer images are not supported.")
            return arr.astype(np.uint16)
        if mode in ("L", "RGB"):
            return np.array(im)
        if mode in ("1", "LA"):
            return np.array(im.convert("L"))
        if mode in ("F",):
            return np.array(im).astype(np.float32)
        return np.array(im.convert("RGB"))


def read_image(path: str | os.PathLike) -> np.ndarray:
    r"""Read an image file into an ``(H, W, C)`` array.

    8-bit files give ``uint8``, 16-bit files ``uint16`` (16-bit colour PNGs included, which
    Pillow would silently reduce to 8 bits), float TIFF, ``.hdr``, ``.exr`` and ``.npy`` files
    give float arrays. Grey images get ``C = 1``; alpha channels are dropped.

    :param str, os.PathLike path: the file (``.png``, ``.jpg``, ``.jpeg``, ``.tif``, ``.tiff``,
        ``.npy``, ``.hdr``, ``.exr``).
    :return: (:class:`numpy.ndarray`) the image, ``(H, W, C)``.
    :raises FileNotFoundError: if the file does not exist.
    :raises ValueError: naming the file, for an unknown extension or an unreadable, corrupted or
        truncated file.

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
    if not path.is_file():
        raise FileNotFoundError(f"No such {where}.")
    ext = path.suffix.lower()
    known = IMAGE_EXTENSIONS + RADIANCE_EXTENSIONS
    if ext not in known:
        raise ValueError(
            f"Cannot read {where}: expected one of the extensions {known}, but got {ext!r}."
        )
    try:
        if ext == ".npy":
            img = np.load(path, allow_pickle=False)
            if not (np.issubdtype(img.dtype, np.number) or img.dtype == np.bool_):
                raise ValueError(f"{where} holds dtype {img.dtype}, not numbers.")
        elif ext == ".hdr":
            img = _read_rgbe(path, where)
        elif ext == ".exr":
            img = _read_exr(path, where)
        elif ext in (".tif", ".tiff"):
            img = _read_tiff(path, where)
        elif ext == ".png" and (_png_header(path) or (0, 0))[0] == 16:
            img = _read_png16(path, where)
        else:
            img = _read_pil(path, where)
    except ValueError as err:
        if where in str(err):
            raise
        raise ValueError(f"Cannot read {where}: {err}") from err
    except (OSError, SyntaxError, EOFError, struct.error, zlib.error) as err:
        raise ValueError(
            f"Cannot read {where}: the file is unreadable, corrupted or truncated ({err})."
        ) from err
    return _as_hwc(np.asarray(img), where)


def read_exposure_time(path: str | os.PathLike) -> float | None:
    r"""The EXIF ``ExposureTime`` of an image file in seconds, or ``None`` if it has none.

    Looks in the EXIF sub-IFD and in the main IFD (TIFF files often keep it there).

    :param str, os.PathLike path: a JPEG, PNG or TIFF file.
    :return: (float, None) the exposure time, ``None`` when absent, zero or unreadable.

    |sep|

    :Example:

    >>> import tempfile, pathlib, numpy as np
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.jpg"
    >>> write_image(path, np.zeros((4, 6, 3), np.uint8), exposure_time=1 / 250)
    >>> read_exposure_time(path)
    0.004
    """
    from PIL import Image

    try:
        with Image.open(path) as im:
            exif = im.getexif()
            value = exif.get_ifd(_EXIF_IFD).get(_EXPOSURE_TIME)
            if value is None:
                value = exif.get(_EXPOSURE_TIME)
    except (OSError, SyntaxError, ValueError, struct.error):
        return None
    if value is None:
        return None
    if isinstance(value, tuple) and len(value) == 2:
        value = value[0] / value[1] if value[1] else float("nan")
    try:
        seconds = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return seconds if np.isfinite(seconds) and seconds > 0 else None


# ---------------------------------------------------------------------------- writing
def _exif_bytes(exposure_time: float) -> bytes:
    from fractions import Fraction

    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    frac = Fraction(exposure_time).limit_denominator(1_000_000)
    exif = Image.Exif()
    exif[_EXIF_IFD] = {_EXPOSURE_TIME: IFDRational(frac.numerator, frac.denominator)}
    return exif.tobytes()


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
    Radiance ``.hdr`` (RGBE, about 0.4 % relative precision), OpenEXR ``.exr`` (built-in codec,
    32-bit FLOAT exact or 16-bit HALF, ZIP-compressed or not) or ``.npy`` (which also takes any
    numeric array).

    :param str, os.PathLike path: destination; the format follows the extension.
    :param numpy.ndarray image: the image, ``C`` in ``{1, 3}`` (``.npy``: anything).
    :param float exposure_time: when given, stored as EXIF ``ExposureTime`` (PNG, JPEG, TIFF).
    :param int quality: JPEG quality (default 95).
    :param tuple png_filters: PNG row filter types cycled over the rows of 16-bit PNGs (default
        ``(0,)``; 0 to 4).
    :param str exr_pixel_type: ``.exr`` pixel type: ``"float"`` (32-bit, exact for float32;
        default) or ``"half"`` (16-bit, about 0.05 % relative precision, values up to 65504).
    :param str exr_compression: ``.exr`` compression: ``"zip"`` (lossless, 16 scanlines per
        block; default) or ``"none"``.
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
    check_in(exr_pixel_type, "exr_pixel_type", tuple(_EXR_WRITE_PIXEL_TYPES))
    check_in(exr_compression, "exr_compression", tuple(_EXR_WRITE_COMPRESSIONS))
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
        np.isfinite(exposure_time) and exposure_time > 0
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
    exif = _exif_bytes(exposure_time) if exposure_time is not None else None

    if ext in (".tif", ".tiff"):
        import tifffile

        data = image.astype(np.float32) if is_float else image
        extratags = []
        if exposure_time is not None:
            from fractions import Fraction

            frac = Fraction(exposure_time).limit_denominator(1_000_000)
            extratags.append(
                (_EXPOSURE_TIME, 5, 1, (frac.numerator, frac.denominator), True)
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
        with atomic_write(path, "wb") as fh:
            fh.write(_encode_rgbe(rgb))
        return
    if ext == ".exr":
        hwc = image if image.ndim == 3 else image[..., None]
        data = _encode_exr(hwc, exr_pixel_type, exr_compression, repr(where))
        with atomic_write(path, "wb") as fh:
            fh.write(data)
        return
    if ext == ".png" and image.dtype == np.uint16:
        if any(f not in range(5) for f in png_filters) or not png_filters:
            raise ValueError(
                f"Expected `png_filters` to hold PNG filter types 0..4, but got {png_filters!r}."
            )
        hwc = image if image.ndim == 3 else image[..., None]
        with atomic_write(path, "wb") as fh:
            fh.write(_encode_png16(hwc, exif, tuple(png_filters)))
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
