"""Run a list of dask tasks locally (threads or processes) or on a distributed scheduler."""

from __future__ import annotations

from dataclasses import dataclass

import dask
from dask.callbacks import Callback


@dataclass(frozen=True)
class Scheduler:
    """Where dask tasks run.

    ``address`` (a ``distributed`` scheduler, e.g. ``tcp://host:8786``) wins; otherwise a local
    pool of ``workers`` threads, or processes with ``processes=True``. One worker runs in the
    calling thread.
    """

    workers: int = 1
    processes: bool = False
    address: str | None = None

    def describe(self) -> str:
        if self.address:
            return f"distributed scheduler at {self.address}"
        return f"{self.workers} local {'process' if self.processes else 'thread'}(s)"

    def compute(self, tasks: list, *, progress=None) -> list:
        """Compute ``tasks`` (dask delayed objects); return their results in order.

        ``progress(n_done, n_total)`` is called as tasks finish.
        """
        total = len(tasks)
        if not total:
            return []
        if self.address:
            return self._compute_distributed(tasks, progress)
        keys = {t.key for t in tasks}
        done = [0]

        def posttask(key, result, dsk, state, worker_id):
            if key in keys and progress:
                done[0] += 1
                progress(done[0], total)

        if self.workers <= 1:
            options = {"scheduler": "sync"}
        else:
            options = {"scheduler": "processes" if self.processes else "threads", "num_workers": self.workers}
        with Callback(posttask=posttask):
            return list(dask.compute(*tasks, **options))

    def _compute_distributed(self, tasks, progress):
        from distributed import Client, as_completed

        with Client(self.address) as client:
            futures = client.compute(tasks)
            for n, future in enumerate(as_completed(futures), 1):
                future.result()  # raises the task's error here
                if progress:
                    progress(n, len(futures))
            return client.gather(futures)
