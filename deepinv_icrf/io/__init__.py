r"""Files in and out: images on maintained codec libraries, checked input, atomic output.

The package reads and writes files only through maintained libraries, and checks every file it
reads before the file costs anything:

- **OpenEXR**: the official bindings (``openexr`` on PyPI, module ``OpenEXR``), maintained by
  the Academy Software Foundation with the C++ library itself; every compression (PIZ, DWA,
  ... included), scanline, tiled and multi-part files (:mod:`deepinv_icrf.io.exr`).
- **PNG (every bit depth) and Radiance .hdr**: ``imagecodecs`` (libpng, the reference PNG
  library, and the reference RGBE code), chosen over ``opencv-python-headless`` because it is
  a smaller install, decodes into plain RGB numpy arrays without OpenCV's BGR order or its own
  global pixel limit (which raised ``cv2.error`` on large files), reads Radiance headers
  OpenCV does not (``VIEW=`` lines), is as fast on 16-bit PNG (measured in
  ``benchmarks/io_speed.py``), and is the codec library ``tifffile`` itself uses for
  compressed TIFFs (LZW, Deflate, JPEG), by the same maintainer. libpng also reads 8-bit PNG:
  it refuses image data shorter than the header declares, which Pillow silently fills with
  zeros, and it is no slower.
- **JPEG, EXIF, writing 8-bit PNG**: Pillow, the standard imaging library of Python
  (libjpeg-turbo inside, actively maintained and fuzzed by OSS-Fuzz): its lazy open gives a
  file's declared size before any pixel is decoded, and it parses EXIF (the sub-IFD too).
- **TIFF**: ``tifffile``, the reference TIFF reader of the scientific Python stack: every
  layout (strips, tiles, planar, multi-page) and compression (through ``imagecodecs``), page
  tags read before the pixels, decoding straight into a preallocated array.
- **.npy**: numpy itself, with ``allow_pickle=False`` (a ``.npy`` file cannot run code) and
  its header read first.

All of them are dependencies of the package (no extra to install). What is checked, and the
pixel limit with its override, are in :mod:`deepinv_icrf.io.limits`; JSON limits in
:mod:`deepinv_icrf.io.jsonfile`; exposure lists in :mod:`deepinv_icrf.io.exposures`; atomic
files and staged output sets in :mod:`deepinv_icrf.io.atomic`.

=========================  ==========================================  ==========================
extension                  read                                        write
=========================  ==========================================  ==========================
``.png``                   8/16-bit (imagecodecs: libpng)              ``uint8``, ``uint16`` (EXIF)
``.jpg``, ``.jpeg``        8-bit (Pillow)                              ``uint8`` (EXIF)
``.tif``, ``.tiff``        8/16-bit, float (tifffile)                  ``uint8``, ``uint16``, float32
``.npy``                   any numeric array                           any numeric array
``.hdr`` (Radiance RGBE)   float32 (imagecodecs)                       float (imagecodecs)
``.exr`` (OpenEXR)         float32, any compression, layers            float or half, layers
=========================  ==========================================  ==========================
"""

from deepinv_icrf.io.atomic import OutputSet, atomic_path, atomic_write, write_json
from deepinv_icrf.io.curves import read_opencv_response, write_opencv_response
from deepinv_icrf.io.exif import (
    ExposureSettings,
    read_exposure_settings,
    read_exposure_time,
    relative_exposures,
)
from deepinv_icrf.io.exposures import parse_exposure_time, read_exposure_list
from deepinv_icrf.io.exr import read_exr, read_exr_layers, write_exr
from deepinv_icrf.io.images import (
    IMAGE_EXTENSIONS,
    RADIANCE_EXTENSIONS,
    image_size,
    read_image,
    write_image,
)
from deepinv_icrf.io.jsonfile import read_json
from deepinv_icrf.io.limits import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV

__all__ = [
    "IMAGE_EXTENSIONS",
    "RADIANCE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "MAX_PIXELS_ENV",
    "atomic_path",
    "atomic_write",
    "write_json",
    "OutputSet",
    "image_size",
    "read_image",
    "write_image",
    "read_exr",
    "read_exr_layers",
    "write_exr",
    "read_exposure_time",
    "read_exposure_settings",
    "ExposureSettings",
    "relative_exposures",
    "parse_exposure_time",
    "read_exposure_list",
    "read_json",
    "read_opencv_response",
    "write_opencv_response",
]
