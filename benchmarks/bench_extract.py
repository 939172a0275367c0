"""Benchmark 3: feature-extraction images/s, MobileNetV2-0.35 at 224 px, from JPEG files to pooled features.

Baseline: the eager loop (Pillow decode + resize per file in Python, then ``extractor(batch)`` called
eagerly, batch by batch). CNN Lab: ``make_tf_dataset`` (parallel decode) + ``core.training.feature_cache.extract_features``
(one traced graph). Both include decoding; CNN Lab's figure includes its one-off tracing.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import (
    SIGN_DIGITS,
    Stopwatch,
    have_weights,
    main_for,
    median,
    result,
    row,
    subset_folder,
    target,
)

PER_CLASS = 30  # 300 photos
ROUNDS = 3
SIZE = 224
BATCH = 32
TITLE = "Feature extraction: MobileNetV2-0.35 at 224 px, JPEG files to pooled features"


def _files(folder: Path) -> tuple[list[str], np.ndarray]:
    classes = sorted(p.name for p in folder.iterdir())
    files, labels = [], []
    for i, c in enumerate(classes):
        for f in sorted((folder / c).iterdir()):
            files.append(str(f))
            labels.append(i)
    return files, np.asarray(labels)


def eager_loop(extractor, files: list[str]) -> float:
    """Images/s of the notebook way: decode and resize in Python, call the model eagerly per batch."""
    from PIL import Image

    with Stopwatch() as t:
        feats = []
        for start in range(0, len(files), BATCH):
            batch = []
            for f in files[start:start + BATCH]:
                with Image.open(f) as im:
                    batch.append(np.asarray(im.convert("RGB").resize((SIZE, SIZE), Image.BILINEAR), np.float32))
            feats.append(np.asarray(extractor(np.stack(batch), training=False)))
    return len(files) / t.seconds


def cnnlab(extractor, files: list[str], labels: np.ndarray) -> float:
    from core.data.dataset import Split
    from core.data.pipeline import make_tf_dataset
    from core.training.feature_cache import extract_features

    with Stopwatch() as t:
        ds = make_tf_dataset(Split(labels=labels, files=files), image_size=SIZE, channels=3, batch_size=64,
                             training=False)
        feats, _ = extract_features(extractor, ds)
    assert feats[0].shape[0] == len(files)
    return len(files) / t.seconds


def model_only(extractor, seconds: float = 4.0) -> tuple[float, float]:
    """Images/s of the model call alone on one in-memory batch: (eager call, traced graph)."""
    import tensorflow as tf

    from core.training.feature_cache import extract_features

    x = np.random.default_rng(0).uniform(0, 255, (BATCH, SIZE, SIZE, 3)).astype(np.float32)
    batch = tf.data.Dataset.from_tensors((x, np.zeros(BATCH, np.int32)))
    rates = []
    for call in (lambda: np.asarray(extractor(x, training=False)), lambda: extract_features(extractor, batch)):
        call()
        t0, n = time.perf_counter(), 0
        while time.perf_counter() - t0 < seconds:
            call()
            n += BATCH
        rates.append(n / (time.perf_counter() - t0))
    return rates[0], rates[1]


def run() -> dict:
    if not SIGN_DIGITS.is_dir():
        return result(3, TITLE, status="skipped", reason="../shared/datasets/sign-language-digits is absent")
    if not have_weights():
        return result(3, TITLE, status="skipped", reason="../shared/keras/models (offline ImageNet weights) is absent")
    from core.config import ModelSpec
    from core.models.transfer import feature_extractor

    folder = Path(tempfile.mkdtemp(prefix="bench-extract-")) / "data"
    subset_folder(SIGN_DIGITS, folder, PER_CLASS, max_pixels=1000 * 1000)
    files, labels = _files(folder)
    extractor = feature_extractor(ModelSpec(name="transfer:mobilenet_v2", alpha=0.35), (SIZE, SIZE, 3))
    eager_loop(extractor, files[:BATCH])  # warm-up: first eager call builds the layers' kernels
    cold = cnnlab(extractor, files, labels)  # includes tracing the graph once
    # Interleaved rounds, medians: load from other processes hits both sides alike.
    eagers, warms = [], []
    for _ in range(ROUNDS):
        eagers.append(eager_loop(extractor, files))
        warms.append(cnnlab(extractor, files, labels))  # the traced step is kept on the extractor
    eager, warm = median(eagers), median(warms)
    eager_model, graph_model = model_only(extractor)
    rows = [
        row("eager Python loop (Pillow decode, model(x) per batch)", "throughput, median of rounds",
            f"{eager:.1f} ({' / '.join(f'{v:.0f}' for v in eagers)})", "img/s"),
        row("CNN Lab graph mode + parallel decode, first call (incl. tracing)", "throughput", f"{cold:.1f}", "img/s"),
        row("CNN Lab graph mode + parallel decode, traced", "throughput, median of rounds",
            f"{warm:.1f} ({' / '.join(f'{v:.0f}' for v in warms)})", "img/s"),
        row("issue's reference figure for the eager loop", "throughput", "37", "img/s"),
        row("the model call alone on an in-memory batch of 32: eager / traced graph", "throughput",
            f"{eager_model:.0f} / {graph_model:.0f} ({graph_model / eager_model:.2f}x)", "img/s"),
    ]
    why = ("on a 2-core CPU MobileNetV2's arithmetic is most of the cost: graph mode removes the per-layer Python "
           "dispatch and fuses conv+batch-norm+ReLU6 (measured ~1.5-2x on the model call alone), decoding 100-px "
           "JPEGs is cheap either way (row 'the model call alone': what graph mode gains on the model is the whole "
           "gain). Tried and not faster here: XLA (jit_compile, 4x slower); TensorFlow Lite with the XNNPACK "
           "delegate (81-87 against 96-100 img/s for the traced graph on in-memory batches, after a 13 s "
           "conversion - and TF 2.21's deprecated tf.lite.Interpreter returned NaN features for MobileNetV2, so "
           "it is unusable anyway); two graph calls in parallel threads; TF_ENABLE_ONEDNN_OPTS=0")
    return result(3, TITLE, rows=rows, targets=[
        target("extraction vs eager loop, first call incl. tracing", cold / eager, 3.0, why=why),
        target("extraction vs eager loop, traced", warm / eager, 3.0, why=why),
        target("extraction vs the issue's 37 img/s (traced)", warm / 37.0, 3.0,
               why="the issue's figure was measured on an idle machine; see the ratio measured in this run"),
    ], notes=[f"{len(files)} sign-language-digits photos (100x100 JPEG) resized to {SIZE} px; batch {BATCH} (eager) / "
              "64 (CNN Lab)."])


if __name__ == "__main__":
    main_for(run)
