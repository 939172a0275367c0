"""core.data.pipeline: the same pixels whichever way a split is fed, seeded shuffles, augmentation in training only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from data_factory import class_color, make_array, make_class_folder, save_image
from PIL import Image

from core.config import AugmentConfig, SplitConfig
from core.data import pipeline
from core.data.dataset import Split
from core.data.images import decode_image, resize_image
from core.data.pipeline import build_augmenter, make_tf_dataset
from core.data.pixels import to_model_pixels
from core.data.sources import load_dataset

ALL = SplitConfig(val_fraction=0.0, test_fraction=0.0)


def _collect(ds: tf.data.Dataset) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in ds])
    return np.concatenate(xs), np.concatenate(ys)


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of files in every format and mode the pipeline routes differently."""
    root = make_class_folder(tmp_path_factory.mktemp("mixed") / "d", classes=("a", "b"), per_class=4, size=20)
    rng = np.random.default_rng(5)
    save_image(make_array(0, 24, rng), root / "a" / "photo.jpg", quality=90)
    save_image(make_array(1, 12, rng), root / "b" / "small.bmp")
    save_image(make_array(1, 30, rng), root / "b" / "anim.gif")
    save_image(np.full((18, 18), 90, np.uint8), root / "a" / "gray.png")
    rgba = np.dstack([make_array(0, 16, rng), np.full((16, 16), 128, np.uint8)])
    Image.fromarray(rgba, mode="RGBA").save(root / "a" / "alpha.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(make_array(1, 20, rng)[:10]).save(root / "b" / "rotated.png", exif=exif)
    save_image(make_array(0, 40, rng), root / "a" / "big.webp", lossless=True)
    return root


def test_file_split_every_route_gives_decode_image_pixels(mixed_folder: Path, tmp_path: Path) -> None:
    split = load_dataset(str(mixed_folder), ALL).splits["train"]
    assert len(split) == 15
    codes = pipeline._decoder_codes(split, 3)
    assert {int(c) for c in codes} == {0, 1, 2}  # Python, TF JPEG and TF PNG routes all exercised
    reference = np.stack([resize_image(decode_image(f), 16) for f in split.files])
    kw = dict(image_size=16, channels=3, batch_size=4, training=False)
    memory = _collect(make_tf_dataset(split, **kw))
    streamed = _collect(make_tf_dataset(split, memory_budget_mb=0, **kw))
    on_disk = _collect(make_tf_dataset(split, memory_budget_mb=0, cache_dir=tmp_path / "cache", **kw))
    for x, y in (memory, streamed, on_disk):
        assert x.dtype == np.float32 and y.dtype == np.int32 and x.shape == (15, 16, 16, 3)
        np.testing.assert_array_equal(y, split.labels)  # evaluation keeps the split's order
        np.testing.assert_array_equal(x, reference.astype(np.float32))


def test_upscaling_route_matches_within_one_level(mixed_folder: Path) -> None:
    split = load_dataset(str(mixed_folder), ALL).splits["train"]
    reference = np.stack([resize_image(decode_image(f), 48) for f in split.files]).astype(int)
    streamed, _ = _collect(make_tf_dataset(split, image_size=48, channels=3, batch_size=8, training=False,
                                           memory_budget_mb=0))
    assert np.abs(streamed.astype(int) - reference).max() <= 1  # TF vs OpenCV bilinear rounding


def test_one_channel_model_from_colour_files(mixed_folder: Path) -> None:
    split = load_dataset(str(mixed_folder), ALL).splits["train"]
    x, _ = _collect(make_tf_dataset(split, image_size=8, channels=1, batch_size=16, training=False,
                                    memory_budget_mb=0))
    reference = np.stack([resize_image(decode_image(f, channels=1), 8) for f in split.files])
    assert x.shape == (15, 8, 8, 1)
    np.testing.assert_array_equal(x, reference.astype(np.float32))


def test_disk_cache_is_written_once_and_reused(tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "d", per_class=5)
    split = load_dataset(str(root), ALL).splits["train"]
    cache = tmp_path / "cache"
    kw = dict(image_size=8, channels=3, batch_size=4, training=False, memory_budget_mb=0, cache_dir=cache)
    first = _collect(make_tf_dataset(split, **kw))[0]
    (npy,) = cache.glob("decoded-*.npy")
    stamp = npy.stat().st_mtime_ns
    second = _collect(make_tf_dataset(split, **kw))[0]
    assert npy.stat().st_mtime_ns == stamp and len(list(cache.glob("decoded-*.npy"))) == 1
    np.testing.assert_array_equal(first, second)
    assert not list(cache.glob(".*tmp*"))


def test_array_source_resizes_and_converts_channels() -> None:
    ds = load_dataset("builtin:digits", ALL)
    split = ds.splits["train"].subset(np.arange(40))
    tfds = make_tf_dataset(split, image_size=16, channels=3, batch_size=16, training=False)
    assert tfds.cardinality().numpy() == 3
    x, y = _collect(tfds)
    assert x.shape == (40, 16, 16, 3) and 0 <= x.min() and x.max() <= 255
    expected = np.stack([to_model_pixels(split.images[i], 16, 3) for i in range(40)])
    np.testing.assert_array_equal(x, expected.astype(np.float32))
    np.testing.assert_array_equal(x[..., 0], x[..., 2])  # gray copied to every channel
    np.testing.assert_array_equal(y, split.labels)


def _order(split: Split, seed: int, epochs: int = 2) -> list[list[int]]:
    tfds = make_tf_dataset(split, image_size=4, channels=3, batch_size=8, training=True, seed=seed)
    out = []
    for _ in range(epochs):
        x, _ = _collect(tfds)
        out.append([int(v) for v in x[:, 0, 0, 0]])  # pixel values identify the images here
    return out


def test_training_shuffles_seeded_and_reshuffles_each_epoch() -> None:
    images = np.repeat(np.arange(24, dtype=np.uint8)[:, None, None, None] * 10, 4, axis=1)
    images = np.repeat(np.repeat(images, 4, axis=2), 3, axis=3)
    split = Split(labels=np.arange(24) % 2, images=images)
    a, b, c = _order(split, 1), _order(split, 1), _order(split, 2)
    assert a == b                                   # same seed, same order, on every build
    assert a[0] != a[1]                             # a new order each epoch
    assert a != c                                   # another seed, another order
    assert sorted(a[0]) == [10 * i for i in range(24)]
    evaluation, _ = _collect(make_tf_dataset(split, image_size=4, channels=3, batch_size=8, training=False))
    assert [int(v) for v in evaluation[:, 0, 0, 0]] == [10 * i for i in range(24)]


def test_labels_stay_with_their_images_when_shuffled(tmp_path: Path) -> None:
    root = make_class_folder(tmp_path / "d", classes=("a", "b", "c"), per_class=6)
    split = load_dataset(str(root), ALL).splits["train"]
    for budget in (512, 0):
        x, y = _collect(make_tf_dataset(split, image_size=8, channels=3, batch_size=5, training=True,
                                        memory_budget_mb=budget))
        means = x.mean(axis=(1, 2))
        nearest = np.argmin([[np.abs(m - class_color(k)).sum() for k in range(3)] for m in means], axis=1)
        np.testing.assert_array_equal(nearest, y)


def test_augmentation_applies_to_training_batches_only() -> None:
    ds = load_dataset("builtin:shapes?per_class=8&size=32", ALL)
    split = ds.splits["train"]
    aug = AugmentConfig.preset("strong")
    plain = _collect(make_tf_dataset(split, image_size=32, channels=3, batch_size=8, training=False))[0]
    evaluation = _collect(make_tf_dataset(split, image_size=32, channels=3, batch_size=8, training=False,
                                          augment=aug))[0]
    np.testing.assert_array_equal(plain, evaluation)
    trained = make_tf_dataset(split, image_size=32, channels=3, batch_size=32, training=True, augment=aug, seed=3)
    epoch1, y1 = _collect(trained)
    epoch2, y2 = _collect(trained)
    assert epoch1.dtype == np.float32 and epoch1.min() >= 0 and epoch1.max() <= 255
    by_label = {int(k): plain[split.labels == k] for k in np.unique(split.labels)}
    # no augmented image equals any original image, and the two epochs differ
    for img, label in zip(epoch1, y1):
        assert all(np.abs(img - orig).mean() > 1.0 for orig in by_label[int(label)])
    assert not np.array_equal(np.sort(epoch1.reshape(len(epoch1), -1).sum(1)),
                              np.sort(epoch2.reshape(len(epoch2), -1).sum(1)))
    again = _collect(make_tf_dataset(split, image_size=32, channels=3, batch_size=32, training=True, augment=aug,
                                     seed=3))[0]
    np.testing.assert_allclose(again, epoch1, atol=1e-3)  # seeded: the same run repeats exactly


def test_build_augmenter_layers() -> None:
    assert build_augmenter(AugmentConfig()) is None and build_augmenter(None) is None
    strong = build_augmenter(AugmentConfig.preset("strong"))
    names = [type(layer).__name__ for layer in strong.layers]
    assert names == ["RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast",
                     "RandomBrightness"]
    only_flip = build_augmenter(AugmentConfig(flip="vertical"))
    assert [type(layer).__name__ for layer in only_flip.layers] == ["RandomFlip"]
    x = tf.constant(np.arange(2 * 4 * 4 * 1, dtype=np.float32).reshape(2, 4, 4, 1))
    flipped = only_flip(tf.concat([x] * 16, 0), training=True).numpy()
    rows_flipped = [np.array_equal(img, x.numpy()[i % 2][::-1]) for i, img in enumerate(flipped)]
    rows_same = [np.array_equal(img, x.numpy()[i % 2]) for i, img in enumerate(flipped)]
    assert all(f or s for f, s in zip(rows_flipped, rows_same)) and any(rows_flipped) and any(rows_same)


def test_empty_split_gives_no_batches() -> None:
    empty = Split(labels=np.zeros(0, np.int64), files=[])
    assert list(make_tf_dataset(empty, image_size=8, channels=3, batch_size=4, training=True)) == []


@pytest.mark.slow
def test_tiny_cnn_learns_default_shapes_quickly() -> None:
    """The offline demo set must be learnable by a small CNN in a few epochs (the overfitting demo's base)."""
    import keras

    keras.utils.set_random_seed(0)
    ds = load_dataset("builtin:shapes?size=32")  # the defaults, at 32 px
    kw = dict(image_size=32, channels=3, batch_size=32)
    train = make_tf_dataset(ds.splits["train"], training=True, **kw)
    val = make_tf_dataset(ds.splits["val"], training=False, **kw)
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(ds.num_classes, activation="softmax"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train, validation_data=val, epochs=10, verbose=0, shuffle=False).history
    assert max(history["val_accuracy"][-3:]) >= 0.85, history["val_accuracy"]
