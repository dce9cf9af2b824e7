from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from deepinv_icrf.models import ICRF
from deepinv_icrf.validate import (
    format_validation,
    measure_curve_from_pairs,
    validate_folder,
    validate_icrf,
)


def _pair(gamma=2.2, shape=(37, 23, 3), seed=0, scale=0.7):
    gen = np.random.default_rng(seed)
    lin = gen.uniform(0, 1, shape) ** 1.5
    proc = np.round(lin ** (1 / gamma) * 255).astype(np.uint8)
    return proc, lin * scale


def test_measure_curve_matches_per_code_means():
    proc, lin = _pair()
    curve, counts = measure_curve_from_pairs(proc, lin)
    assert curve.shape == (3, 256) and counts.shape == (3, 256)
    for c in range(3):
        for k in (40, 128, 200):
            sel = lin[..., c][proc[..., c] == k]
            assert counts[c, k].item() == sel.size
            # up to the common scale: ratios of codes are exact means
            ratio = curve[c, k] / curve[c, 200]
            ref = sel.mean() / lin[..., c][proc[..., c] == 200].mean()
            assert ratio.item() == pytest.approx(ref, rel=1e-9)
    missing = counts == 0
    assert torch.isnan(curve[missing]).all()


def test_measure_curve_scale_puts_top_code_near_one():
    proc, lin = _pair(shape=(120, 110, 1))
    curve, _ = measure_curve_from_pairs(proc, lin)
    truth = (np.arange(256) / 255.0) ** 2.2
    ok = ~torch.isnan(curve[0])
    err = (curve[0][ok].numpy() - truth[ok.numpy()])[8:248]
    assert np.abs(err).max() < 5e-3


def test_measure_curve_pools_shots_of_different_sizes():
    p1, l1 = _pair(shape=(20, 17, 1), seed=1)
    p2, l2 = _pair(shape=(9, 31, 1), seed=2)
    _, counts = measure_curve_from_pairs([p1, p2], [l1, l2])
    assert counts.sum().item() == 20 * 17 + 9 * 31


def test_measure_curve_bad_inputs():
    proc, lin = _pair()
    with pytest.raises(ValueError, match="shape"):
        measure_curve_from_pairs(proc, lin[:5])
    with pytest.raises(TypeError, match="both"):
        measure_curve_from_pairs([proc], lin)
    with pytest.raises(ValueError, match="as many"):
        measure_curve_from_pairs([proc, proc], [lin])
    with pytest.raises(TypeError, match="dtype"):
        measure_curve_from_pairs(proc.astype(np.int32), lin)


def test_validate_icrf_true_and_wrong_curves(device):
    proc, lin = _pair(shape=(90, 70, 3))
    good = validate_icrf(ICRF(init="gamma", gamma=2.2).to(device), proc, lin)
    bad = validate_icrf(ICRF(init="gamma", gamma=1.8), proc, lin)
    assert max(good["rmse"]) < 5e-3 and max(good["rmse_scaled"]) < 5e-3
    assert min(bad["rmse"]) > 0.03
    # independent computation of the wrong curve's error
    measured, counts = measure_curve_from_pairs(proc, lin)
    k = np.arange(256)
    keep = (counts[0].numpy() >= 20) & (k >= 8) & (k <= 247)
    ref = np.sqrt(np.mean(((k[keep] / 255.0) ** 1.8 - measured[0].numpy()[keep]) ** 2))
    assert bad["rmse"][0] == pytest.approx(ref, rel=1e-6)
    assert bad["n_codes"][0] == int(keep.sum())
    assert good["band_coverage"] is None
    json.dumps(good)


def test_validate_icrf_band_coverage():
    proc, lin = _pair(shape=(90, 70, 1))
    icrf = ICRF(channels=1, init="gamma", gamma=2.2)
    grid = torch.linspace(0, 1, 256)
    icrf.band = torch.stack([grid**2.3, grid**2.1]).unsqueeze(1)
    out = validate_icrf(icrf, proc, lin)
    assert out["band_coverage"][0] > 0.9
    icrf.band = torch.stack([grid**2.6, grid**2.5]).unsqueeze(1)
    assert validate_icrf(icrf, proc, lin)["band_coverage"][0] < 0.1


def test_validate_icrf_channel_mismatch():
    proc, lin = _pair()
    with pytest.raises(ValueError, match="channels"):
        validate_icrf(ICRF(channels=1), proc, lin)


def test_validate_folder_end_to_end(tmp_path):
    import imageio.v3 as iio

    proc, lin = _pair(shape=(60, 50, 3))
    iio.imwrite(tmp_path / "shot1.png", proc)
    iio.imwrite(tmp_path / "shot1_linear.tif", np.round(lin * 65535).astype(np.uint16))
    # an 8-bit TIFF is a processed image, never a linear capture
    iio.imwrite(tmp_path / "other.tif", proc)
    ICRF(init="gamma").save(tmp_path / "curve.json")
    out = validate_folder(tmp_path, tmp_path / "curve.json")
    assert out["pairs"] == [["shot1.png", "shot1_linear.tif"]]
    assert max(out["rmse"]) < 5e-3
    text = format_validation(out)
    assert text.count("\n") == 2 and "channel 2" in text


def test_validate_folder_reads_16_bit_png_as_16_bit(tmp_path):
    from deepinv_icrf.io import write_image

    lin = np.linspace(0, 1, 4096).reshape(64, 64, 1).repeat(3, -1) ** 2.2
    proc = np.round(lin ** (1 / 2.2) * 65535).astype(np.uint16)
    write_image(tmp_path / "a.png", proc)  # a 16-bit colour PNG (imageio made it 8-bit)
    write_image(tmp_path / "a.tif", np.round(lin * 65535).astype(np.uint16))
    ICRF(init="gamma", n_points=4096, bit_depth=16).save(tmp_path / "curve.json")
    out = validate_folder(tmp_path, tmp_path / "curve.json", min_count=1)
    assert out["n_codes"][0] > 3000  # 16-bit codes: thousands of levels, not 256
    assert max(out["rmse"]) < 1e-3


def test_validate_folder_errors(tmp_path):
    import imageio.v3 as iio

    ICRF(init="gamma").save(tmp_path / "curve.json")
    with pytest.raises(ValueError, match="directory"):
        validate_folder(tmp_path / "nope", tmp_path / "curve.json")
    with pytest.raises(ValueError, match="no processed/linear pair"):
        validate_folder(tmp_path, tmp_path / "curve.json")
    proc, lin = _pair(shape=(30, 20, 3))
    iio.imwrite(tmp_path / "a.png", proc)
    iio.imwrite(tmp_path / "a.tif", np.round(lin[:10] * 65535).astype(np.uint16))
    with pytest.raises(ValueError, match="size"):
        validate_folder(tmp_path, tmp_path / "curve.json")


def test_validate_folder_raw_needs_rawpy(tmp_path):
    import importlib.util

    import imageio.v3 as iio

    if importlib.util.find_spec("rawpy") is not None:
        pytest.skip("rawpy installed: the missing-rawpy message cannot be reached")
    proc, _ = _pair(shape=(8, 8, 3))
    iio.imwrite(tmp_path / "a.jpg", proc)
    (tmp_path / "a.dng").write_bytes(b"not a raw file")
    ICRF(init="gamma").save(tmp_path / "curve.json")
    with pytest.raises(ValueError, match="rawpy"):
        validate_folder(tmp_path, tmp_path / "curve.json")


def test_validate_cli_prints_errors_and_writes_json(tmp_path, capsys):
    import imageio.v3 as iio

    from deepinv_icrf.cli import main

    proc, lin = _pair(shape=(60, 50, 3))
    iio.imwrite(tmp_path / "shot1.png", proc)
    iio.imwrite(tmp_path / "shot1.tif", np.round(lin * 65535).astype(np.uint16))
    ICRF(init="gamma").save(tmp_path / "curve.json")
    out_json = tmp_path / "result.json"
    code = main(
        [
            "validate",
            str(tmp_path),
            "--icrf",
            str(tmp_path / "curve.json"),
            "--out",
            str(out_json),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "channel 0: rmse" in text and "channel 2" in text
    result = json.loads(out_json.read_text())
    assert max(result["rmse"]) < 5e-3


def test_validate_cli_bad_folder_is_one_line_error(tmp_path, capsys):
    from deepinv_icrf.cli import main

    ICRF(init="gamma").save(tmp_path / "curve.json")
    code = main(
        ["validate", str(tmp_path / "missing"), "--icrf", str(tmp_path / "curve.json")]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deepinv-icrf: error:") and "\n" not in err
