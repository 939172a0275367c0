"""Live webcam classification: frames are dropped not queued, answers are drawn in, Grad-CAM, failures, the page."""

from __future__ import annotations

import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from core.data.images import resize_image
from core.errors import UserError
from core.serving.live import OTHER, SURE, UNSURE, FrameClassifier, LiveResult, ascii_text, layout

ROOT = Path(__file__).resolve().parents[1]


class FakePredictor:
    """A predictor with fixed answers that records what it was shown; ``gate`` holds every call until it is set."""

    def __init__(self, names=("rock", "paper", "scissors"), probs=(0.7, 0.2, 0.1), gate=None, fail=None):
        self.class_names = list(names)
        self.image_size, self.channels = 8, 3
        self.probs = np.asarray(probs, np.float32)
        self.gate, self.fail = gate, fail
        self.seen: list[np.ndarray] = []
        self.entered = threading.Event()

    def preprocess(self, img: np.ndarray) -> np.ndarray:
        return resize_image(img, 8)

    def predict(self, images):
        self.seen.append(np.asarray(images[0]))
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10), "the test never released the model"
        if self.fail is not None:
            raise self.fail
        return np.repeat(self.probs[None], len(images), axis=0)


def numbered(n: int, shape=(48, 64)) -> np.ndarray:
    """A frame whose every pixel is ``n``: the fake model's input tells which frame it got."""
    return np.full((*shape, 3), n, np.uint8)


def test_process_never_waits_for_a_slow_model_and_drops_stale_frames() -> None:
    gate = threading.Event()
    fake = FakePredictor(gate=gate)
    with FrameClassifier(fake) as live:
        first = live.process(numbered(1))
        assert first.shape == (48, 64, 3) and first.dtype == np.uint8
        assert fake.entered.wait(10)  # the worker holds frame 1 and is stuck in the model
        for n in range(2, 21):  # a camera keeps sending: none of these calls may wait for the model
            live.process(numbered(n))
        busy = live.snapshot()
        assert (busy.frames_seen, busy.frames_classified, busy.frames_dropped) == (20, 0, 18)
        assert not gate.is_set() and len(fake.seen) == 1
        gate.set()
        answer = live.wait_for_result(after=1, timeout=10)
        assert answer is not None and answer.frame_number == 20  # the newest frame, not the next in line
        assert [int(img.mean()) for img in fake.seen] == [1, 20]
        done = live.snapshot()
        assert (done.frames_classified, done.frames_dropped) == (2, 18)
        assert done.latency_ms >= done.inference_ms > 0


def test_every_frame_shows_the_latest_answer() -> None:
    with FrameClassifier(FakePredictor()) as live:
        frame = numbered(90, (120, 160))
        loading = live.draw(frame, None)
        live.process(frame)
        answer = live.wait_for_result(timeout=10)
        assert answer is not None and answer.label == "rock"
        shown = live.process(frame)
        assert np.array_equal(shown, live.draw(frame, answer))
        assert not np.array_equal(shown, loading)
        assert np.all(frame == 90)  # the camera's frame itself is never drawn on


def test_the_model_gets_rgb_pixels_from_a_bgr_frame() -> None:
    fake = FakePredictor()
    live = FrameClassifier(fake, background=False)
    blue = np.zeros((8, 8, 3), np.uint8)
    blue[:, :, 0] = 255  # blue in OpenCV's BGR order
    live.process(blue)
    assert fake.seen[0][0, 0].tolist() == [0, 0, 255]


def test_bars_are_as_long_as_the_probabilities_and_the_colour_tells_sure_from_not_sure() -> None:
    live = FrameClassifier(FakePredictor(probs=(0.75, 0.25, 0.0)), background=False)
    frame = np.zeros((480, 640, 3), np.uint8)
    lay = layout(480, 640, 3)

    def filled(img: np.ndarray, bar: int, colour: tuple[int, int, int], bars=lay.bars) -> float:
        x0, y0, x1, y1 = bars[bar]
        row = img[(y0 + y1) // 2, x0:x1]
        return float(np.all(row == colour, axis=1).sum()) / (x1 - x0)

    sure = live.process(frame)
    assert filled(sure, 0, SURE) == pytest.approx(0.75, abs=0.02)
    assert filled(sure, 1, OTHER) == pytest.approx(0.25, abs=0.02)
    assert filled(sure, 2, OTHER) == 0.0
    assert np.all(sure[lay.banner_height - 1, 10] == SURE)  # the banner's underline
    live.configure(threshold=0.9)
    unsure = live.process(frame)
    assert filled(unsure, 0, UNSURE) == pytest.approx(0.75, abs=0.02) and filled(unsure, 0, SURE) == 0.0
    assert live.result.verdict(0.9) == "not sure (maybe rock)"
    live.configure(top_k=1)
    one = live.process(frame)
    single = layout(480, 640, 1).bars
    assert single[0] == lay.bars[2]  # one bar sits where the last of three did, in the bottom corner
    assert filled(one, 0, UNSURE, single) == pytest.approx(0.75, abs=0.02)
    assert filled(one, 0, OTHER, lay.bars[:1]) == 0.0  # no runner-up bars above it any more


def test_verdict_names_the_background_class_none_of_these() -> None:
    names = ("rock", "paper", "background")
    assert LiveResult(names, np.array([0.1, 0.1, 0.8]), 1, 1.0, 1.0).verdict(0.5) == "none of these"
    assert LiveResult(names, np.array([0.1, 0.5, 0.4]), 1, 1.0, 1.0).verdict(0.6) == "not sure (maybe paper)"
    assert ascii_text("círculo ✋") == "circulo ?"


def test_a_failing_model_is_reported_and_the_video_keeps_flowing() -> None:
    fake = FakePredictor(fail=RuntimeError("out of memory"))
    live = FrameClassifier(fake)
    live.process(numbered(5))
    assert live.wait_for_result(timeout=10) is None
    assert live.wait_idle(10)
    snap = live.snapshot()
    assert snap.error is not None and "out of memory" in snap.error and not snap.running
    assert live.process(numbered(6)).shape == (48, 64, 3)  # frames still come back, with the error banner
    assert not live.snapshot().running  # and no new worker hammers a broken model
    fake.fail = None
    live.reset_error()
    live.process(numbered(7))
    answer = live.wait_for_result(timeout=10)
    assert answer is not None and answer.frame_number == 3 and int(fake.seen[-1].mean()) == 7
    live.close()


def test_the_worker_ends_when_frames_stop_and_restarts_with_the_next_frame() -> None:
    live = FrameClassifier(FakePredictor(), idle_seconds=0.2)
    live.process(numbered(1))
    assert live.wait_for_result(timeout=10) is not None
    assert live.wait_idle(10) and not live.snapshot().running
    live.process(numbered(2))
    assert live.wait_for_result(after=1, timeout=10).frame_number == 2
    live.close()
    assert not any(t.name == "cnnlab-live-classifier" and t.is_alive() for t in threading.enumerate())


# ---------------------------------------------------------------- a real model


@pytest.fixture(scope="module")
def tiny_predictor():
    import keras

    from core.config import ModelSpec
    from core.models.registry import build_model
    from core.serving.predictor import Predictor

    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec(name="tiny"), (16, 16, 3), 3)
    return Predictor(model, ["rock", "paper", "scissors"])


def test_a_real_model_answers_like_the_predictor_and_grad_cam_colours_the_frame(tiny_predictor) -> None:
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    live = FrameClassifier(tiny_predictor, gradcam=True, background=False, alpha=0.6)
    answer = live.classify(frame)
    expected = tiny_predictor.predict([cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)])[0]
    assert np.allclose(answer.probs, expected, atol=1e-5)
    assert answer.heatmap is not None and answer.heatmap.ndim == 2
    assert 0.0 <= answer.heatmap.min() and answer.heatmap.max() <= 1.0
    with_heat = live.draw(frame, answer)
    live.configure(gradcam=False)
    without = live.draw(frame, answer)
    lay = layout(240, 320, 3)
    middle = (slice(lay.banner_height + 2, lay.bars[0][1] - 20), slice(None))  # between the banner and the bars
    assert np.abs(with_heat[middle].astype(int) - without[middle].astype(int)).mean() > 5
    assert np.array_equal(without[middle], frame[middle])


def test_a_model_grad_cam_cannot_explain_turns_the_overlay_off_with_a_note() -> None:
    import keras

    from core.serving.predictor import Predictor

    dense = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(2, "softmax")])
    live = FrameClassifier(Predictor(dense, ["yes", "no"]), gradcam=True)
    live.process(numbered(3))
    answer = live.wait_for_result(timeout=30)
    snap = live.snapshot()
    assert answer is not None and answer.heatmap is None and snap.error is None
    assert not live.settings.gradcam and any("Grad-CAM is off" in n for n in snap.notes)
    live.configure(gradcam=True)  # the page passes its toggle again on every rerun
    assert not live.settings.gradcam and len(live.snapshot().notes) == 1
    live.close()


# ---------------------------------------------------------------- the page's webcam helpers


def test_ice_servers_default_to_none_for_offline_use_and_can_be_configured(monkeypatch) -> None:
    from ui.webcam import rtc_configuration

    monkeypatch.delenv("CNNLAB_ICE_SERVERS", raising=False)
    assert rtc_configuration() == {"iceServers": []}
    monkeypatch.setenv("CNNLAB_ICE_SERVERS", "stun:stun.example.org:3478, turn:turn.example.org")
    assert rtc_configuration() == {"iceServers": [{"urls": ["stun:stun.example.org:3478", "turn:turn.example.org"]}]}
    monkeypatch.setenv("CNNLAB_ICE_SERVERS", '[{"urls": "turn:t.example.org", "username": "u", "credential": "p"}]')
    assert rtc_configuration()["iceServers"][0]["username"] == "u"
    monkeypatch.setenv("CNNLAB_ICE_SERVERS", '[{"urls": ')
    with pytest.raises(UserError, match="CNNLAB_ICE_SERVERS"):
        rtc_configuration()


@pytest.mark.parametrize("url, secure", [
    ("http://localhost:8501/classify", True),
    ("http://127.0.0.1:8501/", True),
    ("http://[::1]:8501/", True),
    ("http://app.localhost:8501/", True),
    ("https://lab.example.org/classify", True),
    ("http://192.168.1.20:8501/classify", False),
    ("http://lab.example.org/", False),
    (None, None),
])
def test_camera_needs_https_or_this_computer(url, secure) -> None:
    from ui.webcam import secure_origin

    assert secure_origin(url) is secure


def test_each_camera_problem_gets_its_sentence_and_says_whether_snapshots_can_work() -> None:
    from ui.webcam import DENIED, NO_CAMERA, NO_MEDIA, camera_problem

    ok = {"secure": True, "media": True, "cameras": 1, "permission": "granted"}
    assert camera_problem("http://localhost:8501/classify", ok) is None
    assert camera_problem("https://lab.example.org/", None) is None  # the browser has not answered yet
    sentence, snapshots = camera_problem("http://192.168.1.20:8600/classify", None)
    assert "http://192.168.1.20:8600/classify" in sentence and "http://localhost:8600" in sentence
    assert not snapshots  # no secure context: the browser offers no camera to a snapshot either
    assert camera_problem("http://192.168.1.20:8600/", {**ok, "secure": False})[1] is False
    assert camera_problem(None, {**ok, "media": False}) == (NO_MEDIA, False)
    assert camera_problem(None, {**ok, "permission": "denied"}) == (DENIED, True)
    assert camera_problem(None, {**ok, "cameras": 0, "permission": "prompt"}) == (NO_CAMERA, True)


def _render(stats_code: str, threshold: float = 0.5, active: bool = True, waited: float | None = None):
    """Run ``ui.webcam.render_live`` on a canned snapshot in an AppTest script."""
    from streamlit.testing.v1 import AppTest

    script = f"""
import numpy as np
from core.serving.live import LiveResult, LiveStats
from ui.webcam import render_live
names = ("rock", "paper", "background")
stats = {stats_code}
render_live(stats, {threshold}, {active}, {waited})
"""
    at = AppTest.from_string(script, default_timeout=60).run()
    assert not at.exception, at.exception
    return at


def test_the_live_line_shows_the_answer_and_the_numbers_from_a_snapshot() -> None:
    answer = "LiveResult(names, np.array([0.87, 0.1, 0.03]), 40, 35.0, 12.0)"
    at = _render(f"LiveStats(frames_seen=40, frames_classified=30, frames_dropped=10, frames_per_second=29.5, "
                 f"answers_per_second=21.0, latency_ms=35.0, inference_ms=12.0, result={answer})")
    assert "Live answer:** rock · 87% sure" in at.markdown[0].value
    caption = at.caption[0].value
    assert "21.0 answers/s from 30 frames/s" in caption and "35 ms behind" in caption and "10 frames" in caption
    unsure = _render(f"LiveStats(result={answer})", threshold=0.9)
    assert "not sure (maybe rock)" in unsure.markdown[0].value and "% sure" not in unsure.markdown[0].value
    none = _render("LiveStats(result=LiveResult(names, np.array([0.1, 0.1, 0.8]), 3, 1.0, 1.0))")
    assert "none of these" in none.markdown[0].value


def test_the_live_line_reports_failures_notes_and_a_connection_that_never_opens() -> None:
    from ui.webcam import CONNECT_PATIENCE

    at = _render("LiveStats(error='The live classifier stopped: boom', notes=('Grad-CAM is off: no conv.',))")
    assert "boom" in at.error[0].value and "Grad-CAM is off" in at.info[0].value
    waiting = _render("LiveStats()", waited=CONNECT_PATIENCE + 1)
    assert "did not open" in waiting.warning[0].value and "Live answer:** —" in waiting.markdown[0].value
    assert not _render("LiveStats()", waited=1.0).warning
    idle = _render("LiveStats()", active=False)
    assert "Start the webcam" in idle.caption[0].value


def test_the_live_tab_renders_with_its_snapshot_fallback(monkeypatch) -> None:
    """AppTest cannot run the WebRTC component, but the tab must render: stream, live line and fallback."""
    import sys

    from streamlit.testing.v1 import AppTest

    sys.path.insert(0, str(ROOT / "tests" / "app"))
    from eval_pages_runs import shared_home

    from ui.webcam import load_webrtc

    load_webrtc()
    # AppTest's runtime is a mock without sessions; streamlit-webrtc only needs to know there is none.
    monkeypatch.setattr("streamlit_webrtc.component.get_this_session_info", lambda: None)
    run_home, (run_id, _) = shared_home()
    monkeypatch.setenv("CNNLAB_HOME", str(run_home))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.query_params["run"] = run_id
    at.run()
    at.switch_page("pages/classify.py")
    at.session_state["cls_tab"] = "Live webcam"
    at.run()
    assert not at.exception, at.exception
    assert any(e.label == "The video does not start? Take a snapshot instead" for e in at.expander)
    assert at.camera_input(key="cls_live_snapshot") is not None
    assert "cls_live_engine" in at.session_state


def test_rates_count_recent_events_and_a_burst_does_not_inflate_them() -> None:
    from core.serving.live import _rate

    camera = [i / 30 for i in range(120)]  # 4 s at 30 frames/s
    assert _rate(camera, now=camera[-1]) == pytest.approx(30, abs=1)
    assert _rate([0.0, 0.005, 0.01], now=0.01) == pytest.approx(6.0)  # 3 frames at once: not 300/s
    assert _rate(camera, now=camera[-1] + 10) == 0.0  # nothing in the last 2 s
    assert _rate([], now=1.0) == 0.0
