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
