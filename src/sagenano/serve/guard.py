"""What every request passes before a route sees it, and what every response carries: a bounded body, a Host the
server answers to, and the browser security headers."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

MAX_BODY_BYTES = 64 * 1024  # the longest question, escaped as JSON, and every option fit many times over
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# The page loads only its own files; the interactive API docs (/docs, /redoc) load theirs from a CDN and are
# left out of the policy.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
_DOCS = ("/docs", "/redoc")
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer")]  # fmt: skip


class RequestGuard:
    """ASGI middleware: 413 for a body over `max_body_bytes` (from its Content-Length before anything is read,
    or as soon as a chunked body passes the limit), 400 for a Host not in `allowed_hosts` ("*": any), and
    nosniff / no-framing / CSP headers on every response."""

    def __init__(self, app: ASGIApp, allowed_hosts: tuple[str, ...] = ("*",), max_body_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.allowed = {host.lower() for host in allowed_hosts}
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {key.decode("latin-1").lower(): value.decode("latin-1") for key, value in scope["headers"]}
        host = _host_name(headers.get("host", ""))
        if "*" not in self.allowed and host not in self.allowed:
            named = f"the host {host!r}" if host else "a request without a Host header"
            await _problem(send, 400, f"this server does not answer to {named}; use one of "
                           f"{', '.join(sorted(self.allowed))} (sage-nano serve --allowed-host adds more)")  # fmt: skip
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body_bytes:
            await _problem(send, 413, self.too_large())
            return
        await self.app(scope, *_Exchange(receive, send, scope["path"], self).channels())

    def too_large(self) -> str:
        return f"the request body is over the server's limit of {self.max_body_bytes:,} bytes; send a shorter question"


class _Exchange:
    """One request's receive and send: the body counted as it arrives (past the limit the client gets 413 and
    the route sees a disconnect, so it stops), the security headers added to the response."""

    def __init__(self, receive: Receive, send: Send, path: str, guard: RequestGuard) -> None:
        self.receive, self.send, self.guard = receive, send, guard
        self.headers = list(SECURITY_HEADERS)
        if not path.startswith(_DOCS):
            self.headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
        self.seen, self.started, self.refused = 0, False, False

    def channels(self) -> tuple[Receive, Send]:
        return self.bounded_receive, self.guarded_send

    async def bounded_receive(self) -> Message:
        message = await self.receive()
        if message["type"] == "http.request":
            self.seen += len(message.get("body", b""))
            if self.seen > self.guard.max_body_bytes and not self.started:
                self.refused = True
                await _problem(self.send, 413, self.guard.too_large())
                return {"type": "http.disconnect"}
        return message

    async def guarded_send(self, message: Message) -> None:
        if self.refused:
            return  # the client has its 413; what the route answers to the "disconnect" goes nowhere
        if message["type"] == "http.response.start":
            self.started = True
            message = {**message, "headers": [*message.get("headers", []), *self.headers]}
        await self.send(message)


def _host_name(header: str) -> str:
    """The host of a Host header, without its port ("[::1]:8000" -> "::1", "localhost:8000" -> "localhost")."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.split(":", 1)[0]


async def _problem(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close"), *SECURITY_HEADERS,
               (b"content-security-policy", CONTENT_SECURITY_POLICY.encode())]  # fmt: skip
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
