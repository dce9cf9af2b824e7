r"""Self-supervised radiance reconstruction from noisy exposure stacks, ICRF known or learned.

Synthetic scenes (crops of :func:`deepinv_icrf.data.demo_scene` with different seeds) are
photographed by an sRGB camera with ``N`` bracketed exposures, Gaussian code noise and 8-bit
quantisation (:class:`deepinv_icrf.physics.ExposureStack`). A
:class:`deepinv_icrf.models.StackReconstructor` is trained without ground truth, by exposure-stack
splitting (:class:`deepinv_icrf.physics.ExposureSplittingMaskGenerator` inside
:class:`deepinv_icrf.loss.EquivariantSplittingLoss`, prediction term
:class:`deepinv_icrf.loss.StackPredictionLoss`), in one ``deepinv.Trainer`` run:

- ``true ICRF``: the sRGB ICRF is given and frozen;
- ``joint, warm-started by fit_icrf``: the ICRF is unknown; it is initialised by
  :func:`deepinv_icrf.fit_icrf` (``method="code"``) on the noisy, unlabelled training stacks
  themselves (no ground truth), then learned in the same run as the reconstructor by
  :class:`deepinv_icrf.loss.RadiometricLinearityLoss` (through
  :class:`deepinv_icrf.loss.LinearizedStackLoss`) and :class:`deepinv_icrf.loss.SmoothnessLoss`
  at a small learning rate (``--icrf-lr``, default 3e-4), weighted by
  :class:`deepinv_icrf.loss.WeightedLossScheduler`;
- ``joint, from identity``: the same losses from an identity ICRF at learning rate 0.1 (the
  naive scheme, for reference; ``--skip-identity`` leaves it out).

Radiance PSNR (deepinv's PSNR, peak 1 = the brightest radiance) on held-out scenes, against the
weighted merge of the noisy stack with the true ICRF (same valid range). Also the curve RMSE of
the learned ICRF (codes 8..247). Run: ``PYTHONPATH=. python benchmarks/joint_reconstruction.py``
(``--quick`` for a short run).
"""

from __future__ import annotations

import argparse
import time
import warnings

import deepinv as dinv
import torch

from deepinv_icrf import fit_icrf
from deepinv_icrf.data import demo_scene
from deepinv_icrf.functional import curve_rmse
from deepinv_icrf.loss import (
    EquivariantSplittingLoss,
    LinearizedStackLoss,
    RadiometricLinearityLoss,
    SmoothnessLoss,
    StackPredictionLoss,
    WeightedLossScheduler,
)
from deepinv_icrf.models import ICRF, StackReconstructor
from deepinv_icrf.physics import ExposureSplittingMaskGenerator, ExposureStack
from deepinv_icrf.training import TermLoggingTrainer

LOWER, UPPER = 0.05, 0.95


def scenes(seeds: range, size: int) -> torch.Tensor:
    r"""Four ``size x size`` crops of a ``2 size`` square demo scene per seed, ``(4 S, 3, size, size)``."""
    crops = []
    for s in seeds:
        x = demo_scene(2 * size, 2 * size, 3, dynamic_range_stops=8.0, seed=s)
        crops += [x[..., :size, :size], x[..., size:, size:]]
        crops += [x[..., :size, size:], x[..., size:, :size]]
    return torch.cat(crops)


def train(
    y: torch.Tensor,
    times: torch.Tensor,
    init: str,
    epochs: int,
    seed: int,
    icrf_lr: float = 0.1,
) -> tuple[StackReconstructor, ExposureStack, TermLoggingTrainer]:
    r"""One Trainer run; returns the (inner) reconstructor, its physics and the trainer.

    ``init``: ``"true"`` (sRGB ICRF, frozen), ``"identity"`` (joint, from the identity) or
    ``"fit"`` (joint, warm-started by :func:`deepinv_icrf.fit_icrf` on the noisy training
    stacks themselves: no ground truth).
    """
    torch.manual_seed(seed)
    n, c, h, w = y.shape[1:]
    joint = init != "true"
    if init == "identity":
        icrf = ICRF(channels=c, n_points=256, init="identity")
    elif init == "fit":
        icrf = fit_icrf(y, times, method="code", progress=False, seed=seed)
        icrf.train()
    else:
        icrf = ICRF.from_response("srgb", channels=c)
        icrf.requires_grad_(False)
    model = StackReconstructor(
        icrf, n, c, features=32, depth=4, lower=LOWER, upper=UPPER
    )
    physics = ExposureStack(times, response=icrf, bit_depth=8)
    split = EquivariantSplittingLoss(
        mask_generator=ExposureSplittingMaskGenerator(
            (n, c, h, w), 0.9, "pixel", rng=torch.Generator().manual_seed(seed)
        ),
        consistency_loss=None,
        prediction_loss=StackPredictionLoss(lower=LOWER, upper=UPPER),
        eval_n_samples=1,
    )
    terms = {"split": split}
    params = [{"params": model.backbone.parameters(), "lr": 1e-3}]
    if joint:
        terms["linearity"] = LinearizedStackLoss(RadiometricLinearityLoss(path="dense"))
        terms["smoothness"] = SmoothnessLoss()
        params.append({"params": icrf.parameters(), "lr": icrf_lr})
    loader = torch.utils.data.DataLoader(
        [{"y": yi} for yi in y],
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
    )
    trainer = TermLoggingTrainer(
        model,
        physics,
        torch.optim.Adam(params),
        loader,
        epochs=epochs,
        losses=WeightedLossScheduler(terms),
        metrics=[],
        online_measurements=False,
        save_path=None,
        verbose=False,
        show_progress_bar=False,
        plot_images=False,
        device="cpu",
        non_blocking_transfers=False,
    )
    trainer.train()
    model.eval()
    return model, physics, trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run")
    parser.add_argument("--sigma", type=float, default=0.03, help="code noise std")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument(
        "--icrf-lr",
        type=float,
        default=3e-4,
        help="ICRF learning rate of the warm start",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: fastest on a shared CPU)",
    )
    parser.add_argument(
        "--skip-identity", action="store_true", help="skip the joint run from identity"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    torch.set_num_threads(args.threads)
    epochs = args.epochs or (40 if args.quick else 100)
    seeds = args.seeds or ([0] if args.quick else [0, 1, 2])
    size = 32
    times = 0.4 * 2.0 ** torch.arange(5.0)
    x_train = scenes(range(8), size)
    x_test = scenes(range(100, 103), size)
    camera = ExposureStack(
        times,
        response="srgb",
        bit_depth=8,
        noise_model=dinv.physics.GaussianNoise(
            args.sigma, rng=torch.Generator().manual_seed(1)
        ),
    )
    y_train, y_test = camera(x_train), camera(x_test)
    psnr = dinv.metric.PSNR(max_pixel=1.0)
    true_curve = ICRF.from_response("srgb", channels=3).curve.detach()

    merge = psnr(camera.A_dagger(y_test, lower=LOWER, upper=UPPER), x_test).mean()
    print(
        f"{len(x_train)} training / {len(x_test)} test scenes {size}x{size}, N={len(times)} "
        f"exposures, code noise {args.sigma}, {epochs} epochs, seeds {seeds}"
    )
    rows = {"weighted merge, true ICRF": [float(merge)]}
    rmse: dict[str, list[float]] = {}
    variants = (
        ("reconstructor, true ICRF", "true", 0.0),
        ("joint, warm-started by fit_icrf", "fit", args.icrf_lr),
        ("joint, from identity", "identity", 0.1),
    )
    if args.skip_identity:
        variants = variants[:2]
    for name, init, lr in variants:
        rows[name] = []
        for seed in seeds:
            t0 = time.perf_counter()
            model, physics, _ = train(y_train, times, init, epochs, seed, lr)
            with torch.no_grad():
                value = psnr(model(y_test, physics), x_test).mean()
            rows[name].append(float(value))
            if init != "true":
                err = curve_rmse(model.icrf.curve.detach(), true_curve).mean()
                rmse.setdefault(name, []).append(float(err))
            print(
                f"  {name}, seed {seed}: {float(value):.2f} dB "
                f"({time.perf_counter() - t0:.0f} s)"
            )
    print(f"\n{'method':<34} {'PSNR (dB), mean':>16} {'min':>7} {'curve RMSE':>11}")
    for name, values in rows.items():
        mean = sum(values) / len(values)
        err = rmse.get(name)
        err_text = f"{sum(err) / len(err):>11.4f}" if err else f"{'-':>11}"
        print(f"{name:<34} {mean:>16.2f} {min(values):>7.2f} {err_text}")
    joint_psnr = sum(rows["joint, warm-started by fit_icrf"]) / len(seeds)
    true_psnr = sum(rows["reconstructor, true ICRF"]) / len(seeds)
    print(
        f"\njoint (warm-started) - merge: {joint_psnr - float(merge):+.2f} dB (target >= 0)"
    )
    print(
        f"joint (warm-started) - true-ICRF reconstructor: {joint_psnr - true_psnr:+.2f} dB "
        "(target >= -0.5)"
    )


if __name__ == "__main__":
    main()
