"""The phased strategy of ``pyopt tune`` (the default; ``--strategy tpe`` is the single TPE study).

Design (issue 15, "Phases with a purpose" and "Budgets"):

1. **Portfolio** at low fidelity: each selected optimizer's defaults and a short lr sweep (the
   default lr times 10, then 1/10, clipped into the record's ``lr_range``), all at the lowest rung.
   Every optimizer is evaluated before any gets more epochs (``plan`` shrinks the sweep, never
   the optimizers, when trials are few).
2. **Successive halving** (reduction factor ``ETA``): at each rung the best 1/ETA of the configs
   that ran at that rung (compared at that same number of epochs only) re-run at the next rung,
   up to the task's full epochs. Rungs: epochs/9, epochs/3, epochs (``rungs``).
   **The rank check**: halving assumes that a lower fidelity ranks configs as the full one
   does; learning curves that cross break that (a slow lr trails for most of a run and ends
   best). So the configs that reached full fidelity are compared with their order one rung below,
   and for each pair ranked the other way round (``discordant_pairs``) one more optimizer, the
   next in the halving's order, gets its best config run at full fidelity (``second_chances``).
   This is PASHA's criterion (Bohdal et al. 2023: more resources only while the top two rungs
   disagree) applied to the decision halving just made; it costs trials only when the low
   fidelity has been shown wrong on this task.
3. **lr line search, then TPE around the survivors**: the optimizers that got furthest (best at
   their highest rung) get the remaining trials at full fidelity: first a line search in log lr
   from each one's best config (``line_search_round``: lr x sqrt(10) and / sqrt(10), between
   phase 1's grid points, then parabolic or golden-section steps until the best lr is bracketed
   to LINE_RESOLUTION), unpruned; then TPE, round-robin over the survivors; the optimizer is
   fixed by enqueuing it, TPE draws the rest from the record-derived spaces
   (``tuner/space.py``); the pruner sees intermediate values per epoch, so it compares only
   values at the same epoch.
4. **Finalists on seeds**: the best full-fidelity configs re-run on seeds 1 and 2 (seed 0 is the
   search's: ``task.init_params(seed)`` and the batch rng), ranked by the mean; best.json holds
   mean, std, the seeds and each seed's value.

All phases run in one Optuna study (the same storage and resume as ``--strategy tpe``). Every
trial is one training run of one config at one fidelity on one seed, and counts against
``--trials``: the sweep, the promotions (a promoted config trains again from scratch: identical
for its first epochs, same seed) and the seed re-runs. A trial carries its ``phase``, ``epochs``
and ``seed`` in its user attrs; a trial stopped at its low fidelity ends PRUNED (so TPE ranks it
below the full-fidelity ones) with ``low_fidelity`` set. Resume: a rerun recomputes the same plan
and reuses every finished trial with the same params, epochs and seed (no new trial), so an
interrupted run continues where it stopped (phase 3's line search from the points it has: each
step is a function of the runs so far, so none is run twice, and one made unnecessary by a run
that finished before the interrupt is skipped) and a finished one spends its new ``--trials`` on
phase 3 (and seeds for new finalists). Queued trials a stopped run did not start are failed
("not run: ...") at the end of a run and at the start of the next: Optuna pops queued trials
oldest first, so they would run inside the wrong phase.

Edge-of-range winners are flagged (``edge_flags``), not widened: a record's range is part of
its spec, shared by every trial of the study, and Optuna cannot change a distribution inside
one study.

With ``jobs`` > 1 every phase's queued trials are drained by all processes; a process that
finds the queue empty stops (``run.queued_only``: no fresh trial is created for it; where that
hook is unavailable, such a trial ends at once, PRUNED, ``surplus``, not counted).

Processes started separately on one study (``tuner/coordinator.py``): the first phased process
coordinates, that is, plans and queues every phase as above; the others, while it lives, help:
they run its queued trials with the settings it recorded in the study and plan nothing. So
``--trials N`` keeps its meaning: the coordinator's plan has at most N trials, whoever runs them
(a helper's own ``--trials`` caps only what it runs). Each phase ends with a barrier: it is
ranked only when none of its trials waits or runs in any process; a trial whose process died (a
helper's or a --jobs worker's) is failed (this host: ``owners``; a database server: the trials'
heartbeats) and queued once more, so the barrier cannot wait for ever and the phase is complete. A coordinator drops (fails) only the queued trials it
queued (each carries ``queued_by``) or that a dead coordinator left, never a live one's. When the
coordinator dies, the next phased process started coordinates and resumes as a rerun does.

lr schedules (``--schedules``, off by default) are one more searched choice; see ``portfolio``
for how they enter phase 1 and ``tuner/space.py`` for the schedules and their knobs. Each run
gets a complete schedule over its own steps, so successive halving compares complete short runs.

Measured against baselines (default AdamW, TPE over AdamW's lr and weight decay, random search,
the plain Optuna script): docs/tuner-experiments.md. One successive-halving bracket, not
Hyperband's several: with 20-40 trials a second bracket would cost most of phase 3, and the rank
check spends full-fidelity runs only where the one bracket is shown to mislead.
"""
from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from . import space

# Why these: Schmidt, Schneider & Hennig 2021 find that a few well-chosen optimizers at good
# defaults do about as well as tuning one, and that the choice matters less than the tuning: so
# a handful of strong, different ones rather than 15. AdamW (the standard), NAG (momentum SGD,
# strong where Adam generalizes worse), Lion (sign-based), Schedule-Free AdamW (AlgoPerf's
# self-tuning winner), and two learning-rate-free methods (Prodigy, D-Adapt Adam), which
# remove most of the lr search.
DEFAULT_PORTFOLIO = ("adamw", "nag", "lion", "schedulefree_adamw", "prodigy", "dadapt_adam")
ETA = 3                       # successive halving keeps the best 1/ETA at each rung
# Phase 1's sweep around the default lr: two decades, the larger lr first (alone when trials
# are few). Shipped lrs are safe ones, chosen not to diverge across many models, and the best lr
# is usually close to the largest stable one (Bengio 2012, "Practical recommendations"), so the
# optimum of a given task is more often above the default than below and can be a decade or more
# away; a too-large lr is also cheap to refute (the run diverges and stops early). A one-decade
# sweep (x 1/3, 3) left the lr-based optimizers untuned against the lr-free ones (Prodigy,
# D-Adapt), which adapt their step by design: docs/tuner-experiments.md, "Against baselines".
# Clipped into the record's lr_range (Prodigy's and D-Adapt's 0.3 .. 3: their multiplier).
LR_FACTORS = (1.0, 10.0, 0.1)
# Phase 3 starts with each survivor's best full-fidelity config at lr x sqrt(10) and / sqrt(10):
# the midpoints (in log lr) between phase 1's grid points, a decade apart, are where the optimum
# of a lr-sensitive optimizer most often lies, and two points say more there than TPE's first
# draws, which are nearly random. Phase 3 gets at least REFINE trials (plan) whenever the
# trials leave room for them after one config per rung and a finalist's seed re-runs (12 with
# the default six optimizers), so a small budget does not end at a grid point, and a config ranked by its short run is checked at full length
# near it (learning curves can cross: docs/tuner-experiments.md).
REFINE = 2                    # those two trials
# After those two, phase 3 goes on with a line search in log lr (``line_search_step``) until the
# best lr is known to LINE_RESOLUTION decades (the lr within a factor of about 1.26), unpruned:
# a lower lr often trails for most of a run and ends best (crossing learning curves, which is
# why a pruner comparing epoch by epoch must not judge these runs), and a one-dimensional
# search needs few points where TPE's first draws are nearly random.
LINE_STEP = 0.5               # decades: log10(sqrt(10)), the refinement's step
LINE_RESOLUTION = 0.1         # decades
SAME_POINT = 1e-9             # decades: lrs this close are one point (a float round trip apart)
GOLDEN = (3 - 5 ** 0.5) / 2   # 0.382: the golden-section fraction
LINE_SEARCH = "line_search"   # the user attr of the line search's trials (the pruner leaves them)
SEEDS = (0, 1, 2)             # phase 4: the finalists' seeds (0 is the search's)
EDGE = 0.05                   # a value in the outer 5% of its log range is flagged


def rungs(epochs: int) -> list[int]:
    """The fidelities (epochs) of successive halving: epochs/ETA^2, epochs/ETA, epochs (distinct, >= 1)."""
    return sorted({max(1, epochs // ETA ** 2), max(1, epochs // ETA), epochs})


@dataclass(frozen=True)
class Config:
    """One point: the Optuna params (``optimizer`` and the ``name.dim`` values) of a trial."""

    params: tuple[tuple[str, Any], ...]

    @staticmethod
    def of(params: dict[str, Any]) -> "Config":
        return Config(tuple(sorted(params.items())))

    @property
    def optimizer(self) -> str:
        return dict(self.params)["optimizer"]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.params)

    def key(self) -> str:
        return json.dumps(self.params)


@dataclass
class Plan:
    """How ``trials`` split over the phases (before reuse of finished trials on a rerun)."""

    sweep: int            # configs per optimizer in phase 1 (1: defaults only)
    portfolio: int        # phase-1 trials
    halving: int          # phase-2 trials at most (fewer when configs diverge or tie)
    tpe: int              # phase-3 trials
    finalists: int        # phase-4 configs
    seeds: int            # phase-4 seeds per finalist (incl. seed 0)
    optimizers: list[str] = field(default_factory=list)  # those phase 1 evaluates

    @property
    def reruns(self) -> int:
        return self.finalists * (self.seeds - 1)


def halving_counts(n: int, levels: int, room: int | None = None) -> list[int]:
    """Configs at each rung after the first, when ``n`` ran at the first: ceil(n/ETA) each time,
    at least 2 at the top when there are 2 (so the finalists can be compared). With ``room``
    (the trials phase 2 may use) fewer: first a single config at the top, then fewer at the
    rungs below it (never fewer than the rung above), so that one config still reaches the top;
    when even that does not fit, the top rungs go unreached."""
    out = []
    for i in range(1, levels):
        n = max(min(n, 2), math.ceil(n / ETA)) if i == levels - 1 else math.ceil(n / ETA)
        out.append(n)
    if room is None:
        return out
    room = max(0, room)
    while sum(out) > room:
        if out[-1] > 1:
            out[-1] -= 1
            continue
        above = [i for i in range(len(out) - 1) if out[i] > out[i + 1]]
        if above:
            out[above[-1]] -= 1
            continue
        return [1] * room + [0] * (len(out) - room)
    return out


def plan(optimizers: Sequence[str], trials: int, epochs: int, seeded: bool = True) -> Plan:
    """Split ``trials`` over the phases. Every optimizer's defaults first (all of them when
    trials >= optimizers); the lr sweep as far as it leaves about 40% for the rest; successive
    halving as far as it leaves room for one finalist's seed re-runs and phase 3's REFINE trials
    (but one config reaches full fidelity whenever the trials allow); seed re-runs of 2
    finalists (1 when trials are few, none for unseeded objectives); phase 3 the remainder."""
    names = list(optimizers)
    k = len(names)
    if trials < k:
        return Plan(1, trials, 0, 0, 0, 1, names[:trials])
    sweep = 3 if trials >= 5 * k else 2 if trials >= 3 * k else 1
    portfolio = k * sweep
    levels = len(rungs(epochs))
    rest = trials - portfolio
    reserve = REFINE + (len(SEEDS) - 1 if seeded else 0)
    halving = sum(halving_counts(portfolio, levels, room=max(rest - reserve, min(rest, levels - 1))))
    rest -= halving
    finalists, seeds = 0, 1
    if seeded and rest >= 2 * (len(SEEDS) - 1) + 2:
        finalists, seeds = 2, len(SEEDS)
    elif seeded and rest >= len(SEEDS) - 1:
        finalists, seeds = 1, len(SEEDS)
    rest -= finalists * (seeds - 1)
    return Plan(sweep, portfolio, halving, rest, finalists, seeds, names)


def sweep_note(sweep: int) -> str:
    """For phase 1's line: " + lr x 10, 1/10" (the factors of LR_FACTORS[1:sweep])."""
    factors = [f"{f:g}" if f >= 1 else f"1/{1 / f:g}" for f in LR_FACTORS[1:sweep]]
    return f" + lr x {', '.join(factors)}" if factors else ""


def portfolio(optimizers: Sequence[str], sweep: int, budget: str,
              schedules: Sequence[str] = ("constant",)) -> list[Config]:
    """Phase 1's configs: per optimizer its defaults, then lr x LR_FACTORS[1:sweep] (clipped into
    lr_range, duplicates dropped).

    With lr schedules searched (``--schedules``): the defaults run at constant lr (the optimizer
    as shipped, when "constant" is listed), the sweep points under the other listed schedules in
    turn (lr x LR_FACTORS[1] under the first, x LR_FACTORS[2] under the next, ...;
    ``space.portfolio_schedules``), no warmup; schedule-free optimizers at constant. So the
    portfolio costs the same trials as without schedules, every optimizer is still seen as shipped, and with the default sweep every
    schedule of "constant,cosine,wsd" is seen at least once per optimizer. That matters beyond
    phase 1: TPE strongly prefers a category it has never seen (its prior mass is the same in the
    good and the bad model, and the bad one has more trials), so a schedule missing from phase 1
    would take most of phase 3. A sweep point pairs an lr with a schedule (a search, not an
    ablation); phase 3 draws both, and the warmup, with the other dimensions."""
    baseline, others = space.portfolio_schedules(schedules)
    out: list[Config] = []
    for name in optimizers:
        base = {"optimizer": name, **space.default_params(name, budget)}
        low, high = space.lr_range(name)
        seen = set()
        for i, factor in enumerate(LR_FACTORS[:sweep]):
            lr = min(max(base[f"{name}.lr"] * factor, low), high)
            chosen = baseline if i == 0 else others[(i - 1) % len(others)]
            schedule = space.schedule_params(name, schedules, budget, chosen)
            key = (lr, tuple(sorted(schedule.items())))
            if key in seen:
                continue
            seen.add(key)
            out.append(Config.of({**base, f"{name}.lr": lr, **schedule}))
    return out


def schedule_note(schedules: Sequence[str], sweep: int) -> str:
    """For phase 1's line: which schedules its configs ran ("" without schedules)."""
    if not space.searches_schedules(schedules):
        return ""
    baseline, others = space.portfolio_schedules(schedules)
    swept = [others[i % len(others)] for i in range(sweep - 1)]
    return f", defaults {baseline}" + (f", sweep {'/'.join(swept)}" if swept else "")


Result = dict  # {"config": Config, "epochs": int, "seed": int, "value": float, "diverged": bool, "number": int}


def rank(results: Sequence[Result], epochs: int) -> list[Result]:
    """The seed-0 results at exactly ``epochs`` (like with like), best first; ties by trial order."""
    at = [r for r in results if r["epochs"] == epochs and r["seed"] == 0 and math.isfinite(r["value"])]
    return sorted(at, key=lambda r: (r["diverged"], r["value"], r["number"]))


def promote(results: Sequence[Result], epochs: int, count: int) -> list[Config]:
    """The best ``count`` distinct configs at ``epochs`` (diverged ones never)."""
    out: list[Config] = []
    if count <= 0:
        return out
    for r in rank(results, epochs):
        if not r["diverged"] and r["config"] not in out:
            out.append(r["config"])
        if len(out) == count:
            break
    return out


def discordant_pairs(results: Sequence[Result], lower: int, upper: int, configs: Sequence[Config]) -> int:
    """How many pairs of ``configs`` the seed-0 runs at ``lower`` and at ``upper`` epochs rank in
    opposite orders (Kendall's discordant pairs; diverged runs rank last, ties are no pair)."""
    def values(epochs: int) -> dict[Config, tuple[bool, float]]:
        out: dict[Config, tuple[bool, float]] = {}
        for r in rank(results, epochs):
            if r["config"] in configs:
                out.setdefault(r["config"], (r["diverged"], r["value"]))
        return out

    low, high = values(lower), values(upper)
    both = [c for c in configs if c in low and c in high]
    return sum(1 for i, a in enumerate(both) for b in both[i + 1:]
               if low[a] != low[b] and high[a] != high[b] and (low[a] < low[b]) != (high[a] < high[b]))


def second_chances(results: Sequence[Result], below: Sequence[int], promoted: Sequence[Config],
                   count: int) -> list[Config]:
    """The rank check's extra promotions: the ``count`` next optimizers in the halving's order
    (those none of ``promoted`` is of, by the highest of the fidelities ``below`` they reached,
    then the value there), each with its best config there (never one that diverged at any
    fidelity)."""
    taken = {c.optimizer for c in promoted}
    diverged = {r["config"] for r in results if r["diverged"]}
    out: list[Config] = []
    for epochs in sorted(below, reverse=True):
        for r in rank(results, epochs):
            if len(out) >= count:
                return out
            if r["config"] not in diverged and r["config"].optimizer not in taken:
                taken.add(r["config"].optimizer)
                out.append(r["config"])
    return out


def survivors(results: Sequence[Result], levels: Sequence[int], count: int) -> list[str]:
    """The optimizers that got furthest: by highest rung reached, then best value there."""
    best: dict[str, tuple[int, float]] = {}
    for r in results:
        if r["seed"] != 0 or r["diverged"] or r["epochs"] not in levels:
            continue
        key = (-levels.index(r["epochs"]), r["value"])
        name = r["config"].optimizer
        if name not in best or key < best[name]:
            best[name] = key
    return [n for n, _ in sorted(best.items(), key=lambda item: item[1])][:count]


def finalists(results: Sequence[Result], full: int, count: int) -> list[Config]:
    """The ``count`` configs phase 4 re-runs on more seeds: the best full-fidelity config of each
    optimizer first (best first), then the next best configs: two near-copies of one config would
    spend the seeds on a comparison that says little."""
    ranked = promote(results, full, len(results) + 1)
    out: list[Config] = []
    for config in ranked:
        if config.optimizer not in {c.optimizer for c in out}:
            out.append(config)
    out += [c for c in ranked if c not in out]
    return out[:count]


def line_search_step(results: Sequence[Result], full: int, name: str,
                     failed: Sequence[Config] = ()) -> list[Config]:
    """The next lrs to try for ``name``: a bracketing line search in log10(lr) around its best
    seed-0 config at ``full`` epochs, over the full-fidelity runs that differ from it in lr only
    (and ``failed``: configs whose runs failed, which bound the search like a divergence). Where
    the best has no evaluated neighbour on a side, a step of LINE_STEP decades that way, clipped
    into lr_range (both sides at once when it has none: lr x sqrt(10) and / sqrt(10), between
    phase 1's grid points); once it is bracketed, the vertex of the parabola through the best
    and its two neighbours (successive parabolic interpolation, as in Brent's method), or a
    golden-section step into the wider side when the vertex is not usable. Nothing when the best
    lies at an end of lr_range or both neighbours are within LINE_RESOLUTION decades.

    A function of the runs so far only, so a rerun of an interrupted search proposes the same
    points, and points are always built as 10 ** x (then clipped), so they compare equal to the
    ones a first run stored."""
    ranked = [r for r in rank(results, full) if r["config"].optimizer == name]
    key = f"{name}.lr"
    best = next((r for r in ranked if not r["diverged"] and key in r["config"].as_dict()), None)
    if best is None:
        return []
    params = best["config"].as_dict()
    others = {k: v for k, v in params.items() if k != key}
    u = math.log10(float(params[key]))
    line: dict[float, tuple[float, bool]] = {}
    points = [(r["config"], r["value"], r["diverged"]) for r in ranked] + [(c, math.inf, True) for c in failed]
    for config, value, diverged in points:
        p = config.as_dict()
        if key in p and {k: v for k, v in p.items() if k != key} == others and float(p[key]) > 0:
            x = math.log10(float(p[key]))
            if abs(x - u) > SAME_POINT:  # (the best itself, or a float round trip away from it)
                line.setdefault(x, (value, diverged))
    lr_low, lr_high = space.lr_range(name)
    low, high = math.log10(lr_low), math.log10(lr_high)
    left = max((x for x in line if x < u), default=None)
    right = min((x for x in line if x > u), default=None)

    def at(x: float) -> Config:
        return Config.of({**params, key: min(max(10.0 ** x, lr_low), lr_high)})

    outward = [at(min(max(u + side * LINE_STEP, low), high))
               for side, neighbour, edge in ((1, right, high), (-1, left, low))
               if neighbour is None and abs(edge - u) >= LINE_RESOLUTION / 2]
    if outward:
        return outward
    if left is None or right is None:
        return []  # the best is at an end of lr_range (edge_flags flags it)
    if max(u - left, right - u) < LINE_RESOLUTION:
        return []
    (f_left, d_left), f_best, (f_right, d_right) = line[left], best["value"], line[right]
    x = None
    if not (d_left or d_right):
        # The vertex of the parabola through (left, f_left), (u, f_best), (right, f_right).
        num = (u - left) ** 2 * (f_best - f_right) - (u - right) ** 2 * (f_best - f_left)
        den = (u - left) * (f_best - f_right) - (u - right) * (f_best - f_left)
        if den != 0 and math.isfinite(num / den):
            x = u - 0.5 * num / den
    if x is None or not (left < x < right) or min(abs(x - y) for y in (left, u, right)) < LINE_RESOLUTION / 2:
        wider = right if right - u >= u - left else left
        x = u + GOLDEN * (wider - u)
    return [at(x)]


def line_search_round(results: Sequence[Result], full: int, optimizers: Sequence[str],
                      failed: Sequence[Config] = ()) -> list[Config]:
    """One round of phase 3's line search: ``line_search_step`` for each of ``optimizers``, in
    turn (the first round gives each survivor its two points around its best config)."""
    out: list[Config] = []
    for name in optimizers:
        out += [c for c in line_search_step(results, full, name, failed) if c not in out]
    return out


def seed_summary(results: Sequence[Result], config: Config, full: int) -> dict[str, Any]:
    """Mean, std (sample; 0 for one seed) and the per-seed values of ``config`` at full fidelity."""
    by_seed: dict[int, float] = {}
    for r in results:
        if r["config"] == config and r["epochs"] == full and r["seed"] not in by_seed:
            by_seed[r["seed"]] = r["value"]
    seeds = sorted(by_seed)
    values = [by_seed[s] for s in seeds]
    return {"seeds": seeds, "values": values, "mean": statistics.fmean(values) if values else math.inf,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0}


def edge_flags(config: Config, budget: str) -> list[str]:
    """The searched log-scale values of ``config`` in the outer EDGE of their range, e.g.
    "adamw.lr=0.1 at the upper edge of [1e-05, 0.1]"."""
    params = config.as_dict()
    name = config.optimizer
    out = []
    for dim in space.dimensions(name, budget):
        key = f"{name}.{dim.label}"
        if dim.kind not in ("log", "one_minus_log", "weight_decay") or key not in params:
            continue
        value = float(params[key])
        if not (dim.low > 0 and dim.high > dim.low and value > 0):
            continue
        where = (math.log(value) - math.log(dim.low)) / (math.log(dim.high) - math.log(dim.low))
        if where <= EDGE or where >= 1 - EDGE:
            side = "lower" if where <= EDGE else "upper"
            out.append(f"{key}={value:.3g} at the {side} edge of [{dim.low:g}, {dim.high:g}]")
    return out


def results_of(trials: Sequence[Any], full: int) -> list[Result]:
    """The finished trials of a study as results: COMPLETE ones at their epochs, low-fidelity
    PRUNED ones (stopped by design at their rung) at theirs; pruned-by-the-pruner, failed and
    surplus trials are not results."""
    import optuna

    S = optuna.trial.TrialState
    out: list[Result] = []
    for t in trials:
        attrs = t.user_attrs
        if "optimizer" not in t.params or t.value is None:
            continue
        low = t.state == S.PRUNED and attrs.get("low_fidelity")
        if not (t.state == S.COMPLETE or low):
            continue
        epochs = attrs.get("planned_epochs", full)
        out.append({"config": Config.of(t.params), "epochs": epochs, "seed": attrs.get("seed", 0),
                    "value": float(t.value), "diverged": bool(attrs.get("diverged")), "number": t.number})
    return out


def done_keys(trials: Sequence[Any], full: int) -> set[tuple[str, int, int]]:
    return {(r["config"].key(), r["epochs"], r["seed"]) for r in results_of(trials, full)}


def waiting_keys(trials: Sequence[Any], state: Any = None) -> set[tuple[str, int, int]]:
    """The (config, epochs, seed) keys of the queued trials (``state`` WAITING, the default) or of
    those in ``state`` (RUNNING: taken by some process) that the phased strategy planned."""
    import optuna

    state = optuna.trial.TrialState.WAITING if state is None else state
    out = set()
    for t in trials:
        if t.state == state and "planned_epochs" in t.user_attrs:
            fixed = t.system_attrs.get("fixed_params", {})
            out.add((Config.of(fixed).key(), t.user_attrs["planned_epochs"], t.user_attrs.get("seed", 0)))
    return out


def describe(config: Config) -> str:
    """``adamw lr=0.003`` (the params that differ from nothing: every searched value, short)."""
    name = config.optimizer
    parts = [f"{k[len(name) + 1:]}={v:.3g}" if isinstance(v, float) else f"{k[len(name) + 1:]}={v}"
             for k, v in config.params if k.startswith(name + ".") and k != f"{name}.weight_decay_on"]
    schedule = dict(config.params).get("schedule")
    tail = f" {schedule}" if schedule is not None else ""
    return (f"{name} " + " ".join(p for p in parts if p.startswith("lr=")) if parts else name) + tail


Say = Callable[[str], None]
