from __future__ import annotations

import math

import pytest
import torch
from deepinv.loss import Loss
from torch import nn
from torch.utils.data import DataLoader, Dataset

from deepinv_icrf.data import demo_exposure_times, demo_scene
from deepinv_icrf.loss import WeightedLossScheduler
from deepinv_icrf.loss._utils import find_icrf
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack, get_response
from deepinv_icrf.training import ICRFTrainer, icrf_objective
from deepinv_icrf.training.trainer import ChannelOptimizer, plot_training

C, L = 3, 9


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the machine is shared: thread oversubscription makes these small fits 4x slower
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class ChannelProbe(Loss):
    r"""Per-channel test loss on the curve: channels in ``moving`` have a decreasing loss
    :math:`\sum_k (f_{ck} - 0.5)^2`; the others a constant loss (1) whose gradient is 1 for
    every sample, so Adam moves them by ``lr`` per step unless they are frozen."""

    def __init__(self, moving: tuple[bool, ...]):
        super().__init__()
        self.register_buffer("moving", torch.tensor(moving))
        self.per_channel = False

    def forward(self, x_net, model, **kwargs):
        curve = find_icrf(model).curve
        live = ((curve - 0.5) ** 2).sum(-1)
        flat = curve.sum(-1) - curve.sum(-1).detach() + 1.0
        value = torch.where(self.moving, live, flat).unsqueeze(0)
        value = value.expand(x_net.shape[0], -1)
        return value if self.per_channel else value.sum(-1)


class WrapOnce(Loss):
    r"""A loss whose ``adapt_model`` wraps the model every time it is called (as deepinv's
    splitting losses do)."""

    class Wrapper(nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, y, physics, **kwargs):
            return self.model(y, physics)

    def adapt_model(self, model, **kwargs):
        return self.Wrapper(model)

    def forward(self, x_net, **kwargs):
        return x_net.mean(dim=tuple(range(1, x_net.ndim)))


class TupleStacks(Dataset):
    r"""Items ``(stack (N, C, H, W), times (N,))``, with a ``true_curve`` attribute."""

    def __init__(self, stacks, times, true_curve):
        self.stacks, self.times, self.true_curve = stacks, times, true_curve

    def __len__(self):
        return self.stacks.shape[0]

    def __getitem__(self, k):
        return self.stacks[k], self.times[k]


def free_icrf() -> ICRF:
    return ICRF(channels=C, n_points=L, parameterization="free", init="identity")


def tiny_stack(device="cpu"):
    t = torch.tensor([1.0, 2.0, 4.0])
    y = ExposureStack(t, response="srgb")(demo_scene(5, 6))[0]
    return y.to(device), t


def test_icrf_trainer_recovers_per_channel_gamma_curves(device):
    # a camera with a different gamma per channel; the ICRF starts at gamma 2.2 everywhere
    camera = get_response("gamma", gamma=(1.8, 2.2, 2.6))
    t = demo_exposure_times(6, shortest=1.0)
    y = ExposureStack(t, response=camera)(demo_scene(16, 20))[0].to(device)
    truth = camera.icrf_curve(n_points=256)
    trainer = ICRFTrainer.from_stack(
        y, t, lr=0.1, epochs=40, true_curve=truth, verbose=False, device=device
    )
    start = trainer.curve_rmse().tolist()
    model = trainer.train()
    end = trainer.curve_rmse()
    # measured (CPU): start [0.0523, 0.0, 0.0418] -> end [0.0031, 0.0023, 0.0020]
    assert start[0] > 0.05 and start[2] > 0.04
    assert end.device.type == device.type
    assert (end < 0.008).all(), end
    assert end[0] < start[0] / 8 and end[2] < start[2] / 8
    assert model.curve.device.type == device.type
    assert trainer.physics[0].exposure_times.device.type == device.type
    assert len(trainer.curve_rmse_history) == 40
    assert trainer.curve_rmse_history[-1] == pytest.approx(end.tolist(), abs=0)


@pytest.mark.filterwarnings(
    "ignore:The tuple format for dataset outputs:DeprecationWarning"
)
def test_icrf_trainer_logs_terms_channels_and_dataset_true_curve(tmp_path):
    stacks = []
    times = torch.tensor([[1.0, 2.0, 4.0], [0.5, 1.0, 2.0]])
    for k in range(2):
        stacks.append(
            ExposureStack(times[k], response="srgb")(demo_scene(6, 7, seed=k))[0]
        )
    truth = get_response("srgb").icrf_curve(n_points=L)
    data = TupleStacks(torch.stack(stacks), times, truth)
    trainer = ICRFTrainer(
        model=free_icrf(),
        physics=ExposureStack(times[0]),
        train_dataloader=DataLoader(data, batch_size=1),
        epochs=3,
        losses=icrf_objective(delta=10.0),
        verbose=False,
        save_path=tmp_path,
        plot_images=True,
        plot_interval=3,
    )
    trainer.train()
    names = ["linearity", "monotonicity", "range", "endpoint", "smoothness"]
    assert sorted(trainer.term_loss_history) == sorted(names)
    assert all(len(v) == 3 for v in trainer.term_loss_history.values())
    assert list(trainer.loss_history) == ["WeightedLossScheduler"]
    assert len(trainer.channel_loss_history) == 3
    assert all(len(v) == C for v in trainer.channel_loss_history)
    # true curve read from the dataset attribute
    assert torch.equal(trainer.true_curve, truth)
    assert len(trainer.curve_rmse_history) == 3
    # the channel losses add up to the logged total (same terms, summed over channels)
    total = trainer.loss_history["WeightedLossScheduler"][-1]
    assert sum(trainer.channel_loss_history[-1]) == pytest.approx(total, rel=1e-5)
    run = trainer.save_path
    assert [p.name for p in run.glob("*.png")] == ["training_0002.png"]
    assert sorted(p.name for p in run.glob("ckp_*.pth.tar")) == [
        "ckp_1.pth.tar",
        "ckp_2.pth.tar",
    ]
    import matplotlib.pyplot as plt

    fig = plot_training(trainer)
    assert len(fig.axes) == 4
    plt.close(fig)


def test_icrf_trainer_builds_one_adam_per_channel():
    model = free_icrf()
    y, t = tiny_stack()
    trainer = ICRFTrainer.from_stack(y, t, model=model, epochs=1, verbose=False)
    opt = trainer.optimizer
    assert isinstance(opt, ChannelOptimizer) and opt.mode == "per_channel"
    assert len(opt.optimizers) == C
    for c, inner in enumerate(opt.optimizers):
        assert isinstance(inner, torch.optim.Adam)
        assert inner.param_groups[0]["lr"] == 1e-3
        assert [id(p) for p in inner.param_groups[0]["params"]] == [
            id(p) for p in model.channel_parameters(c)
        ]
    single = ICRFTrainer.from_stack(
        y, t, model=free_icrf(), epochs=1, verbose=False, optimizer_mode="single"
    )
    assert len(single.optimizer.optimizers) == 1
    assert len(single.optimizer.param_groups[0]["params"]) == C


@pytest.mark.parametrize("mode", ["per_channel", "single"])
def test_icrf_trainer_freezes_a_channel_that_stops_improving(mode):
    lr, patience, epochs = 0.01, 2, 6
    model = free_icrf()
    y, t = tiny_stack()
    start = model.curve.detach().clone()
    trainer = ICRFTrainer.from_stack(
        y,
        t,
        model=model,
        losses=ChannelProbe((True, False, True)),
        lr=lr,
        epochs=epochs,
        patience=patience,
        optimizer_mode=mode,
        verbose=False,
    )
    trainer.train()
    # channel 1's loss is constant: best at epoch 0, frozen after `patience` more epochs
    assert trainer.stopped_epoch == [None, patience, None]
    assert trainer.optimizer.active == [True, False, True]
    moved = (start - model.curve.detach()).mean(-1)
    # Adam moves a constant-gradient parameter by lr per step: patience + 1 steps, not epochs
    assert moved[1].item() == pytest.approx(lr * (patience + 1), rel=1e-4)
    assert len(trainer.channel_loss_history) == epochs
    assert all(row[1] == pytest.approx(1.0) for row in trainer.channel_loss_history)
    live = [row[0] for row in trainer.channel_loss_history]
    assert all(b < a for a, b in zip(live, live[1:], strict=False))


def test_icrf_trainer_stops_when_every_channel_is_frozen(tmp_path):
    patience = 2
    y, t = tiny_stack()
    trainer = ICRFTrainer.from_stack(
        y,
        t,
        model=free_icrf(),
        losses=ChannelProbe((False, False, False)),
        epochs=20,
        patience=patience,
        verbose=False,
        save_path=tmp_path,
    )
    trainer.train()
    assert trainer.stopped_epoch == [patience] * C
    assert len(trainer.channel_loss_history) == patience + 1
    # the epoch that stopped training is checkpointed
    ckpt = torch.load(trainer.save_path / f"ckp_{patience}.pth.tar", weights_only=False)
    assert ckpt["epoch"] == patience
    assert ckpt["channels"]["stopped_epoch"] == [patience] * C
    assert ckpt["optimizer"]["active"] == [False] * C


def test_icrf_trainer_steps_lr_schedulers_per_active_channel():
    lr, patience, epochs = 0.01, 1, 4
    y, t = tiny_stack()
    trainer = ICRFTrainer.from_stack(
        y,
        t,
        model=free_icrf(),
        losses=ChannelProbe((True, False, True)),
        lr=lr,
        epochs=epochs,
        patience=patience,
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5),
        verbose=False,
    )
    trainer.train()
    lrs = [opt.param_groups[0]["lr"] for opt in trainer.optimizer.optimizers]
    # channel 1 is frozen at the end of epoch `patience`, before that epoch's step
    assert lrs == pytest.approx(
        [lr * 0.5**epochs, lr * 0.5**patience, lr * 0.5**epochs]
    )
    plateau = ICRFTrainer.from_stack(
        y,
        t,
        model=free_icrf(),
        losses=ChannelProbe((True, False, True)),
        lr=lr,
        epochs=3,
        scheduler=lambda opt: torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=0.5, patience=0
        ),
        verbose=False,
    )
    plateau.train()
    lrs = [opt.param_groups[0]["lr"] for opt in plateau.optimizer.optimizers]
    # plateau on channel 1's constant loss: epochs 1 and 2 do not improve
    assert lrs == pytest.approx([lr, lr * 0.25, lr])


def test_icrf_trainer_does_not_rewrap_the_model_on_a_second_train(tmp_path):
    model = free_icrf()
    y, t = tiny_stack()
    trainer = ICRFTrainer.from_stack(
        y,
        t,
        model=model,
        losses=[icrf_objective(), WrapOnce()],
        epochs=2,
        verbose=False,
        save_path=tmp_path,
    )
    first = trainer.train()
    first_dir = trainer.save_path
    second = trainer.train()
    assert isinstance(second, WrapOnce.Wrapper) and second.model is model
    assert isinstance(first, WrapOnce.Wrapper) and first.model is model
    # every run gets its own folder directly under save_path, even within one second
    assert trainer.save_path != first_dir
    assert trainer.save_path.parent == first_dir.parent == tmp_path
    assert len(trainer.channel_loss_history) == 2


def test_icrf_trainer_moves_model_losses_and_physics_to_its_device(device):
    y, t = tiny_stack()
    loss = WeightedLossScheduler([ChannelProbe((True, True, True))])
    trainer = ICRFTrainer.from_stack(
        y, t, model=free_icrf(), losses=loss, epochs=1, verbose=False, device=device
    )
    assert trainer.device == device
    assert loss.losses[0].moving.device.type == device.type
    assert trainer.physics.exposure_times.device.type == device.type
    assert trainer.icrf.curve.device.type == device.type
    trainer.train()
    assert math.isfinite(trainer.channel_loss_history[0][0])


class NaNLoss(Loss):
    def forward(self, x_net, **kwargs):
        return x_net.mean(dim=tuple(range(1, x_net.ndim))) * float("nan")


def test_icrf_trainer_raises_when_the_loss_diverges():
    y, t = tiny_stack()
    trainer = ICRFTrainer.from_stack(
        y, t, model=free_icrf(), losses=NaNLoss(), epochs=3, verbose=False
    )
    with pytest.raises(FloatingPointError, match=r"channel\(s\) \[0, 1, 2\].*epoch 1"):
        trainer.train()


def test_icrf_trainer_rejects_bad_options():
    y, t = tiny_stack()
    with pytest.raises(ValueError, match="optimizer_mode"):
        ICRFTrainer.from_stack(y, t, optimizer_mode="both", verbose=False)
    with pytest.raises(ValueError, match="patience"):
        ICRFTrainer.from_stack(y, t, patience=0, verbose=False)
    with pytest.raises(ValueError, match="lr"):
        ICRFTrainer.from_stack(y, t, lr=-1.0, verbose=False)
    with pytest.raises(ValueError, match="true_curve"):
        ICRFTrainer.from_stack(y, t, true_curve=torch.zeros(2, 5), verbose=False)
    with pytest.raises(ValueError, match="save_path"):
        ICRFTrainer.from_stack(y, t, resume=True, verbose=False)
    with pytest.raises(ValueError, match="exposure_times"):
        ICRFTrainer.from_stack(y, [1.0, 2.0], verbose=False)
    with pytest.raises(ValueError, match="3 optimizer"):
        ICRFTrainer.from_stack(
            y,
            t,
            model=free_icrf(),
            optimizer=[torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1)] * 2,
            verbose=False,
        )
    model = free_icrf()
    swapped = [torch.optim.Adam(model.channel_parameters(c), lr=1.0) for c in (1, 0, 2)]
    with pytest.raises(ValueError, match=r"optimizers\[0\]` to update the parameters"):
        ICRFTrainer.from_stack(y, t, model=model, optimizer=swapped, verbose=False)
    with pytest.raises(ValueError, match="hold one"):
        ICRFTrainer(
            model=nn.Linear(2, 2),
            physics=ExposureStack(t),
            train_dataloader=DataLoader([0]),
        )
    with pytest.raises(ValueError, match="train_dataloader"):
        ICRFTrainer(model=free_icrf(), physics=ExposureStack(t))
