"""Grid search on the Train page: up to three hyper-parameters, at most 12 runs queued as one group.

The results table is sorted by validation accuracy, a parallel-coordinates chart shows which
settings lead where, and the best run is one click away on Evaluate. Stop stops the whole group.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import streamlit as st

from core.config import ModelSpec, TrainConfig
from core.plots.experiments import group_curves_figure, parallel_coordinates_figure
from core.plots.style import run_color
from core.training.experiments.grid import (
    GRID_PARAMS,
    MAX_GRID_COMBINATIONS,
    MAX_GRID_PARAMS,
    format_value,
    grid_experiment,
    grid_size,
)
from core.training.experiments.groups import (
    Experiment,
    GroupStatus,
    best_run,
    group_status,
    queue_experiment,
    results_table,
)
from core.training.experiments.lab import lab_network
from ui.common import current_data_source, current_split, explain, metric_card, source_name, teacher_mode, user_errors
from ui.engine import get_manager
from ui.groups import CHART_CONFIG, RESULT_COLUMNS, choose_group, render_group_progress, results_frame, show_group

CUSTOM = "custom"
DEFAULT_VALUES = {"learning_rate": [1e-3, 3e-3], "batch_size": [16, 32], "dropout": [0.0, 0.4], "l2": [0.0, 1e-3],
                  "epochs": [5, 10], "image_size": [16, 32], "optimizer": ["adam", "sgd"],
                  "augment": ["none", "light"], "early_stopping_patience": [0, 3], "train_fraction": [0.25, 1.0]}
IMAGE_SIZES = (16, 24, 32, 48, 64, 96)
LEARNING_RATES = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


@st.cache_data(show_spinner=False)
def _scratch_presets() -> list[str]:
    """Scratch preset names (transfer models are slow for a class-sized grid)."""
    from core.models.registry import list_models

    return [m.name for m in list_models() if m.kind == "scratch"]


def model_label(name: str) -> str:
    return "custom: small CNN (conv 16/32, Dense 64) - dropout and L2 can vary" if name == CUSTOM else name


def base_config() -> TrainConfig:
    """The settings every run of the grid shares (the varied ones are overwritten per run)."""
    source, split = current_data_source(), current_split()
    cols = st.columns(4)
    names = [*_scratch_presets(), CUSTOM]
    model = cols[0].selectbox("Model", names, index=names.index("tiny") if "tiny" in names else 0, key="grid_model",
                              format_func=model_label, persist_state="session")
    size = cols[1].select_slider("Image size", IMAGE_SIZES, 32, key="grid_size", persist_state="session")
    epochs = cols[2].number_input("Epochs", 1, 100, 5, key="grid_epochs", persist_state="session")
    lr = cols[3].select_slider("Learning rate", LEARNING_RATES, 1e-3, key="grid_lr", persist_state="session",
                               format_func=lambda v: f"{v:g}")
    spec = ModelSpec(name=CUSTOM, custom=lab_network()) if model == CUSTOM else ModelSpec(name=model)
    explain(f"Data: {source_name(source)} (choose it on the Data page) · split seed {split.seed}. Settings you vary below "
            "replace these for each run; everything else stays the same, so the runs compare fairly.")
    return TrainConfig(data=source, split=split, model=spec, image_size=int(size), epochs=int(epochs),
                       learning_rate=float(lr), batch_size=32, use_feature_cache=False)


def grid_choices() -> dict[str, list[Any]]:
    """Up to three hyper-parameters and the values to try for each."""
    params = st.multiselect(f"Hyper-parameters to vary (up to {MAX_GRID_PARAMS})", list(GRID_PARAMS),
                            default=["learning_rate", "batch_size"], max_selections=MAX_GRID_PARAMS,
                            format_func=lambda p: GRID_PARAMS[p].label, key="grid_params")
    grid: dict[str, list[Any]] = {}
    cols = st.columns(max(len(params), 1))
    for col, p in zip(cols, params):
        info = GRID_PARAMS[p]
        grid[p] = col.multiselect(f"{info.label} values", list(info.choices), default=DEFAULT_VALUES.get(p),
                                  format_func=lambda v, p=p: format_value(p, v), key=f"grid_values_{p}",
                                  help=info.help)
    return grid


def start_grid(experiment: Experiment) -> str:
    """Queue the grid as one group and show it."""
    group = queue_experiment(get_manager(), experiment)
    show_group("grid", group)
    return group


def render_grid_section(shown_live: Collection[str] = ()) -> None:
    """The grid form, the button, and the newest (or chosen) grid's results.

    A group in ``shown_live`` is drawn by the page's live panel, so here it only gets a pointer there.
    """
    explain("Try every combination of a few settings and let the numbers pick the best. Each combination is an "
            f"ordinary run; at most {MAX_GRID_COMBINATIONS} so the class is not kept waiting.",
            teacher="Which learning rate and batch size work best? Train them all and compare.")
    experiment = None
    with user_errors():
        base = base_config()
        grid = grid_choices()
        n = grid_size(grid)
        explain(f"{n} combination(s) = {n} runs of {base.epochs} epochs each." if n else
                "Pick at least one hyper-parameter and one value for it.")
        experiment = grid_experiment(base, grid)
    if st.button(f"Run the grid search ({len(experiment.runs) if experiment else 0} runs)", key="grid_start",
                 type="primary", icon=":material/grid_on:", disabled=experiment is None):
        with user_errors():
            start_grid(experiment)
            st.rerun()
    group = choose_group("grid", "Grid search")
    if group in shown_live:
        explain("This grid search is training: it is shown live at the top of the page, and here once it is done.")
    elif group is not None and (status := group_status(get_manager(), group)) is not None:
        render_grid(status, teacher_mode())


def render_grid(status: GroupStatus, teacher: bool) -> None:
    """Progress and Stop, the best run, the table sorted by validation accuracy, parallel coordinates, curves."""
    st.markdown(f"##### {status.title}")
    render_group_progress(status, "grid search", "grid")
    params = list(status.params)
    labels = {p: GRID_PARAMS[p].label if p in GRID_PARAMS else p for p in params}
    rows = results_table(status, sort_by="val_accuracy")
    best = best_run(status)
    if best is not None:
        top = next(r for r in rows if r["run_id"] == best)
        cols = st.columns([1, 2], vertical_alignment="center")
        with cols[0]:
            metric_card("Best validation accuracy", f"{top['val_accuracy']:.1%}",
                        "Mean of its last 3 epochs on images it never trained on.")
        with cols[1]:
            st.markdown(f"**Best so far:** {top['run']}")
            st.page_link("pages/evaluate.py", label="Open the best run on Evaluate", icon=":material/fact_check:",
                         query_params={"run": best})
    st.dataframe(results_frame(rows, params, labels), hide_index=True, width="stretch", column_config=RESULT_COLUMNS,
                 key=f"grid_table_{status.group}")
    explain("Sorted by validation accuracy (mean of the last 3 epochs), best first. Choose by validation, not by "
            "test: the test images stay a fair final check only if nothing was picked with them.")
    done = [r for r in rows if r["val_accuracy"] is not None]
    if done:
        fig = parallel_coordinates_figure(
            rows, params, labels=labels, scales={p: GRID_PARAMS[p].scale for p in params if p in GRID_PARAMS},
            teacher_mode=teacher)
        st.plotly_chart(fig, key=f"grid_parcoords_{status.group}", config=CHART_CONFIG)
        explain("Each line is one run, passing through its settings to its validation accuracy on the right; bright "
                "lines did best. Drag along an axis to highlight the runs in a range.",
                teacher="Follow the yellow lines: they show which settings worked.")
    curves = [{"label": m.label, "history": m.snapshot.history, "color": run_color(i)}
              for i, m in enumerate(status.members)
              if m.snapshot is not None and m.snapshot.history.get("accuracy")]
    if curves:
        with st.expander("Training curves of every run"):
            st.plotly_chart(group_curves_figure(curves, teacher_mode=teacher), key="grid_curves",
                            config=CHART_CONFIG)
            explain("Left: training accuracy per epoch; right: validation accuracy. One colour per run.")
