"""MOA scores of profiles: 1-NN NSC / NSCB accuracy (`moa_accuracy`), mAP (`mean_average_precision`),
leave-one-compound-out classification (`loco_classification`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd

from ..get import _column, control_mask, get_rep


def _scored_profiles(adata, *, label, use_rep, control):
    """Rows to score (non-control, labelled), their matrix, and the dropped rows."""
    labels = _column(adata, label, "label")
    keep = labels.notna().to_numpy() & (labels.astype(str) != "").to_numpy()
    unlabelled = list(adata.obs_names[~keep])
    keep &= ~control_mask(adata, control, require=False)
    X = get_rep(adata, use_rep)[keep].astype(np.float64)
    bad = np.isnan(X).any(axis=0)
    if bad.any():
        raise ValueError(f"{int(bad.sum())} feature(s) contain NaN (e.g. {list(np.asarray(adata.var_names)[bad][:5]) if use_rep is None else ''}); "
                         "drop them (ck.pp.feature_select with 'nan') or impute before scoring")
    return adata[keep], X, unlabelled


def cosine_similarity(X: np.ndarray) -> np.ndarray:
    """Cosine similarity (n, n) of the rows of ``X`` (n, d). Zero rows raise ValueError."""
    norms = np.linalg.norm(X, axis=1)
    if (norms == 0).any():
        raise ValueError(f"{int((norms == 0).sum())} profile(s) are all zeros: cosine similarity is undefined")
    U = X / norms[:, None]
    return U @ U.T


def nearest_allowed(sim: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Index of each row's most similar allowed column; -1 where none is allowed.

    Ties (equal similarity) go to the lowest column index: the profile that comes first in
    obs order. ``sim`` and ``allowed`` are (n, n).
    """
    masked = np.where(allowed, sim, -np.inf)
    best = masked.argmax(axis=1)  # argmax returns the first of equal maxima
    best[~allowed.any(axis=1)] = -1
    return best


@dataclass
class Scores:
    """What a scorer returns: ``score`` (its summary number) and ``table`` (one row per scored profile)."""

    score: float
    table: pd.DataFrame

    def summary(self) -> dict:
        return {"score": self.score, "n_profiles": int(len(self.table))}


@dataclass
class MoaAccuracy:
    """Result of `moa_accuracy`.

    ``table``: one row per scored profile (label, compound, batch and for each of ``nsc`` /
    ``nscb``: ``<rule>_neighbor``, ``<rule>_similarity``, ``<rule>_predicted``, ``<rule>_correct``
    (missing when excluded)). ``excluded``: rule -> profiles left out because no allowed
    neighbour shares their label.
    """
    nsc: float
    nscb: float | None
    n_nsc: int
    n_nscb: int
    table: pd.DataFrame
    excluded: dict = field(default_factory=dict)
    unlabelled: list = field(default_factory=list)

    @property
    def score(self) -> float:
        """NSC accuracy (the summary number)."""
        return self.nsc

    def summary(self) -> dict:
        return {"NSC": self.nsc, "NSCB": self.nscb, "n_NSC": self.n_nsc, "n_NSCB": self.n_nscb,
                "excluded_NSC": list(self.excluded.get("nsc", [])),
                "excluded_NSCB": list(self.excluded.get("nscb", [])), "unlabelled": list(self.unlabelled)}

    def per_label(self, rule: str = "nsc") -> pd.DataFrame:
        """Accuracy, number scored and number correct per label for ``rule``."""
        scored = self.table[self.table[f"{rule}_correct"].notna()]
        grouped = scored.groupby("label")[f"{rule}_correct"]
        return pd.DataFrame({"accuracy": grouped.mean().astype(float), "n": grouped.size(),
                             "correct": grouped.sum().astype(int)})

    def confusion(self, rule: str = "nsc") -> pd.DataFrame:
        """Confusion matrix (true label rows x predicted label columns) of the scored profiles."""
        scored = self.table[self.table[f"{rule}_correct"].notna()]
        labels = sorted(set(scored["label"]) | set(scored[f"{rule}_predicted"]))
        return pd.crosstab(pd.Categorical(scored["label"], labels), pd.Categorical(scored[f"{rule}_predicted"], labels),
                           rownames=["true"], colnames=["predicted"], dropna=False)


def moa_accuracy(adata: ad.AnnData, *, label: str = "moa", compound: str = "compound", batch: str | None = "batch",
                 use_rep: str | None = None, control: str | None = None,
                 key_added: str | None = "moa_accuracy") -> MoaAccuracy:
    """1-nearest-neighbour (cosine) MOA accuracy: NSC and NSCB (Ljosa 2013; Ando 2017).

    Each profile (usually a treatment = compound + concentration) is matched to its most
    cosine-similar allowed profile; it is correct when that neighbour has the same label.

    - NSC: allowed = profiles of other compounds.
    - NSCB: allowed = profiles of other compounds and other batches (skipped when ``batch`` is None).
    - A profile none of whose allowed profiles shares its label is excluded from that score
      and listed in ``excluded`` (in BBBC021 NSCB: Kinase inhibitors, Cholesterol-lowering).
    - Ties: the allowed profile first in obs order wins (see `nearest_allowed`).
    - Rows with a missing label, and rows matching ``control`` (an obs query such as
      ``"compound == 'DMSO'"``), are neither scored nor candidates; unlabelled rows are reported.

    Reads ``X`` / ``obsm[use_rep]``, ``obs[label, compound, batch]``; writes
    ``uns[key_added]`` (the summary) unless ``key_added`` is None. Raises KeyError when a
    column is missing and ValueError for NaN or all-zero profiles.
    """
    _column(adata, compound, "compound")
    if batch is not None:
        _column(adata, batch, "batch")
    sub, X, unlabelled = _scored_profiles(adata, label=label, use_rep=use_rep, control=control)
    if sub.n_obs < 2:
        raise ValueError(f"need at least 2 labelled profiles to score, got {sub.n_obs}")
    labels = sub.obs[label].astype(str).to_numpy()
    compounds = sub.obs[compound].astype(str).to_numpy()
    sim = cosine_similarity(X)
    same_label = labels[:, None] == labels[None, :]
    rules = {"nsc": compounds[:, None] != compounds[None, :]}
    if batch is not None:
        batches = sub.obs[batch].astype(str).to_numpy()
        rules["nscb"] = rules["nsc"] & (batches[:, None] != batches[None, :])
    table = pd.DataFrame({"label": labels, "compound": compounds}, index=sub.obs_names)
    if batch is not None:
        table["batch"] = batches
    scores, counts, excluded = {}, {}, {}
    for rule, allowed in rules.items():
        best = nearest_allowed(sim, allowed)
        valid = (allowed & same_label).any(axis=1)
        has = best >= 0
        table[f"{rule}_neighbor"] = np.where(has, np.asarray(sub.obs_names)[np.maximum(best, 0)], None)
        table[f"{rule}_similarity"] = np.where(has, sim[np.arange(len(best)), np.maximum(best, 0)], np.nan)
        table[f"{rule}_predicted"] = np.where(has, labels[np.maximum(best, 0)], None)
        correct = pd.array(np.where(has, labels[np.maximum(best, 0)] == labels, False), dtype="boolean")
        correct[~valid] = pd.NA
        table[f"{rule}_correct"] = correct
        excluded[rule] = list(sub.obs_names[~valid])
        counts[rule] = int(valid.sum())
        scores[rule] = float(np.mean(np.asarray(correct[valid], dtype=bool))) if valid.any() else float("nan")
    result = MoaAccuracy(nsc=scores["nsc"], nscb=scores.get("nscb"), n_nsc=counts["nsc"],
                         n_nscb=counts.get("nscb", 0), table=table, excluded=excluded, unlabelled=unlabelled)
    if key_added:
        adata.uns[key_added] = {k: ("None" if v is None else v) for k, v in result.summary().items()}
    return result


def average_precision_ranks(relevance: np.ndarray) -> float:
    """AP of one ranked list of 0/1 relevances: mean over positives of precision at their rank."""
    hits = np.cumsum(relevance)
    ranks = np.flatnonzero(relevance)
    return float(np.mean(hits[ranks] / (ranks + 1))) if len(ranks) else float("nan")


def mean_average_precision(adata: ad.AnnData, *, label: str = "moa", compound: str = "compound",
                           use_rep: str | None = None, control: str | None = None,
                           key_added: str | None = "mean_average_precision") -> Scores:
    """mAP of retrieving same-label profiles by cosine similarity (copairs' definition).

    For each query, positives are profiles with the same label and another compound,
    negatives are profiles with another label (same-compound profiles are neither, and are
    left out of the ranking). Candidates are ranked by decreasing similarity, positives before
    negatives at equal similarity (as copairs' stable sort does). AP = mean precision at each
    positive's rank. Queries without a positive are dropped (NaN).

    Reads ``X`` / ``obsm[use_rep]``, ``obs[label, compound]``; writes ``uns[key_added]`` (mAP, counts)
    unless ``key_added`` is None. Returns `Scores`: ``score`` = mAP over queries, ``table`` = one row per
    profile with label, compound, average_precision, n_pos_pairs, n_total_pairs. Per-label mAP:
    ``result.table.groupby("label").average_precision.mean()``.
    """
    _column(adata, compound, "compound")
    sub, X, _ = _scored_profiles(adata, label=label, use_rep=use_rep, control=control)
    labels = sub.obs[label].astype(str).to_numpy()
    compounds = sub.obs[compound].astype(str).to_numpy()
    sim = cosine_similarity(X)
    same_label = labels[:, None] == labels[None, :]
    pos = same_label & (compounds[:, None] != compounds[None, :])
    neg = ~same_label
    ap, n_pos, n_total = np.full(len(labels), np.nan), pos.sum(1), (pos | neg).sum(1)
    for i in range(len(labels)):
        cand = np.flatnonzero(pos[i] | neg[i])
        if not pos[i].any() or not neg[i].any():
            continue
        order = np.lexsort([~pos[i, cand], -sim[i, cand]])
        ap[i] = average_precision_ranks(pos[i, cand[order]].astype(float))
    table = pd.DataFrame({"label": labels, "compound": compounds, "average_precision": ap,
                          "n_pos_pairs": n_pos, "n_total_pairs": n_total}, index=sub.obs_names)
    result = Scores(float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan"), table)
    if key_added:
        adata.uns[key_added] = {"mAP": result.score, "n_profiles": int(len(table)),
                                "n_queries": int(np.isfinite(ap).sum())}
    return result


def loco_classification(adata: ad.AnnData, *, label: str = "moa", compound: str = "compound",
                        use_rep: str | None = None, control: str | None = None,
                        classifier: str = "centroid", random_state: int = 0,
                        key_added: str | None = "loco_classification") -> Scores:
    """Leave-one-compound-out classification of the label.

    For each compound, a classifier is trained on the profiles of every other compound and
    predicts the held-out compound's profiles. ``classifier``: ``"logistic"`` (multinomial
    logistic regression on L2-normalised profiles) or ``"centroid"`` (nearest label centroid,
    cosine). Profiles whose label no other compound has cannot be predicted and are left out
    (``predicted`` missing).

    Reads ``X`` / ``obsm[use_rep]``, ``obs[label, compound]``; writes ``uns[key_added]`` (accuracy,
    classifier, counts) unless ``key_added`` is None. Returns `Scores`: ``score`` = accuracy over the
    predictable profiles, ``table`` = label, compound, predicted per profile.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import normalize as l2

    _column(adata, compound, "compound")
    sub, X, _ = _scored_profiles(adata, label=label, use_rep=use_rep, control=control)
    X = l2(X)
    labels = sub.obs[label].astype(str).to_numpy()
    compounds = sub.obs[compound].astype(str).to_numpy()
    predicted = np.full(len(labels), None, dtype=object)
    for held in np.unique(compounds):
        test = compounds == held
        train = ~test
        if labels[test][0] not in set(labels[train]):
            continue
        if classifier == "logistic":
            model = LogisticRegression(max_iter=2000, C=1.0, random_state=random_state)
            predicted[test] = model.fit(X[train], labels[train]).predict(X[test])
        elif classifier == "centroid":
            names = np.unique(labels[train])
            centroids = l2(np.stack([X[train][labels[train] == n].mean(0) for n in names]))
            predicted[test] = names[(X[test] @ centroids.T).argmax(1)]
        else:
            raise ValueError(f"classifier must be 'logistic' or 'centroid', got {classifier!r}")
    table = pd.DataFrame({"label": labels, "compound": compounds, "predicted": predicted}, index=sub.obs_names)
    scored = table["predicted"].notna()
    accuracy = float((table["predicted"][scored] == table["label"][scored]).mean()) if scored.any() else float("nan")
    if key_added:
        adata.uns[key_added] = {"accuracy": accuracy, "classifier": classifier, "n_profiles": int(len(table)),
                                "n_predicted": int(scored.sum())}
    return Scores(accuracy, table)

