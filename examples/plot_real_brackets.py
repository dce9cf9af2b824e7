r"""
Calibrate real brackets: right times, wrong times and a film floor
==================================================================

Three real brackets from ``../shared/data/real/`` (beside the repository; set
``DEEPINV_ICRF_REAL_DATA`` to another folder): a Nikon DSLR night scene with right times
(``taipei``), a bracket from the same camera whose listed times are wrong for a few frames
(``living_room1``: five frames equally bright while their listed times double, a camera at its
shutter limit), and Debevec and Malik's scans of film (``memorial``), which never reach code 0.
Without that folder this example says so and shows the time check on a synthetic bracket
with wrong listed times instead.

:func:`deepinv_icrf.fit_icrf` checks the listed times of every stack against the images: the
ratio of every pair of neighbouring exposures is read through a quick fit of the curve, and a
ratio off the listed one by more than half a stop is reported
(``fit_report.time_check``) and, by default, corrected before the fit. It also fits the code
that no light gives (the floor), which :func:`deepinv_icrf.hdr.merge_hdr` stays above.
"""

# %%
# Find the photos
# ---------------

import os
import tempfile
import warnings
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

from deepinv_icrf import fit_icrf
from deepinv_icrf.data import read_exposure_folder, write_synthetic_folder
from deepinv_icrf.hdr import floor_cutoff, merge_hdr
from deepinv_icrf.io import read_image

torch.manual_seed(0)  # the fits sample pixels at random

# sphinx-gallery runs the script from its own folder, without ``__file__``
_here = Path(globals().get("__file__", Path.cwd() / "plot_real_brackets.py")).resolve()
_default = _here.parents[1].parent / "shared" / "data" / "real"
DATA = Path(os.environ.get("DEEPINV_ICRF_REAL_DATA", _default))
available = all(
    (DATA / name).is_dir() for name in ("taipei", "living_room1", "memorial")
)
if not available:
    print(
        f"The real brackets are not in {DATA} (set DEEPINV_ICRF_REAL_DATA to the folder "
        "holding taipei/, living_room1/ and memorial/): the wrong-time check below runs "
        "on a synthetic bracket instead."
    )

# %%
# Right times: the check agrees and the fit uses them
# ---------------------------------------------------
#
# Ten exposures of a night street, one stop apart. The check finds every step within half a
# stop of the listed one; the fit keeps the listed times.

if available:
    taipei = read_exposure_folder(DATA / "taipei")
    icrf = fit_icrf(taipei.images, taipei.exposure_times, progress=False)
    print(icrf.fit_report.time_check.describe())
    print("floor (codes):", np.round(np.array(icrf.fit_report.floor) * 255, 1))

# %%
# Wrong times: the frames are named, then corrected
# -------------------------------------------------
#
# The listed times of ``living_room1`` double from frame to frame, but frames 2 to 6 are
# equally bright. The default fit warns with the steps that disagree and fits at the times
# the images imply: the listed ratios where they agree, the measured ones across the steps
# that do not. ``refine_exposures=False`` keeps the listed times; its curve is a staircase.

if available:
    title = "living_room1"
    room = read_exposure_folder(DATA / "living_room1")
    listed_times = np.asarray(room.exposure_times, dtype=np.float64)
else:  # a synthetic bracket whose last three listed times are twice too long
    title = "synthetic, frames 4-6 listed x2"
    folder = write_synthetic_folder(
        Path(tempfile.mkdtemp()) / "bracket",
        n_exposures=7,
        height=96,
        width=128,
        response="gamma",
        noise_sigma=0.01,
    )
    room = read_exposure_folder(folder)
    listed_times = np.asarray(room.exposure_times, dtype=np.float64)
    listed_times[4:] *= 2.0

names = [p.name for p in room.paths]
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fixed = fit_icrf(room.images, listed_times, progress=False)
print(fixed.fit_report.time_check.describe(names))
used = fixed.fit_report.exposure_times.tolist()
for name, listed, time in zip(names, listed_times, used, strict=True):
    print(f"{name}: listed {listed:g} s, fitted with {time:.4g} s")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    stuck = fit_icrf(room.images, listed_times, refine_exposures=False, progress=False)
codes = np.arange(256) / 255
fig, ax = plt.subplots(1, 2, figsize=(9, 3.6))
for label, model, style in (("listed times", stuck, "--"), ("checked", fixed, "-")):
    curve = model.curve.detach().numpy()
    ax[0].plot(codes, curve[1], style, label=label)
    ratio = curve[1, 65:240] / curve[1, 64:239]
    ax[1].plot(np.arange(65, 240), ratio, style, label=label)
ax[0].set(xlabel="code", ylabel="ICRF (green)", title=title)
ax[1].set(xlabel="code", ylabel="f(c) / f(c - 1)", title="jumps between codes")
ax[0].legend()
fig.tight_layout()
plt.show()

# %%
# Three stops apart with wrong times: the steps that agree anchor the rest
# ------------------------------------------------------------------------
#
# Every third frame of ``desktop`` (same camera, wrong times for its long exposures) makes a
# bracket of five frames three stops apart, the last two listed 4.5x and 14x too long. A curve
# fitted at those times is bent by them, and read through it every step comes out raised to
# one power (the images fix times only up to :math:`t^g`, with the curve :math:`f^g`): the
# right x8 steps read x12 or more. The check takes that power back from the listed steps
# (:func:`~deepinv_icrf.functional.common_exponent`), so the two x8 steps agree again, then
# refits at the times it implies until they settle: only the wrong steps are corrected (x1.78
# and x2.56 in the one-stop stack above). Had the curve still jumped between adjacent codes (a flat stretch of the
# response, which no camera has), the fit would have refitted it with a minimum slope and
# said so (``fit_report.refit_jump``).

from deepinv_icrf.functional import curve_jump

if (DATA / "desktop").is_dir():
    desk = read_exposure_folder(DATA / "desktop")
    every_third = np.argsort(desk.exposure_times)[::3]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the time check's warning, printed below
        sparse = fit_icrf(
            desk.images[every_third],
            np.asarray(desk.exposure_times)[every_third],
            progress=False,
        )
    check = sparse.fit_report.time_check
    print(check.describe([desk.paths[i].name for i in every_third]))
    used = sparse.fit_report.exposure_times.double()
    steps = used[1:] / used[:-1]
    print("steps used:", [f"x{float(r):.2f}" for r in steps])
    jump = float(curve_jump(sparse.curve.detach()).max())
    print(f"largest jump between adjacent codes: x{jump:.3f}")
    if sparse.fit_report.refit_jump is not None:
        print(f"refitted: the first fit jumped x{sparse.fit_report.refit_jump:.2f}")

# %%
# A film floor: merge above it
# ----------------------------
#
# The Memorial Church scans sit at codes 11 to 19 in the dark: fog and the scanner's black.
# The fit finds that floor, and :func:`~deepinv_icrf.hdr.merge_hdr` then leaves out codes
# within three noise stds of it (:func:`~deepinv_icrf.hdr.floor_cutoff`): their noise,
# divided by a 1/1024 s exposure, would swamp the dark pixels. Against Debevec's own radiance
# map of the scene (``memorial.hdr``, merged with his curve; not a ground truth), the RMS
# difference in stops after the best scale per channel:

if available:
    memorial = read_exposure_folder(DATA / "memorial")
    film = fit_icrf(memorial.images, memorial.exposure_times, progress=False)
    print("floor (codes):", np.round(np.array(film.fit_report.floor) * 255, 1))
    print(f"merge cutoff: code {255 * floor_cutoff(film):.1f}")
    reference = read_image(DATA / "memorial" / "memorial.hdr").astype(np.float64)
    blue = (memorial.images == [0, 0, 255]).all(-1).any(0)  # shifted borders, not scene

    def stops_off(radiance: np.ndarray) -> float:
        errors = []
        for c in range(3):
            a, b = radiance[..., c][~blue], reference[..., c][~blue]
            ok = (a > 0) & (b > 0) & np.isfinite(a)
            d = np.log2(a[ok]) - np.log2(b[ok])
            errors.append(np.sqrt(np.mean((d - np.median(d)) ** 2)))
        return float(np.mean(errors))

    above = merge_hdr(memorial.images, memorial.exposure_times, film)
    every = merge_hdr(memorial.images, memorial.exposure_times, film, lower=1 / 255)
    print(f"merged above the floor: {stops_off(above):.2f} stops")
    print(f"merged from code 1:     {stops_off(every):.2f} stops")
