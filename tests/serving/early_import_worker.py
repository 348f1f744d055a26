"""A worker class whose import loads prometheus_client, as a worker class of one's own
might: the master has then imported it before on_starting sets PROMETHEUS_MULTIPROC_DIR."""

import prometheus_client  # noqa: F401  (the point: imported with the worker class)

from serving.worker import KilnWorker


class EarlyImportWorker(KilnWorker):
    pass
