"""Labellers: one interface from (agent dataset, expert set, setting) to rewards aligned with the transitions.

`ailot` embeds states with the intent encoder psi and solves OT per agent episode (ailot.relabel);
`otr` does the same on raw states with OTR's cost and squashing; `true` returns the dataset's own rewards;
`zero` returns zeros. Episodes are padded to a few length buckets (`bucket_plan`) so each bucket compiles once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ailot.data.episodes import Episodes, top_n_episodes
from ailot.errors import AilotInputError

NEEDS_ENCODER = ("ailot",)
NEEDS_EXPERT = ("ailot", "otr")
# settings that change the rewards of each labeller (others, e.g. a learner, never reach a labeller)
REWARD_KEYS = {
    "ailot": ("k", "epsilon", "relative_epsilon", "alpha", "tau", "n_experts", "expert_mode", "threshold",
              "max_iterations", "momentum"),
    "otr": ("epsilon", "alpha", "beta", "n_experts", "threshold", "max_iterations"),
    "true": (),
    "zero": (),
}


# settings the jitted solvers trace rather than compile in: a grid over them reuses one compilation per bucket
TRACED_KEYS = ("epsilon", "alpha", "tau", "beta")


def reward_setting(setting: dict[str, Any]) -> dict[str, Any]:
    """The part of a labeller setting that determines its rewards (used in cache keys)."""
    name = setting["labeller"]
    return {"labeller": name, **{k: setting[k] for k in REWARD_KEYS[name] if k in setting}}


def expert_trajectories(expert: Episodes, n: int) -> list[np.ndarray]:
    """State-only expert set: all observations of the n highest-return episodes ([Te+1, d] each)."""
    return list(top_n_episodes(expert, n).observations)


def solves_per_compile(settings: list[dict[str, Any]]) -> float:
    """How many of these OT settings share each compilation: those differing only in `TRACED_KEYS` do."""
    groups = {tuple(sorted((k, v) for k, v in reward_setting(s).items() if k not in TRACED_KEYS)) for s in settings}
    return len(settings) / max(1, len(groups))


def bucket_plan(agent: Episodes, expert: Episodes, solves: float = 1, backend: str | None = None) -> tuple[int, ...]:
    """Length buckets for relabelling `agent` against `expert` (`ailot.relabel.plan_buckets`), each compilation
    solved `solves` times (`solves_per_compile`), on `backend` ("cpu" or "accelerator"; default: JAX's
    here). Computed once per request, so that every actor of a pool, and the local path given the same plan,
    pad each episode alike and give the same rewards."""
    from ailot import relabel

    # expert trajectories are observations, one more than the steps
    return relabel.plan_buckets(agent.lengths, int(expert.lengths.max()) + 1, solves=solves, backend=backend)


def solve_setting(
    setting: dict[str, Any],
    agent_trajs: list[np.ndarray],
    expert_trajs: list[np.ndarray],
    *,
    buckets: Sequence[int] | None = None,
    progress: bool = False,
    return_info: bool = False,
):
    """Rewards [T_i] for each agent trajectory [T_i, d] (already embedded for ailot, raw for otr), padded to the
    bucket lengths `buckets` (None: planned for these trajectories); with return_info, also their
    `relabel.SinkhornStats`."""
    from ailot import relabel

    name = setting["labeller"]
    if name == "ailot":
        solve: Callable = relabel.ailot_rewards
    elif name == "otr":
        solve = relabel.otr_rewards
    else:
        raise AilotInputError(f"labeller {name!r}", "is not an OT labeller", "use 'ailot' or 'otr' here")
    kwargs = {k: setting[k] for k in REWARD_KEYS[name] if k in setting and k != "n_experts"}
    return relabel.solve_bucketed(solve, agent_trajs, expert_trajs, buckets=buckets, progress=progress,
                                  return_info=return_info, **kwargs)


def label(
    setting: dict[str, Any],
    agent: Episodes,
    expert: Episodes | None = None,
    encoder=None,
    *,
    buckets: Sequence[int] | None = None,
    progress: bool = False,
    return_info: bool = False,
):
    """Rewards [M] aligned with `agent.to_transitions()` for one labeller setting (local, single process).

    buckets: the padded lengths (`bucket_plan`; None plans them for this one setting). progress: a bar over
    transitions. return_info: also the per-episode `relabel.SinkhornStats` (None for `true` and `zero`)."""
    name = setting.get("labeller")
    if name not in REWARD_KEYS:
        raise AilotInputError(f"labeller {name!r}", "is unknown", f"use one of: {', '.join(REWARD_KEYS)}")
    if name in ("true", "zero"):
        rewards = (np.concatenate(agent.rewards) if name == "true" else np.zeros(agent.num_transitions))
        return (rewards.astype(np.float32), None) if return_info else rewards.astype(np.float32)
    if expert is None:
        raise AilotInputError(f"labeller {name!r}", "needs an expert dataset", "set datasets[].expert")
    if name in NEEDS_ENCODER and encoder is None:
        raise AilotInputError("labeller 'ailot'", "needs an intent encoder", "pretrain one (ailot.intents.pretrain)")
    if buckets is None:
        buckets = bucket_plan(agent, expert)
    states = agent.states()
    experts = expert_trajectories(expert, int(setting.get("n_experts", 1)))
    if name == "ailot":
        states = split_like(encoder.embed(np.concatenate(states)), states)
        experts = split_like(encoder.embed(np.concatenate(experts)), experts)
    rewards, stats = solve_setting(setting, states, experts, buckets=buckets, progress=progress, return_info=True)
    rewards = np.concatenate(rewards).astype(np.float32)
    return (rewards, stats) if return_info else rewards


def split_like(flat: np.ndarray, parts: list[np.ndarray]) -> list[np.ndarray]:
    """Split a [sum T_i, ...] array back into pieces shaped like `parts`."""
    return np.split(np.asarray(flat), np.cumsum([len(p) for p in parts])[:-1])
