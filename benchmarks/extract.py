"""Benchmark of `cellkit extract`: throughput, disk bound, memory vs. number of fields, read latency.

Run (from the repository root)::

    PYTHONPATH=$PWD nice -n 10 python benchmarks/extract.py [--fields 20] [--plate-sizes 20,60] [--copies 10]
        [--workers 2] [--reps 3]

1. Renders synthetic 1024x1280 fields with about 60 cells each (TIFFs + labels): as many as the
   largest of ``--fields`` and ``--plate-sizes``.
2. Measures this disk's plain sequential write speed (512 MB in 8 MB blocks, with and without fsync).
3. After a one-field warm-up run, for each plate size (the first N fields), ``--reps`` interleaved
   rounds of: read every field's images and labels only (the I/O floor), extract them (64x64 crops,
   no features) with 1 and ``--workers`` threads. Prints medians: cells/s, the fraction of the floor
   (median over rounds of floor / extract seconds, and the ratio of the medians), the same for CPU
   seconds; then, for ``--fields`` fields, the seconds (wall and CPU) of each step run alone on one
   thread (plan, skeleton, read images, decode + check labels, cut, write blocks). An extraction has fixed costs
   per run (plan set-up, the store's skeleton), so small plates show a lower fraction than large ones.
4. Peak memory (max RSS of a fresh process) for the ``--fields`` fields and for ``--copies`` times
   as many (same images under new field ids, labels copied).
5. Random batch of 256 cells read latency per cell from the large store (page cache warm), with
   the default chunking (32-cell chunks), with those chunks inside 256-cell Zarr shards, and with
   256-cell chunks.

Prints the figures and writes ``benchmarks/results/extract.json``.

For stable figures set glibc's allocator thresholds, e.g. ``MALLOC_MMAP_THRESHOLD_=268435456
MALLOC_TRIM_THRESHOLD_=1073741824``: by default, arrays over the (adaptive) mmap threshold are
mapped fresh and their page faults cost ~30% of the floor's CPU or not, depending on what the
process allocated before (the same 20 fields read in 0.23 or 0.34 s of CPU); the script prints
whether they are set.
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
from cellkit.io.labels import open_labels, read_field_labels, write_field_labels  # noqa: E402

CHANNELS = ["DNA", "Tubulin", "Actin"]


def make_fields(folder: Path, n: int, shape=(1024, 1280), density=0.55) -> pd.DataFrame:
    """Render ``n`` fields (~60 cells each at density 0.55) as TIFFs + labels.zarr; return the index."""
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
    open_labels(folder / "labels.zarr", mode="a")  # the root group once: two threads creating it race
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


def read_floor(index, labels) -> tuple[float, float]:
    """Seconds (wall, CPU of this process) to only read every field's images and labels (`read_field`,
    `read_field_labels`): the I/O floor."""
    start, cpu = time.perf_counter(), time.process_time()
    for row in index.to_dict("records"):
        read_field(row, CHANNELS)
        read_field_labels(labels, row["field_id"])
    return time.perf_counter() - start, time.process_time() - cpu


def stage_breakdown(index, labels, out, size=64, border="inside") -> dict:
    """Seconds of each step of an extraction run alone, one thread, as `extract_cells` does them: plan
    (label summaries), skeleton (empty store + obs), read images, decode + check labels, cut, write blocks."""
    from cellkit.extract.crops import cut_crops
    from cellkit.extract.plan import plan_field, plan_obs
    from cellkit.extract.store import create_skeleton
    from cellkit.extract.tasks import FieldCut, block_pieces, read_planned_labels, write_block
    from cellkit.io.cells import DEFAULT_BLOCK_CELLS, DEFAULT_CHUNK_CELLS, block_bounds
    from cellkit.io.images import to_uint16

    rows, seconds, cpu = index.to_dict("records"), {}, {}

    def timed(name, fn, *args):
        start, start_cpu = time.perf_counter(), time.process_time()
        value = fn(*args)
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start
        cpu[name] = cpu.get(name, 0.0) + time.process_time() - start_cpu  # the process: Zarr's threads included
        return value

    plans = [timed("plan", plan_field, row, str(labels), size, border) for row in rows]
    shutil.rmtree(out, ignore_errors=True)
    obs = plan_obs(index, plans)
    timed("skeleton", create_skeleton, Path(out), obs, CHANNELS, size, DEFAULT_CHUNK_CELLS, DEFAULT_BLOCK_CELLS, False, {})
    cuts = []
    for row, plan in zip(rows, plans):
        images = timed("read_images", lambda: to_uint16(read_field(row, CHANNELS))[0])
        nuclei, cells = timed("decode_and_check_labels", read_planned_labels, str(labels), plan, size, border)
        crops, masks = timed("cut", cut_crops, images, nuclei, cells, plan.labels, plan.origins, size)
        cuts.append(FieldCut(plan.field_id, crops, masks))
    counts = np.array([p.n_cells for p in plans])
    for j, (a, b) in enumerate(block_bounds(len(obs), DEFAULT_BLOCK_CELLS)):
        timed("write_blocks", write_block, str(out), j, a, b, [(cuts[f], lo, hi) for f, lo, hi in block_pieces(counts, a, b)])
    return {**{f"{k}_s": v for k, v in seconds.items()}, **{f"{k}_cpu": v for k, v in cpu.items()},
            "cells": len(obs), "fields": len(rows)}


def timed_extract(index, labels, out, workers, **options) -> dict:
    from cellkit.extract import extract_cells

    shutil.rmtree(out, ignore_errors=True)
    start, cpu = time.perf_counter(), time.process_time()
    result = extract_cells(index, labels, out, workers=workers, **options)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    raw_mb = result.n_cells * len(CHANNELS) * options.get("size", 64) ** 2 * 2 / 1e6
    return {"workers": workers, "cells": result.n_cells, "seconds": seconds, "cpu_seconds": cpu,
            "cells_per_s": result.n_cells / seconds,
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


def throughput(index, labels, work: Path, workers: int, reps: int) -> dict:
    """``reps`` interleaved rounds of the floor then extraction with 1 and ``workers`` threads; prints and
    returns the medians. The fraction of the floor is the median over rounds of floor seconds / extract
    seconds (a round's runs are adjacent in time, so a load change on a shared machine hits both);
    the same for CPU seconds of this process (extraction's own threads included)."""
    floors, runs = [], {w: [] for w in sorted({1, workers})}
    for _ in range(reps):  # interleaved: the floor and each extraction, round after round
        floors.append(read_floor(index, labels))
        for w in runs:
            runs[w].append(timed_extract(index, labels, work / f"t{w}.zarr", w, size=64))
    wall = np.array([f[0] for f in floors])
    cpu = np.array([f[1] for f in floors])
    n_cells = runs[1][0]["cells"]
    out = {"fields": len(index), "cells": n_cells, "read_only_s": float(np.median(wall)), "read_only_s_runs": wall.tolist(),
           "read_only_cpu_s": float(np.median(cpu)), "read_only_cells_per_s": n_cells / float(np.median(wall)), "extract": []}
    print(f"{len(index)} fields, {n_cells} cells: reading images + labels alone (I/O floor) {out['read_only_s']:.2f} s "
          f"(CPU {out['read_only_cpu_s']:.2f} s), {out['read_only_cells_per_s']:.0f} cells/s (median of {reps}: "
          + ", ".join(f"{f:.2f}" for f in wall) + " s)")
    for w, rounds in runs.items():
        seconds = np.array([r["seconds"] for r in rounds])
        cpu_seconds = np.array([r["cpu_seconds"] for r in rounds])
        r = dict(min(rounds, key=lambda r: abs(r["seconds"] - np.median(seconds))))
        r.update(seconds_runs=seconds.tolist(), cpu_seconds_runs=cpu_seconds.tolist(),
                 fraction_of_floor=float(np.median(wall / seconds)),
                 fraction_of_floor_of_medians=float(np.median(wall) / np.median(seconds)),
                 cpu_fraction_of_floor=float(np.median(cpu / cpu_seconds)))
        out["extract"].append(r)
        print(f"  extract, {w} worker(s): {np.median(seconds):.2f} s (runs " + ", ".join(f"{x:.2f}" for x in seconds)
              + f"), {n_cells / np.median(seconds):.0f} cells/s = {r['fraction_of_floor']:.2f} x the read-only floor "
              f"(median of rounds; {r['fraction_of_floor_of_medians']:.2f} from the medians; target >= 0.5 with 1 "
              f"worker); CPU {np.median(cpu_seconds):.2f} s = {r['cpu_fraction_of_floor']:.2f} x the floor's; "
              f"{r['raw_crop_MB']:.0f} -> {r['stored_MB']:.0f} MB stored")
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=20, help="Fields of the memory, step and read-latency runs.")
    parser.add_argument("--plate-sizes", default="20,60",
                        help="Comma-separated field counts of the throughput runs (the first N of the rendered fields).")
    parser.add_argument("--copies", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3, help="Interleaved rounds of floor and extraction (medians).")
    parser.add_argument("--work", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="cellkit-bench-extract-"))
    work.mkdir(parents=True, exist_ok=True)
    report = {"fields": args.fields, "copies": args.copies, "field_shape": [1024, 1280], "crop_size": 64,
              "cpu_count": os.cpu_count()}
    sizes = [int(n) for n in args.plate_sizes.split(",") if n.strip()]
    report["malloc_env"] = {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")}
    print(f"glibc allocator thresholds: {report['malloc_env']} (see the docstring)")
    try:
        t = time.perf_counter()
        rendered = make_fields(work / "fields", max([args.fields, *sizes]))
        index = rendered.head(args.fields)
        labels = work / "fields" / "labels.zarr"
        print(f"rendered {len(rendered)} fields in {time.perf_counter() - t:.1f} s")

        report["disk_MB_per_s"] = disk_write_speed(work)
        print(f"disk sequential write: {report['disk_MB_per_s']['buffered']:.0f} MB/s buffered, "
              f"{report['disk_MB_per_s']['fsync']:.0f} MB/s with fsync")

        timed_extract(index.head(1), labels, work / "warm.zarr", 1, size=64)  # imports, numba cache, dask pools
        report["throughput"] = {}
        for n_fields in sizes:
            report["throughput"][str(n_fields)] = throughput(rendered.head(n_fields), labels, work, args.workers, args.reps)

        stages = stage_breakdown(index, labels, work / "stages.zarr")
        report["stages_one_thread"] = stages
        total = sum(v for k, v in stages.items() if k.endswith("_s"))
        total_cpu = sum(v for k, v in stages.items() if k.endswith("_cpu"))
        steps = [(k[:-2], v, stages[k[:-2] + "_cpu"]) for k, v in stages.items() if k.endswith("_s")]
        print(f"one thread, steps alone ({stages['cells']} cells, {stages['fields']} fields; {total:.2f} s, CPU "
              f"{total_cpu:.2f} s): "
              + ", ".join(f"{k} {v:.3f} s ({v / total:.0%}; CPU {c:.3f} s)" for k, v, c in steps))

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
