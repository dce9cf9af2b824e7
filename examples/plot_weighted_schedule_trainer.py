r"""
Train an ICRF with deepinv.Trainer under a weighted loss schedule
=================================================================

ICRF fitting is a training job like any other in deepinv: the **model** is the
:class:`~deepinv_icrf.models.ICRF` (a :class:`deepinv.models.Reconstructor`), the
**physics** is :class:`~deepinv_icrf.physics.ExposureStack`, the **data** are exposure stacks
with their own exposure times, and the **losses** are :class:`deepinv.loss.Loss` objects that
:class:`deepinv.Trainer` adds up. This example trains on a small dataset of synthetic scenes
with the clair-torch objective,

.. math::

    \mathcal{L} = \underbrace{\sum_c L_c}_{\text{linearity}}
    + \beta\, \mathrm{range}(\ICRF)
    + \delta(t)\, \mathrm{smooth}(\ICRF) + \tau(t)\, \mathrm{TV}(\ICRF(y)),

where the weights change with the epoch :math:`t`:
:class:`~deepinv_icrf.loss.WeightedLossScheduler` holds the terms, one
:class:`~deepinv_icrf.loss.WeightSchedule` per weight (warm-up ramp, cosine decay, step), and
:class:`~deepinv_icrf.training.TermLoggingTrainer` (a :class:`deepinv.Trainer`) logs every term
under its own name. deepinv's own :class:`deepinv.loss.TVLoss` sits next to the package's losses.
"""

# %%
# A dataset of exposure stacks, each with its own exposure times
# ---------------------------------------------------------------
# A dataset item ``{"y": stack, "params": {"exposure_times": t}}`` with
# ``online_measurements=False`` makes :class:`deepinv.Trainer` call
# ``physics.update(exposure_times=t)`` for each batch: that is how stacks shot with different
# times go through an unmodified Trainer.

import deepinv as dinv
import matplotlib.pyplot as plt
import torch
from torch.utils.data import DataLoader

from deepinv_icrf.data import demo_scene
from deepinv_icrf.functional import curve_rmse
from deepinv_icrf.loss import (
    CosineWeight,
    LinearRampWeight,
    RadiometricLinearityLoss,
    RangeLoss,
    SmoothnessLoss,
    StepWeight,
    WeightedLossScheduler,
)
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack, get_response
from deepinv_icrf.training import TermLoggingTrainer

torch.manual_seed(0)
device = "cpu"  # a few thousand pixels: the CPU is the right place

n_scenes, n_exp = 8, 5
gen = torch.Generator().manual_seed(0)
base = 0.5 * torch.exp2(2 * torch.rand(n_scenes, 1, generator=gen))  # 0.5 s ... 2 s
times = base * torch.exp2(torch.arange(n_exp, dtype=torch.float32))  # one stop apart
scenes = torch.cat([demo_scene(32, 40, seed=k) for k in range(n_scenes)])
response = get_response("srgb")
camera = ExposureStack(
    times, response=response, noise_model=dinv.physics.GaussianNoise(0.003)
)
stacks = camera(scenes)  # (8, 5, 3, 32, 40)
dataset = [
    {"y": stacks[k], "params": {"exposure_times": times[k]}} for k in range(n_scenes)
]
loader = DataLoader(dataset, batch_size=2, shuffle=True, generator=gen)
print("stacks:", tuple(stacks.shape))

# %%
# Losses and their schedules
# --------------------------
# The curve starts as the identity (a linear camera), in the default *monotone*
# parameterization (increasing, :math:`\ICRF(0) = 0`, :math:`\ICRF(1) = 1` by construction;
# with ``parameterization="free"`` add :class:`~deepinv_icrf.loss.MonotonicityLoss` and
# :class:`~deepinv_icrf.loss.EndpointLoss`). The linearity term ramps in over the first two
# epochs while a strong smoothness weight keeps the curve regular; the smoothness weight then
# decays along a half cosine, and deepinv's ``TVLoss`` on the linearized stack only takes part
# in the first epoch. The linearity loss takes its dense path: each batch is a new pair of
# small stacks, and the joint-code histogram path pays off when a stack is used many times
# (as in :func:`~deepinv_icrf.fit_icrf`).

epochs = 15
model = ICRF(channels=3, n_points=64, init="identity").to(device)
loss = WeightedLossScheduler(
    {
        "linearity": RadiometricLinearityLoss(path="dense"),
        "range": RangeLoss(),
        "smoothness": SmoothnessLoss(),
        "tv": dinv.loss.TVLoss(),
    },
    weights={
        "linearity": LinearRampWeight(start=0, end=2, w0=0.2, w1=1.0),
        "smoothness": CosineWeight(start=0, end=epochs, w0=300.0, w1=3.0),
        "tv": StepWeight(1, before=1e-3, after=0.0),
    },
)
print(loss.weights_at(epoch=0))
print(loss.weights_at(epoch=epochs - 1))

# %%
# Train with deepinv's Trainer
# ----------------------------

physics = ExposureStack(torch.ones(n_exp), response=response).to(device)
trainer = TermLoggingTrainer(
    model=model,
    physics=physics,
    optimizer=torch.optim.Adam(model.parameters(), lr=0.2),
    train_dataloader=loader,
    losses=loss,
    epochs=epochs,
    online_measurements=False,
    metrics=[],
    plot_images=False,
    save_path=None,
    verbose=False,
    show_progress_bar=False,
    device=device,
    non_blocking_transfers=False,
)
model = trainer.train()

truth = response.icrf_curve(64, channels=3)
rmse = curve_rmse(model.curve.detach(), truth)
print(
    "RMSE per channel against the true sRGB ICRF:", [round(v, 4) for v in rmse.tolist()]
)

# %%
# Every term was logged under its own name (unweighted running mean per epoch), next to the
# total that deepinv logs:

fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
for key, history in trainer.term_loss_history.items():
    axes[0].semilogy(range(1, len(history) + 1), history, label=key)
axes[0].set_xlabel("epoch")
axes[0].set_title("loss terms (unweighted)")
axes[0].legend(fontsize=8)
grid = torch.linspace(0, 1, 64)
for c, colour in enumerate(("tab:red", "tab:green", "tab:blue")):
    axes[1].plot(
        grid, model.curve.detach()[c], color=colour, label=f"{'RGB'[c]} fitted"
    )
axes[1].plot(grid, truth[0], "k--", lw=1, label="true sRGB ICRF")
axes[1].set_xlabel("code")
axes[1].set_title("ICRF after training")
axes[1].legend(fontsize=8)
fig.tight_layout()
plt.show()
