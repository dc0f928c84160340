"""Predictions the explorer's user is likely to ask for next, computed while they look.

After a whole-brain answer the explorer asks for the combinations one switch away (FLAIR, T2,
T1 toggled). One background thread per app process works through the newest wishes, one
prediction at a time, while nobody waits: work somebody waits for (a prediction, a shifted case,
a slice preview, a sweep) holds the worker off and cancels its running job, unless that job is
the very prediction asked for, which is then waited for. Wishes replace the older ones, so the
queue never outgrows one page's neighbours and many sessions cannot pile work up.

Work somebody waits for runs on the same thread (:meth:`Prefetcher.call`), ahead of the queue.
PyTorch's CPU kernels run on GNU OpenMP, which gives every thread that starts a parallel region
its own pool of worker threads; once the pools hold more threads than the CPU has cores, libgomp
lets idle workers spin only 100 rounds before sleeping, so each of the thousands of short
operations in a whole-brain run waits for sleeping threads to wake: measured on a 2-core CPU, a
whole brain 1.7x slower in a second thread (6.7-6.9 s against 3.6-4.9 s). One thread for all of
the app's network work keeps one pool.
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
        self._urgent: deque[_Call] = deque()  # work somebody waits for, run before the queue
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
                    shown = self._pass_on(self._progress, shown, on_progress)
                    self._changed.wait(0.1)
                if self._running is not None:
                    self._cancel = True
                    self._changed.wait_for(lambda: self._running is None, timeout=10)
            yield
        finally:
            with self._changed:
                self._foreground -= 1
                self._changed.notify_all()

    def call(self, compute: Compute, on_progress: Progress | None = None):
        """``compute(progress)`` run on the worker's thread before any queued job, its result
        returned (its exception raised) here; ``progress`` reports are passed on to ``on_progress``
        in this thread. Call it inside :meth:`foreground`, which keeps background jobs off and
        settles a running one. If ``on_progress`` raises (a page's rerun), the job is given up at
        its next step and the exception goes on. From the worker's own thread, or once it has
        stopped, ``compute`` runs here."""
        if threading.current_thread() is self._thread or not self._thread.is_alive():
            return compute(on_progress or (lambda *args: None))
        job = _Call(compute)
        with self._changed:
            self._urgent.append(job)
            self._changed.notify_all()
            shown = None
            try:
                while not job.finished:
                    if not self._thread.is_alive():
                        raise RuntimeError("the app's prediction worker stopped")
                    shown = self._pass_on(job.progress, shown, on_progress)
                    self._changed.wait(0.1)
            except BaseException:
                job.given_up = True
                raise
        if on_progress and job.progress not in (None, shown):  # the last report, if the job ended first
            on_progress(*job.progress)
        if job.error is not None:
            raise job.error
        return job.result

    def _pass_on(self, progress, shown, on_progress: Progress | None):
        """Called with the lock held: ``progress`` passed to ``on_progress`` if it is new, with the
        lock released (a page's callback may raise, a rerun). Returns the progress now shown."""
        if on_progress is None or progress is None or progress == shown:
            return shown
        self._changed.release()
        try:
            on_progress(*progress)
        finally:
            self._changed.acquire()
        return progress

    def close(self, timeout: float = 10.0) -> None:
        """Drop the queue, cancel the running job (at its next step) and end the thread."""
        with self._changed:
            self._stopped, self._cancel, self._queue = True, True, []
            self._changed.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while True:
            with self._changed:
                self._changed.wait_for(lambda: self._stopped or self._urgent or (self._queue and not self._foreground))
                if self._stopped:
                    for call in self._urgent:
                        call.fail(RuntimeError("the app is shutting down"))
                    self._changed.notify_all()
                    return
                call = self._urgent.popleft() if self._urgent else None
                if call is not None and call.given_up:  # its caller left before it started
                    call.fail(Cancelled())
                    self._changed.notify_all()
                    continue
                if call is None:
                    key, compute = self._queue.pop(0)
                    if self._has(key):
                        self._changed.notify_all()
                        continue
                    self._running, self._cancel, self._progress = key, False, (0, 1, "")
            if call is not None:
                self._run_call(call)
                continue
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

    def _run_call(self, job: _Call) -> None:
        def progress(done: int, total: int, message: str = "") -> None:
            with self._changed:
                job.progress = (done, total, message)
                self._changed.notify_all()
            if job.given_up and done < total:
                raise Cancelled

        result, error = None, None
        try:
            result = job.compute(progress)
        except Cancelled:
            error = Cancelled()
        except BaseException as exc:  # raised again in the waiting thread; the worker goes on
            error = exc
        with self._changed:
            job.result, job.error, job.finished = result, error, True
            self._changed.notify_all()

    def _check(self, done: int, total: int, message: str = "") -> None:
        """The background job's progress callback: records progress, gives up when cancelled
        (never on the last step: a finished result is kept)."""
        with self._changed:
            self._progress = (done, total, message)
            if self._cancel and done < total:
                raise Cancelled


class _Call:
    """One job run for a waiting caller (:meth:`Prefetcher.call`)."""

    def __init__(self, compute: Compute):
        self.compute = compute
        self.progress: tuple[int, int, str] | None = None
        self.result, self.error = None, None
        self.finished = self.given_up = False

    def fail(self, error: Exception) -> None:
        self.error, self.finished = error, True
