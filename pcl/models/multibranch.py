"""The multi-branch network of PCL (Wu & Gong 2021): shared low-level layers + m peer heads.

Each peer head comes from its own fresh :func:`build_backbone` call, so peers start from independent random
inits (as ONE builds each branch separately), not copies of one another. Only the first build's ``shared``
part is kept, so shared parameters exist (and are counted, optimised, EMA-averaged) once.

Multi-input augmentation (Wu & Gong 2021) feeds each peer its own augmented view. The shared layers then run
once per view, so their BatchNorm normalises each view with that view's own batch statistics, exactly as if
each peer were a separate network on its view; running statistics are updated once per view, in view order.
"""

from __future__ import annotations

import numbers

import torch
from torch import Tensor, nn

from . import build_backbone
from .base import Backbone, Head

__all__ = ["MultiBranchNet"]


class MultiBranchNet(nn.Module):
    """Shared low-level layers + m independently initialised branches (peers)."""

    def __init__(self, backbone: str, num_classes: int, num_branches: int, dropout: float | None = None) -> None:
        """dropout: of every branch's (and the shared part's) dropout layers, as :func:`build_backbone` takes it."""
        super().__init__()
        if isinstance(num_branches, bool) or not isinstance(num_branches, numbers.Integral) or num_branches < 1:
            raise ValueError(f"num_branches must be an integer >= 1, got {num_branches!r}")
        builds = [build_backbone(backbone, num_classes, dropout) for _ in range(int(num_branches))]
        self.shared: nn.Module = builds[0].shared
        self.branches = nn.ModuleList([b.head for b in builds])
        self.num_branches = int(num_branches)
        self.feature_dim = builds[0].head.feature_dim
        self.backbone_name = backbone
        self.num_classes = int(num_classes)
        self.dropout = dropout

    def shared_features(self, x: Tensor) -> Tensor:
        """Output of the shared low-level layers (the input of every branch)."""
        return self.shared(x)

    def forward_views(self, views: list[Tensor] | tuple[Tensor, ...]) -> list[tuple[Tensor, Tensor]]:
        """Run the peers; returns ``[(pooled feature, logits)]`` for each branch, in branch order.

        ``len(views) == num_branches``: the shared layers run on each view separately (per-view BN statistics),
        branch j on view j. ``len(views) == 1``: the shared layers run once and every branch sees that output
        (evaluation, or training with one view for all peers). Any other count is an error, since silently
        broadcasting or truncating would change the method.
        """
        if isinstance(views, Tensor):
            raise TypeError("forward_views expects a list of view tensors; wrap a single batch as [x]")
        views = list(views)
        head: Head
        if len(views) == self.num_branches:
            return [head(self.shared(v)) for head, v in zip(self.branches, views)]
        if len(views) == 1:
            shared = self.shared(views[0])
            return [head(shared) for head in self.branches]
        raise ValueError(
            f"forward_views got {len(views)} views; expected 1 or num_branches={self.num_branches}"
        )

    def forward(self, x: Tensor | list[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Convenience: a tensor is one view shared by all branches; a list goes to :meth:`forward_views`."""
        return self.forward_views([x] if isinstance(x, Tensor) else x)

    @torch.no_grad()
    def export_branch(self, j: int = 0) -> Backbone:
        """A new plain :class:`Backbone` holding the shared layers + branch j (the deployed model: Wu & Gong 2021,
        Algorithm 1's target model).

        Weights and buffers (BN running stats) are copied by state dict, so the export is independent of this
        network and its eval-mode logits equal branch j's. It is placed on this network's device/dtype and in
        this network's train/eval mode.
        """
        if isinstance(j, bool) or not isinstance(j, numbers.Integral) or not 0 <= j < self.num_branches:
            raise ValueError(f"branch index must be in [0, {self.num_branches}), got {j!r}")
        net = build_backbone(self.backbone_name, self.num_classes, self.dropout)
        net.shared.load_state_dict(self.shared.state_dict())
        net.head.load_state_dict(self.branches[int(j)].state_dict())
        ref = next(self.parameters())
        net.to(device=ref.device, dtype=ref.dtype)
        net.train(self.training)
        return net

    def extra_repr(self) -> str:
        return f"backbone={self.backbone_name!r}, num_classes={self.num_classes}, num_branches={self.num_branches}"
