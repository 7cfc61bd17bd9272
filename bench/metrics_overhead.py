"""Metrics overhead: the impression endpoint (with its database write) with Prometheus metrics
on and off, side by side in the same run: the same database, uvicorn settings and wrk load,
the sides taking turns. The metrics side runs as `pirloop serve --workers N` does, in
multiprocess mode (PROMETHEUS_MULTIPROC_DIR), and is scraped at the end to check that every
request was counted. Then the CPU time of recording one request, in memory and in
multiprocess mode, timed apart from any load (wrk's figures on a shared machine are noisy).

    .venv/bin/python -m bench.metrics_overhead [--seconds 15] [--rounds 1] [--connections 64]

Prints requests/s and p99 of both sides and their ratios; writes
bench/results/metrics_overhead.json. Needs PostgreSQL on 127.0.0.1 and wrk.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from bench.common import (
    BIN,
    ROOT,
    SECRET,
    free_port,
    prepared_service,
    process,
    uvicorn_flags,
    wait_http,
    write_result,
    wrk,
)

SIDES = ("metrics_off", "metrics_on")
POST = (
    'wrk.method = "POST"\n'
    'wrk.body = \'{"placement": "background"}\'\n'
    'wrk.headers["Content-Type"] = "application/json"\n'
)


def counted_impressions(base: str) -> tuple[float, float]:
    """Impressions answered 201 as the metrics side counts them, and the scrape's seconds."""
    started = time.perf_counter()
    answer = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {SECRET}"}, timeout=30)
    seconds = time.perf_counter() - started
    answer.raise_for_status()
    total = sum(
        sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
        if sample.name == "pirloop_http_requests_total"
        and sample.labels == {"method": "POST", "route": "/v1/impressions", "status": "201"}
    )
    return total, seconds


# One request's recording, timed in a process of its own (prometheus_client picks in-memory or
# multiprocess values when first imported): the counter and histogram of the middleware, as
# for a routed request, and a one-write group commit. CPU time, so that other load on a shared
# machine does not count.
RECORDING = """
import sys, time, types
from app.metrics import RequestMetrics, observe_commit_group
recorder = RequestMetrics(None)
routed = {"route": types.SimpleNamespace(path="/v1/impressions"), "method": "POST"}
calls = int(sys.argv[1])
started = time.process_time()
for _ in range(calls):
    route = recorder.route_template(routed, "/v1/impressions")
    recorder._observe("POST", route, 201, 0.01)
    observe_commit_group(1, 0.002)
print((time.process_time() - started) / calls * 1e6)
"""


def recording_microseconds(work: Path, *, multiprocess: bool, calls: int = 100_000) -> float:
    """CPU microseconds to record one impression request (RECORDING)."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess:
        directory = work / "prometheus-recording"
        directory.mkdir(exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    output = subprocess.run(
        [sys.executable, "-c", RECORDING, str(calls)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=15, help="per side and round")
    parser.add_argument("--rounds", type=int, default=1, help="turns of both sides")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2, help="uvicorn workers per side")
    args = parser.parse_args()
    flags = uvicorn_flags(args.workers)
    with prepared_service("pirloop-metrics-bench-") as (_, env, work):
        post = work / "post.lua"
        post.write_text(POST)
        metrics_dir = work / "prometheus"
        metrics_dir.mkdir()
        envs = {
            "metrics_off": {**env, "PIRLOOP_METRICS_ENABLED": "false"},
            "metrics_on": {
                **env,
                "PIRLOOP_METRICS_ENABLED": "true",
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
            },
        }
        ports = {side: free_port() for side in SIDES}
        bases = {side: f"http://127.0.0.1:{ports[side]}" for side in SIDES}
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
        # Both servers up at once, loaded one at a time; neither is loaded while the other is.
        with (
            process(
                [str(BIN / "uvicorn"), "app.main:create_app", "--factory", "--port",
                 str(ports["metrics_off"]), *flags],
                envs["metrics_off"],
                work / "off.log",
            ),
            process(
                [str(BIN / "uvicorn"), "app.main:create_app", "--factory", "--port",
                 str(ports["metrics_on"]), *flags],
                envs["metrics_on"],
                work / "on.log",
            ),
        ):  # fmt: skip
            for side in SIDES:
                wait_http(f"{bases[side]}/readyz")
                # Warm-up: connections, caches, the picker's first load.
                wrk(f"{bases[side]}/v1/impressions", connections=8, seconds=2, script=post)
            counted_before, _ = counted_impressions(bases["metrics_on"])
            for round_index in range(args.rounds):
                # Alternate who goes first, so drift on a shared machine favours neither.
                order = SIDES if round_index % 2 == 0 else SIDES[::-1]
                for side in order:
                    row = wrk(
                        f"{bases[side]}/v1/impressions",
                        connections=args.connections,
                        seconds=args.seconds,
                        script=post,
                    )
                    runs[side].append(row)
                    print(
                        f"round {round_index + 1} {side:12} {row['requests_per_second']:8.0f} "
                        f"req/s  p99 {row.get('p99_ms', float('nan')):7.2f} ms  "
                        f"non-2xx {row['non_2xx']}"
                    )
            counted, scrape_seconds = counted_impressions(bases["metrics_on"])
        recording = {
            "in_memory": recording_microseconds(work, multiprocess=False),
            "multiprocess": recording_microseconds(work, multiprocess=True),
        }
    summary = {
        side: {
            "requests_per_second": statistics.mean(r["requests_per_second"] for r in runs[side]),
            "p99_ms": statistics.mean(r.get("p99_ms", float("nan")) for r in runs[side]),
            "p50_ms": statistics.mean(r.get("p50_ms", float("nan")) for r in runs[side]),
        }
        for side in SIDES
    }
    on, off = summary["metrics_on"], summary["metrics_off"]
    ratios = {
        "requests_per_second_on_vs_off": on["requests_per_second"] / off["requests_per_second"],
        "p99_on_vs_off": on["p99_ms"] / off["p99_ms"],
    }
    loaded = sum(r["requests_per_second"] * args.seconds for r in runs["metrics_on"])
    print(f"{'side':12} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8}")
    for side in SIDES:
        row = summary[side]
        print(
            f"{side:12} {row['requests_per_second']:10.0f} {row['p50_ms']:8.2f} "
            f"{row['p99_ms']:8.2f}"
        )
    print(f"ratio req/s on/off {ratios['requests_per_second_on_vs_off']:.3f}")
    print(f"ratio p99 on/off   {ratios['p99_on_vs_off']:.3f}")
    print(
        f"the metrics side counted {counted - counted_before:.0f} impressions under load "
        f"(wrk: about {loaded:.0f}); its scrape took {scrape_seconds * 1000:.1f} ms"
    )
    print(
        f"recording one impression request: {recording['in_memory']:.1f} us CPU in memory, "
        f"{recording['multiprocess']:.1f} us in multiprocess mode"
    )
    path = write_result(
        "metrics_overhead",
        {
            "connections": args.connections,
            "seconds": args.seconds,
            "rounds": args.rounds,
            "workers": args.workers,
            "runs": runs,
            "summary": summary,
            "ratios": ratios,
            "counted_impressions": counted - counted_before,
            "scrape_ms": scrape_seconds * 1000,
            "recording_cpu_microseconds": recording,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
