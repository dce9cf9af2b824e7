from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from deepinv_icrf.hdr import save_radiance
from deepinv_icrf.io import read_image, write_image

# The reference below is written from the OpenEXR file layout document, independently of
# deepinv_icrf.io: plain loops, explicit byte strings.
MAGIC = bytes([0x76, 0x2F, 0x31, 0x01])
NONE, RLE, ZIPS, ZIP, PIZ = 0, 1, 2, 3, 4
UINT, HALF, FLOAT = 0, 1, 2
LINES = {NONE: 1, RLE: 1, ZIPS: 1, ZIP: 16}
STORE = {UINT: "<u4", HALF: "<f2", FLOAT: "<f4"}


def _attr(name: str, kind: str, value: bytes) -> bytes:
    size = len(value).to_bytes(4, "little", signed=True)
    return name.encode() + b"\x00" + kind.encode() + b"\x00" + size + value


def _chlist(channels) -> bytes:
    out = b""
    for name, ptype in channels:
        out += name.encode() + b"\x00"
        out += (
            ptype.to_bytes(4, "little") + b"\x00" + b"\x00\x00\x00"
        )  # pLinear, reserved
        out += (1).to_bytes(4, "little") + (1).to_bytes(4, "little")  # x/y sampling
    return out + b"\x00"


def _predict(raw: bytes) -> bytes:
    half = (len(raw) + 1) // 2
    t = bytearray(len(raw))
    for i, b in enumerate(raw):
        t[i // 2 if i % 2 == 0 else half + i // 2] = b
    out = bytearray(t)
    for i in range(1, len(t)):
        out[i] = (t[i] - t[i - 1] + 128) % 256
    return bytes(out)


def _unpredict(data: bytes) -> bytes:
    t = bytearray(data)
    for i in range(1, len(t)):
        t[i] = (t[i - 1] + t[i] - 128) % 256
    half = (len(t) + 1) // 2
    out = bytearray(len(t))
    for i in range(len(t)):
        out[i] = t[i // 2] if i % 2 == 0 else t[half + i // 2]
    return bytes(out)


def _rle(data: bytes) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        j = i
        while j < len(data) and data[j] == data[i] and j - i < 128:
            j += 1
        if j - i >= 3:  # repeat run: count - 1, then the byte
            out += bytes([j - i - 1, data[i]])
            i = j
            continue
        j = i
        while (
            j < len(data) and j - i < 127 and not data[j : j + 3] == data[j : j + 1] * 3
        ):
            j += 1
        j = max(j, i + 1)
        out += (
            bytes([256 - (j - i)]) + data[i:j]
        )  # literal run: -count as a signed byte
        i = j
    return bytes(out)


def _spec_file(
    planes,
    compression=NONE,
    origin=(0, 0),
    decreasing=False,
    version=2,
    extra=b"",
    compression_byte=None,
) -> bytes:
    r"""A single-part scanline file; ``planes`` is a list of ``(name, ptype, (H, W) array)``
    sorted by name. Attributes are written in reverse order (the order is free)."""
    height, width = planes[0][2].shape
    x0, y0 = origin
    window = struct.pack("<iiii", x0, y0, x0 + width - 1, y0 + height - 1)
    code = compression if compression_byte is None else compression_byte
    attrs = [
        _attr("channels", "chlist", _chlist([(n, p) for n, p, _ in planes])),
        _attr("compression", "compression", bytes([code])),
        _attr("dataWindow", "box2i", window),
        _attr("displayWindow", "box2i", window),
        _attr("lineOrder", "lineOrder", bytes([1 if decreasing else 0])),
        _attr("pixelAspectRatio", "float", struct.pack("<f", 1.0)),
        _attr("screenWindowCenter", "v2f", struct.pack("<ff", 0.0, 0.0)),
        _attr("screenWindowWidth", "float", struct.pack("<f", 1.0)),
    ]
    header = (
        MAGIC + struct.pack("<I", version) + extra + b"".join(attrs[::-1]) + b"\x00"
    )
    per = LINES.get(compression, 32)
    blocks = []
    for start in range(0, height, per):
        raw = b""
        for r in range(start, min(start + per, height)):
            for _, ptype, plane in planes:
                raw += plane[r].astype(STORE[ptype]).tobytes()
        if compression == RLE:
            data = _rle(_predict(raw))
        elif compression in (ZIP, ZIPS):
            data = zlib.compress(_predict(raw))
        else:
            data = raw
        if len(data) >= len(raw):
            data = raw
        blocks.append(struct.pack("<ii", y0 + start, len(data)) + data)
    order = list(range(len(blocks)))[::-1] if decreasing else list(range(len(blocks)))
    position = len(header) + 8 * len(blocks)
    offsets = [0] * len(blocks)
    for k in order:
        offsets[k] = position
        position += len(blocks[k])
    table = b"".join(struct.pack("<Q", o) for o in offsets)
    return header + table + b"".join(blocks[k] for k in order)


def _parse(data: bytes):
    r"""Header attributes, offsets and decoded lines of a scanline file (reference parser)."""
    assert data[:4] == MAGIC
    pos, attrs = 8, {}
    while data[pos] != 0:
        name_end = data.index(b"\x00", pos)
        kind_end = data.index(b"\x00", name_end + 1)
        size = struct.unpack("<i", data[kind_end + 1 : kind_end + 5])[0]
        attrs[data[pos:name_end].decode()] = (
            data[name_end + 1 : kind_end].decode(),
            data[kind_end + 5 : kind_end + 5 + size],
        )
        pos = kind_end + 5 + size
    return attrs, pos + 1


def _radiance(shape, seed):
    rng = np.random.default_rng(seed)
    return (
        np.exp(rng.uniform(-20.0, 20.0, shape)) * rng.choice([-1, 1], shape)
    ).astype(np.float32)


# ---------------------------------------------------------------- writer
@pytest.mark.parametrize("shape", [(13, 11, 3), (1, 1, 1), (17, 5, 3), (33, 2, 1)])
@pytest.mark.parametrize("compression", ["zip", "none"])
def test_exr_float_round_trip_is_exact(tmp_path, shape, compression):
    img = _radiance(shape, seed=shape[0])
    img.flat[0] = 0.0
    write_image(tmp_path / "r.exr", img, exr_compression=compression)
    back = read_image(tmp_path / "r.exr")
    assert back.dtype == np.float32 and back.shape == shape
    np.testing.assert_array_equal(back, img)


@pytest.mark.parametrize("channels", [1, 3])
def test_exr_half_round_trip_within_half_precision(tmp_path, channels):
    rng = np.random.default_rng(3)
    img = rng.uniform(1e-3, 6e4, (17, 13, channels))
    write_image(tmp_path / "h.exr", img, exr_pixel_type="half")
    back = read_image(tmp_path / "h.exr")
    assert back.shape == img.shape and back.dtype == np.float32
    np.testing.assert_array_equal(back, img.astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(back, img, rtol=2.0**-11, atol=0)
    # the stored pixel type is HALF (2 bytes per sample, before compression)
    write_image(tmp_path / "u.exr", img, exr_pixel_type="half", exr_compression="none")
    attrs, _ = _parse((tmp_path / "u.exr").read_bytes())
    assert attrs["channels"][1].count(struct.pack("<i", HALF) + bytes(4)) == channels


def test_exr_writer_bytes_follow_the_file_layout(tmp_path):
    img = np.array(  # 2 rows x 3 columns x RGB
        [
            [[1.0, 2.0, 3.0], [-0.5, 0.25, 1e30], [4.0, 5.0, 6.0]],
            [[0.0, 7.0, 8.0], [9.0, 10.0, 1e-30], [-1.0, -2.0, 3.5]],
        ],
        np.float32,
    )
    write_image(tmp_path / "tiny.exr", img, exr_compression="none")
    got = (tmp_path / "tiny.exr").read_bytes()
    window = (
        (0).to_bytes(4, "little") * 2
        + (2).to_bytes(4, "little")
        + (1).to_bytes(4, "little")
    )
    header = (
        b"\x76\x2f\x31\x01"
        + b"\x02\x00\x00\x00"
        + _attr(
            "channels", "chlist", _chlist([("B", FLOAT), ("G", FLOAT), ("R", FLOAT)])
        )
        + _attr("compression", "compression", b"\x00")
        + _attr("dataWindow", "box2i", window)
        + _attr("displayWindow", "box2i", window)
        + _attr("lineOrder", "lineOrder", b"\x00")
        + _attr("pixelAspectRatio", "float", b"\x00\x00\x80\x3f")
        + _attr("screenWindowCenter", "v2f", bytes(8))
        + _attr("screenWindowWidth", "float", b"\x00\x00\x80\x3f")
        + b"\x00"
    )
    line_bytes = 3 * 3 * 4
    blocks = []
    for y in range(2):
        line = b"".join(
            struct.pack("<f", float(img[y, x, c])) for c in (2, 1, 0) for x in range(3)
        )
        assert len(line) == line_bytes
        blocks.append(struct.pack("<ii", y, line_bytes) + line)
    first = len(header) + 16
    table = struct.pack("<QQ", first, first + 8 + line_bytes)
    assert got[:4] == bytes([0x76, 0x2F, 0x31, 0x01]) and got[4] == 2
    assert got == header + table + b"".join(blocks)


def test_exr_writer_zip_blocks_follow_the_file_layout(tmp_path):
    img = _radiance((17, 5, 1), seed=7)
    img[:, :, 0] = np.round(img[:, :, 0], 2)
    write_image(tmp_path / "z.exr", img)
    data = (tmp_path / "z.exr").read_bytes()
    attrs, pos = _parse(data)
    assert sorted(attrs) == sorted(
        [
            "channels",
            "compression",
            "dataWindow",
            "displayWindow",
            "lineOrder",
            "pixelAspectRatio",
            "screenWindowCenter",
            "screenWindowWidth",
        ]
    )
    assert attrs["channels"] == ("chlist", _chlist([("Y", FLOAT)]))
    assert attrs["compression"] == ("compression", bytes([ZIP]))
    assert struct.unpack("<4i", attrs["dataWindow"][1]) == (0, 0, 4, 16)
    offsets = struct.unpack("<QQ", data[pos : pos + 16])  # ceil(17 / 16) = 2 blocks
    assert offsets[0] == pos + 16
    rows = []
    for k, offset in enumerate(offsets):
        y, size = struct.unpack("<ii", data[offset : offset + 8])
        assert y == 16 * k
        n_lines = min(16, 17 - y)
        payload = data[offset + 8 : offset + 8 + size]
        raw = payload if size == n_lines * 20 else _unpredict(zlib.decompress(payload))
        assert len(raw) == n_lines * 20
        rows.append(np.frombuffer(raw, "<f4").reshape(n_lines, 5))
    assert (
        offsets[1]
        == offsets[0]
        + 8
        + struct.unpack("<i", data[offsets[0] + 4 : offsets[0] + 8])[0]
    )
    np.testing.assert_array_equal(np.concatenate(rows), img[:, :, 0])
    assert (
        len(data)
        == offsets[1]
        + 8
        + struct.unpack("<i", data[offsets[1] + 4 : offsets[1] + 8])[0]
    )


def test_exr_codec_keeps_inf_and_nan(tmp_path):
    from deepinv_icrf.io import _decode_exr, _encode_exr

    img = _radiance((13, 11, 3), seed=1)
    img[0, 0, 0], img[5, 3, 1], img[12, 10, 2] = np.inf, -np.inf, np.nan
    for pixel_type, scale in (("float", 1.0), ("half", 1e-5)):
        back = _decode_exr(_encode_exr(img * scale, pixel_type), "x")
        assert np.isposinf(back[0, 0, 0]) and np.isneginf(back[5, 3, 1])
        assert np.isnan(back[12, 10, 2]) and np.isfinite(back).sum() == img.size - 3
    back = _decode_exr(_encode_exr(img, "float", "none"), "x")
    np.testing.assert_array_equal(back, img)  # NaN == NaN here
    # the public writers refuse non-finite radiance (the CLI stores an infinite std as -1)
    with pytest.raises(ValueError, match="NaN or inf"):
        write_image(tmp_path / "n.exr", img)
    assert list(tmp_path.iterdir()) == []


def test_exr_half_overflow_and_bad_options_raise(tmp_path):
    with pytest.raises(ValueError, match=r"65504.*exr_pixel_type='float'"):
        write_image(tmp_path / "o.exr", np.full((3, 2), 7e4), exr_pixel_type="half")
    with pytest.raises(ValueError, match="exr_pixel_type"):
        write_image(tmp_path / "o.exr", np.ones((3, 2)), exr_pixel_type="double")
    with pytest.raises(ValueError, match="exr_compression"):
        write_image(tmp_path / "o.exr", np.ones((3, 2)), exr_compression="piz")
    assert list(tmp_path.iterdir()) == []
    write_image(tmp_path / "o.exr", np.full((3, 2), 65504.0), exr_pixel_type="half")
    assert read_image(tmp_path / "o.exr").max() == 65504.0


def test_save_radiance_writes_exact_exr(tmp_path):
    rad = torch.rand(3, 13, 11, dtype=torch.float64) * 1e4
    save_radiance(tmp_path / "scene.exr", rad)
    back = read_image(tmp_path / "scene.exr")
    np.testing.assert_array_equal(back, rad.movedim(0, -1).float().numpy())
    assert [p.name for p in tmp_path.iterdir()] == ["scene.exr"]


# ---------------------------------------------------------------- reader
@pytest.mark.parametrize("compression", [NONE, RLE, ZIPS, ZIP])
def test_exr_reader_decodes_reference_files(tmp_path, compression):
    rng = np.random.default_rng(compression)
    h, w = 19, 7
    red = rng.uniform(0, 10, (h, w)).astype(np.float32)
    red[2:9] = red[2]  # repeated rows and constant spans: RLE repeat runs
    red[:, 3:] = 1.5
    green = rng.uniform(-2, 2, (h, w)).astype(np.float16)
    blue = rng.integers(0, 2**32, (h, w), dtype=np.uint64).astype(np.uint32)
    alpha = np.ones((h, w), np.float16)
    planes = [
        ("A", HALF, alpha),
        ("B", UINT, blue),
        ("G", HALF, green),
        ("R", FLOAT, red),
    ]
    path = tmp_path / "ref.exr"
    path.write_bytes(_spec_file(planes, compression, origin=(-4, 9)))
    img = read_image(path)
    assert img.shape == (h, w, 3) and img.dtype == np.float32
    np.testing.assert_array_equal(img[..., 0], red)
    np.testing.assert_array_equal(img[..., 1], green.astype(np.float32))
    np.testing.assert_array_equal(img[..., 2], blue.astype(np.float32))


def test_exr_reader_block_order_raw_blocks_and_grey(tmp_path):
    rng = np.random.default_rng(5)
    grey = rng.standard_normal((40, 3)).astype(np.float32)  # incompressible: stored raw
    path = tmp_path / "g.exr"
    extra = _attr("owner", "string", b"someone")
    path.write_bytes(
        _spec_file([("Y", FLOAT, grey)], ZIP, decreasing=True, extra=extra)
    )
    np.testing.assert_array_equal(read_image(path)[..., 0], grey)
    path.write_bytes(_spec_file([("Z", HALF, grey.astype(np.float16))], ZIPS))
    np.testing.assert_array_equal(read_image(path)[..., 0], grey.astype(np.float16))
    assert _rle(b"aaaab") == bytes([3]) + b"a" + bytes([255]) + b"b"


@pytest.mark.parametrize("compression", ["zip", "none"])
@pytest.mark.parametrize("pixel_type", ["float", "half"])
def test_exr_files_agree_with_the_openexr_library(tmp_path, compression, pixel_type):
    openexr = pytest.importorskip("OpenEXR")
    img = _radiance((17, 13, 3), seed=2) / (1e5 if pixel_type == "half" else 1.0)
    expect = img.astype(np.float16 if pixel_type == "half" else np.float32)
    # ours -> library
    write_image(
        tmp_path / "ours.exr",
        img,
        exr_pixel_type=pixel_type,
        exr_compression=compression,
    )
    with openexr.File(str(tmp_path / "ours.exr"), separate_channels=True) as f:
        channels = f.channels()
        got = np.stack([channels[c].pixels for c in "RGB"], axis=-1)
    assert got.dtype == expect.dtype
    np.testing.assert_array_equal(got, expect)
    # library -> ours, RLE and ZIPS included, with an offset data window
    codes = {
        "zip": openexr.ZIP_COMPRESSION,
        "none": openexr.NO_COMPRESSION,
        "rle": openexr.RLE_COMPRESSION,
        "zips": openexr.ZIPS_COMPRESSION,
    }
    for name in (compression, "rle", "zips"):
        header = {
            "compression": codes[name],
            "type": openexr.scanlineimage,
            "dataWindow": (np.array([3, -2], np.int32), np.array([15, 14], np.int32)),
        }
        chans = {
            c: openexr.Channel(c, np.ascontiguousarray(expect[..., i]))
            for i, c in enumerate("RGB")
        }
        with openexr.File(header, chans) as f:
            f.write(str(tmp_path / f"lib_{name}.exr"))
        np.testing.assert_array_equal(
            read_image(tmp_path / f"lib_{name}.exr"), expect.astype(np.float32)
        )


# ---------------------------------------------------------------- bad inputs
def test_exr_bad_files_raise_naming_the_file(tmp_path):
    grey = np.repeat(np.arange(20, dtype=np.float32)[:, None] / 7, 8, axis=1)
    good = _spec_file([("Y", FLOAT, grey)], ZIP)
    second = struct.unpack("<Q", good[_parse(good)[1] + 8 : _parse(good)[1] + 16])[0]
    assert struct.unpack("<ii", good[second : second + 8]) == (
        16,
        len(good) - second - 8,
    )
    assert len(good) - second - 8 < 4 * 8 * 4  # the last block is compressed
    path = tmp_path / "bad.exr"
    cases = {
        "truncated": good[:-5],
        "no header end": good[:30],
        "no offset table": good[: _parse(good)[1] + 3],
        "empty": b"",
    }
    for data in cases.values():
        path.write_bytes(data)
        with pytest.raises(ValueError, match="bad.exr"):
            read_image(path)
    path.write_bytes(b"\x76\x2f\x31\x02" + good[4:])
    with pytest.raises(ValueError, match="not an OpenEXR file"):
        read_image(path)
    for flag, word in ((0x200, "tiled"), (0x800, "deep"), (0x1000, "multi-part")):
        path.write_bytes(_spec_file([("Y", FLOAT, grey)], version=2 | flag))
        with pytest.raises(
            ValueError, match=rf"bad.exr' is a {word} OpenEXR file.*convert it"
        ):
            read_image(path)
    for code, name in ((PIZ, "PIZ"), (5, "PXR24"), (6, "B44"), (8, "DWAA")):
        path.write_bytes(_spec_file([("Y", FLOAT, grey)], compression_byte=code))
        with pytest.raises(
            ValueError,
            match=rf"bad.exr' uses {name} compression.*another tool to ZIP or uncompressed",
        ):
            read_image(path)
    path.write_bytes(_spec_file([("Y", FLOAT, grey)], version=1))
    with pytest.raises(ValueError, match="bad.exr.*version 1"):
        read_image(path)
    corrupt = bytearray(good)
    corrupt[-10:] = bytes(10)
    path.write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match="bad.exr.*corrupted"):
        read_image(path)
    path.write_bytes(_spec_file([("U", FLOAT, grey), ("V", FLOAT, grey)]))
    with pytest.raises(ValueError, match=r"bad.exr.*channels \['U', 'V'\]"):
        read_image(path)


def test_exr_plugin_fallback_only_for_what_the_reader_rejects(tmp_path, monkeypatch):
    from deepinv_icrf import io as dio

    calls = []

    def fake_plugin(path):
        calls.append(path.name)
        return np.full((2, 3, 3), 4.0, np.float32)

    monkeypatch.setattr(dio, "_read_exr_plugin", fake_plugin)
    grey = np.ones((20, 4), np.float32)
    (tmp_path / "piz.exr").write_bytes(
        _spec_file([("Y", FLOAT, grey)], compression_byte=PIZ)
    )
    (tmp_path / "cut.exr").write_bytes(_spec_file([("Y", FLOAT, grey)], ZIP)[:-3])
    np.testing.assert_array_equal(
        read_image(tmp_path / "piz.exr"), np.full((2, 3, 3), 4.0)
    )
    with pytest.raises(ValueError, match="cut.exr' is truncated"):
        read_image(tmp_path / "cut.exr")
    assert calls == ["piz.exr"]
    monkeypatch.setattr(dio, "_read_exr_plugin", lambda path: None)
    with pytest.raises(ValueError, match="piz.exr' uses PIZ compression"):
        read_image(tmp_path / "piz.exr")
