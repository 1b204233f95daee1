"""RLlib learners inside the sweep: settings, a tiny sweep on a local Ray, rows like our learners' rows.

The export -> Ray Data round trip (same rewards, same order) is tests/test_export.py::test_ray_data_round_trip.
"""

import pytest
from conftest import local_ray

from ailot.config import sweep_config_from_dict
from ailot.errors import AilotInputError

pytest.importorskip("torch")
pytest.importorskip("tree")


@pytest.fixture(scope="module")
def ray_local():
    with local_ray("rayr") as ray:
        yield ray


def config(storage, agent_id, expert_id, learners, family="maze2d", **train):
    return sweep_config_from_dict({
        "name": "tiny-rllib", "storage": str(storage),
        "datasets": [{"name": "umaze", "agent": agent_id, "expert": expert_id, "task_family": family}],
        "labellers": {"true": {}}, "learners": learners, "seeds": [0],
        "train": {"steps": 200, "eval_every": 100, "eval_episodes": 2, "eval_envs": 2, "batch_size": 64,
                  "chunk": 100, **train},
        "resources": {"cpus_per_trial": 1, "max_failures": 0, "relabel_actors": 1},
    })


def test_rllib_iql_takes_our_iql_expectile_and_temperature_not_rllib_defaults():
    from ray.rllib.algorithms.iql import IQLConfig

    from ailot import learners
    from ailot.learners.rllib import rllib_algo_config

    for family in ("maze2d", "antmaze", "locomotion"):
        ours = learners.make_config("iql", {}, task_family=family)
        settings = learners.make_config("rllib_iql", {"max_steps": 10}, task_family=family)
        algo = rllib_algo_config(settings, 4, [-1.0, -1.0], [1.0, 1.0], batch_size=256, seed=0)
        assert (algo.expectile, algo.beta) == (ours.expectile, ours.temperature)
        assert (algo.tau, algo.gamma, algo.actor_lr, algo.critic_lr, algo.value_lr) == (0.005, 0.99, 3e-4, 3e-4, 3e-4)
        assert algo.train_batch_size_per_learner == 256
    assert (IQLConfig().expectile, IQLConfig().beta) == (0.8, 0.1)  # RLlib's own defaults differ
    assert (learners.make_config("rllib_iql", {}, "maze2d").expectile, learners.make_config(
        "rllib_iql", {}, "locomotion").expectile) == (0.9, 0.7)
    assert learners.make_config("rllib_bc", {}).training()["beta"] == 0.0  # BC = MARWIL with beta 0


def test_rllib_settings_are_checked_at_load(tmp_path):
    with pytest.raises(AilotInputError, match="learners.rllib_iql.beta"):  # RLlib's name; ours is temperature
        config(tmp_path, "a/b-v0", "a/c-v0", {"rllib_iql": {"beta": 3.0}})
    with pytest.raises(AilotInputError, match="learners.rllib_marwil.beta"):
        config(tmp_path, "a/b-v0", "a/c-v0", {"rllib_marwil": {"beta": -1.0}})
    with pytest.raises(AilotInputError, match="learners.rllib_sac"):
        config(tmp_path, "a/b-v0", "a/c-v0", {"rllib_sac": {}})
    cfg = config(tmp_path, "a/b-v0", "a/c-v0", {"rllib_bc": {}, "rllib_iql": {"expectile": 0.8}})
    assert [t["labeller"]["labeller"] for t in cfg.trials()] == ["none", "true"]  # BC ignores rewards


@pytest.mark.slow
def test_tiny_sweep_with_an_rllib_trial_writes_one_row_per_evaluation(ray_local, pointmaze_umaze, tmp_path):
    import json

    from ailot import results, sweep
    from ailot.export import read_arrays, read_metadata

    cfg = config(tmp_path / "results", *pointmaze_umaze, {"rllib_iql": {"hidden_dims": [32, 32]}})
    sweep.run_sweep(cfg, progress=False, plots=False)
    df = results.load(cfg.parquet_path)
    assert list(df["step"]) == [100, 200] and set(df["learner"]) == {"rllib_iql"}
    assert list(df.columns) == results.SCHEMA.names  # the same schema as our learners' rows
    assert df["normalized_score"].notna().all() and (df["eval_episodes"] == 2).all()
    assert json.loads(df["config"].iloc[0])["learner_config"]["expectile"] == 0.9  # maze2d preset
    audit = [json.loads(line) for line in (cfg.run_dir / "updates.jsonl").read_text().splitlines()]
    assert [(a["from"], a["to"]) for a in audit] == [(0, 100), (100, 200)]
    exports = list((cfg.run_dir / "tune").rglob("rllib-export"))  # in the trial's directory
    assert len(exports) == 1 and read_metadata(exports[0])["labeller_settings"] == {"labeller": "true"}
    assert read_metadata(exports[0])["reward_setting"] == {"labeller": "true"}
    assert len(read_arrays(exports[0])["rewards"]) == read_metadata(exports[0])["num_transitions"]


def test_rllib_learner_checkpoint_resumes_exactly(tmp_path):
    """save -> load into a learner built with another seed -> continue == training straight through (msgpack, no
    pickle: weights, targets, optimizer states, step and the sampling rng)."""
    import flax.serialization
    import jax
    import numpy as np
    from ray.rllib.core.columns import Columns

    from ailot import learners
    from ailot.learners.rllib import RLlibLearner, rllib_algo_config

    settings = learners.make_config("rllib_iql", {"max_steps": 10, "hidden_dims": [8, 8]}, task_family="maze2d")
    algo = rllib_algo_config(settings, 4, [-1.0, -1.0], [1.0, 1.0], batch_size=8, seed=0)
    rng, n = np.random.default_rng(0), 64
    data = {Columns.OBS: rng.normal(size=(n, 4)).astype(np.float32), Columns.REWARDS: rng.normal(size=n),
            Columns.ACTIONS: rng.uniform(-1, 1, (n, 2)).astype(np.float32), Columns.TERMINATEDS: np.zeros(n, bool),
            Columns.NEXT_OBS: rng.normal(size=(n, 4)).astype(np.float32), Columns.TRUNCATEDS: np.zeros(n, bool)}
    data[Columns.REWARDS] = data[Columns.REWARDS].astype(np.float32)
    straight = RLlibLearner(settings, algo, 0)
    straight.train(data, 5)
    learners.save(straight, tmp_path / "learner.msgpack")
    flax.serialization.msgpack_restore((tmp_path / "learner.msgpack").read_bytes())  # plain msgpack
    resumed = learners.load(tmp_path / "learner.msgpack", RLlibLearner(settings, algo, 1))
    straight.train(data, 5)
    resumed.train(data, 5)
    assert straight.step == resumed.step == 10

    def arrays(learner):
        state = learner.learner.get_state(not_components="metrics_logger")
        return [x for x in jax.tree_util.tree_leaves(state) if isinstance(x, np.ndarray)]

    a, b = arrays(straight), arrays(resumed)
    assert len(a) == len(b) > 50
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(AilotInputError, match="other learner settings"):
        other = learners.make_config("rllib_iql", {"max_steps": 10, "hidden_dims": [8, 8], "expectile": 0.8})
        learners.load(tmp_path / "learner.msgpack", RLlibLearner(other, algo, 0))


def test_rllib_cql_updates_its_networks_and_entropy_temperature():
    """The Learner is built once: a second build() left CQL's log-alpha outside its optimizer (no gradient)."""
    import numpy as np
    from ray.rllib.core.columns import Columns

    from ailot import learners
    from ailot.learners.rllib import RLlibLearner, rllib_algo_config

    settings = learners.make_config("rllib_cql", {"max_steps": 10, "hidden_dims": [8, 8]}, task_family="maze2d")
    assert settings.min_q_weight == 10.0  # maze preset
    algo = rllib_algo_config(settings, 4, [-1.0, -1.0], [1.0, 1.0], batch_size=8, seed=0)
    rng, n = np.random.default_rng(0), 64
    data = {Columns.OBS: rng.normal(size=(n, 4)).astype(np.float32), Columns.TERMINATEDS: np.zeros(n, bool),
            Columns.ACTIONS: rng.uniform(-1, 1, (n, 2)).astype(np.float32), Columns.TRUNCATEDS: np.zeros(n, bool),
            Columns.NEXT_OBS: rng.normal(size=(n, 4)).astype(np.float32),
            Columns.REWARDS: rng.normal(size=n).astype(np.float32)}
    learner = RLlibLearner(settings, algo, 0)
    log_alpha = float(learner.learner.curr_log_alpha["default_policy"].detach())
    before = [p.detach().clone() for p in learner.learner.module["default_policy"].parameters()]
    learner.train(data, 5)
    after = list(learner.learner.module["default_policy"].parameters())
    assert learner.step == 5 and float(learner.learner.curr_log_alpha["default_policy"].detach()) != log_alpha
    assert sum(not bool((a.detach() == b).all()) for a, b in zip(after, before)) > len(before) // 2
