"""A `cellkit run` killed at random moments and started again ends with the same outputs."""

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import anndata as ad
import numpy as np
import yaml

from cellkit.workflows.demo import DEMO_STAGES, DEMO_TRAINING
from cellkit.io import read_cells

from .conftest import SMALL

CELLKIT = str(Path(sys.executable).with_name("cellkit"))


def _write_spec(path: Path) -> Path:
    spec = {"name": "resume-test", "output": "unused", "input": {"synthetic": asdict(SMALL)}, "stages": DEMO_STAGES}
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(spec, out, kill_after=None):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([CELLKIT, "run", str(spec), "--out", str(out), "--workers", "1"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    if kill_after is None:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()[-2000:]
        return
    time.sleep(kill_after)
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and any worker processes it started
    proc.wait()


def _outputs(out: Path):
    images, masks, obs = read_cells(out / "cells.zarr")
    cells = ad.read_h5ad(out / "cells.h5ad")
    return {"images": images.compute(), "masks": masks.compute(), "obs": obs,
            "X": cells.X, **{k: cells.obsm[k] for k in sorted(cells.obsm)},
            "representations": (out / "profiles" / "representations.csv").read_text()}


def _check_demo_models(models: Path):
    """The demo's embed stage trains SimCLR for its epochs and gives PCA and the random-init control the
    same views (input size, view size, centring, masking), so its representation table compares like with like."""
    configs = {m: json.loads((models / m / "config.json").read_text()) for m in ("simclr", "pixel_pca", "random")}
    assert all(c["complete"] for c in configs.values())
    assert configs["simclr"]["epochs_done"] == DEMO_TRAINING["epochs"] > 1
    assert configs["random"]["width"] == configs["simclr"]["width"]
    for key in ("input_size", "preset"):
        assert len({c[key] for c in configs.values()}) == 1, key
    for key in ("view_size", "center", "mask_background"):
        assert len({c["augment"][key] for c in configs.values()}) == 1, key


def test_killed_run_resumes_to_the_same_result(tmp_path):
    spec = _write_spec(tmp_path / "pipeline.yaml")
    _run(spec, tmp_path / "reference")
    rng = np.random.default_rng(0)
    for kill_after in sorted(rng.uniform(3, 25, size=2)):
        _run(spec, tmp_path / "resumed", kill_after=kill_after)
    _run(spec, tmp_path / "resumed")
    _check_demo_models(tmp_path / "reference" / "models")
    reference, resumed = _outputs(tmp_path / "reference"), _outputs(tmp_path / "resumed")
    assert reference["obs"].equals(resumed["obs"])
    assert reference.pop("representations") == resumed.pop("representations")
    for key in reference:
        if key != "obs":
            assert np.array_equal(reference[key], resumed[key], equal_nan=True), key
