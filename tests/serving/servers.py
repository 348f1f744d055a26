"""The real server in a test: `python -m serving` (gunicorn + uvicorn workers) on 127.0.0.1.

Used through the ``server_factory`` fixture (tests/serving/conftest.py).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
WAIT = 60  # seconds: an upper bound for a busy machine, not a performance assertion


class Server:
    """`python -m serving` on port 0; the port is read from gunicorn's log."""

    def __init__(self, model_dir: Path, tmp: Path, workers: int = 1, **env: str) -> None:
        environ = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        environ.update({"PROMETHEUS_MULTIPROC_DIR": str(tmp / "metrics"), "PYTHONPATH": str(REPO)})
        environ.update(env)
        if not environ["PROMETHEUS_MULTIPROC_DIR"]:
            del environ["PROMETHEUS_MULTIPROC_DIR"]  # let gunicorn_conf make its own
        (tmp / "metrics").mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "serving", "--model-dir", str(model_dir)]
        argv += ["--port", "0", "--workers", str(workers)]
        self.process = subprocess.Popen(
            argv,
            cwd=REPO,
            env=environ,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: teardown can end the workers too
        )
        self.lines: list[str] = []
        self.port: int | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))
            found = re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))

    def wait_ready(self) -> str:
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "\n".join(self.lines)
            if self.port is not None:
                url = f"http://127.0.0.1:{self.port}"
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        return url
                except httpx.TransportError:
                    pass
            time.sleep(0.1)
        raise AssertionError("server not ready:\n" + "\n".join(self.lines))

    def wait_exit(self) -> int:
        code = self.process.wait(timeout=WAIT)
        self._reader.join(timeout=5)
        if not self._reader.is_alive():
            self.process.stdout.close()
        return code

    def kill_group(self) -> None:
        """Teardown: SIGKILL the master and any worker it left behind."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.wait_exit()

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.wait_exit()
