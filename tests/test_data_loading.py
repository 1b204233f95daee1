"""Loading: generated Minari round trip, D4RL HDF5 files, dispatch, and every bad input's error."""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import write_hdf5

from ailot.data.loading import check_compatible, load_d4rl_hdf5, load_dataset, load_minari
from ailot.errors import AilotInputError, DatasetMissing


def raw_episodes(dataset_id: str) -> list[dict]:
    """The episodes exactly as Minari wrote them, read with h5py (independent of our loader)."""
    path = Path(os.environ["MINARI_DATASETS_PATH"]) / dataset_id / "data" / "main_data.hdf5"
    with h5py.File(path, "r") as f:
        out = []
        for i in range(len(f.keys())):
            g = f[f"episode_{i}"]
            out.append({k: np.asarray(g[k]) for k in ("actions", "rewards", "terminations", "truncations")}
                       | {f"obs/{k}": np.asarray(g["observations"][k]) for k in g["observations"]})
        return out


def test_generated_agent_dataset_round_trip(pointmaze_umaze):
    agent_id, _ = pointmaze_umaze
    ep = load_minari(agent_id)
    raw = raw_episodes(agent_id)
    assert ep.dataset_id == agent_id and ep.num_episodes == len(raw)
    assert ep.num_transitions == 3000  # exactly the requested size
    assert ep.obs_keys == ("observation",) and ep.obs_dim == 4 and ep.action_dim == 2
    for i, r in enumerate(raw):
        np.testing.assert_array_equal(ep.observations[i], r["obs/observation"].astype(np.float32))
        np.testing.assert_array_equal(ep.actions[i], r["actions"])
        np.testing.assert_array_equal(ep.rewards[i], r["rewards"])
        np.testing.assert_array_equal(ep.terminations[i], r["terminations"])
        np.testing.assert_array_equal(ep.truncations[i], r["truncations"])
        # the env's goal is the fixed evaluation goal: cell (1, 1) of UMaze, centre (-1, 1), noise <= 0.25
        assert np.abs(r["obs/desired_goal"] - [-1.0, 1.0]).max() <= 0.25 + 1e-9
        # rewards are the sparse evaluation reward of the next state
        dist = np.linalg.norm(r["obs/achieved_goal"][1:] - r["obs/desired_goal"][1:], axis=1)
        np.testing.assert_array_equal(ep.rewards[i], (dist <= 0.45).astype(np.float32))
    lengths = ep.lengths
    assert ((lengths[:-1] >= 100) & (lengths[:-1] <= 500)).all() and 1 <= lengths[-1] <= 500
    assert len(set(lengths.tolist())) > 1  # varied lengths, so bucketing matters
    assert all(t[-1] and not t[:-1].any() for t in ep.truncations)  # each episode ends truncated
    assert not any(t.any() for t in ep.terminations)  # continuing task
    assert all(np.abs(a).max() <= 1.0 for a in ep.actions)
    # evaluation env, not the longer collection env, is the env spec
    spec = json.loads(ep.env_spec)
    assert spec["max_episode_steps"] == 300 and spec["kwargs"]["maze_map"][1][1] == "g"
    assert spec["kwargs"]["maze_map"][3][1] == "r" and spec["kwargs"]["reset_target"] is False
    assert ep.ref_min_score == 0.0 and 150.0 < ep.ref_max_score < 200.0


def test_generated_expert_dataset(pointmaze_umaze):
    _, expert_id = pointmaze_umaze
    ep = load_dataset(expert_id)
    assert ep.num_episodes == 3 and (ep.lengths == 300).all()
    # the slightly noisy expert is nearly as good as the noise-free reference
    assert (ep.returns > 0.85 * ep.ref_max_score).all()
    # every expert episode starts in the reset cell (3, 1): centre (-1, -1)
    assert all(np.abs(o[0, :2] - [-1.0, -1.0]).max() <= 0.25 + 1e-6 for o in ep.observations)


def test_obs_keys_all_and_compatibility(pointmaze_umaze):
    agent_id, expert_id = pointmaze_umaze
    agent_all = load_minari(agent_id, obs_keys="all")
    assert agent_all.obs_keys == ("achieved_goal", "desired_goal", "observation") and agent_all.obs_dim == 8
    default = load_minari(agent_id)
    np.testing.assert_array_equal(agent_all.observations[0][:, 4:], default.observations[0])
    np.testing.assert_array_equal(agent_all.observations[0][:, :2], default.observations[0][:, :2])
    check_compatible(default, load_minari(expert_id))  # same space: no error
    goals = load_minari(expert_id, obs_keys=("achieved_goal", "desired_goal"))  # also 4-d, another space
    with pytest.raises(AilotInputError, match="keys \\('observation',\\) vs \\('achieved_goal', 'desired_goal'\\)"):
        check_compatible(default, goals)
    with pytest.raises(AilotInputError, match=f"'{agent_id}' \\(agent\\).*dim 8 vs 4"):
        check_compatible(agent_all, load_minari(expert_id))
    with pytest.raises(AilotInputError, match="obs_keys"):
        load_minari(agent_id, obs_keys=("goal",))


def test_unknown_minari_id_says_how_to_get_it():
    with pytest.raises(AilotInputError, match="'ailot/nothing/here-v0'.*not found.*python -m ailot.data.generate"):
        load_dataset("ailot/nothing/here-v0")


# ---------------------------------------------------------------------- D4RL files

N = 10
TERMINAL_AT, TIMEOUT_AT = 3, 7  # episodes: rows 0-3 (terminal), 4-7 (timeout), 8-9 (end of file)


def write_d4rl(path: Path, next_obs: bool = True, timeouts: bool = True, **overrides) -> dict:
    rng = np.random.default_rng(0)
    data = {
        "observations": rng.normal(size=(N, 3)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(N, 2)).astype(np.float32),
        "rewards": np.arange(N, dtype=np.float32),
        "terminals": np.eye(1, N, TERMINAL_AT, dtype=bool)[0],
    }
    if timeouts:
        data["timeouts"] = np.eye(1, N, TIMEOUT_AT, dtype=bool)[0]
    if next_obs:
        data["next_observations"] = rng.normal(size=(N, 3)).astype(np.float32)
    data.update(overrides)
    write_hdf5(path, data)
    return data


def test_d4rl_with_next_observations(tmp_path):
    path = tmp_path / "hopper-medium-v2.hdf5"
    d = write_d4rl(path)
    ep = load_dataset(path)
    assert ep.dataset_id == "hopper-medium-v2"
    np.testing.assert_array_equal(ep.lengths, [4, 4, 2])
    np.testing.assert_array_equal(ep.observations[0], np.vstack([d["observations"][:4], d["next_observations"][3]]))
    np.testing.assert_array_equal(ep.observations[2][-1], d["next_observations"][9])
    np.testing.assert_array_equal(ep.actions[1], d["actions"][4:8])
    np.testing.assert_array_equal(ep.rewards[2], [8, 9])
    np.testing.assert_array_equal(ep.terminations[0], [0, 0, 0, 1])
    np.testing.assert_array_equal(ep.truncations[0], [0, 0, 0, 0])
    np.testing.assert_array_equal(ep.truncations[1], [0, 0, 0, 1])
    np.testing.assert_array_equal(ep.truncations[2], [0, 1])  # the file's end cuts the last episode
    assert (ep.ref_min_score, ep.ref_max_score) == (-20.272305, 3234.3)  # D4RL table, from the file name
    tr = ep.to_transitions()
    np.testing.assert_array_equal(tr.terminals, [0, 0, 0, 1, 0, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(tr.rewards, d["rewards"])


def test_d4rl_without_next_observations_drops_last_step(tmp_path):
    path = tmp_path / "custom.h5"
    d = write_d4rl(path, next_obs=False)
    ep = load_d4rl_hdf5(path, env_id="Hopper-v5")
    np.testing.assert_array_equal(ep.lengths, [3, 3, 1])
    np.testing.assert_array_equal(ep.observations[0], d["observations"][:4])  # row 3 is the final state
    np.testing.assert_array_equal(ep.actions[1], d["actions"][4:7])
    np.testing.assert_array_equal(ep.rewards[1], [4, 5, 6])
    assert all(t[-1] and not t[:-1].any() for t in ep.truncations)
    assert not any(t.any() for t in ep.terminations)
    assert json.loads(ep.env_spec)["id"] == "Hopper-v5"
    assert ep.ref_max_score == 3234.3  # from the env id when the name is not a D4RL name


def test_d4rl_without_timeouts_splits_at_terminals_only(tmp_path):
    path = tmp_path / "old.hdf5"
    write_d4rl(path, timeouts=False)
    ep = load_d4rl_hdf5(path, dataset_id="mine")
    np.testing.assert_array_equal(ep.lengths, [4, 6])
    assert ep.dataset_id == "mine" and ep.ref_min_score is None and ep.env_spec is None


def test_d4rl_bad_files(tmp_path):
    missing = tmp_path / "missing-keys.hdf5"
    write_d4rl(missing, terminals=None)
    with pytest.raises(AilotInputError, match="missing-keys.hdf5.*not a D4RL dataset.*'terminals'"):
        load_dataset(missing)
    text = tmp_path / "text.hdf5"
    text.write_text("not hdf5")
    with pytest.raises(AilotInputError, match="text.hdf5.*not a readable HDF5"):
        load_dataset(text)
    with pytest.raises(DatasetMissing, match="nope.hdf5.*does not exist.*check the path"):
        load_dataset(tmp_path / "nope.hdf5")
    # one of D4RL's own gym-mujoco files: the fix is its download command
    with pytest.raises(DatasetMissing, match=r"does not exist.*curl -fL -o .*hopper_medium_replay-v2\.hdf5 "
                                             r"http://rail\.eecs\.berkeley\.edu/datasets/offline_rl/gym_mujoco_v2/"
                                             r"hopper_medium_replay-v2\.hdf5"):
        load_dataset(tmp_path / "hopper_medium_replay-v2.hdf5")
    (tmp_path / "folder.hdf5").mkdir()
    with pytest.raises(AilotInputError, match="folder.hdf5.*is a folder") as raised:
        load_dataset(tmp_path / "folder.hdf5")
    assert not isinstance(raised.value, DatasetMissing)  # there but unusable: a dry run must not list it as to-make
    nan_obs = tmp_path / "nan.hdf5"
    obs = np.ones((N, 3), np.float32)
    obs[5, 2] = np.nan
    write_d4rl(nan_obs, observations=obs)
    with pytest.raises(AilotInputError, match="'nan' episode 1 observations.*NaN or inf.*t=1"):
        load_dataset(nan_obs)
    inf_act = tmp_path / "inf.hdf5"
    act = np.zeros((N, 2), np.float32)
    act[0, 0] = np.inf
    write_d4rl(inf_act, actions=act)
    with pytest.raises(AilotInputError, match="episode 0 actions.*NaN or inf"):
        load_dataset(inf_act)
    short = tmp_path / "short.hdf5"
    write_d4rl(short, rewards=np.zeros(N - 1, np.float32))
    with pytest.raises(AilotInputError, match="short.hdf5.*'rewards': 9"):
        load_dataset(short)
    empty = tmp_path / "empty.hdf5"
    write_d4rl(empty, next_obs=False, terminals=np.ones(N, bool), timeouts=False)  # only one-step episodes
    with pytest.raises(AilotInputError, match="empty.hdf5.*no episode with a transition"):
        load_dataset(empty)
    with pytest.raises(AilotInputError, match="obs_keys"):
        load_dataset(missing, obs_keys=("observation",))


def test_check_compatible_across_sources(tmp_path, pointmaze_umaze):
    path = tmp_path / "agent.hdf5"
    write_d4rl(path)
    with pytest.raises(AilotInputError, match="'agent' \\(agent\\) and 'ailot/pointmaze-umaze/expert-v0'.*dim 3 vs 4"):
        check_compatible(load_dataset(path), load_dataset(pointmaze_umaze[1]))
    maze2d_like = tmp_path / "maze2d.hdf5"  # array observations of the same dimension pair with dict ones
    write_d4rl(maze2d_like, observations=np.zeros((N, 4), np.float32), next_observations=np.zeros((N, 4), np.float32))
    check_compatible(load_dataset(maze2d_like), load_dataset(pointmaze_umaze[1]))


def test_a_missing_collected_dataset_points_to_the_committed_recipe(tmp_path, monkeypatch):
    """Where results/collection/recipes/<env>-s0 holds a recipe, the fix is the rebuild from it, not hours of SAC."""
    import ailot.data.loading as loading
    from ailot.errors import DatasetMissing

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    monkeypatch.setattr(loading, "RECIPES", tmp_path / "recipes")
    (tmp_path / "recipes" / "walker2d-v5-s0").mkdir(parents=True)
    with pytest.raises(DatasetMissing, match=r"ailot collect --env Walker2d-v5 --seed 0`"):
        load_dataset("ailot/walker2d/medium-v0")  # a folder without recipe.json is no recipe
    (tmp_path / "recipes" / "walker2d-v5-s0" / "recipe.json").write_text("{}")
    with pytest.raises(DatasetMissing, match=r"rebuild it with `ailot collect --env Walker2d-v5 --seed 0 "
                                             r"--from-recipe .*recipes/walker2d-v5-s0`"):
        load_dataset("ailot/walker2d/medium-v0")
