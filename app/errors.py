"""Every error leaves as JSON that names the problem; none leaves as a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.schemas import ErrorBody
from app.writer import WriteUnavailable

log = logging.getLogger(__name__)

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    503: "unavailable",
}


class PirloopError(Exception):
    """An error that carries the HTTP status to answer with. Raised anywhere (a refused admin
    action, a refused interaction, nothing to serve), answered by one handler as JSON
    {"error", "message"}: no route needs a try/except of its own."""

    status_code: int = 500

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.headers = dict(headers) if headers else None
        if status_code is not None:
            self.status_code = status_code

    @property
    def error(self) -> str:
        return error_code(self.status_code)


class NotFound(PirloopError):
    """An id in the path names nothing stored."""

    status_code = 404


class Conflict(PirloopError):
    """The request is valid but cannot be done in the present state; the message says why."""

    status_code = 409


class Unauthorized(PirloopError):
    """Admin credentials missing or wrong."""

    status_code = 401

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class Forbidden(PirloopError):
    status_code = 403


class RateLimited(PirloopError):
    """Over a rate limit: Retry-After says how many seconds to wait."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: str) -> None:
        super().__init__(message, headers={"Retry-After": retry_after})


class ServiceUnready(RuntimeError):
    """A running service that cannot do what a client command needs (no scheduler, traffic
    not counted, ...): the command prints the message and exits 1."""


def error_code(status: int) -> str:
    return ERROR_CODES.get(status, "error")


def error_body(status: int, message: str, detail: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error_code(status), "message": message}
    if detail is not None:
        body["detail"] = detail
    return body


def describe_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """Validation errors as one line: `where: what` for the first few."""
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(exc.status_code, str(exc.detail)),
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(PirloopError)
    async def pirloop_error(_: Request, exc: PirloopError) -> JSONResponse:
        headers = exc.headers
        if headers is None and exc.status_code == 503:
            headers = {"Retry-After": "5"}
        return JSONResponse(
            status_code=exc.status_code,
            content=error_body(exc.status_code, exc.message),
            headers=headers,
        )

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [
            {k: v for k, v in err.items() if k in ("loc", "msg", "type")} for err in exc.errors()
        ]
        return JSONResponse(
            status_code=422,
            content=error_body(422, describe_errors(errors), jsonable_encoder(errors)),
        )

    async def database_unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", exc.__class__.__name__)
        return JSONResponse(
            status_code=503,
            content=error_body(503, "the database is unavailable; try again shortly"),
            headers={"Retry-After": "2"},
        )

    app.add_exception_handler(OperationalError, database_unavailable)
    # A group commit that failed (app/writer.py): nothing of the request is stored.
    app.add_exception_handler(WriteUnavailable, database_unavailable)
    app.add_exception_handler(PoolTimeout, database_unavailable)

    @app.exception_handler(DBAPIError)
    async def database_error(request: Request, exc: DBAPIError) -> JSONResponse:
        if exc.connection_invalidated:
            return await database_unavailable(request, exc)
        log.exception("database error")
        return JSONResponse(status_code=500, content=error_body(500, "internal database error"))


class BodySizeLimit:
    """Refuse bodies over max_bytes with 413, whether or not Content-Length is sent. The paths
    in `path_limits` (exact matches) have their own limit: a batch endpoint needs more."""

    def __init__(
        self, app: ASGIApp, max_bytes: int, path_limits: Mapping[str, int] | None = None
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.path_limits = dict(path_limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.path_limits.get(scope["path"], self.max_bytes)
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(send, max_bytes)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise _TooLarge(max_bytes)
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:  # read outside a route (which answers it through its handler)
            await self._refuse(send, max_bytes)

    @staticmethod
    async def _refuse(send: Send, max_bytes: int) -> None:
        response = JSONResponse(status_code=413, content=error_body(413, _too_large(max_bytes)))
        await response({"type": "http"}, _no_receive, send)


def _too_large(max_bytes: int) -> str:
    return f"request body is larger than {max_bytes} bytes"


class _TooLarge(HTTPException):
    """A body that grew past the limit while it was read (chunked, no Content-Length). An
    HTTPException, because FastAPI answers any other exception raised while it reads a body
    with 400 "There was an error parsing the body"; this one it lets through to the handler."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=_too_large(max_bytes))


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


# How the OpenAPI schema documents these answers: one declaration per kind of failure, each
# with the one body model (ErrorBody) and the headers a client acts on, attached per router
# (or per group of routes) with `responses=`, never written out on a route by hand.
Responses = dict[int | str, dict[str, Any]]

RETRY_AFTER = {
    "Retry-After": {
        "description": "seconds to wait before trying again",
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
    }
}


def error_response(description: str, *, headers: Mapping[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"model": ErrorBody, "description": description}
    if headers:
        response["headers"] = dict(headers)
    return response


def responses(*groups: Responses) -> Responses:
    """Several kinds of failure as one `responses=` argument (later groups win a status)."""
    merged: Responses = {}
    for group in groups:
        merged.update(group)
    return merged


def not_found(what: str) -> Responses:
    return {404: error_response(f"no such {what}")}


def conflict(why: str) -> Responses:
    return {409: error_response(why)}


# The body could not be decoded as JSON text at all (not UTF-8, ...); a JSON syntax error is
# a 422 like every other invalid body.
UNREADABLE_BODY: Responses = {400: error_response("the body could not be decoded")}
TOO_LARGE: Responses = {
    413: error_response(
        "the body is larger than PIRLOOP_MAX_BODY_BYTES (PIRLOOP_MAX_BATCH_BODY_BYTES for a batch)"
    )
}
INVALID: Responses = {
    422: error_response("a parameter or the body is invalid; `detail` lists where and what")
}
# Every route that reads or writes the database.
UNAVAILABLE: Responses = {
    503: error_response(
        "the database is unavailable (or, for impressions, nothing is served); try again",
        headers=RETRY_AFTER,
    )
}
RATE_LIMITED: Responses = {
    429: error_response(
        "this client address or visitor is over its rate limit", headers=RETRY_AFTER
    )
}
# Both admin routers (the JSON API; the same-origin check on its changes).
ADMIN: Responses = {
    401: error_response(
        "admin credentials missing or wrong",
        headers={"WWW-Authenticate": {"schema": {"type": "string"}}},
    ),
    429: error_response(
        "too many failed admin credentials from this address (PIRLOOP_ADMIN_FAILURES_PER_MINUTE)",
        headers=RETRY_AFTER,
    ),
}
CROSS_ORIGIN: Responses = {
    403: error_response("a cookie-authenticated change sent from another origin")
}
# The public write routes: too large, invalid, throttled (the routes whose JSON body FastAPI
# parses add UNREADABLE_BODY).
PUBLIC_WRITE: Responses = responses(TOO_LARGE, INVALID, RATE_LIMITED, UNAVAILABLE)


def document_errors(app: FastAPI) -> None:
    """FastAPI documents its own 422 body (HTTPValidationError) on every route with parameters;
    the handler above answers ErrorBody instead, so the schema says that."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.get("components", {}).get("schemas", {})
        invalid = INVALID[422]
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                response = operation.get("responses", {}).get("422")
                if response is None:
                    continue
                response["description"] = invalid["description"]
                response["content"] = {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                }
        components.pop("HTTPValidationError", None)
        components.pop("ValidationError", None)
        if "ErrorBody" not in components:
            components["ErrorBody"] = ErrorBody.model_json_schema()
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
