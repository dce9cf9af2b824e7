r"""OpenEXR through the official bindings: every compression, layers, hostile headers."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
import torch

from deepinv_icrf.hdr import save_radiance
from deepinv_icrf.io import (
    read_exr,
    read_exr_layers,
    read_image,
    write_exr,
    write_image,
)
from deepinv_icrf.io.exr import EXR_COMPRESSIONS

OpenEXR = pytest.importorskip(
    "OpenEXR", reason="the official OpenEXR bindings are absent"
)

LOSSLESS = ("none", "rle", "zips", "zip", "piz")
# the newer compressions of the installed bindings (OpenEXR >= 3.4: ZSTD, HTJ2K, LJ2K)
EXTRA = [
    name
    for name in (
        "ZSTD_COMPRESSION",
        "HTJ2K32_COMPRESSION",
        "HTJ2K256_COMPRESSION",
        "LJ2K_COMPRESSION",
    )
    if hasattr(OpenEXR, name)
]


def _radiance(shape, seed=0):
    rng = np.random.default_rng(seed)
    return np.exp(rng.uniform(-8.0, 8.0, shape)).astype(np.float32)


def _library_file(path, planes: dict, compression, **header):
    r"""Write ``planes`` (name -> (H, W) array) with the official bindings directly."""
    head = {"compression": compression, "type": OpenEXR.scanlineimage} | header
    chans = {k: np.ascontiguousarray(v) for k, v in planes.items()}
    OpenEXR.File(head, chans).write(str(path))


# ---------------------------------------------------------------- round trips
@pytest.mark.parametrize("compression", LOSSLESS)
@pytest.mark.parametrize("shape", [(13, 11, 3), (7, 5, 1)])
def test_exr_float_round_trip_is_exact(tmp_path, shape, compression):
    img = _radiance(shape, seed=len(compression))
    img[0, 0, 0] = -2.5e-20  # negative and tiny values are kept as they are
    write_image(tmp_path / "r.exr", img, exr_compression=compression)
    back = read_image(tmp_path / "r.exr")
    assert back.dtype == np.float32 and back.shape == shape
    np.testing.assert_array_equal(back, img)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.exr"]


@pytest.mark.parametrize("compression", sorted(EXR_COMPRESSIONS))
def test_exr_every_compression_read_back(tmp_path, compression):
    yy, xx = np.mgrid[0:32, 0:48] / 48.0
    img = np.exp(np.stack([4 * xx, 3 * yy, 2 * (xx + yy)], axis=-1)).astype(np.float32)
    write_image(
        tmp_path / "r.exr", img, exr_pixel_type="half", exr_compression=compression
    )
    back = read_image(tmp_path / "r.exr")
    half = img.astype(np.float16).astype(np.float32)
    if compression in LOSSLESS + ("pxr24",):  # PXR24 is lossless for HALF
        np.testing.assert_array_equal(back, half)
    else:  # B44, DWA: lossy, within a few percent on a smooth image
        assert float(np.mean(np.abs(back / half - 1))) < 0.02


@pytest.mark.parametrize("name", EXTRA)
def test_exr_newer_library_compressions_are_read(tmp_path, name):
    img = _radiance((16, 24, 3), seed=4)
    _library_file(
        tmp_path / "n.exr",
        {c: img[..., k] for k, c in enumerate("RGB")},
        getattr(OpenEXR, name),
    )
    back = read_image(tmp_path / "n.exr")
    np.testing.assert_allclose(back, img, rtol=1e-2)


def test_exr_half_round_trip_and_range(tmp_path):
    img = np.array([[0.1, 2.0, 3e4]])
    write_image(tmp_path / "h.exr", img, exr_pixel_type="half")
    assert read_image(tmp_path / "h.exr")[0, :, 0].tolist() == [
        0.0999755859375,
        2.0,
        30000.0,
    ]
    with pytest.raises(ValueError, match=r"65504.*exr_pixel_type='float'"):
        write_image(tmp_path / "o.exr", np.full((3, 2), 7e4), exr_pixel_type="half")
    with pytest.raises(ValueError, match="exr_pixel_type"):
        write_image(tmp_path / "o.exr", np.ones((3, 2)), exr_pixel_type="double")
    with pytest.raises(ValueError, match="exr_compression"):
        write_image(tmp_path / "o.exr", np.ones((3, 2)), exr_compression="lzw")
    assert not (tmp_path / "o.exr").exists()


def test_exr_library_files_uint_half_alpha_window_tiled(tmp_path):
    rng = np.random.default_rng(5)
    red = _radiance((19, 7), seed=6)
    green = rng.uniform(-2, 2, (19, 7)).astype(np.float16)
    blue = rng.integers(0, 2**24, (19, 7)).astype(np.uint32)
    alpha = np.ones((19, 7), np.float16)
    window = (np.array([3, -2], np.int32), np.array([9, 16], np.int32))
    _library_file(
        tmp_path / "w.exr",
        {"R": red, "G": green, "B": blue, "A": alpha},
        OpenEXR.ZIP_COMPRESSION,
        dataWindow=window,
        displayWindow=window,
    )
    img = read_image(tmp_path / "w.exr")
    assert img.shape == (19, 7, 3) and img.dtype == np.float32
    np.testing.assert_array_equal(img[..., 0], red)
    np.testing.assert_array_equal(img[..., 1], green.astype(np.float32))
    np.testing.assert_array_equal(img[..., 2], blue.astype(np.float32))
    tiles = OpenEXR.TileDescription()
    tiles.xSize, tiles.ySize, tiles.mode = 8, 8, OpenEXR.ONE_LEVEL
    _library_file(
        tmp_path / "t.exr",
        {"Y": red},
        OpenEXR.PIZ_COMPRESSION,
        type=OpenEXR.tiledimage,
        tiles=tiles,
    )
    np.testing.assert_array_equal(read_image(tmp_path / "t.exr")[..., 0], red)


def test_exr_multi_part_refused_or_part_chosen(tmp_path):
    a, b = _radiance((6, 5), 1), _radiance((6, 5), 2)
    parts = [
        OpenEXR.Part(
            {"type": OpenEXR.scanlineimage, "compression": OpenEXR.ZIP_COMPRESSION},
            {"Y": np.ascontiguousarray(p)},
            name,
        )
        for p, name in ((a, "left"), (b, "right"))
    ]
    OpenEXR.File(parts).write(str(tmp_path / "m.exr"))
    with pytest.raises(
        ValueError, match=r"m\.exr': it holds 2 OpenEXR parts; choose one"
    ):
        read_image(tmp_path / "m.exr")
    np.testing.assert_array_equal(read_image(tmp_path / "m.exr", frame=1)[..., 0], b)


# ---------------------------------------------------------------- layers
def test_exr_layers_named_for_viewers(tmp_path):
    img = _radiance((9, 8, 3), 7)
    std = img / 10
    mask = np.zeros((9, 8, 3), bool)
    mask[0, 0] = True
    count = np.full((9, 8, 1), 4, np.uint8)
    write_exr(
        tmp_path / "l.exr", img, layers={"std": std, "saturated": mask, "count": count}
    )
    exr = OpenEXR.File(str(tmp_path / "l.exr"), separate_channels=True)
    names = sorted(exr.channels())
    assert names == [
        "B", "G", "R", "count.Y", "saturated.B", "saturated.G", "saturated.R",
        "std.B", "std.G", "std.R",
    ]  # fmt: skip
    assert exr.channels()["R"].pixels.dtype == np.float32
    assert exr.channels()["count.Y"].pixels.dtype == np.float16
    layers = read_exr_layers(tmp_path / "l.exr")
    np.testing.assert_array_equal(layers[""], img)
    np.testing.assert_array_equal(layers["std"], std)
    np.testing.assert_array_equal(layers["saturated"], mask.astype(np.float32))
    np.testing.assert_array_equal(layers["count"], 4.0)
    np.testing.assert_array_equal(read_exr(tmp_path / "l.exr", layer="std"), std)
    with pytest.raises(
        ValueError, match=r"no OpenEXR layer 'ghost' \(layers: \['count'"
    ):
        read_exr(tmp_path / "l.exr", layer="ghost")


def test_exr_bad_layers_write_nothing(tmp_path):
    img = np.ones((4, 5, 3), np.float32)
    with pytest.raises(ValueError, match="layer names"):
        write_exr(tmp_path / "x.exr", img, layers={"a.b": img})
    with pytest.raises(ValueError, match=r"layer 'std' has shape \(2, 5\)"):
        write_exr(tmp_path / "x.exr", img, layers={"std": img[:2]})
    with pytest.raises(ValueError, match="C in"):
        write_exr(tmp_path / "x.exr", img, layers={"std": np.ones((4, 5, 2))})
    assert list(tmp_path.iterdir()) == []


def test_save_radiance_writes_exact_exr(tmp_path):
    rad = torch.rand(3, 13, 11, dtype=torch.float64) * 1e4
    save_radiance(tmp_path / "scene.exr", rad)
    back = read_image(tmp_path / "scene.exr")
    np.testing.assert_array_equal(back, rad.movedim(0, -1).float().numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["scene.exr"]


def test_exr_rgb_written_from_any_layout_is_the_channel_by_channel_file(tmp_path):
    # the image goes to the bindings as one interleaved array: strided, Fortran-ordered
    # and float64 inputs must give the file the bindings write from three channel planes
    img = _radiance((9, 14, 3), seed=3)
    _library_file(
        tmp_path / "ref.exr",
        {c: img[..., k] for k, c in enumerate("RGB")},
        OpenEXR.ZIP_COMPRESSION,
    )
    ref = (tmp_path / "ref.exr").read_bytes()
    wide = np.zeros((9, 28, 3), np.float32)
    wide[:, ::2] = img
    for k, layout in enumerate(
        (img, np.asfortranarray(img), wide[:, ::2], img.astype(np.float64))
    ):
        write_exr(tmp_path / f"r{k}.exr", layout, compression="zip")
        assert (tmp_path / f"r{k}.exr").read_bytes() == ref
    np.testing.assert_array_equal(read_exr(tmp_path / "r2.exr"), img)


@pytest.mark.parametrize(
    "given, stored",
    [({}, "NO_COMPRESSION"), ({"exr_compression": "zip"}, "ZIP_COMPRESSION")],
)
def test_save_radiance_exr_compression(tmp_path, given, stored):
    rad = _radiance((5, 6, 3))
    std = rad / 10
    save_radiance(tmp_path / "r.exr", rad, std=std, **given)
    head = OpenEXR.File(str(tmp_path / "r.exr"), header_only=True).parts[0].header
    assert head["compression"] == getattr(OpenEXR, stored)
    layers = read_exr_layers(tmp_path / "r.exr")
    np.testing.assert_array_equal(layers[""], rad)
    np.testing.assert_array_equal(layers["std"], std)
    with pytest.raises(ValueError, match="`exr_compression` to be one of"):
        save_radiance(tmp_path / "s.exr", rad, exr_compression="zlib")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.exr"]


def test_exr_opens_in_opencv_when_built_with_exr(tmp_path):
    os.environ.setdefault("OPENCV_IO_ENABLE_OPENEXR", "1")
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    img = _radiance((9, 8, 3), 8)
    write_image(tmp_path / "r.exr", img)
    try:
        theirs = cv2.imread(str(tmp_path / "r.exr"), cv2.IMREAD_UNCHANGED)
    except cv2.error:
        theirs = None
    if theirs is None:
        pytest.skip("this OpenCV build has no OpenEXR codec (OPENCV_IO_ENABLE_OPENEXR)")
    np.testing.assert_array_equal(theirs[..., ::-1], img)


# ---------------------------------------------------------------- hostile files
def _attr(name: str, kind: str, value: bytes) -> bytes:
    return (
        name.encode()
        + b"\0"
        + kind.encode()
        + b"\0"
        + struct.pack("<i", len(value))
        + value
    )


def _declaring(width: int, height: int, channels=("Y",), compression=3) -> bytes:
    r"""A scanline header (written from the file layout document) declaring ``width x height``
    FLOAT pixels, an offset table pointing nowhere and no pixel data."""
    chlist = b"".join(
        c.encode() + b"\0" + struct.pack("<iB3xii", 2, 0, 1, 1) for c in channels
    )
    window = struct.pack("<4i", 0, 0, width - 1, height - 1)
    header = b"".join(
        [
            b"\x76\x2f\x31\x01",
            struct.pack("<I", 2),
            _attr("channels", "chlist", chlist + b"\0"),
            _attr("compression", "compression", bytes([compression])),
            _attr("dataWindow", "box2i", window),
            _attr("displayWindow", "box2i", window),
            _attr("lineOrder", "lineOrder", b"\0"),
            _attr("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
            _attr("screenWindowCenter", "v2f", struct.pack("<2f", 0.0, 0.0)),
            _attr("screenWindowWidth", "float", struct.pack("<f", 1.0)),
            b"\0",
        ]
    )
    return header + struct.pack("<Q", len(header) + 8) * 4


def test_exr_huge_declared_window_refused_before_decoding(tmp_path, capfd):
    (tmp_path / "bomb.exr").write_bytes(_declaring(100_000, 100_000))
    with pytest.raises(
        ValueError, match=r"bomb\.exr': it declares 100000x100000 pixels"
    ):
        read_image(tmp_path / "bomb.exr")
    (tmp_path / "wide.exr").write_bytes(
        _declaring(4000, 3000, channels=tuple(f"c{k:03d}" for k in range(300)))
    )
    with pytest.raises(ValueError, match=r"wide\.exr': it declares 300 channels"):
        read_image(tmp_path / "wide.exr")
    assert capfd.readouterr().err == ""


def test_exr_truncated_corrupted_and_garbage_raise_naming_the_file(tmp_path, capfd):
    img = _radiance((64, 40, 3), 9)
    write_image(tmp_path / "good.exr", img)
    good = (tmp_path / "good.exr").read_bytes()
    cases = {
        "cut.exr": good[: len(good) * 2 // 3],
        "head.exr": good[:30],
        "empty.exr": b"",
        "magic.exr": b"\x76\x2f\x31\x02" + good[4:],
        "junk.exr": b"hello world, not an image",
    }
    corrupt = bytearray(good)
    corrupt[len(good) // 2 : len(good) // 2 + 200] = b"\xab" * 200
    cases["corrupt.exr"] = bytes(corrupt)
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(
            ValueError, match=rf"{name}'.*(not an OpenEXR|corrupted|truncated)"
        ):
            read_image(tmp_path / name)
    out = capfd.readouterr()
    assert out.err == "" and out.out == ""  # the library's own messages are not printed


def test_exr_write_failure_leaves_nothing(tmp_path, monkeypatch):
    class Broken:
        def __init__(self, *args, **kwargs):
            pass

        def write(self, path):
            with open(path, "wb") as fh:
                fh.write(b"\x76\x2f\x31\x01partial")
            raise RuntimeError("No space left on device")

    monkeypatch.setattr(OpenEXR, "File", Broken)
    with pytest.raises(OSError, match="the OpenEXR library failed"):
        write_image(tmp_path / "r.exr", np.ones((4, 5, 3), np.float32))
    assert list(tmp_path.iterdir()) == []
