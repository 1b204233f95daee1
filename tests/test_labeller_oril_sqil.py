"""ORIL (discriminator reward) and SQIL (1 on expert, 0 on agent transitions) on the tiny generated UMaze."""

from __future__ import annotations

import numpy as np
import pytest

from ailot.data.episodes import Episodes
from ailot.errors import AilotInputError
from ailot.labellers import LABELLERS, get, label
from ailot.labellers.oril import ORIL, train_discriminator
from ailot.labellers.sqil import SQIL

# small and quick: one lax.scan chunk of updates (one compilation per input width and loss)
SMALL = {"hidden": (64, 64), "batch_size": 64, "steps": 1000}
BLOCK = 10  # the expert episode is cut into blocks of this many steps: even blocks train, odd ones are held out


@pytest.fixture(scope="module")
def umaze(pointmaze_umaze):
    from ailot.data.loading import load_dataset

    agent_id, expert_id = pointmaze_umaze
    return load_dataset(agent_id), load_dataset(expert_id)


def _blocks(expert: Episodes, parity: int) -> Episodes:
    """Every other block of the best expert episode, each block an episode of its own (so (s, s') pairs stay
    within a block); parity 0 and 1 interleave along the same path."""
    best = int(np.argmax(expert.returns))
    obs, act = expert.observations[best], expert.actions[best]
    starts = [s for s in range(0, len(act), BLOCK) if (s // BLOCK) % 2 == parity]
    cut = lambda x: [x[s:s + BLOCK] for s in starts]  # noqa: E731
    return Episodes([obs[s:s + BLOCK + 1] for s in starts], cut(act), cut(expert.rewards[best]),
                    cut(expert.terminations[best]), cut(expert.truncations[best]), "expert-blocks")


def _separation(held: np.ndarray, agent: np.ndarray) -> tuple[float, float]:
    """(mean held-out expert reward - mean agent reward, P(held-out expert reward > agent reward))."""
    return float(held.mean() - agent.mean()), float((held[:, None] > agent[None, :]).mean())


@pytest.mark.parametrize("kind", ["state", "state_next"])
def test_oril_scores_held_out_expert_states_above_agent_states(umaze, kind):
    agent, expert = umaze
    train, held = _blocks(expert, 0), _blocks(expert, 1)
    setting = {**SMALL, "input": kind, "n_experts": train.num_episodes}  # every training block in the expert set
    disc, info = train_discriminator(setting, agent, train, seed=0)
    gap, auc = _separation(disc.rewards(held.observations), disc.rewards(agent.observations))
    assert gap > 0.75 and auc > 0.75, (gap, auc, info)
    # the bar is one training passes and an untrained discriminator does not (a tiny lr: same compiled updates)
    untrained, _ = train_discriminator({**setting, "lr": 1e-12}, agent, train, seed=0)
    gap0, auc0 = _separation(untrained.rewards(held.observations), untrained.rewards(agent.observations))
    assert not (gap0 > 0.75 and auc0 > 0.75), (gap0, auc0)


def test_oril_is_deterministic_under_its_seed(umaze):
    agent, expert = umaze
    setting = {"labeller": "oril", **SMALL}
    a = label(setting, agent, expert, seed=3)
    b = label(setting, agent, expert, seed=3)
    c = label(setting, agent, expert, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # seeded: the seed is part of the cache key, so rewards of two seeds never share a cache entry
    keys = {ORIL.cache_key(setting, agent, expert, None, s) for s in (3, 4)}
    assert len(keys) == 2


def test_oril_input_and_pu_settings_change_the_rewards(umaze):
    agent, expert = umaze
    base = {"labeller": "oril", **SMALL}
    plain = label(base, agent, expert)
    pairs = label({**base, "input": "state_next"}, agent, expert)
    pu = label({**base, "pu": True}, agent, expert)
    pu_eta = label({**base, "pu": True, "eta": 0.2}, agent, expert)
    for other in (pairs, pu, pu_eta):
        assert other.shape == plain.shape and np.isfinite(other).all()
        assert np.abs(other - plain).mean() > 0.05
    assert np.abs(pu - pu_eta).mean() > 0.05
    # reward "sigmoid" is D itself, the same discriminator's output through the sigmoid
    prob = label({**base, "reward": "sigmoid"}, agent, expert)
    np.testing.assert_allclose(prob, 1.0 / (1.0 + np.exp(-plain.astype(np.float64))), rtol=1e-5, atol=1e-6)
    # and each is a different cache entry
    assert len({ORIL.cache_key(s, agent, expert, None, 0) for s in (
        base, {**base, "input": "state_next"}, {**base, "pu": True}, {**base, "pu": True, "eta": 0.2})}) == 4


def test_oril_divergence_names_the_labeller(umaze):
    agent, expert = umaze
    with pytest.raises(AilotInputError, match="'oril'.*diverged.*lower lr"):
        label({"labeller": "oril", **SMALL, "lr": 1e30}, agent, expert)


def test_sqil_gives_zero_to_agent_and_one_to_expert_transitions(umaze):
    agent, expert = umaze
    rewards = label({"labeller": "sqil"}, agent, expert)
    assert rewards.shape == (agent.num_transitions,) and rewards.dtype == np.float32
    assert not rewards.any()

    best = int(np.argmax(expert.returns))
    extra = SQIL.extra_transitions({"n_experts": 1}, expert)
    t = len(expert.actions[best])
    assert set(extra) == {"observations", "actions", "rewards", "next_observations", "terminals"}
    assert extra["observations"].shape == extra["next_observations"].shape == (t, expert.obs_dim)
    assert extra["actions"].shape == (t, expert.action_dim)
    assert extra["rewards"].shape == extra["terminals"].shape == (t,)
    np.testing.assert_array_equal(extra["rewards"], 1.0)
    np.testing.assert_array_equal(extra["actions"], expert.actions[best])
    np.testing.assert_array_equal(extra["observations"], expert.observations[best][:-1])
    np.testing.assert_array_equal(extra["next_observations"], expert.observations[best][1:])
    np.testing.assert_array_equal(extra["terminals"], expert.terminations[best].astype(np.float32))
    assert all(v.dtype == np.float32 for v in extra.values())
    # n_experts picks the top episodes by return
    top2 = np.argsort(-expert.returns, kind="stable")[:2]
    two = SQIL.extra_transitions({"n_experts": 2}, expert)
    np.testing.assert_array_equal(two["actions"], np.concatenate([expert.actions[i] for i in top2]))


def test_registry_declares_what_each_reads(umaze):
    assert LABELLERS["oril"] is ORIL and LABELLERS["sqil"] is SQIL
    assert get("oril").seeded and not get("oril").uses_expert_actions and get("oril").uses_expert
    assert get("sqil").uses_expert_actions and get("sqil").adds_expert_transitions and not get("sqil").seeded
    assert not getattr(get("oril"), "adds_expert_transitions", False)
    assert ORIL.defaults()["n_experts"] == SQIL.defaults()["n_experts"] == 1
    for cls in (ORIL, SQIL):  # every default passes its own check
        for key, spec in cls.settings.items():
            assert spec.validate(spec.default, f"{cls.name}.{key}") == spec.default
    with pytest.raises(AilotInputError):
        ORIL.settings["input"].validate("action", "oril.input")
    with pytest.raises(AilotInputError):
        ORIL.settings["eta"].validate(1.5, "oril.eta")
    with pytest.raises(AilotInputError, match="expert actions"):
        SQIL.check_inputs({"labeller": "sqil"}, umaze[1], None, expert_actions=False)
