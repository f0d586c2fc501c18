"""One model, many requests: the work runs one job at a time on a single thread, behind a bounded queue.

A PyTorch model is not safe to share between threads that run it at once, and on a CPU two analyses side by
side would only slow each other. So every request's work is a job for one worker thread. The queue is bounded
(queued + running ≤ `max_pending`): a request beyond that is refused at once (`Busy`, served as 503 with
`Retry-After`) instead of waiting without end. Each job has a time limit counted from its submission: the
engine calls back between its phases, and a job past its limit (or whose client went away) stops there.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

Progress = Callable[[str, dict[str, Any]], None]


class Busy(Exception):
    """The queue is full; `retry_after` estimates the seconds until a place frees up."""

    def __init__(self, pending: int, retry_after: int) -> None:
        super().__init__(f"the server is busy ({pending} requests queued or running); retry in {retry_after} s")
        self.retry_after = retry_after


class TimeLimitExceeded(Exception):
    """The job ran past its time limit and was stopped at the next phase boundary."""


class Cancelled(Exception):
    """The client went away; the job was stopped at the next phase boundary."""


@dataclass
class Job:
    """A unit of model work: its future, its deadline, and whether its client still waits."""

    deadline: float
    time_limit: float
    on_event: Progress | None = None
    cancelled: bool = False
    future: Future = field(default_factory=Future)

    def progress(self, event: str, data: dict[str, Any]) -> None:
        """Called by the work between phases: stops it when cancelled or late, else passes the event on."""
        if self.cancelled:
            raise Cancelled("the client stopped waiting")
        if time.monotonic() > self.deadline:
            raise TimeLimitExceeded(
                f"the work took longer than the server's limit of {self.time_limit:g} s; ask for less (fewer "
                "tokens, alternatives or samples) or start the server with a larger --time-limit"
            )
        if self.on_event is not None:
            self.on_event(event, data)


class ModelWorker:
    """Runs jobs one at a time on one thread; refuses jobs beyond `max_pending`."""

    def __init__(self, max_pending: int = 8, time_limit: float = 120.0) -> None:
        if max_pending < 1 or time_limit <= 0:
            raise ValueError("max_pending must be at least 1 and time_limit positive")
        self.max_pending = max_pending
        self.time_limit = time_limit
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending = 0
        self._mean_seconds = 1.0  # running mean of job durations, for Retry-After
        self.completed = 0

    @property
    def pending(self) -> int:
        return self._pending

    def start(self) -> None:
        """Starts the worker thread (again, after a shutdown: an app's lifespan may run more than once)."""
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sagenano-model")

    def submit(self, work: Callable[[Progress], Any], on_event: Progress | None = None) -> Job:
        """Queues `work(progress)`; raises Busy when the queue is full."""
        self.start()
        with self._lock:
            if self._pending >= self.max_pending:
                raise Busy(self._pending, max(1, math.ceil(self._mean_seconds * self._pending)))
            self._pending += 1
        job = Job(deadline=time.monotonic() + self.time_limit, time_limit=self.time_limit, on_event=on_event)
        self._executor.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work: Callable[[Progress], Any]) -> None:
        start = time.monotonic()
        running = job.future.set_running_or_notify_cancel()  # False: its request gave up while it waited
        result, error = None, None
        if running:
            try:
                job.progress("started", {})
                result = work(job.progress)
            except BaseException as caught:  # the request handler reports it; the worker thread must live on
                error = caught
        # The place frees up before the client hears back, so its next request is never refused as busy.
        with self._lock:
            self._pending -= 1
            self.completed += 1
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.monotonic() - start)
        if running and error is not None:
            job.future.set_exception(error)
        elif running:
            job.future.set_result(result)

    def shutdown(self) -> None:
        """Lets the running job finish, drops the queued ones and stops the thread."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
