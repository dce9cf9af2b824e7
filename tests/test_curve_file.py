r"""The ICRF file without deepinv: read_icrf_file gives ICRF.load's curve, merge needs no more."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deepinv_icrf.data import write_synthetic_folder
from deepinv_icrf.hdr import floor_cutoff, linearize, merge_hdr
from deepinv_icrf.hdr_summary import recorded_code_std
from deepinv_icrf.models import ICRF, ICRFFile, read_icrf_file
from deepinv_icrf.models.curve_file import monotone_curve

ROOT = Path(__file__).resolve().parents[1]


def _saved(tmp_path, parameterization, dtype, listed=True, **metadata):
    model = ICRF(parameterization=parameterization, init="gamma", dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
        if parameterization == "free":  # keep the free curve increasing: a real curve
            for p in model.parameters():
                p.copy_(p.sort().values)
    model.band = torch.stack([model.curve - 0.05, model.curve + 0.05]).detach()
    path = tmp_path / f"{parameterization}_{dtype}_{listed}.json"
    model.save(path, **metadata)
    if not listed:
        doc = json.loads(path.read_text())
        del doc["parameters"]
        path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("listed", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("parameterization", ["monotone", "free"])
def test_read_icrf_file_curve_is_icrf_load_curve(
    tmp_path, parameterization, dtype, listed
):
    path = _saved(tmp_path, parameterization, dtype, listed, camera="x")
    model = ICRF.load(path)
    file = read_icrf_file(path)
    assert isinstance(file, ICRFFile)
    assert file.curve.dtype == dtype and torch.equal(file.curve, model.curve.detach())
    assert (file.channels, file.n_points, file.bit_depth) == (3, 256, 8)
    assert file.parameterization == parameterization
    assert file.listed_parameters is listed
    assert file.metadata == model.metadata == {"camera": "x"}
    assert torch.equal(file.band.to(dtype), model.band)


def test_monotone_curve_formula():
    raw = torch.tensor([[0.0, 1.0, -2.0]], dtype=torch.float64)
    inc = torch.log1p(torch.exp(raw)).cumsum(dim=1)
    expect = torch.cat([torch.zeros(1, 1, dtype=torch.float64), inc / inc[:, -1:]], 1)
    torch.testing.assert_close(monotone_curve(raw), expect, rtol=1e-15, atol=1e-15)


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(format="clair-torch"), "format tag"),
        (lambda d: d["curve"][0].__setitem__(3, 0.45), "disagree"),
        (lambda d: d.update(dtype="int8"), "`dtype` must be one of"),
        (lambda d: d.update(band={"lower": d["curve"]}), "`band` must hold"),
    ],
)
def test_read_icrf_file_rejects_what_icrf_load_rejects(tmp_path, edit, match):
    path = tmp_path / "bad.json"
    ICRF(channels=2, n_points=8).save(path)
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    for read in (read_icrf_file, ICRF.load):
        with pytest.raises(ValueError, match=match) as info:
            read(path)
        assert "bad.json" in str(info.value)


def test_merge_and_linearize_take_the_file(tmp_path):
    path = _saved(
        tmp_path,
        "monotone",
        torch.float32,
        floor=[0.05, 0.07, 0.06],
        code_std=[0.007, 0.006, 0.008],
    )
    model, file = ICRF.load(path), read_icrf_file(path)
    assert floor_cutoff(file) == floor_cutoff(model) == pytest.approx(0.094)
    assert recorded_code_std(file) == recorded_code_std(model) == 0.008
    codes = np.random.default_rng(0).integers(0, 256, (4, 9, 7, 3), dtype=np.uint8)
    times = [0.25, 0.5, 1.0, 2.0]
    for options in ({}, {"return_std": True, "return_count": True}):
        expect = merge_hdr(codes, times, model, **options)
        got = merge_hdr(codes, times, file, **options)
        for a, b in zip(np.atleast_1d(got), np.atleast_1d(expect), strict=True):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(linearize(codes, file), linearize(codes, model))
    with pytest.raises(TypeError, match="an ICRF, an ICRFFile or a float curve"):
        merge_hdr(codes, times, str(path))


_MERGE = """
import sys
from deepinv_icrf.cli import main
code = main(["merge", sys.argv[1], "--icrf", sys.argv[2], "--out", sys.argv[3],
             "--preview", sys.argv[4]])
print(code, sorted(m for m in ("deepinv", "torchvision", "deepinv_icrf.physics",
                               "deepinv_icrf.models.icrf") if m in sys.modules))
"""


def test_cli_merge_imports_no_deepinv(tmp_path):
    photos = write_synthetic_folder(
        tmp_path / "photos", n_exposures=3, height=9, width=8
    )
    curve = tmp_path / "icrf.json"
    ICRF.from_response("gamma", channels=3).save(curve)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = tmp_path / "x.exr"
    result = subprocess.run(
        [sys.executable, "-c", _MERGE, str(photos), str(curve), str(out), "p.png"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        check=False,
    )
    assert result.stdout.splitlines()[-1] == "0 []", result.stdout + result.stderr
    assert out.is_file() and (tmp_path / "p.png").is_file()
