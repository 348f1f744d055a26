"""Fixtures for the serving tests: a real iris model directory and the real app.

The app is called in-process through httpx's ASGI transport (no sockets), on one
event loop per client; tests/serving/test_gunicorn.py runs the real server over HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from asgi_client import AppClient
from model_dirs import write_model_dir
from servers import Server

from serving.app import KilnApp, create_app
from serving.config import ServingConfig


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model directory as the artifact store writes it (read-only for tests)."""
    return write_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="session")
def config(model_dir: Path) -> ServingConfig:
    return ServingConfig.for_model_dir(model_dir)


@pytest.fixture(scope="module")
def app(model_dir: Path) -> KilnApp:
    """A started app (model loaded and warmed up), shared by a test module."""
    kiln = create_app(ServingConfig.for_model_dir(model_dir))
    kiln.start()
    return kiln


@pytest.fixture(scope="module")
def client(app: KilnApp) -> Iterator[AppClient]:
    http = AppClient(app)
    yield http
    http.close()


@pytest.fixture
def make_client(model_dir: Path) -> Iterator:
    """Build a started app with config overrides and a client for it."""
    made: list[AppClient] = []

    def make(**overrides) -> AppClient:
        kiln = create_app(ServingConfig.for_model_dir(model_dir, **overrides))
        kiln.start()
        made.append(AppClient(kiln))
        return made[-1]

    yield make
    for http in made:
        http.close()


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator:
    """Start real servers (`python -m serving`); each is killed, with its workers, at the end."""
    started: list[Server] = []

    def start(model_dir: Path, **kwargs) -> Server:
        started.append(Server(model_dir, tmp_path, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.kill_group()
