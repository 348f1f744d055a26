"""One retry policy for every step that talks to a registry, an engine or a cluster.

A step retries in exactly one layer, chosen where the step is wired: either its clients
retry each call (`RetryPolicy.call`, e.g. `kiln build` on its own), or Prefect retries the
whole task (`RetryPolicy.task_options`) and the clients inside it are given `once()`. So a
step makes at most `attempts` (KILN_RETRIES + 1) tries in all, never a product of layers.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class RetrySettings(Protocol):
    retries: int
    retry_delay: float


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential backoff: `attempts` tries in all."""

    attempts: int = 4
    first_delay: float = 0.5
    factor: float = 2.0
    jitter: float = 0.0  # each delay is stretched by up to this fraction, at random

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"a retry policy needs at least one attempt, got {self.attempts}")

    @classmethod
    def from_settings(cls, settings: RetrySettings) -> RetryPolicy:
        """KILN_RETRIES retries, the first after KILN_RETRY_DELAY seconds, doubling."""
        return cls(attempts=settings.retries + 1, first_delay=settings.retry_delay, jitter=0.5)

    def once(self) -> RetryPolicy:
        """The same policy with no retries: for clients inside a step that Prefect retries."""
        return replace(self, attempts=1)

    def delays(self) -> Iterator[float]:
        """The pause before each retry (attempts - 1 of them), without jitter."""
        delay = self.first_delay
        for _ in range(self.attempts - 1):
            yield delay
            delay *= self.factor

    def task_options(self) -> dict[str, Any]:
        """Prefect task options for a step retried as a whole (`task.with_options(**...)`)."""
        return {
            "retries": self.attempts - 1,
            "retry_delay_seconds": list(self.delays()) or 0,
            "retry_jitter_factor": self.jitter or None,
        }

    def call(
        self,
        what: str,
        fn: Callable[[], T],
        *,
        transient: Callable[[Exception], bool],
        fail: Callable[[Exception, int], Exception],
        describe: Callable[[Exception], str] = str,
        sleep: Callable[[float], Any] = time.sleep,
    ) -> T:
        """Call fn; retry transient failures with backoff; then raise `fail(err, attempts)`."""
        delays = self.delays()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as err:  # noqa: BLE001 - `transient` and `fail` decide what it is
                delay = next(delays, None) if transient(err) else None
                if delay is None:
                    failure = fail(err, attempt)
                    if failure is err:
                        raise
                    raise failure from err
                delay *= 1 + random.uniform(0, self.jitter) if self.jitter else 1
                log.warning("%s failed (%s); retrying in %.1fs", what, describe(err), delay)
                sleep(delay)
