"""The README and the help text say what the code does: the first version is v1, the embed's
cross-origin setting is named with the form it takes, and `make test` says it installs
chromium."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app import migrate
from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.main import create_app
from app.settings import Settings
from tests.conftest import make_settings

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()
PIRLOOP = str(Path(sys.executable).parent / "pirloop")


def test_the_first_version_is_v1_everywhere(tmp_path: Path) -> None:
    # A fresh database: ids in the shared test databases go on from earlier tests.
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    migrate.upgrade(url)
    settings = make_settings(url, tmp_path)
    engine = make_engine(settings.resolved_database_url)
    first = ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    assert first == 1
    helps = [
        subprocess.run(
            [PIRLOOP, command, "--help"], capture_output=True, text=True, check=True
        ).stdout
        for command in ("init", "serve")
    ]
    demo_source = (REPO / "worker" / "demo.py").read_text()
    for text in (README, *helps, demo_source):
        assert "version 0" not in " ".join(text.replace("│", " ").split())
    assert all("(v1)" in " ".join(h.replace("│", " ").split()) for h in helps)


def test_readme_documents_cors_origins_as_it_behaves(settings: Settings) -> None:
    documented = re.search(r"PIRLOOP_CORS_ORIGINS='(\[[^']*\])'", README)
    assert documented is not None, "the README shows how to set PIRLOOP_CORS_ORIGINS"
    origins = json.loads(documented.group(1))
    assert "JSON list" in README
    assert "405" in README
    preflight = {
        "Origin": origins[0],
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    with TestClient(create_app(settings)) as client:
        assert client.options("/v1/impressions", headers=preflight).status_code == 405
    allowed = settings.model_copy(update={"cors_origins": origins})
    with TestClient(create_app(allowed)) as client:
        answer = client.options("/v1/impressions", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == origins[0]


@pytest.mark.parametrize("text", [README, (REPO / "Makefile").read_text()])
def test_make_test_says_it_installs_chromium(text: str) -> None:
    assert "apt-get install chromium" in " ".join(text.split())
