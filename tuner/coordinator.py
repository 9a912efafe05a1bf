"""Who plans a phased study that several separately started ``pyopt tune`` processes share.

The phased strategy ranks each phase's results to plan the next, so one process must plan: the
*coordinator*. The first phased process on a study becomes it and records itself in the study's
user attrs (``COORDINATOR``: host, pid, the process's start time, when it started, a heartbeat it
refreshes from a thread, and a run id that tags the trials it queues); a phased process that finds
a live coordinator becomes a *helper*: it runs the coordinator's queued trials with the settings
the coordinator recorded (``SETTINGS``) and never plans.

Alive means: not marked ``ended`` (a coordinator marks its record when it returns, for any
reason) and, on this host, its process exists (``owners.is_gone``: pid and start time, so a reused
pid does not count); on another host, a heartbeat younger than the grace period of
``study.heartbeat_settings()``. A refreshing thread, not "between trials", keeps a coordinator
alive through a trial longer than the grace period.

The election reads the record and writes its own under a lock, so two processes started at the
same moment do not both coordinate: a PostgreSQL session advisory lock (``study.setup_lock``) on a
database server, an ``flock`` of ``FILE.coordinator.lock`` beside a SQLite database or journal
file (those storages are for one machine anyway). Other database servers get no lock: two
processes started within the same instant could then both coordinate (their plans would agree,
as the plan is a function of the finished trials, but trials could run twice).
"""
from __future__ import annotations

import contextlib
import threading
import time
import uuid
from typing import Any, Iterator

from . import owners
from .study import heartbeat_settings, setup_lock

COORDINATOR = "phased_coordinator"   # study user attr: the coordinator's record
SETTINGS = "phased_settings"         # study user attr: what helpers run with
BEST = "phased_best"                 # study user attr: {"run": id, "best": best.json's dict}
QUEUED_BY = "queued_by"              # trial user attr: the run id of the coordinator that queued it
POLL = 0.25                          # seconds between looks at the queue while waiting


def new_record() -> dict[str, Any]:
    now = time.time()
    return {**owners.me(), "since": now, "heartbeat": now, "run": uuid.uuid4().hex, "ended": None}


def alive(record: Any, now: float | None = None) -> bool:
    """Whether ``record`` (a ``new_record``) is a coordinator still at work (see the module doc)."""
    if not isinstance(record, dict) or record.get("ended") or not isinstance(record.get("heartbeat"), (int, float)):
        return False
    if record.get("host") == owners.HOST:
        return not owners.is_gone(record)
    return (time.time() if now is None else now) - record["heartbeat"] <= heartbeat_settings()[1]


def describe(record: dict[str, Any]) -> str:
    return f"pid {record.get('pid')} on {record.get('host')}"


def _file_of(url: str | None) -> str | None:
    """The file of a SQLite database or journal storage, else None."""
    if url is not None and url.startswith("journal:"):
        return url[len("journal:"):]
    if url is not None and url.startswith("sqlite:"):
        from sqlalchemy.engine import make_url

        database = make_url(url).database
        return database if database and database != ":memory:" else None
    return None


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    import fcntl

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def election_lock(url: str | None) -> Iterator[None]:
    """The lock around reading and claiming the coordinator record (see the module doc)."""
    path = _file_of(url)
    if path is None:
        with setup_lock(url):  # PostgreSQL; a no-op for other URLs
            yield
        return
    with _flock(f"{path}.coordinator.lock"):
        yield


@contextlib.contextmanager
def queue_lock(url: str | None) -> Iterator[None]:
    """Held while a phased process takes a queued trial (or a coordinator drops one) on SQLite:
    Optuna reads the trial's state and then updates it outside one transaction there (pysqlite
    begins a transaction only at the update), so two processes could both take one trial. The
    journal storage and PostgreSQL (SELECT ... FOR UPDATE) take a trial atomically: no lock."""
    path = _file_of(url) if url is not None and url.startswith("sqlite:") else None
    if path is None:
        yield
        return
    with _flock(f"{path}.coordinator.lock"):
        yield


def elect(study: Any, url: str | None, settings: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
    """(True, my new record) when this process now coordinates ``study`` (``settings``, what its
    helpers run with, are recorded with it, before any helper can see the record); (False, the
    live coordinator's record) when another does."""
    with election_lock(url):
        current = study.user_attrs.get(COORDINATOR)
        if alive(current):
            return False, current
        record = new_record()
        study.set_user_attr(SETTINGS, {**settings, "run": record["run"]})
        study.set_user_attr(COORDINATOR, record)
        return True, record


class Heartbeat:
    """Refreshes the coordinator's heartbeat every interval of ``heartbeat_settings()`` from a
    daemon thread; ``end(reason)`` stops it and marks the record ended (helpers then stop, and
    the next process may coordinate at once). A record that is no longer ours (another process
    took over, believing us dead) is left alone."""

    def __init__(self, study: Any, record: dict[str, Any]) -> None:
        self.study, self.record = study, dict(record)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, name="pyopt-coordinator-heartbeat", daemon=True)
        self._thread.start()

    def _ours(self) -> bool:
        current = self.study.user_attrs.get(COORDINATOR)
        return isinstance(current, dict) and current.get("run") == self.record["run"]

    def _beat(self) -> None:
        interval = heartbeat_settings()[0]
        while not self._stop.wait(interval):
            try:
                with self._lock:
                    if self._stop.is_set() or not self._ours():
                        return
                    self.record["heartbeat"] = time.time()
                    self.study.set_user_attr(COORDINATOR, self.record)
            except Exception:  # a storage hiccup: try again next interval
                continue

    def end(self, reason: str) -> None:
        self._stop.set()
        with self._lock:
            with owners.sigint_ignored():
                try:
                    if self._ours():
                        self.record.update(ended=reason, heartbeat=time.time())
                        self.study.set_user_attr(COORDINATOR, self.record)
                except Exception:
                    pass  # the storage is gone: the pid check or the heartbeat's age tells the others
