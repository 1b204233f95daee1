"""SMODICE (Ma, Shi, Jayaraman & Bastani, ICML 2022), following JasonMa2016/SMODICE (smodice_pytorch.py,
discriminator_pytorch.py, run_oil_observations.py).

State-occupancy matching from a state-only expert set. A discriminator c(s) tells expert states from agent
states (BCE on logits plus a gradient penalty on expert/agent mixtures); its logit log(d / (1 - d)) is the
reward r(s). The reference trains it first and then freezes it: here the first `disc_steps` updates train only
the discriminator, the rest only V and the policy. V minimises the dual (paper eq. 20)
(1 - gamma) E_{s0}[V(s0)] + E_D[f*(e_V)] with e_V = r(s) + gamma (1 - done) V(s') - V(s) (for KL the log-mean-exp
form), and the policy is weighted BC with w = f*'(e_V) (eq. 21-22) plus a SAC-style entropy term whose
coefficient is tuned towards a target entropy.

It ignores the labeller's rewards (`reward_free`) and trains on the agent data and the expert set's states.
Left out of the reference: the absorbing-state dimension (`--absorbing_state`, on for MuJoCo), observation and
reward standardisation (the data arrive as the sweep prepares them), and mixing the expert trajectories into the
offline data (`utils.dice_combined_dataset`; with the DESIGN's same-dataset expert set they are in it already).
The discriminator trains all its layers (the reference's optimiser holds only `trunk`, leaving the first state
layer at its initialisation), and it uses the training batch size (reference 256, DICE 512).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from ailot.learners import base
from ailot.learners.networks import (
    TORCH_LINEAR_INIT,
    XAVIER_INIT,
    Scalar,
    TanhGaussianPolicy,
    ValueNet,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
)

DIVERGENCES = ("chi", "kl")


@dataclasses.dataclass(frozen=True)
class SMODICEConfig:
    """SMODICE hyperparameters (frozen, hashable); sources are files of JasonMa2016/SMODICE."""

    f: str = "kl"  # f-divergence of the dual: kl on MuJoCo (configs/oil_observations_default.py --f), chi on
    #                antmaze (configs/oil_antmaze_default.py) and the pointmass examples
    discount: float = 0.99  # gamma (configs/oil_observations_default.py --gamma)
    hidden_dims: tuple[int, ...] = (256, 256)  # V and policy widths; the discriminator's hidden width is the first
    #                                            (configs --hidden_sizes; run_oil_observations.py hidden_dim)
    lr: float = 3e-4  # Adam lr of V, the policy and the entropy coefficient (configs --lr; smodice_pytorch.py uses
    #                   it for all three, the configs' --actor_lr 3e-5 is not read by SMODICE)
    v_l2_reg: float = 1e-4  # PyTorch Adam weight_decay (L2) of V (configs --v_l2_reg; smodice_pytorch.py)
    entropy_constraint: bool = True  # learn the entropy coefficient (configs --use_policy_entropy_constraint)
    target_entropy_per_dim: float = -1.0  # target entropy / action_dim: -|A| (--target_entropy None ->
    #                                       -prod(action shape), run_oil_observations.py)
    mean_clip: float = 7.24  # pre-tanh mean clipped to +-7.24 (configs --mean_range)
    log_std_min: float = -5.0  # (configs --logstd_range)
    log_std_max: float = 2.0  # (configs --logstd_range)
    disc_lr: float = 3e-4  # Adam lr of the discriminator (discriminator_pytorch.py Discriminator_SA)
    disc_gp_weight: float = 10.0  # gradient-penalty weight lambda_ (discriminator_pytorch.py compute_grad_pen)
    disc_steps: int = 4000  # discriminator-only updates first: the reference's --disc_iterations 1000 epochs of
    #                         batch-256 passes over the expert states, 4 batches for a 1000-state expert episode
    #                         (the DESIGN's top-1); counted inside the sweep's training steps
    max_steps: int = 1_000_000  # total updates (configs --total_iterations); no schedule reads it

    def validate(self) -> None:
        base.require(self.f in DIVERGENCES, "smodice", "f", self.f, f"one of {', '.join(DIVERGENCES)}")
        base.require(0.0 <= self.discount < 1.0, "smodice", "discount", self.discount, "a value in [0, 1)")
        for key in ("lr", "disc_lr"):
            base.require(getattr(self, key) > 0, "smodice", key, getattr(self, key), "a positive number")
        for key in ("v_l2_reg", "disc_gp_weight"):
            base.require(getattr(self, key) >= 0, "smodice", key, getattr(self, key), "a non-negative number")
        base.require(self.mean_clip >= 0, "smodice", "mean_clip", self.mean_clip, "a number >= 0 (0: no clip)")
        base.require(self.disc_steps >= 0, "smodice", "disc_steps", self.disc_steps, "an int >= 0")
        base.require(self.max_steps >= 1, "smodice", "max_steps", self.max_steps, "a positive int")
        base.require(
            self.log_std_min < self.log_std_max, "smodice", "log_std_min", self.log_std_min, "a value below log_std_max"
        )


def get_config(task_family: str = "locomotion") -> SMODICEConfig:
    """SMODICE defaults: KL on locomotion (oil_observations_default.py), chi-square on antmaze
    (oil_antmaze_default.py) and on maze2d (our choice: the reference's other goal-reaching configs, antmaze and
    the pointmass examples, use chi)."""
    family = base.check_family(task_family)
    return SMODICEConfig(f="kl" if family == "locomotion" else "chi")


def chi_f_star(e: jax.Array) -> jax.Array:
    """Convex conjugate of the chi-square f(x) = (x - 1)^2 / 2 as the reference writes it: e^2 / 2 + e
    (smodice_pytorch.py `_f_star`). KL's term is a log-mean-exp over the batch instead (SMODICE.value_loss)."""
    return 0.5 * e**2 + e


def f_star_prime(e: jax.Array, f: str) -> jax.Array:
    """The importance weight w = f*'(e): relu(e + 1) for chi-square, exp(e) for KL (paper eq. 21)."""
    return jax.nn.relu(e + 1.0) if f == "chi" else jnp.exp(e)


class SMODICE(flax.struct.PyTreeNode):
    """SMODICE state: discriminator, V, policy, entropy coefficient, rng, step and the static config."""

    name: ClassVar[str] = "smodice"
    default_config: ClassVar = staticmethod(get_config)
    expert_input: ClassVar[str | None] = "states"
    reward_free: ClassVar[bool] = True  # its reward is the discriminator's, learnt from the expert states
    optional_inputs: ClassVar[tuple[str, ...]] = ("initial_observations",)

    rng: jax.Array
    step: jax.Array
    disc: Any  # TrainState of ValueNet (tanh): state -> logit of "expert"
    value: Any  # TrainState of ValueNet
    actor: Any  # TrainState of TanhGaussianPolicy
    log_ent_coeff: Any  # TrainState of Scalar
    action_low: jax.Array  # [a]
    action_high: jax.Array  # [a]
    obs_dim: int = flax.struct.field(pytree_node=False)
    config: SMODICEConfig = flax.struct.field(pytree_node=False)

    # ------------------------------------------------------------------------------------ discriminator

    def reward(self, observations: jax.Array) -> jax.Array:
        """r(s) = log(d / (1 - d)) = the discriminator's logit [B] (discriminator_pytorch.py predict_reward)."""
        return base.call(self.disc, observations)

    def disc_loss(self, batch: base.Batch, params: Any, key: jax.Array) -> tuple[jax.Array, base.Info]:
        expert, agent = batch["expert_observations"], batch["observations"]  # [B, d] each
        logit_e = base.call(self.disc, expert, params=params)
        logit_a = base.call(self.disc, agent, params=params)
        bce = jnp.mean(jax.nn.softplus(-logit_e)) + jnp.mean(jax.nn.softplus(logit_a))  # expert 1, agent 0
        # Gradient penalty on random mixtures of the two batches (WGAN-GP form, as the reference's GAIL code).
        alpha = jax.random.uniform(key, (expert.shape[0], 1))
        mix = alpha * expert + (1.0 - alpha) * agent
        grads = jax.grad(lambda x: jnp.sum(base.call(self.disc, x, params=params)))(mix)  # [B, d]
        norm = jnp.sqrt(jnp.sum(grads**2, axis=-1) + 1e-12)  # the epsilon keeps the norm differentiable at 0
        gp = self.config.disc_gp_weight * jnp.mean((norm - 1.0) ** 2)
        loss = bce + gp
        return loss, {"disc_loss": loss, "bce": bce, "grad_penalty": gp,
                      "d_expert": jnp.mean(jax.nn.sigmoid(logit_e)), "d_agent": jnp.mean(jax.nn.sigmoid(logit_a))}

    # ---------------------------------------------------------------------------------------- V and pi

    def weights(self, batch: base.Batch, value_params: Any = None) -> dict[str, jax.Array]:
        """reward r(s) [B], e_V [B] and the weight w = f*'(e_V) [B] of each agent transition in `batch`."""
        r = jax.lax.stop_gradient(self.reward(batch["observations"]))
        v = base.call(self.value, batch["observations"], params=value_params)
        next_v = base.call(self.value, batch["next_observations"], params=value_params)
        e_v = r + self.config.discount * (1.0 - batch["terminals"]) * next_v - v
        return {"reward": r, "e_v": e_v, "w": f_star_prime(e_v, self.config.f)}

    def value_loss(self, batch: base.Batch, params: Any) -> tuple[jax.Array, base.Info]:
        # Episode starts when the data give them, else the batch's own states stand in for s0.
        v0 = base.call(self.value, batch.get("initial_observations", batch["observations"]), params=params)
        e_v = self.weights(batch, params)["e_v"]
        loss0 = (1.0 - self.config.discount) * jnp.mean(v0)
        if self.config.f == "kl":
            loss1 = jax.nn.logsumexp(e_v) - math.log(e_v.shape[0])  # log E[exp(e_V)], overflow-safe
        else:
            loss1 = jnp.mean(chi_f_star(e_v))
        loss = loss0 + loss1
        return loss, {"value_loss": loss, "v0_term": loss0, "f_star_term": loss1, "v0_mean": jnp.mean(v0)}

    def actor_loss(self, batch: base.Batch, params: Any, w: jax.Array, key: jax.Array) -> tuple[jax.Array, base.Info]:
        mean, log_std = base.call(self.actor, batch["observations"], params=params)
        _, sampled_log_prob = tanh_gaussian_sample(mean, log_std, key)  # [B], for the entropy term
        actions = base.to_unit(batch["actions"], self.action_low, self.action_high)
        log_prob = jnp.sum(tanh_gaussian_log_prob(mean, log_std, actions, 1e-6), axis=-1)  # [B]
        loss = -jnp.mean(w * log_prob)
        if self.config.entropy_constraint:
            loss = loss + jnp.exp(base.call(self.log_ent_coeff)) * jnp.mean(sampled_log_prob)
        return loss, {"actor_loss": loss, "weighted_log_prob": jnp.mean(w * log_prob), "bc_log_prob": log_prob.mean(),
                      "entropy": -jnp.mean(sampled_log_prob)}

    def ent_coeff_loss(self, params: Any, entropy: jax.Array) -> tuple[jax.Array, base.Info]:
        """Raise the coefficient while the policy's entropy is under the target, lower it above (SAC)."""
        target = self.config.target_entropy_per_dim * self.action_low.shape[0]
        log_coeff = base.call(self.log_ent_coeff, params=params)
        loss = -log_coeff * jax.lax.stop_gradient(target - entropy)
        return loss, {"ent_coeff": jnp.exp(log_coeff)}

    # ------------------------------------------------------------------------------------------ update

    def disc_update(self, batch: base.Batch, key: jax.Array) -> tuple[SMODICE, base.Info]:
        disc, info = base.apply_loss(self.disc, lambda p: self.disc_loss(batch, p, key))
        return self.replace(disc=disc), {f"disc/{k}": x for k, x in info.items()}

    def dice_update(self, batch: base.Batch, key: jax.Array) -> tuple[SMODICE, base.Info]:
        """V, policy and entropy coefficient from the same pre-update V and policy (reference train_step)."""
        out = self.weights(batch)
        w = jax.lax.stop_gradient(out["w"])
        value, v_info = base.apply_loss(self.value, lambda p: self.value_loss(batch, p))
        actor, a_info = base.apply_loss(self.actor, lambda p: self.actor_loss(batch, p, w, key))
        agent = self.replace(value=value, actor=actor)
        info = {**{f"value/{k}": x for k, x in v_info.items()}, **{f"actor/{k}": x for k, x in a_info.items()},
                "weights/w_mean": w.mean(), "weights/w_max": w.max(), "weights/e_v_mean": out["e_v"].mean(),
                "weights/reward_mean": out["reward"].mean()}
        if self.config.entropy_constraint:
            ent, e_info = base.apply_loss(self.log_ent_coeff, lambda p: self.ent_coeff_loss(p, a_info["entropy"]))
            agent = agent.replace(log_ent_coeff=ent)
            info["actor/ent_coeff"] = e_info["ent_coeff"]
        return agent, info

    @jax.jit
    def update(self, batch: base.Batch) -> tuple[SMODICE, base.Info]:
        rng, disc_key, dice_key = jax.random.split(self.rng, 3)
        agent = self.replace(rng=rng)
        agent, info = base.phased(self.step < self.config.disc_steps, lambda a: a.disc_update(batch, disc_key),
                                  lambda a: a.dice_update(batch, dice_key), agent)
        return agent.replace(step=self.step + 1), info

    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = True) -> jax.Array:
        """tanh of the policy mean (deterministic, the reference's deterministic_action) or of a sample."""
        return base.tanh_gaussian_actions(self.actor, observations, key, deterministic, self.action_low,
                                          self.action_high)

    @classmethod
    def create(
        cls,
        seed: int,
        obs_dim: int,
        action_dim: int,
        config: SMODICEConfig | dict | None = None,
        action_low: Any = None,
        action_high: Any = None,
    ) -> SMODICE:
        base.check_dims(cls.name, obs_dim, action_dim)
        config = base.resolve_config(get_config, config, cls.name)
        low, high = base.resolve_bounds(action_dim, action_low, action_high)
        rng, disc_key, value_key, actor_key, ent_key = jax.random.split(jax.random.PRNGKey(seed), 5)
        obs = jnp.zeros((1, obs_dim), jnp.float32)
        width = config.hidden_dims[0]
        disc = base.make_state(ValueNet((width, width), nn.tanh, TORCH_LINEAR_INIT), disc_key, (obs,),
                               base.make_optimizer(config.disc_lr))
        value = base.make_state(ValueNet(config.hidden_dims, kernel_init=XAVIER_INIT), value_key, (obs,),
                                base.make_optimizer(config.lr, weight_decay=config.v_l2_reg))
        policy = TanhGaussianPolicy(config.hidden_dims, action_dim, config.log_std_min, config.log_std_max,
                                    config.mean_clip)
        actor = base.make_state(policy, actor_key, (obs,), base.make_optimizer(config.lr))
        ent = base.make_state(Scalar(0.0), ent_key, (), base.make_optimizer(config.lr))  # log coeff 0 (reference)
        return cls(rng=rng, step=jnp.zeros((), jnp.int32), disc=disc, value=value, actor=actor, log_ent_coeff=ent,
                   action_low=low, action_high=high, obs_dim=int(obs_dim), config=config)
