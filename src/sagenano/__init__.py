"""SAGE-nano: inverse reasoning for language models.

The public names load their modules on first use (PEP 562), so `import sagenano` — and `sage-nano --help` —
do not pay for importing torch and transformers until something needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_getattr

# public name -> the submodule that defines it
_EXPORTS = {
    "PRESETS": "config",
    "SageConfig": "config",
    "ReasoningTrace": "generation",
    "StepSpan": "steps",
    "trace_generate": "generation",
    "Report": "inverse",
    "explain": "inverse",
    "simpler_way": "inverse",
    "what_if": "inverse",
    "why_over": "inverse",
    "LoadedModel": "loading",
    "load_model": "loading",
    "SageForCausalLM": "model",
    "SageModel": "model",
}
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

if TYPE_CHECKING:
    from .config import PRESETS, SageConfig
    from .generation import ReasoningTrace, trace_generate
    from .inverse import Report, explain, simpler_way, what_if, why_over
    from .loading import LoadedModel, load_model
    from .model import SageForCausalLM, SageModel
    from .steps import StepSpan


__getattr__ = lazy_getattr(__name__, _EXPORTS, globals())


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
