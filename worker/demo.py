"""`make demo`: the whole loop on the embedded defaults, in one command.

A fresh SQLite service serves the cpu-small generator; simulated users with a visible
objective drive its HTTP API; the service's own loop trains the estimator, tunes the
generator and serves version 2 as a candidate beside version 1; its sequential test decides;
the decision, its evidence and the change measured from the logged data are printed.
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from rich.console import Console

from app.errors import ServiceUnready
from app.report import print_loop_report
from worker.sim.via_api import ViaApiPlan, run_via_api

console = Console()


@dataclass
class DemoPlan:
    objective: str = "color:blue"
    images: int = 200
    impressions: int = 50
    port: int = 8000
    data_dir: Path = Path("var/demo")
    keep_serving: bool = False
    users: int = 8
    rate: float = 0.0
    tuning_steps: int | None = None
    preset: str = "cpu-small"
    # The demo's own PIRLOOP_SIMULATION_KEY: its service takes its simulated users' traffic.
    simulation_key: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)


# How often the demo service's scheduler looks (PIRLOOP_SCHEDULER_INTERVAL_SECONDS).
SCHEDULER_SECONDS = 2


class PortInUse(ServiceUnready):
    """The demo's port is taken: the demo refuses before it touches any data."""


def check_port_free(port: int) -> None:
    """PortInUse unless 127.0.0.1:port can be bound now. Checked before the old demo's data
    is deleted, since the process holding the port may be a demo serving that data."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            if exc.errno not in (errno.EADDRINUSE, errno.EACCES):
                raise
            raise PortInUse(
                f"port {port} is in use (by another `pirloop demo --keep-serving` or "
                f"service?): stop it, or run the demo on another port: pirloop demo --port "
                f'{port + 1} (make demo ARGS="--port {port + 1}")'
            ) from None


def kept_service_note(plan: DemoPlan, url: str, champion: int | None) -> str:
    """What a service kept by --keep-serving does next, so that a newer version on the
    dashboard is no surprise."""
    now = f"version {champion}" if champion is not None else "the champion"
    return (
        f"The kept service goes on learning by itself: every {SCHEDULER_SECONDS} s its "
        f"scheduler starts a learning cycle once {now} has {plan.impressions} counted "
        "impressions per image (simulated ones count here; the demo's traffic may already "
        "be enough), so a newer version soon shows on the dashboard as a candidate, and "
        "waits there for traffic to decide it. Drive it with: "
        f"PIRLOOP_SIMULATION_KEY={plan.simulation_key} pirloop simulate --url "
        f"{url} --objective {plan.objective} --duration 300. Keep {now}: press Pause "
        "serving on the dashboard, or stop the service (Ctrl-C)."
    )


def _serving_version(url: str) -> int | None:
    try:
        versions = httpx.get(f"{url}/v1/versions", timeout=5).raise_for_status().json()
    except (httpx.HTTPError, ValueError):
        return None
    serving = [v["id"] for v in versions if v.get("status") == "serving"]
    return int(serving[0]) if serving else None


def demo_env(plan: DemoPlan) -> dict[str, str]:
    env = {
        "PIRLOOP_ENVIRONMENT": "development",
        # The demo's simulated users mark their traffic simulated with this key.
        "PIRLOOP_SIMULATION_KEY": plan.simulation_key,
        "PIRLOOP_DATA_DIR": str(plan.data_dir),
        "PIRLOOP_DATABASE_URL": "",
        "PIRLOOP_REDIS_URL": "",
        "PIRLOOP_PRESET": plan.preset,
        "PIRLOOP_BATCH_SIZE": str(plan.images),
        "PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE": str(plan.impressions),
        "PIRLOOP_USE_SIMULATED_TRAFFIC": "true",
        "PIRLOOP_SCHEDULER_INTERVAL_SECONDS": str(SCHEDULER_SECONDS),
        # Every simulated user comes from 127.0.0.1; the per-address limit would stop them.
        "PIRLOOP_RATE_LIMIT_IP_PER_MINUTE": "0",
        # A short ramp: the demo's candidate is at its full share within seconds.
        "PIRLOOP_ROLLOUT_RAMP_SECONDS": "5",
    }
    if plan.tuning_steps is not None:
        env["PIRLOOP_TUNING_STEPS"] = str(plan.tuning_steps)
    return env


def start_server(plan: DemoPlan, env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = (plan.data_dir / "server.log").open("wb")
    pirloop = Path(sys.executable).parent / "pirloop"
    return subprocess.Popen(
        [str(pirloop), "serve", "--host", "127.0.0.1", "--port", str(plan.port)],
        env={**os.environ, **env},
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_ready(server: subprocess.Popen[bytes], url: str, log_path: Path) -> None:
    with console.status("starting pirloop: migrating, drawing the first version's batch (v1) ..."):
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if server.poll() is not None:
                raise RuntimeError(f"the server stopped; see {log_path}")
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
    raise RuntimeError(f"the server did not become ready; see {log_path}")


def run_cycle(plan: DemoPlan, url: str) -> dict[str, object]:
    """One learning cycle of the service at `url`, driven through its HTTP API by the plan's
    simulated users; its report is printed and kept in the plan's data_dir (demo.json,
    before_after.png). `make screenshots` drives its service the same way."""
    report = run_via_api(
        ViaApiPlan(
            url=url,
            objective=plan.objective,
            impressions_per_image=plan.impressions,
            users=plan.users,
            rate=plan.rate,
            json_path=str(plan.data_dir / "demo.json"),
            grid_path=str(plan.data_dir / "before_after.png"),
            simulation_key=plan.simulation_key,
        )
    )
    print_loop_report(report, console)
    return report


def run_demo(plan: DemoPlan) -> dict[str, object]:
    started = time.monotonic()
    check_port_free(plan.port)
    if plan.data_dir.exists():
        shutil.rmtree(plan.data_dir)  # a demo starts from an empty database every time
    plan.data_dir.mkdir(parents=True)
    url = f"http://127.0.0.1:{plan.port}"
    console.rule(f"pirloop demo: {plan.objective}, {plan.images} images x {plan.impressions}")
    server = start_server(plan, demo_env(plan))
    try:
        wait_ready(server, url, plan.data_dir / "server.log")
        # Another process may have taken the port since the check: then ours failed to bind
        # and the answer came from that one.
        time.sleep(0.5)
        if server.poll() is not None:
            raise PortInUse(
                f"the demo service stopped at start (port {plan.port} taken?); see "
                f"{plan.data_dir / 'server.log'}"
            )
        console.print(f"serving the first version at {url} (log: {plan.data_dir / 'server.log'})")
        report = run_cycle(plan, url)
        console.print(f"report JSON: {plan.data_dir / 'demo.json'}")
        console.print(
            f"dashboard: {url}/admin (sign in with PIRLOOP_ADMIN_TOKEN; development default "
            "'dev-admin-token')"
            + ("" if plan.keep_serving else "; the service stops now: ARGS=--keep-serving keeps it")
        )
        console.print(f"demo took {time.monotonic() - started:.0f} s")
        if plan.keep_serving:
            console.print(kept_service_note(plan, url, _serving_version(url)))
            console.print(f"still serving at {url}; Ctrl-C stops it")
            server.wait()
        return report
    except KeyboardInterrupt:
        return {}
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
