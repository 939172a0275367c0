"""Classify: show a model your own photos - upload one or many, or take a snapshot - and see what it says.

The answer comes with the top-k probabilities, a 'not sure' verdict below a threshold you set, the small
image the model actually saw and a Grad-CAM heat map. Input modes are tabs: uploads, a snapshot, and the
live webcam (``ui.webcam.live_webcam``, given the same arguments as the snapshot tab).
"""

from __future__ import annotations

import hashlib
from typing import Any

import pandas as pd
import streamlit as st

from core.data.images import IMAGE_EXTENSIONS
from core.plots.evaluation import top_k_figure
from core.serving.classify import PhotoResult, classify_photos, results_csv, results_rows
from ui.common import advanced, explain, run_picker, teacher_mode, user_errors
from ui.engine import get_predictor
from ui.gallery import data_url, for_display, gradcam_controls, gradcam_image

RUN_SOURCE = "A run from this lab"
FILE_SOURCE = "A model file"
PHOTO_TYPES = sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS)


# ---------------------------------------------------------------- the model


def choose_model() -> tuple[Any, str, str] | None:
    """(predictor, a key naming the model, a description) for a finished run or an uploaded model file."""
    source = st.segmented_control("Model", [RUN_SOURCE, FILE_SOURCE], default=RUN_SOURCE, required=True,
                                  key="cls_source") or RUN_SOURCE
    if source == FILE_SOURCE:
        return uploaded_model()
    run_id = run_picker("Run", key="cls_run", statuses=("finished", "stopped", "interrupted"))
    if run_id is None:
        st.info("No finished run yet: train one on the Train page, then come back to classify your photos.")
        st.page_link("pages/train.py", label="Go to Train", icon="🏋️")
        return None
    with user_errors(), st.spinner("Loading the model..."):
        predictor = get_predictor(run_id)
        return predictor, run_id, f"run {run_id}"
    return None


def uploaded_model() -> tuple[Any, str, str] | None:
    """A model file the user uploads (.keras, older .h5, a Teachable Machine or CNN Lab export)."""
    left, right = st.columns([2, 1])
    model_file = left.file_uploader(
        "Model file", type=["keras", "h5", "zip"], key="cls_model_file",
        help="A .keras file, an older Keras .h5 file, Teachable Machine's Keras export (keras_model.h5, or the "
             "zip as downloaded) or a CNN Lab export zip.",
    )
    labels_file = right.file_uploader("labels.txt (if separate)", type=["txt"], key="cls_labels_file")
    explain("Models are checked before loading: files with custom code (Lambda layers) are refused.")
    if model_file is None:
        return None
    data = model_file.getvalue()
    labels = labels_file.getvalue() if labels_file is not None else None
    digest = hashlib.sha256(data + b"\0" + (labels or b"")).hexdigest()[:16]
    with user_errors(), st.spinner("Loading the model..."):
        imported = _load_user_model(f"upload:{digest}", model_file.name, data, labels)
        for note in imported.notes:
            st.info(note)
        predictor = _predictor_for(f"upload:{digest}", imported)
        return predictor, f"upload:{digest}", f"{model_file.name} ({imported.describe()})"
    return None


@st.cache_resource(show_spinner=False, max_entries=2)
def _load_user_model(key: str, name: str, _data: bytes, _labels: bytes | None) -> Any:
    """One imported model per distinct upload (keyed by the files' hash): loading is slow, reruns are not."""
    from core.serving.model_import import load_user_model

    return load_user_model(_data, name, labels=_labels)


@st.cache_resource(show_spinner=False, max_entries=2)
def _predictor_for(key: str, _imported: Any) -> Any:
    """A thread-safe predictor around an imported model (raw pixels in, probabilities out)."""
    return _imported.predictor()


# ---------------------------------------------------------------- classifying


@st.cache_data(show_spinner=False, max_entries=128)
def _classify(model_key: str, name: str, data: bytes, _predictor: Any) -> PhotoResult:
    """One photo classified by one model (cached: reruns and threshold changes do not predict again)."""
    return classify_photos(_predictor, [(name, data)])[0]


def classify_uploads(model_key: str, predictor: Any, uploads: list[Any]) -> list[PhotoResult]:
    """Every uploaded photo classified; unreadable ones carry their error sentence."""
    return [_classify(model_key, f.name, f.getvalue(), predictor) for f in uploads]


def verdict_box(result: PhotoResult, threshold: float) -> None:
    """The answer in one line: sure, not sure, or none of these."""
    verdict = result.verdict(threshold)
    if result.sure(threshold):
        st.success(f"### {verdict}\n{result.confidence:.0%} sure")
    else:
        st.warning(f"### Not sure\nMaybe **{result.label}** ({result.confidence:.0%}), below your "
                   f"{threshold:.0%} threshold.")


def show_result(result: PhotoResult, predictor: Any, model_key: str, threshold: float, k: int,
                gradcam: tuple[bool, float], key: str) -> None:
    """One photo: the picture (with Grad-CAM), the verdict, the top-k bars and the image the model saw."""
    if not result.ok:
        st.error(result.error)
        return
    left, middle, right = st.columns([2, 2, 1])
    with left:
        picture = for_display(result.image, 480)
        on, alpha = gradcam
        if on:
            with user_errors():
                picture = gradcam_image(predictor, result.image, result.class_index, alpha, 480,
                                        seen=result.model_input)
        st.image(picture, caption=result.name, width="stretch")
        if on:
            explain(f"Grad-CAM: red regions pushed the model most towards '{result.label}'.")
    with middle:
        verdict_box(result, threshold)
        st.plotly_chart(top_k_figure(result.top(k), threshold=threshold, teacher_mode=teacher_mode()),
                        key=f"{key}_topk", config={"displayModeBar": False})
        explain(f"The model's {min(k, len(result.class_names))} most likely classes; the dashed line is your "
                "'not sure' threshold.", "How sure the model is about each answer.")
    with right:
        seen = result.model_input
        st.image(for_display(seen, 160), caption="what the model saw", width="stretch")
        h, w = (result.original_size or result.image.shape[:2])
        explain(f"Your {w}×{h} photo, squeezed to {seen.shape[1]}×{seen.shape[0]} pixels"
                f"{' in gray' if seen.shape[2] == 1 else ''}: all the model gets to look at.")


def batch_results(results: list[PhotoResult], predictor: Any, model_key: str, threshold: float, k: int,
                  gradcam: tuple[bool, float]) -> None:
    """Many photos: a table (thumbnail, verdict, top-k), a CSV download, and the chosen row in detail."""
    rows = results_rows(results, threshold, k)
    frame = pd.DataFrame(rows)
    frame.insert(0, "image", [data_url(r.image, 48) if r.ok else None for r in results])
    sure = sum(r.sure(threshold) for r in results)
    failed = sum(not r.ok for r in results)
    explain(f"{len(results)} photos: {sure} answered with confidence, {len(results) - sure - failed} not sure"
            + (f", {failed} could not be read" if failed else "") + ". Click a row to see it in detail.")
    event = st.dataframe(
        frame, hide_index=True, key="cls_batch_table", on_select="rerun", selection_mode="single-row",
        column_config={
            "image": st.column_config.ImageColumn("image", width="small"),
            **{f"probability {i + 1}": st.column_config.ProgressColumn(
                f"probability {i + 1}", format="percent", min_value=0.0, max_value=1.0) for i in range(k)},
            "sure": st.column_config.CheckboxColumn("sure"),
        },
    )
    st.download_button("Download the results as CSV", results_csv(results, threshold, k), file_name="classified.csv",
                       mime="text/csv", key="cls_batch_csv", on_click="ignore")
    picked = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    index = picked[0] if picked and picked[0] < len(results) else 0
    st.divider()
    show_result(results[index], predictor, model_key, threshold, k, gradcam, key="cls_batch_detail")


def upload_tab(predictor: Any, model_key: str, threshold: float, k: int, gradcam: tuple[bool, float]) -> None:
    """Upload one or many photos (any phone photo: JPEG, PNG, WebP, HEIC; EXIF rotation applied)."""
    uploads = st.file_uploader("Photos", type=PHOTO_TYPES, accept_multiple_files=True, key="cls_upload",
                               help="JPEG, PNG, WebP, HEIC and more; phone photos are turned upright automatically.")
    if not uploads:
        explain("Drop one photo to see the answer in detail, or many to get a table you can download.")
        return
    with st.spinner(f"Classifying {len(uploads)} photo{'s' if len(uploads) != 1 else ''}..."):
        results = classify_uploads(model_key, predictor, list(uploads))
    if len(results) == 1:
        show_result(results[0], predictor, model_key, threshold, k, gradcam, key="cls_single")
    else:
        batch_results(results, predictor, model_key, threshold, k, gradcam)


def snapshot_tab(predictor: Any, model_key: str, threshold: float, k: int, gradcam: tuple[bool, float]) -> None:
    """Take a picture with the computer's camera and classify it."""
    shot = st.camera_input("Take a picture", key="cls_camera")
    if shot is None:
        explain("Allow the browser to use the camera, then press 'Take photo'.")
        return
    result = _classify(model_key, "snapshot", shot.getvalue(), predictor)
    show_result(result, predictor, model_key, threshold, k, gradcam, key="cls_snapshot")


# ---------------------------------------------------------------- the page


def main() -> None:
    st.title("Classify")
    explain("Show a trained model your own photos and see what it answers, how sure it is, and what it looked at.")
    chosen = choose_model()
    if chosen is None:
        return
    predictor, model_key, description = chosen
    names = predictor.class_names
    st.markdown(f"**{len(names)} classes:** " + ", ".join(f"`{n}`" for n in names[:30])
                + (" ..." if len(names) > 30 else ""))
    left, right = st.columns([3, 1])
    threshold = left.slider("Say 'not sure' below this confidence", 0.0, 1.0, 0.6, 0.05, key="cls_threshold",
                            help="When the most likely class has a lower probability than this, the verdict is "
                                 "'not sure'.")
    with right:
        if st.session_state.get("cls_top_k", 1) > len(names):  # another model with fewer classes
            st.session_state["cls_top_k"] = len(names)
        k = int(st.number_input("Classes to show", 1, max(1, len(names)), min(3, len(names)), key="cls_top_k"))
    with advanced("Grad-CAM heat map"):
        gradcam = gradcam_controls("cls")
    explain(f"Model: {description}. A model always picks one of its {len(names)} classes, even for a photo of "
            "something else: the threshold is how you let it say 'I don't know'.")
    labels = ["Upload photos", "Take a snapshot", "Live webcam"]
    tabs = st.tabs(labels, key="cls_tab", on_change="rerun")
    with tabs[0]:
        if tabs[0].open:
            upload_tab(predictor, model_key, threshold, k, gradcam)
    with tabs[1]:
        if tabs[1].open:
            snapshot_tab(predictor, model_key, threshold, k, gradcam)
    with tabs[2]:
        if tabs[2].open:
            from ui.webcam import live_webcam  # streamlit-webrtc loads only when the tab opens

            live_webcam(predictor, model_key, threshold, k, gradcam)


main()
