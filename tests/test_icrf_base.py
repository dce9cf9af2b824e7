"""ICRFBase: the ICRF without deepinv, what the fits build and the command line uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepinv_icrf import fit_icrf
from deepinv_icrf.data import demo_exposure_times, demo_scene, write_synthetic_folder
from deepinv_icrf.models import ICRF
from deepinv_icrf.models.icrf_base import ICRFBase
from deepinv_icrf.physics import ExposureStack

ROOT = Path(__file__).resolve().parents[1]


def test_from_base_copies_everything(device):
    base = ICRFBase(channels=2, n_points=9, init="gamma", dtype=torch.float64).to(
        device
    )
    with torch.no_grad():
        base.params[1].add_(0.3)  # channels differ
    base.band = torch.stack([base.curve.detach() - 0.01, base.curve.detach() + 0.01])
    base.metadata = {"camera": "x"}
    base.fit_report = "report"
    base.train()
    icrf = ICRF.from_base(base)
    assert type(icrf) is ICRF and icrf.training
    assert icrf.params[0].dtype == torch.float64 and icrf.params[0].device == device
    assert torch.equal(icrf.curve, base.curve)
    assert torch.equal(icrf.band, base.band)
    assert icrf.metadata == {"camera": "x"} and icrf.fit_report == "report"
    icrf.metadata["camera"] = "y"  # a copy, not the same dict
    assert base.metadata == {"camera": "x"}
    assert ICRF.from_base(icrf) is icrf
    with pytest.raises(TypeError, match="`model` to be an ICRFBase"):
        ICRF.from_base(torch.nn.Linear(2, 2))


def test_base_and_icrf_agree(device):
    base = ICRFBase(channels=3, init="gamma").to(device)
    icrf = ICRF(channels=3, init="gamma").to(device)
    y = torch.rand(2, 4, 3, 5, 6, device=device)
    assert torch.equal(base(y), icrf(y))
    assert torch.equal(base.response(y), icrf.response(y))


def test_fit_without_reconstructor_gives_the_same_curve():
    t = demo_exposure_times(4, shortest=1 / 8)
    y = ExposureStack(t, response="gamma")(demo_scene(24, 32))
    icrf = fit_icrf(y[0], t, progress=False, steps=5)
    base = fit_icrf(y[0], t, progress=False, steps=5, reconstructor=False)
    assert type(icrf) is ICRF and type(base) is ICRFBase
    assert torch.equal(icrf.curve, base.curve)
    assert base.fit_report.method == icrf.fit_report.method == "code"
    with pytest.raises(TypeError, match="`reconstructor` to be a bool"):
        fit_icrf(y[0], t, progress=False, reconstructor="no")


_NO_DEEPINV = r"""
import sys
{body}
print(sorted(m for m in ("deepinv", "torchvision", "deepinv_icrf.models.icrf",
                         "deepinv_icrf.physics.exposure") if m in sys.modules))
"""


def _run(body: str, *args: str, cwd: Path) -> list[str]:
    result = subprocess.run(
        [sys.executable, "-c", _NO_DEEPINV.format(body=body), *args],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=cwd,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def test_fit_imports_no_deepinv(tmp_path):
    body = (
        "import numpy as np\n"
        "from deepinv_icrf import fit_icrf\n"
        "icrf = fit_icrf(sys.argv[1], progress=False, steps=3, reconstructor=False)\n"
        "print(type(icrf).__name__)"
    )
    folder = write_synthetic_folder(tmp_path / "p", n_exposures=3, height=20, width=24)
    assert _run(body, str(folder), cwd=tmp_path)[-2:] == ["ICRFBase", "[]"]


@pytest.mark.parametrize("command", ["fit", "hdr"])
def test_cli_fit_and_hdr_import_no_deepinv(tmp_path, command):
    folder = write_synthetic_folder(tmp_path / "p", n_exposures=3, height=20, width=24)
    out = tmp_path / ("c" if command == "fit" else "x.exr")
    body = (
        "from deepinv_icrf.cli import main\n"
        "print('rc', main(sys.argv[1:] + ['--no-progress']))"
    )
    lines = _run(body, command, str(folder), "--out", str(out), cwd=tmp_path)
    assert lines[-2:] == ["rc 0", "[]"], lines
    written = sorted(p.name for p in tmp_path.rglob("*.json"))
    assert written, "the command wrote nothing"
    loaded = ICRF.load(
        out / "icrf.json" if command == "fit" else tmp_path / "x.icrf.json"
    )
    assert np.isfinite(loaded.curve.detach().numpy()).all()
