"""The REST API and the web page of `sage-nano serve`: thin over `sagenano.explain` and its interactions.

POST /v1/explain, /v1/compare, /v1/counterfactual, /v1/simplify (each also as …/stream: server-sent events
with the work's progress, then the result), GET /v1/reports/{id} (at any depth, nothing recomputed),
/v1/reports/{id}/json (the report file), /v1/model, /healthz, and the page at /. OpenAPI at /openapi.json.

Every rejection is a 4xx whose `detail` says what to change; a full queue is 503 with Retry-After; work past the
time limit is 504. The endpoints are in `routes.py`, their bodies in `schemas.py`, the running of their work in
`work.py`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from ..loading import LoadedModel
from .guard import RequestGuard
from .routes import STATIC, router
from .server import Server, ServerSettings, default_store_path

__all__ = ["ServerSettings", "create_app", "default_store_path"]


def create_app(loaded: LoadedModel, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app serving one loaded model."""
    server = Server.from_settings(loaded, settings or ServerSettings())
    app = FastAPI(
        lifespan=_lifespan,
        title="SAGE-nano",
        version="1",
        summary="Inverse reasoning: why a model chose its reasoning chain, with every claim checked on the model.",
    )
    app.state.server = server
    app.state.worker, app.state.store = server.worker, server.store
    app.exception_handler(RequestValidationError)(_invalid_request)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.openapi = _with_server_limits(app.openapi, server.settings)
    app.add_middleware(
        RequestGuard, allowed_hosts=server.settings.allowed_hosts, max_body_bytes=server.settings.max_body_bytes
    )
    return app


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    server: Server = app.state.server
    server.store.open()
    server.worker.start()
    yield
    server.worker.shutdown()
    server.store.close()


def _with_server_limits(openapi: Callable[[], dict], settings: ServerSettings) -> Callable[[], dict]:
    """The OpenAPI document with this server's own limits on the question and max_new_tokens (it may allow less than
    the API's bounds), so that a client that follows the schema is never refused for them."""

    def limited() -> dict:
        schema = openapi()  # FastAPI's cached document: applying the limits again on each call changes nothing
        for body in schema.get("components", {}).get("schemas", {}).values():
            fields = body.get("properties", {})
            if "maxLength" in fields.get("question", {}):  # a request's question (a report's has no bound)
                fields["question"]["maxLength"] = min(fields["question"]["maxLength"], settings.max_question_chars)
            if "max_new_tokens" in fields and "maximum" in fields["max_new_tokens"]:
                tokens = fields["max_new_tokens"]
                tokens["maximum"] = min(tokens["maximum"], settings.max_new_tokens)
                tokens["default"] = min(tokens["default"], tokens["maximum"])
        return schema

    return limited


_NOT_JSON = 'the request body is not valid JSON; send an object such as {"question": "If 3x + 2 = 14, what is x?"}'


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 (400 for a body that is not JSON) with one readable line per problem."""
    problems = error.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return JSONResponse({"detail": _NOT_JSON}, status_code=400)
    lines = []
    for p in problems:
        where = ".".join(str(part) for part in p.get("loc", ())[1:]) or ".".join(map(str, p.get("loc", ())))
        lines.append(f"{where}: {p.get('msg', 'invalid')}")
    clean = [{k: v for k, v in p.items() if k in ("loc", "msg", "type")} for p in problems]
    return JSONResponse({"detail": "; ".join(lines), "errors": jsonable_encoder(clean)}, status_code=422)
