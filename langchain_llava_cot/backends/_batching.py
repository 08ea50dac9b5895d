"""A generation queue: one worker thread batches the work of concurrent callers.

Many threads or coroutines may share one loaded model. Instead of taking turns
behind a lock, each caller puts a :class:`Job` on a :class:`BatchQueue` and waits on
the job's future. A single worker thread owns the model:

1. it blocks until a job arrives, then keeps collecting jobs for ``window`` seconds
   (work that arrives while a batch runs is picked up by the next one, so under load
   the window costs nothing);
2. it hands every collected job to ``run_batch`` at once, which merges compatible
   requests of different jobs into one model call and returns one result per job;
3. it resolves each job's future with its result, or with the exception raised for
   it, so errors always reach the caller that asked.

If a merged batch fails, the worker retries its jobs one at a time, so one bad
request fails only its own caller. A job whose future was cancelled before its batch
started (an async caller that stopped waiting: a client that went away) is dropped
unrun; one cancelled later runs to the end of its batch and its result is discarded.
:meth:`BatchQueue.close` stops the worker after the jobs already queued; jobs submitted
later fail with a clear error.

>>> queue = BatchQueue(lambda jobs: [sum(job.payload) for job in jobs], window=0.0)
>>> queue.submit("sum", (1, 2)).result()
3
>>> queue.close()
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BatchQueue", "Job"]

logger = logging.getLogger(__name__)

_STOP = object()


@dataclass(eq=False)
class Job:
    """One caller's work: a ``kind`` (e.g. ``"sample"``) and its ``payload``."""

    kind: str
    payload: Any
    future: Future = field(default_factory=Future)


BatchRunner = Callable[[Sequence[Job]], Sequence[Any]]
"""Runs jobs together; returns one result (or an exception instance) per job."""


class BatchQueue:
    """A worker thread that runs queued jobs in batches.

    Args:
        run_batch: Called on the worker thread with the collected jobs; returns one
            result per job, in order. A result that is an ``Exception`` instance is
            raised to that job's caller.
        window: Seconds to keep collecting jobs after the first one arrives.
        max_jobs: Most jobs handed to ``run_batch`` at once.
        name: Name of the worker thread.
    """

    def __init__(
        self, run_batch: BatchRunner, *, window: float = 0.005, max_jobs: int = 64, name: str = "batch"
    ) -> None:
        if window < 0 or max_jobs < 1:
            msg = f"BatchQueue needs window >= 0 and max_jobs >= 1, got {window} and {max_jobs}."
            raise ValueError(msg)
        self._run_batch = run_batch
        self._window = window
        self._max_jobs = max_jobs
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._close_lock = threading.Lock()
        self.batches = 0
        """How many batches the worker has run (for tests and benchmarks)."""
        self.dropped = 0
        """Jobs dropped unrun because their caller had cancelled them."""
        self._worker = threading.Thread(target=self._loop, name=name, daemon=True)
        self._worker.start()

    def submit(self, kind: str, payload: Any) -> Future:
        """Queue one job and return its future."""
        job = Job(kind, payload)
        with self._close_lock:
            if self._closed:
                msg = "This backend was closed; create a new one to run more requests."
                raise RuntimeError(msg)
            self._queue.put(job)
        return job.future

    def close(self, timeout: float | None = 10.0) -> None:
        """Finish the queued jobs, then stop the worker thread."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if threading.current_thread() is not self._worker:
            self._worker.join(timeout)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def _loop(self) -> None:
        while True:
            jobs, stop = self._collect()
            wanted = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            self.dropped += len(jobs) - len(wanted)
            if wanted:
                self._run(wanted)
            if stop:
                return

    def _collect(self) -> tuple[list[Job], bool]:
        """Block for one job, then gather more for ``window`` seconds."""
        first = self._queue.get()
        if first is _STOP:
            return [], True
        jobs = [first]
        deadline = time.monotonic() + self._window
        while len(jobs) < self._max_jobs:
            try:
                item = (
                    self._queue.get(timeout=max(deadline - time.monotonic(), 0))
                    if self._window
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                break
            if item is _STOP:
                return jobs, True
            jobs.append(item)
        return jobs, False

    def _run(self, jobs: list[Job]) -> None:
        """Run ``jobs`` together; on failure, one at a time so errors stay with their caller."""
        self.batches += 1
        try:
            results = list(self._run_batch(jobs))
        except BaseException as error:  # noqa: BLE001 - handed to the callers, never lost
            if len(jobs) == 1:
                _resolve(jobs[0], error)
                return
            logger.debug("A batch of %d jobs failed (%r); running them one at a time.", len(jobs), error)
            for job in jobs:
                self._run([job])
            return
        for job, result in zip(jobs, results):
            _resolve(job, result)


def _resolve(job: Job, result: Any) -> None:
    if isinstance(result, BaseException):
        job.future.set_exception(result)
    else:
        job.future.set_result(result)
