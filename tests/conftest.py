"""Shared test setup: a private CNN Lab home and Keras home per session, quiet TensorFlow, no network."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="cnnlab-tests-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ["CNNLAB_HOME"] = str(_SESSION_TMP / "home")
# Keras looks for (and caches) downloads here; tests must never touch the user's ~/.keras.
os.environ["KERAS_HOME"] = str(_SESSION_TMP / "keras")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(_SESSION_TMP, ignore_errors=True)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A fresh, empty CNN Lab home folder for one test."""
    path = tmp_path / "cnnlab-home"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """``../shared`` beside the repository; tests that need it skip with a reason when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present beside the repository (real datasets/weights unavailable)")
    return SHARED


@pytest.fixture(scope="session")
def imagenet_keras_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A KERAS_HOME holding the offline MobileNetV2-0.35 ImageNet weights from ../shared (skips if absent)."""
    src = SHARED / "keras" / "models"
    if not src.is_dir():
        pytest.skip("../shared/keras/models is absent: no offline ImageNet weights")
    dst = Path(os.environ["KERAS_HOME"]) / "models"
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if not (dst / f.name).exists():
            shutil.copy(f, dst / f.name)
    return dst.parent
