"""Optimal-transport rewards on plain arrays: embeddings -> cost -> problem -> batched Sinkhorn -> reward.

Layered like OTT, each arrow a small pure function:

- `intent_cost`: C_ij = ||x_i - y_j||^2 + ||x_min(i+k, Ta-1) - y_min(j+k, Te-1)||^2 (the k-term sees order);
- `expert_start` (j1 = argmin_j C_0j) and `marginals` (1/Ta on valid agent states, 1/(Te - j1) on the expert
  window [j1, Te), exactly zero on padding and before j1);
- `solve_ot`: ott-jax Sinkhorn in log space, over-relaxed (momentum 1.6, see `MOMENTUM`). A zero weight gives
  a potential eps * log(0) = -inf, so padded rows/columns carry exactly zero mass and a padded problem has the
  same solution as the unpadded one;
- `reward_from_plan`: r_i = alpha * exp(-tau * Ta * sum_j P_ij C_ij), zero past the agent's length (the paper's
  squashing; `squash="authors"` gives the authors' notebook form, alpha * exp(-tau * 100 * sum_j P_ij C_ij)).

`sinkhorn_batch` is the one jitted step: it vmaps the layers over a fixed-size chunk of padded agent
trajectories (and over expert trajectories); a chunk of one (the CPU default) is solved without vmap, which
traced, compiled and ran ~3x faster on a CPU (a vmapped while-loop selects between old and new carries every
iteration). `ailot_rewards` loops over chunks in Python, padding the last chunk, so a length bucket compiles
at most log2(chunk_size) + 1 times whatever its number of episodes and their true lengths. A vmapped
while-loop runs until its slowest problem converges, so the chunk size is a knob (benchmarks/README.md).
`solve_bucketed` pads ragged trajectories to the length buckets `plan_buckets` picks by weighing a compile
against the padded work it saves.

`otr_rewards` is the OTR baseline (Luo et al. 2023) on the same layers: raw states, cosine cost, no k-term,
no j1 window, OTR's exponential squashing and its top-1 aggregation over expert trajectories.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from ott.geometry import geometry
from ott.problems.linear import linear_problem
from ott.solvers.linear import acceleration, sinkhorn

from ailot.errors import AilotInputError

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------- defaults
# AILOT (Bobrin et al., "Align Your Intents", ICLR 2025), reward r = alpha * exp(-tau * Ta * sum_j P_ij C_ij):
ALPHA = 5.0  # reward scale; AILOT keeps OTR's alpha = 5 (OTR configs/otr_iql_mujoco.py: config.alpha = 5.0)
TAU = 0.5  # reward temperature; AILOT paper hyperparameter table (the authors' notebook uses another form and
#            other values: AUTHORS_* below, squash="authors")
# The AILOT authors' notebook squashes differently (skylooop/AILOT, branch crossd, notebooks/hopper_cheetah.ipynb):
# the code cell at index 3 (In [5], OTRewardsExpert.compute_rewards_one_episode) has
#     transp_cost = jnp.sum(ot_sink.matrix * geom.cost_matrix, axis=1); rewards = -transp_cost * 100
# (plan rows of mass 1/Ta: no Ta factor), and the cell at index 4 (In [6], ExpRewardsScaler.scale)
#     return self.a * np.exp(rewards * self.b)
# with ExpRewardsScaler(a=2, b=3) for hopper and walker2d (cells 11 and 18) and a=2, b=1 for halfcheetah (15).
# squash="authors" computes alpha * exp(-tau * 100 * sum_j P_ij C_ij): alpha plays a and tau plays b.
SQUASHES = ("paper", "authors")
AUTHORS_COST_SCALE = 100.0  # the notebook's `-transp_cost * 100`
AUTHORS_ALPHA = 2.0  # ExpRewardsScaler a (every cell)
AUTHORS_TAU = 3.0  # ExpRewardsScaler b on hopper and walker2d (1 on halfcheetah)
EPSILON = 1e-3  # Sinkhorn entropic regularisation, absolute (AILOT paper; DESIGN.md "OT" defaults)
THRESHOLD = 1e-3  # Sinkhorn stopping threshold on the L1 marginal error (DESIGN.md; also ott-jax's default)
MAX_ITERATIONS = 1000  # Sinkhorn cap; DESIGN.md gives 500-2000, ailot.config uses 1000
# Sinkhorn over-relaxation weight (Thibault et al. 2021): a fixed weight in (0, 2) (1 = plain Sinkhorn), "none",
# or "adaptive" (Lehmann et al. 2021, ott's adaptive Momentum). Measured on synthetic replay-like problems and
# random walks (benchmarks/README.md): 1.6 cuts the iterations 3-4x and lands closer to a tight solution;
# 1.8 and up, and "adaptive" (which picks ~1.9 on slow problems), diverge on some problems. A diverged
# problem is re-solved without momentum (`_run_chunks`), so a too-large weight costs time, never rewards.
MOMENTUM = 1.6
K = 1  # k-offset of the cost's second term: 1 locomotion, 5 antmaze (AILOT paper; DESIGN.md)
# Episodes per vmapped Sinkhorn call. A vmapped while-loop runs until its slowest problem converges, so on a CPU
# one problem per call is fastest (benchmarks/README.md: 4.1x the steady throughput of chunks of 8 at relative
# epsilon 1e-2, 2 cores, and a chunk of one now skips vmap, ~3x faster again); on an accelerator batching
# should pay, but 8 there is unmeasured so far.
CHUNK_SIZE_CPU = 1
CHUNK_SIZE_ACCELERATOR = 8


def default_chunk_size() -> int:
    return CHUNK_SIZE_CPU if jax.default_backend() == "cpu" else CHUNK_SIZE_ACCELERATOR


# The cost model behind `plan_buckets`: one compilation per length bucket against Sinkhorn iterations on padded
# rows. CPU values measured on this project's 2-core machine (benchmarks/README.md, 2026-12-02); accelerator
# values are unmeasured estimates (a compile of ~2 s; an iteration on a [T, Te] problem bound by launching the
# loop body, ~20 us, then by reading the cost at ~1 ns per 1000 cells).
COMPILE_SECONDS = {"cpu": 0.85, "accelerator": 2.0}  # trace + XLA compile of one bucket (CPU: 0.7-1.0 s)
ITERATION_SECONDS = {"cpu": (30e-6, 0.72e-9), "accelerator": (20e-6, 1e-12)}  # (fixed, per cost cell)
PLANNED_ITERATIONS = 50  # Sinkhorn iterations a problem is assumed to take (median 30-70 measured, momentum 1.6)
BUCKET_ALIGN = 8  # bucket lengths are multiples of this

# OTR (ethanluoyc/optimal_transport_reward, otr/agents/otil/rewarder.py and otr/train_offline.py):
OTR_ALPHA = 5.0  # squashing_exponential alpha (configs/otr_iql_mujoco.py: config.alpha = 5.0)
OTR_BETA = 5.0  # squashing_exponential beta before the 1000 / obs_dim factor (config.beta = 5.0)
OTR_EPISODE_LENGTH = 1000  # train_offline.py: episode_length = 1000; atoms weigh 1/1000 and
#                            beta is scaled by episode_length / obs_dim ("normalize_by_atom", default True)
OTR_EPSILON = 1e-2  # OTILRewarder(epsilon=1e-2), not overridden by train_offline.py
OTR_THRESHOLD = 1e-9  # OTILRewarder(threshold=1e-9)
OTR_MAX_ITERATIONS = 100  # OTILRewarder(max_iterations=100): OTR stops at 100 iterations, converged or not
OTR_MOMENTUM = "none"  # OTILRewarder uses ott's plain Sinkhorn


class SinkhornStats(NamedTuple):
    """Per-problem Sinkhorn diagnostics, shape [N, E] (E = 1 when experts are merged or aggregated by OTR)."""

    n_iters: np.ndarray  # iterations run (a multiple of ott's inner_iterations = 10)
    converged: np.ndarray  # bool: last marginal error finite and below the threshold
    error: np.ndarray  # last recorded L1 marginal error

    @classmethod
    def gather(cls, parts: Sequence[SinkhornStats], indices: Sequence[np.ndarray]) -> SinkhornStats:
        """Stats of trajectories solved in groups (`parts[i]` for trajectories `indices[i]`), back in trajectory
        order."""
        order = np.argsort(np.concatenate(indices), kind="stable")
        return cls(*(np.concatenate([getattr(p, f) for p in parts])[order] for f in cls._fields))

    def summary(self) -> dict[str, float]:
        """What a sweep records per setting: problems solved, the fraction converged, median and max iterations."""
        it = np.asarray(self.n_iters).reshape(-1)
        if it.size == 0:
            return {"problems": 0, "converged": float("nan"), "iterations_median": float("nan"),
                    "iterations_max": float("nan")}
        return {"problems": int(it.size), "converged": float(np.mean(self.converged)),
                "iterations_median": float(np.median(it)), "iterations_max": float(it.max())}


# ------------------------------------------------------------------------------------------------ layers


def sq_dists(x: jax.Array, y: jax.Array) -> jax.Array:
    """||x_i - y_j||^2 for x [T, d], y [Te, d] -> [T, Te], clipped at 0 (the expansion can round below)."""
    d = jnp.sum(x * x, -1)[:, None] + jnp.sum(y * y, -1)[None, :] - 2.0 * x @ y.T
    return jnp.maximum(d, 0.0)


def _mask_padding(x: jax.Array, length) -> jax.Array:
    # Padded rows may hold anything (NaN included); zero them so the cost stays finite there.
    return jnp.where((jnp.arange(x.shape[0]) < length)[:, None], x, 0.0)


def intent_cost(agent_emb: jax.Array, agent_len, expert_emb: jax.Array, expert_len, k: int) -> jax.Array:
    """C [T, Te]: C_ij = ||x_i - y_j||^2 + ||x_min(i+k, Ta-1) - y_min(j+k, Te-1)||^2.

    agent_emb [T, d] and expert_emb [Te, d] are padded; the k-offset indices are clamped to each
    trajectory's own valid length (Ta = agent_len, Te = expert_len), never into the padding.
    """
    x, y = _mask_padding(agent_emb, agent_len), _mask_padding(expert_emb, expert_len)
    i_k = jnp.minimum(jnp.arange(x.shape[0]) + k, agent_len - 1)
    j_k = jnp.minimum(jnp.arange(y.shape[0]) + k, expert_len - 1)
    return sq_dists(x, y) + sq_dists(x[i_k], y[j_k])


def cosine_cost(agent_obs: jax.Array, expert_obs: jax.Array) -> jax.Array:
    """OTR's cost [T, Te]: 1 - cosine similarity (ott.geometry.costs.Cosine, ridge 1e-8 in the denominator)."""
    xn = jnp.linalg.norm(agent_obs, axis=-1)[:, None]
    yn = jnp.linalg.norm(expert_obs, axis=-1)[None, :]
    return 1.0 - (agent_obs @ expert_obs.T) / (xn * yn + 1e-8)


def expert_start(cost: jax.Array, expert_len) -> jax.Array:
    """j1 = argmin_j C_0j over valid expert states: the expert state nearest the agent's first state."""
    valid = jnp.arange(cost.shape[1]) < expert_len
    return jnp.argmin(jnp.where(valid, cost[0], jnp.inf))


def marginals(agent_len, expert_len, j1, T: int, Te: int) -> tuple[jax.Array, jax.Array]:
    """a [T] = 1/Ta on valid agent states; b [Te] = 1/(Te - j1) on j1 <= j < Te; exactly 0 elsewhere."""
    a = jnp.where(jnp.arange(T) < agent_len, 1.0 / agent_len, 0.0)
    j = jnp.arange(Te)
    b = jnp.where((j >= j1) & (j < expert_len), 1.0 / (expert_len - j1), 0.0)
    return a, b


def solve_ot(
    cost: jax.Array,
    a: jax.Array,
    b: jax.Array,
    *,
    epsilon,
    threshold: float = THRESHOLD,
    max_iterations: int = MAX_ITERATIONS,
    lse_mode: bool = True,
    inner_iterations: int = 10,
    momentum: str | float = "none",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Entropic OT plan P [T, Te] for cost with marginals a, b (ott-jax Sinkhorn) and its diagnostics.

    epsilon is absolute (ott's relative_epsilon stays off: its mean would include padded entries).
    Zero-weight rows/columns get exactly zero mass in lse mode (potential -inf; ott's momentum keeps it:
    w * -inf); tests/test_relabel.py checks it. Kernel mode (lse_mode=False) underflows at small epsilon;
    it is here for measurement. momentum: see `MOMENTUM`.
    """
    geom = geometry.Geometry(cost_matrix=cost, epsilon=epsilon)
    solver = sinkhorn.Sinkhorn(threshold=threshold, max_iterations=max_iterations, lse_mode=lse_mode,
                               inner_iterations=inner_iterations,
                               momentum=_momentum(momentum, inner_iterations))
    out = solver(linear_problem.LinearProblem(geom, a=a, b=b))
    recorded = out.errors >= 0  # ott marks not-run error slots with -1
    last = jnp.max(jnp.where(recorded, jnp.arange(out.errors.shape[0]), 0))
    error = out.errors[last]
    # not out.converged: ott stops at an inf error and then compares its unrecorded -1 slot to the threshold
    info = {"n_iters": out.n_iters, "converged": jnp.isfinite(error) & (error < threshold), "error": error}
    return out.matrix, info


def _momentum(momentum: str | float, inner_iterations: int) -> acceleration.Momentum | None:
    if momentum == "none":
        return None
    if momentum == "adaptive":
        # ott's Lehmann rule reads the errors recorded at start - inner and start - 2 * inner iterations
        return acceleration.Momentum(start=2 * inner_iterations, error_threshold=1.0)
    return acceleration.Momentum(value=float(momentum))


def transport_cost_per_state(plan: jax.Array, cost: jax.Array, agent_len) -> jax.Array:
    """Ta * sum_j P_ij C_ij [T]: the expected cost of agent state i under its row (rows sum to 1/Ta)."""
    return agent_len * jnp.sum(plan * cost, axis=1)


def reward_from_plan(plan: jax.Array, cost: jax.Array, agent_len, alpha, tau, squash: str = "paper") -> jax.Array:
    """AILOT reward [T] on valid states, exactly 0 past agent_len.

    squash (static: it selects code) "paper": alpha * exp(-tau * Ta * sum_j P_ij C_ij), the expected cost of
    state i under its row; "authors": alpha * exp(-tau * 100 * sum_j P_ij C_ij), the notebook's form (see
    `AUTHORS_COST_SCALE`), whose exponent is 100 / Ta times the paper's: flatter on episodes longer than 100
    steps, steeper on shorter ones.
    """
    if squash == "authors":
        exponent = AUTHORS_COST_SCALE * jnp.sum(plan * cost, axis=1)
    elif squash == "paper":
        exponent = transport_cost_per_state(plan, cost, agent_len)
    else:
        raise ValueError(f"squash must be one of {SQUASHES}, got {squash!r}")
    r = alpha * jnp.exp(-tau * exponent)
    return jnp.where(jnp.arange(plan.shape[0]) < agent_len, r, 0.0)


def _effective_epsilon(cost, a, b, epsilon, relative: bool):
    """epsilon, or epsilon * mean cost over valid (a > 0, b > 0) entries when relative."""
    if not relative:
        return epsilon
    mask = (a[:, None] > 0) & (b[None, :] > 0)
    return epsilon * jnp.sum(jnp.where(mask, cost, 0.0)) / jnp.maximum(jnp.sum(mask), 1)


def _vmap(f, in_axes):
    """jax.vmap(f, in_axes) (axes 0 or None); over an axis of size 1, f on the one element with the axis put back.

    A vmapped while-loop selects between old and new carries every iteration: on 2 CPU cores, one episode vs one
    expert, it traced and compiled ~1.5x slower (0.36-0.56 s + 0.91-1.13 s vs 0.08-0.24 s + 0.66-0.83 s per
    bucket) and ran ~3x slower, and a batch of one episode against one expert is the CPU default.
    """
    mapped = jax.vmap(f, in_axes=in_axes)

    def call(*args):
        if {a.shape[0] for a, axis in zip(args, in_axes) if axis is not None} != {1}:
            return mapped(*args)
        out = f(*(a if axis is None else a[0] for a, axis in zip(args, in_axes)))
        return jax.tree.map(lambda v: v[None], out)

    return call


# -------------------------------------------------------------------------------------------- AILOT step


def _one_vs_one(x, n, y, m, epsilon, alpha, tau, *, k, relative, solver_kw, squash="paper"):
    """Rewards [T] of one agent trajectory against one expert trajectory, and Sinkhorn info."""
    cost = intent_cost(x, n, y, m, k)
    a, b = marginals(n, m, expert_start(cost, m), x.shape[0], y.shape[0])
    plan, info = solve_ot(cost, a, b, epsilon=_effective_epsilon(cost, a, b, epsilon, relative), **solver_kw)
    return reward_from_plan(plan, cost, n, alpha, tau, squash), info


def _one_vs_merged(x, n, ys, ms, epsilon, alpha, tau, *, k, relative, solver_kw, squash="paper"):
    """Rewards [T] of one agent trajectory against all experts pooled into one cloud (authors' code).

    Each expert keeps its own k-offsets and its own j1 window; the pooled window gets uniform mass.
    With one expert this is exactly `_one_vs_one`.
    """
    costs = jax.vmap(intent_cost, in_axes=(None, None, 0, 0, None))(x, n, ys, ms, k)  # [E, T, Te]
    j1 = jax.vmap(expert_start)(costs, ms)  # [E]
    j = jnp.arange(ys.shape[1])
    window = (j[None, :] >= j1[:, None]) & (j[None, :] < ms[:, None])  # [E, Te]
    cost = jnp.transpose(costs, (1, 0, 2)).reshape(x.shape[0], -1)  # [T, E * Te]
    b = (window / jnp.sum(window)).reshape(-1)
    a = jnp.where(jnp.arange(x.shape[0]) < n, 1.0 / n, 0.0)
    plan, info = solve_ot(cost, a, b, epsilon=_effective_epsilon(cost, a, b, epsilon, relative), **solver_kw)
    return reward_from_plan(plan, cost, n, alpha, tau, squash), jax.tree.map(lambda v: v[None], info)


@functools.partial(jax.jit, static_argnames=("k", "relative_epsilon", "merge", "threshold", "max_iterations",
                                             "lse_mode", "inner_iterations", "momentum", "squash"))
def sinkhorn_batch(
    agent: jax.Array,
    agent_len: jax.Array,
    expert: jax.Array,
    expert_len: jax.Array,
    epsilon,
    alpha,
    tau,
    *,
    k: int,
    relative_epsilon: bool,
    merge: bool,
    threshold: float,
    max_iterations: int,
    lse_mode: bool,
    inner_iterations: int,
    momentum: str | float,
    squash: str = "paper",
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """AILOT rewards [B, T] for a chunk agent [B, T, d] vs experts [E, Te, d]; info leaves [B, E] ([B, 1] merged).

    Compiled once per (B, T, E, Te, d) and static knobs (squash among them: `reward_from_plan`); epsilon, alpha
    and tau are traced, so a sweep over them reuses the compilation.
    """
    solver_kw = dict(threshold=threshold, max_iterations=max_iterations, lse_mode=lse_mode,
                     inner_iterations=inner_iterations, momentum=momentum)
    if merge:
        one = functools.partial(_one_vs_merged, k=k, relative=relative_epsilon, solver_kw=solver_kw, squash=squash)
        rewards, info = _vmap(one, (0, 0, None, None, None, None, None))(
            agent, agent_len, expert, expert_len, epsilon, alpha, tau)
        return rewards, info
    one = functools.partial(_one_vs_one, k=k, relative=relative_epsilon, solver_kw=solver_kw, squash=squash)
    over_experts = _vmap(one, (None, None, 0, 0, None, None, None))  # -> [E, T]
    rewards, info = _vmap(over_experts, (0, 0, None, None, None, None, None))(
        agent, agent_len, expert, expert_len, epsilon, alpha, tau)
    return rewards.max(axis=1), info  # the paper: per-state maximum over expert trajectories


# ---------------------------------------------------------------------------------------------- OTR step


@functools.partial(jax.jit, static_argnames=("threshold", "max_iterations", "lse_mode", "inner_iterations",
                                             "momentum"))
def otr_batch(
    agent: jax.Array,
    agent_len: jax.Array,
    expert: jax.Array,
    expert_len: jax.Array,
    epsilon,
    alpha,
    scale,
    *,
    threshold: float,
    max_iterations: int,
    lse_mode: bool,
    inner_iterations: int,
    momentum: str | float,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """OTR rewards [B, T] for raw states agent [B, T, d] vs experts [E, Te, d]; info leaves [B, E].

    Per expert: r_i = alpha * exp(scale * (-Ta * sum_j P_ij C_ij)) with the cosine cost and uniform marginals
    (no j1 window, no k-term). Then OTR's aggregate_top_k with k=1: the rewards of the expert trajectory
    whose summed reward over this agent trajectory is largest (not a per-state maximum).
    """
    solver_kw = dict(threshold=threshold, max_iterations=max_iterations, lse_mode=lse_mode,
                     inner_iterations=inner_iterations, momentum=momentum)

    def one(x, n, y, m):
        x, y = _mask_padding(x, n), _mask_padding(y, m)
        cost = cosine_cost(x, y)
        a, b = marginals(n, m, 0, x.shape[0], y.shape[0])
        plan, info = solve_ot(cost, a, b, epsilon=epsilon, **solver_kw)
        r = alpha * jnp.exp(-scale * transport_cost_per_state(plan, cost, n))
        return jnp.where(a > 0, r, 0.0), info

    over_experts = _vmap(one, (None, None, 0, 0))
    rewards, info = _vmap(over_experts, (0, 0, None, None))(agent, agent_len, expert, expert_len)
    best = jnp.argmax(rewards.sum(axis=2), axis=1)  # [B]
    return jnp.take_along_axis(rewards, best[:, None, None], axis=1)[:, 0], info


# -------------------------------------------------------------------------------------------- validation


def _check_arrays(agent, agent_len, expert, expert_len, what: str):
    """Validate padded arrays and lengths; returns float32 arrays and int32 lengths."""
    agent, expert = np.asarray(agent), np.asarray(expert)
    agent_len, expert_len = np.asarray(agent_len), np.asarray(expert_len)
    for name, arr in (("agent", agent), ("expert", expert)):
        if arr.ndim != 3:
            raise AilotInputError(f"{name} {what}", f"have shape {arr.shape}, not [N, T, d] (rank {arr.ndim} != 3)",
                                  "pass padded arrays [N, T, d] with one length per trajectory")
        if 0 in arr.shape:
            raise AilotInputError(f"{name} {what}", f"are empty (shape {arr.shape})",
                                  "pass at least one trajectory of at least one state")
        if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
            raise AilotInputError(f"{name} {what}", f"have dtype {arr.dtype}", "pass real floating-point arrays")
    if agent.shape[-1] != expert.shape[-1]:
        raise AilotInputError(f"expert {what}", f"have dimension {expert.shape[-1]}, agent {what} {agent.shape[-1]}",
                              "embed agent and expert states with the same encoder / observation keys")
    for name, arr, lens in (("agent", agent, agent_len), ("expert", expert, expert_len)):
        if lens.shape != (arr.shape[0],):
            raise AilotInputError(f"{name}_lengths", f"have shape {lens.shape}, expected ({arr.shape[0]},)",
                                  f"give one length per {name} trajectory")
        if not np.issubdtype(lens.dtype, np.integer):
            if not (np.issubdtype(lens.dtype, np.floating) and np.all(np.mod(lens, 1) == 0)):
                raise AilotInputError(f"{name}_lengths", f"are not integers ({lens.dtype})", "pass integer lengths")
        bad = np.flatnonzero((lens < 1) | (lens > arr.shape[1]))
        if bad.size:
            i = int(bad[0])
            raise AilotInputError(
                f"{name}_lengths[{i}]", f"is {lens[i]}, outside [1, {arr.shape[1]}] (the padded time axis)",
                "lengths count the valid, unpadded steps of each trajectory; drop empty trajectories")
        valid = np.arange(arr.shape[1])[None, :] < lens[:, None]
        finite = np.isfinite(arr).all(axis=-1) | ~valid  # padding may hold anything; it is masked
        if not finite.all():
            i, t = (int(v) for v in np.argwhere(~finite)[0])
            raise AilotInputError(f"{name} {what}", f"contain NaN or inf (trajectory {i}, step {t})",
                                  "check the encoder output and the observations (normalisation, NaN states)")
    return (agent.astype(np.float32), agent_len.astype(np.int32), expert.astype(np.float32),
            expert_len.astype(np.int32))


def _check_positive(name: str, value, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise AilotInputError(name, f"must be a number, got {value!r}", f"give a positive {name}")
    if integer and int(value) != value:
        raise AilotInputError(name, f"must be an integer, got {value!r}", f"give a positive integer {name}")
    if not np.isfinite(value) or not value > 0:
        raise AilotInputError(name, f"must be finite and > 0, got {value!r}", f"give a positive {name}")


def check_momentum(momentum, name: str = "momentum") -> str | float:
    """'adaptive', 'none' (None too) or a weight in (0, 2) as a float; anything else is an input error."""
    if momentum is None or momentum in ("none", "adaptive"):
        return momentum or "none"
    if isinstance(momentum, (int, float, np.integer, np.floating)) and not isinstance(momentum, bool):
        if 0.0 < float(momentum) < 2.0:
            return float(momentum)
    raise AilotInputError(name, f"is {momentum!r}",
                          "use 'adaptive', 'none', or a fixed over-relaxation weight in (0, 2) (1 = none)")


def _check_solver(epsilon, threshold, max_iterations, chunk_size, inner_iterations, momentum):
    """Validate the solver settings; returns the chunk size (None: the device's default) and the momentum."""
    if chunk_size is None:
        chunk_size = default_chunk_size()
    _check_positive("epsilon", epsilon)
    _check_positive("threshold", threshold)
    _check_positive("max_iterations", max_iterations, integer=True)
    _check_positive("chunk_size", chunk_size, integer=True)
    _check_positive("inner_iterations", inner_iterations, integer=True)
    return int(chunk_size), check_momentum(momentum)


# ---------------------------------------------------------------------------------------------- chunking


def _chunk_shape(n: int, chunk_size: int) -> int:
    """Batch size of the calls for n trajectories: min(chunk_size, next power of two >= n), so a bucket sees
    at most log2(chunk_size) + 1 shapes."""
    return min(int(chunk_size), 1 << max(n - 1, 0).bit_length())


def _run_chunks(step, agent: np.ndarray, agent_len: np.ndarray, chunk_size: int, momentum: str | float):
    """Apply a jitted step (given its momentum here) to fixed-size chunks of the batch (the last one padded with
    length-1 dummies).

    Calls see at most log2(chunk_size) + 1 batch shapes, so the compilations of a bucket do not grow with its
    number of episodes or their true lengths. All chunks are dispatched before any result is read, so host
    work overlaps the solves. Trajectories whose Sinkhorn diverged (a non-finite marginal error, which
    over-relaxation can cause) are solved again without momentum.
    """
    n = len(agent)
    chunk = _chunk_shape(n, chunk_size)
    outs = []
    for start in range(0, n, chunk):
        x, lens = agent[start: start + chunk], agent_len[start: start + chunk]
        if len(x) < chunk:  # a length-1 zero trajectory converges at once and is discarded
            fill = chunk - len(x)
            x = np.concatenate([x, np.zeros((fill, *x.shape[1:]), x.dtype)])
            lens = np.concatenate([lens, np.ones(fill, lens.dtype)])
        outs.append(step(x, lens, momentum=momentum))
    outs = jax.device_get(outs)
    rewards = np.concatenate([r for r, _ in outs])[:n].astype(np.float32)
    info = {key: np.concatenate([i[key] for _, i in outs])[:n] for key in outs[0][1]}
    stats = SinkhornStats(info["n_iters"].astype(np.int32), info["converged"].astype(bool),
                          info["error"].astype(np.float32))
    diverged = np.flatnonzero(~np.isfinite(stats.error).all(axis=1))
    if momentum != "none" and diverged.size:
        log.info("Sinkhorn diverged with momentum on %d of %d trajectories; solving them again without",
                 diverged.size, n)
        again, again_stats = _run_chunks(step, agent[diverged], agent_len[diverged], chunk_size, "none")
        rewards[diverged] = again
        for field, values in zip(stats, again_stats):
            field[diverged] = values
    return rewards, stats


# -------------------------------------------------------------------------------------------------- public


def ailot_rewards(
    agent_emb,
    agent_lengths,
    expert_emb,
    expert_lengths,
    *,
    k: int = K,
    epsilon: float = EPSILON,
    alpha: float | None = None,
    tau: float | None = None,
    squash: str = "paper",
    relative_epsilon: bool = False,
    threshold: float = THRESHOLD,
    max_iterations: int = MAX_ITERATIONS,
    expert_mode: str = "max",
    chunk_size: int | None = None,
    lse_mode: bool = True,
    inner_iterations: int = 10,
    momentum: str | float = MOMENTUM,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, SinkhornStats]:
    """AILOT rewards [N, T] float32 (exact zeros past each length) of padded agent embeddings vs an expert set.

    agent_emb [N, T, d], agent_lengths [N], expert_emb [E, Te, d], expert_lengths [E]. expert_mode "max"
    takes the per-state maximum over expert trajectories (the paper, default); "merge" pools the experts into
    one point cloud (the authors' code). relative_epsilon scales epsilon by the mean valid cost of each
    problem. momentum: Sinkhorn over-relaxation, a weight in (0, 2) (default 1.6), "adaptive" or "none" (see
    `MOMENTUM`). With return_info, also the per-problem SinkhornStats.

    squash: "paper" (default), r = alpha * exp(-tau * Ta * sum_j P_ij C_ij), or "authors", the notebook's
    alpha * exp(-tau * 100 * sum_j P_ij C_ij) (`AUTHORS_COST_SCALE`). alpha and tau default to that form's
    values: 5 and 0.5 (paper), 2 and 3 (authors' hopper and walker2d cells; halfcheetah used tau 1).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise AilotInputError("k", f"must be an integer >= 1, got {k!r}", "use k = 1 (locomotion) or 5 (antmaze)")
    chunk_size, momentum = _check_solver(epsilon, threshold, max_iterations, chunk_size, inner_iterations, momentum)
    if squash not in SQUASHES:
        raise AilotInputError("squash", f"is {squash!r}", "use 'paper' (the paper's formula) or 'authors' (notebook)")
    alpha = (ALPHA if squash == "paper" else AUTHORS_ALPHA) if alpha is None else alpha
    tau = (TAU if squash == "paper" else AUTHORS_TAU) if tau is None else tau
    _check_positive("alpha", alpha)
    _check_positive("tau", tau)
    if expert_mode not in ("max", "merge"):
        raise AilotInputError("expert_mode", f"is {expert_mode!r}", "use 'max' (paper) or 'merge' (authors' code)")
    agent, n, expert, m = _check_arrays(agent_emb, agent_lengths, expert_emb, expert_lengths, "embeddings")
    step = functools.partial(
        sinkhorn_batch, expert=expert, expert_len=m, epsilon=float(epsilon), alpha=float(alpha), tau=float(tau),
        k=int(k), relative_epsilon=bool(relative_epsilon), merge=expert_mode == "merge",
        threshold=float(threshold), max_iterations=int(max_iterations), lse_mode=bool(lse_mode),
        inner_iterations=int(inner_iterations), squash=str(squash))
    rewards, stats = _run_chunks(step, agent, n, chunk_size, momentum)
    return (rewards, stats) if return_info else rewards


def otr_rewards(
    agent_obs,
    agent_lengths,
    expert_obs,
    expert_lengths,
    *,
    epsilon: float = OTR_EPSILON,
    alpha: float = OTR_ALPHA,
    beta: float = OTR_BETA,
    normalize_by_dim: bool = True,
    threshold: float = OTR_THRESHOLD,
    max_iterations: int = OTR_MAX_ITERATIONS,
    chunk_size: int | None = None,
    lse_mode: bool = True,
    inner_iterations: int = 10,
    momentum: str | float = OTR_MOMENTUM,
    return_info: bool = False,
) -> np.ndarray | tuple[np.ndarray, SinkhornStats]:
    """OTR rewards [N, T] float32 (Luo et al. 2023) of padded raw observations vs an expert set.

    OTR computes alpha * exp(beta' * (-sum_j P_ij C_ij)) with atoms weighing 1/1000 and
    beta' = beta * 1000 / obs_dim. Each agent row then carries mass 1/1000, so the exponent is
    -beta / obs_dim * (Ta * sum_j P_ij C_ij) with our 1/Ta rows; we use that form, which equals OTR's for
    full 1000-step episodes and keeps the per-state scale for shorter ones (where OTR's 1/1000 weights make
    the problem unbalanced and only its 100-iteration cap stops Sinkhorn). normalize_by_dim=False drops the
    1/obs_dim (OTR's normalize_by_atom=False).
    """
    chunk_size, momentum = _check_solver(epsilon, threshold, max_iterations, chunk_size, inner_iterations, momentum)
    _check_positive("alpha", alpha)
    _check_positive("beta", beta)
    agent, n, expert, m = _check_arrays(agent_obs, agent_lengths, expert_obs, expert_lengths, "observations")
    # beta * episode_length / atom_size applied to costs of rows of mass 1/episode_length (see docstring)
    scale = beta / agent.shape[-1] if normalize_by_dim else beta
    step = functools.partial(
        otr_batch, expert=expert, expert_len=m, epsilon=float(epsilon), alpha=float(alpha), scale=float(scale),
        threshold=float(threshold), max_iterations=int(max_iterations), lse_mode=bool(lse_mode),
        inner_iterations=int(inner_iterations))
    rewards, stats = _run_chunks(step, agent, n, chunk_size, momentum)
    return (rewards, stats) if return_info else rewards


def _warm_up(solve, bucket: int, n_trajs: int, expert: np.ndarray, expert_len: np.ndarray, kwargs) -> None:
    """Compile `solve` for a bucket by solving dummy length-1 trajectories in the batch shape the real call uses
    (`_chunk_shape`); they converge at the first error check."""
    chunk = _chunk_shape(n_trajs, kwargs.get("chunk_size") or default_chunk_size())
    solve(np.zeros((chunk, bucket, expert.shape[-1]), np.float32), np.ones(chunk, np.int32), expert, expert_len,
          **kwargs)


def plan_buckets(lengths, expert_length: int, solves: float = 1, backend: str | None = None) -> tuple[int, ...]:
    """Bucket lengths for agent episodes of these lengths, ascending: the partition of the sorted lengths with
    the least modelled time, one compilation (`COMPILE_SECONDS`) per bucket plus, `solves` times (once per
    setting solved on the same compilation), `PLANNED_ITERATIONS` Sinkhorn iterations (`ITERATION_SECONDS`)
    per episode on its padded [bucket, expert_length] problem.

    A few thousand transitions get one or two buckets (a compile is worth ~20k padded rows on a CPU); a
    large dataset gets many, each holding episodes of nearly its own length. Exact dynamic programming over
    the distinct lengths (rounded up to `BUCKET_ALIGN`), O(distinct^2).
    """
    backend = backend or ("cpu" if jax.default_backend() == "cpu" else "accelerator")
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if lengths.size == 0 or lengths.min() < 1:
        raise AilotInputError("episode lengths", "are empty or hold an episode of no steps", "drop empty episodes")
    aligned = -(-lengths // BUCKET_ALIGN) * BUCKET_ALIGN
    sizes, counts = np.unique(aligned, return_counts=True)
    before = np.concatenate([[0], np.cumsum(counts)])  # episodes shorter than sizes[j], per j
    fixed, per_cell = ITERATION_SECONDS[backend]
    per_episode = PLANNED_ITERATIONS * fixed * solves
    per_row = PLANNED_ITERATIONS * per_cell * int(expert_length) * solves
    best = np.zeros(len(sizes) + 1)  # best[j]: least time for the j shortest sizes
    cut = np.zeros(len(sizes) + 1, dtype=np.int64)  # where the last bucket of that optimum starts
    for j in range(1, len(sizes) + 1):
        episodes = before[j] - before[:j]  # in a bucket of sizes[j - 1] holding sizes[i:j], for each i < j
        total = best[:j] + COMPILE_SECONDS[backend] + episodes * (per_episode + per_row * sizes[j - 1])
        cut[j] = int(np.argmin(total))
        best[j] = total[cut[j]]
    plan, j = [], len(sizes)
    while j:
        plan.append(int(sizes[j - 1]))
        j = cut[j]
    return tuple(reversed(plan))


def solve_bucketed(solve, agent_trajs: Sequence[np.ndarray], expert_trajs: Sequence[np.ndarray], *,
                   buckets: Sequence[int] | None = None, progress: bool = False, return_info: bool = False,
                   **kwargs) -> list[np.ndarray] | tuple[list[np.ndarray], SinkhornStats]:
    """`solve` (`ailot_rewards` or `otr_rewards`) on ragged trajectories [T_i, d]: rewards [T_i] each (and with
    return_info, the SinkhornStats of every trajectory, [N, E] in input order).

    Pads each trajectory to the smallest of the bucket lengths `buckets` that holds it (default: `plan_buckets`)
    and solves the buckets largest first. While the main thread compiles and solves the first bucket, a
    background thread compiles the others in order (XLA compiles outside the GIL), so compile time hides
    behind solving instead of adding to it. progress: a bar over transitions, advanced per bucket.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm.auto import tqdm

    from ailot.data.episodes import length_buckets, pad_batch, unpad

    if len(agent_trajs) == 0 or len(expert_trajs) == 0:
        raise AilotInputError("trajectories", "no agent or no expert trajectory was given",
                              "pass at least one trajectory of each")
    for name, trajs in (("agent", agent_trajs), ("expert", expert_trajs)):
        empty = [i for i, t in enumerate(trajs) if np.ndim(t) != 2 or len(t) == 0]
        if empty:
            raise AilotInputError(f"{name} trajectory {empty[0]}", "is empty or not [T, d]",
                                  "drop empty episodes; pass one [T, d] array per trajectory")
    expert, expert_len = pad_batch([np.asarray(t, np.float32) for t in expert_trajs])
    lengths = np.array([len(t) for t in agent_trajs])
    if buckets is None:
        buckets = plan_buckets(lengths, expert.shape[1])
    elif not len(buckets) or max(buckets) < lengths.max():
        raise AilotInputError("buckets", f"{list(buckets)} hold no trajectory of {lengths.max()} steps",
                              "give bucket lengths up to the longest trajectory, or None to plan them")
    out: list[np.ndarray] = [np.empty(0, np.float32)] * len(agent_trajs)
    stats: list[tuple[np.ndarray, SinkhornStats]] = []  # (trajectory indices, their stats) per bucket
    groups = length_buckets(lengths, sizes=buckets)
    log.debug("%d trajectories (%d steps) in %d length buckets %s", len(lengths), lengths.sum(), len(groups),
              [b for b, _ in groups])
    bar = tqdm(total=int(lengths.sum()), desc="relabel", unit="tr", disable=not progress)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="ailot-compile") as compiler:
        # one worker, in solving order: bucket b is compiled once, before the main thread needs it
        compiled = [compiler.submit(_warm_up, solve, bucket, len(idx), expert, expert_len, kwargs)
                    for bucket, idx in groups[1:]]
        try:
            for i, (bucket, idx) in enumerate(groups):
                if i:
                    compiled[i - 1].result()
                padded, lens = pad_batch([np.asarray(agent_trajs[i]) for i in idx], bucket)
                rewards, info = solve(padded, lens, expert, expert_len, return_info=True, **kwargs)
                stats.append((np.asarray(idx), info))
                for i, r in zip(idx, unpad(rewards, lens)):
                    out[i] = r
                bar.update(int(lens.sum()))
        finally:
            bar.close()
            for future in compiled:
                future.cancel()
    if not return_info:
        return out
    return out, SinkhornStats.gather([info for _, info in stats], [idx for idx, _ in stats])


def ailot_rewards_bucketed(agent_trajs: Sequence[np.ndarray], expert_trajs: Sequence[np.ndarray], *,
                           buckets: Sequence[int] | None = None, **kwargs) -> list[np.ndarray]:
    """`ailot_rewards` for ragged trajectories [T_i, d]: pads to length buckets, returns [T_i] each."""
    return solve_bucketed(ailot_rewards, agent_trajs, expert_trajs, buckets=buckets, **kwargs)


def otr_rewards_bucketed(agent_trajs: Sequence[np.ndarray], expert_trajs: Sequence[np.ndarray], *,
                         buckets: Sequence[int] | None = None, **kwargs) -> list[np.ndarray]:
    """`otr_rewards` for ragged trajectories [T_i, d]: pads to length buckets, returns [T_i] each."""
    return solve_bucketed(otr_rewards, agent_trajs, expert_trajs, buckets=buckets, **kwargs)
