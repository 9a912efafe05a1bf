"""Schedule-free train()/eval(): the params switch between y and x = lerp(y, z, 1 − 1/β) in place,
exactly as facebookresearch schedulefree 1.4.1 switches them (the step itself is checked over the
whole matrix in test_reference.py)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
schedulefree = pytest.importorskip("schedulefree")

import pyopt  # noqa: E402
from refcheck import ISAS, fma_isas, isa_path, num_threads  # noqa: E402

SHAPES = [(1,), (7,), (3, 17), (1023,), (40000,)]
CASES = {
    "schedulefree_adamw": ("AdamWScheduleFree", dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.01, warmup_steps=5)),
    "schedulefree_sgd": ("SGDScheduleFree", dict(lr=0.1, momentum=0.85, weight_decay=0.001, r=0.5)),
}


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_train_eval_match_schedulefree(name: str, dtype: type, isa: str) -> None:
    cls_name, hyper = CASES[name]
    rng = np.random.default_rng(5)
    params0 = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(30)]
    tparams = [torch.from_numpy(p.copy()) for p in params0]
    ref = getattr(schedulefree, cls_name)(tparams, foreach=False, **hyper)
    params = [p.copy() for p in params0]
    with isa_path(isa), num_threads(1):
        opt = pyopt.create(name, params, **hyper)
        ref.train()
        for t, gs in enumerate(grads, start=1):
            for tp, g in zip(tparams, gs):
                tp.grad = torch.from_numpy(g.copy())
            ref.step()
            opt.step(gs)
            if t % 10 == 0:  # evaluate, then train on
                ref.eval()
                opt.eval()
                assert not opt.train_mode
                for i, (p, tp) in enumerate(zip(params, tparams)):
                    if isa in fma_isas():
                        if name == "schedulefree_sgd":
                            np.testing.assert_array_equal(p, tp.numpy(), err_msg=f"x[{i}] at step {t}")
                        else:  # torch's float32 sqrt is not correctly rounded
                            np.testing.assert_allclose(p, tp.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"x[{i}]")
                    else:
                        np.testing.assert_allclose(p, tp.numpy(), rtol=1e-4, atol=1e-5, err_msg=f"x[{i}]")
                opt.eval()  # a no-op in eval mode
                ref.train()
                opt.train()
    # x differs from y: eval really moved the params.
    before = [p.copy() for p in params]
    opt.eval()
    assert any(not np.array_equal(a, b) for a, b in zip(before, params))
    opt.train()
    for a, b in zip(before, params):
        np.testing.assert_allclose(a, b, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_eval_mode_guards_step_and_is_checkpointed() -> None:
    p = [np.ones(10, np.float32)]
    opt = pyopt.ScheduleFreeAdamW(p, lr=0.1)
    opt.eval()  # before any step: nothing to swap
    np.testing.assert_array_equal(p[0], 1.0)
    with pytest.raises(RuntimeError, match="train"):
        opt.step([np.ones(10, np.float32)])
    opt.train()
    opt.step([np.ones(10, np.float32)])
    opt.step([np.full(10, -1.0, np.float32)])
    opt.eval()
    sd = opt.state_dict()
    assert sd["train_mode"] is False
    q = [p[0].copy()]
    clone = pyopt.ScheduleFreeAdamW(q, lr=0.1)
    clone.load_state_dict(sd)
    assert not clone.train_mode
    clone.train()
    opt.train()
    np.testing.assert_array_equal(q[0], p[0])
    with pytest.raises(ValueError, match="train_mode"):
        clone.load_state_dict({**sd, "train_mode": "yes"})
    with pytest.raises(ValueError, match="momentum"):
        pyopt.ScheduleFreeSGD(p, momentum=1.0)
