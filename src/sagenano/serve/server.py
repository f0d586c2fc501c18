"""One server's settings and what its routes share: the model it explains, its limits, its reports and its worker."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request

from ..inverse.options import MAX_QUESTION_CHARS
from ..inverse.report import Report
from ..loading import LoadedModel
from .guard import MAX_BODY_BYTES
from .schemas import MAX_NEW_TOKENS
from .store import ReportStore
from .worker import ModelWorker


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
    allowed_hosts: tuple[str, ...] = ("*",)  # Host headers answered ("*": any); `serve` on loopback: loopback names
    max_body_bytes: int = MAX_BODY_BYTES


@dataclass(frozen=True)
class Server:
    """What every route reads (`app.state.server`, through the `CurrentServer` dependency)."""

    loaded: LoadedModel
    settings: ServerSettings
    store: ReportStore
    worker: ModelWorker

    @classmethod
    def from_settings(cls, loaded: LoadedModel, settings: ServerSettings) -> Server:
        """The server's store and worker, built from its settings (the app's lifespan opens and closes them)."""
        store = ReportStore(settings.store, settings.capacity)
        return cls(loaded, settings, store, ModelWorker(settings.max_pending, settings.time_limit))

    def stored(self, report_id: str) -> Report:
        """The stored report, or 404."""
        report = self.store.get(report_id)
        if report is None:
            raise HTTPException(
                404,
                f"no report {report_id!r}: it was never made here, or it was dropped as one of "
                f"the oldest beyond the last {self.store.capacity}; explain the question again",
            )
        return report

    def check_length(self, question: str) -> None:
        """422 when the question is longer than this server takes."""
        limit = self.settings.max_question_chars
        if len(question) > limit:
            raise HTTPException(422, f"the question has {len(question)} characters; this server takes at most {limit}")

    def check_new_tokens(self, max_new_tokens: int) -> None:
        """422 when a request asks for a longer chain than this server allows."""
        limit = self.settings.max_new_tokens
        if max_new_tokens > limit:
            raise HTTPException(422, f"max_new_tokens is {max_new_tokens}; this server allows at most {limit}")


async def current_server(request: Request) -> Server:
    # async: FastAPI would run a plain function in its thread pool, a thread hop per request for an attribute read
    return request.app.state.server


CurrentServer = Annotated[Server, Depends(current_server)]
