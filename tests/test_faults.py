"""Faults a classroom machine meets: read-only or full storage, a deleted run folder, a corrupt model file, a
corrupt SQLite file. Each gives one plain sentence and the rest of the app keeps working.

kill -9 mid-training is tests/test_crash_recovery.py.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from core.config import SplitConfig, TrainConfig
from core.errors import UserError
from core.explain.metrics import load_predictions, run_predictions
from core.serving.predictor import Predictor
from core.store.runs import RunStore
from core.training.manager import TrainingManager, train_to_completion

TINY = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=20), image_size=12, batch_size=10,
                   epochs=1, seed=0)


def _plain(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert text and "\n" not in text and "Traceback" not in text, text
    return text


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A home with two finished runs: one to damage, one that must keep working."""
    home = tmp_path_factory.mktemp("faults") / "home"
    store = RunStore(home)
    first = train_to_completion(TINY, store)["run_id"]
    second = train_to_completion(TINY.replace(seed=1), store)["run_id"]
    store.close()
    return home, first, second


@pytest.fixture
def copy_home(trained: tuple[Path, str, str], tmp_path: Path) -> tuple[Path, str, str]:
    """A private copy of the trained home, so each test damages its own."""
    home, first, second = trained
    dst = tmp_path / "home"
    shutil.copytree(home, dst)
    return dst, first, second


def _still_works(store: RunStore, good: str) -> None:
    """The intact run lists, its metrics read and its model predicts."""
    assert good in [r.run_id for r in store.list()]
    assert store.get(good).status == "finished" and len(store.epochs(good)) == 1
    probs = Predictor.from_run(store, good).predict([np.zeros((12, 12, 1), np.uint8)])
    assert probs.shape == (1, 10) and np.isclose(probs.sum(), 1.0, atol=1e-4)


@pytest.mark.slow
def test_a_deleted_run_folder(copy_home: tuple[Path, str, str]) -> None:
    home, damaged, good = copy_home
    store = RunStore(home)
    shutil.rmtree(store.run_dir(damaged))
    with pytest.raises(UserError) as err:
        Predictor.from_run(store, damaged)
    assert "has no saved model" in _plain(err)
    assert run_predictions(store, damaged, "test") is None  # the evaluate page shows "no predictions"
    manager = TrainingManager(store)  # a restart with the folder gone
    assert manager.snapshot(damaged).status == "finished" and manager.snapshot(damaged).history["loss"]
    manager.delete(damaged)  # and the run can still be deleted
    assert store.get(damaged) is None
    _still_works(store, good)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_a_corrupt_model_file(copy_home: tuple[Path, str, str], damage: str) -> None:
    home, damaged, good = copy_home
    store = RunStore(home)
    model = store.run_dir(damaged) / "model.keras"
    data = model.read_bytes()
    model.write_bytes({"garbage": b"PK\x03\x04" + os.urandom(400), "truncated": data[: len(data) // 2],
                       "empty": b""}[damage])
    with pytest.raises(UserError) as err:
        Predictor.from_run(store, damaged)
    assert "model.keras" in _plain(err)
    _still_works(store, good)


def test_corrupt_predictions_file(copy_home: tuple[Path, str, str]) -> None:
    home, damaged, good = copy_home
    store = RunStore(home)
    (store.run_dir(damaged) / "predictions.npz").write_bytes(b"PK\x03\x04 not numpy")
    with pytest.raises(UserError) as err:
        load_predictions(store.run_dir(damaged) / "predictions.npz")
    _plain(err)
    assert run_predictions(store, good, "test") is not None


def test_a_corrupt_sqlite_file(copy_home: tuple[Path, str, str], tmp_path: Path) -> None:
    home, damaged, good = copy_home
    db = home / "runs.sqlite"
    for extra in ("-wal", "-shm"):
        Path(f"{db}{extra}").unlink(missing_ok=True)
    db.write_bytes(b"this is not a database" * 200)
    with pytest.raises(UserError) as err:
        RunStore(home)
    assert "damaged" in _plain(err) and "move it away" in str(err.value)
    # Doing what the sentence says: a new empty store starts, and the run folders are still on disk.
    db.rename(tmp_path / "runs.sqlite.damaged")
    store = RunStore(home)
    assert store.list() == []
    assert (store.run_dir(good) / "model.keras").is_file()
    run_id = store.create_run(TINY, "after the repair")
    assert store.get(run_id).status == "queued"


def test_a_home_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError) as err:
        RunStore(blocker / "home")
    assert "Cannot create CNN Lab's home folder" in _plain(err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions; the SQLite read-only test below runs")
def test_a_read_only_home_folder(copy_home: tuple[Path, str, str]) -> None:
    home, _, good = copy_home
    for p in [home, *home.rglob("*")]:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        with pytest.raises(UserError) as err:
            RunStore(home).create_run(TINY)
        _plain(err)
    finally:
        for p in [home, *home.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_a_read_only_database_refuses_writes_and_keeps_reading(copy_home: tuple[Path, str, str]) -> None:
    home, _, good = copy_home
    store = RunStore(home)
    store._conn().execute("PRAGMA query_only = ON")  # this thread's connection now behaves like a read-only file
    with pytest.raises(UserError) as err:
        store.create_run(TINY)
    assert "read-only" in _plain(err)
    with pytest.raises(UserError):
        store.rename(good, "new name")
    _still_works(store, good)


def test_a_full_disk_refuses_writes_and_keeps_reading(copy_home: tuple[Path, str, str]) -> None:
    home, _, good = copy_home
    store = RunStore(home)
    pages = store._conn().execute("PRAGMA page_count").fetchone()[0]
    store._conn().execute(f"PRAGMA max_page_count = {pages}")  # SQLite's own "database or disk is full"
    with pytest.raises(UserError) as err:
        for i in range(200):
            store.add_event(good, "info", "x" * 4000 + str(i))
    assert "disk is full" in _plain(err)
    _still_works(store, good)


def test_a_disk_cap_removes_the_oldest_unpinned_artifacts_with_a_message(home: Path) -> None:
    store = RunStore(home)
    ids = []
    for i in range(4):
        rid = store.create_run(TINY, f"run {i}")
        (store.run_dir(rid) / "model.keras").write_bytes(b"\0" * (1 << 20))  # 1 MB each
        store.add_epoch(rid, 1, {"loss": 1.0})
        store.set_status(rid, "finished")
        ids.append(rid)
    store.set_pinned(ids[0], True)  # the oldest is pinned: kept whatever happens
    live = store.create_run(TINY, "still queued")  # active runs are never cleaned
    cleaned = store.enforce_disk_cap(int(2.5 * (1 << 20)))
    assert cleaned == [ids[1], ids[2]]  # oldest unpinned first, until the store fits
    assert (store.run_dir(ids[0]) / "model.keras").is_file() and (store.run_dir(ids[3]) / "model.keras").is_file()
    assert store.run_dir(live).is_dir()
    for rid in cleaned:
        assert not store.run_dir(rid).exists()
        assert store.get(rid).status == "finished" and store.epochs(rid)  # curves stay
        assert "removed to keep the run store under 2 MB" in store.events(rid)[-1]["text"]
    assert store.enforce_disk_cap(int(2.5 * (1 << 20))) == []  # already under the cap


def test_the_manager_applies_the_disk_cap_after_each_run(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import core.training.job as job

    def fake_run(job) -> None:
        (job.folder / "model.keras").write_bytes(b"\0" * (1 << 20))
        job._finish("finished", None)

    monkeypatch.setattr(job.Job, "run", fake_run)
    manager = TrainingManager(RunStore(home), disk_cap_bytes=int(1.5 * (1 << 20)))
    first = manager.start(TINY)
    manager.wait(first, 30)
    second = manager.start(TINY)
    manager.wait(second, 30)
    manager.shutdown(30)
    assert not manager.store.run_dir(first).exists() and manager.store.run_dir(second).is_dir()


def test_a_run_too_big_for_memory_is_refused_with_a_sentence(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import keras

    from core.training.memory import check_training_memory, estimate_training_memory

    model = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(16, 3), keras.layers.Flatten(),
                              keras.layers.Dense(10)])
    small, big = estimate_training_memory(model, 8), estimate_training_memory(model, 64)
    assert 0 < small < big  # grows with the batch
    assert check_training_memory(model, 8, available=10 * big) == small
    with pytest.raises(UserError, match=r"would need about .* GB of memory .* try a batch size of \d+"):
        check_training_memory(model, 64, available=big // 2)
    # Through the manager: the run fails with that sentence, the server (this process) carries on.
    monkeypatch.setenv("CNNLAB_MEMORY_MB", "1")
    manager = TrainingManager(RunStore(home))
    snap = manager.wait(manager.start(TINY.replace(image_size=64, batch_size=512)), 120)
    manager.shutdown(30)
    assert snap.status == "failed" and "GB of memory" in snap.message and "\n" not in snap.message
