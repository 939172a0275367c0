"""Real browser, fake camera: the Classify page's live webcam draws the model's answer into the stream.

Chromium's fake capture device (``--use-fake-device-for-media-stream``, permission auto-granted by
``--use-fake-ui-for-media-stream``) feeds a synthetic video to the page; the app runs with a CNN Lab
home holding one finished tiny run. The test starts the webcam and waits until (1) the page's live line
names one of the run's classes and (2) the video coming back from the server shows the answer banner
(a dimmed strip with white text and a coloured underline the raw fake stream does not have).
Two more visits check what the page says where the camera cannot work: a plain-http address that is not
this computer (no secure context) and a browser without any camera.
Saves webcam.png (tests/browser/shots.py says where). Skipped with a reason where /usr/bin/chromium is absent.
"""

from __future__ import annotations

import io
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest
from playwright import sync_api

from tests.browser.shots import screenshot_folder

ROOT = Path(__file__).resolve().parents[2]
SHOT = screenshot_folder() / "webcam.png"
CHROMIUM = Path("/usr/bin/chromium")
BASE_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update"]
FAKE_CAMERA = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]
STREAM_IFRAME = 'iframe[title="streamlit_webrtc.component.webrtc_streamer"]'

SLOW_MS = 240_000  # the first page that loads TensorFlow on 2 busy cores
ANSWER_SECONDS = 120.0

pytestmark = [pytest.mark.browser, pytest.mark.slow]

if not CHROMIUM.exists():
    pytest.skip("Debian Chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
                allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_for(check: Callable[[], Any], timeout: float, step: float = 0.5) -> Any:
    """Poll ``check`` until it returns something truthy (returned) or ``timeout`` passes (None)."""
    waiter = threading.Event()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        waiter.wait(step)
    return None


def _healthy(url: str, process: subprocess.Popen) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"streamlit exited with status {process.returncode}")
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A tiny finished run in a private home, and `streamlit run app.py` on a free loopback port."""
    from core.config import ModelSpec, SplitConfig, TrainConfig
    from core.store.runs import RunStore
    from core.training.manager import train_to_completion

    folder = tmp_path_factory.mktemp("webcam-app")
    home, keras_home = folder / "home", folder / "keras"
    keras_home.mkdir()
    config = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=10, seed=0),
                         model=ModelSpec(name="tiny"), image_size=16, batch_size=16, epochs=1,
                         use_feature_cache=False, name="webcam test run")
    summary = train_to_completion(config, RunStore(home))
    assert summary["status"] == "finished", summary
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "streamlit.log"
    env = {**os.environ, "CNNLAB_HOME": str(home), "KERAS_HOME": str(keras_home), "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("CNNLAB_ICE_SERVERS", None)  # the default: no STUN, loopback only
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert _wait_for(lambda: _healthy(url, process), 90), f"{url} did not become healthy"
        yield {"url": url, "run_id": summary["run_id"], "classes": [str(c) for c in summary["classes"]], "log": log}
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# ---------------------------------------------------------------- reading the video


SURE_RGB, UNSURE_RGB = (34, 197, 94), (245, 158, 11)  # core.serving.live's SURE / UNSURE in RGB order


def banner_in(png: bytes) -> dict[str, float] | None:
    """Where core.serving.live's answer banner is in a video screenshot: its underline row, how dark, white text pixels."""
    from PIL import Image

    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    h = rgb.shape[0]
    best_row, best_share = -1, 0.0
    for row in range(2, h // 5):
        line = rgb[row]
        share = max(float((np.abs(line - c).max(axis=1) <= 70).mean()) for c in (SURE_RGB, UNSURE_RGB))
        if share > best_share:
            best_row, best_share = row, share
    if best_share < 0.7:
        return None
    strip = rgb[: max(1, best_row - 3)]
    white = int((strip.min(axis=2) >= 200).sum())
    middle = rgb[int(h * 0.3) : int(h * 0.4)]
    # Medians: the white letters are a minority of the strip, the pacman a minority of the middle rows.
    return {"row": best_row, "underline": best_share, "strip": float(np.median(strip.mean(axis=2))),
            "middle": float(np.median(middle.mean(axis=2))), "white": white}


# ---------------------------------------------------------------- the test


def open_live_tab(browser: Any, url: str, run_id: str) -> Any:
    """The Classify page of ``run_id`` with its 'Live webcam' tab open."""
    page = browser.new_page(viewport={"width": 1280, "height": 1300})
    page.set_default_timeout(SLOW_MS)
    page.goto(f"{url}/classify?run={run_id}")
    page.get_by_role("tab", name="Live webcam").click()
    return page


def test_the_live_webcam_draws_the_answer_into_the_stream(app: dict[str, Any]) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BASE_ARGS + FAKE_CAMERA)
        try:
            page = open_live_tab(browser, app["url"], app["run_id"])
            stream = page.frame_locator(STREAM_IFRAME)
            stream.get_by_role("button", name=re.compile("start the webcam", re.I)).click()

            line = page.locator(".st-key-cls_live_answer")

            def answered() -> str | None:
                text = line.inner_text() if line.count() else ""
                match = re.search(r"Live answer:\s*(.+)", text)
                return match.group(1).strip() if match and not match.group(1).startswith("—") else None

            answer = _wait_for(answered, ANSWER_SECONDS)
            log = app["log"].read_text(errors="replace")[-3000:]
            assert answer, f"no live answer within {ANSWER_SECONDS:.0f} s; server log:\n{log}"
            named = re.sub(r"^not sure \(maybe (.+)\)$", r"\1", answer.split(" · ")[0])
            assert named in app["classes"] or named == "none of these", answer

            video = stream.locator("video")
            drawn = _wait_for(lambda: banner_in(video.screenshot()), 60, step=1.0)
            assert drawn is not None, "the video never showed the answer banner drawn by the server"
            assert drawn["strip"] < 0.6 * drawn["middle"], drawn  # the strip behind the text is dimmed
            assert drawn["white"] > 100, drawn  # white letters on it

            # Streamlit scrolls inside its own container, so a tall window (not full_page) shows it all.
            page.set_viewport_size({"width": 1280, "height": 2100})
            _wait_for(answered, 10)
            SHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOT))
            assert page.locator('[data-testid="stException"]').count() == 0
            stream.get_by_role("button", name=re.compile("^stop$", re.I)).click()
        finally:
            browser.close()


def _alerts(page: Any) -> list[str]:
    return page.locator('[data-testid="stAlert"]').all_inner_texts()


def test_a_plain_http_address_says_why_there_is_no_camera(app: dict[str, Any]) -> None:
    """The same server reached as http://cnnlab.test:PORT (mapped to 127.0.0.1): not a secure context."""
    port = app["url"].rsplit(":", 1)[1]
    rules = "--host-resolver-rules=MAP cnnlab.test 127.0.0.1"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BASE_ARGS + FAKE_CAMERA + [rules])
        try:
            page = open_live_tab(browser, f"http://cnnlab.test:{port}", app["run_id"])
            assert not page.evaluate("() => window.isSecureContext")
            said = _wait_for(lambda: [a for a in _alerts(page) if "https://" in a], 60)
            assert said and f"http://localhost:{port}" in said[0] and "Upload photos" in said[0], _alerts(page)
            assert page.locator(STREAM_IFRAME).count() == 0  # no dead video widget
            assert page.locator('[data-testid="stCameraInput"]').count() == 0  # nor a snapshot that cannot work
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()


def test_a_browser_without_a_camera_says_so_and_offers_a_snapshot(app: dict[str, Any]) -> None:
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=BASE_ARGS)  # no fake camera
        try:
            page = open_live_tab(browser, app["url"], app["run_id"])
            if page.evaluate("async () => (await navigator.mediaDevices.enumerateDevices())"
                             ".filter((d) => d.kind === 'videoinput').length") > 0:
                pytest.skip("this machine has a real camera")
            said = _wait_for(lambda: [a for a in _alerts(page) if "No camera was found" in a], 60)
            assert said, _alerts(page)
            assert page.locator(STREAM_IFRAME).count() == 0
            assert page.locator('[data-testid="stCameraInput"]').count() == 1  # works once a camera is plugged in
            assert page.locator('[data-testid="stException"]').count() == 0
        finally:
            browser.close()
