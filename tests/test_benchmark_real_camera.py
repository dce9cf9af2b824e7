"""``benchmarks/real_camera.py`` runs end to end (both its modes), on small stacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *args: str) -> list[dict]:
    out = tmp_path / "rows.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "real_camera.py"), *args]
        + ["--json", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "target" in done.stdout
    return json.loads(out.read_text())


@pytest.mark.slow
def test_real_camera_legacy_mode_runs(tmp_path):
    # the band's refits once received the call's progress=False and refused it
    rows = _run(
        tmp_path, "--quick", "--noise", "0.01", "--height", "32", "--width", "48",
        "--n-boot", "2",
    )  # fmt: skip
    assert len(rows) == 1 and 0.0 <= rows[0]["coverage"] <= 1.0


@pytest.mark.slow
def test_real_camera_cases_mode_runs(tmp_path):
    rows = _run(
        tmp_path, "--cases", "curve=poly-a;times=plateau", "--quick", "--repeat", "1",
        "--height", "48", "--width", "64",
    )  # fmt: skip
    assert [r["case"].split("/")[0] for r in rows] == ["poly-a"]
    assert 0.0 <= rows[0]["coverage"] <= 1.0
