"""Worker classes for tests: FaultyWorker, every worker after the first two cannot load the
model; BrokenWorker, no worker can.

Selected with ``GUNICORN_CMD_ARGS="--worker-class faulty_worker.FaultyWorker"`` (and
tests/serving on PYTHONPATH). The fault is real: the worker's own environment names a
model version the directory does not hold, so its app fails start-up like any worker
that cannot load its model.
"""

from __future__ import annotations

import os

from serving.worker import KilnWorker


class FaultyWorker(KilnWorker):
    def init_process(self) -> None:  # runs in the forked worker, not in the master
        if self.age > 2:
            os.environ["MODEL_VERSION"] = "not-the-version-on-disk"
        super().init_process()


class BrokenWorker(KilnWorker):
    """No worker can load the model: every one names a version the directory does not hold."""

    def init_process(self) -> None:
        os.environ["MODEL_VERSION"] = "not-the-version-on-disk"
        super().init_process()
