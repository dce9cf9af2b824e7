r"""ICRFTrainer reads the per-channel losses from the evaluation it backpropagates.

The former bookkeeping (a second, gradient-free evaluation of the losses per batch, restored
with the private switch ``_single_evaluation = False``) is the reference: the single evaluation
must give the same values, gradients, trajectory, early-stopping decisions and checkpoints,
while calling each loss once per step.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from deepinv.loss import Loss
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.utils.data import DataLoader

from deepinv_icrf.data import SyntheticExposureStackDataset
from deepinv_icrf.loss import (
    EndpointLoss,
    LinearRampWeight,
    MonotonicityLoss,
    RangeLoss,
    SmoothnessLoss,
    WeightedLossScheduler,
)
from deepinv_icrf.loss._utils import find_icrf
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack
from deepinv_icrf.training import ICRFTrainer, icrf_objective
from deepinv_icrf.training.trainer import find_checkpoint

C, L, EPOCHS = 3, 17, 3


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the machine is shared, and one thread keeps the reduction order of both runs the same
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CurveSquareMean(Loss):
    r"""A loss without ``per_channel``: it counts fully in every channel."""

    def forward(self, x_net, model, **kwargs):
        value = find_icrf(model).curve.pow(2).mean()
        return value.expand(x_net.shape[0])


class ChannelProbe(Loss):
    r"""Per-channel loss on the curve: channel 0 decreases, the others stay at 1 (a gradient
    of 1 per sample, so they move unless frozen)."""

    def __init__(self):
        super().__init__()
        self.per_channel = False

    def forward(self, x_net, model, **kwargs):
        curve = find_icrf(model).curve
        live = ((curve - 0.5) ** 2).sum(-1)
        flat = curve.sum(-1) - curve.sum(-1).detach() + 1.0
        keep = torch.arange(curve.shape[0], device=curve.device) == 0
        value = torch.where(keep, live, flat).unsqueeze(0).expand(x_net.shape[0], -1)
        return value if self.per_channel else value.sum(-1)


class FailsOnCall(Loss):
    r"""A per-channel loss that raises on its ``fail_at``-th call."""

    def __init__(self, fail_at: int):
        super().__init__()
        self.per_channel = False
        self.fail_at, self.calls = fail_at, 0

    def forward(self, x_net, model, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("probe failure")
        curve = find_icrf(model).curve
        value = curve.pow(2).sum(-1).unsqueeze(0).expand(x_net.shape[0], -1)
        return value if self.per_channel else value.sum(-1)


def _items(device, n=3):
    data = SyntheticExposureStackDataset(
        n_samples=n, n_exposures=4, height=13, width=11, response="srgb", as_dict=True
    )
    out = []
    for k in range(n):
        item = data[k]
        times = item["params"]["exposure_times"]
        out.append(
            {
                "y": item["y"].to(device, torch.float64),
                "params": {"exposure_times": times.to(device, torch.float64)},
            }
        )
    return out


def _losses(path: str) -> list[torch.nn.Module]:
    r"""Every branch: a scheduler of ICRF terms, a nested scheduler with a term without
    ``per_channel``, a top-level per-channel loss and a top-level shared loss."""
    nested = WeightedLossScheduler(
        {
            "inner": WeightedLossScheduler(
                {"end": EndpointLoss(), "square": CurveSquareMean()},
                weights={"square": 0.5},
            ),
            "mono": MonotonicityLoss(squared=False),
        },
        weights={"inner": LinearRampWeight(start=0, end=3, w0=0.5, w1=2.0)},
    )
    return [
        icrf_objective(delta=10.0, path=path),
        nested,
        SmoothnessLoss(),
        CurveSquareMean(),
    ]


def _trainer(device, single, losses=None, save_path=None, **kwargs) -> ICRFTrainer:
    torch.manual_seed(0)
    items = _items(device)
    trainer = ICRFTrainer(
        model=ICRF(channels=C, n_points=L).to(device, torch.float64),
        physics=ExposureStack(items[0]["params"]["exposure_times"]).to(
            device, torch.float64
        ),
        train_dataloader=DataLoader(items, batch_size=2, shuffle=True),
        losses=_losses("dense") if losses is None else losses,
        epochs=kwargs.pop("epochs", EPOCHS),
        lr=0.05,
        save_path=save_path,
        verbose=False,
        show_progress_bar=False,
        **kwargs,
    )
    trainer._single_evaluation = single
    return trainer


def _plateau(opt):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=0)


def _assert_same(a, b, where="checkpoint"):
    if isinstance(a, Tensor):
        assert (
            isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype
        ), where
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=where)
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, np.ndarray):
        assert np.array_equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            if isinstance(key, str) and key.endswith("_extra_state"):
                # the linearity loss's path rule counts new stacks in a row: the former
                # bookkeeping saw every stack twice (a cache hit each time), so it reads 0
                continue
            _assert_same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for k, (u, v) in enumerate(zip(a, b, strict=True)):
            _assert_same(u, v, f"{where}[{k}]")
    elif isinstance(a, float):
        assert math.isclose(a, b, rel_tol=0, abs_tol=1e-12), (where, a, b)
    else:
        assert a == b, (where, a, b)


@pytest.mark.parametrize("path", ["dense", "histogram"])
@pytest.mark.parametrize("mode", ["per_channel", "single"])
def test_single_evaluation_keeps_the_former_trajectory_and_checkpoints(
    device, tmp_path, path, mode
):
    runs = {}
    for single in (False, True):
        trainer = _trainer(
            device,
            single,
            losses=_losses(path),
            save_path=tmp_path / str(single),
            optimizer_mode=mode,
            scheduler=_plateau,
        )
        trainer.train()
        runs[single] = trainer
    old, new = runs[False], runs[True]
    torch.testing.assert_close(new.icrf.curve, old.icrf.curve, rtol=0, atol=1e-12)
    _assert_same(new.channel_loss_history, old.channel_loss_history, "channels")
    _assert_same(new.loss_history, old.loss_history, "loss")
    _assert_same(new.term_loss_history, old.term_loss_history, "terms")
    assert len(new.channel_loss_history) == EPOCHS
    lrs = [[g["lr"] for g in o.param_groups] for o in new.optimizer.optimizers]
    assert lrs == [[g["lr"] for g in o.param_groups] for o in old.optimizer.optimizers]
    ckpt_new = torch.load(find_checkpoint(tmp_path / "True"), weights_only=False)
    ckpt_old = torch.load(find_checkpoint(tmp_path / "False"), weights_only=False)
    assert ckpt_new["epoch"] == EPOCHS - 1
    _assert_same(ckpt_new, ckpt_old)
    # the fit moved the curve, so the comparison is not one of two untouched models
    start = ICRF(channels=C, n_points=L).curve.to(device, torch.float64)
    assert (new.icrf.curve - start).abs().max() > 1e-3


def test_single_evaluation_keeps_the_early_stopping_decisions(device):
    runs = {}
    for single in (False, True):
        trainer = _trainer(
            device, single, losses=[ChannelProbe()], epochs=6, patience=2
        )
        trainer.train()
        runs[single] = trainer
    old, new = runs[False], runs[True]
    assert new.stopped_epoch == old.stopped_epoch
    assert new.stopped_epoch[0] is None and new.stopped_epoch[1] == 2
    assert new.channel_bad_epochs == old.channel_bad_epochs
    _assert_same(new.channel_loss_history, old.channel_loss_history, "channels")
    torch.testing.assert_close(new.icrf.curve, old.icrf.curve, rtol=0, atol=1e-12)


def _count_calls(modules):
    counts = {id(m): 0 for m in modules}

    def hook(module, args, kwargs):
        counts[id(module)] += 1

    handles = [m.register_forward_pre_hook(hook, with_kwargs=True) for m in modules]
    return counts, handles


@pytest.mark.parametrize("single", [True, False])
def test_each_loss_is_evaluated_once_per_step(single):
    losses = _losses("histogram")
    leaves = [
        m
        for loss in losses
        for m in loss.modules()
        if isinstance(m, Loss) and not isinstance(m, WeightedLossScheduler)
    ]
    per_channel = {
        id(m) for m in leaves if isinstance(getattr(m, "per_channel", None), bool)
    }
    assert len(leaves) == 10 and len(per_channel) == 8
    counts, handles = _count_calls(leaves)
    trainer = _trainer("cpu", single, losses=losses, epochs=2)
    trainer.train()
    for handle in handles:
        handle.remove()
    steps = 2 * 2  # epochs x batches of (2, 1) stacks
    for m in leaves:
        # the former bookkeeping evaluated the per-channel terms and top-level losses twice
        twice = not single and (
            id(m) in per_channel or any(m is loss for loss in losses)
        )
        assert counts[id(m)] == (2 * steps if twice else steps), type(m).__name__


def test_single_evaluation_restores_flags_and_hooks(device):
    losses = _losses("dense")
    trainer = _trainer(device, True, losses=losses, epochs=1)
    trainer.train()
    for m in (m for loss in losses for m in loss.modules()):
        assert getattr(m, "per_channel", False) is False
        assert getattr(m, "record_channels", False) is False
        assert len(m._forward_hooks) == 0 and len(m._forward_pre_hooks) == 0


@pytest.mark.parametrize("inside", [False, True])
def test_single_evaluation_restores_flags_when_a_loss_raises(inside):
    probe = FailsOnCall(fail_at=2)
    sched = WeightedLossScheduler({"probe": probe, "end": EndpointLoss()})
    losses = [sched] if inside else [probe, sched]
    trainer = _trainer("cpu", True, losses=losses, epochs=2)
    with pytest.raises(RuntimeError, match="probe failure"):
        trainer.train()
    assert probe.per_channel is False and sched.record_channels is False
    assert len(probe._forward_hooks) == 0


# ------------------------------------------------------------------ scheduler opt-in
def _fixed_terms(curve: Tensor) -> dict[str, torch.nn.Module]:
    return {
        "mono": MonotonicityLoss(curve=curve),
        "range": RangeLoss(curve=curve),
        "end": EndpointLoss(curve=curve),
        "smooth": SmoothnessLoss(curve=curve),
    }


def test_record_channels_keeps_per_channel_values_with_the_same_total_and_gradient():
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(2, 7, generator=gen, dtype=torch.float64)
    x_net = torch.rand(4, 3, 2, 5, 6, generator=gen, dtype=torch.float64)
    weights = {"mono": 2.0, "range": 0.0, "smooth": 3.0}
    results = {}
    for record in (False, True):
        curve = base.clone().requires_grad_(True)
        model = ICRF(channels=2, n_points=7, parameterization="free")
        terms = {"probe": ChannelProbe(), "square": CurveSquareMean()}
        loss = WeightedLossScheduler(
            dict(_fixed_terms(curve), **terms), weights=weights
        )
        loss.record_channels = record
        total = loss(x_net=x_net, model=model)
        total.sum().backward()
        results[record] = (total.detach(), curve.grad, loss)
    (t0, g0, plain), (t1, g1, rec) = results[False], results[True]
    assert torch.equal(t1, t0) and torch.equal(g1, g0)
    assert plain.last_channel_values == {}
    assert set(rec.last_channel_values) == {"mono", "end", "smooth", "probe"}
    assert rec.last_values.keys() == plain.last_values.keys()
    for name, value in rec.last_channel_values.items():
        assert not value.requires_grad
        assert torch.equal(value.sum(-1).mean(), rec.last_values[name])
    # the reference value of a term: a fresh per-channel loss on the same curve
    f = base
    steps = f[:, 1:] - f[:, :-1]
    smooth = ((f[:, :-2] - 2 * f[:, 1:-1] + f[:, 2:]) ** 2).sum(-1)
    mono = torch.where(steps <= 0, steps**2, torch.zeros_like(steps)).sum(-1)
    end = f[:, 0] ** 2 + (f[:, -1] - 1) ** 2
    for name, ref in (("smooth", smooth), ("mono", mono), ("end", end)):
        torch.testing.assert_close(
            rec.last_channel_values[name], ref.expand(4, -1), rtol=1e-12, atol=0
        )
    # flags back to their values
    assert all(
        term.per_channel is False for term in rec.losses if hasattr(term, "per_channel")
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    batch=st.integers(1, 4),
    channels=st.integers(1, 4),
)
def test_record_channels_sums_to_the_total(seed, batch, channels):
    gen = torch.Generator().manual_seed(seed)
    curve = torch.rand(channels, 9, generator=gen, dtype=torch.float64) * 1.4 - 0.2
    loss = WeightedLossScheduler(
        _fixed_terms(curve), weights={"range": 0.3, "smooth": 5.0}
    )
    plain = loss(x_net=torch.zeros(batch, 2, channels, 3, 3, dtype=torch.float64))
    loss.record_channels = True
    total = loss(x_net=torch.zeros(batch, 2, channels, 3, 3, dtype=torch.float64))
    assert torch.equal(total, plain)
    weighted = sum(
        loss.last_weights[name] * value
        for name, value in loss.last_channel_values.items()
    )
    assert weighted.shape == (batch, channels)
    torch.testing.assert_close(weighted.sum(-1), total, rtol=1e-12, atol=1e-15)


def test_record_channels_rejects_non_bool_and_restores_flags_on_error():
    loss = WeightedLossScheduler({"probe": FailsOnCall(fail_at=1)})
    with pytest.raises(TypeError, match="record_channels"):
        loss.record_channels = 1
    loss.record_channels = True
    model = ICRF(channels=2, n_points=5)
    with pytest.raises(RuntimeError, match="probe failure"):
        loss(x_net=torch.zeros(2, 2, 2, 3, 3), model=model)
    assert loss.losses[0].per_channel is False
    value = loss(x_net=torch.zeros(2, 2, 2, 3, 3), model=model)
    assert value.shape == (2,) and loss.last_channel_values["probe"].shape == (2, 2)
