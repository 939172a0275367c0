"""Benchmark 4: peak RSS of one training pass over 6,000 vs 60,000 generated image files - it must stay flat.

Uses the data engineer's ``benchmarks/pipeline_rss.py`` when it is present (it owns the pipeline's
memory measurement); otherwise measures here: each size runs in a fresh process that streams one
shuffled, augmented epoch through ``core.pipeline.make_tf_dataset`` and reports its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import ROOT, prepare_environment, result, row, target, write_json

SIZES = (6_000, 60_000)
IMAGE_SIZE = 64
TITLE = "Peak RSS: one training pass over 6,000 vs 60,000 generated images"


def make_files(folder: Path, n: int, classes: int = 10) -> None:
    """``n`` small PNG files in class folders (32x32 noise + a class-dependent square)."""
    import cv2

    rng = np.random.default_rng(0)
    for c in range(classes):
        (folder / str(c)).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        c = i % classes
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        img[c:c + 8, c:c + 8] = 255
        cv2.imwrite(str(folder / str(c) / f"{i:06d}.png"), img)


def measure(folder: Path, n: int) -> dict:
    """In a fresh process: one epoch of ``n`` files through the training pipeline; peak RSS in MB."""
    code = f"""
import json, resource, sys
from pathlib import Path
import numpy as np
from core.config import AugmentConfig
from core.datasets import Split
from core.pipeline import make_tf_dataset
files = sorted(str(p) for p in Path({str(folder)!r}).glob('*/*.png'))[:{n}]
labels = np.array([int(Path(f).parent.name) for f in files])
ds = make_tf_dataset(Split(labels=labels, files=files), image_size={IMAGE_SIZE}, channels=3, batch_size=64,
                     training=True, augment=AugmentConfig.preset('light'), seed=0)
seen = 0
for x, y in ds:
    seen += int(y.shape[0])
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({{"images": seen, "peak_rss_mb": peak_mb}}))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1500:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _theirs() -> dict | None:
    """The data engineer's measurement, if ``benchmarks/pipeline_rss.py`` exists and prints JSON."""
    script = ROOT / "benchmarks" / "pipeline_rss.py"
    if not script.is_file():
        return None
    proc = subprocess.run([sys.executable, str(script), "--json"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=1200, cwd=ROOT)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"output": proc.stdout.strip()[-500:]}


def run() -> dict:
    notes = []
    theirs = _theirs()
    if theirs is not None:
        notes.append(f"benchmarks/pipeline_rss.py (data engineer) reported: {json.dumps(theirs)[:400]}")
    else:
        notes.append("benchmarks/pipeline_rss.py is not present: measured by bench_rss.py alone.")
    folder = Path(tempfile.mkdtemp(prefix="bench-rss-")) / "data"
    make_files(folder, max(SIZES))
    got = {n: measure(folder, n) for n in SIZES}
    small, big = got[SIZES[0]], got[SIZES[-1]]
    growth = big["peak_rss_mb"] / small["peak_rss_mb"]
    rows = [row(f"{n:,} PNG files, one shuffled augmented epoch at {IMAGE_SIZE} px", "peak RSS",
                f"{g['peak_rss_mb']:.0f}", "MB") for n, g in got.items()]
    notes.append("Files are 32x32 PNGs upscaled to 64 px; 6,000 fit the pipeline's in-memory budget (decoded once "
                 "into uint8), 60,000 stream from disk batch by batch.")
    return result(4, TITLE, rows=rows, targets=[
        target("peak RSS 60k / 6k", growth, 1.2, higher_is_better=False, unit="x",
               why="memory grows with the number of files")], notes=notes)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    prepare_environment()
    write_json(args.out, run())
