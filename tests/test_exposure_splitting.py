from __future__ import annotations

import deepinv as dinv
import pytest
import torch
from deepinv.loss.measplit import SplittingLoss

from deepinv_icrf.functional import stack_prediction_error
from deepinv_icrf.loss import (
    EquivariantSplittingLoss,
    LinearizedStackLoss,
    RadiometricLinearityLoss,
    SmoothnessLoss,
    StackPredictionLoss,
    WeightedLossScheduler,
)
from deepinv_icrf.models import ICRF, StackReconstructor
from deepinv_icrf.models.stack_reconstructor import stack_split_parts
from deepinv_icrf.physics import ExposureSplittingMaskGenerator, ExposureStack
from deepinv_icrf.training import TermLoggingTrainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

N, C, H, W = 3, 2, 13, 11
TIMES = (0.5, 1.0, 2.0)


# ---------------------------------------------------------------- mask generator
@pytest.mark.parametrize(
    "granularity, units",
    [("entry", N * C * H * W), ("pixel", N * H * W), ("exposure", N)],
)
def test_exposure_split_mask_shape_and_exact_fraction(device, granularity, units):
    ratio = 0.7 if granularity != "exposure" else 0.6
    gen = ExposureSplittingMaskGenerator(
        (N, C, H, W), split_ratio=ratio, granularity=granularity, device=device
    )
    mask = gen.step(batch_size=4, seed=1)["mask"]
    assert mask.shape == (4, N, C, H, W)
    assert mask.device.type == device.type
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    kept = round(ratio * units)
    expected = torch.full((4,), kept / units, device=device)
    torch.testing.assert_close(mask.mean(dim=(1, 2, 3, 4)), expected)


def test_exposure_split_mask_granularity_shares_units(device):
    pixel = ExposureSplittingMaskGenerator((N, C, H, W), 0.5, "pixel", device=device)
    m = pixel.step(2, seed=0)["mask"]
    assert torch.equal(m[:, :, 0], m[:, :, 1])
    assert not torch.equal(m[:, 0], m[:, 1])  # exposures are split independently
    expo = ExposureSplittingMaskGenerator((N, C, H, W), 0.5, "exposure", device=device)
    e = expo.step(2, seed=0)["mask"]
    per_exposure = e.flatten(2)
    assert torch.equal(per_exposure.amin(dim=2), per_exposure.amax(dim=2))
    entry = ExposureSplittingMaskGenerator((N, C, H, W), 0.5, "entry", device=device)
    assert not torch.equal(
        entry.step(1, seed=0)["mask"][:, :, 0], entry.step(1, seed=0)["mask"][:, :, 1]
    )


def test_exposure_split_mask_is_deterministic_by_seed(device):
    gen = ExposureSplittingMaskGenerator((N, C, H, W), 0.8, device=device)
    a = gen.step(3, seed=7)["mask"]
    b = gen.step(3, seed=8)["mask"]
    c = gen.step(3, seed=7)["mask"]
    assert torch.equal(a, c)
    assert not torch.equal(a, b)
    other = ExposureSplittingMaskGenerator(
        (N, C, H, W), 0.8, device=device, rng=torch.Generator(device).manual_seed(7)
    )
    assert torch.equal(other.step(3)["mask"], a)


def test_exposure_split_mask_image_size_override_and_input_mask(device):
    gen = ExposureSplittingMaskGenerator((N, C, H, W), 0.5, device=device)
    mask = gen.step(2, seed=0, img_size=(5, 7))["mask"]
    assert mask.shape == (2, N, C, 5, 7)
    measured = torch.zeros(1, N, C, H, W, device=device)
    measured[:, 0] = 1.0
    split = gen.step(2, seed=0, input_mask=measured)["mask"]
    assert float(split[:, 1:].abs().sum()) == 0.0
    assert float(split[:, 0].sum()) > 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split_ratio": 1.0}, "split_ratio"),
        ({"split_ratio": 0.0}, "split_ratio"),
        ({"split_ratio": 0.9, "granularity": "exposure"}, "left to predict"),
        ({"split_ratio": 0.1, "granularity": "exposure"}, "nothing would be seen"),
        ({"granularity": "row"}, "granularity"),
    ],
)
def test_exposure_split_mask_rejects_splits_that_leave_nothing(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ExposureSplittingMaskGenerator((N, C, H, W), **kwargs)


def test_exposure_split_mask_rejects_bad_sizes():
    with pytest.raises(ValueError, match="img_size"):
        ExposureSplittingMaskGenerator((C, H, W))
    gen = ExposureSplittingMaskGenerator((2, 1, 1, 1), 0.5, "entry")
    with pytest.raises(ValueError, match="batch_size"):
        gen.step(0)


# ---------------------------------------------------------------- model and losses
def _stack(device, seed=0, batch=2, sigma=0.0):
    gen = torch.Generator(device).manual_seed(seed)
    x = 0.05 + 0.6 * torch.rand(batch, C, H, W, generator=gen, device=device)
    noise = dinv.physics.GaussianNoise(
        sigma, rng=torch.Generator(device).manual_seed(seed)
    )
    physics = ExposureStack(
        torch.tensor(TIMES), response="srgb", noise_model=noise, device=device
    )
    return x, physics(x), physics


def test_stack_reconstructor_untrained_is_masked_weighted_merge(device):
    x, y, physics = _stack(device)
    icrf = ICRF.from_response("srgb", channels=C).to(device)
    model = StackReconstructor(icrf, n_exposures=N, channels=C, lower=0.05, upper=0.95)
    gen = ExposureSplittingMaskGenerator((N, C, H, W), 0.6, device=device)
    mask = gen.step(2, seed=3)["mask"]
    y1, physics1 = SplittingLoss.split(mask, y, physics)
    times, found = stack_split_parts(physics1)
    assert torch.equal(found, mask)
    out = model(y1, physics1)
    # independent reference: loop over pixels, hat-weighted mean of ICRF(y)/t on kept valid codes
    lin = icrf(y).detach().cpu().double()
    yc, mc = y.cpu().double(), mask.cpu().double()
    ref = torch.zeros(2, C, H, W, dtype=torch.float64)
    for b in range(2):
        for c in range(C):
            for i in range(H):
                for j in range(W):
                    num = den = 0.0
                    best = 0.0
                    for k, t in enumerate(TIMES):
                        v = float(yc[b, k, c, i, j])
                        if mc[b, k, c, i, j] == 0:
                            continue
                        best = max(best, float(lin[b, k, c, i, j]) / t)
                        if 0.05 <= v <= 0.95:
                            w = 1.0 - abs(2.0 * v - 1.0)
                            num += w * float(lin[b, k, c, i, j]) / t
                            den += w
                    ref[b, c, i, j] = num / den if den > 0 else best
    torch.testing.assert_close(out.detach().cpu().double(), ref, rtol=1e-5, atol=1e-6)
    full = model(y, physics)  # no mask: the whole stack
    assert torch.allclose(full, x, rtol=0.02, atol=2e-3)


def test_stack_reconstructor_detach_icrf_controls_gradient(device):
    _, y, physics = _stack(device)
    for detach, expect in ((True, False), (False, True)):
        icrf = ICRF(channels=C, n_points=16, init="gamma").to(device)
        model = StackReconstructor(icrf, N, C, detach_icrf=detach)
        torch.nn.init.normal_(model.backbone[-1].weight, std=0.1)
        model(y, physics).sum().backward()
        grads = [p.grad for p in icrf.parameters()]
        assert any(g is not None and bool(g.abs().sum() > 0) for g in grads) is expect


def test_stack_reconstructor_rejects_bad_inputs():
    icrf = ICRF(channels=C, n_points=8)
    with pytest.raises(ValueError, match="n_exposures"):
        StackReconstructor(icrf, 0, C)
    with pytest.raises(ValueError, match="lower"):
        StackReconstructor(icrf, N, C, lower=0.9, upper=0.1)
    model = StackReconstructor(icrf, N, C)
    physics = ExposureStack(torch.tensor(TIMES))
    with pytest.raises(ValueError, match=r"\(B, 3, 2, H, W\)"):
        model(torch.rand(1, 2, C, 5, 5), physics)
    with pytest.raises(ValueError, match="exposure_times"):
        model(torch.rand(1, N, C, 5, 5), dinv.physics.Denoising())


def test_stack_prediction_error_matches_loop_reference(device):
    gen = torch.Generator(device).manual_seed(0)
    B = 2
    x_net = torch.rand(B, C, H, W, generator=gen, device=device, dtype=torch.float64)
    x_lin = torch.rand(B, N, C, H, W, generator=gen, device=device, dtype=torch.float64)
    weights = torch.rand(
        B, N, 1, H, W, generator=gen, device=device, dtype=torch.float64
    )
    t = torch.tensor(TIMES, device=device, dtype=torch.float64)
    out = stack_prediction_error(x_net, x_lin, t, weights)
    ref = torch.zeros(B, dtype=torch.float64)
    xc, lc, wc = x_net.cpu(), x_lin.cpu(), weights.cpu()
    for b in range(B):
        total = 0.0
        for k in range(N):
            for c in range(C):
                for i in range(H):
                    for j in range(W):
                        z = TIMES[k] * float(xc[b, c, i, j])
                        e = ((z - float(lc[b, k, c, i, j])) / TIMES[k]) ** 2
                        total += float(wc[b, k, 0, i, j]) * e
        ref[b] = total / (N * C * H * W)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-6, atol=1e-12)


def test_stack_prediction_error_old_import_path_is_the_functional():
    from deepinv_icrf.loss import stack_splitting

    assert stack_splitting.stack_prediction_error is stack_prediction_error
    assert "stack_prediction_error" in stack_splitting.__all__


@pytest.mark.parametrize(
    ("x_net_shape", "x_lin_shape", "t_shape", "w_shape", "match"),
    [
        ((2, C, H, W), (2, C, H, W), (N,), None, r"`x_lin` to have shape \(B, N, C"),
        ((2, C, H, W), (2, 1, N, C, H, W), (N,), None, r"`x_lin` to have shape"),
        (
            (2, C, H),
            (2, N, C, H, W),
            (N,),
            None,
            r"`x_net` to have shape \(B, C, H, W\)",
        ),
        (
            (1, C, H, W),
            (2, N, C, H, W),
            (N,),
            None,
            r"\(2, 2, 13, 11\) to match `x_lin`",
        ),
        ((2, C, W, H), (2, N, C, H, W), (N,), None, r"got shape \(2, 2, 11, 13\)"),
        (
            (2, C, H, W),
            (2, N, C, H, W),
            (N - 1,),
            None,
            r"`exposure_times` to have shape",
        ),
        (
            (2, C, H, W),
            (2, N, C, H, W),
            (3, N),
            None,
            r"\(3,\), \(1, 3\) or \(2, 3\)",
        ),
        (
            (2, C, H, W),
            (2, N, C, H, W),
            (N,),
            (2, N, 4, H, W),
            r"`weights` to be broad",
        ),
    ],
)
def test_stack_prediction_error_rejects_bad_shapes(
    device, x_net_shape, x_lin_shape, t_shape, w_shape, match
):
    x_net = torch.rand(x_net_shape, device=device)
    x_lin = torch.rand(x_lin_shape, device=device)
    t = torch.rand(t_shape, device=device) + 0.5
    weights = None if w_shape is None else torch.rand(w_shape, device=device)
    with pytest.raises(ValueError, match=match):
        stack_prediction_error(x_net, x_lin, t, weights)


def test_stack_prediction_error_accepts_per_sample_times(device):
    gen = torch.Generator(device).manual_seed(1)
    x_net = torch.rand(2, C, H, W, generator=gen, device=device, dtype=torch.float64)
    x_lin = torch.rand(2, N, C, H, W, generator=gen, device=device, dtype=torch.float64)
    t = torch.tensor([TIMES, (2.0, 0.1, 0.3)], device=device, dtype=torch.float64)
    out = stack_prediction_error(x_net, x_lin, t)
    for b in range(2):
        single = stack_prediction_error(x_net[b : b + 1], x_lin[b : b + 1], t[b])
        torch.testing.assert_close(out[b : b + 1], single)
    assert not torch.allclose(out[1], stack_prediction_error(x_net, x_lin, t[0])[1])


def test_stack_prediction_loss_weights_by_resimulated_codes(device):
    x, y, physics = _stack(device, batch=1)
    loss = StackPredictionLoss(lower=0.05, upper=0.95)
    x_net = x * 1.1
    value = loss(x_net=x_net, y=y, physics=physics)
    # reference: weights are hat(f(clip(t x_net))) on the valid range of the re-simulated code
    t = torch.tensor(TIMES, device=device).view(1, N, 1, 1, 1)
    code = physics.crf((t * x_net.unsqueeze(1)).clamp(0, 1))
    w = (1 - (2 * code - 1).abs()) * ((code >= 0.05) & (code <= 0.95))
    target = physics.inverse_response(y)
    ref = (w * (x_net.unsqueeze(1) - target / t) ** 2).mean(dim=(1, 2, 3, 4))
    torch.testing.assert_close(value, ref)


def test_stack_prediction_error_gradcheck():
    gen = torch.Generator().manual_seed(0)
    x_net = torch.rand(
        1, C, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True
    )
    x_lin = torch.rand(
        1, N, C, 4, 3, generator=gen, dtype=torch.float64, requires_grad=True
    )
    weights = torch.rand(1, N, C, 4, 3, generator=gen, dtype=torch.float64)
    t = torch.tensor(TIMES, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b: stack_prediction_error(a, b, t, weights), (x_net, x_lin)
    )


def test_stack_prediction_loss_is_small_at_truth_and_uses_split_mask(device):
    x, y, physics = _stack(device)
    loss = StackPredictionLoss()
    value = loss(x_net=x, y=y, physics=physics)
    assert value.shape == (2,)
    assert float(value.max()) < 1e-5  # quantisation only
    assert float(loss(x_net=1.3 * x, y=y, physics=physics).min()) > 1e-4
    mask = torch.zeros(2, N, C, H, W, device=device)
    y2, physics2 = SplittingLoss.split(mask, y, physics)
    assert float(loss(x_net=2 * x, y=y2, physics=physics2).abs().max()) == 0.0
    with pytest.raises(ValueError, match="ExposureStack"):
        loss(x_net=x, y=y, physics=dinv.physics.Denoising())
    with pytest.raises(ValueError, match="lower"):
        StackPredictionLoss(lower=0.5, upper=0.5)


def test_linearized_stack_loss_equals_inner_loss_on_icrf_output(device):
    _, y, physics = _stack(device)
    icrf = ICRF(channels=C, n_points=32, init="gamma").to(device)
    model = StackReconstructor(icrf, N, C)
    inner = RadiometricLinearityLoss(path="dense")
    wrapped = LinearizedStackLoss(inner)(
        x_net=model(y, physics), y=y, physics=physics, model=model
    )
    direct = inner(x_net=icrf(y), y=y, physics=physics, model=icrf)
    torch.testing.assert_close(wrapped, direct)
    with pytest.raises(ValueError, match="ICRF"):
        LinearizedStackLoss(inner)(y=y, physics=physics, model=torch.nn.Identity())


# ---------------------------------------------------------------- one Trainer run
@pytest.mark.parametrize("joint", [False, True], ids=["true_icrf", "joint_icrf"])
def test_exposure_splitting_trainer_run_decreases_loss(device, joint):
    torch.manual_seed(0)
    times = torch.tensor(TIMES)
    x, y, truth = _stack(device, batch=8, sigma=0.01)
    if joint:
        icrf = ICRF(channels=C, n_points=64, init="identity").to(device)
    else:
        icrf = ICRF.from_response("srgb", channels=C, n_points=64).to(device)
        icrf.requires_grad_(False)
    model = StackReconstructor(icrf, N, C, features=8, depth=3, lower=0.05, upper=0.95)
    physics = ExposureStack(times, response=icrf, device=device)
    gen = ExposureSplittingMaskGenerator(
        (N, C, H, W), 0.8, device=device, rng=torch.Generator(device).manual_seed(0)
    )
    split = EquivariantSplittingLoss(
        mask_generator=gen,
        consistency_loss=None,
        prediction_loss=StackPredictionLoss(lower=0.05, upper=0.95),
        eval_n_samples=2,
    )
    terms = {"split": split}
    if joint:
        terms["linearity"] = LinearizedStackLoss(RadiometricLinearityLoss())
        terms["smooth"] = SmoothnessLoss()
    loss = WeightedLossScheduler(terms)
    loader = torch.utils.data.DataLoader([{"y": yi} for yi in y], batch_size=4)
    params = [{"params": model.backbone.parameters(), "lr": 3e-3}]
    if joint:
        params.append({"params": icrf.parameters(), "lr": 5e-2})
    trainer = TermLoggingTrainer(
        model,
        physics,
        torch.optim.Adam(params),
        loader,
        epochs=6,
        losses=loss,
        metrics=[],
        online_measurements=False,
        save_path=None,
        verbose=False,
        show_progress_bar=False,
        plot_images=False,
        device=device,
        non_blocking_transfers=False,
    )
    trained = trainer.train()
    history = trainer.term_loss_history
    key = "linearity" if joint else "split"
    assert history[key][-1] < history[key][0]
    assert torch.isfinite(trained(y, physics)).all()
    if joint:
        initial = ICRF(channels=C, n_points=64).curve
        true = ICRF.from_response("srgb", channels=C, n_points=64).curve
        err_now = (icrf.curve.detach().cpu() - true).abs().mean()
        assert err_now < (initial - true).abs().mean()
