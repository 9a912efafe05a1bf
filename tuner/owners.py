"""Which process runs a trial, and failing the trials whose process is gone.

Optuna leaves the trial of a killed process RUNNING for ever (SQLite and journal files have no
heartbeat in pyopt's set-up). So each trial records its owner (host, pid and the process's start
time, which tells a reused pid apart); a run fails the RUNNING trials of this host whose owner is
gone before it starts and after its processes end, and the trials of its own processes when
interrupted.
"""
from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from typing import Any, Iterable, Iterator

HOST = socket.gethostname()
INTERRUPTED = "interrupted"


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()


def start_time(pid: int) -> int | None:
    """When the process started (clock ticks since boot; Linux), or None if unknown."""
    fields = _proc_stat(pid)
    return int(fields[19]) if fields and len(fields) > 19 else None


def me() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": HOST, "pid": pid, "started": start_time(pid)}


def is_gone(owner: Any) -> bool:
    """True when ``owner`` (a ``me()`` record) ran on this host and its process has ended (a
    zombie, or a pid now used by a later process, counts as ended). Owners on other hosts: False."""
    if not isinstance(owner, dict) or owner.get("host") != HOST or not isinstance(owner.get("pid"), int):
        return False
    pid = owner["pid"]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # a process of another user: it exists
    fields = _proc_stat(pid)
    if fields is None:
        return False
    if fields[0] == "Z":
        return True
    return owner.get("started") is not None and len(fields) > 19 and int(fields[19]) != owner["started"]


def stamp(trial: Any) -> None:
    trial.set_user_attr("owner", me())


def fail_unfinished(study: Any, pids: Iterable[int] = (), reason: str = INTERRUPTED) -> list[int]:
    """FAIL the RUNNING trials of this host whose process is gone (error "worker gone (pid P on
    HOST)") and those of ``pids`` on this host (error ``reason``); both are marked ``unfinished``
    (a warm start among them is enqueued again). Returns the failed trial numbers."""
    import optuna

    ours = set(pids)
    storage = study._storage
    failed = []
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        owner = t.user_attrs.get("owner")
        if not isinstance(owner, dict) or owner.get("host") != HOST:
            continue
        if owner.get("pid") in ours:
            why = reason
        elif is_gone(owner):
            why = f"worker gone (pid {owner['pid']} on {HOST})"
        else:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "error", why)
            storage.set_trial_user_attr(t._trial_id, "unfinished", True)
            if storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL):
                failed.append(t.number)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another process finished or failed it meanwhile
    return failed


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """No KeyboardInterrupt inside (a second Ctrl-C during clean-up); a no-op outside the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
