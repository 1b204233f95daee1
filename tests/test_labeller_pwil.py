"""PWIL: greedy transport of each step's mass to the nearest expert atoms still holding mass."""

from __future__ import annotations

import numpy as np
import pytest

from ailot import labellers
from ailot.data.episodes import Episodes
from ailot.labellers.pwil import greedy_costs


def episodes(obs: list[np.ndarray], act: list[np.ndarray], dataset_id: str) -> Episodes:
    return Episodes(obs, act, [np.zeros(len(a)) for a in act], [np.zeros(len(a), bool) for a in act],
                    [np.eye(1, len(a), len(a) - 1, dtype=bool)[0] for a in act], dataset_id)


def test_greedy_costs_spill_to_the_next_atom_once_the_nearest_is_used_up():
    atoms = np.array([[0.0], [1.0]])  # mass 1/2 each
    # three steps of mass 0.3 at 0: the first two take 0.3 + 0.2 of atom 0 (and 0.1 of atom 1 at distance 1)
    costs = greedy_costs(np.zeros((3, 1)), atoms, 0.3)
    np.testing.assert_allclose(costs, [0.0, 0.1 * 1.0, 0.3 * 1.0])


def test_an_expert_copy_earns_alpha_and_rewards_fall_with_distance():
    rng = np.random.default_rng(0)
    obs = np.cumsum(rng.normal(size=(41, 3)), axis=0)
    act = rng.uniform(-1, 1, (40, 2))
    expert = episodes([obs], [act], "e")
    setting = {"labeller": "pwil", "subsampling": 1, "time_horizon": 0}
    copy = labellers.label(setting, episodes([obs], [act], "a"), expert)
    np.testing.assert_allclose(copy, 5.0, rtol=1e-4)  # cost 0 at every step
    means = [labellers.label(setting, episodes([obs + shift], [act], "a"), expert).mean() for shift in (0.1, 0.5, 2)]
    assert means[0] > means[1] > means[2]
    states_only = labellers.label({**setting, "input": "s"}, episodes([obs], [-act], "a"), expert)
    with_actions = labellers.label(setting, episodes([obs], [-act], "a"), expert)
    assert states_only.mean() > with_actions.mean()  # other actions cost only when actions are atoms
    assert labellers.reads_expert_actions(setting) and not labellers.reads_expert_actions({**setting, "input": "s"})


def test_horizon_and_subsampling_are_the_references_by_default():
    defaults = labellers.get("pwil").defaults()
    assert (defaults["alpha"], defaults["beta"], defaults["time_horizon"], defaults["subsampling"]) == (5.0, 5.0,
                                                                                                          1000, 20)
    with pytest.raises(Exception, match="pwil"):
        labellers.label({"labeller": "pwil"}, episodes([np.zeros((3, 2))], [np.zeros((2, 1))], "a"), None)
