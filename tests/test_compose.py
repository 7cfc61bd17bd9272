"""docker-compose.yml's shape. bench/compose_check.py boots it for real (opt-in: minutes, GBs)."""

from __future__ import annotations

import configparser
import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from sqlalchemy.engine import make_url

from app.database import make_engine
from app.settings import Settings
from bench.common import free_port
from bench.compose_check import BASE_IMAGES, STANDIN_DIR
from bench.serving import FRONT_CONFIG, front_config

ROOT = Path(__file__).resolve().parent.parent


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def front_directives() -> str:
    """deploy/nginx/pirloop.conf without its comments."""
    return re.sub(r"#[^\n]*", "", FRONT_CONFIG.read_text())


def image_location() -> str:
    found = re.search(r"location /v1/images/ \{(.*?)\}", front_directives(), re.S)
    assert found, "the front has a location for /v1/images/"
    return found.group(1)


def test_compose_names_every_service() -> None:
    services = compose()["services"]
    assert {"postgres", "redis", "api", "worker", "beat", "migrate"} <= set(services)
    for name in ("postgres", "redis", "api", "worker", "web"):
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


def pgbouncer_ini() -> configparser.ConfigParser:
    ini = configparser.ConfigParser()
    ini.read_string((ROOT / "deploy" / "pgbouncer" / "pgbouncer.ini").read_text())
    return ini


def test_the_api_reaches_postgres_through_pgbouncer_in_transaction_mode() -> None:
    services = compose()["services"]
    bouncer, api = services["pgbouncer"], services["api"]
    assert "healthcheck" in bouncer
    assert bouncer["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert api["depends_on"]["pgbouncer"]["condition"] == "service_healthy"
    for name in ("pgbouncer.ini", "userlist.txt"):
        assert f"./deploy/pgbouncer/{name}:/etc/pgbouncer/{name}:ro" in bouncer["volumes"]
    url = make_url(api["environment"]["PIRLOOP_DATABASE_URL"])
    assert url.host == "pgbouncer"
    # psycopg prepares nothing behind it, so any PgBouncer version serves (compose-check's
    # stand-in is Debian's 1.18, which has no max_prepared_statements).
    assert api["environment"]["PIRLOOP_DATABASE_POOLER"] == "transaction"
    ini = pgbouncer_ini()
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    assert "max_prepared_statements" not in ini["pgbouncer"]
    assert ini["databases"][url.database] == f"host=postgres port=5432 dbname={url.database}"
    # Migrations (DDL) and the workers' long transactions go straight to PostgreSQL.
    for name in ("migrate", "worker", "beat"):
        env = services[name]["environment"]
        assert make_url(env["PIRLOOP_DATABASE_URL"]).host == "postgres", name
        assert env.get("PIRLOOP_DATABASE_POOLER", "none") == "none", name


def test_pgbouncer_admits_every_api_connection_and_knows_its_password() -> None:
    services = compose()["services"]
    api = services["api"]
    command = api["command"]
    processes = api["deploy"]["replicas"] * int(command[command.index("--workers") + 1])
    url = make_url(api["environment"]["PIRLOOP_DATABASE_URL"])
    pool = make_engine(url.render_as_string(hide_password=False)).pool
    # Each process: its pool with overflow, and the group commit writer's own connection.
    per_process = pool.size() + pool._max_overflow + 1  # type: ignore[attr-defined]
    settings = pgbouncer_ini()["pgbouncer"]
    # Room for four times the API processes compose starts (more replicas, other machines).
    assert int(settings["max_client_conn"]) >= 4 * processes * per_process
    # The server side stays within half of PostgreSQL's default max_connections (100).
    assert int(settings["default_pool_size"]) + int(settings["reserve_pool_size"]) <= 50
    userlist = (ROOT / "deploy" / "pgbouncer" / "userlist.txt").read_text()
    assert f'"{url.username}" "{url.password}"' in userlist.splitlines()
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == url.password


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


def test_the_front_proxies_to_the_api_and_keeps_its_cache_in_a_volume() -> None:
    stack = compose()
    web = stack["services"]["web"]
    assert web["image"].startswith("nginx:")
    mount = f"./{FRONT_CONFIG.relative_to(ROOT)}:/etc/nginx/conf.d/default.conf:ro"
    assert mount in web["volumes"]
    [cache] = [volume.split(":")[0] for volume in web["volumes"] if volume.endswith("/pirloop")]
    assert cache in stack["volumes"], "the cache is a named volume"
    assert "/var/cache/nginx/pirloop " in front_directives()
    assert web["depends_on"]["api"]["condition"] == "service_healthy"
    assert "8080:80" in web["ports"]
    directives = front_directives()
    assert re.search(r"upstream pirloop_api \{[^}]*server api:8000;[^}]*keepalive \d+;", directives)
    assert re.search(r"location / \{\s*proxy_pass http://pirloop_api;\s*\}", directives)


def test_the_front_caches_images_only_as_the_api_allows() -> None:
    images = image_location()
    assert "proxy_cache pirloop_images;" in images
    # The query is in the key: each ?w= display width is its own entry.
    assert re.search(r"proxy_cache_key [^;]*\$request_uri", images)
    assert "proxy_cache_valid 200 30d;" in images
    assert "proxy_cache_lock on;" in images
    assert "proxy_cache_use_stale error timeout updating;" in images
    assert "X-Cache-Status $upstream_cache_status" in images
    directives = front_directives()
    assert directives.count("proxy_cache pirloop_images;") == 1, "nothing but images is cached"
    # Ignoring Cache-Control, Set-Cookie or Vary would cache what the API marks uncacheable.
    assert "proxy_ignore_headers" not in directives
    assert not re.search(r"proxy_cache_valid[^;]*\b(any|404|5\d\d)\b", directives)


def test_the_front_lets_through_every_body_the_api_accepts() -> None:
    directives = front_directives()
    size = re.search(r"client_max_body_size (\d+)k;", directives)
    assert size
    limit = int(size.group(1)) * 1024
    defaults = Settings.model_fields
    assert limit == defaults["max_batch_body_bytes"].default >= defaults["max_body_bytes"].default
    # Over it, the API's JSON error with the API's message, not nginx's page.
    assert f"request body is larger than {limit} bytes" in directives


def test_the_api_believes_x_forwarded_for_from_the_front_network_only() -> None:
    stack = compose()
    services = stack["services"]
    subnet = stack["networks"]["front"]["ipam"]["config"][0]["subnet"]
    assert services["api"]["environment"]["PIRLOOP_FORWARDED_ALLOW_IPS"] == subnet
    assert services["web"]["networks"] == ["front"]
    assert set(services["api"]["networks"]) == {"default", "front"}
    default = re.fullmatch(r"\$\{PIRLOOP_FRONT_SUBNET:-([^}]+)\}", subnet)
    assert default
    assert ipaddress.ip_network(default.group(1)).is_private
    assert Settings(forwarded_allow_ips=default.group(1)).forwarded_allow_ips == default.group(1)
    # The front overwrites the header: a client cannot choose the address it is counted as.
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in front_directives()


def test_a_forwarded_allow_ips_that_could_never_match_is_refused() -> None:
    with pytest.raises(ValueError, match="IP addresses or networks"):
        Settings(forwarded_allow_ips="web")
    assert Settings(forwarded_allow_ips="127.0.0.1, 10.0.0.0/24").forwarded_allow_ips


def test_compose_check_has_a_stand_in_for_every_public_image() -> None:
    public = {
        service["image"]
        for service in compose()["services"].values()
        if "image" in service and not service["image"].startswith("pirloop-")
    }
    assert "nginx:1.27" in public
    assert public <= set(BASE_IMAGES)
    for dockerfile in BASE_IMAGES.values():
        assert (STANDIN_DIR / dockerfile).is_file(), dockerfile


@pytest.mark.skipif(
    not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()), reason="nginx missing"
)
def test_the_front_config_is_valid_nginx_as_the_benchmark_runs_it(tmp_path: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    config = front_config(tmp_path, port=free_port(), api_port=free_port(), workers=1)
    checked = subprocess.run(
        [nginx, "-t", "-e", str(tmp_path / "error.log"), "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
