"""kill -9 mid-run: earlier runs stay intact and loadable, the killed run shows `interrupted` after a restart."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np

from core.datasets import load_dataset
from core.evaluation import run_predictions
from core.inference import Predictor
from core.store import RunStore
from core.training import TrainingManager

ROOT = Path(__file__).resolve().parents[1]
DEADLINE = 240.0

# The child finishes one run, then starts a long one through the manager (as the app does) and trains on.
CHILD = """
import sys
from core.config import SplitConfig, TrainConfig
from core.store import RunStore
from core.training import TrainingManager, train_to_completion

store = RunStore(sys.argv[1])
cfg = TrainConfig(data="builtin:digits", split=SplitConfig(limit_per_class=20), image_size=12, batch_size=10,
                  epochs=1, seed=0)
done = train_to_completion(cfg, store)
print("FINISHED", done["run_id"], done["status"], flush=True)
manager = TrainingManager(store)
run_id = manager.start(cfg.replace(epochs=1000))
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


def test_kill_9_mid_run_leaves_earlier_runs_intact(home: Path, tmp_path: Path) -> None:
    log = tmp_path / "child.log"
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, str(home)], cwd=ROOT, stdout=subprocess.PIPE,
                                stderr=err, text=True)
    try:
        q = _lines(proc)
        _, finished, status = _expect(q, "FINISHED", log)
        assert status == "finished"
        _, killed = _expect(q, "STARTED", log)
        store = RunStore(home)
        waiter = threading.Event()
        while len(store.epochs(killed)) < 2 and proc.poll() is None and not waiter.wait(0.1):
            pass  # let it record two epochs, then kill it in the middle of the third
        assert proc.poll() is None, log.read_text()[-3000:]
        assert store.get(killed).status == "running"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)

    store = RunStore(home)  # the restart
    manager = TrainingManager(store)
    assert killed in manager.recovered
    snap = manager.snapshot(killed)
    assert snap.status == "interrupted" and snap.message
    assert len(snap.history["loss"]) >= 2  # its epochs so far are kept
    assert Predictor.from_run(store, killed).predict([np.zeros((8, 8, 1), np.uint8)]).shape == (1, 10)

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
