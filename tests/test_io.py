from __future__ import annotations

import json
import os
import struct
import zlib

import numpy as np
import pytest
import torch

from deepinv_icrf import io as dio
from deepinv_icrf.io import (
    atomic_path,
    atomic_write,
    read_exposure_time,
    read_image,
    write_image,
    write_json,
)
from deepinv_icrf.models import ICRF

H, W = 13, 11


def _codes(dtype, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    shape = (H, W, channels) if channels > 1 else (H, W)
    return rng.integers(0, top + 1, size=shape).astype(dtype)


def _listing(folder):
    return sorted(p.name for p in folder.iterdir())


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
        assert tmp.parent == tmp_path and tmp.suffix == ".png"
        assert tmp.name.startswith(".plot.png.")
        tmp.write_bytes(b"data")
    mask = os.umask(0o022)
    os.umask(mask)
    assert (tmp_path / "plot.png").stat().st_mode & 0o777 == 0o666 & ~mask


def test_atomic_path_writer_that_writes_nothing(tmp_path):
    with pytest.raises(OSError, match="did not create"):
        with atomic_path(tmp_path / "a.txt") as tmp:
            tmp.unlink()
    assert _listing(tmp_path) == []


def test_atomic_path_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with atomic_path(tmp_path / "no" / "a.txt"):
            pass


def test_write_json_refuses_nan_without_writing(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        write_json(tmp_path / "s.json", {"rmse": float("nan")})
    assert _listing(tmp_path) == []
    write_json(tmp_path / "s.json", {"rmse": 0.5})
    assert json.loads((tmp_path / "s.json").read_text()) == {"rmse": 0.5}


def test_icrf_save_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "icrf.json"
    ICRF(channels=1, n_points=5).save(target)
    before = target.read_text()

    def failing_fsync(fd):
        raise OSError("disk full")

    monkeypatch.setattr(dio.os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="disk full"):
        ICRF(channels=1, n_points=5, init="gamma").save(target)
    assert target.read_text() == before
    assert _listing(tmp_path) == ["icrf.json"]


# ---------------------------------------------------------------- integer images
@pytest.mark.parametrize("ftype", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 3])
def test_png16_builtin_codec_round_trip(tmp_path, monkeypatch, ftype, channels):
    monkeypatch.setattr(dio, "_read_png16_cv2", lambda path: None)
    img = _codes(np.uint16, channels, seed=ftype)
    path = tmp_path / "a.png"
    write_image(path, img, png_filters=(ftype, (ftype + 1) % 5))
    back = read_image(path)
    assert back.dtype == np.uint16 and back.shape == (H, W, channels)
    np.testing.assert_array_equal(back, img.reshape(H, W, channels))


def test_png16_readable_by_pillow_and_opencv(tmp_path):
    from PIL import Image

    grey = _codes(np.uint16, 1)
    write_image(tmp_path / "g.png", grey, png_filters=(4, 3))
    with Image.open(tmp_path / "g.png") as im:
        np.testing.assert_array_equal(np.asarray(im).astype(np.uint16), grey)
    cv2 = pytest.importorskip("cv2")
    rgb = _codes(np.uint16, 3)
    write_image(tmp_path / "c.png", rgb, png_filters=(1, 2, 3, 4, 0))
    back = cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    np.testing.assert_array_equal(back, rgb)


def test_png16_rgba_drops_alpha(tmp_path, monkeypatch):
    monkeypatch.setattr(dio, "_read_png16_cv2", lambda path: None)
    rgba = _codes(np.uint16, 4)
    raw = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in rgba)
    chunk = dio._png_chunk
    data = (
        dio._PNG_SIGNATURE
        + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 16, 6, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    (tmp_path / "a.png").write_bytes(data)
    np.testing.assert_array_equal(read_image(tmp_path / "a.png"), rgba[..., :3])


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


def test_jpeg_round_trip_is_close_and_grey_has_one_channel(tmp_path):
    yy, xx = np.mgrid[0:H, 0:W]
    smooth = (100 + 5 * yy + 3 * xx).astype(np.uint8)
    write_image(tmp_path / "g.jpg", smooth, quality=98)
    back = read_image(tmp_path / "g.jpg")
    assert back.shape == (H, W, 1) and back.dtype == np.uint8
    assert np.abs(back[..., 0].astype(int) - smooth).max() <= 3
    assert read_exposure_time(tmp_path / "g.jpg") is None


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
    # RGBE shares one exponent per pixel: error below 1/256 of the pixel's largest channel
    peak = img.max(axis=-1, keepdims=True)
    err = np.abs(back - img) / np.where(peak > 0, peak, 1)
    assert err.max() <= 1 / 256 + 1e-7
    assert np.all(back[0, 0] == 0)


def test_radiance_hdr_matches_opencv(tmp_path):
    cv2 = pytest.importorskip("cv2")
    img = np.exp(np.random.default_rng(3).normal(0, 2, size=(H, W, 3))).astype(
        np.float32
    )
    write_image(tmp_path / "r.hdr", img)
    theirs = cv2.imread(str(tmp_path / "r.hdr"), cv2.IMREAD_UNCHANGED)[..., ::-1]
    peak = img.max(axis=-1, keepdims=True)
    # OpenCV decodes mantissas without Radiance's +0.5: within 1/128 of the pixel's peak
    assert (np.abs(theirs - img) / peak).max() <= 1 / 128


def test_radiance_hdr_reads_run_length_encoding(tmp_path):
    width = 9
    header = f"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 2 +X {width}\n".encode()
    body = b""
    for mant, expo in ((200, 129), (128, 130)):
        body += bytes([2, 2, 0, width])
        for value in (mant, mant // 2, 0, expo):  # each channel: one run of `width`
            body += bytes([128 + width, value])
    (tmp_path / "rle.hdr").write_bytes(header + body)
    img = read_image(tmp_path / "rle.hdr")
    assert img.shape == (2, width, 3)
    np.testing.assert_allclose(img[0, :, 0], (200 + 0.5) / 256 * 2.0, rtol=0)
    np.testing.assert_allclose(img[1, :, 1], (64 + 0.5) / 256 * 4.0, rtol=0)
    expect = np.broadcast_to(0.5 / 256 * np.array([[2.0], [4.0]]), (2, width))
    np.testing.assert_array_equal(img[:, :, 2], expect)


def test_exr_round_trip_built_in(tmp_path):
    img = np.full((H, W, 3), 3.25, np.float32)
    img[2, 3] = (1e-20, 4.5e30, -2.0)
    write_image(tmp_path / "r.exr", img)  # no imageio plugin needed
    assert _listing(tmp_path) == ["r.exr"]
    np.testing.assert_array_equal(read_image(tmp_path / "r.exr"), img)


# ---------------------------------------------------------------- bad inputs
def test_read_missing_and_unknown(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such image file"):
        read_image(tmp_path / "none.png")
    (tmp_path / "a.gif").write_bytes(b"GIF89a")
    with pytest.raises(ValueError, match="extensions"):
        read_image(tmp_path / "a.gif")


def test_read_truncated_jpeg(tmp_path):
    write_image(tmp_path / "a.jpg", _codes(np.uint8))
    data = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.jpg.*(truncated|corrupted)"):
        read_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize("cv2_path", [True, False])
def test_read_truncated_png16(tmp_path, monkeypatch, cv2_path):
    if not cv2_path:
        monkeypatch.setattr(dio, "_read_png16_cv2", lambda path: None)
    write_image(tmp_path / "a.png", _codes(np.uint16))
    data = (tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) - 40])
    with pytest.raises(ValueError, match=r"cut\.png.*truncated"):
        read_image(tmp_path / "cut.png")


def test_read_corrupted_png16_crc(tmp_path, monkeypatch):
    monkeypatch.setattr(dio, "_read_png16_cv2", lambda path: None)
    write_image(tmp_path / "a.png", _codes(np.uint16))
    data = bytearray((tmp_path / "a.png").read_bytes())
    data[60] ^= 0xFF  # inside the IDAT chunk
    (tmp_path / "bad.png").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupted"):
        read_image(tmp_path / "bad.png")


def test_read_garbage(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not an image at all")
    with pytest.raises(ValueError, match=r"a\.png"):
        read_image(tmp_path / "a.png")
    (tmp_path / "b.tif").write_bytes(b"II*\x00garbage")
    with pytest.raises(ValueError, match=r"b\.tif"):
        read_image(tmp_path / "b.tif")
    (tmp_path / "c.hdr").write_bytes(
        b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X 4\n"
    )
    with pytest.raises(ValueError, match="truncated"):
        read_image(tmp_path / "c.hdr")


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


def test_write_bad_exposure_time(tmp_path):
    with pytest.raises(ValueError, match="exposure_time"):
        write_image(tmp_path / "a.jpg", np.zeros((4, 5, 3), np.uint8), exposure_time=0)
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


@pytest.mark.parametrize("ext", [".png", ".tif", ".jpg", ".hdr"])
def test_write_non_contiguous_arrays(tmp_path, ext):
    dtype = np.float32 if ext == ".hdr" else np.uint8 if ext == ".jpg" else np.uint16
    chw = np.ascontiguousarray(np.moveaxis(_codes(np.uint8).astype(dtype), -1, 0))
    hwc = np.moveaxis(chw, 0, -1)  # a view with the channel axis not contiguous
    assert not hwc.flags["C_CONTIGUOUS"]
    write_image(tmp_path / f"a{ext}", hwc)
    write_image(tmp_path / f"b{ext}", np.ascontiguousarray(hwc))
    back = read_image(tmp_path / f"a{ext}")
    np.testing.assert_array_equal(back, read_image(tmp_path / f"b{ext}"))
    if ext in (".png", ".tif"):
        np.testing.assert_array_equal(back, hwc)
