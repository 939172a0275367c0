"""Benchmark 6: time from Start to visible train/validation divergence for the overfitting demo preset.

Starts the demo run through ``TrainingManager.start`` (what the Train page's button does) and polls its
snapshot like the page's fragment; the divergence is visible when ``core.training.verdicts.read_curves``
reports overfitting on the live history (what the chart marks).
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

from benchmarks import main_for, result, row, target

POLL_SECONDS = 0.25
LIMIT_SECONDS = 180.0
TITLE = "Overfitting demo: Start to visible train/validation divergence"


def run() -> dict:
    from core.store.runs import RunStore
    from core.training.verdicts import read_curves
    from core.training.experiments.demo import demo_config
    from core.training.manager import TrainingManager

    manager = TrainingManager(RunStore(Path(tempfile.mkdtemp(prefix="bench-overfit-"))))
    t0 = time.perf_counter()
    run_id = manager.start(demo_config(regularised=False))
    seen_at = first_epoch_at = None
    onset = None
    tick = threading.Event()
    while time.perf_counter() - t0 < LIMIT_SECONDS:
        snap = manager.snapshot(run_id)
        if snap.epoch >= 1 and first_epoch_at is None:
            first_epoch_at = time.perf_counter() - t0
        onset = read_curves(snap.history).onset
        if onset is not None and onset.overfitting:
            seen_at = time.perf_counter() - t0
            break
        if not snap.active:
            break
        tick.wait(POLL_SECONDS)
    snap = manager.snapshot(run_id)
    manager.stop(run_id)
    manager.shutdown(timeout=60)
    if seen_at is None:
        return result(6, TITLE, status="failed", reason=f"no divergence within {LIMIT_SECONDS:.0f} s "
                      f"(status {snap.status}, {snap.epoch} epochs)")
    rows = [
        row("Start -> first epoch on the chart", "time", f"{first_epoch_at:.1f}", "s"),
        row("Start -> divergence marked (read_curves)", "time", f"{seen_at:.1f}", "s"),
        row("divergence", "best epoch / epochs done when seen", f"{onset.best_epoch} / {snap.epoch}"),
    ]
    return result(6, TITLE, rows=rows, targets=[
        target("Start to visible divergence", seen_at, 45.0, higher_is_better=False, unit="s",
               why="the demo needs more epochs before validation loss clearly rises")],
        notes=["builtin:digits, 10 % of the training split (~9 images a class), overfit_demo network, 32 px, "
               "batch 16 - the Train page's demo button; polled every 0.25 s like the page's fragment."])


if __name__ == "__main__":
    main_for(run)
