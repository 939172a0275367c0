"""Cached backbone features: a frozen backbone runs once over a split, its pooled features are kept on disk.

A frozen backbone computes the same pooled features every epoch, so CNN Lab computes them once per
(split, backbone, width, weights, image size, preprocessing, augmentation, pass) and keeps them under
``<home>/feature-cache/``. The head then trains on those vectors (an epoch takes well under a second).
With augmentation on, ``K = feature_cache_passes`` differently augmented passes are cached and epoch
``e`` trains on pass ``e % K`` (``core.training.cached_head`` trains the head on them). Fine-tuning
phases change the backbone, so they use the full model.

Extraction runs in graph mode (``tf.function``) over a batched tf.data pipeline whose
decoding is parallel, instead of an eager Python loop.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from core.config import AugmentConfig
from core.models.runtime import compiled
from core.store.files import atomic_path

CACHE_DIRNAME = "feature-cache"
CACHE_FORMAT = 2  # bump when the stored layout or the extraction numerics change (2: one pixel path)
EXTRACT_BATCH = 64
MAX_CACHE_MB = int(os.environ.get("CNNLAB_FEATURE_CACHE_MB", "2048"))  # least recently used entries go first

class ExtractionStopped(Exception):
    """The user stopped the run while features were being extracted."""

# ---------------------------------------------------------------- fingerprints and keys

def split_fingerprint(split: Any) -> str:
    """Hash of a split's images in order: file path + size + mtime for files, pixel bytes for arrays; plus labels."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.asarray(split.labels, dtype=np.int64).tobytes())
    if getattr(split, "files", None) is not None:
        for f in split.files:
            try:
                st = os.stat(f)
                digest.update(f"{os.path.abspath(f)}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
            except OSError:
                digest.update(f"{f}\tmissing\n".encode())
    elif getattr(split, "images", None) is not None:
        images = np.ascontiguousarray(split.images)
        digest.update(f"{images.shape}{images.dtype}".encode())
        digest.update(images.tobytes())
    return digest.hexdigest()

def _layer_signature(layer: Any) -> Any:
    """Layer type and configuration without auto-generated names (they differ between processes)."""
    inner = getattr(layer, "layers", None)
    if inner:
        return [type(layer).__name__, [_layer_signature(sub) for sub in inner]]
    try:
        cfg = dict(layer.get_config())
    except Exception:  # noqa: BLE001 - a layer without a config is identified by its type alone
        cfg = {}
    cfg.pop("name", None)
    return [type(layer).__name__, json.dumps(cfg, sort_keys=True, default=str)]

def extractor_fingerprint(extractor: Any) -> str:
    """Hash of the extractor's structure, preprocessing constants and weights: equal features, equal hash."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(json.dumps(_layer_signature(extractor), default=str).encode())
    digest.update(str(tuple(extractor.input_shape)).encode())
    for w in extractor.weights:
        value = np.asarray(w.numpy())
        digest.update(f"{value.shape}{value.dtype}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    return digest.hexdigest()

def feature_cache_key(*, split_name: str, split_hash: str, backbone: str, alpha: float, weights: str | None,
                      image_size: int, channels: int, extractor_hash: str, augment: AugmentConfig | None,
                      seed: int, pass_index: int) -> str:
    """The cache file's name: every input that changes the stored features is part of it."""
    parts = {
        "format": CACHE_FORMAT,
        "split": split_name,
        "data": split_hash,
        "backbone": backbone,
        "alpha": float(alpha),
        "weights": weights,
        "image_size": int(image_size),
        "channels": int(channels),
        "extractor": extractor_hash,  # preprocessing layers + backbone weights
        "augment": augment.to_dict() if augment is not None and augment.enabled else None,
        "seed": int(seed) if augment is not None and augment.enabled else None,
        "pass": int(pass_index),
    }
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]
    return f"{split_name}-{backbone}-{image_size}px-p{pass_index}-{digest}"

# ---------------------------------------------------------------- the on-disk cache

class FeatureCache:
    """Feature arrays on disk under ``<home>/feature-cache/``, one ``.npz`` per key, written atomically."""

    def __init__(self, home: Path | str) -> None:
        self.folder = Path(home) / CACHE_DIRNAME
        self._lock = threading.Lock()

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.npz"

    def get(self, key: str, labels: np.ndarray | None = None) -> np.ndarray | None:
        """The cached features for ``key``, or None (missing, unreadable, or labels that do not match)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                feats, stored = data["features"], data["labels"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None  # a damaged file is a miss; the next put replaces it
        if labels is not None and not np.array_equal(stored, np.asarray(labels, dtype=np.int64)):
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # last use, for pruning
        return feats

    def put(self, key: str, features: np.ndarray, labels: np.ndarray) -> Path:
        """Store features atomically (temp file + fsync + rename): a crash never leaves half a file."""
        path = self.path(key)
        with self._lock, atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, features=np.asarray(features, dtype=np.float32),
                         labels=np.asarray(labels, dtype=np.int64))
        return path

    def keys(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.npz")) if self.folder.is_dir() else []

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.npz")) if self.folder.is_dir() else 0

    def prune(self, max_bytes: int) -> list[str]:
        """Delete the least recently used entries until the cache is at most ``max_bytes``; return their keys."""
        if not self.folder.is_dir():
            return []
        files = sorted(self.folder.glob("*.npz"), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in files)
        removed: list[str] = []
        for p in files:
            if total <= max_bytes:
                break
            total -= p.stat().st_size
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p.stem)
        return removed

    def clear(self) -> None:
        for p in self.folder.glob("*.npz") if self.folder.is_dir() else []:
            with contextlib.suppress(OSError):
                p.unlink()

# ---------------------------------------------------------------- graph-mode extraction and inference

def _extract_steps(extractor: Any, augmenters: list[Any | None]) -> Callable[[Any], list[Any]]:
    """One traced function: a batch of pixels -> the features of every requested (augmented) view.

    Traced once (the batch dimension is left open); the plain step is compiled once per extractor.
    """
    plain = all(a is None for a in augmenters) and len(augmenters) == 1
    if plain:
        return compiled(extractor, "extract", lambda: _traced_extract(extractor, augmenters))
    return _traced_extract(extractor, augmenters)

def _traced_extract(extractor: Any, augmenters: list[Any | None]) -> Callable[[Any], list[Any]]:
    import tensorflow as tf

    signature = [tf.TensorSpec((None, *tuple(extractor.input_shape[1:])), tf.float32)]

    @tf.function(input_signature=signature)
    def step(x: tf.Tensor) -> list[tf.Tensor]:
        outs = []
        for aug in augmenters:
            # Clipped like the training pipeline's augmentation (core.data.pipeline), so both see the same pixels.
            view = tf.clip_by_value(tf.cast(aug(x, training=True), tf.float32), 0.0, 255.0) if aug is not None else x
            outs.append(extractor(view, training=False))
        return outs

    return step

def extract_features(extractor: Any, dataset: Any, *, augmenters: list[Any | None] | None = None,
                     should_stop: Callable[[], bool] | None = None,
                     on_batch: Callable[[int], None] | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """Run ``extractor`` in graph mode over a batched ``(pixels, labels)`` dataset.

    Returns one ``[N, D]`` float32 array per augmenter (None = the plain images) and the labels in
    dataset order. The images are decoded once however many augmented views are asked for.
    Raises ``ExtractionStopped`` when ``should_stop()`` turns true between batches.
    """
    import tensorflow as tf

    augmenters = augmenters if augmenters is not None else [None]
    step = _extract_steps(extractor, augmenters)
    chunks: list[list[np.ndarray]] = [[] for _ in augmenters]
    labels: list[np.ndarray] = []
    for x, y in dataset:
        if should_stop is not None and should_stop():
            raise ExtractionStopped()
        for i, out in enumerate(step(tf.cast(x, tf.float32))):
            chunks[i].append(out.numpy())
        labels.append(np.asarray(y))
        if on_batch is not None:
            on_batch(int(y.shape[0]))
    dim = int(extractor.output_shape[-1])
    feats = [np.concatenate(c).astype(np.float32) if c else np.zeros((0, dim), np.float32) for c in chunks]
    return feats, (np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64))

# ---------------------------------------------------------------- cached features for one split

@dataclass
class ExtractionReport:
    """What one ``cached_features`` call did: cache hits and misses, images run and the time it took."""

    hits: int = 0
    misses: int = 0
    images: int = 0
    seconds: float = 0.0

    def add(self, other: ExtractionReport) -> None:
        for f in dataclasses.fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

def cached_features(extractor: Any, split: Any, *, split_name: str, spec: Any, image_size: int, channels: int,
                    cache: FeatureCache, augment: AugmentConfig | None = None, passes: int = 1, seed: int = 0,
                    batch_size: int = EXTRACT_BATCH, extractor_hash: str | None = None,
                    should_stop: Callable[[], bool] | None = None) -> tuple[np.ndarray, ExtractionReport]:
    """The split's features ``[passes, N, D]``: cached passes are read, missing ones computed in one data pass.

    Without augmentation there is a single plain pass. Pass ``k`` of an augmented split is made by an
    augmenter seeded from ``(seed, k)``, so it is the same whatever ``passes`` is and can be reused.
    """
    from core.data.pipeline import build_augmenter, make_tf_dataset

    augmented = augment is not None and augment.enabled
    passes = max(int(passes), 1) if augmented else 1
    ehash = extractor_hash or extractor_fingerprint(extractor)
    labels = np.asarray(split.labels, dtype=np.int64)
    shash = split_fingerprint(split)
    keys = [feature_cache_key(split_name=split_name, split_hash=shash, backbone=spec.backbone or spec.name,
                              alpha=spec.alpha, weights=spec.weights, image_size=image_size, channels=channels,
                              extractor_hash=ehash, augment=augment if augmented else None, seed=seed,
                              pass_index=k) for k in range(passes)]
    report = ExtractionReport()
    found: dict[int, np.ndarray] = {}
    for k, key in enumerate(keys):
        feats = cache.get(key, labels)
        if feats is not None:
            found[k] = feats
    report.hits = len(found)
    missing = [k for k in range(passes) if k not in found]
    if missing:
        t0 = time.perf_counter()
        dataset = make_tf_dataset(split, image_size=image_size, channels=channels, batch_size=batch_size,
                                  training=False, augment=None, seed=seed)
        augmenters = [build_augmenter(augment, seed=_pass_seed(seed, k)) if augmented else None for k in missing]
        feats_list, got_labels = extract_features(extractor, dataset, augmenters=augmenters, should_stop=should_stop)
        if not np.array_equal(got_labels, labels):
            raise RuntimeError("the input pipeline returned the images of a split out of order")
        for k, feats in zip(missing, feats_list):
            cache.put(keys[k], feats, labels)
            found[k] = feats
        report.misses = len(missing)
        report.images = len(labels) * len(missing)
        report.seconds = time.perf_counter() - t0
    return np.stack([found[k] for k in range(passes)]), report

def _pass_seed(seed: int, pass_index: int) -> int:
    return int(seed) * 7919 + 101 * (int(pass_index) + 1)

def report_sentence(report: ExtractionReport) -> str:
    if report.misses == 0:
        return f"Backbone features reused from the cache ({report.hits} cached pass(es)): no backbone pass needed."
    rate = report.images / report.seconds if report.seconds > 0 else float("nan")
    return (f"Backbone features computed for {report.images:,} images in {report.seconds:.1f} s "
            f"({rate:.0f} images/s; {report.hits} pass(es) reused from the cache).")

