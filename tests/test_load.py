"""A class at once: several sessions start runs on the one process-wide manager the pages use.

One run trains, the others queue, all finish, no "database is locked", and the pages keep answering
while a run trains (their render time is printed). Sessions are threads that do what a page's polling
fragment does (start, snapshot, list, read epochs); pages are AppTest renders of the real app.
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import ui  # noqa: E402,F401  (the navigation fix, before any AppTest)
from core.config import ModelSpec, SplitConfig, TrainConfig  # noqa: E402

SESSIONS = 4
WAIT = 300.0
CFG = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=20, seed=0), model=ModelSpec(name="tiny"),
                  image_size=16, batch_size=10, epochs=4, use_feature_cache=False)


class Session(threading.Thread):
    """One browser tab: starts a run, then polls like the Train page's fragment until the run ends."""

    def __init__(self, manager: Any, index: int, go: threading.Event) -> None:
        super().__init__(name=f"session-{index}", daemon=True)
        self.manager, self.index, self.go = manager, index, go
        self.run_id: str | None = None
        self.errors: list[str] = []
        self.statuses: list[str] = []
        self.polls = 0

    def run(self) -> None:
        self.go.wait(30)
        try:
            self.run_id = self.manager.start(CFG.replace(seed=self.index, name=f"student {self.index}"))
            deadline = time.monotonic() + WAIT
            while time.monotonic() < deadline:
                snap = self.manager.snapshot(self.run_id)
                self.statuses.append(snap.status)
                self.manager.list()
                self.manager.store.epochs(self.run_id)
                self.polls += 1
                if not snap.active:
                    return
                threading.Event().wait(0.2)
            self.errors.append("timed out")
        except Exception as err:  # noqa: BLE001 - recorded and asserted on below
            self.errors.append(f"{type(err).__name__}: {err}")


@pytest.fixture
def app_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import streamlit as st

    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("CNNLAB_HOME", str(home))
    st.cache_resource.clear()
    yield home
    from ui.engine import _manager_for

    _manager_for(str(home.resolve())).shutdown(timeout=60)
    st.cache_resource.clear()


def _render(page: str, query: dict[str, str]) -> tuple[float, Any]:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    for k, v in query.items():
        at.query_params[k] = v
    at.switch_page(page)
    t0 = time.perf_counter()
    at.run()
    return time.perf_counter() - t0, at


@pytest.mark.slow
def test_sessions_queue_train_and_pages_keep_answering(app_home: Path) -> None:
    from ui.engine import get_manager

    manager = get_manager()  # the same cached object AppTest's pages get
    go = threading.Event()
    sessions = [Session(manager, i, go) for i in range(SESSIONS)]
    for s in sessions:
        s.start()
    go.set()
    _render("pages/data.py", {})  # warm-up (imports), not measured

    renders: list[tuple[str, float]] = []
    pages = ["pages/train.py", "pages/compare.py", "pages/evaluate.py", "pages/data.py"]
    while any(s.is_alive() for s in sessions) and len(renders) < 12:
        running = [r for r in manager.active() if r.status == "running"]
        if not running:
            threading.Event().wait(0.2)
            continue
        page = pages[len(renders) % len(pages)]
        seconds, at = _render(page, {"run": running[0].run_id})
        assert not at.exception, f"{page}: {at.exception}"
        still = manager.snapshot(running[0].run_id).status == "running"
        if still:  # the run trained during the whole render
            renders.append((page, seconds))
    for s in sessions:
        s.join(WAIT)

    errors = [e for s in sessions for e in s.errors]
    assert errors == [], errors
    assert not any("locked" in e for e in errors)
    snaps = [manager.snapshot(s.run_id) for s in sessions]
    assert [x.status for x in snaps] == ["finished"] * SESSIONS, [(x.status, x.message) for x in snaps]
    assert all(x.epoch == CFG.epochs for x in snaps)
    # One at a time: the training intervals never overlap, and every later run waited queued.
    spans = sorted((x.started, x.finished) for x in snaps)
    assert all(b[0] >= a[1] - 0.5 for a, b in zip(spans, spans[1:])), spans
    assert sum("queued" in s.statuses for s in sessions) >= SESSIONS - 1
    assert len(renders) >= 2, "no page render happened while a run was training"
    times = [t for _, t in renders]
    line = (f"load: {SESSIONS} sessions, {sum(s.polls for s in sessions)} polls, 0 errors; page renders while "
            f"training: n={len(times)} median {statistics.median(times):.2f} s, max {max(times):.2f} s "
            f"({', '.join(f'{Path(p).stem} {t:.2f}' for p, t in renders)})")
    print(line)
    assert max(times) < 30.0  # answering, not merely alive


# ---------------------------------------------------------------- queue limits (no TensorFlow: a held fake run)


@pytest.fixture
def held_runs(monkeypatch: pytest.MonkeyPatch):
    """Runs that 'train' until released, so the queue can be filled without TensorFlow."""
    import core.training.job as job

    release = threading.Event()

    def fake_run(job: Any) -> None:
        job.live.update(status="running")
        release.wait(30)
        job._finish("finished", None)

    monkeypatch.setattr(job.Job, "run", fake_run)
    yield release
    release.set()


def test_queue_limit_and_per_session_limit_refuse_with_a_sentence(held_runs: threading.Event, home: Path) -> None:
    from core.errors import UserError
    from core.store.runs import RunStore
    from core.training.manager import TrainingManager

    manager = TrainingManager(RunStore(home), max_queued=3, max_queued_per_owner=2)
    first = manager.start(CFG, owner="tab-a")  # trains; it is not waiting in the queue
    a1, a2 = manager.start(CFG, owner="tab-a"), manager.start(CFG, owner="tab-a")
    with pytest.raises(UserError, match=r"You already have 2 runs waiting in the queue \(the limit is 2\)"):
        manager.start(CFG, owner="tab-a")
    b1 = manager.start(CFG, owner="tab-b")  # another session still may, up to the queue's limit
    with pytest.raises(UserError, match=r"The training queue is full \(3 runs waiting\)"):
        manager.start(CFG, owner="tab-c")
    assert len(manager.store.list()) == 4  # refused starts left no run behind
    manager.stop(a1)  # a freed place can be used again
    a3 = manager.start(CFG, owner="tab-a")
    held_runs.set()
    assert [manager.wait(r, 30).status for r in (first, a2, b1, a3)] == ["finished"] * 4
    manager.shutdown(30)


def test_limits_come_from_the_environment(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    from core.store.runs import RunStore
    from core.training.manager import TrainingManager

    monkeypatch.setenv("CNNLAB_MAX_QUEUED", "5")
    monkeypatch.setenv("CNNLAB_MAX_QUEUED_PER_SESSION", "2")
    monkeypatch.setenv("CNNLAB_DISK_CAP_MB", "100")
    m = TrainingManager(RunStore(home))
    assert (m.max_queued, m.max_queued_per_owner, m.disk_cap_bytes) == (5, 2, 100 * 1024**2)
    monkeypatch.setenv("CNNLAB_MAX_QUEUED", "lots")
    assert TrainingManager(RunStore(home)).max_queued is None  # unreadable: off, not a crash
