r"""
Probabilistic regression and per-pixel uncertainty with PROPEL
==============================================================

A network trained with a squared error predicts the *mean* of the possible answers: when a
question has two answers it predicts their average, which is neither. PROPEL (Asad et al.,
ICPR 2020) makes the network output a mixture of :math:`K` Gaussians
:math:`P_k = \mathcal{N}(\mu_k, s_k^2)` and compares it with a Gaussian
:math:`P_{gt} = \mathcal{N}(x, \sigma^2)` around the target through overlap integrals
:math:`G(P, Q) = \int p\, q`:

.. math::

    L = \log_{10} \frac{G(P_{gt}, P_{gt}) + \frac{1}{K^2}\sum_{i,j} G(P_i, P_j)}
    {\frac{2}{K}\sum_i G(P_{gt}, P_i)} \ \ge 0,

zero only for a perfect fit. :class:`deepinv_icrf.loss.PROPELLoss` computes it in log space
(finite where the official formulation overflows) as a :class:`deepinv.loss.Loss`, for vector
outputs ``(B, K, 2D)`` and for images, one mixture per pixel, so a deepinv network with a wider
last layer predicts an image *and* its uncertainty map.
"""

# %%
# Part 1: a regression with two answers
# -------------------------------------
# For each input :math:`u`, the target is :math:`0.8 u + 0.5` or :math:`0.8 u - 0.5` at random.
# The network outputs :math:`K = 2` components, means and (raw) standard deviations, in
# PROPEL's official layout ``(B, K, 2D)``; deepinv's Trainer trains it like any model, with
# the input as the measurement ``y`` and the target as ``x``.

import deepinv as dinv
import matplotlib.pyplot as plt
import torch
from torch import nn

from deepinv_icrf.functional import mixture_mean, mixture_std
from deepinv_icrf.loss import PROPELLoss

torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
n = 512
u = 2 * torch.rand(n, 1, generator=gen) - 1
branch = torch.randint(0, 2, (n, 1), generator=gen).float() * 2 - 1
target = 0.8 * u + 0.5 * branch + 0.03 * torch.randn(n, 1, generator=gen)
data = [{"x": target[i], "y": u[i]} for i in range(n)]


class MixtureMLP(dinv.models.Reconstructor):
    r"""``u (B, 1)`` to a 2-component mixture ``(B, 2, 2)``: (mean, raw std) per component."""

    def __init__(self, k: int = 2) -> None:
        super().__init__()
        self.k = k
        self.body = nn.Sequential(
            nn.Linear(1, 64),
            nn.Tanh(),
            nn.Linear(64, 64),
            nn.Tanh(),
            nn.Linear(64, 2 * k),
        )

    def forward(self, y, physics=None, **kwargs):
        return self.body(y).view(-1, self.k, 2)


def make_trainer(model, loss, loader, epochs, lr):
    return dinv.Trainer(
        model=model,
        physics=dinv.physics.Denoising(),  # only passes y through: y is the network's input
        optimizer=torch.optim.Adam(model.parameters(), lr=lr),
        train_dataloader=loader,
        losses=loss,
        epochs=epochs,
        online_measurements=False,
        metrics=[],
        plot_images=False,
        save_path=None,
        verbose=False,
        show_progress_bar=False,
        device="cpu",
        non_blocking_transfers=False,
    )


loader = torch.utils.data.DataLoader(data, batch_size=128, shuffle=True, generator=gen)
propel = PROPELLoss(sigma=0.05)
mixture_net = make_trainer(MixtureMLP(), propel, loader, epochs=50, lr=2e-2).train()


class PointMLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 1)
        )

    def forward(self, y, physics=None, **kwargs):
        return self.body(y)


point_net = make_trainer(
    PointMLP(), dinv.loss.SupLoss(), loader, epochs=50, lr=2e-2
).train()

# %%
# The squared-error network predicts the average of the two branches; the PROPEL network puts
# one component on each branch, with its own standard deviation.

grid = torch.linspace(-1, 1, 101).view(-1, 1)
with torch.no_grad():
    out = mixture_net(grid)
    means, stds = propel.split(out)  # (101, 2, 1) each, stds mapped to positive values
    point = point_net(grid)
fig, ax = plt.subplots(figsize=(7, 4))
ax.scatter(u, target, s=4, color="0.6", label="training data")
for k, colour in enumerate(("tab:blue", "tab:orange")):
    mu, s = means[:, k, 0], stds[:, k, 0]
    ax.plot(grid, mu, color=colour, label=f"PROPEL component {k + 1}")
    ax.fill_between(grid[:, 0], mu - 2 * s, mu + 2 * s, color=colour, alpha=0.2)
ax.plot(grid, point, "k--", label="squared-error network")
ax.set_xlabel("input u")
ax.set_ylabel("target")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
# Part 2: denoising with a per-pixel uncertainty map
# --------------------------------------------------
# Crops of scikit-image's bundled ``camera`` picture (nothing is downloaded) get Gaussian noise
# whose level grows from left to right, unknown to the network. A small convolutional network
# outputs :math:`2 K C` channels, read by the loss as :math:`K = 2` components of a mean and a
# standard deviation per pixel (the ``(B, 2KC, H, W)`` layout).

from skimage.data import camera  # noqa: E402

size = 32
image = torch.from_numpy(camera()).float().div(255)[None, None]
image = nn.functional.avg_pool2d(image, 2)  # (1, 1, 256, 256)
crops = image.unfold(2, size, size).unfold(3, size, size).reshape(-1, 1, size, size)
noise_level = 0.02 + 0.2 * torch.linspace(0, 1, size).view(1, 1, 1, size)
noisy = crops + noise_level * torch.randn(crops.shape, generator=gen)
train = [{"x": crops[i], "y": noisy[i]} for i in range(48)]
test_x, test_y = crops[48:52], noisy[48:52]

k = 2


class MixtureDenoiser(dinv.models.Reconstructor):
    r"""A small CNN with a widened head: ``(B, 1, H, W)`` to ``(B, 2 K, H, W)``."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 2 * k, 3, padding=1),
        )

    def forward(self, y, physics=None, **kwargs):
        out = self.body(y)
        # means as residual corrections of the noisy input, raw stds as they come
        means = y + out[:, :k]
        return torch.cat([means, out[:, k:]], dim=1).view(-1, k, 2, 1, *y.shape[-2:])


image_loss = PROPELLoss(sigma=0.01)
denoiser = make_trainer(
    MixtureDenoiser(),
    image_loss,
    torch.utils.data.DataLoader(train, batch_size=8, shuffle=True, generator=gen),
    epochs=15,
    lr=3e-3,
).train()

# %%
# :func:`~deepinv_icrf.functional.mixture_mean` gives the image that deepinv's metrics and
# plots take; :func:`~deepinv_icrf.functional.mixture_std` the per-pixel uncertainty. The
# predicted uncertainty follows the noise level, and where it is high the error is too.

with torch.no_grad():
    out = denoiser(test_y)
mean = mixture_mean(out)
std = mixture_std(out)
psnr = dinv.metric.PSNR()
print(
    f"noisy PSNR {psnr(test_y, test_x).mean():.2f} dB, mixture mean {psnr(mean, test_x).mean():.2f} dB"
)
error = (mean - test_x).abs()
print(
    "mean predicted std, left / right quarter:",
    f"{std[..., : size // 4].mean():.3f} / {std[..., -size // 4 :].mean():.3f}",
)
dinv.utils.plot(
    [test_x[:2], test_y[:2], mean[:2], std[:2], error[:2]],
    titles=["clean", "noisy", "mixture mean", "predicted std", "|error|"],
    figsize=(10, 4.5),
)

fig, ax = plt.subplots(figsize=(6, 3.2))
ax.plot(noise_level.flatten(), label="true noise level")
ax.plot(std.mean(dim=(0, 1, 2)), label="predicted std (mean over rows)")
ax.plot(
    error.mean(dim=(0, 1, 2)) * (torch.pi / 2) ** 0.5, label="RMS-equivalent |error|"
)
ax.set_xlabel("column")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
