"""The temporal mean (Mean Teacher): an exponential moving average of a network's weights.

theta'_t = a_t theta'_{t-1} + (1 - a_t) theta_t after every optimiser step, with Mean Teacher's warm-up
a_t = min(1 - 1/(t+1), decay), where t counts optimiser steps from 1 (so a_1 = 0.5, a_2 = 2/3, ...); decay = 1
gives the plain (uniform) average of all past weights, the "plain average instead of temporal mean" ablation. The step
counter lives on the device and the update is a handful of foreach kernels: no host synchronisation, so a later
fast path can capture it inside a CUDA graph.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

BUFFER_MODES = ("forward", "copy", "average")


class TemporalMean(nn.Module):
    """Holds `mean` (a frozen deep copy of a live network) and updates it from the live one.

    buffer_mode says how the mean network's BatchNorm buffers are kept:
      forward: its own forward passes in train mode update them (Mean Teacher; the default),
      copy:    copied from the live network after every update,
      average: averaged like the parameters (num_batches_tracked copied).
    With `forward` the mean network runs in train mode during training steps; with the others in eval mode.
    """

    def __init__(self, live: nn.Module, decay: float = 0.999, buffer_mode: str = "forward"):
        super().__init__()
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay must be in [0, 1], got {decay}")
        if buffer_mode not in BUFFER_MODES:
            raise ValueError(f"unknown ema buffer_mode {buffer_mode!r}; allowed: {', '.join(BUFFER_MODES)}")
        self.decay = decay
        self.buffer_mode = buffer_mode
        self.mean = copy.deepcopy(live)
        for p in self.mean.parameters():
            p.requires_grad_(False)
        self.register_buffer("step", torch.zeros((), dtype=torch.float32))
        # The cap as a device tensor (not in checkpoints: the option decides it), so a captured step reads it and
        # set_decay() can change it in place without a new capture.
        self.register_buffer("decay_cap", torch.tensor(float(decay)), persistent=False)

    def train(self, mode: bool = True) -> "TemporalMean":
        super().train(mode)
        # Only the `forward` mode lets the mean network's own train-mode passes update its BN statistics.
        self.mean.train(mode and self.buffer_mode == "forward")
        return self

    def current_alpha(self) -> torch.Tensor:
        """a_t for the update that follows the step counted in `self.step` (device tensor)."""
        return torch.minimum(1.0 - 1.0 / (self.step + 1.0), self.decay_cap)

    def set_decay(self, decay: float) -> None:
        """Change the cap of a_t in place (device tensor: no host sync, no new CUDA-graph capture)."""
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"ema decay must be in [0, 1], got {decay}")
        self.decay = decay
        self.decay_cap.fill_(decay)

    @torch.no_grad()
    def update(self, live: nn.Module) -> None:
        """One EMA update after an optimiser step of `live` (same architecture as `self.mean`)."""
        self.step.add_(1.0)
        alpha = self.current_alpha()
        mean_params = [p for p in self.mean.parameters()]
        live_params = [p.detach() for p in live.parameters()]
        # mean = alpha * mean + (1 - alpha) * live  ==  mean + (1 - alpha) * (live - mean)
        torch._foreach_mul_(mean_params, alpha)
        torch._foreach_add_(mean_params, torch._foreach_mul(live_params, 1.0 - alpha))
        if self.buffer_mode == "forward":
            return
        for mean_buf, live_buf in zip(self.mean.buffers(), live.buffers()):
            if self.buffer_mode == "average" and mean_buf.is_floating_point():
                mean_buf.mul_(alpha).add_(live_buf * (1.0 - alpha))
            else:
                mean_buf.copy_(live_buf)
