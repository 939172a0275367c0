"""tf.data input pipelines: parallel decode, resize, memory/disk cache, seeded shuffle, augmentation, prefetch.

Three ways to feed a split, chosen by size:
- in memory: in-memory sources, and file sources whose decoded images fit ``memory_budget_mb``
  (decoded once, in parallel, into one uint8 array; batches are slices of it);
- on disk: larger file sources with a ``cache_dir`` (decoded once into a memory-mapped .npy);
- streaming: otherwise; files are read, decoded and resized batch by batch, so memory stays flat.
JPEG/PNG files whose pixels TensorFlow decodes identically are decoded by ``tf.io`` (in parallel, off
the GIL); everything else (EXIF rotation, alpha, palettes, 16-bit, GIF, WebP, TIFF, HEIC...) by
``core.data.images.decode_image``. Either way the decoded image then goes through
``core.data.pixels.to_model_pixels``: the one step from decoded pixels to model input that the
Classify page, Grad-CAM and the live webcam use too.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from core.config import AugmentConfig
from core.data.dataset import Split
from core.data.images import ImageDecodeError, image_info
from core.data.pixels import to_model_pixels

AUTOTUNE = tf.data.AUTOTUNE
_PY, _JPEG, _PNG = 0, 1, 2
_FILL_BATCH = 256


def make_tf_dataset(
    split: Split,
    *,
    image_size: int,
    channels: int,
    batch_size: int,
    training: bool,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    cache_dir: Path | None = None,
    memory_budget_mb: int = 512,
) -> tf.data.Dataset:
    """Batches of (float32 [B,S,S,C] in 0..255, int32 [B]); shuffled and augmented only when training."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, not {channels}")
    labels = split.labels.astype(np.int32)
    if len(split) == 0:
        empty = tf.data.Dataset.from_tensor_slices(
            (np.zeros((0, image_size, image_size, channels), np.float32), np.zeros(0, np.int32))
        )
        return empty.batch(batch_size)
    if split.images is not None:
        ds = _from_array(split.images, labels, image_size, channels, batch_size, training, seed)
    else:
        needed = len(split) * image_size * image_size * channels
        if needed <= memory_budget_mb * 2**20:
            arr = decode_files(split, image_size, channels)
            ds = _from_array(arr, labels, image_size, channels, batch_size, training, seed)
        elif cache_dir is not None:
            arr = _disk_cache(split, image_size, channels, Path(cache_dir))
            ds = _from_array(arr, labels, image_size, channels, batch_size, training, seed)
        else:
            ds = _streaming(split, labels, image_size, channels, batch_size, training, seed)
    ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y), num_parallel_calls=AUTOTUNE)
    augmenter = build_augmenter(augment, seed) if (training and augment is not None) else None
    if augmenter is not None:
        # Sequential on purpose: the layers' random state is shared, and parallel calls would race on it
        # (two batches getting the very same transformation) and make runs unrepeatable.
        ds = ds.map(lambda x, y: (_apply(augmenter, x), y))
    return ds.prefetch(AUTOTUNE)


def _apply(augmenter, x: tf.Tensor) -> tf.Tensor:
    return tf.clip_by_value(tf.cast(augmenter(x, training=True), tf.float32), 0.0, 255.0)


def build_augmenter(cfg: AugmentConfig | None, seed: int = 0):
    """Keras preprocessing layers for ``cfg`` (training batches only), or None when nothing is enabled."""
    import keras

    if cfg is None or not cfg.enabled:
        return None
    layers = []
    if cfg.flip != "none":
        mode = {"horizontal": "horizontal", "vertical": "vertical", "both": "horizontal_and_vertical"}[cfg.flip]
        layers.append(keras.layers.RandomFlip(mode, seed=seed + 1))
    if cfg.rotation > 0:
        layers.append(keras.layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed + 2))
    if cfg.zoom > 0:
        layers.append(keras.layers.RandomZoom((-cfg.zoom, cfg.zoom), fill_mode="reflect", seed=seed + 3))
    if cfg.translation > 0:
        layers.append(keras.layers.RandomTranslation(cfg.translation, cfg.translation, fill_mode="reflect",
                                                     seed=seed + 4))
    if cfg.contrast > 0:
        layers.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 5))
    if cfg.brightness > 0:
        layers.append(keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 6))
    return keras.Sequential(layers, name="augmentation")


# ---------------------------------------------------------------- arrays (memory, disk cache)


def _from_array(arr: np.ndarray, labels: np.ndarray, size: int, channels: int, batch_size: int,
                training: bool, seed: int) -> tf.data.Dataset:
    """Batches sliced out of an in-memory (or memory-mapped) array by shuffled indices."""
    n = len(labels)
    ready = arr.ndim == 4 and arr.shape[1:] == (size, size, channels)

    def fetch(ix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        imgs = arr[ix]
        if not ready:
            imgs = np.stack([to_model_pixels(img, size, channels) for img in imgs])
        return imgs, labels[ix]

    def load(ix: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        x, y = tf.numpy_function(fetch, [ix], [tf.uint8, tf.int32], stateful=False)
        x.set_shape([None, size, size, channels])
        y.set_shape([None])
        return x, y

    idx = tf.data.Dataset.range(n)
    if training:
        idx = idx.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    return idx.batch(batch_size).map(load, num_parallel_calls=AUTOTUNE, deterministic=True)


def decode_files(split: Split, image_size: int, channels: int) -> np.ndarray:
    """Every file of ``split`` decoded and resized into one uint8 array (parallel, in file order)."""
    out = np.empty((len(split), image_size, image_size, channels), dtype=np.uint8)
    _fill(out, split, image_size, channels)
    return out


def _fill(out: np.ndarray, split: Split, image_size: int, channels: int) -> None:
    labels = split.labels.astype(np.int32)
    stream = _streaming(split, labels, image_size, channels, _FILL_BATCH, training=False, seed=0)
    pos = 0
    for x, _ in stream.as_numpy_iterator():
        out[pos: pos + len(x)] = x
        pos += len(x)


def _disk_cache(split: Split, image_size: int, channels: int, cache_dir: Path) -> np.ndarray:
    """A memory-mapped .npy of the decoded split in ``cache_dir``, written once (atomically) and reused."""
    digest = hashlib.sha256(f"{image_size}|{channels}|".encode())
    for f in split.files or []:
        st = os.stat(f)
        digest.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    key = digest.hexdigest()[:24]
    path = cache_dir / f"decoded-{key}.npy"
    if not path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".decoded-{key}.{os.getpid()}.tmp.npy"
        try:
            arr = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                            shape=(len(split), image_size, image_size, channels))
            _fill(arr, split, image_size, channels)
            arr.flush()
            del arr
            os.replace(tmp, path)
            (cache_dir / f"decoded-{key}.json").write_text(json.dumps({"files": len(split), "size": image_size,
                                                                       "channels": channels}))
        finally:
            if tmp.exists():
                tmp.unlink()
    return np.load(path, mmap_mode="r")


# ---------------------------------------------------------------- streaming from files


def _decoder_codes(split: Split, channels: int) -> np.ndarray:
    """Per file: which decoder gives exactly ``decode_image``'s pixels (TF's JPEG/PNG, or Python)."""
    infos = split.info
    if infos is None:
        infos = []
        for f in split.files or []:
            try:
                infos.append(image_info(f))
            except ImageDecodeError:
                infos.append(None)
    codes = np.zeros(len(infos), dtype=np.int32)
    for i, info in enumerate(infos):
        if info is None or info.tf_decoder is None:
            continue
        # TF's colour-to-gray conversion differs from Pillow's: only same-channel or gray-to-RGB decodes.
        if info.channels == channels or (info.channels == 1 and channels == 3):
            codes[i] = _JPEG if info.tf_decoder == "jpeg" else _PNG
    return codes


def _streaming(split: Split, labels: np.ndarray, size: int, channels: int, batch_size: int,
               training: bool, seed: int) -> tf.data.Dataset:
    """Indices -> (shuffle) -> parallel read/decode/resize -> batch: memory does not grow with the split."""
    paths = tf.constant(split.files)
    codes = tf.constant(_decoder_codes(split, channels))
    label_t = tf.constant(labels)
    n = len(labels)

    def py_decode(path: bytes) -> np.ndarray:
        return to_model_pixels(path.decode(), size, channels)

    def py_fit(img: np.ndarray) -> np.ndarray:
        return to_model_pixels(img, size, channels)

    def load(i: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        path, code = paths[i], codes[i]

        def with_tf() -> tf.Tensor:
            raw = tf.io.read_file(path)
            img = tf.cond(
                tf.equal(code, _JPEG),
                lambda: tf.io.decode_jpeg(raw, channels=channels, dct_method="INTEGER_ACCURATE"),
                lambda: tf.io.decode_png(raw, channels=channels),
            )
            return tf.numpy_function(py_fit, [img], tf.uint8, stateful=False)

        def with_python() -> tf.Tensor:
            return tf.numpy_function(py_decode, [path], tf.uint8, stateful=False)

        img = tf.cond(code > 0, with_tf, with_python)
        img = tf.ensure_shape(tf.reshape(img, [size, size, channels]), [size, size, channels])
        return img, label_t[i]

    idx = tf.data.Dataset.range(n)
    if training:
        idx = idx.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    ds = idx.map(load, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.batch(batch_size)
