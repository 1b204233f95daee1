"""Behaviour cloning: maximum likelihood of the dataset actions under IQL's Gaussian policy.

It is IQL's actor with every advantage weight equal to 1 (the temperature -> 0 limit), so a BC vs IQL
comparison isolates what the rewards add. Rewards, next observations and terminals are ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from ailot.learners import base
from ailot.learners.networks import GaussianPolicy, gaussian_log_prob


@dataclasses.dataclass(frozen=True)
class BCConfig:
    """BC hyperparameters (frozen, hashable)."""

    lr: float = 3e-4  # Adam lr, as IQL's actor (IQL reference configs/mujoco_config.py actor_lr)
    hidden_dims: tuple[int, ...] = (256, 256)  # policy MLP widths, as IQL's actor (IQL reference)
    lr_decay: bool = True  # cosine decay to 0 over max_steps, as IQL's actor (IQL reference opt_decay_schedule)
    max_steps: int = 1_000_000  # horizon of the cosine decay = total updates (IQL reference --max_steps)
    log_std_min: float = -5.0  # policy log-std floor (IQL reference learner.py)
    log_std_max: float = 2.0  # policy log-std ceiling (IQL reference policy.py)

    def validate(self) -> None:
        base.require(self.lr > 0, "bc", "lr", self.lr, "a positive number")
        base.require(self.max_steps >= 1, "bc", "max_steps", self.max_steps, "a positive int")
        base.require(
            self.log_std_min < self.log_std_max, "bc", "log_std_min", self.log_std_min, "a value below log_std_max"
        )


def get_config(task_family: str = "locomotion") -> BCConfig:
    """BC has no reward-dependent settings, so every task family gets the same defaults."""
    base.check_family(task_family)
    return BCConfig()


class BC(flax.struct.PyTreeNode):
    """BC state: the policy, rng, step and the static config."""

    name: ClassVar[str] = "bc"
    default_config: ClassVar = staticmethod(get_config)
    reward_free: ClassVar[bool] = True  # clones the data's actions; the labeller's rewards are ignored

    rng: jax.Array
    step: jax.Array
    actor: Any  # TrainState of GaussianPolicy
    action_low: jax.Array  # [a]
    action_high: jax.Array  # [a]
    obs_dim: int = flax.struct.field(pytree_node=False)
    config: BCConfig = flax.struct.field(pytree_node=False)

    def actor_loss(self, batch: base.Batch, params: Any) -> tuple[jax.Array, base.Info]:
        mean, log_std = base.call(self.actor, batch["observations"], params=params)
        log_prob = gaussian_log_prob(mean, log_std, batch["actions"])
        loss = -log_prob.mean()
        mse = jnp.mean((mean - batch["actions"]) ** 2)
        return loss, {"actor_loss": loss, "mse": mse, "log_std_mean": log_std.mean()}

    @jax.jit
    def update(self, batch: base.Batch) -> tuple[BC, base.Info]:
        actor, info = base.apply_loss(self.actor, lambda p: self.actor_loss(batch, p))
        return self.replace(actor=actor, step=self.step + 1), {f"actor/{k}": x for k, x in info.items()}

    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = True) -> jax.Array:
        """The policy mean (deterministic) or a Gaussian sample, clipped to the bounds."""
        return base.gaussian_actions(self.actor, observations, key, deterministic, self.action_low, self.action_high)

    @classmethod
    def create(
        cls,
        seed: int,
        obs_dim: int,
        action_dim: int,
        config: BCConfig | dict | None = None,
        action_low: Any = None,
        action_high: Any = None,
    ) -> BC:
        base.check_dims(cls.name, obs_dim, action_dim)
        config = base.resolve_config(get_config, config, cls.name)
        low, high = base.resolve_bounds(action_dim, action_low, action_high)
        rng, actor_key = jax.random.split(jax.random.PRNGKey(seed))
        tx = base.make_optimizer(config.lr, config.max_steps if config.lr_decay else 0)
        actor = base.make_state(
            GaussianPolicy(config.hidden_dims, action_dim, config.log_std_min, config.log_std_max),
            actor_key,
            (jnp.zeros((1, obs_dim), jnp.float32),),
            tx,
        )
        return cls(
            rng=rng,
            step=jnp.zeros((), jnp.int32),
            actor=actor,
            action_low=low,
            action_high=high,
            obs_dim=int(obs_dim),
            config=config,
        )
