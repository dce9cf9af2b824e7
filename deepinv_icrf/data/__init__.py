r"""Data: the embedded demo scene, synthetic stacks and folders of bracketed photos.

The names are imported on first use (PEP 562): reading a folder of photos
(:func:`read_exposure_folder`) does not import the synthetic stacks, whose camera physics is a
deepinv ``Physics`` (deepinv, torchvision and ``torch._dynamo``: ``deepinv-icrf merge`` has no
need of them).
"""

from __future__ import annotations

from deepinv_icrf._lazy import lazy_names as _lazy_names

__all__ = [
    "align_exposures",
    "demo_exposure_times",
    "demo_scene",
    "SIDECAR_NAMES",
    "ExposureFolder",
    "ExposureStackDataset",
    "folder_reads",
    "read_exposure_folder",
    "SyntheticExposureStackDataset",
    "write_synthetic_folder",
]

#: Public names, by the module that defines them.
_NAMES = {
    "align_exposures": "deepinv_icrf.data.align",
    "demo_exposure_times": "deepinv_icrf.data.demo",
    "demo_scene": "deepinv_icrf.data.demo",
    "SIDECAR_NAMES": "deepinv_icrf.data.folder",
    "ExposureFolder": "deepinv_icrf.data.folder",
    "ExposureStackDataset": "deepinv_icrf.data.folder",
    "folder_reads": "deepinv_icrf.data.folder",
    "read_exposure_folder": "deepinv_icrf.data.folder",
    "SyntheticExposureStackDataset": "deepinv_icrf.data.synthetic",
    "write_synthetic_folder": "deepinv_icrf.data.synthetic",
}


__getattr__, __dir__ = _lazy_names(__name__, _NAMES, globals())
