"""Errors a user can fix by changing a config or a file: the CLI prints them as one line."""
from __future__ import annotations

__all__ = ["ConfigError", "DataNotFoundError", "AnnotationFormatError", "RunExistsError"]


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key or the path."""


class DataNotFoundError(ConfigError, FileNotFoundError):
    """A data root, image folder or annotation file that is not where the config says."""

    def __init__(self, what: str, path: object) -> None:
        super().__init__(f"{what} not found: {path}")
        self.path = path


class AnnotationFormatError(ConfigError):
    """An annotation file that does not parse, or a record in it that breaks the format."""

    def __init__(self, path: object, detail: str) -> None:
        super().__init__(f"malformed annotation file {path}: {detail}")
        self.path = path


class RunExistsError(ConfigError, FileExistsError):
    """A fresh run asked for a run directory that already holds a run (nothing is overwritten)."""
