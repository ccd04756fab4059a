"""Errors of the training loop (a leaf module: the trainer raises them, its hooks react to them)."""

from __future__ import annotations

import os


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; raised before that step changed any training state.

    ``saved_state`` is the checkpoint of the state before the failed step once the checkpointing hook has written it
    (None before), and ``resume_from`` the checkpoint ``--resume`` continues from (None: from iteration 0); the
    message then says where they are and how to go on.
    """

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration
        self.saved_state: os.PathLike | None = None
        self.resume_from: os.PathLike | None = None

    def __str__(self) -> str:
        message = super().__str__()
        if self.saved_state is None:
            return message
        # The weights before the failed step gave this loss: resuming from them fails again, whatever the config.
        start = (f"continues from {self.resume_from}, the last checkpoint before iteration {self.iteration}"
                 if self.resume_from is not None else f"starts from iteration 0 (no checkpoint before "
                                                      f"iteration {self.iteration})")
        return (f"{message} The state before iteration {self.iteration}, whose weights gave this loss, is kept in "
                f"{self.saved_state} to inspect. Change the config, then run the same od2 train command with "
                f"--resume: it {start}.")
