"""Study storage, driver leases and the sweep that fails and retries orphaned trials.

* A path (default ``runs/<study>/journal.log``) is an Optuna ``JournalStorage`` file: several
  processes on one host, or an NFS share with care.
* An SQLAlchemy URL (``postgresql://user@host/db``, ``mysql://...``, ``sqlite:///file.db``) is an
  ``RDBStorage`` with Optuna's heartbeat: several machines on one study.

Every running trial carries its driver's lease (host, pid, process start time) and a heartbeat
(Optuna's heartbeat table on an RDB, a trial attribute on a journal). Before it starts a trial, a
driver takes the study lock (a PostgreSQL/MySQL advisory lock, or a file lock) and, inside it,
fails the orphans (a driver on this host that is gone, or a heartbeat older than the grace period),
enqueues a retry of each with the same parameters, counts the trial budget and asks for the next
trial, so that several drivers never exceed the budget.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from core.locks import FileLock
from core.processes import process_alive, process_start

__all__ = [
    "open_storage", "is_rdb", "StudyLock", "DriverIdentity",
    "sweep_orphans", "budget_state", "HeartbeatThread", "make_stale_callback", "retry_chain_root",
]

log = logging.getLogger("convlab.search")

DRIVER_ATTR = "search:driver"
HEARTBEAT_ATTR = "search:heartbeat"


def is_rdb(url: str) -> bool:
    return "://" in url


def absolute_url(url: str, cwd: str | Path) -> str:
    """``url`` with a relative journal path or SQLite file made absolute against ``cwd``, so that
    a change of the process's working directory (jsonargparse makes one while it reads a config)
    cannot move the storage under a running study; server URLs are returned as they are."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        database, sep, query = url.removeprefix("sqlite:///").partition("?")
        return "sqlite:///" + str((Path(cwd) / database).resolve()) + sep + query
    if is_rdb(url):
        return url
    prefix = "journal:" if url.startswith("journal:") else ""
    return prefix + str((Path(cwd) / url.removeprefix("journal:")).resolve())


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = None,
    grace_period: int | None = None,
    stale_callback: Any = None,
) -> Any:
    """An Optuna storage for ``url``; the heartbeat arguments apply to RDB storages only (the
    driver passes them, trial workers do not)."""
    import optuna

    if is_rdb(url):
        engine_kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            engine_kwargs["connect_args"] = {"timeout": 60}
        else:
            engine_kwargs["pool_pre_ping"] = True
        return optuna.storages.RDBStorage(
            url,
            engine_kwargs=engine_kwargs,
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period,
            heartbeat_stale_trial_callback=stale_callback,
        )
    path = Path(url.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def _base_storage(storage: Any) -> Any:
    return getattr(storage, "_backend", storage)


# ---------------------------------------------------------------------------------------- locking
class StudyLock:
    """Mutual exclusion between the drivers (and the slot threads) of one study: an advisory lock
    of the database server, or ``core.locks.FileLock`` beside a journal or SQLite file."""

    def __init__(self, url: str, study_name: str) -> None:
        self.url = url
        self.key = int.from_bytes(hashlib.sha1(study_name.encode()).digest()[:8], "big", signed=True)
        self.name = f"convlab-search-{hashlib.sha1(study_name.encode()).hexdigest()[:16]}"
        self._thread_lock = threading.RLock()
        self._engine = None
        self._file = None
        if is_rdb(url) and not url.startswith("sqlite"):
            import sqlalchemy

            self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        else:
            path = Path(url.split("///", 1)[1] if url.startswith("sqlite") else url.removeprefix("journal:"))
            self._file = path.with_name(path.name + ".study-lock")
            self._file.parent.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._engine is not None:
                import sqlalchemy

                with self._engine.connect() as connection:
                    dialect = self._engine.dialect.name
                    if dialect == "postgresql":
                        connection.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
                        try:
                            yield
                        finally:
                            connection.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                    elif dialect in ("mysql", "mariadb"):
                        connection.execute(sqlalchemy.text("SELECT GET_LOCK(:n, -1)"), {"n": self.name})
                        try:
                            yield
                        finally:
                            connection.execute(sqlalchemy.text("SELECT RELEASE_LOCK(:n)"), {"n": self.name})
                    else:
                        log.warning("no cross-machine lock for %s: drivers on other machines may exceed the budget", dialect)
                        yield
            else:
                with FileLock(self._file):
                    yield


# ----------------------------------------------------------------------------------- drivers
class DriverIdentity:
    def __init__(self) -> None:
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.start = process_start(self.pid)
        self.id = uuid.uuid4().hex[:12]

    def as_attr(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "start": self.start, "id": self.id}


# ----------------------------------------------------------------------------------- heartbeats
class HeartbeatThread(threading.Thread):
    """Keeps the leases of this driver's running trials fresh."""

    def __init__(self, storage: Any, interval: float) -> None:
        super().__init__(daemon=True, name="search-heartbeat")
        self.storage = storage
        self.interval = interval
        self.trial_ids: set[int] = set()
        self._lock = threading.Lock()
        self._stop_event = threading.Event()

    def add(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.add(trial_id)
        self.beat(trial_id)

    def remove(self, trial_id: int) -> None:
        with self._lock:
            self.trial_ids.discard(trial_id)

    def beat(self, trial_id: int) -> None:
        from optuna.storages._heartbeat import is_heartbeat_enabled

        try:
            if is_heartbeat_enabled(self.storage):
                self.storage.record_heartbeat(trial_id)
            else:
                self.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
        except Exception as error:  # a finished trial, or a passing storage error: next beat retries
            log.debug("heartbeat of trial %s failed: %s", trial_id, error)

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            with self._lock:
                ids = list(self.trial_ids)
            for trial_id in ids:
                self.beat(trial_id)

    def stop(self) -> None:
        self._stop_event.set()


# ------------------------------------------------------------------------------------- orphans
def retry_chain_root(trial: Any, by_number: dict[int, Any]) -> int:
    """The number of the first attempt of a retried trial (its run directory and W&B run)."""
    seen = set()
    number = trial.number
    while True:
        retry_of = by_number[number].user_attrs.get("retry_of") if number in by_number else None
        if retry_of is None or retry_of in seen:
            return number
        seen.add(number)
        number = int(retry_of)


def retry_attrs(trial: Any, reason: str) -> dict[str, Any]:
    """The user attributes of the retry of ``trial``: what it retries, how often, why, and whether
    it is the study's default trial (trial 0, the base config's values)."""
    attrs = {"retry_of": trial.number, "retry_count": int(trial.user_attrs.get("retry_count", 0)) + 1, "retry_reason": reason}
    if trial.user_attrs.get("default"):
        attrs["default"] = True
    return attrs


def _enqueue_retry(study: Any, trial: Any, reason: str, max_retry: int) -> None:
    count = int(trial.user_attrs.get("retry_count", 0))
    if count >= max_retry:
        log.warning("trial %d orphaned (%s); retried %d times already, not again", trial.number, reason, count)
        return
    study.enqueue_trial(trial.params, user_attrs=retry_attrs(trial, reason), skip_if_exists=False)
    log.warning("trial %d orphaned (%s): failed, and enqueued again with the same parameters", trial.number, reason)


def make_stale_callback(max_retry: int) -> Any:
    """Optuna's RDB heartbeat callback: a stale trial (already FAIL) is enqueued again."""

    def callback(study: Any, trial: Any) -> None:
        _enqueue_retry(study, trial, "heartbeat stale (its driver stopped beating)", max_retry)

    return callback


def sweep_orphans(study: Any, me: DriverIdentity, grace_period: float, max_retry: int) -> list[int]:
    """Fail (and enqueue again) the running trials whose driver is gone. Call it under the study
    lock. Returns the numbers of the trials it failed."""
    import optuna
    from optuna.storages._heartbeat import fail_stale_trials, is_heartbeat_enabled
    from optuna.trial import TrialState

    storage = study._storage
    heartbeat_rdb = is_heartbeat_enabled(storage)
    failed = []
    now = time.time()
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.system_attrs.get(DRIVER_ATTR)
        reason = None
        if owner is None:
            started = trial.datetime_start.timestamp() if trial.datetime_start else now
            if now - started > grace_period and not heartbeat_rdb:
                reason = "no driver lease (its driver died before launching it)"
        elif owner.get("id") == me.id:
            continue
        elif owner.get("host") == me.host and not process_alive(int(owner["pid"]), owner.get("start")):
            reason = f"driver {owner['host']}:{owner['pid']} is gone"
        elif not heartbeat_rdb:
            beat = trial.system_attrs.get(HEARTBEAT_ATTR, 0)
            if now - float(beat) > grace_period:
                reason = f"driver {owner.get('host')}:{owner.get('pid')} stopped beating {now - float(beat):.0f} s ago"
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "fail_reason", f"orphaned: {reason}")
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, ValueError):
            continue
        _enqueue_retry(study, trial, reason, max_retry)
        failed.append(trial.number)
    if heartbeat_rdb:  # drivers on other hosts: Optuna's heartbeat (its callback enqueues the retry)
        fail_stale_trials(study)
    return failed


def budget_state(study: Any) -> dict[str, Any]:
    """How much of the budget the study has used: every trial counts once (a configuration
    rejected before launch too: it is cheap, and the sampler learns from it), except a failed
    trial that was retried (its retry counts instead)."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    superseded = {int(t.user_attrs["retry_of"]) for t in trials if t.user_attrs.get("retry_of") is not None}
    counted = [t for t in trials if t.number not in superseded]
    return {
        "counted": len(counted),
        "waiting": sum(1 for t in trials if t.state == TrialState.WAITING),
        "rejected": sum(1 for t in trials if t.user_attrs.get("rejected")),
        "superseded": superseded,
    }
