"""`kiln logs -f` on the local target for real: the command in its own process, stand-in
images on the engine (tests/rollout/test_local.py's), a redeploy while it follows."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kiln.rollout import roll_out
from kiln.rollout.local import LocalTarget
from kiln.store.artifact_store import ArtifactStore
from tests.rollout import test_local as local_e2e
from tests.rollout.test_local import ImageMaker
from tests.support.factories import run_kiln

docker_client = local_e2e.docker_client
engine = local_e2e.engine
make_image = local_e2e.make_image
store = local_e2e.store

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]


def lines_of(stream, into: queue.Queue) -> threading.Thread:
    def read() -> None:
        for line in stream:
            into.put(line.rstrip("\n"))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return thread


def wait_for(lines: queue.Queue, text: str, seen: list[str], seconds: float = 60) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            seen.append(lines.get(timeout=0.5))
        except queue.Empty:
            continue
        if text in seen[-1]:
            return True
    return False


def test_following_goes_on_through_a_quiet_spell_and_a_redeploy(
    store: ArtifactStore, engine: LocalTarget, make_image: ImageMaker
) -> None:
    first, first_image = make_image("a")
    second, second_image = make_image("b")
    roll_out(store, first, engine, image=first_image)
    env = {
        **os.environ,
        "KILN_LOCAL_PORT": str(engine.port),
        "KILN_LOCAL_NAME": engine.name_prefix,
        "KILN_ENGINE_TIMEOUT": "2",  # the engine's stream goes quiet longer than this
    }
    follower = subprocess.Popen(
        [sys.executable, "-m", "kiln.cli.app", "logs", "-f"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    out: queue.Queue = queue.Queue()
    err: queue.Queue = queue.Queue()
    lines_of(follower.stdout, out)
    lines_of(follower.stderr, err)
    seen: list[str] = []
    said: list[str] = []
    try:
        assert wait_for(out, f"stand-in {first} serving", seen), seen
        time.sleep(3)  # quiet longer than the engine timeout: the command follows on
        assert follower.poll() is None, list(err.queue)

        roll_out(store, second, engine, image=second_image)

        assert wait_for(err, f"{second} serves on local now", said), said
        assert wait_for(out, f"stand-in {second} serving", seen), seen
    finally:
        follower.terminate()
        follower.communicate(timeout=30)


def test_logs_print_the_last_lines_asked_for(
    store: ArtifactStore, engine: LocalTarget, make_image: ImageMaker
) -> None:
    version, image = make_image("a")
    roll_out(store, version, engine, image=image)  # its smoke test's prediction: a 2nd line
    env = {"KILN_LOCAL_PORT": str(engine.port), "KILN_LOCAL_NAME": engine.name_prefix}

    def logs(*args: str) -> list[str]:
        done = run_kiln("logs", *args, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    every = logs()
    assert len(every) == 2 and every[0].startswith(f"stand-in {version} serving on ")
    assert every[1] == f"stand-in {version} predicted 1 rows"
    assert logs("--tail", "1") == [every[1]]
