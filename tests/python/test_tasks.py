"""The tuner's built-in tasks: analytic gradients vs finite differences, training with pyopt lowers
the validation loss, determinism, load_task and the bundled data."""
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import pyopt

REPO_ROOT = Path(__file__).resolve().parents[2]
from pyopt.tuner import tasks  # noqa: E402

NAMES = list(tasks.TASKS)


@pytest.fixture(scope="module", params=NAMES)
def task(request):
    return tasks.get_task(request.param)


def _first_batch(task, seed=0):
    return next(iter(task.train_batches(0, np.random.default_rng(seed))))


def _to64(params):
    return {k: v.astype(np.float64) for k, v in params.items()}


def test_registry_and_protocol():
    assert NAMES == ["rosenbrock", "beale", "quadratic", "logistic-cancer", "softmax-digits", "mlp-digits",
                     "linear-diabetes"]
    for name in NAMES:
        t = tasks.get_task(name)
        assert isinstance(t, tasks.Task)
        assert t.name == name
        assert isinstance(t.epochs, int) and t.epochs >= 1
        assert tasks.check_task(t) == []
        line = tasks.describe_task(t)
        assert line and "\n" not in line


def test_get_task_unknown_lists_names():
    with pytest.raises(ValueError, match="unknown task 'nope'.*rosenbrock.*linear-diabetes"):
        tasks.get_task("nope")


def test_params_are_float32_and_grads_match(task):
    params = task.init_params(0)
    assert params and all(v.dtype == np.float32 for v in params.values())
    loss, grads = task.loss_and_grads(params, _first_batch(task))
    assert isinstance(loss, float) and np.isfinite(loss)
    assert grads.keys() == params.keys()
    for k in params:
        assert grads[k].shape == params[k].shape and grads[k].dtype == params[k].dtype
        assert np.all(np.isfinite(grads[k]))


def _fd_relative_error(task, params, batch, h=1e-6):
    """max |analytic - central FD| / max(|analytic|, tiny) over every coordinate, in float64."""
    p = _to64(params)
    _, grads = task.loss_and_grads(p, batch)
    num = {}
    for k, v in p.items():
        g = np.empty_like(v)
        flat, gflat = v.reshape(-1), g.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + h
            up = task.loss_and_grads(p, batch)[0]
            flat[i] = old - h
            down = task.loss_and_grads(p, batch)[0]
            flat[i] = old
            gflat[i] = (up - down) / (2 * h)
        num[k] = g
    analytic = np.concatenate([grads[k].ravel() for k in p])
    numeric = np.concatenate([num[k].ravel() for k in p])
    assert grads[next(iter(p))].dtype == np.float64
    return float(np.max(np.abs(analytic - numeric)) / max(np.max(np.abs(analytic)), 1e-12))


def test_gradients_match_finite_differences(task):
    rng = np.random.default_rng(123)
    params = task.init_params(1)
    # a point off the initialization too (non-zero biases, moved weights)
    moved = {k: v + 0.1 * rng.standard_normal(v.shape).astype(v.dtype) for k, v in params.items()}
    for p in (params, moved):
        err = _fd_relative_error(task, p, _first_batch(task, seed=5))
        assert err < 1e-6, f"{task.name}: relative gradient error {err:.2e}"


def _train(task, seed, lr, optimizer="adamw", epochs=None):
    params = task.init_params(seed)
    opt = pyopt.create(optimizer, params, lr=lr)
    rng = np.random.default_rng(seed)
    for epoch in range(task.epochs if epochs is None else epochs):
        for batch in task.train_batches(epoch, rng):
            _, grads = task.loss_and_grads(params, batch)
            opt.step(grads)
    return params


@pytest.mark.parametrize("optimizer,lr", [("adamw", 1e-2), ("sgd", None)])
def test_training_lowers_validation_loss(task, optimizer, lr):
    if lr is None:  # plain SGD needs a step size below 2 / L on each task
        lr = {"rosenbrock": 1e-3, "beale": 1e-2, "quadratic": 1e-2, "linear-diabetes": 1e-2}.get(task.name, 0.1)
    before = task.validation_loss(task.init_params(0))
    after = task.validation_loss(_train(task, 0, lr, optimizer, epochs=min(task.epochs, 5)))
    assert np.isfinite(after)
    assert after < 0.9 * before, f"{task.name} {optimizer}: {before:.4g} -> {after:.4g}"


def test_default_adamw_full_trial_lowers_validation_loss(task):
    before = task.validation_loss(task.init_params(0))
    after = task.validation_loss(_train(task, 0, 1e-3))
    assert after < before


def test_determinism(task):
    a, b = task.init_params(7), task.init_params(7)
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    batches_a = list(task.train_batches(3, np.random.default_rng(11)))
    batches_b = list(task.train_batches(3, np.random.default_rng(11)))
    assert len(batches_a) == len(batches_b) > 0
    for x, y in zip(batches_a, batches_b):
        xs = x if isinstance(x, tuple) else (x,)
        ys = y if isinstance(y, tuple) else (y,)
        assert all((u is None and v is None) or np.array_equal(u, v) for u, v in zip(xs, ys))
    assert task.validation_loss(a) == task.validation_loss(a) == task.validation_loss(b)
    assert task.loss_and_grads(a, batches_a[0])[0] == task.loss_and_grads(b, batches_b[0])[0]
    # a fresh task object gives the same numbers
    fresh = tasks.get_task(task.name)
    assert fresh.validation_loss(fresh.init_params(7)) == task.validation_loss(a)
    # two whole trials with the same seed end at the same parameters
    p1, p2 = _train(task, 2, 1e-2, epochs=2), _train(task, 2, 1e-2, epochs=2)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)


def test_seed_changes_init_for_data_tasks():
    for name in ("logistic-cancer", "softmax-digits", "mlp-digits", "linear-diabetes"):
        t = tasks.get_task(name)
        a, b = t.init_params(0), t.init_params(1)
        assert any(not np.array_equal(a[k], b[k]) for k in a), name


def test_train_batches_cover_training_set():
    t = tasks.get_task("softmax-digits")
    seen = sum(len(y) for _, y in t.train_batches(0, np.random.default_rng(0)))
    assert seen == len(t.y_train) == 1500
    q = tasks.get_task("quadratic")
    batches = list(q.train_batches(0, np.random.default_rng(0)))
    assert len(batches) == 1000 // 128 and all(x.shape == (128, 100) for x, _ in batches)


def test_quadratic_spectrum_and_floor():
    q = tasks.get_task("quadratic")
    eig = np.linalg.eigvalsh(q._h64)
    assert eig.min() > 0 and np.sum(eig < 1) == 90 and np.sum((eig > 30) & (eig < 60)) == 10
    assert eig.max() / eig.min() > 1e3  # ill-conditioned
    theta0 = {"theta": np.zeros(100, np.float32)}
    assert q.validation_loss(theta0) == pytest.approx(q.floor)
    # the expected loss matches the mean loss over many fresh draws
    rng = np.random.default_rng(0)
    x = 0.6 * rng.standard_normal((20000, 100))
    theta = {"theta": np.ones(100)}
    d = 1.0 - x
    mc = 0.5 * np.mean(np.einsum("ij,jk,ik->i", d, q._h64, d))
    assert mc == pytest.approx(q.validation_loss(theta), rel=0.02)


def test_bundled_data_shapes():
    x, y = tasks.load_breast_cancer()
    assert x.shape == (569, 30) and x.dtype == np.float64
    assert y.shape == (569,) and y.dtype == np.uint8 and np.bincount(y).tolist() == [212, 357]
    x, y = tasks.load_diabetes()
    assert x.shape == (442, 10) and y.shape == (442,)
    assert y.min() == 25 and y.max() == 346 and set(np.unique(x[:, 1])) == {1.0, 2.0}  # raw sex column
    c = tasks.get_task("logistic-cancer")
    assert c.x_train.shape == (455, 30) and c.x_val.shape == (114, 30) and c.x_train.dtype == np.float32
    np.testing.assert_allclose(c.x_train.mean(axis=0), 0, atol=1e-5)
    d = tasks.get_task("linear-diabetes")
    assert d.x_train.shape == (353, 10) and d.x_val.shape == (89, 10)
    s = tasks.get_task("softmax-digits")
    assert s.x_train.shape == (1500, 64) and s.x_val.shape == (297, 64)


# ---------------------------------------------------------------------------------------------
# load_task

TASK_FILE = textwrap.dedent('''
    import numpy as np

    class Line:
        name = "line"
        epochs = 2

        def init_params(self, seed):
            return {"w": np.full(3, float(seed), np.float32)}

        def train_batches(self, epoch, rng):
            return [None, None]

        def loss_and_grads(self, params, batch):
            w = params["w"]
            return float(0.5 * w @ w), {"w": w.copy()}

        def validation_loss(self, params):
            return float(0.5 * params["w"] @ params["w"])

    INSTANCE = Line()

    def make():
        return Line()

    class Broken:
        name = "broken"
        epochs = 1

        def init_params(self, seed):
            return {}

        def train_batches(self, epoch, rng):
            return []

    NOT_A_TASK = 42

    def returns_junk():
        return object()
''')


@pytest.fixture()
def task_file(tmp_path):
    path = tmp_path / "my_task.py"
    path.write_text(TASK_FILE)
    return path


def test_load_task_builtin():
    t = tasks.load_task("beale")
    assert isinstance(t, tasks.Beale)


@pytest.mark.parametrize("obj", ["INSTANCE", "Line", "make"])
def test_load_task_object_forms(task_file, obj):
    t = tasks.load_task(f"{task_file}:{obj}")
    assert isinstance(t, tasks.Task) and t.name == "line"
    p = t.init_params(2)
    params = _train(t, 2, 0.1)
    assert t.validation_loss(params) < t.validation_loss(p)


def test_load_task_unknown_name():
    with pytest.raises(tasks.TaskLoadError, match="unknown task 'bogus'.*rosenbrock.*file.py:OBJECT"):
        tasks.load_task("bogus")
    with pytest.raises(ValueError):  # TaskLoadError is a ValueError
        tasks.load_task("")


def test_load_task_missing_file(tmp_path):
    with pytest.raises(tasks.TaskLoadError, match="does not exist"):
        tasks.load_task(f"{tmp_path / 'absent.py'}:TASK")


def test_load_task_missing_object(task_file):
    with pytest.raises(tasks.TaskLoadError, match="no object 'NOPE'.*INSTANCE"):
        tasks.load_task(f"{task_file}:NOPE")


def test_load_task_import_error_is_chained(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import numpy\nraise RuntimeError('boom in user code')\n")
    with pytest.raises(tasks.TaskLoadError, match="importing .*bad.py.* failed: RuntimeError: boom") as info:
        tasks.load_task(f"{bad}:TASK")
    assert isinstance(info.value.__cause__, RuntimeError)
    syntax = tmp_path / "syntax.py"
    syntax.write_text("def f(:\n")
    with pytest.raises(tasks.TaskLoadError, match="SyntaxError") as info:
        tasks.load_task(f"{syntax}:TASK")
    assert isinstance(info.value.__cause__, SyntaxError)


def test_load_task_not_a_task_names_missing_methods(task_file):
    with pytest.raises(tasks.TaskLoadError, match="loss_and_grads\\(\\) is missing; method validation_loss"):
        tasks.load_task(f"{task_file}:Broken")
    with pytest.raises(tasks.TaskLoadError, match="NOT_A_TASK is not a Task.*init_params\\(\\) is missing"):
        tasks.load_task(f"{task_file}:NOT_A_TASK")
    with pytest.raises(tasks.TaskLoadError, match="returns_junk: the object its factory returned is not a Task"):
        tasks.load_task(f"{task_file}:returns_junk")
