"""Atomic file writes: a reader (another process, a resumed run, a report) never sees half a file,
and a write interrupted by a kill leaves the previous version in place."""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

__all__ = ["write_atomic", "write_json_atomic", "read_json", "shown_path", "PROJECT_ROOT"]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def write_atomic(path: str | Path, content: str | bytes) -> Path:
    """Write ``content`` to a temporary file beside ``path``, flush it to disk, and rename it over
    ``path`` (a rename within one folder is atomic on POSIX file systems)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    data = content.encode() if isinstance(content, str) else content
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return path


def write_json_atomic(path: str | Path, payload: Any) -> Path:
    """``payload`` as indented JSON (non-JSON values as their ``str``), written atomically."""
    return write_atomic(path, json.dumps(payload, indent=2, default=str))


def read_json(path: str | Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, or None when the file is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def shown_path(path: str | Path) -> str:
    """``path`` as a reader of a report or a log can use it anywhere: relative to the project (or
    else to the working directory) when it lies inside, as given otherwise."""
    resolved = Path(path).resolve()
    for base in (PROJECT_ROOT, Path.cwd().resolve()):
        try:
            return str(resolved.relative_to(base))
        except ValueError:
            continue
    return str(path)
