"""Benchmark of `cellkit extract`: throughput, disk bound, memory vs. number of fields, read latency.

Run (from the repository root)::

    PYTHONPATH=$PWD nice -n 10 python benchmarks/extract.py [--fields 20] [--copies 10] [--workers 2]

1. Renders ``--fields`` synthetic 1024x1280 fields with about 100 cells each (TIFFs + labels).
2. Measures this disk's plain sequential write speed (512 MB in 8 MB blocks, with and without fsync).
3. Extracts them (64x64 crops, no features) with 1 and ``--workers`` threads: cells/s and MB/s of
   crop data, next to the time to only read the fields.
4. Peak memory (max RSS of a fresh process) for the ``--fields`` fields and for ``--copies`` times
   as many (same images under new field ids, labels copied).
5. Random batch of 256 cells read latency per cell from the large store (page cache warm), with
   the default chunking (16-cell chunks), with 16-cell chunks inside 256-cell Zarr shards, and with
   256-cell chunks.

Prints the figures and writes ``benchmarks/results/extract.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cellkit.datasets import phenotype, render_field  # noqa: E402
from cellkit.io import read_field  # noqa: E402
from cellkit.io.labels import read_field_labels, write_field_labels  # noqa: E402

CHANNELS = ["DNA", "Tubulin", "Actin"]


def make_fields(folder: Path, n: int, shape=(1024, 1280), density=0.55) -> pd.DataFrame:
    """Render ``n`` fields (~100 cells each at density 0.55) as TIFFs + labels.zarr; return the index."""
    params = phenotype()
    params["density"] = density

    def one(k):
        images, nuclei, cells = render_field(params, shape, rng=np.random.default_rng(k))
        paths = {}
        for c, ch in enumerate(CHANNELS):
            paths[f"path_{ch}"] = str(folder / f"f{k:04d}_{ch}.tif")
            tifffile.imwrite(paths[f"path_{ch}"], images[c])
        field_id = f"P1/W{k:04d}/1"
        write_field_labels(folder / "labels.zarr", field_id, nuclei, cells)
        return {"field_id": field_id, "plate": "P1", "well": f"W{k:04d}", "site": 1, "batch": "B1",
                "compound": "DMSO", "concentration": 0.0, "moa": "control", **paths}

    folder.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(2) as pool:
        rows = list(pool.map(one, range(n)))
    return pd.DataFrame(rows)


def copy_fields(index: pd.DataFrame, labels: Path, out_labels: Path, copies: int) -> pd.DataFrame:
    """``copies`` x the fields under new ids (same image files), labels copied."""
    parts = []
    for t in range(copies):
        copy = index.copy()
        copy["plate"] = f"P{t + 1}"
        copy["field_id"] = copy["plate"] + "/" + copy["well"] + "/1"
        for old, new in zip(index.field_id, copy.field_id):
            write_field_labels(out_labels, new, *read_field_labels(labels, old))
        parts.append(copy)
    return pd.concat(parts, ignore_index=True)


def disk_write_speed(folder: Path, total_mb: int = 512, block_mb: int = 8) -> dict:
    block = np.random.default_rng(0).integers(0, 2**16, block_mb * 2**19, dtype=np.uint16).tobytes()
    out = {}
    for fsync in (False, True):
        path = folder / "ddtest.bin"
        start = time.perf_counter()
        with open(path, "wb") as f:
            for _ in range(total_mb // block_mb):
                f.write(block)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        out["fsync" if fsync else "buffered"] = total_mb / (time.perf_counter() - start)
        path.unlink()
    return out


def store_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def stage_breakdown(index, labels, out, size=64) -> dict:
    """Seconds for each step of the pass run alone, one thread: plan, read+cut, write."""
    from cellkit.extract.plan import plan_field
    from cellkit.extract.tasks import cut_field
    from cellkit.io.cells import write_cells

    rows = index.to_dict("records")
    start = time.perf_counter()
    plans = [plan_field(row, str(labels), size, "drop") for row in rows]
    plan_s = time.perf_counter() - start
    start = time.perf_counter()
    cuts = [cut_field(row, str(labels), plan, size, "drop", False, CHANNELS, None) for row, plan in zip(rows, plans)]
    cut_s = time.perf_counter() - start
    crops = np.concatenate([c.crops for c in cuts])
    masks = np.concatenate([c.masks for c in cuts])
    obs = pd.DataFrame({"cell_id": np.arange(len(crops)).astype(str)})
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    write_cells(out, crops, masks, obs, channels=CHANNELS)
    write_s = time.perf_counter() - start
    return {"plan_s": plan_s, "read_and_cut_s": cut_s, "write_s": write_s, "cells": len(crops)}


def timed_extract(index, labels, out, workers, **options) -> dict:
    from cellkit.extract import extract_cells

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = extract_cells(index, labels, out, workers=workers, **options)
    seconds = time.perf_counter() - start
    raw_mb = result.n_cells * len(CHANNELS) * options.get("size", 64) ** 2 * 2 / 1e6
    return {"workers": workers, "cells": result.n_cells, "seconds": seconds, "cells_per_s": result.n_cells / seconds,
            "crop_MB_per_s": raw_mb / seconds, "stored_MB_per_s": store_bytes(out) / 1e6 / seconds,
            "raw_crop_MB": raw_mb, "stored_MB": store_bytes(out) / 1e6}


MEMORY_CHILD = """
import json, sys
sys.path.insert(0, {root!r})
import pandas as pd
from cellkit.extract import extract_cells
index = pd.read_parquet({index!r})
def hwm():  # peak RSS of this process (VmHWM), in MB; ru_maxrss can carry the parent's
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024
base = hwm()
import time; t = time.perf_counter()
r = extract_cells(index, {labels!r}, {out!r}, workers={workers}, size=64)
print(json.dumps({{"fields": len(index), "cells": r.n_cells, "seconds": time.perf_counter() - t,
                  "rss_after_imports_MB": base, "peak_rss_MB": hwm()}}))
"""


def peak_memory(index, labels, out, workers) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    path = Path(out).with_suffix(".parquet")
    index.to_parquet(path)
    code = MEMORY_CHILD.format(root=str(ROOT), index=str(path), labels=str(labels), out=str(out), workers=workers)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def read_latency(path: Path, n_batches: int = 5, batch: int = 256) -> dict:
    import zarr

    from cellkit.io import CellDataset

    images = zarr.open_group(str(path), mode="r")["images"]
    n = images.shape[0]
    rng = np.random.default_rng(0)
    batched, loader_batch, single = [], [], []
    dataset = CellDataset(path)
    for _ in range(n_batches):
        rows = np.sort(rng.choice(n, size=min(batch, n), replace=False))
        start = time.perf_counter()
        images.get_orthogonal_selection((rows,))  # zarr's own integer selection
        batched.append((time.perf_counter() - start) / len(rows) * 1e3)
        start = time.perf_counter()
        dataset.__getitems__(rng.permutation(rows).tolist())
        loader_batch.append((time.perf_counter() - start) / len(rows) * 1e3)
        start = time.perf_counter()
        for r in rng.permutation(rows):
            dataset[int(r)]
        single.append((time.perf_counter() - start) / len(rows) * 1e3)
    return {"cells_in_store": int(n), "chunks": list(images.chunks), "shards": list(images.shards or []),
            "batch_ms_per_cell": float(np.median(batched)), "dataset_batch_ms_per_cell": float(np.median(loader_batch)),
            "dataset_item_ms_per_cell": float(np.median(single))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=20)
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cellkit-bench-extract-"))
    work.mkdir(parents=True, exist_ok=True)
    report = {"fields": args.fields, "copies": args.copies, "field_shape": [1024, 1280], "crop_size": 64,
              "cpu_count": os.cpu_count()}
    try:
        t = time.perf_counter()
        index = make_fields(work / "fields", args.fields)
        labels = work / "fields" / "labels.zarr"
        print(f"rendered {args.fields} fields in {time.perf_counter() - t:.1f} s")

        report["disk_MB_per_s"] = disk_write_speed(work)
        print(f"disk sequential write: {report['disk_MB_per_s']['buffered']:.0f} MB/s buffered, "
              f"{report['disk_MB_per_s']['fsync']:.0f} MB/s with fsync")

        start = time.perf_counter()
        for row in index.to_dict("records"):
            read_field(row, CHANNELS)
            read_field_labels(labels, row["field_id"])
        report["read_only_s"] = time.perf_counter() - start
        print(f"reading the {args.fields} fields + labels alone: {report['read_only_s']:.2f} s")

        report["throughput"] = [timed_extract(index, labels, work / f"t{w}.zarr", w, size=64)
                                for w in sorted({1, args.workers})]
        for r in report["throughput"]:
            print(f"extract {r['cells']} cells, {r['workers']} worker(s): {r['seconds']:.2f} s, "
                  f"{r['cells_per_s']:.0f} cells/s, {r['crop_MB_per_s']:.1f} MB/s of crops "
                  f"({r['stored_MB_per_s']:.1f} MB/s stored, {r['raw_crop_MB']:.0f} -> {r['stored_MB']:.0f} MB)")

        report["stages_one_thread"] = stage_breakdown(index, labels, work / "stages.zarr")
        print("one thread, steps alone: plan (labels) {plan_s:.2f} s, read + cut {read_and_cut_s:.2f} s, "
              "write store {write_s:.2f} s for {cells} cells".format(**report["stages_one_thread"]))

        big = copy_fields(index, labels, work / "big_labels.zarr", args.copies)
        report["memory"] = [peak_memory(index, labels, work / "m_small.zarr", args.workers),
                            peak_memory(big, work / "big_labels.zarr", work / "m_big.zarr", args.workers)]
        for m in report["memory"]:
            print(f"memory: {m['fields']} fields, {m['cells']} cells, {m['seconds']:.1f} s: peak RSS "
                  f"{m['peak_rss_MB']:.0f} MB (after imports {m['rss_after_imports_MB']:.0f} MB)")

        report["read_latency"] = [read_latency(work / "m_big.zarr")]
        for name, chunking in (("sharded", dict(sharded=True)), ("big_chunks", dict(chunk_cells=256))):
            timed_extract(big, work / "big_labels.zarr", work / f"{name}.zarr", args.workers, size=64, **chunking)
            report["read_latency"].append(read_latency(work / f"{name}.zarr"))
        for r in report["read_latency"]:
            print(f"random 256-cell batch from {r['cells_in_store']} cells, chunks {r['chunks'][0]} cells "
                  f"(shards {r['shards'][0] if r['shards'] else '-'}): {r['batch_ms_per_cell']:.3f} ms/cell zarr oindex, "
                  f"{r['dataset_batch_ms_per_cell']:.3f} ms/cell as a CellDataset batch (read_rows), "
                  f"{r['dataset_item_ms_per_cell']:.3f} ms/cell as single CellDataset items")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    out = ROOT / "benchmarks" / "results" / "extract.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
