r"""
Calibrate a camera from a folder of bracketed JPEGs
===================================================

The usual input of a calibration is a folder of photos of one static scene, shot on a tripod
with different exposure times, each time recorded in the image's EXIF ``ExposureTime`` tag.
:func:`deepinv_icrf.data.read_exposure_folder` reads such a folder (JPEG, PNG or TIFF, 8 or 16
bits), takes the times from EXIF (or from a ``CSV``/``JSON`` sidecar file when EXIF lacks them)
and sorts the stack by time; :func:`deepinv_icrf.fit_icrf` then fits the inverse response
:math:`\ICRF` that makes the exposures radiometrically consistent,

.. math::

    \ICRF(y_i) \approx \frac{t_i}{t_j}\, \ICRF(y_j), \qquad t_i < t_j .

Here the folder is written by :func:`deepinv_icrf.data.write_synthetic_folder`: a camera with
the sRGB response shoots the package's demo scene, and the photos are saved as JPEGs with EXIF,
in a temporary folder. With your own photos, start at :func:`~deepinv_icrf.data.read_exposure_folder`
(or run ``deepinv-icrf fit FOLDER``).
"""

# %%
# A folder of bracketed JPEGs with EXIF
# -------------------------------------

import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from deepinv_icrf import fit_icrf
from deepinv_icrf.calibration import icrf_confidence_band
from deepinv_icrf.data import read_exposure_folder, write_synthetic_folder
from deepinv_icrf.functional import curve_rmse
from deepinv_icrf.physics import get_response
from deepinv_icrf.plot import plot_icrf

torch.manual_seed(0)
workdir = Path(tempfile.mkdtemp(prefix="deepinv_icrf_gallery_"))
folder = write_synthetic_folder(
    workdir / "bracket",
    n_exposures=7,
    height=96,
    width=128,
    response="srgb",
    noise_sigma=0.003,
    fmt="jpg",
    exif=True,
    shortest=1 / 64,
)
for path in sorted(folder.iterdir()):
    print(f"{path.name:>18}  {path.stat().st_size:>6} bytes")

# %%
# The exposure time of each file is in its EXIF block, as a camera writes it:

from PIL import Image  # noqa: E402

EXPOSURE_TIME = 0x829A  # the EXIF tag ``ExposureTime``
for path in sorted(folder.glob("*.jpg"))[:3]:
    exif = Image.open(path).getexif().get_ifd(0x8769)  # the Exif sub-IFD
    print(path.name, "ExposureTime =", exif.get(EXPOSURE_TIME), "s")

# %%
# Read the folder
# ---------------
# ``images`` are the codes ``(N, H, W, C)`` exactly as stored (``uint8`` here), sorted by
# exposure time; ``time_source`` says where the times came from.

stack = read_exposure_folder(folder)
print("images:", stack.images.shape, stack.images.dtype, "bit depth", stack.bit_depth)
print("exposure times (s):", stack.exposure_times.tolist(), "from", stack.time_source)

fig, axes = plt.subplots(1, len(stack.paths), figsize=(13, 2))
for ax, image, t in zip(axes, stack.images, stack.exposure_times, strict=True):
    ax.imshow(image)
    ax.set_title(f"{t:g} s", fontsize=8)
    ax.axis("off")
fig.tight_layout()

# %%
# Fit and compare with the camera's true curve
# --------------------------------------------
# :func:`~deepinv_icrf.fit_icrf` takes the ``uint8`` array as it is. JPEG compression adds
# its own error to the codes, on top of the sensor noise.

icrf = fit_icrf(stack.images, stack.exposure_times, progress=False)
truth = get_response("srgb").icrf_curve(256, channels=3)
rmse = curve_rmse(icrf.curve.detach(), truth)
print("RMSE per channel against the true sRGB ICRF (codes 8..247):")
print([round(v, 4) for v in rmse.tolist()])

plot_icrf(icrf.curve, reference=truth, title="calibrated from JPEGs with EXIF")
plt.show()

# %%
# Nominal exposure times
# ----------------------
# A camera's EXIF times are nominal: its "1/60 s" may be 1/64 s, and aperture and gain drift a
# few percent. Here the times given to the fit are off by up to 8%;
# ``refine_exposures=True`` estimates the relative exposures jointly with the curve, with the
# given times as a prior, and reports the refined times.

factors = torch.tensor([1.0, 1.06, 0.95, 1.08, 0.97, 1.04, 0.93], dtype=torch.float64)
nominal = torch.as_tensor(stack.exposure_times) * factors
refined = fit_icrf(stack.images, nominal, refine_exposures=True, progress=False)
report = refined.fit_report
true_ratios = torch.as_tensor(stack.exposure_times) / stack.exposure_times[0]
for name, t in (("nominal", nominal), ("refined", report.exposure_times)):
    ratios = t.double().flatten() / t.double().flatten()[0]
    error = (ratios / true_ratios - 1).abs().max()
    print(f"{name:>8} relative exposures: max error {100 * float(error):.2f}%")
print(
    "curve RMSE with refined times:",
    [round(v, 4) for v in curve_rmse(refined.curve.detach(), truth).tolist()],
)

# %%
# How far can the curve be trusted?
# ---------------------------------
# :func:`deepinv_icrf.training.icrf_confidence_band` refits the curve on stacks simulated from
# the fit and its measured code noise (a parametric bootstrap), refits it once without each
# exposure (a jackknife: how much the curve depends on which exposures pin it), refits it on
# a pixel sample that avoids partly clipped pixels (where the two fits disagree, the stack
# does not pin the curve, typically where saturation lies), and returns a per-code band, kept on the model (``icrf.band``, saved with the curve) and drawn by
# :func:`~deepinv_icrf.plot.plot_icrf` (16 refits by default). The simulated stacks carry
# the measured code noise and the quantisation, not JPEG compression error: on these small
# JPEGs the printed coverage shows how much of the real error the band leaves out.

lower, upper = icrf_confidence_band(stack.images, stack.exposure_times, icrf)
inside = ((truth >= lower) & (truth <= upper))[:, 8:248].float().mean()
print(f"true curve inside the band on {100 * float(inside):.0f}% of codes 8..247")
plot_icrf(
    icrf.curve, reference=truth, band=icrf.band, title="fitted ICRF with a 95% band"
)
plt.show()

# %%
# Save the calibration
# --------------------
# The curve is written as plain JSON (atomically, with any metadata you add) and read back
# with :meth:`deepinv_icrf.models.ICRF.load`.

from deepinv_icrf.models import ICRF  # noqa: E402

icrf.save(workdir / "camera.json", camera="synthetic sRGB", source=str(folder))
again = ICRF.load(workdir / "camera.json")
print("reloaded curve equal:", torch.equal(again.curve, icrf.curve.detach().cpu()))
