"""Two tiny finished runs shared by the Evaluate, Compare and Classify page tests (trained once per test process).

Real engine, tiny data: scikit-learn's digits (offline), 20 images a class, 12 px, the 'tiny' preset,
2 and 3 epochs. The runs live in their own home under the test session's temp folder, so other tests'
stores are not disturbed; ``copy_run`` clones a finished run with another config for cheap variants.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path
from typing import Any

from core.config import ModelSpec, SplitConfig, TrainConfig

_LOCK = threading.Lock()
BASE = TrainConfig(
    data="builtin:digits",
    split=SplitConfig(limit_per_class=20, seed=0),
    model=ModelSpec(name="tiny"),
    image_size=12,
    batch_size=16,
    epochs=2,
    seed=0,
)


def shared_home() -> tuple[Path, list[str]]:
    """The home holding the two trained runs (oldest first), training them on first use in this process."""
    from core.store.runs import RunStore
    from core.training.manager import train_to_completion

    home = Path(os.environ["CNNLAB_HOME"]).parent / "eval-pages-home"
    with _LOCK:
        store = RunStore(home)
        runs = [r for r in reversed(store.list()) if r.status == "finished"]
        if len(runs) < 2:
            for cfg in (BASE.replace(name="digits-a"), BASE.replace(name="digits-b", epochs=3, learning_rate=3e-3)):
                summary = train_to_completion(cfg, store)
                assert summary["status"] == "finished", summary
            runs = [r for r in reversed(store.list()) if r.status == "finished"]
        return home, [r.run_id for r in runs[:2]]


def copy_run(src_home: Path, run_id: str, dst_home: Path, config: TrainConfig, result_changes: dict[str, Any]) -> str:
    """A new finished run in ``dst_home`` with ``run_id``'s artifacts, ``config`` and an edited result."""
    from core.store.runs import RunStore

    src, dst = RunStore(src_home), RunStore(dst_home)
    record = src.get(run_id)
    new_id = dst.create_run(config, config.name)
    shutil.copytree(src.run_dir(run_id), dst.run_dir(new_id), dirs_exist_ok=True)
    for row in src.epochs(run_id):
        dst.add_epoch(new_id, row.pop("epoch"), row)
    dst.set_result(new_id, {**(record.result or {}), **result_changes})
    dst.set_status(new_id, "finished")
    return new_id
