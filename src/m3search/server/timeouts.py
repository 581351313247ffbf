"""Read timeouts against slow clients: a connection that takes longer than ``header_timeout`` seconds to send a
request's headers, or ``body_timeout`` seconds to send its body, gets a 408 and is closed.

uvicorn has a keep-alive timeout (idle between requests) but none while a request is being read, so 400 clients
trickling headers a byte at a time could hold 400 connections (and file descriptors) open forever. This is its
httptools protocol (uvicorn[standard], the default) with one timer per connection: armed when a connection opens
or a request starts, re-armed for the body when the headers are complete, cancelled when the request is read.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

LOGGER = logging.getLogger("m3search.server")

_408 = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
        b"content-length: %d\r\n\r\n%s")


def timed_protocol(header_timeout: float, body_timeout: float) -> type[asyncio.Protocol]:
    """An HTTP protocol class for ``uvicorn.Config(http=...)`` with these read timeouts (seconds); ImportError
    without httptools."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class TimedProtocol(HttpToolsProtocol):
        _timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self._arm(header_timeout, "headers")

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def on_message_begin(self) -> None:
            super().on_message_begin()
            if self._timer is None:  # the next request on a kept-alive connection
                self._arm(header_timeout, "headers")

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(body_timeout, "body")

        def on_message_complete(self) -> None:
            self._disarm()
            super().on_message_complete()

        def _arm(self, seconds: float, part: str) -> None:
            self._disarm()
            self._timer = self.loop.call_later(seconds, self._expired, part, seconds)

        def _disarm(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

        def _expired(self, part: str, seconds: float) -> None:
            self._timer = None
            if self.transport.is_closing():
                return
            if self.cycle is None or self.cycle.response_complete or not self.cycle.response_started:
                message = (b'{"error":{"message":"the request %s took longer than %s s to arrive","type":'
                           b'"invalid_request_error","code":"request_timeout"}}' % (part.encode(), b"%g" % seconds))
                self.transport.write(_408 % (len(message), message))
            if self.cycle is not None and not self.cycle.response_complete:
                self.cycle.keep_alive = False
            self.logger.info("closed a connection whose request %s took longer than %s s", part, seconds)
            self.transport.close()

    return TimedProtocol


def server_options(header_timeout: float, body_timeout: float) -> dict[str, Any]:
    """Keyword arguments of ``uvicorn.run``/``uvicorn.Config`` that apply these read timeouts (none, with a warning,
    where httptools, part of the ``server`` extra's ``uvicorn[standard]``, is missing)."""
    try:
        return {"http": timed_protocol(header_timeout, body_timeout)}
    except ImportError:
        LOGGER.warning("httptools is not installed: no header and body read timeouts against slow clients; "
                       "pip install 'm3search[server]'")
        return {}
