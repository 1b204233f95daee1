"""SEABO (nearest-neighbour reward) and CLUE (calibrated CVAE latent reward): their reward shapes, their modes,
CLUE's calibration and seeding, the registry path and the errors that name them."""

from __future__ import annotations

import numpy as np
import pytest

from ailot.data.episodes import Episodes
from ailot.data.loading import load_dataset
from ailot.errors import AilotInputError
from ailot.labellers import LABELLERS, get, label
from ailot.labellers.base import Labeller
from ailot.labellers.seabo import SEABO

# CLUE small enough for a test: one compile per config, a few seconds of training on a loaded CPU
TINY_CLUE = {"labeller": "clue", "steps": 400, "hidden_dims": [64, 64], "latent_dim": 4, "batch_size": 128}


def episodes(obs: list[np.ndarray], act: list[np.ndarray], name: str = "synthetic") -> Episodes:
    return Episodes(observations=obs, actions=act, rewards=[np.zeros(len(a)) for a in act],
                    terminations=[np.zeros(len(a), bool) for a in act],
                    truncations=[np.zeros(len(a), bool) for a in act], dataset_id=name)


@pytest.fixture(scope="module")
def umaze(pointmaze_umaze) -> tuple[Episodes, Episodes]:
    agent_id, expert_id = pointmaze_umaze
    return load_dataset(agent_id), load_dataset(expert_id)


@pytest.fixture(scope="module")
def clue_runs(umaze) -> dict[str, tuple[np.ndarray, dict]]:
    """CLUE rewards and infos on the tiny UMaze: calibrated at seeds 0 (twice) and 1, uncalibrated at seed 0."""
    agent, expert = umaze
    runs = {}
    for key, seed, weight in (("a", 0, 1.0), ("a_again", 0, 1.0), ("b", 1, 1.0), ("plain", 0, 0.0)):
        runs[key] = label({**TINY_CLUE, "calibration_weight": weight}, agent, expert, seed=seed, return_info=True)
    return runs


# ------------------------------------------------------------------------------------------------- SEABO


def test_seabo_reward_is_scale_at_an_expert_transition_and_falls_with_distance():
    rng = np.random.default_rng(0)
    e_obs, e_act = 10 * rng.normal(size=(6, 3)), rng.normal(size=(5, 2))  # transitions far apart
    expert = episodes([e_obs], [e_act], "expert")
    # agent episode i: expert transition 2 with its action moved by offsets[i] in both components, so the
    # distance to the expert set is offsets[i] * sqrt(2) (offset 0: an exact copy of the expert transition)
    offsets = np.array([0.0, 0.1, 0.3, 0.7, 1.5, 3.0])
    agent = episodes([e_obs[2:4]] * len(offsets), [e_act[2:3] + o for o in offsets])
    r = label({"labeller": "seabo", "scale": 2.5, "beta": 0.5}, agent, expert)
    assert r[0] == np.float32(2.5)  # exactly the scale at distance 0
    assert np.all(np.diff(r) < 0)  # strictly falling with the distance
    # SEABO's squashing: scale * exp(-beta * d / action_dim)
    np.testing.assert_allclose(r, 2.5 * np.exp(-0.5 * offsets * np.sqrt(2) / 2), rtol=1e-6)


def test_seabo_k_th_neighbour_and_no_action_dim():
    rng = np.random.default_rng(1)
    expert = episodes([rng.normal(size=(9, 3))], [rng.normal(size=(8, 2))], "expert")
    agent = episodes([rng.normal(size=(5, 3))], [rng.normal(size=(4, 2))])
    base = {"labeller": "seabo", "mode": "ss"}
    r1, r3 = label(base, agent, expert), label({**base, "k": 3}, agent, expert)
    assert np.all(r3 <= r1) and np.any(r3 < r1)  # the 3rd neighbour is no nearer than the 1st
    r_noa = label({**base, "no_action_dim": True}, agent, expert)
    np.testing.assert_allclose(np.log(r_noa), 2 * np.log(r1), rtol=1e-5)  # distance no longer halved


def test_seabo_modes_differ_and_declare_expert_actions(umaze):
    agent, expert = umaze
    r_sas = label({"labeller": "seabo", "mode": "sas"}, agent, expert)
    r_ss = label({"labeller": "seabo", "mode": "ss"}, agent, expert)
    assert r_sas.shape == r_ss.shape == (agent.num_transitions,)
    assert np.all((r_sas > 0) & (r_sas <= 1)) and np.all((r_ss > 0) & (r_ss <= 1))
    assert not np.allclose(r_sas, r_ss)
    assert np.all(r_ss >= r_sas - 1e-6)  # (s, s') is a projection of (s, a, s'): never further from the experts
    assert SEABO.reads_expert_actions({"mode": "sas"}) and SEABO.reads_expert_actions({"mode": "sa"})
    assert not SEABO.reads_expert_actions({"mode": "ss"})
    assert SEABO.reads_expert_actions({}) is True  # the default mode, sas
    assert get("clue").reads_expert_actions({"input": "sa"}) and not get("clue").reads_expert_actions({"input": "ss"})
    # the base class: the class attribute, for every labeller that has one mode
    assert Labeller.reads_expert_actions({}) is False and get("ailot").reads_expert_actions({}) is False


def test_seabo_and_clue_name_themselves_when_the_mode_needs_expert_actions():
    rng = np.random.default_rng(2)
    agent = episodes([rng.normal(size=(5, 3))], [rng.normal(size=(4, 2))])
    state_only = episodes([rng.normal(size=(6, 3))], [np.zeros((5, 0))], "expert")  # no action columns
    with pytest.raises(AilotInputError, match=r"labeller 'seabo' \(mode 'sas'\).*state-only.*mode: ss"):
        label({"labeller": "seabo"}, agent, state_only)
    with pytest.raises(AilotInputError, match=r"labeller 'clue' \(input 'sa'\).*state-only.*input: ss"):
        label({"labeller": "clue", "steps": 1}, agent, state_only)
    assert label({"labeller": "seabo", "mode": "ss"}, agent, state_only).shape == (4,)  # ss needs no actions
    other_env = episodes([rng.normal(size=(6, 5))], [rng.normal(size=(5, 2))], "expert")
    with pytest.raises(AilotInputError, match=r"labeller 'seabo'.*5 dimensions"):
        label({"labeller": "seabo", "mode": "ss"}, agent, other_env)


# -------------------------------------------------------------------------------------------------- CLUE


def test_clue_calibration_collapses_the_expert_embeddings(clue_runs):
    (_, cal), (_, plain) = clue_runs["a"], clue_runs["plain"]
    # spread of the expert set's embeddings relative to the agent data's: small when calibrated
    ratio_cal, ratio_plain = cal["expert_rms"] / cal["agent_rms"], plain["expert_rms"] / plain["agent_rms"]
    assert ratio_cal < 0.2, cal
    assert ratio_cal < 0.35 * ratio_plain, (cal, plain)
    assert cal["agent_rms"] > 0.3  # the agent data keeps its spread: not a collapsed encoder


def test_clue_rewards_through_the_registry(clue_runs, umaze):
    agent, _ = umaze
    r, info = clue_runs["a"]
    assert "clue" in LABELLERS and "seabo" in LABELLERS
    assert r.dtype == np.float32 and r.shape == (agent.num_transitions,)
    assert np.all((r > 0) & (r <= 1)) and r.std() > 0
    assert np.isfinite(info["loss"])


def test_clue_is_deterministic_under_its_seed(clue_runs):
    np.testing.assert_array_equal(clue_runs["a"][0], clue_runs["a_again"][0])
    assert not np.allclose(clue_runs["a"][0], clue_runs["b"][0])
    assert get("clue").seeded  # so the seed is in its cache key


def test_clue_state_only_input(umaze, clue_runs):
    agent, expert = umaze
    r_ss, info = label({**TINY_CLUE, "input": "ss"}, agent, expert, seed=0, return_info=True)
    assert r_ss.shape == (agent.num_transitions,) and np.all(np.isfinite(r_ss))
    assert not np.allclose(r_ss, clue_runs["a"][0])
    assert info["expert_rms"] < 0.2 * info["agent_rms"]


def test_clue_divergence_names_clue(umaze):
    agent, expert = umaze
    with pytest.raises(AilotInputError, match=r"labeller 'clue'.*diverged.*lower lr"):
        label({**TINY_CLUE, "steps": 50, "lr": 1e30}, agent, expert, seed=0)
