r"""Bad-input catalogue: every bad input a user can give, what each public entry point does.

One table, :data:`CATALOGUE`, parametrized into one test per row. Each row names the input,
the entry point, a callable that provokes it (given a temporary folder) and either the exact
exception type and a regex of its message, or a ``check`` of the documented behaviour (a
warning, a fallback, an accepted input). Rows whose fix lives in a module still in progress
are marked ``xfail(strict=True)`` with the fix needed: they turn into failures (XPASS) once
fixed, so that the marker is removed. The same table is documented in
``docs/bad_inputs.rst`` (checked by :func:`test_catalogue_documented`).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import deepinv as dinv
import numpy as np
import pytest
import torch

from deepinv_icrf import fit_icrf
from deepinv_icrf.cli import main as cli_main
from deepinv_icrf.data import read_exposure_folder, write_synthetic_folder
from deepinv_icrf.hdr import merge_hdr
from deepinv_icrf.io import image_size, read_exposure_list, read_image
from deepinv_icrf.loss import (
    EquivariantSplittingLoss,
    PROPELLoss,
    RadiometricLinearityLoss,
)
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack

DOC = Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.rst"
TIMES = torch.tensor([1.0, 2.0, 4.0])
FAST = dict(progress=False, steps=3)


@dataclass(frozen=True)
class Row:
    r"""One catalogue row: ``provoke(tmp_path)`` raises ``raises`` matching ``match``, or
    (``raises=None``) returns a value that ``check`` accepts."""

    id: str
    what: str
    entry: str
    provoke: Callable[[Path], Any]
    raises: type[BaseException] | None
    match: str
    check: Callable[[Any], None] | None = None
    xfail: str | None = None


# ---------------------------------------------------------------------------- inputs
def _stack(n: int = 3, channels: int = 3, h: int = 13, w: int = 11) -> torch.Tensor:
    r"""An 8-bit coded stack ``(N, C, H, W)`` of a random scene (gamma camera)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, channels, h, w, generator=g) * 0.3 + 0.02
    return ExposureStack(TIMES[:n], response="gamma")(x)[0]


def _mostly_saturated(usable: int = 28) -> torch.Tensor:
    r"""The 13x11 stack with every position but the first ``usable`` saturated."""
    y = _stack().clone()
    y.view(3, 3, -1)[..., usable:] = 1.0
    return y


def _with(value: float) -> torch.Tensor:
    y = _stack().clone()
    y[1, 0, 2, 3] = value
    return y


def _folder(tmp: Path, name: str = "stack", **kwargs: Any) -> Path:
    options = dict(n_exposures=3, height=8, width=10, fmt="png") | kwargs
    return write_synthetic_folder(tmp / name, **options)


def _one_image_folder(tmp: Path) -> Path:
    folder = _folder(tmp)
    for path in sorted(folder.glob("*.png"))[1:]:
        path.unlink()
    return folder


def _sidecar_folder(tmp: Path, rows: str) -> Path:
    folder = _folder(tmp, exif=False)
    (folder / "exposures.csv").write_text(rows)
    return folder


def _utf16_sidecar(tmp: Path) -> Path:
    folder = _folder(tmp, exif=False)
    names = sorted(p.name for p in folder.glob("*.png"))
    rows = "".join(f"{n},{0.01 * 2**k}\n" for k, n in enumerate(names))
    (folder / "exposures.csv").write_bytes(
        rows.encode("utf-16-le")
    )  # no byte-order mark
    return folder


def _damaged(tmp: Path, how: str, fmt: str = "png") -> Path:
    folder = _folder(tmp, fmt=fmt)
    path = sorted(folder.glob(f"*.{fmt}"))[1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if how == "truncate" else b"not an image")
    return folder


def _resized(tmp: Path) -> Path:
    from deepinv_icrf.io import read_image, write_image

    folder = _folder(tmp)
    path = sorted(folder.glob("*.png"))[1]
    write_image(path, read_image(path)[:-1], exposure_time=0.25)
    return folder


def _curve_file(tmp: Path, edit: Callable[[dict], Any] | None = None) -> Path:
    path = tmp / "icrf.json"
    ICRF(channels=3, n_points=16).save(path)
    if edit is not None:
        doc = json.loads(path.read_text())
        out = edit(doc)
        if isinstance(out, bytes):
            path.write_bytes(out)
        else:
            path.write_text(out if isinstance(out, str) else json.dumps(doc))
    return path


def _nudge(doc: dict) -> None:
    doc["curve"][0][5] += 1e-3  # still monotone, but no longer what `parameters` give


def _dip(doc: dict) -> None:
    del doc["parameters"]
    doc["curve"][1][3] = 0.9


def _save_nan_curve(tmp: Path) -> None:
    icrf = ICRF(channels=3, n_points=16, parameterization="free")
    with torch.no_grad():
        icrf.channel_parameters(0)[0].fill_(float("nan"))
    try:
        icrf.save(tmp / "nan.json")
    finally:
        if (tmp / "nan.json").exists() or list(tmp.glob("*.tmp*")):
            raise AssertionError("ICRF.save left a (partial) file behind")


def _edges(c: int = 3, n: int = 16, swap: bool = False) -> torch.Tensor:
    r"""A confidence band ``(2, C, L)`` around the identity curve, its edges swapped on
    request (lower > upper everywhere)."""
    grid = torch.linspace(0, 1, n).expand(c, n)
    lower, upper = grid - 0.01, grid + 0.01
    return torch.stack([upper, lower] if swap else [lower, upper])


def _set_band(band: Any) -> ICRF:
    icrf = ICRF(channels=3, n_points=16)
    icrf.band = band
    return icrf


def _swapped_band_file(tmp: Path) -> Path:
    def swap(doc: dict) -> None:
        doc["band"] = {"lower": _edges()[1].tolist(), "upper": _edges()[0].tolist()}

    return _curve_file(tmp, swap)


def _converged_early(result: dict) -> None:
    # the row returns at all: the fit stopped on convergence, not after 10**12 steps
    assert result["code"] == 0, result["stderr"]
    assert result["new"] == ["o", "o/icrf.json", "o/icrf_fit.png", "o/summary.json"]
    assert result["inputs_unchanged"]


def _floor_capped(icrf: ICRF) -> None:
    from deepinv_icrf.hdr import floor_cutoff

    assert icrf.metadata["floor"] == [0.9] * 3 and floor_cutoff(icrf) == 0.5


def _linearize(*args: Any) -> Any:
    from deepinv_icrf.hdr import linearize

    return linearize(*args)


def _tonemap(*args: Any) -> Any:
    from deepinv_icrf.hdr import tonemap

    return tonemap(*args)


def _band_coverage(*args: torch.Tensor) -> torch.Tensor:
    from deepinv_icrf.functional import band_coverage

    return band_coverage(*args)


def _plot_icrf(curve: torch.Tensor, **kwargs: Any) -> Any:
    from deepinv_icrf.plot import plot_icrf

    return plot_icrf(curve, **kwargs)


def _linearity(y: torch.Tensor, times: torch.Tensor = TIMES, **kwargs) -> torch.Tensor:
    y = y.unsqueeze(0) if y.ndim == 4 else y
    physics = ExposureStack(times)
    x_net = kwargs.pop("x_net", y)
    return RadiometricLinearityLoss()(x_net=x_net, y=y, physics=physics, **kwargs)


def _mixture(stds: torch.Tensor) -> torch.Tensor:
    means = torch.linspace(0, 1, stds.numel()).view(stds.shape)
    return torch.cat([means, stds], dim=-1)  # official layout (B, K, 2D)


def _splitting(split_ratio: float, physics_mask: float) -> torch.Tensor:
    physics = dinv.physics.Inpainting(img_size=(1, 8, 8), mask=physics_mask)
    generator = dinv.physics.generator.BernoulliSplittingMaskGenerator(
        (1, 8, 8), split_ratio=split_ratio
    )
    loss = EquivariantSplittingLoss(mask_generator=generator, consistency_loss=None)
    model = loss.adapt_model(dinv.models.ArtifactRemoval(lambda x, sigma: 0 * x))
    y = physics(torch.ones(2, 1, 8, 8))
    x_net = model(y, physics, update_parameters=True)
    return loss(x_net=x_net, y=y, physics=physics, model=model)


def _cli(tmp: Path, make: Callable[[Path], Path], command: str = "fit") -> dict:
    folder = make(tmp)
    out = tmp / "cli_out"
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main([command, str(folder), "--out", str(out), "--no-progress"])
    return {"code": code, "stderr": err.getvalue(), "out": out}


# ---------------------------------------------------------------------------- hostile files
def _chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body))
    )


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _png_bomb(tmp: Path, depth: int = 8, size: int = 100_000) -> Path:
    ihdr = struct.pack(">IIBBBBB", size, size, depth, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(b""))
    )
    return _write(tmp, "bomb.png", data)


def _jpeg_bomb(tmp: Path) -> Path:
    from deepinv_icrf.io import write_image

    write_image(tmp / "a.jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray((tmp / "a.jpg").read_bytes())
    sof = data.find(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 65000, 65000)
    return _write(tmp, "bomb.jpg", bytes(data))


def _tiff_bomb(tmp: Path) -> Path:
    entries = [
        (256, 4, 1, 100_000),
        (257, 4, 1, 100_000),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (273, 4, 1, 110),
        (278, 4, 1, 100_000),
        (279, 4, 1, 8),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", *e) for e in entries
    )
    return _write(tmp, "bomb.tif", b"II*\x00" + struct.pack("<I", 8) + ifd + bytes(12))


def _tiff_cut(tmp: Path) -> Path:
    import tifffile

    tifffile.imwrite(tmp / "whole.tif", np.zeros((24, 32, 3), np.uint8))
    return _write(tmp, "a.tif", (tmp / "whole.tif").read_bytes()[:5])


def _tiff_zero_tile(tmp: Path) -> Path:
    import tifffile

    path = tmp / "a.tif"
    tifffile.imwrite(path, np.zeros((24, 32, 3), np.uint16), tile=(16, 16))
    with tifffile.TiffFile(path) as tif:
        at = tif.pages[0].tags["TileWidth"].valueoffset
    data = bytearray(path.read_bytes())
    data[at : at + 2] = b"\x00\x00"
    path.write_bytes(bytes(data))
    return path


def _npy_broken_header(tmp: Path) -> Path:
    # a byte of the header replaced by 0x80 (found by mutating a valid file): numpy's
    # header parser reads an unterminated tuple
    path = tmp / "a.npy"
    np.save(path, np.zeros((24, 32, 3), np.uint8))
    data = bytearray(path.read_bytes())
    data[data.index(b"3)") + 1] = 0x80
    path.write_bytes(bytes(data))
    return path


def _npy_bomb(tmp: Path) -> Path:
    path = tmp / "bomb.npy"
    with open(path, "wb") as fh:
        np.lib.format.write_array_header_1_0(
            fh, {"descr": "<f4", "fortran_order": False, "shape": (100000, 100000, 3)}
        )
    return path


def _exr_bomb(tmp: Path) -> Path:
    def attr(name, kind, value):
        return (
            name.encode()
            + b"\0"
            + kind.encode()
            + b"\0"
            + struct.pack("<i", len(value))
            + value
        )

    window = struct.pack("<4i", 0, 0, 99_999, 99_999)
    chlist = b"Y\0" + struct.pack("<iB3xii", 2, 0, 1, 1) + b"\0"
    header = (
        b"\x76\x2f\x31\x01"
        + struct.pack("<I", 2)
        + attr("channels", "chlist", chlist)
        + attr("compression", "compression", b"\x03")
        + attr("dataWindow", "box2i", window)
        + attr("displayWindow", "box2i", window)
        + attr("lineOrder", "lineOrder", b"\0")
        + attr("pixelAspectRatio", "float", struct.pack("<f", 1.0))
        + attr("screenWindowCenter", "v2f", bytes(8))
        + attr("screenWindowWidth", "float", struct.pack("<f", 1.0))
        + b"\0"
    )
    return _write(tmp, "bomb.exr", header + bytes(64))


def _exr_file(tmp: Path, compression: str = "zip", cut: bool = False) -> Path:
    from deepinv_icrf.io import write_image

    path = tmp / f"{compression}.exr"
    write_image(
        path, np.ones((40, 30, 3), np.float32) * 2.5, exr_compression=compression
    )
    if cut:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 2 // 3])
    return path


def _multi_frame_folder(tmp: Path, kind: str) -> Path:
    import imagecodecs
    import tifffile

    folder = _folder(tmp, exif=False, fmt="png")
    (folder / "exposures.csv").write_text(
        "exposure_00.png,1\nexposure_01.png,2\nexposure_02.png,4\n"
    )
    frames = np.zeros((2, 8, 10, 3), np.uint8)
    if kind == "tif":
        (folder / "exposure_01.png").unlink()
        (folder / "exposures.csv").write_text(
            "exposure_00.png,1\nexposure_01.tif,2\nexposure_02.png,4\n"
        )
        with tifffile.TiffWriter(folder / "exposure_01.tif") as tif:
            for frame in frames:
                tif.write(frame, photometric="rgb", contiguous=False)
    else:
        (folder / "exposure_01.png").write_bytes(bytes(imagecodecs.apng_encode(frames)))
    return folder


def _fifo(tmp: Path, name: str) -> Path:
    path = tmp / name
    os.mkfifo(path)
    return path


def _curve_raw(tmp: Path, edit: Callable[[str], str]) -> Path:
    path = tmp / "icrf.json"
    ICRF(channels=3, n_points=16).save(path)
    path.write_text(edit(path.read_text()))
    return path


def _list_file(tmp: Path, name: str, text: str) -> Path:
    return _write(tmp, name, text.encode())


def _timed_sidecar(tmp: Path, value: str) -> Path:
    return _sidecar_folder(
        tmp, f"exposure_00.png,{value}\nexposure_01.png,0.5\nexposure_02.png,1\n"
    )


def _crops_across_workers(tmp: Path) -> list:
    from torch.utils.data import DataLoader

    from deepinv_icrf.data import ExposureStackDataset

    folder = _folder(tmp)
    data = ExposureStackDataset([folder] * 4, crop_size=(3, 3), seed=0)
    loader = DataLoader(
        data, batch_size=1, num_workers=2, generator=torch.Generator().manual_seed(0)
    )
    return [[y[0, 0, 0, :, 0].tolist() for y, _ in loader] for _ in range(2)]


def _crops_differ(epochs: list) -> None:
    first, second = epochs
    assert first[0::2] != first[1::2]  # worker 0 and worker 1 draw different crops
    assert first != second  # and so does every epoch


def _validate_png16(tmp: Path) -> dict:
    from deepinv_icrf.io import write_image
    from deepinv_icrf.validate import validate_folder

    lin = np.linspace(0, 1, 4096).reshape(64, 64, 1).repeat(3, -1) ** 2.2
    write_image(tmp / "a.png", np.round(lin ** (1 / 2.2) * 65535).astype(np.uint16))
    write_image(tmp / "a.tif", np.round(lin * 65535).astype(np.uint16))
    ICRF(init="gamma", n_points=4096, bit_depth=16).save(tmp / "curve.json")
    return validate_folder(tmp, tmp / "curve.json", min_count=1)


def _sixteen_bit_levels(result: dict) -> None:
    assert result["n_codes"][0] > 3000 and max(result["rmse"]) < 1e-3


def _piz_read(img: np.ndarray) -> None:
    assert img.shape == (40, 30, 3) and bool((img == 2.5).all())


def _run(argv: list[str]) -> dict:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli_main(argv)
    return {"code": code, "stderr": err.getvalue()}


def _cli_out(
    tmp: Path, command: str, extra: Callable[[Path, Path], list[str]], fmt: str = "png"
) -> dict:
    folder = _folder(tmp, name="photos", fmt=fmt)
    icrf = tmp / "icrf.json"
    ICRF(channels=3, n_points=16).save(icrf)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    result = _run([command, str(folder), "--icrf", str(icrf)] + extra(tmp, folder))
    result["inputs_unchanged"] = before == {
        p.name: p.read_bytes() for p in folder.iterdir()
    }
    result["out"] = tmp / "out"
    return result


def _cli_refused(match: str) -> Callable[[dict], None]:
    def check(result: dict) -> None:
        _cli_error(match)(result)
        assert result["inputs_unchanged"]

    return check


def _cli_fit_with(tmp: Path, patch: Callable[[pytest.MonkeyPatch], None]) -> dict:
    import deepinv_icrf

    folder = _folder(tmp, name="photos")
    out = tmp / "cli_out"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(
            deepinv_icrf,
            "fit_icrf",
            lambda stack, times, **kw: ICRF.from_response("gamma", channels=3),
        )
        patch(mp)
        result = _run(["fit", str(folder), "--out", str(out), "--no-progress"])
    result["out"] = out
    return result


def _full_disk(mp: pytest.MonkeyPatch) -> None:
    import errno

    import deepinv_icrf.io as dio

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    mp.setattr(dio, "write_json", full)


def _ctrl_c(mp: pytest.MonkeyPatch) -> None:
    import deepinv_icrf.io as dio

    def interrupted(path, obj):
        raise KeyboardInterrupt

    mp.setattr(dio, "write_json", interrupted)


def _ctrl_c_in_module_init(mp: pytest.MonkeyPatch) -> None:
    # what a compiled module's init does with a Ctrl-C (pybind11: "initialization failed",
    # raised from the KeyboardInterrupt); seen once in 30 SIGINTs to `hdr` at 12 MP
    import deepinv_icrf.io as dio

    def interrupted(path, obj):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as err:
            raise ImportError("initialization failed") from err

    mp.setattr(dio, "write_json", interrupted)


def _interrupted(result: dict) -> None:
    assert (
        result["code"] == 130
        and result["stderr"].strip() == "deepinv-icrf: interrupted"
    )
    assert not result["out"].exists()


def _fail(value: object) -> None:
    raise AssertionError(f"unexpected {value!r}")


def _with_env(name: str, value: str, fn: Callable[[], Any]) -> Any:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(name, value)
        return fn()


def _link(link: Path, target: Path) -> Path:
    link.symlink_to(target)
    return link


# ---------------------------------------------------------------------------- third pass
def _short_png(tmp: Path) -> Path:
    r"""An 8-bit PNG whose image data holds 10 of the 100 rows its IHDR declares, in a
    complete zlib stream (Pillow filled the 90 missing rows with zeros, silently)."""
    raw = b"".join(b"\0" + bytes([7]) * 300 for _ in range(10))
    ihdr = struct.pack(">IIBBBBB", 100, 100, 8, 2, 0, 0, 0)
    data = (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw))
        + _chunk(b"IEND", b"")
    )
    return _write(tmp, "short.png", data)


def _sparse_png16(tmp: Path) -> Path:
    r"""A valid 8x10 16-bit PNG followed by 200 MB of zeros (sparse on disk; a 5 GB one was
    read whole: 17 s and 5.3 GB)."""
    from deepinv_icrf.io import write_image

    path = tmp / "big.png"
    write_image(path, np.zeros((8, 10, 3), np.uint16))
    os.truncate(path, 200 * 2**20)
    return path


def _exr_declaring(tmp: Path, window: tuple, tiles: tuple | None = None) -> Path:
    r"""An OpenEXR header (from the file layout document) with the data window ``window``
    ``(xmin, ymin, xmax, ymax)``, tiled with ``tiles`` when given, and no pixel data."""

    def attr(name: str, kind: str, value: bytes) -> bytes:
        head = name.encode() + b"\0" + kind.encode() + b"\0"
        return head + struct.pack("<i", len(value)) + value

    box = struct.pack("<4i", *window)
    flags = 2 | (0x200 if tiles else 0)
    header = (
        b"\x76\x2f\x31\x01"
        + struct.pack("<I", flags)
        + attr(
            "channels", "chlist", b"Y\0" + struct.pack("<iB3xii", 2, 0, 1, 1) + b"\0"
        )
        + attr("compression", "compression", b"\x03")
        + attr("dataWindow", "box2i", box)
        + attr("displayWindow", "box2i", box)
        + attr("lineOrder", "lineOrder", b"\0")
        + attr("pixelAspectRatio", "float", struct.pack("<f", 1.0))
        + attr("screenWindowCenter", "v2f", bytes(8))
        + attr("screenWindowWidth", "float", struct.pack("<f", 1.0))
        + (attr("tiles", "tiledesc", struct.pack("<IIB", *tiles, 0)) if tiles else b"")
        + b"\0"
    )
    return _write(tmp, "a.exr", header + bytes(64))


def _exr_cut_in_pixels(tmp: Path) -> Path:
    r"""A 64x64 ZIP OpenEXR file (four chunks of 16 rows) with its last tenth cut off: the
    header is intact, the pixel data is not."""
    from deepinv_icrf.io import write_image

    path = tmp / "cut.exr"
    noise = np.random.default_rng(0).random((64, 64, 3)).astype(np.float32)
    write_image(path, noise, exr_compression="zip")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 9 // 10])
    return path


def _tiff_absurd_tiles(tmp: Path) -> Path:
    r"""An 8x8 TIFF declaring tiles of (2**31 - 16)^2 pixels, one tile of 64 bytes."""
    entries = [
        (256, 4, 1, 8),
        (257, 4, 1, 8),
        (258, 3, 1, 8),
        (259, 3, 1, 1),
        (262, 3, 1, 1),
        (322, 4, 1, 2**31 - 16),
        (323, 4, 1, 2**31 - 16),
        (324, 4, 1, 200),
        (325, 4, 1, 64),
    ]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHII", *e) for e in entries
    )
    pixels = bytes(range(64))
    body = ifd + bytes(4)
    data = b"II*\x00" + struct.pack("<I", 8) + body
    data += bytes(200 - len(data)) + pixels
    return _write(tmp, "tiles.tif", data)


def _read_as_its_8x8(img: np.ndarray) -> None:
    assert img.shape == (8, 8, 1) and img.dtype == np.uint8
    assert img[..., 0].ravel().tolist() == list(range(64))


def _npy(tmp: Path, array: np.ndarray) -> Path:
    np.save(tmp / "a.npy", array)
    return tmp / "a.npy"


def _times_read(expected: dict) -> Callable[[Any], None]:
    def check(folder: Any) -> None:
        names = [p.name for p in folder.paths]
        times = dict(zip(names, folder.exposure_times.tolist(), strict=True))
        assert times == expected, times

    return check


_THIRDS = {"exposure_00.png": 0.125, "exposure_01.png": 0.25, "exposure_02.png": 0.5}


def _full_disk_unnamed(mp: pytest.MonkeyPatch) -> None:
    import errno

    import deepinv_icrf.io as dio

    def full(path, obj):  # as a real write() fails: no file name in the error
        raise OSError(errno.ENOSPC, "No space left on device")

    mp.setattr(dio, "write_json", full)


def _ctrl_c_in_commit(tmp: Path) -> dict:
    r"""Commit two outputs over older ones; SIGINT comes after the first rename while another
    thread runs (a CLI process has torch's and a progress bar's: the kernel may hand the
    signal to any of them, and Python then raised ``KeyboardInterrupt`` mid-commit)."""
    import signal
    import threading
    import time

    from deepinv_icrf.io import OutputSet
    from deepinv_icrf.io import atomic as atomic_module

    for name in ("a.txt", "b.txt"):
        (tmp / name).write_text("old")
    replace = os.replace

    def replace_then_ctrl_c(src, dst):
        replace(src, dst)
        if Path(dst).name == "a.txt":
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)  # time enough for any thread to take it

    stop = threading.Event()
    worker = threading.Thread(target=stop.wait)
    worker.start()
    interrupted = False
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(atomic_module.os, "replace", replace_then_ctrl_c)
            with OutputSet() as outputs:
                for name in ("a.txt", "b.txt"):
                    outputs.file(tmp / name).write_text("new")
    except KeyboardInterrupt:
        interrupted = True
    finally:
        stop.set()
        worker.join()
    return {
        "interrupted": interrupted,
        "files": {p.name: p.read_text() for p in sorted(tmp.iterdir())},
    }


def _one_complete_set(result: dict) -> None:
    assert result["interrupted"]  # delivered, once the set was in place
    assert result["files"] == {"a.txt": "new", "b.txt": "new"}


def _link_replaced_input_kept(result: dict) -> None:
    assert result["code"] == 0, result["stderr"]
    tmp = result["tmp"]
    out = tmp / "o" / "exposure_00.tif"
    assert out.is_file() and not out.is_symlink()
    assert read_image(out).dtype == np.uint16
    photo = tmp / "photos" / "exposure_00.png"  # the photo the link pointed at
    assert photo.read_bytes() == (tmp / "photo.bak").read_bytes()


def _output_link_to_input(tmp: Path) -> None:
    photo = tmp / "photos" / "exposure_00.png"
    (tmp / "photo.bak").write_bytes(photo.read_bytes())
    (tmp / "o").mkdir()
    (tmp / "o" / "exposure_00.tif").symlink_to(tmp / "photos" / "exposure_00.png")


def _cli_device(tmp: Path, device: str) -> dict:
    folder = _folder(tmp)
    out = tmp / "cli_out"
    result = _run(["fit", str(folder), "--out", str(out), "--device", device])
    result["out"] = out
    return result


def _bomb_folder(tmp: Path) -> Path:
    folder = _folder(tmp, exif=False)
    (folder / "exposures.csv").write_text(
        "exposure_00.png,1\nexposure_01.png,2\nexposure_02.png,4\n"
    )
    (folder / "exposure_01.png").write_bytes(_png_bomb(tmp).read_bytes())
    return folder


def _large_odd_folder(tmp: Path) -> Path:
    r"""Three small photos, one of which declares 7000x7000 pixels (under the pixel limit,
    no image data): the sizes differ in the headers, before anything is decoded."""
    folder = _bomb_folder(tmp)
    (folder / "exposure_01.png").write_bytes(_png_bomb(tmp, size=7000).read_bytes())
    return folder


def _snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else None
        for p in sorted(root.rglob("*"))
    }


def _cli_in(
    tmp: Path,
    argv: Callable[[Path, Path], list[str]],
    make: Callable[[Path], Path] | None = None,
    prepare: Callable[[Path], Any] | None = None,
) -> dict:
    r"""Run ``deepinv-icrf`` on a folder of photos (``make(tmp)``, default 3 small PNGs with
    EXIF times) and the other inputs ``prepare(tmp)`` writes (a curve file, a sidecar);
    ``argv(tmp, folder)`` builds the arguments. The result records the exit code, stderr,
    every file that appeared in ``tmp`` (``new``) and whether the files already there are
    unchanged."""
    folder = (make or (lambda t: _folder(t, name="photos")))(tmp)
    if prepare is not None:
        prepare(tmp)
    before = _snapshot(tmp)
    result = _run(argv(tmp, folder))
    after = _snapshot(tmp)
    result["new"] = sorted(set(after) - set(before))
    result["inputs_unchanged"] = all(after.get(k) == v for k, v in before.items())
    result["tmp"] = tmp
    return result


def _refused(match: str) -> Callable[[dict], None]:
    r"""Exit 2, one line matching ``match``, nothing written, no input changed."""

    def check(result: dict) -> None:
        assert result["code"] == 2, result
        lines = result["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("deepinv-icrf: error: "), lines
        assert re.search(match, lines[0]), lines[0]
        assert not result["new"] and result["inputs_unchanged"], result["new"]

    return check


def _with_metadata(**metadata: Any) -> ICRF:
    icrf = ICRF.from_response("srgb", channels=3)
    icrf.metadata.update(metadata)
    return icrf


def _metadata_file(tmp: Path, **metadata: Any) -> Path:
    path = tmp / "icrf.json"
    ICRF(channels=3, n_points=16).save(path, **metadata)
    return path


def _real_frames(folder: str, frames: slice) -> tuple[np.ndarray, np.ndarray]:
    # frames of a real bracket of ../shared/data/real, by increasing listed time
    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "real" / folder
    if not path.is_dir():
        pytest.skip(f"{path} is absent (shared data folder not present)")
    stack = read_exposure_folder(path)
    order = np.argsort(stack.exposure_times)[frames]
    return stack.images[order], np.asarray(stack.exposure_times)[order]


def _equal_frames(n: int = 3, noise: float = 0.01, frame: int = 1) -> torch.Tensor:
    r"""``n`` frames of one exposure (frame ``frame`` of :func:`_stack`), each with its own
    code noise: equally bright, not identical."""
    g = torch.Generator().manual_seed(1)
    one = _stack()[frame]
    y = one + noise * torch.randn(n, *one.shape, generator=g)
    return (y.clamp(0, 1) * 255).round() / 255


def _shutter_limit() -> ICRF:
    r"""Four frames listed one stop apart; the camera stayed at the third's exposure for the
    fourth (equally bright, noisy)."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 40, 50, generator=g) * 0.25 + 0.02
    y = ExposureStack(torch.tensor([1.0, 2.0, 4.0, 4.0]), response="gamma")(x)[0]
    y = (
        (y + 0.004 * torch.randn(y.shape, generator=g)).clamp(0, 1) * 255
    ).round() / 255
    with pytest.warns(UserWarning, match="listed exposure times disagree"):
        return fit_icrf(y, [1.0, 2.0, 4.0, 8.0], progress=False)


def _shutter_limit_named(icrf: ICRF) -> None:
    check = icrf.fit_report.time_check
    assert check.disagreeing_steps == [(2, 3)] and check.suspect_frames == [3]


def _sidecar_times(tmp: Path, times: list[float], name: str = "photos") -> Path:
    folder = _folder(tmp, name=name, exif=False)
    names = sorted(p.name for p in folder.glob("exposure_*"))
    rows = "".join(f"{n},{t}\n" for n, t in zip(names, times, strict=True))
    (folder / "exposures.csv").write_text(rows)
    return folder


def _copies_folder(tmp: Path) -> Path:
    r"""Three copies of one photo, listed one stop apart (a sidecar)."""
    folder = _sidecar_times(tmp, [0.125, 0.25, 0.5])
    first, *others = sorted(folder.glob("exposure_*.png"))
    for path in others:
        path.write_bytes(first.read_bytes())
    return folder


def _written(*names: str) -> Callable[[dict], None]:
    def check(result: dict) -> None:
        assert result["code"] == 0, result["stderr"]
        assert result["new"] == sorted(names) and result["inputs_unchanged"]

    return check


def _cli_hdr_interrupted(tmp: Path) -> dict:
    r"""``hdr`` with Ctrl-C in the merge, after the curve and its plot are staged."""
    import deepinv_icrf.hdr as dhdr

    def interrupted(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(dhdr, "save_radiance", interrupted)
        return _cli_in(
            tmp,
            lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr"), "--no-progress"],
        )


def _nothing_after_interrupt(result: dict) -> None:
    assert result["code"] == 130
    assert result["stderr"].strip() == "deepinv-icrf: interrupted"
    assert not result["new"] and result["inputs_unchanged"], result["new"]


def _summary_named_sidecar(tmp: Path) -> None:
    times = {"exposure_00.png": 0.125, "exposure_01.png": 0.25, "exposure_02.png": 0.5}
    (tmp / "x.summary.json").write_text(json.dumps(times))


def _old_outputs(tmp: Path) -> None:
    for name in ("x.exr", "x.icrf.json"):
        (tmp / name).write_text("from an earlier run")


def _replaced_as_a_set(result: dict) -> None:
    assert result["code"] == 0, result["stderr"]
    assert result["new"] == [
        "x.icrf_fit.png",
        "x.summary.json",
    ]  # beside the 2 replaced
    tmp = result["tmp"]
    assert all((tmp / n).read_bytes()[:4] != b"from" for n in ("x.exr", "x.icrf.json"))
    assert sorted(p.name for p in tmp.iterdir()) == [
        "photos",
        "x.exr",
        "x.icrf.json",
        "x.icrf_fit.png",
        "x.summary.json",
    ]  # no staging folder left


def _mixed_folder(tmp: Path, how: str) -> Path:
    r"""The photos with the second one made grey (one channel) or 16-bit."""
    from deepinv_icrf.io import write_image

    folder = _folder(tmp, name="photos")
    path = sorted(folder.glob("*.png"))[1]
    image = read_image(path)
    if how == "grey":
        image = image[..., :1].copy()
    else:
        image = image.astype(np.uint16) * 257
    write_image(path, image, exposure_time=0.25)
    return folder


def _inf_array() -> np.ndarray:
    y = _stack().double().numpy()
    y[2, 1, 0, 0] = np.inf
    return y


def _tiny_folder(tmp: Path, size: int = 1) -> Path:
    r"""Three ``size`` x ``size`` 8-bit photos with their EXIF times (one stop apart)."""
    from deepinv_icrf.io import write_image

    folder = tmp / "tiny"
    folder.mkdir()
    codes = _stack(h=size, w=size).permute(0, 2, 3, 1).mul(255).round().to(torch.uint8)
    for k, t in enumerate(TIMES.tolist()):
        write_image(folder / f"exposure_{k:02d}.png", codes[k].numpy(), exposure_time=t)
    return folder


# ---------------------------------------------------------------------------- checks
def _truncate(path: Path) -> list[str]:
    r"""Cut a photo to its first 100 bytes (a header and nothing else); no arguments."""
    path.write_bytes(path.read_bytes()[:100])
    return []


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def _cli_error(match: str) -> Callable[[dict], None]:
    def check(result: dict) -> None:
        assert result["code"] == 2
        lines = result["stderr"].splitlines()
        assert len(lines) == 1 and lines[0].startswith("deepinv-icrf: error: ")
        assert re.search(match, lines[0])
        assert not result["out"].exists()  # nothing written, not even a folder

    return check


def _finite_float_curve(icrf: ICRF) -> None:
    curve = icrf.curve.detach()
    assert curve.dtype == torch.float32 and bool(torch.isfinite(curve).all())
    assert bool((curve.diff(dim=-1) >= 0).all())


def _exact_zero(value: torch.Tensor) -> None:
    assert value.shape == (1,) and float(value[0]) == 0.0


def _finite_close_to_clean(value: torch.Tensor) -> None:
    clean = _linearity(_stack())
    assert bool(torch.isfinite(value).all())
    torch.testing.assert_close(value, clean, rtol=0.05, atol=0.0)


def _nan_at_that_pixel_only(x: torch.Tensor) -> None:
    nan = torch.zeros_like(x, dtype=torch.bool)
    nan[0, 1, 0, 2, 3] = True
    assert torch.equal(x.isnan(), nan)
    clean = ICRF()(_stack().unsqueeze(0))
    assert torch.equal(x[~nan], clean[~nan])


def _promoted_to_float32(value: torch.Tensor) -> None:
    assert value.dtype == torch.float32 and bool(torch.isfinite(value).all())
    torch.testing.assert_close(value, _linearity(_stack()), rtol=0.02, atol=0.0)


def _repeated_frames(y: torch.Tensor) -> None:
    assert y.shape == (1, 3, 3, 13, 11)
    assert torch.equal(y[:, 0], y[:, 1])


def _all_saturated_flagged(out: tuple) -> None:
    radiance, saturated = out
    assert bool(saturated.all()) and bool(torch.isfinite(radiance).all())


def _read_as_16_bit(folder) -> None:
    assert folder.images.dtype == np.uint16 and folder.bit_depth == 16
    assert int(folder.images.max()) > 255


def _sign_ignored(value: torch.Tensor) -> None:
    stds = torch.full((2, 3, 2), 0.2)
    reference = PROPELLoss(std_activation=None)(x_net=_mixture(stds), x=_TARGET)
    torch.testing.assert_close(value, reference)


def _floored_std(value: torch.Tensor) -> None:
    assert torch.isfinite(value).all() and (value > 0).all()
    stds = torch.full((2, 3, 2), 1e-6)
    reference = PROPELLoss(std_activation=None)(x_net=_mixture(stds), x=_TARGET)
    torch.testing.assert_close(value, reference)


_TARGET = torch.tensor([[0.1, 0.9], [0.5, 0.4]])

# ---------------------------------------------------------------------------- the table
# fmt: off
CATALOGUE: list[Row] = [
    # --- fewer than 2 images
    Row("few_exposures_fit", "stack with 1 image", "fit_icrf",
        lambda tmp: fit_icrf(_stack()[:1], TIMES[:1], **FAST),
        ValueError, r"`stack` to hold at least 2 exposures, but got 1"),
    Row("few_exposures_physics", "1 exposure time", "ExposureStack",
        lambda tmp: ExposureStack([1.0]),
        ValueError, r"`exposure_times` to have shape \(N,\) or \(B, N\) with N >= 2"),
    Row("few_exposures_loss", "stack with 1 image", "RadiometricLinearityLoss",
        lambda tmp: _linearity(_stack()[:1], TIMES[:1]),
        ValueError, r"N >= 2 exposures"),
    Row("few_exposures_folder", "folder with 1 image", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_one_image_folder(tmp)),
        ValueError, r"holds 1 image\(s\) .*an exposure stack needs at least 2"),
    Row("few_exposures_merge", "stack with 1 image", "merge_hdr",
        lambda tmp: merge_hdr(_stack()[:1], TIMES[:1], ICRF()),
        ValueError, r"`stack` to hold at least 2 exposures, but got 1"),
    # --- exposure times
    Row("zero_time_fit", "an exposure time of 0", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), [0.0, 1.0, 2.0], **FAST),
        ValueError, r"`exposure_times` to be > 0 everywhere, but got minimum 0"),
    Row("negative_time_physics", "a negative exposure time", "ExposureStack",
        lambda tmp: ExposureStack([-1.0, 1.0]),
        ValueError, r"`exposure_times` to be > 0 everywhere, but got minimum -1: \[-1.0, 1.0\]"),
    Row("nan_time_fit", "a NaN exposure time", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), [float("nan"), 1.0, 2.0], **FAST),
        ValueError, r"`exposure_times` to be finite, but it holds 1 NaN"),
    Row("nan_time_merge", "an infinite exposure time", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), torch.tensor([1.0, 2.0, float("inf")]), ICRF()),
        ValueError, r"`exposure_times` to be finite"),
    Row("zero_time_sidecar", "a sidecar time of 0", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_sidecar_folder(
            tmp, "exposure_00.png,0\nexposure_01.png,0.5\nexposure_02.png,1\n")),
        ValueError, r"line 1: exposure times must be > 0 seconds, but got '0'"),
    Row("nan_time_sidecar", "a sidecar time 'nan'", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_sidecar_folder(
            tmp, "exposure_00.png,nan\nexposure_01.png,0.5\nexposure_02.png,1\n")),
        ValueError, r"exposure time 'nan' is not a number"),
    Row("duplicate_time_folder", "two images with the same time", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_sidecar_folder(
            tmp, "exposure_00.png,0.5\nexposure_01.png,0.5\nexposure_02.png,1\n")),
        ValueError, r"Duplicate exposure times in .* for files \[\('exposure_00.png', "
        r"'exposure_01.png'\)\]"),
    Row("duplicate_time_merge", "two exposures with the same time", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), torch.tensor([1.0, 1.0, 2.0]), ICRF()),
        ValueError, r"Expected distinct `exposure_times`, but got \[1.0, 1.0, 2.0\]"),
    Row("duplicate_time_fit", "two exposures with the same time", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), [1.0, 1.0, 2.0], **FAST),
        ValueError, r"Expected distinct `exposure_times`, but got \[1.0, 1.0, (2.0|1.0)\] "
        r"\(duplicates\)"),
    Row("duplicate_time_physics", "repeated frames (same time) simulated", "ExposureStack",
        lambda tmp: ExposureStack([1.0, 1.0, 2.0], response="gamma")(
            torch.rand(1, 3, 13, 11)),
        None, "accepted: repeated frames of one exposure are valid measurements",
        check=_repeated_frames),
    Row("times_rounded_to_zero", "times in the wrong unit (ms rounded to whole seconds: "
        "all 0)", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), np.round([0.001, 0.002, 0.004]), **FAST),
        ValueError, r"`exposure_times` to be > 0 everywhere, but got minimum 0"),
    Row("times_all_equal", "times in the wrong unit (all equal after rounding)", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), np.round([1.2, 1.4, 0.9]), **FAST),
        ValueError, r"Expected distinct `exposure_times`, but got \[1.0, 1.0, (2.0|1.0)\] "
        r"\(duplicates\)"),
    Row("times_count_mismatch", "3 images, 2 times", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), [1.0, 2.0], **FAST),
        ValueError, r"`exposure_times` to have shape \(3,\) or \(1, 3\) to match the 3 exposures"),
    # --- saturation, black, no valid pixel pair; too few pixels
    Row("all_saturated_fit", "every pixel saturated", "fit_icrf",
        lambda tmp: fit_icrf(torch.ones(3, 3, 13, 11), TIMES, **FAST),
        ValueError, r"Found no valid pixel pair in `stack` \(all saturated or black, or "
        r"exposure ratios below the threshold\)"),
    Row("all_black_fit", "every pixel black", "fit_icrf(method='linearity')",
        lambda tmp: fit_icrf(torch.zeros(3, 3, 13, 11), TIMES, method="linearity", **FAST),
        ValueError, r"Found no valid pixel pair in `stack` \(all saturated or black, or "
        r"exposure ratios below the threshold\)"),
    Row("no_valid_pair_fit", "exposure ratios all below the threshold (1, 100, 10000 s), "
        "listed times kept", "fit_icrf(method='linearity', refine_exposures=False)",
        lambda tmp: fit_icrf(_stack(), [1.0, 100.0, 1e4], method="linearity",
                             refine_exposures=False, **FAST),
        ValueError, r"Found no valid pixel pair in `stack` \(all saturated or black, or "
        r"exposure ratios below the threshold\)"),
    Row("tiny_stack_fit", "three 1x1 images (the starting curve came back)", "fit_icrf",
        lambda tmp: fit_icrf(_stack(h=1, w=1), TIMES, **FAST),
        ValueError, r"Found 1 usable pixel position\(s\) in `stack`, fewer than the 32 knots "
        r"of the code fit's response \(n_knots=32\)"),
    Row("tiny_stack_linearity", "three 4x4 images", "fit_icrf(method='linearity')",
        lambda tmp: fit_icrf(_stack(h=4, w=4), TIMES, method="linearity", **FAST),
        ValueError, r"Found 16 usable pixel position\(s\) in `stack`, fewer than the 32 the "
        r"linearity fit needs"),
    Row("few_usable_pixels_fit", "a 13x11 stack with 28 usable positions, n_knots=32",
        "fit_icrf", lambda tmp: fit_icrf(_mostly_saturated(), TIMES, **FAST),
        ValueError, r"Found 28 usable pixel position\(s\)"),
    Row("tiny_sample_fit", "max_pixels=10 below n_knots=32", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), TIMES, max_pixels=10, **FAST),
        ValueError, r"Found 10 usable pixel position\(s\) in `stack` \(max_pixels=10\)"),
    Row("all_saturated_loss", "every pixel saturated", "RadiometricLinearityLoss",
        lambda tmp: _linearity(torch.ones(3, 3, 13, 11)),
        None, "documented: 0 for a pair without valid pixels (clair-torch)",
        check=_exact_zero),
    Row("no_valid_pair_loss", "exposure ratios all below the threshold",
        "RadiometricLinearityLoss",
        lambda tmp: _linearity(_stack(), torch.tensor([1.0, 100.0, 1e4])),
        None, "documented: 0 (no pair selected)", check=_exact_zero),
    Row("all_saturated_merge", "every pixel saturated", "merge_hdr",
        lambda tmp: merge_hdr(torch.ones(3, 3, 5, 7), TIMES, ICRF(), return_saturated=True),
        None, "documented: finite radiance, every pixel flagged in the saturation mask",
        check=_all_saturated_flagged),
    # --- NaN / inf pixels
    Row("nan_pixel_fit", "a NaN pixel", "fit_icrf",
        lambda tmp: fit_icrf(_with(float("nan")), TIMES, **FAST),
        ValueError, r"`stack` to be finite, but it holds 1 NaN or infinite value"),
    Row("inf_pixel_merge", "an infinite pixel", "merge_hdr",
        lambda tmp: merge_hdr(_with(float("inf")), TIMES, ICRF()),
        ValueError, r"`stack` to be finite, but it holds 1 NaN or infinite value"),
    Row("nan_radiance_physics", "NaN radiance to simulate", "ExposureStack",
        lambda tmp: ExposureStack(TIMES)(torch.full((1, 3, 4, 5), float("nan"))),
        ValueError, r"`x` to be finite, but it holds 60 NaN or infinite value"),
    Row("nan_pixel_loss", "a NaN pixel", "RadiometricLinearityLoss",
        lambda tmp: _linearity(_with(float("nan"))),
        None, "documented: the pixel fails the valid mask; the loss stays finite",
        check=_finite_close_to_clean),
    Row("nan_pixel_icrf", "a NaN pixel", "ICRF",
        lambda tmp: ICRF()(_with(float("nan")).unsqueeze(0)),
        None, "documented: NaN at that pixel, every other pixel as without it",
        check=_nan_at_that_pixel_only),
    # --- dtypes
    Row("int_tensor_fit", "uint8 tensor of codes", "fit_icrf",
        lambda tmp: fit_icrf((_stack() * 255).to(torch.uint8), TIMES, **FAST),
        TypeError, r"`stack` as a float tensor in \[0, 1\] .*got dtype torch.uint8"),
    Row("int_tensor_loss", "int64 stack", "RadiometricLinearityLoss",
        lambda tmp: _linearity((_stack() * 255).long()),
        TypeError, r"`y` to be a floating-point tensor .*got dtype torch.int64"),
    Row("int_tensor_merge", "uint8 tensor", "merge_hdr",
        lambda tmp: merge_hdr((_stack() * 255).to(torch.uint8), TIMES, ICRF()),
        TypeError, r"`stack` as a float tensor .*got dtype torch.uint8"),
    Row("bf16_fit", "bfloat16 stack", "fit_icrf",
        lambda tmp: fit_icrf(_stack().bfloat16(), TIMES, **FAST),
        None, "accepted: promoted, float32 monotone curve", check=_finite_float_curve),
    Row("bf16_loss", "bfloat16 stack", "RadiometricLinearityLoss",
        lambda tmp: _linearity(_stack().bfloat16()),
        None, "accepted: computed and returned in float32", check=_promoted_to_float32),
    Row("bf16_icrf", "bfloat16 stack", "ICRF",
        lambda tmp: ICRF()(_stack().bfloat16().unsqueeze(0)),
        None, "accepted: float32 output",
        check=lambda x: (x.dtype == torch.float32) or pytest.fail(str(x.dtype))),
    # --- channel / size mismatch between images, curve and model
    Row("channel_mismatch_icrf", "1-channel stack, 3-channel ICRF", "ICRF",
        lambda tmp: ICRF(channels=3)(_stack(channels=1).unsqueeze(0)),
        ValueError, r"`y` to have 3 channels at dimension -3"),
    Row("channel_mismatch_merge", "1-channel stack, 3-channel ICRF", "merge_hdr",
        lambda tmp: merge_hdr(_stack(channels=1), TIMES, ICRF(channels=3)),
        ValueError, r"`stack` to have 3 channel\(s\) to match the ICRF, but got 1"),
    Row("channel_mismatch_init", "2-channel initial curve, 3-channel stack", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), TIMES, init=torch.zeros(2, 256), **FAST),
        ValueError, r"`init_curve` of shape \(3, L\) or \(1, L\), but got shape \(2, 256\)"),
    Row("size_mismatch_loss", "x_net smaller than y", "RadiometricLinearityLoss",
        lambda tmp: _linearity(_stack(), x_net=_stack()[None, ..., :5, :]),
        ValueError, r"`x_net` to have the shape of `y` \(1, 3, 3, 13, 11\)"),
    Row("size_mismatch_folder", "images of different sizes", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_resized(tmp)),
        ValueError, r"different sizes \(H, W\), as their headers declare .*exposure_01.png: "
        r"\(7, 10\)"),
    # --- 16-bit images read as 8-bit
    Row("sixteen_bit_as_8_bit_fit", "16-bit codes divided by 255", "fit_icrf",
        lambda tmp: fit_icrf(_stack() * 257.0, TIMES, **FAST),
        ValueError, r"`stack` to hold values in \[0.0, 1.0\], but got values in"),
    Row("sixteen_bit_as_8_bit_loss", "16-bit codes divided by 255",
        "RadiometricLinearityLoss",
        lambda tmp: _linearity(_stack() * 257.0),
        ValueError, r"`y` to hold values in \[0.0, 1.0\]"),
    Row("sixteen_bit_folder", "16-bit PNG files", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_folder(tmp, bit_depth=16)),
        None, "accepted: read as uint16, bit_depth 16 (never truncated to 8 bits)",
        check=_read_as_16_bit),
    # --- image files
    Row("truncated_image", "a truncated PNG", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_damaged(tmp, "truncate")),
        ValueError, r"Cannot read image file .*exposure_01.png.*corrupted or truncated"),
    Row("corrupted_image", "a file that is not an image (no sidecar)", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_damaged(tmp, "garbage")),
        ValueError, r"Cannot read image file .*exposure_01.png"),
    Row("truncated_jpeg", "a truncated JPEG (no sidecar)", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_damaged(tmp, "truncate", fmt="jpg")),
        ValueError, r"Cannot read image file .*exposure_01.jpg"),
    Row("no_exif_no_sidecar", "images without EXIF and no sidecar", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_folder(tmp, exif=False)),
        ValueError, r"No exposure time for 3 image\(s\) .*Add them to a sidecar file"),
    Row("sidecar_missing_file", "a sidecar naming a missing file", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_sidecar_folder(
            tmp, "exposure_00.png,0.1\nexposure_01.png,0.2\nexposure_02.png,0.4\n"
            "ghost.png,0.8\n")),
        ValueError, r"names file\(s\) not found among the images .*\['ghost.png'\]"),
    Row("missing_folder", "a folder that does not exist", "read_exposure_folder",
        lambda tmp: read_exposure_folder(tmp / "nope"),
        FileNotFoundError, r"No such folder '.*nope'"),
    # --- curve files
    Row("curve_truncated", "a truncated curve file", "ICRF.load",
        lambda tmp: ICRF.load(_curve_file(tmp, lambda d: json.dumps(d)[:200])),
        ValueError, r"ICRF file '.*icrf.json' is not valid JSON"),
    Row("curve_binary", "a binary (non UTF-8) curve file", "ICRF.load",
        lambda tmp: ICRF.load(_curve_file(tmp, lambda d: b"\x00\xff\xfe")),
        ValueError, r"ICRF file '.*icrf.json' is not valid JSON"),
    Row("curve_tampered", "a curve edited by hand (disagrees with its parameters)",
        "ICRF.load",
        lambda tmp: ICRF.load(_curve_file(tmp, _nudge)),
        ValueError, r"`parameters` and `curve` disagree"),
    Row("curve_not_monotone", "a decreasing curve for the monotone model", "ICRF.load",
        lambda tmp: ICRF.load(_curve_file(tmp, _dip)),
        ValueError, r"'monotone' parameterization to be non-decreasing"),
    Row("curve_short_row", "a curve row with a value missing", "ICRF.load",
        lambda tmp: ICRF.load(_curve_file(tmp, lambda d: d["curve"][0].pop())),
        ValueError, r"`curve` row 0 must hold 16 values, got 15"),
    Row("curve_missing_file", "a curve file that does not exist", "ICRF.load",
        lambda tmp: ICRF.load(tmp / "nope.json"),
        FileNotFoundError, r"No such ICRF file '.*nope.json'"),
    Row("curve_save_nan", "saving a curve holding NaN", "ICRF.save",
        _save_nan_curve,
        ValueError, r"Cannot save an ICRF whose curve holds NaN or inf values"),
    # --- the range of codes a merge uses: 0 <= lower < upper <= 1, defaults included
    Row("merge_lower_above_upper", "lower 0.9 above upper 0.1", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(), lower=0.9, upper=0.1),
        ValueError, r"Expected 0 <= `lower` < `upper` <= 1, but got lower=0.9 and upper=0.1\.$"),
    Row("merge_lower_above_default", "lower 0.999 alone, above the default upper 254/255",
        "merge_hdr", lambda tmp: merge_hdr(_stack(), TIMES, ICRF(), lower=0.999),
        ValueError, r"lower=0.999 and upper=0.996078 \(upper: the default, one code step below "
        r"white for 8-bit codes\)"),
    Row("merge_lower_nan", "lower NaN", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(), lower=float("nan")),
        ValueError, r"but got lower=nan and upper=0.996078"),
    Row("merge_lower_negative", "lower -1 (was accepted)", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(), lower=-1.0, upper=0.5),
        ValueError, r"Expected 0 <= `lower` < `upper` <= 1, but got lower=-1 and upper=0.5"),
    Row("merge_upper_above_one", "upper 5 (was accepted)", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(), upper=5.0),
        ValueError, r"but got lower=0.00392157 and upper=5 \(lower: the default"),
    Row("merge_lower_string", "lower '0.1', a string (was accepted)", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(), lower="0.1"),
        TypeError, r"Expected `lower` to be a number, but got str '0.1'"),
    Row("merge_floor_above_upper", "an ICRF with a floor (cutoff 0.32) and upper 0.2",
        "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, _with_metadata(floor=[0.3] * 3), upper=0.2),
        ValueError, r"lower=0.323529 and upper=0.2 \(lower: above the floor the ICRF records, "
        r"floor_cutoff\)"),
    Row("merge_code_std_nan", "code_std NaN (was accepted)", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(), code_std=float("nan")),
        ValueError, r"Expected `code_std` to be a number in \[0, 1\] .*but got nan"),
    Row("merge_code_std_negative", "code_std -1 (was accepted)", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(), code_std=-1.0, return_std=True),
        ValueError, r"Expected `code_std` to be a number in \[0, 1\]"),
    Row("merge_code_std_huge", "code_std 1e300 (OverflowError)", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(), code_std=1e300, return_std=True),
        ValueError, r"Expected `code_std` to be a number in \[0, 1\]"),
    Row("merge_code_std_string", "code_std 'x' (raw float() error)", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(), code_std="x"),
        TypeError, r"Expected `code_std` to be a number, but got str 'x'"),
    Row("cli_hdr_lower_above_default", "hdr --lower 0.999 (refused only after the fit)",
        "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr"),
                                              "--lower", "0.999"]),
        None, "exit 2 before the fit, one line naming --lower and the default it crosses",
        check=_refused(r"--lower: Expected 0 <= `lower` < `upper` <= 1, but got lower=0.999 "
                       r"and upper=0.996078 \(upper: the default")),
    Row("cli_merge_upper_below_default", "merge --upper 0.001", "deepinv-icrf merge",
        lambda tmp: _cli_in(tmp, lambda t, f: ["merge", str(f), "--icrf", str(t / "icrf.json"),
                                              "--out", str(t / "x.exr"), "--upper", "0.001"],
                            prepare=_metadata_file),
        None, "exit 2 before the merge, one line naming --upper",
        check=_refused(r"--upper: .*lower=0.00392157 and upper=0.001 \(lower: the default")),
    Row("cli_hdr_lower_above_upper", "hdr --lower 0.9 --upper 0.1", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr"),
                                              "--lower", "0.9", "--upper", "0.1"]),
        None, "exit 2 before reading, one line",
        check=_refused(r"--lower 0.9 must be below --upper 0.1")),
    Row("cli_hdr_lower_nan", "hdr --lower nan", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr"),
                                              "--lower", "nan"]),
        None, "exit 2, one line (usage)",
        check=_refused(r"argument --lower: expected a number in \[0, 1\], got 'nan'")),
    Row("cli_hdr_upper_above_one", "hdr --upper 2", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr"),
                                              "--upper", "2"]),
        None, "exit 2, one line (usage)",
        check=_refused(r"argument --upper: expected a number in \[0, 1\], got '2'")),
    # --- what a curve file records for merge (floor, code noise): one number per channel
    Row("metadata_floor_negative", "a curve file with metadata floor [-0.1, ...]", "ICRF.load",
        lambda tmp: ICRF.load(_metadata_file(tmp, floor=[-0.1] * 3)),
        ValueError, r"ICRF file '.*icrf\.json': Expected metadata `floor` to hold numbers in "
        r"\[0, 1\], one per channel, but got '-0.1'"),
    Row("metadata_floor_string", "metadata floor '0.3', a string (used as 0.3)", "ICRF.load",
        lambda tmp: ICRF.load(_metadata_file(tmp, floor="0.3")),
        ValueError, r"metadata `floor` to hold numbers in \[0, 1\], one per channel, but got "
        r"'0.3'"),
    Row("metadata_floor_nan_string", "metadata floor 'NaN'", "ICRF.load",
        lambda tmp: ICRF.load(_metadata_file(tmp, floor="NaN")),
        ValueError, r"metadata `floor` .* but got 'NaN'"),
    Row("metadata_floor_huge_list", "metadata floor of 3 million values", "ICRF.load",
        lambda tmp: ICRF.load(_metadata_file(tmp, floor=[0.05] * 3_000_000)),
        ValueError, r"metadata `floor` to hold 1 or 3 value\(s\) \(one per channel\), but got "
        r"3000000"),
    Row("metadata_floor_nested", "metadata floor [[0.05, 0.05, 0.05], ...]", "ICRF.load",
        lambda tmp: ICRF.load(_metadata_file(tmp, floor=[[0.05] * 3] * 3)),
        ValueError, r"metadata `floor` .* but got '\[0.05, 0.05, 0.05\]'"),
    Row("metadata_code_std_huge", "metadata code_std 1e300 (OverflowError in merge)",
        "ICRF.load", lambda tmp: ICRF.load(_metadata_file(tmp, code_std=[1e300] * 3)),
        ValueError, r"metadata `code_std` to hold numbers in \[0, 1\], one per channel, but "
        r"got '1e\+300'"),
    Row("metadata_floor_valid", "metadata floor [0.9] * 3 (one number per channel)",
        "ICRF.load", lambda tmp: ICRF.load(_metadata_file(tmp, floor=[0.9] * 3)),
        None, "accepted: merge's lower cutoff above it is capped at 0.5 (floor_cutoff)",
        check=lambda icrf: _floor_capped(icrf)),
    Row("metadata_floor_in_memory", "icrf.metadata['floor'] = '0.3' set in Python",
        "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, _with_metadata(floor="0.3")),
        ValueError, r"Expected the ICRF's metadata `floor` to hold numbers in \[0, 1\]"),
    Row("cli_merge_metadata_code_std_huge", "merge --deghost with a curve file recording "
        "code_std 1e300 (OverflowError traceback)", "deepinv-icrf merge",
        lambda tmp: _cli_in(tmp, lambda t, f: ["merge", str(f), "--icrf", str(t / "icrf.json"),
                                              "--out", str(t / "x.exr"), "--deghost"],
                            prepare=lambda t: _metadata_file(t, code_std=[1e300] * 3)),
        None, "exit 2, one line naming the file and the entry, nothing written",
        check=_refused(r"icrf\.json': Expected metadata `code_std` to hold numbers in \[0, 1\]")),
    # --- the frames against their listed times: order, identical frames, no exposure change
    Row("times_reversed_fit", "times listed in the reverse order (a flat curve, no warning)",
        "fit_icrf", lambda tmp: fit_icrf(_stack(), [4.0, 2.0, 1.0], **FAST),
        ValueError, r"Expected `exposure_times` to grow with the brightness of the exposures "
        r"of `stack`, but exposure 1 \(listed 2 s\) is darker than exposure 2 \(listed 1 s\) "
        r"at 100% of the \d+ pixels where they differ; exposure 0 \(listed 4 s\) is darker "
        r"than exposure 1 \(listed 2 s\) .*: are the times in the wrong order, or listed for "
        r"other files\?"),
    Row("times_swapped_merge", "two times swapped (a wrong radiance, no warning)",
        "merge_hdr", lambda tmp: merge_hdr(_stack(), [1.0, 4.0, 2.0], ICRF()),
        ValueError, r"of `stack`, but exposure 1 \(listed 4 s\) is darker than exposure 2 "
        r"\(listed 2 s\) at 100% of the 328 pixels where they differ: are the times"),
    Row("times_shutter_limit", "the last frame as bright as the one before, listed a stop "
        "longer (a camera at its shutter limit)", "fit_icrf", lambda tmp: _shutter_limit(),
        None, "documented: fitted; a UserWarning names the step and the frame, the times are "
        "refined (fit_report.time_check)", check=_shutter_limit_named),
    Row("identical_frames_fit", "three copies of one frame, times doubling", "fit_icrf",
        lambda tmp: fit_icrf(_stack()[1:2].expand(3, -1, -1, -1), TIMES, **FAST),
        ValueError, r"Expected the exposures of `stack` to differ, but all 3 are the same image"),
    Row("identical_frames_no_times", "three copies, refine_exposures=True without times "
        "('Expected `init` to be finite')", "fit_icrf",
        lambda tmp: fit_icrf(_stack()[1:2].expand(3, -1, -1, -1), None,
                             refine_exposures=True, **FAST),
        ValueError, r"all 3 are the same image"),
    Row("identical_two_frames", "two copies of one frame, times 1 and 2 s", "fit_icrf",
        lambda tmp: fit_icrf(_stack()[1:2].expand(2, -1, -1, -1), TIMES[:2], **FAST),
        ValueError, r"all 2 are the same image"),
    Row("equal_frames_fit", "three equally bright noisy frames listed one stop apart "
        "(refined into nonsense; two frames: a LinAlgError traceback)", "fit_icrf",
        lambda tmp: fit_icrf(_equal_frames(3), TIMES, **FAST),
        ValueError, r"The exposures of `stack` barely differ: the images show the longest "
        r"x1\.0\d the shortest \(the listed times say x4\.00\), less than the time check's "
        r"tolerance x1\.41"),
    Row("equal_two_frames_fit", "two equally bright noisy frames listed 1 and 2 s",
        "fit_icrf", lambda tmp: fit_icrf(_equal_frames(2), TIMES[:2], **FAST),
        ValueError, r"barely differ: .*\(the listed times say x2\.00\)"),
    Row("real_frames_barely_differ", "three real frames that barely differ (x1.11, x1.0) "
        "listed 1/4, 1/2 and 1 s (a common power of the time check's reading once made it "
        "x2 and fitted them, the curve jumping x1.18)", "fit_icrf",
        lambda tmp: fit_icrf(*_real_frames("living_room1", slice(2, 5)), progress=False),
        ValueError, r"The exposures of `stack` barely differ: the images show the longest "
        r"x1\.2\d the shortest \(the listed times say x4\.00\)"),
    Row("times_too_narrow", "times 1, 1+1e-12, 1+2e-12 s for frames a stop apart (the "
        "refined curve collapsed to 1)", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), [1.0, 1.0 + 1e-12, 1.0 + 2e-12], **FAST),
        ValueError, r"Expected the `exposure_times` of `stack` to span more than x1\.41 \(the "
        r"time check's tolerance\), but they span x1\.00 \(1 to 1 s\)"),
    Row("cli_times_reversed", "hdr on a folder whose sidecar lists the times reversed",
        "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr")],
                            make=lambda t: _sidecar_times(t, [0.5, 0.25, 0.125])),
        None, "exit 2 before the fit, one line naming the files, nothing written",
        check=_refused(r"photos' \(times from sidecar\), but exposure_01\.png \(listed 0\.25 "
                       r"s\) is darker than exposure_02\.png \(listed 0\.125 s\)")),
    Row("cli_identical_frames", "hdr on three copies of one photo listed a stop apart "
        "('Expected `init` to be finite')", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr")],
                            make=_copies_folder),
        None, "exit 2, one line, nothing written",
        check=_refused(r"Expected the exposures of `stack` to differ, but all 3 are the same "
                       r"image")),
    Row("cli_two_frames", "hdr on a bracket of two frames", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr"),
                                              "--no-progress"],
                            make=lambda t: _folder(t, name="photos", n_exposures=2)),
        None, "accepted: the radiance map, its curve, plot and summary",
        check=_written("x.exr", "x.icrf.json", "x.icrf_fit.png", "x.summary.json")),
    Row("cli_hdr_ctrl_c", "Ctrl-C during hdr's merge, the curve and plot already staged",
        "deepinv-icrf hdr", _cli_hdr_interrupted,
        None, "exit 130, 'deepinv-icrf: interrupted', nothing written",
        check=_nothing_after_interrupt),
    Row("cli_hdr_existing_out", "hdr into an --out whose x.exr and x.icrf.json an earlier "
        "run left", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr"),
                                              "--no-progress"], prepare=_old_outputs),
        None, "accepted: the four files replaced as one set, nothing else left",
        check=_replaced_as_a_set),
    Row("cli_hdr_into_input_folder", "hdr photos --out photos/x.exr (its plot x.icrf_fit.png "
        "became a 'photo' of the next run)", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(f / "x.exr")]),
        None, "exit 2 before the fit, one line naming the output, nothing written",
        check=_refused(r"--out's plot '.*photos/x\.icrf_fit\.png' is in the folder of this "
                       r"command's input photos and would be read as one of them on the next "
                       r"run")),
    Row("cli_merge_preview_into_input_folder", "merge photos --preview photos/p.png",
        "deepinv-icrf merge",
        lambda tmp: _cli_in(tmp, lambda t, f: ["merge", str(f), "--icrf", str(t / "icrf.json"),
                                              "--out", str(t / "x.exr"), "--preview",
                                              str(f / "p.png")],
                            prepare=_metadata_file),
        None, "exit 2 before the merge, one line, nothing written",
        check=_refused(r"--preview '.*photos/p\.png' is in the folder of this command's input "
                       r"photos")),
    Row("cli_merge_exr_into_input_folder", "merge photos --out photos/r.exr", "deepinv-icrf merge",
        lambda tmp: _cli_in(tmp, lambda t, f: ["merge", str(f), "--icrf", str(t / "icrf.json"),
                                              "--out", str(f / "r.exr")],
                            prepare=_metadata_file),
        None, "accepted: an OpenEXR file is never read as a photo",
        check=_written("photos/r.exr")),
    Row("cli_hdr_summary_onto_sidecar", "hdr --sidecar x.summary.json --out x.exr (the "
        "summary would overwrite the sidecar)", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--sidecar",
                                              str(t / "x.summary.json"), "--out",
                                              str(t / "x.exr")],
                            make=lambda t: _folder(t, name="photos", exif=False),
                            prepare=_summary_named_sidecar),
        None, "exit 2, one line, the sidecar unchanged",
        check=_refused(r"--out's summary '.*x\.summary\.json' is an input of this command")),
    Row("cli_merge_icrf_folder", "merge --icrf a folder", "deepinv-icrf merge",
        lambda tmp: _cli_in(tmp, lambda t, f: ["merge", str(f), "--icrf", str(t / "c.json"),
                                              "--out", str(t / "x.exr")],
                            prepare=lambda t: (t / "c.json").mkdir()),
        None, "exit 2, one line",
        check=_refused(r"--icrf '.*c\.json' is not a file \(a folder\?\)")),
    # --- the hdr command on folders that other rows check through the library
    Row("cli_hdr_out_onto_input", "hdr photos --out photos/exposure_00.tif", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out",
                                              str(f / "exposure_00.tif")],
                            make=lambda t: _folder(t, name="photos", fmt="tif")),
        None, "exit 2 before the fit, the photo unchanged",
        check=_refused(r"--out '.*exposure_00\.tif' is an input of this command")),
    Row("cli_sidecar_identical_times", "hdr with a sidecar giving every photo the same time",
        "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr")],
                            make=lambda t: _sidecar_times(t, [0.1, 0.1, 0.1])),
        None, "exit 2, one line naming the files, nothing written",
        check=_refused(r"Duplicate exposure times in '.*photos' for files "
                       r"\[\('exposure_00\.png', 'exposure_01\.png'\)")),
    Row("cli_hdr_different_sizes", "hdr on photos of different sizes", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr")],
                            make=_resized),
        None, "exit 2, one line listing the sizes, nothing written",
        check=_refused(r"different sizes \(H, W\), as their headers declare "
                       r".*exposure_01\.png: \(7, 10\)")),
    Row("cli_hdr_large_odd_one_out", "hdr on small photos and one declaring 7000x7000",
        "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr")],
                            make=_large_odd_folder),
        None, "exit 2, one line listing the declared sizes, nothing decoded or written",
        check=_refused(r"different sizes \(H, W\), as their headers declare "
                       r".*exposure_01\.png: \(7000, 7000\)")),
    Row("cli_hdr_grey_rgb_mix", "hdr on RGB photos and one greyscale photo",
        "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr")],
                            make=lambda t: _mixed_folder(t, "grey")),
        None, "exit 2, one line listing the channels, nothing written",
        check=_refused(r"have different sizes \(H, W, C\) .*exposure_01\.png: \(8, 10, 1\)")),
    Row("cli_hdr_8_16_bit_mix", "hdr on 8-bit photos and one 16-bit photo",
        "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr")],
                            make=lambda t: _mixed_folder(t, "16-bit")),
        None, "exit 2, one line listing the bit depths, nothing written",
        check=_refused(r"have mixed bit depths \(exposure_00\.png: uint8, exposure_01\.png: "
                       r"uint16")),
    Row("cli_hdr_16_bit", "hdr on a 16-bit PNG bracket", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr"),
                                              "--no-progress"],
                            make=lambda t: _folder(t, name="photos", bit_depth=16)),
        None, "accepted: fitted and merged from the 16-bit codes",
        check=_written("x.exr", "x.icrf.json", "x.icrf_fit.png", "x.summary.json")),
    Row("inf_pixel_numpy_fit", "a float64 numpy stack holding inf", "fit_icrf",
        lambda tmp: fit_icrf(_inf_array(), TIMES.numpy(), **FAST),
        ValueError, r"`stack` to be finite, but it holds 1 NaN or infinite value"),
    Row("nan_pixel_linearize", "a NaN pixel", "linearize",
        lambda tmp: _linearize(_with(float("nan")), ICRF()),
        ValueError, r"`images` to be finite, but it holds 1 NaN or infinite value"),
    Row("inf_radiance_tonemap", "an infinite radiance", "tonemap",
        lambda tmp: _tonemap(torch.full((3, 4, 4), float("inf"))),
        ValueError, r"`radiance` to be finite, but it holds 48 NaN or infinite value"),
    Row("pattern_parent_folder", "pattern '../*.png' (read photos outside the folder)",
        "read_exposure_folder",
        lambda tmp: read_exposure_folder(_folder(tmp), pattern="../*.png"),
        ValueError, r"Expected `pattern` to be a glob pattern of file names in the folder "
        r"\(e\.g\. '\*\.jpg'\), without a path, '\.\.' or '\*\*', but got '\.\./\*\.png'"),
    Row("pattern_recursive", "pattern '**/*.png' (read subfolders, outputs included)",
        "read_exposure_folder",
        lambda tmp: read_exposure_folder(_folder(tmp), pattern="**/*.png"),
        ValueError, r"without a path, '\.\.' or '\*\*', but got '\*\*/\*\.png'"),
    Row("cli_pattern_absolute", "hdr --pattern '/tmp/*' (NotImplementedError traceback)",
        "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--pattern", "/tmp/*", "--out",
                                              str(t / "x.exr")]),
        None, "exit 2, one line, nothing written",
        check=_refused(r"Expected `pattern` to be a glob pattern of file names in the folder")),
    # --- seeds and step counts
    Row("seed_negative_fit", "seed -1", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), TIMES, seed=-1, **FAST),
        ValueError, r"Expected `seed` to be an int in \[0, 2\*\*63 - 1\], but got -1\."),
    Row("seed_huge_fit", "seed 2**70 (torch: 'Overflow when unpacking long long')", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), TIMES, seed=2**70, **FAST),
        ValueError, r"Expected `seed` to be an int in \[0, 2\*\*63 - 1\], but got "
        r"1180591620717411303424\."),
    Row("seed_float_fit", "seed 1.5 (RuntimeError traceback)", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), TIMES, seed=1.5, **FAST),
        TypeError, r"Expected `seed` to be an int, but got 1\.5\."),
    Row("seed_bool_fit", "seed True (RuntimeError traceback)", "fit_icrf",
        lambda tmp: fit_icrf(_stack(), TIMES, seed=True, **FAST),
        TypeError, r"Expected `seed` to be an int, but got True\."),
    Row("cli_negative_seed", "hdr --seed -1", "deepinv-icrf hdr",
        lambda tmp: _cli_in(tmp, lambda t, f: ["hdr", str(f), "--out", str(t / "x.exr"),
                                              "--seed", "-1"]),
        None, "exit 2 before the fit, one line",
        check=_refused(r"Expected `seed` to be an int in \[0, 2\*\*63 - 1\], but got -1\.")),
    Row("cli_huge_steps", "fit --steps 1000000000000", "deepinv-icrf fit",
        lambda tmp: _cli_in(tmp, lambda t, f: ["fit", str(f), "--out", str(t / "o"),
                                              "--steps", "1000000000000", "--no-progress"]),
        None, "accepted: the code fit stops on convergence (a few iterations)",
        check=_converged_early),
    # --- confidence bands: edges must not cross
    Row("band_inverted_icrf", "a band with lower > upper set on an ICRF", "ICRF.band",
        lambda tmp: _set_band(_edges(swap=True)),
        ValueError, r"Expected `band` to have its lower edge <= its upper edge everywhere, but "
        r"lower > upper at 48 of 48 values \(by up to 0.02\): are the edges swapped\?"),
    Row("band_wrong_shape_icrf", "a band of shape (3, 16) set on an ICRF", "ICRF.band",
        lambda tmp: _set_band(torch.zeros(3, 16)),
        ValueError, r"Expected `band` of shape \(2, 3, 16\) \(lower and upper edges of the "
        r"curve\), but got shape \(3, 16\)"),
    Row("band_not_tensor_icrf", "a band given as a list", "ICRF.band",
        lambda tmp: _set_band([[0.0], [1.0]]),
        TypeError, r"Expected `band` to be a float tensor \(2, 3, 16\)"),
    Row("band_valid_icrf", "a band with lower <= upper", "ICRF.band",
        lambda tmp: _set_band(_edges()), None, "accepted: stored as given",
        check=lambda icrf: torch.equal(icrf.band, _edges()) or _fail(icrf.band)),
    Row("band_inverted_file", "a curve file whose band has lower > upper (was accepted)",
        "ICRF.load", lambda tmp: ICRF.load(_swapped_band_file(tmp)),
        ValueError, r"ICRF file '.*icrf\.json': Expected `band` to have its lower edge <= its "
        r"upper edge everywhere"),
    Row("band_inverted_coverage", "band_coverage with lower > upper", "band_coverage",
        lambda tmp: _band_coverage(*_edges(1, 256, swap=True), _edges(1, 256)[0]),
        ValueError, r"Expected the band \(`lower`, `upper`\) to have its lower edge <= its upper "
        r"edge everywhere"),
    Row("band_inverted_plot", "plot_icrf with a band whose edges are swapped", "plot_icrf",
        lambda tmp: _plot_icrf(torch.linspace(0, 1, 16).expand(3, 16), band=_edges(swap=True)),
        ValueError, r"Expected `band` to have its lower edge <= its upper edge"),
    Row("band_edges_merge", "merge_hdr(band=icrf.band): edges (2, C, L), not stds",
        "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(n_points=16), band=_edges()),
        ValueError, r"Expected `band` to be a tensor \(C, L\) of per-code ICRF stds, but got "
        r"Tensor of shape \(2, 3, 16\)"),
    Row("band_negative_merge", "merge_hdr with a negative per-code std", "merge_hdr",
        lambda tmp: merge_hdr(_stack(), TIMES, ICRF(n_points=16), band=-torch.ones(3, 16)),
        ValueError, r"Expected `band` to hold values in \[0.0, inf\]"),
    # --- PROPEL
    Row("propel_odd_width", "official layout with an odd last dimension", "PROPELLoss",
        lambda tmp: PROPELLoss()(x_net=torch.rand(2, 3, 5), x=torch.rand(2, 2)),
        ValueError, r"official layout \(B, K, 2D\) to have an even last dimension"),
    Row("propel_target_shape", "target of the wrong dimension", "PROPELLoss",
        lambda tmp: PROPELLoss()(x_net=torch.rand(2, 3, 4), x=torch.rand(2, 3)),
        ValueError, r"`target` to have shape \(2, 2\)"),
    Row("propel_batch_mismatch", "target with another batch size", "PROPELLoss",
        lambda tmp: PROPELLoss()(x_net=torch.rand(2, 3, 4), x=torch.rand(3, 2)),
        ValueError, r"`target` to have shape \(2, 2\) .*but got shape \(3, 2\)"),
    Row("propel_sigma_zero", "target std 0", "PROPELLoss",
        lambda tmp: PROPELLoss(sigma=0.0),
        ValueError, r"`sigma` to be > 0 everywhere, but got minimum 0"),
    Row("propel_sigma_negative", "negative target std", "PROPELLoss",
        lambda tmp: PROPELLoss(sigma=torch.tensor([0.1, -1.0])),
        ValueError, r"`sigma` to be > 0 everywhere, but got minimum -1"),
    Row("propel_std_zero", "predicted std 0 (std_activation=None)", "PROPELLoss",
        lambda tmp: PROPELLoss(std_activation=None)(
            x_net=_mixture(torch.zeros(2, 3, 2)), x=_TARGET),
        None, "documented: magnitudes are floored at `min_std` (1e-6): large finite loss",
        check=_floored_std),
    Row("propel_std_negative", "negative predicted std (std_activation=None)", "PROPELLoss",
        lambda tmp: PROPELLoss(std_activation=None)(
            x_net=_mixture(torch.full((2, 3, 2), -0.2)), x=_TARGET),
        None, "documented: stds are used squared (official code), the sign is ignored",
        check=_sign_ignored),
    # --- splitting
    Row("split_nothing_to_predict", "splitting mask keeping every pixel (split_ratio=1)",
        "EquivariantSplittingLoss",
        lambda tmp: _splitting(1.0, 0.5),
        ValueError, r"`split_ratio` in \(0, 1\), but got 1.0: the split leaves nothing to "
        r"predict"),
    Row("split_empty_physics_mask", "physics mask with no measured pixel",
        "EquivariantSplittingLoss",
        lambda tmp: _splitting(0.9, 0.0),
        ValueError, r"The splitting mask leaves nothing to predict"),
    # --- hostile files: declared sizes checked before anything is allocated
    Row("hdr_empty_billion_rows", "50-byte .hdr declaring 10^9 rows of width 0 (hung 15 min)",
        "read_image",
        lambda tmp: read_image(_write(tmp, "a.hdr",
                                      b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 1000000000 +X 0\n")),
        ValueError, r"a\.hdr': it declares an empty image \(0x1000000000 pixels\)"),
    Row("hdr_huge_declared", ".hdr declaring 100000x100000 pixels", "read_image",
        lambda tmp: read_image(_write(tmp, "a.hdr",
                                      b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 100000 +X 100000\n")),
        ValueError, r"declares 100000x100000 pixels \(10000000000\), more than the limit"),
    Row("png_bomb", "PNG declaring 100000x100000 pixels (Pillow: DecompressionBombError)",
        "read_image", lambda tmp: read_image(_png_bomb(tmp)),
        ValueError, r"bomb\.png': it declares 100000x100000 pixels"),
    Row("png16_bomb", "16-bit PNG declaring 70000x70000 (OpenCV: cv2.error)", "read_image",
        lambda tmp: read_image(_png_bomb(tmp, 16, 70_000)),
        ValueError, r"bomb\.png': it declares 70000x70000 pixels"),
    Row("jpeg_bomb", "JPEG declaring 65000x65000 pixels", "read_image",
        lambda tmp: read_image(_jpeg_bomb(tmp)),
        ValueError, r"bomb\.jpg': it declares 65000x65000 pixels"),
    Row("tiff_bomb", "TIFF declaring 100000x100000 pixels (MemoryError)", "read_image",
        lambda tmp: read_image(_tiff_bomb(tmp)),
        ValueError, r"bomb\.tif': it declares 100000x100000 pixels"),
    Row("tiff_cut_header", "TIFF cut after 5 bytes (struct.error inside tifffile)",
        "read_image", lambda tmp: read_image(_tiff_cut(tmp)),
        ValueError, r"Cannot read .*a\.tif': the file is unreadable"),
    Row("tiff_zero_tile", "tiled TIFF whose TileWidth tag is 0 (ZeroDivisionError inside "
        "tifffile)", "read_image", lambda tmp: read_image(_tiff_zero_tile(tmp)),
        ValueError, r"Cannot read .*a\.tif': the file is unreadable"),
    Row("size_tiff_cut_header", "image_size of a TIFF cut after 5 bytes (what "
        "read_exposure_folder compares before decoding; struct.error)", "image_size",
        lambda tmp: image_size(_tiff_cut(tmp)),
        ValueError, r"Cannot read the size of .*a\.tif'"),
    Row("npy_broken_header", ".npy whose header dict stops mid-tuple (tokenize.TokenError)",
        "read_image", lambda tmp: read_image(_npy_broken_header(tmp)),
        ValueError, r"Cannot read .*a\.npy"),
    Row("npy_bomb", ".npy declaring 100000x100000x3 floats (MemoryError)", "read_image",
        lambda tmp: read_image(_npy_bomb(tmp)),
        ValueError, r"bomb\.npy': it declares 100000x100000 pixels"),
    Row("exr_bomb", "ZIP .exr declaring 100000x100000 pixels (inflated to 4.9 GB)",
        "read_image", lambda tmp: read_image(_exr_bomb(tmp)),
        ValueError, r"bomb\.exr': it declares 100000x100000 pixels"),
    Row("pixel_limit_bad_env", "DEEPINV_ICRF_MAX_PIXELS set to a non-number", "read_image",
        lambda tmp: _with_env("DEEPINV_ICRF_MAX_PIXELS", "1e9",
                              lambda: read_image(_exr_file(tmp))),
        ValueError, r"DEEPINV_ICRF_MAX_PIXELS to be an int >= 1, but got '1e9'"),
    Row("exr_truncated", "a truncated OpenEXR file", "read_image",
        lambda tmp: read_image(_exr_file(tmp, cut=True)),
        ValueError, r"Cannot read image file .*zip\.exr': the OpenEXR .*(corrupted or truncated)"),
    Row("exr_piz", "an OpenEXR file with PIZ compression (common from other tools)",
        "read_image", lambda tmp: read_image(_exr_file(tmp, "piz")),
        None, "accepted: read through the official OpenEXR bindings (every compression)",
        check=_piz_read),
    Row("image_fifo", "a named pipe given as an image (a read would block)", "read_image",
        lambda tmp: read_image(_fifo(tmp, "a.png")),
        ValueError, r"Cannot read image file .*a\.png': it is not a regular file"),
    Row("multipage_tiff_folder", "a 2-page TIFF among the exposures", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_multi_frame_folder(tmp, "tif")),
        ValueError, r"exposure_01\.tif': it holds 2 pages; choose one with `frame`"),
    Row("animated_png_folder", "an animated PNG among the exposures", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_multi_frame_folder(tmp, "png")),
        ValueError, r"exposure_01\.png': it holds 2 frames \(an animation\); choose one with `frame`"),
    # --- exposure times parsed with bounded work
    Row("sidecar_billion_digit_exponent", "sidecar time 1e999999999 (Fraction: hung)",
        "read_exposure_folder",
        lambda tmp: read_exposure_folder(_timed_sidecar(tmp, "1e999999999")),
        ValueError, r"line 1: exposure time inf is not finite \(it overflows a float\)"),
    Row("sidecar_utf16_no_bom", "a sidecar in UTF-16 without a byte-order mark (it read "
        "as UTF-8: a NUL beside every digit of a time, 'not a number')", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_utf16_sidecar(tmp)),
        ValueError, r"exposures\.csv': it holds NUL characters, which no list of times holds "
        r"\(UTF-16 text without a byte-order mark\?\); save it as UTF-8"),
    Row("sidecar_overflow", "sidecar time 1e309 (OverflowError)", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_timed_sidecar(tmp, "1e309")),
        ValueError, r"exposure time inf is not finite"),
    Row("sidecar_401_digits", "sidecar time of 401 digits (OverflowError)",
        "read_exposure_folder",
        lambda tmp: read_exposure_folder(_timed_sidecar(tmp, "9" * 401)),
        ValueError, r"is 401 characters long, more than 40"),
    Row("sidecar_underflow", "sidecar time 1e-320 (IndexError deep in torch)",
        "read_exposure_folder",
        lambda tmp: read_exposure_folder(_timed_sidecar(tmp, "1e-320")),
        ValueError, r"exposure time 9\.99989e-321 s is outside the accepted range \[1e-09, 1e\+09\]"),
    Row("sidecar_rounds_to_zero", "sidecar time 1e-400", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_timed_sidecar(tmp, "1e-400")),
        ValueError, r"but got '1e-400' \(it rounds to zero\)"),
    Row("sidecar_divide_by_zero", "sidecar time 1/0", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_timed_sidecar(tmp, "1/0")),
        ValueError, r"exposure time '1/0' divides by zero"),
    Row("sidecar_json_duplicate", "a JSON sidecar naming a file twice (kept the last)",
        "read_exposure_list",
        lambda tmp: read_exposure_list(_list_file(tmp, "s.json", '{"a.png": 1, "a.png": 2}')),
        ValueError, r"s\.json' is not accepted JSON: the key 'a\.png' appears twice"),
    Row("sidecar_json_deep", "a JSON sidecar nested 100000 deep (RecursionError)",
        "read_exposure_list",
        lambda tmp: read_exposure_list(_list_file(tmp, "s.json", "[" * 100000 + "]" * 100000)),
        ValueError, r"nested more than 32 levels deep"),
    Row("sidecar_ambiguous_list", "a headerless list 'name value': time or 1/time?",
        "read_exposure_list",
        lambda tmp: read_exposure_list(_list_file(tmp, "times.txt", "a.png 2\nb.png 4\n")),
        ValueError, r"the second may hold the exposure times or their inverses"),
    Row("sidecar_columns_disagree", "a list whose time and 1/time columns disagree",
        "read_exposure_list",
        lambda tmp: read_exposure_list(_list_file(
            tmp, "l.txt", "# Filename exposure 1/shutter_speed\na.png 32 32\n")),
        ValueError, r"line 2: the time '32' and the inverse time '32' disagree"),
    Row("sidecar_opencv_list", "OpenCV's list.txt (name 1/t)", "read_exposure_list",
        lambda tmp: read_exposure_list(_list_file(tmp, "list.txt", "a.png 4\nb.png 1/0.5\n")),
        None, "accepted: the second column is the inverse time, as in OpenCV's tutorial",
        check=lambda table: table == {"a.png": 0.25, "b.png": 0.5} or _fail(table)),
    Row("sidecar_fifo", "a named pipe given as the sidecar (a read would block)",
        "read_exposure_folder",
        lambda tmp: read_exposure_folder(_folder(tmp, exif=False),
                                         sidecar=_fifo(tmp, "s.csv")),
        ValueError, r"sidecar '.*s\.csv' is not a regular file"),
    # --- curve files
    Row("curve_unknown_dtype", "a curve file naming dtype float8 (NotImplementedError)",
        "ICRF.load",
        lambda tmp: ICRF.load(_curve_raw(tmp, lambda t: t.replace('"float32"', '"float8_e4m3fn"'))),
        ValueError, r"`dtype` must be one of \('float32', 'float64', 'float16', 'bfloat16'\)"),
    Row("curve_deep_json", "a curve file nested 100000 deep (RecursionError)", "ICRF.load",
        lambda tmp: ICRF.load(_curve_raw(tmp, lambda t: "[" * 100000 + "]" * 100000)),
        ValueError, r"ICRF file '.*icrf\.json' is not accepted JSON: nested more than 32"),
    Row("curve_duplicate_key", "a curve file giving a key twice", "ICRF.load",
        lambda tmp: ICRF.load(_curve_raw(tmp, lambda t: t[:-1] + ', "n_points": 4}')),
        ValueError, r"the key 'n_points' appears twice"),
    Row("curve_huge_number", "a curve file with a 401-digit integer", "ICRF.load",
        lambda tmp: ICRF.load(_curve_raw(tmp, lambda t: t.replace('"version": 1', '"version": ' + "9" * 401))),
        ValueError, r"a number of 401 characters"),
    Row("opencv_csv_short", "an OpenCV response CSV with 255 rows", "ICRF.from_opencv_csv",
        lambda tmp: ICRF.from_opencv_csv(_list_file(tmp, "r.csv", "1;2;3;\n" * 255)),
        ValueError, r"expected 256 rows \(one per 8-bit code\), but got 255"),
    # --- silent wrong results, now right
    Row("crops_across_workers", "random crops with 2 DataLoader workers, 2 epochs",
        "ExposureStackDataset", _crops_across_workers,
        None, "documented: crops differ per worker and per epoch, reproducible by seed",
        check=_crops_differ),
    Row("validate_png16", "validate a folder of 16-bit PNGs (was read as 8-bit)",
        "validate_folder", _validate_png16,
        None, "accepted: read through the package's reader, 16-bit codes kept",
        check=_sixteen_bit_levels),
    # --- outputs never lost or half-written
    Row("cli_linearize_onto_inputs", "linearize photos --out photos (replaced the photos)",
        "deepinv-icrf linearize",
        lambda tmp: _cli_out(tmp, "linearize", lambda t, f: ["--out", str(f)]),
        None, "exit 2, 'is the folder of the input', the photos unchanged",
        check=_cli_refused(r"--out '.*photos' is the folder of the input")),
    Row("cli_linearize_last_photo_truncated", "linearize a folder whose last photo is "
        "truncated, the others already written as 16-bit TIFFs", "deepinv-icrf linearize",
        lambda tmp: _cli_out(tmp, "linearize", lambda t, f: _truncate(
            f / "exposure_02.png") + ["--out", str(t / "out")]),
        None, "exit 2 naming the photo, nothing written",
        check=_cli_error(r"Cannot read image file '.*exposure_02\.png'")),
    Row("cli_merge_onto_input", "merge photos --out photos/exposure_00.tif (overwrote it)",
        "deepinv-icrf merge",
        lambda tmp: _cli_out(
            tmp, "merge", lambda t, f: ["--out", str(f / "exposure_00.tif")], fmt="tif"
        ),
        None, "exit 2, 'is an input of this command', the photo unchanged",
        check=_cli_refused(r"--out '.*exposure_00\.tif' is an input of this command")),
    Row("cli_merge_out_is_std", "merge --out r.exr --std r.exr (kept only the std map)",
        "deepinv-icrf merge",
        lambda tmp: _cli_out(
            tmp, "merge", lambda t, f: ["--out", str(t / "r.exr"), "--std", str(t / "r.exr")]
        ),
        None, "exit 2, one line naming both flags, nothing written",
        check=_cli_refused(r"--std '.*r\.exr' is also the output of --out")),
    Row("cli_out_symlink_to_input", "merge --out link.png where link.png -> an input",
        "deepinv-icrf merge",
        lambda tmp: _cli_out(tmp, "merge", lambda t, f: ["--out", str(t / "r.exr"), "--preview",
                                                         str(_link(t / "link.png", f / "exposure_00.png"))]),
        None, "exit 2, 'is an input of this command', the photo unchanged",
        check=_cli_refused(r"--preview '.*link\.png' is an input of this command")),
    Row("cli_preview_missing_folder", "merge --preview into a folder that does not exist",
        "deepinv-icrf merge",
        lambda tmp: _cli_out(tmp, "merge", lambda t, f: ["--out", str(t / "r.exr"), "--preview",
                                                         str(t / "nope" / "p.png")]),
        None, "exit 2 before the photos are read, nothing written",
        check=_cli_refused(r"--preview '.*p\.png': folder '.*nope' does not exist")),
    Row("cli_std_missing_folder_broken_photo",
        "merge --std into a missing folder, a photo of the folder truncated",
        "deepinv-icrf merge",
        lambda tmp: _cli_out(tmp, "merge", lambda t, f: _truncate(f / "exposure_01.png") + [
            "--out", str(t / "r.exr"), "--std", str(t / "nope" / "s.exr")]),
        None, "exit 2 naming --std, not the photo: refused before any photo is read",
        check=_cli_error(r"--std '.*s\.exr': folder '.*nope' does not exist")),
    Row("cli_out_is_a_folder", "merge --out d.exr where d.exr is a folder",
        "deepinv-icrf merge",
        lambda tmp: _cli_out(tmp, "merge", lambda t, f: ["--out", str(_mkdir(t / "d.exr"))]),
        None, "exit 2, 'is a folder, not a file', nothing written",
        check=_cli_refused(r"--out '.*d\.exr' is a folder, not a file")),
    Row("cli_disk_full", "fit on a full disk (left icrf.json without summary)",
        "deepinv-icrf fit", lambda tmp: _cli_fit_with(tmp, _full_disk),
        None, "exit 2, 'No space left on device: .../summary.json', nothing written",
        check=_cli_error(r"No space left on device: '.*cli_out/summary\.json'")),
    Row("cli_ctrl_c_between_files", "Ctrl-C after icrf.json and the plot, before the summary",
        "deepinv-icrf fit", lambda tmp: _cli_fit_with(tmp, _ctrl_c),
        None, "exit 130, 'deepinv-icrf: interrupted', nothing written",
        check=_interrupted),
    Row("cli_ctrl_c_in_module_init", "Ctrl-C while a compiled module initialises (ImportError "
        "'initialization failed' from the KeyboardInterrupt; was exit 1 with a traceback)",
        "deepinv-icrf fit", lambda tmp: _cli_fit_with(tmp, _ctrl_c_in_module_init),
        None, "exit 130, 'deepinv-icrf: interrupted', nothing written",
        check=_interrupted),
    Row("cli_device_meta", "fit --device meta (IndexError traceback)", "deepinv-icrf fit",
        lambda tmp: _cli_device(tmp, "meta"),
        None, "exit 2, one line, no output",
        check=_cli_error(r"--device meta: expected one of the device types")),
    Row("cli_png_bomb", "fit a folder holding a PNG that declares 100000x100000 pixels",
        "deepinv-icrf fit",
        lambda tmp: _cli(tmp, lambda t: _bomb_folder(t)),
        None, "exit 2, one line naming the file and the limit, within a second",
        check=_cli_error(r"exposure_01\.png': it declares 100000x100000 pixels")),
    Row("cli_sidecar_overflow", "fit with a sidecar time of 1e999999999", "deepinv-icrf fit",
        lambda tmp: _cli(tmp, lambda t: _timed_sidecar(t, "1e999999999")),
        None, "exit 2, one line, no output",
        check=_cli_error(r"exposure time inf is not finite")),
    # --- command line
    Row("cli_no_exif", "fit a folder without EXIF or sidecar", "deepinv-icrf fit",
        lambda tmp: _cli(tmp, lambda t: _folder(t, exif=False)),
        None, "exit 2, one line 'deepinv-icrf: error: No exposure time ...', no output",
        check=_cli_error(r"No exposure time for 3 image\(s\)")),
    Row("cli_truncated_image", "fit a folder with a truncated image", "deepinv-icrf fit",
        lambda tmp: _cli(tmp, lambda t: _damaged(t, "truncate")),
        None, "exit 2, one line 'deepinv-icrf: error: Cannot read image file ...', no output",
        check=_cli_error(r"Cannot read image file .*corrupted or truncated")),
    Row("cli_tiny_images", "fit a folder of three 1x1 photos", "deepinv-icrf fit",
        lambda tmp: _cli(tmp, _tiny_folder),
        None, "exit 2, one line 'Found 1 usable pixel position(s)', no output",
        check=_cli_error(r"Found 1 usable pixel position\(s\) in `stack`")),
    Row("cli_missing_folder", "fit a folder that does not exist", "deepinv-icrf fit",
        lambda tmp: _cli(tmp, lambda t: t / "nope"),
        None, "exit 2, one line 'deepinv-icrf: error: No such folder ...', no output",
        check=_cli_error(r"No such folder")),
    # --- third pass: more hostile files, sidecars and outputs
    Row("png_short_image_data", "8-bit PNG whose data holds 10 of the 100 rows its header "
        "declares (read with zeros, no error)", "read_image",
        lambda tmp: read_image(_short_png(tmp)),
        ValueError, r"short\.png': the file is unreadable, corrupted or truncated \(Not "
        r"enough image data\)"),
    Row("png16_sparse_huge_file", "a valid 8x10 16-bit PNG padded to 200 MB (a 5 GB one: "
        "17 s, 5.3 GB)", "read_image",
        lambda tmp: read_image(_sparse_png16(tmp)),
        ValueError, r"big\.png': it is larger than 67110160 bytes, too large for this kind "
        r"of file"),
    Row("exr_window_overflow", "OpenEXR data window from -2**31 to 2**31 - 1 (int overflow)",
        "read_image",
        lambda tmp: read_image(_exr_declaring(tmp, (-2**31, 0, 2**31 - 1, 0))),
        ValueError, r"a\.exr': the OpenEXR header is unreadable, corrupted or truncated"),
    Row("exr_window_inverted", "OpenEXR data window with max < min", "read_image",
        lambda tmp: read_image(_exr_declaring(tmp, (10, 10, 0, 0))),
        ValueError, r"a\.exr': the OpenEXR header is unreadable, corrupted or truncated"),
    Row("exr_absurd_tiles", "tiled OpenEXR, 8x8 pixels in tiles of 2**30 x 2**30",
        "read_image",
        lambda tmp: read_image(_exr_declaring(tmp, (0, 0, 7, 7), tiles=(2**30, 2**30))),
        ValueError, r"a\.exr': the OpenEXR header is unreadable, corrupted or truncated"),
    Row("exr_cut_in_pixels", "OpenEXR file cut inside its pixel data (header intact)",
        "read_image", lambda tmp: read_image(_exr_cut_in_pixels(tmp)),
        ValueError, r"cut\.exr': the OpenEXR pixel data is unreadable, corrupted or "
        r"truncated"),
    Row("tiff_absurd_tiles", "8x8 TIFF declaring tiles of (2**31 - 16)^2 pixels", "read_image",
        lambda tmp: read_image(_tiff_absurd_tiles(tmp)),
        None, "accepted: read as the 8x8 image it declares, nothing of the tile size "
        "allocated", check=_read_as_its_8x8),
    Row("npy_complex", ".npy of complex numbers (returned as a complex 'image')",
        "read_image", lambda tmp: read_image(_npy(tmp, np.ones((4, 5, 3), np.complex64))),
        ValueError, r"a\.npy': it holds dtype complex64, not real numbers"),
    Row("npy_no_channel", ".npy of shape (4, 5, 0) (returned as an empty image)",
        "read_image", lambda tmp: read_image(_npy(tmp, np.ones((4, 5, 0), np.float32))),
        ValueError, r"a\.npy': expected 1 to 4 channels, but got shape \(4, 5, 0\)"),
    Row("sidecar_huge_line", "a sidecar line of 10 million characters (_csv.Error "
        "traceback)", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_timed_sidecar(tmp, "1" * 10_000_000)),
        ValueError, r"exposures\.csv', line 1: 10000016 characters, more than 4096; "
        r"expected a file name and its exposure time"),
    Row("sidecar_bom", "a CSV sidecar saved with a UTF-8 byte order mark (Excel)",
        "read_exposure_folder",
        lambda tmp: read_exposure_folder(_sidecar_folder(tmp, "\ufeff" + "".join(
            f"{n},{t}\n" for n, t in _THIRDS.items()))),
        None, "accepted: the mark is dropped, the times read",
        check=_times_read(_THIRDS)),
    Row("sidecar_mixed_separators", "a sidecar mixing ',', ';' and tabs", "read_exposure_folder",
        lambda tmp: read_exposure_folder(_sidecar_folder(
            tmp, "exposure_00.png,0.125\nexposure_01.png;0.25\nexposure_02.png\t0.5\n")),
        ValueError, r"exposures\.csv': rows of \[1, 2\] columns and no header line: which "
        r"column holds the exposure time is ambiguous"),
    Row("cli_out_under_a_file", "fit --out notes.txt/out (named a hidden staging folder)",
        "deepinv-icrf fit",
        lambda tmp: _cli_in(tmp, lambda t, f: ["fit", str(f), "--out",
                                              str(t / "notes.txt" / "out")],
                            prepare=lambda t: (t / "notes.txt").write_text("mine")),
        None, "exit 2, one line, nothing written",
        check=_refused(r"--out '.*notes\.txt/out': '.*notes\.txt' is a file, not a folder")),
    Row("cli_disk_full_unnamed", "fit on a really full disk: the failing write() names no file "
        "(said only '[Errno 28] No space left on device')", "deepinv-icrf fit",
        lambda tmp: _cli_fit_with(tmp, _full_disk_unnamed),
        None, "exit 2, 'No space left on device: .../cli_out', nothing written",
        check=_cli_error(r"No space left on device: '.*cli_out'$")),
    Row("ctrl_c_during_commit", "Ctrl-C between two renames of a commit, another thread "
        "running (left one new file beside one old)", "OutputSet",
        _ctrl_c_in_commit,
        None, "documented: held back until the set is in place, then KeyboardInterrupt",
        check=_one_complete_set),
    Row("cli_linearize_link_in_out", "linearize into a folder whose exposure_00.tif is a "
        "symlink to the input photo", "deepinv-icrf linearize",
        lambda tmp: _cli_in(tmp, lambda t, f: ["linearize", str(f / "exposure_00.png"),
                                              "--icrf", str(t / "icrf.json"), "--out",
                                              str(t / "o")],
                            prepare=lambda t: (_metadata_file(t), _output_link_to_input(t))),
        None, "accepted: the link is replaced by the output, the photo it pointed at unchanged",
        check=_link_replaced_input_kept),
]
# fmt: on


def _param(row: Row):
    marks = [pytest.mark.xfail(strict=True, reason=row.xfail)] if row.xfail else []
    return pytest.param(row, id=row.id, marks=marks)


def test_catalogue_ids_unique():
    ids = [row.id for row in CATALOGUE]
    assert len(ids) == len(set(ids))
    assert all(re.fullmatch(r"[a-z0-9_]+", i) for i in ids)


@pytest.mark.parametrize("row", [_param(row) for row in CATALOGUE])
def test_bad_input(row: Row, tmp_path: Path):
    if row.raises is not None:
        with pytest.raises(row.raises, match=row.match) as info:
            row.provoke(tmp_path)
        assert type(info.value) is row.raises  # the exact type, not a subclass
        assert len(str(info.value)) < 600 and "Traceback" not in str(info.value)
    else:
        result = row.provoke(tmp_path)
        row.check(result)
    assert not list(tmp_path.rglob("*.tmp*"))  # no partial file left behind


def test_catalogue_documented():
    text = DOC.read_text(encoding="utf-8")
    missing = [row.id for row in CATALOGUE if f"``{row.id}``" not in text]
    assert not missing, f"rows missing from {DOC.name}: {missing}"
