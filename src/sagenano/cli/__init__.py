"""The `sage-nano` command: explain a reasoning chain, build and train models, evaluate and serve them.

One module per group of commands; importing them (in this order, which is `--help`'s) registers them on `app`.
"""

from __future__ import annotations

import os

# Each module registers its commands on `app` as it is imported; `--help` lists them in this order.
from . import explain  # noqa: F401

# isort: split
from . import build  # noqa: F401

# isort: split
from . import evaluate  # noqa: F401

# isort: split
from . import deploy  # noqa: F401

# isort: split
from .build import calibrate
from .common import app

__all__ = ["app", "calibrate", "main"]


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()
