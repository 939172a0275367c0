"""The two Streamlit internals ``ui/__init__.py`` patches: these fail loudly when an upgrade moves them.

Each patch is silent at run time when its target is missing (the app must still start), so these tests are
what notices: the internals are still where the patch expects them, and after ``import ui`` the patch is
in place and does what it is for.
"""

from __future__ import annotations

import inspect
from pathlib import Path

import keras

import ui  # noqa: F401  (applies the patches)

ROOT = Path(__file__).resolve().parents[2]


def test_streamlit_still_has_the_pages_manager_flag_the_navigation_patch_sets() -> None:
    from streamlit.runtime import pages_manager
    from streamlit.runtime.scriptrunner import get_script_run_ctx, script_runner

    assert callable(get_script_run_ctx)
    assert hasattr(pages_manager.PagesManager, "uses_pages_directory")
    # Streamlit decides the legacy pages/ mode by reading this class attribute in the script runner.
    assert "PagesManager.uses_pages_directory" in inspect.getsource(script_runner)


def test_a_new_pages_manager_starts_without_the_legacy_pages_folder_mode() -> None:
    from streamlit.runtime.pages_manager import PagesManager

    assert getattr(PagesManager, "_cnnlab_navigation_only", False)
    PagesManager.uses_pages_directory = None  # what a fresh server process starts with
    manager = PagesManager(str(ROOT / "app.py"))  # this folder has pages/, which would turn the mode on
    assert manager is not None and PagesManager.uses_pages_directory is False


def test_streamlit_still_cleans_up_after_each_run_through_the_function_we_replace() -> None:
    from streamlit.runtime.scriptrunner import script_runner

    assert "_clean_problem_modules" in inspect.getsource(script_runner.ScriptRunner)
    assert getattr(script_runner._clean_problem_modules, "_cnnlab", False)


def test_the_cleanup_after_a_rerun_leaves_keras_state_alone() -> None:
    from streamlit.runtime.scriptrunner import script_runner

    first = keras.layers.Dense(1)
    script_runner._clean_problem_modules()  # what Streamlit calls after every script run
    second = keras.layers.Dense(1)
    # Keras numbers auto-named layers from its global state; clear_session would restart the count.
    assert first.name != second.name and second.name != "dense"
