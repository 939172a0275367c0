"""The overfitting lab end to end: queue it like the Train page's button does, wait, report the figures.

    python -m benchmarks.bench_lab            # the full lab (target: under 5 minutes on a 2-core CPU)
    python -m benchmarks.bench_lab --json out.json

Prints the total time, each run's time and its final training / validation / test accuracy, and
whether the learning curve came out in the expected order (more data -> higher validation accuracy).
Not a test: the numbers depend on the machine and on what else runs on it (the load average is printed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import machine, prepare_environment  # noqa: E402

TARGET_SECONDS = 300.0


def run() -> dict:
    """Queue the lab on a fresh manager, wait for it, collect the figures."""
    from core.store.runs import RunStore
    from core.training.experiments.groups import group_status, queue_experiment, results_table, wait_group
    from core.training.experiments.lab import lab_experiment, learning_curve_ordered, learning_curve_points
    from core.training.manager import TrainingManager

    manager = TrainingManager(RunStore(Path(os.environ["CNNLAB_HOME"])))
    load_before = os.getloadavg()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    group = queue_experiment(manager, lab_experiment())
    status = wait_group(manager, group, timeout=1800)
    total = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    status = group_status(manager, group)
    rows = results_table(status, sort_by=None)
    for m, r in zip(status.members, rows):
        snap = m.snapshot
        r["seconds"] = round(snap.finished - snap.started, 1) if snap and snap.started and snap.finished else None
    points = learning_curve_points(status)
    manager.shutdown()
    return {
        "total_seconds": round(total, 1),
        "cpu_seconds": round(cpu, 1),  # both cores together: a load-independent measure of the work
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "target_seconds": TARGET_SECONDS,
        "runs": len(rows),
        "statuses": status.counts,
        "learning_curve_ordered": learning_curve_ordered(points),
        "learning_curve": [{k: p[k] for k in ("fraction", "train_accuracy", "val_accuracy", "test_accuracy")}
                           for p in points],
        "rows": [{k: r[k] for k in ("run", "status", "epochs", "seconds", "train_accuracy", "val_accuracy",
                                    "best_val_accuracy", "test_accuracy")} for r in rows],
        "machine": machine(),
        "load_average_before": [round(v, 2) for v in load_before],
    }


def _pct(v: float | None) -> str:
    return "  -  " if v is None else f"{v:5.1%}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument("--home", type=Path, help="keep the runs in this CNN Lab home (default: a temp folder)")
    args = parser.parse_args()
    prepare_environment()
    if args.home:
        os.environ["CNNLAB_HOME"] = str(args.home.resolve())
    out = run()
    print(f"overfitting lab: {out['runs']} runs in {out['total_seconds']:.0f} s "
          f"(target {TARGET_SECONDS:.0f} s) - statuses {out['statuses']}")
    print(f"process CPU time {out['cpu_seconds']:.0f} s (both cores); load average before "
          f"{out['load_average_before']}, after {out['load_average_after']}; machine: {out['machine']}")
    print(f"{'run':44} {'s':>6} {'ep':>3} {'train':>6} {'val':>6} {'best':>6} {'test':>6}")
    for r in out["rows"]:
        print(f"{r['run'][:44]:44} {r['seconds'] or 0:6.1f} {r['epochs']:3d} {_pct(r['train_accuracy'])} "
              f"{_pct(r['val_accuracy'])} {_pct(r['best_val_accuracy'])} {_pct(r['test_accuracy'])}")
    print("learning curve in the expected order (more data -> higher validation accuracy):",
          out["learning_curve_ordered"])
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
