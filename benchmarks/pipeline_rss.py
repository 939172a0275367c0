"""Peak memory of one training epoch over 6,000 vs 60,000 generated 32x32 PNG files (and decode speed).

    python benchmarks/pipeline_rss.py                 # both sizes, each in a fresh process
    python benchmarks/pipeline_rss.py --sizes 6000    # one size
    python benchmarks/pipeline_rss.py --throughput    # images/s: TensorFlow decoders vs the Python route

The files are written once under ``--workdir`` (default benchmarks/out/rss-data) and reused.
Each measurement runs in its own subprocess so imports, caches and allocator state never carry
over. Modes: ``stream`` (memory_budget_mb=0: files are read batch by batch; the acceptance
criterion) and ``default`` (memory_budget_mb=512: decoded images are kept in RAM when they fit,
so memory grows with the dataset by design, up to the budget).
Results are printed and written to benchmarks/out/pipeline_rss.json.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
CLASSES = 10
SIZE = 32


def rss_mb() -> float:
    """Current resident set size of this process in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_files(folder: Path, n: int) -> Path:
    """n PNGs in 10 class folders: a class colour, a random rectangle and noise (all distinct)."""
    import numpy as np
    from PIL import Image

    marker = folder / ".complete"
    if marker.is_file():
        return folder
    rng = np.random.default_rng(0)
    per_class = n // CLASSES
    for c in range(CLASSES):
        d = folder / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.array([(37 * c) % 256, (91 * c + 40) % 256, (151 * c + 80) % 256], np.int16)
        for i in range(per_class):
            img = base + rng.integers(-12, 13, size=(SIZE, SIZE, 3))
            x, y = rng.integers(0, SIZE - 8, size=2)
            img[y: y + 8, x: x + 8] = 255 - base
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(d / f"{i:05d}.png")
    marker.write_text(str(n))
    return folder


def child(folder: Path, mode: str) -> dict:
    """Load the folder and iterate one training epoch; report RSS at each stage."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))
    from core.config import SplitConfig
    from core.data.pipeline import make_tf_dataset
    from core.data.sources import load_dataset

    start = rss_mb()
    t0 = time.perf_counter()
    ds = load_dataset(str(folder), SplitConfig(val_fraction=0.0, test_fraction=0.0))
    load_s = time.perf_counter() - t0
    after_load = rss_mb()
    split = ds.splits["train"]
    budget = 0 if mode == "stream" else 512
    t0 = time.perf_counter()
    tfds = make_tf_dataset(split, image_size=SIZE, channels=3, batch_size=64, training=True,
                           memory_budget_mb=budget, seed=0)
    seen, during = 0, after_load
    for x, _ in tfds:
        seen += int(x.shape[0])
        during = max(during, rss_mb())
    epoch_s = time.perf_counter() - t0
    return {
        "images": seen, "mode": mode, "rss_after_imports_mb": round(start, 1),
        "rss_after_load_mb": round(after_load, 1), "rss_peak_during_epoch_mb": round(during, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1), "load_seconds": round(load_s, 1),
        "epoch_seconds": round(epoch_s, 1), "images_per_second": round(seen / epoch_s),
    }


def throughput_child(folder: Path, route: str) -> dict:
    """Images/s of one streamed epoch with TF's decoders (where exact) or everything through Pillow."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(ROOT))
    import numpy as np

    from core.config import SplitConfig
    from core.data import pipeline
    from core.data.sources import load_dataset

    if route == "python":
        pipeline._decoder_codes = lambda split, channels: np.zeros(len(split), np.int32)
    split = load_dataset(str(folder), SplitConfig(val_fraction=0.0, test_fraction=0.0)).splits["train"]
    tfds = pipeline.make_tf_dataset(split, image_size=SIZE, channels=3, batch_size=64, training=True,
                                    memory_budget_mb=0)
    for _ in tfds.take(2):  # warm-up: graph tracing
        pass
    t0 = time.perf_counter()
    seen = sum(int(y.shape[0]) for _, y in tfds)
    return {"route": route, "images": seen, "images_per_second": round(seen / (time.perf_counter() - t0))}


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[6000, 60000])
    parser.add_argument("--modes", nargs="+", default=["stream", "default"], choices=["stream", "default"])
    parser.add_argument("--workdir", type=Path, default=OUT / "rss-data")
    parser.add_argument("--throughput", action="store_true", help="compare decode routes instead")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--throughput-child", nargs=2, metavar=("FOLDER", "ROUTE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(Path(args.child[0]), args.child[1])))
        return
    if args.throughput_child:
        print(json.dumps(throughput_child(Path(args.throughput_child[0]), args.throughput_child[1])))
        return
    OUT.mkdir(parents=True, exist_ok=True)
    results = []
    if args.throughput:
        folder = make_files(args.workdir / f"n{args.sizes[0]}", args.sizes[0])
        for route in ("tf", "python"):
            r = run_child("--throughput-child", str(folder), route)
            print(f"{route:>6}: {r['images_per_second']:>6} images/s over {r['images']} images", flush=True)
            results.append(r)
    else:
        for n in args.sizes:
            folder = make_files(args.workdir / f"n{n}", n)
            for mode in args.modes:
                r = run_child("--child", str(folder), mode) | {"n": n}
                results.append(r)
                print(json.dumps(r), flush=True)
        for mode in args.modes:
            rows = {r["n"]: r for r in results if r["mode"] == mode}
            if len(rows) >= 2:
                small, large = rows[min(rows)], rows[max(rows)]
                ratio = large["peak_rss_mb"] / small["peak_rss_mb"]
                print(f"{mode}: peak RSS {small['peak_rss_mb']} MB ({min(rows)} images) vs "
                      f"{large['peak_rss_mb']} MB ({max(rows)} images): x{ratio:.3f}")
    name = "pipeline_throughput.json" if args.throughput else "pipeline_rss.json"
    (OUT / name).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
