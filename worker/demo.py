"""`make demo`: the whole loop on the embedded defaults, in one command.

A fresh SQLite service serves the cpu-small generator; simulated users with a visible
objective drive its HTTP API; the service's own loop trains the estimator, tunes the
generator and serves version 2 as a candidate beside version 1; its sequential test decides;
the decision, its evidence and the change measured from the logged data are printed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console

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


def demo_env(plan: DemoPlan) -> dict[str, str]:
    env = {
        "PIRLOOP_ENVIRONMENT": "development",
        "PIRLOOP_DATA_DIR": str(plan.data_dir),
        "PIRLOOP_DATABASE_URL": "",
        "PIRLOOP_REDIS_URL": "",
        "PIRLOOP_PRESET": plan.preset,
        "PIRLOOP_BATCH_SIZE": str(plan.images),
        "PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE": str(plan.impressions),
        "PIRLOOP_USE_SIMULATED_TRAFFIC": "true",
        "PIRLOOP_SCHEDULER_INTERVAL_SECONDS": "2",
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
    with console.status("starting pirloop: migrating, drawing version 0's batch ..."):
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


def run_demo(plan: DemoPlan) -> dict[str, object]:
    started = time.monotonic()
    if plan.data_dir.exists():
        shutil.rmtree(plan.data_dir)  # a demo starts from an empty database every time
    plan.data_dir.mkdir(parents=True)
    url = f"http://127.0.0.1:{plan.port}"
    console.rule(f"pirloop demo: {plan.objective}, {plan.images} images x {plan.impressions}")
    server = start_server(plan, demo_env(plan))
    try:
        wait_ready(server, url, plan.data_dir / "server.log")
        console.print(f"serving the first version at {url} (log: {plan.data_dir / 'server.log'})")
        report = run_via_api(
            ViaApiPlan(
                url=url,
                objective=plan.objective,
                impressions_per_image=plan.impressions,
                users=plan.users,
                rate=plan.rate,
                json_path=str(plan.data_dir / "demo.json"),
                grid_path=str(plan.data_dir / "before_after.png"),
            )
        )
        print_loop_report(report, console)
        console.print(f"report JSON: {plan.data_dir / 'demo.json'}")
        console.print(
            f"dashboard: {url}/admin (sign in with PIRLOOP_ADMIN_TOKEN; development default "
            "'dev-admin-token')"
            + ("" if plan.keep_serving else "; the service stops now: ARGS=--keep-serving keeps it")
        )
        console.print(f"demo took {time.monotonic() - started:.0f} s")
        if plan.keep_serving:
            console.print(f"still serving at {url}; Ctrl-C stops it")
            server.wait()
        return report
    except KeyboardInterrupt:
        return {}
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait(timeout=30)
