"""Methods that read the expert set get it through the sweep: SQIL's expert transitions join the training data,
the whole-algorithm baselines receive the expert arrays, and every row says whether expert actions were read."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import local_ray

from ailot import pipeline, results
from ailot.config import sweep_config_from_dict
from ailot.data.loading import load_dataset
from ailot.errors import AilotInputError


def config(storage, agent_id, expert_id, **over) -> dict:
    return {**{
        "name": "experts",
        "storage": str(storage),
        "datasets": [{"name": "umaze", "agent": agent_id, "expert": expert_id, "task_family": "maze2d"}],
        "labellers": {"sqil": {}, "seabo": {"mode": ["ss", "sas"]}},
        "learners": {"iql": {"hidden_dims": [16, 16]}, "smodice": {"hidden_dims": [16, 16], "disc_steps": 50},
                     "dwbc": {"hidden_dims": [16, 16], "disc_hidden_dim": 16}},
        "seeds": [0],
        "train": {"steps": 100, "eval_every": 100, "eval_episodes": 1, "eval_envs": 1, "chunk": 50,
                  "batch_size": 32},
        "resources": {"cpus_per_trial": 1, "max_failures": 0},
    }, **over}


@pytest.fixture(scope="module")
def pair(pointmaze_umaze):
    agent_id, expert_id = pointmaze_umaze
    return load_dataset(agent_id), load_dataset(expert_id)


def prepared(cfg, pair, learner: str, labeller: dict):
    trial = {"dataset": "umaze", "learner": learner, "seed": 0, "labeller": labeller}
    agent, expert = pair
    rewards = np.zeros(agent.num_transitions, np.float32)
    return pipeline.prepare_trial(trial, cfg, agent, rewards, pipeline.learner_config(trial, cfg), expert=expert)


def test_sqil_expert_transitions_join_the_data_at_their_batch_share(pointmaze_umaze, pair, tmp_path):
    cfg = sweep_config_from_dict(config(tmp_path, *pointmaze_umaze))
    agent, expert = pair
    setting = next(s for s in cfg.labeller_settings() if s["labeller"] == "sqil")
    prep = prepared(cfg, pair, "iql", setting)
    data, m = prep["data"], agent.num_transitions
    best = expert.select([int(np.argmax(expert.returns))]).to_transitions()
    added = len(data["rewards"]) - m
    assert added > 0 and added % len(best) == 0  # whole copies of the expert episode
    # about half of a uniform batch (SQIL samples half its batch from the demonstrations)
    assert 0.4 < added / len(data["rewards"]) < 0.6
    np.testing.assert_array_equal(data["actions"][m:m + len(best)], best.actions)
    np.testing.assert_array_equal(data["observations"][-len(best):], best.observations)
    # 0 on agent transitions, 1 on the expert's, then maze2d's unit scaling leaves them 0 and 1
    assert not data["rewards"][:m].any() and np.all(data["rewards"][m:] == 1.0)
    assert prep["base_row"]["expert_actions"]
    # the agent data alone, as before, for a labeller that adds nothing
    plain = prepared(cfg, pair, "iql", {"labeller": "zero"})
    assert len(plain["data"]["rewards"]) == m and not plain["base_row"]["expert_actions"]


def test_learners_that_read_the_expert_set_receive_it(pointmaze_umaze, pair, tmp_path):
    cfg = sweep_config_from_dict(config(tmp_path, *pointmaze_umaze))
    agent, expert = pair
    best = expert.select([int(np.argmax(expert.returns))]).to_transitions()
    smodice = prepared(cfg, pair, "smodice", {"labeller": "none"})
    np.testing.assert_array_equal(smodice["data"]["expert_observations"], best.observations)
    assert len(smodice["data"]["initial_observations"]) == agent.num_episodes
    assert not smodice["base_row"]["expert_actions"]  # state-only
    dwbc = prepared(cfg, pair, "dwbc", {"labeller": "none"})
    np.testing.assert_array_equal(dwbc["data"]["expert_actions"], best.actions)
    assert dwbc["base_row"]["expert_actions"]
    with pytest.raises(AilotInputError, match="'dwbc'.*expert set"):
        trial = {"dataset": "umaze", "learner": "dwbc", "seed": 0, "labeller": {"labeller": "none"}}
        pipeline.prepare_trial(trial, cfg, agent, None, pipeline.learner_config(trial, cfg), expert=None)


@pytest.mark.parametrize("learner", ["dwbc", "iq_learn", "bc_expert"])
def test_state_only_expert_set_refuses_learners_that_read_actions_at_load(pointmaze_umaze, tmp_path, learner):
    raw = config(tmp_path, *pointmaze_umaze, labellers={"zero": {}}, learners={learner: {}})
    raw["datasets"][0]["expert_actions"] = False
    with pytest.raises(AilotInputError, match=f"learners.{learner}.*state-only"):
        sweep_config_from_dict(raw)
    raw["learners"] = {"smodice": {}}  # reads expert states only: fine
    sweep_config_from_dict(raw)


@pytest.mark.slow
def test_sweep_runs_expert_reading_methods_and_flags_their_rows(pointmaze_umaze, tmp_path, capsys):
    import ray
    import yaml

    from ailot import sweep
    from ailot.sweep_cli import main as sweep_main

    raw = config(tmp_path / "results", *pointmaze_umaze)
    cfg = sweep_config_from_dict(raw)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(raw))
    # sqil, seabo ss and seabo sas with iql; smodice and dwbc once each (they ignore the labellers' rewards)
    assert len(cfg.trials()) == 5
    assert sweep_main(["--config", str(tmp_path / "c.yaml"), "--dry-run"]) == 0 and not ray.is_initialized()
    assert "5 trials (0 already complete" in capsys.readouterr().out
    with local_ray("rayx"):
        sweep.run_sweep(cfg, progress=False, plots=False)
    # the dry run counts as the sweep ran: every trial complete now, so no reward setting is needed; still no Ray
    assert sweep_main(["--config", str(tmp_path / "c.yaml"), "--dry-run"]) == 0 and not ray.is_initialized()
    out = capsys.readouterr().out
    assert "5 trials (5 already complete" in out and "reward settings: 0 needed (dataset x seed x setting), 0 " \
        "cached; 3 more not needed: every trial on them is complete" in out, out
    # on a machine without the reward cache (a fresh clone of the results), a rerun relabels nothing and trains
    # nothing: every trial is complete
    rewards_dir = Path(str(pipeline.rewards_cache(cfg).root))
    assert len(list(rewards_dir.iterdir())) >= 3
    shutil.rmtree(rewards_dir)
    before = results.load(cfg.parquet_path)
    with local_ray("rayy"):
        sweep.run_sweep(cfg, progress=False, plots=False)
    assert not rewards_dir.exists() or not any(rewards_dir.iterdir())
    pd.testing.assert_frame_equal(results.load(cfg.parquet_path), before)
    df = results.load(cfg.parquet_path)
    assert df["trial_id"].nunique() == 5 and df["normalized_score"].notna().all()
    flags = df.groupby(["labeller", "learner"])["expert_actions"].first()
    assert flags[("sqil", "iql")] and flags[("none", "dwbc")] and not flags[("none", "smodice")]
    seabo = df[df["labeller"] == "seabo"].sort_values("rewards_key")
    assert sorted(seabo["expert_actions"]) == [False, True]  # mode ss reads states only, sas reads actions
    assert isinstance(df, pd.DataFrame)
