"""Hostile files: every reader turns a mutated valid file into a result or a named error.

Valid files of every format the package reads are mutated the way damaged or crafted files
differ from good ones (random bytes changed, a cut, bytes inserted, a run repeated, a header
field set to an extreme, a digit of a text file replaced by a hostile number). Each reader must
return or raise ``ValueError``/``OSError``; anything else (``struct.error``,
``ZeroDivisionError``, ``tokenize.TokenError``, ``KeyError`` from a parser, ...) escapes the
command line's error handling as a traceback. The mutations are seeded: the same files every
run. Rounds of 150 mutants per format with other seeds found the cases now in the bad-input
catalogue (``tiff_cut_header``, ``tiff_zero_tile``, ``npy_broken_header``).
"""

from __future__ import annotations

import json
import random
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from deepinv_icrf.data import read_exposure_folder, write_synthetic_folder
from deepinv_icrf.io import (
    image_size,
    read_exposure_list,
    read_exposure_settings,
    read_exr_layers,
    read_image,
    read_opencv_response,
    write_exr,
    write_image,
    write_opencv_response,
)
from deepinv_icrf.models import ICRF

#: Mutants per seed file (each one read by every reader of its format).
MUTANTS = 25
#: Extreme values written over header bytes.
EXTREMES = (b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x00", b"\xff\xff")
#: Hostile replacements of one digit of a text file.
HOSTILE_NUMBERS = (
    b"9999999999",
    b"-1",
    b"nan",
    b"1e308",
    b"0",
    b"inf",
    b"1/0",
    b"\xff",
)


def mutate(data: bytes, rng: random.Random) -> bytes:
    r"""One seeded mutation of ``data`` (non-empty)."""
    out = bytearray(data)
    kind = rng.randrange(6)
    if kind == 0:  # a few random bytes
        for _ in range(rng.randint(1, 8)):
            out[rng.randrange(len(out))] = rng.randrange(256)
    elif kind == 1:  # cut
        out = out[: rng.randrange(len(out))]
    elif kind == 2:  # an extreme value over a header field
        at = rng.randrange(min(len(out), 200))
        value = rng.choice(EXTREMES)
        out[at : at + len(value)] = value
    elif kind == 3:  # bytes inserted
        at = rng.randrange(len(out))
        out[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == 4:  # a run repeated
        at = rng.randrange(len(out))
        run = out[at : at + rng.randint(1, 64)]
        out[at:at] = run * rng.randint(1, 50)
    else:  # a digit replaced by a hostile number (a byte where there is no digit)
        digits = [i for i, c in enumerate(out) if 48 <= c <= 57]
        if digits:
            at = rng.choice(digits)
            out[at : at + 1] = rng.choice(HOSTILE_NUMBERS)
        else:
            out[rng.randrange(len(out))] = rng.randrange(256)
    return bytes(out)


def _seed_files(folder: Path) -> dict[str, list[Callable[[Path], object]]]:
    r"""Valid files of every format, each with the readers that take it."""
    rng = np.random.default_rng(0)
    img8 = (rng.random((24, 32, 3)) * 255).astype(np.uint8)
    img16 = (rng.random((24, 32, 3)) * 65535).astype(np.uint16)
    radiance = rng.random((24, 32, 3)).astype(np.float32)
    image = [read_image]
    sized = [read_image, image_size]
    write_image(folder / "a.jpg", img8, exposure_time=1 / 30)
    write_image(folder / "a.png", img8, exposure_time=1 / 30)
    write_image(folder / "b.png", img16)
    write_image(folder / "a.tif", img8)
    write_image(folder / "b.tif", img16)
    write_image(folder / "a.npy", img8)
    write_image(folder / "a.hdr", radiance)
    write_exr(folder / "a.exr", radiance)
    write_opencv_response(
        folder / "response.csv", np.linspace(0, 1, 256)[:, None].repeat(3, 1)
    )
    (folder / "exposures.csv").write_text(
        "file,exposure_time\na.jpg,1/30\nb.jpg,0.0625\n"
    )
    (folder / "list.txt").write_text("a.jpg 30\nb.jpg 16\n")
    (folder / "original_list.txt").write_text(
        "# Filename exposure 1/shutter_speed f/stop gain(db)\n"
        "a.jpg 1 30 8 0\nb.jpg 2 15 8 0\n"
    )
    (folder / "times.json").write_text(json.dumps({"a.jpg": 0.03, "b.jpg": 0.06}))
    ICRF(channels=3, n_points=16).save(folder / "icrf.json")
    import tifffile

    tifffile.imwrite(folder / "lzw.tif", img8, compression="lzw")
    tifffile.imwrite(folder / "tiled.tif", img16, tile=(16, 16), compression="zlib")
    lists = [read_exposure_list]
    return {
        "a.jpg": [read_image, image_size, read_exposure_settings],
        "a.png": sized,
        "b.png": sized,
        "a.tif": sized,
        "b.tif": sized,
        "lzw.tif": sized,
        "tiled.tif": sized,
        "a.npy": image,
        "a.hdr": image,
        "a.exr": [read_image, read_exr_layers],
        "response.csv": [read_opencv_response],
        "exposures.csv": lists,
        "list.txt": lists,
        "original_list.txt": lists,
        "times.json": lists,
        "icrf.json": [ICRF.load],
    }


def _outcome(reader: Callable[[Path], object], path: Path) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            reader(path)
        except (ValueError, OSError):
            return "refused"
    return "read"


def test_mutated_files_are_read_or_refused_by_name(tmp_path):
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    readers = _seed_files(seeds)
    rng = random.Random(20261207)
    escaped, refused = [], 0
    for name, funcs in readers.items():
        data = (seeds / name).read_bytes()
        for k in range(MUTANTS):
            path = tmp_path / f"{k}_{name}"
            path.write_bytes(mutate(data, rng))
            for reader in funcs:
                try:
                    refused += _outcome(reader, path) == "refused"
                except Exception as err:  # noqa: BLE001 - what the test looks for
                    escaped.append(f"{reader.__name__}({path.name}): {err!r}")
    assert not escaped, "\n".join(escaped)
    # the mutations do damage: most mutants are refused (a test that reads only intact
    # files could not fail)
    total = MUTANTS * sum(len(f) for f in readers.values())
    assert refused > total // 2


def test_mutated_folders_are_read_or_refused_by_name(tmp_path):
    base = write_synthetic_folder(tmp_path / "base", n_exposures=3, height=16, width=20)
    (base / "exposures.csv").write_text(
        "filename,exposure_time\n"
        "exposure_00.jpg,1/8\nexposure_01.jpg,0.25\nexposure_02.jpg,1/2\n"
    )
    files = sorted(p.name for p in base.iterdir())
    rng = random.Random(7)
    escaped, refused = [], 0
    for k in range(40):
        folder = tmp_path / f"m{k}"
        folder.mkdir()
        victim = rng.choice(files)
        for name in files:
            data = (base / name).read_bytes()
            (folder / name).write_bytes(mutate(data, rng) if name == victim else data)
        try:
            refused += _outcome(read_exposure_folder, folder) == "refused"
        except Exception as err:  # noqa: BLE001
            escaped.append(f"{folder.name} ({victim}): {err!r}")
    assert not escaped, "\n".join(escaped)
    assert refused >= 10


@pytest.mark.parametrize("kind", range(6))
def test_every_mutation_changes_the_bytes(kind):
    # each branch of `mutate` is reached and nearly always changes the file (a digit may be
    # replaced by itself, a random byte drawn equal)
    data = b"#?header 12345 " + bytes(range(256))
    changed = []
    for seed in range(300):
        rng = random.Random(seed)
        state = rng.getstate()
        if rng.randrange(6) != kind:
            continue
        rng.setstate(state)
        changed.append(mutate(data, rng) != data)
    assert len(changed) >= 20 and sum(changed) >= 0.8 * len(changed)
