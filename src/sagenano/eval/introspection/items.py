"""An item's gold chain, whether a report's chain is that gold chain, and the item's seed."""

from __future__ import annotations

import zlib

from ...data import prompt_text, training_text
from ...data.schema import ReasoningItem
from ...inverse import Report
from .settings import IntrospectionSettings


def gold_chain(item: ReasoningItem) -> str:
    return training_text(item)[len(prompt_text(item.question)) :]


def aligned(report: Report, item: ReasoningItem) -> bool:
    """Report step k is gold step k, the last report step is the answer, and the question is unchanged."""
    steps = report.steps
    return (
        report.question == item.question
        and report.prompt == prompt_text(item.question)
        and len(steps) == len(item.steps) + 1
        and all(s.text == g for s, g in zip(steps, item.steps, strict=False))
        and steps[-1].is_answer
        and steps[-1].text == item.answer
    )


def item_seed(settings: IntrospectionSettings, item: ReasoningItem) -> int:
    return (settings.seed * 1_000_003 + zlib.crc32(item.id.encode())) % 2**31
