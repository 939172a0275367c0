"""Fuzz the image decoder and the zip reader with random and mutated bytes: only ``UserError`` may escape.

Bounded for CI (a few hundred examples each, no deadline per example, well under 30 s in total).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from core.data.images import decode_image, image_info
from core.data.zips import extract_zip
from core.errors import UserError

# Hypothesis' own cache (it would create .hypothesis/ in the working tree) goes to the temp folder.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "cnnlab-hypothesis")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow's metadata warnings on mutated files

FUZZ = settings(max_examples=250, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _seed_images() -> list[bytes]:
    """Small valid files in every format the decoder meets, as the starting points for mutation."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (12, 10, 3), dtype=np.uint8))
    out = []
    for fmt, im, extra in (("PNG", rgb, {}), ("JPEG", rgb, {"quality": 80}), ("GIF", rgb.convert("P"), {}),
                           ("BMP", rgb, {}), ("TIFF", rgb, {}), ("WEBP", rgb, {}), ("PNG", rgb.convert("LA"), {}),
                           ("JPEG", rgb.convert("CMYK"), {}), ("ICO", rgb, {})):
        buf = io.BytesIO()
        im.save(buf, fmt, **extra)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed file with a few bytes flipped, a slice cut out or repeated, and/or the tail truncated."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 8))):
        i = draw(st.integers(0, len(data) - 1))
        data[i] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        a = draw(st.integers(0, len(data)))
        b = draw(st.integers(a, min(len(data), a + 64)))
        data[a:b] = data[a:b] * draw(st.integers(0, 3))
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def _decode_or_user_error(data: bytes) -> None:
    try:
        img = decode_image(data)
    except UserError as err:
        assert str(err) and "\n" not in str(err)
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.size > 0


@FUZZ
@given(st.binary(max_size=2048))
def test_decoder_random_bytes(data: bytes) -> None:
    _decode_or_user_error(data)


@FUZZ
@given(mutated(SEEDS))
def test_decoder_mutated_images(data: bytes) -> None:
    _decode_or_user_error(data)
    try:
        image_info(data)
    except UserError:
        pass


def _seed_zips() -> list[bytes]:
    png = SEEDS[0]
    out = []
    for method in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", method) as zf:
            zf.writestr("cats/a.png", png)
            zf.writestr("dogs/b.png", png)
            zf.writestr("dogs/notes.txt", b"hello")
        out.append(buf.getvalue())
    return out


ZIP_SEEDS = _seed_zips()


def _extract_or_user_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory(prefix="cnnlab-fuzz-") as tmp:
        root = Path(tmp)
        path = root / "in" / "upload.zip"
        path.parent.mkdir()
        path.write_bytes(data)
        try:
            target = extract_zip(path, root / "home")
        except UserError as err:
            assert str(err) and "\n" not in str(err)
        else:
            assert (root / "home") in target.parents
        # Whatever happened, nothing was written outside the home and the input folder.
        assert sorted(p.name for p in root.iterdir()) in (["in"], ["home", "in"])


@FUZZ
@given(st.binary(max_size=1024))
def test_zip_reader_random_bytes(data: bytes) -> None:
    _extract_or_user_error(b"PK\x03\x04" + data)


@FUZZ
@given(mutated(ZIP_SEEDS))
def test_zip_reader_mutated_zips(data: bytes) -> None:
    _extract_or_user_error(data)
