"""A fake OpenAI-compatible chat endpoint on 127.0.0.1 for tests of LLM reranking and LLM query generation.

The test gives a ``reply(messages) -> str`` function; the endpoint records every request body, can answer late
(``delay``) or with an HTTP error (``status``), and is stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = Callable[[list[dict[str, str]]], str]


@dataclass
class FakeLLM:
    """The endpoint's state: base URL, received request bodies and what to do with the next ones."""

    url: str
    reply: Reply
    delay: float = 0.0
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)


def _handler(state: FakeLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr log
            pass

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            state.requests.append({"path": self.path, "body": body,
                                   "authorization": self.headers.get("authorization")})
            if state.delay:
                time.sleep(state.delay)
            if self.path != "/v1/chat/completions" or state.status != 200:
                self._send(404 if state.status == 200 else state.status, {"error": {"message": "fake failure"}})
                return
            content = state.reply(body.get("messages", []))
            self._send(200, {"id": "fake", "object": "chat.completion", "model": body.get("model"),
                             "choices": [{"index": 0, "finish_reason": "stop",
                                          "message": {"role": "assistant", "content": content}}]})

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up (a timeout)
                self.wfile.write(data)

    return Handler


@contextmanager
def fake_llm(reply: Reply, *, delay: float = 0.0, status: int = 200) -> Iterator[FakeLLM]:
    """Serve a fake chat endpoint until the block ends; ``state.url`` is its ``.../v1`` base URL."""
    state = FakeLLM(url="", reply=reply, delay=delay, status=status)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
