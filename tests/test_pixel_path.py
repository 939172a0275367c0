"""One pixel path: a colour phone photo and a grey PNG reach a model as the very same pixels whether they go
through training (every feeding route), the Classify page's Predictor, Grad-CAM or the live webcam callback."""

from __future__ import annotations

import io
from pathlib import Path

import av
import cv2
import keras
import numpy as np
import pytest
from PIL import Image

from core.config import SplitConfig
from core.data.images import decode_image
from core.data.pipeline import make_tf_dataset
from core.data.pixels import to_channels, to_model_pixels
from core.data.sources import load_dataset
from core.explain.gradcam import GradCam
from core.serving.classify import classify_photos
from core.serving.live import FrameClassifier, video_frame_callback
from core.serving.predictor import Predictor

SIZE = 24
ALL_TRAIN = SplitConfig(val_fraction=0.0, test_fraction=0.0)


def _scene(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth colour picture with edges and noise (what a photo has), uint8 RGB."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    img = np.stack([x / width * 255, y / height * 255, (x + y) % 97 * 2.6], axis=2)
    img[height // 3: height // 2, width // 4: width // 2] = (230, 40, 60)
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A phone photo (JPEG stored sideways, EXIF orientation 6) and a grey scan (PNG), in two class folders."""
    root = tmp_path_factory.mktemp("pixels")
    (root / "photo").mkdir()
    (root / "scan").mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to view": how phones save portrait shots
    phone = root / "photo" / "IMG_0001.jpg"
    Image.fromarray(_scene(480, 640, 1)).save(phone, quality=88, exif=exif)
    grey = root / "scan" / "scan.png"
    Image.fromarray(_scene(150, 200, 2)[:, :, 1]).save(grey)
    return {"phone": phone, "grey": grey}


def _echo(channels: int) -> keras.Model:
    """A 'model' whose outputs are its input pixels: what it predicts is exactly what it was given."""
    inputs = keras.Input((SIZE, SIZE, channels))
    return keras.Model(inputs, keras.layers.Flatten()(inputs))


def _seen(flat: np.ndarray, channels: int) -> np.ndarray:
    return np.asarray(flat).reshape(SIZE, SIZE, channels)


@pytest.mark.parametrize("channels", [1, 3])
def test_photo_and_grey_png_reach_every_model_entry_as_the_same_pixels(photos: dict[str, Path],
                                                                      channels: int) -> None:
    expected = {name: to_model_pixels(path, SIZE, channels) for name, path in photos.items()}
    assert expected["phone"].shape == (SIZE, SIZE, channels) and expected["phone"].dtype == np.uint8
    # The photo is upright (EXIF applied) and really in colour; the scan really grey.
    upright = decode_image(photos["phone"], channels=None)
    assert upright.shape == (640, 480, 3) and np.ptp(upright.astype(int).std(axis=2)) > 0
    assert decode_image(photos["grey"], channels=None).shape[2] == 1

    # Training: all three ways a split is fed (in memory, streamed, decoded once to a disk cache).
    split = load_dataset(str(photos["phone"].parents[1]), ALL_TRAIN).splits["train"]
    by_file = {Path(f).stem: i for i, f in enumerate(split.files)}
    for budget, cache in ((512, None), (0, None), (0, photos["phone"].parents[1] / "cache")):
        batch = next(iter(make_tf_dataset(split, image_size=SIZE, channels=channels, batch_size=8, training=False,
                                          memory_budget_mb=budget, cache_dir=cache)))[0].numpy()
        assert np.array_equal(batch[by_file["IMG_0001"]], expected["phone"])
        assert np.array_equal(batch[by_file["scan"]], expected["grey"])

    names = [f"p{i}" for i in range(SIZE * SIZE * channels)]
    predictor = Predictor(_echo(channels), names)
    cam = GradCam(_gradcam_model(channels))
    for name, path in photos.items():
        # The Classify page: the uploaded file's bytes, decoded and classified.
        [result] = classify_photos(predictor, [(path.name, path.read_bytes())])
        assert np.array_equal(result.model_input, expected[name])
        assert np.array_equal(_seen(result.probs, channels), expected[name])
        # Grad-CAM on the decoded photo.
        decoded = decode_image(path, channels=None)
        assert np.array_equal(cam.model_input(decoded), expected[name].astype(np.float32))
        # The live webcam: the picture arrives as a BGR video frame.
        frame = av.VideoFrame.from_ndarray(cv2.cvtColor(to_channels(decoded, 3), cv2.COLOR_RGB2BGR), format="bgr24")
        with FrameClassifier(predictor, background=False) as live:
            video_frame_callback(live)(frame)
            assert np.array_equal(_seen(live.result.probs, channels), expected[name])


def _gradcam_model(channels: int) -> keras.Model:
    inputs = keras.Input((SIZE, SIZE, channels))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))


def test_one_grey_formula_everywhere() -> None:
    rgb = np.random.default_rng(3).integers(0, 256, (9, 11, 3), dtype=np.uint8)
    # Decoding a colour file straight to one channel and converting the decoded colour image give one answer.
    buf = _png_bytes(rgb)
    assert np.array_equal(decode_image(buf, channels=1), to_channels(decode_image(buf, channels=3), 1))
    assert np.array_equal(to_model_pixels(buf, (9, 11), 1), decode_image(buf, channels=1))


def _png_bytes(rgb: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()
