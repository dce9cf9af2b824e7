from __future__ import annotations

import json
import math

import deepinv as dinv
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from deepinv_icrf.data import (
    ExposureStackDataset,
    SyntheticExposureStackDataset,
    read_exposure_folder,
    write_synthetic_folder,
)
from deepinv_icrf.io import read_image, write_image
from deepinv_icrf.loss import RadiometricLinearityLoss
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack

H, W = 13, 11
TIMES = [0.125, 0.25, 0.5, 1.0]


def _folder(tmp_path, **kw):
    kw = {"n_exposures": 4, "height": H, "width": W, **kw}
    return write_synthetic_folder(tmp_path / "stack", **kw)


def _expected_codes(bit_depth=8, channels=3, **kw):
    data = SyntheticExposureStackDataset(
        n_exposures=4,
        height=H,
        width=W,
        channels=channels,
        bit_depth=bit_depth,
        noise_sigma=0.0,
        shortest=0.125,
        **kw,
    )
    y, _ = data[0]
    return np.round(y.double().numpy() * (2**bit_depth - 1)).transpose(0, 2, 3, 1)


# ---------------------------------------------------------------- reading folders
def test_exif_jpeg_folder_sorted_by_time(tmp_path):
    folder = _folder(tmp_path)
    # names in reverse order of exposure: sorting must follow the times, not the names
    for k in range(4):
        (folder / f"exposure_{k:02d}.jpg").rename(folder / f"shot_{3 - k}.jpg")
    stack = read_exposure_folder(folder)
    assert stack.time_source == "exif" and stack.bit_depth == 8
    assert stack.images.shape == (4, H, W, 3) and stack.images.dtype == np.uint8
    np.testing.assert_array_equal(stack.exposure_times, TIMES)
    assert stack.exposure_times.dtype == np.float64
    assert [p.name for p in stack.paths] == [f"shot_{3 - k}.jpg" for k in range(4)]
    for img, p in zip(stack.images, stack.paths, strict=True):
        np.testing.assert_array_equal(img, read_image(p))
    # JPEG is lossy: the codes stay close to the simulated ones
    err = np.abs(stack.images.astype(float) - _expected_codes())
    assert err.mean() < 1.5


@pytest.mark.parametrize(("fmt", "sidecar"), [("png", "csv"), ("tif", "json")])
def test_16bit_with_sidecar(tmp_path, fmt, sidecar):
    folder = _folder(tmp_path, fmt=fmt, bit_depth=16, exif=False, sidecar=sidecar)
    stack = read_exposure_folder(folder)
    assert stack.time_source == "sidecar" and stack.bit_depth == 16
    assert stack.images.dtype == np.uint16
    np.testing.assert_array_equal(stack.exposure_times, TIMES)
    np.testing.assert_array_equal(stack.images, _expected_codes(16))


def test_sidecar_overrides_exif_and_accepts_fractions(tmp_path):
    folder = _folder(tmp_path, fmt="png")
    rows = "\n".join(f"exposure_{k:02d}.png, 1/{2 ** (4 - k)}" for k in range(4))
    (folder / "times.csv").write_text(rows + "\n")  # no header line
    stack = read_exposure_folder(folder, sidecar=folder / "times.csv")
    assert stack.time_source == "sidecar"
    np.testing.assert_array_equal(stack.exposure_times, [1 / 16, 1 / 8, 1 / 4, 1 / 2])


def test_grayscale_folder_has_one_channel(tmp_path):
    folder = _folder(tmp_path, channels=1, fmt="png", response="gamma")
    stack = read_exposure_folder(folder)
    assert stack.images.shape == (4, H, W, 1)
    np.testing.assert_array_equal(
        stack.images, _expected_codes(channels=1, response="gamma")
    )
    assert stack.to_tensor().shape == (4, 1, H, W)


def test_pattern_selects_images(tmp_path):
    folder = _folder(tmp_path, fmt="png")
    write_image(folder / "thumb.jpg", np.zeros((3, 3, 3), np.uint8), exposure_time=9.0)
    with pytest.raises(ValueError, match="different sizes"):
        read_exposure_folder(folder)
    stack = read_exposure_folder(folder, pattern="*.png")
    assert len(stack.paths) == 4


def test_to_tensor_scales_codes(tmp_path):
    stack = read_exposure_folder(_folder(tmp_path, fmt="tif", bit_depth=16))
    y = stack.to_tensor()
    assert y.shape == (4, 3, H, W) and y.dtype == torch.float32
    expect = stack.images.transpose(0, 3, 1, 2).astype(np.float64) / 65535
    np.testing.assert_allclose(y.numpy(), expect, rtol=1e-6)


# ---------------------------------------------------------------- bad folders
def test_bad_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="No such folder"):
        read_exposure_folder(tmp_path / "nowhere")


@pytest.mark.parametrize("n_images", [0, 1])
def test_bad_fewer_than_two_images(tmp_path, n_images):
    folder = _folder(tmp_path, n_exposures=2)
    for k in range(2 - n_images):
        (folder / f"exposure_{k:02d}.jpg").unlink()
    with pytest.raises(ValueError, match=f"holds {n_images} image.*at least 2"):
        read_exposure_folder(folder)


def test_bad_mixed_sizes(tmp_path):
    folder = _folder(tmp_path, fmt="png")
    write_image(
        folder / "exposure_01.png",
        np.zeros((H + 1, W, 3), np.uint8),
        exposure_time=0.25,
    )
    with pytest.raises(
        ValueError, match=r"different sizes.*exposure_01\.png: \(14, 11\)"
    ):
        read_exposure_folder(folder)


def test_mixed_sizes_refused_before_decoding(tmp_path, monkeypatch):
    # a large odd one out costs no memory: the headers are compared first
    from deepinv_icrf.data import folder as folder_module

    folder = _folder(tmp_path, fmt="png")
    write_image(
        folder / "exposure_02.png",
        np.zeros((4 * H, 4 * W, 3), np.uint8),
        exposure_time=0.5,
    )
    decoded = []
    monkeypatch.setattr(
        folder_module, "read_image", lambda *a, **k: decoded.append(a) or 1 / 0
    )
    with pytest.raises(ValueError, match=r"exposure_02\.png: \(52, 44\)"):
        read_exposure_folder(folder)
    assert decoded == []


def test_bad_mixed_channels(tmp_path):
    folder = _folder(tmp_path, fmt="png")
    write_image(
        folder / "exposure_01.png", np.zeros((H, W), np.uint8), exposure_time=0.25
    )
    with pytest.raises(ValueError, match=r"different sizes.*\(13, 11, 1\)"):
        read_exposure_folder(folder)


def test_bad_mixed_bit_depths(tmp_path):
    folder = _folder(tmp_path, fmt="png")
    write_image(
        folder / "exposure_02.png", np.zeros((H, W, 3), np.uint16), exposure_time=0.5
    )
    with pytest.raises(ValueError, match=r"mixed bit depths.*exposure_02\.png: uint16"):
        read_exposure_folder(folder)


def test_bad_truncated_file(tmp_path):
    folder = _folder(tmp_path)
    path = folder / "exposure_01.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"exposure_01\.jpg"):
        read_exposure_folder(folder, sidecar=None)


def test_bad_unreadable_file(tmp_path):
    folder = _folder(tmp_path, exif=False, sidecar="json")
    (folder / "exposure_02.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(ValueError, match=r"exposure_02\.jpg.*(unreadable|corrupted)"):
        read_exposure_folder(folder)


def test_bad_float_images(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    for k in range(2):
        write_image(folder / f"r{k}.tif", np.ones((4, 5, 3), np.float32))
    (folder / "exposures.json").write_text(json.dumps({"r0.tif": 1, "r1.tif": 2}))
    with pytest.raises(ValueError, match="float32 values; expected 8 or 16-bit"):
        read_exposure_folder(folder)


def test_bad_missing_times_names_files(tmp_path):
    folder = _folder(tmp_path, exif=False)
    with pytest.raises(
        ValueError, match=r"No exposure time for 4 image.*EXIF.*exposure_00\.jpg"
    ):
        read_exposure_folder(folder)


def test_bad_sidecar_names_missing_file(tmp_path):
    folder = _folder(tmp_path, exif=False, sidecar="json")
    table = json.loads((folder / "exposures.json").read_text())
    table["ghost.jpg"] = 8.0
    (folder / "exposures.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match=r"not found among the images.*ghost\.jpg"):
        read_exposure_folder(folder)


def test_bad_sidecar_missing_entry(tmp_path):
    folder = _folder(tmp_path, exif=False, sidecar="json")
    table = json.loads((folder / "exposures.json").read_text())
    del table["exposure_03.jpg"]
    (folder / "exposures.json").write_text(json.dumps(table))
    with pytest.raises(ValueError, match=r"No exposure time for 1 image.*exposure_03"):
        read_exposure_folder(folder)


def test_bad_duplicate_times(tmp_path):
    folder = _folder(tmp_path, exif=False)
    rows = ["filename,exposure_time"] + [
        f"exposure_{k:02d}.jpg,{t}" for k, t in enumerate([0.1, 0.2, 0.2, 0.4])
    ]
    (folder / "exposures.csv").write_text("\n".join(rows))
    with pytest.raises(ValueError, match=r"Duplicate exposure times.*exposure_01"):
        read_exposure_folder(folder)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ("-0.5", r"line 3: exposure times must be > 0 seconds, but got '-0.5'"),
        ("0", r"line 3: exposure times must be > 0 seconds, but got '0'"),
        ("1e-400", r"must be > 0 seconds, but got '1e-400' \(it rounds to zero\)"),
        ("1e309", r"exposure time inf is not finite \(it overflows a float\)"),
        ("1" * 401, r"is 401 characters long"),
        ("1e999999999", r"inf is not finite"),
        ("1/0", r"divides by zero"),
        ("1e-12", r"outside the accepted range"),
        ("nan", "not a number"),
        ("fast", "not a number"),
    ],
)
def test_bad_sidecar_time_values(tmp_path, value, match):
    folder = _folder(tmp_path, n_exposures=2, exif=False)
    (folder / "exposures.csv").write_text(
        f"filename,exposure_time\nexposure_00.jpg,0.1\nexposure_01.jpg,{value}\n"
    )
    with pytest.raises(ValueError, match=match):
        read_exposure_folder(folder)


def test_bad_sidecar_json_nan(tmp_path):
    folder = _folder(tmp_path, n_exposures=2, exif=False)
    (folder / "exposures.json").write_text(
        '{"exposure_00.jpg": 0.1, "exposure_01.jpg": NaN}'
    )
    with pytest.raises(ValueError, match=r"exposures\.json' is not accepted JSON: NaN"):
        read_exposure_folder(folder)


def test_bad_sidecar_files(tmp_path):
    folder = _folder(tmp_path, n_exposures=2, exif=False)
    (folder / "exposures.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_exposure_folder(folder)
    (folder / "exposures.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        read_exposure_folder(folder)
    (folder / "exposures.csv").write_text("exposure_00.jpg,0.1\n")
    with pytest.raises(ValueError, match="several sidecar files"):
        read_exposure_folder(folder)
    (folder / "exposures.json").unlink()
    (folder / "exposures.csv").write_text("exposure_00.jpg,0.1,extra\n")
    with pytest.raises(
        ValueError, match="which column holds the exposure time is ambiguous"
    ):
        read_exposure_folder(folder)
    with pytest.raises(FileNotFoundError, match="No such sidecar"):
        read_exposure_folder(folder, sidecar=folder / "other.csv")


# ---------------------------------------------------------------- datasets
def test_exposure_stack_dataset_items(tmp_path):
    folder = _folder(tmp_path, fmt="png")
    data = ExposureStackDataset(folder)
    assert len(data) == 1
    y, t = data[0]
    assert y.shape == (4, 3, H, W) and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    torch.testing.assert_close(t, torch.tensor(TIMES))
    np.testing.assert_allclose(
        y.numpy() * 255, _expected_codes().transpose(0, 3, 1, 2), rtol=1e-6
    )
    assert data.bit_depth(0) == 8
    torch.testing.assert_close(
        data.exposure_times(0), torch.tensor(TIMES, dtype=torch.float64)
    )


def test_exposure_stack_dataset_crops_are_deterministic(tmp_path):
    folder = _folder(tmp_path, fmt="png")
    full, _ = ExposureStackDataset(folder)[0]
    a = ExposureStackDataset(folder, crop_size=(5, 4), seed=3)
    b = ExposureStackDataset(folder, crop_size=(5, 4), seed=3)
    crops_a = [a[0][0] for _ in range(4)]
    crops_b = [b[0][0] for _ in range(4)]
    for ca, cb in zip(crops_a, crops_b, strict=True):
        assert ca.shape == (4, 3, 5, 4)
        assert torch.equal(ca, cb)
        # every crop is a window of the full stack, at one position for every exposure
        hits = [
            (i, j)
            for i in range(H - 4)
            for j in range(W - 3)
            if torch.equal(full[..., i : i + 5, j : j + 4], ca)
        ]
        assert hits
    assert len({tuple(c.flatten()[:50].tolist()) for c in crops_a}) > 1


def test_exposure_stack_dataset_bad_arguments(tmp_path):
    folder = _folder(tmp_path, fmt="png")
    with pytest.raises(ValueError, match="crop_size"):
        ExposureStackDataset(folder, crop_size=(H + 1, 2))
    with pytest.raises(ValueError, match="crop_size"):
        ExposureStackDataset(folder, crop_size=0)
    with pytest.raises(ValueError, match="sidecar"):
        ExposureStackDataset([folder, folder], sidecar=folder / "x.csv")
    with pytest.raises(ValueError, match="at least one folder"):
        ExposureStackDataset([])
    lazy = ExposureStackDataset(tmp_path / "missing", preload=False)
    with pytest.raises(FileNotFoundError):
        lazy[0]


def test_exposure_stack_dataset_trains_through_deepinv_trainer(tmp_path):
    folders = [
        write_synthetic_folder(
            tmp_path / f"s{k}",
            n_exposures=3,
            height=H,
            width=W,
            fmt="png",
            seed=k,
            shortest=0.1 * (k + 1),
        )
        for k in range(2)
    ]
    data = ExposureStackDataset(folders, crop_size=8, as_dict=True)
    item = data[1]
    torch.testing.assert_close(
        item["params"]["exposure_times"], torch.tensor([0.2, 0.4, 0.8])
    )
    model = ICRF(channels=3, n_points=17, init="identity")
    physics = ExposureStack(data.exposure_times(0), bit_depth=8)
    seen = []
    original_update = physics.update

    def spy(**kwargs):
        seen.append(kwargs["exposure_times"].clone())
        return original_update(**kwargs)

    physics.update = spy
    trainer = dinv.Trainer(
        model=model,
        physics=physics,
        optimizer=torch.optim.Adam(model.parameters(), lr=1e-2),
        train_dataloader=DataLoader(data, batch_size=2, shuffle=False),
        epochs=1,
        losses=[RadiometricLinearityLoss()],
        online_measurements=False,
        metrics=[],
        plot_images=False,
        save_path=tmp_path / "ckpt",
        verbose=False,
        show_progress_bar=False,
        device="cpu",
        non_blocking_transfers=False,
    )
    before = model.curve.detach().clone()
    trained = trainer.train()
    assert len(seen) == 1 and seen[0].shape == (2, 3)
    torch.testing.assert_close(seen[0][1].float(), torch.tensor([0.2, 0.4, 0.8]))
    assert not torch.equal(trained.curve.detach(), before)
    assert math.isfinite(float(trainer.logs_total_loss_train.avg))


# ---------------------------------------------------------------- synthetic stacks
def test_synthetic_dataset_matches_independent_camera():
    data = SyntheticExposureStackDataset(
        n_exposures=3,
        height=H,
        width=W,
        response="gamma",
        noise_sigma=0.0,
        shortest=0.5,
    )
    y, t = data[0]
    x = data.radiance(0).double().numpy()
    times = np.array([0.5, 1.0, 2.0])
    np.testing.assert_array_equal(t.numpy(), times.astype(np.float32))
    expect = (
        np.round(np.clip(times[:, None, None, None] * x, 0, 1) ** (1 / 2.2) * 255) / 255
    )
    np.testing.assert_allclose(y.double().numpy(), expect, atol=1e-6)
    grid = np.linspace(0, 1, 256)
    np.testing.assert_allclose(
        data.true_curve.numpy(), np.tile(grid**2.2, (3, 1)), atol=1e-12
    )


def test_synthetic_dataset_is_deterministic_by_seed():
    kw = {
        "n_samples": 2,
        "n_exposures": 3,
        "height": 9,
        "width": 7,
        "noise_sigma": 0.02,
    }
    a, b = SyntheticExposureStackDataset(**kw), SyntheticExposureStackDataset(**kw)
    torch.manual_seed(123)
    ya = a[1][0]
    torch.manual_seed(456)
    assert torch.equal(ya, b[1][0])
    assert torch.equal(ya, a[1][0])
    assert not torch.equal(a[0][0], a[1][0])
    c = SyntheticExposureStackDataset(**kw, seed=5)
    assert not torch.equal(ya, c[1][0])
    noiseless = SyntheticExposureStackDataset(**{**kw, "noise_sigma": 0.0})[1][0]
    diff = (ya - noiseless).abs()
    assert 0.005 < float(diff.mean()) < 0.03


def test_synthetic_dataset_dict_and_errors():
    item = SyntheticExposureStackDataset(
        n_exposures=2, height=4, width=5, as_dict=True
    )[0]
    assert set(item) == {"y", "params"} and item["y"].shape == (2, 3, 4, 5)
    with pytest.raises(ValueError, match="n_exposures"):
        SyntheticExposureStackDataset(n_exposures=1)
    with pytest.raises(ValueError, match="noise_sigma"):
        SyntheticExposureStackDataset(noise_sigma=-1.0)
    with pytest.raises(ValueError, match="name"):
        SyntheticExposureStackDataset(response="nonsense")
    with pytest.raises(TypeError, match="response"):
        SyntheticExposureStackDataset(response=3)
    with pytest.raises(IndexError):
        SyntheticExposureStackDataset(n_samples=1)[1]


def test_write_synthetic_folder_errors(tmp_path):
    with pytest.raises(ValueError, match="JPEG holds 8-bit"):
        write_synthetic_folder(tmp_path, bit_depth=16, fmt="jpg")
    with pytest.raises(ValueError, match="fmt"):
        write_synthetic_folder(tmp_path, fmt="gif")
    with pytest.raises(ValueError, match="sidecar"):
        write_synthetic_folder(tmp_path, sidecar="xml")
    with pytest.raises(ValueError, match="channels"):
        write_synthetic_folder(tmp_path, channels=2)


# ---------------------------------------------------------------- list formats
def _list_folder(tmp_path, name, text, n=2):
    folder = _folder(tmp_path, n_exposures=n, exif=False)
    (folder / name).write_text(text)
    return folder


def test_opencv_list_txt_holds_inverse_times(tmp_path):
    folder = _list_folder(
        tmp_path, "list.txt", "exposure_00.jpg 8\nexposure_01.jpg 1/0.25\n"
    )
    stack = read_exposure_folder(folder)  # list.txt is found automatically
    np.testing.assert_array_equal(stack.exposure_times, [0.125, 0.25])
    assert stack.time_source == "sidecar" and stack.time_detail == "sidecar list.txt"


def test_list_with_header_and_fractions(tmp_path):
    text = (
        "# Filename   exposure 1/shutter_speed\n"
        "exposure_01.jpg  1/4      4\n"
        "exposure_00.jpg  0.125    1/0.125\n"
    )
    folder = _list_folder(tmp_path, "original_list.txt", text)
    stack = read_exposure_folder(folder, sidecar=folder / "original_list.txt")
    np.testing.assert_array_equal(stack.exposure_times, [0.125, 0.25])


def test_list_with_aperture_and_gain_columns(tmp_path):
    from deepinv_icrf.io import read_exposure_list

    text = (
        "# Filename exposure 1/shutter_speed f/stop gain(db) ND_filters\n"
        "a.png 1 1 8 0 0\n"
        "b.png 1 1 4 0 0\n"  # f/4: 4x the light of f/8
        "c.png 1 1 8 3 0\n"  # +3 dB: twice the exposure
    )
    (tmp_path / "l.txt").write_text(text)
    assert read_exposure_list(tmp_path / "l.txt") == {
        "a.png": 1.0,
        "b.png": 4.0,
        "c.png": 2.0,
    }
    (tmp_path / "nd.txt").write_text(text.replace("8 0 0\n", "8 0 2\n", 1))
    with pytest.raises(ValueError, match="line 2: ND filter 2 is not supported"):
        read_exposure_list(tmp_path / "nd.txt")


def test_real_original_lists_agree_with_their_csv():
    from pathlib import Path

    from deepinv_icrf.io import read_exposure_list

    root = Path(__file__).resolve().parents[2] / "shared" / "data" / "real"
    lists = sorted(root.glob("*/original_list.txt"))
    if not lists:
        pytest.skip(f"no real brackets under {root} (shared data folder absent)")
    for path in lists:
        ours = read_exposure_list(path)
        csv_times = read_exposure_list(path.parent / "exposures.csv")
        assert ours == pytest.approx(csv_times, rel=1e-12), path.parent.name


@pytest.mark.parametrize(
    ("name", "text", "match"),
    [
        (
            "times.txt",
            "a.jpg 0.5\nb.jpg 1\n",
            "may hold the exposure times or their inverses",
        ),
        ("times.txt", "a.jpg 0.5 2\nb.jpg 1 1\n", "no header line: which column"),
        ("l.txt", "# filename exposure 1/exposure\na.jpg 0.5 4\n", "disagree"),
        ("l.txt", "# filename exposure time\na.jpg 0.5 0.5\n", "two time columns"),
        ("l.txt", "# filename millis\na.jpg 500\n", "'millis' is not one this reader"),
        ("l.txt", "# filename f/stop\na.jpg 8\n", "names no exposure time column"),
        (
            "l.txt",
            "# filename exposure\na.jpg 0.5\na.jpg 1\n",
            "'a.jpg' is listed twice",
        ),
        ("l.txt", "# filename exposure\na.jpg\n", "line 2: expected 2 columns"),
        ("l.txt", "# just a comment\n", "lists no file"),
        ("s.json", '{"a.jpg": 0.5, "a.jpg": 1}', "the key 'a.jpg' appears twice"),
        ("s.json", "[" * 5000 + "]" * 5000, "nested more than 32 levels"),
        ("s.json", '{"a.jpg": ' + "1" * 500 + "}", "a number of 500 characters"),
        ("s.json", '{"a.jpg": true}', "True is not a number"),
        ("s.csv", "a.jpg;0.5;\nb.jpg;1;\n", None),
    ],
)
def test_exposure_list_errors(tmp_path, name, text, match):
    from deepinv_icrf.io import read_exposure_list

    (tmp_path / name).write_text(text)
    if match is None:  # semicolons and a trailing separator are fine in CSV
        assert read_exposure_list(tmp_path / name) == {"a.jpg": 0.5, "b.jpg": 1.0}
        return
    with pytest.raises(ValueError, match=match):
        read_exposure_list(tmp_path / name)


def test_exposure_list_limits(tmp_path):
    from deepinv_icrf.io import read_exposure_list

    (tmp_path / "big.csv").write_bytes(b"a.jpg,1\n" * (2 * 1024 * 1024 + 1))
    with pytest.raises(ValueError, match="larger than 16777216 bytes"):
        read_exposure_list(tmp_path / "big.csv")
    (tmp_path / "bin.csv").write_bytes(
        b"\xff\x00\xfea.jpg"
    )  # no UTF-16 byte-order mark
    with pytest.raises(ValueError, match="not UTF-8"):
        read_exposure_list(tmp_path / "bin.csv")
    (tmp_path / "dir.csv").mkdir()
    with pytest.raises(ValueError, match="not a regular file"):
        read_exposure_list(tmp_path / "dir.csv")


# ---------------------------------------------------------------- EXIF aperture and ISO
def _shot(path, value, seconds, f_number=None, iso=None):
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    exif = Image.Exif()
    tags = {33434: IFDRational(*(seconds.as_integer_ratio()))}
    if f_number is not None:
        tags[33437] = IFDRational(*(float(f_number).as_integer_ratio()))
    if iso is not None:
        tags[34855] = iso
    exif[0x8769] = tags
    Image.fromarray(np.full((H, W, 3), value, np.uint8)).save(path, exif=exif.tobytes())


def test_exif_aperture_and_iso_give_relative_exposures(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    _shot(folder / "a.png", 40, 0.01, f_number=8.0, iso=100)
    _shot(folder / "b.png", 90, 0.01, f_number=4.0, iso=100)  # 4x the light
    _shot(folder / "c.png", 200, 0.01, f_number=8.0, iso=1600)  # 16x the gain
    stack = read_exposure_folder(folder)
    np.testing.assert_allclose(stack.exposure_times, [0.01, 0.04, 0.16], rtol=1e-12)
    assert [p.name for p in stack.paths] == ["a.png", "b.png", "c.png"]
    assert stack.time_detail == "EXIF ExposureTime x ISO / FNumber^2"
    # constant aperture and ISO: the times are the EXIF times, unchanged
    for name in ("b.png", "c.png"):
        (folder / name).unlink()
    _shot(folder / "b.png", 90, 0.04, f_number=8.0, iso=100)
    stack = read_exposure_folder(folder)
    np.testing.assert_array_equal(stack.exposure_times, [0.01, 0.04])
    assert stack.time_detail == "EXIF ExposureTime"


def test_exif_aperture_missing_on_some_photos_is_refused(tmp_path):
    folder = tmp_path / "stack"
    folder.mkdir()
    _shot(folder / "a.png", 40, 0.01, f_number=8.0)
    _shot(folder / "b.png", 90, 0.01, f_number=4.0)
    _shot(folder / "c.png", 200, 0.02)
    with pytest.raises(ValueError, match=r"FNumber varies .* missing for \['c.png'\]"):
        read_exposure_folder(folder)


# ---------------------------------------------------------------- crops across workers
def _crop_positions(data, full, loader_kwargs, epochs=2):
    found = []
    loader = DataLoader(data, batch_size=1, **loader_kwargs)
    for _ in range(epochs):
        epoch = []
        for y, _ in loader:
            crop = y[0]
            hits = [
                (i, j)
                for i in range(H - crop.shape[-2] + 1)
                for j in range(W - crop.shape[-1] + 1)
                if torch.equal(
                    full[..., i : i + crop.shape[-2], j : j + crop.shape[-1]], crop
                )
            ]
            epoch.append(hits[0])
        found.append(epoch)
    return found


def test_crops_differ_between_workers_and_epochs_and_are_reproducible(tmp_path):
    folder = _folder(tmp_path, fmt="png")
    full, _ = ExposureStackDataset(folder)[0]
    data = ExposureStackDataset([folder] * 6, crop_size=(3, 3), seed=1)
    kwargs = {"num_workers": 2, "generator": torch.Generator().manual_seed(7)}
    first = _crop_positions(data, full, kwargs)
    # items 0, 2, 4 go to worker 0 and 1, 3, 5 to worker 1: not the same sequence
    assert first[0][0::2] != first[0][1::2]
    assert first[0] != first[1]  # every epoch draws new crops
    kwargs["generator"] = torch.Generator().manual_seed(7)
    assert _crop_positions(data, full, kwargs) == first  # same seeds, same crops
    # in the main process too, epochs differ
    single = _crop_positions(data, full, {"num_workers": 0})
    assert single[0] != single[1]


# ---------------------------------------------------------------- spreadsheet exports
@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        # Excel and LibreOffice in locales with a decimal comma: ';' and '0,5'
        ("filename;exposure_time\na.png;0,01\nb.png;0,02\nc.png;1/25\n", "utf-8"),
        ("a.png;0,01\nb.png;0,02\nc.png;0,04\n", "utf-8"),  # no header
        ("a.png;1e-2\nb.png;2e-2\nc.png;0.04\n", "utf-8"),  # ';' and decimal points
        # tab-delimited text
        ("filename\texposure_time\na.png\t0.01\nb.png\t1/50\nc.png\t0.04\n", "utf-8"),
        # Windows' "Unicode" text: UTF-16 with a byte-order mark, either byte order
        (
            "filename,exposure_time\r\na.png,0.01\r\nb.png,0.02\r\nc.png,0.04\r\n",
            "utf-16",
        ),
        (
            "filename;exposure_time\na.png;0,01\nb.png;0,02\nc.png;0,04\n",
            "utf-16-be",
        ),
    ],
)
def test_csv_sidecars_as_spreadsheets_export_them(tmp_path, text, encoding):
    import codecs

    from deepinv_icrf.io import read_exposure_list

    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = codecs.BOM_UTF16_BE + data
    (tmp_path / "exposures.csv").write_bytes(data)
    times = read_exposure_list(tmp_path / "exposures.csv")
    assert list(times) == ["a.png", "b.png", "c.png"]
    np.testing.assert_allclose(list(times.values()), [0.01, 0.02, 0.04])


def test_decimal_commas_only_where_the_comma_cannot_separate(tmp_path):
    from deepinv_icrf.io import read_exposure_list

    # with ',' separating the fields, '0,5' is two fields: the row is refused, not read
    # as 0.5 (or as 0)
    (tmp_path / "exposures.csv").write_text("filename,exposure_time\na.png,0,5\n")
    with pytest.raises(ValueError, match=r"exposures\.csv', line 2: .* got '0'"):
        read_exposure_list(tmp_path / "exposures.csv")
    # a file name that looks like a decimal-comma number keeps its comma
    (tmp_path / "exposures.csv").write_text("filename;exposure_time\n1,5;0,5\n")
    assert read_exposure_list(tmp_path / "exposures.csv") == {"1,5": 0.5}
    # between tabs, '1,000' may be a thousand (a US spreadsheet) or one: refused, not guessed
    (tmp_path / "exposures.csv").write_text("filename\t1/t\na.png\t1,000\n")
    with pytest.raises(ValueError, match="'1,000' is not a number"):
        read_exposure_list(tmp_path / "exposures.csv")
