"""The overfitting lab on the Train page: one click queues a fixed series of runs; their curves are overlaid.

Also the pieces the grid search shares: choosing an experiment group, its progress with a Stop for
the whole group, and the polling fragment (it polls only while the group has active runs).
The render functions take a ``GroupStatus`` and nothing else from the engine, so tests call them
with canned runs.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import pandas as pd
import streamlit as st

from core import plots_lab
from core.experiments import (
    GroupStatus,
    LabSettings,
    group_status,
    lab_experiment,
    lab_train_sizes,
    label_noise_sentence,
    learning_curve_points,
    learning_curve_sentence,
    list_experiments,
    load_manifest,
    queue_experiment,
    regulariser_findings,
    regulariser_sentence,
    results_table,
    stop_group,
)
from ui.common import explain, format_duration, set_current_run_id, status_dot, teacher_mode, user_errors
from ui.engine import get_manager, get_store

POLL_SECONDS = 1.0
CHART_CONFIG = {"displaylogo": False}
LAB_SETTINGS = LabSettings()


# ---------------------------------------------------------------- groups: choose, progress, stop, poll


def choose_group(kind: str, label: str) -> str | None:
    """The experiment group to show: ``?<kind>=`` in the URL, else a picker over this home's groups (newest first)."""
    groups = list_experiments(get_store().home, kind)
    if not groups:
        return None
    ids = [g.group for g in groups]
    wanted = st.query_params.get(kind)
    key = f"{kind}_group"
    if wanted in ids and st.session_state.get(key) != wanted:
        st.session_state[key] = wanted
    if st.session_state.get(key) not in ids:
        st.session_state[key] = ids[0]
    if len(ids) == 1:
        return ids[0]
    titles = {g.group: f"{time.strftime('%d %b %H:%M', time.localtime(g.created))} · {g.title} · {len(g.entries)} runs"
              for g in groups}

    def _sync() -> None:
        st.query_params[kind] = st.session_state[key]

    return st.selectbox(label, ids, format_func=titles.__getitem__, key=key, on_change=_sync)


def group_rows_progress(status: GroupStatus) -> list[dict[str, Any]]:
    """One row per run with the share of its epochs done (for the progress strip)."""
    rows = []
    for m in status.members:
        snap = m.snapshot
        done = 1.0 if m.status not in ("queued", "running", "stopping") else 0.0
        if snap is not None and m.status in ("running", "stopping"):
            total = max(int(snap.epochs_total or 0), 1)
            within = snap.batch / snap.batches_per_epoch if snap.batches_per_epoch else 0.0
            done = min((snap.epoch + within) / total, 1.0)
        rows.append({"run": m.label, "status": m.status, "done": done})
    return rows


def render_group_progress(status: GroupStatus, noun: str, key: str) -> None:
    """Overall progress, what runs now, time left, failures, and a Stop for the whole group."""
    counts = " · ".join(f"{status_dot(s)} {n} {s}" for s, n in status.counts.items())
    running = next((m for m in status.members if m.status in ("running", "stopping")), None)
    text = f"{status.done} of {status.total} runs done"
    if running is not None:
        text += f" · now: {running.label}"
    st.progress(min(max(status.progress, 0.0), 1.0), text=text)
    cols = st.columns([3, 1])
    with cols[0]:
        eta = status.eta_seconds()
        explain(counts + (f" · about {format_duration(eta)} left" if eta is not None else ""))
    with cols[1]:
        if status.active and st.button(f"Stop the whole {noun}", key=f"{key}_stop_{status.group}",
                                       icon=":material/stop_circle:", type="primary",
                                       help="Queued runs are cancelled; the running one stops after its current batch."):
            with user_errors():
                n = stop_group(get_manager(), status.group)
                st.toast(f"Stopping {n} run(s) of the {noun}…")
    for m in status.members:
        if m.status == "failed" and m.snapshot is not None:
            st.error(f"{m.label}: {m.snapshot.message or 'the run failed.'}")


def poll_group(kind: str, group: str, body: Callable[[GroupStatus, bool], None]) -> None:
    """Draw ``body`` for the group in one fragment that polls every second while any of its runs is active."""
    status = group_status(get_manager(), group)
    if status is None:
        st.warning(f"The experiment '{group}' has no manifest any more (it may have been deleted).")
        return
    flag = f"{kind}_polling"
    st.session_state[flag] = status.active
    st.fragment(run_every=POLL_SECONDS if status.active else None)(_poll_body)(kind, group, body)


def _poll_body(kind: str, group: str, body: Callable[[GroupStatus, bool], None]) -> None:
    status = group_status(get_manager(), group)
    if status is None:
        return
    body(status, teacher_mode())
    if st.session_state.get(f"{kind}_polling") and not status.active:
        # The last run just ended: one full rerun so polling stops and the sidebar updates.
        st.session_state[f"{kind}_polling"] = False
        st.rerun()


def results_frame(rows: list[dict[str, Any]], params: list[str] | None = None,
                  labels: dict[str, str] | None = None) -> pd.DataFrame:
    """A results table for ``st.dataframe``: accuracies as percentages, a link to each run on Evaluate."""
    labels = labels or {}
    out = []
    for r in rows:
        row = {"run": r["run"],
               "open": f"./evaluate?run={r['run_id']}" if r["status"] in ("finished", "stopped") and r["run_id"] else None}
        for p in params or []:
            row[labels.get(p, p)] = r.get(p)
        row.update({
            "status": f"{status_dot(r['status'])} {r['status']}",
            "epochs": r["epochs"],
            "training acc.": _pct(r["train_accuracy"]),
            "validation acc.": _pct(r["val_accuracy"]),
            "best validation": _pct(r["best_val_accuracy"]),
            "test acc.": _pct(r["test_accuracy"]),
            "time (s)": round(r["fit_seconds"], 1) if r.get("fit_seconds") is not None else None,
        })
        out.append(row)
    return pd.DataFrame(out)


def _pct(v: float | None) -> float | None:
    return None if v is None else round(100 * v, 1)


RESULT_COLUMNS = {
    "training acc.": st.column_config.NumberColumn(format="%.1f %%", help="Mean of the last 3 epochs, on training images."),
    "validation acc.": st.column_config.NumberColumn(format="%.1f %%",
                                                     help="Mean of the last 3 epochs, on validation images."),
    "best validation": st.column_config.NumberColumn(format="%.1f %%", help="The best single epoch."),
    "test acc.": st.column_config.NumberColumn(format="%.1f %%", help="The kept model on the test images."),
    "open": st.column_config.LinkColumn("evaluate", display_text="open", help="This run on the Evaluate page."),
}


# ---------------------------------------------------------------- the lab


@st.cache_data(show_spinner=False)
def _lab_sizes() -> dict[float, int]:
    """Training images per fraction of the lab's split (generated once per server)."""
    return lab_train_sizes(LAB_SETTINGS)


def lab_plan_frame() -> pd.DataFrame:
    """What one click trains: each run, its training images and epochs."""
    exp = lab_experiment(LAB_SETTINGS, _lab_sizes())
    return pd.DataFrame([{"run": r.label, "images": r.values["train_images"], "epochs": r.config.epochs,
                          "shows": ", ".join(s.replace("_", " ") for s in r.series)} for r in exp.runs])


def show_group(kind: str, group: str) -> None:
    """Put a just-queued group in the URL, and its first run as the page's run (the live panel follows it)."""
    st.query_params[kind] = group
    st.session_state[f"{kind}_group"] = group
    manifest = load_manifest(get_store().home, group)
    if manifest is not None and manifest.entries and manifest.entries[0].get("run_id"):
        set_current_run_id(manifest.entries[0]["run_id"])


def start_lab() -> str:
    """Queue the whole lab as one group and show it."""
    group = queue_experiment(get_manager(), lab_experiment(LAB_SETTINGS, _lab_sizes()))
    show_group("lab", group)
    return group


def render_lab_section(teacher: bool | None = None) -> None:
    """The lab: what it does, the button, and the newest (or chosen) lab's results, live."""
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
    latest = list_experiments(get_store().home, "lab")[:1]
    busy = any((s_ := group_status(manager, g.group)) is not None and s_.active for g in latest)
    if st.button("Run the overfitting lab", key="lab_start", type="primary", icon=":material/science:",
                 disabled=busy, help="Queues every run of the lab; Stop below cancels them all."):
        with user_errors():
            start_lab()
            st.rerun()
    if busy:
        explain("A lab is already running: stop it below to start another.")
    group = choose_group("lab", "Lab")
    if group is not None:
        poll_group("lab", group, render_lab)


def _series(status: GroupStatus, series: str, rename: Callable[[Any], str] | None = None) -> list[dict[str, Any]]:
    out = []
    for i, m in enumerate(status.members):
        if series in m.series and m.snapshot is not None and m.snapshot.history.get("accuracy"):
            out.append({"label": rename(m) if rename else m.label, "history": m.snapshot.history,
                        "color": plots_lab.run_color(i)})
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
        st.plotly_chart(plots_lab.learning_curve_figure(points, teacher_mode=teacher), key="lab_learning_curve",
                        config=CHART_CONFIG)
        explain("Dotted blue: accuracy on the training images; orange: on validation images it never trains on; "
                "purple diamonds: the test images. The red band is what the model memorised.",
                teacher="Blue: pictures it studied. Orange: new pictures. The red band is memorising.")
    sentence = learning_curve_sentence(points)
    if sentence:
        st.info(sentence, icon=":material/school:")
    curves = _series(status, "learning_curve")
    if curves:
        st.plotly_chart(plots_lab.group_curves_figure(curves, teacher_mode=teacher), key="lab_curves_data",
                        config=CHART_CONFIG)
        explain("Each colour is one run; left: training accuracy per epoch, right: validation accuracy.")

    st.markdown("##### 2 · Wrong labels")
    curves = _series(status, "label_noise", lambda m: f"{m.values.get('label_noise', 0):.0%} labels flipped")
    if curves:
        st.plotly_chart(plots_lab.group_curves_figure(curves, teacher_mode=teacher), key="lab_curves_noise",
                        config=CHART_CONFIG)
    sentence = label_noise_sentence(status)
    if sentence:
        st.info(sentence, icon=":material/school:")
    elif curves:
        explain("The comparison appears when the clean run and a noisy one have finished.")

    st.markdown("##### 3 · Regularisers")
    curves = _series(status, "regularisers", _reg_label)
    if curves:
        st.plotly_chart(plots_lab.group_curves_figure(curves, teacher_mode=teacher), key="lab_curves_reg",
                        config=CHART_CONFIG)
    findings = regulariser_findings(status)
    if findings:
        rows = [{"run": d["label"], "train_accuracy": d["train_accuracy"], "val_accuracy": d["val_accuracy"],
                 "test_accuracy": d["test_accuracy"]} for d in findings]
        st.plotly_chart(plots_lab.final_accuracy_figure(rows, teacher_mode=teacher,
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


# ---------------------------------------------------------------- the Train page's experiments block


def experiments_section() -> None:
    """The Train page's block: the overfitting lab and grid search as two tabs (only the open one runs)."""
    st.subheader("Experiments")
    names = ["Overfitting lab", "Grid search"]
    default = names[1] if "grid" in st.query_params and "lab" not in st.query_params else names[0]
    lab_tab, grid_tab = st.tabs(names, default=default, key="train_experiments", on_change="rerun")
    if lab_tab.open:
        with lab_tab:
            render_lab_section()
    if grid_tab.open:
        from ui.grid import render_grid_section

        with grid_tab:
            render_grid_section()
