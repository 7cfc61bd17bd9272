"""Browser tests: Debian's chromium driven by Playwright against a live `pirloop serve`, with
a host page served from another origin. They install chromium themselves when it is missing
(apt-get, as root) and never download a browser."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app import migrate
from app.settings import Settings
from tests.conftest import make_settings, service_env
from tests.live import free_port, live_server
from tests.pages.seed import Seeded, seed_history

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO = Path(__file__).resolve().parents[2]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "browser: drives a real chromium through Playwright")


def _ensure_chromium() -> Path:
    if CHROMIUM.exists():
        return CHROMIUM
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail(f"{CHROMIUM} is missing and there is no apt-get to install it")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(
        [apt, "install", "-y", "chromium"], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        subprocess.run([apt, "update"], env=env, capture_output=True, check=False)
        result = subprocess.run(
            [apt, "install", "-y", "chromium"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0 or not CHROMIUM.exists():
        pytest.fail(
            f"chromium is needed for the browser tests and `apt-get install -y chromium` "
            f"failed (run it as root):\n{result.stderr[-2000:]}"
        )
    return CHROMIUM


def _ensure_playwright() -> None:
    try:
        import playwright  # noqa: F401
    except ImportError:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "playwright"],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"could not pip-install playwright:\n{result.stderr[-2000:]}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = _ensure_chromium()
    _ensure_playwright()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Debian's chromium, never a downloaded one (`playwright install` is not used).
        instance = playwright.chromium.launch(
            executable_path=str(executable), args=CHROMIUM_ARGS, headless=True
        )
        yield instance
        instance.close()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """var/screenshots-tests with PIRLOOP_SCREENSHOTS=1 (to look at them), else tmp. These show
    the seeded placeholder images; docs/screenshots come from real generator output through
    `make screenshots` (bench/screenshots.py)."""
    if os.environ.get("PIRLOOP_SCREENSHOTS") == "1":
        path = REPO / "var" / "screenshots-tests"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("screenshots")


HOST_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>A host site</title>
<style>
  body {{ margin: 0; font-family: sans-serif; }}
  #hero {{ height: 320px; background-color: #445; color: #fff; padding: 2rem; }}
</style></head>
<body>
  <section id="hero"><h1>Someone else's site</h1></section>
  <p id="after">Content below the hero.</p>
  <script src="{base}/embed.js" data-placement="background" data-target="#hero" async></script>
</body></html>
"""


class _HostHandler(http.server.BaseHTTPRequestHandler):
    def __init__(self, *args: Any, pages: dict[str, str], **kwargs: Any) -> None:
        self.pages = pages
        super().__init__(*args, **kwargs)

    def do_GET(self) -> None:
        body = self.pages.get(self.path.split("?")[0])
        if body is None:
            self.send_error(404)
            return
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Service:
    base: str
    settings: Settings
    seeded: Seeded


@contextmanager
def _seeded_service(data_dir: Path, **extra_env: str) -> Iterator[Service]:
    """A live `pirloop serve` on a seeded SQLite file in data_dir: batches of 16 images, a
    rollout running, a holdout arm serving the first version, no scheduler (so no learning
    cycle starts by itself); `extra_env` adds to its environment."""
    settings = make_settings("", data_dir, batch_size=16, holdout_share=0.1)
    migrate.upgrade(settings.resolved_database_url)
    seeded = seed_history(settings)
    env = service_env(
        data_dir,
        PIRLOOP_BATCH_SIZE="16",
        PIRLOOP_HOLDOUT_SHARE="0.1",
        PIRLOOP_EMBEDDED_SCHEDULER="false",
        **extra_env,
    )
    with live_server(env) as base:
        yield Service(base=base, settings=settings, seeded=seeded)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    """A seeded service of its own for the test that acts on it (the shared `site` stays as
    seeded), with learning cycles small enough to start by hand (one estimator epoch, one
    tuning step)."""
    with _seeded_service(
        tmp_path,
        PIRLOOP_ESTIMATOR_EPOCHS="1",
        PIRLOOP_TUNING_STEPS="1",
        PIRLOOP_TORCH_THREADS="1",
    ) as running:
        yield running


@dataclass(frozen=True)
class Site:
    base: str  # pirloop
    host: str  # the embedding site, another origin
    seeded: Seeded


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """The seeded pirloop of _seeded_service, shared by the tests that only look, and a host
    site on another port whose pages embed it, one of them pointing at a port where nothing
    listens."""
    host_port, dead_port = free_port(), free_port()
    host = f"http://127.0.0.1:{host_port}"
    with _seeded_service(
        tmp_path_factory.mktemp("pages"), PIRLOOP_CORS_ORIGINS=f'["{host}"]'
    ) as running:
        base = running.base
        pages = {
            "/": HOST_PAGE.format(base=base),
            "/down": HOST_PAGE.format(base=f"http://127.0.0.1:{dead_port}"),
        }
        handler = functools.partial(_HostHandler, pages=pages)
        server = http.server.ThreadingHTTPServer(("127.0.0.1", host_port), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield Site(base=base, host=host, seeded=running.seeded)
        finally:
            server.shutdown()
            server.server_close()
