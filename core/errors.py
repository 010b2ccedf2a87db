"""Errors a user can fix by changing a config or a file; the CLI prints each as one line and exits 2.

Every class here can be rebuilt from its message alone (``cls(message)``). PyTorch re-raises an
exception from a DataLoader worker that way, with the worker's traceback folded into the message;
``user_message`` turns such an error back into the one line the main process would have printed.
"""
from __future__ import annotations

from typing import TypeVar

__all__ = [
    "ConfigError", "ArgumentValueError", "DataNotFoundError", "AnnotationFormatError", "BadRecordError", "RunExistsError",
    "CheckpointError", "ImageReadError", "user_message", "config_error_in", "error_in_chain",
]

E = TypeVar("E", bound=BaseException)


class ConfigError(ValueError):
    """A configuration value that cannot work; the message names the key or the path."""


class ArgumentValueError(ConfigError):
    """A constructor argument whose value cannot work, named ``Class.argument`` in the message: a
    class does not know the config layout it is built from, so the CLI, which does, names the
    config key instead (``owner``: the class path; ``argument``: the argument's name).

    ``ArgumentValueError.of(self, "num_classes", "must be >= 2, got 1")`` reads
    "FasterRCNN.num_classes must be >= 2, got 1"; ``owner`` and ``argument`` are None when the
    error is rebuilt from its message alone.
    """

    def __init__(self, message: str, owner: str | None = None, argument: str | None = None) -> None:
        super().__init__(message)
        self.owner = owner
        self.argument = argument

    @classmethod
    def of(cls, owner: object, argument: str, detail: str) -> "ArgumentValueError":
        """The error for ``argument`` of ``owner`` (an instance or a class), ``detail`` saying why."""
        kind = owner if isinstance(owner, type) else type(owner)
        return cls(f"{kind.__name__}.{argument} {detail}", f"{kind.__module__}.{kind.__qualname__}", argument)

    def named(self, key: str) -> str:
        """The message with ``Class.argument`` replaced by the config ``key`` the user wrote."""
        text = str(self)
        if self.owner is None or self.argument is None:
            return text
        return text.replace(f"{self.owner.rsplit('.', 1)[-1]}.{self.argument}", key, 1)


class DataNotFoundError(ConfigError, FileNotFoundError):
    """A data root, image folder or annotation file that is not where the config says.

    ``DataNotFoundError("MPII root", "data/mpii")`` reads "MPII root not found: data/mpii".
    ``missing`` lists every required path that is absent (``core.records.RequiredPath``), so that a
    dry run can name them all, not only the first; ``owner`` is the class path of the reader whose
    arguments name them, ``required`` every path it checked (``core.records.check_required`` sets them).
    """

    def __init__(self, what: str, path: object = None, missing: list | None = None) -> None:
        super().__init__(what if path is None else f"{what} not found: {path}")
        self.path = path
        self.missing = list(missing or [])
        self.required: list = []
        self.owner: str | None = None


class AnnotationFormatError(ConfigError):
    """An annotation file that does not parse, or a record in it that breaks the format."""

    def __init__(self, path: object, detail: str | None = None) -> None:
        super().__init__(str(path) if detail is None else f"malformed annotation file {path}: {detail}")
        self.path = path


class BadRecordError(AnnotationFormatError):
    """One record of an annotation file fails a check (``on_bad_record: error``): the message
    names the file, the record and the reason."""

    def __init__(self, path: object, detail: str | None = None, kind: str = "bad_record") -> None:
        ConfigError.__init__(self, str(path) if detail is None else f"bad record in {path}: {detail}")
        self.path = path
        self.kind = kind


class RunExistsError(ConfigError, FileExistsError):
    """A fresh run asked for a run directory that already holds a run (nothing is overwritten)."""


class CheckpointError(ConfigError):
    """A checkpoint that cannot be loaded safely (missing, truncated, or holding pickled code)."""


def user_message(error: BaseException) -> str:
    """The one line to show for a ``ConfigError``, also when it was raised in a DataLoader worker
    (PyTorch folds the worker's traceback into the message: the last line is the original)."""
    text = str(error)
    if text.startswith("Caught ") and "Original Traceback" in text:
        last = [line for line in text.splitlines() if line.strip()][-1]
        name, sep, message = last.partition(": ")
        if sep and "." in name and " " not in name:  # "core.errors.DataNotFoundError: image not found: ..."
            return message.strip()
        return last.strip()
    return text


def error_in_chain(error: BaseException | None, kind: type[E]) -> E | None:
    """The first exception of type ``kind`` in ``error``'s chain of causes and contexts:
    jsonargparse and Lightning wrap exceptions raised while they build classes or run a loop."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def config_error_in(error: BaseException | None) -> ConfigError | None:
    """The ``ConfigError`` behind ``error`` (``error_in_chain``)."""
    return error_in_chain(error, ConfigError)


class ImageReadError(ConfigError):
    """An image file that is there but cannot be decoded."""

    def __init__(self, path: object, detail: str | None = None) -> None:
        super().__init__(str(path) if detail is None else f"cannot read image {path}: {detail}")
        self.path = path
