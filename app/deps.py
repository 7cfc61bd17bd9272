"""Typed dependencies for route functions."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlalchemy.orm import Session

from app.jobs import JobDispatcher
from app.serving import BatchPicker
from app.settings import Settings

ADMIN_COOKIE = "pirloop_admin"


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request: commit on success, roll back on error."""
    session: Session = request.app.state.session_factory()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


def get_picker(request: Request) -> BatchPicker:
    picker: BatchPicker = request.app.state.picker
    return picker


def get_jobs(request: Request) -> JobDispatcher:
    jobs: JobDispatcher = request.app.state.jobs
    return jobs


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# scope="function": commit before the response leaves, so a 2xx means the rows are stored
# (the default scope would commit after the client already has its answer).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
PickerDep = Annotated[BatchPicker, Depends(get_picker)]
JobsDep = Annotated[JobDispatcher, Depends(get_jobs)]


def presented_admin_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(ADMIN_COOKIE)


def is_admin_token(settings: Settings, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(token.encode(), settings.admin_token.encode())


def require_admin(request: Request, settings: SettingsDep) -> None:
    if not is_admin_token(settings, presented_admin_token(request)):
        raise HTTPException(
            status_code=401,
            detail="admin credentials required",
            headers={"WWW-Authenticate": "Bearer"},
        )


AdminDep = Annotated[None, Depends(require_admin)]
