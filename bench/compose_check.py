"""Boot docker-compose.yml for real and put it through one learning cycle (`make compose-check`).

On a machine like the development one (Debian, no container registry reachable) it:
1. starts a Docker engine if none answers (installing Debian's docker.io when missing) and
   finds a compose (`docker compose`, else Debian's `docker-compose`);
2. makes the base images the compose file and Dockerfiles name (python:3.11-slim, postgres:16,
   redis:7, nginx:1.27): pulled when a registry answers, otherwise stand-ins built from Debian
   packages (debootstrap, `docker import`, then bench/compose/*.Dockerfile). The machine's CA
   bundle is copied into the stand-in at run time, never committed;
3. builds the project's images; pip reaches this machine's wheel mirror (when it has one) over
   a throwaway HTTP server on the Docker bridge, passed as build arguments;
4. brings the stack up; fetches a served image (and one display width of it) twice through
   the nginx front and checks that the second answer is a cache HIT with the API's bytes;
   drives simulated users at both API replicas until the learning cycle has run inside the
   containers and a new version serves; and prints each step's time;
5. always tears down what it made: containers, volumes, networks, the images it built (unless
   --keep-images), the HTTP server, and the engine if it started it.

Figures go to bench/results/compose_check.json; docs/BENCHMARKS.md quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.common import BIN, ROOT, write_result

COMPOSE_FILE = ROOT / "docker-compose.yml"
STANDIN_DIR = ROOT / "bench" / "compose"
# Base image tag -> the stand-in Dockerfile that replaces it when no registry answers.
BASE_IMAGES = {
    "python:3.11-slim": "python.Dockerfile",
    "postgres:16": "postgres.Dockerfile",
    "redis:7": "redis.Dockerfile",
    "nginx:1.27": "nginx.Dockerfile",
    "edoburu/pgbouncer:v1.25.2-p0": "pgbouncer.Dockerfile",
}
PROJECT_IMAGES = {
    "pirloop-api:latest": "app/Dockerfile",
    "pirloop-worker:latest": "worker/Dockerfile",
}
# What the stand-ins need from Debian: one root filesystem serves them all.
DEBIAN_PACKAGES = (
    "ca-certificates,python3,python3-venv,python3-pip,postgresql-15,redis-server,nginx-light,curl,"
    "pgbouncer"
)
# Named after its packages: a base kept by an earlier run (--keep-images) that lacks one is
# never reused for a stand-in that needs it.
STANDIN_BASE = (
    f"pirloop-standin/debian:bookworm-{hashlib.sha256(DEBIAN_PACKAGES.encode()).hexdigest()[:8]}"
)
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# This machine's wheels (torch and its CUDA libraries): a find-links page, so pip prefers them
# over downloading the same files again from PyPI.
LOCAL_WHEELS = Path("/opt/pypi-more/files")
API_PORTS = (8000, 8001)
# The nginx front (docker-compose.yml's web service) and the paths it must serve from its
# cache: an image, and one display width of it, which the cache keeps apart.
FRONT_PORT = 8080
FRONT_WIDTH = 256
PROJECT = "pirloopcheck"


@dataclass
class Timings:
    steps: dict[str, float] = field(default_factory=dict)

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[None]:
        print(f"[compose-check] {name} ...", flush=True)
        start = time.monotonic()
        try:
            yield
        finally:
            self.steps[name] = round(time.monotonic() - start, 1)
            print(f"[compose-check] {name}: {self.steps[name]:.1f} s", flush=True)


def run(cmd: list[str], *, check: bool = True, quiet: bool = False, **kw: Any) -> str:
    """Run a command; its output is returned (and shown unless quiet)."""
    result = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if not quiet and result.stdout.strip():
        print(result.stdout.rstrip()[-4000:], flush=True)
    if check and result.returncode != 0:
        raise SystemExit(
            f"compose-check: `{' '.join(cmd[:4])} ...` failed ({result.returncode}):\n"
            f"{(result.stderr or result.stdout)[-4000:]}"
        )
    return result.stdout


def answers(cmd: list[str]) -> bool:
    return subprocess.run(cmd, capture_output=True).returncode == 0


def apt_install(*packages: str) -> None:
    if os.geteuid() != 0:
        raise SystemExit(f"compose-check: install {' '.join(packages)} (needs root) and rerun")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "install", "-y", "-q", *packages], env=env, quiet=True)


@contextlib.contextmanager
def docker_engine(work: Path) -> Iterator[bool]:
    """A Docker engine that answers; yields whether this run started it (and stops it then)."""
    if answers(["docker", "info"]):
        yield False
        return
    if not shutil.which("dockerd"):
        apt_install("docker.io")
    log = (work / "dockerd.log").open("w")
    daemon = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not answers(["docker", "info"]):
            if daemon.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"compose-check: dockerd did not start; see {log.name}")
            time.sleep(1)
        yield True
    finally:
        daemon.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            daemon.wait(30)
        if daemon.poll() is None:
            daemon.kill()


def compose_command() -> list[str]:
    if answers(["docker", "compose", "version"]):
        return ["docker", "compose"]
    if not shutil.which("docker-compose"):
        apt_install("docker-compose")
    # Compose v1 applies deploy.replicas only in compatibility mode.
    return ["docker-compose", "--compatibility"]


def image_exists(tag: str) -> bool:
    return answers(["docker", "image", "inspect", tag])


def registry_pull(tag: str) -> bool:
    try:
        return (
            subprocess.run(["docker", "pull", tag], capture_output=True, timeout=60).returncode == 0
        )
    except subprocess.TimeoutExpired:
        return False


def build_standin_base(work: Path) -> None:
    """Debian bookworm from its packages, with this machine's CA bundle, as a Docker image."""
    if not shutil.which("debootstrap"):
        apt_install("debootstrap")
    rootfs = work / "rootfs"
    run(
        [
            "debootstrap",
            "--variant=minbase",
            f"--include={DEBIAN_PACKAGES}",
            "bookworm",
            str(rootfs),
            DEBIAN_MIRROR,
        ],
        quiet=True,
    )
    # HTTPS from inside the containers goes through whatever this machine trusts.
    shutil.copyfile(HOST_CA_BUNDLE, rootfs / "etc/ssl/certs/ca-certificates.crt")
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    run(["docker", "import", "-", STANDIN_BASE], stdin=tar.stdout, quiet=True)
    tar.wait()
    shutil.rmtree(rootfs, ignore_errors=True)


def base_images(work: Path, made: list[str]) -> dict[str, str]:
    """Each base image present: 'present', 'pulled' or 'stand-in'."""
    how: dict[str, str] = {}
    for tag, dockerfile in BASE_IMAGES.items():
        if image_exists(tag):
            how[tag] = "present"
        elif registry_pull(tag):
            how[tag] = "pulled"
            made.append(tag)
        else:
            if not image_exists(STANDIN_BASE):
                build_standin_base(work)
                made.append(STANDIN_BASE)
            docker_build(
                tag, STANDIN_DIR / dockerfile, STANDIN_DIR, ["--build-arg", f"BASE={STANDIN_BASE}"]
            )
            how[tag] = "stand-in"
            made.append(tag)
    return how


def bridge_address() -> str:
    """The host's address on Docker's default bridge, which build containers reach."""
    out = run(
        [
            "docker",
            "network",
            "inspect",
            "bridge",
            "--format",
            "{{range .IPAM.Config}}{{.Gateway}} {{end}}",
        ],
        quiet=True,
    ).split()
    if out:
        return out[0]
    # Some engines leave the default bridge's IPAM gateway empty (seen with Docker 28 here):
    # the bridge interface's own IPv4 address is the same gateway.
    interface = run(["ip", "-4", "-o", "addr", "show", "docker0"], quiet=True).split()
    if "inet" not in interface:
        raise RuntimeError("no address found for Docker's bridge (docker0)")
    return interface[interface.index("inet") + 1].split("/")[0]


@contextlib.contextmanager
def wheel_mirror() -> Iterator[list[str]]:
    """Build arguments that point pip at this machine's wheels, if it has any."""
    if not LOCAL_WHEELS.is_dir():
        yield []
        return
    host = bridge_address()
    port = 18080
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(port),
            "--bind",
            host,
            "--directory",
            str(LOCAL_WHEELS),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(1)
        yield [
            "--build-arg",
            f"PIP_FIND_LINKS=http://{host}:{port}/",
            "--build-arg",
            f"PIP_TRUSTED_HOST={host}",
        ]
    finally:
        server.terminate()
        server.wait(10)


def docker_build(tag: str, dockerfile: Path, context: Path, build_args: Sequence[str] = ()) -> None:
    run(["docker", "build", "-q", "-t", tag, "-f", str(dockerfile), *build_args, str(context)],
        quiet=True)  # fmt: skip


def build_project_images(build_args: list[str], made: list[str]) -> None:
    for tag, dockerfile in PROJECT_IMAGES.items():
        docker_build(tag, ROOT / dockerfile, ROOT, build_args)
        made.append(tag)


def image_sizes() -> dict[str, float]:
    sizes = {}
    for tag in [*BASE_IMAGES, *PROJECT_IMAGES]:
        out = run(
            ["docker", "image", "inspect", tag, "--format", "{{.Size}}"], check=False, quiet=True
        )
        if out.strip().isdigit():
            sizes[tag] = round(int(out) / 1e9, 2)
    return sizes


def write_override(work: Path, args: argparse.Namespace, simulation_key: str) -> Path:
    """Settings for a quick cycle: small batches, simulated users counted for learning."""
    env = {
        "PIRLOOP_BATCH_SIZE": str(args.batch_size),
        "PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE": str(args.impressions_per_image),
        "PIRLOOP_USE_SIMULATED_TRAFFIC": "true",
        "PIRLOOP_SIMULATION_KEY": simulation_key,
        # The simulated users come from one address: lift the per-address limits.
        "PIRLOOP_RATE_LIMIT_IP_PER_MINUTE": "0",
        "PIRLOOP_RATE_LIMIT_VISITOR_PER_MINUTE": "0",
    }
    services = {name: {"environment": env} for name in ("migrate", "api", "worker", "beat")}
    path = work / "override.json"  # JSON is YAML: no yaml writer needed
    path.write_text(json.dumps({"services": services}))
    return path


def wait_healthy(ports: tuple[int, ...], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = set(ports)
    while waiting:
        for port in list(waiting):
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3).status_code == 200:
                    waiting.discard(port)
        if waiting and time.monotonic() > deadline:
            raise SystemExit(
                f"compose-check: API on {sorted(waiting)} not ready in {timeout:.0f} s"
            )
        time.sleep(2)


def check_front_cache() -> dict[str, Any]:
    """One served image, and one display width of it, each fetched twice through the front:
    the second answer must come from nginx's cache (X-Cache-Status: HIT), and both must carry
    the bytes the API itself sends."""
    api = f"http://127.0.0.1:{API_PORTS[0]}"
    front = f"http://127.0.0.1:{FRONT_PORT}"
    first_version = versions(API_PORTS[0])[0]["id"]
    images = httpx.get(f"{api}/v1/versions/{first_version}/images", timeout=10)
    images.raise_for_status()
    image_id = images.json()[0]["image_id"]
    checked: dict[str, Any] = {}
    for path in (f"/v1/images/{image_id}", f"/v1/images/{image_id}?w={FRONT_WIDTH}"):
        direct = httpx.get(api + path, timeout=30)
        direct.raise_for_status()
        answers = [httpx.get(front + path, timeout=30) for _ in range(2)]
        statuses = [answer.headers.get("x-cache-status") for answer in answers]
        same = [answer.content == direct.content for answer in answers]
        print(
            f"[compose-check] front :{FRONT_PORT} GET {path}: {' then '.join(map(str, statuses))}"
            f", {len(direct.content)} bytes, "
            f"{'identical to' if all(same) else 'DIFFERENT from'} the API's",
            flush=True,
        )
        if statuses[1] != "HIT" or not all(same):
            raise SystemExit(
                f"compose-check: the front did not serve {path} from its cache with the API's "
                f"bytes (X-Cache-Status {statuses}, identical {same})"
            )
        checked[path] = {"x_cache_status": statuses, "bytes": len(direct.content)}
    return checked


def versions(port: int) -> list[dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}/v1/versions", timeout=10)
    response.raise_for_status()
    body = response.json()
    return list(body)


def serving(port: int, admin_token: str) -> dict[str, Any]:
    response = httpx.get(
        f"http://127.0.0.1:{port}/v1/admin/serving",
        timeout=10,
        headers={"Authorization": f"Bearer {admin_token}"},
    )
    response.raise_for_status()
    return dict(response.json())


def drive_until_new_version(
    args: argparse.Namespace, simulation_key: str, admin_token: str
) -> dict[str, Any]:
    """Simulated users at both replicas until a version made in the containers serves."""
    first = {v["id"] for v in versions(API_PORTS[0])}
    env = {**os.environ, "PIRLOOP_SIMULATION_KEY": simulation_key}
    users = [
        subprocess.Popen(
            [
                str(BIN / "pirloop"),
                "simulate",
                "--url",
                f"http://127.0.0.1:{port}",
                "--objective",
                "color:blue",
                "--users",
                "8",
                # Paced, not flat out: the learning cycle shares these cores with the stack.
                "--rate",
                str(args.rate),
                "--duration",
                str(args.timeout),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for port in API_PORTS
    ]
    start = time.monotonic()
    try:
        while time.monotonic() - start < args.timeout:
            time.sleep(10)
            state = serving(API_PORTS[0], admin_token)
            arms = state.get("arms", [])
            new = [arm for arm in arms if arm.get("version_id") not in first]
            cycle = state.get("cycle") or {}
            progress = (
                f"{cycle['status']} {cycle.get('phase') or ''} {cycle.get('step') or 0}/"
                f"{cycle.get('total') or '?'}"
                if cycle
                else "-"
            )
            print(
                f"[compose-check] {time.monotonic() - start:5.0f} s: arms "
                f"{[(a['version_id'], a['role']) for a in arms]}, cycle {progress}",
                flush=True,
            )
            if new:
                return {
                    "seconds": round(time.monotonic() - start, 1),
                    "serving": state,
                    "versions": versions(API_PORTS[1]),
                }
        raise SystemExit(f"compose-check: no new version served within {args.timeout} s")
    finally:
        for user in users:
            user.terminate()
        for user in users:
            with contextlib.suppress(subprocess.TimeoutExpired):
                user.wait(30)


def boot_and_cycle(
    args: argparse.Namespace,
    compose: list[str],
    env: dict[str, str],
    simulation_key: str,
    timings: Timings,
    work: Path,
) -> dict[str, Any]:
    """Images, stack, traffic until a new version serves; the stack is always torn down."""
    result: dict[str, Any] = {}
    made: list[str] = []
    try:
        with timings.step("base images"):
            result["base_images"] = base_images(work, made)
        with timings.step("project images"), wheel_mirror() as build_args:
            build_project_images(build_args, made)
        result["image_sizes_gb"] = image_sizes()
        with timings.step("stack up (migrate, API replicas healthy)"):
            run([*compose, "up", "-d", "--no-build"], env=env, quiet=True)
            wait_healthy(API_PORTS, timeout=600)
        result["containers"] = run([*compose, "ps"], env=env, quiet=True)
        print(result["containers"], flush=True)
        with timings.step("front caches images"):
            wait_healthy((FRONT_PORT,), timeout=120)
            result["front"] = check_front_cache()
        with timings.step("traffic until a new version serves"):
            result["cycle"] = drive_until_new_version(
                args, simulation_key, env["PIRLOOP_ADMIN_TOKEN"]
            )
    except BaseException:
        print(run([*compose, "logs", "--tail", "60"], env=env, check=False, quiet=True)[-8000:])
        raise
    finally:
        with timings.step("tear down"):
            run([*compose, "down", "-v", "--remove-orphans"], env=env, check=False, quiet=True)
            if not args.keep_images:
                for tag in reversed(made):
                    run(["docker", "image", "rm", "-f", tag], check=False, quiet=True)
                run(["docker", "image", "prune", "-f"], check=False, quiet=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--impressions-per-image", type=int, default=10)
    parser.add_argument(
        "--rate", type=float, default=20, help="impressions per second at each API replica"
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds of traffic at most")
    parser.add_argument(
        "--keep-images",
        action="store_true",
        help="keep the images it built (a rerun then skips the builds)",
    )
    args = parser.parse_args(argv)

    timings = Timings()
    simulation_key = secrets.token_urlsafe(32)
    env = {
        **os.environ,
        "PIRLOOP_SECRET_KEY": secrets.token_urlsafe(32),
        "PIRLOOP_ADMIN_TOKEN": secrets.token_urlsafe(32),
    }
    with (
        tempfile.TemporaryDirectory(prefix="pirloop-compose-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp)
        with timings.step("engine"):
            started_engine = stack.enter_context(docker_engine(work))
        compose = [
            *compose_command(),
            "-p",
            PROJECT,
            "-f",
            str(COMPOSE_FILE),
            "-f",
            str(write_override(work, args, simulation_key)),
        ]
        result = boot_and_cycle(args, compose, env, simulation_key, timings, work)
    result["engine_started_here"] = started_engine
    result["timings_s"] = timings.steps
    path = write_result("compose_check", result)
    print(
        json.dumps(
            {k: result[k] for k in ("timings_s", "image_sizes_gb", "base_images", "front")},
            indent=2,
        )
    )
    print(f"[compose-check] figures in {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
