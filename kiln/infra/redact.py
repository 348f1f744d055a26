"""Keep secrets out of what kiln records and prints.

A data source may be a URL with credentials in it (`https://user:secret@host/d.csv`,
`...?token=abc`, a presigned `X-Amz-Signature=...`). `redact` masks the user info and every
query and fragment value of each URL in a text, so metadata, logs, errors, model cards and
images name where data came from without carrying what let kiln read it. It is the one
function every place that records or prints a source goes through.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

MASK = "***"

# scheme://anything up to whitespace, a quote or an angle bracket (URLs inside messages).
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact(text: str) -> str:
    """`text` with the credentials and query/fragment values of every URL in it masked."""
    return _URL.sub(_redact_match, text)


def _redact_match(match: re.Match[str]) -> str:
    url = match.group(0)
    # Punctuation that ends a sentence or a bracket is the message's, not the URL's.
    trail = len(url) - len(url.rstrip(".,:;!?)]}"))
    if trail:
        return _redact_url(url[:-trail]) + url[-trail:]
    return _redact_url(url)


def has_secrets(text: str) -> bool:
    return redact(text) != text


def _redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced '[' in the host: keep nothing after the scheme
        return url.split("://", 1)[0] + "://" + MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = MASK + "@" + netloc.rsplit("@", 1)[1]
    return urlunsplit(
        (parts.scheme, netloc, parts.path, _mask_values(parts.query), _mask_values(parts.fragment))
    )


def _mask_values(component: str) -> str:
    """`a=1&b=2` -> `a=***&b=***`; a bare value (`#token`) is masked whole."""
    if not component:
        return component
    masked = []
    for piece in component.split("&"):
        key, equals, _ = piece.partition("=")
        masked.append(f"{key}={MASK}" if equals else MASK)
    return "&".join(masked)
