"""Idle sessions per application across samples: which applications' idle pools grow at every step."""

from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import dataclass

from pgops.pool_report.sample import Sample


@dataclass(frozen=True)
class Growth:
    application: str
    idle_counts: tuple[int, ...]  # oldest sample first


class IdleGrowth:
    """Tracks idle sessions per application across samples; `feed` names those that grew at every step.

    Pure: it keeps only counts, so the daemon can feed it each interval's sample without touching a server.
    """

    def __init__(self, samples: int = 3) -> None:
        if samples < 2:
            raise ValueError("idle growth needs at least 2 samples to compare")
        self._history: deque[Counter[str]] = deque(maxlen=samples)

    def feed(self, sample: Sample) -> list[Growth]:
        self._history.append(Counter(b.application for b in sample.backends if b.state == "idle"))
        if len(self._history) < self._history.maxlen:
            return []
        growing = []
        for application in sorted(self._history[-1]):
            counts = tuple(step[application] for step in self._history)
            if all(later > earlier for earlier, later in itertools.pairwise(counts)):
                growing.append(Growth(application, counts))
        return growing
