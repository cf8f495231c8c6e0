"""The robustness report: a `cellkit.tl.robustness` result -> tables and figures in a folder."""

from __future__ import annotations

import os
from pathlib import Path

from ..tl._robustness import RobustnessResult


def write_report(result: RobustnessResult, out_dir: str | os.PathLike, *, figures: bool = True,
                 umap: bool = True, figure_perturbation: str | None = None) -> dict[str, Path]:
    """Write ``robustness.csv`` (the table), ``robustness.json`` (params + table) and, with ``figures``,
    ``robustness.png`` (curves), ``similarity_<model>.png``, ``tsne_pairs_<model>.png`` (t-SNE, each clean
    row joined to its perturbed version) and ``umap_<model>.png`` (clean vs
    ``figure_perturbation``, default the first one run). Returns name -> path.
    """
    import json

    import matplotlib.pyplot as plt

    from .. import pl
    from .._atomic import atomic_path

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"table": out / "robustness.csv", "json": out / "robustness.json"}
    with atomic_path(written["table"]) as tmp:
        result.table.to_csv(tmp, index=False)
    with atomic_path(written["json"]) as tmp:
        tmp.write_text(json.dumps({"params": result.params, "table": result.table.to_dict(orient="records")},
                                  indent=2, default=str))
    if figures:
        perts = [p for p in result.params["perturbations"]]
        chosen = figure_perturbation or perts[0]
        written["curves"] = out / "robustness.png"
        plt.close(pl.robustness(result, save=written["curves"]))
        for model in result.embeddings:
            safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
            written[f"similarity_{model}"] = out / f"similarity_{safe}.png"
            plt.close(pl.embedding_similarity(result, model, chosen, save=written[f"similarity_{model}"]))
            written[f"tsne_pairs_{model}"] = out / f"tsne_pairs_{safe}.png"
            plt.close(pl.robustness_pairs(result, model, chosen, basis="tsne", save=written[f"tsne_pairs_{model}"]))
            if umap:
                written[f"umap_{model}"] = out / f"umap_{safe}.png"
                plt.close(pl.robustness_umap(result, model, chosen, save=written[f"umap_{model}"]))
    return written
