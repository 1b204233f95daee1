"""Evaluation: vectorised rollouts equal a hand-rolled loop with the same policy and seeds."""

import gymnasium as gym
import jax
import numpy as np
import pytest

from ailot.data.generate import make_eval_env
from ailot.data.loading import load_minari
from ailot.errors import AilotInputError
from ailot.evaluate import check_env, evaluate


def pd_policy(obs, key):
    """Steer towards a fixed point with a PD law: deterministic, reaches part of the maze."""
    target = np.array([1.0, 1.0])
    return np.clip(10.0 * (target - obs[:, :2]) - obs[:, 2:4], -1.0, 1.0)


def hand_rolled(spec, seed, episodes):
    out = []
    for i in range(episodes):
        env = gym.make(spec)
        obs, _ = env.reset(seed=seed + i)
        total, done = 0.0, False
        while not done:
            action = pd_policy(obs["observation"][None].astype(np.float32), None)[0]
            obs, r, term, trunc, _ = env.step(action)
            total += r
            done = term or trunc
        out.append(total)
    return np.array(out)


def test_vectorised_equals_hand_rolled_and_is_deterministic():
    spec = make_eval_env("umaze", max_episode_steps=120).spec
    # 5 episodes on 3 envs: two rounds, the second with a surplus env that must not be counted
    result = evaluate(pd_policy, spec, num_episodes=5, num_envs=3, seed=11, obs_keys=("observation",))
    np.testing.assert_allclose(result.returns, hand_rolled(spec, 11, 5))
    assert list(result.lengths) == [120] * 5
    again = evaluate(pd_policy, spec.to_json(), num_episodes=5, num_envs=2, seed=11, obs_keys=None)
    np.testing.assert_allclose(again.returns, result.returns)


def test_normalized_score_from_dataset_references(pointmaze_umaze):
    agent = load_minari(pointmaze_umaze[0])
    assert agent.env_spec is not None and agent.ref_max_score > agent.ref_min_score
    result = evaluate(pd_policy, agent.env_spec, num_episodes=2, num_envs=2, seed=0)
    scores = result.normalized(agent.ref_min_score, agent.ref_max_score)
    expected = 100 * (result.returns - agent.ref_min_score) / (agent.ref_max_score - agent.ref_min_score)
    np.testing.assert_allclose(scores, expected)


def test_action_dimension_mismatch_is_refused():
    spec = make_eval_env("umaze").spec
    check_env(spec, 2, obs_dim=4)
    with pytest.raises(AilotInputError, match="dimension 3"):
        check_env(spec, 3)
    with pytest.raises(AilotInputError, match="observations.*dimension 5"):
        check_env(spec, 2, obs_dim=5)
    with pytest.raises(AilotInputError, match="not registered"):
        check_env("NoSuchEnv-v9", 2)


def test_policy_key_changes_per_step():
    seen = []

    def recording(obs, key):
        seen.append(np.asarray(jax.random.key_data(key)) if hasattr(jax.random, "key_data") else key)
        return np.zeros((obs.shape[0], 2))

    evaluate(recording, make_eval_env("umaze", max_episode_steps=5).spec, num_episodes=1, seed=0)
    assert len({tuple(np.ravel(k)) for k in seen}) == len(seen) == 5
