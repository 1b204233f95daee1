"""ailot.data.collect: SAC numerics, the five D4RL-style datasets from a tiny run, resuming, bad inputs."""

from __future__ import annotations

import json
import os
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ailot.data.collect import (
    KINDS,
    SAC,
    CollectSettings,
    SACConfig,
    Stop,
    collect,
    dataset_id,
    load_buffer,
    tanh_gaussian_sample,
    update_chunk,
)
from ailot.data.loading import load_dataset
from ailot.data.reference import episodes_normalized_score
from ailot.errors import AilotInputError

# A few thousand env steps in all, small networks, few-hundred-transition datasets: seconds, not minutes.
TINY = CollectSettings(env_id="Hopper-v5", seed=0, train_steps=1200, start_steps=400, update_every=50, batch_size=64,
                       eval_every=400, eval_episodes=2, checkpoint_every=200, reference_episodes=3,
                       random_transitions=300, medium_transitions=250, expert_transitions=350,
                       sac=SACConfig(hidden_dims=(32, 32)))
STOP_AFTER = 500


# ------------------------------------------------------------------------------------------- numerics


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean, log_std = jnp.array([[0.3, -1.0]]), jnp.array([[-0.5, 0.2]])
    scale, bias = jnp.array([2.0, 0.5]), jnp.array([0.0, 1.0])
    a, logp = tanh_gaussian_sample(mean, log_std, jax.random.PRNGKey(0), scale, bias)
    y = np.asarray((a - bias) / scale, np.float64)  # in (-1, 1)
    u = np.arctanh(y)
    m, s = np.asarray(mean, np.float64), np.exp(np.asarray(log_std, np.float64))
    expected = np.sum(-0.5 * ((u - m) / s) ** 2 - np.log(s) - 0.5 * np.log(2 * np.pi)
                      - np.log(1 - y**2) - np.log(np.asarray(scale)), -1)
    np.testing.assert_allclose(np.asarray(logp), expected, rtol=1e-4, atol=1e-4)


def _fixed_batch(n_updates: int, batch: int = 64, obs_dim: int = 5, action_dim: int = 2) -> dict:
    rng = np.random.default_rng(0)
    one = {"observations": rng.normal(size=(batch, obs_dim)), "actions": rng.uniform(-1, 1, (batch, action_dim)),
           "rewards": rng.normal(size=batch), "next_observations": rng.normal(size=(batch, obs_dim)),
           "terminals": (rng.random(batch) < 0.1).astype(float)}
    return {k: jnp.broadcast_to(jnp.asarray(v, jnp.float32), (n_updates, *np.shape(v))) for k, v in one.items()}


def test_sac_fixed_batch_critic_fits_and_alpha_moves_toward_target():
    """On one repeated batch the critic loss falls; alpha falls while the policy's entropy is above the target
    (-action_dim by default) and rises for a target above the largest reachable entropy (log 2^a ~ 1.4)."""
    sac0 = SAC.create(0, 5, -np.ones(2), np.ones(2), SACConfig(hidden_dims=(32, 32), critic_lr=1e-3, temp_lr=1e-3))
    assert float(sac0.target_entropy) == -2.0
    batch = _fixed_batch(1)  # [1, B, ...]: one update per dispatch, one compilation for both runs
    for target_entropy, direction in ((-2.0, -1), (5.0, 1)):
        sac = sac0.replace(target_entropy=jnp.float32(target_entropy))
        infos = []
        for _ in range(200):
            sac, info = update_chunk(sac, batch)
            infos.append(info)
        first, last = infos[0], infos[-1]
        assert float(first["entropy"]) > -2.0  # so alpha must fall toward the default target
        if direction < 0:
            assert float(last["critic_loss"]) < 0.6 * float(first["critic_loss"])
        alphas = np.array([float(i["alpha"]) for i in infos])
        assert np.all(np.sign(np.diff(alphas)) == direction)  # monotone: the sign of entropy - target never flips


# ------------------------------------------------------------------------------------- the tiny suite


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Train TINY in two calls (stopped at STOP_AFTER, then resumed), write the five datasets into a module
    Minari root; also an uninterrupted train-only run to compare with. MINARI_DATASETS_PATH is restored."""
    root = tmp_path_factory.mktemp("collect_minari")
    work = tmp_path_factory.mktemp("collect_work")
    old = os.environ.get("MINARI_DATASETS_PATH")
    try:
        with pytest.raises(Stop):
            collect(TINY, work, root, progress=False, stop_after=STOP_AFTER)
        stopped = json.loads((work / "state.json").read_text())
        out = collect(TINY, work, root, progress=False)
        whole_work = tmp_path_factory.mktemp("collect_whole")
        whole = collect(TINY, whole_work, root, progress=False, train_only=True)
        episodes = {kind: load_dataset(dataset_id(TINY.env_id, kind)) for kind in KINDS}
        yield {"out": out, "stopped": stopped, "work": work, "whole": whole, "whole_work": whole_work,
               "episodes": episodes, "root": root}
    finally:
        if old is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = old


def _flat(ep, key):
    return np.concatenate([np.asarray(x) for x in getattr(ep, key)])


def test_resume_continues_from_checkpoint(tiny_run):
    stopped, state = tiny_run["stopped"], tiny_run["out"]["state"]
    s1 = stopped["step"]
    assert STOP_AFTER <= s1 < TINY.train_steps and not stopped["training_done"]
    assert state["segments"] == [[0, s1], [s1, TINY.train_steps]]  # the second call began at the checkpoint
    assert state["training_done"] and state["step"] == TINY.train_steps
    buf = load_buffer(tiny_run["work"])
    assert len(buf["observations"]) == TINY.train_steps  # no step repeated or lost
    # the resumed run is the uninterrupted run: same buffer, same snapshots
    whole = load_buffer(tiny_run["whole_work"])
    for k in buf:
        np.testing.assert_array_equal(buf[k], whole[k], err_msg=k)
    assert [x["return_mean"] for x in state["snapshots"]] == [x["return_mean"] for x in tiny_run["whole"]["snapshots"]]
    assert [x["step"] for x in state["snapshots"]] == [400, 800, 1200]


def test_five_datasets_load_with_shapes_and_metadata(tiny_run):
    out, eps = tiny_run["out"], tiny_run["episodes"]
    medium_step = out["medium"]["step"]
    sizes = {"random": 300, "medium": 250, "expert": 350, "medium-replay": medium_step, "medium-expert": 600}
    for kind, ep in eps.items():
        assert ep.obs_dim == 11 and ep.action_dim == 3, kind
        assert sum(len(r) for r in ep.rewards) == sizes[kind], kind
        assert (ep.ref_min_score, ep.ref_max_score) == pytest.approx(out["refs"]), kind
        from gymnasium.envs.registration import EnvSpec

        assert EnvSpec.from_json(ep.env_spec).id == "Hopper-v5", kind
    import minari

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        meta = json.loads(minari.load_dataset(dataset_id("Hopper-v5", "medium")).storage.metadata["ailot_collection"])
    assert meta["train_steps"] == 1200 and meta["medium_transitions"] == 250 and "expert_transitions" not in meta
    assert meta["snapshots"]["medium"]["step"] == medium_step
    # D4RL normalisation: the references map to 0 and 100; the random data scores near 0
    ref_min, ref_max = out["refs"]
    np.testing.assert_allclose(episodes_normalized_score(eps["random"], np.array([ref_min, ref_max])), [0, 100])
    assert ref_max > ref_min


def test_medium_expert_is_medium_then_expert(tiny_run):
    eps = tiny_run["episodes"]
    for key in ("observations", "actions", "rewards", "terminations", "truncations"):
        np.testing.assert_array_equal(_flat(eps["medium-expert"], key),
                                      np.concatenate([_flat(eps["medium"], key), _flat(eps["expert"], key)]))


def test_medium_replay_is_the_buffer_up_to_the_medium_snapshot(tiny_run):
    m = tiny_run["out"]["medium"]["step"]
    ep = tiny_run["episodes"]["medium-replay"]
    buf = load_buffer(tiny_run["work"])
    f32 = {k: v[:m].astype(np.float32) for k, v in buf.items()}  # ailot's Episodes hold float32
    np.testing.assert_array_equal(np.concatenate([o[:-1] for o in ep.observations]), f32["observations"])
    np.testing.assert_array_equal(np.concatenate([o[1:] for o in ep.observations]), f32["next_observations"])
    np.testing.assert_array_equal(_flat(ep, "actions"), f32["actions"])
    np.testing.assert_array_equal(_flat(ep, "rewards"), f32["rewards"])
    np.testing.assert_array_equal(_flat(ep, "terminations"), buf["terminations"][:m])
    ends = np.flatnonzero(buf["terminations"][:m] | buf["truncations"][:m])  # the buffer's episodes, cut at m
    if len(ends) == 0 or ends[-1] != m - 1:
        ends = np.append(ends, m - 1)
    np.testing.assert_array_equal(np.cumsum([len(r) for r in ep.rewards]) - 1, ends)
    assert all(t[-1] or u[-1] for t, u in zip(ep.terminations, ep.truncations))


def test_rerun_redoes_nothing(tiny_run, monkeypatch):
    from minari.storage import get_dataset_path

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny_run["root"]))
    stamps = {k: os.path.getmtime(get_dataset_path(dataset_id("Hopper-v5", k))) for k in KINDS}
    out = collect(TINY, tiny_run["work"], tiny_run["root"], progress=False)
    assert out["state"]["segments"] == tiny_run["out"]["state"]["segments"]
    assert {k: os.path.getmtime(get_dataset_path(dataset_id("Hopper-v5", k))) for k in KINDS} == stamps


@pytest.mark.parametrize("change, what", [
    (dict(env_id="NoSuchEnv-v0"), "NoSuchEnv-v0"),
    (dict(env_id="CartPole-v1"), "CartPole-v1"),
    (dict(train_steps=0), "train_steps"),
    (dict(medium_transitions=-5), "medium_transitions"),
    (dict(start_steps=5000), "start_steps"),
])
def test_bad_inputs_fail_before_work(tmp_path, change, what):
    import dataclasses

    with pytest.raises(AilotInputError, match=what) as info:
        collect(dataclasses.replace(TINY, **change), tmp_path / "work", tmp_path / "minari", progress=False)
    assert "Fix:" in str(info.value)
    assert not (tmp_path / "work").exists()


def test_collected_data_runs_through_the_sweep_stages(tiny_run, tmp_path, monkeypatch):
    """medium-replay -> ICVF psi -> AILOT / OTR rewards against the expert dataset -> IQL -> normalized scores."""
    from ailot.cache import ArrayCache
    from ailot.config import sweep_config_from_dict
    from ailot.pipeline import load_pair, pretrain_encoder, relabel_settings, run_trial

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tiny_run["root"]))
    ids = tiny_run["out"]["ids"]
    cfg = sweep_config_from_dict({
        "name": "collected", "storage": str(tmp_path),
        "datasets": [{"name": "hopper-mr", "agent": ids["medium-replay"], "expert": ids["expert"],
                      "task_family": "locomotion"}],
        "intents": {"hidden_dims": [16, 16], "num_steps": 40, "chunk": 20},
        "labellers": {"ailot": {}, "otr": {}},
        "learners": {"iql": {"hidden_dims": [16, 16]}},
        "train": {"steps": 40, "eval_every": 20, "eval_episodes": 2, "eval_envs": 2},
    })
    agent, expert = load_pair(cfg.datasets[0])
    assert (agent.ref_min_score, agent.ref_max_score) == pytest.approx(tiny_run["out"]["refs"])
    encoder = pretrain_encoder(agent, cfg.intents, 0, tmp_path, progress=False)
    cache = ArrayCache(str(tmp_path / "cache"))
    keyed = relabel_settings(agent, expert, cfg.labeller_settings(), encoder, cache, progress=False)
    assert sorted(s["labeller"] for s in keyed.values()) == ["ailot", "otr"]
    for key, setting in keyed.items():
        rewards = cache.get(key)["rewards"]
        assert rewards.shape == (agent.num_transitions,) and np.isfinite(rewards).all() and rewards.std() > 0
        if setting["labeller"] == "ailot":
            assert (rewards > 0).all() and (rewards <= setting["alpha"] + 1e-6).all()
        rows = []
        trial = {"dataset": "hopper-mr", "learner": "iql", "seed": 0, "labeller": setting}
        sinkhorn = cache.meta(key)["sinkhorn"]
        assert sinkhorn["problems"] == agent.num_episodes and 0 <= sinkhorn["converged"] <= 1
        run_trial(trial, cfg, agent, rewards, rewards_info=sinkhorn,
                  report=lambda row, learner, rows=rows: rows.append(row))
        assert [r["step"] for r in rows] == [20, 40]
        assert all(r["sinkhorn_converged"] == sinkhorn["converged"] for r in rows)
        assert all(r["sinkhorn_iterations"] == sinkhorn["iterations_median"] for r in rows)
        lo, hi = tiny_run["out"]["refs"]
        for r in rows:
            assert r["env_id"] == "Hopper-v5" and r["labeller"] == setting["labeller"]
            assert r["normalized_score"] == pytest.approx(100 * (r["return_mean"] - lo) / (hi - lo))
