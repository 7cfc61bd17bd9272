"""A rich progress bar that callers can switch off (tests, Celery workers without a TTY), and a
step callback for callers that show progress elsewhere (a running cycle's row in the database)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
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

StepCallback = Callable[[int, int], None]
"""Called with (step, total): when a loop starts, every REPORT_FRACTION of the way, and with
(total, total) when it ends, also when it stops early."""

REPORT_FRACTION = 0.02
"""Share of a loop's steps between two step callbacks: often enough for a dashboard, rarely
enough that a callback writing to a database costs nothing next to the training."""


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


class _ReportingTicker:
    """Moves the inner ticker on every step and calls on_step about every REPORT_FRACTION."""

    def __init__(self, inner: Ticker, on_step: StepCallback, total: int, completed: int) -> None:
        self._inner = inner
        self._on_step = on_step
        self._total = total
        self._done = completed
        self._every = max(1, round(total * REPORT_FRACTION))
        self._next = completed + self._every
        self._reported = completed
        on_step(completed, total)

    def advance(self, steps: int = 1, **fields: object) -> None:
        self._inner.advance(steps, **fields)
        self._done += steps
        if self._next <= self._done < self._total:
            self._report(self._done)
            self._next = self._done + self._every

    def finish(self) -> None:
        if self._reported < self._total:
            self._report(self._total)

    def _report(self, step: int) -> None:
        self._reported = step
        self._on_step(step, self._total)


@contextmanager
def progress_bar(
    description: str,
    total: int,
    *,
    enabled: bool,
    completed: int = 0,
    on_step: StepCallback | None = None,
) -> Iterator[Ticker]:
    """Yield a ticker whose `advance` moves a bar (a no-op when disabled) and, given on_step,
    reports (step, total) to it; the loop's normal end reports (total, total)."""
    with _bar(description, total, enabled=enabled, completed=completed) as ticker:
        if on_step is None:
            yield ticker
            return
        reporting = _ReportingTicker(ticker, on_step, total, completed)
        yield reporting
        reporting.finish()


@contextmanager
def _bar(description: str, total: int, *, enabled: bool, completed: int) -> Iterator[Ticker]:
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
