"""The overfitting lab on the Train page: one click queues a fixed series of runs; their curves are overlaid.

``render_lab`` takes a ``GroupStatus`` and nothing else from the engine, so tests call it with canned runs;
the page's polling fragment draws it while the lab trains, this tab once it is done.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, Callable

import pandas as pd
import streamlit as st

from core.plots.experiments import final_accuracy_figure, group_curves_figure, learning_curve_figure
from core.plots.style import run_color
from core.training.experiments.groups import (
    GroupStatus,
    group_status,
    list_experiments,
    queue_experiment,
    results_table,
)
from core.training.experiments.lab import (
    LabSettings,
    lab_experiment,
    lab_train_sizes,
    label_noise_sentence,
    learning_curve_points,
    learning_curve_sentence,
    regulariser_findings,
    regulariser_sentence,
)
from ui.common import explain, teacher_mode, user_errors
from ui.engine import get_manager, get_store
from ui.groups import CHART_CONFIG, RESULT_COLUMNS, choose_group, render_group_progress, results_frame, show_group

LAB_SETTINGS = LabSettings()


@st.cache_data(show_spinner=False)
def _lab_sizes() -> dict[float, int]:
    """Training images per fraction of the lab's split (generated once per server)."""
    return lab_train_sizes(LAB_SETTINGS)


def lab_plan_frame() -> pd.DataFrame:
    """What one click trains: each run, its training images and epochs."""
    exp = lab_experiment(LAB_SETTINGS, _lab_sizes())
    return pd.DataFrame([{"run": r.label, "images": r.values["train_images"], "epochs": r.config.epochs,
                          "shows": ", ".join(s.replace("_", " ") for s in r.series)} for r in exp.runs])


def start_lab() -> str:
    """Queue the whole lab as one group and show it."""
    group = queue_experiment(get_manager(), lab_experiment(LAB_SETTINGS, _lab_sizes()))
    show_group("lab", group)
    return group


def render_lab_section(shown_live: Collection[str] = (), teacher: bool | None = None) -> None:
    """The lab: what it does, the button, and the newest (or chosen) lab's results.

    A group in ``shown_live`` is drawn by the page's live panel, so here it only gets a pointer there.
    """
    teacher = teacher_mode() if teacher is None else teacher
    s = LAB_SETTINGS
    n_runs = len(s.fractions) + len(s.noises) + len(s.regularisers)
    explain(
        f"One click trains {n_runs} small networks on generated shapes ({s.image_size} px), one after another, all "
        "on the same split and seed: with 10/25/50/100 % of the training images (a learning curve), with "
        f"{' and '.join(f'{n:.0%}' for n in s.noises)} of the training labels deliberately wrong, and with "
        "augmentation, dropout, L2, batch norm or early stopping switched on. It takes 2-4 minutes on a "
        "shared 2-core CPU.",
        teacher=f"{n_runs} short trainings that answer: does more data help? What do wrong labels do? "
        "Which trick stops memorising?",
    )
    with st.expander("What the lab trains"):
        with user_errors():
            st.dataframe(lab_plan_frame(), hide_index=True, width="stretch", key="lab_plan")
            explain("Small training sets get more epochs so every run makes about the same number of weight updates.")
    manager = get_manager()
    busy = any(g.group in shown_live for g in list_experiments(get_store().home, "lab"))  # one lab at a time
    if st.button("Run the overfitting lab", key="lab_start", type="primary", icon=":material/science:",
                 disabled=busy, help="Queues every run of the lab; its Stop (at the top of the page) cancels them all."):
        with user_errors():
            start_lab()
            st.rerun()
    group = choose_group("lab", "Lab")
    if group in shown_live:
        explain("This lab is training: follow it live (and stop it) at the top of the page; its results are "
                "shown here once it is done. One lab trains at a time.")
    elif group is not None and (status := group_status(manager, group)) is not None:
        if busy:
            explain("Another lab is training: follow it live (and stop it) at the top of the page.")
        render_lab(status, teacher)
    elif busy:
        explain("A lab is training: follow it live (and stop it) at the top of the page.")


def _series(status: GroupStatus, series: str, rename: Callable[[Any], str] | None = None) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(status.members):
        if series in m.series and m.snapshot is not None and m.snapshot.history.get("accuracy"):
            out.append({"label": rename(m) if rename else m.label, "history": m.snapshot.history,
                        "color": run_color(i)})
    return out


def _reg_label(m: Any) -> str:
    reg = m.values.get("regularisers", "none")
    return "no regulariser" if reg == "none" else m.label.split("+", 1)[-1].strip()


def render_lab(status: GroupStatus, teacher: bool) -> None:
    """Progress, then the three lessons (data, labels, regularisers), each with its chart and sentence."""
    render_group_progress(status, "lab", "lab")

    st.markdown("##### 1 · More data")
    points = learning_curve_points(status)
    if points:
        st.plotly_chart(learning_curve_figure(points, teacher_mode=teacher), key="lab_learning_curve",
                        config=CHART_CONFIG)
        explain("Dotted blue: accuracy on the training images; orange: on validation images it never trains on; "
                "purple diamonds: the test images. The red band is what the model memorised.",
                teacher="Blue: pictures it studied. Orange: new pictures. The red band is memorising.")
    sentence = learning_curve_sentence(points)
    if sentence:
        st.info(sentence, icon=":material/school:")
    curves = _series(status, "learning_curve")
    if curves:
        st.plotly_chart(group_curves_figure(curves, teacher_mode=teacher), key="lab_curves_data",
                        config=CHART_CONFIG)
        explain("Each colour is one run; left: training accuracy per epoch, right: validation accuracy.")

    st.markdown("##### 2 · Wrong labels")
    curves = _series(status, "label_noise", lambda m: f"{m.values.get('label_noise', 0):.0%} labels flipped")
    if curves:
        st.plotly_chart(group_curves_figure(curves, teacher_mode=teacher), key="lab_curves_noise",
                        config=CHART_CONFIG)
    sentence = label_noise_sentence(status)
    if sentence:
        st.info(sentence, icon=":material/school:")
    elif curves:
        explain("The comparison appears when the clean run and a noisy one have finished.")

    st.markdown("##### 3 · Regularisers")
    curves = _series(status, "regularisers", _reg_label)
    if curves:
        st.plotly_chart(group_curves_figure(curves, teacher_mode=teacher), key="lab_curves_reg",
                        config=CHART_CONFIG)
    findings = regulariser_findings(status)
    if findings:
        rows = [{"run": d["label"], "train_accuracy": d["train_accuracy"], "val_accuracy": d["val_accuracy"],
                 "test_accuracy": d["test_accuracy"]} for d in findings]
        st.plotly_chart(final_accuracy_figure(rows, teacher_mode=teacher,
                                                        title="Same data, one regulariser at a time"),
                        key="lab_bars_reg", config=CHART_CONFIG)
        explain("Training and validation: mean of the last 3 epochs. Test: the model each run kept. The smaller the "
                "distance between blue and orange, the less the network memorised.")
    sentence = regulariser_sentence(status)
    if sentence:
        st.info(sentence, icon=":material/school:")

    with st.expander("Every run of the lab"):
        st.dataframe(results_frame(results_table(status, sort_by=None)), hide_index=True, width="stretch",
                     column_config=RESULT_COLUMNS, key=f"lab_table_{status.group}")
        explain("Each run is an ordinary run: open it on Evaluate for its confusion matrix and mistakes.")
