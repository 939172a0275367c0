"""Evaluate: how good is a finished model, where does it go wrong, and how did it get there?

Metric cards, the clickable confusion matrix with the images of a cell, the worst mistakes, per-class
scores, the training curves with the overfitting onset, an epoch-rewind slider, every prediction in a
table, and export downloads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core.errors import UserError
from core.explain.comparison import (
    EpochPredictions,
    Predictions,
    display_names,
    load_epoch_predictions,
    load_predictions,
)
from core.explain.confusion import cell_label, cell_members, cell_options
from core.explain.metrics import classification_metrics, confusion_matrix, most_confused
from core.plots.evaluation import (
    confidence_figure,
    confusion_matrix_figure,
    per_class_figure,
    selected_cell,
    top_k_figure,
)
from core.training.results import evaluate_unfinished
from ui.common import advanced, explain, metric_card, run_picker, source_name, teacher_mode, user_errors
from ui.data_checks import set_aside_caption
from ui.engine import get_manager, get_predictor, get_store
from ui.gallery import (
    SplitImages,
    Tile,
    data_url,
    for_display,
    gradcam_controls,
    gradcam_image,
    gradcam_tiles,
    image_grid,
)
from ui.repro import repro_section
from ui.verdicts import show_run_warnings, snapshot_reading

MAX_TABLE_ROWS = 1000  # thumbnails are drawn for at most this many rows at once
TEST_VIEW = "Test set (final model)"
REWIND_VIEW = "Rewind training (validation set)"


@dataclass(frozen=True)
class View:
    """The predictions the page shows: the final model on the test set, or the model after epoch k on validation."""

    preds: Predictions
    split: str  # "test" or "val"
    epoch: int | None
    metrics: dict[str, Any]

    @property
    def where(self) -> str:
        if self.epoch is not None:
            return f"validation images after epoch {self.epoch}"
        return "test images" if self.split == "test" else "validation images (this dataset has no test split)"


@dataclass(frozen=True)
class RunData:
    """What the page needs from the run store for one run."""

    run_id: str
    record: Any
    class_names: list[str]
    test: Predictions
    epochs: EpochPredictions | None


# ---------------------------------------------------------------- loading


def class_names_of(record: Any) -> list[str]:
    """The run's class names: its result, else labels.json in its folder."""
    names = (record.result or {}).get("classes")
    if names:
        return [str(n) for n in names]
    path = get_store().run_dir(record.run_id) / "labels.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"Run {record.run_id} has no class list (labels.json): it may not have finished.") from err
    return [str(n) for n in (data.get("classes", data) if isinstance(data, dict) else data)]


def unfinished_run_evaluated(run_id: str) -> bool:
    """An interrupted run has no test result until asked: offer to score the model its checkpoint kept."""
    record = get_store().get(run_id)
    if record is None or record.status != "interrupted" or (record.result or {}).get("accuracy") is not None:
        return True
    st.info(f"Run {record.name or run_id} was interrupted before it was evaluated. Its checkpoint keeps the model "
            "it had learnt: score that model on the test images now, or resume the run on the Train page.")
    if st.button("Evaluate the model it kept", key="eval_unfinished", type="primary", icon=":material/fact_check:"):
        with user_errors(), st.spinner("Scoring the kept model on the test images…"):
            evaluate_unfinished(get_store(), run_id)
            st.rerun()
    return False


def load_run(run_id: str) -> RunData:
    """The record, class names and saved predictions of a run; UserError when something is missing."""
    store = get_store()
    record = store.get(run_id)
    if record is None:
        raise UserError(f"There is no run '{run_id}' any more: it may have been deleted.")
    test = load_predictions(store, run_id)
    names = class_names_of(record)
    if test.probs.ndim != 2 or test.probs.shape[1] != len(names):
        raise UserError(f"The saved predictions of run {run_id} do not match its {len(names)} classes; "
                        "re-run the training.")
    return RunData(run_id, record, names, test, load_epoch_predictions(store, run_id))


def choose_view(data: RunData) -> View:
    """The 'test set / rewind training' switch and the epoch slider (the epoch rewind)."""
    mode = TEST_VIEW
    if data.epochs is not None and data.epochs.epochs >= 1:
        mode = st.segmented_control(
            "Predictions shown", [TEST_VIEW, REWIND_VIEW], default=TEST_VIEW, required=True, key="eval_view"
        ) or TEST_VIEW
    if mode == TEST_VIEW:
        preds = data.test
        # A dataset without a test split is scored on its validation split instead.
        split = "val" if (data.record.result or {}).get("evaluated_on") == "validation" else "test"
        return View(preds, split, None, classification_metrics(preds.labels, preds.probs, data.class_names))
    last = data.epochs.epochs
    clamp_state("eval_epoch", 1, last)
    epoch = last if last == 1 else st.slider(
        "Epoch", 1, last, last, key="eval_epoch",
        help="Drag back in time: the numbers, the confusion matrix and the mistakes as they were after this epoch.",
    )
    explain(
        f"Rewind: everything below shows the model as it was after epoch {epoch} of {last}, judged on the "
        "validation images (the test set is only used once, at the end).",
        f"Time machine: this is how the model answered after epoch {epoch} of {last}.",
    )
    preds = data.epochs.at(epoch)
    return View(preds, "val", epoch, classification_metrics(preds.labels, preds.probs, data.class_names))


def clamp_state(key: str, low: int, high: int) -> None:
    """Keep a slider's remembered value inside its range when another run (with other limits) is shown."""
    value = st.session_state.get(key)
    if isinstance(value, (int, float)) and not low <= value <= high:
        st.session_state[key] = min(max(int(value), low), high)


# ---------------------------------------------------------------- numbers


def metric_cards(view: View) -> None:
    """Accuracy and weighted/macro precision, recall, F1, each with its one-sentence meaning.

    Teacher mode keeps the first row, in plain words, and folds the macro scores and the loss away.
    """
    m, where, plain = view.metrics, view.where, teacher_mode()
    top = [
        ("Accuracy", m["accuracy"],
         f"How often the model is right on {where} it never trained on ({m.get('n_images', len(view.preds))} images).",
         f"Out of 100 new pictures, about {m['accuracy'] * 100:.0f} are named correctly."),
        ("Precision (weighted)", m["precision"],
         "When the model names a class, how often that answer is right, averaged over classes by their size.",
         "When the model says 'this is a 3', how often it really is a 3."),
        ("Recall (weighted)", m["recall"],
         "Of the images of each class, how many the model finds, averaged over classes by their size.",
         "Of all the pictures of a 3, how many the model finds."),
        ("F1 (weighted)", m["f1"],
         "One score that is high only when both precision and recall are high (weighted by class size).",
         "One mark for both: high only when the model is right when it answers and misses little."),
    ]
    for col, (label, value, text, teacher_text) in zip(st.columns(4), top):
        with col:
            metric_card(label, f"{value:.1%}", teacher_text if plain else text)
    bottom = [
        ("Precision (macro)", f"{m['macro_precision']:.1%}",
         "Precision with every class counting the same, so a rare class matters as much as a common one."),
        ("Recall (macro)", f"{m['macro_recall']:.1%}",
         "Recall with every class counting the same: low when the model ignores some class."),
        ("F1 (macro)", f"{m['macro_f1']:.1%}",
         "The balanced score with every class counting the same; the fairest single number on uneven data."),
        ("Loss", f"{m.get('loss', float('nan')):.3f}",
         "Average surprise of the model at the true answer (cross-entropy): lower means surer and more right."),
    ]
    with advanced("More numbers: macro scores and loss"):
        for col, (label, value, text) in zip(st.columns(4), bottom):
            with col:
                metric_card(label, value, text)


# ---------------------------------------------------------------- galleries


def caption_for(data: RunData, view: View, i: int) -> str:
    """'true 3 · predicted 8 · 97 %' for prediction row i."""
    p = view.preds
    t, k = int(p.labels[i]), int(p.preds[i])
    names = data.class_names
    head = f"{names[t]} ✓" if t == k else f"true {names[t]} · predicted {names[k]}"
    return f"{head} · {p.confidences[i]:.0%}"


def gallery(data: RunData, view: View, images: SplitImages, rows: np.ndarray, key: str,
            gradcam: tuple[bool, float]) -> None:
    """A grid of prediction rows with captions, optionally with Grad-CAM of the predicted class."""
    if images.error:
        st.warning(images.error)
    tiles = [Tile(images.image(int(i)), caption_for(data, view, int(i))) for i in rows]
    on, alpha = gradcam
    if on and images.available:
        with user_errors(), st.spinner("Computing Grad-CAM heat maps..."):
            predictor = get_predictor(data.run_id)
            tiles = gradcam_tiles(predictor, tiles, [int(view.preds.preds[i]) for i in rows], alpha)
    image_grid(tiles, columns=6)


def _on_cell_click() -> None:
    """A click on the confusion matrix picks that cell in the 'true -> predicted' box (runs before the rerun)."""
    state = st.session_state.get("eval_cm_chart")
    cell = selected_cell(state)
    if cell is not None:
        st.session_state["eval_cell"] = cell


def confusion_section(data: RunData, view: View, images: SplitImages, gradcam: tuple[bool, float]) -> None:
    """The clickable confusion matrix, the cell picker and the images of the chosen cell."""
    names, n = data.class_names, len(data.class_names)
    cm = confusion_matrix(view.preds.labels, view.preds.preds, n)
    normalised = st.segmented_control(
        "Colour by", ["Counts", "Share of each true class"], default="Counts", required=True, key="eval_cm_mode"
    ) == "Share of each true class"
    options: list[Any] = [None, *cell_options(cm, names)]
    if st.session_state.get("eval_cell") not in options:
        chosen = st.session_state.get("eval_cell")
        if isinstance(chosen, tuple) and len(chosen) == 2 and all(0 <= c < n for c in chosen):
            options.append(chosen)
        else:
            st.session_state["eval_cell"] = None
    cell = st.session_state.get("eval_cell")
    fig = confusion_matrix_figure(cm, names, normalize=normalised, selected=cell,
                                             teacher_mode=teacher_mode())
    st.plotly_chart(fig, key="eval_cm_chart", on_select=_on_cell_click, selection_mode="points", width="content",
                    config={"displayModeBar": False})
    explain(
        f"Rows are the true classes of the {view.where}, columns the model's answers; the diagonal holds the right "
        "answers. Hover a cell for its counts and rates, click it to see its images.",
        "Each row is what the picture really shows, each column what the model said. "
        "Click a square to see those pictures.",
    )
    confused = most_confused(cm, names)
    if confused:
        explain("Most often confused: " + ", ".join(f"{t} → {p} ({c})" for t, p, c in confused[:5]) + ".")
    st.selectbox(
        "Images in the cell", options, key="eval_cell",
        format_func=lambda c: ("choose a cell (or click the matrix)" if c is None
                               else cell_label(c, names, int(cm[c]))),
    )
    if cell is None:
        return
    rows = cell_members(view.preds.labels, view.preds.probs, *cell)
    if rows.size == 0:
        st.info(f"No {view.where} fall in this cell: the model never answered {names[cell[1]]} for a {names[cell[0]]}.")
        return
    shown = rows[:60]
    explain(f"{rows.size} image{'s' if rows.size != 1 else ''}, the most surprising for the model first"
            + (f" (showing {shown.size})." if shown.size < rows.size else "."))
    gallery(data, view, images, shown, "eval_cell_gallery", gradcam)


def mistakes_section(data: RunData, view: View, images: SplitImages, gradcam: tuple[bool, float]) -> None:
    """The misclassified images, highest loss first (confident and wrong at the top)."""
    p = view.preds
    wrong = np.flatnonzero(~p.correct)
    if wrong.size == 0:
        st.success(f"The model got every one of the {len(p)} {view.where} right.")
        return
    order = wrong[np.argsort(-p.losses[wrong], kind="stable")]
    most = min(120, int(order.size))
    clamp_state("eval_mistakes_n", 1, most)
    count = st.slider("How many to show", 1, most, min(24, most), key="eval_mistakes_n") if most > 6 else most
    explain(
        f"{order.size} of {len(p)} {view.where} are wrong. Sorted by loss: the top ones are those the model was "
        "most sure about and still got wrong, often label errors or truly ambiguous pictures.",
        "The pictures the model got wrong, the most confidently wrong first.",
    )
    gallery(data, view, images, order[: int(count)], "eval_mistakes", gradcam)


def per_class_section(data: RunData, view: View) -> None:
    """Per-class precision/recall/F1 table and bars, and right-vs-wrong confidence."""
    rows = view.metrics["per_class"]
    table = pd.DataFrame(rows).rename(columns={"label": "class", "f1": "F1", "support": "images"})
    st.dataframe(
        table, hide_index=True, key="eval_per_class",
        column_config={
            k: st.column_config.ProgressColumn(k, format="percent", min_value=0.0, max_value=1.0)
            for k in ("precision", "recall", "F1")
        },
    )
    explain("Precision: when the model says this class, how often it is right. Recall: how many images of this class "
            "it finds. F1 balances the two. 'images' is how many of the evaluated images belong to the class.")
    st.plotly_chart(per_class_figure(rows, teacher_mode=teacher_mode()), key="eval_per_class_chart")
    explain("A short bar points at a class the model struggles with: look for it in the confusion matrix.")
    p = view.preds
    st.plotly_chart(confidence_figure(p.confidences, p.correct, teacher_mode=teacher_mode()),
                    key="eval_confidence_chart")
    explain("How sure the model was, for right (green) and wrong (red) answers: a good model is rarely very sure "
            "and wrong, so the red bars should sit on the left.")


def curves_section(data: RunData, view: View) -> None:
    """The training curves with the overfitting onset and the verdict on them, and the rewind epoch marked."""
    from core.plots.training import training_curves

    snap = get_manager().snapshot(data.run_id)
    if snap is None or not snap.history.get("loss"):
        st.info("This run recorded no training history.")
        return
    reading = snapshot_reading(snap)
    fig = training_curves(snap.history, snap.batch_history, onset=reading.onset, epoch_marker=view.epoch,
                          teacher_mode=teacher_mode())
    st.plotly_chart(fig, key="eval_curves")
    for verdict in reading.verdicts:
        explain(verdict.sentence + (f" {verdict.advice}" if verdict.advice else ""))
    explain("Training curves: blue is how the model does on the images it learns from, orange on images it never "
            "trained on." + (f" The dotted line marks epoch {view.epoch}, the one shown above." if view.epoch else ""))


# ---------------------------------------------------------------- every prediction


@st.cache_data(show_spinner=False, max_entries=16)
def _thumbnails(cache_key: str, rows: tuple[int, ...], _images: SplitImages) -> list[str | None]:
    """PNG data URLs of the images of some prediction rows (cached per run, split and rows)."""
    out: list[str | None] = []
    for i in rows:
        img = _images.image(i)
        out.append(data_url(img, 48) if img is not None else None)
    return out


def predictions_frame(data: RunData, view: View) -> pd.DataFrame:
    """One row per evaluated image: file, true, predicted, confidence, loss, correct."""
    p, names = view.preds, data.class_names
    return pd.DataFrame({
        "row": np.arange(len(p)),
        "file": display_names(p.files),
        "path": p.files,
        "true": [names[int(t)] for t in p.labels],
        "predicted": [names[int(k)] for k in p.preds],
        "confidence": p.confidences.astype(float),
        "loss": p.losses.astype(float),
        "correct": p.correct.astype(bool),
    })


def filter_predictions(frame: pd.DataFrame, classes: list[str], which: str, low: float, high: float) -> pd.DataFrame:
    """Rows whose true or predicted class is in ``classes`` (all when empty), right/wrong/all, confidence in range."""
    keep = frame["confidence"].between(low, high)
    if classes:
        keep &= frame["true"].isin(classes) | frame["predicted"].isin(classes)
    if which == "Right":
        keep &= frame["correct"]
    elif which == "Wrong":
        keep &= ~frame["correct"]
    return frame[keep]


def predictions_section(data: RunData, view: View, images: SplitImages, gradcam: tuple[bool, float]) -> None:
    """Every prediction: filters, a sortable table with thumbnails, CSV, and the selected row in detail."""
    frame = predictions_frame(data, view)
    with advanced("Filters"):
        cols = st.columns([3, 2, 3])
        classes = cols[0].multiselect("Class (true or predicted)", data.class_names, key="eval_tbl_classes")
        which = cols[1].segmented_control("Answers", ["All", "Right", "Wrong"], default="All", required=True,
                                          key="eval_tbl_which") or "All"
        low, high = cols[2].slider("Confidence", 0.0, 1.0, (0.0, 1.0), 0.01, key="eval_tbl_conf")
    shown = filter_predictions(frame, classes, which, low, high).sort_values("loss", ascending=False)
    explain(f"{len(shown)} of {len(frame)} {view.where}. Click a column header to sort, a row to see it large. "
            "Loss is how surprised the model was by the true answer.")
    table = shown.head(MAX_TABLE_ROWS).copy()
    if len(shown) > MAX_TABLE_ROWS:
        st.caption(f"Showing the {MAX_TABLE_ROWS} highest-loss rows; narrow the filters or download the CSV for all.")
    if images.available:
        key = f"{data.run_id}:{view.split}"
        table.insert(0, "image", _thumbnails(key, tuple(int(r) for r in table["row"]), images))
    event = st.dataframe(
        table, hide_index=True, key=f"eval_table_{view.split}_{view.epoch}", on_select="rerun",
        selection_mode="single-row",
        column_order=[c for c in ("image", "file", "true", "predicted", "confidence", "loss", "correct") if c in table],
        column_config={
            "image": st.column_config.ImageColumn("image", width="small"),
            "confidence": st.column_config.ProgressColumn("confidence", format="percent", min_value=0.0, max_value=1.0),
            "loss": st.column_config.NumberColumn("loss", format="%.3f"),
            "correct": st.column_config.CheckboxColumn("correct"),
        },
    )
    st.download_button(
        "Download as CSV", shown.drop(columns=["row"]).to_csv(index=False).encode(), key="eval_tbl_csv",
        file_name=f"{data.run_id}-{view.split}{'-epoch' + str(view.epoch) if view.epoch else ''}-predictions.csv",
        mime="text/csv", on_click="ignore",
    )
    selected = list(getattr(getattr(event, "selection", None), "rows", []) or [])
    if selected and selected[0] < len(table):
        prediction_detail(data, view, images, int(table.iloc[selected[0]]["row"]), gradcam)


def prediction_detail(data: RunData, view: View, images: SplitImages, i: int, gradcam: tuple[bool, float]) -> None:
    """One prediction large: the image, its Grad-CAM and the top-k probabilities."""
    p, names = view.preds, data.class_names
    st.markdown(f"**{display_names(p.files)[i]}** · {caption_for(data, view, i)}")
    left, right = st.columns([1, 1])
    img = images.image(i)
    with left:
        if img is None:
            st.caption(images.error or "The image is unavailable.")
        else:
            on, alpha = gradcam
            shown = for_display(img, 320)
            if on:
                with user_errors():
                    shown = gradcam_image(get_predictor(data.run_id), img, int(p.preds[i]), alpha, 320)
            st.image(shown, width="stretch")
    with right:
        order = np.argsort(-p.probs[i])[: min(5, len(names))]
        top = [(names[int(c)], float(p.probs[i, c])) for c in order]
        st.plotly_chart(top_k_figure(top, teacher_mode=teacher_mode()), key="eval_detail_topk")
        explain(f"The model's top {len(top)} answers for this image; the true class is {names[int(p.labels[i])]}.")


# ---------------------------------------------------------------- export


EXPORT_FORMATS = {
    "keras": "Keras model (.keras)",
    "tflite": "TensorFlow Lite, float32 (.tflite)",
    "tflite-int8": "TensorFlow Lite, dynamic-range int8 (.tflite)",
    "savedmodel": "TensorFlow SavedModel (.zip)",
}


def export_section(data: RunData) -> None:
    """Export the run's model; the file is reloaded and checked before the download is offered."""
    from core.serving.export import export_bytes

    fmt = st.selectbox("Format", list(EXPORT_FORMATS), format_func=EXPORT_FORMATS.__getitem__, key="eval_export_fmt")
    explain("Each export is a zip with the model, labels.txt and preprocessing.json (input size and pixel range). "
            "Before the download is offered the model is loaded back and its predictions compared with the run's.")
    if st.button("Prepare the download", key="eval_export_go"):
        with user_errors(), st.spinner("Exporting and checking the exported model..."):
            name, payload, report = export_bytes(get_store(), data.run_id, fmt)
            st.session_state["eval_export"] = {"run_id": data.run_id, "fmt": fmt, "name": name, "data": payload,
                                               "report": report}
    prepared = st.session_state.get("eval_export")
    if not prepared or prepared["run_id"] != data.run_id or prepared["fmt"] != fmt:
        return
    report = prepared["report"]
    explain(f"Reloaded and checked on {report['checked_images']} images: the largest difference from the run's own "
            f"probabilities is {report['max_abs_diff']:.1e} (allowed {report['tolerance']:g}); the top answer agrees "
            f"on {report['top1_agreement']:.0%} of them. Size {report['bytes'] / 1e6:.1f} MB.")
    st.download_button(f"Download {prepared['name']}", prepared["data"], file_name=prepared["name"],
                       mime="application/zip", key="eval_export_dl", on_click="ignore")


# ---------------------------------------------------------------- the page


def header(data: RunData) -> None:
    """Which run this is, in one line."""
    r = data.record
    cfg = r.config
    st.markdown(f"**{r.name or r.run_id}** · model `{cfg.model.name}` · data **{source_name(cfg.data)}** · "
                f"{len(data.class_names)} classes · image size {cfg.image_size} px · {len(data.test)} test images")


def main() -> None:
    st.title("Evaluate")
    explain("How good is a finished model, and where does it go wrong?")
    run_id = run_picker("Run", key="eval_run", statuses=("finished", "stopped", "interrupted"))
    if run_id is None:
        st.info("No finished run yet: train one on the Train page, then come back here.")
        st.page_link("pages/train.py", label="Go to Train", icon="🏋️")
        return
    if not unfinished_run_evaluated(run_id):
        return
    data = None
    with user_errors():
        data = load_run(run_id)
    if data is None:
        return
    header(data)
    view = choose_view(data)
    metric_cards(view)
    set_aside_caption(data.record.config, view.split)
    if view.epoch is None:  # the final model: is it learning at all, do validation and test agree
        show_run_warnings(get_manager().snapshot(run_id))
    images = SplitImages(data.record.config, view.split, view.preds.files)
    gradcam = gradcam_controls("eval")
    names = ["Confusion matrix", "Mistakes", "Per class", "Training curves", "Every prediction", "Export"]
    tabs = dict(zip(names, st.tabs(names, key="eval_tab", on_change="rerun")))
    with tabs["Confusion matrix"]:
        if tabs["Confusion matrix"].open:
            confusion_section(data, view, images, gradcam)
    with tabs["Mistakes"]:
        if tabs["Mistakes"].open:
            mistakes_section(data, view, images, gradcam)
    with tabs["Per class"]:
        if tabs["Per class"].open:
            per_class_section(data, view)
    with tabs["Training curves"]:
        if tabs["Training curves"].open:
            curves_section(data, view)
    with tabs["Every prediction"]:
        if tabs["Every prediction"].open:
            predictions_section(data, view, images, gradcam)
    if "Export" in tabs:
        with tabs["Export"]:
            if tabs["Export"].open:
                with advanced("Export the model"):
                    export_section(data)
    repro_section(run_id)


main()
