"""Packages whose public names load their modules on first use (PEP 562), so that importing the package stays cheap:
`import sagenano` and `sage-nano --help` do not import torch until something needs it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_getattr(package: str, exports: dict[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """A module `__getattr__` for `package`: a name of `exports` (name -> submodule) is imported from its submodule
    on first use and kept in `namespace` (the package's globals), so later lookups skip the function."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{exports[name]}", package), name)
        namespace[name] = value
        return value

    return __getattr__
