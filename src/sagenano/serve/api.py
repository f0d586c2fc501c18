"""The REST API and the web page of `sage-nano serve`: thin over `sagenano.explain` and its interactions.

POST /v1/explain, /v1/compare, /v1/counterfactual, /v1/simplify (each also as …/stream: server-sent events
with the work's progress, then the result), GET /v1/reports/{id} (at any depth, nothing recomputed),
/v1/reports/{id}/json (the report file), /v1/model, /healthz, and the page at /. OpenAPI at /openapi.json.

Every rejection is a 4xx whose `detail` says what to change; a full queue is 503 with Retry-After; work past the
time limit is 504.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import torch
from fastapi import FastAPI, HTTPException, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator

from ..inverse.engine import MAX_QUESTION_CHARS, explain
from ..inverse.interact import MAX_SAMPLES, Comparison, Counterfactual, Simplification, simpler_way, what_if, why_over
from ..inverse.report import DEPTHS, Depth, Report
from ..loading import LoadedModel
from .store import ReportStore
from .worker import Busy, Cancelled, ModelWorker, Progress, TimeLimitExceeded

log = logging.getLogger("sagenano.serve")
STATIC = Path(__file__).parent / "static"
MAX_NEW_TOKENS = 512
GRACE_SECONDS = 5.0  # past the time limit, a request stops waiting even if the work is inside one long phase


def default_store_path() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return cache / "sagenano" / "reports.sqlite3"


@dataclass
class ServerSettings:
    """Limits and storage of one server."""

    store: str | Path = ":memory:"
    capacity: int = 1000
    max_pending: int = 8
    time_limit: float = 120.0
    max_question_chars: int = MAX_QUESTION_CHARS
    max_new_tokens: int = MAX_NEW_TOKENS


# --- requests and responses --------------------------------------------------------------------------------


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


Question = Annotated[str, Field(min_length=1, max_length=MAX_QUESTION_CHARS, description="the question to reason on")]
ReportId = Annotated[str, Field(min_length=1, max_length=64, description="id returned by /v1/explain")]


class _AsksQuestion(_Request):
    question: Question
    depth: Depth = "intermediate"

    @field_validator("question")
    @classmethod
    def _not_blank(cls, question: str) -> str:
        if not question.strip():
            raise ValueError("the question is blank; ask something, e.g. 'If 3x + 2 = 14, what is x?'")
        return question


class ExplainRequest(_AsksQuestion):
    """A question to answer and explain, with the engine's main options."""

    max_new_tokens: int = Field(160, ge=1, le=MAX_NEW_TOKENS, description="bound on the generated chain")
    threshold: float = Field(0.3, ge=0, le=1, description="decision score at which a token is a decision point")
    max_decision_points: int = Field(6, ge=0, le=12)
    alternatives: int = Field(5, ge=1, le=10, description="alternative tokens rolled out per decision point")
    rollouts: bool = True
    verify: bool = Field(True, description="check every claim by intervention (ValidateConsistency)")


class ExplainResponse(BaseModel):
    id: str
    url: str
    depth: Depth
    text: str = Field(description="the explanation in natural language at `depth`")
    texts: dict[str, str] = Field(description="the explanation at every depth (switch depth without a request)")
    report: Report


class CompareRequest(_Request):
    """Why the chosen token over an alternative, at one of the report's decision points."""

    report_id: ReportId
    position: int = Field(ge=0, description="the decision point's position in the chain")
    alternative: int | None = Field(None, ge=0, description="the alternative's token id (default: the likeliest)")
    depth: Depth = "intermediate"


class CompareResponse(BaseModel):
    report_id: str
    depth: Depth
    text: str
    texts: dict[str, str] = Field(description="the explanation at every depth (switch depth without a request)")
    comparison: Comparison


class CounterfactualRequest(_AsksQuestion):
    """The report's question, edited: explained again with the same options, and diffed."""

    report_id: ReportId


class CounterfactualResponse(BaseModel):
    report_id: str = Field(description="the original report")
    new_report_id: str = Field(description="the edited question's report")
    depth: Depth
    text: str
    texts: dict[str, str] = Field(description="the explanation at every depth (switch depth without a request)")
    counterfactual: Counterfactual


class SimplifyRequest(_Request):
    """Sample n chains and look for a shorter one with the same answer that passes validation."""

    report_id: ReportId
    n: int = Field(8, ge=1, le=MAX_SAMPLES, description="chains to sample")
    temperature: float = Field(0.8, gt=0, le=2)
    seed: int = Field(0, ge=0, le=2**31 - 1)
    depth: Depth = "intermediate"


class SimplifyResponse(BaseModel):
    report_id: str
    new_report_id: str | None = Field(description="the simpler chain's report, when one was found")
    depth: Depth
    text: str
    texts: dict[str, str] = Field(description="the explanation at every depth (switch depth without a request)")
    simplification: Simplification


class ReportResponse(BaseModel):
    id: str
    depth: Depth
    text: str
    texts: dict[str, str] = Field(description="the explanation at every depth (switch depth without a request)")
    report: Report


class Health(BaseModel):
    status: Literal["ok"]
    pending: int
    max_pending: int
    completed: int
    reports: int
    memory_mb: float | None = Field(description="resident memory of the server process (None where unknown)")
    threads: int = Field(description="CPU threads the model runs on (`sage-nano serve --threads`)")


class ModelInfo(BaseModel):
    source: str
    trained: bool
    architecture: str
    parameters: int
    context_length: int | None
    sage: bool
    calibration_temperature: float | None
    calibration: str | None = Field(
        description="the answer-confidence calibration: 'temperature' or 'temperature+isotonic'; None: not calibrated"
    )
    limits: dict[str, int | float]


class Problem(BaseModel):
    detail: str


_ERRORS = {
    400: {"model": Problem, "description": "malformed request body"},
    404: {"model": Problem, "description": "no such report"},
    422: {"model": Problem, "description": "a field out of range, or input the model cannot take"},
    503: {"model": Problem, "description": "queue full: retry after the Retry-After header's seconds"},
    504: {"model": Problem, "description": "the work ran past the server's time limit"},
}
_STREAM = {200: {"content": {"text/event-stream": {}}, "description": "progress events, then `result` or `error`"}}


# --- the app -----------------------------------------------------------------------------------------------


def create_app(loaded: LoadedModel, settings: ServerSettings | None = None) -> FastAPI:
    """The FastAPI app serving one loaded model."""
    settings = settings or ServerSettings()
    store = ReportStore(settings.store, settings.capacity)
    worker = ModelWorker(settings.max_pending, settings.time_limit)
    model, tokenizer = loaded.model, loaded.tokenizer

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        store.open()
        worker.start()
        yield
        worker.shutdown()
        store.close()

    app = FastAPI(
        lifespan=lifespan,
        title="SAGE-nano",
        version="1",
        summary="Inverse reasoning: why a model chose its reasoning chain, with every claim checked on the model.",
    )
    app.state.worker, app.state.store = worker, store
    app.exception_handler(RequestValidationError)(_invalid_request)

    def stored(report_id: str) -> Report:
        report = store.get(report_id)
        if report is None:
            raise HTTPException(
                404,
                f"no report {report_id!r}: it was never made here, or it was dropped as one of "
                f"the oldest beyond the last {store.capacity}; explain the question again",
            )
        return report

    def check_length(question: str) -> None:
        if len(question) > settings.max_question_chars:
            raise HTTPException(422, f"the question has {len(question)} characters; this server takes at most "
                                     f"{settings.max_question_chars}")  # fmt: skip

    def explain_work(body: ExplainRequest) -> Callable[[Progress], ExplainResponse]:
        check_length(body.question)
        if body.max_new_tokens > settings.max_new_tokens:
            raise HTTPException(422, f"max_new_tokens is {body.max_new_tokens}; this server allows at most "
                                     f"{settings.max_new_tokens}")  # fmt: skip

        def work(progress: Progress) -> ExplainResponse:
            report = explain(
                model, tokenizer, body.question, model_name=loaded.source, progress=progress,
                calibration=loaded.calibration, max_new_tokens=body.max_new_tokens, threshold=body.threshold,
                max_decision_points=body.max_decision_points, alternatives=body.alternatives,
                rollouts=body.rollouts, validate=body.verify,
            )  # fmt: skip
            report_id = store.add(report)
            return ExplainResponse(id=report_id, url=f"/v1/reports/{report_id}", depth=body.depth,
                                   text=report.text(body.depth), texts=_texts(report), report=report)  # fmt: skip

        return work

    def counterfactual_work(body: CounterfactualRequest) -> Callable[[Progress], CounterfactualResponse]:
        check_length(body.question)
        original = stored(body.report_id)

        def work(progress: Progress) -> CounterfactualResponse:
            result = what_if(model, tokenizer, original, body.question, progress=progress)
            new_id = store.add(result.report)
            return CounterfactualResponse(
                report_id=body.report_id,
                new_report_id=new_id,
                depth=body.depth,
                text=result.text(body.depth),
                texts=_texts(result),
                counterfactual=result,
            )

        return work

    def simplify_work(body: SimplifyRequest) -> Callable[[Progress], SimplifyResponse]:
        original = stored(body.report_id)

        def work(progress: Progress) -> SimplifyResponse:
            result = simpler_way(model, tokenizer, original, n=body.n, temperature=body.temperature,
                                 seed=body.seed, progress=progress)  # fmt: skip
            new_id = store.add(result.report) if result.report is not None else None
            return SimplifyResponse(
                report_id=body.report_id,
                new_report_id=new_id,
                depth=body.depth,
                text=result.text(body.depth),
                texts=_texts(result),
                simplification=result,
            )

        return work

    async def run(work: Callable[[Progress], Any]) -> Any:
        job = _submit(worker, work)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(job.future), settings.time_limit + GRACE_SECONDS)
        except TimeoutError as error:
            job.cancelled = True  # stops the work at its next phase
            raise HTTPException(
                504,
                f"the work took longer than the server's limit of {settings.time_limit:g} s; "
                "ask for less or start the server with a larger --time-limit",
            ) from error
        except asyncio.CancelledError:
            job.cancelled = True  # the client went away
            raise
        except Exception as error:
            status, detail = _problem(error)
            raise HTTPException(status, detail) from error

    @app.post("/v1/explain", response_model=ExplainResponse, responses=_ERRORS, tags=["explain"])
    async def explain_question(body: ExplainRequest) -> ExplainResponse:
        """Answer a question with a reasoning chain and explain it (decision points, alternatives and their
        outcomes, confidences, dependencies), every claim checked on the model."""
        return await run(explain_work(body))

    @app.post("/v1/explain/stream", responses={**_STREAM, **_ERRORS}, tags=["explain"])
    async def explain_stream(body: ExplainRequest, request: Request) -> StreamingResponse:
        """/v1/explain with progress: server-sent events `queued`, `phase`, `chain`, then `result` (an
        ExplainResponse) or `error` ({status, detail})."""
        return _stream(worker, explain_work(body), request, settings.time_limit)

    @app.post("/v1/compare", response_model=CompareResponse, responses=_ERRORS, tags=["interact"])
    async def compare(body: CompareRequest) -> CompareResponse:
        """Why the chosen token over an alternative at a decision point: probabilities, rollouts and answers, and
        the spans that favour each (gradient of log p(A) − log p(B)), each side's top span checked by masking."""
        report = stored(body.report_id)

        def work(progress: Progress) -> CompareResponse:
            result = why_over(model, tokenizer, report, body.position, body.alternative)
            return CompareResponse(report_id=body.report_id, depth=body.depth, text=result.text(body.depth),
                                   texts=_texts(result), comparison=result)  # fmt: skip

        return await run(work)

    @app.post("/v1/counterfactual", response_model=CounterfactualResponse, responses=_ERRORS, tags=["interact"])
    async def counterfactual(body: CounterfactualRequest) -> CounterfactualResponse:
        """What if the question were different: explain the edited question and diff it against the report."""
        return await run(counterfactual_work(body))

    @app.post("/v1/counterfactual/stream", responses={**_STREAM, **_ERRORS}, tags=["interact"])
    async def counterfactual_stream(body: CounterfactualRequest, request: Request) -> StreamingResponse:
        """/v1/counterfactual with progress events (as /v1/explain/stream)."""
        return _stream(worker, counterfactual_work(body), request, settings.time_limit)

    @app.post("/v1/simplify", response_model=SimplifyResponse, responses=_ERRORS, tags=["interact"])
    async def simplify(body: SimplifyRequest) -> SimplifyResponse:
        """Is there a simpler way: sample chains, keep the shorter ones with the same answer that pass
        validation, return the shortest beside the original."""
        return await run(simplify_work(body))

    @app.post("/v1/simplify/stream", responses={**_STREAM, **_ERRORS}, tags=["interact"])
    async def simplify_stream(body: SimplifyRequest, request: Request) -> StreamingResponse:
        """/v1/simplify with progress events (as /v1/explain/stream)."""
        return _stream(worker, simplify_work(body), request, settings.time_limit)

    @app.get("/v1/reports/{report_id}", response_model=ReportResponse, responses=_ERRORS, tags=["reports"])
    async def get_report(report_id: str, depth: Depth = "intermediate") -> ReportResponse:
        """A stored report with its explanation at a depth (switching depth recomputes nothing)."""
        report = stored(report_id)
        return ReportResponse(id=report_id, depth=depth, text=report.text(depth), texts=_texts(report), report=report)

    @app.get("/v1/reports/{report_id}/json", responses={200: {"content": {"application/json": {}}}, **_ERRORS},
             tags=["reports"])  # fmt: skip
    async def download_report(report_id: str) -> Response:
        """The report as a JSON file (the schema of `sagenano.Report`; `Report.from_json` reads it back)."""
        report = stored(report_id)
        return Response(
            report.to_json(),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="sage-report-{report_id}.json"'},
        )

    @app.get("/v1/model", response_model=ModelInfo, tags=["server"])
    async def model_info() -> ModelInfo:
        """The model this server explains, and the server's limits."""
        from ..generation import context_length
        from ..inverse.measure import is_sage

        return ModelInfo(
            source=loaded.source, trained=loaded.trained, architecture=type(model).__name__,
            parameters=sum(p.numel() for p in model.parameters()), context_length=context_length(model),
            sage=is_sage(model), calibration_temperature=loaded.temperature,
            calibration=loaded.calibration.method if loaded.calibration else None,
            limits={"max_question_chars": settings.max_question_chars, "max_new_tokens": settings.max_new_tokens,
                    "max_samples": MAX_SAMPLES, "max_pending": settings.max_pending,
                    "time_limit_s": settings.time_limit},
        )  # fmt: skip

    @app.get("/healthz", response_model=Health, tags=["server"])
    async def healthz() -> Health:
        return Health(status="ok", pending=worker.pending, max_pending=worker.max_pending,
                      completed=worker.completed, reports=len(store), memory_mb=resident_memory_mb(),
                      threads=torch.get_num_threads())  # fmt: skip

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


# --- helpers -----------------------------------------------------------------------------------------------


def resident_memory_mb() -> float | None:
    """This process's resident set size (Linux /proc), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _texts(result: Any) -> dict[str, str]:
    return {depth: result.text(depth) for depth in DEPTHS}


def _submit(worker: ModelWorker, work: Callable[[Progress], Any], on_event: Progress | None = None):
    try:
        return worker.submit(work, on_event)
    except Busy as busy:
        raise HTTPException(503, str(busy), headers={"Retry-After": str(busy.retry_after)}) from busy


def _problem(error: BaseException) -> tuple[int, str]:
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


def _event(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(jsonable_encoder(data))}\n\n"


def _stream(worker: ModelWorker, work: Callable[[Progress], Any], request: Request, limit: float) -> StreamingResponse:
    """Runs the work and streams its progress as server-sent events; the client leaving stops the work."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()
    job = _submit(worker, work, lambda name, data: loop.call_soon_threadsafe(events.put_nowait, (name, data)))
    done = asyncio.wrap_future(job.future)

    async def body() -> AsyncIterator[str]:
        deadline = loop.time() + limit + GRACE_SECONDS
        try:
            yield _event("queued", {"pending": worker.pending})
            while True:
                getter = asyncio.ensure_future(events.get())
                finished, _ = await asyncio.wait({getter, done}, timeout=max(deadline - loop.time(), 0),
                                                 return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                if getter in finished:
                    yield _event(*getter.result())
                    continue
                getter.cancel()
                if done not in finished:
                    yield _event("error", {"status": 504, "detail": f"the work took longer than {limit:g} s"})
                    return
                while not events.empty():
                    yield _event(*events.get_nowait())
                error = done.exception()
                if error is None:
                    yield _event("result", done.result())
                else:
                    status, detail = _problem(error)
                    yield _event("error", {"status": status, "detail": detail})
                return
        finally:
            job.cancelled = True  # stops the work at its next phase if the client left early

    return StreamingResponse(body(), media_type="text/event-stream", headers={"Cache-Control": "no-store"})


async def _invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 (400 for a body that is not JSON) with one readable line per problem."""
    problems = error.errors()
    if any(p.get("type") == "json_invalid" for p in problems):
        return JSONResponse({"detail": "the request body is not valid JSON; send an object such as "
                                       '{"question": "If 3x + 2 = 14, what is x?"}'}, status_code=400)  # fmt: skip
    lines = []
    for p in problems:
        where = ".".join(str(part) for part in p.get("loc", ())[1:]) or ".".join(map(str, p.get("loc", ())))
        lines.append(f"{where}: {p.get('msg', 'invalid')}")
    clean = [{k: v for k, v in p.items() if k in ("loc", "msg", "type")} for p in problems]
    return JSONResponse({"detail": "; ".join(lines), "errors": jsonable_encoder(clean)}, status_code=422)
