"""Errors of the training loop (a leaf module: the trainer raises them, its hooks react to them)."""

from __future__ import annotations

import os


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; raised before that step changed any training state.

    ``saved_state`` is the checkpoint of the state before the failed step once the checkpointing hook has written it
    (None before); the message then says where it is and how to go on from it.
    """

    def __init__(self, message: str, iteration: int):
        super().__init__(message)
        self.iteration = iteration
        self.saved_state: os.PathLike | None = None

    def __str__(self) -> str:
        message = super().__str__()
        if self.saved_state is None:
            return message
        return (f"{message} The state before iteration {self.iteration} is saved in {self.saved_state}; --resume "
                "starts from it and replays the same batches, so change the config first.")
