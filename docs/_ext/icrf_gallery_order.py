r"""Order of the gallery scripts: the reading order of the user guide, then any other script."""

from __future__ import annotations

from pathlib import Path

#: Reading order; scripts not listed come after these, by file name.
ORDER = (
    "plot_fit_demo_icrf.py",
    "plot_calibrate_exif_folder.py",
    "plot_calibration_refined.py",
    "plot_real_brackets.py",
    "plot_moving_objects.py",
    "plot_hdr_merge_tonemap.py",
    "plot_weighted_schedule_trainer.py",
    "plot_equivariant_splitting.py",
    "plot_joint_icrf_reconstruction.py",
    "plot_propel_uncertainty.py",
)


class GalleryOrder:
    r"""sphinx-gallery ``within_subsection_order`` key: position in :data:`ORDER`, then name."""

    def __init__(self, src_dir: str) -> None:
        self.src_dir = src_dir

    def __call__(self, filename: str) -> tuple[int, str]:
        name = Path(filename).name
        rank = ORDER.index(name) if name in ORDER else len(ORDER)
        return rank, name

    def __repr__(self) -> str:
        return f"<{self.__class__.__name__}>"
