"""pyopt.torch twins of the optimizers whose random draws are keyed by (seed, param index, step):
SPAM's masks (density < 1) and NoisySGD's noise. The twin runs one numpy optimizer per param
group; the index must still count the params of every group, as the numpy optimizer over the
same groups does, or the groups' k-th params would share their draws."""
from __future__ import annotations

import numpy as np
import pytest

import pyopt

torch = pytest.importorskip("torch")
import pyopt.torch as pt  # noqa: E402

CASES = {"SPAM": dict(density=0.5, update_proj_gap=4, warmup_epoch=2), "NoisySGD": dict(eta=0.1)}


@pytest.mark.parametrize("name", CASES)
def test_twin_with_several_groups_draws_as_the_numpy_optimizer(name: str) -> None:
    rng = np.random.default_rng(0)
    start = [rng.standard_normal((6, 5)).astype(np.float32) for _ in range(3)]
    grads = [[rng.standard_normal((6, 5)).astype(np.float32) for _ in range(3)] for _ in range(12)]
    ours = [p.copy() for p in start]
    opt = getattr(pyopt, name)([{"params": ours[:1]}, {"params": ours[1:]}], lr=1e-2, **CASES[name])
    for g in grads:
        opt.step(g)
    tparams = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in start]
    twin = getattr(pt, name)([{"params": tparams[:1]}, {"params": tparams[1:]}], lr=1e-2, **CASES[name])
    for g in grads:
        for p, gi in zip(tparams, g):
            p.grad = torch.from_numpy(gi.copy())
        twin.step()
    for a, b in zip(ours, tparams):
        np.testing.assert_array_equal(a, b.detach().numpy())
