"""A typed Python client generated from /openapi.json (openapi-python-client, offline) works:
it fetches an impression, posts a rating, reads a version's PIR and, with the admin token,
lists versions. Every generated call raises on a status the schema does not list."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.bootstrap import ensure_initial_version
from app.database import make_engine, make_session_factory
from app.main import create_app
from app.settings import Settings
from tests.conftest import TEST_ADMIN

BIN = Path(sys.executable).parent
PACKAGE = "pirloop_client"
# Content types the generator has no reader for, read as the ones they are: the beacon's
# text/plain body is JSON, a PNG is a file.
CONFIG = f"""\
package_name_override: {PACKAGE}
project_name_override: pirloop-client
post_hooks: []
content_type_overrides:
  text/plain: application/json
  image/png: application/octet-stream
"""


def generate_client(schema: dict[str, Any], where: Path) -> ModuleType:
    """Generate the client package under `where` and import it."""
    (where / "openapi.json").write_text(json.dumps(schema))
    (where / "config.yaml").write_text(CONFIG)
    result = subprocess.run(
        [
            str(BIN / "openapi-python-client"),
            "generate",
            "--path",
            str(where / "openapi.json"),
            "--config",
            str(where / "config.yaml"),
            "--meta",
            "none",
            "--output-path",
            str(where / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A warning means part of the schema was left out of the client.
    assert "WARNING" not in output, f"the generator did not understand:\n{output}"
    sys.path.insert(0, str(where))
    return importlib.import_module(PACKAGE)


@pytest.fixture
def client_package(settings: Settings, tmp_path: Path) -> Iterator[ModuleType]:
    """The client generated from the service's own /openapi.json."""
    schema = TestClient(create_app(settings)).get("/openapi.json").json()
    yield generate_client(schema, tmp_path)
    sys.path.remove(str(tmp_path))
    for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
        del sys.modules[name]


def test_generated_client_drives_the_api(client_package: ModuleType, settings: Settings) -> None:
    generated = importlib.import_module(f"{PACKAGE}.api.impressions.create_impression")
    create_interaction = importlib.import_module(f"{PACKAGE}.api.interactions.create_interaction")
    get_image = importlib.import_module(f"{PACKAGE}.api.images.get_image")
    version_pir = importlib.import_module(f"{PACKAGE}.api.versions.version_pir")
    admin_versions = importlib.import_module(f"{PACKAGE}.api.admin.admin_versions")
    models = importlib.import_module(f"{PACKAGE}.models")
    client_module = importlib.import_module(f"{PACKAGE}.client")

    engine = make_engine(settings.resolved_database_url)
    ensure_initial_version(make_session_factory(engine), settings, placeholder=True)
    engine.dispose()
    app = create_app(settings)
    base = "http://testserver"
    admin = client_module.AuthenticatedClient(
        base_url=base, token=TEST_ADMIN, raise_on_unexpected_status=True
    )
    admin_header = {admin.auth_header_name: f"{admin.prefix} {admin.token}"}
    with TestClient(app, base_url=base) as http, TestClient(app, base_url=base) as admin_http:
        admin_http.headers.update(admin_header)
        # The generated client sends its requests through the app in process.
        public = client_module.Client(base_url=base, raise_on_unexpected_status=True)
        public.set_httpx_client(http)
        admin.set_httpx_client(admin_http)

        impression = generated.sync(
            client=public, body=models.ImpressionCreate(placement=models.Placement.RATING)
        )
        assert isinstance(impression, models.ImpressionRead)
        assert impression.placement == models.Placement.RATING
        image = get_image.sync_detailed(impression.image_id, client=public)
        assert image.status_code == 200
        assert image.content.startswith(b"\x89PNG")

        rating = create_interaction.sync(
            client=public,
            body=models.InteractionCreate(
                token=impression.token, kind=models.InteractionCreateKind.RATING, value=4
            ),
        )
        assert isinstance(rating, models.InteractionRead)
        assert (rating.impression_id, rating.kind, rating.value, rating.duplicate) == (
            impression.impression_id,
            "rating",
            4.0,
            False,
        )
        # A refused call parses as the one error body, because the schema lists it.
        forged = create_interaction.sync_detailed(
            client=public,
            body=models.InteractionCreate(token="forged", kind=models.InteractionCreateKind.CLICK),
        )
        assert forged.status_code == 401
        assert isinstance(forged.parsed, models.ErrorBody)
        assert forged.parsed.error == "unauthorized"

        pir = version_pir.sync(
            impression.generator_version,
            client=public,
            placement=models.Placement.RATING,
            include_simulated=True,
        )
        assert isinstance(pir, models.VersionPir)
        assert pir.impressions == 1

        rows = admin_versions.sync(client=admin)
        assert isinstance(rows, list)
        assert [row.id for row in rows] == [impression.generator_version]
        # Without the token the same call is refused with a listed status and body.
        refused = admin_versions.sync_detailed(client=public)
        assert refused.status_code == 401
        assert isinstance(refused.parsed, models.ErrorBody)
        # An unknown version: a listed 404 with the error body, not UnexpectedStatus.
        missing = version_pir.sync_detailed(2**31 - 1, client=public)
        assert missing.status_code == 404
        assert isinstance(missing.parsed, models.ErrorBody)
