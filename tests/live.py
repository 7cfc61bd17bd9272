"""A real `pirloop serve` process for tests about the network (and the browser)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pirloop(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(
        [str(BIN / "pirloop"), *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, f"pirloop {' '.join(args)} failed:\n{result.stderr[-3000:]}"
    return result.stdout


@contextmanager
def live_server(env: dict[str, str], *, startup_seconds: float = 60) -> Iterator[str]:
    """Yield the base URL of a running `pirloop serve`; stop it afterwards."""
    port = free_port()
    # A file, not a pipe: nobody reads a pipe while the test runs, and a server whose log
    # fills the pipe's buffer blocks on its next log line.
    log_path = Path(tempfile.mkdtemp(prefix="pirloop-serve-")) / "serve.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(BIN / "pirloop"), "serve", "--port", str(port)],
            env={**os.environ, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + startup_seconds
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not become ready:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(log_path.parent, ignore_errors=True)
