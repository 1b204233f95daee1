"""Diffusion-QL (Wang, Hunt & Zhou, ICLR 2023), following Zhendong-Wang/Diffusion-Policies-for-Offline-RL.

The policy is a T-step DDPM (VP schedule) over actions conditioned on the state. Per update, in the
reference's order (agents/ql_diffusion.py): twin Q regresses on r + gamma * mask * min Q_target(s', a')
with a' sampled from the EMA policy; the policy minimises the denoising loss minus
eta * Q(s, a_new) / mean|Q_other(s, a_new)|, with a_new sampled through the full reverse chain
(differentiated end to end) and the Q member picked by a coin flip; then EMA and Polyak targets.

Rewards and presets follow the reference's per-task table (main.py `hyperparameters`) per task family:
raw rewards on gym locomotion (reward_tune 'no'), (r - 0.5) * 4 and the max-Q backup on antmaze
(reward_tune 'cql_antmaze', max_q_backup True in 5 of its 6 antmaze rows). `REFERENCE_HYPERPARAMETERS` holds
the per-task rows; `reference_overrides(task)` turns one into config overrides for a one-dataset sweep.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from ailot.errors import AilotInputError
from ailot.learners import base
from ailot.learners.networks import TORCH_LINEAR_INIT, NoiseModel, TwinCritic

SELECTIONS = ("softmax", "argmax")
# config.reward_scaling: "reference" = `DiffusionQL.reward_scalings` per family, "iql" = IQL's preprocessing
# (what ailot used for Diffusion-QL before following the reference), or a base.REWARD_SCALINGS mode by name.
REWARD_CHOICES = ("reference", "iql", *base.REWARD_SCALINGS)

# The reference's per-task rows (Diffusion-Policies-for-Offline-RL main.py `hyperparameters`, D4RL gym v2 and
# antmaze v0): lr, eta, max_q_backup, reward_tune, gn (grad-norm clip), top_k (its offline checkpoint rule).
REFERENCE_HYPERPARAMETERS: dict[str, dict[str, Any]] = {
    "halfcheetah-medium-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_tune="no", gn=9.0, top_k=1),
    "hopper-medium-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_tune="no", gn=9.0, top_k=2),
    "walker2d-medium-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_tune="no", gn=1.0, top_k=1),
    "halfcheetah-medium-replay-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_tune="no", gn=2.0, top_k=0),
    "hopper-medium-replay-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_tune="no", gn=4.0, top_k=2),
    "walker2d-medium-replay-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_tune="no", gn=4.0, top_k=1),
    "halfcheetah-medium-expert-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_tune="no", gn=7.0, top_k=0),
    "hopper-medium-expert-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_tune="no", gn=5.0, top_k=2),
    "walker2d-medium-expert-v2": dict(lr=3e-4, eta=1.0, max_q_backup=False, reward_tune="no", gn=5.0, top_k=1),
    "antmaze-umaze-v0": dict(lr=3e-4, eta=0.5, max_q_backup=False, reward_tune="cql_antmaze", gn=2.0, top_k=2),
    "antmaze-umaze-diverse-v0": dict(lr=3e-4, eta=2.0, max_q_backup=True, reward_tune="cql_antmaze", gn=3.0, top_k=2),
    "antmaze-medium-play-v0": dict(lr=1e-3, eta=2.0, max_q_backup=True, reward_tune="cql_antmaze", gn=2.0, top_k=1),
    "antmaze-medium-diverse-v0": dict(lr=3e-4, eta=3.0, max_q_backup=True, reward_tune="cql_antmaze", gn=1.0,
                                      top_k=1),
    "antmaze-large-play-v0": dict(lr=3e-4, eta=4.5, max_q_backup=True, reward_tune="cql_antmaze", gn=10.0, top_k=2),
    "antmaze-large-diverse-v0": dict(lr=3e-4, eta=3.5, max_q_backup=True, reward_tune="cql_antmaze", gn=7.0,
                                     top_k=1),
}
_REWARD_TUNE = {"no": "none", "cql_antmaze": "cql_antmaze"}  # reference reward_tune -> base.scale_rewards mode


@dataclasses.dataclass(frozen=True)
class DiffusionQLConfig:
    """Diffusion-QL hyperparameters (frozen, hashable)."""

    lr: float = 3e-4  # Adam lr of the diffusion policy (reference main.py hyperparameters, locomotion rows)
    critic_lr: float = 3e-4  # Adam lr of the twin Q (hard-coded in reference ql_diffusion.py)
    hidden_dims: tuple[int, ...] = (256, 256, 256)  # Mish MLP widths of denoiser and critics (reference model.py)
    time_dim: int = 16  # sinusoidal time-embedding width (reference model.py t_dim)
    n_timesteps: int = 5  # diffusion steps T with the VP beta schedule (paper Sec. 4; reference --T)
    discount: float = 0.99  # gamma (reference --discount)
    tau: float = 0.005  # Polyak rate of the target critic (reference --tau)
    eta: float = 1.0  # weight of the normalised Q term: 1.0 locomotion, 0.5-4.5 antmaze (reference main.py)
    grad_norm: float = 5.0  # global grad-norm clip of actor and critic, <= 0 off (reference gn: 1-9 on
    #                         locomotion, median 5)
    ema_decay: float = 0.995  # EMA rate of the target policy (reference ql_diffusion.py ema_decay)
    step_start_ema: int = 1000  # EMA updates start after this many steps (reference step_start_ema)
    update_ema_every: int = 5  # EMA update period in steps (reference update_ema_every)
    max_q_backup: bool = False  # target = max over sampled next actions (reference: on for antmaze only)
    max_q_samples: int = 10  # next-action samples for the max-Q backup (reference repeats=10)
    num_action_samples: int = 50  # candidates per state when acting (reference sample_action)
    action_selection: str = "softmax"  # pick a candidate by softmax over min Q_target (reference) or argmax
    lr_decay: bool = False  # cosine lr decay over max_steps; off because the reference steps its scheduler once
    #                         per 50 epochs against T_max = num_epochs, so its lr barely moves
    max_steps: int = 1_000_000  # cosine-decay horizon = total updates (DESIGN 1e6; reference 1e6-2e6)
    # Reward preprocessing (read by learners.reward_scaling before training): "reference" follows the reference
    # per family (raw on locomotion, (r - 0.5) * 4 on antmaze; maze2d raw, our choice); "iql" is what ailot
    # did before, IQL's (x 1000 / return span on locomotion, r - 1 on antmaze); or a scale_rewards mode.
    reward_scaling: str = "reference"

    def validate(self) -> None:
        for key in ("lr", "critic_lr"):
            base.require(getattr(self, key) > 0, "diffusion_ql", key, getattr(self, key), "a positive number")
        base.require(
            self.time_dim >= 4 and self.time_dim % 2 == 0, "diffusion_ql", "time_dim", self.time_dim, "an even int >= 4"
        )
        base.require(self.n_timesteps >= 1, "diffusion_ql", "n_timesteps", self.n_timesteps, "a positive int")
        base.require(0.0 <= self.discount <= 1.0, "diffusion_ql", "discount", self.discount, "a value in [0, 1]")
        base.require(0.0 < self.tau <= 1.0, "diffusion_ql", "tau", self.tau, "a value in (0, 1]")
        base.require(self.eta >= 0.0, "diffusion_ql", "eta", self.eta, "a non-negative number")
        base.require(0.0 <= self.ema_decay < 1.0, "diffusion_ql", "ema_decay", self.ema_decay, "a value in [0, 1)")
        base.require(self.step_start_ema >= 0, "diffusion_ql", "step_start_ema", self.step_start_ema, "an int >= 0")
        for key in ("update_ema_every", "max_q_samples", "num_action_samples", "max_steps"):
            base.require(getattr(self, key) >= 1, "diffusion_ql", key, getattr(self, key), "a positive int")
        base.require(self.reward_scaling in REWARD_CHOICES, "diffusion_ql", "reward_scaling", self.reward_scaling,
                     f"one of {', '.join(REWARD_CHOICES)}")
        base.require(
            self.action_selection in SELECTIONS,
            "diffusion_ql",
            "action_selection",
            self.action_selection,
            f"one of {', '.join(SELECTIONS)}",
        )


def get_config(task_family: str = "locomotion") -> DiffusionQLConfig:
    """Diffusion-QL defaults for a task family (one row of `REFERENCE_HYPERPARAMETERS` stands for each).

    locomotion: eta 1.0 (every reference row) and gn 5.0 (the median of its rows, 1-9). antmaze: the
    antmaze-umaze-diverse row, eta 2.0, gn 3.0 and the max-Q backup (`max_q_backup: false` is what ailot used
    before). maze2d (no reference row; our choice): eta 2.0 and gn 3.0 as antmaze, one-sample backup, and raw
    rewards, unchanged, so the committed pointmaze-dql results stay reproducible.
    """
    family = base.check_family(task_family)
    if family == "antmaze":
        return DiffusionQLConfig(eta=2.0, grad_norm=3.0, max_q_backup=True)
    if family == "maze2d":
        return DiffusionQLConfig(eta=2.0, grad_norm=3.0)
    return DiffusionQLConfig()


def reference_overrides(task: str) -> dict[str, Any]:
    """Config overrides reproducing the reference's row for D4RL `task` (e.g. "hopper-medium-v2"): lr, eta,
    grad_norm, max_q_backup, reward_scaling. A sweep's learners section applies to all its datasets, so per-task
    rows need one sweep (or one learners entry) per task."""
    if task not in REFERENCE_HYPERPARAMETERS:
        raise AilotInputError(f"task {task!r}", "has no row in the Diffusion-QL reference",
                              f"use one of: {', '.join(REFERENCE_HYPERPARAMETERS)}")
    row = REFERENCE_HYPERPARAMETERS[task]
    return {"lr": row["lr"], "eta": row["eta"], "grad_norm": row["gn"], "max_q_backup": row["max_q_backup"],
            "reward_scaling": _REWARD_TUNE[row["reward_tune"]]}


@functools.lru_cache(maxsize=8)
def vp_schedule(n_timesteps: int) -> dict[str, np.ndarray]:
    """DDPM constants [T] for the VP beta schedule (reference helpers.vp_beta_schedule), float32."""
    t = np.arange(1, n_timesteps + 1, dtype=np.float64)
    b_min, b_max, big_t = 0.1, 10.0, float(n_timesteps)
    alpha = np.exp(-b_min / big_t - 0.5 * (b_max - b_min) * (2 * t - 1) / big_t**2)
    betas = 1.0 - alpha
    alphas_cumprod = np.cumprod(1.0 - betas)
    prev = np.concatenate([[1.0], alphas_cumprod[:-1]])
    post_var = betas * (1.0 - prev) / (1.0 - alphas_cumprod)
    out = {
        "sqrt_ac": np.sqrt(alphas_cumprod),
        "sqrt_1m_ac": np.sqrt(1.0 - alphas_cumprod),
        "sqrt_recip_ac": np.sqrt(1.0 / alphas_cumprod),
        "sqrt_recipm1_ac": np.sqrt(1.0 / alphas_cumprod - 1.0),
        "post_log_var": np.log(np.maximum(post_var, 1e-20)),
        "post_coef1": betas * np.sqrt(prev) / (1.0 - alphas_cumprod),
        "post_coef2": (1.0 - prev) * np.sqrt(1.0 - betas) / (1.0 - alphas_cumprod),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


class DiffusionQL(flax.struct.PyTreeNode):
    """Diffusion-QL state: denoiser + EMA copy, twin critic + target, rng, step and the static config."""

    name: ClassVar[str] = "diffusion_ql"
    default_config: ClassVar = staticmethod(get_config)
    # The reference's reward_tune per family (config.reward_scaling "reference"): 'no' on gym locomotion,
    # 'cql_antmaze' on antmaze; maze2d, which it does not run, keeps raw rewards.
    reward_scalings: ClassVar[dict] = {"locomotion": "none", "antmaze": "cql_antmaze", "maze2d": "none"}

    rng: jax.Array
    step: jax.Array
    actor: Any  # TrainState of NoiseModel
    ema_actor_params: Any
    critic: Any  # TrainState of TwinCritic
    target_critic_params: Any
    action_low: jax.Array  # [a]
    action_high: jax.Array  # [a]
    obs_dim: int = flax.struct.field(pytree_node=False)
    config: DiffusionQLConfig = flax.struct.field(pytree_node=False)

    def sample(self, params: Any, observations: jax.Array, key: jax.Array) -> jax.Array:
        """Reverse diffusion from N(0, I): obs [N, d] -> actions [N, a] inside the bounds.

        Like the reference, the predicted x_0 is clipped to the bounds at every step and no noise is added
        at the last step. Differentiable in `params` (the Q term of the actor loss goes through it).
        """
        s = vp_schedule(self.config.n_timesteps)
        n = observations.shape[0]
        keys = jax.random.split(key, self.config.n_timesteps + 1)
        x = jax.random.normal(keys[0], (n, self.action_low.shape[0]))
        for i in reversed(range(self.config.n_timesteps)):
            eps = base.call(self.actor, x, jnp.full((n,), i, jnp.int32), observations, params=params)
            x0 = jnp.clip(s["sqrt_recip_ac"][i] * x - s["sqrt_recipm1_ac"][i] * eps, self.action_low, self.action_high)
            x = s["post_coef1"][i] * x0 + s["post_coef2"][i] * x
            if i > 0:
                x = x + jnp.exp(0.5 * s["post_log_var"][i]) * jax.random.normal(keys[i + 1], x.shape)
        return jnp.clip(x, self.action_low, self.action_high)

    def bc_loss(self, batch: base.Batch, params: Any, key: jax.Array) -> jax.Array:
        """Noise-prediction MSE at a uniformly drawn step t (reference Diffusion.loss, predict_epsilon)."""
        s = vp_schedule(self.config.n_timesteps)
        t_key, noise_key = jax.random.split(key)
        actions = batch["actions"]
        t = jax.random.randint(t_key, (actions.shape[0],), 0, self.config.n_timesteps)
        noise = jax.random.normal(noise_key, actions.shape)
        x_t = jnp.asarray(s["sqrt_ac"])[t, None] * actions + jnp.asarray(s["sqrt_1m_ac"])[t, None] * noise
        pred = base.call(self.actor, x_t, t, batch["observations"], params=params)
        return jnp.mean((pred - noise) ** 2)

    def critic_loss(self, batch: base.Batch, params: Any, key: jax.Array) -> tuple[jax.Array, base.Info]:
        next_obs = batch["next_observations"]
        if self.config.max_q_backup:
            k = self.config.max_q_samples
            rep = jnp.repeat(next_obs, k, axis=0)  # [B * k, d]
            next_a = self.sample(self.ema_actor_params, rep, key)
            tq = base.call(self.critic, rep, next_a, params=self.target_critic_params)  # [2, B * k]
            target_q = jnp.min(tq.reshape(2, -1, k).max(axis=2), axis=0)
        else:
            next_a = self.sample(self.ema_actor_params, next_obs, key)
            target_q = jnp.min(base.call(self.critic, next_obs, next_a, params=self.target_critic_params), axis=0)
        target = jax.lax.stop_gradient(batch["rewards"] + self.config.discount * (1.0 - batch["terminals"]) * target_q)
        q = base.call(self.critic, batch["observations"], batch["actions"], params=params)  # [2, B]
        loss = jnp.mean((q - target) ** 2, axis=1).sum()
        return loss, {"critic_loss": loss, "q_mean": q.mean(), "q_max": q.max(), "target_q_mean": target.mean()}

    def actor_loss(self, batch: base.Batch, params: Any, key: jax.Array) -> tuple[jax.Array, base.Info]:
        bc_key, sample_key, coin_key = jax.random.split(key, 3)
        bc = self.bc_loss(batch, params, bc_key)
        if self.config.eta == 0.0:  # pure diffusion BC: skip the costly differentiable sampling chain
            return bc, {"actor_loss": bc, "bc_loss": bc, "ql_loss": jnp.zeros(())}
        new_a = self.sample(params, batch["observations"], sample_key)
        q = base.call(self.critic, batch["observations"], new_a)  # [2, B]; gradients reach only the policy
        first = jax.random.bernoulli(coin_key)
        q_used, q_other = jnp.where(first, q[0], q[1]), jnp.where(first, q[1], q[0])
        # Dividing by mean |Q| makes eta scale-free across reward scales (reference ql_diffusion.py).
        q_loss = -q_used.mean() / jax.lax.stop_gradient(jnp.abs(q_other).mean())
        loss = bc + self.config.eta * q_loss
        return loss, {"actor_loss": loss, "bc_loss": bc, "ql_loss": q_loss}

    @jax.jit
    def update(self, batch: base.Batch) -> tuple[DiffusionQL, base.Info]:
        rng, critic_key, actor_key = jax.random.split(self.rng, 3)
        critic, c_info = base.apply_loss(self.critic, lambda p: self.critic_loss(batch, p, critic_key))
        agent = self.replace(critic=critic)  # the actor's Q term uses the freshly updated critic (reference)
        actor, a_info = base.apply_loss(agent.actor, lambda p: agent.actor_loss(batch, p, actor_key))
        cfg = self.config
        # The reference leaves the EMA copy at its initialisation until step_start_ema, then averages
        # every update_ema_every steps (checked on the step count before this update).
        do_ema = (self.step % cfg.update_ema_every == 0) & (self.step >= cfg.step_start_ema)
        ema = jax.tree.map(
            lambda e, p: jnp.where(do_ema, cfg.ema_decay * e + (1.0 - cfg.ema_decay) * p, e),
            self.ema_actor_params,
            actor.params,
        )
        target = base.polyak(critic.params, self.target_critic_params, cfg.tau)
        info = {**{f"critic/{k}": x for k, x in c_info.items()}, **{f"actor/{k}": x for k, x in a_info.items()}}
        return agent.replace(
            rng=rng, actor=actor, ema_actor_params=ema, critic=critic, target_critic_params=target, step=self.step + 1
        ), info

    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = True) -> jax.Array:
        """Sample `num_action_samples` candidates per state and pick one by the target critic's min Q.

        The policy is a sampler, so `deterministic` does not remove its noise; the choice among candidates
        follows config.action_selection ("softmax": the reference's multinomial over softmax(Q)).
        """
        del deterministic
        n, b = self.config.num_action_samples, observations.shape[0]
        sample_key, pick_key = jax.random.split(key)
        rep = jnp.repeat(observations, n, axis=0)  # [B * n, d], state-major like torch.repeat_interleave
        cand = self.sample(self.actor.params, rep, sample_key)
        q = jnp.min(base.call(self.critic, rep, cand, params=self.target_critic_params), axis=0).reshape(b, n)
        if self.config.action_selection == "argmax":
            idx = jnp.argmax(q, axis=1)
        else:
            idx = jax.random.categorical(pick_key, q, axis=1)
        return jnp.take_along_axis(cand.reshape(b, n, -1), idx[:, None, None], axis=1)[:, 0]

    @classmethod
    def create(
        cls,
        seed: int,
        obs_dim: int,
        action_dim: int,
        config: DiffusionQLConfig | dict | None = None,
        action_low: Any = None,
        action_high: Any = None,
    ) -> DiffusionQL:
        base.check_dims(cls.name, obs_dim, action_dim)
        config = base.resolve_config(get_config, config, cls.name)
        low, high = base.resolve_bounds(action_dim, action_low, action_high)
        rng, actor_key, critic_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        obs = jnp.zeros((1, obs_dim), jnp.float32)
        act = jnp.zeros((1, action_dim), jnp.float32)
        decay_steps = config.max_steps if config.lr_decay else 0
        actor = base.make_state(
            NoiseModel(config.hidden_dims, action_dim, config.time_dim),
            actor_key,
            (act, jnp.zeros((1,), jnp.int32), obs),
            base.make_optimizer(config.lr, decay_steps, config.grad_norm),
        )
        critic = base.make_state(
            TwinCritic(config.hidden_dims, jax.nn.mish, TORCH_LINEAR_INIT),
            critic_key,
            (obs, act),
            base.make_optimizer(config.critic_lr, decay_steps, config.grad_norm),
        )
        return cls(
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            actor=actor,
            ema_actor_params=actor.params,
            critic=critic,
            target_critic_params=critic.params,
            action_low=low,
            action_high=high,
            obs_dim=int(obs_dim),
            config=config,
        )
