"""The image-embedding report: an AnnData of images (`cellkit.models.images.embed_images`) ->
IQM-normalized embeddings, cosine similarities, t-SNE, files and figures in a folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def image_report(adata, out_dir: str | os.PathLike, *, use_rep: str, control: str | None = None, by: str | None = None,
                 labels: str | None = "well", perplexity: float | None = None, seed: int = 0) -> dict[str, Path]:
    """Normalize ``obsm[use_rep]`` by the interquartile mean (`ck.pp.normalize`, method ``"iqm"``,
    against the rows of obs query ``control``, default all rows; per ``by`` group, default one group)
    into ``obsm[use_rep + "_iqm"]``; t-SNE of it (``sc.tl.tsne``, ``obsm["X_tsne"]``, perplexity
    ``min(30, (n - 1) / 3)`` by default). Writes ``images_iqm.h5ad``, ``cosine_similarity.csv``,
    ``tsne.csv``, ``similarity.png`` and ``tsne.png``; returns name -> path.
    """
    import matplotlib.pyplot as plt
    import pandas as pd
    import scanpy as sc

    from .. import pl, pp
    from .._atomic import atomic_path
    from ..get import control_mask

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adata = adata.copy()
    mask = np.ones(adata.n_obs, bool) if control is None else control_mask(adata, control)
    key = f"{use_rep}_iqm"
    pp.normalize(adata, control=mask, by=by, method="iqm", use_rep=use_rep, key_added=key)
    z = np.asarray(adata.obsm[key], np.float64)
    u = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
    paths = {"adata": out / "images_iqm.h5ad", "similarity_table": out / "cosine_similarity.csv",
             "tsne_table": out / "tsne.csv", "similarity": out / "similarity.png", "tsne": out / "tsne.png"}
    pd.DataFrame(u @ u.T, index=adata.obs_names, columns=adata.obs_names).to_csv(paths["similarity_table"])
    sc.tl.tsne(adata, use_rep=key, perplexity=perplexity or min(30.0, max(2.0, (adata.n_obs - 1) / 3.0)),
               random_state=seed, n_jobs=1)
    pd.DataFrame(adata.obsm["X_tsne"], index=adata.obs_names, columns=["tsne1", "tsne2"]).to_csv(paths["tsne_table"])
    labels = labels if labels in adata.obs else None
    plt.close(pl.similarity_heatmap(adata, key, labels=labels, save=paths["similarity"]))
    fig, ax = plt.subplots(figsize=(5, 4.5))
    xy = adata.obsm["X_tsne"]
    ax.scatter(xy[:, 0], xy[:, 1], s=20)
    if labels and adata.n_obs <= 60:
        for (x, y), text in zip(xy, adata.obs[labels].astype(str)):
            ax.annotate(text, (x, y), fontsize=6)
    ax.set_title(f"t-SNE of {key}", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.savefig(paths["tsne"], dpi=110, bbox_inches="tight")
    plt.close(fig)
    with atomic_path(paths["adata"]) as tmp:
        adata.write_h5ad(tmp)
    return paths
