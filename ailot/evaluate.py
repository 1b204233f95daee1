"""Policy evaluation: roll a policy out in the dataset's own environment, several episodes in parallel.

Returns go through the data layer's reference scores to the D4RL normalized score (0-100).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym
import jax
import numpy as np

from ailot.data.episodes import flatten_observation
from ailot.data.reference import normalized_score
from ailot.envs import env_spec_from

# observations [B, d], key -> actions [B, a]
Policy = Callable[[np.ndarray, jax.Array], np.ndarray]


@dataclass(frozen=True)
class EvalResult:
    returns: np.ndarray  # [episodes]
    lengths: np.ndarray  # [episodes]
    successes: np.ndarray  # [episodes] bool; any step with info["success"] (False when the env has none)

    @property
    def return_mean(self) -> float:
        return float(self.returns.mean())

    @property
    def return_std(self) -> float:
        return float(self.returns.std())

    def normalized(self, ref_min: float | None, ref_max: float | None) -> np.ndarray:
        """Per-episode D4RL normalized scores."""
        return normalized_score(self.returns, ref_min, ref_max)


def check_env(env_spec, action_dim: int, obs_dim: int | None = None, obs_keys=None, what: str = "dataset") -> None:
    """Refuse data whose actions or observations do not fit the evaluation environment: checked when the data
    is loaded, not when a trial first evaluates (after training)."""
    from ailot.data.episodes import resolve_obs_keys
    from ailot.errors import AilotInputError

    spec = env_spec_from(env_spec)
    env = gym.make(spec)
    try:
        act, obs = env.action_space, env.observation_space
    finally:
        env.close()
    if not isinstance(act, gym.spaces.Box):
        raise AilotInputError(f"environment {spec.id!r} action space", f"{act} is not continuous (Box)",
                              "use a continuous-control environment (IQL, Diffusion-QL and BC output real vectors)")
    if act.shape != (action_dim,):
        raise AilotInputError(f"{what} actions", f"have dimension {action_dim} but {spec.id!r} expects {act.shape}",
                              "set datasets[].env to the environment the dataset was collected in")
    if obs_dim is None:
        return
    if isinstance(obs, gym.spaces.Dict):  # flattened as evaluation will flatten it
        dim = sum(int(np.prod(obs[k].shape)) for k in resolve_obs_keys(list(obs.spaces), obs_keys))
    else:
        dim = int(np.prod(obs.shape))
    if dim != obs_dim:
        raise AilotInputError(f"{what} observations", f"have dimension {obs_dim} but {spec.id!r} gives {dim}",
                              "set datasets[].env (and obs_keys) to match how the dataset was recorded")


def evaluate(
    policy: Policy,
    env_spec,
    *,
    num_episodes: int = 10,
    num_envs: int = 5,
    seed: int = 0,
    obs_keys: tuple[str, ...] | None = None,
) -> EvalResult:
    """Run `num_episodes` episodes, `num_envs` at a time; episode i is reset with seed `seed + i`.

    Deterministic under `seed`: env resets are seeded per episode and the policy key is derived from it.
    """
    spec = env_spec_from(env_spec)
    num_envs = max(1, min(num_envs, num_episodes))
    envs = gym.vector.SyncVectorEnv([lambda: gym.make(spec) for _ in range(num_envs)])
    key = jax.random.PRNGKey(seed)
    returns, lengths, successes = [], [], []
    try:
        for first in range(0, num_episodes, num_envs):
            batch = min(num_envs, num_episodes - first)
            seeds = [seed + first + i for i in range(num_envs)]
            obs, _ = envs.reset(seed=seeds)
            ret = np.zeros(num_envs)
            length = np.zeros(num_envs, dtype=np.int64)
            success = np.zeros(num_envs, dtype=bool)
            done = np.zeros(num_envs, dtype=bool)
            done[batch:] = True  # surplus envs of the last round are stepped but never counted
            while not done.all():
                key, act_key = jax.random.split(key)
                actions = np.asarray(policy(flatten_observation(obs, obs_keys).astype(np.float32), act_key))
                obs, reward, terminated, truncated, info = envs.step(actions)
                live = ~done
                ret[live] += reward[live]
                length[live] += 1
                if "success" in info:
                    success[live] |= np.asarray(info["success"], dtype=bool)[live]
                done |= terminated | truncated
            returns.append(ret[:batch])
            lengths.append(length[:batch])
            successes.append(success[:batch])
    finally:
        envs.close()
    return EvalResult(np.concatenate(returns), np.concatenate(lengths), np.concatenate(successes))
