"""Security defaults, one test each: loopback bind, constant-time key checks, no unpickling of model files,
request size limits, CORS off, and secrets kept out of logs and messages."""

from __future__ import annotations

import hmac
import logging
import os
import pickle
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from m3search.errors import ModelFormatError, StoreError
from m3search.models.prepare.builder.checkpoint import read_head
from m3search.settings import get_settings
from m3search.store.urls import open_store
from tests.live import free_port
from tests.references import import_or_skip

CLI = [sys.executable, "-c", "from m3search.cli.app import main; main()"]


def test_the_server_binds_loopback_by_default(tmp_path: Path, record: Callable[..., None]) -> None:
    assert get_settings().host == "127.0.0.1"
    port = free_port()
    server = subprocess.Popen([*CLI, "serve", "--port", str(port), "-m", "hash", "--db", str(tmp_path / "s.db")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, "M3SEARCH_HOME": str(tmp_path / "home")})
    try:
        listening: set[str] = set()
        deadline = time.monotonic() + 30
        while not listening and time.monotonic() < deadline:
            out = subprocess.run(["ss", "-ltnH"], capture_output=True, text=True, check=True).stdout
            listening = {line.split()[3] for line in out.splitlines() if line.split()[3].endswith(f":{port}")}
            time.sleep(0.2)
    finally:
        server.terminate()
        server.wait(timeout=30)
    record("security", "default bind", sorted(listening))
    assert listening == {f"127.0.0.1:{port}"}


def test_api_keys_are_compared_in_constant_time(make_client: Callable[..., TestClient],
                                                monkeypatch: pytest.MonkeyPatch, record: Callable[..., None]) -> None:
    compared: list[bytes] = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: compared.append(b) or real(a, b))
    client = make_client(api_keys=["first", "second", "third"])
    assert client.get("/api/v1/models", headers={"Authorization": "Bearer first"}).status_code == 200
    record("security", "key comparison", f"hmac.compare_digest against all {len(compared)} keys, no early exit")
    assert compared == [b"first", b"second", b"third"]


class _Exploit:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, ("touch /tmp/m3search-pwned",))


def test_model_files_are_never_unpickled(tmp_path: Path, record: Callable[..., None]) -> None:
    """A BGE-M3 head file carrying a pickle payload is refused; the payload never runs."""
    import_or_skip("torch", "the 'export' extra is not installed")
    from m3search.models.prepare.export import load_head

    Path("/tmp/m3search-pwned").unlink(missing_ok=True)
    (tmp_path / "colbert_linear.pt").write_bytes(pickle.dumps({"weight": _Exploit()}))
    with pytest.raises(ModelFormatError):
        load_head(tmp_path, "colbert_linear")
    with pytest.raises(ModelFormatError):  # the torch-free builder's restricted reader
        read_head(tmp_path, "colbert_linear")
    record("security", "pickled head file", "refused (torch.load weights_only=True; the builder's restricted "
                                            "unpickler), payload not run")
    assert not Path("/tmp/m3search-pwned").exists()
    sources = "".join(p.read_text() for p in Path(__file__).parents[2].joinpath("src").rglob("*.py"))
    assert "allow_pickle=True" not in sources and "weights_only=False" not in sources


def test_request_size_limits(make_client: Callable[..., TestClient], record: Callable[..., None]) -> None:
    client = make_client(max_request_bytes=10_000, max_header_bytes=4096)
    body = client.post("/v1/embeddings", json={"input": "x" * 20_000})
    headers = client.get("/health", headers={"X-Big": "a" * 8000})
    record("security", "limits", {"body over M3SEARCH_MAX_REQUEST_BYTES": body.status_code,
                                  "headers over M3SEARCH_MAX_HEADER_BYTES": headers.status_code})
    assert body.status_code == 413 and headers.status_code == 431


def test_cors_is_off_by_default(client: TestClient, record: Callable[..., None]) -> None:
    preflight = client.options("/v1/embeddings", headers={"Origin": "https://evil.example",
                                                          "Access-Control-Request-Method": "POST"})
    record("security", "CORS by default", dict(preflight.headers).get("access-control-allow-origin", "absent"))
    assert "access-control-allow-origin" not in preflight.headers


def test_secrets_stay_out_of_logs_and_messages(make_client: Callable[..., TestClient],
                                               caplog: pytest.LogCaptureFixture, record: Callable[..., None]) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(api_keys=["s3cr3t-key"])
    client.post("/v1/embeddings", json={"input": "private text"}, headers={"Authorization": "Bearer s3cr3t-key"})
    client.post("/v1/embeddings", json={"input": "x"}, headers={"Authorization": "Bearer wrong-guess"})
    logged = caplog.text
    with pytest.raises(StoreError) as caught:
        open_store("http://user:hunter2@127.0.0.1:9", api_key="qdrant-key")
    record("security", "secrets in logs", "API keys, texts and URL passwords absent")
    assert "s3cr3t-key" not in logged and "wrong-guess" not in logged and "private text" not in logged
    assert "hunter2" not in str(caught.value) and "qdrant-key" not in str(caught.value)
