from __future__ import annotations

import copy
import warnings

import deepinv as dinv
import pytest
import torch
from deepinv.loss.measplit import SplittingLoss
from hypothesis import given, settings
from hypothesis import strategies as st

from deepinv_icrf.loss import EquivariantSplittingLoss
from deepinv_icrf.models import EquivariantSplittingModel
from deepinv_icrf.models.splitting import find_splitting_model

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIGMA = 0.1


class TinyNet(dinv.models.Reconstructor):
    r"""Two convolutions on the adjoint: ``body(A^T y)``."""

    def __init__(self, channels: int = 1, width: int = 4) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(channels, width, 3, padding=1),
            torch.nn.Tanh(),
            torch.nn.Conv2d(width, channels, 3, padding=1),
        )

    def forward(self, y, physics, **kwargs):
        return self.body(physics.A_adjoint(y))


class MarkedModel(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, y, physics, **kwargs):
        return self.model(y, physics, **kwargs)


class MarkingLoss(dinv.loss.MCLoss):
    r"""MCLoss whose ``adapt_model`` wraps the model in a :class:`MarkedModel`."""

    def adapt_model(self, model, **kwargs):
        return MarkedModel(model)


def make_physics(shape, device, dtype=torch.float32, seed=0):
    gen = torch.Generator(device).manual_seed(seed)
    mask = (torch.rand(shape, generator=gen, device=device) < 0.8).to(dtype)
    return dinv.physics.Inpainting(
        img_size=shape,
        mask=mask,
        noise_model=dinv.physics.GaussianNoise(SIGMA),
        device=device,
    )


def make_data(shape, device, dtype=torch.float32, batch=2, seed=0):
    physics = make_physics(shape, device, dtype, seed)
    gen = torch.Generator(device).manual_seed(seed + 1)
    x = torch.rand((batch, *shape), generator=gen, device=device, dtype=dtype)
    noise = torch.randn(x.shape, generator=gen, device=device, dtype=dtype) * SIGMA
    y = physics.A(x) + physics.mask * noise
    return x, y, physics


def make_generator(shape, device, seed=0, split_ratio=0.7):
    return dinv.physics.generator.BernoulliSplittingMaskGenerator(
        img_size=shape,
        split_ratio=split_ratio,
        device=device,
        rng=torch.Generator(device).manual_seed(seed),
    )


def make_reflect(seed=3, n_trans=1):
    return dinv.transform.Reflect(
        dim=[-2, -1], n_trans=n_trans, rng=torch.Generator().manual_seed(seed)
    )


def make_rotate(seed=5, n_trans=1):
    rotate = dinv.transform.Rotate(
        n_trans=n_trans,
        multiples=90,
        positive=True,
        rng=torch.Generator().manual_seed(seed),
    )
    reflect = dinv.transform.Reflect(
        dim=[-1],
        n_trans=1 if n_trans == 1 else 2,
        rng=torch.Generator().manual_seed(seed),
    )
    return rotate * reflect


def nesting(model) -> int:
    r"""How many splitting models are nested in ``model`` (through ``.model``)."""
    count, obj = 0, model
    while obj is not None:
        if isinstance(obj, (EquivariantSplittingModel, SplittingLoss.SplittingModel)):
            count += 1
        obj = getattr(obj, "model", None)
    return count


def reference_mc(x_net, y, physics_mask, mask, consistency=True):
    r"""ES value with MSE terms for one mask, written out per sample."""
    batch = y.shape[0]
    m1 = mask * physics_mask
    m2 = physics_mask - m1
    ax = physics_mask * x_net
    out = []
    for b in range(batch):
        pred = ((m2[b if m2.shape[0] > 1 else 0] * (ax[b] - y[b])) ** 2).mean()
        value = pred / m2.mean()
        if consistency:
            cons = ((m1[b if m1.shape[0] > 1 else 0] * (ax[b] - y[b])) ** 2).mean()
            value = value + cons / m1.mean()
        out.append(value)
    return torch.stack(out)


def run(loss, model, y, physics, **kwargs):
    x_net = model(y, physics, update_parameters=True)
    return x_net, loss(x_net=x_net, y=y, physics=physics, model=model, **kwargs)


# ----------------------------------------------------------------------------- parity


PARITY_CASES = {
    "no-transform-1x16x16": ((1, 16, 16), None, None),
    "reflect-3x13x11": ((3, 13, 11), make_reflect, lambda: make_reflect(9, n_trans=4)),
    "rotate-1x15x15": ((1, 15, 15), make_rotate, lambda: make_rotate(11, n_trans=4)),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
def test_es_parity_with_deepinv_train_and_eval(case, device):
    shape, transform, eval_transform = PARITY_CASES[case]
    dtype = torch.float64
    _, y, physics = make_data(shape, device, dtype)
    net = TinyNet(shape[0]).to(device, dtype)

    def config():
        return dict(
            mask_generator=make_generator(shape, device),
            consistency_loss=dinv.loss.MCLoss(metric=dinv.metric.MSE()),
            prediction_loss=dinv.loss.MCLoss(metric=dinv.metric.MSE()),
            transform=None if transform is None else transform(),
            eval_transform=None if eval_transform is None else eval_transform(),
            eval_n_samples=2,
        )

    ref = dinv.loss.EquivariantSplittingLoss(**config())
    ours = EquivariantSplittingLoss(**config())
    ref_model = ref.adapt_model(copy.deepcopy(net))
    our_model = ours.adapt_model(copy.deepcopy(net))
    for mode in ("train", "eval", "train"):
        getattr(ref_model, mode)()
        getattr(our_model, mode)()
        ref_x, ref_value = run(ref, ref_model, y, physics)
        our_x, our_value = run(ours, our_model, y, physics)
        torch.testing.assert_close(our_x, ref_x, rtol=1e-6, atol=0)
        assert our_value.shape == (y.shape[0],)
        ref_value = ref_value.expand(y.shape[0])
        torch.testing.assert_close(our_value, ref_value, rtol=1e-6, atol=0)
        masks = our_model.get_masks()
        assert len(masks) == (1 if mode == "train" else 2)
        expected = torch.stack(
            [reference_mc(our_x, y, physics.mask, m) for m in masks]
        ).mean(0)
        torch.testing.assert_close(our_value, expected, rtol=1e-6, atol=0)


@settings(max_examples=8, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    split_ratio=st.floats(0.3, 0.95),
    batch=st.integers(1, 3),
)
def test_es_parity_property_random_configs(seed, split_ratio, batch):
    shape = (2, 9, 7)
    _, y, physics = make_data(shape, "cpu", torch.float64, batch=batch, seed=seed)
    net = TinyNet(2).double()
    losses = [
        cls(mask_generator=make_generator(shape, "cpu", seed, split_ratio))
        for cls in (dinv.loss.EquivariantSplittingLoss, EquivariantSplittingLoss)
    ]
    values = []
    for loss in losses:
        model = loss.adapt_model(copy.deepcopy(net))
        values.append(run(loss, model, y, physics)[1])
    torch.testing.assert_close(values[1], values[0].expand(batch), rtol=1e-6, atol=0)


# ----------------------------------------------------------------- fixed behaviours


def test_es_consistency_none_switches_term_off(device):
    shape = (1, 16, 16)
    _, y, physics = make_data(shape, device)
    net = TinyNet().to(device)
    ours = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device), consistency_loss=None
    )
    assert ours.consistency_loss is None
    model = ours.adapt_model(copy.deepcopy(net))
    x_net, value = run(ours, model, y, physics)
    expected = reference_mc(x_net, y, physics.mask, model.get_masks()[0], False)
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-12)

    ref = dinv.loss.EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device), consistency_loss=None
    )
    ref_model = ref.adapt_model(copy.deepcopy(net))
    ref_x, ref_value = run(ref, ref_model, y, physics)
    # deepinv turns None into MCLoss: its value still holds the consistency term.
    assert isinstance(ref.consistency_loss, dinv.loss.MCLoss)
    mask = ref_model.get_masks()[0]
    no_term = reference_mc(ref_x, y, physics.mask, mask, False)
    with_term = reference_mc(ref_x, y, physics.mask, mask, True)
    torch.testing.assert_close(ref_value, with_term, rtol=1e-5, atol=1e-10)
    assert not torch.allclose(ref_value, no_term, rtol=1e-2)


def test_es_default_consistency_is_mse_mcloss():
    loss = EquivariantSplittingLoss(img_size=(1, 8, 8))
    assert isinstance(loss.consistency_loss, dinv.loss.MCLoss)
    assert isinstance(loss.consistency_loss.metric, dinv.metric.MSE)
    assert isinstance(loss.prediction_loss.metric, dinv.metric.MSE)


def test_es_r2r_consistency_matches_reference(device):
    shape = (1, 16, 16)
    _, y, physics = make_data(shape, device)
    net = TinyNet().to(device)
    alpha = 0.2
    ours = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device),
        consistency_loss=dinv.loss.R2RLoss(alpha=alpha),
    )
    model = ours.adapt_model(copy.deepcopy(net))
    assert isinstance(model.model, EquivariantSplittingModel)  # R2RModel outside
    x_net, value = run(ours, model, y, physics)
    assert value.shape == (2,) and bool(torch.isfinite(value).all())
    # reference: R2R target y2 = (y1 - (1 - a) M1 y') / a on the kept split, y' = re-corrupted y
    split = find_splitting_model(model)
    m1 = split.get_masks()[0] * physics.mask
    m2 = physics.mask - m1
    corrupted = model.get_corruption()
    target = (m1 * y - (1 - alpha) * m1 * corrupted) / alpha
    ax = physics.mask * x_net
    cons = ((m1 * ax - target) ** 2).mean() / m1.mean()  # R2R's MSELoss: batch mean
    pred = ((m2 * (ax - y)) ** 2).flatten(1).mean(1) / m2.mean()
    torch.testing.assert_close(value, cons + pred, rtol=1e-5, atol=1e-8)
    value.mean().backward()
    assert net.body[0].weight.grad is None  # the copy was trained, not `net`
    assert find_splitting_model(model).model.body[0].weight.grad is not None

    ref = dinv.loss.EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device),
        consistency_loss=dinv.loss.R2RLoss(alpha=alpha),
    )
    ref_model = ref.adapt_model(copy.deepcopy(net))
    with pytest.raises(ValueError, match="Mask not generated"):
        run(ref, ref_model, y, physics)


def reference_sure(net, x_net, y, physics_mask, mask, b, tau):
    r"""SURE consistency term with the divergence along the same mask, plus prediction."""
    m1 = mask * physics_mask
    m2 = physics_mask - m1
    ax = physics_mask * x_net
    perturbed = y + tau * b
    x_pert = net.body(physics_mask * (mask * perturbed))
    y_pred = m1 * ax
    y_pert = m1 * physics_mask * x_pert
    mse = ((y_pred - m1 * y) ** 2).flatten(1).mean(1)
    div = (b * (y_pert - y_pred) / tau).flatten(1).mean(1)
    cons = (mse + 2 * SIGMA**2 * div - SIGMA**2) / m1.mean()
    pred = ((m2 * (ax - y)) ** 2).flatten(1).mean(1) / m2.mean()
    return cons + pred


def test_es_sure_consistency_uses_one_mask_per_step(device):
    shape = (1, 15, 13)
    tau = 1e-3
    _, y, physics = make_data(shape, device, torch.float64)
    net = TinyNet().to(device, torch.float64)

    def sure():
        rng = torch.Generator(device).manual_seed(7)
        return dinv.loss.SureGaussianLoss(SIGMA, tau=tau, rng=rng)

    ours = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device), consistency_loss=sure()
    )
    model = ours.adapt_model(copy.deepcopy(net))
    x_net, value = run(ours, model, y, physics)
    b = torch.empty_like(y).normal_(generator=torch.Generator(device).manual_seed(7))
    expected = reference_sure(
        find_splitting_model(model).model, x_net, y, physics.mask,
        model.get_masks()[0], b, tau,
    )  # fmt: skip
    torch.testing.assert_close(value, expected, rtol=1e-6, atol=1e-10)

    ref = dinv.loss.EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device), consistency_loss=sure()
    )
    ref_model = ref.adapt_model(copy.deepcopy(net))
    ref_x, ref_value = run(ref, ref_model, y, physics)
    ref_expected = reference_sure(
        ref_model.model, ref_x, y, physics.mask, ref_model.get_masks()[0], b, tau
    )
    # deepinv redraws the splitting mask inside the divergence: far from the estimate
    assert (ref_value - ref_expected).abs().max() > 100 * (value - expected).abs().max()
    assert (ref_value - ref_expected).abs().max() > 1e-2


def test_es_sure_loss_variance_below_third_of_deepinv(device):
    shape = (1, 16, 16)
    _, y, physics = make_data(shape, device, batch=4)
    net = TinyNet().to(device)
    variances = []
    for cls in (dinv.loss.EquivariantSplittingLoss, EquivariantSplittingLoss):
        loss = cls(
            mask_generator=make_generator(shape, device),
            consistency_loss=dinv.loss.SureGaussianLoss(
                SIGMA, tau=1e-2, rng=torch.Generator(device).manual_seed(1)
            ),
        )
        model = loss.adapt_model(copy.deepcopy(net))
        x_net = model(y, physics, update_parameters=True)
        with torch.no_grad():
            values = torch.stack(
                [
                    loss(x_net=x_net, y=y, physics=physics, model=model).mean()
                    for _ in range(20)
                ]
            )
        variances.append(values.var())
    assert variances[1] < variances[0] / 3


def test_es_sure_unsure_mode_runs_with_model_training_flag(device):
    shape = (1, 16, 16)
    _, y, physics = make_data(shape, device)
    sure = dinv.loss.SureGaussianLoss(SIGMA, unsure=True)
    loss = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device), consistency_loss=sure
    )
    model = loss.adapt_model(TinyNet().to(device))
    before = float(sure.sigma2)
    value = run(loss, model, y, physics)[1]
    assert value.shape == (2,)
    assert (
        float(sure.sigma2) != before
    )  # UNSURE stepped its noise level (training mode)


def test_es_replay_reproduces_forward_with_transform(device):
    shape = (1, 15, 15)
    _, y, physics = make_data(shape, device)
    loss = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device),
        transform=make_rotate(),
        eval_transform=make_rotate(2, n_trans=4),
        eval_n_samples=2,
    )
    model = loss.adapt_model(TinyNet().to(device))
    for mode in ("train", "eval"):
        getattr(model, mode)()
        x_net = model(y, physics)
        draw = model.find_draw(x_net)
        with torch.set_grad_enabled(mode == "train"):
            replayed = model.replay(y, physics, draw)
        torch.testing.assert_close(replayed, x_net, rtol=0, atol=0)
        assert len(draw.masks) == (1 if mode == "train" else 2)
        assert len(draw.g_params[0]) == (1 if mode == "train" else 8)


def test_es_survives_deepcopy(device):
    shape = (1, 16, 16)
    _, y, physics = make_data(shape, device)
    ours = EquivariantSplittingLoss(mask_generator=make_generator(shape, device))
    model = ours.adapt_model(TinyNet().to(device))
    run(ours, model, y, physics)[1].mean().backward()  # a step before copying
    loss2, model2 = copy.deepcopy((ours, model))
    assert model2._records == []
    x_net, value = run(loss2, model2, y, physics)
    expected = reference_mc(x_net, y, physics.mask, model2.get_masks()[0])
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-10)
    assert model2.mask_generator is loss2.mask_generator

    ref = dinv.loss.EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device)
    )
    ref_model = ref.adapt_model(TinyNet().to(device))
    ref2, ref_model2 = copy.deepcopy((ref, ref_model))
    with pytest.raises(RuntimeError, match="Unregistered model"):
        run(ref2, ref_model2, y, physics)


def test_es_survives_dataparallel(device):
    shape = (1, 16, 16)
    _, y, physics = make_data(shape, device)
    ours = EquivariantSplittingLoss(mask_generator=make_generator(shape, device))
    model = torch.nn.DataParallel(ours.adapt_model(TinyNet().to(device)))
    x_net = model(y, physics)  # DataParallel hides update_parameters from Trainer
    value = ours(x_net=x_net, y=y, physics=physics, model=model)
    masks = model.module.get_masks()
    torch.testing.assert_close(
        value, reference_mc(x_net, y, physics.mask, masks[0]), rtol=1e-5, atol=1e-10
    )
    assert ours.adapt_model(model) is model

    ref = dinv.loss.EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device)
    )
    ref_model = torch.nn.DataParallel(ref.adapt_model(TinyNet().to(device)))
    with pytest.raises(RuntimeError, match="Unregistered model"):
        run(ref, ref_model, y, physics)


def _compile_case(device, backend, transform):
    shape = (1, 16, 16)
    _, y, physics = make_data(shape, device)
    ours = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device), transform=transform
    )
    model = torch.compile(ours.adapt_model(TinyNet().to(device)), backend=backend)
    x_net = model(y, physics)
    value = ours(x_net=x_net, y=y, physics=physics, model=model)
    value.mean().backward()
    split = find_splitting_model(model)
    assert split is model._orig_mod
    assert split.model.body[0].weight.grad is not None
    expected = reference_mc(x_net, y, physics.mask, split.get_masks()[0])
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-10)
    assert ours.adapt_model(model) is model

    ref = dinv.loss.EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device)
    )
    ref_model = ref.adapt_model(TinyNet().to(device))
    ref_x = ref_model(y, physics, update_parameters=True)
    with pytest.raises(RuntimeError, match="Unregistered model"):
        # what Trainer passes once the adapted model is compiled
        ref(x_net=ref_x, y=y, physics=physics, model=torch.compile(ref_model))


def test_es_survives_torch_compile_eager_backend(device):
    _compile_case(device, "eager", None)


@pytest.mark.slow
def test_es_survives_torch_compile_inductor(device):
    _compile_case(device, "inductor", make_reflect())


def test_es_adapt_model_never_wraps_twice(device):
    shape = (1, 16, 16)
    ours = EquivariantSplittingLoss(mask_generator=make_generator(shape, device))
    model = ours.adapt_model(TinyNet().to(device))
    assert ours.adapt_model(model) is model
    loss2, model2 = copy.deepcopy((ours, model))
    assert loss2.adapt_model(model2) is model2
    fresh = EquivariantSplittingLoss(mask_generator=make_generator(shape, device))
    assert fresh.adapt_model(model) is model
    r2r = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device),
        consistency_loss=dinv.loss.R2RLoss(),
    )
    wrapped = r2r.adapt_model(TinyNet().to(device))
    assert r2r.adapt_model(wrapped) is wrapped
    assert r2r.adapt_model(torch.nn.DataParallel(wrapped)).module is wrapped
    assert nesting(wrapped) == 1

    ref = dinv.loss.EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device)
    )
    ref_model = ref.adapt_model(TinyNet().to(device))
    ref2, ref_model2 = copy.deepcopy((ref, ref_model))
    assert nesting(ref2.adapt_model(ref_model2)) == 2  # deepinv wraps again


def test_es_calls_prediction_adapt_model(device):
    shape = (1, 16, 16)
    _, y, physics = make_data(shape, device)
    ours = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device), prediction_loss=MarkingLoss()
    )
    model = ours.adapt_model(TinyNet().to(device))
    assert isinstance(model, MarkedModel)
    assert isinstance(model.model, EquivariantSplittingModel)
    assert run(ours, model, y, physics)[1].shape == (2,)

    ref = dinv.loss.EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device), prediction_loss=MarkingLoss()
    )
    assert not isinstance(ref.adapt_model(TinyNet().to(device)), MarkedModel)


def test_es_returns_batch_shape_with_scalar_inner_losses(device):
    shape = (1, 16, 16)
    _, y, physics = make_data(shape, device, batch=3)

    def config():
        return dict(
            mask_generator=make_generator(shape, device),
            consistency_loss=dinv.loss.MCLoss(),  # torch.nn.MSELoss: a batch mean
            prediction_loss=dinv.loss.MCLoss(),
        )

    ours = EquivariantSplittingLoss(**config())
    model = ours.adapt_model(TinyNet().to(device))
    x_net, value = run(ours, model, y, physics)
    assert value.shape == (3,)
    expected = reference_mc(x_net, y, physics.mask, model.get_masks()[0]).mean()
    torch.testing.assert_close(value, expected.expand(3), rtol=1e-5, atol=1e-10)

    ref = dinv.loss.EquivariantSplittingLoss(**config())
    ref_model = ref.adapt_model(TinyNet().to(device))
    assert run(ref, ref_model, y, physics)[1].shape == ()


def test_es_uses_the_draw_of_x_net_after_other_calls(device):
    shape = (1, 16, 16)
    _, y, physics = make_data(shape, device)
    loss = EquivariantSplittingLoss(mask_generator=make_generator(shape, device))
    model = loss.adapt_model(TinyNet().to(device))
    x_net = model(y, physics)
    mask = model.get_masks()[0].clone()
    other = model(y + 0.01, physics)  # e.g. another loss calling the model
    assert not torch.equal(model.get_masks()[0], mask)
    value = loss(x_net=x_net, y=y, physics=physics, model=model)
    torch.testing.assert_close(value, reference_mc(x_net, y, physics.mask, mask))
    value_other = loss(x_net=other, y=y, physics=physics, model=model)
    torch.testing.assert_close(
        value_other, reference_mc(other, y, physics.mask, model.get_masks()[0])
    )
    # a tensor the model did not return: latest explicit draw, else the latest draw
    explicit = model(y, physics, update_parameters=True)
    explicit_mask = model.get_masks()[0]
    model(y, physics)
    detached = explicit.detach().clone()
    torch.testing.assert_close(
        loss(x_net=detached, y=y, physics=physics, model=model),
        reference_mc(detached, y, physics.mask, explicit_mask),
    )
    model(y, physics, update_parameters=False)  # not recorded
    assert model.find_draw(explicit).masks[0] is explicit_mask


def test_es_gradcheck_float64(device):
    shape = (1, 5, 4)
    _, y, physics = make_data(shape, device, torch.float64)
    loss = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device),
        consistency_loss=dinv.loss.SureGaussianLoss(SIGMA),
    )
    model = loss.adapt_model(TinyNet().to(device, torch.float64))
    x_net = model(y, physics, update_parameters=True).detach().requires_grad_(True)
    rng_state = loss.consistency_loss.rng

    def fn(xn):
        loss.consistency_loss.rng = torch.Generator(device).manual_seed(3)
        return loss(x_net=xn, y=y, physics=physics, model=model)

    assert torch.autograd.gradcheck(fn, (x_net,))
    loss.consistency_loss.rng = rng_state


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_es_output_dtype(dtype, expected, device):
    shape = (1, 9, 7)
    _, y, physics = make_data(shape, device)
    loss = EquivariantSplittingLoss(mask_generator=make_generator(shape, device))
    model = loss.adapt_model(dinv.models.ArtifactRemoval(lambda x, sigma: 0.5 * x))
    y = y.to(dtype)
    x_net = model(y, physics).to(dtype)  # e.g. a half-precision network output
    value = loss(x_net=x_net, y=y, physics=physics, model=model)
    assert value.dtype == expected and value.shape == (2,)
    assert value.device.type == torch.device(device).type


def test_es_denoising_physics_without_mask(device):
    shape = (3, 13, 11)
    physics = dinv.physics.Denoising(dinv.physics.GaussianNoise(SIGMA))
    y = physics(torch.rand((2, *shape), device=device))
    loss = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device), transform=make_reflect()
    )
    model = loss.adapt_model(TinyNet(3).to(device))
    x_net, value = run(loss, model, y, physics)
    expected = reference_mc(x_net, y, torch.ones_like(y[:1]), model.get_masks()[0])
    torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-10)


# ----------------------------------------------------------------------- validation


def test_es_rejects_bad_arguments():
    gen = make_generator((1, 8, 8), "cpu")
    with pytest.raises(ValueError, match="consistency_loss"):
        EquivariantSplittingLoss(mask_generator=gen, consistency_loss="sure")
    with pytest.raises(TypeError, match="consistency_loss"):
        EquivariantSplittingLoss(
            mask_generator=gen, consistency_loss=torch.nn.MSELoss()
        )
    with pytest.raises(TypeError, match="prediction_loss"):
        EquivariantSplittingLoss(mask_generator=gen, prediction_loss="mc")
    with pytest.raises(ValueError, match="eval_n_samples"):
        EquivariantSplittingLoss(mask_generator=gen, eval_n_samples=0)
    with pytest.raises(ValueError, match="eval_n_samples"):
        EquivariantSplittingLoss(mask_generator=gen, eval_n_samples=True)
    with pytest.raises(ValueError, match="`transform`"):
        EquivariantSplittingLoss(mask_generator=gen, eval_transform=make_reflect())
    with pytest.raises(TypeError, match="transform"):
        EquivariantSplittingLoss(mask_generator=gen, transform=lambda x: x)
    with pytest.raises(ValueError, match="img_size"):
        EquivariantSplittingLoss()
    with pytest.raises(TypeError, match="mask_generator"):
        EquivariantSplittingLoss(mask_generator=torch.nn.Identity())
    with pytest.raises(TypeError, match="model"):
        EquivariantSplittingModel(None, gen)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        EquivariantSplittingLoss(mask_generator=gen, img_size=(1, 8, 8))
    assert any("img_size" in str(w.message) for w in caught)


def test_es_errors_at_call_time(device):
    shape = (1, 8, 8)
    _, y, physics = make_data(shape, device)
    loss = EquivariantSplittingLoss(mask_generator=make_generator(shape, device))
    net = TinyNet().to(device)
    with pytest.raises(RuntimeError, match="adapt_model"):
        loss(x_net=net(y, physics), y=y, physics=physics, model=net)
    model = loss.adapt_model(net)
    with pytest.raises(RuntimeError, match="recorded splitting draw"):
        loss(x_net=y, y=y, physics=physics, model=model)
    with pytest.raises(RuntimeError, match="recorded splitting draw"):
        model.get_masks()
    y3 = torch.cat([y, y[:1]])
    x_net = model(y3, physics)
    with pytest.raises(ValueError, match="batch size 2"):
        model.replay(y, physics, model.find_draw(x_net))
    with pytest.raises(ValueError, match="DataParallel"):
        loss(x_net=x_net[:2], y=y, physics=physics, model=model)

    class PerPixel(dinv.loss.Loss):
        def forward(self, x_net, y, **kwargs):
            return (x_net - y) ** 2

    bad = EquivariantSplittingLoss(
        mask_generator=make_generator(shape, device), prediction_loss=PerPixel()
    )
    model = bad.adapt_model(TinyNet().to(device))
    with pytest.raises(ValueError, match="prediction_loss"):
        run(bad, model, y, physics)
