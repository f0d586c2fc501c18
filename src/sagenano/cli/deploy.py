"""`sage-nano quantize` (4/8-bit weights) and `sage-nano serve` (the REST API and web page)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .common import ModelPath, app, console, fail, untrained_panel


@app.command()
def quantize(
    out: Annotated[Path, typer.Option(help="New folder for the quantized model, its tokenizer and calibration.")],
    bits: Annotated[int, typer.Option(help="4 or 8.")] = 4,
    model: ModelPath = None,
) -> None:
    """Quantize a model's linear layers and token embeddings to 4 or 8 bits (optimum-quanto; a tied LM head shares
    the embeddings' table). Use the folder with --model in explain, eval and serve."""
    try:
        from ..loading import load_model
        from ..quantize import quantize as run_quantize

        result = run_quantize(load_model(model), bits, out)
    except ImportError as error:
        fail(f"quantize needs optimum-quanto ({error.name} is missing): pip install -e '.[quantize]'")
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        fail(str(error))
    ratio = result.bytes_after / result.bytes_before_bf16
    console.print(
        f"{result.layers} linear and embedding layers quantized to {bits} bits; weights "
        f"{result.bytes_before_bf16 / 1e6:.2f} MB in bf16 -> {result.bytes_after / 1e6:.2f} MB ({ratio:.2f}x); "
        f"written to {result.out}"
    )


@app.command()
def serve(
    model: ModelPath = None,
    host: Annotated[str, typer.Option(help="Address to bind. The default serves this machine only.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    store: Annotated[
        Path | None, typer.Option(help="SQLite file of the kept reports (default: ~/.cache/sagenano/reports.sqlite3).")
    ] = None,
    capacity: Annotated[int, typer.Option(help="Reports kept; the oldest are dropped beyond it.")] = 1000,
    queue: Annotated[int, typer.Option(help="Requests queued or running at once; more get 503 + Retry-After.")] = 8,
    time_limit: Annotated[float, typer.Option(help="Seconds a request may take before it is stopped (504).")] = 120.0,
    max_new_tokens: Annotated[int, typer.Option(help="Largest max_new_tokens a request may ask for.")] = 512,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A Host header the server answers to (repeat for more; '*' for any). Default: the loopback "
            "names when --host is loopback (so a page elsewhere cannot reach it by DNS rebinding), else any."
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads for the model (default: torch's, one per core). Fewer when other work "
            "shares the machine: threads waiting on a busy core slow every request many times over.",
        ),
    ] = None,
) -> None:
    """Serve the REST API and the web page: ask a question, watch the chain appear, click a decision point for
    its alternatives and "why this over that", edit the question for "what if", look for a simpler way."""
    import uvicorn

    from ..loading import load_model
    from ..serve import ServerSettings, create_app, default_store_path
    from ..serve.guard import LOOPBACK_HOSTS

    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        loaded = load_model(model)
        settings = ServerSettings(
            store=store or default_store_path(),
            capacity=capacity,
            max_pending=queue,
            time_limit=time_limit,
            max_new_tokens=max_new_tokens,
            allowed_hosts=tuple(allowed_host or (LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else ("*",))),
        )
        server_app = create_app(loaded, settings)
    except (ValueError, FileNotFoundError) as error:
        fail(str(error))
    if not loaded.trained:
        console.print(untrained_panel())
    console.print(f"serving {loaded.source} on http://{host}:{port}/  (API docs: http://{host}:{port}/docs)")
    uvicorn.run(server_app, host=host, port=port, log_level="info")
