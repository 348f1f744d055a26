"""The response side of a request: uvicorn's cycle, with the head written with the body.

uvicorn writes a response's head and its body apart, two sends per response; here the
head is kept until the first body bytes and both go out in one write (one syscall,
usually one TCP segment). The server's own headers (date, server) are encoded once per
list, that is once a second, not per response.
"""

from __future__ import annotations

from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import (
    HEADER_RE,
    HEADER_VALUE_RE,
    STATUS_LINE,
    RequestResponseCycle,
)
from uvicorn.protocols.utils import get_client_addr, get_path_with_query_string

_defaults: list[Any] = [None, b""]  # the server's date and server headers, and their bytes


def _default_headers(headers: list[tuple[bytes, bytes]]) -> bytes:
    """The server's own headers (a new list each second, for the date), as bytes: made
    once per list, not per response."""
    if headers is not _defaults[0]:
        _defaults[:] = [headers, b"".join(b"%s: %s\r\n" % (n.lower(), v) for n, v in headers)]
    return cast(bytes, _defaults[1])


class ResponseCycle(RequestResponseCycle):
    """uvicorn's request/response cycle, but the response head is written together with
    the first body bytes: one write per response instead of two."""

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
