r"""
Calibrate from a bracket with something moving in it
====================================================

A calibration assumes one static scene: every pixel sees the same radiance :math:`E` in every
exposure, so its codes :math:`y_k = f(E\, t_k)` trace the camera response. In a real bracket
someone walks through the frame, leaves move, a handheld camera shifts: a few percent of the
codes then belong to another radiance, and every method that trusts all codes (Debevec,
Robertson, a plain likelihood fit) bends its curve to explain them.

The code-domain fit of :func:`deepinv_icrf.fit_icrf` leaves such codes out by default
(``outlier_threshold=5``): once converged, it drops the codes its response misses by more than
5 robust noise standard deviations, judged per level of the response, restarts each pixel's
radiance at the median of its exposures and fits again. On a static scene it leaves nothing out
and the fit is the plain one.
"""

# %%
# A bracket with a moving block
# -----------------------------
#
# The demo scene, shot 5 times one stop apart by a camera with the sRGB response (code noise
# 0.01), with a flat block covering 5% of the frame at a new place in every exposure.

import matplotlib.pyplot as plt
import torch
from deepinv.physics import GaussianNoise

from deepinv_icrf import fit_icrf
from deepinv_icrf.data import demo_exposure_times, demo_scene
from deepinv_icrf.functional import curve_rmse
from deepinv_icrf.physics import ExposureStack, get_response
from deepinv_icrf.plot import plot_icrf

torch.manual_seed(0)
height, width = 96, 128
times = demo_exposure_times(5, shortest=0.25)
response = get_response("srgb")
scene = demo_scene(height, width, channels=1, dynamic_range_stops=10)
camera = ExposureStack(times, response=response, noise_model=GaussianNoise(sigma=0.01))

generator = torch.Generator().manual_seed(1)
side = int((0.05 * height * width) ** 0.5)
frames = []
for k in range(len(times)):
    radiance = scene.clone()
    top = int(torch.randint(0, height - side, (1,), generator=generator))
    left = int(torch.randint(0, width - side, (1,), generator=generator))
    radiance[..., top : top + side, left : left + side] = 0.1
    frames.append(camera(radiance)[0, k : k + 1])  # exposure k of this radiance
stack = torch.cat(frames)  # (N, 1, H, W)
static = camera(scene)[0]  # the same bracket without the block

fig, axes = plt.subplots(1, len(times), figsize=(12, 2.4))
for k, ax in enumerate(axes):
    ax.imshow(stack[k, 0], cmap="gray", vmin=0, vmax=1)
    ax.set_title(f"t = {float(times[k]):g} s")
    ax.axis("off")
fig.suptitle("the block moves between exposures")
plt.show()

# %%
# Fit with and without outlier rejection
# --------------------------------------

truth = response.icrf_curve(n_points=256, channels=1)
fits = {
    "static scene": fit_icrf(static, times, progress=False),
    "moving block, every code kept": fit_icrf(
        stack, times, outlier_threshold=None, progress=False
    ),
    "moving block, outliers left out": fit_icrf(stack, times, progress=False),
}
for name, icrf in fits.items():
    error = float(curve_rmse(icrf.curve.detach().double(), truth))
    left_out = (icrf.fit_report.outliers or [0.0])[0]
    print(f"{name:32s} curve RMSE {error:.4f}, codes left out {100 * left_out:.1f}%")

# %%
# The curves against the true one: the plain fit bends where the block's codes sit, the
# default fit follows the static one.

fig, ax = plt.subplots(figsize=(5.5, 4.5))
codes = torch.linspace(0, 1, 256)
ax.plot(codes, truth[0], "k--", label="true ICRF")
for name, icrf in fits.items():
    ax.plot(codes, icrf.curve.detach()[0], label=name)
ax.set_xlabel("code")
ax.set_ylabel("relative irradiance")
ax.legend()
plt.show()

# %%
# :func:`~deepinv_icrf.plot.plot_icrf` draws one fit with its error against the truth:

fig = plot_icrf(
    fits["moving block, outliers left out"].curve.detach(),
    reference=truth,
    title="ICRF fitted with a moving block in the bracket",
)
plt.show()

# %%
# Merge the bracket without ghosts
# --------------------------------
#
# The same block leaves semi-transparent copies in a plain HDR merge, one per exposure it
# appears in. ``merge_hdr(..., deghost=4.0)`` keeps, per pixel, only the exposures whose
# radiance agrees with the middle exposure's within 4 noise standard deviations (pass the
# fitted code noise as ``code_std``): the block then appears once, where the middle exposure
# saw it. The price is noise: pixels that keep only one or two exposures (where a block
# passed, or where the middle exposure is near its clipping and the others disagree with its
# biased codes) are as noisy as those exposures alone.

from deepinv_icrf.hdr import merge_hdr, tonemap  # noqa: E402

icrf = fits["moving block, outliers left out"]
noise = max(icrf.fit_report.sigma)
plain = merge_hdr(stack, times, icrf, code_std=noise)
clean = merge_hdr(stack, times, icrf, code_std=noise, deghost=4.0)

fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
for ax, radiance, title in zip(
    axes, (plain, clean), ("plain merge", "merge with deghost=4"), strict=True
):
    ax.imshow(tonemap(radiance)[0].detach(), cmap="gray", vmin=0, vmax=1)
    ax.set_title(title)
    ax.axis("off")
plt.show()
