"""Live classification of a video stream: the answer is drawn into every frame, the model never holds the video up.

``FrameClassifier.process(frame)`` is what a video callback calls for each camera frame. It hands the frame
to a worker thread through a one-frame slot and returns at once with the latest answer drawn in: label,
confidence and a top-k bar chart, optionally a Grad-CAM overlay. When the model is slower than the camera,
a newer frame replaces the one waiting in the slot (frames are dropped, never queued), so the answer is at
most one model call behind what the camera shows. The worker exits when frames stop coming and
``process`` starts it again with the next frame. Pure numpy/OpenCV/TensorFlow: no Streamlit here.
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from core.errors import UserError
from core.models.runtime import predict_function
from core.serving.classify import Answer

IDLE_SECONDS = 10.0  # the worker thread ends after this long without a frame (an abandoned tab)
WINDOW = 120  # recent frames/answers kept for the rates and the median latencies
RATE_SECONDS = 2.0  # rates count the events of the last 2 s
MIN_RATE_SPAN = 0.5  # ... and never divide by less than this (the first frames arrive in a burst)
REFERENCE_WIDTH = 640  # text and bars are sized for this frame width and scaled for others

# BGR colours
WHITE = (255, 255, 255)
SURE = (94, 197, 34)  # green: the answer passes the threshold
UNSURE = (11, 158, 245)  # amber: below the threshold
OTHER = (235, 99, 37)  # blue: the runner-up bars
TRACK = (90, 90, 90)  # the empty part of a bar
ERROR = (68, 68, 239)  # red

_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class LiveResult(Answer):
    """The answer for one classified frame (immutable: the video thread reads it while the worker makes the next)."""

    class_names: tuple[str, ...]
    probs: np.ndarray = field(repr=False)  # [C]
    frame_number: int  # which frame (counting from 1) this answer is about
    latency_ms: float  # from the frame reaching process() to this answer being ready
    inference_ms: float  # the model call (and Grad-CAM) alone
    heatmap: np.ndarray | None = field(default=None, repr=False)  # float32 [h, w] in 0..1 (Grad-CAM on)


@dataclass(frozen=True)
class LiveStats:
    """What the page shows under the video: an immutable copy of the classifier's counters."""

    frames_seen: int = 0
    frames_classified: int = 0
    frames_dropped: int = 0  # replaced in the slot by a newer frame before the model got to them
    frames_per_second: float = 0.0  # frames passing through process() (what the viewer sees)
    answers_per_second: float = 0.0  # frames the model classified
    latency_ms: float = 0.0  # median frame-to-answer time of recent answers (robust to the first, tracing call)
    inference_ms: float = 0.0  # median model call time over recent answers
    draw_ms: float = 0.0  # median time process() takes (the delay added to the video)
    running: bool = False  # the worker thread is alive
    error: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    result: LiveResult | None = None


@dataclass(frozen=True)
class Settings:
    """What the viewer can change while the stream runs."""

    top_k: int = 3
    threshold: float = 0.0
    gradcam: bool = False
    alpha: float = 0.45


@dataclass(frozen=True)
class Layout:
    """Where the drawing goes on a frame of a given size (tests use it to find the bars)."""

    scale: float
    banner_height: int
    bars: tuple[tuple[int, int, int, int], ...]  # (x0, y0, x1, y1) of each bar's full track, top answer first
    label_width: int


def layout(height: int, width: int, k: int) -> Layout:
    """The banner along the top and ``k`` bars in the bottom-left corner, scaled to the frame width."""
    s = max(0.45, min(2.5, width / REFERENCE_WIDTH))
    banner = int(round(46 * s))
    bar_h, gap, pad = int(round(16 * s)), int(round(8 * s)), int(round(10 * s))
    label_w = int(round(150 * s))
    bar_w = max(8, min(int(round(220 * s)), width - label_w - 3 * pad - int(round(56 * s))))
    x0 = pad + label_w
    bars = []
    for i in range(k):
        y1 = height - pad - (k - 1 - i) * (bar_h + gap)
        bars.append((x0, y1 - bar_h, x0 + bar_w, y1))
    return Layout(s, banner, tuple(bars), label_w)


def ascii_text(text: str) -> str:
    """What OpenCV's Hershey fonts can draw: accents dropped ('círculo' -> 'circulo'), other characters as '?'."""
    plain = unicodedata.normalize("NFKD", str(text))
    plain = "".join(c for c in plain if not unicodedata.combining(c))
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in plain)


class FrameClassifier:
    """Classify a live video: ``process(frame_bgr)`` returns the frame with the newest answer drawn in.

    ``background=True`` (the live mode) classifies in a worker thread and drops frames that arrive while
    the model is busy; ``background=False`` classifies every frame inline (benchmarks, deterministic tests).
    ``gradcam`` is True/False, or a ready object with ``heatmap(image, class_index)``.
    """

    def __init__(self, predictor: Any, gradcam: bool | Any = False, top_k: int = 3, *, threshold: float = 0.0,
                 alpha: float = 0.45, background: bool = True, idle_seconds: float = IDLE_SECONDS) -> None:
        self.predictor = predictor
        self.class_names = tuple(str(c) for c in predictor.class_names)
        self.background = background
        self.idle_seconds = float(idle_seconds)
        self._gradcam_engine = None if isinstance(gradcam, bool) or gradcam is None else gradcam
        self._gradcam_blocked = False
        self._settings = Settings()
        self.configure(top_k=top_k, threshold=threshold, gradcam=bool(gradcam), alpha=alpha)
        self._cond = threading.Condition()
        self._pending: tuple[np.ndarray, int, float] | None = None
        self._worker: threading.Thread | None = None
        self._stop = threading.Event()
        self._result: LiveResult | None = None
        self._error: str | None = None
        self._notes: list[str] = []
        self._seen = self._classified = self._dropped = 0
        self._frame_times: deque[tuple[float, float]] = deque(maxlen=WINDOW)  # (when, draw ms)
        self._answer_times: deque[tuple[float, float, float]] = deque(maxlen=WINDOW)  # (when, latency, inference)
        self._predict: Callable[[np.ndarray], np.ndarray] | None = None
        self._heat_cache: tuple[int, tuple[int, int], np.ndarray] | None = None  # (frame number, size, BGR heat)

    # ------------------------------------------------------------ settings

    @property
    def settings(self) -> Settings:
        return self._settings

    def configure(self, *, top_k: int | None = None, threshold: float | None = None, gradcam: bool | None = None,
                  alpha: float | None = None) -> None:
        """Change what is drawn while the stream runs (one atomic swap: the video thread never sees half of it)."""
        s = self._settings
        k = s.top_k if top_k is None else int(top_k)
        a = s.alpha if alpha is None else float(alpha)
        if not 0.0 <= a <= 1.0:
            raise ValueError(f"alpha must be between 0 and 1, got {a}.")
        self._settings = Settings(
            top_k=max(1, min(k, len(self.class_names))),
            threshold=s.threshold if threshold is None else float(threshold),
            gradcam=(s.gradcam if gradcam is None else bool(gradcam)) and not self._gradcam_blocked,
            alpha=a,
        )

    # ------------------------------------------------------------ the video side

    def process(self, frame_bgr: np.ndarray) -> np.ndarray:
        """The frame (BGR uint8) with the latest answer drawn on a copy; hands it to the model without waiting."""
        started = time.perf_counter()
        frame = _as_bgr(frame_bgr)
        with self._cond:
            self._seen += 1
            number = self._seen
        if self.background:
            self._offer(frame, number, started)
            result = self._result
        else:
            result = self._publish(self._classify_safely(frame, number, started)) or self._result
        out = self.draw(frame, result)
        with self._cond:
            self._frame_times.append((time.perf_counter(), (time.perf_counter() - started) * 1000))
        return out

    def _offer(self, frame: np.ndarray, number: int, arrived: float) -> None:
        """Put the frame in the one-frame slot (replacing an unprocessed one) and make sure a worker runs."""
        with self._cond:
            if self._pending is not None:
                self._dropped += 1
            self._pending = (frame, number, arrived)
            if self._worker is None and self._error is None:
                self._stop.clear()
                self._worker = threading.Thread(target=self._work, name="cnnlab-live-classifier", daemon=True)
                self._worker.start()
            self._cond.notify_all()

    def _work(self) -> None:
        """The worker: take the newest frame, classify it, publish the answer; exit when idle or stopped."""
        me = threading.current_thread()
        try:
            while True:
                with self._cond:
                    if self._pending is None and not self._stop.is_set():
                        self._cond.wait_for(lambda: self._pending is not None or self._stop.is_set(),
                                            timeout=self.idle_seconds)
                    if self._pending is None or self._stop.is_set():
                        # Decided under the same lock _offer takes: a frame offered now starts a new worker.
                        self._retire(me)
                        return
                    frame, number, arrived = self._pending
                    self._pending = None
                self._publish(self._classify_safely(frame, number, arrived))
        finally:
            with self._cond:
                self._retire(me)

    def _retire(self, me: threading.Thread) -> None:
        """Mark the worker gone (caller holds the lock) and wake anyone waiting for it."""
        if self._worker is me:
            self._worker = None
        self._cond.notify_all()

    def _classify_safely(self, frame: np.ndarray, number: int, arrived: float) -> LiveResult | None:
        """``classify``, with failures recorded for the page instead of killing the video."""
        try:
            return self.classify(frame, number=number, arrived=arrived)
        except Exception as err:  # noqa: BLE001 - the video must go on; the page shows the sentence
            text = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
            with self._cond:
                self._error = f"The live classifier stopped: {text}"
                self._pending = None
                self._stop.set()
            return None

    def _publish(self, result: LiveResult | None) -> LiveResult | None:
        if result is None:
            return None
        with self._cond:
            self._result = result
            self._classified += 1
            self._answer_times.append((time.perf_counter(), result.latency_ms, result.inference_ms))
            self._cond.notify_all()
        return result

    # ------------------------------------------------------------ the model side

    def classify(self, frame_bgr: np.ndarray, *, number: int = 0, arrived: float | None = None) -> LiveResult:
        """The model's answer for one BGR frame, synchronously (what the worker does for each frame it takes)."""
        arrived = time.perf_counter() if arrived is None else arrived
        started = time.perf_counter()
        rgb = cv2.cvtColor(_as_bgr(frame_bgr), cv2.COLOR_BGR2RGB)
        seen = self.predictor.preprocess(rgb)  # core.data.pixels.to_model_pixels: what training saw
        probs = np.asarray(self._predict_fn()(seen[None].astype(np.float32))[0], dtype=np.float64)
        heat = None
        if self._settings.gradcam:
            heat = self._heatmap(seen, int(np.argmax(probs)))
        done = time.perf_counter()
        return LiveResult(self.class_names, probs, number, (done - arrived) * 1000, (done - started) * 1000, heat)

    def _predict_fn(self) -> Callable[[np.ndarray], np.ndarray]:
        """A traced predict function (an eager call walks a backbone's layers one by one: 10-50x slower)."""
        if self._predict is None:
            self._predict = _predict_fn_of(self.predictor)
        return self._predict

    def _heatmap(self, seen: np.ndarray, class_index: int) -> np.ndarray | None:
        """Grad-CAM for the answer; a model Grad-CAM cannot explain turns the overlay off with a note."""
        try:
            if self._gradcam_engine is None:
                model = getattr(self.predictor, "model", None)
                if model is None:
                    raise UserError("this model does not show its layers, so Grad-CAM cannot look inside it.")
                from core.explain.gradcam import gradcam_for

                self._gradcam_engine = gradcam_for(model)
            return np.asarray(self._gradcam_engine.heatmap(seen, class_index), dtype=np.float32)
        except UserError as err:
            self._gradcam_blocked = True  # asking again on every rerun would only repeat the failure
            self.configure(gradcam=False)
            with self._cond:
                self._notes.append(f"Grad-CAM is off: {err}")
            return None

    # ------------------------------------------------------------ drawing

    def draw(self, frame_bgr: np.ndarray, result: LiveResult | None) -> np.ndarray:
        """A copy of the frame with the answer (or the classifier's state) drawn in."""
        out = _as_bgr(frame_bgr).copy()
        s = self._settings
        h, w = out.shape[:2]
        lay = layout(h, w, min(s.top_k, len(self.class_names)))
        if result is not None and s.gradcam and result.heatmap is not None:
            out = self._blend_heat(out, result, s.alpha)
        if self._error is not None:
            _banner(out, lay, "Classifier stopped - see the page", ERROR)
        elif result is None:
            _banner(out, lay, "Loading the model...", WHITE)
        else:
            sure = result.sure(s.threshold)
            text = result.verdict(s.threshold)
            if sure:
                text = f"{text}  {result.confidence:.0%}"
            _banner(out, lay, text, SURE if sure else UNSURE)
            _bars(out, lay, result.top(len(lay.bars)), sure)
        return out

    def _blend_heat(self, out: np.ndarray, result: LiveResult, alpha: float) -> np.ndarray:
        """The heatmap (colour-mapped once per answer, reused for the frames until the next) blended on the frame."""
        h, w = out.shape[:2]
        cache = self._heat_cache
        if cache is None or cache[0] != result.frame_number or cache[1] != (h, w):
            hm = np.clip(cv2.resize(np.nan_to_num(result.heatmap), (w, h), interpolation=cv2.INTER_LINEAR), 0, 1)
            colored = cv2.applyColorMap(np.round(hm * 255).astype(np.uint8), cv2.COLORMAP_JET)
            cache = (result.frame_number, (h, w), colored)
            self._heat_cache = cache
        return cv2.addWeighted(out, 1.0 - alpha, cache[2], alpha, 0.0)

    # ------------------------------------------------------------ reading and stopping

    def snapshot(self) -> LiveStats:
        """An immutable copy of the counters, rates and latest answer (for a polling page)."""
        now = time.perf_counter()
        with self._cond:
            frames = list(self._frame_times)
            answers = list(self._answer_times)
            return LiveStats(
                frames_seen=self._seen,
                frames_classified=self._classified,
                frames_dropped=self._dropped,
                frames_per_second=_rate([t for t, _ in frames], now),
                answers_per_second=_rate([t for t, _, _ in answers], now),
                latency_ms=float(np.median([a[1] for a in answers])) if answers else 0.0,
                inference_ms=float(np.median([a[2] for a in answers])) if answers else 0.0,
                draw_ms=float(np.median([d for _, d in frames])) if frames else 0.0,
                running=self._worker is not None,
                error=self._error,
                notes=tuple(self._notes),
                result=self._result,
            )

    @property
    def result(self) -> LiveResult | None:
        return self._result

    def wait_for_result(self, after: int = 0, timeout: float = 10.0) -> LiveResult | None:
        """Block until an answer about a frame later than number ``after`` exists (or the timeout/an error)."""
        with self._cond:
            self._cond.wait_for(
                lambda: (self._result is not None and self._result.frame_number > after) or self._error is not None,
                timeout=timeout,
            )
            result = self._result
        return result if result is not None and result.frame_number > after else None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """Block until the worker thread has ended (True) or the timeout passed (False)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._worker is None, timeout=timeout)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the worker (the next ``process`` call starts a new one) and forget a waiting frame."""
        with self._cond:
            worker = self._worker
            self._stop.set()
            self._pending = None
            self._cond.notify_all()
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def reset_error(self) -> None:
        """Forget a recorded failure so the next frame tries the model again."""
        with self._cond:
            self._error = None

    def __enter__(self) -> FrameClassifier:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def video_frame_callback(classifier: FrameClassifier) -> Callable[[Any], Any]:
    """``av.VideoFrame -> av.VideoFrame`` around ``classifier.process``: what a WebRTC stream calls per frame."""
    import av

    def callback(frame: Any) -> Any:
        out = classifier.process(frame.to_ndarray(format="bgr24"))
        return av.VideoFrame.from_ndarray(out, format="bgr24")

    return callback


# ---------------------------------------------------------------- helpers


def _as_bgr(frame: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 from gray, BGRA or float frames."""
    a = np.asarray(frame)
    if a.dtype != np.uint8:
        a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"Expected a video frame of height x width x channels, got shape {list(a.shape)}.")
    if a.shape[2] == 1:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2BGR)
    return a[:, :, :3] if a.shape[2] == 4 else a


def _rate(times: Sequence[float], now: float) -> float:
    """Events per second over the last RATE_SECONDS, counted up to ``now`` (a burst of frames does not inflate it)."""
    if not times:
        return 0.0
    recent = sum(1 for t in times if t > now - RATE_SECONDS)
    return recent / max(MIN_RATE_SPAN, min(RATE_SECONDS, now - times[0]))


def _predict_fn_of(predictor: Any) -> Callable[[np.ndarray], np.ndarray]:
    """The model's one traced ``pixels -> probabilities`` function (shared per model); the predictor's own otherwise."""
    model = getattr(predictor, "model", None)
    if model is None or not hasattr(model, "input_shape"):
        return lambda batch: np.asarray(predictor.predict(list(batch.astype(np.uint8))))
    return predict_function(model)


def _darken(out: np.ndarray, x0: int, y0: int, x1: int, y1: int, keep: float = 0.35) -> None:
    """Dim a rectangle in place so white text on it reads on any background."""
    h, w = out.shape[:2]
    x0, y0, x1, y1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
    if x1 > x0 and y1 > y0:
        roi = out[y0:y1, x0:x1]
        out[y0:y1, x0:x1] = (roi.astype(np.uint16) * int(keep * 256) >> 8).astype(np.uint8)


def _fit_text(text: str, max_width: int, scale: float, thickness: int) -> str:
    """The text, shortened with '..' until it fits ``max_width`` pixels."""
    text = ascii_text(text)
    while len(text) > 2 and cv2.getTextSize(text, _FONT, scale, thickness)[0][0] > max_width:
        text = text[:-3] + ".."
    return text


def _banner(out: np.ndarray, lay: Layout, text: str, colour: tuple[int, int, int]) -> None:
    """The answer along the top of the frame, in big letters on a dimmed strip."""
    h, w = out.shape[:2]
    s = lay.scale
    _darken(out, 0, 0, w, lay.banner_height)
    cv2.rectangle(out, (0, lay.banner_height - max(2, int(4 * s))), (w, lay.banner_height), colour, -1)
    font_scale, thick = 1.0 * s, max(1, int(round(2 * s)))
    text = _fit_text(text, w - int(24 * s), font_scale, thick)
    (_, th), _ = cv2.getTextSize(text, _FONT, font_scale, thick)
    y = (lay.banner_height + th) // 2 - int(2 * s)
    cv2.putText(out, text, (int(12 * s), y), _FONT, font_scale, WHITE, thick, cv2.LINE_AA)


def _bars(out: np.ndarray, lay: Layout, top: list[tuple[str, float]], sure: bool) -> None:
    """The top-k probabilities as horizontal bars with names and percentages, bottom-left."""
    if not lay.bars:
        return
    s = lay.scale
    pad = int(round(10 * s))
    x_left = max(0, lay.bars[0][0] - lay.label_width - pad // 2)
    x_right = lay.bars[0][2] + int(round(56 * s))
    _darken(out, x_left, lay.bars[0][1] - pad, x_right, lay.bars[-1][3] + pad // 2, keep=0.4)
    font_scale, thick = 0.5 * s, max(1, int(round(1 * s)))
    for i, ((x0, y0, x1, y1), (name, p)) in enumerate(zip(lay.bars, top)):
        cv2.rectangle(out, (x0, y0), (x1, y1), TRACK, -1)
        filled = x0 + int(round((x1 - x0) * min(max(p, 0.0), 1.0)))
        if filled > x0:
            colour = (SURE if sure else UNSURE) if i == 0 else OTHER
            cv2.rectangle(out, (x0, y0), (filled, y1), colour, -1)
        label = _fit_text(name, lay.label_width - pad, font_scale, thick)
        ty = y1 - max(1, (y1 - y0 - int(10 * s)) // 2)
        cv2.putText(out, label, (x0 - lay.label_width + pad // 2, ty), _FONT, font_scale, WHITE, thick, cv2.LINE_AA)
        cv2.putText(out, f"{p:.0%}", (x1 + int(6 * s), ty), _FONT, font_scale, WHITE, thick, cv2.LINE_AA)
