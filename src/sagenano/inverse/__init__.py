"""Inverse reasoning: explain why a model produced its reasoning chain, and check the explanation.

report = sagenano.explain(model, tokenizer, "If 3x + 2 = 14, what is x?")
report.show(); report.to_json(); report.text("novice")
"""

from .engine import ExplainOptions, explain
from .record import NamedTensor, StepRecord, record_step
from .report import DEPTHS, Report
from .validate import validate, validate_and_refine

__all__ = [
    "DEPTHS",
    "ExplainOptions",
    "NamedTensor",
    "Report",
    "StepRecord",
    "explain",
    "record_step",
    "validate",
    "validate_and_refine",
]
