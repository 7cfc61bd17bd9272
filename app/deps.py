"""Typed dependencies for route functions."""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Path, Request
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app import admin_auth
from app.admin_auth import AdminThrottle
from app.errors import Forbidden, RateLimited, Unauthorized
from app.ingest import Ingest
from app.jobs import JobDispatcher
from app.ratelimit import too_many
from app.serving import BatchPicker
from app.settings import Settings

ADMIN_COOKIE = "pirloop_admin"
# Ids in paths and queries: positive, and within the 32-bit INTEGER columns of versions and
# images on PostgreSQL (a larger id names nothing; the database would refuse to compare it).
# Checked here, before any query, for every id parameter.
MAX_ID = 2**31 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]


# Dependencies that only read app.state are `async def`: FastAPI runs a plain `def` dependency
# on the threadpool, a thread hop per request for a dictionary lookup.
async def get_app_settings(request: Request) -> Settings:
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


async def get_picker(request: Request) -> BatchPicker:
    picker: BatchPicker = request.app.state.picker
    return picker


async def get_ingest(request: Request) -> Ingest:
    ingest: Ingest = request.app.state.ingest
    return ingest


async def get_jobs(request: Request) -> JobDispatcher:
    jobs: JobDispatcher = request.app.state.jobs
    return jobs


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
# scope="function": commit before the response leaves, so a 2xx means the rows are stored
# (the default scope would commit after the client already has its answer).
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
PickerDep = Annotated[BatchPicker, Depends(get_picker)]
JobsDep = Annotated[JobDispatcher, Depends(get_jobs)]
# The write path of the public endpoints: async, group-committed (app/writer.py).
IngestDep = Annotated[Ingest, Depends(get_ingest)]


# The two ways to present the admin token, declared as security schemes so that the OpenAPI
# schema tells clients (and fuzzers) how to authenticate. Checked by require_admin itself.
admin_bearer = HTTPBearer(
    scheme_name="adminToken", description="PIRLOOP_ADMIN_TOKEN as a bearer token", auto_error=False
)
admin_cookie = APIKeyCookie(
    name=ADMIN_COOKIE,
    scheme_name="adminCookie",
    description="the dashboard's session cookie, set by signing in at /admin/login",
    auto_error=False,
)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def is_admin_token(settings: Settings, token: str | None) -> bool:
    if not token:
        return False
    return hmac.compare_digest(token.encode(), settings.admin_token.encode())


def refuse_if_throttled(request: Request, settings: Settings) -> None:
    """429 while this address has used up its failed admin credentials: checked before any
    credential is looked at, so the right token is refused too and a 429 reveals nothing."""
    throttle: AdminThrottle = request.app.state.admin_throttle
    wait = throttle.retry_after(client_address(request), settings.admin_failures_per_minute)
    if wait is not None:
        headers, _ = too_many(wait)
        raise RateLimited(
            "too many failed admin credentials from this address; every admin credential "
            f"from it is refused for {headers['Retry-After']} s",
            retry_after=headers["Retry-After"],
        )


def count_admin_failure(request: Request) -> None:
    throttle: AdminThrottle = request.app.state.admin_throttle
    throttle.count_failure(client_address(request))


def check_admin(request: Request, settings: Settings, session: Session) -> bool | None:
    """The request's admin credential, on every admin surface: the token as a bearer header,
    else the dashboard's session cookie. True when valid; False when wrong (counted against
    the address); None when none was presented. RateLimited while the address is throttled,
    whatever it presents."""
    refuse_if_throttled(request, settings)
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        valid = is_admin_token(settings, header[7:].strip())
    else:
        session_id = request.cookies.get(ADMIN_COOKIE)
        if session_id is None:
            return None
        valid = admin_auth.session_is_valid(session, settings, session_id)
    if not valid:
        count_admin_failure(request)
    return valid


def require_admin(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
    _cookie: Annotated[str | None, Depends(admin_cookie)],
) -> None:
    credential = check_admin(request, settings, session)
    if credential is None:
        count_admin_failure(request)  # the API has no sign-in page: no credential is a failure
    if not credential:
        raise Unauthorized("admin credentials required")


AdminDep = Annotated[None, Depends(require_admin)]


def require_same_origin(request: Request) -> None:
    """A cookie-authenticated change must come from pirloop's own pages. The cookie is
    SameSite=Strict already; this also refuses a cross-origin Origin header outright. The own
    origin is PIRLOOP_PUBLIC_URL's when it is set (behind a proxy the request's scheme and
    Host are the proxy's view), else the request's."""
    origin = request.headers.get("origin")
    if origin is None or request.headers.get("authorization"):
        return
    settings: Settings = request.app.state.settings
    if settings.public_url:
        public = urlsplit(settings.public_url)
        own = f"{public.scheme}://{public.netloc}"
    else:
        own = f"{request.url.scheme}://{request.url.netloc}"
    if origin != own:
        raise Forbidden("cross-origin admin request refused")
