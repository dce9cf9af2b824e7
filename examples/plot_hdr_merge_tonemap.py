r"""
Linearize, merge an HDR image and tone-map it
=============================================

Once the inverse response :math:`\ICRF` is known, each exposure :math:`y_k` gives a radiance
estimate :math:`\ICRF(y_k) / t_k`: good where the code is well exposed, useless where it is
clipped or buried in the dark. :func:`deepinv_icrf.hdr.merge_hdr` combines them with weights
:math:`w_k` that vanish outside the valid codes :math:`[\ell, u]`, and propagates the code noise
into a per-pixel standard deviation:

.. math::

    E = \frac{\sum_k w_k\, \ICRF(y_k) / t_k}{\sum_k w_k}, \qquad
    \sigma_E = \frac{\sqrt{\sum_k w_k^2\, s_k^2 / t_k^2}}{\sum_k w_k} .

The radiance map spans far more than a screen can show: :func:`deepinv_icrf.hdr.tonemap`
compresses it for display (Reinhard's global operator). This example merges the demo stack
with the camera's true ICRF and with a naive gamma-2.2 guess, to show what a wrong curve does
to the radiance.
"""

# %%
# A bracketed stack of a 12-stop scene
# ------------------------------------

import deepinv as dinv
import matplotlib.pyplot as plt
import torch

from deepinv_icrf.data import demo_exposure_times, demo_scene
from deepinv_icrf.hdr import linearize, merge_hdr, tonemap
from deepinv_icrf.models import ICRF
from deepinv_icrf.physics import ExposureStack, get_response

torch.manual_seed(0)
scene = demo_scene()  # (1, 3, 128, 160), radiance in (0, 1]
times = demo_exposure_times(9, stops_apart=1.5)  # 1/4 s ... 1024 s
response = get_response("filmic")  # an S-shaped camera curve
camera = ExposureStack(
    times, response=response, noise_model=dinv.physics.GaussianNoise(0.004)
)
stack = camera(scene)[0]  # (9, 3, 128, 160) codes in [0, 1]

true_icrf = ICRF.from_response(response)  # the curve a calibration would recover
naive_icrf = ICRF(channels=3, init="gamma", gamma=2.2)  # "it is probably sRGB-ish"

# %%
# Linearize
# ---------
# :func:`~deepinv_icrf.hdr.linearize` applies the curve per channel (to ``uint8``/``uint16``
# arrays as image readers return them, or to float tensors). Divided by its exposure time, each
# exposure estimates the same radiance, over its own range of the scene.

linear = linearize(stack, true_icrf)  # (9, 3, H, W)
per_exposure = linear / times.view(-1, 1, 1, 1).float()
row = 40
fig, ax = plt.subplots(figsize=(7, 3.2))
for k in range(0, 9, 2):
    ax.semilogy(per_exposure[k, 1, row], lw=1, label=f"t = {times[k]:g} s")
ax.semilogy(scene[0, 1, row], "k--", lw=1.2, label="true radiance")
ax.set_xlabel("column")
ax.set_title("linearized exposure / t, green channel, one row")
ax.legend(fontsize=7, ncol=3)
fig.tight_layout()

# %%
# Merge
# -----
# The merge also returns the per-pixel standard deviation and the mask of pixels clipped in
# every exposure (none here: the shortest exposure keeps the light sources below white).

radiance, std, saturated = merge_hdr(
    stack, times, true_icrf, return_std=True, return_saturated=True, code_std=0.004
)
naive = merge_hdr(stack, times, naive_icrf)
print("radiance:", tuple(radiance.shape), "saturated pixels:", int(saturated.sum()))


def log_error(estimate: torch.Tensor) -> float:
    r"""RMS error in stops, after the best global scale (radiance is relative)."""
    log_ratio = torch.log2(estimate.clamp_min(1e-12) / scene[0])
    return float((log_ratio - log_ratio.median()).pow(2).mean().sqrt())


print(f"true ICRF:  RMS error {log_error(radiance):.3f} stops")
print(f"gamma 2.2:  RMS error {log_error(naive):.3f} stops")

# %%
# Tone-map for display
# --------------------
# The merged radiance spans about 12 stops; a linear display clips most of it, the tone-mapped
# image shows it all. The relative uncertainty :math:`\sigma_E / E` is largest where only
# dark codes were available.

shown = [
    (radiance / radiance.max()).clamp(0, 1),
    tonemap(radiance),
    tonemap(naive),
    (std / radiance).clamp(0, 0.2)[1:2].expand(3, -1, -1) / 0.2,
]
titles = [
    "linear display",
    "tone-mapped (true ICRF)",
    "tone-mapped (gamma 2.2 guess)",
    "relative std (0 to 20%)",
]
fig, axes = plt.subplots(1, 4, figsize=(13, 3))
for ax, image, title in zip(axes, shown, titles, strict=True):
    ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set_title(title, fontsize=9)
    ax.axis("off")
fig.tight_layout()
plt.show()

# %%
# Save the result
# ---------------
# :func:`deepinv_icrf.hdr.save_radiance` writes float radiance atomically, as ``.exr`` or
# ``.hdr`` (built-in codecs, no plugin needed), ``.npy`` or 32-bit TIFF:
#
# .. code-block:: python
#
#     from deepinv_icrf.hdr import save_radiance
#     save_radiance("scene.hdr", radiance)
