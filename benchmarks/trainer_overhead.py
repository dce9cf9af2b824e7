r"""Benchmark: the per-channel bookkeeping of :class:`deepinv_icrf.training.ICRFTrainer`.

:class:`~deepinv_icrf.training.ICRFTrainer` needs each channel's loss (early stopping,
``ReduceLROnPlateau``). It used to evaluate the losses a second time per batch, without
gradient, with ``per_channel=True``; it now keeps the per-channel values of the evaluation it
backpropagates. The former bookkeeping is still there behind the private switch
``ICRFTrainer._single_evaluation = False``: this script times both in the same run.

Setting: the default ICRF objective (:func:`~deepinv_icrf.training.icrf_objective`) with a
plateau scheduler per channel and early stopping armed, on synthetic noisy sRGB stacks
(:class:`~deepinv_icrf.data.SyntheticExposureStackDataset`), float32 on the CPU (or CUDA):

- **loader**: ``--stacks`` stacks in shuffled batches of ``--batch-size`` (a new tensor per
  batch: a data loader);
- **stack**: one stack fitted with :meth:`ICRFTrainer.from_stack` (the same tensor every
  epoch: the linearity loss reuses its cached histogram statistics).

``--path`` pins the linearity loss's path (default ``auto``, its own choice).

Each repeat fits the same problem with the former bookkeeping ("old") and the new one
("new"), alternating which goes first, from the same seed; the fitted curves are checked to be
equal. Reported: the median time of each, and the median and range of the paired ratios
new / old (below 1: faster).

Run from the repository root::

    PYTHONPATH=. python benchmarks/trainer_overhead.py            # default sizes
    PYTHONPATH=. python benchmarks/trainer_overhead.py --quick    # smoke run
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.utils.data import DataLoader

from deepinv_icrf.data import SyntheticExposureStackDataset
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack
from deepinv_icrf.training import ICRFTrainer, icrf_objective


def _plateau(opt: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)


def _items(args: argparse.Namespace, device: torch.device) -> list[dict]:
    data = SyntheticExposureStackDataset(
        n_samples=args.stacks,
        n_exposures=args.exposures,
        height=args.height,
        width=args.width,
        response="srgb",
        noise_sigma=0.004,
        as_dict=True,
    )
    out = []
    for k in range(args.stacks):
        item = data[k]
        out.append(
            {
                "y": item["y"].to(device),
                "params": {
                    "exposure_times": item["params"]["exposure_times"].to(device)
                },
            }
        )
    return out


def build(
    setting: str, args: argparse.Namespace, items: list[dict], device: torch.device
) -> ICRFTrainer:
    r"""A fresh trainer for ``setting`` (``"loader"`` or ``"stack"``), seeded."""
    torch.manual_seed(0)
    common = dict(
        losses=icrf_objective(path=args.path),
        epochs=args.epochs,
        lr=0.05,
        patience=args.epochs,  # armed, never triggered: both runs do every epoch
        scheduler=_plateau,
        verbose=False,
        show_progress_bar=False,
        device=device,
    )
    if setting == "stack":
        return ICRFTrainer.from_stack(
            items[0]["y"], items[0]["params"]["exposure_times"], n_points=256, **common
        )
    times = items[0]["params"]["exposure_times"]
    return ICRFTrainer(
        model=ICRF(channels=3, n_points=256),
        physics=ExposureStack(times),
        train_dataloader=DataLoader(items, batch_size=args.batch_size, shuffle=True),
        **common,
    )


def time_fit(trainer: ICRFTrainer, single: bool, device: torch.device) -> float:
    r"""Seconds of ``trainer.train()`` with the new (``single``) or the former bookkeeping."""
    trainer._single_evaluation = single
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    trainer.train()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def run(setting: str, args: argparse.Namespace, device: torch.device) -> dict:
    r"""Paired, alternating timings of one setting."""
    items = _items(args, device)
    # warm-up (imports, allocator, first histogram build) outside the timings
    for single in (False, True):
        warm = build(setting, args, items, device)
        warm.epochs = 1
        time_fit(warm, single, device)
    olds, news, ratios = [], [], []
    for rep in range(args.repeats):
        order = (False, True) if rep % 2 == 0 else (True, False)
        seconds, curves = {}, {}
        for single in order:
            trainer = build(setting, args, items, device)
            seconds[single] = time_fit(trainer, single, device)
            curves[single] = trainer.icrf.curve.detach()
        if not torch.allclose(curves[True], curves[False], rtol=0, atol=1e-6):
            raise RuntimeError(
                f"{setting}: the two bookkeepings fitted different curves"
            )
        olds.append(seconds[False])
        news.append(seconds[True])
        ratios.append(seconds[True] / seconds[False])
    steps = args.epochs * (
        1 if setting == "stack" else -(-args.stacks // args.batch_size)
    )
    return {
        "setting": setting,
        "steps": steps,
        "old": statistics.median(olds),
        "new": statistics.median(news),
        "ratio": statistics.median(ratios),
        "low": min(ratios),
        "high": max(ratios),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--height", type=int, default=96, help="stack height (96)")
    parser.add_argument("--width", type=int, default=128, help="stack width (128)")
    parser.add_argument("--exposures", type=int, default=5, help="exposures N (5)")
    parser.add_argument("--stacks", type=int, default=4, help="stacks, loader (4)")
    parser.add_argument("--batch-size", type=int, default=2, help="batch size (2)")
    parser.add_argument("--epochs", type=int, default=10, help="epochs per fit (10)")
    parser.add_argument("--repeats", type=int, default=6, help="paired repeats (6)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument(
        "--settings",
        default="loader,stack",
        help="comma-separated: loader, stack (default both)",
    )
    parser.add_argument(
        "--path",
        default="auto",
        choices=("auto", "dense", "histogram"),
        help="path of the linearity loss (default auto)",
    )
    parser.add_argument("--quick", action="store_true", help="small smoke run")
    args = parser.parse_args()
    if args.quick:
        args.height, args.width, args.epochs, args.repeats = 24, 32, 3, 2
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    unknown = [s for s in settings if s not in ("loader", "stack")]
    if unknown:
        parser.error(f"unknown setting(s) {unknown}; expected loader, stack")
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    print(
        f"ICRFTrainer fit, 3x{args.height}x{args.width}, N={args.exposures}, "
        f"{args.epochs} epochs, {args.repeats} paired repeats, {args.threads} thread(s), "
        f"{device.type}, linearity path={args.path}"
    )
    print("\n| setting | steps | old (s) | new (s) | new/old median | new/old range |")
    print("|---|---:|---:|---:|---:|---:|")
    for setting in settings:
        r = run(setting, args, device)
        print(
            f"| {r['setting']} | {r['steps']} | {r['old']:.3f} | {r['new']:.3f} | "
            f"{r['ratio']:.3f} | {r['low']:.3f}-{r['high']:.3f} |"
        )


if __name__ == "__main__":
    main()
