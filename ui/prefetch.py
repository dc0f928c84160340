"""Predictions the explorer's user is likely to ask for next, computed while they look.

After a whole-brain answer the explorer asks for the combinations one switch away (FLAIR, T2,
T1 toggled). One background thread per app process works through the newest wishes, one
prediction at a time, while nobody waits: work somebody waits for (a prediction, a shifted case,
a slice preview, a sweep) holds the worker off and cancels its running job, unless that job is
the very prediction asked for, which is then waited for. Wishes replace the older ones, so the
queue never outgrows one page's neighbours and many sessions cannot pile work up.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque
from collections.abc import Callable
from contextlib import contextmanager

Progress = Callable[[int, int, str], None]
Compute = Callable[[Progress], object]
LOG = logging.getLogger(__name__)


class Cancelled(Exception):
    """A background prediction given up for work somebody waits for."""


class Prefetcher:
    """One background worker; ``want`` queues jobs, ``foreground`` keeps it out of the way."""

    def __init__(self, keep: Callable[[tuple, object], None], has: Callable[[tuple], bool], limit: int = 4):
        """
        Args:
            keep: stores a finished result under its key (where the foreground will look).
            has: whether a key's result is kept already (so it is not computed again).
            limit: at most this many queued jobs (the newest wishes).
        """
        self._keep, self._has, self._limit = keep, has, limit
        self._changed = threading.Condition()
        self._queue: list[tuple[tuple, Compute]] = []
        self._running: tuple | None = None
        self._cancel = False
        self._progress: tuple[int, int, str] = (0, 1, "")
        self._foreground = 0
        self._stopped = False
        self.finished: deque[tuple] = deque(maxlen=64)  # keys computed in the background, newest last
        self._thread = threading.Thread(target=self._loop, name="prefetch", daemon=True)
        self._thread.start()
        # A daemon thread killed inside a native kernel at exit aborts the process: stop it first.
        atexit.register(self.close)

    def want(self, jobs: list[tuple[tuple, Compute]]) -> None:
        """Replace the queue with these jobs (first first), leaving out what is kept or running."""
        with self._changed:
            self._queue = [(k, c) for k, c in jobs
                           if (k != self._running or self._cancel) and not self._has(k)][: self._limit]  # fmt: skip
            self._changed.notify_all()

    def pending(self) -> list[tuple]:
        """Keys queued or running (running first)."""
        with self._changed:
            return ([self._running] if self._running else []) + [k for k, _ in self._queue]

    def running(self) -> tuple | None:
        """The key being computed now (not one being cancelled), or None."""
        with self._changed:
            return None if self._cancel else self._running

    def idle(self, timeout: float) -> bool:
        """Wait until nothing is queued or running; False if still busy after ``timeout`` s."""
        with self._changed:
            return self._changed.wait_for(lambda: not self._queue and self._running is None, timeout)

    @contextmanager
    def foreground(self, key: tuple | None = None, on_progress: Progress | None = None):
        """Around work somebody waits for: no background job starts meanwhile.

        If the background is computing ``key`` this waits for it (passing its progress on) and
        the caller finds the result kept; any other running job is cancelled and waited for (it
        stops at its next step), so the two never compete for the CPU.
        """
        with self._changed:
            self._foreground += 1
        try:
            shown = None
            with self._changed:
                self._queue = [(k, c) for k, c in self._queue if k != key]
                while key is not None and self._running == key and self._thread.is_alive():
                    if on_progress and self._progress != shown:
                        shown = self._progress
                        self._changed.release()  # a page's callback may raise (a rerun): never with the lock
                        try:
                            on_progress(*shown)
                        finally:
                            self._changed.acquire()
                    self._changed.wait(0.1)
                if self._running is not None:
                    self._cancel = True
                    self._changed.wait_for(lambda: self._running is None, timeout=10)
            yield
        finally:
            with self._changed:
                self._foreground -= 1
                self._changed.notify_all()

    def close(self, timeout: float = 10.0) -> None:
        """Drop the queue, cancel the running job (at its next step) and end the thread."""
        with self._changed:
            self._stopped, self._cancel, self._queue = True, True, []
            self._changed.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stopped or (self._queue and not self._foreground))
                if self._stopped:
                    return
                key, compute = self._queue.pop(0)
                if self._has(key):
                    self._changed.notify_all()
                    continue
                self._running, self._cancel, self._progress = key, False, (0, 1, "")
            result = None
            try:
                result = compute(self._check)
            except Cancelled:
                pass
            except Exception:  # a failed guess costs nothing: the foreground says why if it is asked for
                LOG.warning("background prediction %s failed", key[-1], exc_info=True)
            finally:
                with self._changed:
                    try:
                        if result is not None:
                            self._keep(key, result)
                            self.finished.append(key)
                    finally:
                        self._running = None
                        self._changed.notify_all()

    def _check(self, done: int, total: int, message: str = "") -> None:
        """The background job's progress callback: records progress, gives up when cancelled
        (never on the last step: a finished result is kept)."""
        with self._changed:
            self._progress = (done, total, message)
            if self._cancel and done < total:
                raise Cancelled
