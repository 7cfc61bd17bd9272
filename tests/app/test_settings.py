from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.settings import Settings
from tests.conftest import TEST_ADMIN, TEST_SECRET


def test_embedded_defaults_need_no_server(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PIRLOOP_DATABASE_URL", raising=False)
    monkeypatch.delenv("PIRLOOP_REDIS_URL", raising=False)
    settings = Settings(data_dir=tmp_path)
    assert settings.resolved_database_url == f"sqlite:///{tmp_path / 'pirloop.db'}"
    assert settings.redis_url == ""


def test_environment_switches_to_postgres(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PIRLOOP_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("PIRLOOP_REDIS_URL", "redis://127.0.0.1:6379/3")
    settings = Settings()
    assert settings.resolved_database_url == "postgresql+psycopg://u@h/db"
    assert not settings.is_sqlite
    assert settings.redis_url == "redis://127.0.0.1:6379/3"


@pytest.mark.parametrize("name", ["secret_key", "admin_token"])
def test_placeholder_secrets_refused_outside_development(name: str) -> None:
    good = {"secret_key": TEST_SECRET, "admin_token": TEST_ADMIN}
    Settings(environment="production", **good)  # real secrets pass
    with pytest.raises(ValidationError, match=f"PIRLOOP_{name.upper()}"):
        Settings(environment="production", **{**good, name: "changeme"})
    Settings(environment="development", **{**good, name: "changeme"})


def test_rating_weights_need_five_values() -> None:
    with pytest.raises(ValidationError, match="RATING_WEIGHTS"):
        Settings(rating_weights=[0, 1])
