"""Bad command-line input ends with a message that names the problem, not a stack trace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PIRLOOP = str(Path(sys.executable).parent / "pirloop")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["experiment", "--objective", "bogus:thing", "--images", "4"], "unknown kind 'bogus'"),
        (["experiment", "--objective", "py:no_such_module_x:f"], "cannot import module"),
        (["pretrain", "--preset", "nope"], "unknown preset 'nope'"),
        (
            ["simulate", "--url", "http://127.0.0.1:9", "--objective", "color:blue"],
            "exactly one of duration or impressions",
        ),
    ],
)
def test_bad_arguments_are_named(args: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [PIRLOOP, *args], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path
    )
    assert result.returncode == 2, result.stdout + result.stderr
    # typer draws the message in a box that may wrap it: drop the frame, join the lines.
    text = " ".join((result.stdout + result.stderr).replace("│", " ").split())
    assert message in text, text
    assert "Traceback" not in result.stderr


def test_offline_experiment_takes_its_options_and_writes_json_and_grid(tmp_path: Path) -> None:
    args = [
        "experiment", "--objective", "color:blue", "--preset", "tiny", "--images", "24",
        "--impressions", "10", "--rounds", "2", "--steps", "2", "--estimator-width", "8",
        "--explore-scale", "1.5", "--json", "report.json", "--grid", "grid.png",
    ]  # fmt: skip
    env = {**os.environ, "PIRLOOP_TORCH_THREADS": "1"}
    result = subprocess.run(
        [PIRLOOP, *args], capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(report["rounds"]) == 2
    assert report["config"]["explore_scale"] == 1.5
    assert report["config"]["estimator"]["width"] == 8
    assert report["overall"]["pre_mean"] == report["rounds"][0]["pre_mean"]
    assert (tmp_path / "grid.png").stat().st_size > 0
    assert "all 2 rounds" in result.stdout


def _free_dead_url() -> str:
    """A URL where nothing listens (a port bound and released at once)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def _run(args: list[str], cwd: Path, *, timeout: float = 60, **env: str) -> tuple[int, str]:
    result = subprocess.run(
        [PIRLOOP, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env={**os.environ, **env},
    )
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        # A dead server: fails at once (not after its 60 s), with the fix.
        (
            ["simulate", "--url", "DEAD", "--objective", "color:blue", "--duration", "60"],
            {},
            1,
            "cannot reach a pirloop service at",
        ),
        (
            ["simulate", "--url", "htp//nowhere", "--objective", "color:blue", "--duration", "60"],
            {},
            2,
            "is not an http(s) URL with a host",
        ),
        (
            ["experiment", "--via-api", "DEAD", "--objective", "color:blue"],
            {},
            1,
            "cannot reach a pirloop service at",
        ),
        (
            ["init"],
            {"PIRLOOP_CORS_ORIGINS": "https://a.example"},
            2,
            "PIRLOOP_CORS_ORIGINS is not valid JSON: write it as '[\"https://www.example.com\"]'",
        ),
        (
            ["init"],
            {"PIRLOOP_ENVIRONMENT": "production"},
            2,
            "PIRLOOP_SECRET_KEY is a placeholder",
        ),
        (["serve"], {"PIRLOOP_BATCH_SIZE": "many"}, 2, "PIRLOOP_BATCH_SIZE='many' is not valid"),
    ],
)
def test_failures_are_one_or_two_lines_naming_the_fix(
    args: list[str], env: dict[str, str], code: int, message: str, tmp_path: Path
) -> None:
    args = [_free_dead_url() if a == "DEAD" else a for a in args]
    returncode, output = _run(args, tmp_path, timeout=40, PIRLOOP_DATA_DIR=str(tmp_path), **env)
    assert returncode == code, output
    text = " ".join(output.replace("│", " ").split())
    assert message in text, output
    assert "Traceback" not in output
    # One or two lines of message, with simulate's progress line or a usage error's two
    # lines of usage (as bad objectives and presets get), box frames aside.
    frame = set("│╭╮╰╯─ Error")
    lines = [line for line in output.splitlines() if not set(line) <= frame]
    assert len(lines) <= 4, output
    # Nothing was created where the command failed before its work.
    assert not (tmp_path / "pirloop.db").exists()


def test_demo_refuses_a_port_in_use_before_touching_data(tmp_path: Path) -> None:
    import socket

    old_demo = tmp_path / "var" / "demo"
    old_demo.mkdir(parents=True)
    (old_demo / "pirloop.db").write_bytes(b"the running demo's data")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        returncode, output = _run(
            ["demo", "--preset", "tiny", "--images", "4", "--port", str(port)], tmp_path
        )
    assert returncode == 1, output
    text = " ".join(output.split())
    assert f"port {port} is in use" in text, output
    assert f"pirloop demo --port {port + 1}" in text, output
    assert "serving the first version" not in text
    assert "Traceback" not in output
    # The running demo's database is untouched, and no server was started.
    assert (old_demo / "pirloop.db").read_bytes() == b"the running demo's data"
    assert not (old_demo / "server.log").exists()


def test_kept_demo_service_says_what_it_does_next() -> None:
    from worker.demo import SCHEDULER_SECONDS, DemoPlan, demo_env, kept_service_note

    plan = DemoPlan(objective="color:red", impressions=7, port=8123)
    note = kept_service_note(plan, "http://127.0.0.1:8123", 2)
    text = " ".join(note.split())
    assert f"every {SCHEDULER_SECONDS} s" in text
    assert demo_env(plan)["PIRLOOP_SCHEDULER_INTERVAL_SECONDS"] == str(SCHEDULER_SECONDS)
    assert "once version 2 has 7 counted impressions per image" in text
    assert "newer version soon shows on the dashboard" in text
    assert "pirloop simulate --url http://127.0.0.1:8123 --objective color:red" in text
    assert "Pause serving" in text
