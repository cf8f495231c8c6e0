import json

import pytest

from cellkit.datasets import plate_layout
from cellkit.workflows.pipeline import run_pipeline
from cellkit.workflows.stages import STAGES, register_stage

from .conftest import SMALL

CALLS = []


@register_stage("count_cells_test", outputs=["count.json"])
def _count(ctx, factor=1):
    import pandas as pd

    CALLS.append(factor)
    n = len(pd.read_parquet(ctx.out / "index.parquet"))
    (ctx.out / "count.json").write_text(json.dumps({"n": n * factor}))


@pytest.fixture
def spec():
    from dataclasses import asdict

    return {"name": "t", "output": "unused", "input": {"synthetic": asdict(SMALL)},
            "stages": [{"count_cells_test": {"factor": 2}}]}


def test_skip_rerun_and_option_change(tmp_path, spec):
    CALLS.clear()
    outputs = run_pipeline(spec, out=tmp_path)
    n_fields = len(plate_layout(SMALL))
    assert json.loads(outputs["count"].read_text())["n"] == 2 * n_fields
    run_pipeline(spec, out=tmp_path)
    assert CALLS == [2]  # second run skipped everything
    spec["stages"] = [{"count_cells_test": {"factor": 3}}]
    run_pipeline(spec, out=tmp_path)
    assert CALLS == [2, 3] and json.loads((tmp_path / "count.json").read_text())["n"] == 3 * n_fields
    log = (tmp_path / "pipeline.log").read_text()
    assert "up to date, skipped" in log and "options changed" in log
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert [s["name"] for s in prov["stages"]] == ["input", "count_cells_test"]


def test_interrupted_stage_runs_again(tmp_path, spec):
    CALLS.clear()
    run_pipeline(spec, out=tmp_path)
    state = json.loads((tmp_path / "pipeline_state.json").read_text())
    state["count_cells_test"]["complete"] = False  # as if killed during the stage
    (tmp_path / "pipeline_state.json").write_text(json.dumps(state))
    run_pipeline(spec, out=tmp_path)
    assert CALLS == [2, 2]


def test_bad_pipeline(tmp_path):
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        run_pipeline({"input": {"index": "x"}, "output": str(tmp_path), "stages": ["nope"]})
    with pytest.raises(ValueError, match="input must be exactly one of"):
        run_pipeline({"input": {"csv": "x"}, "output": str(tmp_path), "stages": []})
    assert "input" in STAGES


def test_demo_yaml_is_the_demo_pipeline():
    from pathlib import Path

    from cellkit.workflows.demo import demo_pipeline
    from cellkit.workflows.pipeline import check_pipeline, load_pipeline

    from_file = load_pipeline(Path(__file__).resolve().parents[1] / "pipelines" / "demo.yaml")
    assert from_file == check_pipeline(demo_pipeline())


def test_bbbc021_pipeline_file_is_valid():
    from pathlib import Path

    from cellkit.workflows.pipeline import load_pipeline

    spec = load_pipeline(Path(__file__).resolve().parents[1] / "pipelines" / "bbbc021.yaml")
    assert list(spec["input"]) == ["bbbc021"] and [name for name, _ in spec["stages"]][0] == "segment"


@register_stage("read_index_test", outputs=["seen.json"])
def _seen(ctx):
    from cellkit.io import read_index
    from cellkit.workflows.stages import current_index

    index = read_index(current_index(ctx))  # image paths resolved from the index file's folder
    (ctx.out / "seen.json").write_text(json.dumps({"n": len(index), "path": str(index.path_DNA.iloc[0])}))


def test_qc_and_illumination_stages_feed_the_next_stage(tmp_path, spec):
    import numpy as np
    import pandas as pd
    import tifffile

    spec["stages"] = [{"qc": {"exclude": True}}, {"illumination": {}}, {"read_index_test": {}}]
    run_pipeline(spec, out=tmp_path)
    qc = pd.read_csv(tmp_path / "qc" / "qc.csv")
    n_fields = len(plate_layout(SMALL))
    assert qc.field_id.nunique() == n_fields and (tmp_path / "qc" / "qc_plate_map.png").exists()
    counts = json.loads((tmp_path / "qc" / "counts.json").read_text())
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert seen["n"] == n_fields - counts["excluded"]
    assert "illumination/corrected" in seen["path"]  # later stages read the corrected fields
    flat = tifffile.imread(next((tmp_path / "illumination").glob("*.tif")))
    assert flat.shape[0] == 3 and np.isclose(flat[0].mean(), 1, atol=1e-3)
    assert (tmp_path / "illumination" / "illumination.png").exists()


def test_messages_go_to_the_cellkit_logger_and_pipeline_log(tmp_path, spec, caplog):
    import logging

    CALLS.clear()
    with caplog.at_level(logging.INFO, logger="cellkit"):
        run_pipeline(spec, out=tmp_path)
    said = [r.getMessage() for r in caplog.records if r.name.startswith("cellkit")]
    assert any(m.startswith("input: running") for m in said) and any("done in" in m for m in said)
    written = (tmp_path / "pipeline.log").read_text().splitlines()
    assert len(written) == len(said) and written[0].endswith(said[0])  # time-stamped copies
    assert not any(isinstance(h, logging.FileHandler) for h in logging.getLogger("cellkit").handlers)
