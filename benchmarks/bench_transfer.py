"""Benchmark 2: time to a trained transfer model (MobileNetV2-0.35, 10 head epochs), cached features vs full passes.

Both go through the product path, ``core.training.train_to_completion`` (data loading, model build,
per-epoch validation predictions, best-model saves, test evaluation), differing only in
``use_feature_cache``. A second cached run shows a cache hit (same data, same backbone).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import (
    SIGN_DIGITS,
    Stopwatch,
    have_weights,
    main_for,
    result,
    row,
    subset_folder,
    target,
)

PER_CLASS = 1000  # all 2,059 typical photos (the three 3024x3024 ones left out) -> 70/15/15
IMAGE_SIZE = 128
EPOCHS = 10
TITLE = "Time to a trained transfer model: MobileNetV2-0.35, 10 head epochs"


def _config(folder: Path, cached: bool, augment: str = "none"):
    from core.config import AugmentConfig, ModelSpec, SplitConfig, TrainConfig

    return TrainConfig(data=str(folder), split=SplitConfig(val_fraction=0.15, test_fraction=0.15, seed=0),
                       model=ModelSpec(name="transfer:mobilenet_v2", alpha=0.35), image_size=IMAGE_SIZE,
                       batch_size=32, epochs=EPOCHS, augment=AugmentConfig.preset(augment), seed=0,
                       use_feature_cache=cached)


def _train(cfg, store) -> tuple[dict, float, list[str]]:
    from core.training.manager import train_to_completion

    with Stopwatch() as t:
        summary = train_to_completion(cfg, store)
    if summary["status"] != "finished":
        raise RuntimeError(f"run {summary['status']}: {summary['message']}")
    events = [e["text"] for e in store.events(summary["run_id"])]
    return summary, t.seconds, events


def run() -> dict:
    if not SIGN_DIGITS.is_dir():
        return result(2, TITLE, status="skipped", reason="../shared/datasets/sign-language-digits is absent")
    if not have_weights():
        return result(2, TITLE, status="skipped", reason="../shared/keras/models (offline ImageNet weights) is absent")
    from core.store.runs import RunStore

    folder = Path(tempfile.mkdtemp(prefix="bench-transfer-")) / "data"
    n = subset_folder(SIGN_DIGITS, folder, PER_CLASS, max_pixels=1000 * 1000)
    store = RunStore(Path(tempfile.mkdtemp(prefix="bench-transfer-home-")))
    full, full_s, _ = _train(_config(folder, cached=False), store)
    cold, cold_s, cold_ev = _train(_config(folder, cached=True), store)
    warm, warm_s, _ = _train(_config(folder, cached=True), store)
    aug, aug_s, aug_ev = _train(_config(folder, cached=True, augment="light"), store)

    def epoch_s(summary: dict) -> str:
        secs = summary["history"]["seconds"]
        return f"{sum(secs) / len(secs):.2f}"

    epochs_full, epochs_warm = sum(full["history"]["seconds"]), sum(warm["history"]["seconds"])
    extraction = next((e for e in cold_ev if e.startswith("Backbone features computed")), "")
    rows = [
        row("full frozen model every epoch", "wall time / mean epoch", f"{full_s:.1f} / {epoch_s(full)}", "s"),
        row("CNN Lab cached features, cold cache", "wall time / mean epoch", f"{cold_s:.1f} / {epoch_s(cold)}", "s"),
        row("CNN Lab cached features, warm cache", "wall time / mean epoch", f"{warm_s:.1f} / {epoch_s(warm)}", "s"),
        row("CNN Lab cached, light augmentation (K=3 passes), cold", "wall time / mean epoch",
            f"{aug_s:.1f} / {epoch_s(aug)}", "s"),
        row("test accuracy", "full / cached / cached+aug",
            f"{full['test']['accuracy']:.3f} / {cold['test']['accuracy']:.3f} / {aug['test']['accuracy']:.3f}"),
        row("fit phase only (result.timing.fit_seconds)", "full / cached cold",
            f"{full['timing'].get('fit_seconds')} / {cold['timing'].get('fit_seconds')}", "s"),
        row("the 10 epochs alone (sum of epoch seconds)", "full / cached warm = ratio",
            f"{epochs_full:.1f} s / {epochs_warm:.1f} s = {epochs_full / epochs_warm:.1f}x"),
    ]
    from core.data.sources import load_dataset

    splits = load_dataset(str(folder), _config(folder, cached=True).split).splits
    sizes = {k: len(splits[k]) for k in ("train", "val", "test")}
    bound = _cold_bound(sizes)
    rows.append(row("cold-cache ceiling: full passes run the backbone over train+val every epoch, a cold run "
                    "once over train+val+test", "10 x (train+val) / (train+val+test)",
                    f"{bound:.1f}x" if bound else "n/a"))
    why_cold = (f"a cold run must pass every image through the backbone once (train, validation and test), full "
                f"passes do it 10 times for train+validation: even with zero other cost the ratio cannot exceed "
                f"{bound:.1f}x with this split, and the fixed per-run work both pay (model build, final model.keras "
                f"save) comes on top; the second and later runs on the same data (any head, learning rate or "
                f"regulariser change) are the warm row") if bound else "see the rows above"
    why_warm = ("what is left of a warm run is per-run work that full passes pay too: building the 150-layer "
                "model, tracing the head's training step and saving model.keras once at the end")
    return result(2, TITLE, rows=rows, targets=[
        target("end to end vs full passes (cold cache)", full_s / cold_s, 10.0, why=why_cold),
        target("end to end vs full passes (warm cache)", full_s / warm_s, 10.0, why=why_warm),
    ], notes=[f"sign-language-digits: all {n} typical photos (the three 3024x3024 ones left out) at {IMAGE_SIZE} px, "
              f"70/15/15 split ({sizes['train']} / {sizes['val']} / {sizes['test']}), batch 32, {EPOCHS} epochs, "
              "no augmentation unless stated; wall time = train_to_completion.",
              extraction, next((e for e in aug_ev if e.startswith("Backbone features computed")), "")])


def _cold_bound(sizes: dict[str, int] | None) -> float | None:
    """The best ratio a cold cache can reach: backbone passes of full training over a cold run's one pass."""
    if not sizes or not sum(sizes.values()):
        return None
    return EPOCHS * (sizes["train"] + sizes["val"]) / (sizes["train"] + sizes["val"] + sizes["test"])


if __name__ == "__main__":
    main_for(run)
