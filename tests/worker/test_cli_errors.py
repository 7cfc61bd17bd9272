"""Bad command-line input ends with a message that names the problem, not a stack trace."""

from __future__ import annotations

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
