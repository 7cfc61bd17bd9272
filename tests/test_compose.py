"""docker-compose.yml's shape. bench/compose_check.py boots it for real (opt-in: minutes, GBs)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_names_every_service() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "api", "worker", "beat", "migrate"} <= set(services)
    for name in ("postgres", "redis", "api", "worker"):
        assert "healthcheck" in services[name], name
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]


def test_api_and_worker_share_no_filesystem() -> None:
    services = compose()["services"]
    for name in ("api", "worker", "beat", "migrate"):
        assert not services[name].get("volumes"), f"{name} mounts a volume"
        env = services[name]["environment"]
        assert env["PIRLOOP_ARTIFACT_STORE"] == "database"
        assert env["PIRLOOP_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["PIRLOOP_REDIS_URL"].startswith("redis://")


def test_migrations_run_once_before_the_api() -> None:
    services = compose()["services"]
    assert "pirloop db upgrade" in " ".join(services["migrate"]["command"])
    assert services["migrate"]["restart"] == "no"
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["api"]["deploy"]["replicas"] >= 2


def test_the_default_stack_starts_without_a_gpu_and_the_override_adds_one() -> None:
    services = compose()["services"]
    assert "deploy" not in services["worker"], "a GPU reservation stops CPU-only hosts"
    assert not any(service.get("profiles") for service in services.values())
    gpu = yaml.safe_load((ROOT / "docker-compose.gpu.yml").read_text())["services"]
    devices = gpu["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert services["beat"]["deploy"]["replicas"] == 1


def test_api_image_has_no_torch() -> None:
    api = (ROOT / "app" / "Dockerfile").read_text()
    worker = (ROOT / "worker" / "Dockerfile").read_text()
    install = [line for line in api.splitlines() if line.startswith("RUN pip install")]
    # The mirror arguments are optional: unset, the builds use PyPI.
    assert "ARG PIP_FIND_LINKS" in api
    assert "ARG PIP_FIND_LINKS" in worker
    assert install == ["RUN pip install --no-cache-dir ."]
    assert "'.[worker]'" in worker
