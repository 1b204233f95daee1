"""IQ-Learn, offline (Garg, Chakraborty, Cundy, Song & Ermon, NeurIPS 2021), following Div99/IQ-Learn
(iq_learn/iq.py `iq_loss`, train_iq.py, conf/, scripts/run_offline.sh).

Inverse soft-Q learning: one Q function stands for both reward and policy. With the soft value
V(s) = E_{a~pi}[Q(s, a) - temp * log pi(a|s)] and y = gamma (1 - done) V_target(s'), the critic minimises
  -E_expert[Q(s, a) - y] + E_rho[V(s) - y] + 1/(4 alpha) E_expert[(Q(s, a) - y)^2]
(the chi-square regularised objective; rho = the expert states, "value_expert", which works offline, or expert
and agent states, "value"), and a SAC actor maximises E[Q(s, a) - temp * log pi(a|s)] on the expert states
(the reference's offline branch). The reward it recovers is r(s, a) = Q(s, a) - gamma (1 - done) V(s').

It reads expert actions (`expert_input` "transitions") and ignores the labeller's rewards (`reward_free`).
With "value_expert" the agent data are not used at all, as in the reference's offline runs.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.struct
import jax
import jax.numpy as jnp

from ailot.learners import base
from ailot.learners.networks import ORTHOGONAL_INIT_1, Critic, Scalar, TanhGaussianPolicy, tanh_gaussian_sample

VALUE_LOSSES = ("value_expert", "value")
CHI_STATES = ("expert", "all")


@dataclasses.dataclass(frozen=True)
class IQLearnConfig:
    """IQ-Learn hyperparameters (frozen, hashable); sources are files of Div99/IQ-Learn, under iq_learn/."""

    actor_lr: float = 3e-5  # Adam lr of the policy (scripts/run_mujoco.sh agent.actor_lr=3e-5 on every task)
    critic_lr: float = 3e-4  # Adam lr of Q (conf/agent/sac.yaml critic_lr)
    hidden_dims: tuple[int, ...] = (256, 256)  # Q and policy widths (conf/agent/sac.yaml hidden_dim 256, depth 2)
    discount: float = 0.99  # gamma (conf/config.yaml)
    tau: float = 0.005  # Polyak rate of the target Q, every step (conf/agent/sac.yaml critic_tau; env/hopper.yaml
    #                     train.soft_update true)
    use_target: bool = True  # y from the target Q, without gradient (conf/env/hopper.yaml train.use_target)
    init_temp: float = 0.01  # entropy temperature (conf/agent/sac.yaml init_temp 1e-2, "a low temp for IL")
    learn_temp: bool = False  # tune the temperature towards -|A| entropy (conf/agent/sac.yaml learn_temp false)
    temp_lr: float = 3e-4  # Adam lr of log(temp) when learnt (conf/agent/sac.yaml alpha_lr)
    chi_alpha: float = 0.5  # chi-square term weight 1 / (4 alpha) (conf/method/iq.yaml alpha)
    value_loss: str = "value_expert"  # states of the E_rho[V(s) - y] term: expert only, for offline IL
    #                                   (scripts/run_offline.sh method.loss=value_expert), or expert + agent ("value")
    chi_states: str = "expert"  # states of the chi-square term: expert (run_offline.sh method.chi=True) or
    #                             expert + agent ("all": method.regularize=True, run_mujoco.sh)
    log_std_min: float = -5.0  # policy log-std, squashed into [min, max] by a tanh (conf/agent/sac.yaml
    log_std_max: float = 2.0  #  log_std_bounds; agent/sac_models.py DiagGaussianActor)
    max_steps: int = 500_000  # total updates (conf/env/hopper.yaml learn_steps 5e5); no schedule reads it

    def validate(self) -> None:
        for key in ("actor_lr", "critic_lr", "temp_lr", "init_temp", "chi_alpha"):
            base.require(getattr(self, key) > 0, "iq_learn", key, getattr(self, key), "a positive number")
        base.require(0.0 <= self.discount < 1.0, "iq_learn", "discount", self.discount, "a value in [0, 1)")
        base.require(0.0 < self.tau <= 1.0, "iq_learn", "tau", self.tau, "a value in (0, 1]")
        base.require(self.value_loss in VALUE_LOSSES, "iq_learn", "value_loss", self.value_loss,
                     f"one of {', '.join(VALUE_LOSSES)}")
        base.require(self.chi_states in CHI_STATES, "iq_learn", "chi_states", self.chi_states,
                     f"one of {', '.join(CHI_STATES)}")
        base.require(self.max_steps >= 1, "iq_learn", "max_steps", self.max_steps, "a positive int")
        base.require(self.log_std_min < self.log_std_max, "iq_learn", "log_std_min", self.log_std_min,
                     "a value below log_std_max")


def get_config(task_family: str = "locomotion") -> IQLearnConfig:
    """IQ-Learn's continuous-control settings for every family: the reference has no antmaze or maze2d preset."""
    base.check_family(task_family)
    return IQLearnConfig()


class IQLearn(flax.struct.PyTreeNode):
    """IQ-Learn state: Q and its target, the policy, the temperature, rng, step and the static config."""

    name: ClassVar[str] = "iq_learn"
    default_config: ClassVar = staticmethod(get_config)
    expert_input: ClassVar[str | None] = "transitions"
    reward_free: ClassVar[bool] = True  # learns its own reward Q - gamma V' from the expert transitions

    rng: jax.Array
    step: jax.Array
    critic: Any  # TrainState of Critic (one Q, as the MuJoCo configs' SingleQCritic)
    target_critic_params: Any
    actor: Any  # TrainState of TanhGaussianPolicy
    log_temp: Any  # TrainState of Scalar
    action_low: jax.Array  # [a]
    action_high: jax.Array  # [a]
    obs_dim: int = flax.struct.field(pytree_node=False)
    config: IQLearnConfig = flax.struct.field(pytree_node=False)

    def soft_value(self, observations: jax.Array, key: jax.Array, critic_params: Any) -> jax.Array:
        """V(s) = Q(s, a) - temp * log pi(a|s), a ~ pi(s) (one sample, as the reference's getV): [B]."""
        mean, log_std = base.call(self.actor, observations)
        actions, log_prob = tanh_gaussian_sample(mean, log_std, key)
        temp = jax.lax.stop_gradient(jnp.exp(base.call(self.log_temp)))
        return base.call(self.critic, observations, actions, params=critic_params) - temp * log_prob

    def next_value(self, next_observations: jax.Array, terminals: jax.Array, key: jax.Array,
                   critic_params: Any) -> jax.Array:
        """y = gamma (1 - done) V(s') [B], from the target Q without gradient when use_target."""
        if self.config.use_target:
            v = jax.lax.stop_gradient(self.soft_value(next_observations, key, self.target_critic_params))
        else:
            v = self.soft_value(next_observations, key, critic_params)
        return self.config.discount * (1.0 - terminals) * v

    def recovered_reward(self, observations: jax.Array, actions: jax.Array, next_observations: jax.Array,
                         terminals: jax.Array, key: jax.Array) -> jax.Array:
        """r(s, a) = Q(s, a) - gamma (1 - done) V_target(s') [B], for dataset actions in the action bounds."""
        unit = base.to_unit(actions, self.action_low, self.action_high)
        q = base.call(self.critic, observations, unit)
        return q - self.next_value(next_observations, terminals, key, self.critic.params)

    def critic_loss(self, batch: base.Batch, params: Any, key: jax.Array) -> tuple[jax.Array, base.Info]:
        n_e = batch["expert_observations"].shape[0]
        # Agent batch first, then expert, as the reference's get_concat_samples; is_expert marks the second half.
        obs = jnp.concatenate([batch["observations"], batch["expert_observations"]])  # [2B, d]
        actions = base.to_unit(jnp.concatenate([batch["actions"], batch["expert_actions"]]), self.action_low,
                               self.action_high)
        next_obs = jnp.concatenate([batch["next_observations"], batch["expert_next_observations"]])
        terminals = jnp.concatenate([batch["terminals"], batch["expert_terminals"]])
        next_key, v_key = jax.random.split(key)
        y = self.next_value(next_obs, terminals, next_key, params)  # [2B]
        q = base.call(self.critic, obs, actions, params=params)
        v = self.soft_value(obs, v_key, params)
        reward = q - y  # the implicit reward of every transition
        expert = slice(obs.shape[0] - n_e, None)
        softq = -jnp.mean(reward[expert])  # -E_expert[Q - gamma V']
        value = jnp.mean((v - y)[expert] if self.config.value_loss == "value_expert" else v - y)
        chi_r = reward[expert] if self.config.chi_states == "expert" else reward
        chi2 = jnp.mean(chi_r**2) / (4.0 * self.config.chi_alpha)
        loss = softq + value + chi2
        return loss, {"critic_loss": loss, "softq_loss": softq, "value_loss": value, "chi2_loss": chi2,
                      "q_mean": q.mean(), "q_max": q.max(), "reward_expert": jnp.mean(reward[expert]),
                      "reward_agent": jnp.mean(reward[: obs.shape[0] - n_e])}

    def actor_loss(self, batch: base.Batch, params: Any, key: jax.Array) -> tuple[jax.Array, base.Info]:
        """SAC's actor loss on the expert states (the reference's offline branch of iq_update)."""
        obs = batch["expert_observations"]
        mean, log_std = base.call(self.actor, obs, params=params)
        actions, log_prob = tanh_gaussian_sample(mean, log_std, key)
        temp = jnp.exp(base.call(self.log_temp))
        loss = jnp.mean(temp * log_prob - base.call(self.critic, obs, actions))
        return loss, {"actor_loss": loss, "entropy": -log_prob.mean()}

    def temp_loss(self, params: Any, entropy: jax.Array) -> tuple[jax.Array, base.Info]:
        """temp falls while the policy's entropy is above the target -|A| (agent/sac.py target_entropy)."""
        temp = jnp.exp(base.call(self.log_temp, params=params))
        target = -float(self.action_low.shape[0])
        loss = temp * jax.lax.stop_gradient(entropy - target)
        return loss, {"temp": temp}

    @jax.jit
    def update(self, batch: base.Batch) -> tuple[IQLearn, base.Info]:
        """Critic, then the actor against the new critic, then the temperature and the target (iq_update)."""
        rng, critic_key, actor_key = jax.random.split(self.rng, 3)
        critic, c_info = base.apply_loss(self.critic, lambda p: self.critic_loss(batch, p, critic_key))
        agent = self.replace(critic=critic)
        actor, a_info = base.apply_loss(agent.actor, lambda p: agent.actor_loss(batch, p, actor_key))
        info = {**{f"critic/{k}": x for k, x in c_info.items()}, **{f"actor/{k}": x for k, x in a_info.items()}}
        if self.config.learn_temp:
            log_temp, t_info = base.apply_loss(agent.log_temp, lambda p: agent.temp_loss(p, a_info["entropy"]))
            agent = agent.replace(log_temp=log_temp)
            info["actor/temp"] = t_info["temp"]
        target = base.polyak(critic.params, self.target_critic_params, self.config.tau)
        return agent.replace(rng=rng, actor=actor, target_critic_params=target, step=self.step + 1), info

    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = True) -> jax.Array:
        """tanh of the policy mean (deterministic, the reference's choose_action(sample=False)) or of a sample."""
        return base.tanh_gaussian_actions(self.actor, observations, key, deterministic, self.action_low,
                                          self.action_high)

    @classmethod
    def create(
        cls,
        seed: int,
        obs_dim: int,
        action_dim: int,
        config: IQLearnConfig | dict | None = None,
        action_low: Any = None,
        action_high: Any = None,
    ) -> IQLearn:
        base.check_dims(cls.name, obs_dim, action_dim)
        config = base.resolve_config(get_config, config, cls.name)
        low, high = base.resolve_bounds(action_dim, action_low, action_high)
        rng, critic_key, actor_key, temp_key = jax.random.split(jax.random.PRNGKey(seed), 4)
        obs = jnp.zeros((1, obs_dim), jnp.float32)
        act = jnp.zeros((1, action_dim), jnp.float32)
        critic = base.make_state(Critic(config.hidden_dims, kernel_init=ORTHOGONAL_INIT_1), critic_key, (obs, act),
                                 base.make_optimizer(config.critic_lr))
        policy = TanhGaussianPolicy(config.hidden_dims, action_dim, config.log_std_min, config.log_std_max,
                                    tanh_log_std=True, kernel_init=ORTHOGONAL_INIT_1)
        actor = base.make_state(policy, actor_key, (obs,), base.make_optimizer(config.actor_lr))
        log_temp = base.make_state(Scalar(math.log(config.init_temp)), temp_key, (),
                                   base.make_optimizer(config.temp_lr))
        return cls(rng=rng, step=jnp.zeros((), jnp.int32), critic=critic, target_critic_params=critic.params,
                   actor=actor, log_temp=log_temp, action_low=low, action_high=high, obs_dim=int(obs_dim),
                   config=config)
