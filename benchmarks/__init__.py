"""CNN Lab benchmarks: each runs a baseline and CNN Lab back to back and reports ratios (not tests, not CI).

Run them all with ``python -m benchmarks.run_all``; results go to ``benchmarks/RESULTS.md``.
Helpers here set up the environment every benchmark shares: offline ImageNet weights from
``../shared`` in a private KERAS_HOME (before Keras is imported), a private CNN Lab home, the
machine description, and the result format.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"
SIGN_DIGITS = DATASETS / "sign-language-digits"
WEIGHTS = SHARED / "keras" / "models"


def prepare_environment() -> Path:
    """Quiet TF, a private CNN Lab home and KERAS_HOME (offline weights copied in); call before importing keras."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    scratch = Path(tempfile.mkdtemp(prefix="cnnlab-bench-"))
    os.environ["CNNLAB_HOME"] = str(scratch / "home")
    keras_home = scratch / "keras"
    (keras_home / "models").mkdir(parents=True)
    if WEIGHTS.is_dir():
        for f in WEIGHTS.iterdir():
            shutil.copy(f, keras_home / "models" / f.name)
    os.environ["KERAS_HOME"] = str(keras_home)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return scratch


def have_weights() -> bool:
    return WEIGHTS.is_dir() and any(WEIGHTS.glob("mobilenet_v2_*0.35*"))


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
    }
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        pass
    return info


def versions() -> dict[str, str]:
    import keras
    import tensorflow as tf

    return {"tensorflow": tf.__version__, "keras": keras.__version__,
            "gpus": str(len(tf.config.list_physical_devices("GPU")))}


def result(bench: int, title: str, *, status: str = "ok", reason: str = "", rows: list[dict] | None = None,
           targets: list[dict] | None = None, notes: list[str] | None = None) -> dict[str, Any]:
    """One benchmark's result: rows of measurements, targets with their verdict, notes (subsets etc.)."""
    return {"bench": bench, "title": title, "status": status, "reason": reason, "rows": rows or [],
            "targets": targets or [], "notes": notes or []}


def row(setup: str, metric: str, value: float | str, unit: str = "") -> dict[str, Any]:
    return {"setup": setup, "metric": metric, "value": value, "unit": unit}


def target(name: str, measured: float, goal: float, *, higher_is_better: bool = True, unit: str = "x",
           why: str = "") -> dict[str, Any]:
    met = measured >= goal if higher_is_better else measured <= goal
    return {"name": name, "measured": round(float(measured), 2), "goal": goal,
            "comparison": ">=" if higher_is_better else "<=", "unit": unit, "met": bool(met),
            "why": "" if met else why}


def percentile(values: list[float], q: float) -> float:
    data = sorted(values)
    if not data:
        return float("nan")
    k = (len(data) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (k - lo)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def subset_folder(src: Path, dest: Path, per_class: int, *, max_pixels: int | None = None) -> int:
    """Symlink the first ``per_class`` images of each class folder of ``src`` into ``dest``; returns the count."""
    from PIL import Image

    count = 0
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        out = dest / cls.name
        out.mkdir(parents=True, exist_ok=True)
        files = sorted(f for f in cls.iterdir() if f.suffix.lower() in (".jpg", ".jpeg", ".png"))
        taken = 0
        for f in files:
            if taken >= per_class:
                break
            if max_pixels is not None:
                with Image.open(f) as im:
                    if im.width * im.height > max_pixels:
                        continue
            (out / f.name).symlink_to(f)
            taken += 1
        count += taken
    return count


def write_json(path: str | Path, data: Any) -> None:
    Path(path).write_text(json.dumps(data, indent=2, default=str))


class Stopwatch:
    """``with Stopwatch() as t: ...; t.seconds``"""

    def __enter__(self) -> Stopwatch:
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: Any) -> None:
        self.seconds = time.perf_counter() - self.t0


def main_for(run: Any) -> None:
    """Command-line entry of one benchmark: ``python -m benchmarks.bench_x --out FILE.json``."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    prepare_environment()
    write_json(args.out, run())
