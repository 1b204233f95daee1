"""DWBC, discriminator-weighted behaviour cloning (Xu, Zhan, Yin & Qin, ICML 2022), following ryanxhr/DWBC
(algos/DWBC.py, main.py, run_dwbc.sh).

A discriminator d(s, a, log pi(a|s)) in [0.1, 0.9] tells the expert transitions from the agent data, trained
by positive-unlabelled learning (the agent data are unlabelled: they may hold expert-like transitions; `eta`
is the assumed expert share) or, with `pu_learning` off, plain BCE; it steps once every `d_update_every`
updates. The policy (a tanh-squashed Gaussian) minimises, with L = -log pi(a|s),
alpha E_e[L] - E_e[L (eta / (d (1 - d)) + 1)] + E_o[L (1 / (1 - d) - 1)], agent d below 0.5 set to 0:
it clones the expert set and the agent transitions the discriminator calls expert-like.

It reads expert actions (`expert_input` "transitions") and ignores the labeller's rewards (`reward_free`).
Left out of the reference: state normalisation by the mean/std of expert and agent states (main.py; the data
arrive as the sweep prepares them).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from ailot.learners import base
from ailot.learners.networks import TORCH_LINEAR_INIT, TanhGaussianPolicy, tanh_gaussian_log_prob


@dataclasses.dataclass(frozen=True)
class DWBCConfig:
    """DWBC hyperparameters (frozen, hashable); sources are files of ryanxhr/DWBC."""

    alpha: float = 7.5  # weight of the plain BC term on expert data (main.py --alpha, run_dwbc.sh)
    eta: float = 0.5  # PU-learning class prior: assumed expert share of the agent data (main.py --eta)
    pu_learning: bool = True  # positive-unlabelled discriminator loss; False = plain BCE (main.py --no_pu off)
    d_update_every: int = 100  # the discriminator steps once every this many updates (DWBC.py d_update_num)
    lr: float = 1e-4  # Adam lr of the policy (DWBC.py policy_optimizer)
    weight_decay: float = 0.005  # PyTorch Adam weight_decay (L2) of the policy (DWBC.py policy_optimizer)
    disc_lr: float = 1e-4  # Adam lr of the discriminator (DWBC.py discriminator_optimizer)
    hidden_dims: tuple[int, ...] = (256, 256)  # policy widths (DWBC.py Actor fc1, fc2)
    disc_hidden_dim: int = 256  # width of the discriminator's joint layer; its (s, a) and log-pi branches are
    #                             half as wide each (DWBC.py Discriminator fc1_1, fc1_2: 128; fc2: 256)
    mean_clip: float = 9.0  # pre-tanh mean clipped to +-9 (DWBC.py MEAN_MIN, MEAN_MAX)
    log_std_min: float = -5.0  # (DWBC.py LOG_STD_MIN)
    log_std_max: float = 2.0  # (DWBC.py LOG_STD_MAX)
    log_pi_min: float = -20.0  # log pi clipped to [min, max] and scaled to [0, 1] for the discriminator
    log_pi_max: float = 10.0  # (DWBC.py LOG_PI_NORM_MIN, LOG_PI_NORM_MAX)
    d_min: float = 0.1  # discriminator output clipped to [d_min, d_max], which bounds the policy weights
    d_max: float = 0.9  # (DWBC.py Discriminator.forward)
    action_eps: float = 1e-7  # dataset actions clipped to +-(1 - eps) before atanh (DWBC.py EPS)
    max_steps: int = 500_000  # total updates (main.py --max_timesteps 5e5); no schedule reads it

    def validate(self) -> None:
        for key in ("alpha", "eta", "lr", "disc_lr"):
            base.require(getattr(self, key) > 0, "dwbc", key, getattr(self, key), "a positive number")
        base.require(self.weight_decay >= 0, "dwbc", "weight_decay", self.weight_decay, "a number >= 0")
        for key in ("d_update_every", "disc_hidden_dim", "max_steps"):
            base.require(getattr(self, key) >= 1, "dwbc", key, getattr(self, key), "a positive int")
        base.require(0.0 < self.d_min < self.d_max < 1.0, "dwbc", "d_min", (self.d_min, self.d_max),
                     "0 < d_min < d_max < 1")
        base.require(self.log_pi_min < self.log_pi_max, "dwbc", "log_pi_min", self.log_pi_min,
                     "a value below log_pi_max")
        base.require(self.log_std_min < self.log_std_max, "dwbc", "log_std_min", self.log_std_min,
                     "a value below log_std_max")
        base.require(0.0 < self.action_eps < 0.1, "dwbc", "action_eps", self.action_eps, "a small positive number")
        base.require(self.mean_clip >= 0, "dwbc", "mean_clip", self.mean_clip, "a number >= 0 (0: no clip)")


def get_config(task_family: str = "locomotion") -> DWBCConfig:
    """DWBC has one setting for all tasks in its paper (run_dwbc.sh: alpha 7.5 everywhere)."""
    base.check_family(task_family)
    return DWBCConfig()


class Discriminator(nn.Module):
    """d(s, a, log pi): relu(Dense(s, a)) and relu(Dense(log pi)) side by side, a relu layer, a sigmoid output
    clipped to [d_min, d_max] (DWBC.py Discriminator). obs [B, d], actions [B, a], log_pi [B, a] -> [B]."""

    hidden_dim: int
    d_min: float
    d_max: float

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array, log_pi: jax.Array) -> jax.Array:
        init = TORCH_LINEAR_INIT  # the reference's PyTorch nn.Linear default
        sa = nn.relu(nn.Dense(self.hidden_dim // 2, kernel_init=init)(jnp.concatenate([observations, actions], -1)))
        lp = nn.relu(nn.Dense(self.hidden_dim // 2, kernel_init=init)(log_pi))
        h = nn.relu(nn.Dense(self.hidden_dim, kernel_init=init)(jnp.concatenate([sa, lp], axis=-1)))
        d = nn.sigmoid(nn.Dense(1, kernel_init=init)(h))[..., 0]
        return jnp.clip(d, self.d_min, self.d_max)


class DWBC(flax.struct.PyTreeNode):
    """DWBC state: the policy, the discriminator, rng, step and the static config."""

    name: ClassVar[str] = "dwbc"
    default_config: ClassVar = staticmethod(get_config)
    expert_input: ClassVar[str | None] = "transitions"
    reward_free: ClassVar[bool] = True  # trains on the expert transitions and the unlabelled agent data

    rng: jax.Array
    step: jax.Array
    actor: Any  # TrainState of TanhGaussianPolicy
    disc: Any  # TrainState of Discriminator
    action_low: jax.Array  # [a]
    action_high: jax.Array  # [a]
    obs_dim: int = flax.struct.field(pytree_node=False)
    config: DWBCConfig = flax.struct.field(pytree_node=False)

    def log_pi(self, observations: jax.Array, actions: jax.Array, params: Any = None) -> jax.Array:
        """Per-dimension log density [B, a] of dataset actions (in the action bounds) under the policy."""
        mean, log_std = base.call(self.actor, observations, params=params)
        unit = base.to_unit(actions, self.action_low, self.action_high)
        return tanh_gaussian_log_prob(mean, log_std, unit, self.config.action_eps)

    def discriminate(self, observations: jax.Array, actions: jax.Array, log_pi: jax.Array,
                     params: Any = None) -> jax.Array:
        """d [B] in [d_min, d_max]; log pi [B, a] enters clipped and scaled to [0, 1], without its gradient."""
        cfg = self.config
        norm = (jnp.clip(log_pi, cfg.log_pi_min, cfg.log_pi_max) - cfg.log_pi_min) / (cfg.log_pi_max - cfg.log_pi_min)
        return base.call(self.disc, observations, actions, jax.lax.stop_gradient(norm), params=params)

    def disc_loss(self, batch: base.Batch, params: Any, log_pi_e: jax.Array,
                  log_pi_o: jax.Array) -> tuple[jax.Array, base.Info]:
        d_e = self.discriminate(batch["expert_observations"], batch["expert_actions"], log_pi_e, params)
        d_o = self.discriminate(batch["observations"], batch["actions"], log_pi_o, params)
        if self.config.pu_learning:  # unlabelled data are a mix: eta expert-like, the rest not
            loss = jnp.mean(-jnp.log(d_e) - jnp.log(1.0 - d_o) / self.config.eta + jnp.log(1.0 - d_e))
        else:
            loss = jnp.mean(-jnp.log(d_e) - jnp.log(1.0 - d_o))
        return loss, {"disc_loss": loss, "d_expert": d_e.mean(), "d_agent": d_o.mean()}

    def actor_loss(self, batch: base.Batch, params: Any, d_e: jax.Array,
                   d_o: jax.Array) -> tuple[jax.Array, base.Info]:
        eta = self.config.eta
        log_pi_e = jnp.sum(self.log_pi(batch["expert_observations"], batch["expert_actions"], params), axis=-1)
        log_pi_o = jnp.sum(self.log_pi(batch["observations"], batch["actions"], params), axis=-1)  # [B]
        d_o = jnp.where(d_o < 0.5, 0.0, d_o)  # agent transitions the discriminator calls non-expert get weight 0
        w_e = eta / (d_e * (1.0 - d_e)) + 1.0
        w_o = 1.0 / (1.0 - d_o) - 1.0
        bc = -jnp.mean(log_pi_e)
        loss = self.config.alpha * bc - jnp.mean(-log_pi_e * w_e) + jnp.mean(-log_pi_o * w_o)
        return loss, {"actor_loss": loss, "bc_loss": bc, "w_expert": w_e.mean(), "w_agent": w_o.mean(),
                      "agent_kept": jnp.mean(d_o > 0)}

    @jax.jit
    def update(self, batch: base.Batch) -> tuple[DWBC, base.Info]:
        """Discriminator outputs from the pre-update networks feed both losses (reference DWBC.train)."""
        log_pi_e = self.log_pi(batch["expert_observations"], batch["expert_actions"])
        log_pi_o = self.log_pi(batch["observations"], batch["actions"])
        d_e = self.discriminate(batch["expert_observations"], batch["expert_actions"], log_pi_e)
        d_o = self.discriminate(batch["observations"], batch["actions"], log_pi_o)
        active = (self.step + 1) % self.config.d_update_every == 0  # the reference counts from 1
        disc, d_info = base.apply_loss(self.disc, lambda p: self.disc_loss(batch, p, log_pi_e, log_pi_o), active)
        actor, a_info = base.apply_loss(self.actor, lambda p: self.actor_loss(batch, p, d_e, d_o))
        info = {**{f"disc/{k}": x for k, x in d_info.items()}, **{f"actor/{k}": x for k, x in a_info.items()}}
        return self.replace(actor=actor, disc=disc, step=self.step + 1), info

    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = True) -> jax.Array:
        """tanh of the policy mean (deterministic, the reference's select_action) or of a sample."""
        return base.tanh_gaussian_actions(self.actor, observations, key, deterministic, self.action_low,
                                          self.action_high)

    @classmethod
    def create(
        cls,
        seed: int,
        obs_dim: int,
        action_dim: int,
        config: DWBCConfig | dict | None = None,
        action_low: Any = None,
        action_high: Any = None,
    ) -> DWBC:
        base.check_dims(cls.name, obs_dim, action_dim)
        config = base.resolve_config(get_config, config, cls.name)
        low, high = base.resolve_bounds(action_dim, action_low, action_high)
        rng, actor_key, disc_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        obs = jnp.zeros((1, obs_dim), jnp.float32)
        act = jnp.zeros((1, action_dim), jnp.float32)
        policy = TanhGaussianPolicy(config.hidden_dims, action_dim, config.log_std_min, config.log_std_max,
                                    config.mean_clip, kernel_init=TORCH_LINEAR_INIT)
        tx = base.make_optimizer(config.lr, weight_decay=config.weight_decay)
        actor = base.make_state(policy, actor_key, (obs,), tx)
        disc = base.make_state(Discriminator(config.disc_hidden_dim, config.d_min, config.d_max), disc_key,
                               (obs, act, act), base.make_optimizer(config.disc_lr))
        return cls(rng=rng, step=jnp.zeros((), jnp.int32), actor=actor, disc=disc, action_low=low, action_high=high,
                   obs_dim=int(obs_dim), config=config)
