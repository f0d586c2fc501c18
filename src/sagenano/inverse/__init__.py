"""Inverse reasoning: explain why a model produced its reasoning chain, and check the explanation.

report = sagenano.explain(model, tokenizer, "If 3x + 2 = 14, what is x?")
report.show(); report.to_json(); report.text("novice")
why_over(model, tokenizer, report, position); what_if(model, tokenizer, report, edited); simpler_way(...)
"""

from .engine import ExplainOptions, explain
from .interact import Comparison, Counterfactual, Simplification, simpler_way, what_if, why_over
from .record import NamedTensor, StepRecord, record_step
from .report import DEPTHS, Report
from .validate import validate, validate_and_refine

__all__ = [
    "DEPTHS",
    "Comparison",
    "Counterfactual",
    "ExplainOptions",
    "NamedTensor",
    "Report",
    "Simplification",
    "StepRecord",
    "explain",
    "record_step",
    "simpler_way",
    "validate",
    "validate_and_refine",
    "what_if",
    "why_over",
]
