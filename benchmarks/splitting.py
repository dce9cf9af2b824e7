r"""Benchmark: deepinv_icrf's EquivariantSplittingLoss against deepinv's.

Two measurements, both sides built from the same model weights, data, physics and splitting
configuration in one run:

1. **Step time**: seconds per training step (``zero_grad``, adapted-model forward with
   ``update_parameters=True``, loss, ``backward``, ``Adam.step``), median over interleaved
   rounds (ours and deepinv's alternate, so load drift hits both), for several configurations.
2. **Loss variance** with :class:`deepinv.loss.SureGaussianLoss` as the consistency term:

   - *re-evaluation*: one forward pass, then the loss evaluated ``n`` times at that ``x_net``
     (the randomness left is SURE's probe ``b`` and, for deepinv, the splitting mask that its
     divergence redraws): the variance of the estimator itself;
   - *per step*: ``n`` fresh forward passes and losses (adds the variance of the splitting,
     which both share).

Run from the repository root::

    PYTHONPATH=. python benchmarks/splitting.py            # full run
    PYTHONPATH=. python benchmarks/splitting.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
import warnings
from collections.abc import Callable

import deepinv as dinv
import torch

from deepinv_icrf.loss import EquivariantSplittingLoss

SIGMA = 0.1


def make_problem(device: torch.device, batch: int, size: int, seed: int = 0):
    gen = torch.Generator(device).manual_seed(seed)
    shape = (1, size, size)
    mask = (torch.rand(shape, generator=gen, device=device) < 0.8).float()
    physics = dinv.physics.Inpainting(
        img_size=shape,
        mask=mask,
        noise_model=dinv.physics.GaussianNoise(SIGMA),
        device=device,
    )
    x = torch.rand((batch, *shape), generator=gen, device=device)
    y = physics.A(x) + mask * SIGMA * torch.randn(x.shape, generator=gen, device=device)
    return shape, physics, y


def make_net(device: torch.device, depth: int, nf: int) -> torch.nn.Module:
    torch.manual_seed(0)
    net = dinv.models.DnCNN(
        in_channels=1, out_channels=1, depth=depth, nf=nf, pretrained=None
    )
    return dinv.models.ArtifactRemoval(net).to(device)


def make_loss(
    cls, shape, device, consistency: str, transform: bool, seed: int = 0, tau=1e-2
):
    if consistency == "mc":
        cons = dinv.loss.MCLoss(metric=dinv.metric.MSE())
    else:
        cons = dinv.loss.SureGaussianLoss(
            SIGMA, tau=tau, rng=torch.Generator(device).manual_seed(seed + 1)
        )
    return cls(
        mask_generator=dinv.physics.generator.BernoulliSplittingMaskGenerator(
            img_size=shape,
            split_ratio=0.9,
            device=device,
            rng=torch.Generator(device).manual_seed(seed),
        ),
        consistency_loss=cons,
        prediction_loss=dinv.loss.MCLoss(metric=dinv.metric.MSE()),
        transform=(
            dinv.transform.Reflect(
                dim=[-2, -1], n_trans=1, rng=torch.Generator().manual_seed(seed + 2)
            )
            if transform
            else None
        ),
    )


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(loss, model, physics, y) -> Callable[[], None]:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    model.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        x_net = model(y, physics, update_parameters=True)
        value = loss(x_net=x_net, y=y, physics=physics, model=model)
        value.mean().backward()
        optimizer.step()

    return step


def time_steps(args, device, consistency: str, transform: bool) -> dict:
    shape, physics, y = make_problem(device, args.batch, args.size)
    net = make_net(device, args.depth, args.nf)
    steps = {}
    for name, cls in (
        ("deepinv", dinv.loss.EquivariantSplittingLoss),
        ("ours", EquivariantSplittingLoss),
    ):
        loss = make_loss(cls, shape, device, consistency, transform)
        model = loss.adapt_model(copy.deepcopy(net))
        steps[name] = make_step(loss, model, physics, y)
        for _ in range(args.warmup):
            steps[name]()
    times: dict[str, list[float]] = {"deepinv": [], "ours": []}
    for r in range(args.rounds):
        order = ("deepinv", "ours") if r % 2 == 0 else ("ours", "deepinv")
        for name in order:
            sync(device)
            start = time.perf_counter()
            for _ in range(args.steps):
                steps[name]()
            sync(device)
            times[name].append((time.perf_counter() - start) / args.steps)
    deepinv_t = statistics.median(times["deepinv"])
    ours_t = statistics.median(times["ours"])
    return {
        "config": f"{consistency}{' + reflect' if transform else ''}",
        "deepinv_ms": 1e3 * deepinv_t,
        "ours_ms": 1e3 * ours_t,
        "ratio": ours_t / deepinv_t,
    }


def loss_variance(args, device, tau: float) -> list[dict]:
    shape, physics, y = make_problem(device, args.batch, args.size)
    net = make_net(device, args.depth, args.nf)
    rows = []
    for mode in ("re-evaluation", "per step"):
        variances = {}
        means = {}
        for name, cls in (
            ("deepinv", dinv.loss.EquivariantSplittingLoss),
            ("ours", EquivariantSplittingLoss),
        ):
            loss = make_loss(cls, shape, device, "sure", transform=True, tau=tau)
            model = loss.adapt_model(copy.deepcopy(net))
            model.train()
            values = []
            x_net = model(y, physics, update_parameters=True)
            for _ in range(args.n_eval):
                if mode == "per step":
                    x_net = model(y, physics, update_parameters=True)
                value = loss(x_net=x_net, y=y, physics=physics, model=model)
                values.append(value.detach().mean())
            values_t = torch.stack(values).double()
            variances[name] = float(values_t.var())
            means[name] = float(values_t.mean())
        rows.append(
            {
                "mode": f"{mode}, tau={tau:g}",
                "deepinv_mean": means["deepinv"],
                "ours_mean": means["ours"],
                "deepinv_var": variances["deepinv"],
                "ours_var": variances["ours"],
                "ratio": variances["ours"] / variances["deepinv"],
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--depth", type=int, default=5)
    parser.add_argument("--nf", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--n-eval", type=int, default=200)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: a shared CPU oversubscribed is all noise)",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.size, args.steps, args.rounds, args.warmup, args.n_eval = 24, 2, 4, 1, 30
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", category=UserWarning)
    device = torch.device(args.device)

    print(
        f"device={device}, torch threads={torch.get_num_threads()}, batch={args.batch}, "
        f"image=1x{args.size}x{args.size}, DnCNN depth={args.depth} nf={args.nf}, "
        f"{args.rounds} rounds x {args.steps} steps (median)\n"
    )
    print("| configuration | deepinv ms/step | ours ms/step | ours / deepinv |")
    print("|---|---:|---:|---:|")
    for consistency, transform in (("mc", False), ("mc", True), ("sure", True)):
        row = time_steps(args, device, consistency, transform)
        print(
            f"| {row['config']} | {row['deepinv_ms']:.2f} | {row['ours_ms']:.2f} | "
            f"{row['ratio']:.3f} |"
        )
    print(f"\nLoss with SureGaussianLoss consistency, {args.n_eval} evaluations\n")
    print(
        "| variance of | deepinv mean | ours mean | deepinv var | ours var "
        "| ours / deepinv |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for tau in (1e-2, 1e-3):
        for row in loss_variance(args, device, tau):
            print(
                f"| {row['mode']} | {row['deepinv_mean']:.4f} | {row['ours_mean']:.4f} "
                f"| {row['deepinv_var']:.3e} | {row['ours_var']:.3e} "
                f"| {row['ratio']:.4f} |"
            )


if __name__ == "__main__":
    main()
