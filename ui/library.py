"""The dataset library on the Data page: the list, pick, rename, delete (with confirmation) and uploads into it."""

from __future__ import annotations

import datetime as dt
from typing import Any, Callable

import pandas as pd
import streamlit as st

from core.data.library import LibraryEntry, library_id
from core.errors import UserError
from ui.common import explain, user_errors
from ui.engine import forget_cached_datasets, get_library, get_store

_UPLOADED = "library_uploaded"   # upload file id -> entry id: a rerun does not hash the zip again
_CONFIRM = "library_confirm_delete"
KIND_WORDS = {"zip": "uploaded zip", "recorded": "recorded"}


def library_sources() -> list[str]:
    """The sources of every library dataset, newest first (the Train page's choices)."""
    return [e.source for e in get_library().list()]


def added_text(entry: LibraryEntry) -> str:
    """When a dataset was added, as a person writes it (``2 Dec 2026, 15:40``)."""
    stamp = dt.datetime.fromtimestamp(entry.added)
    return f"{stamp.day} {stamp:%b %Y, %H:%M}"


def library_table(entries: list[LibraryEntry]) -> None:
    """Name, classes, images, kind and date of every dataset in the library."""
    rows = [{"name": e.name, "classes": e.classes, "images": e.images, "kind": KIND_WORDS.get(e.kind, e.kind),
             "added": added_text(e)} for e in entries]
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch", key="library_table")
    explain("Every zip you upload (and every dataset you record) is kept here once, for every tab and after a "
            "restart; the images column counts the pictures that can be read.")


def library_picker(current: str) -> str | None:
    """The library's list and the dataset picked from it; None while the library is empty."""
    entries = get_library().list()
    if not entries:
        st.info("Your library is empty: upload a zip and it is kept here, for every tab and after a restart.")
        return None
    library_table(entries)
    names = {e.id: e.name for e in entries}
    chosen = library_id(current)
    if st.session_state.get("library_pick") not in names:
        st.session_state["library_pick"] = chosen if chosen in names else entries[0].id
    entry_id = st.selectbox("Dataset", list(names), format_func=names.__getitem__, key="library_pick")
    entry = next(e for e in entries if e.id == entry_id)
    manage_entry(entry)
    return entry.source


def manage_entry(entry: LibraryEntry) -> None:
    """Rename the chosen dataset, or delete it after saying what happens to the runs that used it."""
    with st.expander(f"Rename or delete '{entry.name}'", expanded=st.session_state.get(_CONFIRM) == entry.id):
        with user_errors():
            with st.form("library_rename_form", clear_on_submit=True, border=False):
                name = st.text_input("New name", key="library_new_name", placeholder="e.g. hand signs")
                if st.form_submit_button("Rename", key="library_rename"):
                    get_library().rename(entry.id, name)
                    forget_cached_datasets()
                    st.rerun()
            if st.session_state.get(_CONFIRM) != entry.id:
                if st.button("Delete this dataset", key="library_delete", icon=":material/delete:"):
                    st.session_state[_CONFIRM] = entry.id
                    st.rerun()
                return
            confirm_delete(entry)


def confirm_delete(entry: LibraryEntry) -> None:
    """The confirmation: what is lost, which runs keep what; refused while a run trains on it."""
    runs = [r for r in get_store().list() if library_id(r.config.data) == entry.id]
    training = [r for r in runs if r.status in ("queued", "running", "stopping")]
    if training:
        st.session_state.pop(_CONFIRM, None)
        raise UserError(f"'{entry.name}' cannot be deleted while {len(training)} run(s) train on it: stop them "
                        "on the Train page first.")
    used = (f" {len(runs)} run(s) trained on it: they keep their scores, curves and models, but cannot be "
            "resumed or show its pictures any more." if runs else " No run has used it.")
    st.warning(f"Delete '{entry.name}' ({entry.images:,} images)? Its pictures are removed from CNN Lab's folder."
               + used)
    cols = st.columns(2)
    if cols[0].button("Yes, delete it", key="library_delete_yes", type="primary"):
        get_library().delete(entry.id)
        st.session_state.pop(_CONFIRM, None)
        st.session_state.pop("library_pick", None)
        forget_cached_datasets()
        st.rerun()
    if cols[1].button("Keep it", key="library_delete_no"):
        st.session_state.pop(_CONFIRM, None)
        st.rerun()


def upload_to_library() -> str | None:
    """An uploaded zip, added to the library (stored once, by content); its source, or None before an upload."""
    upload = st.file_uploader("A .zip with one folder per class", type=["zip"], key="data_zip")
    explain("The zip is unpacked safely, checked file by file and kept in your library under its name.")
    if upload is None:
        return None
    known: dict[str, str] = st.session_state.setdefault(_UPLOADED, {})
    library = get_library()
    entry = library.get(known.get(upload.file_id, ""))
    if entry is None:
        entry = library.add_zip(upload.getvalue(), file_name=upload.name)
        known[upload.file_id] = entry.id
    st.caption(f"Kept in your library as '{entry.name}': find it under Your datasets, rename or delete it there.")
    return entry.source


def library_cached(source: str, key: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` kept with a library dataset under ``key`` (across restarts); computed each time otherwise."""
    entry_id = library_id(source)
    if entry_id is None:
        return compute()
    return get_library().cached(entry_id, key, compute)
