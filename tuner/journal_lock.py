"""The lock of a journal file: Optuna's symlink lock (the same ``PATH.lock``, so pyopt and plain
Optuna processes exclude each other), whose link names its owner. A lock left by a killed process
of this host is removed at once; Optuna's lock waits 30 s without change before breaking it.
Locks of other hosts, and Optuna's own, keep that 30 s grace period."""
from __future__ import annotations

import contextlib
import logging
import os
import time
import uuid
from typing import Iterator

from optuna.storages.journal import JournalFileSymlinkLock

from . import owners

PREFIX = "pyopt-lock:"
log = logging.getLogger("pyopt.tuner")
_held: set[str] = set()  # the links this process holds now


def owner_of(link: str) -> dict | None:
    """The owner a pyopt lock's link names ("pyopt-lock:HOST:PID:START:ID"), else None."""
    if not link.startswith(PREFIX):
        return None
    host, pid, started, _ = link[len(PREFIX):].rsplit(":", 3)
    return {"host": host, "pid": int(pid), "started": None if started == "-" else int(started)}


@contextlib.contextmanager
def _exclusive(path: str) -> Iterator[None]:
    """Only one process at a time breaks a stale lock (a kernel lock on the journal file itself,
    released even if the process dies)."""
    try:
        import fcntl
    except ImportError:  # no flock: breaking stays to the grace period
        raise OSError("no fcntl") from None
    with open(path, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class OwnedSymlinkLock(JournalFileSymlinkLock):  # its public base: acquire and release
    def __init__(self, journal_path: str, grace_period: float = 30.0) -> None:
        self._journal = journal_path
        self._lock_file = journal_path + ".lock"
        self.grace_period = grace_period
        self._link: str | None = None

    def _new_link(self) -> str:
        me = owners.me()
        started = "-" if me["started"] is None else str(me["started"])
        return f"{PREFIX}{me['host']}:{me['pid']}:{started}:{uuid.uuid4().hex}"

    def _remove(self, expected: str | None) -> bool:
        """Remove the lock if its link is still ``expected`` (any, if None)."""
        aside = f"{self._lock_file}.{uuid.uuid4().hex}.rename"
        try:
            if expected is not None and os.readlink(self._lock_file) != expected:
                return False
            os.rename(self._lock_file, aside)
            os.unlink(aside)
            return True
        except OSError:
            return False

    def _break_if_stale(self) -> bool:
        try:
            link = os.readlink(self._lock_file)
        except OSError:
            return True  # released meanwhile: try again
        owner = owner_of(link)
        if owner is None:
            return False
        leaked = owner["host"] == owners.HOST and owner["pid"] == os.getpid() and link not in _held
        if not leaked and not owners.is_gone(owner):
            return False
        try:
            with _exclusive(self._journal):
                if self._remove(link):
                    log.warning("removed the lock %s left by process %d, which %s", self._lock_file, owner["pid"],
                                "was interrupted" if leaked else "is gone")
        except OSError:
            return False
        return True

    def acquire(self) -> bool:
        link = self._new_link()
        sleep = 0.001
        last_mtime = None
        unchanged_since = time.monotonic()
        while True:
            try:
                os.symlink(link, self._lock_file)
                _held.add(link)
                self._link = link
                return True
            except FileExistsError:
                pass
            except BaseException:  # interrupted: leave no lock behind
                self._remove(link)
                _held.discard(link)
                raise
            if self._break_if_stale():
                continue
            try:
                mtime = os.lstat(self._lock_file).st_mtime
            except OSError:
                continue
            if mtime != last_mtime:
                last_mtime, unchanged_since = mtime, time.monotonic()
            elif time.monotonic() - unchanged_since > self.grace_period:
                log.warning("the lock %s has not been released for %g s: breaking it", self._lock_file,
                            self.grace_period)
                self._remove(None)
                continue
            time.sleep(sleep)
            sleep = min(sleep * 2, 0.1)

    def release(self) -> None:
        link, self._link = self._link, None
        if link is not None:
            _held.discard(link)
        if link is None or not self._remove(link):
            raise RuntimeError(f"did not hold the lock {self._lock_file}")
