"""Advisor parse benchmark: time per term to analyze OR chains and IN lists of doubling length, up to the size
limits (parse.MAX_STATEMENT_CHARS, parse.MAX_STATEMENT_NODES), and the ratio of the largest size's time per term
to the smallest's: about 1 when the work grows linearly, growing with the size when it grows quadratically.

Each size is analyzed (parse + extract, as `advise` does), best of --repeat runs, side by side in the same run:
with pgops' linear column selection; the same with Python's cyclic garbage collector off (it makes a full
collection once a statement's tree is large enough, which only the largest sizes pay for in a run of one
statement); and with sqlglot's own Scope.columns, the quadratic path pgops used before. No database: the catalog
is a hand-made one-table catalog.

Run: .venv/bin/python bench/advisor_parse.py [--start 1000] [--repeat 5] [--no-before]
"""

from __future__ import annotations

import argparse
import datetime
import gc
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import sqlglot  # noqa: E402

from pgops.advisor import extract, parse  # noqa: E402
from pgops.advisor.model import Analysis, Catalog, ColumnInfo, Statement, TableInfo  # noqa: E402

ORDERS = TableInfo(
    schema="public",
    name="orders",
    reltuples=1_000_000,
    relpages=10_000,
    size_bytes=80_000_000,
    columns={name: ColumnInfo(name=name, type="bigint") for name in ("id", "customer_id", "total")},
)
CATALOG = Catalog("bench", 150000, ["public"], {ORDERS.key: ORDERS}, [])

SHAPES: dict[str, Callable[[int], str]] = {
    "OR chain": lambda n: "SELECT id FROM orders WHERE " + " OR ".join(f"id = {i}" for i in range(n)),
    "IN list": lambda n: "SELECT id FROM orders WHERE customer_id IN (" + ", ".join(map(str, range(n))) + ")",
}


class _SqlglotColumns:
    """The column selection pgops used before: sqlglot's Scope.columns."""

    def of(self, scope):  # type: ignore[no-untyped-def]
        return scope.columns


def largest_fitting(make: Callable[[int], str]) -> int:
    """The most terms whose statement is analyzed, not skipped, under both limits."""
    high = 1
    while _fits(make(high * 2)):
        high *= 2
    low, high = high, high * 2
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if _fits(make(middle)) else (low, middle)
    return low


def _fits(text: str) -> bool:
    return len(text) <= parse.MAX_STATEMENT_CHARS and isinstance(parse.parse(text), sqlglot.exp.Expression)


VARIANTS = {"after": "µs/term", "no gc": "µs/term, gc off", "before": "µs/term, sqlglot Scope.columns"}


def run_once(text: str, variant: str) -> float:
    """Seconds to analyze `text` once, as VARIANTS names."""
    statement = Statement(text, source="bench")
    gc.collect()  # each run starts without the last run's garbage: its collection would land in this one
    if variant == "no gc":
        gc.disable()
    try:
        columns = _SqlglotColumns if variant == "before" else extract.ScopeColumns
        with mock.patch.object(extract, "ScopeColumns", columns):
            started = time.perf_counter()
            result = parse.analyze(statement, CATALOG)
            elapsed = time.perf_counter() - started
    finally:
        gc.enable()
    assert isinstance(result, Analysis), result
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--start", type=int, default=1000, help="terms of the smallest statement")
    parser.add_argument("--repeat", type=int, default=5, help="runs per size and variant; the best counts")
    parser.add_argument("--no-before", action="store_true", help="skip sqlglot's Scope.columns (slow at the limit)")
    args = parser.parse_args()
    variants = [variant for variant in VARIANTS if not (args.no_before and variant == "before")]
    print(
        f"{datetime.datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, sqlglot {sqlglot.__version__}; limits: "
        f"{parse.MAX_STATEMENT_CHARS:,} characters, {parse.MAX_STATEMENT_NODES:,} syntax nodes; best of {args.repeat}"
    )
    for name, make in SHAPES.items():
        limit = largest_fitting(make)
        sizes = [n for n in (args.start * 2**k for k in range(20)) if n < limit] + [limit]
        texts = {terms: make(terms) for terms in sizes}
        # round robin over sizes and variants, so a burst of load on the machine spreads over all of them
        best = {(terms, variant): float("inf") for terms in sizes for variant in variants}
        for _ in range(args.repeat):
            for terms, variant in best:
                best[terms, variant] = min(best[terms, variant], run_once(texts[terms], variant))
        widths = {variant: max(len(VARIANTS[variant]), 8) for variant in variants}
        header = f"\n{'shape':<9} {'terms':>6} {'chars':>8} {'nodes':>6}"
        print(header + "".join(f"  {VARIANTS[variant]:>{widths[variant]}}" for variant in variants))
        per_term = {variant: [best[terms, variant] / terms * 1e6 for terms in sizes] for variant in variants}
        for number, terms in enumerate(sizes):
            tree = parse.parse(texts[terms])
            nodes = sum(1 for _ in tree.walk()) if isinstance(tree, sqlglot.exp.Expression) else 0
            line = f"{name:<9} {terms:>6,} {len(texts[terms]):>8,} {nodes:>6,}"
            print(line + "".join(f"  {per_term[variant][number]:>{widths[variant]}.1f}" for variant in variants))
        ratios = "".join(f"  {values[-1] / values[0]:>{widths[v] - 1}.2f}x" for v, values in per_term.items())
        print(f"{f'ratio {sizes[-1]:,} / {sizes[0]:,} terms':<32}{ratios}")
    print("\nratio: time per term at the largest size over the smallest; linear: about 1, quadratic: grows with size")


if __name__ == "__main__":
    main()
