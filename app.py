"""CNN Lab: the frame every page runs in - page config, the shared sidebar, navigation.

Run with ``streamlit run app.py``. Navigation is explicit (``st.navigation`` with our own sidebar
links, the auto-discovered list switched off in .streamlit/config.toml): see docs/architecture.md (pitfall 5) and
``ui/__init__.py`` for why a fresh server's first deep link still lands in this frame.
"""

from __future__ import annotations

import ui  # noqa: F401  (first: leaves Streamlit's legacy pages/ mode on a fresh server)

# isort: split

from pathlib import Path
from typing import Any

import streamlit as st

from core.errors import UserError
from ui.common import (
    current_data_source,
    current_run_id,
    run_label,
    set_current_run_id,
    status_mark,
    teacher_mode,
    teacher_toggle,
    user_errors,
)
from ui.engine import get_manager, get_store

ROOT = Path(__file__).resolve().parent
ACTIVE = ("queued", "running", "stopping")
RECENT_RUNS = 6

PAGES = {
    "data": st.Page("pages/data.py", title="Data", icon=":material/dataset:", url_path="data", default=True),
    "train": st.Page("pages/train.py", title="Train", icon=":material/model_training:", url_path="train"),
    "evaluate": st.Page("pages/evaluate.py", title="Evaluate", icon=":material/fact_check:", url_path="evaluate"),
    "compare": st.Page("pages/compare.py", title="Compare", icon=":material/compare_arrows:", url_path="compare"),
    "classify": st.Page("pages/classify.py", title="Classify", icon=":material/image_search:", url_path="classify"),
}

TEACHER_CSS = """
<style>
  html { font-size: 20px !important; }
  [data-testid="stMetricValue"] { font-size: 2.6rem; }
  [data-testid="stCaptionContainer"] { font-size: 1rem; }
  [data-testid="stSidebar"] { min-width: 340px; }
</style>
"""


def carried_params(page: str, run_id: str | None) -> dict[str, str]:
    """Query parameters a sidebar link keeps: teacher mode, the run (not on Data), the dataset on Train."""
    params: dict[str, str] = {}
    if teacher_mode():
        params["teacher"] = "1"
    if run_id and page != "data":
        params["run"] = run_id
    if page in ("data", "train") and st.query_params.get("data"):
        params["data"] = current_data_source()
    return params


def draw_navigation() -> None:
    """One link per page; the current run and teacher mode travel with the links."""
    run_id = current_run_id()
    for key, page in PAGES.items():
        st.page_link(page, label=page.title, icon=page.icon, query_params=carried_params(key, run_id),
                     width="stretch")


def draw_runs() -> None:
    """Active and queued runs first (status dot, progress, link), then the most recent others."""
    records = get_store().list()
    active = [r for r in records if r.status in ACTIVE]
    st.markdown("**Runs**")
    if not active:
        st.caption("No run is training. Start one on the Train page.")
    for record in active:
        run_link(record, "train", f"{record.status}{_progress_text(record.run_id)}")
    others = [r for r in records if r.status not in ACTIVE]
    if others:
        with st.expander(f"Recent runs ({len(others)})", expanded=False):
            for record in others[:RECENT_RUNS]:
                run_link(record, "evaluate" if record.status == "finished" else "train", record.status)
    if records:
        manage_runs(records)


def run_link(record: Any, page: str, detail: str) -> None:
    """One run: a coloured status dot, then a link to it (the run id goes in the URL)."""
    params = {"run": record.run_id, **({"teacher": "1"} if teacher_mode() else {})}
    dot, link = st.columns([1, 11], gap=None, vertical_alignment="center")
    dot.markdown(status_mark(record.status))
    link.page_link(PAGES[page], label=f"{record.name or record.run_id} · {detail}", query_params=params,
                   width="stretch", help=run_label(record))


def _progress_text(run_id: str) -> str:
    """`` · epoch 3/20`` for a run this process trains (empty when unknown)."""
    snap = get_manager().snapshot(run_id)
    if snap is None or not snap.epochs_total:
        return ""
    return f" · epoch {min(snap.epoch + 1, snap.epochs_total)}/{snap.epochs_total}" if snap.status == "running" else ""


def manage_runs(records: list) -> None:
    """Rename or delete a run (the current run is preselected)."""
    labels = {r.run_id: f"{r.name or r.run_id} ({r.status})" for r in records}
    current = current_run_id()
    with st.expander("Rename or delete a run", expanded=False):
        options = list(labels)
        run_id = st.selectbox("Run", options, index=options.index(current) if current in labels else 0,
                              format_func=labels.__getitem__, key="sidebar_manage_run")
        with st.form("sidebar_rename_form", clear_on_submit=True, border=False):
            name = st.text_input("New name", key="sidebar_new_name",
                                 placeholder="e.g. digits, big head, no augmentation")
            renamed = st.form_submit_button("Rename", key="sidebar_rename", width="stretch")
        if renamed:
            with user_errors():
                if not name.strip():
                    raise UserError("Type the new name first, then press Rename.")
                get_store().rename(run_id, name.strip())
                st.rerun()
        sure = st.checkbox("Yes, delete this run and its files", key="sidebar_delete_sure")
        if st.button("Delete", key="sidebar_delete", width="stretch", disabled=not sure,
                     help="Stops the run first if it is still training."):
            with user_errors():
                get_manager().delete(run_id)
                if current == run_id:
                    set_current_run_id(None)
                st.session_state.pop("sidebar_delete_sure", None)
                st.rerun()


def main() -> None:
    """Set up the page, draw the sidebar, run the selected page."""
    st.set_page_config(page_title="CNN Lab", page_icon=str(ROOT / "assets" / "icon.svg"), layout="wide",
                       initial_sidebar_state="expanded")
    st.logo(str(ROOT / "assets" / "logo.svg"), size="large")
    nav = st.navigation(list(PAGES.values()), position="hidden")
    with st.sidebar:
        draw_navigation()
        st.divider()
        draw_runs()
        st.divider()
        if teacher_toggle():
            # A markdown element of the sidebar, not st.html: style-only HTML goes to Streamlit's event
            # container, which a new tab's first page load can clear (teacher mode then showed 16 px text).
            st.markdown(TEACHER_CSS, unsafe_allow_html=True)
    nav.run()


main()
