from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from deepinv_icrf.data import demo_scene
from deepinv_icrf.loss import LinearRampWeight
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack
from deepinv_icrf.training import ICRFTrainer, icrf_objective
from deepinv_icrf.training.trainer import find_checkpoint

EPOCHS, KILL_AT = 5, 2
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # the killed run uses one thread too: same reduction order, same bits
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class Stacks(Dataset):
    r"""Three small 8-bit sRGB stacks, each with its own exposure times."""

    def __init__(self):
        self.times = torch.tensor(
            [[1.0, 2.0, 4.0, 8.0], [0.5, 1.0, 2.0, 4.0], [2.0, 4.0, 8.0, 16.0]]
        )
        self.stacks = [
            ExposureStack(self.times[k] / 8, response="srgb")(demo_scene(8, 9, seed=k))[
                0
            ]
            for k in range(3)
        ]

    def __len__(self):
        return 3

    def __getitem__(self, k):
        return {"y": self.stacks[k], "params": {"exposure_times": self.times[k]}}


def build_trainer(save_path, cls=ICRFTrainer, **kwargs) -> ICRFTrainer:
    torch.manual_seed(0)
    data = Stacks()
    # a step-unit weight ramp: the loss scheduler's step counter must be restored too
    losses = icrf_objective(
        delta=LinearRampWeight(start=0, end=6, w0=0.0, w1=10.0, unit="step")
    )
    return cls(
        model=ICRF(channels=3, n_points=33, init="gamma"),
        physics=ExposureStack(data.times[0]),
        # shuffled batches of 2 and 1 stacks: the data order depends on the saved RNG
        train_dataloader=DataLoader(data, batch_size=2, shuffle=True),
        losses=losses,
        epochs=EPOCHS,
        lr=0.05,
        patience=3,
        scheduler=lambda opt: torch.optim.lr_scheduler.StepLR(opt, 2, gamma=0.7),
        save_path=save_path,
        verbose=False,
        **kwargs,
    )


class KilledTrainer(ICRFTrainer):
    r"""Dies (SIGKILL, no clean-up) right after writing the checkpoint of epoch KILL_AT."""

    def save_model(self, filename, epoch, state=None):
        super().save_model(filename, epoch, state)
        if epoch == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)


def run_until_killed(save_path: str) -> None:
    torch.set_num_threads(1)
    build_trainer(save_path, cls=KilledTrainer).train()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_killed_fit_resumes_to_the_same_curve_as_an_uninterrupted_fit(tmp_path):
    root = tmp_path / "interrupted"
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
        f"import test_trainer_resume as m; m.run_until_killed({str(root)!r})"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=str(tmp_path),
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    ckpt = find_checkpoint(root)
    assert ckpt is not None and ckpt.name == f"ckp_{KILL_AT}.pth.tar"
    assert list(root.rglob(".*")) == []  # no temporary file left behind

    resumed = build_trainer(root, resume=True)
    resumed.train()
    full = build_trainer(tmp_path / "full")
    full.train()

    assert resumed.epoch_start == KILL_AT + 1
    assert torch.equal(resumed.icrf.curve, full.icrf.curve)
    assert resumed.channel_loss_history == full.channel_loss_history
    assert len(full.channel_loss_history) == EPOCHS
    assert resumed.loss_history == full.loss_history
    assert resumed.term_loss_history == full.term_loss_history
    assert resumed.losses[0].step_count == full.losses[0].step_count == 2 * EPOCHS
    assert [o.param_groups[0]["lr"] for o in resumed.optimizer.optimizers] == [
        o.param_groups[0]["lr"] for o in full.optimizer.optimizers
    ]
    # the fit moved the curve: the equality above is not that of two untouched models
    start = ICRF(channels=3, n_points=33, init="gamma").curve
    assert (full.icrf.curve - start).abs().max() > 1e-3


def test_checkpoint_restores_every_per_channel_optimizer_state(tmp_path):
    first = build_trainer(tmp_path / "a")
    first.epochs = 2
    first.train()
    ckpt = first.save_path / "ckp_1.pth.tar"
    second = build_trainer(tmp_path / "b", ckpt_pretrained=str(ckpt))
    second.setup_train()
    assert second.epoch_start == 2
    for c in range(3):
        p1 = first.icrf.channel_parameters(c)[0]
        p2 = second.icrf.channel_parameters(c)[0]
        s1 = first.optimizer.optimizers[c].state[p1]
        s2 = second.optimizer.optimizers[c].state[p2]
        assert torch.equal(p1, p2)
        assert torch.equal(s1["exp_avg"], s2["exp_avg"])
        assert torch.equal(s1["exp_avg_sq"], s2["exp_avg_sq"])
        assert torch.equal(s1["step"], s2["step"])
        assert second.lr_schedulers[c].last_epoch == first.lr_schedulers[c].last_epoch
    assert second.channel_loss_history == first.channel_loss_history
    assert second.channel_bad_epochs == first.channel_bad_epochs


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    trainer = build_trainer(tmp_path)
    trainer.epochs = 2
    trainer.train()
    path = trainer.save_path / "ckp_1.pth.tar"
    before = path.read_bytes()

    def broken_save(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="disk full"):
        trainer.save_model("ckp_1.pth.tar", 1)
    assert path.read_bytes() == before
    assert [p.name for p in trainer.save_path.iterdir()] == ["ckp_1.pth.tar"]


def test_resume_into_a_mismatched_trainer_fails_clearly(tmp_path):
    trainer = build_trainer(tmp_path)
    trainer.epochs = 2
    trainer.train()
    ckpt = trainer.save_path / "ckp_1.pth.tar"
    single = build_trainer(tmp_path, ckpt_pretrained=str(ckpt), optimizer_mode="single")
    with pytest.raises(ValueError, match="mode 'per_channel'"):
        single.train()


def test_find_checkpoint_picks_the_latest_epoch(tmp_path):
    assert find_checkpoint(tmp_path / "missing") is None
    for sub, epoch in (("a", 9), ("b", 12), ("b", 3)):
        (tmp_path / sub).mkdir(exist_ok=True)
        (tmp_path / sub / f"ckp_{epoch}.pth.tar").write_bytes(b"")
    (tmp_path / "b" / ".ckp_40.pth.tar.x1y2.tmp.tar").write_bytes(b"")
    assert find_checkpoint(tmp_path) == tmp_path / "b" / "ckp_12.pth.tar"
