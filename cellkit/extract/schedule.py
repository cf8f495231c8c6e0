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

    def compute(self, tasks: list, *, progress=None, weights: list[int] | None = None) -> list:
        """Compute ``tasks`` (dask delayed objects); return their results in order.

        ``progress(n_done, n_total)`` is called as tasks finish, counting tasks, or the sum of the
        finished tasks' ``weights`` (e.g. cells per task) out of their total.
        """
        if not len(tasks):
            return []
        weight = dict(zip([t.key for t in tasks], weights if weights is not None else [1] * len(tasks)))
        total = int(sum(weight.values()))
        if self.address:
            return self._compute_distributed(tasks, progress, weight, total)
        done = [0]

        def posttask(key, result, dsk, state, worker_id):
            if key in weight and progress:
                done[0] += weight[key]
                progress(done[0], total)

        if self.workers <= 1:
            options = {"scheduler": "sync"}
        else:
            options = {"scheduler": "processes" if self.processes else "threads", "num_workers": self.workers}
        with Callback(posttask=posttask):
            return list(dask.compute(*tasks, **options))

    def _compute_distributed(self, tasks, progress, weight, total):
        from distributed import Client, as_completed

        with Client(self.address) as client:
            futures = client.compute(tasks)
            keys = {f.key: t.key for f, t in zip(futures, tasks)}
            done = 0
            for future in as_completed(futures):
                future.result()  # raises the task's error here
                done += weight.get(keys.get(future.key), 1)
                if progress:
                    progress(done, total)
            return client.gather(futures)
