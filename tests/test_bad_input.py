"""Bad input through the CLI: exit status, one error line naming the culprit, nothing half-accepted.

Each test plays a careless user (or batch script). An expected failure must exit 1 with exactly one
``error:`` line (plus at most a ``hint:`` line) and no traceback; an unexpected one exits 2 and
points to a log with the traceback.
"""

from __future__ import annotations

import errno

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cellkit.cli import app
from cellkit.datasets import SyntheticConfig, write_synthetic_plate

runner = CliRunner()
TINY = SyntheticConfig(n_batches=1, plates_per_batch=1, compounds_per_moa=1, n_moas=2, n_concentrations=1,
                       dmso_wells=1, sites=1, height=96, width=128, seed=3)


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def one_error(result, *needles: str, code: int = 1) -> str:
    """The single ``error:`` line of a failed command; checks status, no traceback, the needles."""
    text = result.output
    assert result.exit_code == code, text
    assert "Traceback" not in text, text
    lines = [line for line in text.splitlines() if "error:" in line]
    assert len(lines) == 1, text
    for needle in needles:
        assert needle in lines[0], text
    return lines[0]


@pytest.fixture(scope="module")
def plate(tmp_path_factory):
    """A tiny synthetic plate (3 fields of 96 x 128 px) and its index. Do not modify."""
    root = tmp_path_factory.mktemp("bad") / "plate"
    write_synthetic_plate(root, TINY)
    index = root.parent / "index.parquet"
    result = run("index", root / "BBBC021_v1_image.csv", "--moa", root / "BBBC021_v1_moa.csv", "--out", index)
    assert result.exit_code == 0, result.output
    return root, index


@pytest.fixture(scope="module")
def labels(plate):
    """The tiny plate segmented with the default backend. Do not modify."""
    _, index = plate
    out = index.parent / "labels.zarr"
    result = run("segment", index, "--out", out)
    assert result.exit_code == 0, result.output
    return out


# ----------------------------------------------------------------------------- output paths

@pytest.mark.parametrize("command", ["index", "export", "profile"])
def test_file_output_onto_a_folder_is_refused_and_the_folder_kept(plate, tmp_path, command):
    root, index = plate
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / "precious.txt").write_text("keep me")
    cells = tmp_path / "cells.h5ad"
    _tiny_adata().write_h5ad(cells)
    args = {"index": ["index", root / "BBBC021_v1_image.csv", "--moa", root / "BBBC021_v1_moa.csv"],
            "export": ["export", cells], "profile": ["profile", cells]}[command]
    one_error(run(*args, "--out", folder), str(folder), "folder")
    assert (folder / "precious.txt").read_text() == "keep me"


def test_store_output_onto_a_foreign_folder_or_a_file_is_refused(plate, tmp_path):
    _, index = plate
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("x")
    one_error(run("segment", index, "--out", folder), str(folder), "not a cellkit.labels store")
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    afile = tmp_path / "labels.zarr"
    afile.write_text("x")
    one_error(run("segment", index, "--out", afile), str(afile), "is a file")
    assert afile.read_text() == "x"


def test_extract_adata_onto_a_folder_is_refused_before_work(plate, tmp_path):
    _, index = plate
    folder = tmp_path / "cells.h5ad"
    folder.mkdir()
    (folder / "x").write_text("x")
    one_error(run("extract", index, tmp_path / "labels.zarr", "--out", tmp_path / "cells.zarr", "--adata", folder),
              str(folder))
    assert (folder / "x").exists() and not (tmp_path / "cells.zarr").exists()


# ----------------------------------------------------------------------------- unreadable tables

def test_index_of_garbage_tables(tmp_path):
    binary = tmp_path / "latin.csv"
    binary.write_bytes(b"plate,path\n\xff\xfesecret,2\n")
    line = one_error(run("index", binary, "--channel", "DNA=path", "--out", tmp_path / "ix.parquet"),
                     str(binary), "UTF-8")
    assert "secret" not in line
    garbage = tmp_path / "garbage.csv"
    garbage.write_bytes(b'\x00\x01 "secret\n"""\n')
    line = one_error(run("index", garbage, "--channel", "DNA=path", "--out", tmp_path / "ix.parquet"),
                     str(garbage), "not a readable CSV")
    assert "secret" not in line
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    one_error(run("index", empty, "--channel", "DNA=path", "--out", tmp_path / "ix.parquet"), str(empty))
    assert not (tmp_path / "ix.parquet").exists()


# ----------------------------------------------------------------------------- names and file contents

def test_plate_and_well_names_that_are_not_safe_store_paths_are_refused_at_index_time(plate, tmp_path):
    root, _ = plate
    table = pd.read_csv(root / "BBBC021_v1_image.csv")
    table["Image_PathName_DAPI"] = str(root) + "/" + table["Image_PathName_DAPI"]  # absolute: the table moves
    for c in ("Tubulin", "Actin"):
        table[f"Image_PathName_{c}"] = str(root) + "/" + table[f"Image_PathName_{c}"]
    table.loc[0, "Image_Metadata_Plate_DAPI"] = "../escape"
    table.loc[1, "Image_Metadata_Well_DAPI"] = "B/03"
    bad = tmp_path / "image.csv"
    table.to_csv(bad, index=False)
    out = tmp_path / "ix.parquet"
    result = run("index", bad, "--moa", root / "BBBC021_v1_moa.csv", "--out", out)
    one_error(result, "invalid plate index")
    assert "plate '../escape' contains '/'" in result.output and "well 'B/03' contains '/'" in result.output
    assert not out.exists()


def test_a_non_image_file_is_named_but_its_bytes_are_never_shown(plate, tmp_path):
    from cellkit.io import read_index, write_index

    root, index = plate
    table = read_index(index)
    fake = tmp_path / "fake.tif"
    fake.write_bytes(b"SECRET-CONTENTS of a text file\n" * 4)
    table.loc[0, "path_DNA"] = str(fake)
    bad_index = tmp_path / "index.parquet"
    write_index(table, bad_index)
    result = run("segment", bad_index, "--out", tmp_path / "labels.zarr")
    assert result.exit_code == 1 and "1 of 3 fields failed" in result.output
    assert str(fake) in result.output.replace("\n", "")
    assert "SECRET" not in result.output and "SECRET" not in (tmp_path / "labels.qc.csv").read_text()


# ----------------------------------------------------------------------------- environment failures

@pytest.mark.parametrize("code, words", [(errno.ENOSPC, "No space left"), (errno.EACCES, "Permission denied"),
                                         (errno.EROFS, "Read-only")])
def test_disk_full_and_permissions_are_one_line(plate, tmp_path, monkeypatch, code, words):
    root, _ = plate
    out = tmp_path / "ix.parquet"

    def refuse(self, path, *args, **kwargs):
        raise OSError(code, __import__("os").strerror(code), str(path))

    monkeypatch.setattr(pd.DataFrame, "to_parquet", refuse)
    line = one_error(run("index", root / "BBBC021_v1_image.csv", "--moa", root / "BBBC021_v1_moa.csv",
                         "--out", out), words)
    assert ".tmp" in line or str(out) in line
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_unexpected_errors_point_to_a_log_and_debug_shows_the_traceback(plate, tmp_path, monkeypatch):
    root, _ = plate
    monkeypatch.setenv("CELLKIT_LOG_DIR", str(tmp_path / "logs"))

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("cellkit.io.write_index", bug)
    args = ["index", root / "BBBC021_v1_image.csv", "--moa", root / "BBBC021_v1_moa.csv", "--out", tmp_path / "i.pq"]
    result = run(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unexpected error" in result.output and "ZeroDivisionError" in result.output
    logs = list((tmp_path / "logs").iterdir())
    assert len(logs) == 1 and str(logs[0]) in result.output.replace("\n", "")
    assert "Traceback" in logs[0].read_text() and "a bug" in logs[0].read_text()
    result = run("--debug", *args)
    assert isinstance(result.exception, ZeroDivisionError)
    monkeypatch.setenv("CELLKIT_DEBUG", "1")
    assert isinstance(run(*args).exception, ZeroDivisionError)


# ----------------------------------------------------------------------------- duplicated cells

def test_duplicated_cell_ids_are_an_error_or_dropped_on_request(tmp_path):
    import anndata as ad

    cells = _tiny_adata()
    with pytest.warns(UserWarning, match="not unique"):
        twice = ad.concat([cells, cells[:2]])  # the first two cells of W0 twice
    path = tmp_path / "cells.h5ad"
    twice.write_h5ad(path)
    out = tmp_path / "wells.h5ad"
    line = one_error(run("profile", path, "--out", out, "--preset", "none"), str(path), "2 cell id(s)",
                     "P1/W0/1/1")
    assert "twice" in line and not out.exists()
    result = run("profile", path, "--out", out, "--preset", "none", "--drop-duplicates")
    assert result.exit_code == 0, result.output
    wells = ad.read_h5ad(out)
    assert wells.obs["n_cells"].tolist() == [3, 3]
    np.testing.assert_allclose(wells.X[0], cells.X[:3].mean(axis=0), rtol=1e-5)
    assert wells.uns["cellkit"]["aggregate"]["duplicates_dropped"] == 2


# ----------------------------------------------------------------------------- stale derived files

def test_replacing_a_store_invalidates_what_was_derived_from_it(plate, labels, tmp_path, monkeypatch):
    import shutil

    _, index = plate
    store, cells, wells = tmp_path / "cells.zarr", tmp_path / "cells.h5ad", tmp_path / "wells.h5ad"
    assert run("extract", index, labels, "--out", store).exit_code == 0
    assert run("profile", cells, "--out", wells, "--preset", "none").exit_code == 0
    shutil.copy(cells, tmp_path / "old.h5ad")

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # a kill in the middle of writing the new store

    monkeypatch.setattr("cellkit.extract.run._write_block", killed)
    result = run("extract", index, labels, "--out", store, "--size", 32, "--overwrite")
    assert result.exit_code == 130  # interrupted
    monkeypatch.undo()
    assert not cells.exists()  # removed before the old store was
    # the old table put back beside the new, incomplete store; and the wells made from it
    shutil.copy(tmp_path / "old.h5ad", cells)
    one_error(run("profile", cells, "--out", tmp_path / "w2.h5ad"), str(cells), "replaced")
    one_error(run("evaluate", wells, "--out-dir", tmp_path / "ev"), str(wells), "replaced")
    assert not (tmp_path / "w2.h5ad").exists() and not (tmp_path / "ev").exists()
    # finishing the new extraction makes a consistent set again
    assert run("extract", index, labels, "--out", store, "--size", "32", "--overwrite").exit_code == 0
    assert run("profile", cells, "--out", tmp_path / "w2.h5ad", "--preset", "none").exit_code == 0


# ----------------------------------------------------------------------------- distributed runs

@pytest.fixture
def dask_cluster(tmp_path):
    """A real ``dask scheduler`` and ``dask worker`` (separate processes, loopback) whose working
    directory is not the client's; stopped by PID."""
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from distributed import Client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    where = tmp_path / "worker-cwd"
    where.mkdir()
    dask = str(Path(sys.executable).with_name("dask"))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    log = open(tmp_path / "cluster.log", "w")
    procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--dashboard-address",
                               ":0"], cwd=where, env=env, stdout=log, stderr=log)]
    procs.append(subprocess.Popen([dask, "worker", address, "--nworkers", "1", "--nthreads", "1", "--dashboard-address",
                                   ":0", "--local-directory", str(where)], cwd=where, env=env, stdout=log, stderr=log))
    try:
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        yield address, where
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in reversed(procs):
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


@pytest.mark.slow
def test_relative_outputs_land_where_the_client_expects_with_a_real_cluster(plate, dask_cluster, tmp_path,
                                                                             monkeypatch):
    from cellkit.io.cells import open_cells
    from cellkit.io.labels import field_complete

    _, index = plate
    address, worker_cwd = dask_cluster
    client_cwd = tmp_path / "client"
    client_cwd.mkdir()
    monkeypatch.chdir(client_cwd)
    result = run("segment", index, "--out", "labels.zarr", "--scheduler", address)
    assert result.exit_code == 0, result.output
    fields = pd.read_parquet(index)["field_id"]
    assert all(field_complete(client_cwd / "labels.zarr", f) for f in fields)
    result = run("extract", index, "labels.zarr", "--out", "cells.zarr", "--scheduler", address, "--no-features")
    assert result.exit_code == 0, result.output
    assert open_cells(client_cwd / "cells.zarr").attrs["complete"] is True
    assert not [p.name for p in worker_cwd.iterdir() if p.suffix == ".zarr"]


def test_fields_reported_done_but_missing_fail_loudly(plate, tmp_path, monkeypatch):
    """What a worker in another file system looks like to the client: success reported, nothing written."""
    _, index = plate

    def wrote_elsewhere(rows, channels, segmenter, out):
        return [{"field_id": r["field_id"], "status": "ok", "n_nuclei": 1, "n_cells": 1, "n_border": 0,
                 "empty": False, "notes": "", "error": ""} for r in rows]

    monkeypatch.setattr("cellkit.segment.plate.segment_index_rows", wrote_elsewhere)
    out = tmp_path / "labels.zarr"
    one_error(run("segment", index, "--out", out), "3 of 3 fields", str(out), "somewhere else")


# ----------------------------------------------------------------------------- concurrent runs

def test_a_second_run_into_the_same_store_refuses_or_waits(plate, labels, tmp_path, monkeypatch):
    import os
    import threading

    from cellkit._lock import output_lock

    _, index = plate
    store = tmp_path / "cells.zarr"
    with output_lock(store), output_lock(tmp_path / "l.zarr"):  # other runs hold both stores
        one_error(run("extract", index, labels, "--out", store, "--no-features"), str(store),
                  "being written by another cellkit run", f"process {os.getpid()}")
        assert not store.exists()
        one_error(run("segment", index, "--out", tmp_path / "l.zarr"), "l.zarr", "another cellkit run")
        assert not (tmp_path / "l.zarr").exists()
    spec = tmp_path / "p.yaml"
    spec.write_text(f"output: {tmp_path / 'run'}\ninput:\n  index: {{path: {index}}}\nstages: [segment]\n")
    with output_lock(tmp_path / "run"):  # one `cellkit run` per output folder
        one_error(run("run", spec), "run is being written by another cellkit run")
        assert not (tmp_path / "run" / "index.parquet").exists()
    # with CELLKIT_LOCK_WAIT the second run waits for the first, then finds the store complete
    assert run("extract", index, labels, "--out", store, "--no-features").exit_code == 0
    monkeypatch.setenv("CELLKIT_LOCK_WAIT", "30")
    held = threading.Event()

    def first_run():
        with output_lock(store):
            held.set()
            threading.Event().wait(1.0)

    thread = threading.Thread(target=first_run)
    thread.start()
    held.wait()
    result = run("extract", index, labels, "--out", store, "--no-features")
    thread.join()
    assert result.exit_code == 0 and "already complete" in result.output, result.output


# ----------------------------------------------------------------------------- pipeline YAML

def test_pipeline_yaml_lists_every_problem_before_any_stage_runs(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"""
name: x
outptu: {tmp_path / 'o'}
input:
  synthetic: {{n_batches: two, colour: red}}
stages:
  - segment: {{backend: magic, threshold: 3}}
  - extract: {{size: 1, border: wrap}}
  - embed: {{methods: [simclr], config: {{lr_typo: 3}}}}
  - profil: {{}}
""")
    line = one_error(run("run", bad, "--out", tmp_path / "o"), str(bad), "10 problem(s)")
    for where in ["outptu: unknown top-level key", "output: required", "input.synthetic.n_batches: must be an integer",
                  "input.synthetic.colour: unknown option", "stages[0].segment.backend: must be one of",
                  "stages[0].segment.threshold: unknown option", "stages[1].extract.size: must be an integer >= 2",
                  "stages[1].extract.border", "lr_typo", "unknown stage 'profil'"]:
        assert where in line, where
    assert not (tmp_path / "o").exists()  # nothing ran


def test_pipeline_yaml_tags_and_syntax(tmp_path):
    tagged = tmp_path / "tag.yaml"
    marker = tmp_path / "ran"
    tagged.write_text(f'name: !!python/object/apply:os.system ["touch {marker}"]\noutput: o\n')
    line = one_error(run("run", tagged), str(tagged), "YAML tag")
    assert "touch" not in line and not marker.exists()
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: secret\n  stages: [\n")
    line = one_error(run("run", broken), str(broken), "line 2", "not valid YAML")
    assert "secret" not in line
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: \xe9t\xe9\n")
    one_error(run("run", latin), str(latin), "UTF-8")


# ----------------------------------------------------------------------------- corrupt files

def test_truncated_h5ad_and_tiff_are_one_line(plate, labels, tmp_path):
    import shutil

    _, index = plate
    assert run("extract", index, labels, "--out", tmp_path / "cells.zarr", "--size", 32).exit_code == 0
    cells = tmp_path / "cells.h5ad"
    truncated = tmp_path / "truncated.h5ad"
    truncated.write_bytes(cells.read_bytes()[:3000])
    one_error(run("profile", truncated, "--out", tmp_path / "w.h5ad"), str(truncated), "not a readable .h5ad")
    one_error(run("evaluate", truncated), str(truncated), "not a readable .h5ad")
    # a truncated TIFF inside `cellkit run`: the stage fails with the field and the reason, later stages never run
    from cellkit.io import read_index, write_index

    table = read_index(index)
    tif = tmp_path / "cut.tif"
    shutil.copy(table.loc[1, "path_DNA"], tif)
    tif.write_bytes(tif.read_bytes()[:4000])
    table.loc[1, "path_DNA"] = str(tif)
    write_index(table, tmp_path / "ix.parquet")
    spec = tmp_path / "p.yaml"
    spec.write_text(f"name: t\noutput: {tmp_path / 'run'}\ninput:\n  index: {{path: {tmp_path / 'ix.parquet'}}}\n"
                    "stages:\n  - segment: {backend: classical}\n  - extract: {size: 32}\n")
    one_error(run("run", spec), "segmentation failed for 1 of 3 fields", table.loc[1, "field_id"], str(tif))
    assert not (tmp_path / "run" / "cells.zarr").exists()


@pytest.mark.slow
def test_damaged_chunk_malicious_checkpoint_and_wrong_crop_size(plate, labels, tmp_path):
    import pickle

    _, index = plate
    store = tmp_path / "cells.zarr"
    assert run("extract", index, labels, "--out", store, "--size", 32).exit_code == 0
    model = tmp_path / "model"
    result = run("train", store, "--out", model, "--epochs", 1, "--batch-size", 2, "--width", 4)
    assert result.exit_code == 0, result.output
    assert run("embed", store, "-m", model, "--adata", tmp_path / "cells.h5ad").exit_code == 0
    # a query crop of the wrong size is refused, not matched
    np.save(tmp_path / "q.npy", np.zeros((3, 48, 48), np.uint16))
    one_error(run("search", tmp_path / "cells.h5ad", "--crop", tmp_path / "q.npy", "--use-rep", "X_simclr"),
              "48 x 48", "32 x 32")
    # a checkpoint that would run code if unpickled
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    (model / "checkpoint.pt").write_bytes(pickle.dumps({"model": Payload()}))
    line = one_error(run("train", store, "--out", model, "--epochs", 2, "--batch-size", 2, "--width", 4, "--resume"),
                     "checkpoint.pt", "nothing in it was run")
    assert not marker.exists() and "weights_only" not in line
    # a damaged chunk of the crops
    chunk = next(p for p in (store / "images").rglob("*") if p.is_file() and p.name != "zarr.json")
    data = bytearray(chunk.read_bytes())
    data[16:200] = bytes(184)
    chunk.write_bytes(bytes(data))
    one_error(run("embed", store, "-m", model, "--adata", tmp_path / "cells.h5ad"), "damaged", str(store))


# ----------------------------------------------------------------------------- helpers

def _tiny_adata(n_wells: int = 2, per_well: int = 3):
    import anndata as ad

    rng = np.random.default_rng(0)
    n = n_wells * per_well
    obs = pd.DataFrame({"plate": "P1", "well": np.repeat([f"W{w}" for w in range(n_wells)], per_well),
                        "compound": np.repeat(["DMSO"] + ["c1"] * (n_wells - 1), per_well)},
                       index=[f"P1/W{i // per_well}/1/{i % per_well + 1}" for i in range(n)])
    return ad.AnnData(rng.normal(size=(n, 4)).astype(np.float32), obs=obs,
                      var=pd.DataFrame(index=[f"f{j}" for j in range(4)]))


def test_a_check_of_the_library_is_an_error_line_and_a_bug_stays_a_bug(plate, tmp_path, monkeypatch):
    """A ValueError that cellkit raises itself (an option check) reaching the CLI uncaught is one error line,
    exit 1; a ValueError from a cellkit line that is no ``raise`` (a bug) or from another library stays a bug."""
    import anndata as ad

    from cellkit import errors, pp
    from cellkit.models.embed import embedding_function

    root, _ = plate
    monkeypatch.setenv("CELLKIT_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr("cellkit.io.write_index", lambda *a, **k: embedding_function(None, {}, pool="bogus"))
    args = ["index", root / "BBBC021_v1_image.csv", "--moa", root / "BBBC021_v1_moa.csv", "--out", tmp_path / "i.pq"]
    one_error(run(*args), "unknown embedding pool 'bogus'")
    with pytest.raises(ValueError) as raised:  # a check whose raise statement spans two lines
        pp.spherize(ad.AnnData(np.full((4, 2), np.nan)), control=None)
    assert errors.raised_by_cellkit(raised.value) and "contain NaN" in str(raised.value)

    def unpack_bug(*args, **kwargs):
        exec(compile("a, b = (1, 2, 3)", str(errors._PACKAGE / "somewhere.py"), "exec"))

    monkeypatch.setattr("cellkit.io.write_index", unpack_bug)
    assert run(*args).exit_code == 2
    monkeypatch.setattr("cellkit.io.write_index", lambda *a, **k: np.zeros(3).reshape(2, 2))  # numpy's own error
    result = run(*args)
    assert result.exit_code == 2 and "unexpected error" in result.output
