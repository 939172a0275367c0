"""Run every CNN Lab benchmark, each in a fresh process, and write ``benchmarks/RESULTS.md``.

    python -m benchmarks.run_all            # or: python benchmarks/run_all.py
    python -m benchmarks.run_all --only 2 5 # a selection (RESULTS.md then holds only those)

Uses ``../shared`` (real datasets, offline ImageNet weights) where present and skips with a reason
where not. Not run by CI: the numbers depend on the machine and on what else runs on it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the project importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import ROOT, machine, prepare_environment, result  # noqa: E402

BENCHES = {
    1: "bench_epoch",
    2: "bench_transfer",
    3: "bench_extract",
    4: "bench_rss",
    5: "bench_predict",
    6: "bench_overfit",
    7: "bench_nearcopies",
}
TIMEOUT_SECONDS = 900
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def _load() -> float | None:
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:
        return None


def run_one(number: int, out_dir: Path) -> tuple[dict, float]:
    """One benchmark in its own process (fresh TensorFlow state); a crash becomes a 'failed' result."""
    out = out_dir / f"{number}.json"
    t0 = time.perf_counter()
    load_before = _load()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        proc = subprocess.run([sys.executable, "-m", f"benchmarks.{BENCHES[number]}", "--out", str(out)], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=TIMEOUT_SECONDS)
        failed = proc.returncode != 0 or not out.is_file()
        reason = (proc.stderr.strip().splitlines() or ["no output"])[-1] if failed else ""
    except subprocess.TimeoutExpired:
        failed, reason = True, f"timed out after {TIMEOUT_SECONDS} s"
    seconds = time.perf_counter() - t0
    if failed:
        res = result(number, BENCHES[number], status="failed", reason=reason[:300])
    else:
        res = json.loads(out.read_text())
    res["load"] = (load_before, _load())
    return res, seconds


def _versions() -> dict[str, str]:
    code = ("import json, tensorflow as tf, keras; print(json.dumps({'tensorflow': tf.__version__, "
            "'keras': keras.__version__, 'gpus': len(tf.config.list_physical_devices('GPU'))}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


def render(results: list[tuple[dict, float]], info: dict, info_end: dict, total: float) -> str:
    """RESULTS.md: machine, summary table of targets, then each benchmark's rows and notes."""
    lines = ["# CNN Lab benchmark results", "",
             "Written by `python -m benchmarks.run_all` from the run described here; do not edit by hand.", "",
             "## Machine", ""]
    for key, value in info.items():
        lines.append(f"- **{key}**: {value}")
    if "load_average" in info_end:
        lines.append(f"- **load average at the end**: {info_end['load_average']} (other work on the machine "
                     "slows both sides of each comparison)")
    lines += [f"- **total benchmark time**: {total / 60:.1f} min", "", "## Targets", "",
              "| # | target | measured | goal | met | why not |", "| --- | --- | --- | --- | --- | --- |"]
    for res, _ in results:
        if res["status"] != "ok":
            lines.append(f"| {res['bench']} | {res['title']} | {res['status']} | | | {res['reason']} |")
        for t in res["targets"]:
            lines.append(f"| {res['bench']} | {t['name']} | {t['measured']} {t['unit']} | {t['comparison']} "
                         f"{t['goal']} {t['unit']} | {'yes' if t['met'] else '**no**'} | {t['why']} |")
    for res, seconds in results:
        lines += ["", f"## {res['bench']}. {res['title']}", "", f"Status: {res['status']}"
                  + (f" - {res['reason']}" if res["reason"] else "") + f" ({seconds:.0f} s; 1-min load average "
                  f"{res['load'][0]} before, {res['load'][1]} after, on {info.get('cores')} cores)", ""]
        if res["rows"]:
            lines += ["| setup | metric | value |", "| --- | --- | --- |"]
            lines += [f"| {r['setup']} | {r['metric']} | {r['value']} {r['unit']} |" for r in res["rows"]]
        for note in res["notes"]:
            if note:
                lines += ["", f"- {note}"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", type=int, nargs="+", choices=sorted(BENCHES), help="benchmark numbers to run")
    parser.add_argument("--output", type=Path, default=RESULTS, help="where to write the Markdown results")
    args = parser.parse_args(argv)
    prepare_environment()
    info = {**machine(), **_versions()}
    out_dir = Path(tempfile.mkdtemp(prefix="cnnlab-bench-results-"))
    t0 = time.perf_counter()
    results = []
    for number in args.only or sorted(BENCHES):
        print(f"benchmark {number} ({BENCHES[number]}) ...", file=sys.stderr, flush=True)
        res, seconds = run_one(number, out_dir)
        print(f"  {res['status']} in {seconds:.0f} s {res['reason']}", file=sys.stderr, flush=True)
        for t in res["targets"]:
            print(f"  {t['name']}: {t['measured']} {t['unit']} (goal {t['comparison']} {t['goal']})", file=sys.stderr)
        results.append((res, seconds))
    text = render(results, info, machine(), time.perf_counter() - t0)
    args.output.write_text(text)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
