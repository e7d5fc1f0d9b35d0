"""What passes between the training loop and whoever runs it, without torch: the per-epoch metrics callback and the
exception the loop raises when a stop was requested. The tracking layer catches and passes these before it knows
whether it will train (so planning never imports the loop).
"""
from __future__ import annotations

from typing import Callable

#: called after every epoch with (epoch index, that epoch's metrics)
MetricsCallback = Callable[[int, dict[str, float]], None]


class TrainingInterrupted(Exception):
    """A stop was requested (SIGTERM, SLURM pre-timeout signal): the last completed epoch's checkpoint is on disk."""

    def __init__(self, completed_epochs: int, checkpoint_path: str | None):
        super().__init__(f"training interrupted after {completed_epochs} completed epoch(s); "
                         f"checkpoint: {checkpoint_path}")
        self.completed_epochs = completed_epochs
        self.checkpoint_path = checkpoint_path
