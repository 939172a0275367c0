"""Shared Streamlit helpers for the pages: engine objects (``ui.engine``) and common widgets (``ui.common``).

Lives outside ``pages/`` on purpose: files in ``pages/`` are pages (pitfall 5 in ARCHITECTURE.md).

Importing this package also switches Streamlit out of its legacy ``pages/`` folder mode. A fresh
server starts in that mode because ``pages/`` exists, and until some script calls ``st.navigation``
the very first request to a deep link (``/train?run=...``) runs ``pages/train.py`` on its own,
without ``app.py``'s frame, and shows the auto-discovered page names. Every page and the frame
import ``ui`` first, so that first request flips the mode off and reruns: the rerun goes through
``app.py`` and ``st.navigation`` like every later request (tested in tests/browser/test_smoke.py).
"""

from __future__ import annotations


def _leave_legacy_pages_mode() -> None:
    """Rerun through ``app.py`` if this server has not yet seen ``st.navigation`` (fresh start)."""
    try:
        from streamlit.runtime.pages_manager import PagesManager
        from streamlit.runtime.scriptrunner import get_script_run_ctx
    except ImportError:  # a Streamlit without this internal: nothing to fix
        return
    if PagesManager.uses_pages_directory and get_script_run_ctx(suppress_warning=True) is not None:
        import streamlit as st

        PagesManager.uses_pages_directory = False
        st.rerun()


_leave_legacy_pages_mode()
