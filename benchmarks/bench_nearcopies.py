"""Benchmark 7: near-copies on real hand photos: found (recall, precision, time) and what they do to scores.

A labelling-tool style export is built from ``sign-language-digits`` (2-3 augmented variants of each
source photo: flipped, turned, cropped, re-exposed, blurred, noisy, re-encoded, resized), from
source photos the thresholds were not chosen on. Measured side by side in one run:

- CNN Lab's check (local features + verified alignment) against a perceptual hash (64-bit DCT hash
  made flip/turn invariant, Hamming distance <= 10: the usual default of image-dedup libraries);
- the check's time on the whole 2,062-photo dataset, cold and from its cache;
- validation accuracy against the accuracy on held-back source photos (none of whose variants is
  trained on), with a random split and with the group-aware split.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks import SIGN_DIGITS, have_weights, main_for, result, row, target

TITLE = "Near-copies on real hand photos: recall, precision, time, and the validation gap they cause"
PER_CLASS, HELD_BACK, FIRST, SEED = 100, 40, 60, 11
GAP_SEEDS = (0, 1, 2)
PHASH_DISTANCES = (10, 4)


def _score(found: list[list[str]], truth: list[list[str]]) -> tuple[float, float, int]:
    label = {f: k for k, g in enumerate(found) for f in g}
    whole = sum(1 for g in truth if len({label.get(f, f) for f in g}) == 1)
    source = {f: k for k, g in enumerate(truth) for f in g}
    pairs = [(a, b) for g in found for i, a in enumerate(g) for b in g[i + 1:]]
    right = sum(1 for a, b in pairs if source.get(a, -1) == source.get(b, -2))
    return whole / len(truth), right / max(len(pairs), 1), len(pairs)


def _phash_groups(files: list[str], max_distance: int) -> list[list[int]]:
    """A perceptual-hash baseline: DCT hash of every flip/turn, two pictures alike within ``max_distance`` bits."""
    import cv2

    from core.data.images import decode_image
    from core.data.nearcopies import _union

    hashes = []
    for f in files:
        gray = cv2.resize(decode_image(f, channels=1)[..., 0], (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
        views = []
        for k in range(4):
            r = np.rot90(gray, k)
            for v in (r, r[:, ::-1]):
                low = cv2.dct(np.ascontiguousarray(v))[:8, :8].reshape(-1)
                views.append(low > np.median(low[1:]))
        hashes.append(np.array(views))
    base = np.array([h[0] for h in hashes])               # N x 64
    views = np.array(hashes)                              # N x 8 x 64
    dist = (views[:, :, None, :] != base[None, None, :, :]).sum(-1).min(1)  # N x N
    pairs = [(int(a), int(b)) for a, b in zip(*np.nonzero(np.triu(dist <= max_distance, 1)))]
    return _union(len(files), pairs)


def _held_back_accuracy(store, run_id: str, folder: Path, class_names: list[str]) -> float:
    from core.data.images import decode_image
    from core.serving.predictor import Predictor

    predictor = Predictor.from_run(store, run_id)
    files = sorted(folder.rglob("*.jpg"))
    probs = predictor.predict([decode_image(f) for f in files])
    truth = np.array([class_names.index(f.parent.name) for f in files])
    return float((probs.argmax(1) == truth).mean())


def _gap(export: Path, held: Path) -> tuple[list[dict], list[dict]]:
    """Validation vs held-back accuracy of a transfer model, random vs group-aware split, over three seeds."""
    from core.config import ModelSpec, SplitConfig, TrainConfig
    from core.store.runs import RunStore
    from core.training.manager import train_to_completion

    store = RunStore(Path(tempfile.mkdtemp(prefix="bench-nc-home-")))
    rows, targets = [], []
    for label, grouped in (("random split", False), ("group-aware split", True)):
        gaps, vals, helds = [], [], []
        for seed in GAP_SEEDS:
            cfg = TrainConfig(data=str(export), split=SplitConfig(seed=seed, group_near_copies=grouped),
                              model=ModelSpec(name="transfer:mobilenet_v2", alpha=0.35), image_size=128, epochs=30,
                              early_stopping_patience=5, seed=seed)
            summary = train_to_completion(cfg, store)
            if summary["status"] != "finished":
                raise RuntimeError(f"run {summary['status']}: {summary['message']}")
            history = summary["history"]
            kept = float(history["val_accuracy"][int(np.nanargmin(np.array(history["val_loss"], dtype=float)))])
            held_acc = _held_back_accuracy(store, summary["run_id"], held, summary["classes"])
            vals.append(kept)
            helds.append(held_acc)
            gaps.append(100 * (kept - held_acc))
            print(label, seed, kept, held_acc, flush=True)
        rows.append(row(f"MobileNetV2 transfer, 128 px: {label}",
                        "validation / held-back accuracy, mean of seeds 0-2; gap per seed",
                        f"{np.mean(vals):.3f} / {np.mean(helds):.3f}; " + ", ".join(f"{g:+.1f}" for g in gaps)
                        + f" points (mean {np.mean(gaps):+.1f})"))
        if grouped:
            targets.append(target("group-aware split: |mean validation - held-back| in points",
                                  abs(float(np.mean(gaps))), 3.0, higher_is_better=False, unit="points"))
    return rows, targets


def run() -> dict:
    if not SIGN_DIGITS.is_dir():
        return result(7, TITLE, status="skipped", reason="../shared/datasets/sign-language-digits is absent")
    from core.data.nearcopies import file_groups
    from tests.variant_factory import make_variant_export

    out = Path(tempfile.mkdtemp(prefix="bench-nc-"))
    made = make_variant_export(SIGN_DIGITS, out, per_class=PER_CLASS, held_back_per_class=HELD_BACK,
                               first=FIRST, seed=SEED)
    files = sorted(str(p) for p in made.root.rglob("*.jpg"))
    rel = lambda group: [str(Path(f).relative_to(made.root)) for f in group]  # noqa: E731
    t0 = time.perf_counter()
    ours = [rel(g) for g in file_groups(files)]
    ours_s = time.perf_counter() - t0
    r_ours, p_ours, n_ours = _score(ours, made.groups)
    rows = [row("CNN Lab: local features + verified alignment", "group recall / pair precision / pairs / time",
                f"{r_ours:.3f} / {p_ours:.3f} / {n_ours} / {ours_s:.1f} s")]
    for distance in PHASH_DISTANCES:
        t0 = time.perf_counter()
        phash = [rel([files[i] for i in g]) for g in _phash_groups(files, distance)]
        phash_s = time.perf_counter() - t0
        r_ph, p_ph, n_ph = _score(phash, made.groups)
        rows.append(row(f"perceptual hash (8 flips/turns, <= {distance} bits)",
                        "group recall / pair precision / pairs / time", f"{r_ph:.3f} / {p_ph:.3f} / {n_ph} / {phash_s:.1f} s"))
    targets = [target("near-copy group recall", r_ours, 0.9, unit=""),
               target("near-copy pair precision", p_ours, 0.95, unit="")]
    whole = sorted(str(p) for p in SIGN_DIGITS.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    cache = Path(tempfile.mkdtemp(prefix="bench-nc-cache-"))
    t0 = time.perf_counter()
    file_groups(whole, cache_dir=cache)
    cold = time.perf_counter() - t0
    import core.data.nearcopies as nc

    nc._MEMORY.clear()
    t0 = time.perf_counter()
    file_groups(whole, cache_dir=cache)
    warm = time.perf_counter() - t0
    print(rows, flush=True)
    rows.append(row(f"the whole sign-language-digits set ({len(whole)} photos)", "cold / from the disk cache",
                    f"{cold:.1f} s / {warm:.2f} s"))
    targets.append(target(f"check on {len(whole)} photos, cold", cold, 30.0, higher_is_better=False, unit="s"))
    notes = [f"export: {len(files)} pictures, {len(made.groups)} source photos ({PER_CLASS} a class, sources from "
             f"position {FIRST} of each class's fixed shuffle), held back: {HELD_BACK} other source photos a class "
             "(their variants)."]
    print(rows[-1], flush=True)
    if have_weights():
        gap_rows, gap_targets = _gap(made.root, made.held_back)
        rows += gap_rows
        targets += gap_targets
        notes.append("gap runs: MobileNetV2-0.35 (ImageNet, cached features), 128 px, up to 30 epochs with early "
                     "stopping (patience 5), split and training seeds 0, 1, 2, 70/15/15 split of the export; "
                     "validation accuracy of the kept (lowest validation loss) epoch; held-back accuracy of the kept "
                     "model on the variants of source photos that are in no split.")
    else:
        notes.append("gap runs skipped: ../shared/keras/models (offline ImageNet weights) is absent.")
    return result(7, TITLE, rows=rows, targets=targets, notes=notes)


if __name__ == "__main__":
    main_for(run)
