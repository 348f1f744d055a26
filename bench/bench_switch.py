"""Requests refused by the local target while it switches versions (issue 13, goal 0).

Builds two throwaway images from the rollout tests' stand-in server
(tests/support/standin/server.py: stdlib only, builds in about a second), deploys the first,
then polls the stable endpoint at --rate requests a second (a new connection each) across a
deploy of the second version and a rollback to the first, and prints how many requests
were answered, refused or failed otherwise. Loopback only; its own port, store, container
names and image tags, all removed at the end.

    eval "$(scripts/infra.sh env)"; python bench/bench_switch.py --rate 50
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # flows and tests/

from kiln import wiring  # noqa: E402
from kiln.config.settings import get_settings  # noqa: E402
from kiln.rollout import roll_back, roll_out  # noqa: E402
from kiln.rollout.local import LocalTarget, free_port  # noqa: E402
from kiln.store.artifact_store import ArtifactStore  # noqa: E402
from tests.support.standin_image import build_standin_image  # noqa: E402


def build(client, store: ArtifactStore, name: str, work: Path) -> tuple[str, str]:
    """A stored stand-in model and its image, the rollout tests' stand-in server inside."""
    model = f"bench switch model {name}".encode()
    version = store.put(model, {0: "a", 1: "b"}, {"sample_input": [[5.1, 3.5, 1.4, 0.2]]})
    tag = f"localhost/kiln-bench-switch:{name}-{uuid.uuid4().hex[:6]}"
    return version, build_standin_image(client, model, version, tag, work / name)


class Poller:
    """GET /health at a fixed rate, one new connection per request; counts outcomes."""

    def __init__(self, port: int, rate: float) -> None:
        self.port, self.interval = port, 1.0 / rate
        self.outcomes: Counter[str] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _once(self) -> str:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        try:
            conn.request("GET", "/health", headers={"Connection": "close"})
            status = conn.getresponse().status
            return "answered" if status == 200 else f"status {status}"
        except ConnectionRefusedError:
            return "refused"
        except OSError as err:
            return f"failed ({type(err).__name__})"
        finally:
            conn.close()

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self.outcomes[self._once()] += 1
            next_at += self.interval
            time.sleep(max(0.0, next_at - time.monotonic()))

    def __enter__(self) -> Poller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0, help="requests a second")
    args = parser.parse_args()

    client = wiring.engine_client(get_settings().with_overrides(engine_timeout=120))
    port = free_port()
    target = LocalTarget(
        client, port=port, name_prefix=f"kiln-bench-{uuid.uuid4().hex[:6]}", poll_interval=0.1
    )
    tags: list[str] = []
    with tempfile.TemporaryDirectory(prefix="kiln-bench-switch-") as tmp:
        work = Path(tmp)
        store = ArtifactStore(work / "store")
        try:
            old, old_image = build(client, store, "old", work)
            new, new_image = build(client, store, "new", work)
            tags += [old_image, new_image]
            roll_out(store, old, target, image=old_image)
            started = time.monotonic()
            with Poller(port, args.rate) as poller:
                time.sleep(1)
                roll_out(store, new, target, image=new_image)
                roll_back(store, target)
                time.sleep(1)
            seconds = time.monotonic() - started
        finally:
            target.stop_all()
            for tag in tags:
                with contextlib.suppress(Exception):
                    client.images.remove(tag, force=True)
    total = sum(poller.outcomes.values())
    print(f"local target, one deploy + one rollback, polled at {args.rate:g} req/s")
    print(f"  {total} requests over {seconds:.1f}s")
    for outcome, count in sorted(poller.outcomes.items()):
        print(f"  {outcome:<24} {count}")
    print(f"  refused or failed:       {total - poller.outcomes['answered']}  (goal 0)")


if __name__ == "__main__":
    main()
