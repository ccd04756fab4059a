"""Errors of the training loop (a leaf module: the trainer raises them, its hooks react to them)."""

from __future__ import annotations


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss; raised before that step changed any training state."""
