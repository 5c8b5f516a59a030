"""When an instrument measures: every k steps from step s, or at log-spaced steps from step s."""

from __future__ import annotations

import dataclasses
import math


@dataclasses.dataclass(frozen=True)
class Schedule:
    every: int = 50
    start: int = 0
    # > 0: measure at steps start + floor(10 ** (i / log_spaced)) for i = 0, 1, ... (and at `start`),
    # i.e. about `log_spaced` measurements per decade, dense early and sparse late.
    log_spaced: int = 0

    def __post_init__(self) -> None:
        if self.every < 1 or self.start < 0 or self.log_spaced < 0:
            raise ValueError(f"invalid schedule {self}: every >= 1, start >= 0, log_spaced >= 0")

    def due(self, step: int) -> bool:
        offset = step - self.start
        if offset < 0:
            return False
        if not self.log_spaced:
            return offset % self.every == 0
        if offset == 0:
            return True
        nearest = round(self.log_spaced * math.log10(offset))
        return any(math.floor(10 ** (i / self.log_spaced) + 1e-9) == offset for i in (nearest - 1, nearest, nearest + 1))
