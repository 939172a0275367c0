"""Benchmark 4: peak RSS of one training epoch over 6,000 vs 60,000 generated image files - it must stay flat.

Reuses the data engineer's ``benchmarks/pipeline_rss.py`` (file generation and the per-size child
process that loads the folder and streams one shuffled epoch through ``make_tf_dataset``).
"""

from __future__ import annotations

from benchmarks import main_for, result, row, target

SIZES = (6_000, 60_000)
TITLE = "Peak RSS: one training epoch over 6,000 vs 60,000 generated image files"


def run() -> dict:
    try:
        from benchmarks import pipeline_rss as prss
    except ImportError:
        return result(4, TITLE, status="skipped", reason="benchmarks/pipeline_rss.py (the data engineer's) is absent")
    got: dict[tuple[str, int], dict] = {}
    for n in SIZES:
        folder = prss.make_files(prss.OUT / "rss-data" / f"n{n}", n)
        for mode in ("stream", "default"):
            got[(mode, n)] = prss.run_child("--child", str(folder), mode)
    rows = []
    for (mode, n), r in got.items():
        rows.append(row(f"{n:,} files, {mode} mode", "peak RSS / load / epoch",
                        f"{r['peak_rss_mb']:.0f} MB / {r['load_seconds']} s / {r['epoch_seconds']} s"))
    small, big = SIZES[0], SIZES[-1]
    stream = got[("stream", big)]["peak_rss_mb"] / got[("stream", small)]["peak_rss_mb"]
    default = got[("default", big)]["peak_rss_mb"] / got[("default", small)]["peak_rss_mb"]
    return result(4, TITLE, rows=rows, targets=[
        target("peak RSS 60k / 6k, streaming", stream, 1.2, higher_is_better=False,
               why="memory grows with the number of files"),
        target("peak RSS 60k / 6k, default (512 MB decode budget)", default, 1.2, higher_is_better=False,
               why="by design the default keeps decoded images in RAM while they fit the 512 MB budget "
                   "(60,000 at 32 px is 184 MB), then streams"),
    ], notes=["32x32 PNG files in 10 class folders, image size 32, batch 64, one shuffled epoch, each size in a "
              "fresh process (benchmarks/pipeline_rss.py). Streaming reads files batch by batch (memory_budget_mb=0)."])


if __name__ == "__main__":
    main_for(run)
