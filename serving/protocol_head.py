"""Request heads as bytes: where one ends, what a read leaves open, its Content-Length.

Pure functions, no parser and no transport: serving/protocol.py uses them to charge each
head exactly its own bytes (a body or a next pipelined request is never counted as, or
hidden in, a head) and to refuse a too-large body from its Content-Length alone.
"""

from __future__ import annotations

import re

from serving.protocol_refusal import body_too_large

HEAD_END = b"\r\n\r\n"

_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length[ \t]*:[ \t]*(\d+)", re.IGNORECASE)
_CHUNKED = re.compile(rb"\r\ntransfer-encoding[ \t]*:", re.IGNORECASE)


def open_head_bytes(data: bytes, used: int) -> int:
    """The bytes of the head still open at the end of ``data``, after the requests that
    ended in it (rare: pipelining). The parser has taken every complete one, so each
    head ends at the first blank line from its start and its body is its Content-Length.
    Where that cannot be told (a chunked body, a head begun in an earlier read), all that
    follows the first head's end is charged: an upper bound."""
    first = data.find(HEAD_END)
    if used:  # the first head began in an earlier read
        return len(data) - (first + 4)
    at = 0
    while True:
        while data.startswith(b"\r\n", at):  # blank lines between requests are allowed
            at += 2
        end = data.find(HEAD_END, at)
        if end < 0:
            return len(data) - at
        head = data[at:end]
        if _CHUNKED.search(head):
            return len(data) - (end + 4)
        length = _CONTENT_LENGTH.search(head)
        at = end + 4 + (int(length.group(1)) if length else 0)
        if at >= len(data):
            return 0


def declared_length(value: bytes, limit: int) -> int:
    """A Content-Length header's value: refused (413) over ``limit``, -1 if malformed."""
    try:
        declared = int(value)
    except ValueError:
        return -1  # the parser refuses a malformed Content-Length itself
    if declared > limit:
        raise body_too_large(limit)
    return declared
