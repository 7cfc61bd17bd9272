"""Property-based fuzzing of the whole OpenAPI schema (schemathesis): no 5xx, and every
response conforms to the schema. The budget is small here; bench/fuzz.py runs a long one."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.main import create_app
from tests.conftest import empty_tables, make_settings

EXAMPLES = int(os.environ.get("PIRLOOP_FUZZ_EXAMPLES", "100"))


@pytest.fixture(scope="module")
def fuzz_schema(
    sqlite_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[schemathesis.BaseSchema]:
    settings_ = make_settings(
        sqlite_url,
        tmp_path_factory.mktemp("fuzz"),
        rate_limit_ip_per_minute=0,
        rate_limit_visitor_per_minute=0,
    )
    engine = make_engine(sqlite_url)
    ensure_initial_version(make_session_factory(engine), settings_, placeholder=True)
    engine.dispose()
    app = create_app(settings_)
    with TestClient(app):  # runs the lifespan: engine, picker, jobs
        yield schemathesis.openapi.from_asgi("/openapi.json", app)
    # The SQLite database is shared by the whole run: leave it empty for the next tests.
    empty_tables(sqlite_url)


def fuzz_operation(operation: schemathesis.APIOperation, calls: dict[str, int]) -> None:
    label = f"{operation.method.upper()} {operation.path}"

    @given(case=operation.as_strategy())
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def exercise(case: schemathesis.Case) -> None:
        calls[label] = calls.get(label, 0) + 1
        case.call_and_validate(checks=[not_a_server_error, response_schema_conformance])

    exercise()


def test_no_server_error_and_schema_conformance(fuzz_schema: schemathesis.BaseSchema) -> None:
    """Every operation of the schema, EXAMPLES generated requests each (fewer where the
    schema admits fewer distinct ones)."""
    calls: dict[str, int] = {}
    for result in fuzz_schema.get_all_operations():
        fuzz_operation(result.ok(), calls)
    total = sum(calls.values())
    print(f"fuzzing made {total} requests over {len(calls)} operations: {calls}")
    assert len(calls) >= 8
    assert total >= min(1000, EXAMPLES * len(calls) // 2)
