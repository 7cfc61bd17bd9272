"""The long fuzzing run: schemathesis' CLI (`st run`) over HTTP against `pirloop serve` on a fresh
PostgreSQL database, every phase and every check, the admin token supplied, as an outside
client would run it. tests/app/test_fuzz.py is the same run in process with a small budget.

    .venv/bin/python bench/fuzz.py [--examples 100] [--max-time 300]

Prints the `st` command, its request count and failures, and writes bench/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import BIN, SECRET, free_port, prepared_service, process, wait_http, write_result

# The fuzzer is one client address sending thousands of requests, many of them on purpose
# without the admin token (the ignored_auth check): the per-address limits are relaxed for it
# by settings, as a deployment would for its own test client.
RELAXED_LIMITS = {
    "PIRLOOP_RATE_LIMIT_IP_PER_MINUTE": "0",
    "PIRLOOP_RATE_LIMIT_VISITOR_PER_MINUTE": "0",
    "PIRLOOP_ADMIN_FAILURES_PER_MINUTE": "1000000000",
}


def st_command(url: str, *, examples: int, max_time: int, report: Path) -> list[str]:
    return [
        str(BIN / "st"),
        "run",
        f"{url}/openapi.json",
        "--checks",
        "all",
        "-H",
        f"Authorization: Bearer {SECRET}",
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(examples),
        "--max-time",
        str(max_time),
        "--seed",
        "20260101",
        "--no-color",
        "--report",
        "json",
        "--report-json-path",
        str(report),
    ]


def count_report(report: Path) -> dict[str, Any]:
    """Test cases (each one request, plus the extra requests some checks send), failures and
    phases from st's JSON run report."""
    data = json.loads(report.read_text())
    return {
        "test_cases": data["test_cases"]["generated"],
        "unique_failures": data["test_cases"]["unique_failures"],
        "failures": [f"{f['code']} {f['title']}: {f['operations']}" for f in data["failures"]],
        "errors": len(data["errors"]),
        "phases": {name: phase["status"] for name, phase in data["phases"].items()},
        "operations_tested": data["operations"]["tested"],
        "stop_reason": data["stop_reason"],
        "st_running_seconds": round(data["running_time"], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=100, help="examples per operation")
    parser.add_argument("--max-time", type=int, default=300, help="seconds for st at most")
    args = parser.parse_args()
    with prepared_service("pirloop-fuzz-") as service:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        env = {**service.env, **RELAXED_LIMITS}
        with process(
            [str(BIN / "pirloop"), "serve", "--port", str(port)],
            env=env,
            log=service.work / "serve.log",
        ):
            wait_http(f"{url}/healthz")
            report = service.work / "st-report.json"
            command = st_command(url, examples=args.examples, max_time=args.max_time, report=report)
            shown = shlex.join(command).replace(SECRET, "TOKEN")
            print(f"$ {shown}", flush=True)
            started = time.monotonic()
            # In the scratch directory: st keeps its cache (failures to replay) in the working
            # directory, and each run starts from a fresh database anyway.
            result = subprocess.run(
                command, cwd=service.work, capture_output=True, text=True, check=False
            )
            seconds = time.monotonic() - started
        print((result.stdout + result.stderr)[-6000:])
        summary = {
            "command": shown,
            "database": "postgresql",
            "examples_per_operation": args.examples,
            **(count_report(report) if report.exists() else {}),
            "exit_code": result.returncode,
            "passed": result.returncode == 0,
            "seconds": round(seconds, 1),
        }
        server_errors = (service.work / "serve.log").read_text(errors="replace").count("Traceback")
        summary["server_tracebacks"] = server_errors
    print(summary)
    print(
        f"st: {summary.get('test_cases')} test cases (requests) in {summary['seconds']} s, "
        f"{summary.get('unique_failures')} failures, phases {summary.get('phases')}"
    )
    print(f"wrote {write_result('fuzz', summary)}")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
