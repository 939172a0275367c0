"""Compare: two or more runs side by side - scores, size, speed, curves, confusion matrices, disagreements.

By default the latest scratch CNN and the latest transfer-learning run on the same dataset, the
comparison a student makes first. A warning appears when the runs were not tested on the same images.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from core.errors import UserError
from core.explain.comparison import (
    Predictions,
    Speed,
    agreement_rate,
    comparability_warnings,
    default_selection,
    disagreements,
    load_predictions,
    measure_speed,
    summary_row,
)
from core.explain.metrics import confusion_matrix
from core.plots.evaluation import comparison_bars_figure, confusion_matrix_figure, overlay_curves_figure
from ui.common import explain, format_duration, run_label, source_name, status_dot, teacher_mode, user_errors
from ui.engine import get_manager, get_predictor, get_store, home_dir
from ui.gallery import SplitImages, Tile, gradcam_controls, gradcam_tiles, image_grid

STATUSES = ("finished", "stopped")
MAX_RUNS = 6
MAX_DISAGREEMENTS = 36


# ---------------------------------------------------------------- choosing runs


def pick_runs(records: list[Any]) -> list[Any]:
    """The multiselect of runs (default: latest scratch vs latest transfer on one dataset)."""
    labels = {r.run_id: f"{status_dot(r.status)} {run_label(r)}" for r in records}
    if "cmp_runs" not in st.session_state:
        st.session_state["cmp_runs"] = default_selection(records)
    st.session_state["cmp_runs"] = [r for r in st.session_state["cmp_runs"] if r in labels]
    chosen = st.multiselect("Runs to compare", list(labels), key="cmp_runs", format_func=labels.__getitem__,
                            max_selections=MAX_RUNS, placeholder="pick two or more runs")
    explain("Start with a CNN trained from scratch against a transfer-learning model on the same data: "
            "is borrowing ImageNet features worth it here?")
    by_id = {r.run_id: r for r in records}
    return [by_id[r] for r in chosen]


def load_all(records: list[Any]) -> tuple[list[Any], list[Predictions]]:
    """Each run's test predictions; a run whose files are missing is reported and left out."""
    kept, preds = [], []
    for record in records:
        try:
            preds.append(load_predictions(get_store(), record.run_id))
            kept.append(record)
        except UserError as err:
            st.error(str(err))
    return kept, preds


def short_names(records: list[Any]) -> list[str]:
    """Distinct short names for legends and captions (the run name, else its id)."""
    names, seen = [], set()
    for r in records:
        name = (r.name or r.run_id)[:28]
        while name in seen:
            name += "'"
        seen.add(name)
        names.append(name)
    return names


# ---------------------------------------------------------------- speed


@st.cache_resource(show_spinner=False)
def _speeds() -> dict[tuple[str, str], Speed]:
    """Measured speeds for the whole server: (home, run id) -> Speed (a run's model never changes)."""
    return {}


def cached_speed(record: Any) -> Speed | None:
    """The speed measured earlier for this run, if any."""
    return _speeds().get((str(home_dir()), record.run_id))


def speed_of(record: Any, images: SplitImages) -> Speed | None:
    """Measured through the run's Predictor on one of its test images (a noise image when none)."""
    key = (str(home_dir()), record.run_id)
    if key in _speeds():
        return _speeds()[key]
    try:
        predictor = get_predictor(record.run_id)
    except UserError as err:
        st.error(str(err))
        return None
    image = images.image(0) if images.available else None
    if image is None:
        side = max(int(predictor.image_size), 32)
        image = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    with st.spinner(f"Measuring the speed of {record.name or record.run_id}..."):
        _speeds()[key] = measure_speed(predictor.predict, image)
    return _speeds()[key]


# ---------------------------------------------------------------- sections


def scores_table(records: list[Any], names: list[str], speeds: list[Speed | None]) -> None:
    """Test accuracy, F1, parameters, training time, images/s and latency, one row per run."""
    rows = [summary_row(r, s) for r, s in zip(records, speeds)]
    for row, name in zip(rows, names):
        row["name"] = name
        row["dataset"] = source_name(row["dataset"])
        row["training time"] = format_duration(row["fit_seconds"])
    frame = pd.DataFrame(rows)
    same_data = frame["dataset"].nunique() == 1
    st.dataframe(
        frame, hide_index=True,
        column_order=["name", "model", *([] if same_data else ["dataset"]), "accuracy", "macro_f1", "params",
                      "training time", "train_images_per_second", "latency_ms", "predict_images_per_second"],
        column_config={
            "name": "run",
            "accuracy": st.column_config.NumberColumn("accuracy", format="percent"),
            "macro_f1": st.column_config.NumberColumn("macro F1", format="percent"),
            "params": st.column_config.NumberColumn("params", format="localized"),
            "train_images_per_second": st.column_config.NumberColumn("train images/s", format="%.0f"),
            "latency_ms": st.column_config.NumberColumn("latency (ms)", format="%.1f"),
            "predict_images_per_second": st.column_config.NumberColumn("predict images/s", format="%.0f"),
        },
    )
    explain(("All on " + frame["dataset"].iloc[0] + ". " if same_data else "")
            + "Accuracy and F1: how often each model is right on its test images (macro F1 counts every class the "
            "same). Params: the numbers the model learned or carries. Training time and train images/s: the cost of "
            "learning on this computer. Latency: the median time to classify one image through the saved model, "
            "measured here; predict images/s: the speed on a batch of 32.",
            "Higher accuracy and F1 are better; fewer parameters, shorter training and lower latency mean a smaller, "
            "faster model.")
    measured = [s for s in speeds if s is not None]
    # Always one caption here, so the redraw with the measured speeds replaces it (no stale element).
    st.caption("Measuring each model's speed (once per model, at the bottom of the page)..."
               if len(measured) < len(speeds) else
               f"Latency: median of {measured[0].repeats} single-image predictions on one test image, "
               "after a warm-up, on this computer (other work on it slows it down).")


def score_bars(records: list[Any], names: list[str]) -> None:
    """The test scores as grouped bars."""
    rows = [{**summary_row(r), "name": n} for r, n in zip(records, names)]
    st.plotly_chart(comparison_bars_figure(rows, teacher_mode=teacher_mode()), key="cmp_bars")
    explain("The same test scores as bars: a gap of a few points on a small test set can be chance.")


def curves(records: list[Any], names: list[str]) -> None:
    """Training (dotted) and validation (solid) curves of every run on one chart per metric."""
    histories = []
    for record, name in zip(records, names):
        snap = get_manager().snapshot(record.run_id)
        histories.append((name, dict(snap.history) if snap is not None else {}))
    left, right = st.columns(2)
    with left:
        st.plotly_chart(overlay_curves_figure(histories, "accuracy", teacher_mode=teacher_mode()),
                        key="cmp_curves_acc")
        explain("Accuracy per epoch: solid lines on validation images, dotted on training images.")
    with right:
        st.plotly_chart(overlay_curves_figure(histories, "loss", teacher_mode=teacher_mode()),
                        key="cmp_curves_loss")
        explain("Loss per epoch (lower is better): a validation line that turns up while the training line keeps "
                "falling is overfitting.")


def confusion_side_by_side(records: list[Any], names: list[str], preds: list[Predictions]) -> None:
    """Each run's confusion matrix, in columns."""
    normalised = st.segmented_control("Colour by", ["Counts", "Share of each true class"], default="Counts",
                                      required=True, key="cmp_cm_mode") == "Share of each true class"
    per_row = 2 if len(records) <= 4 else 3
    for start in range(0, len(records), per_row):
        cols = st.columns(per_row)
        for col, record, name, p in zip(cols, records[start:], names[start:], preds[start:]):
            classes = (record.result or {}).get("classes") or [str(i) for i in range(p.probs.shape[1])]
            cm = confusion_matrix(p.labels, p.preds, len(classes))
            fig = confusion_matrix_figure(cm, classes, normalize=normalised, title=name,
                                                     teacher_mode=teacher_mode())
            fig.update_layout(width=None, height=min(int(fig.layout.height), 560))  # fit the column
            with col:
                st.plotly_chart(fig, key=f"cmp_cm_{record.run_id}", config={"displayModeBar": False})
    explain("Rows are the true classes, columns the answers; the diagonal holds the right answers. Compare where the "
            "off-diagonal (wrong) cells sit: different models often make different mistakes.")


def disagreement_gallery(records: list[Any], names: list[str], preds: list[Predictions]) -> None:
    """The test images on which the runs give different answers, mixed right/wrong first."""
    found = disagreements(preds)
    rate = agreement_rate(preds)
    if rate is None:
        st.info("These runs were not tested on the same images, so their answers cannot be compared image by image.")
        return
    if not found:
        st.success(f"The runs give the same answer on all {len(preds[0])} shared test images.")
        return
    explain(f"The runs agree on {rate:.0%} of the shared test images and disagree on {len(found)}. First come the "
            "images one run gets right and another wrong.",
            f"The models answer differently on {len(found)} pictures; here they are.")
    classes = (records[0].result or {}).get("classes") or [str(i) for i in range(preds[0].probs.shape[1])]
    images = SplitImages(records[0].config, _split_name(records[0]), preds[0].files)
    if images.error:
        st.warning(images.error)
    gradcam = gradcam_controls("cmp")
    shown = found[:MAX_DISAGREEMENTS]
    tiles = [Tile(images.image(d.rows[0]), f"true {classes[d.label]}") for d in shown]
    if not gradcam[0]:
        captions = [
            Tile(t.image, t.caption + "".join(
                f" · {n}: {classes[p]} {c:.0%} {'✓' if p == d.label else '✗'}"
                for n, p, c in zip(names, d.preds, d.confidences)))
            for t, d in zip(tiles, shown)
        ]
        image_grid(captions, columns=6)
        return
    # With Grad-CAM: one row per image, the photo then each run's heat map for its own answer.
    with user_errors(), st.spinner("Computing Grad-CAM heat maps..."):
        per_run = []
        for record, name, col in zip(records, names, range(len(records))):
            predictor = get_predictor(record.run_id)
            per_run.append(gradcam_tiles(
                predictor,
                [Tile(t.image, f"{name}: {classes[d.preds[col]]} {d.confidences[col]:.0%} "
                               f"{'✓' if d.preds[col] == d.label else '✗'}") for t, d in zip(tiles, shown)],
                [d.preds[col] for d in shown], gradcam[1]))
        for i, tile in enumerate(tiles):
            image_grid([Tile(tile.image, tile.caption), *[run_tiles[i] for run_tiles in per_run]],
                       columns=len(records) + 1)


def _split_name(record: Any) -> str:
    """Which dataset split a run's saved predictions came from ('test', or 'val' when it had no test split)."""
    return "val" if (record.result or {}).get("evaluated_on") == "validation" else "test"


# ---------------------------------------------------------------- the page


def main() -> None:
    st.title("Compare")
    explain("Two or more runs side by side: which model is better, smaller, faster, and where do they disagree?")
    records = [r for r in get_store().list() if r.status in STATUSES and r.result]
    if len(records) < 2:
        st.info("Compare needs at least two finished runs: train a scratch CNN and a transfer-learning model on the "
                "Train page, then come back here.")
        st.page_link("pages/train.py", label="Go to Train", icon="🏋️")
        return
    chosen = pick_runs(records)
    if len(chosen) < 2:
        st.info("Pick at least two runs to compare.")
        return
    for warning in comparability_warnings(chosen, label=source_name):
        st.warning(warning)
    chosen, preds = load_all(chosen)
    if len(chosen) < 2:
        return
    names = short_names(chosen)
    st.subheader("Scores, size and speed")
    table = st.empty()  # drawn now without speeds, redrawn at the end once they are measured (slow only once)
    with table.container():
        scores_table(chosen, names, [cached_speed(r) for r in chosen])
    score_bars(chosen, names)
    st.subheader("Training curves")
    curves(chosen, names)
    st.subheader("Confusion matrices")
    confusion_side_by_side(chosen, names, preds)
    st.subheader("Where they disagree")
    disagreement_gallery(chosen, names, preds)
    if any(cached_speed(r) is None for r in chosen):
        speeds = [speed_of(r, SplitImages(r.config, _split_name(r), p.files)) for r, p in zip(chosen, preds)]
        with table.container():
            scores_table(chosen, names, speeds)


main()
