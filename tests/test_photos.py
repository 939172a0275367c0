"""Any photo a person may drop on the Classify page: every kind comes out upright, in colour, sized for the model.

Each kind encodes the same small scene (red left half, blue right half, a green block in the top-left
corner) the way that kind of file stores it; what the Classify path (``core.serving.classify``) keeps must look
like the scene, and the model must get that image. Plus a very large phone photo (memory and time in a
separate process), a decompression bomb, and the "none of these" answer of a run with a background class.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.images import HEIF_SUPPORTED
from core.serving.classify import KEEP_SIDE, classify_photos

ROOT = Path(__file__).resolve().parents[1]
H, W = 24, 32
# What ImageOps.exif_transpose does for each EXIF orientation, undone: storing scene.transpose(UNDO[n])
# with orientation n must display the scene.
UNDO = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270}


def scene() -> np.ndarray:
    """The picture every kind encodes: red | blue halves, a green 8x8 block top-left (orientation shows)."""
    img = np.zeros((H, W, 3), np.uint8)
    img[:, : W // 2] = (255, 0, 0)
    img[:, W // 2 :] = (0, 0, 255)
    img[:8, :8] = (0, 255, 0)
    return img


def luma(rgb: np.ndarray) -> np.ndarray:
    return np.rint(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def with_exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored = Image.fromarray(scene()).transpose(UNDO[orientation])
    return encode(stored, "JPEG", quality=95, exif=exif)


def transparent_right_half(mode: str) -> tuple[bytes, np.ndarray]:
    """The scene with its right half fully transparent (black underneath): it must come out white."""
    rgba = np.dstack([scene(), np.full((H, W), 255, np.uint8)])
    rgba[:, W // 2 :] = (0, 0, 0, 0)
    expected = scene()
    expected[:, W // 2 :] = 255
    im = Image.fromarray(rgba, mode="RGBA")
    if mode == "LA":
        return encode(im.convert("LA"), "PNG"), np.repeat(luma(expected)[:, :, None], 3, axis=2)
    return encode(im, "PNG"), expected


def palette_with_transparent_blue() -> bytes:
    im = Image.fromarray(scene()).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)
    return encode(im, "PNG", transparency=im.getpixel((W - 1, H - 1)))  # the blue half's palette entry


def sixteen_bit_gray() -> bytes:
    wide = luma(scene()).astype(np.uint16) * 257  # 0..65535
    im = Image.fromarray(wide)
    assert im.mode == "I;16"
    return encode(im, "PNG")


def cmyk_jpeg() -> bytes:
    return encode(Image.fromarray(scene()).convert("CMYK"), "JPEG", quality=95)


def heic(orientation: int | None = None) -> bytes:
    assert HEIF_SUPPORTED, "pillow-heif (a requirement) is installed, so HEIC photos decode"
    im = Image.fromarray(scene())
    if orientation is None:
        return encode(im, "HEIF", quality=95)
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(im.transpose(UNDO[orientation]), "HEIF", quality=95, exif=exif.tobytes())


GRAY = np.repeat(luma(scene())[:, :, None], 3, axis=2)


def kinds() -> dict[str, tuple]:
    """name -> (file bytes factory, the picture it must become, allowed mean difference per pixel)."""
    rgba, rgba_expected = transparent_right_half("RGBA")
    la, la_expected = transparent_right_half("LA")
    white_right = scene()
    white_right[:, W // 2 :] = 255
    out = {
        "photo.png": (lambda: encode(Image.fromarray(scene()), "PNG"), scene(), 0),
        "photo.jpg": (lambda: encode(Image.fromarray(scene()), "JPEG", quality=95), scene(), 12),
        "photo.webp": (lambda: encode(Image.fromarray(scene()), "WEBP", lossless=True), scene(), 0),
        "transparent.png": (lambda: rgba, rgba_expected, 0),
        "transparent-gray.png": (lambda: la, la_expected, 1),
        "gray.png": (lambda: encode(Image.fromarray(luma(scene()), mode="L"), "PNG"), GRAY, 0),
        "gray-16bit.png": (sixteen_bit_gray, GRAY, 1),
        "cmyk.jpg": (cmyk_jpeg, scene(), 12),
        "palette.png": (lambda: encode(Image.fromarray(scene()).convert("P", palette=Image.Palette.ADAPTIVE,
                                                                          colors=4), "PNG"), scene(), 0),
        "palette-transparent.png": (palette_with_transparent_blue, white_right, 0),
        "phone.heic": (heic, scene(), 20),
        "phone-rotated.heic": (lambda: heic(6), scene(), 20),
    }
    for n in range(2, 9):
        out[f"exif-orientation-{n}.jpg"] = (lambda n=n: with_exif(n), scene(), 12)
    return out


KINDS = kinds()


@pytest.fixture(scope="module")
def predictor():
    import keras

    from core.config import ModelSpec
    from core.models.registry import build_model
    from core.serving.predictor import Predictor

    keras.utils.set_random_seed(0)
    return Predictor(build_model(ModelSpec(name="tiny"), (16, 16, 3), 3), ["rock", "paper", "scissors"])


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_of_photo_comes_out_upright_in_colour_and_reaches_the_model(name: str, predictor) -> None:
    factory, expected, tolerance = KINDS[name]
    result = classify_photos(predictor, [(name, factory())])[0]
    assert result.ok, result.error
    image = result.image if result.image.shape[2] == 3 else np.repeat(result.image, 3, axis=2)
    assert image.shape == (H, W, 3), "not upright or wrong size"
    assert np.abs(image.astype(int) - expected.astype(int)).mean() <= tolerance
    # The three regions are told apart: orientation and colours are right, not merely close on average.
    for (row, col) in ((3, 3), (H - 4, 4), (H // 2, W - 4)):
        assert np.abs(image[row, col].astype(int) - expected[row, col].astype(int)).max() <= 40, (row, col)
    assert result.model_input.shape == (16, 16, 3)
    assert np.allclose(result.probs, predictor.predict([result.image])[0], atol=1e-5)


def test_gray_photos_stay_gray_for_a_gray_model_and_become_rgb_for_a_colour_model(predictor) -> None:
    import keras

    from core.config import ModelSpec
    from core.models.registry import build_model
    from core.serving.predictor import Predictor

    gray_model = Predictor(build_model(ModelSpec(name="tiny"), (16, 16, 1), 3), ["a", "b", "c"])
    data = KINDS["gray.png"][0]()
    colour, gray = classify_photos(predictor, [("g.png", data)])[0], classify_photos(gray_model, [("g.png", data)])[0]
    assert colour.model_input.shape == (16, 16, 3) and gray.model_input.shape == (16, 16, 1)
    assert np.array_equal(colour.model_input[:, :, 0], gray.model_input[:, :, 0])
    rgb = classify_photos(gray_model, [("c.png", KINDS["photo.png"][0]())])[0]
    assert rgb.model_input.shape == (16, 16, 1)  # colour photos reach a gray model as luma
    keras.backend.clear_session()


@pytest.mark.slow
def test_a_very_large_photo_is_shrunk_with_sane_memory_and_time(tmp_path: Path) -> None:
    """A 6000x4000 portrait JPEG (EXIF-rotated, as phones save them) in a fresh process: peak RSS and time."""
    width, height = 6000, 4000
    yy, xx = np.mgrid[0:height, 0:width]
    pixels = np.dstack([(xx * 255 // width), (yy * 255 // height), np.full_like(xx, 90)]).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was held upright: display rotated to 4000 wide x 6000 tall
    path = tmp_path / "big.jpg"
    Image.fromarray(pixels).save(path, format="JPEG", quality=85, exif=exif)
    del pixels, xx, yy
    child = textwrap.dedent(f"""
        import json, resource, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from core.serving.classify import decode_photo
        data = open({str(path)!r}, "rb").read()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        image, size = decode_photo("big.jpg", data)
        seconds = time.perf_counter() - start
        peak_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        print(json.dumps({{"shape": list(image.shape), "size": list(size), "seconds": seconds, "peak_mb": peak_mb,
                          "corner": image[0, -1].tolist()}}))
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["size"] == [6000, 4000]  # the upright photo's (height, width)
    assert report["shape"] == [KEEP_SIDE, round(KEEP_SIDE * 4000 / 6000), 3]
    assert report["corner"][0] < 40 and report["corner"][1] < 40  # the stored top-left is now top-right
    # Decoding 24 M pixels needs ~72 MB per copy; a few copies are fine, a gigabyte is not.
    assert report["peak_mb"] < 600, report
    assert report["seconds"] < 60, report  # a sanity bound for a loaded 2-core machine, not a speed target


def test_a_decompression_bomb_is_refused_with_a_sentence(predictor) -> None:
    bomb = encode(Image.new("1", (12_000, 9_000)), "PNG")  # 108 M pixels, a few kB on disk
    good = KINDS["photo.png"][0]()
    bad, fine = classify_photos(predictor, [("bomb.png", bomb), ("fine.png", good)])
    assert not bad.ok and "too many pixels" in bad.error and "bomb.png" in bad.error
    assert fine.ok  # one bad file does not stop the others


# ---------------------------------------------------------------- a run with a background class


def background_names(predictor, image: np.ndarray) -> list[str]:
    """The predictor's class names with the class it predicts for ``image`` renamed 'background'."""
    names = list(predictor.class_names)
    names[int(np.argmax(predictor.predict([image])[0]))] = "background"
    return names


def test_a_background_class_answers_none_of_these(predictor) -> None:
    from core.serving.predictor import Predictor

    data = KINDS["photo.png"][0]()
    with_background = Predictor(predictor.model, background_names(predictor, scene()))
    result = classify_photos(with_background, [("photo.png", data)])[0]
    assert result.label == "background"
    assert result.verdict(0.0) == "none of these"
    assert result.verdict(1.0) == "not sure (maybe none of these)"
    plain = classify_photos(predictor, [("photo.png", data)])[0]
    assert plain.verdict(0.0) == plain.label != "none of these"


@pytest.mark.slow
def test_the_classify_page_says_none_of_these_for_a_background_run(tmp_path: Path, monkeypatch) -> None:
    from streamlit.testing.v1 import AppTest

    from core.serving.predictor import Predictor
    from core.store.runs import RunStore

    sys.path.insert(0, str(ROOT / "tests" / "app"))
    from eval_pages_runs import copy_run, shared_home

    src_home, (run_id, _) = shared_home()
    home = tmp_path / "home"
    record = RunStore(src_home).get(run_id)
    new_id = copy_run(src_home, run_id, home, record.config.replace(name="with background"), {})
    store = RunStore(home)
    photo = encode(Image.fromarray(scene()), "PNG")
    original = Predictor.from_run(store, new_id)
    seen = classify_photos(original, [("photo.png", photo)])[0].image
    (store.run_dir(new_id) / "labels.json").write_text(json.dumps(background_names(original, seen)))
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["run"] = new_id
    at.run()
    at.switch_page("pages/classify.py")
    at.run()
    at.slider(key="cls_threshold").set_value(0.0)
    at.file_uploader(key="cls_upload").set_value(("photo.png", photo, "image/png")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert len(at.success) == 1 and "none of these" in at.success[0].value
