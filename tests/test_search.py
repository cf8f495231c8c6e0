import anndata as ad
import numpy as np
import pandas as pd
import pytest

from cellkit.tl import SimilarityIndex, build_index, build_similarity_index, recall_at_k, search


def _clustered(n=3000, d=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(20, d))
    return (centres[rng.integers(20, size=n)] + 0.5 * rng.normal(size=(n, d))).astype(np.float32)


def _brute_force(x, q, k):
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    sims = qn @ xn.T
    rows = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sims, rows, 1), rows


def test_exact_equals_brute_force():
    x = _clustered()
    q = x[:50] + 0.1
    sims, rows = build_similarity_index(x, kind="exact").search(q, 10)
    ref_sims, ref_rows = _brute_force(x, q, 10)
    np.testing.assert_allclose(sims, ref_sims, atol=1e-5)
    np.testing.assert_array_equal(rows, ref_rows)


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_approximate_recall(kind):
    x = _clustered()
    q = x[:200]
    exact = build_similarity_index(x, kind="exact").search(q, 10)[1]
    approx = build_similarity_index(x, kind=kind, nprobe=8).search(q, 10)[1]
    assert recall_at_k(approx, exact) > 0.9
    assert recall_at_k(exact, exact) == 1.0


def test_scanpy_style_access():
    import cellkit as ck

    assert ck.tl.build_index is build_index and ck.tl.search is search


def test_save_load_and_search_by_id(tmp_path):
    x = _clustered(500, 16)
    obs = pd.DataFrame({"moa": np.repeat(["a", "b"], 250)}, index=[f"c{i}" for i in range(500)])
    adata = ad.AnnData(X=np.zeros((500, 2), np.float32), obs=obs, obsm={"X_emb": x})
    index = build_index(adata, use_rep="X_emb", kind="hnsw", path=tmp_path / "emb.faiss")
    assert adata.uns["index_X_emb"]["kind"] == "hnsw"
    loaded = SimilarityIndex.load(tmp_path / "emb.faiss")
    np.testing.assert_array_equal(loaded.search(x[:5], 5)[1], index.search(x[:5], 5)[1])
    hits = search(adata, "c3", index=loaded, use_rep="X_emb", k=5)
    assert list(hits["rank"]) == [1, 2, 3, 4, 5] and "c3" not in set(hits["neighbor"])
    assert {"moa", "similarity"} <= set(hits.columns)
    assert hits["similarity"].is_monotonic_decreasing
    new = search(adata, x[:2], index=loaded, use_rep="X_emb", k=3)
    assert list(new["neighbor"][:1]) == ["c0"] and len(new) == 6
    with pytest.raises(KeyError, match="nope"):
        search(adata, "nope", index=loaded, use_rep="X_emb")
    with pytest.raises(ValueError, match="NaN"):
        build_similarity_index(np.full((3, 2), np.nan))


def test_search_cli_cells_and_wells(tmp_path):
    import time

    from typer.testing import CliRunner

    from cellkit.cli import app
    from cellkit.workflows.search import index_path

    x = _clustered(400, 16, seed=2)
    obs = pd.DataFrame({"plate": np.repeat(["P1", "P2"], 200), "well": np.tile(np.repeat([f"W{i}" for i in range(8)], 25), 2),
                        "compound": "x"}, index=[f"c{i}" for i in range(400)])
    h5ad = tmp_path / "cells.h5ad"
    ad.AnnData(obs=obs, obsm={"X_emb": x}).write_h5ad(h5ad)
    runner = CliRunner()
    res = runner.invoke(app, ["search", str(h5ad), "c7", "c8", "--use-rep", "X_emb", "--k", "4",
                              "--out", str(tmp_path / "hits.csv")])
    assert res.exit_code == 0, res.output
    saved = index_path(h5ad, use_rep="X_emb", kind="exact")
    assert saved.exists() and "built now" in res.output
    hits = pd.read_csv(tmp_path / "hits.csv")
    _, ref_rows = _brute_force(x, x[[7, 8]], 5)  # the exact index equals brute force (self excluded)
    expected = [f"c{r}" for row, q in zip(ref_rows, (7, 8)) for r in row if r != q][:8]
    assert list(hits["neighbor"]) == expected and set(hits["plate"]) <= {"P1", "P2"}
    stamp = saved.stat().st_mtime_ns
    time.sleep(0.01)
    res = runner.invoke(app, ["search", str(h5ad), "c7", "--use-rep", "X_emb"])
    assert res.exit_code == 0 and "reused" in res.output and saved.stat().st_mtime_ns == stamp
    # wells: index over well means, queried as PLATE/WELL
    res = runner.invoke(app, ["index-embeddings", str(h5ad), "--use-rep", "X_emb", "--kind", "hnsw", "--level", "well"])
    assert res.exit_code == 0, res.output
    assert index_path(h5ad, use_rep="X_emb", kind="hnsw", level="well").exists()
    res = runner.invoke(app, ["search", str(h5ad), "P1/W0", "--use-rep", "X_emb", "--kind", "hnsw", "--level", "well",
                              "--k", "3", "--out", str(tmp_path / "wells.csv")])
    assert res.exit_code == 0 and "reused" in res.output, res.output
    wells = pd.read_csv(tmp_path / "wells.csv")
    assert len(wells) == 3 and "P1/W0" not in set(wells["neighbor"])
    # clear errors
    res = runner.invoke(app, ["search", str(h5ad), "nope", "--use-rep", "X_emb"])
    assert res.exit_code == 1 and "nope" in res.output and "named like" in res.output
    res = runner.invoke(app, ["search", str(h5ad), "c1", "--use-rep", "X_missing"])
    assert res.exit_code == 1 and "X_missing" in res.output


def test_search_cli_by_new_crop(tmp_path, tiny_cells):
    from typer.testing import CliRunner

    from cellkit.cli import app
    from cellkit.io.cells import read_cells
    from cellkit.models import train
    from cellkit.models.embed import embed_h5ad

    config = {"input_size": 16, "shuffle_cells": 64, "num_workers": 0}
    for name, n_components in (("pca", 6), ("other", 5)):
        train(tiny_cells, tmp_path / name, method="pca", config={**config, "n_components": n_components},
              device="cpu")
    h5ad = embed_h5ad(tiny_cells, tmp_path / "pca", tmp_path / "cells.h5ad")
    images, _, obs = read_cells(tiny_cells)
    np.save(tmp_path / "one.npy", np.asarray(images[9]))  # (C, S, S), as in the store
    np.save(tmp_path / "last.npy", np.moveaxis(np.asarray(images[[20, 30]]), 1, -1))  # (N, S, S, C)
    runner = CliRunner()
    res = runner.invoke(app, ["search", str(h5ad), "--crop", str(tmp_path / "one.npy"), "--crop",
                              str(tmp_path / "last.npy"), "--use-rep", "X_pixel_pca", "-k", "3", "--out", str(tmp_path / "h.csv")])
    assert res.exit_code == 0, res.output
    hits = pd.read_csv(tmp_path / "h.csv")
    top = hits[hits["rank"] == 1].set_index("query")
    # a crop of a stored cell finds that cell first, with the same embedding (cosine 1)
    assert top.loc["one", "neighbor"] == obs.index[9] and top.loc["one", "similarity"] == pytest.approx(1, abs=1e-5)
    assert list(top.loc[["last[0]", "last[1]"], "neighbor"]) == [obs.index[20], obs.index[30]]
    assert set(hits.columns) >= {"plate", "well", "compound", "moa"}
    # clear errors: another model's weights, wrong channel count, no embedding named, nothing to query
    res = runner.invoke(app, ["search", str(h5ad), "--crop", str(tmp_path / "one.npy"), "--use-rep", "X_pixel_pca",
                              "--model", str(tmp_path / "other")])
    assert res.exit_code == 1 and "not the one that made X_pixel_pca" in " ".join(res.output.split())
    np.save(tmp_path / "two.npy", np.asarray(images[9])[:2])
    res = runner.invoke(app, ["search", str(h5ad), "--crop", str(tmp_path / "two.npy"), "--use-rep", "X_pixel_pca"])
    assert res.exit_code == 1 and "C = 3 channels" in " ".join(res.output.split())
    res = runner.invoke(app, ["search", str(h5ad), "--crop", str(tmp_path / "one.npy")])
    assert res.exit_code == 1 and "--use-rep" in " ".join(res.output.split())
    res = runner.invoke(app, ["search", str(h5ad), "--use-rep", "X_pixel_pca"])
    assert res.exit_code == 1 and "either" in " ".join(res.output.split())
