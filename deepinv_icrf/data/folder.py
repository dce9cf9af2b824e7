r"""Bracketed photos from a folder: images plus exposure times (EXIF or a sidecar file)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from deepinv_icrf.bracket import code_bits, codes_to_unit, image_codes
from deepinv_icrf.io import (
    IMAGE_EXTENSIONS,
    image_size,
    read_exposure_list,
    read_exposure_settings,
    read_image,
    relative_exposures,
)

__all__ = [
    "ExposureFolder",
    "read_exposure_folder",
    "folder_reads",
    "ExposureStackDataset",
    "SIDECAR_NAMES",
]

#: sidecar files detected automatically in a folder (at most one may be present); ``list.txt``
#: is OpenCV's layout (``filename 1/t``, see :func:`deepinv_icrf.io.read_exposure_list`)
SIDECAR_NAMES: tuple[str, ...] = (
    "exposures.csv",
    "exposures.json",
    "exposure_times.csv",
    "exposure_times.json",
    "list.txt",
)


@dataclass
class ExposureFolder:
    r"""A bracketed stack read from a folder by :func:`read_exposure_folder`.

    :param numpy.ndarray images: codes ``(N, H, W, C)``, ``uint8`` or ``uint16``, sorted by
        exposure time.
    :param numpy.ndarray exposure_times: ``(N,)`` float64 seconds, ascending.
    :param list paths: the image files, in the order of ``images``.
    :param int bit_depth: 8 or 16.
    :param str time_source: ``"exif"`` or ``"sidecar"``.
    :param str time_detail: what the exposures were computed from, e.g.
        ``"EXIF ExposureTime x ISO / FNumber^2"`` for a bracket that varies aperture and ISO,
        or the sidecar file.
    """

    images: np.ndarray
    exposure_times: np.ndarray
    paths: list[Path] = field(default_factory=list)
    bit_depth: int = 8
    time_source: str = "exif"
    time_detail: str = ""

    def to_tensor(self) -> Tensor:
        r"""The stack as a float tensor ``(N, C, H, W)`` in ``[0, 1]`` (codes / ``2**bits - 1``)."""
        return _codes_to_float(self.images)


def _codes_to_float(images: np.ndarray) -> Tensor:
    r"""Decoded codes ``(N, H, W, C)`` as a float32 stack ``(N, C, H, W)`` in ``[0, 1]``."""
    codes, bits = image_codes(images, "images", float_arrays=False)
    return codes_to_unit(codes, bits).permute(0, 3, 1, 2)


def _find_sidecar(folder: Path) -> Path | None:
    found = [folder / n for n in SIDECAR_NAMES if (folder / n).is_file()]
    if len(found) > 1:
        raise ValueError(
            f"Folder {os.fspath(folder)!r} holds several sidecar files "
            f"{[p.name for p in found]}; keep one or pass `sidecar`."
        )
    return found[0] if found else None


def _is_image_name(path: Path) -> bool:
    return not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def _check_pattern(pattern: object) -> None:
    r"""A pattern selects file names of the folder itself: no path (``..``, ``/``, ``**``)."""
    if pattern is None:
        return
    if not isinstance(pattern, str):
        raise TypeError(
            f"Expected `pattern` to be a str such as '*.jpg', but got {pattern!r}."
        )
    if "/" in pattern or "\\" in pattern or "**" in pattern:
        raise ValueError(
            "Expected `pattern` to be a glob pattern of file names in the folder (e.g. "
            f"'*.jpg'), without a path, '..' or '**', but got {pattern!r}."
        )


def _list_images(folder: Path, pattern: str | None) -> list[Path]:
    _check_pattern(pattern)
    candidates = folder.glob(pattern) if pattern else folder.iterdir()
    return sorted(p for p in candidates if p.is_file() and _is_image_name(p))


def folder_reads(
    folder: str | os.PathLike, path: str | os.PathLike, pattern: str | None = None
) -> bool:
    r"""Whether :func:`read_exposure_folder` on ``folder`` reads the file ``path``, whether
    it exists yet or not: a photo (an image extension, not hidden, matching ``pattern``) or
    a sidecar of the folder itself.

    A command writing such a file into the folder of its photos would make the next run on
    that folder read it as one of them (``deepinv-icrf`` refuses such outputs).

    :param str, os.PathLike folder: the folder of photos.
    :param str, os.PathLike path: a file.
    :param str, None pattern: the glob pattern selecting the photos (default: all).
    :return: (bool) whether the reader would read it.

    |sep|

    :Example:

    >>> folder_reads("photos", "photos/hdr_preview.png"), folder_reads("photos", "photos/x.exr")
    (True, False)
    >>> folder_reads("photos", "photos/exposures.json"), folder_reads("photos", "out/a.png")
    (True, False)
    """
    path = Path(path)
    if os.path.realpath(path.parent) != os.path.realpath(folder):
        return False
    if path.name in SIDECAR_NAMES:
        return True
    if not _is_image_name(path):
        return False
    return pattern is None or Path(path.name).match(pattern)


def read_exposure_folder(
    folder: str | os.PathLike,
    *,
    sidecar: str | os.PathLike | None = None,
    pattern: str | None = None,
) -> ExposureFolder:
    r"""Read a folder of bracketed photos of one static scene and their exposure times.

    Images: every ``.png``, ``.jpg``, ``.jpeg``, ``.tif``, ``.tiff`` file (hidden files are
    skipped; ``pattern`` narrows the selection), 8 or 16-bit, all the same size and bit depth.
    Exposure times come from a sidecar file when there is one (``sidecar``, or one of
    :data:`SIDECAR_NAMES` found in the folder), in any layout of
    :func:`deepinv_icrf.io.read_exposure_list`: CSV rows ``filename,exposure_time`` (an
    optional header line), a JSON object ``{"filename": exposure_time}``, OpenCV's
    ``list.txt`` (``filename 1/t``) or a list with a header naming its columns (``# Filename
    exposure 1/shutter_speed f/stop gain(db)``); times in seconds as numbers or fractions such
    as ``"1/250"``. Otherwise each image's EXIF is used: ``ExposureTime``, times
    :math:`\text{ISO} / N^2` when the bracket varies the f-number :math:`N` or the ISO
    (:func:`deepinv_icrf.io.relative_exposures`). The stack is sorted by exposure:

    .. math::

        t_1 < t_2 < \dots < t_N, \qquad \texttt{images}[k] \leftrightarrow t_k

    :param str, os.PathLike folder: the folder.
    :param str, os.PathLike sidecar: a CSV or JSON sidecar file (default: auto-detected).
    :param str pattern: glob pattern selecting the images by file name, e.g. ``"*.jpg"``
        (default: all); no path (``/``, ``..``) or ``**``: it selects files of ``folder``.
    :return: (:class:`ExposureFolder`) images ``(N, H, W, C)``, times ``(N,)``, paths, bit
        depth, time source.
    :raises ValueError: naming the files, for fewer than 2 images, mixed sizes (compared
        from the headers, :func:`~deepinv_icrf.io.image_size`, before any image is decoded)
        or bit depths, float or unreadable/truncated images, missing exposure times, a
        sidecar naming missing files, invalid or duplicate exposure times.

    |sep|

    :Example:

    >>> import tempfile
    >>> from deepinv_icrf.data import read_exposure_folder, write_synthetic_folder
    >>> folder = write_synthetic_folder(tempfile.mkdtemp(), n_exposures=3, height=8, width=10)
    >>> stack = read_exposure_folder(folder)
    >>> stack.images.shape, stack.exposure_times.tolist(), stack.time_source
    ((3, 8, 10, 3), [0.125, 0.25, 0.5], 'exif')
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"No such folder {os.fspath(folder)!r}.")
    paths = _list_images(folder, pattern)
    if len(paths) < 2:
        raise ValueError(
            f"Folder {os.fspath(folder)!r} holds {len(paths)} image(s) "
            f"{'matching ' + repr(pattern) + ' ' if pattern else ''}"
            f"with extensions {IMAGE_EXTENSIONS}; an exposure stack needs at least 2."
        )
    sidecar_path = Path(sidecar) if sidecar is not None else _find_sidecar(folder)
    detail = ""
    if sidecar_path is not None:
        table = read_exposure_list(sidecar_path)
        detail = f"sidecar {sidecar_path.name}"
        names = {p.name for p in paths}
        unknown = sorted(set(table) - names)
        if unknown:
            raise ValueError(
                f"Sidecar {os.fspath(sidecar_path)!r} names file(s) not found among the images "
                f"of {os.fspath(folder)!r}: {unknown}."
            )
        missing = [p.name for p in paths if p.name not in table]
        times = [table.get(p.name) for p in paths]
        source = "sidecar"
    else:
        settings = [read_exposure_settings(p) for p in paths]
        missing = [
            p.name
            for p, s in zip(paths, settings, strict=True)
            if s.exposure_time is None
        ]
        times = [s.exposure_time for s in settings]
        if not missing:
            times, detail = relative_exposures(settings, [p.name for p in paths])
        source = "exif"
    if missing:
        # an unreadable file has no EXIF either: report it as unreadable, not as untimed
        for p in paths:
            if p.name in missing:
                read_image(p)
        how = (
            f"sidecar {os.fspath(sidecar_path)!r}"
            if sidecar_path is not None
            else "EXIF ExposureTime"
        )
        raise ValueError(
            f"No exposure time for {len(missing)} image(s) in {os.fspath(folder)!r} "
            f"(looked in {how}): {missing}. Add them to a sidecar file "
            f"(one of {SIDECAR_NAMES}: CSV filename,exposure_time or JSON)."
        )
    order = sorted(range(len(paths)), key=lambda k: times[k])
    paths = [paths[k] for k in order]
    t = np.asarray([times[k] for k in order], dtype=np.float64)
    dup = [
        (paths[k].name, paths[k + 1].name)
        for k in range(len(t) - 1)
        if np.isclose(t[k], t[k + 1], rtol=1e-9, atol=0.0)
    ]
    if dup:
        raise ValueError(
            f"Duplicate exposure times in {os.fspath(folder)!r} for files {dup}; "
            "every image of a stack needs its own exposure time."
        )

    # one size for every photo, from their headers, before any of them is decoded: a large
    # odd one out costs no memory (a header that cannot be read is left to read_image, which
    # names the problem)
    sizes = {}
    for p in paths:
        try:
            sizes[p] = image_size(p)
        except ValueError:
            continue
    if len(set(sizes.values())) > 1:
        listing = ", ".join(f"{p.name}: {size}" for p, size in sizes.items())
        raise ValueError(
            f"Images in {os.fspath(folder)!r} have different sizes (H, W), as their headers "
            f"declare ({listing}); every exposure must have the same size and channels."
        )
    # decoded image by image into one preallocated stack (read_image's `out`: 8-bit
    # photos straight from the decoder's buffer): the peak memory is the stack and one
    # image in the decoder, not the list of images and a stacked copy of them
    stack = None
    shapes, dtypes = [], []
    for k, p in enumerate(paths):
        img = read_image(p, out=None if stack is None else stack[k])
        if code_bits(img.dtype) is None:
            raise ValueError(
                f"Image file {os.fspath(p)!r} holds {img.dtype} values; expected 8 or 16-bit "
                "integer camera images."
            )
        shapes.append(img.shape)
        dtypes.append(img.dtype)
        if stack is None:  # the first image sets the stack's shape and dtype
            stack = np.empty((len(paths), *img.shape), img.dtype)
            stack[0] = img
        del img  # an image of another shape or dtype was not put in: refused below
    if len(set(shapes)) > 1:
        listing = ", ".join(
            f"{p.name}: {shape}" for p, shape in zip(paths, shapes, strict=True)
        )
        raise ValueError(
            f"Images in {os.fspath(folder)!r} have different sizes (H, W, C) ({listing}); "
            "every exposure must have the same size and channels."
        )
    if len(set(dtypes)) > 1:
        listing = ", ".join(
            f"{p.name}: {dtype}" for p, dtype in zip(paths, dtypes, strict=True)
        )
        raise ValueError(
            f"Images in {os.fspath(folder)!r} have mixed bit depths ({listing}); "
            "every exposure must have the same bit depth."
        )
    return ExposureFolder(
        images=stack,
        exposure_times=t,
        paths=paths,
        bit_depth=code_bits(stack.dtype),
        time_source=source,
        time_detail=detail,
    )


class ExposureStackDataset(torch.utils.data.Dataset):
    r"""One exposure stack per folder of bracketed photos, as a torch dataset.

    Item ``i`` is the stack of folder ``i``, read by :func:`read_exposure_folder`:

    .. math::

        y \in [0, 1]^{N \times C \times H \times W} = \text{codes} / (2^{\text{bits}} - 1),
        \qquad t \in \mathbb{R}_{>0}^{N}

    With ``as_dict=True`` the item is ``{"y": y, "params": {"exposure_times": t}}``, the layout
    :class:`deepinv.Trainer` reads with ``online_measurements=False``: for each batch it calls
    ``physics.update(exposure_times=t)`` on an
    :class:`~deepinv_icrf.physics.ExposureStack`, so stacks with their own times train through
    an unmodified trainer::

        dataset = ExposureStackDataset(folders, crop_size=256, as_dict=True)
        physics = ExposureStack(dataset.exposure_times(0), bit_depth=dataset.bit_depth(0))
        trainer = deepinv.Trainer(model=ICRF(), physics=physics, losses=..., optimizer=...,
                                  train_dataloader=DataLoader(dataset, batch_size=1),
                                  online_measurements=False, plot_images=False, metrics=[])

    Batches of several folders need folders with equal ``N`` (and ``crop_size`` for equal
    ``H, W``).

    :param str, os.PathLike, list folder_or_folders: one folder or a list of folders.
    :param str, os.PathLike sidecar: sidecar file for a single folder (default: auto-detected
        in each folder).
    :param str pattern: glob pattern selecting the images (default: all).
    :param int, tuple crop_size: random crop ``(h, w)`` (or ``h = w``) taken at the same position
        in every exposure (default ``None``: the whole image).
    :param int seed: seed of the crop positions (default 0). Crops differ from one access to
        the next, from epoch to epoch and between :class:`~torch.utils.data.DataLoader`
        workers: in the main process they come from a generator seeded with ``seed``; in a
        worker, from one seeded with ``seed`` and the worker's seed, which the loader draws
        anew for each epoch from its ``generator`` (or torch's global one). Seeding those
        (``torch.manual_seed``, or ``DataLoader(generator=...)``) makes a run reproducible.
    :param bool preload: read every folder once at construction (default ``True``; this also
        validates them early). ``False`` reads a folder at each access.
    :param bool as_dict: return deepinv's dict layout (see above) instead of ``(y, t)``.
    :param torch.dtype dtype: float dtype of ``y`` and ``t`` (default ``torch.float32``).

    |sep|

    :Example:

    >>> import tempfile
    >>> from deepinv_icrf.data import ExposureStackDataset, write_synthetic_folder
    >>> folder = write_synthetic_folder(tempfile.mkdtemp(), n_exposures=3, height=12, width=10)
    >>> y, t = ExposureStackDataset(folder, crop_size=(5, 4))[0]
    >>> tuple(y.shape), t.tolist()
    ((3, 3, 5, 4), [0.125, 0.25, 0.5])
    """

    def __init__(
        self,
        folder_or_folders: str | os.PathLike | Sequence[str | os.PathLike],
        *,
        sidecar: str | os.PathLike | None = None,
        pattern: str | None = None,
        crop_size: int | tuple[int, int] | None = None,
        seed: int = 0,
        preload: bool = True,
        as_dict: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        if isinstance(folder_or_folders, (str, os.PathLike)):
            folders = [Path(folder_or_folders)]
        else:
            folders = [Path(f) for f in folder_or_folders]
        if not folders:
            raise ValueError("Expected at least one folder, but got an empty list.")
        if sidecar is not None and len(folders) > 1:
            raise ValueError(
                "Expected `sidecar` only with a single folder; with several folders put a "
                f"sidecar ({SIDECAR_NAMES[0]} or {SIDECAR_NAMES[1]}) in each folder."
            )
        if crop_size is not None:
            pair = (crop_size, crop_size) if isinstance(crop_size, int) else crop_size
            if (
                len(pair) != 2
                or any(isinstance(v, bool) or not isinstance(v, int) for v in pair)
                or min(pair) < 1
            ):
                raise ValueError(
                    f"Expected `crop_size` to be a positive int or a pair of them, but got "
                    f"{crop_size!r}."
                )
            crop_size = (int(pair[0]), int(pair[1]))
        if not torch.empty((), dtype=dtype).is_floating_point():
            raise TypeError(f"Expected `dtype` to be a float dtype, but got {dtype}.")
        self.folders = folders
        self.sidecar = sidecar
        self.pattern = pattern
        self.crop_size = crop_size
        self.as_dict = as_dict
        self.dtype = dtype
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"Expected `seed` to be an int, but got {seed!r}.")
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self._worker_generator: tuple[int, torch.Generator] | None = None
        self._cache: list[ExposureFolder] | None = None
        if preload:
            self._cache = [self._read(k) for k in range(len(folders))]

    def _read(self, index: int) -> ExposureFolder:
        stack = read_exposure_folder(
            self.folders[index], sidecar=self.sidecar, pattern=self.pattern
        )
        if self.crop_size is not None:
            h, w = stack.images.shape[1:3]
            if self.crop_size[0] > h or self.crop_size[1] > w:
                raise ValueError(
                    f"Expected `crop_size` {self.crop_size} to fit in the images of "
                    f"{os.fspath(self.folders[index])!r}, which are {h}x{w}."
                )
        return stack

    def folder(self, index: int) -> ExposureFolder:
        r"""The :class:`ExposureFolder` of item ``index`` (whole images, codes)."""
        return self._cache[index] if self._cache is not None else self._read(index)

    def exposure_times(self, index: int = 0) -> Tensor:
        r"""Exposure times ``(N,)`` of item ``index`` (float64)."""
        return torch.from_numpy(self.folder(index).exposure_times.copy())

    def bit_depth(self, index: int = 0) -> int:
        r"""Bit depth (8 or 16) of item ``index``."""
        return self.folder(index).bit_depth

    def _crop_generator(self) -> torch.Generator:
        r"""The generator of crop positions: the dataset's own in the main process; in a
        DataLoader worker, one per worker and epoch (the worker's seed changes with both).
        """
        info = torch.utils.data.get_worker_info()
        if info is None:
            return self.generator
        if self._worker_generator is None or self._worker_generator[0] != info.seed:
            mixed = (info.seed * 1_000_003 + self.seed) % (2**63 - 1)
            self._worker_generator = (info.seed, torch.Generator().manual_seed(mixed))
        return self._worker_generator[1]

    def __len__(self) -> int:
        return len(self.folders)

    def __getitem__(self, index: int):
        stack = self.folder(index)
        images = stack.images
        if self.crop_size is not None:
            h, w = images.shape[1:3]
            ch, cw = self.crop_size
            generator = self._crop_generator()
            top = int(torch.randint(0, h - ch + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=generator))
            images = images[:, top : top + ch, left : left + cw]
        y = _codes_to_float(images).to(self.dtype)
        t = torch.from_numpy(stack.exposure_times.copy()).to(self.dtype)
        if self.as_dict:
            return {"y": y, "params": {"exposure_times": t}}
        return y, t
