"""`pyopt tune` workers sharing one PostgreSQL database: two started at the same moment on a fresh
database both work (Optuna's schema is created once, the warm starts enqueued once), and a worker
SIGKILLed mid-trial has that trial failed by the heartbeat and retried by the other worker, which
keeps every finished trial and writes best.json.

Needs a server: $PYOPT_TEST_POSTGRES is a SQLAlchemy URL of a role that may create databases
(e.g. postgresql://pyopt:pyopt@localhost/postgres; .ci/run installs and starts PostgreSQL and sets
it). Without it these tests skip, unless $PYOPT_REQUIRE_POSTGRES=1 (CI), where they fail."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Iterator

import pytest

optuna = pytest.importorskip("optuna")

ADMIN_URL = os.environ.get("PYOPT_TEST_POSTGRES", "")
if not ADMIN_URL:
    if os.environ.get("PYOPT_REQUIRE_POSTGRES") == "1":
        raise RuntimeError("PYOPT_REQUIRE_POSTGRES=1 but PYOPT_TEST_POSTGRES (a PostgreSQL URL) is not set")
    pytest.skip("no PostgreSQL server: set PYOPT_TEST_POSTGRES=postgresql://USER:PW@HOST/DB", allow_module_level=True)
sqlalchemy = pytest.importorskip("sqlalchemy")

from test_tuner_faults import TASK_FILE  # noqa: E402 (the quadratic that hangs or sleeps on demand)

WAIT_LIMIT = 240.0  # a guard against hanging the suite, not a measurement
OPTIMIZERS = "adamw,sgd,lion"


@pytest.fixture
def database() -> str:
    with fresh_database() as url:
        yield url


@contextlib.contextmanager
def fresh_database() -> Iterator[str]:
    """A fresh, empty database on the server; dropped afterwards."""
    name = f"pyopt_test_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sqlalchemy.text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def start_worker(tmp_path: Path, url: str, out: str, trials: int, env: dict[str, str]) -> subprocess.Popen:
    (tmp_path / "task.py").write_text(TASK_FILE)
    (tmp_path / "markers").mkdir(exist_ok=True)
    child_env = {**os.environ, "FAULTS_MARKERS": str(tmp_path / "markers"), "PYOPT_TUNE_HEARTBEAT": "1,3", **env}
    return subprocess.Popen(
        [sys.executable, "-m", "pyopt", "tune", f"{tmp_path / 'task.py'}:TASK", "--storage", url, "--study", "shared",
         "--optimizers", OPTIMIZERS, "--trials", str(trials), "--out", out, "--no-progress",
         "--strategy", "tpe"],
        cwd=tmp_path, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def finish(proc: subprocess.Popen) -> str:
    out, err = proc.communicate(timeout=WAIT_LIMIT)
    assert proc.returncode == 0, f"worker exited {proc.returncode}\nstdout:\n{out}\nstderr:\n{err}"
    return out


def test_workers_started_together_on_a_fresh_database(tmp_path: Path, database: str) -> None:
    workers = [start_worker(tmp_path, database, f"out{i}", trials=4, env={}) for i in range(3)]
    for w in workers:
        finish(w)
    trials = optuna.load_study(study_name="shared", storage=database).get_trials()
    assert len([t for t in trials if t.state.is_finished()]) == 12
    warm = [t.params["optimizer"] for t in trials if t.user_attrs.get("warm_start")]
    assert sorted(warm) == sorted(OPTIMIZERS.split(","))  # enqueued once, not once per worker
    for i in range(3):
        assert json.loads((tmp_path / f"out{i}" / "best.json").read_text())["study"] == "shared"


def test_a_killed_workers_trial_is_failed_by_the_heartbeat_and_retried(tmp_path: Path, database: str) -> None:
    # The survivor's trials wait for the file `go`, made only once the victim has been dead for
    # longer than the 3 s grace period: its next trial then finds the victim's stale heartbeat.
    go = tmp_path / "go"
    victim = start_worker(tmp_path, database, "victim", trials=10, env={"FAULTS_HANG_AT": "2"})
    survivor = start_worker(tmp_path, database, "survivor", trials=6, env={"FAULTS_WAIT_FOR": str(go)})
    marker = tmp_path / "markers" / f"hang-{victim.pid}"
    deadline = time.monotonic() + WAIT_LIMIT
    while not marker.exists():
        assert victim.poll() is None, victim.communicate()
        assert time.monotonic() < deadline, "the victim never reached its hanging trial"
        time.sleep(0.05)
    study = optuna.load_study(study_name="shared", storage=database)
    hung = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING
            and t.user_attrs.get("owner", {}).get("pid") == victim.pid]
    assert len(hung) == 1, [(t.number, t.state, t.user_attrs) for t in study.get_trials()]
    # the survivor set up before the kill (it holds a trial until `go`): else its start-up fails the
    # dead trial by the owner check, before any heartbeat is stale
    while not [t for t in study.get_trials() if t.state == optuna.trial.TrialState.RUNNING
               and t.user_attrs.get("owner", {}).get("pid") == survivor.pid]:
        assert survivor.poll() is None, survivor.communicate()
        assert time.monotonic() < deadline, "the survivor never started a trial"
        time.sleep(0.05)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.communicate()
    time.sleep(3 + 2)  # the grace period and a heartbeat interval: a lower bound, not a measurement
    go.touch()
    finish(survivor)

    trials = {t.number: t for t in optuna.load_study(study_name="shared", storage=database).get_trials()}
    dead = trials[hung[0].number]
    assert dead.state == optuna.trial.TrialState.FAIL
    assert "worker gone" not in str(dead.user_attrs.get("error", "")), "failed by the owner check, not the heartbeat"
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state.is_finished() and retries[0].state != optuna.trial.TrialState.FAIL
    assert dead.params.items() <= retries[0].params.items()  # the same draws (and those made after the hang)
    finished_by_victim = [t for t in trials.values() if t.state in (optuna.trial.TrialState.COMPLETE,
                                                                    optuna.trial.TrialState.PRUNED)
                          and t.user_attrs.get("owner", {}).get("pid") == victim.pid]
    assert len(finished_by_victim) == 1  # its first trial, kept
    best = json.loads((tmp_path / "survivor" / "best.json").read_text())
    complete = [t.value for t in trials.values() if t.state == optuna.trial.TrialState.COMPLETE]
    assert best["value"] == min(complete)
