"""core.data.images: every format, mode and damage a user's file can have."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from data_factory import make_array, plant_bad_files
from PIL import Image, UnidentifiedImageError

from core.data import images
from core.data.images import (
    IMAGE_EXTENSIONS,
    ImageDecodeError,
    decode_image,
    image_info,
    resize_image,
    verify_image,
)
from core.errors import UserError


def _encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


RGB = make_array(2, 12, np.random.default_rng(0))


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "WEBP"])
def test_lossless_formats_decode_exactly(fmt: str) -> None:
    kw = {"lossless": True} if fmt == "WEBP" else {}
    out = decode_image(_encode(Image.fromarray(RGB), fmt, **kw))
    assert out.dtype == np.uint8 and out.shape == (12, 12, 3)
    np.testing.assert_array_equal(out, RGB)


def test_jpeg_decodes_close_to_the_original() -> None:
    out = decode_image(_encode(Image.fromarray(RGB), "JPEG", quality=95))
    assert out.shape == (12, 12, 3)
    assert np.abs(out.astype(int) - RGB).mean() < 12


def test_gif_gives_its_first_frame() -> None:
    red = Image.new("RGB", (8, 8), (255, 0, 0))
    blue = Image.new("RGB", (8, 8), (0, 0, 255))
    data = _encode(red, "GIF", save_all=True, append_images=[blue], duration=100, loop=0)
    assert Image.open(io.BytesIO(data)).n_frames == 2
    out = decode_image(data)
    assert out.shape == (8, 8, 3)
    assert tuple(out[4, 4]) == (255, 0, 0)


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10] = (255, 0, 0)   # left half red
    arr[:, 10:] = (0, 0, 255)   # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6            # "rotate 90 degrees clockwise to display"
    data = _encode(Image.fromarray(arr), "PNG", exif=exif)
    out = decode_image(data)
    assert out.shape == (20, 10, 3)
    assert tuple(out[2, 5]) == (255, 0, 0) and tuple(out[17, 5]) == (0, 0, 255)  # left went to the top
    info = image_info(data)
    assert (info.width, info.height, info.orientation) == (10, 20, 6)
    assert info.tf_decoder is None  # TensorFlow would ignore the rotation


def test_grayscale_keeps_one_channel_or_expands_to_three() -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    data = _encode(Image.fromarray(gray, mode="L"), "PNG")
    one = decode_image(data, channels=None)
    three = decode_image(data, channels=3)
    assert one.shape == (8, 8, 1) and three.shape == (8, 8, 3)
    np.testing.assert_array_equal(one[:, :, 0], gray)
    np.testing.assert_array_equal(three, np.repeat(gray[:, :, None], 3, axis=2))


def test_colour_to_one_channel_uses_luma() -> None:
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[...] = (255, 0, 0)
    out = decode_image(_encode(Image.fromarray(arr), "PNG"), channels=1)
    assert out.shape == (4, 4, 1)
    assert abs(int(out[0, 0, 0]) - 76) <= 1  # 0.299 * 255


def test_rgba_transparency_becomes_white() -> None:
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., :3] = (10, 20, 30)
    arr[0, 0, 3] = 0      # fully transparent
    arr[1:, :, 3] = 255   # opaque
    out = decode_image(_encode(Image.fromarray(arr, mode="RGBA"), "PNG"))
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[2, 2]) == (10, 20, 30)


def test_palette_with_transparency_becomes_white() -> None:
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    im.putpixel((0, 0), 0)
    data = _encode(im, "PNG", transparency=0)
    out = decode_image(data)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[3, 3]) == (200, 10, 10)


def test_la_and_bilevel_modes() -> None:
    la = Image.new("LA", (4, 4), (100, 255))
    la.putpixel((0, 0), (0, 0))
    out = decode_image(_encode(la, "PNG"), channels=None)
    assert out.shape == (4, 4, 1) and out[0, 0, 0] == 255 and out[2, 2, 0] == 100
    bw = Image.new("1", (4, 4), 1)
    out = decode_image(_encode(bw, "PNG"), channels=None)
    assert out.shape == (4, 4, 1) and out.max() == 255


def test_sixteen_bit_gray_is_scaled_not_clipped() -> None:
    arr = np.array([[0, 32896, 65535, 257]], dtype=np.uint16)
    data = _encode(Image.fromarray(arr), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    out = decode_image(data, channels=None)
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255, 1])


def test_float_tiff_in_unit_range_is_scaled() -> None:
    arr = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    out = decode_image(_encode(Image.fromarray(arr, mode="F"), "TIFF"), channels=None)
    np.testing.assert_array_equal(out[0, :, 0], [0, 128, 255])


def test_cmyk_is_converted_to_rgb() -> None:
    im = Image.new("CMYK", (4, 4), (0, 0, 0, 0))
    im.putpixel((1, 1), (0, 255, 255, 0))
    out = decode_image(_encode(im, "TIFF"))
    assert out.shape == (4, 4, 3)
    assert tuple(out[0, 0]) == (255, 255, 255)
    assert tuple(out[1, 1]) == (255, 0, 0)


def test_inputs_bytes_path_str_and_file_agree(tmp_path: Path) -> None:
    data = _encode(Image.fromarray(RGB), "PNG")
    path = tmp_path / "x.png"
    path.write_bytes(data)
    ref = decode_image(data)
    for source in (path, str(path), io.BytesIO(data), open(path, "rb")):
        np.testing.assert_array_equal(decode_image(source), ref)


def test_pixel_limit_stops_bombs_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    with pytest.raises(ImageDecodeError) as err:
        decode_image(_encode(Image.new("RGB", (20, 20)), "PNG"))
    assert "too many pixels" in err.value.reason
    decode_image(_encode(Image.new("RGB", (10, 10)), "PNG"))  # at the limit: fine


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a huge size but carries almost no data (a decompression bomb's header)."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


def test_huge_declared_size_is_refused_by_default() -> None:
    with pytest.raises(ImageDecodeError) as err:
        decode_image(_png_header_only(60000, 60000))
    assert "too many pixels" in err.value.reason


def test_every_kind_of_bad_file_has_its_reason(tmp_path: Path) -> None:
    expected = plant_bad_files(tmp_path)
    for name, word in expected.items():
        with pytest.raises(ImageDecodeError) as err:
            verify_image(tmp_path / name)
        reason = err.value.reason
        assert word in reason or (word == "not an image file type" and "not an image" in reason), (name, reason)
        assert isinstance(err.value, UserError)
        assert str(err.value).startswith(f"'{name}'") and str(err.value).endswith(".")


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(ImageDecodeError, match="does not exist"):
        decode_image(tmp_path / "nope.png")
    with pytest.raises(ImageDecodeError, match="folder"):
        decode_image(tmp_path)


def test_heic_decodes() -> None:
    assert images.HEIF_SUPPORTED  # pillow-heif is a requirement: phones save HEIC
    try:
        data = _encode(Image.fromarray(np.full((16, 16, 3), 200, np.uint8)), "HEIF")
    except (KeyError, OSError, ValueError) as err:  # a libheif build without an encoder
        pytest.skip(f"this pillow-heif cannot encode HEIF: {err}")
    out = decode_image(data)
    assert out.shape == (16, 16, 3) and abs(int(out.mean()) - 200) <= 3


def test_heic_without_support_explains_how_to_convert(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_opener(*args, **kwargs):
        raise UnidentifiedImageError("cannot identify image file")

    monkeypatch.setattr(images.Image, "open", no_opener)
    heic_like = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64
    with pytest.raises(ImageDecodeError) as err:
        decode_image(heic_like)
    assert "HEIC" in err.value.reason
    assert "Convert it to JPEG or PNG" in str(err.value)


def test_resize_shrinks_by_area_and_grows_bilinear() -> None:
    img = np.zeros((4, 4, 1), np.uint8)
    img[:2, :2] = 200
    small = resize_image(img, 2)
    assert small.shape == (2, 2, 1) and small[0, 0, 0] == 200 and small[1, 1, 0] == 0
    big = resize_image(RGB, (24, 30))
    assert big.shape == (24, 30, 3) and big.dtype == np.uint8
    assert resize_image(RGB, 12) is RGB


def test_verify_hashes_pixels_not_bytes(tmp_path: Path) -> None:
    a = tmp_path / "a.png"
    b = tmp_path / "b.bmp"
    c = tmp_path / "c.png"
    Image.fromarray(RGB).save(a)
    Image.fromarray(RGB).save(b)
    Image.fromarray(255 - RGB).save(c)
    info_a, hash_a = verify_image(a)
    _, hash_b = verify_image(b)
    _, hash_c = verify_image(c)
    assert hash_a == hash_b != hash_c
    assert (info_a.width, info_a.height, info_a.channels, info_a.format) == (12, 12, 3, "PNG")
    assert info_a.tf_decoder == "png"


def test_image_extensions_cover_the_supported_formats() -> None:
    assert {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".heic"} <= IMAGE_EXTENSIONS


def test_max_side_decodes_big_jpegs_at_a_reduced_scale_never_below_it() -> None:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (1200, 1600, 3), dtype=np.uint8)).save(buf, "JPEG")
    full = decode_image(buf.getvalue())
    small = decode_image(buf.getvalue(), max_side=160)
    assert full.shape == (1200, 1600, 3)
    assert 160 <= min(small.shape[:2]) and max(small.shape[:2]) < 1600
    assert small.shape[0] / small.shape[1] == pytest.approx(0.75, abs=0.01)
    png = io.BytesIO()
    Image.fromarray(full).save(png, "PNG")
    assert decode_image(png.getvalue(), max_side=160).shape == full.shape  # only JPEG has a reduced scale
