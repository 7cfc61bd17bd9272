"""A rich progress bar that callers can switch off (tests, Celery workers without a TTY)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class Ticker(Protocol):
    def advance(self, steps: int = 1, **fields: object) -> None: ...


class _RichTicker:
    def __init__(self, progress: Progress, task: int) -> None:
        self._progress = progress
        self._task = task

    def advance(self, steps: int = 1, **fields: object) -> None:
        self._progress.update(self._task, advance=steps, **fields)  # type: ignore[arg-type]


class _NullTicker:
    def advance(self, steps: int = 1, **fields: object) -> None:
        return None


@contextmanager
def progress_bar(
    description: str, total: int, *, enabled: bool, completed: int = 0
) -> Iterator[Ticker]:
    """Yield a ticker whose `advance` moves a bar; a no-op when disabled."""
    if not enabled:
        yield _NullTicker()
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task(description, total=total, completed=completed, status="")
        yield _RichTicker(progress, task)
