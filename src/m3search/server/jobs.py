"""Background jobs of the server (filling a new embedding set, generating fine-tuning data), one thread each, with
progress for GET."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from m3search.errors import M3SearchError

LOGGER = logging.getLogger("m3search.server")
State = Literal["running", "done", "failed", "stopped"]
Progress = Callable[[int, int], None]
JobKey = int | str  # an embedding set's id, or the id of another kind of job (fine-tuning data: a string)


class JobStopped(M3SearchError):
    """Raised inside a job's progress callback when the server shuts down (each batch is already committed)."""


@dataclass
class JobState:
    state: State = "running"
    embedded: int = 0
    total: int = 0
    error: str | None = None


class Jobs:
    """Jobs by key (see :data:`JobKey`); a job's work gets a progress callback that also stops it on shutdown."""

    def __init__(self) -> None:
        self._states: dict[JobKey, JobState] = {}
        self._threads: dict[JobKey, threading.Thread] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self, set_id: JobKey, work: Callable[[Progress], None]) -> bool:
        """Run ``work(progress)`` in a thread unless a job for ``set_id`` is already running."""
        with self._lock:
            if set_id in self._threads and self._threads[set_id].is_alive():
                return False
            state = self._states[set_id] = JobState()

            def progress(done: int, total: int) -> None:
                state.embedded, state.total = done, total
                if self._stop.is_set():
                    raise JobStopped("the server is shutting down")

            def run() -> None:
                try:
                    work(progress)
                    state.state = "done"
                except JobStopped:
                    state.state = "stopped"
                except M3SearchError as exc:
                    state.state, state.error = "failed", str(exc)
                    LOGGER.warning("background job failed", extra={"set_id": set_id, "error": str(exc)})
                except Exception as exc:  # a job thread must report, not vanish; logged with its traceback
                    state.state, state.error = "failed", f"internal error: {type(exc).__name__}"
                    LOGGER.exception("background job crashed", extra={"set_id": set_id})

            thread = self._threads[set_id] = threading.Thread(target=run, name=f"m3search-set-{set_id}", daemon=True)
            thread.start()
            return True

    def state(self, set_id: JobKey) -> JobState | None:
        with self._lock:
            return self._states.get(set_id)

    def stop_all(self, timeout: float = 30.0) -> None:
        """Ask every job to stop at its next batch and wait for them (work done so far is committed)."""
        self._stop.set()
        with self._lock:
            threads = list(self._threads.values())
        for thread in threads:
            thread.join(timeout)
