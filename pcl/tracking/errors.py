"""Errors of the tracking layer that a user fixes (printed as one line, no traceback) and the preemption
interrupt with which Sacred records a run stopped by a signal."""
from __future__ import annotations

from sacred.utils import SacredError, SacredInterrupt


class UserError(SacredError):
    """An error the user fixes (config, store): Sacred's command line prints its message without a traceback."""

    def __init__(self, message: str):
        super().__init__(message, print_traceback=False)



class StoreUnavailable(UserError, RuntimeError):
    """The MongoDB store cannot be reached or used; raised before any training or record."""


class Preempted(SacredInterrupt):
    """Ends a Sacred run whose training was stopped by a signal: Sacred records its standard status INTERRUPTED and
    info.preempted=True says it was a preemption (the run resumes at its next start; pcl.results reports PREEMPTED).
    Omniboard, incense and every status filter know INTERRUPTED; a status of our own would be dropped by them."""

    STATUS = "INTERRUPTED"

