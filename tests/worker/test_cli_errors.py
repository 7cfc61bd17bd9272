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
