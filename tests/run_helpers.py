"""Helpers for tests that need a run to end at a known epoch (no timing races)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import pytest


@contextlib.contextmanager
def stopping_in_epoch(epoch: int) -> Iterator[None]:
    """Any run trained inside is stopped from the first batch of ``epoch`` (1-based): epochs 1..epoch-1 are kept.

    The same as pressing Stop at that moment: the cut-short epoch is not recorded, the run ends ``stopped``.
    """
    import core.training.job as job

    original = job.Job.batch_ended

    def batch_ended(job: job.Job, batch: int, logs: dict) -> bool:
        if job.epoch_index + 1 == epoch:
            job.live.stop_event.set()
        return original(job, batch, logs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(job.Job, "batch_ended", batch_ended)
        yield
