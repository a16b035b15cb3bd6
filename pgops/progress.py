"""How a long job tells whoever watches how far it got, without drawing anything itself.

Jobs take a `Progress` and call `progress.task(description, total)`; the CLI passes one that draws a bar on a
terminal (`pgops.output.Bars`), the daemon and the tests the silent `QUIET`. A job module never imports rich.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Protocol, TypeVar

# `advance(n=1, **fields)`: n more units done; fields (a policy name) go to a log line where there is one.
Advance = Callable[..., None]

T = TypeVar("T")


class Progress(Protocol):
    def task(self, description: str, total: float | None = None) -> AbstractContextManager[Advance]:
        """A stretch of work of `total` units (None: unknown), open while the block runs."""
        ...


def _nothing(n: float = 1, **fields: Any) -> None:
    return None


class Quiet:
    """Reports nowhere: the default of every job."""

    @contextmanager
    def task(self, description: str, total: float | None = None) -> Iterator[Advance]:
        yield _nothing


QUIET: Progress = Quiet()


def track(progress: Progress, description: str, items: Iterable[T], total: float | None = None) -> Iterator[T]:
    """Each of `items`, advancing the task by one as it is taken."""
    with progress.task(description, total) as advance:
        for item in items:
            advance()
            yield item
