"""Reference rewards that bracket every labeller: the dataset's own (upper) and zero (lower)."""

from __future__ import annotations

import numpy as np

from ailot.labellers.base import Labeller


class TrueReward(Labeller):
    """The dataset's recorded rewards: what a labeller would ideally recover."""

    name = "true"
    uses_expert = False

    @classmethod
    def compute(cls, setting, agent, expert, *, encoder=None, seed=0, progress=False, buckets=None):
        return np.concatenate(agent.rewards).astype(np.float32), None


class ZeroReward(Labeller):
    """No reward at all: what the learner gets from the data's actions alone."""

    name = "zero"
    uses_expert = False

    @classmethod
    def compute(cls, setting, agent, expert, *, encoder=None, seed=0, progress=False, buckets=None):
        return np.zeros(agent.num_transitions, np.float32), None
