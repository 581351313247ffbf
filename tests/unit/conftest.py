"""HTTP test clients over the app with the fake three-output encoder (lifespan run, closed at the end)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m3search.server.app import create_app
from m3search.settings import get_settings
from tests.live import live_server


@pytest.fixture
def make_client(fake_loader: Callable[..., Any], tmp_path: Path) -> Iterator[Callable[..., TestClient]]:
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        preload = overrides.pop("preload", False)
        store_url = overrides.pop("store_url", None)
        app = create_app(get_settings(**overrides), model="hash", loader=fake_loader, preload=preload,
                         db=None if store_url else tmp_path / "db.sqlite3", store_url=store_url)
        client = TestClient(app, raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture
def serve(fake_loader: Callable[..., Any], tmp_path: Path) -> Callable[..., AbstractContextManager[str]]:
    """A real m3search app (fake encoders: "hash" has dense, sparse and ColBERT outputs) on 127.0.0.1, as a context
    manager yielding its URL."""

    @contextmanager
    def start(**overrides: Any) -> Iterator[str]:
        app = create_app(get_settings(**overrides), model="hash", loader=fake_loader, db=tmp_path / "db.sqlite3")
        with live_server(app) as url:
            yield url

    return start
