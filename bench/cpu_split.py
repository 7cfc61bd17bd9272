"""CPU per request, by process: what one impression, interaction or image costs the machine.

    .venv/bin/python -m bench.cpu_split [--path impression|interaction|image] [--seconds 10]

Loads one path (wrk, 64 connections, 2 uvicorn workers, PostgreSQL, as bench/serving.py)
and, with the async bare anchor on the same path, reads every process's CPU time from
/proc before and after: microseconds of CPU per request for the API processes, PostgreSQL,
wrk and the rest of the machine. On a machine saturated by one path, the ceiling per core is
1e6 / (µs per request, summed over the processes that scale with it); docs/SCALING.md uses
these figures. Writes bench/results/cpu_split_<path>.json.
"""

from __future__ import annotations

import os
import resource
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from bench.common import (
    BIN,
    commits_and_inserts,
    free_port,
    prepared_service,
    process,
    uvicorn_flags,
    wait_http,
    write_result,
    wrk,
)
from bench.profile_hot_path import hot_path_parser, load_target

TICKS = os.sysconf("SC_CLK_TCK")


def _stat(path: Path) -> tuple[str, int, float, float] | None:
    """(command name, parent pid, user seconds, system seconds) of a /proc stat file."""
    try:
        stat = path.read_text()
    except OSError:
        return None
    # Fields after the ')' that closes the command name: ppid is the 2nd, utime the 12th.
    fields = stat[stat.rindex(")") + 2 :].split()
    name = stat[stat.index("(") + 1 : stat.rindex(")")]
    return name, int(fields[1]), int(fields[11]) / TICKS, int(fields[12]) / TICKS


def _api_seconds(pid: int, seconds: Counter[str]) -> None:
    """An API process's CPU, by thread: the event loop (its main thread, where the
    group-commit writer runs on PostgreSQL) and the others (the thread pool, idle on these
    paths but for the picker's reads), user and kernel apart."""
    for task in (Path("/proc") / str(pid) / "task").glob("*"):
        stat = _stat(task / "stat")
        if stat is None:
            continue
        thread = "event loop" if int(task.name) == pid else "other threads"
        seconds[f"api: {thread}"] += stat[2]
        seconds[f"api: {thread}, in the kernel"] += stat[3]


def cpu_seconds_by_group(api_pids: set[int]) -> Counter[str]:
    """CPU seconds so far of every live process, grouped as the API's threads / postgres /
    wrk / other. A process that ended between two readings is missed: the API and database
    processes live through a run, and PostgreSQL's backends are the pool's."""
    seconds: Counter[str] = Counter()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _stat(entry / "stat")
        if stat is None:
            continue
        name, ppid, user, system = stat
        if int(entry.name) in api_pids or ppid in api_pids:
            _api_seconds(int(entry.name), seconds)
            continue
        group = "postgresql" if name.startswith("postgres") else "other"
        seconds[group] += user + system
    return seconds


def machine_seconds() -> Counter[str]:
    """The whole machine's idle, I/O-wait and steal seconds so far, summed over its CPUs
    (/proc/stat): a path that leaves cores idle under full load waits on something (a
    commit, a lock) instead of using them, and steal is time the hypervisor gave to others."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    idle, iowait, steal = (int(fields[i]) / TICKS for i in (3, 4, 7))
    return Counter({"machine: idle": idle, "machine: I/O wait": iowait, "machine: steal": steal})


def rows_per_commit(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Rows inserted per commit between two readings of commits_and_inserts."""
    if before is None or after is None or after[0] == before[0]:
        return None
    return round((after[1] - before[1]) / (after[0] - before[0]), 1)


def measured_load(
    url: str,
    script: Path | None,
    api_pid: int,
    connections: int,
    seconds: int,
    database_url: str | None = None,
) -> dict[str, object]:
    """wrk's figures and CPU µs per request by group; with `database_url`, also the rows
    each commit inserted there on average (the group commit's size)."""
    counts_before = commits_and_inserts(database_url) if database_url else None
    before = cpu_seconds_by_group({api_pid}) + machine_seconds()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = wrk(url, connections=connections, seconds=seconds, script=script)
    after = cpu_seconds_by_group({api_pid}) + machine_seconds()
    counts_after = commits_and_inserts(database_url) if database_url else None
    # wrk has ended by now (/proc no longer lists it): its CPU is in this process's children's.
    waited = resource.getrusage(resource.RUSAGE_CHILDREN)
    after["wrk (load)"] = sum(
        getattr(waited, field) - getattr(children, field) for field in ("ru_utime", "ru_stime")
    )
    requests = result["requests_per_second"] * seconds
    per_request = {
        group: round((after[group] - before[group]) / requests * 1e6, 1)
        for group in sorted(after)
        if after[group] > before[group]
    }
    return {
        "load": result,
        "cpu_us_per_request": per_request,
        "rows_per_commit": rows_per_commit(counts_before, counts_after),
    }


def main() -> None:
    args = hot_path_parser(__doc__, seconds=10).parse_args()
    results: dict[str, object] = {}
    with prepared_service("pirloop-cpu-") as (database_url, env, work):
        env = {**env, "BENCH_PNG": str(work / "bench.png")}
        ports = {"pirloop": free_port(), "bare": free_port()}
        commands = {
            "pirloop": ["app.main:create_app", "--factory"],
            "bare": ["bench.bare_app:app"],
        }
        for name, target in commands.items():
            command = [str(BIN / "uvicorn"), *target, "--port", str(ports[name])]
            command += uvicorn_flags(args.workers)
            with process(command, env, work / f"{name}.log") as api:
                base = f"http://127.0.0.1:{ports[name]}"
                if name == "pirloop":
                    wait_http(f"{base}/readyz")
                    served = httpx.post(
                        f"{base}/v1/impressions", json={"placement": "background"}
                    ).json()
                    image = httpx.get(base + urlsplit(served["image_url"]).path)
                    Path(env["BENCH_PNG"]).write_bytes(image.content)
                    url, script = load_target(base, args.path, served, work)
                else:
                    wait_http(f"{base}/docs")
                    url, script = load_target(base + "/bare", args.path, None, work)
                wrk(url, connections=args.connections, seconds=2, script=script)  # warm up
                results[name] = measured_load(
                    url,
                    script,
                    api.pid,
                    args.connections,
                    args.seconds,
                    database_url if name == "pirloop" else None,
                )
    for name, result in results.items():
        load = result["load"]  # type: ignore[index]
        print(f"{name}: {load['requests_per_second']:.0f} req/s, p99 {load['p99_ms']:.1f} ms")
        for group, micros in result["cpu_us_per_request"].items():  # type: ignore[index]
            print(f"  {micros:8.1f} µs CPU/request  {group}")
        if result["rows_per_commit"] is not None:
            print(f"  {result['rows_per_commit']:8.1f} rows inserted per commit (PostgreSQL)")
    write_result(f"cpu_split_{args.path}", {"args": vars(args), **results})


if __name__ == "__main__":
    main()
