"""Who the server answers, and for how long it waits: Host and Origin checks, access tokens, and
timeouts for requests that stop half-way.

- :class:`AccessGuard` (ASGI middleware) answers 400 to a ``Host`` header that is not an allowed
  host name (DNS rebinding), 403 to a POST/PUT/PATCH/DELETE or a WebSocket handshake whose
  ``Origin`` is not the app's own or an allowed one (a web page on another site driving the
  server), and 401 to an ``/api/`` request without a valid token when tokens are configured.
  The owner of a request (a hash of its token, never the token) goes into
  ``scope["emolens.owner"]``.
- :class:`TimedH11Protocol` (uvicorn's h11 protocol plus two timers) closes a connection whose
  request headers are not complete ``header_timeout`` seconds after it opened (or after a new
  request began), and one whose request body stops arriving for ``body_timeout`` seconds, with a
  408 answer when no answer was started yet.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OWNER_KEY = "emolens.owner"


def token_owner(token: str) -> str:
    """The owner id stored with a job for ``token``: a short hash (the token itself is never stored)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()[:16]


def split_host(value: str) -> tuple[str, int | None]:
    """``("name", port)`` of a ``Host`` header or URL netloc (``[::1]:8000`` -> ``("::1", 8000)``);
    the name lower-cased, without a trailing dot; port None when absent or not a number."""
    value = value.strip().lower()
    port: int | None = None
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        if rest.startswith(":") and rest[1:].isdigit():
            port = int(rest[1:])
    elif value.count(":") == 1:
        name, _, p = value.partition(":")
        port = int(p) if p.isdigit() else None
    else:
        name = value  # a bare name, or an unbracketed IPv6 address
    return name.rstrip("."), port


def default_allowed_hosts(bind: str) -> list[str]:
    """The bind address and the loopback names; for a wildcard bind (0.0.0.0, ::) also this
    machine's host name and the addresses it resolves to (other names need ``--allowed-hosts``)."""
    names = [*LOOPBACK_NAMES]
    if bind in WILDCARD_ADDRESSES:
        names.append(socket.gethostname())
        try:
            names += [str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)]
        except OSError:
            pass
    else:
        names.append(bind)
    return sorted({split_host(n)[0] for n in names if n})


class AccessGuard:
    """ASGI middleware: Host, Origin and token checks (see the module docstring).

    ``allowed_hosts``: host names (``"*"``: any); ``allowed_origins``: origins such as
    ``http://localhost:8000`` accepted besides the app's own (``"*"``: any; None: the allowed
    hosts on the port the request arrived on); ``tokens``: accepted access tokens (empty: no token).
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str], allowed_origins: Iterable[str] | None = None,
                 tokens: Iterable[str] = ()) -> None:
        self.app = app
        hosts = {split_host(h)[0] for h in allowed_hosts}
        self.any_host = "*" in hosts
        self.hosts = frozenset(hosts - {"*"})
        origins = None if allowed_origins is None else {o.strip().lower().rstrip("/") for o in allowed_origins}
        self.any_origin = origins is not None and "*" in origins
        self.origins = None if origins is None else frozenset(origins - {"*"})
        self.tokens = tuple(t for t in tokens if t)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        refusal = self.check(scope, headers)
        if refusal is not None:
            await self._refuse(scope, send, *refusal)
            return
        await self.app(scope, receive, send)

    # -- the checks ------------------------------------------------------------------------------
    def check(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        """``(status, message)`` when the request must be refused, else None (and sets the owner)."""
        host = headers.get("host", "")
        name, _ = split_host(host)
        if not self.any_host and name not in self.hosts:
            shown = host[:80] if host else "(none)"
            return 400, (f"host {shown!r} is not allowed by this server; allowed: {', '.join(sorted(self.hosts))} "
                         "(emolens serve --allowed-hosts)")
        if scope["type"] == "websocket" or scope.get("method", "GET").upper() in UNSAFE_METHODS:
            origin = headers.get("origin")
            if origin is not None and not self.origin_ok(origin, host, scope):
                return 403, (f"cross-origin request refused: Origin {origin[:100]!r} is not this server's own "
                             "(emolens serve --allowed-origins)")
            if origin is None and headers.get("sec-fetch-site", "") == "cross-site":
                return 403, "cross-origin request refused (Sec-Fetch-Site: cross-site)"
        scope[OWNER_KEY] = None
        if self.tokens and scope.get("path", "").startswith("/api/"):
            token = self.token_of(scope, headers)
            if token is None:
                return 401, ("this server needs an access token: send it as 'Authorization: Bearer TOKEN' or "
                             "'X-Emolens-Token: TOKEN' (WebSocket: ?token=TOKEN)")
            if not any(hmac.compare_digest(token.encode("utf-8"), t.encode("utf-8")) for t in self.tokens):
                return 401, "invalid access token"
            scope[OWNER_KEY] = token_owner(token)
        return None

    def origin_ok(self, origin: str, host: str, scope: Scope) -> bool:
        """True for the app's own origin (the request's ``Host``, which passed the host check) and
        for the allowed origins."""
        if self.any_origin:
            return True
        origin = origin.strip().lower().rstrip("/")
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.path or parts.query:
            return False
        if parts.netloc == host.strip().lower():
            return True
        if self.origins is not None:
            return origin in self.origins
        name, port = split_host(parts.netloc)
        port = port or (443 if parts.scheme == "https" else 80)
        served = (scope.get("server") or (None, None))[1]
        return (self.any_host or name in self.hosts) and port == served

    @staticmethod
    def token_of(scope: Scope, headers: dict[str, str]) -> str | None:
        """The token of a request: ``Authorization: Bearer``, ``X-Emolens-Token``, or (WebSocket)
        the ``token`` query parameter."""
        auth = headers.get("authorization", "")
        if auth[:7].lower() == "bearer " and auth[7:].strip():
            return auth[7:].strip()
        if headers.get("x-emolens-token", "").strip():
            return headers["x-emolens-token"].strip()
        if scope["type"] == "websocket":
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if query.get("token") and query["token"][0]:
                return query["token"][0]
        return None

    @staticmethod
    async def _refuse(scope: Scope, send: Send, status: int, message: str) -> None:
        body = json.dumps({"detail": message}).encode("utf-8")
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if status == 401:
            headers.append((b"www-authenticate", b'Bearer realm="emolens"'))
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body})
        elif "websocket.http.response" in scope.get("extensions", {}):
            await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": body})
        else:  # the server answers a refused handshake with 403
            await send({"type": "websocket.close", "code": 1008})


# ------------------------------------------------------------------------------------- logging


class RedactTokens(logging.Filter):
    """Replaces ``token=...`` in log records (uvicorn logs WebSocket paths with their query)."""

    PATTERN = re.compile(r"(token=)[^&\s\"']+", re.IGNORECASE)

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact the message and its arguments; never drops a record."""
        if isinstance(record.msg, str):
            record.msg = self.PATTERN.sub(r"\1***", record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(self.PATTERN.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_tokens_in_logs() -> None:
    """Install :class:`RedactTokens` on uvicorn's loggers (once)."""
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactTokens) for f in logger.filters):
            logger.addFilter(RedactTokens())


# ------------------------------------------------------------------------------------- timeouts

_BODY_408 = b'{"detail": "request timeout: the request stopped arriving"}'
RESPONSE_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: " + str(len(_BODY_408)).encode() + b"\r\n\r\n" + _BODY_408)


def timed_h11_protocol(header_timeout: float, body_timeout: float) -> type:
    """uvicorn's h11 protocol class with the two timers of :class:`TimedH11Protocol`."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class TimedH11Protocol(H11Protocol):  # type: ignore[misc]
        """Closes connections whose request headers take longer than ``header_timeout`` seconds in
        all, or whose body stops arriving for ``body_timeout`` seconds (also after an early answer,
        such as 413, while the client keeps the rest of its body)."""

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            self._timer: asyncio.TimerHandle | None = None
            self._timer_kind = ""
            self._upgraded = False
            super().connection_made(transport)
            self._arm("header", header_timeout)  # the first request's headers must come in time

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._watch()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            self._watch()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        def handle_websocket_upgrade(self, event: Any) -> None:
            self._cancel()  # the WebSocket protocol takes over (it has its own pings)
            self._upgraded = True
            super().handle_websocket_upgrade(event)

        # -- timers ------------------------------------------------------------------------------
        def _watch(self) -> None:
            if self._upgraded or self.transport is None or self.transport.is_closing():
                self._cancel()
                return
            theirs, ours = self.conn.their_state, self.conn.our_state
            if theirs is h11.SEND_BODY:
                if ours in (h11.DONE, h11.MUST_CLOSE):  # answered early: the rest of the body has one period
                    if self._timer_kind != "drain":
                        self._arm("drain", body_timeout)
                else:  # an idle timer: restarted by every piece of the body
                    self._arm("body", body_timeout)
            elif theirs is h11.IDLE and self.conn.trailing_data[0]:  # headers of a request in progress
                if self._timer_kind != "header":
                    self._arm("header", header_timeout)
            else:  # request complete (the app works), or idle between requests (uvicorn's keep-alive)
                self._cancel()

        def _arm(self, kind: str, seconds: float) -> None:
            self._cancel()
            self._timer_kind = kind
            self._timer = self.loop.call_later(seconds, self._expired)

        def _cancel(self) -> None:
            if getattr(self, "_timer", None) is not None:
                self._timer.cancel()  # type: ignore[union-attr]
            self._timer, self._timer_kind = None, ""

        def _expired(self) -> None:
            self._timer, self._timer_kind = None, ""
            if self.transport.is_closing():
                return
            cycle = self.cycle
            if cycle is not None and cycle.response_started is False and not cycle.response_complete:
                cycle.disconnected = True  # the app sees a disconnect; its late answer is dropped
                cycle.message_event.set()
                self.transport.write(RESPONSE_408)
            elif self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:  # half-sent headers
                self.transport.write(RESPONSE_408)
            self.transport.close()

    return TimedH11Protocol
