"""uvicorn's httptools protocol with every read bounded, and JSON errors at the HTTP layer.

What one connection may cost (``ConnectionLimits``, from the environment):
- the request line (414) and each request head (431) in bytes, the header count (431):
  checked before the parser buffers the bytes;
- the body (413), counted as it arrives on every route, and refused up front when
  Content-Length says it is too large (even 10**30, which the parser itself rejects);
- time: a request head must arrive within HEADER_TIMEOUT (a new connection that sends
  nothing is closed then; a partial head gets 408), a body within BODY_TIMEOUT of its
  head (408); between requests uvicorn's keep-alive timeout (KEEPALIVE) applies;
- connections: at MAX_CONNECTIONS per worker a new connection closes the oldest one
  that has no request in flight; when every one is busy, the newcomer gets 503.

Errors the protocol answers itself use the API's body, ``{"error": ..., "code": ...}``,
and close the connection; each one, and each idle or evicted connection it closes, is
counted in the ``kiln_refused`` metric by reason (serving/metrics.py). Pipelined
requests are answered in order: a request refused behind others still in flight is
answered after them. Where no answer can be framed (a connection idle since it opened or
since its last response, or one whose response has already started) it is closed
without one.

HTTP/1.1 only: an ``Upgrade`` (h2c, websocket) is ignored as RFC 9110 allows, and the
request, body included, is answered over HTTP/1.1. CONNECT and request targets that are
not a path get 400.

Request heads are measured per head, also when pipelined, so a body or a next request
is never counted as (or hidden in) a head: a read within the head budget is fed whole,
and a head it leaves open after pipelined requests is charged exactly its bytes there;
a larger read is cut at each head's end and each Content-Length body's end before the
parser sees it. After a chunked body the next head is charged what followed the body in
the same read (an upper bound).

Per request, the hot path costs one parser feed, no timer (head and body timers are
armed only when a read stays incomplete; one keep-alive timer per connection is rearmed
when it fires) and one write: the response head goes out with the body.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from typing import Any, ClassVar, cast

import httptools
import orjson
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT
from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

from serving.refusals import count_refused
from serving.server_settings import ConnectionLimits

_HEAD_END = b"\r\n\r\n"


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


def _new_parser(callbacks: object) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(callbacks)
    # As uvicorn does: answer the first of pipelined requests sent after "Connection: close".
    parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


class KilnHttpProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # Open connections, oldest first (a dict is an ordered set): eviction candidates.
    open: ClassVar[dict[KilnHttpProtocol, None]] = {}
    # The limits again, as plain class attributes: read on every request.
    _max_line: ClassVar[int] = limits.max_request_line
    _max_headers: ClassVar[int] = limits.max_headers
    _max_head: ClassVar[int] = limits.max_header_bytes
    _max_body: ClassVar[int] = limits.max_body_bytes
    # Per-request state is reset when a message ends (and at the start): the parser then
    # makes one Python call less per request.
    on_message_begin = None  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = b""
        self.headers = []
        self._in_head = True  # until the current request's head is complete
        self._head_used = 0  # bytes of the current head fed so far
        self._tail = b""  # its last bytes, where its end may straddle two reads
        self._declared = -1  # this request's Content-Length, -1 without one
        self._body_left = -1  # bytes of a Content-Length body still to come; -1: none/chunked
        self._body_bytes = 0
        self._unanswered = 0  # requests parsed whose responses are not complete
        self._refusal: Refusal | None = None  # waits for the responses before it
        self._skip_complete = False  # an ignored upgrade: its body follows the head
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
        self._over_capacity = False
        self._asgi = {"version": self.asgi_version, "spec_version": "2.3"}

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
        self._unset_keepalive_if_required()
        super().connection_lost(exc)

    def _evict_one(self) -> bool:
        """Close the oldest connection with no request in flight; False if all are busy."""
        for other in self.open:
            if not other._unanswered:
                self.open.pop(other)
                other._disarm()
                other.transport.close()
                count_refused("evicted")
                return True
        return False

    # -- reading ---------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self._refusal is not None:
            return  # refused: nothing more is read on this connection
        used = self._head_used
        if self._in_head and len(data) <= self._max_head - used:
            # Nearly every read: one or more whole requests within a head's budget, fed at
            # once. A head left open at the end is charged exactly what it has here.
            self._head_used = used + len(data)
            try:
                self.parser.feed_data(data)
            except Exception as err:
                self._parse_failed(err, data)
                if self._refusal is not None:
                    return  # answered now or after the requests before it; no timer
            if self._in_head and not self._head_used and self.url:
                self._head_used = _open_head_bytes(data, used)
                self._tail = data[-3:]
            elif self._head_used:
                self._tail = (self._tail + data)[-3:]
            if self._timer is None and (not self._in_head or self._head_used):
                self._arm_incomplete()
            return
        while data:
            if self._in_head:
                data = self._feed_head(data)
            elif 0 <= self._body_left < len(data):  # the body ends in this read
                left = self._body_left
                self._feed(data[:left])
                data = data[left:]
            elif self._body_left < 0:  # chunked
                data = self._feed_chunked(data)
            else:
                self._feed(data)
                data = b""
            if self._refusal is not None or self.transport.is_closing():
                return
        if self._timer is None and (not self._in_head or self._head_used):
            self._arm_incomplete()

    def _feed_head(self, data: bytes) -> bytes:
        """Feed a head's bytes, cut at its end; return what follows it (body, next request)."""
        used = self._head_used
        room = self._max_head - used
        # A head that began in an earlier read may end across the two.
        probe = self._tail + data if used else data
        at = probe.find(_HEAD_END)
        if at < 0:  # no end yet
            if len(data) > room:
                return self._head_too_large(data, room)
            self._head_used = used + len(data)
            self._tail = probe[-3:]
            self._feed(data)
            return b""
        size = at + 4 - (len(probe) - len(data))
        if size > room:
            return self._head_too_large(data, room)
        self._head_used = 0
        if size >= len(data):
            self._feed(data)
            return b""
        self._feed(data[:size])
        return data[size:]

    def _head_too_large(self, data: bytes, room: int) -> bytes:
        # The parser sees what the head may hold first: a 414 or 400 there says more.
        self._feed(data[: max(room, 0)])
        if self._refusal is None and not self.transport.is_closing():
            message = f"the request head exceeds {self._max_head} bytes"
            self._refuse(Refusal(431, "headers_too_large", message))
        return b""

    def _feed_chunked(self, data: bytes) -> bytes:
        """A chunked body, fed at most a head's budget at a time; where it ends inside a
        piece and a next head follows, that head is charged the whole piece (where it
        begins there is not known)."""
        piece = data[: self._max_head]
        self._feed(piece)
        if self._in_head and not piece.endswith(_HEAD_END):
            self._head_used = len(piece)
            self._tail = piece[-3:]
        return data[len(piece) :]

    def _feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except Exception as err:
            self._parse_failed(err, data)

    def _parse_failed(self, err: Exception, data: bytes) -> None:
        if isinstance(err, httptools.HttpParserUpgrade):
            self._upgrade_ignored(data, err.args[0] if err.args else len(data))
        elif isinstance(err, httptools.HttpParserCallbackError):
            cause = err.__context__
            if isinstance(cause, Refusal):
                self._refuse(cause)
            else:  # a bug here, not the client's fault: keep its traceback
                self.logger.error("the HTTP protocol failed", exc_info=cause or err)
                self._refuse(Refusal(400, "bad_request", "the request could not be read"))
        elif isinstance(err, httptools.HttpParserError):
            self._refuse(_parse_error(err, self._max_body))
        else:
            raise err

    def _upgrade_ignored(self, data: bytes, offset: int) -> None:
        """The parser stops after a head asking for an upgrade (h2c, websocket), taking
        any body to be the new protocol's. kiln speaks HTTP/1.1 only: a fresh parser
        reads the body the head declared, then the connection goes on as before."""
        if self._refusal is not None or self.transport.is_closing():
            return
        chunked = any(
            name == b"transfer-encoding" and value.lower().endswith(b"chunked")
            for name, value in self.cycle.scope["headers"]
        )
        if self._skip_complete:  # a body follows: frame it for a parser of its own
            callbacks = _AfterUpgrade(self)
            self.parser = _new_parser(callbacks)
            framing = (
                b"transfer-encoding: chunked"
                if chunked
                else b"content-length: %d" % (self._declared)
            )
            self.parser.feed_data(b"POST / HTTP/1.1\r\n%s\r\n\r\n" % framing)
            callbacks.priming = False
            self._skip_complete = False
            self._in_head = False
            self._body_left = -1 if chunked else self._declared
        else:
            self.parser = _new_parser(self)
        if offset < len(data):  # bytes the old parser did not take: body or next request
            self.data_received(data[offset:])

    def _arm_incomplete(self) -> None:
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
        if name == b"content-length":
            self._declared = _declared_length(value, self._max_body)
        elif name == b"expect" and value.lower() == b"100-continue":
            self.expect_100_continue = True
        self.headers.append((name, value.rstrip(b" \t")))  # llhttp keeps trailing blanks

    def on_headers_complete(self) -> None:
        if len(self.headers) > self._max_headers:  # their bytes are bounded by the head's
            message = f"the request has more than {self._max_headers} headers"
            raise Refusal(431, "too_many_headers", message)
        if self._over_capacity:
            self._over_capacity = False
            raise Refusal(503, "server_busy", "too many connections; try again shortly")
        parser = self.parser
        self.scope = scope = self._request_scope(parser)  # type: ignore[assignment]
        version = scope["http_version"]
        if parser.should_upgrade():  # ignored; a body it declares is read all the same
            self._skip_complete = self._declared > 0 or any(
                name == b"transfer-encoding" for name, _ in self.headers
            )
        running = self.cycle
        self.cycle = cycle = _Cycle(  # positional: cheaper than keywords, every request
            scope,  # type: ignore[arg-type]
            self.transport,
            self.flow,
            self.logger,
            self.access_logger,
            self.access_log,
            self.server_state.default_headers,
            asyncio.Event(),
            self.expect_100_continue,
            version != "1.0" and parser.should_keep_alive(),
            self.on_response_complete,
        )
        self._unanswered += 1
        self._in_head = False
        self._body_left = self._declared
        self._body_bytes = 0
        if self._timer is not None:
            self._disarm()
        if running is None or running.response_complete:
            self._start_asgi_task(cycle, self.app)
        else:  # pipelined: started when the ones before it are answered
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, self.app))

    def _request_scope(self, parser: httptools.HttpRequestParser) -> dict[str, Any]:
        method = parser.get_method().decode("ascii")
        if method == "CONNECT":
            raise Refusal(400, "bad_request", "CONNECT is not served: this server is no proxy")
        try:
            url = httptools.parse_url(self.url)
        except httptools.HttpParserInvalidURLError:
            raise Refusal(400, "bad_request", "the request target is not a path") from None
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        root = self.root_path
        return {
            "type": "http",
            "asgi": self._asgi,
            "http_version": parser.get_http_version(),
            "server": self.server,
            "client": self.client,
            "scheme": self.scheme,
            "method": method,
            "root_path": root,
            "path": root + path,
            "raw_path": root.encode("ascii") + raw_path,
            "query_string": url.query or b"",
            "headers": self.headers,
            "state": self.app_state.copy(),
        }

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self._max_body:
            raise _body_too_large(self._max_body)
        if self._body_left > 0:
            self._body_left -= len(body)
        cycle = self.cycle
        if cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > HIGH_WATER_LIMIT:
            self.flow.pause_reading()
        cycle.message_event.set()

    def on_message_complete(self) -> None:
        if self._skip_complete:
            return  # an ignored upgrade's head: its body is still to come
        self._in_head = True
        self._head_used = 0
        self.url = b""
        self.headers = []
        self._declared = -1
        self._body_left = -1
        self.expect_100_continue = False
        if self._timer is not None:
            self._disarm()
        cycle = self.cycle
        if cycle.response_complete:
            return
        cycle.more_body = False
        cycle.message_event.set()

    # -- responses ---------------------------------------------------------------------

    def on_response_complete(self) -> None:
        self.server_state.total_requests += 1
        self._unanswered -= 1
        if self.transport.is_closing():
            return
        if self.pipeline:
            self.flow.resume_reading()
            cycle, app = self.pipeline.pop()
            self._start_asgi_task(cycle, app)
        elif self._refusal is not None:
            if not self._unanswered:
                self._answer(self._refusal)
        else:
            self.flow.resume_reading()
            # Idle from now: the keep-alive clock. One timer per connection stays armed
            # across requests and looks at the last response's time when it fires, instead
            # of a timer made and cancelled for every request.
            self._idle_since = self.loop.time()
            if self.timeout_keep_alive_task is None:
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self._keep_alive_expired
                )

    def _keep_alive_expired(self) -> None:
        self.timeout_keep_alive_task = None
        if self.transport.is_closing() or self._unanswered or not self._in_head:
            return  # busy: the next response rearms it
        if self._head_used:
            return  # a head is arriving: the head timer applies
        left = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if left > 0:
            self.timeout_keep_alive_task = self.loop.call_later(left, self._keep_alive_expired)
        else:
            self.transport.close()

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
        if not self._head_used:  # nothing arrived: idle
            if self._unanswered:
                return  # requests in flight: their responses rearm the clock
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

    # -- refusing ----------------------------------------------------------------------

    def _refuse(self, refusal: Refusal) -> None:
        """Refuse the request being read: answered at once, or after the responses to
        the requests before it; nothing more is read."""
        self._disarm()
        count_refused(refusal.code)
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        self.logger.warning("%s refused (%d): %s", client, refusal.status, refusal.message)
        self._refusal = refusal
        self.transport.pause_reading()
        if not self._in_head:  # refused in its body: the request has a cycle already
            cycle = self.cycle
            if cycle.response_started:  # answered or answering: no second answer fits
                self.transport.close()
                return
            queued = next((item for item in self.pipeline if item[0] is cycle), None)
            if queued is not None:  # never started: it leaves the queue
                self.pipeline.remove(queued)
            cycle.disconnected = True  # the app stops waiting for this request's body
            cycle.message_event.set()
            self._unanswered -= 1  # answered here, not by the app
        if not self._unanswered:
            self._answer(refusal)

    def _answer(self, refusal: Refusal) -> None:
        if self.transport.is_closing():
            return
        body = orjson.dumps({"error": refusal.message, "code": refusal.code})
        head = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            head.append(b"%s: %s\r\n" % (name, value))
        head.append(b"content-type: application/json\r\n")
        head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
        self.transport.write(b"".join(head) + body)
        self.transport.close()


class _AfterUpgrade:
    """The parser callbacks of a connection whose upgrade was ignored: the fresh parser
    first reads a made-up head (swallowed here) that frames the body the real head
    declared; from then on every callback goes to the protocol."""

    def __init__(self, protocol: KilnHttpProtocol) -> None:
        self.protocol = protocol
        self.priming = True

    def on_url(self, url: bytes) -> None:
        if not self.priming:
            self.protocol.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.priming:
            self.protocol.on_header(name, value)

    def on_headers_complete(self) -> None:
        if not self.priming:
            self.protocol.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self.protocol.on_body(body)

    def on_message_complete(self) -> None:
        self.protocol.on_message_complete()


_defaults: list[Any] = [None, b""]  # the server's date and server headers, and their bytes


def _default_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The server's own headers (a new list each second, for the date), as bytes: made
    once per list, not per response."""
    if headers is not _defaults[0]:
        _defaults[:] = [headers, b"".join(b"%s: %s\r\n" % (n.lower(), v) for n, v in headers)]
    return cast(bytes, _defaults[1])


class _Cycle(RequestResponseCycle):
    """uvicorn's request/response cycle, but the response head is written together with
    the first body bytes: one write (one syscall, usually one TCP segment) per response
    instead of two."""

    _head: bytes = b""

    async def send(self, message: Any) -> None:
        if self.flow.write_paused and not self.disconnected:
            await self.flow.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', but got '{kind}'."
                )
            self.response_started = True
            self.waiting_for_100_continue = False
            self._head = self._response_head(message["status"], message.get("headers", ()))
            return
        if self.response_complete:
            raise RuntimeError(
                f"Unexpected ASGI message '{kind}' sent, after response already completed."
            )
        if kind != "http.response.body":
            raise RuntimeError(f"Expected ASGI message 'http.response.body', but got '{kind}'.")
        body = message.get("body", b"")
        more_body = message.get("more_body", False)
        out, self._head = self._head, b""
        if self.scope["method"] == "HEAD":
            self.expected_content_length = 0
        elif self.chunked_encoding:
            if body:
                out += b"%x\r\n%s\r\n" % (len(body), body)
            if not more_body:
                out += b"0\r\n\r\n"
        else:
            if len(body) > self.expected_content_length:
                raise RuntimeError("Response content longer than Content-Length")
            self.expected_content_length -= len(body)
            out += body
        if out:
            self.transport.write(out)
        if not more_body:
            if self.expected_content_length != 0:
                raise RuntimeError("Response content shorter than Content-Length")
            self.response_complete = True
            self.message_event.set()
            if not self.keep_alive:
                self.transport.close()
            self.on_response()

    def _response_head(self, status: int, headers: Any) -> bytes:
        """Status line and headers, as uvicorn writes them (same checks, same defaults)."""
        if self.access_log:
            self.access_logger.info(
                '%s - "%s %s HTTP/%s" %d',
                get_client_addr(self.scope),
                self.scope["method"],
                get_path_with_query_string(self.scope),
                self.scope["http_version"],
                status,
            )
        content = [STATUS_LINE[status], _default_headers(self.default_headers)]
        close = False
        for name, value in headers:
            if HEADER_RE.search(name):
                raise RuntimeError("Invalid HTTP header name.")
            if HEADER_VALUE_RE.search(value):
                raise RuntimeError("Invalid HTTP header value.")
            name = name.lower()
            if name == b"content-length" and self.chunked_encoding is None:
                self.expected_content_length = int(value.decode())
                self.chunked_encoding = False
            elif name == b"transfer-encoding" and value.lower() == b"chunked":
                self.expected_content_length = 0
                self.chunked_encoding = True
            elif name == b"connection" and b"close" in (
                t.strip() for t in value.lower().split(b",")
            ):
                self.keep_alive = False
                close = True
            content.append(b"%s: %s\r\n" % (name, value))
        if not self.keep_alive and not close:
            content.append(b"connection: close\r\n")
        if (
            self.chunked_encoding is None
            and self.scope["method"] != "HEAD"
            and status not in (204, 304)
        ):
            self.chunked_encoding = True
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        return b"".join(content)


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.IGNORECASE)


def _open_head_bytes(data: bytes, used: int) -> int:
    """The bytes of the head still open at the end of ``data``, after the requests that
    ended in it (rare: pipelining). The parser has taken every complete one, so each
    head ends at the first blank line from its start and its body is its Content-Length.
    Where that cannot be told (a chunked body, a head begun in an earlier read), all that
    follows the first head's end is charged: an upper bound."""
    first = data.find(_HEAD_END)
    if used:  # the first head began in an earlier read
        return len(data) - (first + 4)
    at = 0
    while True:
        while data.startswith(b"\r\n", at):  # blank lines between requests are allowed
            at += 2
        end = data.find(_HEAD_END, at)
        if end < 0:
            return len(data) - at
        head = data[at:end]
        if _CHUNKED.search(head):
            return len(data) - (end + 4)
        length = _CONTENT_LENGTH.search(head)
        at = end + 4 + (int(length.group(1)) if length else 0)
        if at >= len(data):
            return 0


def _declared_length(value: bytes, limit: int) -> int:
    try:
        declared = int(value)
    except ValueError:
        return -1  # the parser refuses a malformed Content-Length itself
    if declared > limit:
        raise _body_too_large(limit)
    return declared


def _body_too_large(limit: int) -> Refusal:
    # The same words as the app's own check (serving/validation.py).
    return Refusal(413, "body_too_large", f"the request body exceeds the limit of {limit} bytes")


def _parse_error(err: httptools.HttpParserError, max_body: int) -> Refusal:
    reason = str(err) or type(err).__name__
    if "Content-Length overflow" in reason:  # llhttp's words for a length beyond 2**64
        return _body_too_large(max_body)
    return Refusal(400, "bad_request", f"invalid HTTP request: {reason}")
