"""Benchmark 5: single-image predict latency p50/p95, tiny CNN and MobileNetV2-0.35, through the product's Predictor.

Baseline: ``model.predict(x)`` on one image (what a notebook does). CNN Lab: ``core.serving.predictor.Predictor.predict``
(the Classify page's path, resize included) and ``core.models.runtime.predict_function`` (a traced graph).
Each model is saved to ``.keras`` and loaded back first, as a run's model is.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from benchmarks import have_weights, main_for, percentile, result, row, target

CALLS = 60
WARMUP = 5
TITLE = "Single-image predict latency (p50 / p95)"


def _latencies(fn: Callable[[], object]) -> list[float]:
    for _ in range(WARMUP):
        fn()
    out = []
    for _ in range(CALLS):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1000)
    return out


def _measure(name: str, spec, size: int, n_classes: int = 10) -> tuple[list[dict], float]:
    import keras

    from core.models.registry import build_model
    from core.models.runtime import predict_function
    from core.serving.predictor import Predictor

    model = build_model(spec, (size, size, 3), n_classes)
    path = Path(tempfile.mkdtemp(prefix="bench-predict-")) / "model.keras"
    model.save(path)
    predictor = Predictor.from_file(path, [str(i) for i in range(n_classes)])
    rng = np.random.default_rng(0)
    photo = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)  # a camera-sized image, resized by the predictor
    x = predictor.preprocess(photo)[None].astype(np.float32)
    loaded = keras.models.load_model(path)
    graph = predict_function(loaded)
    rows, p50_predictor = [], 0.0
    for label, fn in (("model.predict(x) (baseline)", lambda: loaded.predict(x, verbose=0)),
                      ("Predictor.predict([photo]) (Classify page)", lambda: predictor.predict([photo])),
                      ("predict_function (traced graph)", lambda: graph(x))):
        lat = _latencies(fn)
        p50, p95 = percentile(lat, 0.5), percentile(lat, 0.95)
        if label.startswith("Predictor"):
            p50_predictor = p50
        rows.append(row(f"{name}: {label}", "p50 / p95", f"{p50:.1f} / {p95:.1f}", "ms"))
    return rows, p50_predictor


def run() -> dict:
    from core.config import ModelSpec

    rows, targets, notes = [], [], []
    tiny_rows, tiny_p50 = _measure("tiny CNN 32 px", ModelSpec(name="tiny"), 32)
    rows += tiny_rows
    targets.append(target("tiny CNN p50 (Predictor)", tiny_p50, 30.0, higher_is_better=False, unit="ms",
                          why="see rows"))
    weights = "imagenet" if have_weights() else None
    if weights is None:
        notes.append("../shared/keras/models is absent: MobileNetV2 measured with weights=None (same speed).")
    mob_rows, mob_p50 = _measure("MobileNetV2-0.35 224 px", ModelSpec(name="transfer:mobilenet_v2", alpha=0.35,
                                                                       weights=weights), 224)
    rows += mob_rows
    targets.append(target("MobileNetV2-0.35 p50 (Predictor)", mob_p50, 30.0, higher_is_better=False, unit="ms",
                          why="the eager call runs MobileNetV2's ~150 layers one by one in Python"))
    notes.append(f"{CALLS} calls after {WARMUP} warm-up calls, one 640x480 photo each (resized by the predictor).")
    return result(5, TITLE, rows=rows, targets=targets, notes=notes)


if __name__ == "__main__":
    main_for(run)
