"""AppTest helpers: a private CNN Lab home per test, fresh Streamlit caches, tiny real engine runs."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `pytest` (not only `python -m pytest`) must find core/, ui/ and tests.app
    sys.path.insert(0, str(ROOT))

import ui  # noqa: E402,F401  (installs the navigation-only fix before any AppTest run; see ui/__init__.py)

APP = str(ROOT / "app.py")
TIMEOUT = 180  # the first page that imports TensorFlow in a test process is slow on 2 shared cores


def _clear_streamlit_caches() -> None:
    import streamlit as st

    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture
def app_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """CNNLAB_HOME in a temp folder and empty Streamlit caches; training threads stopped afterwards."""
    home = tmp_path / "cnnlab-home"
    home.mkdir()
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    _clear_streamlit_caches()
    yield home
    from ui.engine import _manager_for

    _manager_for(str(home.resolve())).shutdown(timeout=60)
    _clear_streamlit_caches()


def make_app(page: str | None = None, query: dict[str, str] | None = None) -> Any:
    """An AppTest of the whole app (frame + navigation), optionally on ``page`` (e.g. "pages/train.py")."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    for key, value in (query or {}).items():
        at.query_params[key] = value
    if page:
        at.switch_page(page)
    return at


def tiny_config(**changes: Any) -> Any:
    """A run that trains in seconds: digits at 16 px, the tiny preset, one epoch."""
    from core.config import ModelSpec, SplitConfig, TrainConfig

    base = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=20, seed=0),
                       model=ModelSpec(name="tiny"), image_size=16, batch_size=16, epochs=1,
                       use_feature_cache=False, name="tiny test run")
    return base.replace(**changes)


def record_run(home: Path, status: str = "finished", **changes: Any) -> str:
    """A run record in the store without training (for the sidebar and navigation tests)."""
    from ui.engine import _store_for

    store = _store_for(str(home.resolve()))
    run_id = store.create_run(tiny_config(**changes), name=changes.get("name", "tiny test run"))
    if status != "queued":
        store.set_status(run_id, status)
    return run_id


def train_finished_run(home: Path, **changes: Any) -> str:
    """Train a tiny run to the end through the same cached manager the pages use; return its id."""
    from ui.engine import _manager_for

    manager = _manager_for(str(home.resolve()))
    run_id = manager.start(tiny_config(**changes))
    snap = manager.wait(run_id, timeout=TIMEOUT)
    assert snap.status == "finished", snap.message
    return run_id


def wait_until(predicate: Any, timeout: float = 60.0, step: float = 0.2) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes (no sleeps)."""
    event = threading.Event()
    waited = 0.0
    while not predicate():
        if waited >= timeout:
            return False
        event.wait(step)
        waited += step
    return True


def texts(at: Any) -> str:
    """All markdown, captions, titles, alerts of a run, joined: for 'is this sentence shown' checks."""
    parts: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "success", "error"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


@pytest.fixture(scope="module")
def runs() -> Iterator[tuple[Path, list[str]]]:
    """CNNLAB_HOME pointed at the two trained tiny runs shared by the Evaluate/Compare/Classify tests."""
    if str(Path(__file__).parent) not in sys.path:  # the page tests import it by this same name
        sys.path.insert(0, str(Path(__file__).parent))
    from eval_pages_runs import shared_home

    home, ids = shared_home()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CNNLAB_HOME", str(home))
        yield home, ids
