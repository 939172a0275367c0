"""A full disk while run artifacts are written: no half file, no temp file, the old file stays, a plain sentence,
the run ends `failed` (and resumes once there is space), the manager and the next run carry on.

Real OS-level failures: a subprocess with RLIMIT_FSIZE (EFBIG, any user) and a 1 MB tmpfs (ENOSPC, needs the
right to mount; skipped otherwise). The monkeypatched cases cover what those cannot: a library that wraps
the error, and a failure at fsync.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from core.config import TrainConfig
from core.errors import UserError
from core.store.files import DiskFullError, atomic_path, atomic_write_bytes, is_disk_full
from core.store.runs import RunStore

ROOT = Path(__file__).resolve().parents[1]
SENTENCE = re.compile(r"^The disk is full: CNN Lab could not save (\S+) \((\d+(\.\d)?) (MB|GB) free\)\. "
                      r"Free some space or choose another home folder\.$")


def _temps(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".tmp" in p.name]


# ---------------------------------------------------------------- the writers (monkeypatched OSError)


def test_a_full_disk_at_fsync_keeps_the_old_file_and_leaves_no_temp(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "result.json"
    atomic_write_bytes(target, b"old")

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError) as err:
        atomic_write_bytes(target, b"new and longer")
    match = SENTENCE.match(str(err.value))
    assert match and match.group(1) == "result.json", str(err.value)
    assert target.read_bytes() == b"old" and not _temps(tmp_path)


def test_a_library_that_fails_half_way_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "predictions.npz"
    with atomic_path(target) as tmp:
        np.savez(tmp, probs=np.zeros(3))
    before = target.read_bytes()
    for error in (OSError(errno.ENOSPC, "No space left on device"),
                  RuntimeError("Can't write data (file write failed: errno = 28, No space left on device)")):
        with pytest.raises(DiskFullError, match="could not save predictions.npz"):
            with atomic_path(target) as tmp:
                tmp.write_bytes(b"half a file")  # what the library managed before the disk filled up
                raise error
        assert target.read_bytes() == before and not _temps(tmp_path)
    with pytest.raises(ValueError):  # any other failure is not dressed up as a full disk
        with atomic_path(target) as tmp:
            raise ValueError("a bug")
    assert not _temps(tmp_path)
    assert is_disk_full(OSError(errno.EDQUOT, "Disk quota exceeded")) and not is_disk_full(OSError(errno.EACCES, "x"))


def test_a_run_that_cannot_write_its_folder_leaves_no_run_behind(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = RunStore(home)

    def no_space(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    with pytest.raises(DiskFullError, match="could not save config.json"):
        store.create_run(TrainConfig())
    monkeypatch.undo()
    assert store.list() == [] and list((home / "runs").iterdir()) == []


# ---------------------------------------------------------------- a real full disk (tmpfs, ENOSPC)


@contextlib.contextmanager
def _tmpfs(folder: Path, size: str) -> Iterator[Path]:
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True, timeout=30)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({(mounted.stderr or 'not permitted').strip()[:80]})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, timeout=30)


def _fill(folder: Path, leave: int = 0) -> Path:
    """Fill the file system ``folder`` is on until ``leave`` bytes are free."""
    filler = folder / "filler"
    with open(filler, "ab") as f:
        with contextlib.suppress(OSError):
            while shutil.disk_usage(folder).free > leave:
                f.write(b"\0" * max(min(shutil.disk_usage(folder).free - leave, 1 << 16), 4096))
                f.flush()
    return filler


def test_a_really_full_disk_refuses_each_artifact_with_a_sentence_then_recovers(tmp_path: Path) -> None:
    import keras

    with _tmpfs(tmp_path / "disk", "1m") as disk:
        store = RunStore(disk / "home")
        run_id = store.create_run(TrainConfig())
        folder = store.run_dir(run_id)
        atomic_write_bytes(folder / "labels.json", b'["a", "b"]')
        model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(256)])  # ~66 KB of weights
        filler = _fill(disk, leave=16 * 1024)
        writers = {
            "labels.json": lambda: atomic_write_bytes(folder / "labels.json", b"x" * 200_000),
            "epoch_predictions.npz": lambda: _savez(folder / "epoch_predictions.npz", np.ones((100, 500), np.float32)),
            "model.keras": lambda: _keras_save(model, folder / "model.keras"),
        }
        for name, write in writers.items():
            with pytest.raises(DiskFullError) as err:
                write()
            match = SENTENCE.match(str(err.value))
            assert match and match.group(1) == name, str(err.value)
        assert (folder / "labels.json").read_bytes() == b'["a", "b"]'  # the previous good file stays
        assert not (folder / "model.keras").exists() and not _temps(disk)
        _fill(disk, leave=0)
        with pytest.raises(UserError, match="the disk is full or failing; free some space"):
            for i in range(100):  # SQLite's own "database or disk is full", through the store's sentence
                store.add_event(run_id, "info", "x" * 4000 + str(i))
        assert store.get(run_id).run_id == run_id  # reading still works
        filler.unlink()  # space is back: every write works again
        _keras_save(model, folder / "model.keras")
        store.add_event(run_id, "info", "space is back")
        assert keras.saving.load_model(folder / "model.keras").count_params() == model.count_params()
        store.close()


def _savez(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        np.savez(tmp, probs=array)


def _keras_save(model: object, path: Path) -> None:
    with atomic_path(path) as tmp:
        model.save(tmp)


# ---------------------------------------------------------------- a training run over the file-size limit (EFBIG)

# Training through the manager as the app does; once epoch 2 is recorded the file-size limit drops below the
# size of the next model.keras / checkpoint, so epoch 2's save fails with EFBIG (SIGXFSZ ignored). Then the
# limit is lifted ("space is back"): the next run and a resume of the failed one must finish.
CHILD = """
import hashlib, json, resource, signal, sys
from pathlib import Path
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # over the limit a write fails with EFBIG instead of killing us
from core.config import ConvBlock, CustomArchitecture, ModelSpec, SplitConfig, TrainConfig
from core.errors import UserError
from core.store.runs import RunStore
from core.training.manager import TrainingManager
from core.training import checkpoint

SOFT, HARD = resource.getrlimit(resource.RLIMIT_FSIZE)
store = RunStore(sys.argv[1])
before = {}
original = RunStore.add_epoch
def add_epoch(self, run_id, epoch, metrics):
    original(self, run_id, epoch, metrics)
    if epoch == 2 and not before:
        folder = self.run_dir(run_id)
        before.update({p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir() if p.is_file()})
        small = [p.stat().st_size for p in self.home.glob("runs.sqlite*")] + [
            p.stat().st_size for p in folder.glob("*") if p.suffix in (".json", ".npz")]
        before["limit"] = max(small) + 128 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (before["limit"], HARD))
RunStore.add_epoch = add_epoch

big = ModelSpec(name="custom", custom=CustomArchitecture(blocks=(ConvBlock(8),), head="flatten", dense_units=(512,)))
cfg = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=20), model=big, image_size=16,
                  batch_size=10, epochs=3, seed=0, restore_best=False)
manager = TrainingManager(store)
run_id = manager.start(cfg)
failed = manager.wait(run_id, 120)
folder = store.run_dir(run_id)
out = {"status": failed.status, "message": failed.message, "limit": before["limit"],
       "model_bytes": (folder / "model.keras").stat().st_size,
       "model_same": hashlib.sha256((folder / "model.keras").read_bytes()).hexdigest() == before.get("model.keras"),
       "temps": [str(p) for p in store.home.rglob("*") if ".tmp" in p.name],
       "checkpoint": checkpoint.checkpoint_epoch(folder), "resume_epoch": manager.snapshot(run_id).resume_epoch,
       "listed": [s.run_id for s in manager.list()]}
resource.setrlimit(resource.RLIMIT_FSIZE, (1, HARD))
try:
    store.add_event(run_id, "info", "x" * 10000)
except UserError as err:
    out["sqlite"] = str(err)
resource.setrlimit(resource.RLIMIT_FSIZE, (HARD, HARD))  # space is back
nxt = manager.start(cfg.replace(model=ModelSpec(name="tiny"), epochs=1))
out["next"] = manager.wait(nxt, 120).status
manager.resume(run_id)
resumed = manager.wait(run_id, 120)
out["resumed"] = [resumed.status, [e["epoch"] for e in store.epochs(run_id)], resumed.message]
manager.shutdown()
print("RESULT " + json.dumps(out), flush=True)
"""


@pytest.mark.slow
def test_a_run_over_the_file_size_limit_fails_with_a_sentence_and_the_manager_carries_on(home: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(home)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out["status"] == "failed"
    assert re.fullmatch(r"The file system refused a file this large: CNN Lab could not save (model\.keras|"
                        r"epoch-0002\.npz) \(the size limit for one file was reached; \S+ (MB|GB) free\)\. "
                        r"Free some space or choose another home folder\.", out["message"]), out["message"]
    assert out["model_same"] and out["model_bytes"] > out["limit"]  # epoch 1's model.keras stays, whole
    assert out["temps"] == []  # no half-written temp file anywhere
    assert out["checkpoint"] == 1 and out["resume_epoch"] == 1  # the last whole checkpoint, ready to resume
    assert len(out["listed"]) == 1
    assert out["sqlite"].endswith("the disk is full or failing; free some space.")
    assert out["next"] == "finished"  # the manager serves the next run once there is space
    assert out["resumed"][:2] == ["finished", [1, 2, 3]], out["resumed"]
