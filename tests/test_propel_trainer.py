from __future__ import annotations

import deepinv as dinv
import pytest
import torch

from deepinv_icrf.loss import PROPELLoss

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny models: thread hand-offs cost more than they save (and the CI machine is shared)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def trainer_kwargs(device, epochs):
    return dict(
        epochs=epochs,
        save_path=None,
        verbose=False,
        show_progress_bar=False,
        plot_images=False,
        device=device,
        non_blocking_transfers=False,
    )


# ----------------------------------------------------------------------------------------
# Bimodal regression: y = u, x = +-(1 + u / 2) with a fair coin. A mean regressor predicts 0;
# a two-component PROPEL mixture must put one mean on each branch.
# ----------------------------------------------------------------------------------------
class MixtureMLP(dinv.models.Reconstructor):
    def __init__(self, k: int = 2, d: int = 1) -> None:
        super().__init__()
        self.k, self.d = k, d
        self.body = torch.nn.Sequential(
            torch.nn.Linear(1, 32),
            torch.nn.Tanh(),
            torch.nn.Linear(32, 32),
            torch.nn.Tanh(),
            torch.nn.Linear(32, 2 * k * d),
        )

    def forward(self, y, physics, **kwargs):
        return self.body(y).reshape(
            -1, self.k, 2 * self.d
        )  # official layout (B, K, 2D)


def branch(u: torch.Tensor) -> torch.Tensor:
    return 1.0 + 0.5 * u


def bimodal_loader(device, n=1024, batch_size=128):
    gen = torch.Generator(device).manual_seed(0)
    u = 2 * torch.rand(n, 1, generator=gen, device=device) - 1
    coin = torch.rand(n, 1, generator=gen, device=device) < 0.5
    x = torch.where(coin, branch(u), -branch(u))
    items = [{"x": xi, "y": ui} for xi, ui in zip(x, u, strict=True)]
    return torch.utils.data.DataLoader(items, batch_size=batch_size, shuffle=True)


def test_trainer_recovers_both_modes(device):
    torch.manual_seed(0)
    net = MixtureMLP().to(device)
    loss = PROPELLoss(sigma=0.1).to(device)
    trainer = dinv.Trainer(
        net,
        dinv.physics.Physics(),
        torch.optim.Adam(net.parameters(), lr=1e-2),
        bimodal_loader(device),
        losses=[loss],
        metrics=[],
        online_measurements=False,
        **trainer_kwargs(device, 12),
    )
    trainer.train()
    u = torch.linspace(-0.9, 0.9, 7, device=device)[:, None]
    with torch.no_grad():
        out = net(u, None)
    means, stds = loss.split(out)
    low, high = means[..., 0].sort(1).values.unbind(1)
    torch.testing.assert_close(low, -branch(u[:, 0]), atol=0.05, rtol=0)
    torch.testing.assert_close(high, branch(u[:, 0]), atol=0.05, rtol=0)
    assert (stds < 0.15).all()  # each component is sharp: the two modes are separated
    mean = loss.mean(out)
    assert mean.abs().max() < 0.2  # while the mixture mean sits between the branches
    spread = loss.std(out)
    assert (
        spread > 0.8 * branch(u)
    ).all()  # and its std reports the bimodal uncertainty


# ----------------------------------------------------------------------------------------
# Image layout: a denoiser with a widened head (2 K C channels), PROPEL next to TVLoss.
# ----------------------------------------------------------------------------------------
SHAPE = (2, 13, 11)
K = 2


class WideHeadNet(dinv.models.Reconstructor):
    def __init__(self, channels: int = SHAPE[0], k: int = K) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(channels, 16, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(16, 2 * k * channels, 3, padding=1),
        )
        self.channels, self.k = channels, k

    def forward(self, y, physics, **kwargs):
        out = self.body(y).reshape(y.shape[0], self.k, 2, self.channels, *y.shape[-2:])
        means = out[:, :, 0] + y[:, None]  # residual on the means
        return torch.stack([means, out[:, :, 1]], 2).flatten(1, 3)  # (B, 2 K C, H, W)


def smooth_images(n, device, gen):
    coarse = torch.rand(n, SHAPE[0], 4, 4, generator=gen, device=device)
    return torch.nn.functional.interpolate(
        coarse, size=SHAPE[1:], mode="bilinear", align_corners=True
    )


def test_trainer_image_layout_next_to_tv_loss(device):
    torch.manual_seed(0)
    gen = torch.Generator(device).manual_seed(0)
    noise = 0.1
    physics = dinv.physics.Denoising(
        dinv.physics.GaussianNoise(noise, rng=torch.Generator(device).manual_seed(1))
    )
    train = smooth_images(16, device, gen)
    loader = torch.utils.data.DataLoader(
        [{"x": xi} for xi in train], batch_size=4, shuffle=False
    )
    net = WideHeadNet().to(device)
    propel = PROPELLoss(sigma=0.05, n_components=K).to(device)
    test_x = smooth_images(4, device, gen)
    test_y = physics(test_x)
    with torch.no_grad():
        before = propel(x_net=net(test_y, physics), x=test_x).mean()
    trainer = dinv.Trainer(
        net,
        physics,
        torch.optim.Adam(net.parameters(), lr=5e-3),
        loader,
        losses=[propel, dinv.loss.TVLoss(weight=1e-3)],
        metrics=[],
        online_measurements=True,
        **trainer_kwargs(device, 15),
    )
    trainer.train()
    with torch.no_grad():
        x_net = net(test_y, physics)
    after = propel(x_net=x_net, x=test_x)
    assert x_net.shape == (4, 2 * K * SHAPE[0], *SHAPE[1:])
    assert after.shape == (4,) and after.mean() < 0.7 * before
    # helpers turn the mixture into images that deepinv metrics take
    mean, std = propel.mean(x_net), propel.std(x_net)
    assert mean.shape == std.shape == (4, *SHAPE)
    assert (std > 0).all()
    psnr = dinv.metric.PSNR()
    assert psnr(mean, test_x).mean() > psnr(test_y, test_x).mean() + 1.0
