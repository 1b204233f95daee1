"""Fidelity options (issue 28): each choice between the reference code and ailot's earlier behaviour is a setting,
and each test here fails if its setting is ignored (the two options give different rewards or inputs on the same
data) or if the option that reproduces the reference or the committed results drifts from it."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from ailot import labellers, pipeline
from ailot import learners as L
from ailot import relabel as R
from ailot.cache import content_key
from ailot.config import sweep_config_from_dict
from ailot.data.loading import load_dataset
from ailot.intents import (
    LEGACY_VALUES,
    ICVFConfig,
    IntentEncoder,
    encoder_settings,
    pretrain,
    sample_batch,
    training_data,
)

TINY_ICVF = {"hidden_dims": [8, 8], "num_steps": 20, "chunk": 20, "batch_size": 32}


def sweep(agent_id: str, expert: str = "same", family: str = "maze2d", learners=None):
    return sweep_config_from_dict({
        "name": "fidelity-test",
        "datasets": [{"name": "umaze", "agent": agent_id, "expert": expert, "task_family": family}],
        "labellers": {"true": {}},
        "learners": learners or {"iql": {}},
        "train": {"steps": 10, "eval_every": 10},
    })


# ------------------------------------------------------------------------------ 1. where the experts come from


def test_expert_same_takes_the_top_episodes_of_the_agent_dataset(pointmaze_umaze):
    agent_id, expert_id = pointmaze_umaze
    same = sweep(agent_id).datasets[0]
    separate = sweep(agent_id, expert=expert_id).datasets[0]
    assert same.expert == agent_id and same.expert_is_agent  # results' expert_id names the agent dataset
    assert separate.expert == expert_id and not separate.expert_is_agent

    agent, expert = pipeline.load_pair(same, progress=False)
    assert expert is agent  # loaded once
    top = int(np.argmax(agent.returns))
    np.testing.assert_array_equal(labellers.expert_trajectories(expert, 1)[0], agent.observations[top])
    _, other = pipeline.load_pair(separate, progress=False)
    assert other.dataset_id == expert_id
    assert not np.array_equal(labellers.expert_trajectories(other, 1)[0], agent.observations[top])

    cfg = sweep(agent_id)
    trial = {"dataset": "umaze", "learner": "iql", "seed": 0, "labeller": {"labeller": "true"}}
    prep = pipeline.prepare_trial(trial, cfg, agent, None, pipeline.learner_config(trial, cfg))
    assert prep["base_row"]["expert_id"] == agent_id


# ------------------------------------------------------------------------------ 2. AILOT's reward squashing


def test_authors_squash_is_the_notebook_formula_and_differs_from_the_paper():
    rng = np.random.default_rng(0)
    path = np.cumsum(rng.normal(size=(45, 6)) * 0.1, axis=0)
    x = (path[:37] + rng.normal(size=(37, 6)) * 0.1).astype(np.float32)  # Ta = 37, not 100
    y = (path + rng.normal(size=(45, 6)) * 0.05).astype(np.float32)
    kw = dict(k=1, epsilon=0.1, threshold=1e-6, momentum="none", chunk_size=1)
    paper = R.ailot_rewards(x[None], [37], y[None], [45], **kw)[0]
    authors = R.ailot_rewards(x[None], [37], y[None], [45], squash="authors", **kw)[0]

    # the notebook by hand on the same plan: rewards = -sum_j P_ij C_ij * 100, then 2 * exp(3 * rewards)
    cost = R.intent_cost(x, 37, y, 45, 1)
    a, b = R.marginals(37, 45, R.expert_start(cost, 45), 37, 45)
    plan, _ = R.solve_ot(cost, a, b, epsilon=0.1, threshold=1e-6, momentum="none")
    plan, cost = np.asarray(plan, np.float64), np.asarray(cost, np.float64)
    notebook = 2.0 * np.exp(3.0 * (-(plan * cost).sum(axis=1) * 100))
    np.testing.assert_allclose(authors, notebook, rtol=1e-4)
    np.testing.assert_allclose(paper, 5.0 * np.exp(-0.5 * 37 * (plan * cost).sum(axis=1)), rtol=1e-4)
    assert authors.max() > 0.1 and np.abs(paper - authors).max() > 0.1  # not all underflowing to zero
    # the same alpha and tau still give different rewards: the exponent differs by 100 / Ta
    same_scale = R.ailot_rewards(x[None], [37], y[None], [45], squash="authors", alpha=5.0, tau=0.5, **kw)[0]
    assert np.abs(same_scale - paper).max() > 0.1
    with pytest.raises(Exception, match="squash"):
        R.ailot_rewards(x[None], [37], y[None], [45], squash="notebook", **kw)


def test_labellers_pass_squash_through_when_it_is_a_reward_key():
    """labellers.solve_setting passes the registry's `squash` setting to ailot_rewards, merged experts included."""
    rng = np.random.default_rng(1)
    path = np.cumsum(rng.normal(size=(40, 4)) * 0.1, axis=0)  # agents and experts near one path: costs ~0.1
    agent = [(path[:n] + rng.normal(size=(n, 4)) * 0.1).astype(np.float32) for n in (20, 33)]
    experts = [(path + rng.normal(size=(40, 4)) * 0.05).astype(np.float32) for _ in range(2)]
    assert labellers.get("ailot").settings["squash"].default == "paper"
    setting = {"labeller": "ailot", "k": 1, "epsilon": 0.1, "alpha": 2.0, "tau": 3.0, "momentum": "none"}
    for mode in ("max", "merge"):
        out = {sq: np.concatenate(labellers.solve_setting({**setting, "squash": sq, "expert_mode": mode}, agent,
                                                          experts, buckets=(40,)))
               for sq in R.SQUASHES}
        direct = np.concatenate(R.ailot_rewards_bucketed(agent, experts, buckets=(40,), k=1, epsilon=0.1, alpha=2.0,
                                                         tau=3.0, momentum="none", expert_mode=mode,
                                                         squash="authors"))
        np.testing.assert_array_equal(out["authors"], direct)
        assert np.abs(out["authors"] - out["paper"]).max() > 0.1


# ------------------------------------------------------------------------------ 3. ICVF input normalisation


def test_normalize_observations_changes_the_encoder_inputs_and_embeddings():
    rng = np.random.default_rng(2)
    trajs = [(rng.normal(size=(30, 3)) * [1.0, 10.0, 0.1] + [5.0, -3.0, 100.0]).astype(np.float32) for _ in range(4)]
    raw_cfg = ICVFConfig.from_dict({**TINY_ICVF, "normalize_observations": False})
    norm_cfg = ICVFConfig.from_dict(TINY_ICVF)
    assert norm_cfg.normalize_observations  # the default: ailot's behaviour so far
    raw, raw_mean, raw_std = training_data(trajs, raw_cfg)
    norm, mean, std = training_data(trajs, norm_cfg)
    flat = np.concatenate(trajs)
    np.testing.assert_array_equal(np.asarray(raw.obs), flat)  # icvf_release: raw observations
    np.testing.assert_allclose(np.asarray(norm.obs), (flat - flat.mean(0)) / flat.std(0), rtol=1e-4, atol=1e-4)
    assert (raw_mean == 0).all() and (raw_std == 1).all()

    enc_raw, _ = pretrain(trajs, raw_cfg, seed=0, progress=False)
    enc_norm, _ = pretrain(trajs, norm_cfg, seed=0, progress=False)
    assert np.abs(enc_raw.embed(flat) - enc_norm.embed(flat)).max() > 1e-3
    assert enc_raw.content_hash() != enc_norm.content_hash()


# ------------------------------------------------------------------------------ 4. ICVF's training pairs


def _pairs(trajs, **settings) -> set[tuple[int, int]]:
    """The (s, s') index pairs of a large ICVF batch on observations that are their own flat index."""
    cfg = ICVFConfig.from_dict({**TINY_ICVF, "batch_size": 20_000, "normalize_observations": False, **settings})
    data, _, _ = training_data(trajs, cfg)
    batch = sample_batch(jax.random.PRNGKey(0), data, cfg)
    return set(zip(np.asarray(batch["obs"][:, 0]).astype(int), np.asarray(batch["next_obs"][:, 0]).astype(int)))


def test_last_transition_of_each_episode_is_a_training_pair_by_default():
    lengths = [6, 9, 4]  # observations per episode, s_0..s_T
    starts = np.cumsum([0, *lengths[:-1]])
    trajs = [np.arange(s, s + n, dtype=np.float32)[:, None] for s, n in zip(starts, lengths)]
    last = {(s + n - 2, s + n - 1) for s, n in zip(starts, lengths)}  # s_{T-1} -> s_T
    every = {(i, i + 1) for s, n in zip(starts, lengths) for i in range(s, s + n - 1)}
    assert _pairs(trajs) == every  # icvf_release: every transition, the last included
    assert _pairs(trajs, sample_last_transition=False) == every - last  # ailot before: never the last


def test_legacy_pairs_reproduce_the_old_encoder_and_a_changed_default_gets_a_new_cache_key(pointmaze_umaze,
                                                                                         tmp_path):
    agent = load_dataset(pointmaze_umaze[0])
    legacy = {**TINY_ICVF, "sample_last_transition": False}
    # before: the pipeline ran pretrain(agent.states(), ...), every pair of the states given (which lack s_T);
    # now: it passes every observation and the legacy setting drops s_T again: bit for bit the same encoder
    old, _ = pretrain(agent.states(), ICVFConfig.from_dict(TINY_ICVF), seed=0, progress=False)
    now = pipeline.pretrain_encoder(agent, legacy, 0, tmp_path, progress=False)
    new = pipeline.pretrain_encoder(agent, TINY_ICVF, 0, tmp_path, progress=False)
    probe = np.concatenate(agent.observations[:3])
    np.testing.assert_array_equal(now.embed(probe), old.embed(probe))
    assert np.abs(new.embed(probe) - old.embed(probe)).max() > 1e-4
    # cache keys: the legacy setting keeps the key an encoder of `TINY_ICVF` had before the setting existed
    # (so committed caches stay valid for it); the new default gets another key, never the old encoder
    before = content_key("encoder", agent.fingerprint(), TINY_ICVF, 0)
    assert pipeline.encoder_key(agent, legacy, 0) == before
    assert pipeline.encoder_key(agent, TINY_ICVF, 0) != before
    assert encoder_settings(TINY_ICVF) == {**TINY_ICVF, "sample_last_transition": True}
    assert encoder_settings({**TINY_ICVF, "normalize_observations": False})["normalize_observations"] is False
    # an encoder saved before these settings existed loads as the legacy one, with the hash it had then
    path = now.save(tmp_path / "old")
    meta = (path / "encoder.json").read_text()
    import json

    stored = json.loads(meta)
    for key in LEGACY_VALUES:
        stored["config"].pop(key)
    (path / "encoder.json").write_text(json.dumps(stored))
    loaded = IntentEncoder.load(path, config=ICVFConfig.from_dict(legacy))
    assert loaded.config == ICVFConfig.from_dict(legacy) and loaded.content_hash() == now.content_hash()
    assert "sample_last_transition" not in loaded.config.key_dict()
    assert new.config.key_dict()["sample_last_transition"] is True


# ------------------------------------------------------------------------------ 5. Diffusion-QL's rewards


def test_diffusion_ql_follows_the_reference_rewards_and_presets_per_family():
    dql = L.get_learner("diffusion_ql")
    for family, reference, before in (("locomotion", "none", "locomotion"), ("antmaze", "cql_antmaze", "antmaze"),
                                      ("maze2d", "none", "none")):
        cfg = L.make_config("diffusion_ql", {}, task_family=family)
        assert L.reward_scaling("diffusion_ql", family, cfg) == reference == dql.reward_scalings[family]
        old = L.make_config("diffusion_ql", {"reward_scaling": "iql"}, task_family=family)
        assert L.reward_scaling("diffusion_ql", family, old) == before
    assert L.reward_scaling("iql", "antmaze", L.make_config("iql", {}, task_family="antmaze")) == "antmaze"
    antmaze = L.make_config("diffusion_ql", {}, task_family="antmaze")
    assert (antmaze.eta, antmaze.grad_norm, antmaze.max_q_backup) == (2.0, 3.0, True)  # antmaze-umaze-diverse
    loco = L.make_config("diffusion_ql", {}, task_family="locomotion")
    assert (loco.eta, loco.grad_norm, loco.max_q_backup) == (1.0, 5.0, False)
    from ailot.learners.diffusion_ql import reference_overrides

    row = L.make_config("diffusion_ql", reference_overrides("antmaze-medium-play-v0"), task_family="antmaze")
    assert (row.lr, row.eta, row.grad_norm, row.max_q_backup, row.reward_scaling) == (1e-3, 2.0, 2.0, True,
                                                                                    "cql_antmaze")
    assert reference_overrides("walker2d-medium-v2")["grad_norm"] == 1.0
    with pytest.raises(Exception, match="reward_scaling"):
        L.make_config("diffusion_ql", {"reward_scaling": "cql"})


@pytest.mark.parametrize("family, reference, before", [("antmaze", lambda r: (r - 0.5) * 4, lambda r: r - 1),
                                                       ("locomotion", lambda r: r, None)])
def test_trials_train_diffusion_ql_on_the_rewards_its_setting_picks(pointmaze_umaze, family, reference, before):
    agent = load_dataset(pointmaze_umaze[0])
    rewards = np.concatenate(agent.rewards) + 0.5 * np.random.default_rng(3).random(agent.num_transitions)
    trial = {"dataset": "umaze", "learner": "diffusion_ql", "seed": 0, "labeller": {"labeller": "true"}}
    got = {}
    for choice in ("reference", "iql"):
        cfg = sweep(pointmaze_umaze[0], family=family, learners={"diffusion_ql": {"reward_scaling": choice}})
        prep = pipeline.prepare_trial(trial, cfg, agent, rewards, pipeline.learner_config(trial, cfg))
        got[choice] = prep["data"]["rewards"]
    np.testing.assert_allclose(got["reference"], reference(rewards), rtol=1e-6)
    if before is not None:
        np.testing.assert_allclose(got["iql"], before(rewards), rtol=1e-6)
    else:  # IQL's locomotion scaling: x 1000 / (max - min episode return)
        returns = np.array([r.sum() for r in np.split(rewards, np.cumsum(agent.lengths)[:-1])])
        np.testing.assert_allclose(got["iql"], rewards * 1000 / np.ptp(returns), rtol=1e-4)
    assert np.abs(got["reference"] - got["iql"]).max() > 0.1
