"""The analysis notebooks in notebooks/ run end to end on one small demo output.

One `run_demo` on a small synthetic plate set is shared by every notebook; each notebook is executed
with nbclient in a kernel of the running interpreter, with tiny training runs (CELLKIT_NOTEBOOK_FAST=1).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anndata as ad
import pandas as pd
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

from cellkit.datasets import SyntheticConfig  # noqa: E402
from cellkit.workflows.demo import run_demo  # noqa: E402

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
# 2 plates in 2 batches, 4 MOAs x 3 compounds x 2 concentrations, 3 DMSO wells per plate: about 120 cells,
# up to 24 scored treatments, every MOA with compounds in both batches (NSCB defined).
CONFIG = SyntheticConfig(n_batches=2, plates_per_batch=1, compounds_per_moa=3, n_moas=4, n_concentrations=2,
                         dmso_wells=3, sites=1, height=256, width=320, seed=7)
KERNEL = "cellkit-test-python"
TIMEOUT = 120  # seconds per cell


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory) -> Path:
    """The demo run in one folder, then moved: the notebooks (kernel in notebooks/) open the moved copy,
    as a user who moves an output folder would (image paths resolve from the index file's folder)."""
    import shutil

    built = tmp_path_factory.mktemp("notebooks_built") / "demo_out"
    run_demo(built, CONFIG, workers=1)
    out = tmp_path_factory.mktemp("notebooks") / "demo_out"
    shutil.move(str(built), str(out))
    return out


@pytest.fixture(scope="module")
def kernel_env(tmp_path_factory, demo_out):
    """A kernelspec running this interpreter (so a fresh .venv works without a registered kernel)."""
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    spec = jupyter_path / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "cellkit tests", "language": "python"}))
    saved = {k: os.environ.get(k) for k in ("JUPYTER_PATH", "CELLKIT_DEMO_OUT", "CELLKIT_NOTEBOOK_FAST",
                                             "PYTHONPATH", "MPLBACKEND", "OMP_NUM_THREADS")}
    repo = str(NOTEBOOKS.parent)
    os.environ.update(JUPYTER_PATH=str(jupyter_path), CELLKIT_DEMO_OUT=str(demo_out), CELLKIT_NOTEBOOK_FAST="1",
                      PYTHONPATH=os.pathsep.join(p for p in (repo, saved["PYTHONPATH"]) if p),
                      OMP_NUM_THREADS=saved["OMP_NUM_THREADS"] or "1")
    os.environ.pop("MPLBACKEND", None)  # the kernel's inline backend
    yield demo_out / "notebooks"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def execute(name: str) -> nbformat.NotebookNode:
    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    client = nbclient.NotebookClient(nb, timeout=TIMEOUT, kernel_name=KERNEL,
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()
    return nb


def outputs_text(nb) -> str:
    parts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            parts.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


def images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))


def test_notebooks_are_stripped():
    names = sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    assert len(names) == 12, names
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not cell.outputs and cell.execution_count is None, f"{path.name} has stored outputs"


def test_01_exploration_qc(kernel_env, demo_out):
    nb = execute("01_exploration_qc")
    qc = pd.read_csv(kernel_env / "qc_per_plate.csv", index_col=0)
    index = pd.read_parquet(demo_out / "index.parquet")
    assert qc.fields.sum() == len(index) and set(qc.index) == set(index.plate)
    assert images(nb) >= 4  # channels, intensities, overlays
    assert f"{len(index)} fields, 2 plates" in outputs_text(nb)


def test_02_metadata(kernel_env, demo_out):
    nb = execute("02_metadata")
    replicates = pd.read_csv(kernel_env / "replicates.csv")
    index = pd.read_parquet(demo_out / "index.parquet")
    assert replicates.wells.sum() == index[["plate", "well"]].drop_duplicates().shape[0]
    treated = replicates[replicates.compound != "DMSO"]
    assert len(treated) == CONFIG.n_moas * CONFIG.compounds_per_moa * CONFIG.n_concentrations
    assert replicates.loc[replicates.compound == "DMSO", "plates"].item() == 2  # DMSO on every plate
    assert images(nb) >= 4


def test_03_preprocessing(kernel_env, demo_out):
    execute("03_preprocessing")
    treatments = ad.read_h5ad(kernel_env / "treatments_preprocessed.h5ad")
    wells = ad.read_h5ad(kernel_env / "wells_preprocessed.h5ad")
    assert treatments.n_obs == scored_treatments(demo_out) + 1  # + DMSO
    n_features = ad.read_h5ad(demo_out / "cells.h5ad", backed="r").n_vars
    assert 0 < treatments.n_vars < n_features and not pd.isna(treatments.X).any()  # selection kept a subset
    assert {"normalize", "feature_select", "spherize"} <= set(wells.uns["cellkit"])


def test_04_pca_baseline(kernel_env, demo_out):
    execute("04_pca_baseline")
    baseline = pd.read_csv(kernel_env / "pca_baseline.csv", index_col=0)
    assert list(baseline.index) == ["CellProfiler features", "pixel PCA"]
    assert (baseline.n_treatments == scored_treatments(demo_out)).all()
    assert baseline[["NSC", "NSCB", "mAP"]].stack().between(0, 1).all()
    # the demo's profile stage scored the same representations: the notebook must agree with it
    demo = pd.read_csv(demo_out / "profiles" / "representations.csv", index_col=0)
    assert baseline.loc["CellProfiler features", "NSC"] == pytest.approx(demo.loc["X", "NSC"])
    assert baseline.loc["pixel PCA", "mAP"] == pytest.approx(demo.loc["X_pixel_pca", "mAP"])


def scored_treatments(demo_out: Path) -> int:
    """Treatments (compound, concentration; DMSO excluded) that have cells: every one of them is scored. A tiny
    256x320 field can lose its only cells at the border, so this is counted, not fixed at 24."""
    obs = ad.read_h5ad(demo_out / "cells.h5ad", backed="r").obs
    n = len(obs.loc[obs.compound != "DMSO", ["compound", "concentration"]].drop_duplicates())
    assert n >= CONFIG.n_moas * CONFIG.compounds_per_moa * CONFIG.n_concentrations - 2
    return n


def _trained(model_dir: Path) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    assert config["complete"] and config["epochs_done"] == 1  # CELLKIT_NOTEBOOK_FAST: one epoch
    return config


def test_05_autoencoder(kernel_env, demo_out):
    execute("05_autoencoder")
    assert _trained(kernel_env / "autoencoder")["method"] == "autoencoder"
    scores = pd.read_csv(kernel_env / "autoencoder_scores.csv", index_col=0)
    assert {"X", "X_ae"} <= set(scores.index) and scores.loc["X_ae", "n_treatments"] == scored_treatments(demo_out)


def test_06_ssl_training(kernel_env):
    nb = execute("06_ssl_training")
    for method in ("simclr", "byol"):
        assert len(_trained(kernel_env / method)["history"]) == 1
    scores = pd.read_csv(kernel_env / "ssl_scores.csv", index_col=0)
    assert {"X_simclr", "X_byol", "X_random"} <= set(scores.index)
    assert scores[["NSC", "NSCB", "mAP"]].stack().between(0, 1).all()
    assert images(nb) >= 1


def test_07_visualization(kernel_env):
    nb = execute("07_visualization")
    assert (kernel_env / "umap_treatments.png").stat().st_size > 0
    obs = pd.read_csv(kernel_env / "umap_cells_obs.csv", index_col=0)
    assert obs.leiden.nunique() >= 2
    assert images(nb) >= 3


def test_08_moa_metrics(kernel_env, demo_out):
    nb = execute("08_moa_metrics")
    scores = json.loads((kernel_env / "moa_scores.json").read_text())
    assert scores["n_NSC"] == scores["n_NSCB"] == scored_treatments(demo_out)
    assert all(0 <= scores[k] <= 1 for k in ("NSC", "NSCB", "mAP", "LOCO"))
    per_moa = pd.read_csv(kernel_env / "per_moa.csv", index_col=0)
    assert len(per_moa) == CONFIG.n_moas and "DMSO" not in per_moa.index
    assert images(nb) >= 1


def test_09_clustering(kernel_env):
    nb = execute("09_clustering")
    composition = pd.read_csv(kernel_env / "cluster_composition.csv", index_col=0)
    assert len(composition) >= 2 and composition.sum(axis=1).round(1).eq(1.0).all()
    markers = pd.read_csv(kernel_env / "cluster_markers.csv")
    assert (markers.groupby("group").size() == 5).all() and len(markers.group.unique()) == len(composition)
    assert images(nb) >= 2


def test_10_interpretation(kernel_env):
    nb = execute("10_interpretation")
    signature = pd.read_csv(kernel_env / "moa_signatures.csv")
    assert signature.groupby("moa").size().eq(5).all() and signature.moa.nunique() == CONFIG.n_moas
    # the synthetic truth: actin disruptors change actin, Aurora inhibitors and DNA damage the nucleus/DNA
    top = signature.groupby("moa").feature.apply(list)
    assert sum("Actin" in f for f in top["Actin disruptors"]) >= 3
    # (each batch's gain on every parameter of a compound's effect can lift a cell-size readout among them)
    for moa in ("Aurora kinase inhibitors", "DNA damage"):
        assert sum("DNA" in f or f.startswith("Nuclei_") for f in top[moa]) >= 2
        assert any(f.endswith("_DNA") for f in top[moa])  # the DNA stain itself
    assert images(nb) >= 3


def test_11_robustness_search(kernel_env):
    nb = execute("11_robustness_search")
    table = pd.read_csv(kernel_env / "robustness.csv")
    assert {"pixel_pca", "simclr", "handcrafted"} <= set(table.model)
    clean = table[table.perturbation == "clean"]
    assert (clean.knn_overlap == 1).all() and (clean.l2_drift_mean == 0).all()
    blur = table[(table.model == "pixel_pca") & (table.perturbation == "blur")].sort_values("severity")
    assert blur.l2_drift_mean.is_monotonic_increasing
    hits = pd.read_csv(kernel_env / "crop_search.csv")
    top = hits[hits["rank"] == 1]
    assert len(top) == 3 and (top["query"].str.removeprefix("noisy ") == top["neighbor"]).all()
    assert images(nb) >= 2


def test_12_image_embeddings(kernel_env):
    """The MAE-embeddings workflow on the 20 real BBBC006 fields (skipped without the real data)."""
    from .conftest import real_path

    real_path("bbbc006", "w2_z16_seed002")
    nb = execute("12_image_embeddings")
    out = kernel_env / "12_image_embeddings"
    drift = pd.read_csv(out / "drift.csv")
    assert set(drift.perturbation) == {"clean", "noise", "blur", "brightness", "shift"}
    strongest = drift[drift.perturbation != "clean"].sort_values("severity").groupby("perturbation").last()
    assert (strongest.l2_drift_rel > 0).all()  # each perturbed embedding comes from perturbed pixels
    hits = pd.read_csv(out / "search.csv")
    assert hits["query"].nunique() == 20 and not (hits["query"] == hits["neighbor"]).any()
    defocus = pd.read_csv(out / "defocus.csv", index_col=0).iloc[:, 0]
    assert 0 <= defocus["percentile of the A01 s1 pair among those"] <= 100
    text = outputs_text(nb)
    assert "model:" in text and "A01 s1 moves" in text
    assert images(nb) >= 5
