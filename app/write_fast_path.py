"""The two busiest POSTs answered before routing: an impression and a single interaction.

Every page that embeds pirloop asks POST /v1/impressions once per view, and every click,
rating and dwell is one POST /v1/interactions. Profiling them under load
(bench/profile_hot_path.py --gil, docs/BENCHMARKS.md) put about a third of each request's
Python time in what FastAPI does around the route function (matching some sixty routes,
solving its dependencies, validating the answer it was just handed and encoding it a second
time), against a tenth in the route's own work. This middleware does only the route's work:

- it takes a request the route would take as it is: `application/json`, no query string,
  a body that parses and validates with the route's own model (`json.loads` then
  `model_validate`, as FastAPI reads a JSON body). Anything else (no or another content type,
  a body that does not parse or validate, a query) goes to the route unchanged, body
  included, so every refusal of the body is the route's and the OpenAPI schema stays the
  route's;
- it calls the route's own function (`serve_impression`, `record_one`), so the checks,
  the rate limit, the group commit and "answered only once committed" are the same code;
- an error those raise is answered by the application's own exception handler for it, so
  an error body and its headers are the route's;
- the answer's bytes and headers are the route's: the same model, dumped by pydantic as
  FastAPI dumps it (tests/app/test_write_fast_path.py compares the two).

It sits inside the security-headers, metrics, rate-limit and body-size middleware, as the
route does, so those still see every request.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.image_fast_path import AnsweredRoute
from app.routers import impressions, interactions
from app.schemas import ImpressionCreate, InteractionCreate

# What a handler gives back: the status and the model to answer with (it raises to refuse).
Answer = tuple[int, BaseModel]
Handler = Callable[[Request, Any], Awaitable[Answer]]


async def _impression(request: Request, body: ImpressionCreate) -> Answer:
    settings = request.app.state.settings
    if body.simulated:  # the header is read only then: a miss costs a scan and a KeyError
        key = request.headers.get(impressions.SIMULATION_KEY_HEADER)
        impressions.check_simulated(settings, body, key)
    served = await impressions.serve_impression(
        body, request, settings=settings, ingest=request.app.state.ingest
    )
    return 201, served


async def _interaction(request: Request, body: InteractionCreate) -> Answer:
    state = request.app.state
    read = await interactions.record_interaction_read(
        body, settings=state.settings, ingest=state.ingest
    )
    return (200 if read.duplicate else 201), read


# path: (the route's body model, the handler); the path is also the route's template, which
# the metrics label the request with.
ROUTES: dict[str, tuple[type[BaseModel], Handler]] = {
    impressions.router.prefix: (ImpressionCreate, _impression),
    interactions.PREFIX: (InteractionCreate, _interaction),
}
ANSWERED = {path: AnsweredRoute(path) for path in ROUTES}
JSON_CONTENT_TYPE = (b"content-type", b"application/json")


def is_json(scope: Scope) -> bool:
    """Content-Type application/json (any parameters), the one type the fast path reads."""
    for name, value in scope["headers"]:
        if name == b"content-type":
            media_type: bytes = value.split(b";", 1)[0].strip().lower()
            return media_type == b"application/json"
    return False


async def read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left; nothing to answer
            raise ConnectionAbortedError
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def replay(body: bytes, receive: Receive) -> Receive:
    """The body already read, then what the connection says next (a disconnect)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


def parsed(model: type[BaseModel], body: bytes) -> BaseModel | None:
    """The body as the route would read it, or None where the route has to say why not."""
    try:
        return model.model_validate(json.loads(body))
    except (ValueError, RecursionError, ValidationError):  # JSON errors are ValueErrors
        return None


class PublicWriteAnswers:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if (
            route is None
            or scope["method"] != "POST"
            or scope.get("query_string")
            or not is_json(scope)
        ):
            await self.app(scope, receive, send)
            return
        try:
            raw = await read_body(receive)
        except ConnectionAbortedError:
            return
        model, handler = route
        body = parsed(model, raw)
        if body is None:
            await self.app(scope, replay(raw, receive), send)
            return
        scope["route"] = ANSWERED[scope["path"]]
        request = Request(scope, replay(raw, receive))
        try:
            status, answer = await handler(request, body)
        except Exception as exc:
            response = await self._error_response(request, exc)
            await response(scope, receive, send)
            return
        content = answer.__pydantic_serializer__.to_json(answer)
        # The headers Starlette's Response gives this body, in its order, without building one.
        headers = [(b"content-length", b"%d" % len(content)), JSON_CONTENT_TYPE]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    @staticmethod
    async def _error_response(request: Request, exc: Exception) -> Response:
        """The application's own answer to this exception, as the route's would be."""
        handlers = request.app.exception_handlers
        for cls in type(exc).__mro__:
            if cls in handlers:
                response: Response = await handlers[cls](request, exc)
                return response
        raise exc  # no handler: a 500 from the server-error middleware, as for the route
