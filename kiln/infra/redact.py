"""Keep secrets out of what kiln records and prints.

A data source may be a URL with credentials in it (`https://user:secret@host/d.csv`,
`...?token=abc`, a presigned `X-Amz-Signature=...`). `redact` masks the user info and every
query and fragment value of each URL in a text, so metadata, logs, errors, model cards and
images name where data came from without carrying what let kiln read it. It is the one
function every place that records or prints a source goes through.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import unquote, urlsplit, urlunsplit

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
    if "@" not in parts.netloc and not parts.query and not parts.fragment:
        return url  # nothing to mask (urlunsplit would turn a bare `s3://` into `s3:`)
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


# Scheme://userinfo@ in any text, the scheme not necessarily one kiln knows (`htps://`).
_USERINFO = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://([^\s'\"<>/@]+)@")
# Shorter pieces of a user:password pair are masked only as part of the pair: masking a
# two-letter user name everywhere would mangle messages, and it is not the secret.
MIN_SECRET_CHARS = 4


def secrets_in(texts: Iterable[str]) -> list[str]:
    """What must never be printed back from these texts (a command line, say): each URL's
    user info, and its user, password and query values when long enough; longest first."""
    found: set[str] = set()
    for text in texts:
        for match in _USERINFO.finditer(text):
            userinfo = match.group(1)
            found.add(userinfo)
            found.update(p for p in unquote(userinfo).split(":", 1) if len(p) >= MIN_SECRET_CHARS)
            found.add(unquote(userinfo))
        for match in _URL.finditer(text):
            query = urlsplit(match.group(0)).query if "?" in match.group(0) else ""
            for piece in query.split("&"):
                value = piece.partition("=")[2]
                if len(value) >= MIN_SECRET_CHARS:
                    found.update({value, unquote(value)})
    return sorted(found, key=len, reverse=True)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every URL redacted and each of `secrets` masked wherever it appears (in
    a client library's message that quotes the bucket as "KEY:SECRET@bucket", say)."""
    for secret in secrets:
        text = text.replace(secret, MASK)
    return redact(text)
