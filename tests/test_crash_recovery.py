"""kill -9 mid-run: earlier runs stay intact and loadable, the killed run shows `interrupted` after a restart
and resumes from its last checkpoint under the same id."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from core.data.sources import load_dataset
from core.explain.metrics import run_predictions
from core.serving.export import export_run
from core.serving.predictor import Predictor
from core.store.runs import RunStore
from core.training import checkpoint
from core.training.manager import TrainingManager
from core.training.results import evaluate_unfinished

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 240.0

# The child finishes one run, then starts a 5-epoch one through the manager (as the app does). Inside epoch 3
# (after checkpoint 2) it says so and blocks, so the kill -9 lands mid-epoch at a known point.
CHILD = """
import sys, threading
import core.training.job as job
from core.config import SplitConfig, TrainConfig
from core.store.runs import RunStore
from core.training.manager import TrainingManager, train_to_completion

original = job.Job.batch_ended
def batch_ended(job, batch, logs):
    out = original(job, batch, logs)
    if job.epoch_index == 2 and batch == 2:
        print("MID_EPOCH_3", job.run_id, flush=True)
        threading.Event().wait()
    return out
job.Job.batch_ended = batch_ended

store = RunStore(sys.argv[1])
cfg = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=20), image_size=12, batch_size=10,
                  epochs=1, seed=0, learning_rate=3e-3)
done = train_to_completion(cfg, store)
print("FINISHED", done["run_id"], done["status"], flush=True)
manager = TrainingManager(store)
run_id = manager.start(cfg.replace(epochs=5))
print("STARTED", run_id, flush=True)
manager.wait(run_id)
"""


def _lines(proc: subprocess.Popen) -> queue.Queue:
    """The child's stdout lines, read by a thread so waiting for them can time out."""
    q: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in proc.stdout:
            q.put(line.split())
        q.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return q


def _expect(q: queue.Queue, word: str, log: Path) -> list[str]:
    parts = q.get(timeout=DEADLINE)
    assert parts is not None and parts[0] == word, f"child said {parts}; its log:\n{log.read_text()[-3000:]}"
    return parts


@pytest.mark.slow
def test_kill_9_mid_run_leaves_earlier_runs_intact_and_the_run_resumes(home: Path, tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "child.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(home)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=err, text=True)
    try:
        q = _lines(proc)
        _, finished, status = _expect(q, "FINISHED", log)
        assert status == "finished"
        _, killed = _expect(q, "STARTED", log)
        assert _expect(q, "MID_EPOCH_3", log)[1] == killed
        assert proc.poll() is None, log.read_text()[-3000:]
        assert RunStore(home).get(killed).status == "running"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)

    store = RunStore(home)  # the restart
    manager = TrainingManager(store)
    assert killed in manager.recovered
    snap = manager.snapshot(killed)
    assert snap.status == "interrupted" and snap.message
    assert len(snap.history["loss"]) == 2 and snap.resume_epoch == 2  # its epochs so far, and its checkpoint
    _usable_from_its_checkpoint(store, killed, tmp_path)

    # The earlier run is intact: status, metrics, and a model that predicts what it predicted before.
    before = store.get(finished)
    assert before.status == "finished" and len(store.epochs(finished)) == 1
    saved = run_predictions(store, finished, "test")
    assert before.result["accuracy"] == np.mean(saved["probs"].argmax(axis=1) == saved["labels"])
    test = load_dataset(before.config.data, before.config.split, home=home).splits["test"]
    assert len(test) == len(saved["labels"]) and np.array_equal(test.labels, saved["labels"])
    again = Predictor.from_run(store, finished).predict([test.image(i) for i in range(len(test))])
    assert np.allclose(again, saved["probs"], atol=1e-4)
    assert store.mark_interrupted() == []  # nothing else was touched
    _resume_after_the_kill(store, manager, killed, monkeypatch)


def _usable_from_its_checkpoint(store: RunStore, killed: str, tmp_path: Path) -> None:
    """The interrupted run predicts, evaluates and exports with the weights its checkpoint kept."""
    state = checkpoint.read_state(store.run_dir(killed))
    kept, _ = checkpoint.read_arrays(store.run_dir(killed), state, state.kept, optimizer=False)
    predictor = Predictor.from_run(store, killed)
    assert predictor.predict([np.zeros((8, 8, 1), np.uint8)]).shape == (1, 10)
    assert all(np.array_equal(a, b) for a, b in zip(predictor.model.get_weights(), kept))
    result = evaluate_unfinished(store, killed)
    assert result["from_checkpoint"] and result["best_epoch"] == state.kept_epoch and 0 <= result["accuracy"] <= 1
    record = store.get(killed)
    assert record.status == "interrupted" and record.result["accuracy"] == result["accuracy"]
    saved = run_predictions(store, killed, "test")
    assert np.mean(saved["probs"].argmax(axis=1) == saved["labels"]) == result["accuracy"]
    report = export_run(store, killed, "keras", tmp_path / "interrupted.zip")
    assert report["checked_images"] >= 2 and report["max_abs_diff"] <= report["tolerance"]


def _resume_after_the_kill(store: RunStore, manager: TrainingManager, killed: str,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Resume: same id, epochs 1..5 once each, the first two unchanged, training went on from the checkpoint."""
    before = store.epochs(killed)
    folder = store.run_dir(killed)
    state = checkpoint.read_state(folder)
    saved, _ = checkpoint.read_arrays(folder, state, state.weights, optimizer=False)
    restored: list[list[np.ndarray]] = []
    original = checkpoint.restore_training_state

    def spy(model, weights, optimizer) -> None:  # the weights the resumed fit starts from
        original(model, weights, optimizer)
        restored.append(model.get_weights())

    monkeypatch.setattr(checkpoint, "restore_training_state", spy)
    t0 = time.perf_counter()
    assert manager.resume(killed) == killed
    done = manager.wait(killed, timeout=DEADLINE)
    seconds = time.perf_counter() - t0
    manager.shutdown()
    assert done.run_id == killed and done.status == "finished", done.message
    after = store.epochs(killed)
    assert [e["epoch"] for e in after] == [1, 2, 3, 4, 5]  # each epoch exactly once
    assert after[:2] == before  # the epochs before the kill are unchanged
    assert len(restored) == 1 and all(np.array_equal(a, b) for a, b in zip(restored[0], saved))
    losses = [e["loss"] for e in after]
    # Training went on from the checkpoint: epoch 3 starts near epoch 2's loss, not back at epoch 1's.
    assert abs(losses[2] - losses[1]) < abs(losses[2] - losses[0]), losses
    assert done.result["epochs_completed"] == 5 and store.get(killed).result == done.result
    assert Predictor.from_run(store, killed).predict([np.zeros((8, 8, 1), np.uint8)]).shape == (1, 10)
    assert not list(folder.rglob(".*tmp*"))  # no temp file the kill left behind survives
    print(f"\nresume after kill -9: epochs 3-5 + evaluation in {seconds:.1f} s")
