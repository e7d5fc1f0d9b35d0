"""Peer diversity: how often a method's peers predict different classes on the test set, logged every epoch.

The measure is the pairwise prediction disagreement (Fort, Hu & Lakshminarayanan, "Deep Ensembles: A Loss
Landscape Perspective", arXiv 1912.02757, 2019: the fraction of test points on which two networks'
top-1 predictions differ), averaged over every pair of peers:

    diversity = 100 / (N * P) * sum_{pairs i < k} sum_{n = 1..N} [argmax z_i(x_n) != argmax z_k(x_n)]   (%),

with m peers, P = m(m-1)/2 pairs, N test images. 0 % = the peers always predict the same class; 100 % = every
pair disagrees on every image. Unlike Kuncheva & Whitaker's oracle disagreement it also counts two peers that are
both wrong with different classes. The peers are `Method.peer_heads`; a method with fewer than two has none.

The count is a device tensor added up batch by batch (no host read per step or batch); the engine reads it with
the error counts, once per evaluation.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["disagreement_count", "diversity_percent", "num_pairs"]


def num_pairs(num_peers: int) -> int:
    """m(m-1)/2: the number of unordered peer pairs."""
    return num_peers * (num_peers - 1) // 2


def disagreement_count(peer_logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """Number of (peer pair, sample) combinations whose top-1 classes differ, for one batch.

    peer_logits: m >= 2 tensors of shape [B, C] (one per peer, same samples in the same order). Returns a 0-dim
    int64 tensor on their device; turn the sum over batches into percent with :func:`diversity_percent`.
    """
    m = len(peer_logits)
    if m < 2:
        raise ValueError(f"peer diversity needs at least 2 peers, got {m}")
    preds = torch.stack([z.argmax(dim=1) for z in peer_logits])  # [m, B]
    differ = preds[:, None, :] != preds[None, :, :]  # [m, m, B]
    upper = torch.ones(m, m, dtype=torch.bool, device=preds.device).triu(diagonal=1)  # pairs i < k
    return (differ & upper[:, :, None]).sum()


def diversity_percent(count: float, num_samples: int, num_peers: int) -> float:
    """The disagreement count of N samples and m peers as the mean pairwise disagreement in percent."""
    return 100.0 * count / (num_samples * num_pairs(num_peers))
