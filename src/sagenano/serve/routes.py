"""The REST API's endpoints and the web page: each checks its request, then runs the model work on the worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from ..inverse import explain, simpler_way, what_if, why_over
from ..inverse.interact import MAX_SAMPLES
from ..inverse.render.words import DEPTHS, Depth
from .schemas import (
    ERRORS,
    STREAM,
    CompareRequest,
    CompareResponse,
    CounterfactualRequest,
    CounterfactualResponse,
    ExplainRequest,
    ExplainResponse,
    Health,
    ModelInfo,
    ReportResponse,
    SimplifyRequest,
    SimplifyResponse,
)
from .server import CurrentServer, Server
from .work import Work, run, stream
from .worker import Progress

STATIC = Path(__file__).parent / "static"

router = APIRouter()


# --- the work of each request: checked before it is queued, run on the worker --------------------------------


def explain_work(server: Server, body: ExplainRequest) -> Work:
    server.check_length(body.question)
    tokens = body.max_new_tokens
    if "max_new_tokens" not in body.model_fields_set:  # the default, within what this server allows
        tokens = min(tokens, server.settings.max_new_tokens)
    server.check_new_tokens(tokens)
    loaded = server.loaded

    def work(progress: Progress) -> ExplainResponse:
        report = explain(
            loaded.model,
            loaded.tokenizer,
            body.question,
            model_name=loaded.source,
            progress=progress,
            calibration=loaded.calibration,
            max_new_tokens=tokens,
            threshold=body.threshold,
            max_decision_points=body.max_decision_points,
            alternatives=body.alternatives,
            rollouts=body.rollouts,
            validate=body.verify,
        )
        report_id = server.store.add(report)
        return ExplainResponse(
            id=report_id,
            url=f"/v1/reports/{report_id}",
            depth=body.depth,
            text=report.text(body.depth),
            texts=texts(report),
            report=report,
        )

    return work


def compare_work(server: Server, body: CompareRequest) -> Work:
    report = server.stored(body.report_id)

    def work(progress: Progress) -> CompareResponse:
        result = why_over(server.loaded.model, server.loaded.tokenizer, report, body.position, body.alternative)
        return CompareResponse(
            report_id=body.report_id,
            depth=body.depth,
            text=result.text(body.depth),
            texts=texts(result),
            comparison=result,
        )

    return work


def counterfactual_work(server: Server, body: CounterfactualRequest) -> Work:
    server.check_length(body.question)
    original = server.stored(body.report_id)

    def work(progress: Progress) -> CounterfactualResponse:
        result = what_if(server.loaded.model, server.loaded.tokenizer, original, body.question, progress=progress)
        return CounterfactualResponse(
            report_id=body.report_id,
            new_report_id=server.store.add(result.report),
            depth=body.depth,
            text=result.text(body.depth),
            texts=texts(result),
            counterfactual=result,
        )

    return work


def simplify_work(server: Server, body: SimplifyRequest) -> Work:
    original = server.stored(body.report_id)

    def work(progress: Progress) -> SimplifyResponse:
        model, tokenizer = server.loaded.model, server.loaded.tokenizer
        result = simpler_way(
            model, tokenizer, original, n=body.n, temperature=body.temperature, seed=body.seed, progress=progress
        )
        return SimplifyResponse(
            report_id=body.report_id,
            new_report_id=server.store.add(result.report) if result.report is not None else None,
            depth=body.depth,
            text=result.text(body.depth),
            texts=texts(result),
            simplification=result,
        )

    return work


def texts(result: Any) -> dict[str, str]:
    """The explanation at every depth."""
    return {depth: result.text(depth) for depth in DEPTHS}


# --- the endpoints -------------------------------------------------------------------------------------------


@router.post("/v1/explain", response_model=ExplainResponse, responses=ERRORS, tags=["explain"])
async def explain_question(body: ExplainRequest, server: CurrentServer, request: Request) -> ExplainResponse:
    """Answer a question with a reasoning chain and explain it (decision points, alternatives and their
    outcomes, confidences, dependencies), every claim checked on the model."""
    return await run(server.worker, explain_work(server, body), request)


@router.post("/v1/explain/stream", responses={**STREAM, **ERRORS}, tags=["explain"])
async def explain_stream(body: ExplainRequest, server: CurrentServer) -> StreamingResponse:
    """/v1/explain with progress: server-sent events `queued`, `phase`, `chain`, then `result` (an
    ExplainResponse) or `error` ({status, detail})."""
    return stream(server.worker, explain_work(server, body))


@router.post("/v1/compare", response_model=CompareResponse, responses=ERRORS, tags=["interact"])
async def compare(body: CompareRequest, server: CurrentServer, request: Request) -> CompareResponse:
    """Why the chosen token over an alternative at a decision point: probabilities, rollouts and answers, and
    the spans that favour each (gradient of log p(A) − log p(B)), each side's top span checked by masking."""
    return await run(server.worker, compare_work(server, body), request)


@router.post("/v1/counterfactual", response_model=CounterfactualResponse, responses=ERRORS, tags=["interact"])
async def counterfactual(
    body: CounterfactualRequest, server: CurrentServer, request: Request
) -> CounterfactualResponse:
    """What if the question were different: explain the edited question and diff it against the report."""
    return await run(server.worker, counterfactual_work(server, body), request)


@router.post("/v1/counterfactual/stream", responses={**STREAM, **ERRORS}, tags=["interact"])
async def counterfactual_stream(body: CounterfactualRequest, server: CurrentServer) -> StreamingResponse:
    """/v1/counterfactual with progress events (as /v1/explain/stream)."""
    return stream(server.worker, counterfactual_work(server, body))


@router.post("/v1/simplify", response_model=SimplifyResponse, responses=ERRORS, tags=["interact"])
async def simplify(body: SimplifyRequest, server: CurrentServer, request: Request) -> SimplifyResponse:
    """Is there a simpler way: sample chains, keep the shorter ones with the same answer that pass
    validation, return the shortest beside the original."""
    return await run(server.worker, simplify_work(server, body), request)


@router.post("/v1/simplify/stream", responses={**STREAM, **ERRORS}, tags=["interact"])
async def simplify_stream(body: SimplifyRequest, server: CurrentServer) -> StreamingResponse:
    """/v1/simplify with progress events (as /v1/explain/stream)."""
    return stream(server.worker, simplify_work(server, body))


@router.get("/v1/reports/{report_id}", response_model=ReportResponse, responses=ERRORS, tags=["reports"])
async def get_report(report_id: str, server: CurrentServer, depth: Depth = "intermediate") -> ReportResponse:
    """A stored report with its explanation at a depth (switching depth recomputes nothing)."""
    report = server.stored(report_id)
    return ReportResponse(id=report_id, depth=depth, text=report.text(depth), texts=texts(report), report=report)


@router.get(
    "/v1/reports/{report_id}/json", responses={200: {"content": {"application/json": {}}}, **ERRORS}, tags=["reports"]
)
async def download_report(report_id: str, server: CurrentServer) -> Response:
    """The report as a JSON file (the schema of `sagenano.Report`; `Report.from_json` reads it back)."""
    return Response(
        server.stored(report_id).to_json(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="sage-report-{report_id}.json"'},
    )


@router.get("/v1/model", response_model=ModelInfo, tags=["server"])
async def model_info(server: CurrentServer) -> ModelInfo:
    """The model this server explains, and the server's limits."""
    from ..decoding import context_length, is_sage

    loaded, settings = server.loaded, server.settings
    return ModelInfo(
        source=loaded.source,
        trained=loaded.trained,
        architecture=type(loaded.model).__name__,
        parameters=sum(p.numel() for p in loaded.model.parameters()),
        context_length=context_length(loaded.model),
        sage=is_sage(loaded.model),
        calibration_temperature=loaded.temperature,
        calibration=loaded.calibration.method if loaded.calibration else None,
        limits={
            "max_question_chars": settings.max_question_chars,
            "max_new_tokens": settings.max_new_tokens,
            "max_samples": MAX_SAMPLES,
            "max_pending": settings.max_pending,
            "time_limit_s": settings.time_limit,
            "max_body_bytes": settings.max_body_bytes,
        },
    )


@router.get("/healthz", response_model=Health, tags=["server"])
async def healthz(server: CurrentServer) -> Health:
    worker = server.worker
    return Health(
        status="ok",
        pending=worker.pending,
        max_pending=worker.max_pending,
        completed=worker.completed,
        reports=len(server.store),
        memory_mb=resident_memory_mb(),
        threads=torch.get_num_threads(),
    )


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html")


def resident_memory_mb() -> float | None:
    """This process's resident set size (Linux /proc), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None
