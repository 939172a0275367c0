"""Benchmark 7: live webcam frame rate without a camera - synthetic 640x480 frames through the page's own callback.

The frames go through ``core.serving.live.video_frame_callback`` (``av.VideoFrame`` in and out, exactly what
streamlit-webrtc calls per frame) around a ``FrameClassifier`` on a model saved to ``.keras`` and loaded
back like a run's model. Three ways, for the tiny CNN and MobileNetV2-0.35 (ImageNet weights) at 160 px:

- live: frames arrive at a camera's 30 frames/s; the model classifies the newest frame in its worker
  and the rest are dropped. Reported: answers/s (the label's update rate, the issue's "frame rate"),
  video frames/s, callback time and how far an answer lags behind its frame.
- live + Grad-CAM: the same with the heat-map overlay switched on.
- every frame: each frame classified inline, as fast as possible (the ceiling without dropping).

    python -m benchmarks.bench_webcam            # prints a Markdown table, writes benchmarks/results/webcam.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import ROOT, have_weights, machine, percentile, prepare_environment, result, row, target  # noqa: E402

BENCH = 7
TITLE = "Live webcam: answers per second on synthetic 640x480 frames (no camera)"
IMAGE_SIZE = 160
CAMERA_FPS = 30.0
SECONDS = 8.0  # measured time per setup, after the warm-up
EVERY_FRAME_COUNT = 60
WARM_ANSWERS = 4  # Grad-CAM's first 2 calls run eagerly, the 3rd traces its graph
GOAL_FPS = 10.0
RESULTS_JSON = ROOT / "benchmarks" / "results" / "webcam.json"


def synthetic_frames(count: int = 30, height: int = 480, width: int = 640) -> list[Any]:
    """Camera-like ``av.VideoFrame``s: a textured background with a bright disc moving across it."""
    import av
    import cv2

    rng = np.random.default_rng(0)
    background = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 3)
    frames = []
    for i in range(count):
        img = background.copy()
        x = int(width * (0.2 + 0.6 * i / max(1, count - 1)))
        cv2.circle(img, (x, height // 2), height // 5, (40, 180, 230), -1)
        frames.append(av.VideoFrame.from_ndarray(img, format="bgr24"))
    return frames


def load_predictor(name: str, spec: Any, n_classes: int = 3) -> Any:
    """The model built, saved to .keras and loaded back through ``Predictor.from_file`` (a run's path)."""
    import keras

    from core.models.registry import build_model
    from core.serving.predictor import Predictor

    keras.utils.set_random_seed(0)
    model = build_model(spec, (IMAGE_SIZE, IMAGE_SIZE, 3), n_classes)
    path = Path(tempfile.mkdtemp(prefix=f"bench-webcam-{name}-")) / "model.keras"
    model.save(path)
    return Predictor.from_file(path, ["rock", "paper", "scissors"][:n_classes])


def measure_live(predictor: Any, frames: list[Any], *, gradcam: bool, seconds: float = SECONDS) -> dict[str, float]:
    """Frames at CAMERA_FPS through the callback; the worker classifies the newest one."""
    from core.serving.live import FrameClassifier, video_frame_callback

    classifier = FrameClassifier(predictor, gradcam=gradcam)
    callback = video_frame_callback(classifier)
    pace = threading.Event()  # never set: its wait() is the pacing clock
    period = 1.0 / CAMERA_FPS
    try:
        warm_up(classifier, callback, frames, period, pace)
        before = classifier.snapshot()
        call_ms, elapsed = feed(callback, frames, seconds, period, pace)
        after = classifier.snapshot()
    finally:
        classifier.close()
    answers = after.frames_classified - before.frames_classified
    shown = after.frames_seen - before.frames_seen
    return {
        "answers_per_second": answers / elapsed,
        "video_fps": shown / elapsed,
        "callback_p50_ms": percentile(call_ms, 0.5),
        "callback_p95_ms": percentile(call_ms, 0.95),
        "answer_latency_ms": after.latency_ms,
        "inference_ms": after.inference_ms,
        "dropped_share": (after.frames_dropped - before.frames_dropped) / max(1, shown),
    }


def warm_up(classifier: Any, callback: Any, frames: list[Any], period: float, pace: threading.Event) -> None:
    """Feed frames until the model is traced and Grad-CAM past its eager first calls, then 2 s more."""
    start = time.perf_counter()
    while classifier.snapshot().frames_classified < WARM_ANSWERS:
        if classifier.snapshot().error or time.perf_counter() - start > 300:
            raise RuntimeError(classifier.snapshot().error or "the model did not warm up within 300 s")
        feed(callback, frames, 0.5, period, pace)
    feed(callback, frames, 2.0, period, pace)


def feed(callback: Any, frames: list[Any], seconds: float, period: float, pace: threading.Event) -> tuple[list, float]:
    """Call ``callback`` on the frames at ``1/period`` frames/s for ``seconds``; returns call times (ms), elapsed s."""
    start = time.perf_counter()
    calls, i = [], 0
    while (now := time.perf_counter()) - start < seconds:
        t0 = now
        callback(frames[i % len(frames)])
        calls.append((time.perf_counter() - t0) * 1000)
        i += 1
        pace.wait(max(0.0, start + i * period - time.perf_counter()))
    return calls, time.perf_counter() - start


def measure_every_frame(predictor: Any, frames: list[Any], count: int = EVERY_FRAME_COUNT) -> dict[str, float]:
    """Each frame classified inline through the callback, back to back."""
    from core.serving.live import FrameClassifier, video_frame_callback

    classifier = FrameClassifier(predictor, background=False)
    callback = video_frame_callback(classifier)
    for f in frames[:3]:
        callback(f)
    start = time.perf_counter()
    for i in range(count):
        callback(frames[i % len(frames)])
    seconds = time.perf_counter() - start
    snap = classifier.snapshot()
    if snap.error or snap.frames_classified != count + 3:  # a failing model would draw an error banner, fast
        raise RuntimeError(snap.error or f"{snap.frames_classified} of {count + 3} frames were classified")
    return {"frames_per_second": count / seconds, "inference_ms": snap.inference_ms}


def run(seconds: float = SECONDS) -> dict[str, Any]:
    """Measure both models; returns the benchmarks' result dict (also written to benchmarks/results/webcam.json)."""
    from core.config import ModelSpec

    frames = synthetic_frames()
    weights = "imagenet" if have_weights() else None
    models = [("tiny CNN", "tiny", ModelSpec(name="tiny")),
              ("MobileNetV2-0.35", "mobilenet", ModelSpec(name="transfer:mobilenet_v2", alpha=0.35, weights=weights))]
    rows, targets, notes, numbers = [], [], [], {}
    for label, name, spec in models:
        predictor = load_predictor(name, spec)
        live = measure_live(predictor, frames, gradcam=False, seconds=seconds)
        heat = measure_live(predictor, frames, gradcam=True, seconds=seconds)
        every = measure_every_frame(predictor, frames)
        numbers[name] = {"model": label, "live": live, "live_gradcam": heat, "every_frame": every}
        setup = f"{label} {IMAGE_SIZE} px"
        rows += [
            row(setup, "live answers/s (camera at 30 frames/s)", round(live["answers_per_second"], 1), "/s"),
            row(setup, "live video frames/s", round(live["video_fps"], 1), "/s"),
            row(setup, "callback time p50 / p95", f"{live['callback_p50_ms']:.1f} / {live['callback_p95_ms']:.1f}",
                "ms"),
            row(setup, "answer behind its frame (median)", round(live["answer_latency_ms"], 1), "ms"),
            row(setup, "frames dropped", f"{live['dropped_share']:.0%}", ""),
            row(setup, "live + Grad-CAM answers/s", round(heat["answers_per_second"], 1), "/s"),
            row(setup, "every frame classified inline", round(every["frames_per_second"], 1), "frames/s"),
            row(setup, "model call inline (median)", round(every["inference_ms"], 1), "ms"),
        ]
        targets.append(target(f"{label} live answers/s", live["answers_per_second"], GOAL_FPS, unit="/s",
                              why="the machine's 2 cores were shared with other work; see the load average"))
    if weights is None:
        notes.append("../shared/keras/models is absent: MobileNetV2 measured with weights=None (same speed).")
    notes.append(f"{seconds:.0f} s per setup after warm-up; frames are av.VideoFrame 640x480 through "
                 "core.serving.live.video_frame_callback, the function the Classify page gives streamlit-webrtc.")
    out = result(BENCH, TITLE, rows=rows, targets=targets, notes=notes)
    write_results(out, numbers)
    return out


def write_results(out: dict[str, Any], numbers: dict[str, Any]) -> None:
    """benchmarks/results/webcam.json: the result rows plus the raw numbers and the machine."""
    RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
    data = {**out, "numbers": numbers, "machine": machine(), "image_size": IMAGE_SIZE, "camera_fps": CAMERA_FPS}
    tmp = RESULTS_JSON.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=float))
    tmp.replace(RESULTS_JSON)


def markdown(out: dict[str, Any]) -> str:
    """The result as a Markdown table (rows, then targets)."""
    lines = [f"### {out['title']}", "", "| setup | metric | value |", "| --- | --- | --- |"]
    lines += [f"| {r['setup']} | {r['metric']} | {r['value']} {r['unit']} |" for r in out["rows"]]
    lines += ["", "| target | measured | goal | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {t['name']} | {t['measured']} {t['unit']} | {t['comparison']} {t['goal']} | "
              f"{'yes' if t['met'] else 'no'} |" for t in out["targets"]]
    lines += [f"\n- {n}" for n in out["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="also write the result JSON here (benchmarks/run_all.py)")
    parser.add_argument("--seconds", type=float, default=SECONDS, help="measured seconds per setup")
    args = parser.parse_args(argv)
    prepare_environment()
    out = run(args.seconds)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2, default=float))
    print(markdown(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
