"""Shared Streamlit helpers for the pages: engine objects (``ui.engine``) and common widgets (``ui.common``).

Lives outside ``pages/`` on purpose: files in ``pages/`` are pages (docs/architecture.md, pitfall 5).

Importing this package also keeps Streamlit out of its legacy ``pages/`` folder mode. Streamlit
turns that mode on for every new session's ``PagesManager`` while ``pages/`` exists and no script
has called ``st.navigation`` yet: on a fresh server the very first request to a deep link
(``/train?run=...``) then runs ``pages/train.py`` on its own - without ``app.py``'s frame and
with the auto-discovered page names - and ``AppTest`` resets the flag before *every* run. So:
new ``PagesManager`` objects start with the mode off, and if this import happens inside a run
that already started in legacy mode (the first request of a fresh server), that run is redone
through ``app.py``. Every page and the frame import ``ui`` first. Verified on a fresh server in
Chromium by tests/browser/test_smoke.py.

It also stops Streamlit from calling ``keras.backend.clear_session()`` after every script run
(``_clean_problem_modules``). That reset is meant for apps that build a model per rerun; here a
training thread runs next to the script thread, and the Train page's once-a-second fragment made
Streamlit clear TensorFlow's kernel cache and Keras' global state under it every second: measured,
the overfitting demo went from 40 epochs in ~30 s to 1 epoch in 60 s with the page open. The
engine clears its own sessions between runs (``core.models.runtime.fit_session``). Both patches are
checked by tests/app/test_streamlit_patches.py, which fails when a Streamlit upgrade moves what they patch.
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


def _keep_keras_state_between_reruns() -> None:
    """Replace Streamlit's after-run cleanup with one that leaves Keras alone (closes matplotlib only)."""
    try:
        from streamlit.runtime.scriptrunner import script_runner
    except ImportError:
        return
    original = getattr(script_runner, "_clean_problem_modules", None)
    if original is None or getattr(original, "_cnnlab", False):
        return

    def _clean_problem_modules() -> None:
        import sys

        if "matplotlib.pyplot" in sys.modules:
            try:
                sys.modules["matplotlib.pyplot"].close("all")
            except Exception:  # noqa: BLE001 - as Streamlit does: never crash the app here
                pass

    _clean_problem_modules._cnnlab = True  # type: ignore[attr-defined]
    script_runner._clean_problem_modules = _clean_problem_modules


_keep_keras_state_between_reruns()
_leave_legacy_pages_mode()
