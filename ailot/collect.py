"""D4RL-style MuJoCo datasets from our own SAC: train, snapshot, pick, roll out, write Minari datasets.

    ailot collect --env Hopper-v5 --seed 0            # D4RL's budget: 1M SAC steps, 1M-transition datasets
    ailot collect --env Hopper-v5 --quick             # smoke size

Stages, each done once (a rerun with the same arguments resumes or skips it):

1. train   SAC (JAX) on the env: env stepping is a Python loop, every `update_every` env steps the same
           number of updates runs in one jitted lax.scan (UTD 1). Every `eval_every` steps the actor params
           are saved as a snapshot (flax msgpack), with a short deterministic evaluation (`eval_episodes`) for
           the log. Checkpoints (SAC state, replay buffer .npz, rngs, snapshot list) are written every
           `checkpoint_every` steps at the next episode end, atomically, into `work_dir`.
2. select  the snapshots at every `select_every` steps (and the last) are evaluated on `select_episodes`
           (default 50) episodes with sampled actions, the behaviour the medium and expert datasets hold
           (`select_deterministic` for tanh(mean) actions), `EVAL_ENVS` envs stepped together; each result
           is stored as it is made (selection.json), so an interrupted selection resumes. expert = the best;
           medium = the snapshot taken before the expert's whose return is nearest 1/3 (`medium_fraction`)
           of the expert's (`pick`).
3. refs    our own random (uniform actions) and expert (actions as in the selection) mean returns,
           `reference_episodes` each. The datasets carry D4RL's REF_MIN_SCORE / REF_MAX_SCORE for the env
           (`references: d4rl`, the default, so normalized scores compare with D4RL's) or these own ones
           (`references: own`); the own ones are stored in the metadata either way.
4. data    ids `ailot/{env}/{kind}-v0` with env the gymnasium id lowercased without version (Hopper-v5 ->
           hopper), written with Minari's create_dataset_from_buffers:
           random         uniform random actions, `random_transitions` steps
           medium         the medium snapshot's policy, actions sampled (as D4RL's collect_data.py)
           expert         the expert snapshot's policy, actions sampled
           medium-replay  the replay buffer up to the medium snapshot's step, in its original episodes
           medium-expert  medium's episodes followed by expert's
           Rollouts step `rollout_envs` envs together; episodes are kept whole in the order they end and the
           one that crosses the budget is cut there (truncated), as D4RL cut its last trajectory at num_data.

How D4RL made its locomotion data (Fu et al. 2020, arXiv:2004.07219, Sec. 5 and its wiki's Tasks page;
Farama-Foundation/D4RL scripts/generation/mujoco/collect_data.py and stitch_dataset.py): SAC (rlkit) trained
online; "medium" = 1M samples from a policy early-stopped at about 1/3 of the expert's performance, actions
sampled from the tanh-Gaussian policy; "medium-replay" = the replay buffer until the policy reached the medium
level; "expert" = 1M samples of the policy trained to completion; "medium-expert" = medium's trajectories then
expert's (2M); "random" = 1M steps of uniform actions. Defaults here follow that at 1M SAC steps per env.

SAC hyperparameters: SAC v2 (Haarnoja et al. 2018b, arXiv:1812.05905, Table 1) and CleanRL, shared by every
env. The SAC authors' softlearning (examples/development/variants.py) uses one set for Hopper, Walker2d and
HalfCheetah too (lr 3e-4, tau 5e-3, batch 256, [256, 256], target entropy -|A|); the one thing it sets per env is
the run length (1M steps Hopper, 3M Walker2d and HalfCheetah), which here is D4RL's 1M for all three
(`train_steps`); the target entropy -|A| is per env by construction (-3 Hopper, -6 Walker2d and HalfCheetah).

Every dataset stores the env spec (its `eval_env`), the reference scores and the settings as JSON under the
metadata key `ailot_collection`. Same settings and seed -> the same arrays, as far as MuJoCo is deterministic.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import flax.linen as nn
import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ailot import collect_recipe, cores
from ailot.data.generate import existing_settings
from ailot.errors import AilotInputError
from ailot.files import write_atomic
from ailot.learners import base
from ailot.learners.networks import MLP, TORCH_LINEAR_INIT, TwinCritic

KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")


# ------------------------------------------------------------------------------------------------------ SAC


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters (frozen: static jit data)."""

    actor_lr: float = 3e-4  # Adam lr of the policy (SAC paper v2, Haarnoja et al. 2018b, Table 1)
    critic_lr: float = 3e-4  # Adam lr of the twin Q (SAC paper v2 Table 1; CleanRL uses 1e-3)
    temp_lr: float = 3e-4  # Adam lr of log(alpha) (SAC paper v2 Table 1)
    hidden_dims: tuple[int, ...] = (256, 256)  # MLP widths of actor and critics (SAC paper v2 Table 1)
    discount: float = 0.99  # gamma (SAC paper v2 Table 1)
    tau: float = 0.005  # Polyak rate of the target critics, updated every step (SAC paper v2 Table 1)
    init_temperature: float = 1.0  # initial alpha (softlearning / CleanRL log_alpha = 0)
    target_entropy: float | None = None  # None: -action_dim (SAC paper v2 Table 1)
    log_std_min: float = -5.0  # tanh-squashed log-std range (CleanRL sac_continuous_action LOG_STD_MIN)
    log_std_max: float = 2.0  # (CleanRL LOG_STD_MAX)


class TanhGaussianActor(nn.Module):
    """obs [B, d] -> (mean [B, a], log_std [B, a]) of the pre-tanh Gaussian (CleanRL's Actor; its PyTorch
    nn.Linear default init, which also spares XLA the QR decompositions of an orthogonal init)."""

    hidden_dims: tuple[int, ...]
    action_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = MLP(self.hidden_dims, activate_final=True, kernel_init=TORCH_LINEAR_INIT)(observations)
        mean = nn.Dense(self.action_dim, kernel_init=TORCH_LINEAR_INIT)(h)
        log_std = jnp.tanh(nn.Dense(self.action_dim, kernel_init=TORCH_LINEAR_INIT)(h))
        return mean, self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1.0)


class Temperature(nn.Module):
    """alpha = exp(log_alpha), one learned scalar."""

    init_value: float = 1.0

    @nn.compact
    def __call__(self) -> jax.Array:
        return jnp.exp(self.param("log_alpha", lambda _: jnp.full((), math.log(self.init_value), jnp.float32)))


def tanh_gaussian_sample(mean, log_std, key, scale, bias) -> tuple[jax.Array, jax.Array]:
    """A reparameterised tanh-Gaussian action in env units [B, a] and its log-density [B]."""
    u = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    logp = jnp.sum(-0.5 * ((u - mean) * jnp.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi), -1)
    # log(1 - tanh(u)^2), stably: 2 (log 2 - u - softplus(-2u)); plus the rescaling to the action bounds
    logp -= jnp.sum(2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u)) + jnp.log(scale), -1)
    return jnp.tanh(u) * scale + bias, logp


class SAC(flax.struct.PyTreeNode):
    """Soft actor-critic state: actor, twin critics and their Polyak target, temperature, rng, config."""

    rng: jax.Array
    actor: Any  # TrainState of TanhGaussianActor
    critic: Any  # TrainState of TwinCritic
    target_critic_params: Any
    temp: Any  # TrainState of Temperature
    action_scale: jax.Array  # [a] (high - low) / 2
    action_bias: jax.Array  # [a] (high + low) / 2
    target_entropy: jax.Array  # float32 scalar; a leaf, not static: changing it does not recompile
    config: SACConfig = flax.struct.field(pytree_node=False)

    def sample(self, obs: jax.Array, key: jax.Array, params: Any = None) -> tuple[jax.Array, jax.Array]:
        mean, log_std = base.call(self.actor, obs, params=params)
        return tanh_gaussian_sample(mean, log_std, key, self.action_scale, self.action_bias)

    def critic_loss(self, batch: base.Batch, params: Any, key: jax.Array) -> tuple[jax.Array, base.Info]:
        next_a, next_logp = self.sample(batch["next_observations"], key)
        next_q = jnp.min(base.call(self.critic, batch["next_observations"], next_a,
                                   params=self.target_critic_params), axis=0)
        alpha = base.call(self.temp)
        target = batch["rewards"] + self.config.discount * (1.0 - batch["terminals"]) * (next_q - alpha * next_logp)
        q = base.call(self.critic, batch["observations"], batch["actions"], params=params)  # [2, B]
        loss = jnp.mean((q - jax.lax.stop_gradient(target)) ** 2, axis=1).sum()  # MSE(q1) + MSE(q2), CleanRL
        return loss, {"critic_loss": loss, "q_mean": q.mean()}

    def actor_loss(self, batch: base.Batch, params: Any, key: jax.Array) -> tuple[jax.Array, base.Info]:
        actions, logp = self.sample(batch["observations"], key, params)
        q = jnp.min(base.call(self.critic, batch["observations"], actions), axis=0)
        loss = jnp.mean(base.call(self.temp) * logp - q)
        return loss, {"actor_loss": loss, "entropy": -logp.mean()}

    def temp_loss(self, entropy: jax.Array, params: Any) -> tuple[jax.Array, base.Info]:
        alpha = base.call(self.temp, params=params)
        loss = alpha * (entropy - self.target_entropy)  # alpha falls while entropy exceeds the target
        return loss, {"temp_loss": loss, "alpha": alpha}

    @jax.jit
    def update(self, batch: base.Batch) -> tuple[SAC, base.Info]:
        """One step in the order of the SAC v2 / CleanRL loop: critics, actor, temperature, target."""
        rng, k_critic, k_actor = jax.random.split(self.rng, 3)
        critic, c_info = base.apply_loss(self.critic, lambda p: self.critic_loss(batch, p, k_critic))
        agent = self.replace(critic=critic)
        actor, a_info = base.apply_loss(agent.actor, lambda p: agent.actor_loss(batch, p, k_actor))
        temp, t_info = base.apply_loss(agent.temp, lambda p: agent.temp_loss(a_info["entropy"], p))
        target = base.polyak(critic.params, self.target_critic_params, self.config.tau)
        info = {**c_info, **a_info, **t_info}
        return agent.replace(rng=rng, actor=actor, temp=temp, target_critic_params=target), info

    @classmethod
    def create(cls, seed: int, obs_dim: int, action_low: Any, action_high: Any,
               config: SACConfig | None = None) -> SAC:
        config = config or SACConfig()
        low, high = base.resolve_bounds(len(np.atleast_1d(action_low)), action_low, action_high)
        action_dim = int(low.shape[0])
        rng, k_actor, k_critic = jax.random.split(jax.random.PRNGKey(seed), 3)
        obs, act = jnp.zeros((1, obs_dim), jnp.float32), jnp.zeros((1, action_dim), jnp.float32)
        actor_net = TanhGaussianActor(tuple(config.hidden_dims), action_dim, config.log_std_min, config.log_std_max)
        actor = _make_state(actor_net, k_actor, (obs,), base.make_optimizer(config.actor_lr))
        critic = _make_state(TwinCritic(tuple(config.hidden_dims), kernel_init=TORCH_LINEAR_INIT), k_critic, (obs, act),
                             base.make_optimizer(config.critic_lr))
        temp = _make_state(Temperature(config.init_temperature), k_critic, (), base.make_optimizer(config.temp_lr))
        target_entropy = jnp.float32(-action_dim if config.target_entropy is None else config.target_entropy)
        return cls(rng=rng, actor=actor, critic=critic, target_critic_params=critic.params, temp=temp,
                   action_scale=(high - low) / 2, action_bias=(high + low) / 2, target_entropy=target_entropy,
                   config=config)


# base.make_state run eagerly compiles every init op on its own (orthogonal init: QR, ...), tens of seconds on
# a busy CPU; jitted it is one compilation per network. Module and optimiser are static (hashable) arguments.
_make_state = jax.jit(base.make_state, static_argnums=(0, 3))


@jax.jit
def update_chunk(sac: SAC, batches: base.Batch) -> tuple[SAC, base.Info]:
    """One update per leading index of `batches` ([U, B, ...]) in a single lax.scan; infos averaged."""
    sac, infos = jax.lax.scan(lambda s, b: s.update(b), sac, batches)
    return sac, jax.tree.map(lambda x: x.mean(0), infos)


@partial(jax.jit, static_argnums=0)
def _policy_action(apply_fn, params, scale, bias, obs: jax.Array, key: jax.Array, deterministic: jax.Array):
    """Actions [B, a] for obs [B, d]: tanh(mean) (deterministic) or a tanh-Gaussian sample, in env units."""
    mean, log_std = apply_fn({"params": params}, obs)
    sampled, _ = tanh_gaussian_sample(mean, log_std, key, scale, bias)
    return jnp.where(deterministic, jnp.tanh(mean) * scale + bias, sampled)


def policy_fn(sac: SAC, actor_params: Any, deterministic: bool) -> Callable[[np.ndarray, jax.Array], np.ndarray]:
    """A `policy(obs [B, d], key) -> actions [B, a]` (float32) for ailot.evaluate and the rollouts; only the
    actor's params cross into the jitted call (not the whole SAC state: less per-step dispatch work)."""
    apply_fn, scale, bias, det = sac.actor.apply_fn, sac.action_scale, sac.action_bias, jnp.asarray(deterministic)
    return lambda obs, key: np.asarray(_policy_action(apply_fn, actor_params, scale, bias,
                                                      jnp.asarray(obs, jnp.float32), key, det))


# --------------------------------------------------------------------------------------------- settings


@dataclasses.dataclass(frozen=True)
class CollectSettings:
    """Everything that determines the training run and the datasets (stored in each dataset's metadata)."""

    env_id: str = "Hopper-v5"
    seed: int = 0
    train_steps: int = 1_000_000  # env steps of SAC training: D4RL's budget (module docstring)
    start_steps: int = 5_000  # uniform random actions before the first update (CleanRL learning_starts 5e3)
    update_every: int = 50  # env steps between update chunks; each chunk does that many updates (UTD 1)
    batch_size: int = 256  # (SAC paper v2 Table 1)
    max_episode_steps: int | None = None  # None: the env's own limit (1000 for MuJoCo locomotion, D4RL's max_path)
    eval_every: int = 10_000  # env steps between snapshots (each with a short evaluation for the log)
    eval_episodes: int = 5  # episodes of that log evaluation (the pick uses select_episodes)
    checkpoint_every: int = 50_000  # env steps between checkpoints (taken at the next episode end)
    select_every: int = 10_000  # spacing of the snapshots evaluated for the pick (a multiple of eval_every)
    select_episodes: int = 50  # episodes per snapshot evaluation before expert and medium are picked
    medium_fraction: float = 1 / 3  # medium = the snapshot nearest this fraction of the expert's return (D4RL: ~1/3)
    # the pick evaluates sampled actions, as the datasets roll out: an early snapshot's deterministic return can be
    # many times its sampled one (Walker2d after 2k steps: 92.8 against 7.5), so a deterministic pick overstates medium
    select_deterministic: bool = False
    references: str = "d4rl"  # ref scores the datasets carry: "d4rl" (D4RL's for the env) or "own" (measured here)
    reference_episodes: int = 50  # episodes per own reference return (random, expert), as ailot.data.generate
    random_transitions: int = 1_000_000  # D4RL: 1M
    medium_transitions: int = 1_000_000  # D4RL: 1M
    expert_transitions: int = 1_000_000  # D4RL: 1M
    rollout_envs: int = 10  # envs stepped together in the dataset rollouts (one batched policy call per step)
    sac: SACConfig = SACConfig()

    # the settings that training does not read: they may change after training without retraining
    _AFTER_TRAINING = ("select_every", "select_episodes", "medium_fraction", "select_deterministic", "references",
                       "reference_episodes", "random_transitions", "medium_transitions", "expert_transitions",
                       "rollout_envs")

    def train_dict(self) -> dict:
        """The settings training depends on."""
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        return {k: v for k, v in d.items() if k not in self._AFTER_TRAINING}

    def dataset_dict(self, kind: str) -> dict:
        """The settings dataset `kind` depends on: everything but the other kinds' sizes (the pick and the
        references reach every dataset through its reference scores)."""
        own = {"random": ("random",), "medium": ("medium",), "expert": ("expert",), "medium-replay": (),
               "medium-expert": ("medium", "expert")}[kind]
        d = json.loads(json.dumps(dataclasses.asdict(self)))
        for k in ("random", "medium", "expert"):
            if k not in own:
                d.pop(f"{k}_transitions")
        return d


# Training settings added after runs were made: a run's state.json without them had their default.
_TRAIN_KEYS_ADDED = {"max_episode_steps": None}
# ailot_collection metadata keys that are results, not settings (not compared when deciding to rewrite)
_DERIVED_KEYS = ("snapshots", "own_references", "stats")
REFERENCES = ("d4rl", "own")
# Envs stepped together in a snapshot evaluation: 50 HalfCheetah episodes took 6.3 s of CPU at 10 envs, 4.5 s
# at 25 and 4.1 s at 50 (2-core machine); 25 keeps a Hopper round from waiting long on one long episode.
EVAL_ENVS = 25


def env_name(env_id: str) -> str:
    """'Hopper-v5' -> 'hopper', 'ns/Half_Cheetah-v1' -> 'half-cheetah' (the dataset ids' middle part)."""
    return env_id.split("/")[-1].split("-v")[0].lower().replace("_", "-")


def dataset_id(env_id: str, kind: str) -> str:
    return f"ailot/{env_name(env_id)}/{kind}-v0"


def env_spec(s: CollectSettings):
    """The EnvSpec every stage uses (and the datasets record): the env's, with `max_episode_steps` if set."""
    from ailot.envs import env_spec_from

    spec = env_spec_from(s.env_id)
    return spec if s.max_episode_steps is None else dataclasses.replace(spec, max_episode_steps=s.max_episode_steps)


def d4rl_references(env_id: str) -> tuple[float, float] | None:
    """D4RL's (REF_MIN_SCORE, REF_MAX_SCORE) for a gymnasium locomotion id, None for other envs."""
    from ailot.data.reference import d4rl_reference

    return d4rl_reference(None, env_id)


def check_settings(s: CollectSettings) -> None:
    """Refuse bad inputs before any work: unknown env, non-Box spaces, non-positive sizes."""
    import gymnasium as gym

    for name in ("train_steps", "update_every", "batch_size", "eval_every", "eval_episodes", "checkpoint_every",
                 "select_every", "select_episodes", "reference_episodes", "random_transitions",
                 "medium_transitions", "expert_transitions", "rollout_envs"):
        value = getattr(s, name)
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise AilotInputError(name, f"is {value!r}", "use a positive integer")
    if s.max_episode_steps is not None and (not isinstance(s.max_episode_steps, (int, np.integer))
                                            or isinstance(s.max_episode_steps, bool) or s.max_episode_steps <= 0):
        raise AilotInputError("max_episode_steps", f"is {s.max_episode_steps!r}",
                              "use a positive integer, or leave it unset for the env's own limit")
    if not 0 <= s.start_steps <= s.train_steps:
        raise AilotInputError("start_steps", f"is {s.start_steps}", f"use a value in [0, train_steps={s.train_steps}]")
    if s.eval_every > s.train_steps:
        raise AilotInputError("eval_every", f"{s.eval_every} > train_steps {s.train_steps}",
                              "evaluate at least once during training (eval_every <= train_steps)")
    if s.select_every % s.eval_every:
        raise AilotInputError("select_every", f"{s.select_every} is not a multiple of eval_every {s.eval_every}",
                              "evaluate snapshots that exist: a multiple of eval_every")
    if not isinstance(s.select_deterministic, bool):
        raise AilotInputError("select_deterministic", f"is {s.select_deterministic!r}", "use true or false")
    if not 0 < s.medium_fraction < 1:
        raise AilotInputError("medium_fraction", f"is {s.medium_fraction!r}", "use a fraction in (0, 1), D4RL's 1/3")
    if s.references not in REFERENCES:
        raise AilotInputError("references", f"is {s.references!r}", f"use one of {', '.join(REFERENCES)}")
    if not s.sac.hidden_dims or min(s.sac.hidden_dims) < 1:
        raise AilotInputError("hidden_dims", f"is {s.sac.hidden_dims}", "use positive layer widths, e.g. 256 256")
    spec = env_spec(s)  # AilotInputError for an unknown id
    env = gym.make(spec)
    try:
        act, obs = env.action_space, env.observation_space
    finally:
        env.close()
    if not isinstance(act, gym.spaces.Box) or not np.all(np.isfinite(act.low)) or not np.all(np.isfinite(act.high)):
        raise AilotInputError(f"env {s.env_id!r}", f"has action space {act}, SAC needs a bounded Box",
                              "use a continuous-control env such as Hopper-v5")
    if not isinstance(obs, gym.spaces.Box) or len(obs.shape) != 1:
        raise AilotInputError(f"env {s.env_id!r}", f"has observation space {obs}, not a flat (1-d) Box",
                              "use an env with array observations such as Hopper-v5")
    if s.references == "d4rl" and d4rl_references(s.env_id) is None:
        raise AilotInputError(f"env {s.env_id!r}", "has no D4RL reference scores (D4RL has hopper, walker2d, "
                              "halfcheetah and ant)", "pass references='own' (--references own)")


# ------------------------------------------------------------------------------------- checkpoint files


def _write_json(path: Path, obj: Any) -> None:
    write_atomic(path, json.dumps(obj, indent=1, sort_keys=True).encode())


BUFFER_KEYS = {"observations": np.float64, "actions": np.float32, "rewards": np.float64,
               "next_observations": np.float64, "terminations": bool, "truncations": bool}


class ReplayBuffer:
    """All transitions of the run, in order ([N, ...] arrays, no wrap-around: medium-replay slices it)."""

    def __init__(self, capacity: int, obs_dim: int, action_dim: int):
        shapes = {"observations": (obs_dim,), "actions": (action_dim,), "next_observations": (obs_dim,)}
        self.data = {k: np.zeros((capacity, *shapes.get(k, ())), t) for k, t in BUFFER_KEYS.items()}
        self.size = 0

    def add(self, obs, action, reward, next_obs, terminated, truncated) -> None:
        i = self.size
        for k, v in zip(BUFFER_KEYS, (obs, action, reward, next_obs, terminated, truncated)):
            self.data[k][i] = v
        self.size += 1

    def sample(self, rng: np.random.Generator, num: int, batch_size: int) -> dict[str, np.ndarray]:
        """[num, batch_size, ...] float32 batches drawn uniformly with replacement (CleanRL's ReplayBuffer)."""
        idx = rng.integers(0, self.size, (num, batch_size))
        d = self.data
        return {"observations": d["observations"][idx].astype(np.float32), "actions": d["actions"][idx],
                "rewards": d["rewards"][idx].astype(np.float32),
                "next_observations": d["next_observations"][idx].astype(np.float32),
                "terminals": d["terminations"][idx].astype(np.float32)}

    def save(self, path: Path) -> None:
        write_atomic(path, lambda f: np.savez(f, **{k: v[: self.size] for k, v in self.data.items()}))

    def load(self, path: Path, size: int) -> None:
        with np.load(path) as z:
            for k in BUFFER_KEYS:
                self.data[k][:size] = z[k][:size]
        self.size = size


def load_buffer(work_dir: str | os.PathLike) -> dict[str, np.ndarray]:
    """The final replay buffer of a finished run in `work_dir` ({key: [N, ...]})."""
    state = json.loads((Path(work_dir) / "state.json").read_text())
    with np.load(Path(work_dir) / state["buffer_file"]) as z:
        return {k: z[k][: state["step"]] for k in BUFFER_KEYS}


def split_episodes(data: dict[str, np.ndarray], end: int) -> list[dict[str, np.ndarray]]:
    """Transitions [0, end) of a buffer as episodes (observations [T+1, d], ...); a cut last episode is
    marked truncated."""
    stops = np.flatnonzero(data["terminations"][:end] | data["truncations"][:end]) + 1
    if len(stops) == 0 or stops[-1] != end:
        stops = np.append(stops, end)
    out, start = [], 0
    for stop in stops:
        trunc = data["truncations"][start:stop].copy()
        trunc[-1] |= not data["terminations"][stop - 1]
        out.append({"observations": np.concatenate([data["observations"][start:stop],
                                                    data["next_observations"][stop - 1: stop]]),
                    "actions": data["actions"][start:stop], "rewards": data["rewards"][start:stop],
                    "terminations": data["terminations"][start:stop], "truncations": trunc})
        start = stop
    return out


# ------------------------------------------------------------------------------------------------ train


class Stop(Exception):
    """Raised by `train_sac` when `stop_after` steps are reached (after a checkpoint)."""


def _evaluate(sac: SAC, params: Any, spec, episodes: int, seed: int, deterministic: bool = True) -> np.ndarray:
    from ailot.evaluate import evaluate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate(policy_fn(sac, params, deterministic), spec, num_episodes=episodes,
                        num_envs=min(episodes, EVAL_ENVS), seed=seed).returns


def _subseed(s: CollectSettings, *tags: int) -> int:
    return int(np.random.SeedSequence([s.seed, *tags]).generate_state(1)[0] % (2**31 - 1))


def train_sac(s: CollectSettings, work_dir: Path, progress: bool = True, stop_after: int | None = None,
              log: Callable[[str], None] = print) -> dict:
    """Train (or resume, or skip when done) SAC; returns the run state (snapshots, step, segments)."""
    import gymnasium as gym
    from tqdm.auto import tqdm

    work_dir.mkdir(parents=True, exist_ok=True)
    state_path = work_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else None
    if state is not None:
        state["settings"] = {**_TRAIN_KEYS_ADDED, **state["settings"]}
        if state["settings"] != s.train_dict():
            raise AilotInputError(f"work dir {str(work_dir)!r}", "holds a run with other training settings "
                                  f"{state['settings']}", "use another --work-dir, the same settings, or --overwrite")
    if state is not None and state["training_done"]:
        return state
    spec = env_spec(s)
    env = gym.make(spec)
    obs_dim, action_dim = int(np.prod(env.observation_space.shape)), int(env.action_space.shape[0])
    low, high = env.action_space.low, env.action_space.high
    sac = SAC.create(s.seed, obs_dim, low, high, s.sac)
    buffer = ReplayBuffer(s.train_steps, obs_dim, action_dim)
    rng = np.random.default_rng(np.random.SeedSequence([s.seed, 0]))
    act_key = jax.random.PRNGKey(_subseed(s, 1))
    if state is None:
        state = {"settings": s.train_dict(), "step": 0, "segments": [], "snapshots": [], "training_done": False,
                 "episodes": 0}
    else:  # resume: every random stream and the buffer as of the checkpoint
        sac = flax.serialization.from_bytes(sac, (work_dir / state["sac_file"]).read_bytes())
        buffer.load(work_dir / state["buffer_file"], state["step"])
        rng.bit_generator.state = state["np_rng"]
        act_key = jnp.asarray(np.asarray(state["act_key"], np.uint32))
        log(f"ailot.collect: resuming training at step {state['step']} from {work_dir}")
    start = step = state["step"]
    state["segments"].append([start, start])
    timed_before = dict(state.get("timed") or {"steps": 0, "seconds": 0.0})
    (work_dir / "snapshots").mkdir(exist_ok=True)

    def checkpoint() -> None:
        sac_file, buffer_file = f"sac-{step}.msgpack", f"buffer-{step}.npz"
        write_atomic(work_dir / sac_file, flax.serialization.to_bytes(sac))
        buffer.save(work_dir / buffer_file)
        old = [state.get("sac_file"), state.get("buffer_file")]
        state.update(step=step, sac_file=sac_file, buffer_file=buffer_file, np_rng=rng.bit_generator.state,
                     act_key=np.asarray(act_key).tolist())
        state["segments"][-1][1] = step
        # wall time of training, over the steps it was measured on (runs before this record have none)
        state["timed"] = {"steps": timed_before["steps"] + step - start,
                          "seconds": round(timed_before["seconds"] + time.perf_counter() - t0, 1)}
        _write_json(state_path, state)  # the commit point: it names the files of this checkpoint
        for f in old:
            if f and f not in (sac_file, buffer_file):
                (work_dir / f).unlink(missing_ok=True)

    bar = tqdm(total=s.train_steps, initial=step, desc=f"SAC {s.env_id}", disable=not progress, unit="step")
    t0, last_ckpt, ep_return, last_eval = time.perf_counter(), step, 0.0, float("nan")
    obs, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
    try:
        while step < s.train_steps:
            if step < s.start_steps:
                action = rng.uniform(low, high).astype(np.float32)
            else:
                act_key, key = jax.random.split(act_key)
                action = policy_fn(sac, sac.actor.params, False)(obs[None], key)[0]
            next_obs, reward, terminated, truncated, _ = env.step(action)
            buffer.add(obs, action, reward, next_obs, terminated, truncated)
            ep_return += float(reward)
            step += 1
            bar.update(1)
            if step % s.update_every == 0 and step > s.start_steps:
                batches = buffer.sample(rng, s.update_every, s.batch_size)
                sac, _ = update_chunk(sac, batches)
            if step % s.eval_every == 0 or step == s.train_steps:
                returns = _evaluate(sac, sac.actor.params, spec, s.eval_episodes, _subseed(s, 2, step))
                path = work_dir / "snapshots" / f"actor-{step}.msgpack"
                write_atomic(path, flax.serialization.to_bytes(sac.actor.params))
                last_eval = float(returns.mean())
                state["snapshots"] = [x for x in state["snapshots"] if x["step"] != step] + [
                    {"step": step, "return_mean": last_eval, "return_std": float(returns.std()),
                     "file": str(path.relative_to(work_dir))}]
                rate = (step - start) / (time.perf_counter() - t0)
                bar.write(f"eval step={step} return={last_eval:.1f} +- {returns.std():.1f} "
                          f"steps/s={rate:.0f} elapsed={time.perf_counter() - t0:.0f}s")
            if terminated or truncated:
                state["episodes"] += 1
                bar.set_postfix(ep_return=f"{ep_return:.0f}", eval=f"{last_eval:.0f}")
                ep_return = 0.0
                if step - last_ckpt >= s.checkpoint_every or (stop_after is not None and step >= stop_after):
                    checkpoint()
                    last_ckpt = step
                    if stop_after is not None and step >= stop_after and step < s.train_steps:
                        raise Stop(f"stopped at step {step} (stop_after={stop_after})")
                obs, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
            else:
                obs = next_obs
        state["training_done"] = True
        checkpoint()
    finally:
        bar.close()
        env.close()
    return state


def recipe_replay_buffer(settings: CollectSettings, work: Path, medium: dict, progress: bool,
                         log: Callable[[str], None] = print) -> dict[str, np.ndarray]:
    """The replay buffer up to the medium snapshot for a work dir seeded from a recipe: SAC trained again, in
    work/replay (resumable), up to the first checkpoint at or after the medium step; its snapshot at that step
    must be the recipe's, or the buffer is not the one the recipe's medium-replay came from."""
    sub = work / "replay"
    log(f"ailot.collect: training SAC again up to the medium snapshot (step {medium['step']}) for medium-replay, "
        f"in {sub}")
    try:
        train_sac(settings, sub, progress, stop_after=medium["step"], log=log)
    except Stop:
        pass
    again, recorded = (sub / medium["file"]).read_bytes(), (work / medium["file"]).read_bytes()
    if again != recorded:
        raise AilotInputError(f"the SAC retrained in {str(sub)!r}", f"differs from the recipe's at step "
                              f"{medium['step']}: this machine's MuJoCo or XLA numerics are not the recipe's (XLA's "
                              f"differ with its CPU thread count, here {len(os.sched_getaffinity(0))}, and the CPU's "
                              "instruction set)",
                              "run the full collection here (without --from-recipe); its medium-replay will differ")
    log(f"ailot.collect: the retrained actor at step {medium['step']} is the recipe's, byte for byte")
    return load_buffer(sub)


# -------------------------------------------------------------------------------------------------- select


def pick(evals: list[dict], medium_fraction: float = 1 / 3) -> tuple[dict, dict]:
    """(expert, medium) from snapshot evaluations [{'step', 'return_mean', ...}].

    expert = the best mean return (the later snapshot on a tie). medium = D4RL's early-stopped policy: among the
    snapshots taken before the expert's, the one whose mean return is nearest `medium_fraction` (1/3) of the
    expert's (the earlier on a tie), so medium-replay (the buffer up to it) is the data "until the policy reaches
    the medium level"; the expert itself when it is the first snapshot.
    """
    expert = max(evals, key=lambda x: (x["return_mean"], x["step"]))
    before = [x for x in evals if x["step"] < expert["step"]] or [expert]
    target = medium_fraction * expert["return_mean"]
    medium = min(before, key=lambda x: (abs(x["return_mean"] - target), x["step"]))
    return expert, medium


def selection_steps(s: CollectSettings, snapshots: list[dict]) -> list[int]:
    """Steps of the snapshots that get the selection evaluation: every `select_every`, and the last."""
    steps = sorted(x["step"] for x in snapshots)
    return [t for t in steps if t % s.select_every == 0 or t == steps[-1]]


def select_snapshots(s: CollectSettings, work: Path, state: dict, sac: SAC, progress: bool = True,
                     log: Callable[[str], None] = print) -> list[dict]:
    """Evaluate the selection snapshots on `select_episodes` episodes each; every result is
    written to selection.json as soon as it is made, so a rerun evaluates only the missing ones."""
    from tqdm.auto import tqdm

    path = work / "selection.json"
    done = json.loads(path.read_text()) if path.exists() else {}
    files = {x["step"]: x for x in state["snapshots"]}
    steps = selection_steps(s, state["snapshots"])
    spec = env_spec(s)
    out = []
    what = {"episodes": s.select_episodes, "deterministic": s.select_deterministic}
    todo = [t for t in steps if {k: done.get(str(t), {}).get(k) for k in what} != what]
    if todo:
        log(f"ailot.collect: evaluating {len(todo)} of {len(steps)} snapshots on {s.select_episodes} episodes "
            f"({'deterministic' if s.select_deterministic else 'sampled'} actions)")
    t0 = time.perf_counter()
    for step in tqdm(steps, desc=f"select {s.env_id}", disable=not progress or not todo, unit="snapshot"):
        key = str(step)
        if step in todo:
            params = flax.serialization.from_bytes(sac.actor.params, (work / files[step]["file"]).read_bytes())
            returns = _evaluate(sac, params, spec, s.select_episodes, _subseed(s, 6, step), s.select_deterministic)
            done[key] = {"step": step, "episodes": s.select_episodes, "deterministic": s.select_deterministic,
                         "return_mean": float(returns.mean()),
                         "return_std": float(returns.std()), "train_eval_return": files[step]["return_mean"]}
            _write_json(path, done)
        out.append({**done[key], "file": files[step]["file"]})
    if todo:
        log(f"ailot.collect: selection evaluation took {time.perf_counter() - t0:.0f}s")
    return out


# --------------------------------------------------------------------------------------------- datasets


def _rollouts(spec, policy, n: int, seed: int, num_envs: int, bar) -> list[dict]:
    """`n` transitions of `policy(obs [B, d], key) -> actions [B, a]` from `num_envs` envs stepped together,
    as episodes (observations [T+1, d], ...) in the order they end. The episode that reaches `n` is cut there
    and marked truncated; episodes still running then are dropped (each at most one episode long)."""
    import gymnasium as gym

    rng = np.random.default_rng(seed)
    key = jax.random.PRNGKey(seed)
    envs = [gym.make(spec) for _ in range(num_envs)]
    fields = ("actions", "rewards", "terminations", "truncations")

    def fresh(env):
        obs, _ = env.reset(seed=int(rng.integers(2**31 - 1)))
        return {"observations": [obs], **{k: [] for k in fields}}

    try:
        runs = [fresh(env) for env in envs]
        episodes, total = [], 0
        while total < n:
            key, sub = jax.random.split(key)
            actions = np.asarray(policy(np.stack([r["observations"][-1] for r in runs]).astype(np.float32), sub),
                                 np.float32)
            for i, env in enumerate(envs):
                obs, reward, terminated, truncated, _ = env.step(actions[i])
                run = runs[i]
                for k, v in zip(("observations", *fields), (obs, actions[i], reward, terminated, truncated)):
                    run[k].append(v)
                if terminated or truncated:
                    episodes.append({k: np.asarray(v) for k, v in run.items()})
                    total += len(run["rewards"])
                    bar.update(len(run["rewards"]))
                    if total >= n:
                        break
                    runs[i] = fresh(env)
    finally:
        for env in envs:
            env.close()
    cut = len(episodes[-1]["rewards"]) - (total - n)
    if cut < len(episodes[-1]["rewards"]):
        last = {k: v[: cut + 1] if k == "observations" else v[:cut].copy() for k, v in episodes[-1].items()}
        last["terminations"][-1], last["truncations"][-1] = False, True
        episodes[-1] = {**last, "cut": True}  # not stored; keeps it out of the dataset's mean return
    return episodes


def _stats(episodes: list[dict], refs: tuple[float, float]) -> dict:
    """Mean episode return and its D4RL normalized score (the number D4RL's dataset tables give), without a
    rollout's cut last episode, which would pull the mean down."""
    from ailot.data.reference import normalized_score

    whole = [ep for ep in episodes if not ep.get("cut")] or episodes
    returns = np.array([float(np.sum(ep["rewards"])) for ep in whole])
    return {"episodes": len(episodes), "transitions": int(sum(len(ep["rewards"]) for ep in episodes)),
            "return_mean": float(returns.mean()),
            "normalized_score_mean": float(normalized_score(returns, *refs).mean())}


# XLA's CPU numerics depend on its thread count, which it takes from the process's cores when it starts: one SAC
# update of the default networks already differs between one core and two. The committed recipes were made on two
# (results/README.md), so a collection runs on two cores on any machine and the same data comes out.
XLA_CORES = 2


def hold_xla_cores(log: Callable[[str], None] = print) -> int:
    """Pin this process to XLA_CORES cores before JAX starts; says so where the numerics cannot be the recipes'."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        log(f"ailot.collect: warning: JAX started before the collection, on the cores it had then; the datasets "
            f"match recipes made on {XLA_CORES} cores only if that was {XLA_CORES}")
        return len(os.sched_getaffinity(0))
    n = cores.hold_exactly(XLA_CORES)
    if n != XLA_CORES:
        log(f"ailot.collect: warning: {n} core(s) here, the recipes were made on {XLA_CORES}: XLA's numerics differ "
            f"with its thread count, so the SAC run and its datasets will not be the recipes' bit for bit")
    return n


def collect(settings: CollectSettings | None = None, work_dir: str | os.PathLike | None = None,
            root: str | os.PathLike | None = None, *, overwrite: bool = False, progress: bool = True,
            stop_after: int | None = None, train_only: bool = False, recipe: str | os.PathLike | None = None,
            save_recipe: str | os.PathLike | None = None, log: Callable[[str], None] = print) -> dict:
    """Run every stage not yet done; returns {'ids': {kind: id}, 'refs': (min, max), 'own_refs': (min, max),
    'selection': [...], 'medium': ..., 'expert': ..., 'stats': {kind: ...}, 'state': ...}.

    `root` sets MINARI_DATASETS_PATH for this process; `work_dir` (default ~/.cache/ailot/collect/{env}-seed{seed})
    holds checkpoints, snapshots and the selection and reference results. `stop_after` ends training (raising
    `Stop`) at the first checkpoint at or after that many env steps; a rerun resumes there. Existing datasets
    with other settings need `overwrite`, which replaces them, and the run in `work_dir` too when its training
    settings differ (a change of the pick or the sizes alone keeps training and the selection).
    `recipe`: a folder `save_recipe` wrote (ailot.collect_recipe): the datasets are rebuilt from its actors and
    records, SAC trained again only up to the medium snapshot (for medium-replay), and checked against its
    fingerprints. `save_recipe`: write this collection's recipe there once its datasets are written.
    """
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.storage import get_dataset_path
    from tqdm.auto import tqdm

    s = settings or CollectSettings()
    check_settings(s)
    if recipe is not None and (train_only or stop_after is not None):
        raise AilotInputError("--from-recipe", "rebuilds the datasets: there is no training run to stop or keep",
                              "drop --train-only / --stop-after")
    hold_xla_cores(log)
    if root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(root)
    work = Path(work_dir or Path.home() / ".cache" / "ailot" / "collect" / f"{env_name(s.env_id)}-seed{s.seed}")
    ids = {kind: dataset_id(s.env_id, kind) for kind in KINDS}
    todo = []
    for kind in KINDS:  # before training: a clash must not surface after an hour of it
        have = existing_settings(ids[kind], "ailot_collection")
        if have is None:
            todo.append(kind)
        elif {k: v for k, v in have.items() if k not in _DERIVED_KEYS} != s.dataset_dict(kind):
            if not overwrite:
                raise AilotInputError(f"dataset {ids[kind]!r}", f"exists with other settings {have}",
                                      "pass overwrite=True (--overwrite) to replace it, or use another --root")
            todo.append(kind)
    if overwrite and (work / "state.json").exists():
        trained = {**_TRAIN_KEYS_ADDED, **json.loads((work / "state.json").read_text())["settings"]}
        if trained != s.train_dict():  # another training run: start afresh (its selection and references too)
            shutil.rmtree(work)
    from_recipe = collect_recipe.seed_work_dir(Path(recipe), work, s) if recipe is not None else None
    state = train_sac(s, work, progress, stop_after, log)
    if train_only:
        return {"ids": ids, "snapshots": state["snapshots"], "state": state, "work_dir": str(work)}

    spec = env_spec(s)
    env = gym.make(spec)
    obs_dim = int(np.prod(env.observation_space.shape))
    sac = SAC.create(s.seed, obs_dim, env.action_space.low, env.action_space.high, s.sac)
    env.close()
    selection = select_snapshots(s, work, state, sac, progress, log)
    expert, medium = pick(selection, s.medium_fraction)
    log(f"ailot.collect: expert = step {expert['step']} (return {expert['return_mean']:.1f} +- "
        f"{expert['return_std']:.1f} over {s.select_episodes} episodes), medium = step {medium['step']} (return "
        f"{medium['return_mean']:.1f}, target {s.medium_fraction:.3g} of the expert's: "
        f"{s.medium_fraction * expert['return_mean']:.1f})")
    params = {name: flax.serialization.from_bytes(sac.actor.params, (work / x["file"]).read_bytes())
              for name, x in (("medium", medium), ("expert", expert))}
    chosen = {"medium": medium, "expert": expert}

    def random_policy(obs: np.ndarray, key: jax.Array) -> np.ndarray:
        u = jax.random.uniform(key, (len(obs), len(sac.action_scale)), minval=-1.0, maxval=1.0)
        return np.asarray(u * sac.action_scale + sac.action_bias, np.float32)

    # own references: keyed by what they measure, so a new pick or episode count measures them again
    refs_path = work / "references.json"
    refs_key = {"episodes": s.reference_episodes, "expert_step": expert["step"],
                "deterministic": s.select_deterministic}
    own = json.loads(refs_path.read_text()) if refs_path.exists() else None
    if own is None or {k: own.get(k) for k in refs_key} != refs_key:
        from ailot.evaluate import evaluate

        lo = evaluate(random_policy, spec, num_episodes=s.reference_episodes,
                      num_envs=min(EVAL_ENVS, s.reference_episodes), seed=_subseed(s, 3)).returns
        hi = _evaluate(sac, params["expert"], spec, s.reference_episodes, _subseed(s, 4), s.select_deterministic)
        own = {**refs_key, "ref_min_score": float(lo.mean()), "ref_max_score": float(hi.mean())}
        _write_json(refs_path, own)
    own_refs = (own["ref_min_score"], own["ref_max_score"])
    ref = d4rl_references(s.env_id) if s.references == "d4rl" else own_refs
    log(f"ailot.collect: reference scores {ref} ({s.references}); own random / expert returns "
        f"{own_refs[0]:.1f} / {own_refs[1]:.1f}")
    common = dict(eval_env=spec, env=spec, algorithm_name="ailot SAC (JAX)", author="ailot", ref_min_score=ref[0],
                  ref_max_score=ref[1], num_episodes_average_score=s.reference_episodes,
                  requirements=[f"gymnasium>={gym.__version__}"])
    stats = {}

    def write(kind: str, episodes: list[dict], description: str) -> None:
        stats[kind] = _stats(episodes, ref)
        if kind not in todo:
            return
        if existing_settings(ids[kind], "ailot_collection") is not None:
            shutil.rmtree(get_dataset_path(ids[kind]))
        buf = [EpisodeBuffer(id=i, **{k: v for k, v in ep.items() if k != "cut"}) for i, ep in enumerate(episodes)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # missing author e-mail / permalink warnings
            dataset = minari.create_dataset_from_buffers(dataset_id=ids[kind], buffer=buf, description=description,
                                                         **common)
        meta = {**s.dataset_dict(kind), "snapshots": chosen, "stats": stats[kind],
                "own_references": {"ref_min_score": own_refs[0], "ref_max_score": own_refs[1]}}
        dataset.storage.update_metadata({"ailot_collection": json.dumps(meta, sort_keys=True)})
        log(f"ailot.collect: wrote {ids[kind]} ({dataset.total_steps} transitions, {dataset.total_episodes} "
            f"episodes, mean return {stats[kind]['return_mean']:.1f}, normalized "
            f"{stats[kind]['normalized_score_mean']:.1f}) -> {get_dataset_path(ids[kind])}")

    def rollout(kind: str, policy, n: int, tag: int) -> list[dict]:
        if kind not in todo:
            return _episodes_of(ids[kind])
        with tqdm(total=n, desc=ids[kind], disable=not progress, unit="step") as bar:
            return _rollouts(spec, policy, n, _subseed(s, 5, tag), s.rollout_envs, bar)

    if "random" in todo:
        write("random", rollout("random", random_policy, s.random_transitions, 0), "Uniform random actions.")
    parts = {}
    for tag, (kind, x) in enumerate((("medium", medium), ("expert", expert)), start=1):
        if kind not in todo and "medium-expert" not in todo:
            continue
        parts[kind] = rollout(kind, policy_fn(sac, params[kind], False), getattr(s, f"{kind}_transitions"), tag)
        why = (f"closest to {s.medium_fraction:.3g} of the expert's among the earlier snapshots" if kind == "medium"
               else "the best")
        write(kind, parts[kind], f"SAC snapshot at step {x['step']} (mean return {x['return_mean']:.1f} over "
              f"{s.select_episodes} episodes; {why}), actions sampled from the policy.")
    if "medium-replay" in todo:
        # a work dir seeded from a recipe has no buffer: SAC is trained again up to the medium snapshot
        buffer = load_buffer(work) if "buffer_file" in state else recipe_replay_buffer(s, work, medium, progress, log)
        write("medium-replay", split_episodes(buffer, medium["step"]),
              f"SAC replay buffer up to the medium snapshot (step {medium['step']}), in its episodes.")
    if "medium-expert" in todo:
        write("medium-expert", parts["medium"] + parts["expert"],
              "The medium dataset's episodes followed by the expert dataset's.")
    same_as_recipe = collect_recipe.check_fingerprints(from_recipe, ids, log) if from_recipe else None
    if save_recipe is not None:
        collect_recipe.save_recipe(work, Path(save_recipe), s, medium, expert, ids, log)
    return {"ids": ids, "refs": ref, "own_refs": own_refs, "selection": selection, "snapshots": state["snapshots"],
            "medium": medium, "expert": expert, "stats": stats, "state": state, "same_as_recipe": same_as_recipe}


def _episodes_of(dataset_id_: str) -> list[dict]:
    import minari

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = minari.load_dataset(dataset_id_)
    return [{"observations": ep.observations, "actions": ep.actions, "rewards": ep.rewards,
             "terminations": ep.terminations, "truncations": ep.truncations} for ep in ds.iterate_episodes()]


# ---------------------------------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ailot.collect", description=__doc__.split("\n\n")[0])
    d = CollectSettings()
    p.add_argument("--env", default=d.env_id, help="gymnasium env id with a Box action space")
    p.add_argument("--seed", type=int, default=d.seed)
    for name in ("train_steps", "start_steps", "update_every", "batch_size", "max_episode_steps", "eval_every",
                 "eval_episodes", "checkpoint_every", "select_every", "select_episodes", "reference_episodes",
                 "random_transitions", "medium_transitions", "expert_transitions", "rollout_envs"):
        p.add_argument(f"--{name.replace('_', '-')}", type=int, default=None, help=f"default {getattr(d, name)}")
    p.add_argument("--medium-fraction", type=float, default=None,
                   help=f"medium = the snapshot nearest this fraction of the expert's return ({d.medium_fraction:.4g})")
    p.add_argument("--select-deterministic", action="store_true", default=None,
                   help="pick expert and medium by tanh(mean) actions instead of sampled ones (the datasets')")
    p.add_argument("--references", choices=REFERENCES, default=None,
                   help=f"reference scores the datasets carry: D4RL's for the env or our own (default {d.references})")
    p.add_argument("--hidden", type=int, nargs="+", default=None, help="MLP widths (default 256 256)")
    p.add_argument("--work-dir", default=None, help="checkpoints/snapshots (default ~/.cache/ailot/collect/...)")
    p.add_argument("--root", default=None, help="datasets folder (sets MINARI_DATASETS_PATH)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace datasets made with other settings (and the run in --work-dir if trained otherwise)")
    p.add_argument("--stop-after", type=int, default=None, help="stop training at the first checkpoint after N steps")
    p.add_argument("--train-only", action="store_true", help="train (and snapshot) only; write no datasets")
    p.add_argument("--save-recipe", default=None, metavar="DIR",
                   help="after the datasets, save what rebuilds them (actors, records, fingerprints) to DIR")
    p.add_argument("--from-recipe", default=None, metavar="DIR",
                   help="rebuild the datasets from a saved recipe: SAC trained only up to the medium snapshot")
    p.add_argument("--quick", action="store_true", help="smoke size: 5000 steps, 1000-step datasets, [64, 64]")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    base_settings = (dict(train_steps=5000, start_steps=1000, eval_every=1000, checkpoint_every=1000,
                          select_every=1000, select_episodes=5, reference_episodes=5, random_transitions=1000,
                          medium_transitions=1000, expert_transitions=1000) if args.quick else {})
    overrides = {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(d)} and v is not None}
    sac = SACConfig(hidden_dims=tuple(args.hidden) if args.hidden else ((64, 64) if args.quick else (256, 256)))
    try:
        settings = CollectSettings(env_id=args.env, **{**base_settings, **overrides}, sac=sac)
        out = collect(settings, args.work_dir, args.root, overwrite=args.overwrite, progress=not args.no_progress,
                      stop_after=args.stop_after, train_only=args.train_only, recipe=args.from_recipe,
                      save_recipe=args.save_recipe)
    except AilotInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Stop as exc:
        print(f"ailot.collect: {exc}; rerun the same command to resume")
        return 0
    if args.train_only:
        print(f"ailot.collect: training done ({settings.train_steps} steps); checkpoints and snapshots in "
              f"{out['work_dir']}; rerun without --train-only to write the datasets")
    else:
        print(f"ailot.collect: references {out.get('refs')}; datasets {sorted(out['ids'].values())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
