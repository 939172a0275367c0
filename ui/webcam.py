"""The Classify page's live webcam: the camera stream with the model's answer drawn into every frame.

Video travels over WebRTC (``streamlit-webrtc``): the browser sends camera frames to this server, the
frame callback draws the latest answer in (``core.serving.live.FrameClassifier``, which classifies the newest frame
in its own thread and drops the rest) and the frames go back to the page. No public STUN server is used, so
it works offline on this computer and across a local network; ``CNNLAB_ICE_SERVERS`` adds STUN/TURN servers
for a remote deployment. When the camera cannot work (no secure context, no camera, permission denied,
no connection, no WebRTC package), the page says why in a sentence and offers ``st.camera_input`` snapshots
instead wherever a snapshot can work (without a secure context the browser gives no page a camera at all,
so there the sentence points to https, localhost or the 'Upload photos' tab).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import streamlit as st

from core.errors import UserError
from core.plots.evaluation import top_k_figure
from core.serving.live import FrameClassifier, LiveStats, video_frame_callback
from ui.common import explain, teacher_mode, user_errors

STREAM_KEY = "cls_webcam"
ENGINE_KEY = "cls_live_engine"  # session state: (model key, FrameClassifier) of this browser tab
WAIT_KEY = "cls_live_waiting_since"  # session state: when the stream started waiting for video
PROBE_KEY = "cls_camera_probe"
SNAPSHOT_KEY = "cls_live_snapshot"
ANSWER_KEY = "cls_live_answer"  # the container holding the live answer as text (tests look for it)
CONNECT_PATIENCE = 20.0  # seconds without a single frame before the page says the connection failed
POLL_SECONDS = 0.5
FALLBACK_LABEL = "The video does not start? Take a snapshot instead"
SNAPSHOT_LABEL = "Take a snapshot instead"
CONSTRAINTS = {"video": {"width": {"ideal": 640}, "height": {"ideal": 480}, "frameRate": {"ideal": 30, "max": 30}},
               "audio": False}

INSECURE = ("Browsers only give a web page the camera over https:// or on this computer (localhost), and this "
            "page was opened as {url}. Open CNN Lab as {local} on the computer that runs it, serve it over https, "
            "or use the 'Upload photos' tab.")
NO_MEDIA = "This browser does not offer a camera to web pages; use the 'Upload photos' tab instead."
NO_CAMERA = ("No camera was found on this computer: plug one in and reload the page, or use the 'Upload photos' "
             "tab.")
DENIED = ("The browser blocked the camera for this site: allow it (the camera icon in the address bar or the site "
          "settings), then reload the page.")
NO_WEBRTC = ("Live video is not available on this CNN Lab server ({reason}): install it with `pip install "
             "streamlit-webrtc`. Snapshots below work without it.")
NO_CONNECTION = ("The video connection did not open within {seconds:.0f} s. Over a network, a firewall or VPN can "
                 "block it: open CNN Lab on the computer that runs it, or ask the person running it to set "
                 "CNNLAB_ICE_SERVERS to a STUN/TURN server. Snapshots below still work.")

# Runs in the page (not sandboxed): reports what the browser allows, and again when the permission or devices change.
_PROBE_JS = """
export default function(component) {
  const { setStateValue } = component;
  const media = navigator.mediaDevices;
  let done = false;
  const report = async () => {
    const out = { secure: window.isSecureContext === true, media: !!(media && media.getUserMedia),
                  cameras: null, permission: null };
    try {
      if (media && media.enumerateDevices) {
        out.cameras = (await media.enumerateDevices()).filter((d) => d.kind === "videoinput").length;
      }
    } catch (e) {}
    try {
      if (navigator.permissions) {
        const status = await navigator.permissions.query({ name: "camera" });
        out.permission = status.state;
        status.onchange = report;
      }
    } catch (e) {}
    if (!done) setStateValue("probe", out);
  };
  report();
  if (media && media.addEventListener) media.addEventListener("devicechange", report);
  return () => {
    done = true;
    if (media && media.removeEventListener) media.removeEventListener("devicechange", report);
  };
}
"""
_probe_component = st.components.v2.component("cnnlab_camera_probe", js=_PROBE_JS)


# ---------------------------------------------------------------- what can work here


def rtc_configuration() -> dict[str, Any]:
    """ICE servers for both ends: none by default (this computer or the local network, fully offline).

    ``CNNLAB_ICE_SERVERS`` may hold STUN/TURN URLs separated by commas, or a JSON list of
    ``{"urls", "username", "credential"}`` objects, for a server reached over the internet.
    """
    text = os.environ.get("CNNLAB_ICE_SERVERS", "").strip()
    if not text:
        return {"iceServers": []}
    if text.startswith("["):
        try:
            servers = json.loads(text)
        except ValueError as err:
            raise UserError(f"CNNLAB_ICE_SERVERS is not a valid JSON list of ICE servers ({err}).") from None
        return {"iceServers": [s for s in servers if isinstance(s, dict) and s.get("urls")]}
    return {"iceServers": [{"urls": [u.strip() for u in text.split(",") if u.strip()]}]}


def secure_origin(url: str | None) -> bool | None:
    """Whether a browser lets a page at ``url`` use the camera (https or this computer); None when unknown."""
    if not url:
        return None
    parts = urlsplit(url)
    if parts.scheme == "https":
        return True
    host = (parts.hostname or "").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def camera_problem(url: str | None, probe: dict[str, Any] | None) -> tuple[str, bool] | None:
    """Why the camera cannot work here and whether a snapshot still can; None when nothing is known to stop it.

    Without a secure context the browser offers no camera at all, so snapshots cannot work either; a
    missing camera or a blocked permission can be fixed (the snapshot widget then asks again).
    """
    probe = probe or {}
    if probe.get("secure") is False or (not probe and secure_origin(url) is False):
        port = urlsplit(url).port if url else None
        local = f"http://localhost:{port}" if port else "http://localhost"
        return INSECURE.format(url=url or "a plain http:// address", local=local), False
    if probe.get("media") is False:
        return NO_MEDIA, False
    if probe.get("permission") == "denied":
        return DENIED, True
    if probe.get("cameras") == 0:
        return NO_CAMERA, True
    return None


def _probe() -> dict[str, Any] | None:
    """What the browser reported about its camera (None until it has answered, e.g. on the first run)."""
    result = _probe_component(key=PROBE_KEY, height=0, on_probe_change=lambda: None)
    value = result.get("probe") if result is not None else None
    return value if isinstance(value, dict) else None


# ---------------------------------------------------------------- the stream


def load_webrtc() -> Any:
    """The ``streamlit_webrtc`` module, imported so that it survives TensorFlow having been loaded first.

    TensorFlow's framework library exports BoringSSL's ``EVP_*`` functions, which then shadow the OpenSSL that
    ``pylibsrtp`` (aiortc's SRTP) links in statically: importing it after TensorFlow crashes the process
    (segmentation fault in ``srtp_init``). ``RTLD_DEEPBIND`` makes that one library use its own symbols.
    """
    if "pylibsrtp" not in sys.modules and hasattr(os, "RTLD_DEEPBIND"):
        flags = sys.getdlopenflags()
        sys.setdlopenflags(flags | os.RTLD_DEEPBIND)
        try:
            import pylibsrtp  # noqa: F401
        finally:
            sys.setdlopenflags(flags)
    import streamlit_webrtc

    return streamlit_webrtc


def _classifier(model_key: str, predictor: Any) -> FrameClassifier:
    """This tab's live classifier, replaced (and the old worker stopped) when the model changes."""
    held = st.session_state.get(ENGINE_KEY)
    if held is not None and held[0] == model_key:
        return held[1]
    if held is not None:
        held[1].close(timeout=2.0)
    classifier = FrameClassifier(predictor)
    st.session_state[ENGINE_KEY] = (model_key, classifier)
    return classifier


def live_webcam(predictor: Any, model_key: str, threshold: float, top_k: int, gradcam: tuple[bool, float]) -> None:
    """The live-webcam tab: the stream with answers drawn in, the answer as text, and the snapshot fallback."""
    problem = camera_problem(st.context.url, _probe())
    if problem is not None:
        sentence, snapshots_work = problem
        st.warning(sentence)
        if snapshots_work:
            with st.expander(SNAPSHOT_LABEL, expanded=True):
                snapshot_fallback(predictor, model_key, threshold, top_k)
        return
    try:
        webrtc = load_webrtc()
    except (ImportError, OSError) as err:  # a broken or partial install: aiortc, av or their native libraries
        st.warning(NO_WEBRTC.format(reason=f"{type(err).__name__}: {err}"))
        with st.expander(SNAPSHOT_LABEL, expanded=True):
            snapshot_fallback(predictor, model_key, threshold, top_k)
        return
    classifier = _classifier(model_key, predictor)
    on, alpha = gradcam
    classifier.configure(top_k=top_k, threshold=threshold, gradcam=on, alpha=alpha if on else 0.45)
    with user_errors():
        stream(webrtc, classifier)
        live_panel()
    with st.expander(FALLBACK_LABEL, expanded=False):
        snapshot_fallback(predictor, model_key, threshold, top_k)


def stream(webrtc: Any, classifier: FrameClassifier) -> None:
    """The WebRTC component: camera frames in, frames with the answer drawn in back."""
    explain("Press Start and allow the camera: the answer is drawn into the video and updates as fast as the model "
            "runs. Nothing is recorded; frames go to this CNN Lab server only.",
            "Press Start, allow the camera, and show something to the model.")
    webrtc.webrtc_streamer(
        key=STREAM_KEY,
        mode=webrtc.WebRtcMode.SENDRECV,
        rtc_configuration=rtc_configuration(),
        media_stream_constraints=CONSTRAINTS,
        video_frame_callback=video_frame_callback(classifier),
        async_processing=True,
        video_html_attrs={"autoPlay": True, "controls": False, "muted": True, "style": {"width": "100%"}},
        translations={"start": "Start the webcam", "stop": "Stop", "select_device": "Camera",
                      "media_api_not_available": NO_MEDIA, "device_not_available": NO_CAMERA,
                      "device_access_denied": DENIED, "device_ask_permission": "Allow the camera in your browser."},
    )


def _stream_state() -> tuple[bool, bool]:
    """(playing, signalling) of this tab's stream, from the context streamlit-webrtc keeps in session state."""
    ctx = st.session_state.get(STREAM_KEY)
    state = getattr(ctx, "state", None)
    return bool(getattr(state, "playing", False)), bool(getattr(state, "signalling", False))


@st.fragment(run_every=POLL_SECONDS)
def live_panel() -> None:
    """The latest answer as text and the live numbers, refreshed while the video runs (the page's only poller)."""
    held = st.session_state.get(ENGINE_KEY)
    if held is None:
        return
    playing, signalling = _stream_state()
    stats = held[1].snapshot()
    now = time.monotonic()
    waiting = (playing or signalling) and stats.frames_seen == 0
    since = st.session_state.get(WAIT_KEY) if waiting else None
    if waiting and since is None:
        since = st.session_state[WAIT_KEY] = now
    elif not waiting:
        st.session_state.pop(WAIT_KEY, None)
    settings = held[1].settings
    render_live(stats, settings.threshold, playing or signalling, None if since is None else now - since)


def render_live(stats: LiveStats, threshold: float, active: bool, waited: float | None) -> None:
    """The answer line and its numbers for one snapshot of the classifier (tested with canned snapshots)."""
    with st.container(key=ANSWER_KEY):
        if stats.error:
            st.error(stats.error)
        for note in stats.notes:
            st.info(note)
        if waited is not None and waited >= CONNECT_PATIENCE:
            st.warning(NO_CONNECTION.format(seconds=CONNECT_PATIENCE))
        result = stats.result
        if not active or result is None:
            st.markdown("**Live answer:** —")
            explain("Start the webcam: the model's answer appears here and in the video." if not active
                    else "Waiting for the first frames from the camera...")
            return
        verdict = result.verdict(threshold)
        sure = f" · {result.confidence:.0%} sure" if result.sure(threshold) else ""
        st.markdown(f"**Live answer:** {verdict}{sure}")
        explain(f"{stats.answers_per_second:.1f} answers/s from {stats.frames_per_second:.0f} frames/s of video; "
                f"an answer is {stats.latency_ms:.0f} ms behind its frame ({stats.inference_ms:.0f} ms in the "
                f"model). {stats.frames_dropped} frames were skipped so the answer keeps up with the camera.",
                f"The model answers {stats.answers_per_second:.0f} times a second.")


# ---------------------------------------------------------------- snapshots when the video cannot run


@st.cache_data(show_spinner=False, max_entries=16)
def _classify_snapshot(model_key: str, data: bytes, _predictor: Any) -> Any:
    """One snapshot classified by one model (cached: reruns and threshold changes do not predict again)."""
    from core.serving.classify import classify_photos

    return classify_photos(_predictor, [("snapshot", data)])[0]


def snapshot_fallback(predictor: Any, model_key: str, threshold: float, top_k: int) -> None:
    """A still picture from the camera (works without WebRTC) with its verdict and top-k bars."""
    shot = st.camera_input("Take a picture", key=SNAPSHOT_KEY)
    if shot is None:
        explain("A single picture needs no video connection: allow the camera, then press 'Take photo'.")
        return
    with user_errors():
        result = _classify_snapshot(model_key, shot.getvalue(), predictor)
        if not result.ok:
            st.error(result.error)
            return
        if result.sure(threshold):
            st.success(f"### {result.verdict(threshold)}\n{result.confidence:.0%} sure")
        else:
            st.warning(f"### Not sure\nMaybe **{result.label}** ({result.confidence:.0%}), below your "
                       f"{threshold:.0%} threshold.")
        st.plotly_chart(top_k_figure(result.top(top_k), threshold=threshold, teacher_mode=teacher_mode()),
                        key="cls_live_snapshot_topk", config={"displayModeBar": False})
        explain("The model's most likely classes for your picture; the dashed line is your 'not sure' threshold.")
