from __future__ import annotations

import json

import deepinv as dinv
import pytest
import torch
from torch.func import functional_call

from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import RESPONSE_NAMES, get_response

PARAMS = ("monotone", "free")


def _codes(device, dtype=torch.float32, shape=(2, 4, 3, 13, 11), levels=255, seed=0):
    gen = torch.Generator(device).manual_seed(seed)
    k = torch.randint(0, levels + 1, shape, generator=gen, device=device)
    return k.to(dtype) / levels


def _perturb(model, seed=1, scale=0.5):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(
                scale * torch.randn(p.shape, generator=gen, dtype=p.dtype).to(p.device)
            )


def test_icrf_is_a_deepinv_reconstructor():
    model = ICRF()
    assert isinstance(model, dinv.models.Reconstructor)
    assert (model.channels, model.n_points, model.bit_depth) == (3, 256, 8)
    assert model.parameterization == "monotone"
    assert "parameterization='monotone'" in repr(model)


@pytest.mark.parametrize("parameterization", PARAMS)
def test_icrf_identity_init_is_identity(device, parameterization):
    model = ICRF(parameterization=parameterization, device=device, dtype=torch.float64)
    y = _codes(device, torch.float64)
    assert torch.allclose(model(y), y, rtol=0, atol=1e-12)
    assert model.curve.shape == (3, 256)


def test_icrf_monotone_stays_monotone_with_pinned_endpoints(device):
    model = ICRF(channels=3, n_points=64, device=device)
    _perturb(model, scale=3.0)
    curve = model.curve
    assert torch.equal(curve[:, 0], torch.zeros(3, device=device))
    assert torch.equal(curve[:, -1], torch.ones(3, device=device))
    assert bool((curve.diff(dim=1) > 0).all())


def test_icrf_free_curve_is_the_parameters(device):
    model = ICRF(channels=2, n_points=16, parameterization="free", device=device)
    with torch.no_grad():
        model.params[1][3] = 5.0
    assert model.curve[1, 3].item() == 5.0
    assert len(list(model.parameters())) == 2
    assert model.params[0].shape == (16,)


@pytest.mark.parametrize("parameterization", PARAMS)
def test_icrf_gamma_init_matches_power_at_codes(device, parameterization):
    model = ICRF(
        parameterization=parameterization, init="gamma", gamma=2.2, device=device
    )
    y = _codes(device)
    assert torch.allclose(model(y), y.double().pow(2.2).float(), rtol=1e-5, atol=1e-6)
    model64 = ICRF(
        parameterization=parameterization,
        init="gamma",
        dtype=torch.float64,
        device=device,
    )
    y64 = _codes(device, torch.float64)
    assert torch.allclose(model64(y64), y64**2.2, rtol=1e-10, atol=1e-12)


def test_icrf_gamma_init_per_channel(device):
    model = ICRF(
        init="gamma", gamma=(1.0, 2.0, 3.0), dtype=torch.float64, device=device
    )
    y = _codes(device, torch.float64)
    out = model(y)
    for c, g in enumerate((1.0, 2.0, 3.0)):
        assert torch.allclose(out[:, :, c], y[:, :, c] ** g, atol=1e-12)


@pytest.mark.parametrize("name", RESPONSE_NAMES)
@pytest.mark.parametrize("parameterization", PARAMS)
def test_icrf_from_response_matches_true_inverse(device, name, parameterization):
    model = ICRF.from_response(
        name, parameterization=parameterization, dtype=torch.float64, device=device
    )
    y = _codes(device, torch.float64)
    truth = get_response(name).to(device).inverse(y)
    assert torch.allclose(model(y), truth, rtol=1e-9, atol=1e-12)


def test_icrf_from_response_accepts_a_curve_object(device):
    response = get_response("gamma", gamma=(1.8, 2.2, 2.6))
    model = ICRF.from_response(response, n_points=1024, channels=3, device=device)
    y = _codes(device, levels=1023)
    assert torch.allclose(
        model(y), response.to(device).inverse(y), rtol=1e-4, atol=1e-6
    )
    with pytest.raises(TypeError, match="init"):
        ICRF.from_response("srgb", init="identity")


@pytest.mark.parametrize("parameterization", PARAMS)
def test_icrf_gradcheck_wrt_parameters(device, parameterization):
    model = ICRF(
        channels=3,
        n_points=6,
        parameterization=parameterization,
        init="gamma",
        dtype=torch.float64,
        device=device,
    )
    _perturb(model, scale=0.2)
    y = _codes(device, torch.float64, shape=(2, 2, 3, 5, 4), levels=5)
    y[0, 0, :, 0, 0] = 0.37  # between knots
    names = [n for n, _ in model.named_parameters()]
    params = tuple(p.detach().clone().requires_grad_(True) for p in model.parameters())

    def fn(*ps):
        return functional_call(model, dict(zip(names, ps, strict=True)), (y,))

    assert torch.autograd.gradcheck(fn, params)


@pytest.mark.parametrize("parameterization", PARAMS)
def test_icrf_derivative_matches_autograd_away_from_knots(device, parameterization):
    model = ICRF(
        n_points=32,
        parameterization=parameterization,
        init="gamma",
        dtype=torch.float64,
        device=device,
    )
    _perturb(model, scale=0.3)
    gen = torch.Generator(device).manual_seed(3)
    k = torch.randint(0, 31, (2, 3, 3, 13, 11), generator=gen, device=device)
    theta = 0.1 + 0.8 * torch.rand(
        k.shape, generator=gen, device=device, dtype=torch.float64
    )
    y = ((k + theta) / 31).requires_grad_(True)
    (grad,) = torch.autograd.grad(model(y).sum(), y)
    assert torch.allclose(model.derivative(y.detach()), grad, rtol=1e-10, atol=1e-10)


def test_icrf_derivative_at_codes_is_centred_difference(device):
    model = ICRF(
        channels=1,
        n_points=5,
        init="gamma",
        gamma=2.0,
        dtype=torch.float64,
        device=device,
    )
    y = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64, device=device).view(
        1, 1, 4, 1
    )
    y = y.transpose(1, 2).reshape(4, 1, 1, 1)  # channel at dim -3
    curve = [0.0, 0.0625, 0.25, 0.5625, 1.0]
    seg = [(curve[j + 1] - curve[j]) * 4 for j in range(4)]
    expected = [seg[0], (seg[0] + seg[1]) / 2, (seg[1] + seg[2]) / 2, seg[3]]
    assert torch.allclose(
        model.derivative(y).flatten(),
        torch.tensor(expected, dtype=torch.float64, device=device),
    )


@pytest.mark.parametrize("parameterization", PARAMS)
def test_icrf_response_inverts_forward(device, parameterization):
    model = ICRF.from_response(
        "filmic", parameterization=parameterization, dtype=torch.float64, device=device
    )
    y = _codes(device, torch.float64)
    assert torch.allclose(model.response(model(y)), y, atol=1e-10)


def test_icrf_channel_parameters_affect_only_their_channel(device):
    model = ICRF(channels=3, n_points=16, device=device)
    y = _codes(device, shape=(2, 2, 3, 5, 4))
    before = model(y).detach()
    c_params = model.channel_parameters(1)
    assert len(c_params) == 1 and c_params[0] is model.params[1]
    with torch.no_grad():
        c_params[0].add_(torch.linspace(-1, 1, 15, device=device))
    after = model(y).detach()
    assert torch.equal(after[:, :, 0], before[:, :, 0])
    assert torch.equal(after[:, :, 2], before[:, :, 2])
    assert not torch.equal(after[:, :, 1], before[:, :, 1])
    model.zero_grad()
    model(y)[:, :, 0].sum().backward()
    assert model.params[1].grad is None or bool((model.params[1].grad == 0).all())
    assert model.params[0].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="`c` to be an int in \\[0, 3\\)"):
        model.channel_parameters(3)


@pytest.mark.parametrize("parameterization", PARAMS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_icrf_save_load_round_trip(tmp_path, device, parameterization, dtype):
    model = ICRF(
        parameterization=parameterization,
        init="gamma",
        bit_depth=10,
        dtype=dtype,
        device=device,
    )
    _perturb(model, scale=0.1)
    path = tmp_path / "icrf.json"
    model.save(path, camera="synthetic", exposure_times=[0.1, 0.2])
    doc = json.loads(path.read_text())
    assert doc["format"] == "deepinv-icrf/icrf" and doc["version"] == 1
    assert len(doc["curve"]) == 3 and len(doc["curve"][0]) == 256
    loaded = ICRF.load(path, device=device)
    assert loaded.parameterization == parameterization and loaded.bit_depth == 10
    assert loaded.params[0].dtype == dtype
    assert torch.equal(loaded.curve, model.curve)
    for a, b in zip(loaded.parameters(), model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert loaded.metadata == {"camera": "synthetic", "exposure_times": [0.1, 0.2]}


def test_icrf_load_without_raw_parameters_uses_the_curve(tmp_path):
    model = ICRF.from_response("log")
    path = tmp_path / "icrf.json"
    model.save(path)
    doc = json.loads(path.read_text())
    del doc["parameters"]
    path.write_text(json.dumps(doc))
    assert torch.allclose(ICRF.load(path).curve, model.curve, atol=1e-6)


def _tamper(tmp_path, edit, text=None):
    path = tmp_path / "bad.json"
    ICRF(channels=2, n_points=8).save(path)
    if text is not None:
        path.write_text(text)
        return path
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize(
    ("edit", "text", "match"),
    [
        (None, '{"format": "deepinv-icrf/icrf", "curve": [[0, 1]', "not valid JSON"),
        (lambda d: d.update(format="clair-torch"), None, "format tag"),
        (lambda d: d.pop("n_points"), None, "missing key.*n_points"),
        (lambda d: d["curve"][1].pop(), None, "`curve` row 1 must hold 8 values"),
        (lambda d: d["curve"].pop(), None, "`curve` must be a list of 2 rows"),
        (
            lambda d: d["parameters"][0].append(0.0),
            None,
            "`parameters` row 0 must hold 7",
        ),
        (lambda d: d.update(version=7), None, "unsupported version"),
        (lambda d: d.update(parameterization="spline"), None, "parameterization"),
        (lambda d: d["curve"][0].__setitem__(3, 0.45), None, "disagree"),
        (lambda d: d["curve"][0].__setitem__(3, "x"), None, "numbers only"),
    ],
)
def test_icrf_load_rejects_bad_files(tmp_path, edit, text, match):
    path = _tamper(tmp_path, edit, text)
    with pytest.raises(ValueError, match=match) as info:
        ICRF.load(path)
    assert "bad.json" in str(info.value)


def test_icrf_load_rejects_nan_and_non_monotone_curves(tmp_path):
    path = tmp_path / "nan.json"
    ICRF(channels=1, n_points=4).save(path)
    text = path.read_text()
    doc = json.loads(text)
    doc["curve"][0][1] = float("nan")
    path.write_text(json.dumps(doc))  # json writes the non-standard NaN literal
    with pytest.raises(ValueError, match="nan.json.*NaN is not a JSON number"):
        ICRF.load(path)
    doc = json.loads(text)
    doc["curve"][0] = [0.0, 0.6, 0.3, 1.0]
    del doc["parameters"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="nan.json.*`curve`.*non-decreasing"):
        ICRF.load(path)


def test_icrf_save_rejects_unserialisable_metadata(tmp_path):
    with pytest.raises(TypeError, match="JSON-serialisable"):
        ICRF(channels=1, n_points=4).save(tmp_path / "m.json", scale=torch.ones(1))


def test_icrf_init_tensor_validation(device):
    curve = torch.linspace(0, 1, 8) ** 2
    model = ICRF(channels=3, n_points=8, init=curve, dtype=torch.float64, device=device)
    assert torch.allclose(
        model.curve, curve.double().to(device).expand(3, 8), atol=1e-7
    )
    with pytest.raises(
        ValueError, match=r"`init` to have shape \(3, 9\) or \(9,\).*got shape \(8,\)"
    ):
        ICRF(channels=3, n_points=9, init=curve)
    with pytest.raises(ValueError, match="non-decreasing"):
        ICRF(channels=1, n_points=4, init=torch.tensor([0.0, 0.6, 0.3, 1.0]))
    with pytest.raises(ValueError, match="start at 0 and end at 1"):
        ICRF(channels=1, n_points=4, init=torch.tensor([0.0, 0.3, 0.6, 0.9]))
    free = ICRF(
        channels=1,
        n_points=4,
        parameterization="free",
        init=torch.tensor([0.0, 0.6, 0.3, 1.2]),
    )
    assert torch.equal(free.curve, torch.tensor([[0.0, 0.6, 0.3, 1.2]]))
    with pytest.raises(ValueError, match="finite"):
        ICRF(
            channels=1,
            n_points=3,
            parameterization="free",
            init=torch.tensor([0.0, float("nan"), 1.0]),
        )


def test_icrf_monotone_init_with_flat_steps_stays_strictly_increasing():
    curve = torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5, 1.0], dtype=torch.float64)
    model = ICRF(channels=1, n_points=6, init=curve, dtype=torch.float64)
    out = model.curve[0]
    assert bool((out.diff() > 0).all())
    assert torch.allclose(out, curve, atol=1e-6)


def test_icrf_rejects_bad_options():
    with pytest.raises(ValueError, match="`parameterization`"):
        ICRF(parameterization="spline")
    with pytest.raises(ValueError, match="`init`"):
        ICRF(init="linear")
    with pytest.raises(ValueError, match="`n_points`"):
        ICRF(n_points=1)
    with pytest.raises(ValueError, match="`bit_depth`"):
        ICRF(bit_depth=40)
    with pytest.raises(ValueError, match="`gamma`"):
        ICRF(init="gamma", gamma=(2.0, 2.2))


def test_icrf_forward_validates_input(device):
    model = ICRF(device=device)
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 2, 3, 4, 5, dtype=torch.uint8, device=device))
    with pytest.raises(ValueError, match="3 channels at dimension -3"):
        model(torch.rand(1, 2, 4, 5, 6, device=device))


def test_icrf_accepts_half_input_and_image_batches(device):
    model = ICRF.from_response("srgb", device=device)
    y = _codes(device, shape=(2, 3, 13, 11))
    out_half = model(y.half())
    assert out_half.dtype == torch.float32 and out_half.shape == (2, 3, 13, 11)
    assert torch.allclose(out_half, model(y), atol=1e-3)


def test_icrf_moves_with_to(device):
    model = ICRF().to(device)
    assert all(p.device.type == device.type for p in model.parameters())
    assert model.curve.device.type == device.type
