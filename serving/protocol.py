"""uvicorn's httptools protocol with every read bounded, and JSON errors at the HTTP layer.

What one connection may cost (``ConnectionLimits``, from the environment):
- the request line (414) and the whole request head (431) in bytes, the header count
  (431): checked while bytes arrive, before the parser buffers them;
- the body (413), counted as it arrives on every route, and refused up front when
  Content-Length says it is too large (even 10**30, which the parser itself rejects);
- time: a request head must arrive within HEADER_TIMEOUT (a new connection that sends
  nothing is closed then; a partial head gets 408), a body within BODY_TIMEOUT of its
  head (408); between requests uvicorn's keep-alive timeout (KEEPALIVE) applies;
- connections: at MAX_CONNECTIONS per worker a new connection closes the oldest one
  that has no request in flight; when every one is busy, the newcomer gets 503.

Errors the protocol answers itself use the API's body, ``{"error": ..., "code": ...}``,
and close the connection; each one, and each idle or evicted connection it closes, is
counted in the ``kiln_refused`` metric by reason (serving/metrics.py). Where no answer
can be framed (a connection idle since it opened or since its last response, or one
whose response has already started) it is closed without one.

Timers are armed only when a read stays incomplete: a request that arrives in one
piece, as nearly all do, costs no timer at all.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar, cast

import httptools
import orjson
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from serving.refusals import count_refused
from serving.server_settings import ConnectionLimits


class Refusal(Exception):
    """A request the protocol answers itself, with the API's JSON error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def protocol_class(limits: ConnectionLimits) -> type[KilnHttpProtocol]:
    """A protocol class bound to ``limits``, with its own registry of open connections."""
    attributes = {
        "limits": limits,
        "open": {},
        "_max_line": limits.max_request_line,
        "_max_headers": limits.max_headers,
        "_max_head": limits.max_header_bytes,
        "_max_body": limits.max_body_bytes,
    }
    bound = type("KilnHttpProtocol", (KilnHttpProtocol,), attributes)
    return cast("type[KilnHttpProtocol]", bound)


class KilnHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # Open connections, oldest first (a dict is an ordered set): eviction candidates.
    open: ClassVar[dict[KilnHttpProtocol, None]] = {}
    # The limits again, as plain class attributes: read on every request.
    _max_line: ClassVar[int] = limits.max_request_line
    _max_headers: ClassVar[int] = limits.max_headers
    _max_head: ClassVar[int] = limits.max_header_bytes
    _max_body: ClassVar[int] = limits.max_body_bytes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._head_left = self._max_head
        self._body_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._over_capacity = False

    # -- connections -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        if len(self.open) >= self.limits.max_connections and not self._evict_one():
            self._over_capacity = True  # answered 503 once its head has arrived
        self.open[self] = None
        super().connection_made(transport)
        self._arm(self.limits.header_timeout, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self.open.pop(self, None)
        self._disarm()
        super().connection_lost(exc)

    def _evict_one(self) -> bool:
        """Close the oldest connection with no request in flight; False if all are busy."""
        for other in self.open:
            cycle = other.cycle
            if cycle is None or cycle.response_complete:
                self.open.pop(other)
                other._disarm()
                other.transport.close()
                count_refused("evicted")
                return True
        return False

    # -- reading ---------------------------------------------------------------------
    # The hot path: uvicorn's own callbacks are inlined here (uvicorn 0.3x-0.5x's
    # httptools_impl) rather than called through super(), which cost about 20% more per
    # request in bench/bench_protocol.py.

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if len(data) > self._head_left:
                self._feed_over_budget(data)
                return
            self._head_left -= len(data)
        self._feed(data)

    def _feed(self, data: bytes) -> None:
        """uvicorn's data_received, with kiln's answers to what the parser refuses."""
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None
        try:
            self.parser.feed_data(data)
        except Exception as err:
            self._parse_failed(err)
            return
        if self._timer is None and (not self._in_head or self._head_left < self._max_head):
            self._arm_if_incomplete()

    def _feed_over_budget(self, data: bytes) -> None:
        """Feed only what the head may still take; refuse if that does not end the head."""
        allowed = self._head_left
        self._head_left = 0
        self._feed(data[:allowed])
        if self.transport.is_closing():
            return
        if self._in_head and self._head_left == 0:  # the head is still not complete
            message = f"the request head exceeds {self._max_head} bytes"
            self._refuse(Refusal(431, "headers_too_large", message))
            return
        self.data_received(data[allowed:])

    def _parse_failed(self, err: Exception) -> None:
        if isinstance(err, httptools.HttpParserUpgrade):
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        elif isinstance(err, httptools.HttpParserCallbackError):
            cause = err.__context__
            if isinstance(cause, Refusal):
                self._refuse(cause)
            else:
                self.logger.error("the HTTP protocol failed", exc_info=cause or err)
                self._refuse(Refusal(400, "bad_request", "the request could not be read"))
        elif isinstance(err, httptools.HttpParserError):
            self._refuse(_parse_error(err, self._max_body))
        else:
            raise err

    def _arm_if_incomplete(self) -> None:
        if self.transport.is_closing():
            return
        if not self._in_head:
            self._arm(self.limits.body_timeout, self._body_timed_out)
        else:
            self._arm(self.limits.header_timeout, self._head_timed_out)

    # -- parser callbacks ------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self._max_line:
            message = f"the request target exceeds {self._max_line} bytes"
            raise Refusal(414, "uri_too_long", message)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        elif name == b"content-length":
            _check_declared_length(value, self._max_body)
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._body_bytes = 0
        if self._timer is not None:
            self._disarm()
        if len(self.headers) > self._max_headers:  # their bytes are bounded by the head's
            message = f"the request has more than {self._max_headers} headers"
            raise Refusal(431, "too_many_headers", message)
        if self._over_capacity:
            self._over_capacity = False
            raise Refusal(503, "server_busy", "too many connections; try again shortly")
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            raise _body_too_large(self._max_body)
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        self._in_head = True
        self._head_left = self._max_head
        if self._timer is not None:
            self._disarm()
        cycle = self.cycle
        if (self.parser.should_upgrade() and self._should_upgrade()) or cycle.response_complete:
            return
        cycle.more_body = False
        cycle.message_event.set()

    # -- timers ------------------------------------------------------------------------

    def _arm(self, seconds: float, callback: Any) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _head_timed_out(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._head_left == self._max_head:  # nothing arrived: idle
            self.transport.close()
            count_refused("idle_timeout")
            return
        seconds = self.limits.header_timeout
        self._refuse(Refusal(408, "request_timeout", f"the request head took over {seconds:g} s"))

    def _body_timed_out(self) -> None:
        self._timer = None
        if not self.transport.is_closing():
            seconds = self.limits.body_timeout
            message = f"the request body took over {seconds:g} s"
            self._refuse(Refusal(408, "request_timeout", message))

    # -- answering -----------------------------------------------------------------------

    def _refuse(self, refusal: Refusal) -> None:
        """Answer ``refusal`` if no response is under way on this connection; close it."""
        self._disarm()
        count_refused(refusal.code)
        cycle = self.cycle
        answerable = cycle is None or (
            cycle.response_complete if self._in_head else not cycle.response_started
        )
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        self.logger.warning("%s refused (%d): %s", client, refusal.status, refusal.message)
        if answerable:
            self.transport.write(self._error_response(refusal))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app stops waiting for this request's body
            cycle.message_event.set()
        self.transport.close()

    def _error_response(self, refusal: Refusal) -> bytes:
        body = orjson.dumps({"error": refusal.message, "code": refusal.code})
        head = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        return b"".join(head) + body


def _check_declared_length(value: bytes, limit: int) -> None:
    try:
        declared = int(value)
    except ValueError:
        return  # the parser refuses a malformed Content-Length itself
    if declared > limit:
        raise _body_too_large(limit)


def _body_too_large(limit: int) -> Refusal:
    # The same words as the app's own check (serving/validation.py).
    return Refusal(413, "body_too_large", f"the request body exceeds the limit of {limit} bytes")


def _parse_error(err: httptools.HttpParserError, max_body: int) -> Refusal:
    reason = str(err) or type(err).__name__
    if "Content-Length overflow" in reason:  # llhttp's words for a length beyond 2**64
        return _body_too_large(max_body)
    return Refusal(400, "bad_request", f"invalid HTTP request: {reason}")
