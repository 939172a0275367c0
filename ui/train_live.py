"""What is training now, on the Train page: the one polling fragment, and the overfitting demo's buttons.

One fragment polls once a second while anything it shows is active (pitfall: nested ``run_every``
fragments): the run in the URL (with its demo partner, side by side) and the experiment groups of this
tab that are still training. When the last of them ends it triggers one full rerun, so polling stops and
the finished results are drawn in their own sections.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import streamlit as st

from core.training.experiments.demo import DEMO_GROUP, DEMO_SOURCE, DEMO_SPLIT, demo_config
from core.training.experiments.groups import GroupStatus, group_status
from ui.common import (
    POLL_SECONDS,
    current_run_id,
    explain,
    set_current_run_id,
    source_name,
    teacher_mode,
    user_errors,
)
from ui.engine import get_manager, get_store, session_owner
from ui.grid import render_grid
from ui.groups import training_groups
from ui.lab import render_lab
from ui.train_panel import render_demo_lesson, render_run

GROUP_KINDS = ("lab", "grid")
_POLLING = "train_polling"


def watched_runs() -> list[str]:
    """The run in the URL (plus its demo partner), else the newest active run; [] when there is none."""
    manager = get_manager()
    run_id = current_run_id()
    if run_id and manager.snapshot(run_id) is None:
        st.warning(f"There is no run '{run_id}' any more (it may have been deleted). Start a new one below.")
        set_current_run_id(None)
        run_id = None
    if not run_id:
        # Experiment groups (lab, grid search) have their own panel: attach to plain and demo runs only.
        active = [s for s in manager.active() if not s.group or s.group.startswith(DEMO_GROUP)]
        if not active:
            return []
        run_id = active[-1].run_id
        set_current_run_id(run_id)
    record = get_store().get(run_id)
    if record is not None and record.group.startswith(DEMO_GROUP):
        pair = sorted((r for r in get_store().list() if r.group == record.group), key=lambda r: r.created)
        if len(pair) >= 2:  # the plain demo on the left, the newest re-run on the right
            return [pair[0].run_id, pair[-1].run_id]
    return [run_id]


def live_groups() -> list[tuple[str, str]]:
    """``(kind, group)`` of this tab's experiment groups (lab, grid) that still have runs queued or training."""
    return [(kind, status.group) for kind in GROUP_KINDS for status in training_groups(kind)]


def live_section(run_ids: Sequence[str], groups: Sequence[tuple[str, str]]) -> None:
    """The one polling fragment: every second while a watched run or group is active, else drawn once."""
    manager = get_manager()
    active = bool(groups) or any((s := manager.snapshot(r)) is not None and s.active for r in run_ids)
    st.session_state[_POLLING] = active
    st.fragment(run_every=POLL_SECONDS if active else None)(_live_body)(tuple(run_ids), tuple(groups))


def _live_body(run_ids: tuple[str, ...], groups: tuple[tuple[str, str], ...]) -> None:
    """Snapshots in, charts out; a full rerun once nothing shown is active any more."""
    manager = get_manager()
    teacher = teacher_mode()
    snaps = [s for s in (manager.snapshot(r) for r in run_ids) if s is not None]
    if run_ids and not snaps:
        st.info("The run you were watching has been deleted.")
    if len(snaps) == 1:
        render_run(snaps[0], teacher, key="main")
    elif snaps:
        st.markdown("### The overfitting lesson, side by side")
        cols = st.columns(2)
        for i, (col, snap) in enumerate(zip(cols, snaps)):
            with col:
                render_run(snap, teacher, key=f"demo{i}", compact=True)
        render_demo_lesson(snaps)
    statuses = [(kind, group_status(manager, group)) for kind, group in groups]
    for kind, status in statuses:
        if status is not None:
            _render_group(kind, status, teacher)
    still_active = any(s.active for s in snaps) or any(s is not None and s.active for _, s in statuses)
    if st.session_state.get(_POLLING) and not still_active:
        # Everything shown just ended: redraw the whole app once so polling stops and the sidebar updates.
        st.session_state[_POLLING] = False
        st.rerun()


def _render_group(kind: str, status: GroupStatus, teacher: bool) -> None:
    if kind == "lab":
        st.markdown("### The overfitting lab, live")
        render_lab(status, teacher)
    else:
        st.markdown("### The grid search, live")
        render_grid(status, teacher)


# ---------------------------------------------------------------- the overfitting demo


def demo_section() -> None:
    """Two buttons for the classroom lesson: overfit on purpose, then fix it."""
    st.subheader("Overfitting demo")
    explain(
        f"Trains the `overfit_demo` network (a big dense head) on the {source_name(DEMO_SOURCE)} dataset with only "
        f"{DEMO_SPLIT.train_fraction:.0%} of the training images (about 9 a class) and no augmentation: within a minute the "
        "training loss keeps falling while the validation loss turns up. The second button trains the same "
        "network with augmentation, dropout and early stopping, shown side by side.",
        teacher="Step 1 makes the model memorise a handful of pictures. Step 2 shows how to stop it memorising.",
    )
    cols = st.columns(2)
    with cols[0]:
        if st.button("1 · Run the overfitting demo", key="train_demo_plain", icon=":material/play_arrow:",
                     width="stretch"):
            _start_demo(regularised=False)
    with cols[1]:
        if st.button("2 · Re-run with augmentation + dropout + early stopping", key="train_demo_regularised",
                     icon=":material/shield:", width="stretch"):
            _start_demo(regularised=True)


def _start_demo(regularised: bool) -> None:
    """Start a demo run; the regularised one joins the group of the latest plain one for the side-by-side."""
    group = f"{DEMO_GROUP}-{int(time.time())}"
    if regularised:
        plain = [r for r in get_store().list() if r.group.startswith(DEMO_GROUP)]
        if plain:
            group = plain[0].group  # newest first
    with user_errors():
        config = demo_config(regularised, group)
        run_id = get_manager().start(config, name=config.name, owner=session_owner())
        set_current_run_id(run_id)
        st.rerun()
