"""Test-session settings shared by every test module."""
import os

# As in experiments/__init__.py: set before any test module imports torch (see the comment there).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
