"""image_size: the size a photo declares, read before anything is decoded."""

from __future__ import annotations

import numpy as np
import pytest

from deepinv_icrf.io import image_size, read_image, write_image


# ---------------------------------------------------------------- image_size
@pytest.mark.parametrize(
    ("ext", "dtype"),
    [(".png", np.uint8), (".png", np.uint16), (".jpg", np.uint8), (".tif", np.uint16)],
)
def test_image_size_reads_the_header(tmp_path, ext, dtype):
    path = tmp_path / f"a{ext}"
    img = np.zeros((7, 12, 3), dtype)
    write_image(path, img)
    assert image_size(path) == (7, 12) == read_image(path).shape[:2]


def test_image_size_refuses_what_it_cannot_read(tmp_path):
    with pytest.raises(FileNotFoundError):
        image_size(tmp_path / "none.png")
    bad = tmp_path / "a.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    with pytest.raises(ValueError, match="Cannot read the size of image file .*a.png"):
        image_size(bad)
    jpeg = tmp_path / "b.jpg"
    jpeg.write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match="header is unreadable"):
        image_size(jpeg)
    other = tmp_path / "c.hdr"
    other.write_bytes(b"#?RADIANCE\n")
    with pytest.raises(ValueError, match="expected one of the extensions"):
        image_size(other)
