r"""Data: the embedded demo scene, synthetic stacks and folders of bracketed photos."""

from __future__ import annotations

from deepinv_icrf.data.align import align_exposures  # noqa: F401
from deepinv_icrf.data.demo import demo_exposure_times, demo_scene  # noqa: F401
from deepinv_icrf.data.folder import (  # noqa: F401
    SIDECAR_NAMES,
    ExposureFolder,
    ExposureStackDataset,
    folder_reads,
    read_exposure_folder,
)
from deepinv_icrf.data.synthetic import (  # noqa: F401
    SyntheticExposureStackDataset,
    write_synthetic_folder,
)
