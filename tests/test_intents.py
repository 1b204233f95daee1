"""ICVF pretraining of psi (ailot.intents): sampling, loss, training, encoder I/O, intent geometry."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ailot.errors import AilotInputError
from ailot.intents import (
    GOAL_CURRENT,
    GOAL_RANDOM,
    GOAL_SAME_TRAJ,
    ICVFConfig,
    IntentEncoder,
    ensemble_values,
    icvf_loss,
    init_params,
    intent_geometry,
    prepare_data,
    pretrain,
    sample_batch,
    sample_goal_indices,
    train_icvf,
)


def umaze_point_mass(n_eps: int = 60, length: int = 120, seed: int = 0, dt: float = 0.1) -> list[np.ndarray]:
    """PointMaze-UMaze-like episodes: a point moving along a U-shaped corridor, obs [x, y, vx, vy] [T, 4].

    Speed varies smoothly, the point turns around at the U's dead ends, and drifts a little sideways.
    """
    rng = np.random.default_rng(seed)
    corners = np.array([[-1.0, 1.0], [1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    seg = np.diff(corners, axis=0)
    seg_len = np.linalg.norm(seg, axis=1)
    cum = np.concatenate([[0.0], np.cumsum(seg_len)])
    total = cum[-1]

    def centre(a: np.ndarray) -> np.ndarray:
        i = np.clip(np.searchsorted(cum, a, side="right") - 1, 0, len(seg) - 1)
        return corners[i] + seg[i] / seg_len[i, None] * (a - cum[i])[:, None]

    episodes = []
    for _ in range(n_eps):
        direction, speed = rng.choice([-1.0, 1.0]), rng.uniform(0.5, 1.0)
        arc = np.empty(length)
        arc[0] = rng.uniform(0, total)
        for t in range(1, length):
            speed = np.clip(speed + 0.05 * rng.normal(), 0.35, 1.2)
            nxt = arc[t - 1] + direction * speed * dt
            if not 0.0 <= nxt <= total:  # dead end: turn around
                direction = -direction
                nxt = arc[t - 1] + direction * speed * dt
            arc[t] = nxt
        pos = centre(arc) + np.cumsum(rng.normal(0, 0.01, (length, 2)), 0).clip(-0.15, 0.15)
        vel = np.gradient(pos, dt, axis=0)
        episodes.append(np.concatenate([pos, vel], 1).astype(np.float32))
    return episodes


SMALL = {"hidden_dims": (64, 64), "batch_size": 256, "num_steps": 4000, "chunk": 500, "discount": 0.9}


@pytest.fixture(scope="module")
def episodes() -> list[np.ndarray]:
    return umaze_point_mass()


@pytest.fixture(scope="module")
def trained(episodes):
    """One small ICVF run shared by the tests below (state, mean, std, history, config)."""
    config = ICVFConfig(**SMALL)
    state, mean, std, history = train_icvf(episodes, config, seed=0, progress=False)
    return state, mean, std, history, config


@pytest.fixture(scope="module")
def encoder(trained) -> IntentEncoder:
    state, mean, std, _, config = trained
    return IntentEncoder(jax.device_get(state.params["psi"]), mean, std, config)


# ----------------------------------------------------------------------------------------------- config


def test_unknown_config_key_names_the_key():
    with pytest.raises(AilotInputError, match="hiden_dims"):
        ICVFConfig.from_dict({"hiden_dims": [64, 64]})


def test_config_validation_and_round_trip():
    with pytest.raises(AilotInputError, match="sum to 1"):
        ICVFConfig.from_dict({"p_random_goal": 0.5})
    with pytest.raises(AilotInputError, match="expectile"):
        ICVFConfig(expectile=1.5)
    cfg = ICVFConfig.from_dict({"hidden_dims": [32, 16], "expectile": 0.8})
    assert cfg.hidden_dims == (32, 16) and cfg.embed_dim == 16
    assert ICVFConfig.from_dict(cfg.to_dict()) == cfg
    assert hash(ICVFConfig(hidden_dims=[8, 8])) == hash(ICVFConfig(hidden_dims=(8, 8)))  # jit static arg


# ----------------------------------------------------------------------------------------------- sampling


def _index_dataset(lengths: list[int]):
    """Episodes whose 1-D observation is the flat state index, so sampled observations reveal indices."""
    trajs, start = [], 0
    for n in lengths:
        trajs.append(np.arange(start, start + n, dtype=np.float32)[:, None])
        start += n
    episode = np.repeat(np.arange(len(lengths)), lengths)
    data = prepare_data(trajs, np.zeros(1, np.float32), np.ones(1, np.float32))
    return data, episode


def test_goal_sampling_proportions_and_episode_bounds():
    lengths = [1, 5, 40, 2, 300, 17]
    data, episode = _index_dataset(lengths)
    last = np.asarray(data.last)
    n = 200_000
    idx = jax.random.choice(jax.random.PRNGKey(1), data.state_idx, (n,))
    goal, kind = jax.jit(sample_goal_indices, static_argnums=(3, 4, 5))(
        jax.random.PRNGKey(2), idx, data.last, int(data.obs.shape[0]), 0.5, 0.2)
    idx, goal, kind = map(np.asarray, (idx, goal, kind))

    # Proportions of the three goal kinds (binomial sd ~0.001 at n = 2e5).
    assert abs((kind == GOAL_RANDOM).mean() - 0.3) < 0.006
    assert abs((kind == GOAL_SAME_TRAJ).mean() - 0.5) < 0.006
    assert abs((kind == GOAL_CURRENT).mean() - 0.2) < 0.006
    # Current goals are the state; same-trajectory goals are never before it nor past its episode's end.
    assert np.all(goal[kind == GOAL_CURRENT] == idx[kind == GOAL_CURRENT])
    traj = kind == GOAL_SAME_TRAJ
    assert np.all(goal[traj] >= idx[traj]) and np.all(goal[traj] <= last[idx[traj]])
    assert np.all(episode[goal[traj]] == episode[idx[traj]])
    assert np.any(goal[traj] == last[idx[traj]])  # the episode's last state is reachable as a goal
    # Same-trajectory offsets are uniform on [0, remaining]: mean fraction 1/2.
    remaining = last[idx[traj]] - idx[traj]
    frac = (goal[traj] - idx[traj])[remaining > 20] / remaining[remaining > 20]
    assert abs(frac.mean() - 0.5) < 0.01
    # Random goals cover the whole dataset uniformly (mean index (M - 1) / 2), across episodes.
    m = data.obs.shape[0]
    assert abs(goal[kind == GOAL_RANDOM].mean() - (m - 1) / 2) < 0.02 * m
    # States always have a successor in their episode: the single-state episode 0 is never sampled.
    assert set(np.asarray(data.state_idx)) == {i for i in range(m) if i < last[i]}


def test_batch_rewards_masks_and_successors():
    data, episode = _index_dataset([3, 50, 8, 120])
    cfg = ICVFConfig(batch_size=50_000)
    batch = jax.jit(sample_batch, static_argnums=2)(jax.random.PRNGKey(0), data, cfg)
    s, s2, g, z = (np.asarray(batch[k][:, 0]).astype(int) for k in ("obs", "next_obs", "goals", "intents"))
    assert np.all(s2 == s + 1) and np.all(episode[s2] == episode[s])
    np.testing.assert_array_equal(batch["rewards"], np.where(g == s, 0.0, -1.0))
    np.testing.assert_array_equal(batch["masks"], np.where(g == s, 0.0, 1.0))
    np.testing.assert_array_equal(batch["intent_rewards"], np.where(z == s, 0.0, -1.0))
    np.testing.assert_array_equal(batch["intent_masks"], np.where(z == s, 0.0, 1.0))
    # Half the outcomes are the intent itself (p_goal_is_intent 0.5), plus chance coincidences (>= 0.2^2).
    same = (g == z).mean()
    assert 0.5 + 0.5 * 0.04 - 0.01 < same < 0.5 + 0.5 * 0.3
    # Intents follow the goal mixture: ~20% current (plus rare coincidences of the other kinds).
    assert 0.19 < (z == s).mean() < 0.26
    same_traj_only = jax.jit(sample_batch, static_argnums=2)(
        jax.random.PRNGKey(0), data, ICVFConfig(batch_size=20_000, intent_same_trajectory=True))
    s, z = (np.asarray(same_traj_only[k][:, 0]).astype(int) for k in ("obs", "intents"))
    assert np.all(z >= s) and np.all(episode[z] == episode[s])


# ----------------------------------------------------------------------------------------------- loss


def test_loss_at_the_target_is_the_weighted_value_squared():
    """All outcomes = the state: reward 0, no bootstrap, so each head regresses V(s, s, z) onto 0."""
    cfg = ICVFConfig(hidden_dims=(16, 16), expectile=0.9)
    params = init_params(jax.random.PRNGKey(0), cfg, obs_dim=3)
    target = jax.tree.map(lambda p: p * 1.1, params)  # a distinct target network
    x = jax.random.normal(jax.random.PRNGKey(1), (64, 3))
    z = jax.random.normal(jax.random.PRNGKey(2), (64, 3))
    zeros, ones = jnp.zeros(64), jnp.ones(64)
    batch = {"obs": x, "next_obs": x + 0.1, "goals": x, "intents": z, "rewards": zeros, "masks": zeros,
             "intent_rewards": -ones, "intent_masks": ones}
    loss, info = icvf_loss(params, target, batch, cfg)

    v = ensemble_values(params, cfg, x, x, z)  # [E, B]
    tv_next = ensemble_values(target, cfg, x + 0.1, z, z)
    adv = -1.0 + 0.9 * tv_next.min(0) * 0.99 / 0.9 - ensemble_values(target, cfg, x, z, z).mean(0)
    weight = np.where(adv >= 0, 0.9, 0.1)
    expected = float(np.sum(np.mean(weight * np.asarray(v) ** 2, axis=1)))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    np.testing.assert_allclose(float(info["adv_mean"]), adv.mean(), rtol=1e-5)
    # The expectile weight needs no gradient: d loss / d target params is never taken, and the online
    # gradient equals that of the plain weighted regression.
    g = jax.grad(lambda p: icvf_loss(p, target, batch, cfg)[0])(params)
    g_ref = jax.grad(lambda p: jnp.sum(jnp.mean(weight * ensemble_values(p, cfg, x, x, z) ** 2, axis=1)))(params)
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_ref), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


# ----------------------------------------------------------------------------------------------- training


def test_training_fits_targets_and_values_learn_temporal_distance(trained, episodes):
    state, mean, std, history, config = trained
    loss = history["value_loss"].to_numpy()
    assert np.all(np.isfinite(loss)) and len(loss) == config.num_steps // config.chunk
    # The TD loss history is not monotone (its scale grows with |V| as values move from 0 toward
    # -1/(1 - gamma)), so "the loss decreases" is measured against fixed targets: on fresh batches, the
    # trained heads fit the final target network far better than the initial heads do.
    data = prepare_data(episodes, mean, std)
    init = init_params(jax.random.PRNGKey(123), config, obs_dim=4)
    trained_loss, init_loss = 0.0, 0.0
    for i in range(4):
        batch = sample_batch(jax.random.PRNGKey(1000 + i), data, config)
        trained_loss += float(icvf_loss(state.params, state.target_params, batch, config)[0])
        init_loss += float(icvf_loss(init, state.target_params, batch, config)[0])
    assert trained_loss < 0.1 * init_loss, (trained_loss, init_loss)
    # V(s_t, s_{t+k}, z = s_{t+k}) is about minus the discounted steps to reach s_{t+k}: it falls with k.
    obs = (np.stack(episodes) - mean) / std  # [N, T, 4], all episodes have the same length here
    ks = [0, 5, 15, 40]
    values = []
    for k in ks:
        s, g = obs[:, : obs.shape[1] - 40].reshape(-1, 4), obs[:, k: k + obs.shape[1] - 40].reshape(-1, 4)
        values.append(float(ensemble_values(state.params, config, s, g, g).mean()))
    print("V(s_t, s_t+k, s_t+k) for k", ks, values)
    assert values[0] > -1.0  # reaching the state itself costs ~nothing
    assert all(a > b + 0.3 for a, b in itertools.pairwise(values)), values
    assert values[-1] < -4.0  # 40 steps away: towards -10 (1 - 0.9^40 = 0.985)


def test_pretrain_returns_psi_only_and_history():
    eps = umaze_point_mass(n_eps=4, length=30, seed=3)
    cfg = ICVFConfig(hidden_dims=(8, 8), num_steps=30, chunk=20, batch_size=32)
    enc, hist = pretrain(eps, cfg, seed=0, progress=False)
    assert list(hist.index) == [20, 30]  # a shorter last chunk
    assert set(enc.params) == {"Dense_0", "Dense_1"}
    assert enc.params["Dense_0"]["kernel"].shape == (2, 4, 8)  # ensemble axis kept, averaged in embed
    assert enc.embed(eps[0]).shape == (30, 8)
    padded = np.zeros((4, 40, 4), np.float32)
    for i, e in enumerate(eps):
        padded[i, :30] = e
    enc2, _ = pretrain(padded, cfg, seed=0, progress=False, lengths=np.full(4, 30))
    np.testing.assert_array_equal(enc2.embed(eps[1]), enc.embed(eps[1]))  # padding is ignored; seeded
    with pytest.raises(AilotInputError, match="empty episode"):
        pretrain([eps[0], eps[0][:0]], cfg, seed=0, progress=False)
    with pytest.raises(AilotInputError, match="NaN"):
        pretrain([np.full((5, 4), np.nan, np.float32)], cfg, seed=0, progress=False)


# ----------------------------------------------------------------------------------------------- encoder


def test_embed_batches_and_matches_pure_fn(encoder, episodes):
    obs = np.stack(episodes[:5])  # [5, 120, 4]
    full = encoder.embed(obs)
    assert full.shape == (5, 120, 64) and full.dtype == np.float32
    np.testing.assert_allclose(encoder.embed(obs, batch_size=37), full, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encoder.embed(obs[2, 7]), full[2, 7], rtol=1e-5, atol=1e-6)  # a single state
    pure = jax.jit(encoder.embed_fn())(encoder.embed_params, jnp.asarray(obs))
    np.testing.assert_allclose(np.asarray(pure), full, rtol=1e-5, atol=1e-6)
    # It really is psi of the normalised state averaged over heads (not e.g. one head, or raw input).
    x = (obs[0, :3] - encoder.obs_mean) / encoder.obs_std
    heads = []
    for e in range(encoder.config.ensemble):
        h = x
        for layer in ("Dense_0", "Dense_1"):
            p = encoder.params[layer]
            h = np.maximum(h @ p["kernel"][e] + p["bias"][e], 0.0)
        heads.append(h)
    np.testing.assert_allclose(full[0, :3], np.mean(heads, 0), rtol=1e-4, atol=1e-5)
    with pytest.raises(AilotInputError, match="observation dim"):
        encoder.embed(np.zeros((3, 5), np.float32))


def test_save_load_identical_and_hash(encoder, episodes, tmp_path):
    encoder.save(tmp_path / "enc")
    assert not list((tmp_path / "enc").glob("*.pkl"))
    loaded = IntentEncoder.load(tmp_path / "enc")
    obs = np.concatenate(episodes[:3])
    np.testing.assert_array_equal(loaded.embed(obs), encoder.embed(obs))
    np.testing.assert_array_equal(loaded.obs_std, encoder.obs_std)
    assert loaded.config == encoder.config
    assert loaded.content_hash() == encoder.content_hash()
    bumped = jax.tree.map(lambda p: p, encoder.params)
    bumped["Dense_1"]["bias"] = bumped["Dense_1"]["bias"] + np.float32(1e-6)
    assert IntentEncoder(bumped, encoder.obs_mean, encoder.obs_std, encoder.config).content_hash() \
        != encoder.content_hash()
    assert IntentEncoder(encoder.params, encoder.obs_mean, encoder.obs_std * 2, encoder.config).content_hash() \
        != encoder.content_hash()
    with pytest.raises(AilotInputError, match="missing"):
        IntentEncoder.load(tmp_path / "nothing")


# ----------------------------------------------------------------------------------------------- geometry


def test_intent_geometry_exact_on_known_curves():
    # Two episodes moving at constant speeds 1 and 2 along a line, far apart: raw ||.||^2 = c^2 k^2, and
    # pairs never straddle the episode boundary (that jump would add ~1e6).
    a = np.arange(30, dtype=np.float32)[:, None] * np.array([[1.0, 0.0]], np.float32)
    b = 1000.0 + np.arange(20, dtype=np.float32)[:, None] * np.array([[0.0, 2.0]], np.float32)

    def staircase(x: np.ndarray) -> np.ndarray:
        """e(t) = first t unit vectors summed: ||e(t + k) - e(t)||^2 = k exactly (a perfectly linear psi)."""
        t = np.where(x[:, 0] < 500, x[:, 0], (x[:, 1] - 1000.0) / 2.0).round().astype(int)
        return (np.arange(64)[None, :] < t[:, None]).astype(np.float32)

    df = intent_geometry([a, b], staircase, max_k=25)
    raw = df[df.space == "raw"].set_index("k")
    assert list(raw.index) == list(range(1, 26))
    ks = np.arange(1, 26.0)
    n_a, n_b = np.maximum(30 - ks, 0), np.maximum(20 - ks, 0)
    expected = (n_a * 1.0 + n_b * 4.0) * ks**2 / (n_a + n_b)
    np.testing.assert_allclose(raw.mean_sq_dist, expected, rtol=1e-9)
    np.testing.assert_array_equal(raw.n_pairs, n_a + n_b)
    fit = np.polyval(np.polyfit(ks, expected, 1), ks)
    np.testing.assert_allclose(df.attrs["r2"]["raw"], 1 - np.sum((expected - fit) ** 2)
                               / np.sum((expected - expected.mean()) ** 2), rtol=1e-9)
    assert df.attrs["r2"]["raw"] < 0.97  # quadratic growth is not a line
    psi = df[df.space == "psi"]
    np.testing.assert_allclose(psi.mean_sq_dist, psi.k.astype(float), rtol=1e-12)
    assert df.attrs["r2"]["psi"] == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(AilotInputError):
        intent_geometry([a[:2]], None)


def test_psi_distance_grows_with_k(encoder, episodes):
    """AILOT Fig. 8 check, part that holds on this budget: psi distance grows steadily with k."""
    df = intent_geometry(episodes, encoder.embed, max_k=50)
    psi = df[df.space == "psi"].mean_sq_dist.to_numpy()
    assert np.all(np.diff(psi[:20]) > 0)
    assert psi[19] > 5 * psi[1]  # not a flat (collapsed) embedding


@pytest.fixture(scope="module")
def smoke_umaze_states(pointmaze_umaze) -> list[np.ndarray]:
    """The README smoke sweep's agent data (30k generated UMaze transitions that pause at their targets); the
    expert settings match the session's tiny pair, so its expert dataset is reused."""
    from ailot.data.generate import generate_pointmaze
    from ailot.data.loading import load_minari

    agent_id, _ = generate_pointmaze(maze="umaze", agent_transitions=30_000, expert_episodes=3, seed=0,
                                     reference_episodes=5, max_dwell=50, progress=False)
    return load_minari(agent_id).states()


def test_psi_distance_vs_k_more_linear_than_raw_on_generated_pointmaze(smoke_umaze_states):
    """AILOT Fig. 8 on generated PointMaze, as far as it holds: ||psi(s_t+k) - psi(s_t)||^2 is closer to linear in
    k than the raw-state distance once k spans a UMaze crossing (~100 steps). Neither is linear there: on this
    wandering agent data both peak near k = 80 and fall (results/figures/smoke/intent_distance_vs_k.png); raw
    falls further. psi trained as in smoke.yaml.

    Measured (encoder seeds 0/1/2): R^2 of a line through k = 1..K, psi vs raw: K=25 0.985 vs 0.978; K=50 0.994 /
    0.994 / 0.993 vs 0.995 (both near-linear: the one horizon where raw is ahead); K=100 0.85 / 0.84 / 0.87 vs
    0.82; K=150 0.53 / 0.51 / 0.67 vs 0.32.
    """
    encoder, history = pretrain(smoke_umaze_states, ICVFConfig(hidden_dims=(64, 64), num_steps=3000, chunk=500),
                                seed=0, progress=False)
    assert history["value_loss"].iloc[-1] < history["value_loss"].iloc[0]
    df = intent_geometry(smoke_umaze_states, encoder.embed, max_k=150)
    by_k = df.attrs["r2_by_horizon"]
    assert sorted(by_k) == [25, 50, 100, 150] and by_k[150] == df.attrs["r2"]
    assert by_k[100]["psi"] > by_k[100]["raw"], by_k
    assert by_k[150]["psi"] > by_k[150]["raw"] + 0.1, by_k
    raw = df[df.space == "raw"].set_index("k").mean_sq_dist
    assert raw.loc[150] < 1.5 * raw.loc[75]  # raw distance saturates: doubling k adds less than half


def test_pretrain_on_generated_pointmaze(pointmaze_umaze):
    """End to end on the data layer's generated PointMaze UMaze dataset (tests/conftest.py fixture)."""
    from ailot.data.loading import load_minari

    states = load_minari(pointmaze_umaze[0]).states()
    cfg = ICVFConfig(hidden_dims=(32, 32), num_steps=1000, chunk=500, batch_size=128)
    enc, hist = pretrain(states, cfg, seed=0, progress=False)
    assert np.isfinite(hist["value_loss"]).all() and hist["v_gz"].iloc[-1] < -0.5  # values moved off 0
    emb = enc.embed(np.concatenate(states))
    assert emb.shape == (sum(len(s) for s in states), 32) and np.isfinite(emb).all()
    df = intent_geometry(states, enc.embed, max_k=20)
    print("generated PointMaze R^2:", df.attrs["r2"])
    assert np.isfinite(list(df.attrs["r2"].values())).all()
