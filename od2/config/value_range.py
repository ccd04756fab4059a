"""A closed or open interval that a config value (or each number in a list value) must lie in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ValueRange:
    """``low <= value <= high``; ``low_open`` / ``high_open`` leave the bound itself out; ``None`` is unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def __str__(self) -> str:
        """``>= 1``, ``> 0``, ``<= 1`` or ``in [0, 1)``."""
        if self.high is None:
            return f"{'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"


def at_least(low: float) -> ValueRange:
    """``value >= low``."""
    return ValueRange(low=low)


def above(low: float) -> ValueRange:
    """``value > low``."""
    return ValueRange(low=low, low_open=True)


PROBABILITY = ValueRange(0.0, 1.0)
