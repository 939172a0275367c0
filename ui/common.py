"""Widgets and conventions every page shares: teacher mode, captions, user errors, the run in the URL."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import streamlit as st

from core.errors import UserError

TEACHER_KEY = "teacher_mode"
_RUN_STATE = "cnnlab_current_run"
_DATA_STATE = "cnnlab_data_source"
_SPLIT_STATE = "cnnlab_split_json"
DEFAULT_DATA_SOURCE = "builtin:shapes"
POLL_SECONDS = 1.0  # how often a page's one polling fragment redraws while something trains

# Markdown colours (st.markdown / st.caption); a plain "●" shows in every font, emoji do not.
STATUS_COLORS = {
    "queued": "gray",
    "running": "green",
    "stopping": "orange",
    "finished": "blue",
    "stopped": "violet",
    "failed": "red",
    "interrupted": "orange",
}


# ---------------------------------------------------------------- teacher mode


def teacher_mode() -> bool:
    """Whether teacher mode is on (the sidebar toggle, persisted in the URL as ``teacher=1``)."""
    if TEACHER_KEY in st.session_state:
        return bool(st.session_state[TEACHER_KEY])
    return st.query_params.get("teacher") == "1"


def _sync_teacher_param() -> None:
    """Mirror the toggle into the URL so a refresh or a shared link keeps the mode."""
    if st.session_state.get(TEACHER_KEY):
        st.query_params["teacher"] = "1"
    elif "teacher" in st.query_params:
        del st.query_params["teacher"]


def teacher_toggle() -> bool:
    """Draw the teacher-mode toggle (the frame calls this once per run, in the sidebar)."""
    if TEACHER_KEY not in st.session_state:
        st.session_state[TEACHER_KEY] = st.query_params.get("teacher") == "1"
    st.toggle(
        "Teacher mode",
        key=TEACHER_KEY,
        on_change=_sync_teacher_param,
        help="Large fonts and thick lines for a projector, plain-language captions, advanced controls folded away.",
    )
    _sync_teacher_param()  # page switches drop query params; put it back
    return bool(st.session_state[TEACHER_KEY])


def explain(text: str, teacher: str | None = None) -> None:
    """The caption under a number or chart; ``teacher`` is a plainer wording shown in teacher mode."""
    st.caption(teacher if (teacher and teacher_mode()) else text)


def advanced(label: str) -> Any:
    """A container for controls a class does not need: folded into an expander in teacher mode."""
    if teacher_mode():
        return st.expander(label, expanded=False)
    return st.container()


# ---------------------------------------------------------------- errors


@contextmanager
def user_errors() -> Iterator[None]:
    """Show a ``UserError`` raised inside as one ``st.error`` sentence (never a traceback)."""
    try:
        yield
    except UserError as err:
        st.error(str(err))


# ---------------------------------------------------------------- the run in the URL


def current_run_id() -> str | None:
    """The run this tab looks at: ``?run=`` in the URL, else the last one chosen in this tab."""
    run = st.query_params.get("run")
    if run:
        return str(run)
    value = st.session_state.get(_RUN_STATE)
    return str(value) if value else None


def set_current_run_id(run_id: str | None) -> None:
    """Put the run in the URL (and the tab's state) so a refresh or a shared link reattaches to it."""
    if run_id:
        st.session_state[_RUN_STATE] = run_id
        if st.query_params.get("run") != run_id:
            st.query_params["run"] = run_id
    else:
        st.session_state.pop(_RUN_STATE, None)
        if "run" in st.query_params:
            del st.query_params["run"]


STATUS_EMOJI = {
    "queued": "🟡",
    "running": "🟢",
    "stopping": "🟠",
    "finished": "🔵",
    "stopped": "⚪",
    "failed": "🔴",
    "interrupted": "🟤",
}


def status_dot(status: str) -> str:
    """A coloured emoji dot for a run status, for plain-text labels (selectboxes)."""
    return STATUS_EMOJI.get(status, "⚫")


def status_mark(status: str) -> str:
    """A coloured dot as Markdown (``:green[●]``) for st.markdown/st.caption: renders in every font."""
    return f":{STATUS_COLORS.get(status, 'gray')}[●]"


def run_label(run: Any) -> str:
    """One line naming a run: name, model, dataset and test accuracy when known."""
    config = run.config
    parts = [run.name or run.run_id, config.model.name, source_name(config.data)]
    accuracy = (run.result or {}).get("accuracy")
    if accuracy is not None:
        parts.append(f"acc {accuracy:.1%}")
    return " · ".join(parts)


def run_picker(
    label: str,
    key: str,
    statuses: Iterable[str] = ("finished",),
    default: str | None = None,
) -> str | None:
    """A selectbox of runs (name, model, dataset, accuracy) that follows and updates the URL's run id."""
    from ui.engine import get_store

    wanted = set(statuses)
    runs = [r for r in get_store().list() if r.status in wanted]
    if not runs:
        st.selectbox(label, ["no runs yet - train one on the Train page"], disabled=True, key=f"{key}__empty")
        return None
    labels = {r.run_id: run_label(r) + ("" if r.status == "finished" else f" ({r.status})") for r in runs}
    url_run = current_run_id()
    if url_run in labels and st.session_state.get(key) != url_run and st.query_params.get("run") == url_run:
        st.session_state[key] = url_run
    if st.session_state.get(key) not in labels:
        st.session_state[key] = default if default in labels else (url_run if url_run in labels else runs[0].run_id)

    def _on_change() -> None:
        set_current_run_id(st.session_state[key])

    return st.selectbox(label, list(labels), format_func=labels.__getitem__, key=key, on_change=_on_change)


# ---------------------------------------------------------------- numbers


def metric_card(label: str, value: Any, help_text: str) -> None:
    """A big number with its meaning written underneath (every number gets a caption)."""
    st.metric(label, value, help=help_text)
    st.caption(help_text)


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``42 s``, ``3 min 05 s``, ``1 h 02 min``; an em dash when unknown."""
    if seconds is None or seconds != seconds or seconds < 0:
        return "—"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {(seconds % 3600) // 60:02d} min"


# ---------------------------------------------------------------- the dataset chosen on the Data page


def source_name(source: str) -> str:
    """A dataset source as a person reads it ("shapes, 150 a class, 32 px", a library dataset's name)."""
    from core.data.naming import source_label
    from ui.engine import get_library

    return source_label(source, get_library())


def current_data_source() -> str:
    """The dataset source chosen on the Data page (``?data=`` in the URL, else the tab's choice)."""
    value = st.query_params.get("data") or st.session_state.get(_DATA_STATE)
    return str(value) if value else DEFAULT_DATA_SOURCE


def set_data_source(source: str) -> None:
    """Remember the chosen dataset source for the other pages (URL + tab state)."""
    st.session_state[_DATA_STATE] = source
    if st.query_params.get("data") != source:
        st.query_params["data"] = source


def current_split() -> Any:
    """The split settings chosen on the Data page (a ``SplitConfig``; defaults when none chosen)."""
    from core.config import SplitConfig

    text = st.session_state.get(_SPLIT_STATE)
    try:
        return SplitConfig.from_json(text) if text else SplitConfig()
    except (UserError, ValueError, TypeError):
        return SplitConfig()


def set_split(split: Any) -> None:
    """Remember the split settings for the other pages (tab state)."""
    st.session_state[_SPLIT_STATE] = split.to_json()
