"""The bench tools are scripts in ``bench/tools``, not an installed package: tests load them by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

TOOLS = Path(__file__).resolve().parents[2] / "bench" / "tools"


def load_tool(name: str) -> ModuleType:
    """``bench/tools/<name>.py`` as a module (registered, so its dataclasses can find it)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", TOOLS / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def report() -> ModuleType:
    return load_tool("report")


@pytest.fixture(scope="session")
def loadgen() -> ModuleType:
    return load_tool("loadgen")


@pytest.fixture(scope="session")
def machine() -> ModuleType:
    return load_tool("machine")
