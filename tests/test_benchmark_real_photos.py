r"""benchmarks/real_photos.py (not part of the package): the sparser brackets of ``--every``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import real_photos  # noqa: E402


def test_every_scores_sparser_brackets_of_each_folder(tmp_path):
    from deepinv_icrf.data import write_synthetic_folder

    folder = write_synthetic_folder(
        tmp_path / "bracket", n_exposures=7, fmt="png", sidecar="csv", exif=False
    )
    out = tmp_path / "r.json"
    code = real_photos.main(
        [str(folder), "--every", "2,3", "--methods", "srgb", "--json", str(out)]
    )
    assert code == 0
    rows = json.loads(out.read_text())
    # 7 frames; every 2nd: 4 frames (2 held out); every 3rd: 3 frames (1 held out)
    assert [r["stack"] for r in rows] == ["bracket", "bracket_s2", "bracket_s3"]
    held_out = [len(r["results"]["srgb"]["rmse_per_exposure"]["hat"]) for r in rows]
    assert held_out == [5, 2, 1]


@pytest.mark.parametrize("every", ["1", "two"])
def test_every_refuses_bad_steps(tmp_path, every):
    with pytest.raises(SystemExit) as info:
        real_photos.main([str(tmp_path), "--every", every, "--methods", "srgb"])
    assert info.value.code == 2


def test_reference_map_is_read_and_scored(tmp_path):
    # a folder holding a radiance map (.hdr) is scored against it, whatever codecs the
    # installed OpenCV has (it read the map before and returned None without .hdr support)
    import numpy as np

    from deepinv_icrf.data import write_synthetic_folder
    from deepinv_icrf.io import write_image

    folder = write_synthetic_folder(
        tmp_path / "bracket", n_exposures=5, fmt="png", sidecar="csv", exif=False
    )
    ramp = np.geomspace(0.01, 1.0, 32 * 48, dtype=np.float32).reshape(32, 48, 1)
    write_image(folder / "reference.hdr", np.repeat(ramp, 3, axis=-1))
    assert real_photos.reference_map(folder).shape == (32, 48, 3)
    out = tmp_path / "r.json"
    assert real_photos.main([str(folder), "--methods", "srgb", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    assert set(row["reference"]) == {"srgb"}


def test_grey_brackets_are_scored_by_every_opencv_method(tmp_path):
    # OpenCV returns a (256, 1) response for grey photos (the benchmark indexed a third
    # axis), and its Robertson calibration aborts the process in malloc on them: grey
    # brackets go in as three equal channels, and one curve comes back
    pytest.importorskip("cv2")
    from deepinv_icrf.data import write_synthetic_folder

    folder = write_synthetic_folder(
        tmp_path / "grey",
        n_exposures=4,
        channels=1,
        fmt="png",
        sidecar="csv",
        exif=False,
    )
    out = tmp_path / "r.json"
    methods = "debevec,robertson"
    assert (
        real_photos.main([str(folder), "--methods", methods, "--json", str(out)]) == 0
    )
    (row,) = json.loads(out.read_text())
    for name in methods.split(","):
        assert len(row["results"][name]["curve"]) == 1  # one channel, one curve
        assert 0 < row["results"][name]["rmse"]["hat"] < 50


def _survey(tmp_path, key: str) -> dict:
    from deepinv_icrf.data import write_synthetic_folder

    folder = write_synthetic_folder(
        tmp_path / "bracket", n_exposures=6, fmt="png", sidecar="csv", exif=False
    )
    out = tmp_path / "survey.json"
    assert real_photos.main([str(folder), f"--{key}", "--json", str(out)]) == 0
    (row,) = json.loads(out.read_text())
    return row[key]


def test_sweep_counts_the_check_on_every_sub_bracket(tmp_path):
    r = _survey(tmp_path, "sweep")
    # 6 frames: 3 frames 1 apart from 4 starts, 2 apart from 2; 5 frames 1 apart from 2
    assert r["brackets"] == 4 + 2 + 2
    # right listed times: nothing wrong, nothing flagged
    assert r["wrong"] == 0 and r["flagged_right"] == 0
    assert r["right"] + r["refused"] == r["brackets"] and r["error_geomean"] is None


def test_jump_survey_fits_every_copy(tmp_path):
    r = _survey(tmp_path, "jumps")
    # 4 copies (as read, JPEG 95/85/75) x (the whole bracket + every 2nd frame from 2
    # starts; every 3rd frame leaves 2 frames: skipped)
    assert r["brackets"] == 4 * 3
    # a clean synthetic bracket: a smooth curve in every copy, nothing refitted
    assert r["above_1_10"] == 0 and r["refitted"] == 0 and 1.0 < r["largest"] < 1.10


def test_jpeg_copy_keeps_shape_and_grey():
    import numpy as np

    gen = np.random.default_rng(0)
    colour = gen.integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    grey = colour[..., :1].copy()
    for images in (colour, grey):
        copy = real_photos._jpeg_copy(images, 75)
        assert copy.shape == images.shape and copy.dtype == np.uint8
        assert not np.array_equal(copy, images)  # it was compressed
