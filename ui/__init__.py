"""Shared Streamlit helpers for the pages: engine objects (``ui.engine``) and common widgets (``ui.common``).

Lives outside ``pages/`` on purpose: files in ``pages/`` are pages (pitfall 5 in ARCHITECTURE.md).

Importing this package also keeps Streamlit out of its legacy ``pages/`` folder mode. Streamlit
turns that mode on for every new session's ``PagesManager`` while ``pages/`` exists and no script
has called ``st.navigation`` yet: on a fresh server the very first request to a deep link
(``/train?run=...``) then runs ``pages/train.py`` on its own - without ``app.py``'s frame and
with the auto-discovered page names - and ``AppTest`` resets the flag before *every* run. So:
new ``PagesManager`` objects start with the mode off, and if this import happens inside a run
that already started in legacy mode (the first request of a fresh server), that run is redone
through ``app.py``. Every page and the frame import ``ui`` first. Verified on a fresh server in
Chromium by tests/browser/test_smoke.py.
"""

from __future__ import annotations

from typing import Any


def _leave_legacy_pages_mode() -> None:
    """Make this app use ``st.navigation`` only, from the very first request."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:  # a Streamlit without these internals: nothing to fix
        return
    if not getattr(PagesManager, "_cnnlab_navigation_only", False):
        original_init = PagesManager.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original_init(self, *args, **kwargs)
            PagesManager.uses_pages_directory = False

        PagesManager.__init__ = __init__  # type: ignore[method-assign]
        PagesManager._cnnlab_navigation_only = True  # type: ignore[attr-defined]
    if PagesManager.uses_pages_directory:
        PagesManager.uses_pages_directory = False
        if get_script_run_ctx(suppress_warning=True) is not None:
            import streamlit as st

            st.rerun()


_leave_legacy_pages_mode()
