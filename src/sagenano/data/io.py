"""JSONL files of reasoning items: atomic writes and streaming reads with line-numbered errors."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from .schema import ReasoningItem


def write_jsonl(items: Iterable[ReasoningItem | Mapping[str, Any]], path: str | Path) -> int:
    """Write items one JSON object per line, atomically: readers see the old file or the whole new one.

    Args:
        items: Items or plain dicts (consumed once, never held in memory together).
        path: Target file; its folder is created if missing.

    Returns:
        How many items were written.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            for item in items:
                record = item.to_dict() if isinstance(item, ReasoningItem) else dict(item)
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
                count += 1
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return count


def _numbered_records(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, JSON object) for each non-blank line, streaming."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(
                    f"{path}, line {number}: not valid JSON ({error.msg}, column {error.colno})."
                ) from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}.")
            yield number, record


def iter_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON object of each non-blank line as a plain dict, streaming.

    Raises:
        ValueError: If a line is not a JSON object; the message names the file and the line number.
    """
    for _, record in _numbered_records(path):
        yield record


def iter_jsonl(path: str | Path) -> Iterator[ReasoningItem]:
    """Yield the reasoning items of a JSONL file one at a time, never loading the whole file.

    Args:
        path: A file written by `write_jsonl`.

    Raises:
        ValueError: If a line is malformed; the message names the file and the line number.
    """
    for number, record in _numbered_records(path):
        try:
            item = ReasoningItem.from_dict(record)
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error}") from None
        yield item


def read_jsonl(path: str | Path) -> list[ReasoningItem]:
    """All reasoning items of a JSONL file (see `iter_jsonl`)."""
    return list(iter_jsonl(path))
