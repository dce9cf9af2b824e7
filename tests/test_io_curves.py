r"""Curve files: OpenCV's response CSV in and out, ICRF JSON read with limits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from deepinv_icrf.io import read_opencv_response, write_opencv_response
from deepinv_icrf.models import ICRF

REFERENCES = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "real"
    / "memorial"
    / "opencv_references"
)


# ---------------------------------------------------------------- OpenCV CSV
def test_opencv_csv_round_trip_keeps_the_curve_and_channel_order(tmp_path):
    icrf = ICRF(init="gamma", gamma=(1.8, 2.2, 2.6))
    icrf.save_opencv_csv(tmp_path / "r.csv")
    table = read_opencv_response(tmp_path / "r.csv")
    assert table.shape == (256, 3)
    curve = icrf.curve.detach().double()
    np.testing.assert_allclose(table[:, 0], curve[2].numpy(), rtol=1e-6)  # B first
    np.testing.assert_allclose(table[:, 2], curve[0].numpy(), rtol=1e-6)  # R last
    back = ICRF.from_opencv_csv(tmp_path / "r.csv")
    assert back.channels == 3 and back.n_points == 256 and back.bit_depth == 8
    torch.testing.assert_close(back.curve, icrf.curve, atol=1e-6, rtol=0)
    icrf.save_opencv_csv(tmp_path / "s.csv", delimiter=";")
    assert (tmp_path / "s.csv").read_text().splitlines()[255] == "1; 1; 1;"
    np.testing.assert_array_equal(read_opencv_response(tmp_path / "s.csv"), table)


def test_opencv_csv_resamples_other_grids_and_grey(tmp_path):
    icrf = ICRF(channels=1, n_points=1024, init="gamma", gamma=2.0)
    icrf.save_opencv_csv(tmp_path / "g.csv")
    table = read_opencv_response(tmp_path / "g.csv")
    assert table.shape == (256, 1)
    np.testing.assert_allclose(table[:, 0], (np.arange(256) / 255) ** 2, atol=2e-6)
    with pytest.raises(ValueError, match="1 or 3 channels, but this ICRF has 2"):
        ICRF(channels=2).save_opencv_csv(tmp_path / "two.csv")
    assert not (tmp_path / "two.csv").exists()


def test_opencv_calibration_output_imports_in_rgb_order(tmp_path):
    cv2 = pytest.importorskip("cv2", reason="OpenCV is not installed")
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.02, 1.0, (40, 50, 3)) * np.array([1.0, 0.5, 0.25])
    times = np.array([0.25, 1.0, 4.0], np.float32)
    gammas = np.array([1.6, 2.2, 2.8])  # R, G, B: distinct so that the order shows
    images = [
        np.round(np.clip(scene * t, 0, 1) ** (1 / gammas) * 255).astype(np.uint8)[
            ..., ::-1
        ]
        for t in times
    ]
    response = cv2.createCalibrateDebevec(samples=200).process(images, times)
    np.savetxt(tmp_path / "cv.csv", response.reshape(256, 3), delimiter=",")
    icrf = ICRF.from_opencv_csv(tmp_path / "cv.csv")
    for c in range(3):  # RGB channel c is OpenCV's column 2 - c
        expect = response[:, 0, 2 - c] / response[255, 0, 2 - c]
        np.testing.assert_allclose(icrf.curve[c].detach().numpy(), expect, rtol=1e-6)
    mid = icrf.curve[:, 128].detach().numpy()
    assert mid[0] > mid[1] > mid[2]  # gamma 1.6 < 2.2 < 2.8: less convex, higher at 0.5


@pytest.mark.parametrize("name", ["debevec.csv", "robertson.csv", "response.csv"])
def test_opencv_reference_curves_of_the_real_data(name):
    path = REFERENCES / name
    if not path.is_file():
        pytest.skip(f"{path} is absent (shared data folder not present)")
    table = read_opencv_response(path)
    assert table.shape == (256, 3)
    icrf = ICRF.from_opencv_csv(path)
    curve = icrf.curve.detach()
    assert torch.allclose(curve[:, -1], torch.ones(3))
    expect = table[:, ::-1] / table[255, ::-1]  # B, G, R columns -> R, G, B channels
    np.testing.assert_allclose(curve.numpy().T, expect, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1,2,3\n" * 255, "expected 256 rows .* but got 255"),
        ("1,2,3\n" * 257, "more than 256 rows"),
        ("1,2\n" * 256, r"1 or 3 values \(B, G, R\), but got \[2\]"),
        ("1,2,3\n" * 255 + "1,2\n", r"but got \[2, 3\]"),
        ("1,2,3\n" * 255 + "1,-2,3\n", "line 256: expected finite values >= 0"),
        ("1,2,3\n" * 255 + "1,nan,3\n", "'nan' is not a number"),
        ("1,2,3\n" * 255 + "1,1e999,3\n", "expected finite values"),
        ("1,0,3\n" * 256, r"column\(s\) \[1\] are zero everywhere"),
        ("1," + "9" * 100 + ",3\n", "is not a number"),
    ],
)
def test_bad_opencv_csv(tmp_path, text, match):
    (tmp_path / "r.csv").write_text(text)
    with pytest.raises(ValueError, match=match):
        read_opencv_response(tmp_path / "r.csv")


def test_opencv_csv_import_errors_name_the_file(tmp_path):
    rows = [f"{k + 1},{k + 1},{0 if k == 255 else k + 1}" for k in range(256)]
    (tmp_path / "top0.csv").write_text("\n".join(rows))
    with pytest.raises(ValueError, match=r"top0\.csv': the response at code 255 is 0"):
        ICRF.from_opencv_csv(tmp_path / "top0.csv")
    rows = [f"{k + 10},{k + 10},{k + 10}" for k in range(256)]  # never reaches 0
    (tmp_path / "floor.csv").write_text("\n".join(rows))
    with pytest.raises(ValueError, match=r"floor\.csv': .*start at 0"):
        ICRF.from_opencv_csv(tmp_path / "floor.csv", parameterization="monotone")
    assert float(
        ICRF.from_opencv_csv(tmp_path / "floor.csv").curve[0, 0].detach()
    ) == pytest.approx(10 / 265)
    (tmp_path / "big.csv").write_bytes(b"1,1,1\n" * 200_000)
    with pytest.raises(ValueError, match="larger than 1048576 bytes"):
        read_opencv_response(tmp_path / "big.csv")
    with pytest.raises(ValueError, match="delimiter"):
        write_opencv_response(tmp_path / "x.csv", np.ones((256, 3)), delimiter="\t")
    with pytest.raises(ValueError, match=r"shape \(256, 1\) or \(256, 3\)"):
        write_opencv_response(tmp_path / "x.csv", np.ones((255, 3)))
    assert not (tmp_path / "x.csv").exists()


# ---------------------------------------------------------------- ICRF JSON limits
def _saved(tmp_path, edit=None, raw=None):
    path = tmp_path / "icrf.json"
    ICRF(channels=1, n_points=4).save(path)
    if raw is not None:
        path.write_text(raw(path.read_text()))
    elif edit is not None:
        doc = json.loads(path.read_text())
        edit(doc)
        path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (
            lambda t: t.replace('"float32"', '"float8_e4m3fn"'),
            r"`dtype` must be one of",
        ),
        (lambda t: t.replace('"float32"', '"Tensor"'), r"`dtype` must be one of"),
        (lambda t: t[:-1] + ', "channels": 1}', "the key 'channels' appears twice"),
        (lambda t: "[" * 100000 + "]" * 100000, "nested more than 32 levels deep"),
        (
            lambda t: t.replace('"version": 1', '"version": ' + "9" * 401),
            "401 characters",
        ),
        (lambda t: t.replace('"version": 1', '"version": 1e999'), "overflows a float"),
        (lambda t: t.replace("0.0", "NaN", 1), "NaN is not a JSON number"),
        (lambda t: t + " " * (65 * 1024 * 1024), "larger than"),
    ],
)
def test_icrf_json_limits(tmp_path, raw, match):
    path = _saved(tmp_path, raw=raw)
    with pytest.raises(ValueError, match=match):
        ICRF.load(path)


def test_icrf_json_missing_and_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No such ICRF file '.*nope\.json'"):
        ICRF.load(tmp_path / "nope.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        ICRF.load(tmp_path / "dir.json")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_icrf_json_allowed_dtypes_round_trip(tmp_path, dtype):
    ICRF(channels=1, n_points=4, dtype=dtype, parameterization="free").save(
        tmp_path / "a.json"
    )
    assert ICRF.load(tmp_path / "a.json").params[0].dtype == dtype
