"""Offline RL learners behind one small protocol (see base.Learner): IQL, Diffusion-QL and BC.

cfg = make_config("iql", {"hidden_dims": [64, 64]}, task_family="antmaze")
learner = get_learner("iql").create(seed, obs_dim, action_dim, cfg, action_low, action_high)
learner, info = train(learner, data, num_steps, batch_size)
actions = act(learner, observations, key)
"""

from __future__ import annotations

from typing import Any

from ailot.errors import AilotInputError
from ailot.learners.base import (
    Learner,
    act,
    check_action_dims,
    check_rewards,
    load,
    overestimates,
    sample_batch,
    save,
    scale_rewards,
    train,
    value_bound,
)
from ailot.learners.bc import BC, BCConfig
from ailot.learners.diffusion_ql import DiffusionQL, DiffusionQLConfig
from ailot.learners.iql import IQL, IQLConfig

LEARNERS: dict[str, type] = {"iql": IQL, "bc": BC, "diffusion_ql": DiffusionQL}


def get_learner(name: str) -> type:
    """The learner class registered under `name`."""
    if name not in LEARNERS:
        raise AilotInputError(f"learner {name!r}", "is not a known learner", f"use one of: {', '.join(LEARNERS)}")
    return LEARNERS[name]


def reward_scaling(name: str, task_family: str, config: Any = None) -> str:
    """The reward preprocessing (a base.scale_rewards mode) learner `name` trains with on `task_family`.

    A learner config with a `reward_scaling` field picks it: "reference" (the learner's own per-family modes,
    its `reward_scalings`), "iql" (IQL's per-family modes, DEFAULT_REWARD_SCALINGS) or a mode by name."""
    from ailot.learners.base import DEFAULT_REWARD_SCALINGS, REWARD_SCALINGS, check_family

    family = check_family(task_family)
    if name == "rllib_iql":  # it takes IQL's temperatures (rllib.make_config), so IQL's reward scale too
        name = "iql"
    scalings = DEFAULT_REWARD_SCALINGS if name.startswith("rllib_") else getattr(
        get_learner(name), "reward_scalings", DEFAULT_REWARD_SCALINGS)
    chosen = getattr(config, "reward_scaling", "reference")
    if chosen == "iql":
        return DEFAULT_REWARD_SCALINGS[family]
    if chosen in REWARD_SCALINGS:
        return chosen
    return scalings[family]


def make_config(name: str, overrides: dict[str, Any] | None = None, task_family: str = "locomotion") -> Any:
    """The frozen config of learner `name`: the task family's preset with `overrides` applied and checked."""
    from ailot.learners.base import apply_overrides

    if name.startswith("rllib_"):  # RLlib's offline learners (ailot.learners.rllib; torch only when trained)
        from ailot.learners.rllib import make_config as rllib_make_config

        return rllib_make_config(name, overrides, task_family)
    cls = get_learner(name)
    return apply_overrides(cls.default_config(task_family), overrides, name)


__all__ = [
    "BC",
    "IQL",
    "LEARNERS",
    "BCConfig",
    "DiffusionQL",
    "DiffusionQLConfig",
    "IQLConfig",
    "Learner",
    "act",
    "check_action_dims",
    "check_rewards",
    "get_learner",
    "load",
    "make_config",
    "overestimates",
    "reward_scaling",
    "sample_batch",
    "save",
    "scale_rewards",
    "train",
    "value_bound",
]
