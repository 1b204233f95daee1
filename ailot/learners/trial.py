"""One adapter from a sweep trial to any learner, JAX or RLlib: build it, train n updates, act; checkpoints go
through `base.save` / `base.load`, which both kinds implement.

The sweep's trial loop (`ailot.pipeline.run_trial`) sees only `TrialLearner`, so it is the same for every
learner and names none.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TrialInputs:
    """What a trial hands its learner: the training arrays and the run's sizes."""

    seed: int
    data: dict[str, np.ndarray]  # observations, actions, rewards (scaled), next_observations, terminals [+ expert_*]
    action_low: np.ndarray  # [a]
    action_high: np.ndarray  # [a]
    batch_size: int
    chunk: int  # updates per jitted dispatch
    cpus: float  # the trial's CPUs (RLlib's torch threads)
    task_family: str
    trial_id: str
    agent: Any = None  # the agent Episodes (RLlib trains on them exported to Parquet)
    labeller_setting: dict | None = None  # provenance in an RLlib export
    reward_setting: dict | None = None  # its part that determines the rewards (ailot.labellers.reward_setting)


@dataclass
class TrialLearner:
    learner: Any
    train: Callable[[Any, int], tuple[Any, dict[str, float]]]  # (learner, n updates) -> (learner, metrics)
    policy: Callable[[Any], Callable]  # learner -> (observations, key) -> actions


def build(name: str, config: Any, inputs: TrialInputs) -> TrialLearner:
    """The learner `name` (its frozen `config`) ready to train on `inputs`."""
    from ailot.learners import rllib

    if name in rllib.SETTINGS:
        return TrialLearner(*rllib.trial_learner(name, config, inputs))
    return _jax_learner(name, config, inputs)


def _jax_learner(name: str, config: Any, inputs: TrialInputs) -> TrialLearner:
    import jax.numpy as jnp

    from ailot import learners

    obs_dim, action_dim = inputs.data["observations"].shape[1], inputs.data["actions"].shape[1]
    learner = learners.get_learner(name).create(inputs.seed, obs_dim, action_dim, config,
                                               action_low=inputs.action_low, action_high=inputs.action_high)
    device_data = {k: jnp.asarray(v) for k, v in inputs.data.items()}  # on device once, for every chunk

    def train(learner, n: int):
        learner, info = learners.train(learner, device_data, n, inputs.batch_size, chunk=min(inputs.chunk, n))
        return learner, {k: float(v[-1]) for k, v in info.items()}  # means over the last chunk

    def policy(learner):
        return functools.partial(learners.act, learner)

    return TrialLearner(learner, train, policy)
