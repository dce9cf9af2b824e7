r"""
Calibrate from imperfect photos: refined exposure times and a confidence band
=============================================================================

Real EXIF exposure times are nominal: a camera's "1/60 s" is often 1/64 s, and aperture and
gain drift by a few percent between frames. A fit that trusts such times bends the curve to
absorb their errors. :func:`deepinv_icrf.fit_icrf` with ``refine_exposures=True`` estimates the
relative exposures together with the curve, the EXIF times acting as a prior, and with
``band=True`` it adds a 95% confidence band of the curve (a parametric bootstrap of the whole
fit, widened by refits that each leave one exposure out), stored in ``icrf.band`` and saved
with the curve.

A frame listed at the wrong stop, as cameras at their shutter limit write, is caught by every
fit: the default ``refine_exposures="auto"`` names it and corrects its time (last section).

One thing no method can do: the curve :math:`f` with the times :math:`t_k` explains the photos
exactly as well as :math:`f^g` with :math:`t_k^g`, for every exponent :math:`g > 0`. The
*ratios* between exposures are fixed by the images only up to this exponent, which the EXIF
prior then sets (see :func:`deepinv_icrf.calibration.refine.fit_refined`).
"""

# %%
# A folder of bracketed JPEGs whose EXIF times are off by up to 10%
# -----------------------------------------------------------------
#
# :func:`~deepinv_icrf.data.write_synthetic_folder` shoots the demo scene with an sRGB camera,
# one stop apart, and writes JPEGs with EXIF. We then overwrite each EXIF ``ExposureTime`` with
# a "nominal" time that is off by up to 10%, as a real camera's would be (re-saving with the
# JPEG's own quantisation tables, ``quality="keep"``, so the pixels barely change).

import tempfile
import warnings
from fractions import Fraction
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from deepinv_icrf import fit_icrf
from deepinv_icrf.calibration.refine import describe_refinement
from deepinv_icrf.data import read_exposure_folder, write_synthetic_folder
from deepinv_icrf.physics import get_response
from deepinv_icrf.plot import plot_icrf

torch.manual_seed(0)
folder = Path(tempfile.mkdtemp()) / "bracket"
write_synthetic_folder(
    folder,
    n_exposures=5,
    height=96,
    width=128,
    channels=3,
    response="srgb",
    noise_sigma=0.01,
    shortest=0.25,
    fmt="jpg",
    seed=0,
)
true_times = torch.tensor([0.25 * 2.0**k for k in range(5)], dtype=torch.float64)
errors = torch.tensor([0.06, -0.08, 0.03, 0.09, -0.05], dtype=torch.float64)
exif_times = (true_times * (1 + errors)).tolist()
for path, t in zip(sorted(folder.glob("*.jpg")), exif_times, strict=True):
    frac = Fraction(t).limit_denominator(10_000)
    with Image.open(path) as im:
        im.load()
        exif = im.getexif()
        exif.get_ifd(0x8769)[33434] = IFDRational(frac.numerator, frac.denominator)
        im.save(path, quality="keep", exif=exif.tobytes())

stack = read_exposure_folder(folder)
print("EXIF times (s):", [round(float(t), 4) for t in stack.exposure_times])

# %%
# Fit with exposure refinement and a confidence band
# --------------------------------------------------

icrf = fit_icrf(
    stack.images, stack.exposure_times, refine_exposures=True, band=True, progress=False
)
print(describe_refinement(icrf))

# %%
# Nominal, refined and true times, relative to their geometric mean (a common scale is
# unknowable): the refinement removes most of the EXIF error.


def relative(t):
    t = torch.as_tensor(t, dtype=torch.float64)
    return t / t.log().mean().exp()


nominal = relative(stack.exposure_times)
refined = relative(icrf.fit_report.exposure_times)
truth = relative(true_times)
print(" k   nominal   refined   true")
for k in range(5):
    print(f"{k:2d}  {nominal[k]:8.4f}  {refined[k]:8.4f}  {truth[k]:8.4f}")
print(
    f"largest error: nominal {100 * (nominal / truth - 1).abs().max():.2f}%, "
    f"refined {100 * (refined / truth - 1).abs().max():.2f}%"
)

# %%
# The curve, its 95% band and the true curve
# ------------------------------------------
#
# ``icrf.band`` holds the lower and upper edges ``(2, C, L)``; ``icrf.save`` writes it with the
# curve, and :func:`~deepinv_icrf.plot.plot_icrf` shades it.

reference = get_response("srgb").icrf_curve(n_points=icrf.n_points, channels=3)
inside = (icrf.band[0] <= reference) & (reference <= icrf.band[1])
print(
    f"true curve inside the band on {100 * inside[:, 8:248].float().mean():.1f}% "
    "of codes 8..247"
)
fig = plot_icrf(
    icrf.curve.detach(),
    reference=reference,
    band=icrf.band,
    title="ICRF with refined exposure times and its 95% band",
)
plt.show()

# %%
# A frame at the wrong stop is caught by default
# ----------------------------------------------
#
# Small errors are what refinement is for; a frame listed a whole stop off is another matter
# (a camera at its shutter limit writes doubling times for equally bright frames). Every fit
# checks the listed times against the images, and the default ``refine_exposures="auto"``
# names the steps that disagree by more than half a stop, then fits at the times the images
# imply. Here the fourth frame's listed time is doubled:

wrong = list(stack.exposure_times)
wrong[3] = 2 * wrong[3]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    caught_icrf = fit_icrf(stack.images, wrong, progress=False)
check = caught_icrf.fit_report.time_check
names = [p.name for p in stack.paths]
print(check.describe(names))
print("warned:", any("disagree" in str(w.message) for w in caught))
