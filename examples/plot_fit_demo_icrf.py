r"""
Fit the inverse camera response of the demo stack
=================================================

A camera does not record radiance: it records codes :math:`y_k = f(t_k x)` through a
non-linear **camera response function** (CRF) :math:`f`, with exposure times :math:`t_k`.
Calibrating the camera means finding the **inverse** response :math:`\ICRF = f^{-1}`
(the ICRF), so that the linearized exposures :math:`\ICRF(y_k) = t_k x` become proportional
to each other:

.. math::

    \ICRF(y_i) \approx \frac{t_i}{t_j}\, \ICRF(y_j)
    \quad \text{for every pair of exposures } t_i < t_j .

This example simulates the package's embedded demo camera (a different gamma per channel),
shoots a 9-exposure bracketed stack of the built-in HDR scene, fits the ICRF with
:func:`deepinv_icrf.fit_icrf` and compares it with the true curve. The same job runs from the
command line with ``deepinv-icrf``.
"""

# %%
# Simulate the camera
# -------------------
# :class:`deepinv_icrf.physics.ExposureStack` is a :class:`deepinv.physics.Physics`: it maps a
# radiance map ``(B, C, H, W)`` to a stack of codes ``(B, N, C, H, W)`` in ``[0, 1]``, with
# 8-bit quantisation and any deepinv noise model on the codes.

import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from deepinv_icrf import fit_icrf
from deepinv_icrf.data import demo_exposure_times, demo_scene
from deepinv_icrf.functional import curve_rmse
from deepinv_icrf.physics import ExposureStack, get_response
from deepinv_icrf.plot import plot_icrf

torch.manual_seed(0)
device = dinv.utils.get_device()  # the fit is small: CPU is fine

scene = demo_scene()  # (1, 3, 128, 160) radiance, 12 stops of dynamic range
times = demo_exposure_times(9)  # 1/4 s ... 64 s, one stop apart
response = get_response("gamma", gamma=(2.0, 2.2, 2.5))  # one curve per channel
physics = ExposureStack(
    times,
    response=response,
    bit_depth=8,
    noise_model=dinv.physics.GaussianNoise(sigma=0.004),
)
stack = physics(scene)
print("stack:", tuple(stack.shape), "exposure times:", times.tolist())

# %%
# The bracketed stack, from the shortest to the longest exposure: each code range is well
# exposed in some images and clipped in others.

fig, axes = plt.subplots(1, 9, figsize=(13, 1.9))
for k, ax in enumerate(axes):
    ax.imshow(stack[0, k].permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title(f"t = {times[k]:g} s", fontsize=8)
    ax.axis("off")
fig.tight_layout()

# %%
# Fit the ICRF
# ------------
# :func:`~deepinv_icrf.fit_icrf` takes the stack of one scene ``(N, C, H, W)`` (or a ``uint8``
# array ``(N, H, W, C)`` as image readers return it) and the exposure times, and returns an
# :class:`deepinv_icrf.models.ICRF`: an ``nn.Module`` whose ``curve`` is ``(C, 256)`` samples of
# :math:`\ICRF` on ``[0, 1]``, monotone with :math:`\ICRF(0) = 0` and :math:`\ICRF(1) = 1`.
# By default it fits in the *code domain* (``method="code"``): a monotone response and one
# radiance per sampled pixel explain the noisy, clipped codes, which is robust to code noise;
# ``method="linearity"`` minimises the clair-torch linearity objective above instead.

icrf = fit_icrf(stack[0], times, progress=False, device=device)
print("fit:", icrf.fit_report.method, f"{icrf.fit_report.wall_time_s:.1f} s")
fitted = icrf.curve.detach().cpu()
truth = response.icrf_curve(256, channels=3).to(fitted)

rmse = curve_rmse(fitted, truth)  # over codes 8..247
for name, value in zip("RGB", rmse.tolist(), strict=True):
    print(f"channel {name}: RMSE against the true ICRF = {value:.4f}")

# %%
# Fitted against true curves, and the error per channel.

plot_icrf(fitted, reference=truth, title="demo camera: fitted vs true ICRF")
plt.show()

# %%
# Use the fitted curve
# --------------------
# The ICRF is a deepinv reconstructor: applied to the stack it linearizes every exposure.
# Dividing by the exposure time gives one radiance estimate per exposure; they agree where the
# codes are well exposed, which is what the fit asked for.

with torch.no_grad():
    linear = icrf(stack.to(device)).cpu()  # (1, 9, 3, H, W), relative irradiance
radiance = linear[0] / times.view(-1, 1, 1, 1).float()
row = 64
fig, ax = plt.subplots(figsize=(7, 3.2))
for k in range(2, 7):
    ax.semilogy(radiance[k, 1, row], label=f"t = {times[k]:g} s")
ax.semilogy(scene[0, 1, row], "k--", lw=1, label="true radiance (scaled 1)")
ax.set_xlabel("column")
ax.set_ylabel("linearized / t")
ax.set_title("green channel along one row")
ax.legend(fontsize=7, ncol=2)
fig.tight_layout()
plt.show()

# %%
# The fitted curve is saved as plain JSON (no pickle) and read back with
# :meth:`deepinv_icrf.models.ICRF.load`:
#
# .. code-block:: python
#
#     icrf.save("my_camera.json", camera="demo")
#     icrf = ICRF.load("my_camera.json")
