"""Inverse reasoning: explain why a model produced its reasoning chain, and check the explanation.

report = sagenano.explain(model, tokenizer, "If 3x + 2 = 14, what is x?")
report.show(); report.to_json(); report.text("novice")
why_over(model, tokenizer, report, position); what_if(model, tokenizer, report, edited); simpler_way(...)

The names load their modules on first use (PEP 562): `ExplainOptions` and `Report` import no torch, so the command
line can read the options' defaults without paying for the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_getattr

# public name -> the submodule that defines it
_EXPORTS = {
    "DEPTHS": "render.words",
    "Comparison": "interact",
    "Counterfactual": "interact",
    "ExplainOptions": "options",
    "NamedTensor": "step_record",
    "Report": "report",
    "Simplification": "interact",
    "StepRecord": "step_record",
    "explain": "engine",
    "record_step": "step_record",
    "simpler_way": "interact",
    "validate": "validation",
    "validate_and_refine": "validation",
    "what_if": "interact",
    "why_over": "interact",
}
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

if TYPE_CHECKING:
    from .engine import explain
    from .interact import Comparison, Counterfactual, Simplification, simpler_way, what_if, why_over
    from .options import ExplainOptions
    from .render.words import DEPTHS
    from .report import Report
    from .step_record import NamedTensor, StepRecord, record_step
    from .validation import validate, validate_and_refine


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())
