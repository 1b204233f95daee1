"""PWIL (Dadashi et al. 2021, "Primal Wasserstein Imitation Learning"): each agent episode greedily transports its
states' mass, step by step, to the nearest expert atoms still holding mass (standardised Euclidean distance); a
step's reward is alpha * exp(-sigma * its transport cost). Defaults from google-research/google-research
`pwil/rewarder.py` (PWILRewarder) and `pwil/trainer.py` (flags), named beside each setting.

Offline, every agent episode starts with the full expert mass (the rewarder's `reset` per episode). Differences:
the expert set is the top-N episodes by return (ailot's protocol; the reference picks demonstrations at random) and
subsampling starts at the first step (the reference draws a random offset).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ailot.errors import AilotInputError
from ailot.labellers.base import Labeller, Setting, expert_set, n_experts_setting


def greedy_costs(agent: np.ndarray, atoms: np.ndarray, step_weight: float) -> np.ndarray:
    """Transport cost [T] of each agent atom [T, d] in turn, each carrying `step_weight` of mass, to the nearest
    of `atoms` [N, d] (mass 1/N each) that still hold mass (PWIL's Algorithm 1)."""
    left = np.full(len(atoms), 1.0 / len(atoms))
    costs = np.zeros(len(agent))
    for t, x in enumerate(agent):
        norms = np.linalg.norm(atoms - x, axis=1)
        norms[left <= 0] = np.inf
        weight, cost = step_weight, 0.0
        while weight > 0 and np.isfinite(norms).any():
            j = int(norms.argmin())
            moved = min(weight, left[j])
            cost += moved * norms[j]
            weight -= moved
            left[j] -= moved
            if left[j] <= 0:
                norms[j] = np.inf
        costs[t] = cost
    return costs


class PWIL(Labeller):
    name = "pwil"
    settings: ClassVar[dict[str, Setting]] = {
        # "sa": atoms are (s, a), PWILRewarder's default (observation_only=False); "s": states only
        "input": Setting("sa", "choice", choices=("sa", "s")),
        "alpha": Setting(5.0),  # reward scale (rewarder.py alpha=5.)
        "beta": Setting(5.0),  # kernel size (rewarder.py beta=5.): sigma = beta * horizon / sqrt(obs + action dims)
        # agent mass per step is 1 / time_horizon (rewarder.py time_horizon=1000., MuJoCo's episode length);
        # 0: each agent episode's own length, so every episode transports all its mass
        "time_horizon": Setting(1000, "int", inclusive=True),
        "subsampling": Setting(20, "int"),  # keep every 20th expert step (trainer.py flags: subsampling 20)
        "n_experts": n_experts_setting(),  # trainer.py flags: num_demonstrations 1
    }

    @classmethod
    def reads_expert_actions(cls, setting: dict[str, Any]) -> bool:
        return setting.get("input", cls.settings["input"].default) == "sa"

    @classmethod
    def compute(cls, setting, agent, expert, *, encoder=None, seed=0, progress=False, buckets=None):
        setting = {**cls.defaults(), **setting}
        with_actions = cls.reads_expert_actions(setting)
        demo = expert_set(expert, setting)
        if with_actions and demo.action_dim != agent.action_dim:
            raise AilotInputError("labeller 'pwil'", f"expert actions have {demo.action_dim} dims, the agent's "
                                  f"{agent.action_dim}", "use input: s, or an expert set with the agent's actions")

        def atoms_of(episodes, step: int) -> list[np.ndarray]:
            out = []
            for obs, act in zip(episodes.observations, episodes.actions):
                states = obs[:-1]  # one atom per transition (s_t, a_t)
                out.append(np.concatenate([states, act], axis=1)[::step] if with_actions else states[::step])
            return out

        expert_atoms = np.concatenate(atoms_of(demo, int(setting["subsampling"])))
        mean, std = expert_atoms.mean(axis=0), expert_atoms.std(axis=0)
        std[std == 0] = 1.0  # as sklearn's StandardScaler, which the reference uses
        expert_atoms = (expert_atoms - mean) / std
        dims = agent.obs_dim + agent.action_dim  # the reference counts both, with or without actions
        rewards = []
        for episode in atoms_of(agent, 1):
            horizon = int(setting["time_horizon"]) or len(episode)
            # the reference takes 1e-6 off each step's mass against float round-off in the matching
            costs = greedy_costs((episode - mean) / std, expert_atoms, 1.0 / horizon - 1e-6)
            sigma = setting["beta"] * horizon / np.sqrt(dims)
            rewards.append(setting["alpha"] * np.exp(-sigma * costs))
        return np.concatenate(rewards).astype(np.float32), None
