"""Segment every field of a plate index into a label store, in parallel with dask.

Resumable: fields already complete in the store are skipped; half-written ones are redone.
A field that cannot be read or segmented is reported in the QC table and skipped.
"""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .. import __version__
from .._atomic import atomic_path
from .._lock import output_lock
from .._progress import progress_bar
from .._parallel import Runner
from ..io.images import read_field
from ..io.labels import field_complete, open_labels, write_field_labels
from ..io.plate_index import channels_of
from .backends import Segmenter

QC_COLUMNS = ["field_id", "status", "n_nuclei", "n_cells", "n_border", "empty", "notes", "error", "seconds"]


def qc_path(labels_path: str | os.PathLike) -> Path:
    """The QC table beside a label store: ``labels.zarr`` -> ``labels.qc.csv``."""
    path = Path(labels_path)
    return path.with_name(path.stem + ".qc.csv")


def _failed(qc: dict, err: Exception) -> dict:
    qc.update(status="failed", error=f"{type(err).__name__}: {err}")
    return qc


def segment_index_rows(rows: list[dict], channels: list[str], segmenter: Segmenter, out: str) -> list[dict]:
    """Read, segment (as one batch) and write some fields; never raises: failures come back as QC rows.

    A field that cannot be read is failed alone; if the batch fails, its fields are retried one by
    one so that only the faulty field is reported.
    """
    start = time.perf_counter()
    qcs, images = [], []
    for row in rows:
        qcs.append({"field_id": row["field_id"], "status": "ok", "n_nuclei": 0, "n_cells": 0, "n_border": 0,
                    "empty": False, "notes": "", "error": ""})
        try:
            images.append(read_field(row, channels))
        except Exception as err:  # unreadable or corrupt: reported, the run goes on
            _failed(qcs[-1], err)
            images.append(None)
    readable = [i for i, im in enumerate(images) if im is not None]
    try:
        results = dict(zip(readable, segmenter.segment_fields([images[i] for i in readable], channels)))
    except Exception:
        if len(readable) <= 1:
            results = {}
            for i in readable:
                try:
                    results[i] = segmenter.segment_field(images[i], channels)
                except Exception as err:
                    _failed(qcs[i], err)
        else:  # isolate the faulty field
            return [qc for r in rows for qc in segment_index_rows([r], channels, segmenter, out)]
    for i, result in results.items():
        try:
            write_field_labels(out, rows[i]["field_id"], result.nuclei, result.cells,
                               attrs={"border_labels": result.border.tolist(), "notes": result.notes,
                                      "backend": segmenter.name, "empty": bool(result.empty)})
            qcs[i].update(n_nuclei=int(result.nuclei.max(initial=0)), n_cells=result.n_objects,
                          n_border=len(result.border), empty=bool(result.empty), notes="; ".join(result.notes))
        except Exception as err:
            _failed(qcs[i], err)
    seconds = round((time.perf_counter() - start) / max(len(rows), 1), 3)
    for qc in qcs:
        qc["seconds"] = seconds
    return qcs


def _qc_from_store(out: str, field_id: str) -> dict:
    """The QC row of a field completed by an earlier run, from its group attributes."""
    import zarr

    attrs = zarr.open_group(str(Path(out) / field_id), mode="r").attrs
    return {"field_id": field_id, "status": "ok", "n_nuclei": attrs.get("n_nuclei", 0),
            "n_cells": attrs.get("n_cells", 0), "n_border": len(attrs.get("border_labels", [])),
            "empty": bool(attrs.get("empty", False)),
            "notes": "; ".join([*attrs.get("notes", []), "done earlier"]), "error": "", "seconds": 0.0}


def segment_plate(index: pd.DataFrame, out: str | os.PathLike, segmenter: Segmenter, *, workers: int = 1,
                  scheduler: str | None = None, fields_per_task: int | None = None, progress=None) -> pd.DataFrame:
    """Segment all fields of a plate index into ``out`` (labels.zarr) and write the QC table.

    Parameters
    ----------
    index
        Plate index (`cellkit.io.plate_index`): ``field_id`` and ``path_<channel>`` columns.
    out
        Label store; created if missing. Complete fields are skipped.
    segmenter
        From `get_segmenter`. Its channel roles are resolved for the index's channels
        (`Segmenter.with_roles`) and recorded in the store attributes (``segmentation``).
    workers
        Fields segmented at once on this machine (`cellkit._parallel.Runner`, local processes; 1: in
        this process). Ignored with ``scheduler``.
    scheduler
        Address of a running dask scheduler (``tcp://host:8786``).
    fields_per_task
        Fields segmented together in one batch (one dask task); default 1 for the classical
        backend, 4 for Cellpose (its network runs the batch's tiles together).
    progress
        None, True / ``"tqdm"`` (a notebook bar), ``"rich"``, or ``callable(n_done, n_total)``
        counting fields (see `cellkit._progress`).

    Returns
    -------
    QC DataFrame, one row per field (columns `QC_COLUMNS`), also written to `qc_path(out)`.
    Store attributes record the backend, its parameters and versions.

    ``out`` is made absolute here, on the client, before any task is sent: workers may run in
    another directory. After a parallel run, every field reported done is checked to be complete
    in the store the client sees (`DistributedOutputError` otherwise).
    """
    out = str(Path(out).resolve())
    with output_lock(out):
        return _segment_plate(index, out, segmenter, workers, scheduler, fields_per_task, progress)


def _segment_plate(index, out, segmenter, workers, scheduler, fields_per_task, progress) -> pd.DataFrame:
    channels = channels_of(index)
    segmenter = segmenter.with_roles(channels)  # explicit roles, recorded below; fails early on bad roles
    root = open_labels(out, mode="a")
    root.attrs.update({"segmentation": segmenter.describe(), "channels": channels,
                       "versions": _versions(), "cellkit_version": __version__})
    rows = index.to_dict("records")
    done = [r for r in rows if field_complete(out, r["field_id"])]
    todo = [r for r in rows if not field_complete(out, r["field_id"])]
    for r in todo:  # create the groups here, so that workers never race on shared parents
        root.require_group(r["field_id"])
    results = [_qc_from_store(out, r["field_id"]) for r in done]
    total = len(rows)
    size = fields_per_task or (1 if segmenter.name == "classical" else 4)
    tasks = [todo[i:i + size] for i in range(0, len(todo), size)]
    with progress_bar(progress, "segmenting fields", total) as report:
        report(len(results), total)
        runner = Runner(workers=workers, processes=True, address=scheduler)
        for part in runner.map(_segment_task, tasks, channels, out, shared=segmenter, weights=[len(t) for t in tasks],
                               progress=lambda n, _: report(len(done) + n, total)):
            results += part
    _verify_fields(out, [r for r in results if r["status"] == "ok"])
    order = {r["field_id"]: i for i, r in enumerate(rows)}
    qc = pd.DataFrame(results, columns=QC_COLUMNS).sort_values("field_id", key=lambda s: s.map(order))
    qc = qc.reset_index(drop=True)
    with atomic_path(qc_path(out)) as tmp:
        qc.to_csv(tmp, index=False)
    return qc


def _verify_fields(out: str, ok: list[dict]) -> None:
    """Every field reported written must be complete in the store at ``out`` as this process sees it."""
    from ..errors import DistributedOutputError

    missing = [r["field_id"] for r in ok if not field_complete(out, r["field_id"])]
    if missing:
        raise DistributedOutputError(
            f"{len(missing)} of {len(ok)} fields reported segmented are not in {out} as this machine sees it "
            f"(e.g. {missing[0]}); the workers wrote somewhere else",
            "give workers the same file system and absolute paths (cellkit resolves them), then rerun")


def _segment_task(rows: list[dict], segmenter: Segmenter, channels: list[str], out: str) -> list[dict]:
    return segment_index_rows(rows, channels, segmenter, out)


def _versions() -> dict:
    import skimage

    versions = {"python": platform.python_version(), "numpy": np.__version__, "scikit-image": skimage.__version__}
    try:
        from importlib.metadata import version

        versions["cellpose"] = version("cellpose")
        versions["torch"] = version("torch")
    except Exception:  # not installed: not used
        pass
    return versions
