"""A synchronous HTTP client that calls an ASGI app in-process (httpx's ASGI transport).

Starlette's TestClient would do, but it warns (an error here) that it wants httpx2.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx


class AppClient:
    """A synchronous HTTP client for an ASGI app, with its own event loop."""

    def __init__(self, app: Callable) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app)
        self.http = httpx.AsyncClient(transport=transport, base_url="http://kiln.test")

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, url, **kwargs))

    def get(self, url: str, **kwargs) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()
