from __future__ import annotations

import copy
import math

import deepinv as dinv
import pytest
import torch
from deepinv.loss.measplit import SplittingLoss

from deepinv_icrf.loss import EquivariantSplittingLoss, WeightedLossScheduler
from deepinv_icrf.models import EquivariantSplittingModel
from deepinv_icrf.models.splitting import find_splitting_model
from deepinv_icrf.training import TermLoggingTrainer

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

SIGMA = 0.1
SHAPE = (1, 15, 13)


class TinyNet(dinv.models.Reconstructor):
    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(1, 4, 3, padding=1),
            torch.nn.Tanh(),
            torch.nn.Conv2d(4, 1, 3, padding=1),
        )

    def forward(self, y, physics, **kwargs):
        return self.body(physics.A_adjoint(y))


def make_setup(device, n_images=8, batch_size=4):
    gen = torch.Generator(device).manual_seed(0)
    mask = (torch.rand(SHAPE, generator=gen, device=device) < 0.8).float()
    physics = dinv.physics.Inpainting(
        img_size=SHAPE,
        mask=mask,
        noise_model=dinv.physics.GaussianNoise(
            SIGMA, rng=torch.Generator(device).manual_seed(1)
        ),
        device=device,
    )
    x = torch.rand((n_images, *SHAPE), generator=gen, device=device)
    loader = torch.utils.data.DataLoader(
        [{"x": xi} for xi in x], batch_size=batch_size, shuffle=False
    )
    return physics, loader


def make_es(device, **kwargs):
    return EquivariantSplittingLoss(
        mask_generator=dinv.physics.generator.BernoulliSplittingMaskGenerator(
            img_size=SHAPE,
            split_ratio=0.8,
            device=device,
            rng=torch.Generator(device).manual_seed(2),
        ),
        transform=dinv.transform.Reflect(dim=[-2, -1], n_trans=1),
        eval_n_samples=2,
        **kwargs,
    )


def trainer_kwargs(device):
    return dict(
        epochs=2,
        online_measurements=True,
        save_path=None,
        verbose=False,
        show_progress_bar=False,
        plot_images=False,
        device=device,
        non_blocking_transfers=False,
    )


def count_splitting_models(model) -> int:
    r"""Splitting models reachable through ``model``/``module``/``_orig_mod`` chains."""
    count, stack, seen = 0, [model], set()
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, (EquivariantSplittingModel, SplittingLoss.SplittingModel)):
            count += 1
        stack.extend(getattr(obj, a, None) for a in ("model", "module", "_orig_mod"))
    return count


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def test_trainer_es_with_builtin_losses_under_weighted_scheduler(device):
    physics, loader = make_setup(device)
    net = TinyNet().to(device)
    before = params_of(net)
    es = make_es(
        device,
        consistency_loss=dinv.loss.SureGaussianLoss(
            SIGMA, rng=torch.Generator(device).manual_seed(3)
        ),
    )
    loss = WeightedLossScheduler(
        {
            "sure": dinv.loss.SureGaussianLoss(SIGMA),
            "es": es,
            "tv": dinv.loss.TVLoss(),
        },
        weights={"sure": 0.5, "tv": 0.01},
    )
    trainer = TermLoggingTrainer(
        net,
        physics,
        torch.optim.Adam(net.parameters(), lr=1e-2),
        loader,
        losses=loss,
        eval_dataloader=loader,
        metrics=[dinv.metric.PSNR()],
        **trainer_kwargs(device),
    )
    trainer.train()
    assert set(trainer.term_loss_history) == {"sure", "es", "tv"}
    for key, history in trainer.term_loss_history.items():
        assert len(history) == 2, key
        assert all(math.isfinite(v) for v in history), key
    assert all(v > 0 for v in trainer.term_loss_history["es"])
    assert len(trainer.eval_metrics_history["PSNR"]) == 2
    split = find_splitting_model(trainer.model)
    assert split is not None and split.model is net
    assert count_splitting_models(trainer.model) == 1
    after = params_of(net)
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    # a second train() adapts again: the model must not be wrapped twice
    model_before = trainer.model
    trainer.epochs = 1
    trainer.train()
    assert trainer.model is model_before
    assert count_splitting_models(trainer.model) == 1
    assert len(trainer.term_loss_history["es"]) == 1


def test_trainer_es_in_plain_loss_list_logs_each_term(device):
    physics, loader = make_setup(device)
    net = TinyNet().to(device)
    trainer = dinv.Trainer(
        net,
        physics,
        torch.optim.Adam(net.parameters(), lr=1e-2),
        loader,
        losses=[make_es(device, consistency_loss=None), dinv.loss.TVLoss()],
        metrics=[],
        **trainer_kwargs(device),
    )
    trainer.train()
    assert set(trainer.loss_history) == {"EquivariantSplittingLoss", "TVLoss"}
    assert all(
        math.isfinite(v) for v in trainer.loss_history["EquivariantSplittingLoss"]
    )
    assert count_splitting_models(trainer.model) == 1


def test_trainer_dataparallel_model_no_double_wrap(device):
    physics, loader = make_setup(device)
    net = TinyNet().to(device)
    es = make_es(device)
    model = torch.nn.DataParallel(es.adapt_model(copy.deepcopy(net)))
    trainer = dinv.Trainer(
        model,
        physics,
        torch.optim.Adam(model.parameters(), lr=1e-2),
        loader,
        losses=[es],
        metrics=[],
        **trainer_kwargs(device),
    )
    trainer.train()
    assert trainer.model is model  # adapt_model saw the splitting model inside
    assert count_splitting_models(trainer.model) == 1
    assert all(
        math.isfinite(v) for v in trainer.loss_history["EquivariantSplittingLoss"]
    )

    ref = dinv.loss.EquivariantSplittingLoss(
        mask_generator=dinv.physics.generator.BernoulliSplittingMaskGenerator(
            img_size=SHAPE, split_ratio=0.8, device=device
        )
    )
    ref_model = torch.nn.DataParallel(ref.adapt_model(copy.deepcopy(net)))
    ref_trainer = dinv.Trainer(
        ref_model,
        physics,
        torch.optim.Adam(ref_model.parameters(), lr=1e-2),
        loader,
        losses=[ref],
        metrics=[],
        **trainer_kwargs(device),
    )
    ref_trainer.train()
    # deepinv does not recognise its own model behind DataParallel: it splits twice
    assert ref_trainer.model is not ref_model
    assert count_splitting_models(ref_trainer.model) == 2
