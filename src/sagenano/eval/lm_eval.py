"""lm-evaluation-harness's own command line, with SAGE models registered: `python -m sagenano.eval.lm_eval run ...`.

`lm_eval --model hf` loads a checkpoint through transformers' Auto classes, which know `model_type="sage_nano"`
only once sagenano is imported. This module imports it, then hands every argument to lm_eval unchanged.
"""

from __future__ import annotations

from .. import model as _register_sage  # noqa: F401  (registers sage_nano with the Auto classes)

try:
    from lm_eval.__main__ import cli_evaluate
except ImportError as error:
    raise SystemExit(
        f"lm-evaluation-harness is not installed ({error}); install it with: pip install 'sagenano[eval]'"
    ) from error

if __name__ == "__main__":
    cli_evaluate()
