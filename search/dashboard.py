"""``python -m experiments dashboard --study runs/<study>`` (or ``--storage <journal path or URL>``):
optuna-dashboard on a study's storage, opened with the driver's own opener (``search.storage``), so
the storage strings of ``search --storage`` work here as they are.

optuna-dashboard is an optional extra (``pip install -r requirements-dashboard.txt``); W&B stays
the shared dashboard. This one serves a study's storage live (trials, values, parameters,
intermediate curves, importances, the Pareto front) to whoever can reach ``--host:--port``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "resolve_storage", "DashboardError"]

INSTALL_HINT = "pip install -r requirements-dashboard.txt"


class DashboardError(Exception):
    """Something the user can fix: one line, exit status 2."""


def say(message: str, stream: Any = None) -> None:
    print(f"convlab dashboard: {message}", file=stream or sys.stdout, flush=True)


def resolve_storage(study: str | None, storage: str | None) -> str:
    """The storage string of ``--study`` (a study folder holding ``journal.log``, or the journal
    file itself) or ``--storage`` (as ``search --storage``); raises ``DashboardError`` naming the
    path when a journal or SQLite file does not exist (opening would create an empty one)."""
    from search.storage import is_rdb

    if (study is None) == (storage is None):
        raise DashboardError("give one of --study runs/<study> or --storage <journal path or URL>")
    if study is not None:
        path = Path(study)
        if path.is_dir():
            journal = path / "journal.log"
            if not journal.is_file():
                raise DashboardError(f"{journal} does not exist (a study on an RDB storage: pass --storage <URL>)")
            return str(journal)
        if not path.is_file():
            raise DashboardError(f"{path} does not exist (expected a study folder such as runs/<study>, or its journal.log)")
        return str(path)
    assert storage is not None
    if is_rdb(storage):
        if storage.startswith("sqlite:///"):
            database = storage.removeprefix("sqlite:///").split("?", 1)[0]
            if database not in ("", ":memory:") and not Path(database).is_file():
                raise DashboardError(f"{database} does not exist (storage {storage})")
        return storage
    path = Path(storage.removeprefix("journal:"))
    if not path.is_file():
        raise DashboardError(f"{path} does not exist (a journal file such as runs/<study>/journal.log)")
    return storage


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m experiments dashboard", description=__doc__.split("\n\n")[0])
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--study", help="a study folder (runs/<study>, its journal.log) or the journal file")
    where.add_argument("--storage", help="journal file or SQLAlchemy URL, as given to search --storage")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1; 0.0.0.0 to reach it from other machines)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--verbose", action="store_true", help="log every HTTP request")
    return p


def make_server(app: Any, host: str, port: int, verbose: bool = False) -> Any:
    """A threaded wsgiref server for ``app`` (optuna-dashboard's own CLI serves it the same way)."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer
    from wsgiref.simple_server import make_server as wsgiref_server

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    class Handler(WSGIRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            if verbose:
                super().log_message(format, *args)

    return wsgiref_server(host, port, app, server_class=Server, handler_class=Handler)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        import optuna_dashboard
    except ImportError:
        say(f"optuna-dashboard is not installed (an optional extra): {INSTALL_HINT}", sys.stderr)
        return 2
    try:
        url = resolve_storage(args.study, args.storage)
    except DashboardError as error:
        say(str(error), sys.stderr)
        return 2
    import optuna

    from search.storage import open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = open_storage(url)
        studies = storage.get_all_studies()
    except Exception as error:  # unreachable database, a file that is no journal, a missing driver
        first = (str(error).strip().splitlines() or [""])[0]
        say(f"cannot open storage {url}: {type(error).__name__}: {first[:300]}", sys.stderr)
        return 2
    try:
        server = make_server(optuna_dashboard.wsgi(storage), args.host, args.port, verbose=args.verbose)
    except OSError as error:
        say(f"cannot listen on {args.host}:{args.port}: {error.strerror or error}", sys.stderr)
        return 2
    host, port = server.server_address[:2]
    names = ", ".join(s.study_name for s in studies) or "no study yet"
    say(f"http://{host}:{port}/dashboard  storage {url} ({names}); Ctrl-C to stop")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
