import pandas as pd
from typer.testing import CliRunner

import cellkit
from cellkit.cli import app

from .conftest import SMALL, real_path

runner = CliRunner()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and cellkit.__version__ in result.output


def test_synth_and_index(tmp_path):
    out = tmp_path / "plate"
    result = runner.invoke(app, ["synth", str(out), "--batches", "1", "--plates-per-batch", "1", "--moas", "2",
                                 "--compounds-per-moa", "1", "--dmso-wells", "1", "--height", "96", "--width", "128"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["index", str(out / "BBBC021_v1_image.csv"), "--moa", str(out / "BBBC021_v1_moa.csv"),
                                 "--out", str(tmp_path / "index.parquet"), "--check-shapes"])
    assert result.exit_code == 0, result.output
    index = pd.read_parquet(tmp_path / "index.parquet")
    assert len(index) == 1 + 2 * 2 and index.moa.notna().all()
    # existing folder: refused with one clear message
    result = runner.invoke(app, ["synth", str(out)])
    assert result.exit_code == 1 and "not empty" in result.output


def test_index_bad_inputs(tmp_path):
    meta = real_path("bbbc021_metadata")
    result = runner.invoke(app, ["index", str(meta / "BBBC021_v1_image.csv.gz"), "--root", str(tmp_path),
                                 "--out", str(tmp_path / "ix.parquet")])
    assert result.exit_code == 1
    assert "39600 problem(s)" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "ix.parquet").exists()
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    result = runner.invoke(app, ["index", str(bad), "--channel", "DNA=path", "--out", str(tmp_path / "ix.parquet")])
    assert result.exit_code == 1 and "missing column 'path'" in result.output


def test_demo_small(tmp_path, monkeypatch):
    monkeypatch.setattr("cellkit.workflows.demo.DEMO_CONFIG", SMALL)
    result = runner.invoke(app, ["demo", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "demo" / "index.parquet").exists()
    images, _, obs = cellkit.io.read_cells(tmp_path / "demo" / "cells.zarr")
    assert images.shape[0] == len(obs) > 0 and obs.field_id.nunique() > 10
    assert (tmp_path / "demo" / "labels.qc.csv").exists() and "segment:" in result.output
