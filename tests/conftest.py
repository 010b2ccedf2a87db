"""Test-session settings and fixtures shared by every test module."""
import os
from pathlib import Path

import pytest

# As in experiments/__init__.py: set before any test module imports torch (see the comment there).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@pytest.fixture
def in_repo(monkeypatch):
    """Run the test from the project root (table specs and configs name paths relative to it)."""
    monkeypatch.chdir(Path(__file__).resolve().parents[1])


@pytest.fixture(scope="module")
def composer():
    """One config parser per test module (building it resolves every class the configs name)."""
    from experiments.recipe import ConfigComposer

    return ConfigComposer()
