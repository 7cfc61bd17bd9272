"""Every error leaves as JSON that names the problem; none leaves as a stack trace."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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

    def __init__(self, message: str, *, status_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code

    @property
    def error(self) -> str:
        return error_code(self.status_code)


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
        headers = {"Retry-After": "5"} if exc.status_code == 503 else None
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
                    raise _TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _TooLarge:
            await self._refuse(send, max_bytes)

    @staticmethod
    async def _refuse(send: Send, max_bytes: int) -> None:
        response = JSONResponse(
            status_code=413,
            content=error_body(413, f"request body is larger than {max_bytes} bytes"),
        )
        await response({"type": "http"}, _no_receive, send)


class _TooLarge(Exception):
    pass


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
