"""Networks shared by the learners: MLPs, twin critics, IQL's Gaussian policy, the tanh-squashed Gaussian
policy of SMODICE, DWBC and IQ-Learn, a learnable scalar (entropy temperatures), the diffusion noise model.

Initialisers follow each method's reference code: IQL (ikostrikov/implicit_q_learning, common.py) uses
orthogonal(sqrt 2) kernels; Diffusion-QL and DWBC are PyTorch code, whose nn.Linear default draws kernels from
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), i.e. variance_scaling(1/3, fan_in, uniform); SMODICE initialises its
policy and V with xavier_uniform (networks_pytorch.py weights_init_), IQ-Learn with orthogonal gain 1
(agent/sac_models.py orthogonal_init_). Biases start at 0 everywhere (flax's default).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

Initializer = Callable[..., jax.Array]


def orthogonal_init(scale: float = math.sqrt(2.0)) -> Initializer:
    """IQL's default kernel initialiser (common.py `default_init`)."""
    return nn.initializers.orthogonal(scale)


# PyTorch nn.Linear's default kernel distribution, for the Diffusion-QL networks. One shared object (as
# are the other defaults) so equal module configs compare equal and jitted code is reused across learners.
TORCH_LINEAR_INIT: Initializer = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
ORTHOGONAL_INIT: Initializer = orthogonal_init()
ORTHOGONAL_INIT_1: Initializer = orthogonal_init(1.0)
XAVIER_INIT: Initializer = nn.initializers.xavier_uniform()


class MLP(nn.Module):
    """Dense layers of `hidden_dims`; the activation follows every layer but the last unless activate_final,
    and with layer_norm a LayerNorm follows each activation (as OGBench's MLP does)."""

    hidden_dims: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    activate_final: bool = False
    kernel_init: Initializer = ORTHOGONAL_INIT
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i, size in enumerate(self.hidden_dims):
            x = nn.Dense(size, kernel_init=self.kernel_init)(x)
            if i + 1 < len(self.hidden_dims) or self.activate_final:
                x = self.activation(x)
                if self.layer_norm:
                    x = nn.LayerNorm()(x)
        return x


class ValueNet(nn.Module):
    """V(s): obs [B, d] -> [B]."""

    hidden_dims: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    kernel_init: Initializer = ORTHOGONAL_INIT
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        mlp = MLP((*self.hidden_dims, 1), self.activation, kernel_init=self.kernel_init, layer_norm=self.layer_norm)
        return mlp(observations)[..., 0]


class Critic(nn.Module):
    """Q(s, a): obs [B, d], actions [B, a] -> [B]."""

    hidden_dims: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    kernel_init: Initializer = ORTHOGONAL_INIT
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        x = jnp.concatenate([observations, actions], axis=-1)
        mlp = MLP((*self.hidden_dims, 1), self.activation, kernel_init=self.kernel_init, layer_norm=self.layer_norm)
        return mlp(x)[..., 0]


class TwinCritic(nn.Module):
    """Two independent Q networks evaluated in one vmapped call: -> [2, B] (clipped double Q)."""

    hidden_dims: Sequence[int]
    activation: Callable[[jax.Array], jax.Array] = nn.relu
    kernel_init: Initializer = ORTHOGONAL_INIT
    layer_norm: bool = False

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        ensemble = nn.vmap(
            Critic,
            variable_axes={"params": 0},
            split_rngs={"params": True},  # each member gets its own initialisation
            in_axes=None,
            out_axes=0,
            axis_size=2,
        )
        return ensemble(self.hidden_dims, self.activation, self.kernel_init, self.layer_norm)(observations, actions)


class GaussianPolicy(nn.Module):
    """IQL's policy (policy.py NormalTanhPolicy with state_dependent_std=False, tanh_squash_distribution=False):
    a Gaussian whose mean is tanh(MLP(s)) and whose log-std is a learned, state-independent vector."""

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        """obs [B, d] -> (mean [B, a], log_std [a])."""
        h = MLP(self.hidden_dims, activate_final=True)(observations)
        mean = nn.tanh(nn.Dense(self.action_dim, kernel_init=ORTHOGONAL_INIT)(h))
        log_std = self.param("log_stds", nn.initializers.zeros, (self.action_dim,))
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


class TanhGaussianPolicy(nn.Module):
    """A Gaussian over pre-tanh actions with state-dependent mean and log-std; actions are tanh of a sample, in
    [-1, 1]. The log-std is clipped to [log_std_min, log_std_max] (SMODICE, DWBC) or, with `tanh_log_std`,
    squashed into that range by a tanh (IQ-Learn's DiagGaussianActor); `mean_clip` > 0 clips the mean
    (SMODICE 7.24, DWBC 9)."""

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    mean_clip: float = 0.0
    tanh_log_std: bool = False
    kernel_init: Initializer = XAVIER_INIT

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        """obs [B, d] -> (pre-tanh mean [B, a], log_std [B, a])."""
        h = MLP(self.hidden_dims, activate_final=True, kernel_init=self.kernel_init)(observations)
        mean = nn.Dense(self.action_dim, kernel_init=self.kernel_init)(h)
        log_std = nn.Dense(self.action_dim, kernel_init=self.kernel_init)(h)
        if self.mean_clip > 0:
            mean = jnp.clip(mean, -self.mean_clip, self.mean_clip)
        if self.tanh_log_std:
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (jnp.tanh(log_std) + 1.0)
        else:
            log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        return mean, log_std


def tanh_log_det(pre_tanh: jax.Array) -> jax.Array:
    """log |d tanh(x) / dx| = 2 (log 2 - x - softplus(-2x)), elementwise; stable for large |x| (the form of
    torch's TanhTransform and IQ-Learn's sac_models.TanhTransform)."""
    return 2.0 * (math.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array, eps: float = 1e-6) -> jax.Array:
    """Per-dimension log density [B, a] of dataset actions [B, a] in [-1, 1] under tanh(N(mean, std)).

    Actions are clipped to [-1 + eps, 1 - eps] before atanh, so actions on the bound have a finite density
    (SMODICE eps 1e-6, networks_pytorch.py; DWBC 1e-7, algos/DWBC.py)."""
    y = jnp.clip(actions, -1.0 + eps, 1.0 - eps)
    x = jnp.arctanh(y)
    z = (x - mean) * jnp.exp(-log_std)
    return -0.5 * z**2 - log_std - 0.5 * math.log(2.0 * math.pi) - tanh_log_det(x)


def tanh_gaussian_sample(mean: jax.Array, log_std: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """A reparameterised sample: (actions [B, a] in [-1, 1], log density [B], summed over the action axis)."""
    noise = jax.random.normal(key, mean.shape)
    x = mean + jnp.exp(log_std) * noise
    log_prob = -0.5 * noise**2 - log_std - 0.5 * math.log(2.0 * math.pi) - tanh_log_det(x)
    return jnp.tanh(x), jnp.sum(log_prob, axis=-1)


class Scalar(nn.Module):
    """One learnable scalar, e.g. the log of an entropy temperature: () -> []."""

    init_value: float = 0.0

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("value", nn.initializers.constant(self.init_value), ())


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, x: jax.Array) -> jax.Array:
    """Log density of a diagonal Gaussian, summed over the action axis: -> [B]."""
    z = (x - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * math.log(2.0 * math.pi), axis=-1)


def sinusoidal_embedding(t: jax.Array, dim: int) -> jax.Array:
    """Transformer-style embedding of diffusion steps t [B] -> [B, dim] (Diffusion-QL helpers.SinusoidalPosEmb)."""
    half = dim // 2
    freqs = jnp.exp(jnp.arange(half) * -(math.log(10000.0) / (half - 1)))
    angles = t.astype(jnp.float32)[:, None] * freqs[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


class NoiseModel(nn.Module):
    """Diffusion-QL's denoiser eps(x_t, t, s) (model.py MLP): time embedding -> Dense(2t)-Mish-Dense(t), then
    [x_t, emb, s] through Mish layers of `hidden_dims` and a linear head to the action dimension."""

    hidden_dims: Sequence[int]
    action_dim: int
    time_dim: int = 16

    @nn.compact
    def __call__(self, x_t: jax.Array, t: jax.Array, observations: jax.Array) -> jax.Array:
        """x_t [B, a], t [B] (int), obs [B, d] -> predicted noise [B, a]."""
        init = TORCH_LINEAR_INIT
        emb = sinusoidal_embedding(t, self.time_dim)
        emb = nn.Dense(self.time_dim * 2, kernel_init=init)(emb)
        emb = nn.Dense(self.time_dim, kernel_init=init)(jax.nn.mish(emb))
        h = jnp.concatenate([x_t, emb, observations], axis=-1)
        h = MLP(self.hidden_dims, jax.nn.mish, activate_final=True, kernel_init=init)(h)
        return nn.Dense(self.action_dim, kernel_init=init)(h)
