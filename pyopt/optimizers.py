"""Every optimizer as a class. Names and defaults follow torch.optim; the update rules live in
csrc/include/pyopt/rules/<rule>.hpp and are checked against torch in tests/python/test_reference.py."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from . import _core
from ._spec import spec
from .optimizer import GradsLike, Optimizer, ParamsLike, _locked

Betas = tuple[float, float]


class SGD(Optimizer):
    r"""Stochastic gradient descent with optional momentum and Nesterov momentum (torch.optim.SGD).

    .. math:: g \leftarrow g + \lambda p;\quad b \leftarrow \mu b + (1-\tau) g;\quad
              p \leftarrow p - \eta\,(g + \mu b \text{ if nesterov else } b)
    """

    name = "sgd"
    lr_range = (1e-4, 1.0)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize)


class Momentum(Optimizer):
    """SGD with heavy-ball momentum; ``pyopt.SGD(momentum=0.9)`` under its own name."""

    name = "momentum"
    lr_range = (1e-4, 1.0)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize)


class NAG(Optimizer):
    """SGD with Nesterov momentum; ``pyopt.SGD(momentum=0.9, nesterov=True)`` under its own name."""

    name = "nag"
    lr_range = (1e-4, 1.0)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, momentum: float = 0.9, dampening: float = 0.0,
                 weight_decay: float = 0.0, nesterov: bool = True, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                         nesterov=nesterov, maximize=maximize)


class Adagrad(Optimizer):
    r"""Adagrad (Duchi et al., 2011; torch.optim.Adagrad).

    .. math:: s \leftarrow s + g^2;\quad p \leftarrow p - \frac{\eta}{1+(t-1)\delta}\,\frac{g}{\sqrt{s}+\epsilon}
    """

    name = "adagrad"
    lr_range = (1e-4, 1.0)

    def __init__(self, params: ParamsLike, lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps, maximize=maximize)


class RMSprop(Optimizer):
    r"""RMSprop, optionally centered and with momentum (torch.optim.RMSprop). No bias correction.

    .. math:: v \leftarrow \alpha v + (1-\alpha) g^2;\quad p \leftarrow p - \eta\,\frac{g}{\sqrt{v}+\epsilon}
    """

    name = "rmsprop"

    def __init__(self, params: ParamsLike, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum: float = 0.0, centered: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum,
                         centered=centered, maximize=maximize)


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, 2012; torch.optim.Adadelta).

    .. math:: v \leftarrow \rho v + (1-\rho) g^2;\quad \delta = \frac{\sqrt{u+\epsilon}}{\sqrt{v+\epsilon}} g;\quad
              u \leftarrow \rho u + (1-\rho)\delta^2;\quad p \leftarrow p - \eta\delta
    """

    name = "adadelta"
    lr_range = (1e-2, 10.0)

    def __init__(self, params: ParamsLike, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, rho=rho, eps=eps, weight_decay=weight_decay, maximize=maximize)


class Adamax(Optimizer):
    r"""Adamax, Adam with the infinity norm (Kingma & Ba, 2015; torch.optim.Adamax).

    .. math:: m \leftarrow \beta_1 m + (1-\beta_1) g;\quad u \leftarrow \max(\beta_2 u, |g|+\epsilon);\quad
              p \leftarrow p - \frac{\eta}{1-\beta_1^t}\,\frac{m}{u}
    """

    name = "adamax"

    def __init__(self, params: ParamsLike, lr: float = 2e-3, betas: Betas = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)


class Adam(Optimizer):
    r"""Adam (Kingma & Ba, 2015; torch.optim.Adam), coupled L2 weight decay unless
    ``decoupled_weight_decay=True``.

    .. math:: m \leftarrow \beta_1 m + (1-\beta_1) g;\quad v \leftarrow \beta_2 v + (1-\beta_2) g^2;\quad
              p \leftarrow p - \frac{\eta}{1-\beta_1^t}\,\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t}+\epsilon}
    """

    name = "adam"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize, decoupled_weight_decay=decoupled_weight_decay)


class AdamW(Optimizer):
    r"""AdamW, Adam with decoupled weight decay (Loshchilov & Hutter, 2019; torch.optim.AdamW).

    .. math:: p \leftarrow p\,(1-\eta\lambda), \text{ then the Adam step}
    """

    name = "adamw"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         maximize=maximize)


class AMSGrad(Optimizer):
    r"""AMSGrad (Reddi et al., 2018): Adam with :math:`\hat v_{max} = \max(\hat v_{max}, v)` in the
    denominator; ``torch.optim.Adam(amsgrad=True)``."""

    name = "amsgrad"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, *, maximize: bool = False, decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize,
                         decoupled_weight_decay=decoupled_weight_decay)


class NAdam(Optimizer):
    r"""NAdam, Adam with Nesterov momentum (Dozat, 2016; torch.optim.NAdam).

    .. math:: \mu_t = \beta_1(1 - \tfrac12 0.96^{t\psi});\quad
              p \leftarrow p - \eta\frac{1-\mu_t}{1-\prod\mu}\frac{g}{d} - \eta\frac{\mu_{t+1}}{1-\prod\mu\,\mu_{t+1}}\frac{m}{d}
    """

    name = "nadam"

    def __init__(self, params: ParamsLike, lr: float = 2e-3, betas: Betas = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay,
                         maximize=maximize)


class RAdam(Optimizer):
    r"""RAdam, Adam with a rectified adaptive learning rate (Liu et al., 2020; torch.optim.RAdam).
    Plain momentum SGD steps until the variance of the adaptive rate is tractable (:math:`\rho_t > 5`)."""

    name = "radam"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         decoupled_weight_decay=decoupled_weight_decay, maximize=maximize)


class Lion(Optimizer):
    r"""Lion, EvoLved Sign Momentum (Chen et al., 2023; lion-pytorch 0.2.5). Decoupled weight decay.

    .. math:: p \leftarrow p(1-\eta\lambda);\quad p \leftarrow p - \eta\,\mathrm{sign}(\beta_1 m + (1-\beta_1) g);\quad
              m \leftarrow \beta_2 m + (1-\beta_2) g
    """

    name = "lion"
    lr_range = (1e-6, 1e-2)

    def __init__(self, params: ParamsLike, lr: float = 1e-4, betas: Betas = (0.9, 0.99), weight_decay: float = 0.0,
                 *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, maximize=maximize)


class Grams(Optimizer):
    r"""Grams, Gradient Descent with Adaptive Momentum Scaling (Cao, Li & Song, 2024; the official
    Gunale0926/Grams code): the direction of the gradient, the magnitude of Adam's step.

    .. math:: p \leftarrow p - \eta\lambda p;\quad
              p \leftarrow p - \eta\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,\frac{\mathrm{sign}(g)\,|m|}{\sqrt{v}+\epsilon}
    """

    name = "grams"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)


class Adan(Optimizer):
    r"""Adan, Adaptive Nesterov momentum (Xie et al., 2022; the official sail-sg/Adan code).
    ``betas`` follow the code's convention (1 − β of the paper); the previous gradient is kept as
    the state ``pre_grad``. ``no_prox=False`` divides by :math:`1+\eta\lambda` after the step,
    ``no_prox=True`` multiplies by :math:`1-\eta\lambda` before it.

    .. math:: \Delta = g - g_{prev};\quad m \leftarrow \beta_1 m + (1-\beta_1) g;\quad
              d \leftarrow \beta_2 d + (1-\beta_2)\Delta;\quad n \leftarrow \beta_3 n + (1-\beta_3)(g + \beta_2\Delta)^2;\quad
              p \leftarrow p - \frac{\eta}{1-\beta_1^t}\frac{m}{\hat n} - \frac{\eta\beta_2}{1-\beta_2^t}\frac{d}{\hat n}
    """

    name = "adan"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0, no_prox: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, no_prox=no_prox,
                         maximize=maximize)


class SignSGD(Optimizer):
    r"""signSGD (Bernstein et al., 2018; pytorch-optimizer 4.1.0 SignSGD with momentum=0): the sign of
    the gradient. With ``momentum`` > 0 it is Signum. Decoupled weight decay unless
    ``weight_decouple=False``.

    .. math:: b \leftarrow b + (1-\mu)(g - b);\quad p \leftarrow p - \eta\,\mathrm{sign}(b \text{ if } \mu > 0 \text{ else } g)
    """

    name = "signsgd"
    lr_range = (1e-6, 1e-2)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, momentum: float = 0.0, weight_decay: float = 0.0,
                 weight_decouple: bool = True, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         weight_decouple=weight_decouple, maximize=maximize)


class Signum(Optimizer):
    """Signum, the sign of the gradient's momentum; ``pyopt.SignSGD(momentum=0.9)`` under its own
    name, and pytorch-optimizer 4.1.0's ``SignSGD`` with its defaults."""

    name = "signum"
    lr_range = (1e-6, 1e-2)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                 weight_decouple: bool = True, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         weight_decouple=weight_decouple, maximize=maximize)


class Yogi(Optimizer):
    r"""Yogi (Zaheer et al., 2018; pytorch-optimizer 4.1.0 Yogi): Adam with an additive second-moment
    update. Both moments start at ``initial_accumulator``; ``eps`` (1e-3) is added outside the root.

    .. math:: v \leftarrow v - (1-\beta_2)\,\mathrm{sign}(v - g^2)\,g^2;\quad
              p \leftarrow p - \frac{\eta}{1-\beta_1^t}\,\frac{m}{\sqrt{v}/\sqrt{1-\beta_2^t}+\epsilon}
    """

    name = "yogi"

    def __init__(self, params: ParamsLike, lr: float = 1e-2, betas: Betas = (0.9, 0.999),
                 initial_accumulator: float = 1e-6, weight_decay: float = 0.0, weight_decouple: bool = True,
                 fixed_decay: bool = False, eps: float = 1e-3, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, initial_accumulator=initial_accumulator,
                         weight_decay=weight_decay, weight_decouple=weight_decouple, fixed_decay=fixed_decay,
                         eps=eps, maximize=maximize)


class ADOPT(Optimizer):
    r"""ADOPT (Taniguchi et al., 2024; pytorch-optimizer 4.1.0 ADOPT): the first step only sets
    :math:`v = g^2`; then the gradient is normalised by the previous :math:`\sqrt v`, clipped to
    :math:`\pm t^{1/4}`, and averaged into the momentum.

    .. math:: \hat g = \mathrm{clip}\!\left(\frac{g}{\max(\sqrt v, \epsilon)}, t^{1/4}\right);\quad
              m \leftarrow \beta_1 m + (1-\beta_1)\hat g;\quad p \leftarrow p - \eta m;\quad
              v \leftarrow \beta_2 v + (1-\beta_2) g^2
    """

    name = "adopt"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.9, 0.9999), weight_decay: float = 0.0,
                 weight_decouple: bool = False, fixed_decay: bool = False, eps: float = 1e-6, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, weight_decouple=weight_decouple,
                         fixed_decay=fixed_decay, eps=eps, maximize=maximize)


class LaProp(Optimizer):
    r"""LaProp (Ziyin et al., 2020; pytorch-optimizer 4.1.0 LaProp): momentum of the RMS-normalised
    gradient, optionally centered (after ``steps_before_using_centered`` steps) and with AMSBound.
    Decoupled weight decay is applied after the step; with ``weight_decouple=False`` the reference's
    coupled decay comes after the gradient was used, so it has no effect (kept for parity).

    .. math:: v \leftarrow \beta_2 v + (1-\beta_2) g^2;\quad
              m \leftarrow \beta_1 m + (1-\beta_1)\eta\,\frac{g}{\sqrt{v/(1-\beta_2^t)}+\epsilon};\quad
              p \leftarrow p - \frac{\eta}{\eta_1} m
    """

    name = "laprop"

    def __init__(self, params: ParamsLike, lr: float = 4e-4, betas: Betas = (0.9, 0.999), centered: bool = False,
                 steps_before_using_centered: float = 10.0, weight_decay: float = 0.0, weight_decouple: bool = True,
                 fixed_decay: bool = False, ams_bound: bool = False, eps: float = 1e-15, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, centered=centered,
                         steps_before_using_centered=steps_before_using_centered, weight_decay=weight_decay,
                         weight_decouple=weight_decouple, fixed_decay=fixed_decay, ams_bound=ams_bound, eps=eps,
                         maximize=maximize)


class ASGD(Optimizer):
    r"""ASGD, averaged stochastic gradient descent (Polyak & Juditsky, 1992; torch.optim.ASGD).
    The per-tensor scalars ``eta`` and ``mu`` are state, as in torch; ``ax`` is the running average
    of the params (from step ``t0`` on; before that, a copy of them).

    .. math:: p \leftarrow p(1 - \lambda\eta) - \eta g;\quad ax \leftarrow ax + \mu(p - ax);\quad
              \eta \leftarrow \frac{lr}{(1 + \lambda\,lr\,t)^\alpha};\quad \mu \leftarrow \frac{1}{\max(1, t - t_0)}
    """

    name = "asgd"
    lr_range = (1e-4, 1.0)

    def __init__(self, params: ParamsLike, lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75,
                 t0: float = 1e6, weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, lambd=lambd, alpha=alpha, t0=t0, weight_decay=weight_decay,
                         maximize=maximize)


class Rprop(Optimizer):
    r"""Rprop, resilient backpropagation (Riedmiller & Braun, 1993; torch.optim.Rprop). Each element's
    step size grows by ``etas[1]`` while its gradient keeps its sign and shrinks by ``etas[0]`` when
    the sign flips (that step is then skipped), within ``step_sizes``; it starts at ``lr``.

    .. math:: s \leftarrow \mathrm{clip}(s\cdot\eta_\pm, s_{min}, s_{max});\quad p \leftarrow p - \mathrm{sign}(g)\,s
    """

    name = "rprop"

    def __init__(self, params: ParamsLike, lr: float = 1e-2, etas: tuple[float, float] = (0.5, 1.2),
                 step_sizes: tuple[float, float] = (1e-6, 50.0), *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, etas=etas, step_sizes=step_sizes, maximize=maximize)


class AdaBelief(Optimizer):
    r"""AdaBelief (Zhuang et al., 2020; juntang-zhuang's adabelief-pytorch 0.2.0): Adam whose second
    moment tracks the squared deviation of the gradient from its momentum. ``eps`` is added into the
    state ``exp_avg_var`` every step and again outside the root. ``rectify`` (default on) takes
    RAdam's rectified step once :math:`\rho_t \ge 5`, plain momentum SGD steps before that (no step
    if ``degenerated_to_sgd=False``); ``amsgrad`` only changes the unrectified update, as in the
    reference. Decoupled weight decay unless ``weight_decouple=False``.

    .. math:: m \leftarrow \beta_1 m + (1-\beta_1) g;\quad s \leftarrow \beta_2 s + (1-\beta_2)(g-m)^2 + \epsilon;\quad
              p \leftarrow p - \frac{\eta}{1-\beta_1^t}\,\frac{m}{\sqrt{s}/\sqrt{1-\beta_2^t}+\epsilon}
    """

    name = "adabelief"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.9, 0.999), eps: float = 1e-16,
                 weight_decay: float = 0.0, amsgrad: bool = False, weight_decouple: bool = True,
                 fixed_decay: bool = False, rectify: bool = True, degenerated_to_sgd: bool = True, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                         weight_decouple=weight_decouple, fixed_decay=fixed_decay, rectify=rectify,
                         degenerated_to_sgd=degenerated_to_sgd, maximize=maximize)


class LAMB(Optimizer):
    r"""LAMB, layer-wise adaptive moments (You et al., 2020, Algorithm 2; optax.lamb): Adam's
    direction plus decoupled weight decay, rescaled per tensor by the trust ratio ‖p‖/‖u‖.

    .. math:: u = \frac{\hat m}{\sqrt{\hat v}+\epsilon} + \lambda p;\quad
              p \leftarrow p - \eta\,\frac{\|p\|}{\|u\|}\,u
    """

    name = "lamb"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, maximize=maximize)


class LARS(Optimizer):
    r"""LARS, layer-wise adaptive rate scaling (You, Gitman & Ginsburg, 2017; optax.lars): momentum
    SGD whose step is rescaled per tensor by the trust ratio η‖p‖/(‖g + λp‖ + ε).

    .. math:: u = -\eta_{lr}\,\frac{\eta\|p\|}{\|g+\lambda p\|+\epsilon}(g+\lambda p);\quad
              b \leftarrow u + \mu b;\quad p \leftarrow p + b
    """

    name = "lars"
    lr_range = (1e-2, 30.0)

    def __init__(self, params: ParamsLike, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 1e-3, eps: float = 0.0, nesterov: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         trust_coefficient=trust_coefficient, eps=eps, nesterov=nesterov, maximize=maximize)


class SophiaG(Optimizer):
    r"""SophiaG (Liu et al., 2023; the official Liuhong99/Sophia code): momentum divided by a
    diagonal Hessian EMA, clipped elementwise to ±lr. Call ``update_hessian`` every k steps
    (k = 10 in the paper) with a diagonal Hessian estimate per param (``pyopt.hessian`` has the
    Gauss-Newton-Bartlett and Hutchinson estimators).

    .. math:: p \leftarrow p(1-\eta\lambda);\quad m \leftarrow \beta_1 m + (1-\beta_1) g;\quad
              p \leftarrow p - \eta\,\mathrm{sign}(m)\min\Big(\frac{|m|}{\rho\,bs\,h + 10^{-15}}, 1\Big);
              \quad h \leftarrow \beta_2 h + (1-\beta_2)\hat h \text{ (update\_hessian)}
    """

    name = "sophia"
    lr_range = (1e-6, 1e-2)

    def __init__(self, params: ParamsLike, lr: float = 1e-4, betas: Betas = (0.965, 0.99), rho: float = 0.04,
                 weight_decay: float = 1e-1, bs: float = 5120, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, rho=rho, weight_decay=weight_decay, bs=bs, maximize=maximize)

    @_locked
    def update_hessian(self, estimates: GradsLike) -> None:
        """Fold a diagonal Hessian estimate into each param's ``hessian`` state:
        ``h = beta2·h + (1 − beta2)·estimate`` (one fused pass over all params).

        ``estimates`` is given like ``step``'s grads (a list in param order with ``None`` to skip,
        a dict by name, or a lone array); each has its param's shape. The official code does this
        every 10 steps with the Gauss-Newton-Bartlett estimate, the square of the gradient of the
        loss on labels sampled from the model (``pyopt.hessian.gnb_estimate``)."""
        if self._engine is None:
            self._rebuild()  # allocates the state (h starts at 0)
        elif self._hyper_changed:
            self._refresh_hypers()
        beta2: list[float] = []
        tensors: list[Any] = []
        index = 0
        for g, group in enumerate(self.param_groups):
            beta2.append(float(group["betas"][1]))
            for _ in group["params"]:
                tensors.append((f"{self._owner_label}: {self._labels[index]} (hessian estimate)", g,
                                self._slots[index]["hessian"]))
                index += 1
        _core.sophia_hessian_update(beta2, tensors, self._grad_list(estimates))


Sophia = SophiaG


class _ScheduleFree(Optimizer):
    """Schedule-free optimizers keep two iterates: the param array holds y (where gradients are
    taken) while training, and ``eval()`` swaps in the average x = lerp(y, z, 1 − 1/β), in place,
    until ``train()`` swaps y back. Unlike the reference, a new optimizer starts in train mode;
    ``step`` in eval mode raises. The mode is part of ``state_dict``."""

    def __init__(self, params: ParamsLike, **hyper: Any) -> None:
        super().__init__(params, **hyper)
        self._train_mode = True

    @property
    def train_mode(self) -> bool:
        """True while the params hold y (training), False after ``eval()`` (they hold x)."""
        return self._train_mode

    def _beta(self, group: Mapping[str, Any]) -> float:
        raise NotImplementedError

    def train(self) -> None:
        """Put y back into the params (no-op in train mode): ``p = lerp(p, z, 1 − β)``."""
        self._swap(True)

    def eval(self) -> None:
        """Put the averaged x into the params for evaluation or saving (no-op in eval mode):
        ``p = lerp(p, z, 1 − 1/β)``."""
        self._swap(False)

    @_locked
    def _swap(self, to_train: bool) -> None:
        if self._train_mode == to_train:
            return
        weights: list[float] = []
        tensors: list[Any] = []
        ends: list[Any] = []
        index = 0
        for g, group in enumerate(self.param_groups):
            beta = float(self._beta(group))
            if not to_train and beta == 0.0:
                raise ValueError(f"{self._owner_label}: eval() needs a momentum / beta1 > 0 (x = lerp(y, z, 1 - 1/beta))")
            weights.append(1.0 - beta if to_train else 1.0 - 1.0 / beta)
            for p in group["params"]:
                z = self._slots[index].get("z")
                if z is not None and self._steps[index] > 0:
                    tensors.append((self._labels[index], g, p))
                    ends.append(z)
                index += 1
        if tensors:
            _core.lerp_inplace(weights, tensors, ends)
        self._train_mode = to_train

    @_locked
    def step(self, grads: GradsLike, **options: Any) -> bool:
        """As ``Optimizer.step``; raises RuntimeError in eval mode."""
        if not self._train_mode:
            raise RuntimeError(f"{self._owner_label}: step() in eval mode (the params hold the average x); "
                               "call opt.train() first")
        return super().step(grads, **options)

    @_locked
    def state_dict(self) -> dict[str, Any]:
        out = super().state_dict()
        out["train_mode"] = self._train_mode
        return out

    @_locked
    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        mode = state_dict.get("train_mode", True) if isinstance(state_dict, Mapping) else True
        if not isinstance(mode, (bool, np.bool_)):
            raise ValueError(f"{self._owner_label}: state_dict 'train_mode' must be a bool, got {mode!r}")
        super().load_state_dict(state_dict)
        self._train_mode = bool(mode)


class ScheduleFreeAdamW(_ScheduleFree):
    r"""Schedule-free AdamW (Defazio et al., 2024; facebookresearch ``schedulefree`` 1.4.1
    AdamWScheduleFree): no learning-rate schedule to tune; call ``eval()`` before evaluating or
    saving the params and ``train()`` before training again.

    .. math:: \hat g = \frac{g}{\sqrt{v/(1-\beta_2^t)}+\epsilon} + \lambda y;\quad
              y \leftarrow (1-c)\,y + c\,z + \eta(\beta_1(1-c)-1)\hat g;\quad z \leftarrow z - \eta\hat g
    """

    name = "schedulefree_adamw"

    def __init__(self, params: ParamsLike, lr: float = 0.0025, betas: Betas = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, warmup_steps: int = 0, r: float = 0.0,
                 weight_lr_power: float = 2.0) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, warmup_steps=warmup_steps,
                         r=r, weight_lr_power=weight_lr_power)

    def _beta(self, group: Mapping[str, Any]) -> float:
        return float(group["betas"][0])


class ScheduleFreeSGD(_ScheduleFree):
    r"""Schedule-free SGD (Defazio et al., 2024; facebookresearch ``schedulefree`` 1.4.1
    SGDScheduleFree). ``eval()`` / ``train()`` as for ScheduleFreeAdamW.

    .. math:: y \leftarrow (1-c)\,y + c\,z + \eta(\mu(1-c)-1)(g+\lambda y);\quad z \leftarrow z - \eta(g+\lambda y)
    """

    name = "schedulefree_sgd"
    lr_range = (1e-3, 10.0)

    def __init__(self, params: ParamsLike, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 warmup_steps: int = 0, r: float = 0.0, weight_lr_power: float = 2.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, warmup_steps=warmup_steps,
                         r=r, weight_lr_power=weight_lr_power)

    def _beta(self, group: Mapping[str, Any]) -> float:
        return float(group["momentum"])


class QHAdam(Optimizer):
    r"""QHAdam, quasi-hyperbolic Adam (Ma & Yarats, 2019; pytorch-optimizer 4.1.0 QHAdam): the step
    mixes the (bias-corrected) moments with the current gradient, by ``nus``. With ``nus=(1, 1)``
    (the default) it is Adam without the bias correction's ε placement.

    .. math:: m \leftarrow \mathrm{lerp}(m, g, 1/\textstyle\sum_{i<t}\beta_1^i);\quad
              v \leftarrow \mathrm{lerp}(v, g^2, 1/\textstyle\sum_{i<t}\beta_2^i);\quad
              p \leftarrow p - \eta\,\frac{\nu_1 m + (1-\nu_1) g}{\sqrt{\nu_2 v + (1-\nu_2) g^2}+\epsilon}
    """

    name = "qhadam"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.9, 0.999),
                 nus: tuple[float, float] = (1.0, 1.0), weight_decay: float = 0.0, weight_decouple: bool = False,
                 fixed_decay: bool = False, eps: float = 1e-8, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, nus=nus, weight_decay=weight_decay,
                         weight_decouple=weight_decouple, fixed_decay=fixed_decay, eps=eps, maximize=maximize)


class Tiger(Optimizer):
    r"""Tiger (Su, 2023; pytorch-optimizer 4.1.0 Tiger): the sign of an EMA of the gradient (Lion with
    one beta). Decoupled weight decay 0.01 by default, as the reference.

    .. math:: m \leftarrow \beta m + (1-\beta) g;\quad p \leftarrow p - \eta\,\mathrm{sign}(m)
    """

    name = "tiger"
    lr_range = (1e-6, 1e-2)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, beta: float = 0.965, weight_decay: float = 0.01,
                 weight_decouple: bool = True, fixed_decay: bool = False, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, beta=beta, weight_decay=weight_decay, weight_decouple=weight_decouple,
                         fixed_decay=fixed_decay, maximize=maximize)


class AdEMAMix(Optimizer):
    r"""AdEMAMix (Pagliardini et al., 2024; pytorch-optimizer 4.1.0 AdEMAMix): Adam plus a slow EMA of
    the gradient (``betas[2]``) weighted by ``alpha``. ``t_alpha_beta3`` (None: off) warms alpha and
    beta3 up over that many steps, as the paper's schedulers; 0 (or None, the reference's default)
    turns the warmup off.

    .. math:: m_2 \leftarrow \beta_3 m_2 + (1-\beta_3) g;\quad
              p \leftarrow p - \eta\,\frac{\hat m_1 + \alpha m_2}{\sqrt{\hat v}+\epsilon}
    """

    name = "ademamix"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
                 weight_decay: float = 0.0, weight_decouple: bool = False, fixed_decay: bool = False,
                 alpha: float = 5.0, t_alpha_beta3: float | None = 0.0, eps: float = 1e-8, *,
                 maximize: bool = False) -> None:
        # 0 is "no warmup" (the reference's None; 0 would divide by zero there).
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, weight_decouple=weight_decouple,
                         fixed_decay=fixed_decay, alpha=alpha,
                         t_alpha_beta3=0.0 if t_alpha_beta3 is None else t_alpha_beta3, eps=eps, maximize=maximize)


class StableAdamW(Optimizer):
    r"""StableAdamW (Wortsman et al., 2023; pytorch-optimizer 4.1.0 StableAdamW): AdamW with debiased
    betas whose step is divided, per tensor, by :math:`\max(1, \mathrm{RMS}(g/\sqrt{v}))`
    (the decoupled decay too). No bias correction: the betas are debiased instead.

    .. math:: \eta_t = \frac{\eta}{\max(1, \sqrt{\mathrm{mean}(g^2/\max(v, \epsilon^2))})};\quad
              p \leftarrow p(1 - \lambda\eta_t) - \eta_t\,\frac{m}{\sqrt{v}+\epsilon}
    """

    name = "stableadamw"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.9, 0.99), weight_decay: float = 1e-2,
                 weight_decouple: bool = True, eps: float = 1e-8, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, weight_decouple=weight_decouple,
                         eps=eps, maximize=maximize)


class MADGRAD(Optimizer):
    r"""MADGRAD (Defazio & Jelassi, 2021; pytorch-optimizer 4.1.0 MADGRAD): dual averaging with a
    cube-root adaptive denominator and momentum by interpolation toward the dual-averaged point.
    As the reference, the step uses ``lr + eps`` and :math:`\lambda_t = (\eta+\epsilon)\sqrt{t}`.

    .. math:: \nu \leftarrow \nu + \lambda_t g^2;\quad s \leftarrow s + \lambda_t g;\quad
              p \leftarrow (1-c)\,p + c\left(x_0 - \frac{s}{\sqrt[3]{\nu}+\epsilon}\right),\ c = 1-\mathrm{momentum}
    """

    name = "madgrad"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, momentum: float = 0.9, weight_decay: float = 0.0,
                 weight_decouple: bool = False, eps: float = 1e-6, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay,
                         weight_decouple=weight_decouple, eps=eps, maximize=maximize)


class NovoGrad(Optimizer):
    r"""NovoGrad (Ginsburg et al., 2019; pytorch-optimizer 4.1.0 NovoGrad): momentum of the gradient
    normalised per tensor by an EMA of its squared norm (the per-tensor scalar ``grads_ema``).

    .. math:: v \leftarrow \beta_2 v + (1-\beta_2)\|g\|^2;\quad
              m \leftarrow \beta_1 m + \frac{g}{\sqrt{v}+\epsilon} + \lambda p;\quad p \leftarrow p - \eta m
    """

    name = "novograd"

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: Betas = (0.95, 0.98), weight_decay: float = 0.0,
                 weight_decouple: bool = False, fixed_decay: bool = False, grad_averaging: bool = False,
                 eps: float = 1e-8, *, maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, weight_decay=weight_decay, weight_decouple=weight_decouple,
                         fixed_decay=fixed_decay, grad_averaging=grad_averaging, eps=eps, maximize=maximize)


CLASSES: dict[str, type[Optimizer]] = {
    cls.name: cls
    for cls in (SGD, Momentum, NAG, Adagrad, RMSprop, Adadelta, Adamax, Adam, AdamW, AMSGrad, NAdam, RAdam,
                Lion, Grams, Adan, SignSGD, Signum, Yogi, ADOPT, LaProp, ASGD, Rprop, AdaBelief, LAMB, LARS, SophiaG,
                ScheduleFreeAdamW, ScheduleFreeSGD, QHAdam, Tiger, AdEMAMix, StableAdamW, MADGRAD, NovoGrad)
}


def create(name: str, params: ParamsLike, **hyper: Any) -> Any:
    """Build an optimizer by name: ``pyopt.create("adamw", params, lr=3e-4)``. Besides the names
    of ``pyopt.available()``, "muon" and "adafactor" (the optimizers written in Python) work."""
    from ._pybase import python_optimizer

    py_class = python_optimizer(name) if isinstance(name, str) else None
    if py_class is not None:
        return py_class(params, **hyper)
    if name not in CLASSES:
        raise ValueError(f"unknown optimizer {name!r}; available: {', '.join(CLASSES)}, muon, adafactor")
    valid = spec(name).defaults
    unknown = sorted(set(hyper) - set(valid))
    if unknown:
        raise TypeError(f"{name}: unknown hyperparameter {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}")
    return CLASSES[name](params, **hyper)
