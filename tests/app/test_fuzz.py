"""The API fuzzed as an outside client would fuzz it (schemathesis, the engine behind `st run`):
every check, the examples, coverage, fuzzing and stateful phases (the OpenAPI links chain real
impression, image and version ids), the admin token supplied, on SQLite and on PostgreSQL.
The budget is small here; bench/fuzz.py is the long run over HTTP against `pirloop serve`."""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from fastapi import FastAPI
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, events, from_schema
from schemathesis.engine.recorder import Interaction
from schemathesis.python.asgi import shutdown_lifespans

from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.main import create_app
from tests.conftest import TEST_ADMIN, make_settings

EXAMPLES = int(os.environ.get("PIRLOOP_FUZZ_EXAMPLES", "30"))
STATEFUL_STEPS = int(os.environ.get("PIRLOOP_FUZZ_STATEFUL_STEPS", "40"))
# Checks left out, each with its reason (docs/SECURITY.md names them too). None: all run.
CHECKS_LEFT_OUT: dict[str, str] = {}


class NoJobs:
    """Takes the jobs the admin routes ask for and runs none: a learning cycle the fuzzer
    starts must not train a model (or open the environment's database) inside the test."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self, name: str, **kwargs: Any) -> str:
        self.submitted.append(name)
        return f"job-{len(self.submitted)}"

    def shutdown(self) -> None:
        pass


@dataclass
class FuzzReport:
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    phases: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0


def fuzz_config(*, examples: int, stateful_steps: int) -> SchemathesisConfig:
    checks: dict[str, object] = {"enabled": True}
    checks.update({name: {"enabled": False} for name in CHECKS_LEFT_OUT})
    return SchemathesisConfig.from_dict(
        {
            "seed": 20260101,
            # No state carried between runs (st keeps failures to replay under .schemathesis/).
            "cache": {"enabled": False},
            "headers": {"Authorization": f"Bearer {TEST_ADMIN}"},
            "checks": checks,
            "generation": {"max-examples": examples, "database": "none"},
            "phases": {
                "examples": {"enabled": True},
                "coverage": {"enabled": True},
                "fuzzing": {"enabled": True},
                "stateful": {"enabled": True, "max-steps": stateful_steps},
            },
        }
    )


def describe_exchange(interaction: Interaction | None) -> str:
    """The request and the answer of a failure, short enough for an assertion message."""
    if interaction is None:
        return "  (no request recorded)"
    request, response = interaction.request, interaction.response
    sent = (request.body or b"")[:300]
    answer = (
        "no response" if response is None else f"{response.status_code} {response.content[:300]!r}"
    )
    return f"  {request.method} {request.uri} {sent!r}\n  -> {answer}"


def run_fuzz(app: FastAPI, *, examples: int, stateful_steps: int) -> FuzzReport:
    """Every phase of a schemathesis run against the app in process; what it found."""
    config = fuzz_config(examples=examples, stateful_steps=stateful_steps)
    # Loading the schema starts the app's lifespan (engine, picker, writer), which schemathesis
    # keeps for its requests until shutdown_lifespans().
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    app.state.jobs.shutdown()
    app.state.jobs = NoJobs()
    report = FuzzReport()
    started = time.monotonic()
    try:
        for event in from_schema(schema).execute():
            record_event(report, event)
    finally:
        shutdown_lifespans()
    report.seconds = time.monotonic() - started
    return report


def record_event(report: FuzzReport, event: events.EngineEvent) -> None:
    if isinstance(event, events.ScenarioFinished):
        recorder = event.recorder
        report.phases[event.phase.value] += len(recorder.interactions)
        for interaction in recorder.interactions.values():
            report.requests += 1
            if interaction.response is not None:
                report.statuses[interaction.response.status_code] += 1
        for case_id, checks in recorder.checks.items():
            for check in checks:
                if check.status == Status.FAILURE and check.failure_info is not None:
                    failure = check.failure_info.failure
                    report.failures.append(
                        f"{recorder.label} [{event.phase.value}] {check.name}: "
                        f"{failure.title}: {failure.message}\n"
                        f"{describe_exchange(recorder.interactions.get(case_id))}"
                    )
    elif isinstance(event, events.NonFatalError | events.FatalError):
        report.errors.append(f"{getattr(event, 'label', '')}: {event.info.format()}")


def test_every_phase_with_every_check_finds_nothing(database_url: str, tmp_path: Path) -> None:
    """The schema is the contract: no 5xx, every status and body documented, every header
    declared, invalid input refused, admin routes closed without the token and open with it."""
    settings = make_settings(
        database_url,
        tmp_path,
        rate_limit_ip_per_minute=0,
        rate_limit_visitor_per_minute=0,
        # The ignored_auth check retries admin calls without credentials on purpose.
        admin_failures_per_minute=1_000_000,
    )
    engine = make_engine(database_url)
    ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    report = run_fuzz(create_app(settings), examples=EXAMPLES, stateful_steps=STATEFUL_STEPS)
    print(
        f"fuzzing made {report.requests} requests in {report.seconds:.0f} s "
        f"(phases {dict(report.phases)}, statuses {dict(sorted(report.statuses.items()))}), "
        f"{len(report.failures)} failures"
    )
    assert not report.errors, "\n".join(report.errors)
    assert not report.failures, "\n".join(sorted(set(report.failures)))
    # Every phase ran, and the admin routes answered with the token.
    assert all(report.phases[phase] > 0 for phase in ("coverage", "fuzzing", "stateful"))
    assert report.statuses[201] > 0
    assert report.statuses[401] > 0  # ignored_auth: the same calls without the token
