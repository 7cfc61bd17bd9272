"""Where checkpoints live. API and worker share no filesystem, so the default store is the
database; a local directory store serves one machine or a shared volume."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Protocol

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.models import Artifact
from app.settings import Settings


class ArtifactNotFound(KeyError):
    pass


class ArtifactStore(Protocol):
    def put(self, key: str, data: bytes) -> str:
        """Store data under key atomically; return its sha256."""

    def get(self, key: str) -> bytes: ...

    def exists(self, key: str) -> bool: ...


class LocalArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if self.root.resolve() not in path.parents:
            raise ValueError(f"artifact key {key!r} escapes the artifact directory")
        return path

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a reader never sees half a checkpoint.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        return hashlib.sha256(data).hexdigest()

    def get(self, key: str) -> bytes:
        path = self._path(key)
        if not path.exists():
            raise ArtifactNotFound(key)
        return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).exists()


class DatabaseArtifactStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def put(self, key: str, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        with Session(self.engine) as session, session.begin():
            session.merge(Artifact(key=key, data=data, sha256=digest, size=len(data)))
        return digest

    def get(self, key: str) -> bytes:
        with Session(self.engine) as session:
            data = session.scalar(select(Artifact.data).where(Artifact.key == key))
        if data is None:
            raise ArtifactNotFound(key)
        return bytes(data)

    def exists(self, key: str) -> bool:
        with Session(self.engine) as session:
            return session.scalar(select(Artifact.key).where(Artifact.key == key)) is not None


def artifact_store(settings: Settings, engine: Engine) -> ArtifactStore:
    if settings.artifact_store == "local":
        return LocalArtifactStore(settings.resolved_artifact_dir)
    return DatabaseArtifactStore(engine)
