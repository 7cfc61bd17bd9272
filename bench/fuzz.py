"""The long fuzzing run: the same schemathesis test as `make test`, with a bigger budget.

    .venv/bin/python bench/fuzz.py [--examples 1000]

Prints how many generated requests ran and writes bench/results/fuzz.json.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time

from bench.common import ROOT, write_result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000, help="requests per operation")
    args = parser.parse_args()
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "tests/app/test_fuzz.py",
        ],
        cwd=ROOT,
        env={**os.environ, "PIRLOOP_FUZZ_EXAMPLES": str(args.examples)},
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    made = re.search(r"fuzzing made (\d+) requests over (\d+) operations", result.stdout)
    print(result.stdout[-2000:])
    summary = {
        "examples_per_operation": args.examples,
        "requests": int(made.group(1)) if made else None,
        "operations": int(made.group(2)) if made else None,
        "passed": result.returncode == 0,
        "seconds": round(seconds, 1),
    }
    print(summary)
    print(f"wrote {write_result('fuzz', summary)}")
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
