"""All configuration, read once from the environment (prefix PIRLOOP_) through `get_settings()`."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings.exceptions import SettingsError

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "dev-secret", "dev-admin-token", "secret"}
# Outside development a secret must look random: long, of many different characters (so "a"
# repeated, or spaces, are refused), with nothing a copy-paste could have added at either end.
SECRET_MIN_LENGTH = 32
SECRET_MIN_DISTINCT = 8
SECRET_RULE = (
    f"at least {SECRET_MIN_LENGTH} characters, at least {SECRET_MIN_DISTINCT} different ones, "
    "no whitespace at either end; e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'"
)
# Values never echoed in an error (they are secrets, or URLs that may carry a password).
SECRET_SETTINGS = {"secret_key", "admin_token", "simulation_key", "database_url", "redis_url"}


def weak_secret(value: str) -> bool:
    return (
        value in PLACEHOLDER_SECRETS
        or len(value) < SECRET_MIN_LENGTH
        or len(set(value)) < SECRET_MIN_DISTINCT
        or value != value.strip()
    )


class Settings(BaseSettings):
    # hide_input_in_errors: a ValidationError's text would otherwise quote the input, secrets
    # and all (pydantic shortens it, but keeps both ends).
    model_config = SettingsConfigDict(
        env_prefix="PIRLOOP_", env_file=".env", extra="ignore", hide_input_in_errors=True
    )

    environment: Literal["development", "test", "production"] = "development"
    data_dir: Path = Path("var")
    # Empty means the embedded SQLite file under data_dir.
    database_url: str = ""
    # What database_url reaches: PostgreSQL itself ("none"); PgBouncer 1.22 or newer in
    # transaction mode with max_prepared_statements above 0 ("pgbouncer", as docker-compose.yml
    # runs it for the API: psycopg keeps its prepared statements); any other pooler that may
    # run each transaction on another server connection ("transaction": psycopg prepares
    # nothing). app/database.py applies it; docs/SCALING.md says who goes through a pooler.
    database_pooler: Literal["none", "pgbouncer", "transaction"] = "none"
    # Under load the group-commit writer on PostgreSQL waits up to writer_linger_ms for
    # writer_group_target writes before it commits a group (app/writer.py, Gathering); 0 ms
    # commits whatever is queued at once.
    writer_group_target: int = Field(default=24, ge=1, le=256)
    writer_linger_ms: float = Field(default=2.0, ge=0, le=100)
    # Empty means jobs run in-process in a background thread; set it to use Celery on Redis.
    redis_url: str = ""
    secret_key: str = Field(default="dev-secret", repr=False)
    admin_token: str = Field(default="dev-admin-token", repr=False)

    # Artifact store for checkpoints: "database" works across machines with no shared disk;
    # "local" keeps them under artifact_dir (one machine, or a shared volume).
    artifact_store: Literal["database", "local"] = "database"
    artifact_dir: Path | None = None

    # Learning loop.
    preset: str = "cpu-small"
    batch_size: int = Field(default=200, ge=2, le=100_000)
    target_impressions_per_image: int = Field(default=50, ge=1)
    # Start a cycle after this long serving even if the target is not reached (needs data).
    cycle_fallback_seconds: int = Field(default=24 * 3600, ge=1)
    # A cycle queued or running longer than this is taken as abandoned (its worker died).
    cycle_timeout_seconds: int = Field(default=3 * 3600, ge=10)
    # A cycle still queued (no worker has started it) this long is taken as lost: its task
    # never reached the broker (Redis was down when it was sent, or the sender died). The next
    # tick starts a new one, instead of learning waiting out the whole cycle timeout.
    cycle_queue_timeout_seconds: int = Field(default=600, ge=1)
    # How often the scheduler (Celery beat, or the embedded one) checks whether a cycle is due.
    scheduler_interval_seconds: float = Field(default=10.0, gt=0)
    # Run the embedded scheduler in the API process when there is no Redis.
    embedded_scheduler: bool = True
    # Which placement's PIR the loop learns from and evaluates on.
    learning_placement: Literal["background", "rating"] = "background"
    # Count simulated traffic for training and evaluation (experiments). Off: real users only.
    use_simulated_traffic: bool = False
    # Versions of the serving lineage whose logged batches train the estimator.
    history_versions: int = Field(default=5, ge=1)
    tuning_steps: int | None = None

    # Rollouts: each tuned generator is a candidate served beside the champion until the
    # sequential decision (app/decision.py) promotes or rejects it.
    # The candidate's share of impressions, and a smaller one for the first ramp seconds;
    # impressions of the ramp are left out of the decision (burn-in).
    rollout_candidate_share: float = Field(default=0.5, gt=0, lt=1)
    rollout_ramp_share: float = Field(default=0.1, gt=0, lt=1)
    rollout_ramp_seconds: float = Field(default=120.0, ge=0)
    # False-promotion rate under continuous monitoring, and the harm checks' shared alpha.
    rollout_alpha: float = Field(default=0.05, gt=0, lt=0.5)
    rollout_harm_alpha: float = Field(default=0.05, gt=0, lt=0.5)
    # The effect the test is most sensitive to, relative to the champion's PIR.
    rollout_mixing_lift: float = Field(default=0.05, gt=0)
    # No verdict before each arm has this much data; none is owed after this budget.
    rollout_min_images_per_arm: int = Field(default=20, ge=2)
    rollout_min_impressions_per_arm: int = Field(default=400, ge=1)
    rollout_max_impressions_per_image: int = Field(default=50, ge=1)
    # A permanent holdout arm: this share keeps serving holdout_version (the first version
    # when unset), so the lineage's cumulative gain is measured on today's traffic. 0: none.
    holdout_share: float = Field(default=0.0, ge=0, lt=0.5)
    holdout_version: int | None = None
    estimator_epochs: int | None = None

    # How PIR is measured.
    positive_kinds: list[str] = ["click"]
    rating_weights: list[float] = [0.0, 0.25, 0.5, 0.75, 1.0]

    # Tokens and public endpoints.
    token_ttl_seconds: int = Field(default=24 * 3600, ge=1)
    max_body_bytes: int = Field(default=16 * 1024, ge=256)
    # POST /v1/interactions/batch: up to 500 items of at most ~600 bytes each.
    max_batch_body_bytes: int = Field(default=512 * 1024, ge=256)
    # Public write endpoints, requests per minute (a batch of interactions counts each item);
    # 0 turns a limit off. One address may hide many people (offices, mobile carriers), so
    # its limit is the higher one.
    rate_limit_ip_per_minute: int = Field(default=1200, ge=0)
    rate_limit_visitor_per_minute: int = Field(default=60, ge=0)
    # Delete raw impressions and interactions of versions retired this many days ago, after
    # keeping their per-image counts (None keeps everything).
    retention_days: float | None = Field(default=None, ge=0)
    # Failed admin sign-ins (form or bearer) per address per minute before 429.
    admin_failures_per_minute: int = Field(default=10, ge=1)
    cors_origins: list[str] = []
    # Proxies believed about who the client is. On connections from these addresses or networks
    # (comma-separated), uvicorn takes the client's address from X-Forwarded-For (the
    # per-address rate limit counts it) and the scheme from X-Forwarded-Proto; from anyone
    # else, the headers are ignored. "*" believes every peer: only where nothing but the proxy
    # reaches the API. None: uvicorn's default, $FORWARDED_ALLOW_IPS or else the loopback.
    # docker-compose.yml sets the nginx front's network (deploy/nginx/pirloop.conf).
    forwarded_allow_ips: str | None = None
    # Where clients reach this service, e.g. https://pirloop.example.com: image URLs and
    # redirects are built on it, never on the request's Host header. Empty: relative URLs.
    public_url: str = Field(default="", pattern=r"^(https?://[^\s/?#@]+(/[^\s?#]*)?)?$")
    # Impressions marked simulated need this key in X-Pirloop-Simulation-Key (the simulator
    # sends it); empty: no client may mark traffic simulated.
    simulation_key: str = Field(default="", repr=False)

    # Prometheus metrics (app/metrics.py, worker/metrics.py). False: nothing is collected and
    # the API has no /metrics. The API serves them at /metrics to the admin credential only.
    metrics_enabled: bool = True
    # A Celery worker serves its metrics over HTTP on this port (no credential: bind it where
    # only the scraper reaches it); None serves none. Jobs run in the API process (the
    # embedded default) are on the API's /metrics.
    worker_metrics_port: int | None = Field(default=None, ge=1, le=65535)
    worker_metrics_host: str = "127.0.0.1"

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'pirloop.db'}"

    @property
    def resolved_artifact_dir(self) -> Path:
        return self.artifact_dir or self.data_dir / "artifacts"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _proxy_addresses(cls, value: str | None) -> str | None:
        # uvicorn would take a host name as a literal that no peer address ever equals, so a
        # proxy named "web" would silently be trusted never.
        for item in (value or "").split(","):
            if item.strip() not in ("", "*"):
                try:
                    ipaddress.ip_network(item.strip(), strict=False)
                except ValueError:
                    raise ValueError(
                        "list the proxies as IP addresses or networks (10.0.0.5, 10.0.0.0/24), "
                        "comma-separated, or * for any"
                    ) from None
        return value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if len(self.rating_weights) != 5 or not all(0 <= w <= 1 for w in self.rating_weights):
            raise ValueError("PIRLOOP_RATING_WEIGHTS needs 5 weights in [0, 1], one per star")
        if self.environment == "development":
            return self
        for name in ("secret_key", "admin_token"):
            # The message names the variable and the rule, never the value or a part of it.
            if weak_secret(getattr(self, name)):
                raise ValueError(
                    f"PIRLOOP_{name.upper()} is a placeholder or too weak; when "
                    f"PIRLOOP_ENVIRONMENT={self.environment} set a random secret: {SECRET_RULE}"
                )
        return self


class SettingsInvalid(Exception):
    """A PIRLOOP_* value that cannot be used; the message names the variable and the fix."""


# Settings whose environment value is parsed as JSON (lists): how to write one.
JSON_SETTINGS = {
    "cors_origins": "'[\"https://www.example.com\"]' (a JSON list; '[]' for none)",
    "positive_kinds": "'[\"click\"]' (a JSON list)",
    "rating_weights": "'[0, 0.25, 0.5, 0.75, 1]' (a JSON list of 5 numbers)",
}


def _settings_problem(exc: SettingsError | ValidationError) -> str:
    if isinstance(exc, SettingsError):
        # pydantic-settings names the field it could not decode as JSON.
        field = str(exc).split('"')[1] if str(exc).count('"') >= 2 else ""
        example = JSON_SETTINGS.get(field, "a JSON value")
        return f"PIRLOOP_{field.upper()} is not valid JSON: write it as {example}"
    problems = []
    for error in exc.errors():
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["loc"]:
            field = str(error["loc"][0])
            name = f"PIRLOOP_{field.upper()}"
            if field in SECRET_SETTINGS:
                problems.append(f"{name} is not valid: {message}")
            else:
                problems.append(f"{name}={error.get('input')!r} is not valid: {message}")
        else:
            problems.append(message)
    return "; ".join(problems)


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment; SettingsInvalid (one line) when a value is bad."""
    try:
        return Settings()
    except (SettingsError, ValidationError) as exc:
        raise SettingsInvalid(_settings_problem(exc)) from None
