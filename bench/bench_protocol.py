"""The HTTP protocol's and the app's cost per one-row request, in process, without sockets.

    python bench/bench_protocol.py [--requests 20000] [--rounds 5]

Feeds wrk's one-row POST /predict, as bytes, to a protocol instance over a stand-in
transport and runs the event loop until the response is written: uvicorn's stock
httptools protocol and kiln's bounded one (serving/protocol.py), each with the bare
ASGI app of bench/bench_serve.py and with kiln's app. Prints microseconds of CPU per
request, best round of each, interleaved. No network, no other process: steadier than
bench_serve.py on a busy machine, but it leaves out the kernel's share.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests" / "serving"), str(Path(__file__).parent)]

BODY = b'{"data":[[5.1,3.5,1.4,0.2]]}'
REQUEST = (
    b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
)


class Transport(asyncio.Transport):
    """Enough of a socket transport for uvicorn's protocols."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0
        self.waiter: asyncio.Future | None = None
        self.closing = False

    def get_extra_info(self, name, default=None):
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(
            name, default
        )

    def write(self, data) -> None:
        self.written += 1

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def set_protocol(self, protocol) -> None:
        pass


def make_protocol(kind: str, app, loop):
    from uvicorn.config import Config
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    from uvicorn.server import ServerState

    config = Config(app=app, lifespan="off", access_log=False, log_config=None)
    if kind == "kiln":
        from serving.protocol import protocol_class
        from serving.server_settings import ConnectionLimits

        cls = protocol_class(ConnectionLimits())
    else:
        cls = HttpToolsProtocol
    config.load()
    protocol = cls(config=config, server_state=ServerState(), app_state={}, _loop=loop)
    transport = Transport()
    protocol.connection_made(transport)
    complete = protocol.on_response_complete

    def wake() -> None:  # each response wakes the bench (handed to every new cycle)
        complete()
        transport.waiter.set_result(None)

    protocol.on_response_complete = wake
    return protocol, transport


async def run(protocol, transport, requests: int) -> float:
    loop = asyncio.get_running_loop()
    cpu = time.process_time()
    for _ in range(requests):
        transport.waiter = loop.create_future()
        protocol.data_received(REQUEST)
        await transport.waiter
    return (time.process_time() - cpu) / requests * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)

    import uvloop
    from model_dirs import write_model_dir

    from serving.app import create_app
    from serving.config import ServingConfig

    with tempfile.TemporaryDirectory(prefix="kiln-bench-") as tmp:
        model_dir = write_model_dir(Path(tmp) / "model")
        os.environ["CEILING_MODEL"] = str(model_dir / "model.onnx")
        from bench_serve import ceiling_app

        kiln = create_app(ServingConfig.for_model_dir(model_dir))
        kiln.start()
        apps = {"bare app": ceiling_app(), "kiln app": kiln}
        loop = uvloop.new_event_loop()
        asyncio.set_event_loop(loop)
        pairs = {
            (proto, name): make_protocol(proto, app, loop)
            for name, app in apps.items()
            for proto in ("uvicorn", "kiln")
        }
        best: dict[tuple[str, str], float] = {}
        for protocol, transport in pairs.values():  # warm-up
            loop.run_until_complete(run(protocol, transport, 1000))
        for _ in range(args.rounds):
            for pair, (protocol, transport) in pairs.items():
                us = loop.run_until_complete(run(protocol, transport, args.requests))
                best[pair] = min(us, best.get(pair, us))
    print(f"one-row POST /predict, in process, best of {args.rounds} x {args.requests}")
    print(f"{'protocol':<10} {'app':<10} {'cpu us/req':>10} {'writes/req':>10}")
    for (proto, name), us in best.items():
        writes = pairs[proto, name][1].written / max(
            1, pairs[proto, name][0].server_state.total_requests
        )
        print(f"{proto:<10} {name:<10} {us:>10.2f} {writes:>10.1f}")


if __name__ == "__main__":
    main()
