r"""
Joint ICRF and radiance reconstruction from noisy exposure stacks
=================================================================

A camera photographs a static scene :math:`x` (radiance) at exposure times :math:`t_k`; the
exposure stack is

.. math::

    y_k = \eta\big(f(\mathrm{clip}(t_k x, 0, 1)) + n_k\big),

with the camera response :math:`f` (here sRGB), Gaussian code noise :math:`n_k` and 8-bit
quantisation :math:`\eta` (:class:`deepinv_icrf.physics.ExposureStack`). We train a
reconstructor :math:`R` to recover :math:`x` from :math:`y` **without ground truth**, by
splitting the stack: :class:`deepinv_icrf.physics.ExposureSplittingMaskGenerator` keeps a
random 90 % of the exposure pixels, :math:`y_1 = M_1 y`, and the prediction loss
(:class:`deepinv_icrf.loss.StackPredictionLoss`, inside
:class:`deepinv_icrf.loss.EquivariantSplittingLoss`) compares the re-exposed reconstruction
with the held-out codes, linearised by the inverse response :math:`g = f^{-1}` (the ICRF):

.. math::

    \mathcal{L}_{\mathrm{split}} = \sum_k w_k\, M_{2,k}
    \left(R(y_1) - \frac{g(y_k)}{t_k}\right)^2 .

The held-out codes carry noise independent of what :math:`R` saw, so minimising this loss
teaches :math:`R` to denoise. When the ICRF is unknown, it is a module of the model
(:class:`deepinv_icrf.models.StackReconstructor` holds it) and the same ``Trainer`` run
fits it with the radiometric linearity loss and a smoothness penalty, under
:class:`deepinv_icrf.loss.WeightedLossScheduler`. We compare, on held-out scenes, the radiance
PSNR of the weighted merge with the true ICRF, of the reconstructor trained with the true ICRF,
and of the joint training with the ICRF unknown.

The joint run does not start from nothing: the ICRF is first estimated by
:func:`deepinv_icrf.fit_icrf` (code-domain maximum likelihood) on the noisy training stacks
themselves, which needs no ground truth, and the Trainer then refines it together with the
reconstructor at a small learning rate. Started from an identity curve instead, the
linearity loss on noisy codes drifts and oscillates, and the reconstruction pays for every
error of the curve.
"""

# %%
# Synthetic scenes and a noisy camera
# -----------------------------------
#
# Crops of the package's procedural HDR scene, with different seeds for training and testing.

import time
import warnings

import deepinv as dinv
import matplotlib.pyplot as plt  # noqa: TID253 (gallery script)
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

warnings.filterwarnings("ignore", category=UserWarning)
torch.manual_seed(0)
SIZE, LOWER, UPPER = 32, 0.05, 0.95
EPOCHS = 20


def crops(seeds):
    out = []
    for s in seeds:
        x = demo_scene(2 * SIZE, 2 * SIZE, 3, dynamic_range_stops=8.0, seed=s)
        out += [x[..., :SIZE, :SIZE], x[..., SIZE:, SIZE:]]
        out += [x[..., :SIZE, SIZE:], x[..., SIZE:, :SIZE]]
    return torch.cat(out)


times = 0.4 * 2.0 ** torch.arange(5.0)
x_train, x_test = crops(range(8)), crops(range(100, 103))
camera = ExposureStack(
    times,
    response="srgb",
    bit_depth=8,
    noise_model=dinv.physics.GaussianNoise(0.03, rng=torch.Generator().manual_seed(1)),
)
y_train, y_test = camera(x_train), camera(x_test)
print(f"stacks: train {tuple(y_train.shape)}, test {tuple(y_test.shape)}")

# %%
# One Trainer run per setting
# ---------------------------
#
# The model linearises the stack with its ICRF, merges the kept valid exposures and refines the
# merge with a small CNN. With ``joint=True`` the ICRF starts from ``fit_icrf`` on the training
# stacks (no ground truth) and is learned by the ICRF losses at learning rate 1e-3; the
# splitting loss does not move it (``detach_icrf``, ``detach_target``).


def train(joint: bool) -> tuple[StackReconstructor, ExposureStack, TermLoggingTrainer]:
    torch.manual_seed(0)
    if joint:
        icrf = fit_icrf(y_train, times, method="code", progress=False)
        icrf.train()
    else:
        icrf = ICRF.from_response("srgb", channels=3)
        icrf.requires_grad_(False)
    model = StackReconstructor(icrf, n_exposures=5, lower=LOWER, upper=UPPER)
    physics = ExposureStack(
        times, response=icrf
    )  # the model's ICRF is the physics' response
    split = EquivariantSplittingLoss(
        mask_generator=ExposureSplittingMaskGenerator(
            (5, 3, SIZE, SIZE), 0.9, "pixel", rng=torch.Generator().manual_seed(0)
        ),
        consistency_loss=None,
        prediction_loss=StackPredictionLoss(lower=LOWER, upper=UPPER),
        eval_n_samples=1,
    )
    terms = {"split": split}
    params = [{"params": model.backbone.parameters(), "lr": 1e-3}]
    if joint:
        # every batch is a new stack: on small crops the dense path beats rebuilding histograms
        terms["linearity"] = LinearizedStackLoss(RadiometricLinearityLoss(path="dense"))
        terms["smoothness"] = SmoothnessLoss()
        params.append({"params": icrf.parameters(), "lr": 1e-3})
    loader = torch.utils.data.DataLoader(
        [{"y": yi} for yi in y_train],
        batch_size=8,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    trainer = TermLoggingTrainer(
        model,
        physics,
        torch.optim.Adam(params),
        loader,
        epochs=EPOCHS,
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


start = time.perf_counter()
model_true, physics_true, _ = train(joint=False)
model_joint, physics_joint, trainer_joint = train(joint=True)
print(f"both Trainer runs: {time.perf_counter() - start:.0f} s")

# %%
# Radiance PSNR on held-out scenes
# --------------------------------
#
# The trained reconstructor is applied to the whole (unsplit) test stacks.

psnr = dinv.metric.PSNR(max_pixel=1.0)
with torch.no_grad():
    estimates = {
        "merge, true ICRF": camera.A_dagger(y_test, lower=LOWER, upper=UPPER),
        "reconstructor, true ICRF": model_true(y_test, physics_true),
        "joint (ICRF unknown)": model_joint(y_test, physics_joint),
    }
scores = {name: float(psnr(x_hat, x_test).mean()) for name, x_hat in estimates.items()}
for name, value in scores.items():
    print(f"{name:<26} {value:6.2f} dB")
true_curve = ICRF.from_response("srgb", channels=3).curve.detach()
rmse = curve_rmse(model_joint.icrf.curve.detach(), true_curve)
print("curve RMSE of the learned ICRF per channel:", [round(float(v), 4) for v in rmse])

# %%
# The learned ICRF and the training curves
# ----------------------------------------

fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
grid = torch.linspace(0, 1, true_curve.shape[1])
learned = model_joint.icrf.curve.detach()
for c, colour in enumerate("rgb"):
    axes[0].plot(grid, learned[c], colour, label=f"learned {'RGB'[c]}")
axes[0].plot(grid, true_curve[0], "k--", label="true (sRGB)")
axes[0].set(title="ICRF", xlabel="code", ylabel="irradiance")
axes[0].legend(fontsize=8)
for key, values in trainer_joint.term_loss_history.items():
    axes[1].semilogy(values, label=key)
axes[1].set(title="joint run: loss terms", xlabel="epoch")
axes[1].legend(fontsize=8)
axes[2].bar(range(3), list(scores.values()), color=["0.6", "tab:blue", "tab:orange"])
axes[2].set_xticks(range(3), ["merge", "true ICRF", "joint"])
low = min(scores.values()) - 1.0
axes[2].set(title="radiance PSNR (dB)", ylim=(low, max(scores.values()) + 0.5))
fig.tight_layout()

# %%
# A test scene: tone-mapped radiance and error
# --------------------------------------------
#
# Radiance shown as :math:`\log_2`, errors as absolute differences on one test crop.

k = 1
fig, axes = plt.subplots(2, 4, figsize=(12, 6))
panels = {"ground truth": x_test, **estimates}
for col, (name, image) in enumerate(panels.items()):
    axes[0, col].imshow(torch.log2(image[k].clamp_min(1e-4)).mean(0), cmap="magma")
    axes[0, col].set_title(name, fontsize=9)
    error = (image[k] - x_test[k]).abs().mean(0)
    axes[1, col].imshow(error, cmap="gray", vmin=0, vmax=0.03)
    axes[1, col].set_title("|error|", fontsize=9)
for ax in axes.flat:
    ax.axis("off")
fig.tight_layout()
plt.show()
