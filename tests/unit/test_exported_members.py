"""Every package states its public API in ``__all__``, and exports exactly that (httpx's
``tests/test_exported_members.py``, applied to the top package and to every subpackage)."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import modelyard


def _public(module: types.ModuleType) -> set[str]:
    """Names a ``from module import *`` user would expect: not private, not a module, not ``annotations``."""
    names = {name for name in dir(module) if not name.startswith("_")}  # dir(): names loaded on use too
    names -= {"annotations"}  # from __future__
    return {name for name in names if not isinstance(getattr(module, name), types.ModuleType)}


def _packages() -> list[str]:
    found = [info.name for info in pkgutil.walk_packages(modelyard.__path__, "modelyard.") if info.ispkg]
    return sorted(name for name in found if ".migrations" not in name)  # Alembic's scripts, not an API


def test_all_is_exactly_the_public_api() -> None:
    assert set(modelyard.__all__) - {"__version__"} == _public(modelyard)


def test_every_subpackage_is_checked() -> None:
    assert {"modelyard.registry", "modelyard.serve", "modelyard.cli"} <= set(_packages())


@pytest.mark.parametrize("name", _packages())
def test_subpackage_all_is_exactly_its_public_api(name: str) -> None:
    package = importlib.import_module(name)
    exported = getattr(package, "__all__", None)
    assert exported is not None, f"{name}/__init__.py has no __all__"
    assert len(exported) == len(set(exported)), f"{name}.__all__ lists a name twice"
    missing = [item for item in exported if not hasattr(package, item)]
    assert not missing, f"{name}.__all__ names what the package does not define: {missing}"
    assert set(exported) == _public(package), f"{name}.__all__ differs from what it exports"
