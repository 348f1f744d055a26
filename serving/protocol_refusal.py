"""Requests the HTTP protocol refuses itself, and the answer it writes for them.

A ``Refusal`` is raised where a limit is crossed (often inside a parser callback, so the
parser stops there) and answered with the API's JSON error body, ``{"error": ...,
"code": ...}`` (serving/errors.py), followed by closing the connection.
"""

from __future__ import annotations

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE


class Refusal(Exception):
    """A request the protocol answers itself, with the API's JSON error body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def body_too_large(limit: int) -> Refusal:
    # The same words as the app's own check (serving/validation.py).
    return Refusal(413, "body_too_large", f"the request body exceeds the limit of {limit} bytes")


def parse_error(err: httptools.HttpParserError, max_body: int) -> Refusal:
    reason = str(err) or type(err).__name__
    if "Content-Length overflow" in reason:  # llhttp's words for a length beyond 2**64
        return body_too_large(max_body)
    return Refusal(400, "bad_request", f"invalid HTTP request: {reason}")


def refusal_response(refusal: Refusal, default_headers: list[tuple[bytes, bytes]]) -> bytes:
    """The whole response to a refused request, head and body: it closes the connection."""
    body = orjson.dumps({"error": refusal.message, "code": refusal.code})
    head = [STATUS_LINE[refusal.status]]
    for name, value in default_headers:
        head.append(b"%s: %s\r\n" % (name, value))
    head.append(b"content-type: application/json\r\n")
    head.append(b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body))
    return b"".join(head) + body
