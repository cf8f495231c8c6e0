"""Self-supervised losses on embedding batches ``(B, D)``."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Normalized-temperature cross entropy (SimCLR). ``z1[i]`` and ``z2[i]`` are two views of sample i.

    Each of the 2B views is classified against the other 2B - 1 views; its positive is its
    partner. Returns the mean loss (a scalar). Lower when matching pairs are more similar than
    non-matching ones; ``log(2B - 1)`` when all views are identical.
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must both be (B, D); got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    logits = z @ z.T / temperature
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, targets)


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL regression loss ``2 - 2 cos(p, t)``, averaged over the batch; 0 for parallel vectors, 4 for opposite."""
    p = F.normalize(prediction.float(), dim=1)
    t = F.normalize(target.float(), dim=1)
    return (2 - 2 * (p * t).sum(dim=1)).mean()


def supcon(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1,
           groups: torch.Tensor | None = None) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) of embeddings ``z`` (N, D) with class ``labels`` (N,).

    Each row is classified against the other N - 1 rows; its positives are the other rows of its class
    (with two views per sample, at least its partner view). ``groups`` (N,), e.g. the batch of each cell:
    a row is contrasted only with the rows of its own group and its positives (wherever they are), so the
    loss gains nothing from what tells the groups apart. Rows without a positive are left out. Returns the
    mean loss (a scalar; 0 when no row has a positive).
    """
    if z.ndim != 2 or labels.shape != z.shape[:1]:
        raise ValueError(f"z must be (N, D) and labels (N,); got {tuple(z.shape)} and {tuple(labels.shape)}")
    if groups is not None and groups.shape != labels.shape:
        raise ValueError(f"groups must be (N,) like labels; got {tuple(groups.shape)} and {tuple(labels.shape)}")
    z = F.normalize(z.float(), dim=1)
    logits = z @ z.T / temperature
    self_mask = torch.eye(len(z), dtype=torch.bool, device=z.device)
    same_class = labels[:, None] == labels[None, :]
    excluded = self_mask if groups is None else self_mask | ~((groups[:, None] == groups[None, :]) | same_class)
    logits = logits.masked_fill(excluded, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
    positive = same_class & ~self_mask
    count = positive.sum(1)
    keep = count > 0
    if not keep.any():  # no row has a positive: nothing to pull together (0, with a gradient path)
        return z.sum() * 0.0
    mean_log_prob = log_prob.masked_fill(~positive, 0.0).sum(1)[keep] / count[keep]
    return -mean_log_prob.mean()
