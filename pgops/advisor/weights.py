"""How much each statement weighs in the choice: its measured time, unless that time can't stand for the
statement as it runs now. Pure.

- A statement from a file (no timings) weighs its plan cost times its calls, and the advice says so: cost
  units, never time. Where some statements have timings and others don't, the cost is turned into time at the
  rate the timed statements show (time per cost unit), and the advice says the figures are partly estimated.
- A statement whose current plan uses an index that has been scanned fewer times than the statement was called
  ran mostly before that index existed (an index built from the last advice, say): its measured time is stale,
  so it weighs its current plan cost at that same rate. This is what makes a second run on its own applied
  advice propose nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

DEFAULT_MS_PER_COST = 0.01  # when no statement has a measured time to calibrate with


class Unit(StrEnum):
    ms = "ms"  # measured statement time
    estimated_ms = "estimated ms"  # measured where it could be, plan cost at the measured rate elsewhere
    cost = "cost"  # plan cost x calls: no timings in the source


@dataclass(frozen=True)
class Planned:
    calls: int
    total_time_ms: float  # 0: not measured
    cost: float  # plan cost now, with the existing indexes
    uses: frozenset[str]  # existing indexes the current plan uses


def weigh(planned: dict[int, Planned], scans: dict[str, int]) -> tuple[dict[int, float], Unit, set[int]]:
    """Each statement's weight, the unit of all weights, and the statements whose time was stale."""
    stale = {
        number
        for number, p in planned.items()
        if p.total_time_ms > 0 and any(scans.get(index, 0) * 2 < p.calls for index in p.uses)
    }
    timed = {n: p for n, p in planned.items() if p.total_time_ms > 0 and n not in stale}
    if not timed and not stale:
        return {n: p.cost * p.calls for n, p in planned.items()}, Unit.cost, stale
    work = sum(p.cost * p.calls for p in timed.values())
    rate = sum(p.total_time_ms for p in timed.values()) / work if work > 0 else DEFAULT_MS_PER_COST
    weights = {n: p.total_time_ms if n in timed else p.cost * p.calls * rate for n, p in planned.items()}
    unit = Unit.ms if len(timed) == len(planned) else Unit.estimated_ms
    return weights, unit, stale
