from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
import torch

from deepinv_icrf.io import atomic as atomic_module
from deepinv_icrf.io import (
    atomic_path,
    atomic_write,
    read_exposure_time,
    read_image,
    write_image,
    write_json,
)
from deepinv_icrf.io.limits import check_pixels, resolve_max_pixels
from deepinv_icrf.models import ICRF

H, W = 13, 11


def _codes(dtype, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    shape = (H, W, channels) if channels > 1 else (H, W)
    return rng.integers(0, top + 1, size=shape).astype(dtype)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body))
    )


def _png_declaring(width: int, height: int, depth: int = 8, tail: bytes = b"") -> bytes:
    r"""A PNG whose IHDR declares ``width x height`` (valid CRC), followed by ``tail``."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + tail


# ---------------------------------------------------------------- atomic writes
def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "curve.json"
    with atomic_write(target) as fh:
        fh.write("first")
    assert target.read_text() == "first"
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_write(target) as fh:
            fh.write("second, half written")
            raise RuntimeError("boom")
    assert target.read_text() == "first"
    assert _listing(tmp_path) == ["curve.json"]


def test_atomic_write_new_file_absent_after_failure(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "x.npy", "wb") as fh:
            fh.write(b"\x00" * 100)
            raise KeyboardInterrupt
    assert _listing(tmp_path) == []


def test_atomic_write_bad_mode(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with atomic_write(tmp_path / "a", "a"):
            pass


def test_atomic_path_keeps_extension_and_usual_mode(tmp_path):
    with atomic_path(tmp_path / "plot.png") as tmp:
        assert tmp.suffix == ".png" and tmp.name.startswith(".plot.png.")
        tmp.write_bytes(b"png")
    mode = (tmp_path / "plot.png").stat().st_mode & 0o777
    assert mode == 0o666 & ~atomic_module._umask()


def test_atomic_path_writer_that_writes_nothing(tmp_path):
    with pytest.raises(OSError, match="did not create"):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.unlink()
    assert _listing(tmp_path) == []


def test_output_set_with_an_output_never_written_leaves_nothing(tmp_path):
    # one output written, one not: the set is refused as a whole and its staging folders
    # are removed (they were left behind, holding the written file)
    from deepinv_icrf.io import OutputSet

    (tmp_path / "old.json").write_text("old")
    with pytest.raises(OSError, match="out.png' did not create it"):
        with OutputSet() as outputs:
            outputs.file(tmp_path / "old.json").write_text("new")
            outputs.file(tmp_path / "out.png")  # its writer wrote nothing
    assert _listing(tmp_path) == ["old.json"]
    assert (tmp_path / "old.json").read_text() == "old"


def test_atomic_path_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_path(tmp_path / "nope" / "a.png"):
            pass


def test_write_json_refuses_nan_without_writing(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        write_json(tmp_path / "s.json", {"x": float("nan")})
    assert _listing(tmp_path) == []
    write_json(tmp_path / "s.json", {"x": 1})
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": 1}


def test_icrf_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "icrf.json"
    ICRF(channels=1, n_points=5).save(target)
    before = target.read_text()

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(atomic_module.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        ICRF(channels=1, n_points=5, init="gamma").save(target)
    assert target.read_text() == before
    assert _listing(tmp_path) == ["icrf.json"]


# ---------------------------------------------------------------- integer images
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("filters", [(0,), (1, 2), (3, 4), (0, 1, 2, 3, 4)])
def test_png16_round_trip(tmp_path, channels, filters):
    img = _codes(np.uint16, channels, seed=len(filters))
    write_image(tmp_path / "a.png", img, png_filters=filters, exposure_time=0.5)
    back = read_image(tmp_path / "a.png")
    assert back.dtype == np.uint16 and back.shape == (H, W, channels)
    np.testing.assert_array_equal(back, img.reshape(H, W, channels))
    assert read_exposure_time(tmp_path / "a.png") == 0.5


def test_png16_readable_by_pillow_and_opencv(tmp_path):
    from PIL import Image

    grey = _codes(np.uint16, 1)
    write_image(tmp_path / "g.png", grey, png_filters=(4, 3))
    with Image.open(tmp_path / "g.png") as im:
        np.testing.assert_array_equal(np.asarray(im).astype(np.uint16), grey)
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    rgb = _codes(np.uint16, 3)
    write_image(tmp_path / "c.png", rgb, png_filters=(1, 2, 3, 4, 0))
    back = cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_array_equal(back, rgb)


def test_png16_rgba_drops_alpha_and_16_bit_is_never_reduced(tmp_path):
    import imagecodecs

    rgba = _codes(np.uint16, 4)
    (tmp_path / "a.png").write_bytes(bytes(imagecodecs.png_encode(rgba)))
    back = read_image(tmp_path / "a.png")
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, rgba[..., :3])


@pytest.mark.parametrize(
    ("ext", "dtype"),
    [(".png", np.uint8), (".tif", np.uint8), (".tif", np.uint16), (".tiff", np.uint16)],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_lossless_integer_round_trip(tmp_path, ext, dtype, channels):
    img = _codes(dtype, channels)
    write_image(tmp_path / f"a{ext}", img, exposure_time=1 / 250)
    back = read_image(tmp_path / f"a{ext}")
    assert back.dtype == dtype and back.shape == (H, W, channels)
    np.testing.assert_array_equal(back, img.reshape(H, W, channels))
    assert read_exposure_time(tmp_path / f"a{ext}") == pytest.approx(0.004, rel=1e-12)


def test_tiff_lzw_and_planar_are_read(tmp_path):
    import tifffile

    img = _codes(np.uint16, 3)
    tifffile.imwrite(tmp_path / "lzw.tif", img, compression="lzw", photometric="rgb")
    np.testing.assert_array_equal(read_image(tmp_path / "lzw.tif"), img)
    planar = np.ascontiguousarray(np.moveaxis(img, -1, 0))
    tifffile.imwrite(
        tmp_path / "p.tif", planar, photometric="rgb", planarconfig="separate"
    )
    np.testing.assert_array_equal(read_image(tmp_path / "p.tif"), img)


def test_jpeg_round_trip_is_close_and_grey_has_one_channel(tmp_path):
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = (100 + 5 * yy + 3 * xx).astype(np.uint8)
    write_image(tmp_path / "g.jpg", smooth, quality=98)
    back = read_image(tmp_path / "g.jpg")
    assert back.shape == (H, W, 1) and back.dtype == np.uint8
    assert np.abs(back[..., 0].astype(int) - smooth).max() <= 3
    assert read_exposure_time(tmp_path / "g.jpg") is None


@pytest.mark.parametrize(
    ("name", "image"),
    [
        ("rgb.jpg", _codes(np.uint8)),
        ("grey.jpg", _codes(np.uint8, 1)),
        ("rgb.png", _codes(np.uint8)),
        ("rgb16.png", _codes(np.uint16)),
        ("rgb16.tif", _codes(np.uint16)),
        ("grey16.tif", _codes(np.uint16, 1)),
        ("rgb8.tif", _codes(np.uint8)),
    ],
)
def test_read_image_into_out(tmp_path, name, image):
    write_image(tmp_path / name, image)
    alone = read_image(tmp_path / name)
    alone[0, 0, 0] += 1  # a writable array of its own, also from Pillow's buffer
    alone[0, 0, 0] -= 1
    stack = np.zeros((2, *alone.shape), alone.dtype)
    got = read_image(tmp_path / name, out=stack[1])
    assert got.base is stack and not stack[0].any()
    np.testing.assert_array_equal(stack[1], alone)
    for other in (  # another shape or dtype: a new array, `out` untouched
        np.zeros((H + 1, W, alone.shape[-1]), alone.dtype),
        np.zeros(alone.shape, np.float32),
    ):
        got = read_image(tmp_path / name, out=other)
        assert got is not other and not other.any()
        np.testing.assert_array_equal(got, alone)


@pytest.mark.parametrize(
    ("channels", "options"),
    [
        (3, {}),  # 4:2:0, the usual camera JPEG
        (3, {"subsampling": 0}),  # 4:4:4
        (3, {"progressive": True, "quality": 70}),
        (1, {}),
    ],
)
def test_jpeg_codes_are_pillows(tmp_path, channels, options):
    # JPEGs are decoded by libjpeg-turbo through imagecodecs straight into `out`: the codes
    # must be Pillow's, bit for bit (same library, same settings)
    from PIL import Image

    from deepinv_icrf.io.images import _decode_jpeg

    rng = np.random.default_rng(1)
    smooth = np.cumsum(rng.integers(0, 3, size=(40, 57, channels)), axis=1)
    image = (
        np.clip(smooth * 2, 0, 255)
        .astype(np.uint8)
        .squeeze(-1 if channels == 1 else ())
    )
    Image.fromarray(image).save(
        tmp_path / "a.jpg", quality=options.pop("quality", 90), **options
    )
    with Image.open(tmp_path / "a.jpg") as im:
        pillows = np.asarray(im).reshape(40, 57, channels)
        mode = im.mode
    fast = _decode_jpeg(tmp_path / "a.jpg", 40, 57, mode, None)
    assert fast is not None and fast.shape == (40, 57, channels)
    np.testing.assert_array_equal(fast, pillows)
    stack = np.zeros((2, 40, 57, channels), np.uint8)
    assert read_image(tmp_path / "a.jpg", out=stack[1]).base is stack
    np.testing.assert_array_equal(stack[1], pillows)
    # bytes after the end marker (the fast path declines): Pillow reads the same codes
    (tmp_path / "b.jpg").write_bytes((tmp_path / "a.jpg").read_bytes() + b"\0" * 16)
    assert _decode_jpeg(tmp_path / "b.jpg", 40, 57, mode, None) is None
    np.testing.assert_array_equal(read_image(tmp_path / "b.jpg"), pillows)


def test_cmyk_jpeg_still_read_by_pillow(tmp_path):
    from PIL import Image

    rgb = _codes(np.uint8)
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    with Image.open(tmp_path / "c.jpg") as im:
        expect = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "c.jpg"), expect)


def test_png8_rgba_and_palette(tmp_path):
    from PIL import Image

    rgba = _codes(np.uint8, 4)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])
    pal = Image.fromarray(rgba[..., :3]).convert("P")
    pal.save(tmp_path / "p.png")
    expect = np.asarray(pal.convert("RGB"))
    np.testing.assert_array_equal(read_image(tmp_path / "p.png"), expect)


def test_exposure_time_fraction(tmp_path):
    write_image(tmp_path / "a.jpg", _codes(np.uint8), exposure_time=1 / 3)
    assert read_exposure_time(tmp_path / "a.jpg") == pytest.approx(1 / 3, rel=1e-6)
    assert read_exposure_time(tmp_path / "missing.jpg") is None


# ---------------------------------------------------------------- multi-frame files
def test_multi_page_tiff_refused_or_frame_chosen(tmp_path):
    import tifffile

    pages = np.stack([_codes(np.uint8, 1, seed=k) for k in range(3)])
    tifffile.imwrite(tmp_path / "m.tif", pages[0])
    with tifffile.TiffWriter(tmp_path / "m.tif") as tif:
        for page in pages:
            tif.write(page, contiguous=False)
    with pytest.raises(
        ValueError, match=r"m\.tif': it holds 3 pages; choose one with `frame`"
    ):
        read_image(tmp_path / "m.tif")
    np.testing.assert_array_equal(
        read_image(tmp_path / "m.tif", frame=2)[..., 0], pages[2]
    )
    with pytest.raises(ValueError, match=r"`frame` in 0..2 .* but got 3"):
        read_image(tmp_path / "m.tif", frame=3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_animated_png_refused_or_frame_chosen(tmp_path, dtype):
    import imagecodecs

    frames = np.stack([_codes(dtype, 3, seed=k) for k in range(2)])
    (tmp_path / "a.png").write_bytes(bytes(imagecodecs.apng_encode(frames)))
    with pytest.raises(ValueError, match=r"a\.png': it holds 2 frames"):
        read_image(tmp_path / "a.png")
    back = read_image(tmp_path / "a.png", frame=1)
    assert back.dtype == dtype
    np.testing.assert_array_equal(back, frames[1])


# ---------------------------------------------------------------- float images
def test_float_tiff_and_npy_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    img = (rng.random((H, W, 3)) * 1000).astype(np.float32)
    write_image(tmp_path / "r.tif", img)
    np.testing.assert_array_equal(read_image(tmp_path / "r.tif"), img)
    write_image(tmp_path / "r.npy", img.astype(np.float64))
    back = read_image(tmp_path / "r.npy")
    assert back.dtype == np.float64
    np.testing.assert_array_equal(back, img)


def test_radiance_hdr_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    img = np.exp(rng.normal(0, 4, size=(H, W, 3))).astype(np.float32)
    img[0, 0] = 0.0
    write_image(tmp_path / "r.hdr", img)
    back = read_image(tmp_path / "r.hdr")
    assert back.dtype == np.float32 and back.shape == (H, W, 3)
    # RGBE shares one 8-bit mantissa scale per pixel: within 1/128 of its largest channel
    peak = img.max(axis=-1, keepdims=True)
    err = np.abs(back - img) / np.where(peak > 0, peak, 1)
    assert err.max() <= 1 / 128
    assert np.all(back[0, 0] == 0)


def test_radiance_hdr_matches_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    img = np.exp(np.random.default_rng(3).normal(0, 2, size=(H, W, 3))).astype(
        np.float32
    )
    write_image(tmp_path / "r.hdr", img)
    theirs = cv2.imread(str(tmp_path / "r.hdr"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_allclose(theirs, read_image(tmp_path / "r.hdr"), rtol=1e-6)


def test_radiance_hdr_reads_run_length_encoding_and_header_lines(tmp_path):
    width = 9
    header = (
        f"#?RADIANCE\nVIEW= -vtv\nEXPOSURE=1\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X {width}\n"
    ).encode()
    body = b""
    for mant, expo in ((200, 129), (128, 130)):
        body += bytes([2, 2, 0, width])
        for value in (mant, mant // 2, 0, expo):  # each channel: one run of `width`
            body += bytes([128 + width, value])
    (tmp_path / "rle.hdr").write_bytes(header + body)
    img = read_image(tmp_path / "rle.hdr")
    assert img.shape == (2, width, 3)
    np.testing.assert_allclose(img[0, :, 0], 200 / 256 * 2.0, rtol=1e-7)
    np.testing.assert_allclose(img[1, :, 1], 64 / 256 * 4.0, rtol=1e-7)
    np.testing.assert_array_equal(img[:, :, 2], 0.0)


def test_debevec_memorial_hdr_is_read():
    from pathlib import Path

    path = (
        Path(__file__).resolve().parents[2] / "shared/data/real/memorial/memorial.hdr"
    )
    if not path.is_file():
        pytest.skip(f"{path} is absent (shared data folder not present)")
    img = read_image(path)
    assert img.shape == (768, 512, 3) and img.dtype == np.float32
    assert float(img.max()) == pytest.approx(274.0)


# ---------------------------------------------------------------- limits
def test_pixel_limit_argument_and_environment(tmp_path, monkeypatch):
    write_image(tmp_path / "a.png", _codes(np.uint8))
    assert read_image(tmp_path / "a.png", max_pixels=H * W).shape == (H, W, 3)
    with pytest.raises(
        ValueError,
        match=rf"declares {W}x{H} pixels \({H * W}\), more than the limit of 100",
    ):
        read_image(tmp_path / "a.png", max_pixels=100)
    monkeypatch.setenv("DEEPINV_ICRF_MAX_PIXELS", "100")
    assert resolve_max_pixels() == 100
    with pytest.raises(ValueError, match="DEEPINV_ICRF_MAX_PIXELS"):
        read_image(tmp_path / "a.png")
    monkeypatch.setenv("DEEPINV_ICRF_MAX_PIXELS", "lots")
    with pytest.raises(
        ValueError, match="DEEPINV_ICRF_MAX_PIXELS to be an int >= 1, but got 'lots'"
    ):
        read_image(tmp_path / "a.png")
    monkeypatch.delenv("DEEPINV_ICRF_MAX_PIXELS")
    with pytest.raises(TypeError, match="max_pixels"):
        resolve_max_pixels(1.5)
    with pytest.raises(ValueError, match="empty image"):
        check_pixels("x", 0, 10)


def test_huge_declared_png_is_refused_before_decoding(tmp_path):
    # 100000 x 100000 declared by an 8-bit and a 16-bit PNG: refused from the IHDR chunk
    for depth in (8, 16):
        data = _png_declaring(
            100_000, 100_000, depth, _chunk(b"IDAT", zlib.compress(b""))
        )
        (tmp_path / "bomb.png").write_bytes(data)
        with pytest.raises(
            ValueError, match=r"bomb\.png': it declares 100000x100000 pixels"
        ):
            read_image(tmp_path / "bomb.png")


def test_decompression_bomb_png_raises_the_limit_message(tmp_path):
    from PIL import Image

    # a real 12000x12000 black PNG (144 MP, 140 KB): Pillow's own bomb error is not shown
    Image.new("L", (12000, 12000)).save(tmp_path / "bomb.png", optimize=False)
    with pytest.raises(
        ValueError, match=r"12000x12000 pixels \(144000000\), more than the limit"
    ):
        read_image(tmp_path / "bomb.png")


def test_huge_declared_jpeg_is_refused(tmp_path):
    write_image(tmp_path / "a.jpg", _codes(np.uint8))
    data = bytearray((tmp_path / "a.jpg").read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)  # height, width
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bomb\.jpg': it declares 65000x65000"):
        read_image(tmp_path / "bomb.jpg")


def _tiff_declaring(width: int, height: int) -> bytes:
    r"""A little-endian baseline TIFF whose tags declare ``width x height`` 8-bit grey
    pixels in one strip of 8 bytes."""
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # Photometric: min-is-black
        (273, 4, 1, 8 + 2 + 12 * 8 + 4),  # StripOffsets: right after the IFD
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 8),  # StripByteCounts
    ]
    ifd = struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        ifd += struct.pack("<HHII", tag, kind, count, value)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + bytes(8)


def test_huge_declared_tiff_and_npy_are_refused(tmp_path):
    (tmp_path / "bomb.tif").write_bytes(_tiff_declaring(100_000, 100_000))
    with pytest.raises(ValueError, match=r"bomb\.tif': it declares 100000x100000"):
        read_image(tmp_path / "bomb.tif")
    header = {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000, 3)}
    with open(tmp_path / "bomb.npy", "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, header)
    with pytest.raises(ValueError, match=r"bomb\.npy': it declares 100000x100000"):
        read_image(tmp_path / "bomb.npy")


def test_truncated_npy_and_object_npy(tmp_path):
    np.save(tmp_path / "a.npy", np.ones((4, 5, 3), np.float32))
    data = (tmp_path / "a.npy").read_bytes()
    (tmp_path / "cut.npy").write_bytes(data[:-7])
    with pytest.raises(ValueError, match=r"cut\.npy.*declares 240"):
        read_image(tmp_path / "cut.npy")
    np.save(tmp_path / "o.npy", np.array([[None]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"o\.npy': it holds dtype object"):
        read_image(tmp_path / "o.npy")


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1000000000 +X 0\n", "empty image"),
        (
            b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 100000\n",
            "100000x100000",
        ),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X 4\n", "truncated|corrupted"),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_xyze\n\n-Y 4 +X 4\n", "only the RGBE variant"),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n+Y 4 +X 4\n", "orientation"),
        (
            b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 99999999999999 +X 4\n",
            "not a size",
        ),
        (b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n" + b"X" * 70000, "no end of header"),
        (b"GIF89a", "not a Radiance"),
    ],
)
def test_bad_radiance_files(tmp_path, text, match):
    (tmp_path / "c.hdr").write_bytes(text)
    with pytest.raises(ValueError, match=match):
        read_image(tmp_path / "c.hdr")


# ---------------------------------------------------------------- bad inputs
def test_read_missing_unknown_and_not_regular(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such image file"):
        read_image(tmp_path / "none.png")
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="extensions"):
        read_image(tmp_path / "a.gif")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        read_image(tmp_path / "dir.png")


def test_read_truncated_jpeg(tmp_path):
    write_image(tmp_path / "a.jpg", _codes(np.uint8))
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.jpg.*(truncated|corrupted)"):
        read_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_read_truncated_and_corrupted_png(tmp_path, dtype):
    write_image(tmp_path / "a.png", _codes(dtype))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 40])
    with pytest.raises(ValueError, match=r"cut\.png.*(truncated|corrupted)"):
        read_image(tmp_path / "cut.png")
    bad = bytearray(data)
    bad[60] ^= 0xFF  # inside the IDAT chunk
    (tmp_path / "bad.png").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"bad\.png.*(corrupted|truncated)"):
        read_image(tmp_path / "bad.png")
    bad = bytearray(data)
    bad[20] ^= 0x01  # the IHDR chunk: its CRC no longer matches
    (tmp_path / "ihdr.png").write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"ihdr\.png': it is corrupted \(CRC mismatch"):
        read_image(tmp_path / "ihdr.png")


def test_read_garbage(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"a\.png': it is not a PNG file"):
        read_image(tmp_path / "a.png")
    (tmp_path / "b.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match=r"b\.tif"):
        read_image(tmp_path / "b.tif")
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"e\.jpg"):
        read_image(tmp_path / "e.jpg")


@pytest.mark.parametrize(
    ("name", "image", "match"),
    [
        ("a.jpg", np.zeros((4, 5, 3), np.uint16), "uint16 image"),
        ("a.png", np.zeros((4, 5, 3), np.float32), "float image"),
        ("a.hdr", np.full((4, 5, 3), np.nan, np.float32), "NaN"),
        ("a.png", np.zeros((4, 5, 2), np.uint8), "C in"),
        ("a.tif", np.zeros((4, 5, 3), np.int32), "int32"),
        ("a.bmp", np.zeros((4, 5, 3), np.uint8), "uint8"),
    ],
)
def test_write_bad_inputs_write_nothing(tmp_path, name, image, match):
    with pytest.raises(ValueError, match=match):
        write_image(tmp_path / name, image)
    assert _listing(tmp_path) == []


def test_write_bad_exposure_time_and_filters(tmp_path):
    with pytest.raises(ValueError, match="exposure_time"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 5, 3), np.uint8), exposure_time=0)
    with pytest.raises(ValueError, match="png_filters"):
        write_image(tmp_path / "a.png", np.zeros((4, 5), np.uint16), png_filters=(5,))
    assert _listing(tmp_path) == []


def test_failing_image_writer_leaves_no_file(tmp_path, monkeypatch):
    import tifffile

    def broken(path, data, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"II*\x00partial")
        raise OSError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "r.tif", np.ones((4, 5, 3), np.float32))
    assert _listing(tmp_path) == []


def test_read_image_feeds_tensor_code(tmp_path):
    img = _codes(np.uint16)
    write_image(tmp_path / "a.tif", img)
    y = torch.from_numpy(read_image(tmp_path / "a.tif").astype(np.float64) / 65535)
    assert float(y.max()) <= 1.0 and y.shape == (H, W, 3)


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg", ".hdr", ".exr"])
def test_write_non_contiguous_arrays(tmp_path, ext):
    dtype = (
        np.float32
        if ext in (".hdr", ".exr")
        else np.uint8 if ext == ".jpg" else np.uint16
    )
    chw = np.ascontiguousarray(np.moveaxis(_codes(np.uint8).astype(dtype), -1, 0))
    hwc = np.moveaxis(chw, 0, -1)  # a view with the channel axis not contiguous
    assert not hwc.flags["C_CONTIGUOUS"]
    write_image(tmp_path / f"a{ext}", hwc)
    write_image(tmp_path / f"b{ext}", np.ascontiguousarray(hwc))
    back = read_image(tmp_path / f"a{ext}")
    np.testing.assert_array_equal(back, read_image(tmp_path / f"b{ext}"))
    if ext in (".png", ".tif", ".exr"):
        np.testing.assert_array_equal(back, hwc)
