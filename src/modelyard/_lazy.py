"""Names of a package loaded on first use (PEP 562), so importing the package costs nothing until they are.

``__getattr__, __dir__ = lazy_names(__name__, {"Model": "modelyard.runtime"})`` in a package's
``__init__``; the same names go under ``if TYPE_CHECKING:`` there for type checkers. The CLI relies on this:
a command that trains or predicts nothing must not import scikit-learn, pandas' friends or a broker client.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_names"]


def lazy_names(package: str, homes: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``: each name of ``homes`` from its module, once.

    A lazy name must not also be a submodule's: importing ``package.name`` binds the module to that
    attribute, and ``__getattr__`` is never asked again (``from package import train`` gave the module).
    """
    shadowed = sorted(name for name in homes if importlib.util.find_spec(f"{package}.{name}") is not None)
    if shadowed:
        raise ImportError(f"{package}: lazy names {shadowed} are also submodules of it; rename the modules")

    def __getattr__(name: str) -> Any:
        home = homes.get(name)
        if home is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[package], name, value)  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return __getattr__, __dir__
