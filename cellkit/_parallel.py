"""The one parallel runner: dask tasks locally (threads or processes) or on a distributed scheduler.

Segmentation, extraction, synthetic plates and image QC run through `Runner`, so ``--workers N`` means
the same everywhere: N tasks at once on this machine (1: in the calling thread), or a ``distributed``
scheduler's workers when an address is given. Whether local workers are threads or processes is
the stage's choice (threads where the work releases the GIL, processes where it does not). Results
come back in task order, so outputs do not depend on the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import dask
from dask.callbacks import Callback


@dataclass(frozen=True)
class Runner:
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

    def map(self, fn: Callable, items: Sequence, *args, shared: Any = None, progress=None,
            weights: list[int] | None = None) -> list:
        """``[fn(item, *args) for item in items]`` (``fn(item, shared, *args)`` when ``shared`` is given),
        run in parallel; results in the order of ``items``.

        ``shared``: one object every task needs (e.g. a segmenter), sent to each distributed worker
        once. ``progress(n_done, n_total)`` as tasks finish, counting tasks or their ``weights``.
        """
        if self.address:
            return self._map_distributed(fn, items, args, shared, progress, weights)
        lead = () if shared is None else (shared,)
        tasks = [dask.delayed(fn, pure=False)(item, *lead, *args) for item in items]
        return self.compute(tasks, progress=progress, weights=weights)

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

    def _map_distributed(self, fn, items, args, shared, progress, weights):
        from distributed import Client, as_completed

        weights = list(weights) if weights is not None else [1] * len(items)
        with Client(self.address) as client:
            lead = () if shared is None else (client.scatter(shared, broadcast=True),)
            futures = [client.submit(fn, item, *lead, *args, pure=False) for item in items]
            weight = {f.key: w for f, w in zip(futures, weights)}
            done = 0
            for future in as_completed(futures):
                future.result()  # raises the task's error here
                done += weight.get(future.key, 1)
                if progress:
                    progress(done, sum(weights))
            return client.gather(futures)
