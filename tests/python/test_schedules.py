"""Learning-rate schedules: against torch.optim.lr_scheduler, hand-computed values, validation,
attaching to an optimizer, and checkpoint resume."""
import math
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pyopt  # noqa: E402
from pyopt import schedules as S  # noqa: E402

N = 200


def torch_lrs(make, base_lrs=(0.1,), n=N, metrics=None):
    """The lr of every group at each of n optimizer steps under a torch scheduler."""
    ps = [torch.zeros(1, requires_grad=True) for _ in base_lrs]
    opt = torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(ps, base_lrs)], lr=base_lrs[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sched = make(opt)
        out = []
        for k in range(n):
            out.append([g["lr"] for g in opt.param_groups])
            opt.step()
            sched.step() if metrics is None else sched.step(metrics[k])
    return np.array(out)


def pyopt_lrs(sched, base_lrs=(0.1,), n=N, mode="scale"):
    """The lr of every group at each of n steps of a pyopt optimizer with ``sched`` attached."""
    params = [np.zeros(1) for _ in base_lrs]
    opt = pyopt.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, base_lrs)])
    sched.attach(opt, mode=mode)
    out = []
    for _ in range(n):
        opt.step([np.zeros(1) for _ in params])
        out.append([g["lr"] for g in opt.param_groups])
    return np.array(out)


CASES = [
    ("step", lambda: S.step_decay(30, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 30, gamma=0.5)),
    ("multistep", lambda: S.multistep([20, 50, 50, 150], gamma=0.3),
     lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [20, 50, 50, 150], gamma=0.3)),
    ("exponential", lambda: S.exponential(0.98), lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.98)),
    ("constant", lambda: S.constant(), lambda o: torch.optim.lr_scheduler.ConstantLR(o, factor=1.0, total_iters=0)),
    ("cosine", lambda: S.cosine(N, floor=0.0), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=N)),
]


@pytest.mark.parametrize("name,ours,theirs", CASES, ids=[c[0] for c in CASES])
def test_vs_torch_attached_per_group(name, ours, theirs):
    bases = (0.1, 0.003)
    expect = torch_lrs(theirs, bases)
    got = pyopt_lrs(ours(), bases)
    np.testing.assert_allclose(got, expect, rtol=1e-10, atol=1e-15)
    # the plain callable gives the same multipliers
    sched = ours()
    np.testing.assert_allclose([0.1 * sched(k) for k in range(N)], expect[:, 0], rtol=1e-10, atol=1e-15)


def test_cosine_floor_vs_torch():
    # torch's eta_min is absolute: for one group with base lr 0.1, our multiplier floor is eta_min / 0.1
    expect = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=150, eta_min=0.01), n=151)
    got = pyopt_lrs(S.cosine(150, lr=0.1, floor=0.01), n=151, mode="set")
    np.testing.assert_allclose(got, expect, rtol=1e-10)
    assert S.cosine(150, lr=0.1, floor=0.01)(400) == 0.01  # holds the floor after total_steps


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("three_phase", [False, True])
@pytest.mark.parametrize("pct_start", [0.3, 0.25])
def test_one_cycle_vs_torch(anneal, three_phase, pct_start):
    kw = dict(pct_start=pct_start, div_factor=20.0, final_div_factor=500.0, three_phase=three_phase)
    expect = torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.5, total_steps=N, anneal_strategy=anneal, cycle_momentum=False, **kw))
    got = pyopt_lrs(S.one_cycle(N, max_lr=0.5, anneal=anneal, **kw), mode="set")
    np.testing.assert_allclose(got, expect, rtol=1e-10, atol=1e-15)
    sched = S.one_cycle(N, max_lr=0.5, anneal=anneal, **kw)
    assert sched(N + 50) == sched(N - 1) == pytest.approx(0.5 / 20 / 500)


@pytest.mark.parametrize("kw", [
    dict(mode="min", factor=0.5, patience=3, threshold=1e-2, threshold_mode="rel", cooldown=0),
    dict(mode="min", factor=0.3, patience=0, threshold=0.05, threshold_mode="abs", cooldown=2),
    dict(mode="max", factor=0.7, patience=2, threshold=1e-3, threshold_mode="rel", cooldown=1, min_lr=0.002),
    dict(mode="max", factor=0.1, patience=5, threshold=0.01, threshold_mode="abs", cooldown=3, min_lr=1e-4),
])
def test_plateau_vs_torch(kw):
    rng = np.random.default_rng(3)
    # a noisy metric that improves, stalls and occasionally gets worse
    metrics = np.cumsum(rng.normal(0, 1, N)) * 0.1 + np.where(np.arange(N) < 60, -np.arange(N) * 0.05, -3.0)
    if kw["mode"] == "max":
        metrics = -metrics
    bases = (0.1, 0.02)
    expect = torch_lrs(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **kw), bases, metrics=metrics)
    params = [np.zeros(1), np.zeros(1)]
    opt = pyopt.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, bases)])
    sched = S.reduce_on_plateau(**kw).attach(opt)
    got = []
    for k in range(N):
        got.append([g["lr"] for g in opt.param_groups])
        opt.step([np.zeros(1), np.zeros(1)])
        sched.step(metrics[k])
    got = np.array(got)
    np.testing.assert_allclose(got, expect, rtol=1e-12)
    assert got[-1, 0] < 0.1  # it did reduce
    # unattached: its own value follows group 0 when min_lr applies equally
    alone = S.reduce_on_plateau(lr=0.1, **kw)
    values = []
    for k in range(N):
        values.append(alone(k))
        alone.step(metrics[k])
    np.testing.assert_allclose(values, expect[:, 0], rtol=1e-12)


def test_plateau_per_group_min_lr_vs_torch():
    metrics = [1.0] * 60
    kw = dict(factor=0.5, patience=1, min_lr=[0.01, 0.0005])
    bases = (0.1, 0.02)
    expect = torch_lrs(lambda o: torch.optim.lr_scheduler.ReduceLROnPlateau(o, **kw), bases, n=60, metrics=metrics)
    opt = pyopt.SGD([{"params": [np.zeros(1)], "lr": lr} for lr in bases])
    sched = S.reduce_on_plateau(**kw).attach(opt)
    got = []
    for k in range(60):
        got.append([g["lr"] for g in opt.param_groups])
        sched.step(metrics[k])
    np.testing.assert_allclose(got, expect, rtol=1e-12)
    assert got[-1] == [0.01, 0.0005]


def test_warmup_cosine_by_hand():
    s = S.cosine(110, lr=2.0, warmup_steps=10, warmup_start=0.5, floor=0.2)
    assert s(0) == 0.5
    assert s(5) == pytest.approx(0.5 + 1.5 * 5 / 10)
    assert s(10) == pytest.approx(2.0)
    assert s(60) == pytest.approx(0.2 + 1.8 * 0.5)  # halfway through the cosine
    assert s(35) == pytest.approx(0.2 + 1.8 * 0.5 * (1 + math.cos(math.pi * 25 / 100)))
    assert s(110) == pytest.approx(0.2)
    assert s(10_000) == 0.2
    # no warmup: equals torch's closed form
    assert S.cosine(100)(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))


def test_warmup_linear_by_hand():
    s = S.warmup_linear(100, 20, lr=1e-3)
    assert [s(t) for t in (0, 10, 20, 60, 100, 150)] == pytest.approx([0, 5e-4, 1e-3, 5e-4, 0, 0])
    s = S.warmup_linear(50, 10, lr=1.0, warmup_start=0.1, end=0.2)
    assert s(0) == pytest.approx(0.1) and s(5) == pytest.approx(0.55) and s(30) == pytest.approx(0.6)
    assert s(50) == pytest.approx(0.2)


def test_warmup_matches_torch_linear_then_cosine():
    # torch: SequentialLR(LinearLR warmup, CosineAnnealingLR) is our cosine with warmup
    W, T = 10, N
    expect = torch_lrs(lambda o: torch.optim.lr_scheduler.SequentialLR(o, [
        torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=W),
        torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=T - W)], milestones=[W]))
    got = pyopt_lrs(S.cosine(T, warmup_steps=W, warmup_start=0.1))
    np.testing.assert_allclose(got, expect, rtol=1e-9)


@pytest.mark.parametrize("decay", ["linear", "cosine", "sqrt"])
def test_wsd_by_hand(decay):
    s = S.wsd(100, lr=1.0, warmup_steps=10, decay_fraction=0.2, floor=0.1, decay=decay)
    assert s(0) == 0.0 and s(5) == pytest.approx(0.5)
    assert all(s(t) == 1.0 for t in range(10, 80))
    x = 10 / 20
    shape = {"linear": x, "cosine": 0.5 * (1 - math.cos(math.pi * x)), "sqrt": math.sqrt(x)}[decay]
    assert s(90) == pytest.approx(1.0 - 0.9 * shape)
    assert s(100) == s(500) == 0.1
    assert s(80) == pytest.approx(1.0)
    vals = [s(t) for t in range(80, 101)]
    assert all(a >= b for a, b in zip(vals, vals[1:]))


def test_join_and_linear():
    s = S.join([S.linear(0.0, 1.0, 4), S.constant(1.0), S.exponential(0.5)], [4, 10])
    assert [s(t) for t in range(13)] == pytest.approx([0, .25, .5, .75, 1, 1, 1, 1, 1, 1, 1, .5, .25])
    assert S.linear(3.0, 1.0, 0)(0) == 1.0


@pytest.mark.parametrize("make,exc,words", [
    (lambda: S.step_decay(0), ValueError, "step_size"),
    (lambda: S.step_decay(2.5), TypeError, "step_size"),
    (lambda: S.step_decay(3, gamma=-1), ValueError, "gamma"),
    (lambda: S.multistep(5), TypeError, "milestones"),
    (lambda: S.multistep([1, -2]), ValueError, "milestones"),
    (lambda: S.exponential("0.9"), TypeError, "gamma"),
    (lambda: S.exponential(math.nan), ValueError, "gamma"),
    (lambda: S.cosine(0), ValueError, "total_steps"),
    (lambda: S.cosine(10, warmup_steps=10), ValueError, "warmup_steps"),
    (lambda: S.cosine(10, lr=True), TypeError, "lr"),
    (lambda: S.warmup_linear(10, 11), ValueError, "warmup_steps"),
    (lambda: S.one_cycle(100, pct_start=1.0), ValueError, "pct_start"),
    (lambda: S.one_cycle(100, anneal="exp"), ValueError, "anneal"),
    (lambda: S.one_cycle(100, div_factor=0), ValueError, "div_factor"),
    (lambda: S.one_cycle(3, pct_start=0.1), ValueError, "pct_start"),
    (lambda: S.one_cycle(100, three_phase=1), TypeError, "three_phase"),
    (lambda: S.wsd(100, warmup_steps=95, decay_fraction=0.1), ValueError, "warmup_steps"),
    (lambda: S.wsd(100, decay_fraction=1.5), ValueError, "decay_fraction"),
    (lambda: S.wsd(100, decay="step"), ValueError, "decay"),
    (lambda: S.reduce_on_plateau(mode="avg"), ValueError, "mode"),
    (lambda: S.reduce_on_plateau(factor=1.0), ValueError, "factor"),
    (lambda: S.reduce_on_plateau(threshold_mode="pct"), ValueError, "threshold_mode"),
    (lambda: S.reduce_on_plateau(patience=-1), ValueError, "patience"),
    (lambda: S.reduce_on_plateau(min_lr=-1.0), ValueError, "min_lr"),
    (lambda: S.join([S.constant()], [3]), ValueError, "boundaries"),
    (lambda: S.join([S.constant(), S.constant()], [-1]), ValueError, "boundaries"),
    (lambda: S.constant()(-1), ValueError, "step"),
    (lambda: S.constant()(1.5), TypeError, "step"),
])
def test_validation(make, exc, words):
    with pytest.raises(exc, match=words):
        make()


def test_attach_errors():
    opt = pyopt.SGD([np.zeros(2)], lr=0.1)
    s = S.constant()
    with pytest.raises(ValueError, match="mode"):
        s.attach(opt, mode="absolute")
    with pytest.raises(TypeError, match="opt"):
        s.attach(object())
    s.attach(opt)
    with pytest.raises(ValueError, match="already attached"):
        s.attach(opt)
    with pytest.raises(ValueError, match="min_lr"):
        S.reduce_on_plateau(min_lr=[0.0, 0.0]).attach(opt)
    assert opt.schedules == (s,)
    s.detach()
    assert opt.schedules == ()
    with pytest.raises(TypeError, match="metric"):
        S.reduce_on_plateau().step("loss")


def test_set_mode_and_schedule_drives_the_update():
    """The attached schedule's lr is the one the step uses: same trajectory as torch SGD + StepLR."""
    rng = np.random.default_rng(0)
    w = rng.standard_normal(17)
    b = rng.standard_normal(3)
    tw, tb = torch.tensor(w, requires_grad=True), torch.tensor(b, requires_grad=True)
    opt = pyopt.SGD([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 0.05}], momentum=0.9)
    S.step_decay(7, gamma=0.5).attach(opt)
    topt = torch.optim.SGD([{"params": [tw], "lr": 0.1}, {"params": [tb], "lr": 0.05}], momentum=0.9)
    tsched = torch.optim.lr_scheduler.StepLR(topt, 7, gamma=0.5)
    for _ in range(30):
        gw, gb = rng.standard_normal(17), rng.standard_normal(3)
        opt.step([gw, gb])
        tw.grad, tb.grad = torch.tensor(gw), torch.tensor(gb)
        topt.step()
        tsched.step()
    np.testing.assert_allclose(w, tw.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(b, tb.detach().numpy(), rtol=1e-12)

    opt = pyopt.SGD([{"params": [np.zeros(1)], "lr": 0.1}, {"params": [np.zeros(1)], "lr": 5.0}])
    S.linear(1e-3, 2e-3, 10).attach(opt, mode="set")
    opt.step([np.zeros(1), np.zeros(1)])
    assert [g["lr"] for g in opt.param_groups] == [1e-3, 1e-3]


def test_no_schedule_state_dict_unchanged():
    opt = pyopt.AdamW([np.zeros(3)])
    assert "schedules" not in opt.state_dict()


@pytest.mark.parametrize("make", [
    lambda: S.cosine(60, warmup_steps=5, floor=0.1),
    lambda: S.one_cycle(60),
    lambda: S.wsd(60, warmup_steps=5, decay_fraction=0.3),
    lambda: S.multistep([10, 25, 40], gamma=0.5),
], ids=["cosine", "one_cycle", "wsd", "multistep"])
def test_checkpoint_resume_continues_lr_sequence(tmp_path, make):
    rng = np.random.default_rng(1)
    grads = [[rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
             for _ in range(60)]
    init = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]

    def groups(params):
        return pyopt.param_groups({"W": params[0], "b": params[1]}, weight_decay=0.1)

    # one uninterrupted run
    ref = [a.copy() for a in init]
    opt = pyopt.AdamW(groups(ref), lr=1e-2)
    make().attach(opt)
    ref_lrs = []
    for g in grads:
        opt.step({"W": g[0], "b": g[1]})
        ref_lrs.append([x["lr"] for x in opt.param_groups])

    # 25 steps, save, load into fresh arrays, attach a new schedule, 35 more steps
    run = [a.copy() for a in init]
    opt = pyopt.AdamW(groups(run), lr=1e-2)
    make().attach(opt)
    lrs = []
    for g in grads[:25]:
        opt.step({"W": g[0], "b": g[1]})
        lrs.append([x["lr"] for x in opt.param_groups])
    path = tmp_path / "ckpt.npz"
    pyopt.save(opt, path)
    resumed = [a.copy() for a in run]
    opt2 = pyopt.load(path, {"W": resumed[0], "b": resumed[1]})
    assert opt2.state_dict()["schedules"][0]["count"] == 25  # pending until attached, still saved
    sched = make().attach(opt2)
    assert sched.count == 25
    for g in grads[25:]:
        opt2.step({"W": g[0], "b": g[1]})
        lrs.append([x["lr"] for x in opt2.param_groups])
    assert lrs == ref_lrs
    np.testing.assert_array_equal(resumed[0], ref[0])
    np.testing.assert_array_equal(resumed[1], ref[1])


def test_plateau_checkpoint_and_load_state_dict(tmp_path):
    metrics = [5, 4, 4, 4, 4, 3, 3, 3, 3, 3, 3]
    make = lambda: S.reduce_on_plateau(factor=0.5, patience=1, cooldown=1)  # noqa: E731
    w = np.zeros(2)
    opt = pyopt.SGD([w], lr=0.1)
    s = make().attach(opt)
    for m in metrics[:6]:
        opt.step([np.ones(2)])
        s.step(m)
    path = tmp_path / "p.npz"
    pyopt.save(opt, path)
    opt2 = pyopt.load(path, [w.copy()])
    s2 = make().attach(opt2)
    assert s2.state_dict() == s.state_dict()
    for m in metrics[6:]:
        s.step(m)
        s2.step(m)
        assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    # in-memory round trip, and a mismatched kind is rejected before anything changes
    sd = opt.state_dict()
    opt3 = pyopt.SGD([np.zeros(2)], lr=0.1)
    wrong = S.cosine(10).attach(opt3)
    with pytest.raises(ValueError, match="reduce_on_plateau"):
        opt3.load_state_dict(sd)
    assert wrong.count == 0 and opt3.param_groups[0]["lr"] == 0.1
    opt4 = pyopt.SGD([np.zeros(2)], lr=0.1)
    opt4.load_state_dict(sd)
    with pytest.raises(ValueError, match="reduce_on_plateau"):
        S.cosine(10).attach(opt4)
    s4 = make().attach(opt4)
    assert s4.best == s.best and s4.lr == s.lr


def test_fresh_plateau_state_with_infinite_best_round_trips(tmp_path):
    for mode in ("min", "max"):
        opt = pyopt.SGD([np.zeros(2)], lr=0.1)
        S.reduce_on_plateau(mode=mode).attach(opt)
        pyopt.save(opt, tmp_path / "p.npz")
        opt2 = pyopt.load(tmp_path / "p.npz", [np.zeros(2)])
        s2 = S.reduce_on_plateau(mode=mode).attach(opt2)
        assert s2.best == (math.inf if mode == "min" else -math.inf)


def test_schedule_counts_from_attach_and_ignores_plateau_in_join():
    opt = pyopt.SGD([np.zeros(1)], lr=1.0)
    opt.step([np.zeros(1)])
    s = S.exponential(0.5).attach(opt)
    opt.step([np.zeros(1)])
    assert opt.param_groups[0]["lr"] == 1.0 and s.count == 1
    opt.step([np.zeros(1)])
    assert opt.param_groups[0]["lr"] == 0.5
    with pytest.raises(TypeError, match="step schedules"):
        S.join([S.constant(), S.reduce_on_plateau()], [3])
