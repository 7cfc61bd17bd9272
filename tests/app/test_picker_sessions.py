"""The picker, given no session, opens one only when it has something to read: the group
commit picks for every impression, and must not pay for a Session each time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.serving import BatchPicker
from app.settings import Settings


@pytest.fixture
def counted(settings: Settings) -> Iterator[tuple[BatchPicker, list[Session]]]:
    """A picker over a served placeholder batch, and the Sessions it has opened so far."""
    engine = make_engine(settings.resolved_database_url)
    factory = make_session_factory(engine)
    ensure_initial_version(factory, settings, placeholder=True)
    opened: list[Session] = []

    def counting() -> Session:
        opened.append(factory())
        return opened[-1]

    picker = BatchPicker(settings, sessions=counting, arms_cache_seconds=3600)  # type: ignore[arg-type]
    yield picker, opened
    engine.dispose()


def test_a_session_is_opened_only_to_read_the_plan_and_a_versions_images(
    settings: Settings, counted: tuple[BatchPicker, list[Session]]
) -> None:
    picker, opened = counted
    picks = [picker.pick() for _ in range(50)]
    # The first pick read the plan and the version's images; the other 49 read nothing.
    assert len(opened) == 1
    assert len({image_id for _, image_id in picks}) == settings.batch_size  # kept even
    picker.invalidate()  # as after a promotion: the plan must be read again, once
    picker.pick()
    picker.pick()
    assert len(opened) == 2


def test_refresh_reads_ahead_so_that_picking_reads_nothing(
    counted: tuple[BatchPicker, list[Session]],
) -> None:
    """PostgresWriter, on the event loop, asks whether the picker would read and has it read
    in a worker thread first: after refresh(), picks open no Session until the plan is stale."""
    picker, opened = counted
    assert picker.needs_reading()  # nothing read yet
    picker.refresh()
    assert len(opened) == 1
    assert not picker.needs_reading()
    for _ in range(20):
        picker.pick()
    assert len(opened) == 1  # the picks read nothing
    picker.invalidate()
    assert picker.needs_reading()
