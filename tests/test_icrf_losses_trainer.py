from __future__ import annotations

import math

import deepinv as dinv
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from deepinv_icrf.loss import (
    EndpointLoss,
    MonotonicityLoss,
    RadiometricLinearityLoss,
    RangeLoss,
    SmoothnessLoss,
)
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack

C, N, H, W, L = 3, 3, 9, 7, 17


class StackDataset(Dataset):
    """Synthetic 8-bit sRGB exposure stacks, each with its own exposure times."""

    def __init__(self, n_items: int = 4, form: str = "dict", with_std: bool = False):
        gen = torch.Generator().manual_seed(0)
        self.form, self.with_std = form, with_std
        self.times = 0.25 + 2 * torch.rand(n_items, N, generator=gen)
        radiance = 0.05 + 0.6 * torch.rand(n_items, C, H, W, generator=gen)
        camera = ExposureStack(self.times, response="srgb", bit_depth=8)
        self.stacks = camera(radiance)  # (n_items, N, C, H, W)

    def __len__(self) -> int:
        return self.stacks.shape[0]

    def __getitem__(self, k: int):
        params = {"exposure_times": self.times[k]}
        if self.with_std:
            params["y_std"] = torch.full((N, C, H, W), 0.01)
        if (
            self.form == "tuple"
        ):  # (x, y, params) with a NaN x meaning "no ground truth"
            return torch.tensor(float("nan")), self.stacks[k], params
        return {"y": self.stacks[k], "params": params}


def perturbed_icrf() -> ICRF:
    """A free curve that breaks every penalty, so each loss has a gradient."""
    gen = torch.Generator().manual_seed(1)
    grid = torch.linspace(0, 1, L)
    curve = grid**2.2 + 0.05 * torch.randn(C, L, generator=gen) + 0.02
    return ICRF(channels=C, n_points=L, parameterization="free", init=curve)


def dataset_value(loss, model, dataset: StackDataset) -> float:
    loader = DataLoader(dataset, batch_size=len(dataset))
    batch = dinv.datasets.base.batch_as_dict(next(iter(loader)))
    params = batch["params"]
    physics = ExposureStack(params["exposure_times"], y_std=params.get("y_std"))
    with torch.no_grad():
        x_net = model(batch["y"])
        return float(
            loss(x_net=x_net, y=batch["y"], physics=physics, model=model).mean()
        )


CASES = [
    ("linearity-dict", RadiometricLinearityLoss, "dict", False),
    ("linearity-tuple-std", RadiometricLinearityLoss, "tuple", True),
    ("monotonicity", MonotonicityLoss, "dict", False),
    ("range", RangeLoss, "tuple", False),
    ("endpoint", EndpointLoss, "dict", False),
    ("smoothness", SmoothnessLoss, "dict", False),
]


@pytest.mark.filterwarnings(
    "ignore:The tuple format for dataset outputs:DeprecationWarning"
)
@pytest.mark.parametrize(
    ("loss_cls", "form", "with_std"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_icrf_loss_trains_through_deepinv_trainer(loss_cls, form, with_std, tmp_path):
    torch.manual_seed(0)
    dataset = StackDataset(form=form, with_std=with_std)
    model = perturbed_icrf()
    loss = loss_cls()
    tv = dinv.loss.TVLoss(
        weight=1e-3
    )  # a built-in deepinv loss on the (B, N, C, H, W) output
    before_params = [p.detach().clone() for p in model.parameters()]
    before = dataset_value(loss, model, dataset)

    trainer = dinv.Trainer(
        model=model,
        physics=ExposureStack(torch.ones(N), response="srgb", bit_depth=8),
        optimizer=torch.optim.Adam(model.parameters(), lr=2e-3),
        train_dataloader=DataLoader(dataset, batch_size=2, shuffle=False),
        epochs=1,
        losses=[loss, tv],
        online_measurements=False,
        metrics=[],
        plot_images=False,
        save_path=tmp_path,
        verbose=False,
        show_progress_bar=False,
        device="cpu",
        non_blocking_transfers=False,
    )
    trained = trainer.train()

    after = dataset_value(loss, trained, dataset)
    changed = [
        not torch.equal(a, b.detach())
        for a, b in zip(before_params, trained.parameters(), strict=True)
    ]
    assert all(changed)
    logged = [m.avg for m in trainer.logs_losses_train] + [
        trainer.logs_total_loss_train.avg
    ]
    assert all(math.isfinite(float(v)) for v in logged)
    assert before > 0 and math.isfinite(after)
    assert after < before  # two Adam steps went downhill on this loss
