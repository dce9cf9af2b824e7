r"""
Self-supervised reconstruction with equivariant splitting
=========================================================

Without ground truth, a reconstructor :math:`R` can still be trained from the measurements
alone by **splitting** them: a random mask :math:`M_1` keeps part of each measurement
:math:`y_1 = M_1 y`, the network reconstructs from it, and the loss checks the reconstruction
against the *held-out* part :math:`y_2 = M_2 y` (prediction) and, optionally, against
:math:`y_1` (consistency). Equivariant splitting (Sechaud et al.) averages the reconstruction
over transforms :math:`T_g` of the image (Reynolds averaging), which makes the
self-supervised loss an unbiased estimate of the supervised one for equivariant problems:

.. math::

    \mathcal{L}_{\mathrm{ES}} = \mathbb{E}_g \mathbb{E}_{M_1}
    \Big\{ \frac{\lVert A_1 R(y_1, A_1) - y_1 \rVert^2}{\overline{M_1}}
    + \frac{\lVert A_2 R(y_1, A_1) - y_2 \rVert^2}{\overline{M_2}} \Big\}.

:class:`deepinv_icrf.loss.EquivariantSplittingLoss` implements it as a
:class:`deepinv.loss.Loss` with deepinv's semantics, plus what deepinv's own class lacks: the
consistency term can be switched off, :class:`deepinv.loss.SureGaussianLoss` and
:class:`deepinv.loss.R2RLoss` work as the consistency term, and the model survives deep copies,
``DataParallel``, ``torch.compile`` and repeated ``Trainer.train()`` calls. Here it trains a
small denoising-inpainting network next to deepinv's ``TVLoss``, with no clean image ever
shown to the network.
"""

# %%
# Data: noisy inpainting of image crops
# -------------------------------------
# The images are crops of scikit-image's bundled ``camera`` picture (shipped with the package,
# nothing is downloaded). The physics hides 30% of the pixels and adds Gaussian noise of
# standard deviation 0.1.

import deepinv as dinv
import matplotlib.pyplot as plt
import torch
from skimage.data import camera

from deepinv_icrf.loss import EquivariantSplittingLoss, WeightedLossScheduler
from deepinv_icrf.training import TermLoggingTrainer

torch.manual_seed(0)
device = dinv.utils.get_device()
size = 32
n_train = 32 if torch.cuda.is_available() else 16

image = torch.from_numpy(camera()).float().div(255)[None, None]  # (1, 1, 512, 512)
image = torch.nn.functional.avg_pool2d(image, 2)  # (1, 1, 256, 256)
crops = image.unfold(2, size, size).unfold(3, size, size).reshape(-1, 1, size, size)
train_x, test_x = crops[:n_train], crops[n_train : n_train + 4]

sigma = 0.1
gen = torch.Generator(device).manual_seed(0)
physics = dinv.physics.Inpainting(
    img_size=(1, size, size),
    mask=0.7,
    noise_model=dinv.physics.GaussianNoise(sigma, rng=gen),
    device=device,
    rng=gen,
)
# deepinv's Trainer simulates the measurements on the fly (online) from these images; the
# losses below never look at them.
train_loader = torch.utils.data.DataLoader(
    [{"x": x} for x in train_x], batch_size=8, shuffle=False
)
test_loader = torch.utils.data.DataLoader([{"x": x} for x in test_x], batch_size=4)

# %%
# The loss: equivariant splitting next to a deepinv loss
# ------------------------------------------------------
# Each training step keeps 80% of the measured pixels for the network and predicts the other
# 20%; the reconstruction is averaged over a random flip. At evaluation the network averages
# 4 splittings. The prediction term alone trains the network here
# (``consistency_loss=None``, which deepinv's class cannot do): the held-out pixels are
# independent noisy copies of the truth, so predicting them is an unbiased proxy of the
# supervised error, while a consistency term would pull the output towards the noisy input.

splitting = EquivariantSplittingLoss(
    mask_generator=dinv.physics.generator.BernoulliSplittingMaskGenerator(
        img_size=(1, size, size),
        split_ratio=0.8,
        device=device,
        rng=torch.Generator(device).manual_seed(1),
    ),
    consistency_loss=None,
    transform=dinv.transform.Reflect(dim=[-2, -1], n_trans=1),
    eval_n_samples=4,
)
loss = WeightedLossScheduler(
    {"splitting": splitting, "tv": dinv.loss.TVLoss()}, weights={"tv": 1e-3}
)

# %%
# The reconstructor
# -----------------
# A small residual CNN refines a simple first guess: the measured pixels, with the missing ones
# filled by the average of their measured neighbours. The first guess is computed from
# whatever the network is given, so inside the splitting it only sees the kept pixels
# :math:`y_1` (and, with the transforms, their flipped versions): mask and back-projection come
# from the physics it receives, :math:`m = A^\top A \mathbf{1}` and :math:`z = A^\top y`.


class FillAndRefine(dinv.models.Reconstructor):
    def __init__(self) -> None:
        super().__init__()
        self.refine = dinv.models.DnCNN(1, 1, depth=5, nf=24, pretrained=None)
        self.box = torch.nn.AvgPool2d(5, stride=1, padding=2, count_include_pad=False)

    def first_guess(self, y, physics):
        z = physics.A_adjoint(y)
        m = physics.A_adjoint(physics.A(torch.ones_like(z)))
        return z + (1 - m) * self.box(z) / self.box(m).clamp_min(1e-3)

    def forward(self, y, physics, **kwargs):
        return self.refine(self.first_guess(y, physics))


model = FillAndRefine().to(device)

# %%
# Train with deepinv's Trainer
# ----------------------------
# ``losses=loss`` is one :class:`deepinv.loss.Loss`; the Trainer calls its ``adapt_model``,
# which wraps the network in :class:`deepinv_icrf.models.EquivariantSplittingModel` once.

epochs = 40
trainer = TermLoggingTrainer(
    model=model,
    physics=physics,
    optimizer=torch.optim.Adam(model.parameters(), lr=5e-3),
    train_dataloader=train_loader,
    eval_dataloader=test_loader,
    eval_interval=10,
    losses=loss,
    epochs=epochs,
    metrics=[dinv.metric.PSNR()],
    online_measurements=True,
    plot_images=False,
    save_path=None,
    verbose=False,
    show_progress_bar=False,
    device=device,
    non_blocking_transfers=False,
)
model = trainer.train()

# %%
# Results on held-out crops
# -------------------------
# The trained network against the no-learning baseline :math:`A^\top y` (missing pixels at 0)
# and its own first guess (the local-average fill-in), measured with deepinv's PSNR.

model.eval()
x = test_x.to(device)
y = physics(x)
with torch.no_grad():
    x_net = model(y, physics)
baseline = physics.A_adjoint(y)
with torch.no_grad():
    fill = model.model.first_guess(y, physics)  # the same first guess, from all of y
psnr = dinv.metric.PSNR()
for name, est in (
    ("A^T y", baseline),
    ("local-average fill-in", fill),
    ("ES-trained", x_net),
):
    print(f"{name:>21}: PSNR {psnr(est, x).mean():.2f} dB")

dinv.utils.plot(
    [x[:2], y[:2], fill[:2], x_net[:2]],
    titles=["ground truth", "measurement", "local-average fill-in", "ES-trained"],
    figsize=(8, 4),
)

# %%
# The two terms, each logged under its own name, and the evaluation PSNR:

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
for key, history in trainer.term_loss_history.items():
    axes[0].semilogy(range(1, len(history) + 1), history, label=key)
axes[0].set_xlabel("epoch")
axes[0].legend()
axes[0].set_title("training terms")
axes[1].plot(trainer.eval_metrics_history["PSNR"], "o-")
axes[1].set_xlabel("evaluation")
axes[1].set_ylabel("PSNR (dB)")
axes[1].set_title("held-out PSNR")
fig.tight_layout()
plt.show()
