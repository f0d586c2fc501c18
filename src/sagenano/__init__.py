"""SAGE-nano: inverse reasoning for language models."""

from .config import PRESETS, SageConfig
from .generation import ReasoningTrace, StepSpan, trace_generate
from .inverse import Report, explain, simpler_way, what_if, why_over
from .loading import LoadedModel, load_model
from .model import SageForCausalLM, SageModel

__all__ = [
    "PRESETS",
    "LoadedModel",
    "ReasoningTrace",
    "Report",
    "SageConfig",
    "SageForCausalLM",
    "SageModel",
    "StepSpan",
    "explain",
    "load_model",
    "simpler_way",
    "trace_generate",
    "what_if",
    "why_over",
]
__version__ = "0.1.0"
