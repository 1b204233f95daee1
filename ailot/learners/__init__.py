"""Offline RL learners behind one small protocol (see base.Learner): IQL, Diffusion-QL and BC, and the
baselines that read the expert set themselves (`expert_input`): SMODICE, DWBC, IQ-Learn and BC on the expert
episodes.

cfg = make_config("iql", {"hidden_dims": [64, 64]}, task_family="antmaze")
learner = get_learner("iql").create(seed, obs_dim, action_dim, cfg, action_low, action_high)
learner, info = train(learner, data, num_steps, batch_size)
actions = act(learner, observations, key)

A learner with an `expert_input` ("states": SMODICE; "transitions": DWBC, IQ-Learn, BC on the expert episodes)
also needs the expert set in its data; check first that the expert set has what it reads:
check_expert_input("dwbc", has_actions=expert_actions is not None)
data = {**data, **expert_arrays(expert_obs, expert_actions, expert_next_obs, expert_terminals)}
"""

from __future__ import annotations

from typing import Any

from ailot.errors import AilotInputError
from ailot.learners.base import (
    Learner,
    act,
    check_action_dims,
    check_expert_input,
    check_rewards,
    expert_arrays,
    initial_observations,
    load,
    overestimates,
    sample_batch,
    save,
    scale_rewards,
    train,
    value_bound,
)
from ailot.registry import Registry

# name -> "module:Class" in this package: a learner is its file plus one line here (RLlib's: ailot.learners.rllib)
LEARNERS: Registry = Registry(__name__, {
    "iql": "iql:IQL",
    "bc": "bc:BC",
    "diffusion_ql": "diffusion_ql:DiffusionQL",
    "smodice": "smodice:SMODICE",
    "dwbc": "dwbc:DWBC",
    "iq_learn": "iq_learn:IQLearn",
    "bc_expert": "bc_expert:BCExpert",
})


def get_learner(name: str) -> type:
    """The learner class registered under `name`."""
    if name not in LEARNERS:
        raise AilotInputError(f"learner {name!r}", "is not a known learner", f"use one of: {', '.join(LEARNERS)}")
    return LEARNERS[name]


def rllib_names() -> tuple[str, ...]:
    """RLlib's offline learners, trained through ailot.learners.rllib (torch only when trained)."""
    from ailot.learners.rllib import SWEEP_LEARNERS

    return SWEEP_LEARNERS


def names() -> tuple[str, ...]:
    """Every learner a sweep can name: this registry's and RLlib's."""
    return (*LEARNERS, *rllib_names())


def expert_input(name: str) -> str | None:
    """What learner `name` reads of the expert set: None, "states" or "transitions" (RLlib learners: None)."""
    if name.startswith("rllib_"):
        return None
    from ailot.learners.base import learner_expert_input

    return learner_expert_input(get_learner(name))


def uses_expert_actions(name: str) -> bool:
    """Whether learner `name` needs the expert set's actions (its results are marked as using them)."""
    return expert_input(name) == "transitions"


def reward_free(name: str) -> bool:
    """Whether learner `name` ignores the labeller's rewards (BC, and the learners that read the expert set)."""
    if name.startswith("rllib_"):
        return name == "rllib_bc"
    return bool(getattr(get_learner(name), "reward_free", False))


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
    "LEARNERS",
    "Learner",
    "act",
    "check_action_dims",
    "check_expert_input",
    "check_rewards",
    "expert_arrays",
    "expert_input",
    "get_learner",
    "initial_observations",
    "load",
    "make_config",
    "overestimates",
    "reward_free",
    "reward_scaling",
    "sample_batch",
    "save",
    "scale_rewards",
    "train",
    "uses_expert_actions",
    "value_bound",
]
