"""Helpers shared by test modules (and benchmarks): polling with a deadline, hostile text."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from hypothesis import strategies as st

T = TypeVar("T")


def wait_until(
    condition: Callable[[], T], timeout: float = 10.0, what: str = "the condition", every: float = 0.05
) -> T:
    """Poll `condition` until it returns something true and return that; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


# Any text, with the characters that end a line or a comment for PostgreSQL, psql or a terminal made likely.
hostile_text = st.text(
    st.one_of(
        st.characters(exclude_categories=("Cs",)),  # text from the server is valid UTF-8: no lone surrogate
        st.sampled_from(
            ["\n", "\r", "\x0b", "\x0c", "\x1b", "\x85", "\u2028", "\u202e", "\\", "*", "/", ";", "'", '"']
        ),
    )
)
