"""The rollout end to end on the deployment stack: PostgreSQL, Redis, a Celery worker with
beat, and the API, driven by `pirloop experiment --via-api` with drifting simulated traffic.

Two scenarios, each on a fresh database:
- better: users like blue all along; the tuned candidate should be promoted by the service's
  own sequential decision.
- worse: users dislike blue while the service gathers its training data (neg:color:blue),
  then like blue while the candidate is rolled out: the candidate, tuned away from blue, is
  worse and should be rejected, with the champion serving throughout.

    .venv/bin/python -m bench.rollout_e2e [--scenario better worse] [--images 200]

Writes bench/results/rollout_e2e.json with each run's decision, evidence and impressions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import (
    BIN,
    create_database,
    drop_database,
    free_port,
    machine,
    process,
    wait_http,
    write_result,
)

REDIS = "redis://127.0.0.1:6379/11"
SCENARIOS = {
    "better": {"objective": "color:blue", "learn_objective": None},
    "worse": {"objective": "color:blue", "learn_objective": "neg:color:blue"},
}


def stack_env(url: str, work: Path, args: argparse.Namespace) -> dict[str, str]:
    return {
        "PIRLOOP_ENVIRONMENT": "development",
        "PIRLOOP_DATABASE_URL": url,
        "PIRLOOP_REDIS_URL": REDIS,
        "PIRLOOP_DATA_DIR": str(work),
        "PIRLOOP_PRESET": args.preset,
        "PIRLOOP_BATCH_SIZE": str(args.images),
        "PIRLOOP_TARGET_IMPRESSIONS_PER_IMAGE": str(args.impressions),
        "PIRLOOP_USE_SIMULATED_TRAFFIC": "true",
        "PIRLOOP_SCHEDULER_INTERVAL_SECONDS": "2",
        "PIRLOOP_ROLLOUT_RAMP_SECONDS": "10",
        "PIRLOOP_RATE_LIMIT_IP_PER_MINUTE": "0",
        "PIRLOOP_TORCH_THREADS": "1",
    }


def run_scenario(name: str, args: argparse.Namespace) -> dict[str, Any]:
    work = Path(f"var/bench/rollout_e2e/{name}")
    work.mkdir(parents=True, exist_ok=True)
    url = create_database()
    env = stack_env(url, work, args)
    subprocess.run(["redis-cli", "-n", "11", "flushdb"], check=True, capture_output=True)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    started = time.monotonic()
    try:
        for command in (["db", "upgrade"], ["init"]):
            subprocess.run([str(BIN / "pirloop"), *command], env={**os.environ, **env}, check=True)
        with ExitStack() as stack:
            stack.enter_context(
                process(
                    [str(BIN / "pirloop"), "serve", "--port", str(port)],
                    env,
                    work / "api.log",
                )
            )
            stack.enter_context(
                process(
                    [str(BIN / "pirloop"), "worker", "--concurrency", "1", "--beat"],
                    env,
                    work / "worker.log",
                )
            )
            wait_http(f"{base}/readyz", timeout=120)
            report_path = work / "report.json"
            scenario = SCENARIOS[name]
            command = [
                str(BIN / "pirloop"),
                "experiment",
                "--via-api",
                base,
                "--objective",
                scenario["objective"],
                "--impressions",
                str(args.impressions),
                "--json",
                str(report_path),
                *[f"--drift={d}" for d in args.drift],
            ]
            if scenario["learn_objective"]:
                command += ["--learn-objective", scenario["learn_objective"]]
            print("$", " ".join(command), flush=True)
            subprocess.run(command, env={**os.environ, **env}, check=True)
        report = json.loads(report_path.read_text())
    finally:
        drop_database(url)
    round_ = report["rounds"][0]
    return {
        "scenario": name,
        "objective": report["objective"],
        "learn_objective": report["learn_objective"],
        "traffic": report["traffic"],
        "decision": round_["decision"],
        "true_delta": round_["true_delta"],
        "measured_delta_after_the_fact": round_["delta"],
        "estimated_delta": round_["estimated_delta"],
        "seconds": time.monotonic() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", nargs="+", default=list(SCENARIOS), choices=SCENARIOS)
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--impressions", type=int, default=50)
    parser.add_argument("--drift", nargs="*", default=["daily:0.3:120"])
    args = parser.parse_args()
    runs = []
    for name in args.scenario:
        result = run_scenario(name, args)
        decision = result["decision"]
        print(
            f"{name}: {decision['status']} ({decision['reason']}); champion/candidate "
            f"impressions {decision['champion_impressions']}/"
            f"{decision['candidate_impressions']}; true change {result['true_delta']:+.4f}; "
            f"{result['seconds']:.0f} s",
            flush=True,
        )
        runs.append(result)
    path = write_result(
        "rollout_e2e",
        {
            "date": datetime.now(UTC).isoformat(),
            "command": "python -m bench.rollout_e2e "
            + " ".join(
                [
                    f"--scenario {' '.join(args.scenario)}",
                    f"--images {args.images}",
                    f"--impressions {args.impressions}",
                    f"--drift {' '.join(args.drift)}",
                ]
            ),
            "machine": machine(),
            "runs": runs,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
