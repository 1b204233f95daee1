"""Learners (IQL, Diffusion-QL, BC): learning on toy tasks, expectile semantics, sampler bounds,
checkpoint fidelity, scan/loop equivalence, and input errors. Small networks keep it fast on CPU."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from ailot import learners  # noqa: E402
from ailot.errors import AilotInputError  # noqa: E402
from ailot.learners.iql import expectile_loss  # noqa: E402

SMALL = {"hidden_dims": [32, 32]}
# EMA from step 0, every 2 steps, so checkpoints and chunking are tested with the EMA moving.
SMALL_DQL = {"hidden_dims": [32, 32], "time_dim": 8, "num_action_samples": 8, "step_start_ema": 0,
             "update_ema_every": 2}


def one_step_data(obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> dict[str, np.ndarray]:
    """Terminal transitions: Q(s, a) = r(s, a) exactly, so targets do not move."""
    return {"observations": obs.astype(np.float32), "actions": actions.astype(np.float32),
            "rewards": rewards.astype(np.float32), "next_observations": obs.astype(np.float32),
            "terminals": np.ones(len(obs), np.float32)}


def point_mass(n: int = 2048, seed: int = 0) -> dict[str, np.ndarray]:
    """2-D point mass: the good action from position p is -p (straight to the origin); the data scatters
    around it, so rewards vary and the data's mean action is the good one."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(-0.7, 0.7, (n, 2))
    actions = np.clip(-pos + 0.2 * rng.normal(size=pos.shape), -1, 1)
    rewards = -np.sum((pos + actions) ** 2, axis=1)
    return one_step_data(pos, actions, rewards)


def tree_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def tree_max_diff(a, b) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64))))
               for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))


def empirical_expectile(x: np.ndarray, tau: float) -> float:
    """Root of sum_i |tau - 1(x_i < m)| (x_i - m) = 0 by bisection (the minimiser of the expectile loss)."""
    lo, hi = float(x.min()), float(x.max())
    for _ in range(100):
        m = 0.5 * (lo + hi)
        g = np.sum(np.where(x > m, tau, 1 - tau) * (x - m))
        lo, hi = (m, hi) if g > 0 else (lo, m)
    return 0.5 * (lo + hi)


# ------------------------------------------------------------------------------------------ learning


@pytest.mark.parametrize("name", ["iql", "bc", "diffusion_ql"])
def test_each_learner_reduces_its_loss_and_moves_towards_the_good_action(name):
    data = point_mass()
    overrides = SMALL_DQL if name == "diffusion_ql" else SMALL
    learner = learners.get_learner(name).create(0, 2, 2, learners.make_config(name, overrides))
    obs = jnp.asarray(data["observations"][:256])
    good = -data["observations"][:256]
    err_before = np.mean((np.asarray(learners.act(learner, obs, jax.random.PRNGKey(1))) - good) ** 2)
    learner, info = learners.train(learner, data, num_steps=800, batch_size=128, chunk=200)
    assert int(learner.step) == 800
    assert all(v.shape == (4,) for v in info.values())  # one mean per chunk
    losses = {"iql": ["critic/critic_loss"], "bc": ["actor/mse"],
              "diffusion_ql": ["actor/bc_loss"]}[name]
    for key in losses:
        assert info[key][-1] < 0.7 * info[key][0], (key, info[key])
    err_after = np.mean((np.asarray(learners.act(learner, obs, jax.random.PRNGKey(1))) - good) ** 2)
    assert err_after < 0.3 * err_before, (err_before, err_after)


def test_expectile_loss_minimiser_is_the_expectile():
    x = np.random.default_rng(0).exponential(size=400).astype(np.float32)
    grid = np.linspace(x.min(), x.max(), 4001, dtype=np.float32)
    for tau in (0.5, 0.7, 0.9):
        losses = jax.vmap(lambda m, tau=tau: expectile_loss(jnp.asarray(x) - m, tau).mean())(jnp.asarray(grid))
        assert abs(grid[int(jnp.argmin(losses))] - empirical_expectile(x, tau)) < 2e-3
    assert abs(empirical_expectile(x, 0.5) - x.mean()) < 1e-4  # tau = 0.5 is the mean


def test_iql_value_converges_to_the_empirical_expectile_of_q():
    """One state; eight actions with skewed rewards f(a); V must settle at the tau-expectile of Q over the data."""
    tau = 0.9
    rng = np.random.default_rng(0)
    levels = np.linspace(-0.9, 0.9, 8)
    actions = rng.choice(levels, size=(4096, 1))
    q_true = np.exp(2.0 * actions[:, 0])  # skewed: the expectile sits well above the mean
    obs = np.tile([[0.3, -0.2]], (4096, 1))
    data = one_step_data(obs, actions, q_true)
    cfg = learners.make_config("iql", {**SMALL, "expectile": tau, "critic_lr": 3e-3, "value_lr": 1e-3, "tau": 0.05})
    learner = learners.get_learner("iql").create(0, 2, 1, cfg)
    learner, _ = learners.train(learner, data, num_steps=3000, batch_size=256, chunk=1000)
    v = float(learner.value.apply_fn({"params": learner.value.params}, jnp.asarray(obs[:1]))[0])
    target = empirical_expectile(q_true, tau)
    spread = q_true.max() - q_true.min()
    assert abs(v - target) < 0.04 * spread, (v, target)
    assert abs(v - q_true.mean()) > 0.15 * spread  # and it is not just the mean


def test_iql_beats_bc_on_mixed_quality_data():
    """Half the data takes a = +0.5 (reward 1), half a = -0.5 (reward 0). BC averages; IQL must prefer +0.5."""
    rng = np.random.default_rng(1)
    n = 4096
    obs = rng.uniform(-1, 1, (n, 2))
    good = rng.random(n) < 0.5
    actions = np.where(good, 0.5, -0.5)[:, None] + 0.05 * rng.normal(size=(n, 1))
    data = one_step_data(obs, np.clip(actions, -1, 1), good.astype(np.float64))
    test_obs = jnp.asarray(rng.uniform(-1, 1, (512, 2)), jnp.float32)
    errors = {}
    for name in ("iql", "bc"):
        learner = learners.get_learner(name).create(0, 2, 1, learners.make_config(name, SMALL))
        learner, _ = learners.train(learner, data, num_steps=1500, batch_size=256, chunk=500)
        a = np.asarray(learners.act(learner, test_obs, jax.random.PRNGKey(0)))
        errors[name] = float(np.mean(np.abs(a - 0.5)))
    assert errors["iql"] < 0.5 * errors["bc"], errors
    assert errors["iql"] < 0.25, errors


# --------------------------------------------------------------------------------------- Diffusion-QL


def test_diffusion_ql_samples_inside_bounds_and_its_denoiser_learns_the_conditional_action():
    """eta = 0 is pure diffusion BC: the noise-prediction loss must fall and the reverse chain must then
    reproduce the state-dependent data action f(s); every action stays inside the (asymmetric) bounds."""
    low, high = np.array([-0.6, -1.0], np.float32), np.array([0.3, 1.0], np.float32)
    rng = np.random.default_rng(0)
    n = 4096

    def f(o: np.ndarray) -> np.ndarray:
        return np.stack([-0.2 + 0.3 * o[:, 0], 0.6 * o[:, 1]], axis=1)

    obs = rng.uniform(-1, 1, (n, 3))
    data = one_step_data(obs, f(obs) + 0.02 * rng.normal(size=(n, 2)), np.zeros(n))
    cfg = learners.make_config("diffusion_ql", {"hidden_dims": [64, 64], "eta": 0.0, "lr": 1e-3, "time_dim": 8,
                                                "num_action_samples": 8})
    learner = learners.get_learner("diffusion_ql").create(0, 3, 2, cfg, action_low=low, action_high=high)
    test_obs = rng.uniform(-1, 1, (512, 3)).astype(np.float32)
    untrained = np.asarray(learner.sample(learner.actor.params, jnp.asarray(test_obs), jax.random.PRNGKey(2)))
    assert np.all(untrained >= low) and np.all(untrained <= high) and untrained.std(axis=0).min() > 1e-3
    learner, info = learners.train(learner, data, num_steps=600, batch_size=256, chunk=200)
    assert info["actor/bc_loss"][-1] < 0.2 * info["actor/bc_loss"][0], info["actor/bc_loss"]
    samples = np.asarray(learner.sample(learner.actor.params, jnp.asarray(test_obs), jax.random.PRNGKey(2)))
    assert np.all(samples >= low) and np.all(samples <= high)
    err, err0 = np.abs(samples - f(test_obs)).mean(axis=0), np.abs(untrained - f(test_obs)).mean(axis=0)
    assert np.all(err < 0.05) and np.all(err < 0.2 * err0), (err, err0)
    acted = np.asarray(learners.act(learner, jnp.asarray(test_obs) * 10, jax.random.PRNGKey(3)))  # far off data
    assert np.all(acted >= low) and np.all(acted <= high)


def test_diffusion_ql_argmax_selection_picks_the_highest_q_candidate():
    """Reward a_0 + a_1 on uniform data: the Q term must move samples up, and argmax selection among
    candidates by Q must push the chosen actions further, towards the bound 2."""
    rng = np.random.default_rng(0)
    n = 2048
    obs = rng.uniform(-1, 1, (n, 2))
    actions = rng.uniform(-1, 1, (n, 2))
    data = one_step_data(obs, actions, actions.sum(axis=1))
    cfg = learners.make_config("diffusion_ql", SMALL_DQL)
    learner = learners.get_learner("diffusion_ql").create(0, 2, 2, cfg)
    learner, _ = learners.train(learner, data, num_steps=400, batch_size=128, chunk=200)
    test_obs = jnp.asarray(rng.uniform(-1, 1, (256, 2)), jnp.float32)
    plain = np.asarray(learner.sample(learner.actor.params, test_obs, jax.random.PRNGKey(0))).sum(axis=1)
    picker = learner.replace(config=dataclasses.replace(cfg, action_selection="argmax", num_action_samples=32))
    chosen = np.asarray(learners.act(picker, test_obs, jax.random.PRNGKey(0))).sum(axis=1)
    assert plain.mean() > 0.5, plain.mean()  # the Q term (eta = 1) already moved the policy off the data mean 0
    assert chosen.mean() > min(plain.mean() + 0.2, 1.9), (chosen.mean(), plain.mean())


# ------------------------------------------------------------------------------- training machinery


@pytest.mark.parametrize("name", ["iql", "diffusion_ql"])
def test_save_load_continue_is_bit_identical(name, tmp_path):
    cfg = learners.make_config(name, SMALL_DQL if name == "diffusion_ql" else SMALL)
    cls = learners.get_learner(name)
    data = point_mass(512)
    first, _ = learners.train(cls.create(3, 2, 2, cfg), data, num_steps=30, batch_size=64, chunk=30)
    straight, _ = learners.train(first, data, num_steps=20, batch_size=64, chunk=20)
    learners.save(first, tmp_path / "ckpt.msgpack")
    restored = learners.load(tmp_path / "ckpt.msgpack", cls.create(99, 2, 2, cfg))  # other seed: all state is read
    assert tree_equal(restored, first)
    resumed, _ = learners.train(restored, data, num_steps=20, batch_size=64, chunk=20)
    assert tree_equal(resumed, straight)
    assert int(resumed.step) == 50


def test_load_rejects_a_checkpoint_of_another_shape_or_kind(tmp_path):
    iql = learners.get_learner("iql").create(0, 2, 2, learners.make_config("iql", SMALL))
    learners.save(iql, tmp_path / "iql.msgpack")
    narrow = learners.get_learner("iql").create(0, 2, 2, learners.make_config("iql", {"hidden_dims": [16, 16]}))
    with pytest.raises(AilotInputError, match="shape"):
        learners.load(tmp_path / "iql.msgpack", narrow)
    with pytest.raises(AilotInputError, match="IQL"):
        bc = learners.get_learner("bc").create(0, 2, 2, learners.make_config("bc", SMALL))
        learners.load(tmp_path / "iql.msgpack", bc)
    (tmp_path / "junk.msgpack").write_bytes(b"not a checkpoint")
    with pytest.raises(AilotInputError, match="checkpoint"):
        learners.load(tmp_path / "junk.msgpack", iql)
    with pytest.raises(AilotInputError, match="does not exist"):
        learners.load(tmp_path / "missing.msgpack", iql)


@pytest.mark.parametrize("name", ["iql", "diffusion_ql"])
def test_train_chunk_matches_single_updates(name):
    overrides = SMALL_DQL if name == "diffusion_ql" else SMALL
    learner = learners.get_learner(name).create(5, 2, 2, learners.make_config(name, overrides))
    data = learners.base.prepare_data(learner, point_mass(512))
    chunked, info = learners.train(learner, data, num_steps=20, batch_size=64, chunk=20)
    looped, infos = learner, []
    for _ in range(20):
        looped, batch = learners.sample_batch(looped, data, 64)
        looped, step_info = looped.update(batch)
        infos.append(step_info)
    assert np.array_equal(np.asarray(chunked.rng), np.asarray(looped.rng))  # same batches were drawn
    assert int(chunked.step) == int(looped.step) == 20
    assert tree_max_diff(chunked, looped) < 1e-6
    for key, value in info.items():  # the chunk's info is the mean of the per-step infos
        np.testing.assert_allclose(value[0], np.mean([float(i[key]) for i in infos]), rtol=1e-4, atol=1e-5)


def test_train_runs_the_remainder_chunk():
    learner = learners.get_learner("bc").create(0, 2, 2, learners.make_config("bc", SMALL))
    learner, info = learners.train(learner, point_mass(256), num_steps=25, batch_size=16, chunk=10)
    assert int(learner.step) == 25
    assert info["actor/actor_loss"].shape == (3,)


def test_iql_act_is_the_clipped_policy_mean_and_sampling_is_noisy():
    learner = learners.get_learner("iql").create(0, 2, 2, learners.make_config("iql", SMALL), action_low=-0.1,
                                                 action_high=0.1)
    obs = jnp.asarray(np.random.default_rng(0).normal(size=(64, 2)) * 5, jnp.float32)
    mean, _ = learner.actor.apply_fn({"params": learner.actor.params}, obs)
    det = learners.act(learner, obs, jax.random.PRNGKey(0))
    np.testing.assert_allclose(det, np.clip(mean, -0.1, 0.1), atol=1e-6)
    sto = learners.act(learner, obs, jax.random.PRNGKey(0), deterministic=False)
    assert np.all(np.abs(np.asarray(sto)) <= 0.1 + 1e-7) and not np.allclose(sto, det)


# ----------------------------------------------------------------------------------- configs and errors


def test_family_presets_and_overrides():
    assert (learners.make_config("iql").expectile, learners.make_config("iql").temperature) == (0.7, 3.0)
    ant = learners.make_config("iql", None, task_family="antmaze")
    assert (ant.expectile, ant.temperature) == (0.9, 10.0)
    maze = learners.make_config("iql", None, task_family="maze2d")
    assert (maze.expectile, maze.temperature, maze.layer_norm) == (0.9, 1.0, True)  # measured: README, IQL decay
    assert not learners.make_config("iql").layer_norm and not ant.layer_norm  # the reference has none
    def layer_names(params) -> set[str]:
        return {jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_leaves_with_path(params)}

    for layer_norm in (False, True):
        iql = learners.get_learner("iql").create(0, 3, 2,
                                                 learners.make_config("iql", {**SMALL, "layer_norm": layer_norm}))
        for net in (iql.value, iql.critic):  # V and Q get LayerNorm, the policy never does
            assert any("LayerNorm" in n for n in layer_names(net.params)) == layer_norm
        assert not any("LayerNorm" in n for n in layer_names(iql.actor.params))
    assert learners.make_config("iql", {"max_steps": 1e5}).max_steps == 100_000  # YAML float -> int
    assert learners.make_config("iql", {"hidden_dims": [64, 64]}).hidden_dims == (64, 64)
    dql = learners.make_config("diffusion_ql")
    assert (dql.n_timesteps, dql.eta, dql.ema_decay, dql.num_action_samples) == (5, 1.0, 0.995, 50)
    assert not dql.max_q_backup and dql.action_selection == "softmax"
    hash(dql)  # static jit data must be hashable


def test_unknown_config_key_names_the_key_and_lists_valid_ones():
    with pytest.raises(AilotInputError) as e:
        learners.make_config("iql", {"expectle": 0.8})
    assert "expectle" in str(e.value) and "expectile" in str(e.value) and "temperature" in str(e.value)


@pytest.mark.parametrize("overrides", [{"expectile": 1.5}, {"hidden_dims": "256"}, {"actor_lr_decay": "yes"},
                                       {"max_steps": 2.5}, {"hidden_dims": [0]}])
def test_bad_config_values_are_refused(overrides):
    with pytest.raises(AilotInputError, match=f"iql.{next(iter(overrides))}"):
        learners.make_config("iql", overrides)


def test_unknown_learner_and_family_are_refused():
    with pytest.raises(AilotInputError) as e:
        learners.get_learner("sac")
    assert "sac" in str(e.value) and all(n in str(e.value) for n in ("iql", "bc", "diffusion_ql"))
    with pytest.raises(AilotInputError, match="task_family"):
        learners.make_config("iql", None, task_family="atari")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rewards_are_refused(bad):
    r = np.zeros(10, np.float32)
    r[7] = bad
    with pytest.raises(AilotInputError, match="index 7"):
        learners.check_rewards(r)
    with pytest.raises(AilotInputError):
        learners.scale_rewards(r, np.zeros(10), "locomotion")
    with pytest.raises(AilotInputError, match="1-D"):
        learners.check_rewards(np.zeros((10, 1)))


def test_training_data_of_the_wrong_shape_is_refused():
    learner = learners.get_learner("bc").create(0, 2, 2, learners.make_config("bc", SMALL))
    data = point_mass(64)
    with pytest.raises(AilotInputError, match="observations"):
        learners.train(learner, {**data, "observations": data["observations"][:, :1]}, 1, 8)
    with pytest.raises(AilotInputError, match="terminals"):
        learners.train(learner, {k: v for k, v in data.items() if k != "terminals"}, 1, 8)


# ------------------------------------------------------------------------------------ reward helpers


def test_scale_rewards_follows_iql_preprocessing():
    r = np.array([1.0, 2.0, 3.0, 4.0, 10.0, 20.0])
    ids = np.array([7, 7, 7, 7, 2, 2])  # episode returns 10 and 30 -> span 20, ids need not be contiguous
    np.testing.assert_allclose(learners.scale_rewards(r, ids, "locomotion"), r * 1000.0 / 20.0, rtol=1e-6)
    np.testing.assert_allclose(learners.scale_rewards(r, ids, "antmaze"), r - 1.0)
    np.testing.assert_allclose(learners.scale_rewards(r, ids, "none"), r)
    np.testing.assert_allclose(learners.scale_rewards(r, ids, "unit"), (r - 1.0) / 19.0, rtol=1e-6)
    zeros = np.zeros(6)  # BC's constant rewards: no division by a zero span
    np.testing.assert_array_equal(learners.scale_rewards(zeros, ids, "locomotion"), zeros)
    np.testing.assert_array_equal(learners.scale_rewards(zeros, ids, "unit"), zeros)
    with pytest.raises(AilotInputError, match="reward scaling"):
        learners.scale_rewards(r, ids, "mujoco")


def test_maze2d_iql_sees_the_same_rewards_whatever_the_labellers_scale():
    """IQL's policy step exp(temperature * A) depends on the reward scale, so on maze2d a 0/1 true reward and
    an AILOT reward in (0, alpha] are both brought to [0, 1]; Diffusion-QL (scale-free actor loss) is not."""
    assert learners.reward_scaling("iql", "maze2d") == "unit" == learners.reward_scaling("rllib_iql", "maze2d")
    assert learners.reward_scaling("diffusion_ql", "maze2d") == "none"
    assert [learners.reward_scaling("iql", f) for f in ("locomotion", "antmaze")] == ["locomotion", "antmaze"]
    rng = np.random.default_rng(0)
    r, ids = rng.uniform(0.0, 1.0, 50), np.repeat(np.arange(5), 10)
    mode = learners.reward_scaling("iql", "maze2d")
    np.testing.assert_allclose(learners.scale_rewards(5.0 * r + 0.2, ids, mode), learners.scale_rewards(r, ids, mode),
                               atol=1e-6)
    cfg = learners.make_config("iql", {}, task_family="maze2d")
    assert (cfg.expectile, cfg.temperature) == (0.9, 1.0)
    with pytest.raises(AilotInputError, match="task_family"):
        learners.reward_scaling("iql", "maze3d")


def test_value_bound_is_the_largest_discounted_return():
    assert learners.value_bound(np.array([0.0, 0.25, 1.0]), 0.99) == pytest.approx(100.0)
    assert learners.value_bound(np.array([0.0, 5.0]), 0.9) == pytest.approx(50.0)
    assert learners.value_bound(np.array([-1.0, -0.5]), 0.99) == 0.0  # an episode can end at once: 0 is reachable
    assert learners.value_bound(np.array([1.0]), None) is None and learners.value_bound(np.array([1.0]), 1.0) is None


def test_overestimates_flags_only_value_maxima_above_the_bound():
    info = {"value/v_max": 100.5, "critic/q_max": 150.0, "value/v_mean": 500.0, "actor/actor_loss": 1e9}
    # v_max is within 1 % of the bound (rounding); v_mean and the actor loss are no value maxima
    assert learners.overestimates(info, 100.0) == {"critic/q_max": 150.0}
    assert learners.overestimates(info, 200.0) == {}
    assert learners.overestimates(info, None) == {}
    # zero rewards (bound 0): a fresh critic's small outputs pass, a drift of whole returns does not
    assert learners.overestimates({"value/v_max": 0.5}, 0.0) == {}
    assert learners.overestimates({"value/v_max": 2.0}, 0.0) == {"value/v_max": 2.0}


@pytest.mark.parametrize("name", ["iql", "diffusion_ql"])
def test_critics_report_their_batch_maxima(name):
    data = point_mass(512)
    cfg = learners.make_config(name, SMALL if name == "iql" else SMALL_DQL)
    learner = learners.get_learner(name).create(0, 2, 2, cfg)
    _, info = learners.train(learner, data, num_steps=20, batch_size=64, chunk=20)
    assert info["critic/q_max"][-1] > info["critic/q_mean"][-1]
    if name == "iql":
        assert info["value/v_max"][-1] > info["value/v_mean"][-1]


def test_check_action_dims_against_a_box_space():
    gym = pytest.importorskip("gymnasium")
    space = gym.spaces.Box(-2.0, 2.0, (3,), np.float32)
    low, high = learners.check_action_dims(space, 3)
    np.testing.assert_array_equal(low, -2 * np.ones(3))
    learner = learners.get_learner("bc").create(0, 2, 3, learners.make_config("bc", SMALL), low, high)
    assert np.all(np.asarray(learners.act(learner, jnp.ones((4, 2)) * 100, jax.random.PRNGKey(0))) <= 2.0)
    with pytest.raises(AilotInputError, match="dimension 2"):
        learners.check_action_dims(space, 2)
    with pytest.raises(AilotInputError, match="continuous"):
        learners.check_action_dims(gym.spaces.Discrete(3), 3)
