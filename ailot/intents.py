"""ICVF pretraining of the intent encoder psi (DESIGN step 1), and the intent-geometry check (paper Fig. 8).

The value of reaching outcome s+ from s while acting on intent z is V(s, s+, z) = phi(s)^T T(z) psi(s+),
with z = psi(s_z) for an intent state s_z (Ghosh et al. 2023, "Reinforcement Learning from Passive Data via
Latent Intentions"; reference code dibyaghosh/icvf_release, src/icvf_learner.py, src/icvf_networks.py and
src/gc_dataset.py). It is trained offline with an expectile TD loss on observation-only trajectories; only
psi is kept, averaged over the ensemble, and used by the relabeller as the intent space.

Layout: `ICVFConfig` (every default with its source) -> `training_data` / `prepare_data` (flat, normalised
unless `normalize_observations` is off, device-resident) -> `sample_goal_indices` / `sample_batch` (pure,
explicit keys) -> `icvf_loss` -> `pretrain_step`, scanned `chunk` times per dispatch by `pretrain` ->
`IntentEncoder` (psi only) -> `intent_geometry`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pandas as pd
from flax import serialization, struct
from tqdm.auto import tqdm

from ailot.errors import AilotInputError

_FORMAT_VERSION = 1  # bump when the on-disk layout of IntentEncoder.save changes
_PARAMS_FILE = "psi_params.msgpack"
_META_FILE = "encoder.json"
# ICVF settings added after encoders were first cached, each with the value that reproduces the behaviour from
# before it existed. Cache keys and hashes leave a setting out at that value, so old cache entries still match
# it, and name it otherwise, so a changed default never picks up an encoder trained the old way.
LEGACY_VALUES: dict[str, Any] = {"normalize_observations": True, "sample_last_transition": False}


# ----------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ICVFConfig:
    """ICVF hyperparameters. Frozen and hashable: it is a static argument of the jitted training chunk."""

    # Networks. phi, psi and T are MLPs with ReLU on the last layer too, so d = hidden_dims[-1]
    # (icvf_networks.MultilinearVF: activate_final=True; icvf train_icvf.py hidden_dims [256, 256]).
    hidden_dims: tuple[int, ...] = (256, 256)
    ensemble: int = 2  # value heads (icvf_networks.create_icvf: ensemblize(..., 2))
    min_q: bool = True  # min over heads for the intent-advantage target (icvf_learner default min_q=True)
    # Loss.
    expectile: float = 0.9  # tau of the expectile weight (icvf_learner.get_default_config; AILOT paper)
    discount: float = 0.99  # gamma (icvf antmaze train_icvf.py overrides the 0.95 learner default to 0.99)
    target_update_rate: float = 0.005  # Polyak rate of the target network (icvf_learner default)
    # Optimiser: Adam, "standard Adam parameters for non-vision" (icvf antmaze train_icvf.py).
    lr: float = 3e-4
    adam_eps: float = 1e-8
    batch_size: int = 256  # icvf train_icvf.py --batch_size; DESIGN allows 256-1024
    num_steps: int = 300_000  # lower end of DESIGN's 3e5-1e6 (icvf reference trains 1e6)
    # Goal (outcome s+) sampling mixture (icvf gc_dataset.GCSDataset.get_default_config). Intents are
    # sampled from the same mixture unless intent_same_trajectory.
    p_random_goal: float = 0.3  # uniformly random dataset state
    p_same_traj_goal: float = 0.5  # uniform between the state and its episode's last state
    p_current_goal: float = 0.2  # the state itself (reward 0, episode "ends")
    p_goal_is_intent: float = 0.5  # outcome s+ := intent state s_z (GCSDataset p_samegoal)
    intent_same_trajectory: bool = False  # intents only from the same episode (GCSDataset intent_sametraj)
    # Inputs. ailot normalises observations by their dataset mean and std (DESIGN.md); icvf_release feeds raw
    # observations (experiments/antmaze/train_icvf.py builds its dataset without normalisation) and so do the
    # AILOT authors' configs (skylooop/AILOT configs/Env/*.yaml: normalize_states: False). False = raw inputs.
    normalize_observations: bool = True
    # Train on every transition s_t -> s_{t+1}, t = 0..T-1, of each episode, the last one included, as
    # icvf_release does (gc_dataset.GCDataset.sample draws any row of the D4RL transition table; on hopper
    # the last transition is the fall). False drops each episode's final observation s_T first: the pairs end
    # at s_{T-2} -> s_{T-1}, as ailot did before (it pretrained on Episodes.states()); for committed results.
    sample_last_transition: bool = True
    # Execution (no effect on the maths).
    chunk: int = 1000  # updates per jitted dispatch (jax.lax.scan); also the loss-history resolution
    std_floor: float = 1e-6  # dims with a smaller std are left unscaled (constant features)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ICVFConfig:
        """Build from a plain mapping (YAML `intents:` section); unknown keys and bad values raise."""
        d = dict(d or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise AilotInputError(
                f"intents config key '{unknown[0]}'",
                "is not an ICVF setting",
                f"use one of: {', '.join(sorted(names))}",
            )
        if "hidden_dims" in d:
            hd = d["hidden_dims"]
            if isinstance(hd, (int, np.integer)) or not isinstance(hd, Sequence):
                raise AilotInputError(
                    "intents config key 'hidden_dims'", f"expected a list of ints, got {hd!r}", "write e.g. [256, 256]"
                )
            d["hidden_dims"] = tuple(int(h) for h in hd)
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping; `from_dict(to_dict())` round-trips."""
        out = dataclasses.asdict(self)
        out["hidden_dims"] = list(self.hidden_dims)
        return out

    def key_dict(self) -> dict[str, Any]:
        """`to_dict()` less the `LEGACY_VALUES` settings at their legacy value (what content hashes see)."""
        return {k: v for k, v in self.to_dict().items() if not (k in LEGACY_VALUES and v == LEGACY_VALUES[k])}

    def __post_init__(self) -> None:
        def bad(key: str, problem: str, fix: str) -> AilotInputError:
            return AilotInputError(f"intents config key '{key}'", problem, fix)

        # Keep the config hashable (a jit static argument) even when built with a list.
        object.__setattr__(self, "hidden_dims", tuple(int(h) for h in self.hidden_dims))

        if not self.hidden_dims or any(int(h) < 1 for h in self.hidden_dims):
            raise bad("hidden_dims", f"needs positive layer sizes, got {self.hidden_dims}", "write e.g. [256, 256]")
        for key in ("ensemble", "batch_size", "num_steps", "chunk"):
            value = getattr(self, key)
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise bad(key, f"must be a positive integer, got {value!r}", "use an integer >= 1")
        for key in ("normalize_observations", "sample_last_transition"):
            if not isinstance(getattr(self, key), (bool, np.bool_)):
                raise bad(key, f"must be true or false, got {getattr(self, key)!r}", "write true or false")
        for key in ("expectile", "target_update_rate", "p_random_goal", "p_same_traj_goal", "p_current_goal",
                    "p_goal_is_intent"):
            value = getattr(self, key)
            if not 0.0 <= float(value) <= 1.0:
                raise bad(key, f"must lie in [0, 1], got {value!r}", "use a probability / rate in [0, 1]")
        if not 0.0 <= float(self.discount) < 1.0:
            raise bad("discount", f"must lie in [0, 1), got {self.discount!r}", "use e.g. 0.99")
        if not float(self.lr) > 0.0:
            raise bad("lr", f"must be positive, got {self.lr!r}", "use e.g. 3e-4")
        total = self.p_random_goal + self.p_same_traj_goal + self.p_current_goal
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise bad(
                "p_random_goal + p_same_traj_goal + p_current_goal",
                f"must sum to 1, got {total:g}",
                "adjust the three goal probabilities (default 0.3 / 0.5 / 0.2)",
            )

    @property
    def embed_dim(self) -> int:
        """d, the size of psi(s)."""
        return int(self.hidden_dims[-1])


def encoder_settings(intents: dict[str, Any] | None) -> dict[str, Any]:
    """The part of a YAML `intents:` mapping that identifies an encoder in a cache key: the mapping as given,
    with each `LEGACY_VALUES` setting removed where it resolves to its legacy value and added where it does not.

    So `{}` from before a default changed and `{sample_last_transition: false}` now share a key (the same
    training), and `{}` now, which resolves to the new default, gets another one.
    """
    intents = dict(intents or {})
    config = ICVFConfig.from_dict(intents)
    out = {k: v for k, v in intents.items() if k not in LEGACY_VALUES}
    out.update({k: getattr(config, k) for k, legacy in LEGACY_VALUES.items() if getattr(config, k) != legacy})
    return out


# ----------------------------------------------------------------------------------------------- networks

# Xavier-uniform: jaxrl_m.networks.default_init (variance_scaling(1, "fan_avg", "uniform")) used by ICVF's MLPs.
_mlp_init = nn.initializers.variance_scaling(1.0, "fan_avg", "uniform")


class MLP(nn.Module):
    """Dense layers with ReLU after every layer (ICVF's phi/psi/T use activate_final=True)."""

    hidden_dims: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for size in self.hidden_dims:
            x = nn.relu(nn.Dense(size, kernel_init=_mlp_init)(x))
        return x


class MultilinearVF(nn.Module):
    """One ICVF head: V(s, s+, z) = phi(s)^T T(z) psi(s+), z = psi(s_z).

    T(z) is parameterised as ICVF does, diag(Tz) A^T B diag(Tz) with fixed learned A, B and Tz = T_net(z):
    a d x d matrix without a network emitting d^2 numbers (icvf_networks.MultilinearVF).
    """

    hidden_dims: tuple[int, ...]

    def setup(self) -> None:
        self.phi = MLP(self.hidden_dims)
        self.psi = MLP(self.hidden_dims)
        self.T = MLP(self.hidden_dims)
        self.matrix_a = nn.Dense(self.hidden_dims[-1])
        self.matrix_b = nn.Dense(self.hidden_dims[-1])

    def __call__(self, obs: jax.Array, outcomes: jax.Array, intents: jax.Array) -> jax.Array:
        """obs, outcomes, intents [B, obs_dim] (normalised) -> V [B]."""
        tz = self.T(self.psi(intents))
        phi_z = self.matrix_a(tz * self.phi(obs))
        psi_z = self.matrix_b(tz * self.psi(outcomes))
        return jnp.sum(phi_z * psi_z, axis=-1)


def ensemble_values(params: Any, config: ICVFConfig, obs: jax.Array, outcomes: jax.Array,
                    intents: jax.Array) -> jax.Array:
    """V of every head: params with a leading ensemble axis E -> [E, B]."""
    model = MultilinearVF(tuple(config.hidden_dims))
    return jax.vmap(lambda p: model.apply({"params": p}, obs, outcomes, intents))(params)


def init_params(key: jax.Array, config: ICVFConfig, obs_dim: int) -> Any:
    """Independent initialisation of each ensemble head (ICVF ensemblize: split_rngs params=True)."""
    model = MultilinearVF(tuple(config.hidden_dims))
    dummy = jnp.zeros((1, obs_dim), jnp.float32)
    keys = jax.random.split(key, config.ensemble)
    return jax.vmap(lambda k: model.init(k, dummy, dummy, dummy)["params"])(keys)


# ----------------------------------------------------------------------------------------------- data


class ICVFData(struct.PyTreeNode):
    """Flat, normalised dataset on device. Index i is a state; its episode's last state has index last[i]."""

    obs: jax.Array  # [M, obs_dim] normalised observations of all episodes, concatenated
    last: jax.Array  # [M] int32 flat index of the last observation of i's episode
    state_idx: jax.Array  # [S] int32 indices with a successor in the same episode (i < last[i])


def as_trajectory_list(trajectories: Any, lengths: np.ndarray | None = None, what: str = "trajectories"
                       ) -> list[np.ndarray]:
    """Accept a list of [T_i, d] arrays or padded [N, T, d] + lengths [N]; validate; return the list."""
    if lengths is not None:
        padded = np.asarray(trajectories)
        lengths = np.asarray(lengths)
        if padded.ndim != 3 or lengths.shape != (padded.shape[0],):
            raise AilotInputError(what, f"padded input must be [N, T, d] with lengths [N], got {padded.shape} and "
                                  f"{lengths.shape}", "pass obs [N, T, d] and lengths [N], or a list of [T_i, d]")
        if np.any(lengths < 0) or np.any(lengths > padded.shape[1]):
            raise AilotInputError(what, f"lengths must lie in [0, {padded.shape[1]}]", "fix the lengths array")
        trajectories = [padded[i, : int(n)] for i, n in enumerate(lengths)]
    if isinstance(trajectories, np.ndarray) and trajectories.ndim == 3:
        trajectories = list(trajectories)
    if not isinstance(trajectories, (list, tuple)) or len(trajectories) == 0:
        raise AilotInputError(what, "no trajectories given", "pass a non-empty list of [T_i, d] observation arrays")
    out, dim = [], None
    for i, traj in enumerate(trajectories):
        traj = np.asarray(traj)
        if traj.ndim != 2:
            raise AilotInputError(f"{what}[{i}]", f"expected a [T, d] array, got shape {traj.shape}",
                                  "pass one 2-D observation array per episode")
        if traj.shape[0] == 0:
            raise AilotInputError(f"{what}[{i}]", "is an empty episode", "drop empty episodes before pretraining")
        if dim is None:
            dim = traj.shape[1]
        elif traj.shape[1] != dim:
            raise AilotInputError(f"{what}[{i}]", f"has observation dim {traj.shape[1]}, episode 0 has {dim}",
                                  "use the same observation keys for every episode")
        if not np.all(np.isfinite(traj)):
            raise AilotInputError(f"{what}[{i}]", "contains NaN or inf", "clean or drop the episode")
        out.append(traj)
    return out


def normalisation_stats(trajectories: list[np.ndarray], std_floor: float = 1e-6) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std over all observations (float32); near-constant dims keep std 1."""
    flat = np.concatenate(trajectories).astype(np.float64)
    mean, std = flat.mean(0), flat.std(0)
    std = np.where(std < std_floor, 1.0, std)  # a constant feature carries no signal; don't blow it up
    return mean.astype(np.float32), std.astype(np.float32)


def prepare_data(trajectories: list[np.ndarray], obs_mean: np.ndarray, obs_std: np.ndarray) -> ICVFData:
    """Concatenate episodes, normalise, and build the index arrays the sampler needs; put on device."""
    lengths = np.array([len(t) for t in trajectories], np.int64)
    if lengths.sum() >= np.iinfo(np.int32).max:
        raise AilotInputError("trajectories", "more than 2^31 states", "subsample the dataset")
    ends = np.cumsum(lengths) - 1  # flat index of each episode's last observation
    last = np.repeat(ends, lengths).astype(np.int32)
    flat_idx = np.arange(lengths.sum(), dtype=np.int32)
    state_idx = flat_idx[flat_idx < last]
    if state_idx.size == 0:
        raise AilotInputError("trajectories", "no episode has two or more observations, so there is no transition",
                              "pass episodes of length >= 2")
    obs = ((np.concatenate(trajectories) - obs_mean) / obs_std).astype(np.float32)
    return ICVFData(obs=jnp.asarray(obs), last=jnp.asarray(last), state_idx=jnp.asarray(state_idx))


# ----------------------------------------------------------------------------------------------- sampling

GOAL_RANDOM, GOAL_SAME_TRAJ, GOAL_CURRENT = 0, 1, 2  # labels returned by sample_goal_indices


def sample_goal_indices(key: jax.Array, idx: jax.Array, last: jax.Array, num_obs: int, p_same_traj: float,
                        p_current: float) -> tuple[jax.Array, jax.Array]:
    """ICVF goal sampling (gc_dataset.GCDataset.sample_goals) for states idx [B] -> (goal idx [B], kind [B]).

    Same-trajectory goals are round(u * idx + (1 - u) * last[idx]) with u ~ U[0, 1): never before the state,
    never past its episode's end. The reference's two-coin mixture (traj vs random with prob
    p_same_traj / (1 - p_current), then current with prob p_current) gives exactly the stated proportions;
    random goals (uniform over all num_obs states) take the remaining 1 - p_same_traj - p_current.
    """
    k_rand, k_u, k_mix, k_cur = jax.random.split(key, 4)
    batch = idx.shape[0]
    random_goal = jax.random.randint(k_rand, (batch,), 0, num_obs, dtype=jnp.int32)
    u = jax.random.uniform(k_u, (batch,))
    end = last[idx]
    traj_goal = jnp.round(idx * u + end * (1.0 - u)).astype(jnp.int32)
    traj_goal = jnp.clip(traj_goal, idx, end)  # float rounding can never leave [idx, end]
    p_traj_given_not_current = p_same_traj / max(1.0 - p_current, 1e-12)
    use_traj = jax.random.uniform(k_mix, (batch,)) < p_traj_given_not_current
    use_current = jax.random.uniform(k_cur, (batch,)) < p_current
    goal = jnp.where(use_current, idx, jnp.where(use_traj, traj_goal, random_goal))
    kind = jnp.where(use_current, GOAL_CURRENT, jnp.where(use_traj, GOAL_SAME_TRAJ, GOAL_RANDOM))
    return goal, kind


def sample_batch(key: jax.Array, data: ICVFData, config: ICVFConfig) -> dict[str, jax.Array]:
    """One ICVF batch (gc_dataset.GCSDataset.sample): s, s', outcome s+, intent s_z, rewards and masks.

    Rewards are 0 when the sampled state index equals the target index and -1 otherwise; masks stop
    bootstrapping at the target (reward_shift -1, terminal=True in the reference).
    """
    k_s, k_int, k_goal, k_same = jax.random.split(key, 4)
    b, num_obs = config.batch_size, data.obs.shape[0]
    idx = data.state_idx[jax.random.randint(k_s, (b,), 0, data.state_idx.shape[0])]
    if config.intent_same_trajectory:
        intent, _ = sample_goal_indices(k_int, idx, data.last, num_obs, 1.0 - config.p_current_goal,
                                        config.p_current_goal)
    else:
        intent, _ = sample_goal_indices(k_int, idx, data.last, num_obs, config.p_same_traj_goal,
                                        config.p_current_goal)
    goal, _ = sample_goal_indices(k_goal, idx, data.last, num_obs, config.p_same_traj_goal, config.p_current_goal)
    goal = jnp.where(jax.random.uniform(k_same, (b,)) < config.p_goal_is_intent, intent, goal)
    goal_hit = (idx == goal).astype(jnp.float32)
    intent_hit = (idx == intent).astype(jnp.float32)
    return {
        "obs": data.obs[idx],
        "next_obs": data.obs[idx + 1],
        "goals": data.obs[goal],
        "intents": data.obs[intent],
        "rewards": goal_hit - 1.0,
        "masks": 1.0 - goal_hit,
        "intent_rewards": intent_hit - 1.0,
        "intent_masks": 1.0 - intent_hit,
    }


# ----------------------------------------------------------------------------------------------- loss, update


def expectile_weight(adv: jax.Array, expectile: float) -> jax.Array:
    """|tau - 1(adv < 0)|: tau where the intent advantage is >= 0, 1 - tau otherwise (icvf_learner)."""
    return jnp.where(adv >= 0, expectile, 1.0 - expectile)


def icvf_loss(params: Any, target_params: Any, batch: dict[str, jax.Array], config: ICVFConfig
              ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The ICVF loss (icvf_learner.icvf_loss), summed over heads.

    Per head e: (r + gamma * m * Vbar_e(s', s+, z) - V_e(s, s+, z))^2, weighted by the expectile of the
    intent advantage A = r_z + gamma * m_z * min_e Vbar_e(s', s_z, z) - mean_e Vbar_e(s, s_z, z), which uses
    the target network only (so no gradient flows through the weight).
    """
    gamma = config.discount
    s, s_next, g, z = batch["obs"], batch["next_obs"], batch["goals"], batch["intents"]
    next_v_gz = ensemble_values(target_params, config, s_next, g, z)  # [E, B]
    q_gz = jax.lax.stop_gradient(batch["rewards"] + gamma * batch["masks"] * next_v_gz)
    v_gz = ensemble_values(params, config, s, g, z)

    next_v_zz = ensemble_values(target_params, config, s_next, z, z)
    next_v_zz = next_v_zz.min(0) if config.min_q else next_v_zz.mean(0)
    q_zz = batch["intent_rewards"] + gamma * batch["intent_masks"] * next_v_zz
    v_zz = ensemble_values(target_params, config, s, z, z).mean(0)
    adv = jax.lax.stop_gradient(q_zz - v_zz)

    weight = expectile_weight(adv, config.expectile)  # [B], shared by every head
    loss = (weight * (q_gz - v_gz) ** 2).mean(-1).sum()
    info = {
        "value_loss": loss,
        "v_gz": v_gz.mean(),
        "v_zz": v_zz.mean(),
        "adv_mean": adv.mean(),
        "abs_adv_mean": jnp.abs(adv).mean(),
        "accept_prob": (adv >= 0).mean(),
        "reward_mean": batch["rewards"].mean(),
    }
    return loss, info


class ICVFState(struct.PyTreeNode):
    """Everything that changes during pretraining; a pytree so lax.scan can carry it."""

    params: Any  # online heads, leading axis E
    target_params: Any  # Polyak-averaged copy
    opt_state: Any
    rng: jax.Array
    step: jax.Array


def make_optimizer(config: ICVFConfig) -> optax.GradientTransformation:
    """Adam(lr, eps) as in icvf antmaze train_icvf.py."""
    return optax.adam(config.lr, eps=config.adam_eps)


def init_state(seed: int, config: ICVFConfig, obs_dim: int) -> ICVFState:
    """Fresh online and target heads (identical at start, as in icvf_learner.create_learner)."""
    key_params, key_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(key_params, config, obs_dim)
    return ICVFState(params=params, target_params=params, opt_state=make_optimizer(config).init(params),
                     rng=key_rng, step=jnp.zeros((), jnp.int32))


def pretrain_step(state: ICVFState, data: ICVFData, config: ICVFConfig) -> tuple[ICVFState, dict[str, jax.Array]]:
    """One ICVF update: sample, gradient step, Polyak target update (pure; jitted via pretrain_chunk)."""
    rng, key = jax.random.split(state.rng)
    batch = sample_batch(key, data, config)
    grads, info = jax.grad(icvf_loss, has_aux=True)(state.params, state.target_params, batch, config)
    updates, opt_state = make_optimizer(config).update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # The reference averages the *pre-update* online params into the target (icvf_learner.update computes
    # target_update(agent.value, ...) before apply_loss_fn); kept for fidelity, the difference is one step.
    rate = config.target_update_rate
    target = jax.tree.map(lambda p, t: rate * p + (1.0 - rate) * t, state.params, state.target_params)
    new_state = state.replace(params=params, target_params=target, opt_state=opt_state, rng=rng,
                              step=state.step + 1)
    return new_state, info


@functools.partial(jax.jit, static_argnames=("config", "num_updates"))
def pretrain_chunk(state: ICVFState, data: ICVFData, config: ICVFConfig, num_updates: int
                   ) -> tuple[ICVFState, dict[str, jax.Array]]:
    """`num_updates` updates in one dispatch; returns the per-update infos stacked [num_updates]."""
    return jax.lax.scan(lambda s, _: pretrain_step(s, data, config), state, None, length=num_updates)


# ----------------------------------------------------------------------------------------------- encoder


def make_embed_fn(hidden_dims: Sequence[int]) -> Callable[[dict[str, Any], jax.Array], jax.Array]:
    """Pure (params, obs [..., d]) -> psi [..., hidden_dims[-1]], averaged over heads.

    params = {"psi": psi params with leading axis E, "obs_mean": [d], "obs_std": [d]} (IntentEncoder.embed_params).
    """
    mlp = MLP(tuple(int(h) for h in hidden_dims))

    def embed(params: dict[str, Any], obs: jax.Array) -> jax.Array:
        x = (obs - params["obs_mean"]) / params["obs_std"]
        return jax.vmap(lambda p: mlp.apply({"params": p}, x))(params["psi"]).mean(0)

    return embed


@functools.lru_cache(maxsize=16)
def _jitted_embed(hidden_dims: tuple[int, ...]) -> Callable:
    return jax.jit(make_embed_fn(hidden_dims))


def _bucket(n: int, cap: int) -> int:
    """Pad sizes to powers of two (capped), so embedding many ragged inputs compiles O(log cap) times."""
    return min(cap, 1 << max(0, (n - 1).bit_length()))


class IntentEncoder:
    """psi after ICVF pretraining: observation normalisation + ensemble-averaged psi MLP. Picklable (Ray)."""

    def __init__(self, params: Any, obs_mean: np.ndarray, obs_std: np.ndarray, config: ICVFConfig):
        self.params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)  # psi, leading axis E
        self.obs_mean = np.asarray(obs_mean, np.float32)
        self.obs_std = np.asarray(obs_std, np.float32)
        self.config = config

    @property
    def obs_dim(self) -> int:
        return int(self.obs_mean.shape[0])

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    @property
    def embed_params(self) -> dict[str, Any]:
        """The `params` argument of `embed_fn()`."""
        return {"psi": self.params, "obs_mean": self.obs_mean, "obs_std": self.obs_std}

    def embed_fn(self) -> Callable[[dict[str, Any], jax.Array], jax.Array]:
        """Pure jittable (embed_params, obs [..., d]) -> psi [..., d_psi], for actors on their own device."""
        return make_embed_fn(self.config.hidden_dims)

    def embed(self, observations: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """psi(normalised obs) averaged over heads: [..., obs_dim] -> [..., d] float32, in batches of rows."""
        obs = np.asarray(observations, np.float32)
        if obs.ndim == 0 or obs.shape[-1] != self.obs_dim:
            raise AilotInputError("observations", f"last axis must be the observation dim {self.obs_dim}, got shape "
                                  f"{obs.shape}", "embed observations of the dataset the encoder was trained on")
        if batch_size < 1:
            raise AilotInputError("batch_size", f"must be >= 1, got {batch_size}", "use e.g. 65536")
        lead = obs.shape[:-1]
        flat = obs.reshape(-1, self.obs_dim)
        out = np.empty((flat.shape[0], self.embed_dim), np.float32)
        fn, params = _jitted_embed(tuple(self.config.hidden_dims)), self.embed_params
        for start in range(0, flat.shape[0], batch_size):
            rows = flat[start:start + batch_size]
            n = rows.shape[0]
            padded = np.zeros((_bucket(n, batch_size), self.obs_dim), np.float32)
            padded[:n] = rows
            out[start:start + n] = np.asarray(fn(params, padded))[:n]
        return out.reshape(*lead, self.embed_dim)

    def _meta(self) -> dict[str, Any]:
        return {
            "format_version": _FORMAT_VERSION,
            "config": self.config.to_dict(),
            "obs_mean": [float(x) for x in self.obs_mean],  # float32 -> float64 -> JSON repr round-trips exactly
            "obs_std": [float(x) for x in self.obs_std],
        }

    def save(self, path: str | Path) -> Path:
        """Write `path/psi_params.msgpack` (flax msgpack) and `path/encoder.json` (config + stats). No pickle."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / _PARAMS_FILE).write_bytes(serialization.msgpack_serialize(self.params))
        (path / _META_FILE).write_text(json.dumps(self._meta(), indent=1, sort_keys=True))
        return path

    @classmethod
    def load(cls, path: str | Path, config: ICVFConfig | None = None, obs_dim: int | None = None) -> IntentEncoder:
        """Inverse of save: identical params, stats and config, hence identical embeddings and hash.

        With `config` / `obs_dim`, refuse an encoder trained with other settings or on other observations
        (it would load fine and then embed, or fail in XLA, far from the cause).
        """
        path = Path(path)
        what = f"intent encoder '{path}'"
        if not (path / _PARAMS_FILE).exists() or not (path / _META_FILE).exists():
            raise AilotInputError(what, f"is missing {_PARAMS_FILE} or {_META_FILE}",
                                  "point at a directory written by IntentEncoder.save, or pretrain again")
        try:
            meta = json.loads((path / _META_FILE).read_text())
            version = meta.get("format_version")
        except (ValueError, AttributeError) as exc:
            raise AilotInputError(what, f"has an unreadable {_META_FILE} ({exc})",
                                  "pretrain the encoder again") from None
        if version != _FORMAT_VERSION:
            raise AilotInputError(what, f"has format {version}, this version reads {_FORMAT_VERSION}",
                                  "pretrain the encoder again")
        try:
            params = serialization.msgpack_restore((path / _PARAMS_FILE).read_bytes())
            mean, std = np.array(meta["obs_mean"], np.float32), np.array(meta["obs_std"], np.float32)
            # an encoder saved before a LEGACY_VALUES setting existed was trained the legacy way
            stored = ICVFConfig.from_dict({**LEGACY_VALUES, **meta["config"]})
        except (ValueError, KeyError, TypeError) as exc:  # AilotInputError is a ValueError too
            raise AilotInputError(what, f"is corrupt ({exc})", "pretrain the encoder again") from None
        if config is not None and stored != config:
            wanted = config.to_dict()
            diff = {k: (v, wanted[k]) for k, v in stored.to_dict().items() if v != wanted[k]}
            raise AilotInputError(what, f"was trained with other ICVF settings (saved vs wanted: {diff})",
                                  "load the encoder pretrained with these settings, or pretrain again")
        if obs_dim is not None and mean.shape != (obs_dim,):
            raise AilotInputError(what, f"was trained on {mean.shape[0]}-dim observations, not {obs_dim}",
                                  "use the encoder pretrained on this dataset")
        # the params must be the psi network the stored config describes (shapes only: no compute)
        want = jax.eval_shape(lambda: init_params(jax.random.PRNGKey(0), stored, int(mean.shape[0])))["psi"]
        if jax.tree.structure(params) != jax.tree.structure(want) or [
                np.shape(x) for x in jax.tree.leaves(params)] != [tuple(x.shape) for x in jax.tree.leaves(want)]:
            raise AilotInputError(what, f"holds psi parameters that do not fit its config {stored.hidden_dims} x "
                                  f"{stored.ensemble} heads on {mean.shape[0]}-dim observations",
                                  "pretrain the encoder again")
        return cls(params, mean, std, stored)

    def content_hash(self) -> str:
        """sha256 over params (path, dtype, shape, bytes of every leaf, in sorted path order), stats and config."""
        h = hashlib.sha256()
        leaves = jax.tree_util.tree_flatten_with_path(self.params)[0]
        for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
            arr = np.ascontiguousarray(leaf, np.float32)
            h.update(f"{jax.tree_util.keystr(path)}|{arr.dtype}|{arr.shape}|".encode())
            h.update(arr.tobytes())
        h.update(self.obs_mean.tobytes())
        h.update(self.obs_std.tobytes())
        # key_dict: an encoder trained the legacy way keeps the hash it had before those settings existed
        h.update(json.dumps(self.config.key_dict(), sort_keys=True).encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        return (f"IntentEncoder(obs_dim={self.obs_dim}, embed_dim={self.embed_dim}, "
                f"ensemble={self.config.ensemble}, hash={self.content_hash()[:12]})")


# ----------------------------------------------------------------------------------------------- training


def training_data(trajectories: Any, config: ICVFConfig, lengths: np.ndarray | None = None
                  ) -> tuple[ICVFData, np.ndarray, np.ndarray]:
    """(ICVFData, obs_mean, obs_std) that pretraining samples from, for observation sequences [T_i + 1, d].

    sample_last_transition=False drops each episode's final observation first (the training pairs before that
    setting existed); normalize_observations=False keeps raw inputs (mean 0, std 1, so `embed` is psi(obs)).
    """
    trajs = as_trajectory_list(trajectories, lengths)
    if not config.sample_last_transition:
        trajs = [t[:-1] for t in trajs if len(t) > 1]
        if not trajs:
            raise AilotInputError("trajectories", "every episode has a single observation",
                                  "pass episodes of two or more observations")
    if config.normalize_observations:
        obs_mean, obs_std = normalisation_stats(trajs, config.std_floor)
    else:
        dim = trajs[0].shape[1]
        obs_mean, obs_std = np.zeros(dim, np.float32), np.ones(dim, np.float32)
    return prepare_data(trajs, obs_mean, obs_std), obs_mean, obs_std


def train_icvf(trajectories: list[np.ndarray], config: ICVFConfig, seed: int, progress: bool = True,
               lengths: np.ndarray | None = None) -> tuple[ICVFState, np.ndarray, np.ndarray, pd.DataFrame]:
    """Full ICVF training: (final state with phi, psi, T of every head, obs_mean, obs_std, loss history).

    `pretrain` keeps only psi; this is for diagnostics that need the value function itself.
    """
    if not isinstance(config, ICVFConfig):
        raise AilotInputError("config", f"expected an ICVFConfig, got {type(config).__name__}",
                              "build it with ICVFConfig.from_dict(mapping)")
    data, obs_mean, obs_std = training_data(trajectories, config, lengths)
    state = init_state(seed, config, obs_dim=int(obs_mean.shape[0]))

    rows: list[dict[str, float]] = []
    done = 0
    with tqdm(total=config.num_steps, desc="ICVF pretraining", disable=not progress, dynamic_ncols=True) as bar:
        while done < config.num_steps:
            n = min(config.chunk, config.num_steps - done)  # a shorter last chunk compiles once more, at most
            state, infos = pretrain_chunk(state, data, config, n)
            done += n
            row = {k: float(v) for k, v in jax.device_get(jax.tree.map(jnp.mean, infos)).items()}
            if not math.isfinite(row["value_loss"]):
                raise FloatingPointError(f"ICVF loss became {row['value_loss']} at step {done}; lower lr")
            rows.append({"step": done, **row})
            bar.update(n)
            bar.set_postfix(loss=f"{row['value_loss']:.4g}")
    return state, obs_mean, obs_std, pd.DataFrame(rows).set_index("step")


def pretrain(trajectories: list[np.ndarray], config: ICVFConfig, seed: int, progress: bool = True,
             lengths: np.ndarray | None = None) -> tuple[IntentEncoder, pd.DataFrame]:
    """Train ICVF on observation-only episodes; return (psi encoder, loss history).

    trajectories: every observation of each episode in order, the final one included (`Episodes.observations`,
    [T_i + 1, d] each), as a list or padded [N, T, d] with `lengths` [N]; every consecutive pair is a training
    transition unless config.sample_last_transition is off (`training_data`). The history has one row per
    dispatched chunk (index `step` = updates done) holding the chunk's mean of each statistic of `icvf_loss`.
    """
    state, obs_mean, obs_std, history = train_icvf(trajectories, config, seed, progress, lengths)
    return IntentEncoder(jax.device_get(state.params["psi"]), obs_mean, obs_std, config), history


# ----------------------------------------------------------------------------------------------- diagnostic


def _linear_r2(x: np.ndarray, y: np.ndarray) -> float:
    """R^2 of the least-squares line y ~ a + b x."""
    slope, intercept = np.polyfit(x, y, 1)
    ss_res = float(np.sum((y - (slope * x + intercept)) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


def _mean_sq_dist_by_k(x: np.ndarray, episode: np.ndarray, max_k: int) -> tuple[np.ndarray, np.ndarray]:
    """x [M, e] flat, episode [M] ids -> (mean ||x_{t+k} - x_t||^2 [K], pair counts [K]) within episodes."""
    means, counts = np.zeros(max_k), np.zeros(max_k, np.int64)
    for k in range(1, max_k + 1):
        same = episode[k:] == episode[:-k]
        if not same.any():
            break
        sq = np.sum((x[k:][same] - x[:-k][same]) ** 2, axis=-1, dtype=np.float64)
        means[k - 1], counts[k - 1] = sq.mean(), same.sum()
    return means, counts


GEOMETRY_HORIZONS = (25, 50, 100, 150)  # k ranges over which the sweep reports linearity (up to ~1.5 UMaze crossings)


def intent_geometry(trajectories: list[np.ndarray], embed: Callable[[np.ndarray], np.ndarray] | None,
                    max_k: int = 50, lengths: np.ndarray | None = None,
                    horizons: Sequence[int] = GEOMETRY_HORIZONS) -> pd.DataFrame:
    """Mean ||x(s_{t+k}) - x(s_t)||^2 over all episodes and t, for k = 1..max_k, in psi and raw space.

    AILOT paper Fig. 8: in the intent space the distance grows about linearly in k. Returns a long frame with
    columns k, space ('psi' | 'raw'), mean_sq_dist, n_pairs; `df.attrs['r2']` holds the R^2 of a linear fit
    of mean_sq_dist on k = 1..max_k per space, and `df.attrs['r2_by_horizon']` the same fit on k = 1..K for
    each K of `horizons` below max_k ({K: {space: R^2}}): whether a curve is "about linear" depends on how far
    it is followed (on the generated UMaze both are at K = 50, and raw distance saturates beyond a crossing).
    `embed` maps [N, d] -> [N, e] (e.g. IntentEncoder.embed); None = raw only.
    """
    trajs = as_trajectory_list(trajectories, lengths)
    longest = max(len(t) for t in trajs)
    k_max = min(int(max_k), longest - 1)
    if k_max < 2:
        raise AilotInputError("trajectories", f"the longest episode has {longest} states, a line needs k = 1 and 2",
                              "pass episodes with at least 3 states, or raise max_k")
    raw = np.concatenate(trajs).astype(np.float64)
    episode = np.repeat(np.arange(len(trajs)), [len(t) for t in trajs])
    spaces = {"raw": raw}
    if embed is not None:
        spaces = {"psi": np.asarray(embed(raw.astype(np.float32)), np.float64), **spaces}
    frames, r2 = [], {}
    ks = np.arange(1, k_max + 1)
    cuts = sorted({int(h) for h in horizons if 2 <= int(h) < k_max})
    by_horizon: dict[int, dict[str, float]] = {h: {} for h in cuts}
    for name, x in spaces.items():
        means, counts = _mean_sq_dist_by_k(x, episode, k_max)
        frames.append(pd.DataFrame({"k": ks, "space": name, "mean_sq_dist": means, "n_pairs": counts}))
        r2[name] = _linear_r2(ks.astype(np.float64), means)
        for h in cuts:
            by_horizon[h][name] = _linear_r2(ks[:h].astype(np.float64), means[:h])
    df = pd.concat(frames, ignore_index=True)
    df.attrs["r2"] = r2
    df.attrs["r2_by_horizon"] = {**by_horizon, k_max: r2}
    return df
