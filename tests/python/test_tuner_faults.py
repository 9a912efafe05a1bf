"""`pyopt tune` under faults, with real processes: SIGKILL (SQLite, journal + --jobs 2), a journal
lock left by a killed process, Ctrl-C (SIGINT to the process group, as a terminal sends it), no
matplotlib, and arguments rejected before anything is written.

The task hangs (writes a marker file, then sleeps) in a chosen trial of each process, so the test
signals the run at a known point; no test depends on timing."""
from __future__ import annotations

import csv
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

TASK_FILE = textwrap.dedent('''
    import os
    import time

    import numpy as np


    class Hanging:
        """A tiny quadratic. With FAULTS_HANG_AT=N the N-th trial of each process writes
        FAULTS_MARKERS/hang-PID, then sleeps, to be killed or interrupted there. With
        FAULTS_WAIT_FOR=PATH every other trial waits until PATH exists."""
        name = "faults-test"
        epochs = 3

        def __init__(self):
            self.trials_started = 0
            self.s = np.logspace(-1, 1, 10)

        def init_params(self, seed):
            self.trials_started += 1
            if self.trials_started == int(os.environ.get("FAULTS_HANG_AT", "0")):
                open(os.path.join(os.environ["FAULTS_MARKERS"], f"hang-{os.getpid()}"), "w").close()
                time.sleep(300)
            while os.environ.get("FAULTS_WAIT_FOR") and not os.path.exists(os.environ["FAULTS_WAIT_FOR"]):
                time.sleep(0.05)
            return {"w": np.zeros(10)}

        def train_batches(self, epoch, rng):
            for _ in range(5):
                yield rng.standard_normal(10) * 0.01

        def loss_and_grads(self, params, batch):
            d = params["w"] - 1.0
            return float(0.5 * np.sum(self.s * d * d)), {"w": self.s * d + batch}

        def validation_loss(self, params):
            d = params["w"] - 1.0
            return float(0.5 * np.sum(self.s * d * d))


    TASK = Hanging
''')

WAIT_LIMIT = 180.0  # a guard against hanging the suite, not a measurement


@pytest.fixture
def task(tmp_path: Path) -> str:
    path = tmp_path / "hanging_task.py"
    path.write_text(TASK_FILE)
    return f"{path}:TASK"


def interruptible() -> None:
    """In the child before exec: SIGINT back to its default. A shell's background job (a CI
    script run with ``&``, say) starts with SIGINT ignored, every child inherits that, and Python
    then leaves it ignored, so the Ctrl-C these tests send would never arrive."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(tmp_path: Path, *args: str, hang_at: int = 0, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m pyopt tune ARGS` in its own session (process group), from tmp_path, taking Ctrl-C."""
    markers = tmp_path / "markers"
    markers.mkdir(exist_ok=True)
    child_env = {**os.environ, "FAULTS_MARKERS": str(markers), "FAULTS_HANG_AT": str(hang_at), **(env or {})}
    if "--strategy" not in args:  # these tests check the single study's warm starts and trial counts
        args = (*args, "--strategy", "tpe")
    return subprocess.Popen([sys.executable, "-m", "pyopt", "tune", *args, "--no-progress"], cwd=tmp_path,
                            env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=interruptible)


def finish(proc: subprocess.Popen) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=WAIT_LIMIT)
    return proc.returncode, out, err


def wait_for_hangs(tmp_path: Path, proc: subprocess.Popen, count: int) -> list[int]:
    """Wait until ``count`` processes hang in their trial; returns their pids."""
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline:
        hung = sorted(int(p.name.split("-")[1]) for p in (tmp_path / "markers").glob("hang-*"))
        if len(hung) >= count:
            return hung
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"pyopt tune ended before hanging (code {proc.returncode}):\n{out}\n{err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("pyopt tune did not reach the hanging trial")


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "trials.csv", newline="") as f:
        return list(csv.DictReader(f))


def finished_new(before: list[dict[str, str]], after: list[dict[str, str]]) -> list[dict[str, str]]:
    """The trials that finished in the rerun (new ones, and ones that were waiting)."""
    done = ("COMPLETE", "PRUNED")
    old = {r["number"] for r in before if r["state"] in done}
    return [r for r in after if r["number"] not in old and r["state"] in done]


def study_rows(storage: str, tmp_path: Path) -> list[dict[str, str]]:
    """The study's trials as trials.csv lists them, read straight from the storage."""
    from pyopt.tuner import report, study

    loaded = optuna.load_study(study_name="pyopt-faults-test", storage=study.make_storage(storage))
    report.write_csv([loaded], str(tmp_path / "before.csv"))
    with open(tmp_path / "before.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_sigkill_sqlite_rerun_fails_the_dead_trial_and_runs_trials_new_ones(tmp_path, task) -> None:
    out = tmp_path / "out"
    common = [task, "--optimizers", "sgd,adam", "--out", str(out)]
    proc = start(tmp_path, *common, "--trials", "6", hang_at=2)  # trial 1: adam's warm start
    (killed,) = wait_for_hangs(tmp_path, proc, 1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = study_rows(f"sqlite:///{out / 'study.db'}", tmp_path)
    assert [r["state"] for r in before if r["number"] == "1"] == ["RUNNING"]

    code, text, err = finish(start(tmp_path, *common, "--trials", "4"))
    assert code == 0, err
    after = rows(out)
    dead = next(r for r in after if r["number"] == "1")
    assert dead["state"] == "FAIL" and f"worker gone (pid {killed} on " in dead["error"]
    assert not [r for r in after if r["state"] in ("RUNNING", "WAITING")]
    new = finished_new(before, after)
    assert len(new) == 4, after  # --trials 4 on a rerun: 4 new trials
    # adam's warm start never finished: the rerun ran it again.
    assert any(r["optimizer"] == "adam" and r["warm_start"] == "True" for r in new)


def test_sigkill_journal_two_jobs_rerun_fails_both_dead_trials(tmp_path, task) -> None:
    out = tmp_path / "out"
    common = [task, "--optimizers", "sgd,adam", "--out", str(out), "--jobs", "2"]
    proc = start(tmp_path, *common, "--trials", "8", hang_at=2)
    killed = wait_for_hangs(tmp_path, proc, 2)
    os.killpg(proc.pid, signal.SIGKILL)  # every process of the run, as the OOM killer of a session would
    proc.wait()
    before = study_rows(f"journal:{out / 'study.journal'}", tmp_path)
    assert sum(r["state"] == "RUNNING" for r in before) == 2

    code, text, err = finish(start(tmp_path, *common, "--trials", "4"))
    assert code == 0, err
    after = rows(out)
    dead = [r for r in after if r["state"] == "FAIL"]
    assert sorted(int(r["error"].split("pid ")[1].split()[0]) for r in dead) == killed
    assert not [r for r in after if r["state"] in ("RUNNING", "WAITING")]
    # 4 new trials; with 2 processes, one more may start while the other starts the last one.
    assert 4 <= len(finished_new(before, after)) <= 5, after
    assert not os.path.lexists(out / "study.journal.lock")


def test_a_worker_whose_main_process_is_killed_stops_by_itself(tmp_path, task) -> None:
    out = tmp_path / "out"
    common = [task, "--optimizers", "sgd,adam", "--out", str(out), "--jobs", "2"]
    proc = start(tmp_path, *common, "--trials", "8", hang_at=2)
    (worker,) = set(wait_for_hangs(tmp_path, proc, 2)) - {proc.pid}
    proc.send_signal(signal.SIGKILL)  # the main process alone
    proc.wait()
    deadline = time.monotonic() + WAIT_LIMIT
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its killed main process")
    # Before it stopped, the worker failed its own trial and the dead main process's.
    before = study_rows(f"journal:{out / 'study.journal'}", tmp_path)
    failed = sorted(r["error"] for r in before if r["state"] == "FAIL")
    assert failed == ["interrupted", f"worker gone (pid {proc.pid} on {socket.gethostname()})"]
    assert not [r for r in before if r["state"] == "RUNNING"]

    code, text, err = finish(start(tmp_path, *common, "--trials", "2"))
    assert code == 0, err
    assert len(finished_new(before, rows(out))) in (2, 3)


def test_journal_lock_of_a_killed_process_is_removed(tmp_path, task) -> None:
    journal = tmp_path / "study.journal"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from pyopt.tuner.study import make_storage
            make_storage({'journal:' + str(journal)!r})._backend._lock.acquire()
            print("locked", flush=True)
            time.sleep(300)
        """)], cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert os.path.lexists(str(journal) + ".lock")

    code, text, err = finish(start(tmp_path, task, "--optimizers", "sgd", "--trials", "2", "--out",
                                   str(tmp_path / "out"), "--storage", f"journal:{journal}"))
    assert code == 0, err
    assert not os.path.lexists(str(journal) + ".lock")
    assert f"left by process {holder.pid}, which is gone" in err
    assert "not been released" not in err  # Optuna's (and our) 30 s grace period did not run


def check_interrupted(code: int, err: str, table: list[dict[str, str]], hung: int) -> None:
    assert code == 130, err
    assert "Traceback" not in err, err
    interrupted = [r for r in table if r["state"] == "FAIL"]
    assert len(interrupted) == hung and all(r["error"] == "interrupted" for r in interrupted), table
    assert not [r for r in table if r["state"] == "RUNNING"]
    assert not [r for r in table if r["state"] == "WAITING" and not r["optimizer"]], table


def test_ctrl_c_fails_the_trial_as_interrupted_and_the_rerun_finishes_the_warm_starts(tmp_path, task) -> None:
    out = tmp_path / "out"
    common = [task, "--optimizers", "sgd,adam,lion", "--out", str(out)]
    proc = start(tmp_path, *common, "--trials", "6", hang_at=2)  # in adam's warm start; lion's waits
    wait_for_hangs(tmp_path, proc, 1)
    os.killpg(proc.pid, signal.SIGINT)
    code, text, err = finish(proc)
    before = rows(out)
    check_interrupted(code, err, before, hung=1)
    assert [r["optimizer"] for r in before if r["state"] == "WAITING"] == ["lion"]

    code, text, err = finish(start(tmp_path, *common, "--trials", "3"))
    assert code == 0, err
    new = finished_new(before, rows(out))
    assert len(new) == 3
    assert {r["optimizer"] for r in new if r["warm_start"] == "True"} == {"adam", "lion"}


def test_ctrl_c_with_two_jobs(tmp_path, task) -> None:
    out = tmp_path / "out"
    proc = start(tmp_path, task, "--optimizers", "sgd,adam", "--out", str(out), "--jobs", "2", "--trials", "8",
                 hang_at=2)
    wait_for_hangs(tmp_path, proc, 2)
    os.killpg(proc.pid, signal.SIGINT)
    code, text, err = finish(proc)
    check_interrupted(code, err, rows(out), hung=2)


def test_without_matplotlib_the_run_finishes_and_says_plots_need_it(tmp_path, task) -> None:
    shim = tmp_path / "no-matplotlib" / "matplotlib"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text('raise ImportError("No module named \'matplotlib\' (test shim)")\n')
    out = tmp_path / "out"
    path = os.pathsep.join(filter(None, [str(shim.parent), os.environ.get("PYTHONPATH")]))
    code, text, err = finish(start(tmp_path, task, "--optimizers", "sgd,adam", "--trials", "3", "--out", str(out),
                                   env={"PYTHONPATH": path}))
    assert code == 0, err
    assert "best:" in text and "best val loss" in text
    assert "plots: they need matplotlib" in text + err
    assert (out / "best.json").exists() and len(rows(out)) == 3
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize("bad", [["--trials", "0"], ["--trials", "-3"], ["--jobs", "0"],
                                 ["--optimizers", "adamw,nope"], ["--storage", "nowhere"], ["no-such-task"]])
def test_rejected_arguments_leave_no_output_folder(tmp_path, task, capsys, bad) -> None:
    from pyopt import cli

    out = tmp_path / "out"
    args = ["tune", *([] if bad == ["no-such-task"] else [task]), *bad, "--out", str(out), "--no-progress"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "pyopt tune: error:" in err and bad[-1].split(",")[-1] in err, err
    assert not out.exists()


def test_intermediate_values_legend_is_inside_the_figure(tmp_path, monkeypatch) -> None:
    """40 trials: Optuna's one-row-per-trial legend ran off the bottom of the figure."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    from pyopt.tuner import report

    study = optuna.create_study()
    for n in range(40):
        study.add_trial(optuna.trial.create_trial(
            params={"optimizer": "sgd"}, distributions={"optimizer": optuna.distributions.CategoricalDistribution(
                ["sgd"])}, value=1.0 / (n + 1), intermediate_values={e: 1.0 / (n + 1 + e) for e in range(4)}))
    extents = {}
    savefig = Figure.savefig

    def spy(fig, path, *args, **kwargs):
        renderer = fig.canvas.get_renderer()
        for ax in fig.axes:
            if ax.get_legend() is not None:
                extents[os.path.basename(str(path))] = (ax.get_legend().get_window_extent(renderer), fig.bbox)
        return savefig(fig, path, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", spy)
    report.write_plots([study], str(tmp_path))
    legend, figure = extents["intermediate_values.png"]
    assert figure.x0 <= legend.x0 and legend.x1 <= figure.x1 and figure.y0 <= legend.y0 and legend.y1 <= figure.y1, \
        (legend, figure)


def test_best_line_says_what_its_times_are(tmp_path, task, capsys) -> None:
    from pyopt import cli

    assert cli.main(["tune", task, "--optimizers", "sgd", "--trials", "2", "--out", str(tmp_path / "o"),
                     "--no-progress", "--strategy", "tpe"]) == 0
    best = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("best:"))
    assert "(trial " in best and "trained in " in best and "s; this run took " in best, best


def test_ctrl_c_in_the_phased_strategy_and_the_rerun_goes_on_where_it_stopped(tmp_path, task) -> None:
    out = tmp_path / "out"
    common = [task, "--optimizers", "sgd,adam", "--out", str(out), "--strategy", "phased"]
    proc = start(tmp_path, *common, "--trials", "10", hang_at=2)  # phase 1's second config
    wait_for_hangs(tmp_path, proc, 1)
    os.killpg(proc.pid, signal.SIGINT)
    code, text, err = finish(proc)
    before = rows(out)
    assert code == 130 and "Traceback" not in err, err
    assert [r["error"] for r in before if r["state"] == "FAIL" and r["error"] == "interrupted"] == ["interrupted"]
    # the queued runs of phase 1 are not left waiting (a rerun would run them first)
    assert not [r for r in before if r["state"] in ("RUNNING", "WAITING")], before
    assert all(r["error"].startswith("not run") for r in before if r["state"] == "FAIL" and r["error"] != "interrupted")
    assert {r["phase"] for r in before} == {"1"}  # no later phase started

    code, text, err = finish(start(tmp_path, *common, "--trials", "10"))
    assert code == 0, err
    after = rows(out)
    done = [r for r in after if r["state"] in ("COMPLETE", "PRUNED")]
    assert len(finished_new(before, after)) <= 10
    # every phase-1 run once (the interrupted one again), none twice
    runs = [(r["hyperparameters"], r["planned_epochs"], r["seed"]) for r in done if r["phase"] == "1"]
    assert len(runs) == len(set(runs)) == 6
    assert {r["phase"] for r in done} == {"1", "2", "3", "4"}
    assert "phase 4 finalists" in text


def test_sigkill_phased_two_jobs_and_the_rerun_finishes_every_phase(tmp_path, task) -> None:
    out = tmp_path / "out"
    common = [task, "--optimizers", "sgd,adam", "--out", str(out), "--jobs", "2", "--strategy", "phased"]
    proc = start(tmp_path, *common, "--trials", "12", hang_at=2)  # phase 1 (6 runs) on both processes
    killed = wait_for_hangs(tmp_path, proc, 2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = study_rows(f"journal:{out / 'study.journal'}", tmp_path)
    assert sum(r["state"] == "RUNNING" for r in before) == 2

    code, text, err = finish(start(tmp_path, *common, "--trials", "12"))
    assert code == 0, err
    after = rows(out)
    dead = [r for r in after if r["state"] == "FAIL" and r["error"].startswith("worker gone")]
    assert sorted(int(r["error"].split("pid ")[1].split()[0]) for r in dead) == killed
    assert not [r for r in after if r["state"] in ("RUNNING", "WAITING")]
    done = [r for r in after if r["state"] in ("COMPLETE", "PRUNED") and r["phase"]]
    runs = [(r["hyperparameters"], r["planned_epochs"], r["seed"]) for r in done if r["phase"] == "1"]
    assert len(runs) == len(set(runs)) == 6  # the killed runs again, the finished ones not
    assert {r["phase"] for r in done} == {"1", "2", "3", "4"} and "phase 4 finalists" in text
    assert len([r for r in finished_new(before, after) if r["phase"]]) <= 12  # surplus trials (no phase) end at once
