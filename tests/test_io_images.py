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


# ---------------------------------------------------------------- EXIF orientation
def _turned_file(path, image, orientation):
    r"""``image`` stored as it is, with an ``Orientation`` tag saying how it is displayed."""
    from PIL import Image

    if path.suffix == ".jpg":
        exif = Image.Exif()
        exif[0x0112] = orientation
        Image.fromarray(image).save(path, quality=95, exif=exif.tobytes())
    else:
        import tifffile

        tifffile.imwrite(path, image, extratags=[(274, 3, 1, orientation, True)])


#: how each EXIF orientation is displayed, from the stored image (the EXIF 2.3 table: the
#: stored row 0 / column 0 shown at ...), written with numpy's own turns
_DISPLAYED = {
    1: lambda a: a,
    2: np.fliplr,
    3: lambda a: np.rot90(a, 2),
    4: np.flipud,
    5: lambda a: np.rot90(np.fliplr(a), 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(np.fliplr(a), -1),
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("ext", [".jpg", ".tif"])
@pytest.mark.parametrize("grey", [False, True])
@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_is_applied_as_viewers_apply_it(tmp_path, ext, grey, orientation):
    rng = np.random.default_rng(orientation)
    shape = (6, 10) if grey else (6, 10, 3)
    stored = rng.integers(0, 256, shape, dtype=np.uint8)
    path = tmp_path / f"a{ext}"
    _turned_file(path, stored, orientation)
    if ext == ".jpg":
        # lossy: the stored codes are the decoder's, and Pillow's ImageOps.exif_transpose
        # (right for JPEGs) is the reference of the table itself
        from PIL import Image, ImageOps

        with Image.open(path) as im:
            stored = np.asarray(im)
            shown = np.asarray(ImageOps.exif_transpose(im))
        np.testing.assert_array_equal(_DISPLAYED[orientation](stored), shown)
    expected = _DISPLAYED[orientation](stored)
    got = read_image(path)
    assert got.shape == (*expected.shape[:2], 1 if grey else 3)
    np.testing.assert_array_equal(got.reshape(expected.shape), expected)
    assert got.flags.c_contiguous
    assert (
        image_size(path) == got.shape[:2] == ((10, 6) if orientation >= 5 else (6, 10))
    )


def test_orientation_turns_into_a_preallocated_place(tmp_path):
    # a square photo turned a quarter: `out` has the stored shape too, and must not be
    # decoded into and turned in place (which would scramble it)
    from PIL import Image, ImageOps

    rng = np.random.default_rng(1)
    path = tmp_path / "square.jpg"
    _turned_file(path, rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), 6)
    with Image.open(path) as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    out = np.zeros((8, 8, 3), np.uint8)
    assert read_image(path, out=out) is out
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("value", [0, 9, 65535])
def test_invalid_orientation_reads_as_stored(tmp_path, value):
    image = np.random.default_rng(2).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    path = tmp_path / "a.tif"
    _turned_file(path, image, value)
    np.testing.assert_array_equal(read_image(path), image)
    assert image_size(path) == (6, 10)


def test_a_bracket_shot_upright_reads_as_one_stack(tmp_path):
    # a camera held upright: frames stored sideways with orientation 6, or stored upright
    # by a converter, are the same photo and make one (10, 6) stack
    from deepinv_icrf.data import read_exposure_folder

    rng = np.random.default_rng(3)
    upright = rng.integers(0, 200, (10, 6, 3), dtype=np.uint8)
    sideways = np.ascontiguousarray(np.rot90(upright, 1))  # stored turned back
    _turned_file(tmp_path / "a.tif", sideways, 6)
    write_image(tmp_path / "b.tif", upright)
    (tmp_path / "exposures.csv").write_text("a.tif,0.01\nb.tif,0.02\n")
    stack = read_exposure_folder(tmp_path)
    assert stack.images.shape == (2, 10, 6, 3)
    np.testing.assert_array_equal(stack.images[0], upright)
    np.testing.assert_array_equal(stack.images[1], upright)
