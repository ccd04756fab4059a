"""Helpers of the norm layers: group counts on any channel count, the dtype of statistics."""

import torch


def num_groups(channels: int, groups: int = 32) -> int:
    """``groups``, halved until it divides ``channels`` (small necks such as 24 channels still work)."""
    while channels % groups:
        groups //= 2
    return groups


def statistics_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute norm statistics in: fp32 for half types, the input's own for fp32/fp64."""
    return torch.promote_types(dtype, torch.float32)
