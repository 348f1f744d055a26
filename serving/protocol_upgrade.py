"""Ignoring an upgrade (h2c, websocket): kiln speaks HTTP/1.1 only, as RFC 9110 allows.

llhttp stops after a head that asks for an upgrade and takes whatever follows to be the
new protocol's. The request is answered over HTTP/1.1 all the same, so a body its head
declared is read by a fresh parser, primed with a made-up head that frames that body.
"""

from __future__ import annotations

from typing import Protocol

import httptools


class RequestCallbacks(Protocol):
    """What the parser calls on the protocol (serving/protocol.py's ``KilnHttpProtocol``)."""

    def on_url(self, url: bytes) -> None: ...
    def on_header(self, name: bytes, value: bytes) -> None: ...
    def on_headers_complete(self) -> None: ...
    def on_body(self, body: bytes) -> None: ...
    def on_message_complete(self) -> None: ...


def new_parser(callbacks: object) -> httptools.HttpRequestParser:
    parser = httptools.HttpRequestParser(callbacks)
    # As uvicorn does: answer the first of pipelined requests sent after "Connection: close".
    parser.set_dangerous_leniencies(lenient_data_after_close=True)
    return parser


def body_parser(
    protocol: RequestCallbacks, chunked: bool, declared: int
) -> httptools.HttpRequestParser:
    """A parser that reads the body an upgrade's head declared (chunked, or ``declared``
    bytes) into ``protocol``, then the requests that follow as usual."""
    callbacks = _AfterUpgrade(protocol)
    parser = new_parser(callbacks)
    framing = b"transfer-encoding: chunked" if chunked else b"content-length: %d" % declared
    parser.feed_data(b"POST / HTTP/1.1\r\n%s\r\n\r\n" % framing)
    callbacks.priming = False
    return parser


class _AfterUpgrade:
    """The parser callbacks of a connection whose upgrade was ignored: the fresh parser
    first reads a made-up head (swallowed here) that frames the body the real head
    declared; from then on every callback goes to the protocol."""

    def __init__(self, protocol: RequestCallbacks) -> None:
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
