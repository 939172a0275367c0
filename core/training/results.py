"""A run's result: its kept model scored on the test split (validation when there is none), written once.

The job records it when training ends. ``evaluate_unfinished`` records it for a run that ended without
one (interrupted by a crash, or failed for lack of disk space) from the model its checkpoint keeps, so such
a run can be evaluated, compared and exported without training any further.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from core.errors import UserError
from core.store.files import atomic_path, atomic_write_json
from core.store.runs import ACTIVE_STATUSES, RunStore
from core.training import checkpoint
from core.training.fitting import file_names
from core.training.verdicts import kept_val_accuracy


def evaluation_split(ds: Any) -> tuple[Any | None, str]:
    """The split a run is judged on: ``("test")``, else ``"validation"``, else ``(None, "")``."""
    for key, name in (("test", "test"), ("val", "validation")):
        split = ds.splits.get(key)
        if split is not None and len(split):
            return split, name
    return None, ""


def record_result(store: RunStore, run_id: str, evaluated: Any, split_name: str, probs: np.ndarray,
                  class_names: list[str], **extra: Any) -> dict[str, Any]:
    """Write ``predictions.npz`` and ``result.json`` and store the result; returns it (metrics + ``extra``).

    ``evaluated`` is the Split the model was scored on; ``extra`` holds ``split`` (the run's split facts).
    """
    from core.explain.metrics import classification_metrics

    folder = store.run_dir(run_id)
    labels = np.asarray(evaluated.labels, dtype=np.int64)
    with atomic_path(folder / "predictions.npz") as tmp:
        np.savez(tmp, probs=np.asarray(probs, np.float32), labels=labels,
                 files=np.array(file_names(evaluated), dtype=str))
    result = {**classification_metrics(labels, probs, class_names), "evaluated_on": split_name, **extra,
              "classes": list(class_names)}
    atomic_write_json(folder / "result.json", result)
    store.set_result(run_id, result)
    return result


def evaluate_unfinished(store: RunStore, run_id: str) -> dict[str, Any]:
    """The result of a run that ended without one, computed now from its checkpoint's kept model."""
    from core.data.pipeline import make_tf_dataset
    from core.data.sources import load_dataset
    from core.data.splits import split_facts
    from core.models.registry import count_params
    from core.models.runtime import load_model_file
    from core.training.callbacks import predict_probs

    record = store.get(run_id)
    if record is None:
        raise UserError(f"There is no run '{run_id}': `python -m core runs` lists them.")
    if record.status in ACTIVE_STATUSES:
        raise UserError(f"Run {run_id} is still training: it is evaluated when it ends.")
    if record.result and "accuracy" in record.result:
        return record.result
    folder = store.run_dir(run_id)
    state = checkpoint.read_state(folder) if folder.is_dir() else None
    path = checkpoint.kept_model_file(store, run_id)
    if state is None or not path.is_file():
        raise UserError(f"Run {run_id} has no saved model (its status is {record.status}): a model is kept once "
                        "the first epoch finishes.")
    cfg = record.config
    ds = load_dataset(cfg.data, cfg.split, home=store.home)
    if ds.split_hash != state.split_hash:
        raise UserError(f"Run {run_id} cannot be evaluated because its dataset changed since it trained (other "
                        "images or another split).")
    split, split_name = evaluation_split(ds)
    if split is None:
        raise UserError(f"Run {run_id} has no validation or test images to be evaluated on.")
    model = load_model_file(path)
    probs = predict_probs(model, make_tf_dataset(split, image_size=cfg.image_size, channels=ds.channels,
                                                 batch_size=cfg.batch_size, training=False))
    rate = state.train_images / state.train_seconds if state.train_seconds > 0 else None
    now = store.get(run_id)
    if now is None or now.status in ACTIVE_STATUSES:
        raise UserError(f"Run {run_id} started training again, so it is evaluated when it ends.")
    result = record_result(
        store, run_id, split, split_name, probs, list(ds.class_names), best_epoch=state.kept_epoch,
        epochs_completed=state.epoch, from_checkpoint=True, params=count_params(model), split_hash=ds.split_hash,
        split=split_facts(ds), val_accuracy=kept_val_accuracy({"val_accuracy": [e.get("val_accuracy") for e in
                                                                               store.epochs(run_id)]},
                                                              state.kept_epoch),
        timing={"fit_seconds": round(state.fit_seconds, 3),
                "train_images_per_second": round(rate, 1) if rate is not None else None})
    store.add_event(run_id, "info", f"Evaluated without further training: the model kept at epoch "
                                    f"{state.kept_epoch} of its checkpoint scored {result['accuracy']:.3f} on "
                                    f"the {split_name} images.")
    return result
