"""Learners that read the expert set (SMODICE, DWBC, IQ-Learn, BC on the expert episodes): the expert-data
plumbing of base (sampling, checks), each method's defining behaviour on toy problems, and checkpoint fidelity
for every registered JAX learner. Small networks and a few hundred updates keep it fast on CPU."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from ailot import learners  # noqa: E402
from ailot.errors import AilotInputError  # noqa: E402
from ailot.learners import base  # noqa: E402

SMALL = {"hidden_dims": [32, 32]}
NEW = ("smodice", "dwbc", "iq_learn", "bc_expert")
# Per learner: small networks, and settings that make the short runs below cross their phase changes
# (SMODICE's discriminator-only start, DWBC's every-k discriminator step, Diffusion-QL's EMA).
TINY = {
    "iql": SMALL,
    "bc": SMALL,
    "diffusion_ql": {"hidden_dims": [32, 32], "time_dim": 8, "num_action_samples": 8, "step_start_ema": 0,
                     "update_ema_every": 2},
    "smodice": {**SMALL, "disc_steps": 25},
    "dwbc": {**SMALL, "d_update_every": 7},
    "iq_learn": {**SMALL, "learn_temp": True},
    "bc_expert": SMALL,
}


def tree_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def random_data(m: int = 256, ne: int = 40, d: int = 2, a: int = 2, seed: int = 0) -> dict[str, np.ndarray]:
    """Random agent transitions plus an expert set of `ne` transitions (all float32)."""
    rng = np.random.default_rng(seed)
    data = {"observations": rng.normal(size=(m, d)), "actions": rng.uniform(-1, 1, (m, a)),
            "rewards": rng.normal(size=m), "next_observations": rng.normal(size=(m, d)),
            "terminals": (rng.random(m) < 0.05).astype(np.float64)}
    data = {k: v.astype(np.float32) for k, v in data.items()}
    data.update(learners.expert_arrays(rng.normal(size=(ne, d)) + 1.0, rng.uniform(-1, 1, (ne, a)),
                                       rng.normal(size=(ne, d)) + 1.0, np.zeros(ne)))
    return data


def make(name: str, seed: int = 0, obs_dim: int = 2, action_dim: int = 2, **overrides):
    cfg = learners.make_config(name, {**TINY[name], **overrides})
    return learners.get_learner(name).create(seed, obs_dim, action_dim, cfg)


# ------------------------------------------------------------------------------------- expert-data plumbing


@partial(jax.jit, static_argnames=("batch_size",))
def sample_batch_before_expert_keys(learner, data, batch_size):
    """base.sample_batch as it was before expert keys existed (commit fd42702)."""
    rng, key = jax.random.split(learner.rng)
    idx = jax.random.randint(key, (batch_size,), 0, data["observations"].shape[0])
    return learner.replace(rng=rng), {k: v[idx] for k, v in data.items()}


def test_sample_batch_without_expert_keys_is_unchanged():
    data = {k: v for k, v in random_data().items() if not k.startswith("expert_")}
    learner = make("iql")
    prepared = base.prepare_data(learner, data)
    new, old = learner, learner
    for _ in range(3):
        new, batch_new = learners.sample_batch(new, prepared, 64)
        old, batch_old = sample_batch_before_expert_keys(old, prepared, 64)
        assert np.array_equal(np.asarray(new.rng), np.asarray(old.rng))
        assert batch_new.keys() == batch_old.keys()
        assert all(np.array_equal(np.asarray(batch_new[k]), np.asarray(batch_old[k])) for k in batch_old)


def test_learners_without_expert_input_ignore_expert_keys_bit_for_bit():
    """IQL trained on data that also holds expert arrays equals IQL trained without them: prepare_data drops
    them, so its batches (and rng) are those of today."""
    data = random_data()
    plain = {k: v for k, v in data.items() if not k.startswith("expert_")}
    assert "expert_observations" not in base.prepare_data(make("iql"), data)
    with_expert, _ = learners.train(make("iql"), data, num_steps=10, batch_size=32, chunk=10)
    without, _ = learners.train(make("iql"), plain, num_steps=10, batch_size=32, chunk=10)
    assert tree_equal(with_expert, without)


def test_expert_keys_are_sampled_over_the_expert_set_with_their_own_indices():
    m, ne = 1000, 7
    data = random_data(m=m, ne=ne)
    data["observations"][:, 0] = np.arange(m)  # row ids, to read the sampled indices back
    data["expert_observations"][:, 0] = np.arange(ne)
    data["expert_actions"][:, 0] = np.arange(ne) / 10.0
    data["expert_terminals"][:] = np.arange(ne)
    learner = make("dwbc")
    prepared = base.prepare_data(learner, data)
    plain = {k: v for k, v in prepared.items() if not k.startswith("expert_")}
    new, batch = learners.sample_batch(learner, prepared, 256)
    same, agent_only = learners.sample_batch(learner, plain, 256)
    idx_e = np.asarray(batch["expert_observations"][:, 0]).astype(int)
    assert set(idx_e) == set(range(ne))  # all of the small expert set, none of the agent rows
    np.testing.assert_allclose(np.asarray(batch["expert_actions"][:, 0]), idx_e / 10.0, rtol=1e-6)  # one index
    np.testing.assert_array_equal(np.asarray(batch["expert_terminals"]), idx_e)
    idx_a = np.asarray(batch["observations"][:, 0]).astype(int)
    assert idx_a.max() >= ne and len(set(idx_a)) > 100  # the agent index runs over M
    # The agent half and the next rng do not depend on whether expert keys were sampled.
    assert np.array_equal(np.asarray(new.rng), np.asarray(same.rng))
    assert all(np.array_equal(np.asarray(batch[k]), np.asarray(agent_only[k])) for k in agent_only)


def test_registry_reads_expert_input_and_reward_free_from_the_classes():
    assert {n: learners.expert_input(n) for n in learners.LEARNERS} == {
        "iql": None, "bc": None, "diffusion_ql": None, "smodice": "states", "dwbc": "transitions",
        "iq_learn": "transitions", "bc_expert": "transitions"}
    assert [n for n in learners.LEARNERS if learners.uses_expert_actions(n)] == ["dwbc", "iq_learn", "bc_expert"]
    assert [n for n in learners.LEARNERS if learners.reward_free(n)] == ["bc", *NEW]
    assert learners.expert_input("rllib_iql") is None and not learners.uses_expert_actions("rllib_bc")


@pytest.mark.parametrize("name", ["dwbc", "iq_learn", "bc_expert"])
def test_a_learner_needing_expert_actions_refuses_a_state_only_expert_set(name):
    with pytest.raises(AilotInputError) as e:
        learners.check_expert_input(name, has_actions=False)
    assert name in str(e.value) and "actions" in str(e.value) and "smodice" in e.value.fix
    assert learners.check_expert_input(name, has_actions=True) == "transitions"
    # The same data reaching `train` directly: the missing key is named before any update.
    data = random_data()
    state_only = {k: v for k, v in data.items() if k != "expert_actions"}
    with pytest.raises(AilotInputError, match="expert_actions"):
        learners.train(make(name), state_only, num_steps=1, batch_size=8)


def test_state_only_expert_sets_suit_smodice_and_the_reward_learners():
    assert learners.check_expert_input("smodice", has_actions=False) == "states"
    assert learners.check_expert_input("iql", has_actions=False) is None
    rng = np.random.default_rng(0)
    arrays = learners.expert_arrays(rng.normal(size=(5, 3)), None, rng.normal(size=(5, 3)), np.zeros(5))
    assert sorted(arrays) == ["expert_next_observations", "expert_observations", "expert_terminals"]
    assert all(v.dtype == np.float32 for v in arrays.values())
    with pytest.raises(AilotInputError, match="expert_observations"):  # no expert set at all
        learners.train(make("smodice"), {k: v for k, v in random_data().items() if not k.startswith("expert_")}, 1, 8)


def test_expert_arrays_refuse_misaligned_or_empty_input():
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(5, 3))
    with pytest.raises(AilotInputError, match="actions"):
        learners.expert_arrays(obs, rng.normal(size=(4, 2)), obs, np.zeros(5))
    with pytest.raises(AilotInputError, match="terminals"):
        learners.expert_arrays(obs, None, obs, np.zeros((5, 1)))
    with pytest.raises(AilotInputError, match="next_observations"):
        learners.expert_arrays(obs, None, obs[:, :2], np.zeros(5))
    with pytest.raises(AilotInputError, match="at least one"):
        learners.expert_arrays(obs[:0], None, obs[:0], np.zeros(0))
    with pytest.raises(AilotInputError, match="non-finite"):
        learners.expert_arrays(np.full((5, 3), np.nan), None, obs, np.zeros(5))
    learner = make("dwbc")
    with pytest.raises(AilotInputError, match="expert_actions"):  # wrong action width for the learner
        base.prepare_data(learner, {**random_data(), "expert_actions": np.zeros((40, 3), np.float32)})


def test_initial_observations_are_the_episode_starts():
    obs = np.arange(12, dtype=np.float32).reshape(6, 2)
    np.testing.assert_array_equal(learners.initial_observations(obs, [4, 4, 4, 9, 9, 2]), obs[[0, 3, 5]])
    with pytest.raises(AilotInputError):
        learners.initial_observations(obs, [0, 1])


def test_new_configs_take_the_sweeps_overrides_and_presets():
    for name in NEW:
        assert learners.make_config(name, {"max_steps": 1e4}).max_steps == 10_000  # the pipeline always sets it
        hash(learners.make_config(name))  # static jit data
    assert learners.make_config("smodice").f == "kl"  # MuJoCo config
    assert learners.make_config("smodice", None, "antmaze").f == "chi" == learners.make_config("smodice", None,
                                                                                            "maze2d").f
    assert (learners.make_config("dwbc").alpha, learners.make_config("dwbc").eta) == (7.5, 0.5)
    iq = learners.make_config("iq_learn")
    assert (iq.value_loss, iq.chi_states, iq.chi_alpha, iq.actor_lr) == ("value_expert", "expert", 0.5, 3e-5)
    with pytest.raises(AilotInputError, match="smodice.f"):
        learners.make_config("smodice", {"f": "js"})
    with pytest.raises(AilotInputError, match="iq_learn.value_loss"):
        learners.make_config("iq_learn", {"value_loss": "v0"})


# ---------------------------------------------------------------------------------------------- SMODICE


def corner_data(n: int = 2048, ne: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """2-D random walk in [-1, 1]^2 (s' = s + 0.2 a); the expert set stays in the corner x, y > 0.4."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, 2))
    actions = rng.uniform(-1, 1, (n, 2))
    next_obs = np.clip(obs + 0.2 * actions, -1, 1)
    data = {"observations": obs, "actions": actions, "rewards": np.zeros(n), "next_observations": next_obs,
            "terminals": np.zeros(n)}
    data = {k: v.astype(np.float32) for k, v in data.items()}
    e_obs = rng.uniform(0.4, 1.0, (ne, 2))
    data.update(learners.expert_arrays(e_obs, None, np.clip(e_obs + 0.05 * rng.normal(size=e_obs.shape), -1, 1),
                                       np.zeros(ne)))
    return data


def test_smodice_trains_its_discriminator_first_and_then_only_v_and_the_policy():
    data = corner_data(512, 64)
    learner = make("smodice")  # disc_steps 25
    after_disc, info = learners.train(learner, data, num_steps=20, batch_size=32, chunk=20)
    assert not tree_equal(after_disc.disc, learner.disc)
    assert tree_equal((after_disc.value, after_disc.actor), (learner.value, learner.actor))
    assert info["value/value_loss"][0] == 0.0 and info["disc/disc_loss"][0] > 0.0  # the other phase reports 0
    later, info = learners.train(after_disc, data, num_steps=20, batch_size=32, chunk=20)  # 5 disc, 15 DICE
    changed, _ = learners.train(learner.replace(step=later.step), data, num_steps=20, batch_size=32, chunk=20)
    assert tree_equal(changed.disc, learner.disc)  # past disc_steps it is frozen, as the reference's
    assert not tree_equal(later.value, after_disc.value) and not tree_equal(later.actor, after_disc.actor)
    assert info["value/value_loss"][0] != 0.0 and info["disc/disc_loss"][0] > 0.0  # the chunk spans both phases


def test_smodice_weights_are_larger_on_transitions_the_discriminator_calls_expert_like():
    data = corner_data()
    learner = make("smodice", disc_steps=300, lr=1e-3, disc_lr=1e-3)
    learner, _ = learners.train(learner, data, num_steps=500, batch_size=128, chunk=250)
    batch = {k: jnp.asarray(v[:1024]) for k, v in data.items() if not k.startswith("expert_")}
    out = {k: np.asarray(v) for k, v in learner.weights(batch).items()}
    obs = data["observations"][:1024]
    corner = (obs[:, 0] > 0.4) & (obs[:, 1] > 0.4)
    assert out["reward"][corner].mean() > out["reward"][~corner].mean() + 1.0  # the discriminator learnt the corner
    assert out["w"][corner].mean() > 1.5 * out["w"][~corner].mean(), (out["w"][corner].mean(), out["w"][~corner].mean())
    assert np.corrcoef(out["reward"], out["w"])[0, 1] > 0.3


def test_smodice_chi_and_kl_give_their_own_weights_and_losses_on_the_same_batch():
    data = corner_data(512, 64)
    learner, _ = learners.train(make("smodice"), data, num_steps=40, batch_size=32, chunk=20)
    batch = {k: jnp.asarray(v[:256]) for k, v in data.items() if not k.startswith("expert_")}
    results = {}
    for f in ("chi", "kl"):
        variant = learner.replace(config=learners.make_config("smodice", {**TINY["smodice"], "f": f}))
        out = variant.weights(batch)
        loss, _ = variant.value_loss(batch, variant.value.params)
        results[f] = (np.asarray(out["e_v"]), np.asarray(out["w"]), float(loss))
    e_v = results["chi"][0]
    np.testing.assert_array_equal(e_v, results["kl"][0])  # same V and discriminator: same residuals
    np.testing.assert_allclose(results["chi"][1], np.maximum(e_v + 1.0, 0.0), rtol=1e-6)  # relu(e + 1)
    np.testing.assert_allclose(results["kl"][1], np.exp(e_v), rtol=1e-5)  # exp(e)
    v0 = (1 - 0.99) * float(jnp.mean(learner.value.apply_fn({"params": learner.value.params}, batch["observations"])))
    assert results["chi"][2] == pytest.approx(v0 + np.mean(0.5 * e_v**2 + e_v), rel=1e-4, abs=1e-6)
    assert results["kl"][2] == pytest.approx(v0 + math.log(np.mean(np.exp(e_v))), rel=1e-4, abs=1e-6)
    assert not np.allclose(results["chi"][1], results["kl"][1]) and results["chi"][2] != results["kl"][2]


def test_smodice_reads_episode_starts_when_given():
    data = corner_data(512, 64)
    learner = make("smodice")
    starts = {**data, "initial_observations": np.full((3, 2), 0.9, np.float32)}
    batch_plain = learners.sample_batch(learner, base.prepare_data(learner, data), 32)[1]
    batch_starts = learners.sample_batch(learner, base.prepare_data(learner, starts), 32)[1]
    assert np.all(np.asarray(batch_starts["initial_observations"]) == 0.9)
    loss_plain, info_plain = learner.value_loss(batch_plain, learner.value.params)
    loss_starts, info_starts = learner.value_loss(batch_starts, learner.value.params)
    v_start = float(learner.value.apply_fn({"params": learner.value.params}, jnp.full((1, 2), 0.9))[0])
    assert float(info_starts["v0_mean"]) == pytest.approx(v_start, rel=1e-5)
    assert float(info_plain["v0_mean"]) != pytest.approx(v_start, rel=1e-3)


# ------------------------------------------------------------------------------------------------- DWBC


def mixed_quality_data(n: int = 2048, ne: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Agent data: half expert-like actions a = -0.6 s, half the opposite; the expert set has the former."""
    rng = np.random.default_rng(seed)
    obs = rng.uniform(-1, 1, (n, 2))
    good = rng.random(n) < 0.5
    actions = np.where(good[:, None], -0.6 * obs, 0.6 * obs) + 0.05 * rng.normal(size=(n, 2))
    data = {"observations": obs, "actions": np.clip(actions, -1, 1), "rewards": np.zeros(n),
            "next_observations": obs, "terminals": np.ones(n)}
    data = {k: v.astype(np.float32) for k, v in data.items()}
    e_obs = rng.uniform(-1, 1, (ne, 2))
    data.update(learners.expert_arrays(e_obs, -0.6 * e_obs, e_obs, np.ones(ne)))
    return data


def test_dwbc_discriminator_steps_every_k_updates():
    data = mixed_quality_data(512, 64)
    learner = make("dwbc")  # d_update_every 7
    for step in range(1, 8):
        prev = learner
        learner, _ = learners.train(learner, data, num_steps=1, batch_size=32, chunk=1)
        assert tree_equal(learner.disc, prev.disc) == (step < 7), step  # the reference's total_it % 7 == 0
        assert not tree_equal(learner.actor, prev.actor)


def test_dwbc_discriminator_stays_in_its_clip_range_and_the_policy_moves_towards_the_expert_actions():
    data = mixed_quality_data()
    test_obs = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (256, 2)), jnp.float32)
    expert_actions = -0.6 * np.asarray(test_obs)
    errors, trained = {}, {}
    for name in ("dwbc", "bc"):
        # Faster rates than the reference's 1e-4 and a discriminator step every 2nd update, for a short run.
        learner = make(name, d_update_every=2, disc_lr=1e-3, lr=1e-3) if name == "dwbc" else make(name, lr=1e-3)
        before = np.abs(np.asarray(learners.act(learner, test_obs, jax.random.PRNGKey(0))) - expert_actions).mean()
        learner, _ = learners.train(learner, data, num_steps=600, batch_size=128, chunk=300)
        acted = np.asarray(learners.act(learner, test_obs, jax.random.PRNGKey(0)))
        errors[name], trained[name] = np.abs(acted - expert_actions).mean(), learner
        if name == "dwbc":
            assert errors[name] < 0.3 * before, (before, errors[name])
    assert errors["dwbc"] < 0.5 * errors["bc"], errors  # BC on all the data averages the two modes
    dwbc, rng = trained["dwbc"], np.random.default_rng(1)
    d_o = np.asarray(dwbc.discriminate(data["observations"], data["actions"],
                                       dwbc.log_pi(data["observations"], data["actions"])))
    obs = jnp.asarray(100 * rng.normal(size=(512, 2)), jnp.float32)  # far off the data, where the unclipped
    act = jnp.asarray(rng.uniform(-1, 1, (512, 2)), jnp.float32)  # sigmoid would reach 0 or 1
    d_far = np.asarray(dwbc.discriminate(obs, act, dwbc.log_pi(obs, act)))
    for d in (d_o, d_far):
        assert d.min() >= 0.1 - 1e-7 and d.max() <= 0.9 + 1e-7, (d.min(), d.max())
    assert np.isclose(d_o.min(), 0.1) or np.isclose(d_far.min(), 0.1) or np.isclose(d_far.max(), 0.9)  # clip hit
    d_e = dwbc.discriminate(data["expert_observations"], data["expert_actions"],
                            dwbc.log_pi(data["expert_observations"], data["expert_actions"]))
    good = np.sum((data["actions"] + 0.6 * data["observations"]) ** 2, 1) < np.sum(
        (data["actions"] - 0.6 * data["observations"]) ** 2, 1)  # the agent's expert-like half
    assert float(d_e.mean()) > d_o[good].mean() > d_o[~good].mean() + 0.2, (d_e.mean(), d_o[good].mean(),
                                                                             d_o[~good].mean())


# --------------------------------------------------------------------------------------------- IQ-Learn


def test_iq_learn_recovers_a_reward_higher_on_expert_than_on_random_transitions():
    """Expert: a = -0.8 s on a 2-D point (s' = s + 0.2 a); the recovered reward Q(s, a) - gamma V(s') must rank
    expert transitions above random-action transitions from the same states."""
    rng = np.random.default_rng(0)
    ne = 512
    e_obs = rng.uniform(-1, 1, (ne, 2)).astype(np.float32)
    e_act = -0.8 * e_obs
    data = corner_data(256, 8)  # agent arrays (unused by the default value_expert objective)
    data.update(learners.expert_arrays(e_obs, e_act, np.clip(e_obs + 0.2 * e_act, -1, 1), np.zeros(ne)))
    learner = make("iq_learn", critic_lr=1e-3, actor_lr=1e-3)
    learner, info = learners.train(learner, data, num_steps=600, batch_size=128, chunk=300)
    obs = rng.uniform(-1, 1, (512, 2)).astype(np.float32)
    rand = rng.uniform(-1, 1, (512, 2)).astype(np.float32)
    key = jax.random.PRNGKey(3)

    def reward(actions: np.ndarray) -> np.ndarray:
        nxt = np.clip(obs + 0.2 * actions, -1, 1)
        return np.asarray(learner.recovered_reward(obs, actions, nxt, np.zeros(512, np.float32), key))

    r_expert, r_random = reward(-0.8 * obs), reward(rand)
    gap = r_expert.mean() - r_random.mean()
    assert gap > r_random.std(), (r_expert.mean(), r_random.mean(), r_random.std())
    assert np.mean(r_expert > r_random) > 0.85
    # Once the policy matches the expert, V(s) - gamma V(s') equals the expert's reward (up to the small entropy
    # term), the first two terms of the loss cancel and the chi-square term pulls that reward to 0.
    assert abs(r_expert.mean()) < 0.25 * gap, (r_expert.mean(), gap)
    acted = np.asarray(learners.act(learner, obs, key))
    assert np.abs(acted + 0.8 * obs).mean() < 0.1  # and the policy is the expert's
    assert np.all(np.isfinite(info["critic/critic_loss"]))


def test_iq_learn_value_variants_read_the_agent_states_or_not():
    """The offline objective ("value_expert") reads only the expert set; "value" also the agent states."""
    data = random_data()
    learner = make("iq_learn")
    batch = learners.sample_batch(learner, base.prepare_data(learner, data), 32)[1]
    moved = {**batch, "observations": batch["observations"] + 1.0, "next_observations": batch["next_observations"] - 1}
    key = jax.random.PRNGKey(0)
    losses = {}
    for value_loss in ("value_expert", "value"):
        cfg = learners.make_config("iq_learn", {**TINY["iq_learn"], "value_loss": value_loss})
        variant = learner.replace(config=cfg)
        for name, b in (("a", batch), ("b", moved)):
            losses[value_loss, name] = float(variant.critic_loss(b, variant.critic.params, key)[1]["value_loss"])
    assert losses["value_expert", "a"] == losses["value_expert", "b"]
    assert losses["value", "a"] != losses["value", "b"]


# -------------------------------------------------------------------------------------------- BC (expert)


def test_bc_expert_clones_only_the_expert_actions():
    data = mixed_quality_data()
    other = {**data, "actions": -data["actions"]}  # agent actions play no part
    a, _ = learners.train(make("bc_expert"), data, num_steps=400, batch_size=128, chunk=400)
    b, _ = learners.train(make("bc_expert"), other, num_steps=400, batch_size=128, chunk=400)
    assert tree_equal(a, b)
    test_obs = jnp.asarray(np.random.default_rng(2).uniform(-1, 1, (256, 2)), jnp.float32)
    err = np.abs(np.asarray(learners.act(a, test_obs, jax.random.PRNGKey(0))) + 0.6 * np.asarray(test_obs)).mean()
    assert err < 0.06, err


# ----------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize("name", list(TINY))
def test_save_load_continue_is_bit_identical_for_every_learner(name, tmp_path):
    """Train 20, save, load into a learner of another seed, train 20 more: equal to 40 straight. The second
    half crosses SMODICE's phase change (disc_steps 25) and DWBC's discriminator steps (every 7th)."""
    assert set(TINY) == set(learners.LEARNERS)
    data = random_data()
    cls = learners.get_learner(name)
    first, _ = learners.train(make(name, seed=3), data, num_steps=20, batch_size=32, chunk=20)
    straight, _ = learners.train(first, data, num_steps=20, batch_size=32, chunk=20)
    learners.save(first, tmp_path / "ckpt.msgpack")
    restored = learners.load(tmp_path / "ckpt.msgpack", make(name, seed=99))
    assert type(restored) is cls and tree_equal(restored, first)
    resumed, _ = learners.train(restored, data, num_steps=20, batch_size=32, chunk=20)
    assert tree_equal(resumed, straight)
    assert int(resumed.step) == 40
