"""One connection's life in kiln's HTTP protocol: admission, clocks, refusals.

``BoundedConnection`` holds what does not depend on how bytes are read: the cap on open
connections (evicting the oldest idle one), the head, body and keep-alive timers, the
turn between pipelined responses, and refusing a request with a JSON answer after the
responses before it. serving/protocol.py's ``KilnHttpProtocol`` reads the requests on
top of it.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from serving.protocol_refusal import Refusal, refusal_response
from serving.refusals import count_refused
from serving.server_settings import ConnectionLimits


class BoundedConnection(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    # Open connections, oldest first (a dict is an ordered set): eviction candidates.
    open: ClassVar[dict[BoundedConnection, None]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Where the connection is, as its clocks and refusals need it (set by the reading).
        self._in_head = True  # until the current request's head is complete
        self._head_used = 0  # bytes of the current head fed so far
        self._unanswered = 0  # requests parsed whose responses are not complete
        self._refusal: Refusal | None = None  # waits for the responses before it
        self._timer: asyncio.TimerHandle | None = None
        self._idle_since = 0.0
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

    # -- between responses -------------------------------------------------------------

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

    def _arm_incomplete(self) -> None:
        """A read left a head or a body incomplete: its clock starts."""
        if self.transport.is_closing():
            return
        if not self._in_head:
            self._arm(self.limits.body_timeout, self._body_timed_out)
        else:
            self._arm(self.limits.header_timeout, self._head_timed_out)

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
        self.transport.write(refusal_response(refusal, self.server_state.default_headers))
        self.transport.close()
