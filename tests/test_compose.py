"""docker-compose.yml is checked here, since no container engine runs on this machine."""

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


def test_worker_reserves_a_gpu_and_beat_is_single() -> None:
    services = compose()["services"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia"
    assert "gpu" in devices[0]["capabilities"]
    assert "worker-cpu" in services
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    assert services["beat"]["deploy"]["replicas"] == 1


def test_api_image_has_no_torch() -> None:
    api = (ROOT / "app" / "Dockerfile").read_text()
    worker = (ROOT / "worker" / "Dockerfile").read_text()
    install = [line for line in api.splitlines() if line.startswith("RUN pip install")]
    assert install == ["RUN pip install --no-cache-dir ."]
    assert "'.[worker]'" in worker
