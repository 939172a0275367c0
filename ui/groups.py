"""Pieces the overfitting lab and the grid search share: which group to show, its progress and Stop, its table.

An experiment group trains on the Train page's one polling fragment (``ui.train_live``): while any of its
runs is active the group is drawn there, live; once it is done, in its own tab (``ui.lab``, ``ui.grid``).
"""

from __future__ import annotations

import time
from typing import Any

import pandas as pd
import streamlit as st

from core.training.experiments.groups import GroupStatus, group_status, list_experiments, load_manifest, stop_group
from ui.common import explain, format_duration, set_current_run_id, status_dot, user_errors
from ui.engine import get_manager, get_store

CHART_CONFIG = {"displaylogo": False}


def training_groups(kind: str) -> list[GroupStatus]:
    """Every group of ``kind`` with a run still queued or training, newest first (the live panel shows them)."""
    manager = get_manager()
    training = {snap.group for snap in manager.active() if snap.group}
    if not training:  # the common case: no manifest needs reading
        return []
    statuses = (group_status(manager, g.group) for g in list_experiments(get_store().home, kind) if g.group in training)
    return [s for s in statuses if s is not None and s.active]


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


def show_group(kind: str, group: str) -> None:
    """Put a just-queued group in the URL, and its first run as the page's run (the live panel follows it)."""
    st.query_params[kind] = group
    st.session_state[f"{kind}_group"] = group
    manifest = load_manifest(get_store().home, group)
    if manifest is not None and manifest.entries and manifest.entries[0].get("run_id"):
        set_current_run_id(manifest.entries[0]["run_id"])
