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

Here, reading: each head metered and the parser's callbacks turned into requests. The
rest, one job a module: serving/protocol_connection.py (connection count, timers,
refusing; the base class), protocol_head.py (head bytes, pure), protocol_refusal.py
(the refusals and their answer), protocol_response.py (the one-write response) and
protocol_upgrade.py (an ignored upgrade's body).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any, ClassVar, cast

import httptools
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT

from serving.protocol_connection import BoundedConnection
from serving.protocol_head import HEAD_END, declared_length
from serving.protocol_head import open_head_bytes as _open_head_bytes
from serving.protocol_refusal import Refusal, body_too_large, parse_error
from serving.protocol_response import ResponseCycle
from serving.protocol_upgrade import body_parser, new_parser
from serving.server_settings import ConnectionLimits


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


class KilnHttpProtocol(BoundedConnection):
    """Reads requests into uvicorn's parser within the limits; the connection's clocks,
    eviction and refusals are ``BoundedConnection``'s (serving/protocol_connection.py)."""

    # The limits again, as plain class attributes: read on every request.
    _max_line: ClassVar[int] = BoundedConnection.limits.max_request_line
    _max_headers: ClassVar[int] = BoundedConnection.limits.max_headers
    _max_head: ClassVar[int] = BoundedConnection.limits.max_header_bytes
    _max_body: ClassVar[int] = BoundedConnection.limits.max_body_bytes
    # Per-request state is reset when a message ends (and at the start): the parser then
    # makes one Python call less per request.
    on_message_begin = None  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = b""
        self.headers = []
        self._tail = b""  # the current head's last bytes, where its end may straddle reads
        self._declared = -1  # this request's Content-Length, -1 without one
        self._body_left = -1  # bytes of a Content-Length body still to come; -1: none/chunked
        self._body_bytes = 0
        self._skip_complete = False  # an ignored upgrade: its body follows the head
        self._asgi = {"version": self.asgi_version, "spec_version": "2.3"}

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
        at = probe.find(HEAD_END)
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
        if self._in_head and not piece.endswith(HEAD_END):
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
            self._refuse(parse_error(err, self._max_body))
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
            self.parser = body_parser(self, chunked, self._declared)
            self._skip_complete = False
            self._in_head = False
            self._body_left = -1 if chunked else self._declared
        else:
            self.parser = new_parser(self)
        if offset < len(data):  # bytes the old parser did not take: body or next request
            self.data_received(data[offset:])

    # -- parser callbacks ------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > self._max_line:
            message = f"the request target exceeds {self._max_line} bytes"
            raise Refusal(414, "uri_too_long", message)

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"content-length":
            self._declared = declared_length(value, self._max_body)
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
        self.cycle = cycle = ResponseCycle(  # positional: cheaper than keywords, every request
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
            raise body_too_large(self._max_body)
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
