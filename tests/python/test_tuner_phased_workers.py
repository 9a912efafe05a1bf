"""The phased strategy with separately started `pyopt tune` processes on one study (real processes):
the first coordinates (plans and queues the phases), a later one helps run the queue; a process
that finds no live coordinator becomes it and goes on where a dead one stopped. The tiny task of
test_tuner_faults hangs or waits on demand, so the tests order the processes by files, not time."""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from test_tuner_faults import WAIT_LIMIT, finish, start, wait_for_hangs  # noqa: E402
from test_tuner_faults import task  # noqa: E402,F401 (the fixture: the task file)

STUDY = "shared"
OPTIMIZERS = "sgd,adam"
S = optuna.trial.TrialState


def tune(tmp_path: Path, task: str, storage: str, out: str, trials: int, hang_at: int = 0,
         wait_for: Path | None = None):
    env = {"PYOPT_TUNE_HEARTBEAT": "1,3"}
    if wait_for is not None:
        env["FAULTS_WAIT_FOR"] = str(wait_for)
    return start(tmp_path, task, "--storage", storage, "--study", STUDY, "--optimizers", OPTIMIZERS, "--trials",
                 str(trials), "--out", str(tmp_path / out), "--strategy", "phased", hang_at=hang_at, env=env)


def load(storage: str):
    from pyopt.tuner.study import make_storage

    return optuna.load_study(study_name=STUDY, storage=make_storage(storage))


def wait_until(condition, proc, what: str) -> None:
    deadline = time.monotonic() + WAIT_LIMIT
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended before {what} (code {proc.returncode}):\n{out}\n{err}")
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def coordinating(storage: str, pid: int) -> bool:
    from pyopt.tuner import coordinator

    try:
        record = load(storage).user_attrs.get(coordinator.COORDINATOR)
    except Exception:  # no study (or no tables) yet
        return False
    return isinstance(record, dict) and record.get("pid") == pid


def finished_by(storage: str, pid: int) -> list:
    return [t for t in load(storage).get_trials() if t.state.is_finished()
            and t.user_attrs.get("owner", {}).get("pid") == pid]


def check_one_plan(trials: list, total: int) -> None:
    """Every trial of the study is one run of the plan: none failed, left queued or running,
    surplus, or run twice (the same params, epochs and seed)."""
    assert not [t.number for t in trials if t.state not in (S.COMPLETE, S.PRUNED)], \
        [(t.number, t.state, t.user_attrs.get("error")) for t in trials]
    assert all("phase" in t.user_attrs and not t.user_attrs.get("surplus") for t in trials)
    runs = [(json.dumps(t.params, sort_keys=True), t.user_attrs["planned_epochs"], t.user_attrs["seed"])
            for t in trials]
    assert len(runs) == len(set(runs)) == total
    assert {t.user_attrs["phase"] for t in trials} == {1, 2, 3, 4}


def test_a_coordinator_and_a_helper_finish_one_plan(tmp_path: Path, task: str) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    go = tmp_path / "go"
    # The coordinator's trials wait for `go`, made once the helper has finished one of its queued trials.
    lead = tune(tmp_path, task, storage, "lead", trials=10, wait_for=go)
    wait_until(lambda: coordinating(storage, lead.pid), lead, "the first process coordinates")
    helper = tune(tmp_path, task, storage, "helper", trials=10)
    wait_until(lambda: finished_by(storage, helper.pid), helper, "the helper ran a trial")
    code, _, err = finish(start(tmp_path, "quadratic", "--storage", storage, "--study", STUDY, "--strategy", "phased",
                                "--out", str(tmp_path / "other")))
    assert code == 2 and "being tuned on task 'faults-test'" in err and "given task 'quadratic'" in err, err
    go.touch()
    code, lead_out, err = finish(lead)
    assert code == 0, err
    code, helper_out, err = finish(helper)
    assert code == 0, err

    assert "phase 4 finalists" in lead_out and "helping its phased coordinator" not in lead_out
    assert f"helping its phased coordinator (pid {lead.pid}" in helper_out, helper_out
    assert "stopped: the coordinator finished" in helper_out, helper_out
    check_one_plan(load(storage).get_trials(), total=10)
    assert finished_by(storage, helper.pid) and finished_by(storage, lead.pid)
    best = json.loads((tmp_path / "lead" / "best.json").read_text())
    assert json.loads((tmp_path / "helper" / "best.json").read_text()) == best


def test_a_process_that_finds_its_coordinator_dead_coordinates_and_resumes(tmp_path: Path, task: str) -> None:
    storage = f"journal:{tmp_path / 'study.journal'}"
    first = tune(tmp_path, task, storage, "first", trials=10, hang_at=3)  # phase 1's third run
    (killed,) = wait_for_hangs(tmp_path, first, 1)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert coordinating(storage, killed)  # its record is left behind: the pid tells it is dead

    code, text, err = finish(tune(tmp_path, task, storage, "second", trials=10))
    assert code == 0, err
    assert "helping" not in text and "phase 4 finalists" in text, text
    trials = load(storage).get_trials()
    dead = [t for t in trials if t.state == S.FAIL]
    assert [t.user_attrs["error"] for t in dead if t.user_attrs.get("owner", {}).get("pid") == killed] == \
        [f"worker gone (pid {killed} on {os.uname().nodename})"]
    assert all(t.user_attrs["error"].startswith("not run") for t in dead if "owner" not in t.user_attrs)
    # the dead coordinator's 2 finished runs are reused, its queue is run anew, all of it once
    reused = [t for t in trials if t.state.is_finished() and t.state != S.FAIL
              and t.user_attrs.get("owner", {}).get("pid") == killed]
    assert len(reused) == 2
    check_one_plan([t for t in trials if t.state != S.FAIL], total=12)
    assert json.loads((tmp_path / "second" / "best.json").read_text())["strategy"] == "phased"


def test_postgres_coordinator_killed_mid_phase_a_new_process_finishes_the_plan(tmp_path: Path, task: str) -> None:
    from test_tuner_postgres import fresh_database  # skips here without $PYOPT_TEST_POSTGRES

    go = tmp_path / "go"
    with fresh_database() as storage:
        lead = tune(tmp_path, task, storage, "lead", trials=10, hang_at=3)
        wait_until(lambda: coordinating(storage, lead.pid), lead, "the first process coordinates")
        helper = tune(tmp_path, task, storage, "helper", trials=10, wait_for=go)  # holds its first trial
        (killed,) = wait_for_hangs(tmp_path, lead, 1)
        wait_until(lambda: any(t.state == S.RUNNING and t.user_attrs.get("owner", {}).get("pid") == helper.pid
                               for t in load(storage).get_trials()), helper, "the helper took a trial")
        os.killpg(lead.pid, signal.SIGKILL)
        lead.wait()
        go.touch()
        code, helper_out, err = finish(helper)  # its trial finishes; then it sees the coordinator gone
        assert code == 0, err
        assert f"stopped: the coordinator (pid {killed} on" in helper_out and "is gone" in helper_out, helper_out
        assert "no best.json from this helper" in helper_out and not (tmp_path / "helper" / "best.json").exists()

        code, text, err = finish(tune(tmp_path, task, storage, "second", trials=10))
        assert code == 0, err
        assert "helping" not in text and "phase 4 finalists" in text, text
        trials = load(storage).get_trials()
        done = [t for t in trials if t.state != S.FAIL]
        # the dead coordinator's 2 runs and the helper's 1 are reused; the new plan has 10 new ones
        assert len([t for t in done if t.user_attrs.get("owner", {}).get("pid") in (killed, helper.pid)]) == 3
        check_one_plan(done, total=13)
        assert not [t for t in trials if t.state == S.FAIL and not (
            t.user_attrs.get("error", "").startswith(("not run", "worker gone")))]
        assert json.loads((tmp_path / "second" / "best.json").read_text())["study"] == STUDY


def test_a_helper_killed_mid_trial_its_trial_is_run_again_and_the_phase_ends(tmp_path: Path, task: str) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    go = tmp_path / "go"
    lead = tune(tmp_path, task, storage, "lead", trials=12, wait_for=go)  # holds its first trial
    wait_until(lambda: coordinating(storage, lead.pid), lead, "the first process coordinates")
    helper = tune(tmp_path, task, storage, "helper", trials=12, hang_at=1)  # hangs in its first trial
    (killed,) = wait_for_hangs(tmp_path, helper, 1)
    os.killpg(helper.pid, signal.SIGKILL)
    helper.wait()
    go.touch()  # the coordinator finishes its trial, runs the queue, then waits for the killed helper's
    code, text, err = finish(lead)
    assert code == 0, err
    assert "is gone; queued again" in text, text
    trials = load(storage).get_trials()
    (dead,) = [t for t in trials if t.state == S.FAIL]
    assert dead.user_attrs["owner"]["pid"] == killed and dead.user_attrs["error"].startswith("worker gone")
    # the failed run counts against --trials, as any failed trial (it ran, if not to the end)
    check_one_plan([t for t in trials if t.state != S.FAIL], total=11)
    assert (dead.system_attrs["fixed_params"], dead.user_attrs["planned_epochs"]) in [
        (t.system_attrs.get("fixed_params"), t.user_attrs["planned_epochs"]) for t in trials if t.state != S.FAIL]
