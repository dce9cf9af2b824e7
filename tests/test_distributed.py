r"""Multi-process fitting: 2 CPU processes (torchrun, gloo) give the one-process curve.

One ``torchrun --nproc_per_node=2`` launch runs a worker that (1) calls the entry point
``python -m deepinv_icrf.training.distributed`` in-process (pixel shards, histograms summed
across ranks), (2) fits a batch of 2 stacks sharded across ranks with summed gradients (float64)
and (3) trains an :class:`ICRFTrainer` with ``distributed=True`` on a
:class:`~torch.utils.data.distributed.DistributedSampler`; the test compares each curve with the
same job run in this process.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack, GammaResponse
from deepinv_icrf.training import ICRFTrainer
from deepinv_icrf.training.distributed import (
    all_reduce_gradients,
    fit_icrf_distributed,
    main,
    shard_indices,
    shard_rows,
)

ROOT = Path(__file__).resolve().parents[1]
TIMES = [1.0, 2.0, 4.0, 8.0]
STEPS = 60

WORKER = textwrap.dedent("""
    import sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from deepinv_icrf.physics import ExposureStack
    from deepinv_icrf.training import ICRFTrainer
    from deepinv_icrf.training.distributed import (
        distributed_loader, fit_icrf_distributed, main, rank_and_world)

    tmp, steps = sys.argv[1], int(sys.argv[2])
    times = [1.0, 2.0, 4.0, 8.0]
    dist.init_process_group("gloo")
    rank, world = rank_and_world()
    assert world == 2
    code = main([f"{tmp}/one.npy", "--times", "1,2,4,8", "--out", f"{tmp}/pixels.json",
                 "--steps", str(steps), "--cpu"])
    assert code == 0
    batch = torch.from_numpy(np.load(f"{tmp}/batch.npy")).float() / 255
    batch = batch.permute(0, 1, 4, 2, 3).contiguous()
    icrf = fit_icrf_distributed(batch, times, shard="stacks", steps=steps,
                                dtype=torch.float64)
    items = [{"y": s, "params": {"exposure_times": torch.tensor(times)}} for s in batch]
    from deepinv_icrf.models import ICRF
    trainer = ICRFTrainer(
        model=ICRF(channels=3, n_points=33), physics=ExposureStack(times),
        train_dataloader=distributed_loader(items, batch_size=1), epochs=4, lr=0.05,
        online_measurements=False, verbose=False, show_progress_bar=False,
        distributed=True)
    trained = trainer.train()
    if rank == 0:
        torch.save({"stacks": icrf.curve.detach(), "trainer": trained.curve.detach(),
                    "channel_loss": trainer.channel_loss_history}, f"{tmp}/out.pt")
    dist.destroy_process_group()
    """)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _batch() -> torch.Tensor:
    r"""Two 8-bit stacks ``(2, 4, 3, 13, 11)`` of different scenes (gamma camera)."""
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 13, 11, generator=g) * 0.3 + 0.01
    return ExposureStack(TIMES, response=GammaResponse(2.2))(x)


def _trainer_one_process(batch: torch.Tensor) -> tuple[torch.Tensor, list]:
    items = [{"y": s, "params": {"exposure_times": torch.tensor(TIMES)}} for s in batch]
    trainer = ICRFTrainer(
        model=ICRF(channels=3, n_points=33),
        physics=ExposureStack(TIMES),
        train_dataloader=torch.utils.data.DataLoader(items, batch_size=2),
        epochs=4,
        lr=0.05,
        online_measurements=False,
        verbose=False,
        show_progress_bar=False,
    )
    return trainer.train().curve.detach(), trainer.channel_loss_history


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    codes = (_batch() * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2).numpy()
    np.save(tmp / "batch.npy", codes)
    np.save(tmp / "one.npy", codes[0])
    (tmp / "worker.py").write_text(WORKER)
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        f"--master_port={_free_port()}",
        str(tmp / "worker.py"),
        str(tmp),
        str(STEPS),
    ]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp, torch.load(tmp / "out.pt")


def test_two_processes_pixel_shards_match_one_process(two_processes):
    tmp, _ = two_processes
    two = ICRF.load(tmp / "pixels.json")
    assert two.metadata["world_size"] == 2 and two.metadata["shard"] == "pixels"
    codes = np.load(tmp / "one.npy")
    one = fit_icrf_distributed(codes, TIMES, steps=STEPS)
    diff = (two.curve - one.curve).abs().max()
    assert float(diff.detach()) <= 1e-6


def test_two_processes_stack_shards_match_one_process(two_processes):
    tmp, out = two_processes
    batch = torch.from_numpy(np.load(tmp / "batch.npy")).float() / 255
    batch = batch.permute(0, 1, 4, 2, 3)
    one = fit_icrf_distributed(
        batch, TIMES, shard="stacks", steps=STEPS, dtype=torch.float64
    )
    torch.testing.assert_close(out["stacks"], one.curve.detach(), rtol=0, atol=1e-9)


def test_two_processes_trainer_matches_one_process(two_processes):
    tmp, out = two_processes
    batch = torch.from_numpy(np.load(tmp / "batch.npy")).float() / 255
    curve, history = _trainer_one_process(batch.permute(0, 1, 4, 2, 3).contiguous())
    torch.testing.assert_close(out["trainer"], curve, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["channel_loss"], history, rtol=1e-5)


def test_one_process_fit_recovers_gamma():
    y = _batch()[0]
    icrf = fit_icrf_distributed(y, TIMES, steps=150)
    truth = GammaResponse(2.2).icrf_curve(256).float()
    assert float((icrf.curve.detach() - truth)[:, 16:240].abs().max()) < 0.05


def test_shards_cover_everything_once():
    rows = [shard_rows(13, r, 3) for r in range(3)]
    assert [i for s in rows for i in range(13)[s]] == list(range(13))
    items = sorted(i for r in range(3) for i in shard_indices(7, r, 3))
    assert items == list(range(7))
    with pytest.raises(ValueError, match="at least one row per process"):
        shard_rows(2, 0, 3)
    with pytest.raises(ValueError, match=r"`rank` in \[0, 2\)"):
        shard_indices(4, 2, 2)


def test_single_process_helpers_are_identity():
    p = torch.nn.Parameter(torch.zeros(3))
    p.grad = torch.tensor([1.0, -2.0, 3.0])
    all_reduce_gradients([p], average=True)
    assert p.grad.tolist() == [1.0, -2.0, 3.0]


def test_bad_options(tmp_path):
    y = _batch()[0]
    with pytest.raises(ValueError, match="`shard` to be one of"):
        fit_icrf_distributed(y, TIMES, shard="rows")
    with pytest.raises(ValueError, match=r"`exposure_times` to have shape \(4,\)"):
        fit_icrf_distributed(y, TIMES[:3])
    with pytest.raises(ValueError, match="continuous"):
        fit_icrf_distributed(torch.rand(4, 3, 5, 6), TIMES, steps=1)
    with pytest.raises(ValueError, match="initialised torch.distributed"):
        ICRFTrainer.from_stack(y, TIMES, epochs=1, distributed=True)
    assert main([str(tmp_path / "x.txt"), "--out", str(tmp_path / "c.json")]) == 2
    assert not (tmp_path / "c.json").exists()
