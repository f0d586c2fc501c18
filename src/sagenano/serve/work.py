"""A request's model work on the server's one worker: awaited within the time limit, or streamed as server-sent
events; whatever the work raises becomes an HTTP status and a detail."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import StreamingResponse

from .worker import Busy, Cancelled, Job, ModelWorker, Progress, TimeLimitExceeded

log = logging.getLogger("sagenano.serve")
GRACE_SECONDS = 5.0  # past the time limit, a request stops waiting even if the work is inside one long phase

Work = Callable[[Progress], Any]


def submit(worker: ModelWorker, work: Work, on_event: Progress | None = None) -> Job:
    """Queues the work; a full queue is 503 with Retry-After."""
    try:
        return worker.submit(work, on_event)
    except Busy as busy:
        raise HTTPException(503, str(busy), headers={"Retry-After": str(busy.retry_after)}) from busy


def wait_seconds(worker: ModelWorker) -> float:
    """How long a request waits for its work: the worker's time limit and a grace period."""
    return worker.time_limit + GRACE_SECONDS


async def run(worker: ModelWorker, work: Work, request: Request | None = None) -> Any:
    """Runs the work and returns its result; past the time limit 504, a failure its `problem`. When the client of
    `request` disconnects, the work stops at its next phase (Starlette does not cancel a plain endpoint then)."""
    job = submit(worker, work)
    result = asyncio.wrap_future(job.future)
    result.add_done_callback(_retrieve)
    gone = asyncio.ensure_future(_disconnected(request)) if request is not None else None
    try:
        finished, _ = await asyncio.wait(
            [f for f in (result, gone) if f is not None],
            timeout=wait_seconds(worker),
            return_when=asyncio.FIRST_COMPLETED,
        )
    except asyncio.CancelledError:
        job.cancelled = True  # the client went away
        raise
    finally:
        if gone is not None:
            gone.cancel()
    if result not in finished:
        job.cancelled = True  # stops the work at its next phase
        if gone is not None and gone in finished:
            raise HTTPException(499, "the client closed the connection; the work was stopped")
        raise HTTPException(
            504,
            f"the work took longer than the server's limit of {worker.time_limit:g} s; "
            "ask for less or start the server with a larger --time-limit",
        )
    if (error := result.exception()) is not None:
        status, detail = problem(error)
        raise HTTPException(status, detail) from error
    return result.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body is read by then, so the next message is the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _retrieve(future: asyncio.Future) -> None:
    """Marks the outcome of work nobody waits for any more (its client left) as seen, so asyncio does not log it
    as "Future exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


def problem(error: BaseException) -> tuple[int, str]:
    """The HTTP status and message for an error raised by the work."""
    if isinstance(error, HTTPException):
        return error.status_code, str(error.detail)
    if isinstance(error, TimeLimitExceeded):
        return 504, str(error)
    if isinstance(error, Cancelled):
        return 499, str(error)
    if isinstance(error, (ValueError, FileNotFoundError)):
        return 422, str(error)
    log.exception("internal error", exc_info=error)
    return 500, f"internal error ({type(error).__name__}); the server log has the details"


def event(name: str, data: Any) -> str:
    """One server-sent event."""
    return f"event: {name}\ndata: {json.dumps(jsonable_encoder(data))}\n\n"


def stream(worker: ModelWorker, work: Work) -> StreamingResponse:
    """Runs the work and streams its progress as server-sent events; the client leaving stops the work."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    job = submit(worker, work, lambda name, data: loop.call_soon_threadsafe(events.put_nowait, (name, data)))
    return StreamingResponse(
        _events(worker, job, events), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
    )


async def _events(worker: ModelWorker, job: Job, events: asyncio.Queue) -> AsyncIterator[str]:
    """`queued`, the work's own events as they come, then `result` or `error` ({status, detail})."""
    loop = asyncio.get_running_loop()
    done = asyncio.wrap_future(job.future)
    done.add_done_callback(_retrieve)
    deadline = loop.time() + wait_seconds(worker)
    getter = None
    try:
        yield event("queued", {"pending": worker.pending})
        while True:
            getter = asyncio.ensure_future(events.get())
            finished, _ = await asyncio.wait(
                {getter, done}, timeout=max(deadline - loop.time(), 0), return_when=asyncio.FIRST_COMPLETED
            )
            if getter in finished:
                yield event(*getter.result())
                continue
            getter.cancel()
            if done not in finished:
                yield event("error", {"status": 504, "detail": f"the work took longer than {worker.time_limit:g} s"})
                return
            while not events.empty():
                yield event(*events.get_nowait())
            error = done.exception()
            if error is None:
                yield event("result", done.result())
            else:
                status, detail = problem(error)
                yield event("error", {"status": status, "detail": detail})
            return
    finally:
        job.cancelled = True  # stops the work at its next phase if the client left early
        if getter is not None:
            getter.cancel()  # else a client that leaves mid-stream leaves a pending task behind
