"""`pirloop demo` end to end at toy scale: the same command `make demo` runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.live import free_port


def test_demo_runs_a_full_cycle_and_reports_the_decision(tmp_path: Path) -> None:
    pirloop = Path(sys.executable).parent / "pirloop"
    result = subprocess.run(
        [
            str(pirloop),
            "demo",
            "--preset",
            "tiny",
            "--images",
            "16",
            "--impressions",
            "6",
            "--steps",
            "20",
            "--port",
            str(free_port()),
        ],
        cwd=tmp_path,
        env={**os.environ, "PIRLOOP_ESTIMATOR_EPOCHS": "3", "COLUMNS": "120"},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    for words in (
        "service's decision",
        "always-valid",
        "Welch's t-test p",
        "estimator's predicted change",
        "95% CI",
        "/admin",
    ):
        assert words in out, out
    report = json.loads((tmp_path / "var" / "demo" / "demo.json").read_text())
    round_ = report["rounds"][0]
    assert round_["version_after"] == round_["version_before"] + 1
    assert 0 <= round_["p_value"] <= 1
    # The service decided the candidate by itself, with its evidence in the report.
    decision = round_["decision"]
    assert decision["status"] in ("promoted", "rejected"), decision
    assert decision["manual"] is False
    assert decision["candidate"] == round_["version_after"]
    assert decision["looks"] >= 1
    assert (tmp_path / "var" / "demo" / "before_after.png").stat().st_size > 0
