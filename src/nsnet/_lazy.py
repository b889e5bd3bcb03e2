"""Package names imported on first use (PEP 562), shared by ``nsnet``,
``nsnet.engine`` and ``nsnet.kernel``: a command imports only the corners it
touches (#15's start-up regression; tests/unit/test_startup_imports.py)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, where: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name of ``where``
    (submodule -> names) is imported from its submodule on first use, then
    kept in the package's globals so the next lookup is a plain one."""
    module_of = {name: module for module, names in where.items() for name in names}
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        module = module_of.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    return __getattr__
