"""``m3search serve`` as users run it: a real process on 127.0.0.1 by default, JSON logs, clean stop; mistakes
are exit 2 with one line."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.unit.test_cli import run

M3SEARCH = str(Path(sys.executable).parent / "m3search")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_serve_binds_loopback_by_default_and_logs_json(tmp_path: Path) -> None:
    port = _free_port()
    env = {**os.environ, "M3SEARCH_PORT": str(port)}
    server = subprocess.Popen([M3SEARCH, "serve", "--model", "hash", "--preload", "--db", str(tmp_path / "i.db")],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, server.stderr.read() if server.stderr else ""
            time.sleep(0.1)
        response = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings", json={"input": "private words"},
                              headers={"X-Request-ID": "cli-test"})
        assert response.status_code == 200 and len(response.json()["data"][0]["embedding"]) == 384
        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        addresses = {line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines() if line.strip()}
        assert addresses == {"127.0.0.1"}, listening
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=30)
    assert server.returncode == 0
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert len(logs) == len([line for line in err.splitlines() if line.strip()])  # every line is JSON
    request = next(entry for entry in logs if entry.get("request_id") == "cli-test")
    assert request["status"] == 200 and request["route"] == "/v1/embeddings" and request["tokens"] == 2
    assert "private" not in err
    assert any(entry["msg"] == "server stopped" for entry in logs)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["serve", "--model", "bge-m4"], "unknown model 'bge-m4'"),
        (["serve", "--model", "hash", "--db", "/proc/no/such/dir/x.db"], "cannot open the index database"),
    ],
)
def test_serve_mistakes_are_one_line_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]
                                           ) -> None:
    code, _, err = run(args, capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
