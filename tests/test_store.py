"""The run store: CRUD, atomic files, concurrent writers (threads and processes), crash marking, damage."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from core.config import TrainConfig
from core.errors import UserError
from core.store.files import atomic_path, atomic_write_bytes, atomic_write_json
from core.store.runs import RunStore, default_home, new_run_id, process_alive, process_start_token


def test_default_home_follows_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CNNLAB_HOME", str(tmp_path / "h"))
    assert default_home() == tmp_path / "h"
    monkeypatch.delenv("CNNLAB_HOME")
    assert default_home() == Path.home() / ".cnnlab"


def test_run_ids_are_readable_and_sortable() -> None:
    a, b = new_run_id(1_700_000_000), new_run_id(1_700_000_001)
    assert re.fullmatch(r"\d{8}-\d{6}-[0-9a-f]{4}", a)
    assert a[:15] < b[:15]


def test_crud_round_trip(home: Path) -> None:
    store = RunStore(home)
    cfg = TrainConfig(data="builtin:shapes", epochs=3, group="g1")
    run_id = store.create_run(cfg, name="first")
    rec = store.get(run_id)
    assert rec is not None and rec.status == "queued" and rec.name == "first" and rec.group == "g1"
    assert rec.config == cfg
    assert json.loads((store.run_dir(run_id) / "config.json").read_text())["epochs"] == 3

    store.set_status(run_id, "running")
    store.add_epoch(run_id, 1, {"loss": 1.5, "accuracy": 0.4})
    store.add_epoch(run_id, 2, {"loss": 1.0, "accuracy": float("nan")})
    store.add_batch(run_id, 1, 3, {"x": 0.5, "loss": 1.7})
    store.add_event(run_id, "info", "hello")
    store.set_result(run_id, {"accuracy": 0.9, "per_class": []})
    store.set_status(run_id, "finished", "done")
    store.rename(run_id, "renamed")
    store.set_pinned(run_id, True)

    rec = store.get(run_id)
    assert (rec.status, rec.message, rec.name, rec.pinned) == ("finished", "done", "renamed", True)
    assert rec.started is not None and rec.finished >= rec.started
    assert rec.result == {"accuracy": 0.9, "per_class": []}
    assert store.epochs(run_id) == [
        {"epoch": 1, "loss": 1.5, "accuracy": 0.4},
        {"epoch": 2, "loss": 1.0, "accuracy": None},  # NaN stored as null: the column stays JSON
    ]
    assert store.batches(run_id) == [{"epoch": 1, "batch": 3, "x": 0.5, "loss": 1.7}]
    assert [e["text"] for e in store.events(run_id)] == ["hello"]
    assert json.loads(json.dumps(rec.to_dict()))["config"]["data"] == "builtin:shapes"

    second = store.create_run(cfg)
    assert [r.run_id for r in store.list()] == [second, run_id]  # newest first

    store.delete(run_id)
    assert store.get(run_id) is None and not store.run_dir(run_id).exists()
    assert store.epochs(run_id) == [] and store.events(run_id) == []
    assert [r.run_id for r in store.list()] == [second]


def test_run_dir_refuses_path_tricks(home: Path) -> None:
    store = RunStore(home)
    for bad in ("../x", "..", "a/b", ""):
        with pytest.raises(UserError):
            store.run_dir(bad)


def test_atomic_writes_replace_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "a.json"
    atomic_write_json(target, {"a": 1})
    atomic_write_bytes(target, b'{"a": 2}')
    assert json.loads(target.read_text()) == {"a": 2}
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert json.loads(target.read_text()) == {"a": 2}  # the failed write left the old file
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]  # and no temp file


def test_concurrent_thread_writers_never_see_locked(home: Path) -> None:
    store = RunStore(home)
    ids = [store.create_run(TrainConfig()) for _ in range(4)]
    errors: list[BaseException] = []

    def writer(run_id: str) -> None:
        try:
            for e in range(40):
                store.add_epoch(run_id, e, {"loss": float(e)})
                store.add_event(run_id, "info", f"e{e}")
                store.list()
        except BaseException as err:  # noqa: BLE001 - the assertion below reports it
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(r,)) for r in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert all(len(store.epochs(r)) == 40 and len(store.events(r)) == 40 for r in ids)


_WRITER = """
import sys
from core.store.runs import RunStore
home, run_id, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = RunStore(home)
for e in range(n):
    store.add_epoch(run_id, e, {"loss": float(e)})
    store.add_batch(run_id, e, 0, {"loss": float(e)})
"""


def test_concurrent_process_writers(home: Path) -> None:
    # Plain interpreters, not multiprocessing: spawn re-runs whatever __main__ is (AppTest leaves app.py there).
    store = RunStore(home)
    ids = [store.create_run(TrainConfig()) for _ in range(3)]
    root = Path(__file__).resolve().parents[1]
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(home), r, "60"], cwd=root,
                         stderr=subprocess.PIPE, text=True)
        for r in ids
    ]
    for e in range(60):  # this process writes at the same time
        store.add_event(ids[0], "info", str(e))
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    assert all(len(store.epochs(r)) == 60 and len(store.batches(r)) == 60 for r in ids)


def test_mark_interrupted_only_touches_dead_owners(home: Path) -> None:
    store = RunStore(home)
    mine = store.create_run(TrainConfig())
    store.set_status(mine, "running")
    # A run written by a child process that has exited since.
    code = (
        "import sys; from core.store.runs import RunStore; from core.config import TrainConfig;"
        "s = RunStore(sys.argv[1]); r = s.create_run(TrainConfig()); s.set_status(r, 'running');"
        "s.add_epoch(r, 1, {'loss': 1.0}); print(r)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(home)], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    dead = out.stdout.strip().splitlines()[-1]
    finished = store.create_run(TrainConfig())
    store.set_status(finished, "finished")

    assert store.mark_interrupted() == [dead]
    assert store.get(dead).status == "interrupted" and "stopped" in store.get(dead).message
    assert store.epochs(dead) == [{"epoch": 1, "loss": 1.0}]  # its epochs so far are kept
    assert store.get(mine).status == "running"  # our own live run is left alone
    assert store.get(finished).status == "finished"
    assert store.mark_interrupted() == []


def test_process_identity() -> None:
    me = os.getpid()
    assert process_alive(me, process_start_token(me))
    assert not process_alive(me, "not-my-start-time") or process_start_token(me) == ""
    assert not process_alive(None, None)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid, "")


def test_corrupt_database_is_one_sentence(tmp_path: Path) -> None:
    home = tmp_path / "h"
    home.mkdir()
    (home / "runs.sqlite").write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(UserError, match="damaged"):
        RunStore(home)


def test_unwritable_home_is_one_sentence(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="home folder"):
        RunStore(blocker / "home")
