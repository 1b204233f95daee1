"""Labellers: (agent dataset, expert dataset, setting) -> one reward per agent transition, behind one registry.

Adding a labeller is one file (a `base.Labeller` subclass declaring its settings and what it reads) plus one
line in `LABELLERS`. Everything else (config checks, cache keys, the sweep, export, reward maps, the results'
`expert_actions` column) asks this registry.

    rewards = label({"labeller": "ailot", **get("ailot").defaults()}, agent, expert, encoder=encoder)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ailot.data.episodes import Episodes
from ailot.errors import AilotInputError
from ailot.labellers.base import Labeller, Setting, check_finite, expert_set
from ailot.labellers.ot import bucket_plan, expert_trajectories, solves_per_compile, split_like
from ailot.registry import Registry

# name -> "module:Class" in this package: a labeller is its file plus one line here
LABELLERS: Registry = Registry(__name__, {
    "ailot": "ot:AILOT",
    "otr": "ot:OTR",
    "true": "reference:TrueReward",
    "zero": "reference:ZeroReward",
    "oril": "oril:ORIL",
    "sqil": "sqil:SQIL",
    "seabo": "seabo:SEABO",
    "clue": "clue:CLUE",
    "pwil": "pwil:PWIL",
})


def get(name: str) -> type[Labeller]:
    """The labeller class registered under `name`."""
    if name not in LABELLERS:
        raise AilotInputError(f"labeller {name!r}", "is unknown", f"use one of: {', '.join(LABELLERS)}")
    return LABELLERS[name]


def reward_setting(setting: dict[str, Any]) -> dict[str, Any]:
    """The part of a labeller setting that determines its rewards (used in cache keys)."""
    return get(setting["labeller"]).reward_setting(setting)


def reads_expert_actions(setting: dict[str, Any]) -> bool:
    """Whether a labeller setting reads the expert's actions (False for 'none', the reward-free learners' entry)."""
    name = setting.get("labeller")
    return name in LABELLERS and LABELLERS[name].reads_expert_actions(setting)


def label(
    setting: dict[str, Any],
    agent: Episodes,
    expert: Episodes | None = None,
    encoder=None,
    *,
    seed: int = 0,
    buckets: Sequence[int] | None = None,
    progress: bool = False,
    return_info: bool = False,
):
    """Rewards [M] aligned with `agent.to_transitions()` for one labeller setting (local, single process).

    seed: for labellers that train (their model's initialisation and batches). buckets: the padded lengths of
    OT labellers (`bucket_plan`; None plans them for this one setting). progress: a bar where the labeller has
    one. return_info: also the labeller's info (SinkhornStats for OT, a dict for trained labellers, or None)."""
    cls = get(setting.get("labeller"))
    cls.check_inputs(setting, expert, encoder)
    rewards, info = cls.compute(setting, agent, expert, encoder=encoder, seed=seed, progress=progress,
                                buckets=buckets)
    rewards = check_finite(cls.name, rewards, "check the labeller's settings (learning rate, steps) and the data")
    if rewards.shape != (agent.num_transitions,):
        raise RuntimeError(f"labeller {cls.name!r} returned {rewards.shape} rewards for {agent.num_transitions} "
                           "transitions")
    return (rewards, info) if return_info else rewards


def solve_setting(setting: dict[str, Any], agent_trajs: list[np.ndarray], expert_trajs: list[np.ndarray], *,
                  buckets: Sequence[int] | None = None, progress: bool = False, return_info: bool = False):
    """Per-trajectory rewards of one OT setting (trajectories already prepared: embedded for AILOT)."""
    cls = get(setting["labeller"])
    if not cls.on_pool:
        raise AilotInputError(f"labeller {cls.name!r}", "is not an OT labeller",
                              f"use one of: {', '.join(n for n, c in LABELLERS.items() if c.on_pool)}")
    return cls.solve(setting, agent_trajs, expert_trajs, buckets=buckets, progress=progress, return_info=return_info)


__all__ = [
    "LABELLERS",
    "Labeller",
    "Setting",
    "bucket_plan",
    "expert_set",
    "expert_trajectories",
    "get",
    "label",
    "reward_setting",
    "solve_setting",
    "solves_per_compile",
    "split_like",
    "reads_expert_actions",
]
