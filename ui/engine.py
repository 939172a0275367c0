"""The one place pages get engine objects from: process-wide, cached per CNN Lab home.

Every factory is keyed by the home folder, so tests that point ``$CNNLAB_HOME`` at a temp folder get
a fresh store and manager without touching the cache of another home. Engine modules are imported
lazily so a page that never trains never pays for TensorFlow.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import streamlit as st

if TYPE_CHECKING:  # pragma: no cover - type hints only
    from core.config import SplitConfig
    from core.data.dataset import Dataset
    from core.data.library import DatasetLibrary
    from core.serving.predictor import Predictor
    from core.store.runs import RunStore
    from core.training.manager import TrainingManager


def home_dir() -> Path:
    """The CNN Lab home in use: ``$CNNLAB_HOME`` if set, else the engine's default (``~/.cnnlab``)."""
    env = os.environ.get("CNNLAB_HOME")
    if env:
        return Path(env).expanduser().resolve()
    from core.store.runs import default_home

    return Path(default_home()).expanduser().resolve()


@st.cache_resource(show_spinner=False)
def _store_for(home: str) -> RunStore:
    """One RunStore per home folder for the whole server process."""
    from core.store.runs import RunStore

    store = RunStore(Path(home))
    # Runs left "running" by a process that died (a server restart) would otherwise look alive.
    store.mark_interrupted()
    return store


@st.cache_resource(show_spinner=False)
def _manager_for(home: str) -> TrainingManager:
    """One TrainingManager per home: runs outlive tabs and reruns (docs/architecture.md, pitfall 2)."""
    from core.training.manager import TrainingManager

    return TrainingManager(_store_for(home))


def get_store() -> RunStore:
    """The process-wide run store for the current home."""
    return _store_for(str(home_dir()))


def session_owner() -> str | None:
    """This browser session's id: the manager's per-session queue limit counts runs by it."""
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else None


def get_manager() -> TrainingManager:
    """The process-wide training manager (background training threads) for the current home."""
    return _manager_for(str(home_dir()))


@st.cache_resource(show_spinner=False, max_entries=4)
def _predictor_for(home: str, run_id: str) -> Predictor:
    """A loaded model for one finished run; a few kept in memory, least recently used dropped."""
    from core.serving.predictor import Predictor

    return Predictor.from_run(_store_for(home), run_id)


def get_predictor(run_id: str) -> Predictor:
    """A thread-safe predictor for a finished run (cached, at most ~4 models in memory)."""
    return _predictor_for(str(home_dir()), run_id)


@st.cache_resource(show_spinner=False, max_entries=6)
def _dataset_for(home: str, source: str, split_json: str) -> Dataset:
    """A loaded dataset, keyed by source and split so equal settings give the same object."""
    from core.config import SplitConfig
    from core.data.sources import load_dataset

    return load_dataset(source, SplitConfig.from_json(split_json), home=Path(home))


def load_dataset_cached(source: str, split_config: SplitConfig | None = None) -> Dataset:
    """``core.data.sources.load_dataset`` cached by source + split JSON; raises ``UserError`` like it."""
    from core.config import SplitConfig

    split = split_config if split_config is not None else SplitConfig()
    return _dataset_for(str(home_dir()), source.strip(), split.to_json())


def get_library() -> DatasetLibrary:
    """The dataset library of the current home (it reads its list from disk each time: never stale)."""
    from core.data.library import DatasetLibrary

    return DatasetLibrary(home_dir())


def forget_cached_datasets() -> None:
    """Drop every cached dataset and report after a library dataset was deleted or its images changed."""
    _dataset_for.clear()
    st.cache_data.clear()
