"""The optimizer catalogue as documentation: ``pyopt list --markdown`` prints docs/optimizers.md.

Names, hyperparameters, defaults and reference implementations come from the C++ rules (and the
two optimizers written in Python, Muon and Adafactor, from their classes), so the page cannot
drift from the code; only the papers are listed here. tests/python/test_catalog.py checks that
docs/optimizers.md is this module's output.
"""
from __future__ import annotations

import inspect
from typing import Any

# name -> (paper, link)
PAPERS: dict[str, tuple[str, str]] = {
    "sgd": ("Robbins & Monro, 1951; Sutskever et al., 2013 (momentum, Nesterov)", "https://proceedings.mlr.press/v28/sutskever13.html"),
    "momentum": ("Polyak, 1964; Sutskever et al., 2013", "https://proceedings.mlr.press/v28/sutskever13.html"),
    "nag": ("Nesterov, 1983; Sutskever et al., 2013", "https://proceedings.mlr.press/v28/sutskever13.html"),
    "adagrad": ("Duchi, Hazan & Singer, 2011", "https://jmlr.org/papers/v12/duchi11a.html"),
    "rmsprop": ("Hinton, Srivastava & Swersky, 2012 (lecture 6e); Graves, 2013 (centered)", "https://arxiv.org/abs/1308.0850"),
    "adadelta": ("Zeiler, 2012", "https://arxiv.org/abs/1212.5701"),
    "adamax": ("Kingma & Ba, 2015, §7.1", "https://arxiv.org/abs/1412.6980"),
    "adam": ("Kingma & Ba, 2015", "https://arxiv.org/abs/1412.6980"),
    "adamw": ("Loshchilov & Hutter, 2019", "https://arxiv.org/abs/1711.05101"),
    "amsgrad": ("Reddi, Kale & Kumar, 2018", "https://openreview.net/forum?id=ryQu7f-RZ"),
    "nadam": ("Dozat, 2016", "https://openreview.net/forum?id=OM0jvwB8jIp57ZJjtNEZ"),
    "radam": ("Liu et al., 2020", "https://arxiv.org/abs/1908.03265"),
    "lion": ("Chen et al., 2023", "https://arxiv.org/abs/2302.06675"),
    "grams": ("Cao, Li & Song, 2024", "https://arxiv.org/abs/2412.17107"),
    "adan": ("Xie et al., 2022", "https://arxiv.org/abs/2208.06677"),
    "signsgd": ("Bernstein et al., 2018", "https://arxiv.org/abs/1802.04434"),
    "signum": ("Bernstein et al., 2018", "https://arxiv.org/abs/1802.04434"),
    "yogi": ("Zaheer et al., 2018", "https://papers.nips.cc/paper/8186-adaptive-methods-for-nonconvex-optimization"),
    "adopt": ("Taniguchi et al., 2024", "https://arxiv.org/abs/2411.02853"),
    "laprop": ("Ziyin, Wang & Ueda, 2020", "https://arxiv.org/abs/2002.04839"),
    "asgd": ("Polyak & Juditsky, 1992", "https://doi.org/10.1137/0330046"),
    "rprop": ("Riedmiller & Braun, 1993", "https://doi.org/10.1109/ICNN.1993.298623"),
    "adabelief": ("Zhuang et al., 2020", "https://arxiv.org/abs/2010.07468"),
    "lamb": ("You et al., 2020", "https://arxiv.org/abs/1904.00962"),
    "lars": ("You, Gitman & Ginsburg, 2017", "https://arxiv.org/abs/1708.03888"),
    "sophia": ("Liu et al., 2023", "https://arxiv.org/abs/2305.14342"),
    "schedulefree_adamw": ("Defazio et al., 2024", "https://arxiv.org/abs/2405.15682"),
    "schedulefree_sgd": ("Defazio et al., 2024", "https://arxiv.org/abs/2405.15682"),
    "muon": ("Jordan et al., 2024 (blog); Liu et al., 2025", "https://kellerjordan.github.io/posts/muon/"),
    "adafactor": ("Shazeer & Stern, 2018", "https://arxiv.org/abs/1804.04235"),
    "qhadam": ("Ma & Yarats, 2019", "https://arxiv.org/abs/1810.06801"),
    "tiger": ("Su, 2023", "https://github.com/bojone/tiger"),
    "ademamix": ("Pagliardini, Ablin & Grangier, 2024", "https://arxiv.org/abs/2409.03137"),
    "stableadamw": ("Wortsman et al., 2023", "https://arxiv.org/abs/2304.13013"),
    "madgrad": ("Defazio & Jelassi, 2021", "https://arxiv.org/abs/2101.11075"),
    "novograd": ("Ginsburg et al., 2019", "https://arxiv.org/abs/1905.11286"),
}

# Optimizers written in Python (not in the C++ catalogue): name -> (class name, summary, reference).
PYTHON_OPTIMIZERS: dict[str, tuple[str, str, str]] = {
    "muon": ("Muon", "Muon, momentum orthogonalized by Newton-Schulz (2-D params only; GEMMs through numpy's BLAS)",
             "torch.optim.Muon 2.13 (KellerJordan/Muon)"),
    "adafactor": ("Adafactor", "Adafactor, factored second moment with relative step sizes and update clipping",
                  "torch.optim.Adafactor 2.13"),
}


def entries() -> list[dict[str, Any]]:
    """One dict per optimizer: name, class, hyperparameters with defaults, summary, reference, paper."""
    import pyopt
    from ._spec import available, spec
    from .optimizers import CLASSES

    out = []
    for name in available():
        s = spec(name)
        out.append({"name": name, "class": CLASSES[name].__name__, "defaults": s.defaults, "summary": s.summary,
                    "reference": s.reference, "paper": PAPERS.get(name)})
    for name, (cls_name, summary, reference) in PYTHON_OPTIMIZERS.items():
        cls = getattr(pyopt, cls_name)
        params = inspect.signature(cls.__init__).parameters
        defaults = {k: p.default for k, p in params.items() if k not in ("self", "params")}
        out.append({"name": name, "class": cls_name, "defaults": defaults, "summary": summary,
                    "reference": reference, "paper": PAPERS.get(name)})
    return out


def _value(v: Any) -> str:
    if isinstance(v, tuple):
        return "(" + ", ".join(_value(x) for x in v) + ")"
    if isinstance(v, float):
        return f"{v:g}"
    return repr(v) if isinstance(v, str) else str(v)


def markdown() -> str:
    rows = entries()
    lines = [
        "# Optimizers",
        "",
        "<!-- Generated by `pyopt list --markdown` from the C++ rules and the Python classes; "
        "tests/python/test_catalog.py keeps it current. -->",
        "",
        f"pyopt has {len(rows)} optimizers. Each is a class (`pyopt.<Class>(params, ...)`) and a name for "
        "`pyopt.create(name, params, ...)`; every one is tested against the reference implementation named "
        "here, over 100+ steps, random hyperparameters, odd sizes and every ISA path "
        "(tests/python/test_reference*.py and the per-optimizer test files). The update rule of each is in "
        "its class docstring and in `csrc/include/pyopt/rules/<name>.hpp`.",
        "",
        "| name | class | hyperparameters (defaults) | matches | paper |",
        "|---|---|---|---|---|",
    ]
    for e in rows:
        hyper = ", ".join(f"`{k}={_value(v)}`" for k, v in e["defaults"].items())
        paper = f"[{e['paper'][0]}]({e['paper'][1]})" if e["paper"] else ""
        lines.append(f"| `{e['name']}` | `{e['class']}` | {hyper} | {e['reference']} | {paper} |")
    lines += [
        "",
        "## Training utilities",
        "",
        "| utility | what it does | reference |",
        "|---|---|---|",
        "| `opt.step(grads, clip_norm=..., clip_value=..., skip_nonfinite=...)` | clipping by global norm / value "
        "fused into the step (one norm pass, then the update); skip a step with a NaN/Inf gradient, touching "
        "nothing | torch.nn.utils.clip_grad_norm_ / clip_grad_value_ |",
        "| `pyopt.clip_grad_norm_`, `pyopt.clip_grad_value_` | standalone, in place | torch.nn.utils |",
        "| `pyopt.Lookahead(inner, k=5, alpha=0.5)` | slow weights every k steps | pytorch-optimizer 4.1.0 Lookahead |",
        "| `pyopt.EMA(params, decay=0.999)` | weight averages, one fused kernel | torch.optim.swa_utils "
        "get_ema_multi_avg_fn |",
        "| `pyopt.schedules` | constant, step_decay, multistep, exponential, cosine (warmup), warmup_linear, "
        "one_cycle, wsd, reduce_on_plateau; callable or attached, checkpointed | torch.optim.lr_scheduler, optax |",
        "| `pyopt.param_groups(params)` | weight decay off for biases and 1-D params | the usual practice (nanoGPT, timm) |",
        "| `pyopt.hessian.gnb_estimate`, `hutchinson_estimate` | SophiaG's Hessian estimates | Liuhong99/Sophia |",
        "",
    ]
    return "\n".join(lines)
