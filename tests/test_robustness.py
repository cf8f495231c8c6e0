import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

import cellkit as ck
from cellkit import pl
from cellkit.cli import app
from cellkit.models import train
from cellkit.models.perturb import PERTURBATIONS, SEVERITIES, perturb
from cellkit.tl import robustness, robustness_summary as summary_table
from cellkit.tl._robustness import knn_overlap

torch.set_num_threads(1)
TINY = {"epochs": 1, "batch_size": 16, "width": 4, "blocks": [1, 1], "proj_hidden": 16, "proj_dim": 8,
        "input_size": 16, "n_components": 6, "num_workers": 0, "shuffle_cells": 64}


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_cells):
    root = tmp_path_factory.mktemp("robust")
    cells = tiny_cells
    for method in ("pixel_pca", "random"):
        train(cells, root / method, method=method, config=TINY, device="cpu")
    return cells, root


def _cell_like(n=6, size=24, seed=1):
    """Smooth crops: a bright blob off-centre on a textured background, like a cell."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2
    x = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(-2, 2, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * rng.uniform(3, 5, (3, 1, 1)) ** 2))
        x[i] = 100 + 1500 * rng.random((3, 1, 1)) * blob
    texture = torch.from_numpy(rng.gamma(2.0, 20.0, x.shape).astype(np.float32))
    return torch.from_numpy(x) + perturb(texture, "blur", 1.0)


def test_perturbations_deterministic_and_monotone():
    x = _cell_like()
    scale = [80.0, 50.0, 30.0]
    for name in PERTURBATIONS:
        levels = SEVERITIES[name]
        outs = [perturb(x, name, s, scale=scale, seed=3) for s in levels]
        again = [perturb(x, name, s, scale=scale, seed=3) for s in levels]
        assert all(torch.equal(a, b) for a, b in zip(outs, again)), name
        assert outs[0].shape == x.shape and outs[0].dtype == torch.float32
        # every crop moves further from the clean crop as the severity grows
        dist = torch.stack([(o - x).flatten(1).norm(dim=1) for o in outs])  # (levels, B)
        assert (dist[0] > 0).all(), name
        assert (dist[1:] > dist[:-1]).all(), name
    for name in ("noise", "shift"):  # the random ones depend on the seed
        assert not torch.equal(perturb(x, name, 1.0, scale=scale, seed=3), perturb(x, name, 1.0, scale=scale, seed=4))
    # each cell's noise and shift do not depend on the batch it is in
    for name in ("noise", "shift"):
        whole = perturb(x, name, 1.0, scale=scale, seed=3)
        parts = torch.cat([perturb(x[:2], name, 1.0, scale=scale, seed=3),
                           perturb(x[2:], name, 1.0, scale=scale, seed=3, offset=2)])
        assert torch.equal(whole, parts)
    with pytest.raises(ValueError, match="unknown perturbation"):
        perturb(x, "rain", 1.0)


def test_knn_overlap():
    z = np.random.default_rng(0).normal(size=(30, 5))
    assert knn_overlap(z, z, 5) == pytest.approx(np.ones(30))
    assert knn_overlap(z, 3 * z, 5) == pytest.approx(np.ones(30))  # cosine: scale-free
    shuffled = z[np.random.default_rng(1).permutation(30)]
    assert knn_overlap(z, shuffled, 5).mean() < 0.5


def test_robustness_table(setup):
    cells, root = setup
    perts = {"noise": [0.5, 2.0, 8.0], "blur": [0.5, 2.0]}
    result = ck.tl.robustness(cells, [root / "pixel_pca", root / "random"], perturbations=perts, max_cells=60, k=5,
                              batch_size=16, seed=0)
    t = result.table
    assert set(t["model"]) == {"pixel_pca", "random"}
    assert len(t) == 2 * (1 + 3 + 2)
    clean = t[t["perturbation"] == "clean"]
    assert np.allclose(clean[["cosine_drift_mean", "l2_drift_mean", "delta_nsc"]], 0)
    assert np.allclose(clean["knn_overlap"], 1)
    # PCA is linear: the same noise field scaled up moves embeddings further, and neighbours get lost
    noise = t[(t["model"] == "pixel_pca") & (t["perturbation"] == "noise")].sort_values("severity")
    assert noise["l2_drift_mean"].is_monotonic_increasing and noise["l2_drift_mean"].iloc[0] > 0
    assert noise["knn_overlap"].iloc[-1] < noise["knn_overlap"].iloc[0] <= 1
    # labels present: the well-level NSC is measured (PCA separates the two MOAs on clean crops)
    assert 0.5 <= clean.set_index("model").loc["pixel_pca", "nsc"] <= 1
    assert result.embeddings["pixel_pca"][("noise", 8.0)].shape == (60, 6)
    assert len(result.obs) == 60 and result.params["n_cells"] == 60
    # results do not depend on the batch size
    other = robustness(cells, {"pixel_pca": root / "pixel_pca"}, perturbations=perts, max_cells=60, k=5, batch_size=50,
                       seed=0)
    pd.testing.assert_frame_equal(other.table.reset_index(drop=True),
                                  t[t["model"] == "pixel_pca"].reset_index(drop=True), check_exact=False, rtol=1e-5)
    wide = summary_table(result)
    assert wide.shape == (2, 5)
    fig = pl.robustness(result)
    assert len(fig.axes) == 3 * 2
    plt.close(fig)
    fig = pl.embedding_similarity(result, "pixel_pca", "noise", n_cells=20)
    plt.close(fig)
    with pytest.raises(KeyError, match="severities"):
        pl.embedding_similarity(result, "pixel_pca", "noise", severity=3.0)


def test_robustness_callable_model_and_errors(setup):
    cells, root = setup
    mean_model = lambda x: x.mean(dim=(-2, -1)).numpy()  # noqa: E731  per-channel mean intensity
    result = robustness(cells, {"means": mean_model}, perturbations=["brightness", "contrast"], max_cells=40, k=5)
    t = result.table.set_index(["perturbation", "severity"])
    # contrast keeps each crop's channel means: the mean-intensity "model" does not move
    assert np.allclose(t.loc["contrast", "l2_drift_mean"], 0, atol=1e-2)
    assert (t.loc["brightness", "l2_drift_mean"] > 1).all()
    with pytest.raises(ValueError, match="unknown perturbation"):
        robustness(cells, {"means": mean_model}, perturbations=["fog"])


def test_robustness_cli(setup, tmp_path):
    cells, root = setup
    out = tmp_path / "rob"
    res = CliRunner().invoke(app, ["robustness", str(cells), "--model", str(root / "pixel_pca"), "--model",
                                   str(root / "random"), "--out", str(out), "-p", "blur", "-p", "shift",
                                   "--max-cells", "40", "--k", "5", "--no-umap"])
    assert res.exit_code == 0, res.output
    table = pd.read_csv(out / "robustness.csv")
    assert set(table["perturbation"]) == {"clean", "blur", "shift"}
    assert json.loads((out / "robustness.json").read_text())["params"]["k"] == 5
    for name in ("robustness.png", "similarity_pixel_pca.png", "similarity_random.png"):
        assert (out / name).stat().st_size > 1000
    res = CliRunner().invoke(app, ["robustness", str(cells), "--model", str(tmp_path / "none"), "--out", str(out)])
    assert res.exit_code == 1 and "no model" in res.output


def test_measure_crops_equals_measure_field_per_crop(tiny_cells):
    from cellkit.features import measure_field
    from cellkit.features.crops import CROP_GROUPS, measure_crops
    from cellkit.io.cells import read_cells

    images, masks, _ = read_cells(tiny_cells)
    x, m = np.asarray(images[:5]), np.asarray(masks[:5]).copy()
    m[3] = False  # a crop without a cell
    features = measure_crops(x, m, ["DNA", "Tubulin", "Actin"])
    assert features.shape[0] == 5 and features.columns[0].startswith("Nuclei_")
    assert features.iloc[3].isna().all() and not features.iloc[[0, 1, 2, 4]].isna().all(axis=None)
    for i in (0, 4):  # each crop as a field of its own, with the one background pixel the mosaic puts around it
        alone = measure_field(np.pad(x[i], ((0, 0), (1, 1), (1, 1))), np.pad(m[i, 0] & m[i, 1], 1).astype(int),
                              np.pad(m[i, 1], 1).astype(int), ["DNA", "Tubulin", "Actin"], groups=CROP_GROUPS)
        np.testing.assert_allclose(features.iloc[i].to_numpy(), alone.iloc[0].to_numpy(), rtol=1e-5, equal_nan=True)
    with pytest.raises(ValueError, match="masks"):
        measure_crops(x, m[:, :1], ["DNA", "Tubulin", "Actin"])
    with pytest.raises(ValueError, match="Neighbors"):
        measure_crops(x, m, ["DNA", "Tubulin", "Actin"], groups=("Neighbors",))


def test_robustness_handcrafted(setup):
    from cellkit.tl import HandcraftedEmbedder

    cells, root = setup
    perts = {"noise": [0.5, 4.0], "brightness": [1.0], "shift": [1.0, 4.0]}
    result = robustness(cells, ["handcrafted", root / "pixel_pca"], perturbations=perts, max_cells=48, k=5, batch_size=20)
    t = result.table.set_index(["model", "perturbation", "severity"])
    assert t.loc[("handcrafted", "clean", 0.0), "l2_drift_mean"] == 0
    assert 0.5 <= t.loc[("handcrafted", "clean", 0.0), "nsc"] <= 1  # nucleus size and brightness separate the MOAs
    assert t.loc[("handcrafted", "noise", 4.0), "l2_drift_mean"] > t.loc[("handcrafted", "noise", 0.5), "l2_drift_mean"] > 0
    z = result.embeddings["handcrafted"][("clean", 0.0)]
    assert z.shape[0] == 48 and np.isfinite(z).all()
    assert np.allclose(z.mean(axis=0), 0, atol=1e-4) and np.allclose(z.std(axis=0), 1, atol=1e-3)
    # shape features: photometric perturbations leave the masks alone, a shift moves them with the crop
    shape_only = {"shape": HandcraftedEmbedder(["DNA", "Tubulin", "Actin"], groups=("AreaShape",))}
    shape = robustness(cells, shape_only, perturbations=perts, max_cells=48, k=5).table.set_index(["perturbation",
                                                                                                  "severity"])
    assert shape.loc[("noise", 4.0), "l2_drift_mean"] == 0 and shape.loc[("brightness", 1.0), "l2_drift_mean"] == 0
    assert shape.loc[("shift", 4.0), "l2_drift_mean"] > 0
    # the CLI takes it as a model name
    res = CliRunner().invoke(app, ["robustness", str(cells), "--model", "handcrafted", "--out", str(root / "hc"),
                                   "-p", "blur", "--max-cells", "30", "--k", "5", "--no-figures"])
    assert res.exit_code == 0, res.output
    assert set(pd.read_csv(root / "hc" / "robustness.csv")["model"]) == {"handcrafted"}
