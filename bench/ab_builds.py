"""A/B of pirloop builds on one hot path: which change made it faster, on a noisy machine.

    git worktree add /tmp/before <commit>
    .venv/bin/python -m bench.ab_builds --build before=/tmp/before --build now=. \
        [--path impression|interaction] [--rounds 10] [--seconds 3]

Each build (a directory holding pirloop's code: this checkout, or a git worktree of another
commit) runs as 2 uvicorn workers on a database of its own, migrated by this checkout, beside
the async bare anchor (bench/bare_app.py). Then wrk (64 connections) loads every build and the
anchor in turn, for `--rounds` short rounds after one warm-up round, and the script prints the
median of each build's per-round ratios to the anchor. This machine's speed drifts by a fifth
between minutes (docs/BENCHMARKS.md): a ratio to the anchor measured seconds apart cancels
most of it, and the median of ten such ratios moves by about 0.03 between runs of the same
build (two copies of one build in one run of the script this grew from gave 0.733 and
0.734). The interaction path repeats one
token's click, as bench/profile_hot_path.py does. `--sql build=STATEMENT`
runs SQL on that build's database first (to put back a schema an older build expects).
Writes bench/results/ab_builds_<path>.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
from contextlib import ExitStack
from pathlib import Path

import httpx

from bench.common import (
    BIN,
    free_port,
    prepared_service,
    process,
    uvicorn_flags,
    wait_http,
    write_result,
    wrk,
)
from bench.profile_hot_path import load_target

ANCHOR = "anchor"


def pairs(values: list[str], flag: str) -> dict[str, str]:
    parsed = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name or name == ANCHOR:
            raise SystemExit(f"{flag} wants NAME=VALUE with a NAME other than {ANCHOR!r}: {value}")
        parsed[name] = rest
    return parsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", action="append", required=True, help="NAME=DIRECTORY")
    parser.add_argument("--sql", action="append", default=[], help="NAME=STATEMENT")
    parser.add_argument("--path", choices=("impression", "interaction"), default="impression")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=3)
    args = parser.parse_args()
    builds = {
        name: Path(directory).resolve() for name, directory in pairs(args.build, "--build").items()
    }
    sql = pairs(args.sql, "--sql")
    with ExitStack() as stack:
        targets: dict[str, tuple[str, Path | None]] = {}
        work = Path()
        for name, directory in builds.items():
            url, env, work = stack.enter_context(prepared_service(f"pirloop-ab-{name}-"))
            if name in sql:
                psql = url.replace("postgresql+psycopg", "postgresql")
                subprocess.run(["psql", psql, "-c", sql[name]], check=True, capture_output=True)
            port = free_port()
            command = [
                *(str(BIN / "uvicorn"), "app.main:create_app", "--factory"),
                *("--app-dir", str(directory), "--port", str(port)),
            ]
            stack.enter_context(process([*command, *uvicorn_flags(2)], env, work / f"{name}.log"))
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/readyz")
            served = httpx.post(f"{base}/v1/impressions", json={"placement": "background"})
            (work / name).mkdir()
            targets[name] = load_target(base, args.path, served.json(), work / name)
        png = work / "anchor.png"
        png.write_bytes(b"\x89PNG")
        port = free_port()
        stack.enter_context(
            process(
                [
                    str(BIN / "uvicorn"),
                    "bench.bare_app:app",
                    "--port",
                    str(port),
                    *uvicorn_flags(2),
                ],
                {"BENCH_PNG": str(png)},
                work / "anchor.log",
            )
        )
        anchor = f"http://127.0.0.1:{port}"
        wait_http(f"{anchor}/bare/image")
        (work / ANCHOR).mkdir()
        targets[ANCHOR] = load_target(anchor + "/bare", args.path, None, work / ANCHOR)
        for url, script in targets.values():  # warm-up, not counted
            wrk(url, connections=64, seconds=2, script=script)
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        for round_number in range(args.rounds):
            for name, (url, script) in targets.items():
                runs[name].append(wrk(url, connections=64, seconds=args.seconds, script=script))
            rates = {name: f"{rows[-1]['requests_per_second']:.0f}" for name, rows in runs.items()}
            print(f"round {round_number + 1}/{args.rounds}: {rates}", flush=True)
    summary = {}
    for name in builds:
        ratios = [
            mine["requests_per_second"] / theirs["requests_per_second"]
            for mine, theirs in zip(runs[name], runs[ANCHOR], strict=True)
        ]
        summary[name] = {
            "median_ratio": statistics.median(ratios),
            "ratios": ratios,
            "median_requests_per_second": statistics.median(
                run["requests_per_second"] for run in runs[name]
            ),
            "median_p99_ms": statistics.median(run.get("p99_ms", 0.0) for run in runs[name]),
            "non_2xx": sum(int(run["non_2xx"]) for run in runs[name]),
        }
        print(
            f"{name:12} median ratio to the anchor {summary[name]['median_ratio']:.3f} "
            f"(rounds {' '.join(f'{r:.2f}' for r in ratios)}), "
            f"{summary[name]['median_requests_per_second']:.0f} req/s, "
            f"p99 {summary[name]['median_p99_ms']:.1f} ms, non-2xx {summary[name]['non_2xx']}"
        )
    anchor_rate = statistics.median(run["requests_per_second"] for run in runs[ANCHOR])
    print(f"{ANCHOR:12} {anchor_rate:.0f} req/s")
    write_result(f"ab_builds_{args.path}", {"path": args.path, "builds": summary, "runs": runs})


if __name__ == "__main__":
    main()
