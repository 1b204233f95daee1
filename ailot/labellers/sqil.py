"""SQIL (Reddy et al. 2019, "SQIL: Imitation Learning via Reinforcement Learning with Sparse Rewards"): reward 1 on
the expert's transitions, added to the data, and 0 on the agent's.

A labeller's output is one reward per agent transition, so SQIL splits in two:
- `compute`: 0 for every agent transition;
- `extra_transitions`: the expert set's transitions with reward 1 (observations, actions, rewards, next observations,
  terminals: `ailot.learners.base.DATA_KEYS`), which the sweep appends to the trial's training data
  (`adds_expert_transitions`). They carry the expert's actions, so SQIL `uses_expert_actions`.
The paper samples half of every batch from the demonstrations (Section 3, "balanced" replay);
`expert_batch_fraction` records that share for a learner that can sample the two parts apart. Appended as plain
rows instead, one 300-step expert trajectory is 0.3% of a 100k-transition dataset.
The expert set is the top `n_experts` episodes (1 by default, the protocol every labeller here shares).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ailot.data.episodes import Episodes
from ailot.labellers.base import Labeller, expert_set, n_experts_setting


class SQIL(Labeller):
    name = "sqil"
    uses_expert_actions: ClassVar[bool] = True
    adds_expert_transitions: ClassVar[bool] = True  # the sweep appends `extra_transitions` to the training data
    expert_batch_fraction: ClassVar[float] = 0.5  # SQIL paper: half of each batch from the demonstrations
    settings = {"n_experts": n_experts_setting()}

    @classmethod
    def compute(cls, setting, agent, expert, *, encoder=None, seed=0, progress=False, buckets=None):
        return np.zeros(agent.num_transitions, np.float32), None

    @classmethod
    def extra_transitions(cls, setting: dict[str, Any], expert: Episodes) -> dict[str, np.ndarray]:
        """The expert set's transitions, reward 1: observations [E, d], actions [E, a], rewards [E],
        next_observations [E, d], terminals [E] (float32, 1 at a true termination)."""
        t = expert_set(expert, {**cls.defaults(), **setting}).to_transitions()
        return {"observations": t.observations, "actions": t.actions, "rewards": np.ones(len(t), np.float32),
                "next_observations": t.next_observations, "terminals": t.terminals}
