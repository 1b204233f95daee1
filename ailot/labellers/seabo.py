"""SEABO (Lyu et al., "SEABO: A Simple Search-Based Method for Offline Imitation Learning", ICLR 2024).

Each agent transition is rewarded by its distance to the nearest transition of the expert set:
    r = scale * exp(-beta * d / action_dim),   d = Euclidean distance to the k-th nearest expert query key,
as the authors' code computes it (github.com/dmksjfl/SEABO, IQL/main_iql.py and TD3_BC/main.py: `rewarder`,
`squashing_func`). That code searches raw, unnormalised data (IQL: `--normalize` off; TD3_BC normalises the
states only after the rewards are computed) and divides the raw distance by the action dimension (Adroit: not,
`--no_action_dim`). The search key is (s, a, s') (`sas`, the default; reads the expert's actions), (s, a) (`sa`)
or the state-only (s, s') (`ss`).

Search: scipy's cKDTree, as SEABO (scipy.spatial.KDTree, the same implementation), exact in float64. Measured
against a chunked brute-force search (numpy BLAS or jitted JAX, argmin of |e|^2 - 2 q.e, then the exact distance),
time for 10^5 queries including the tree build, twice on a shared 2-core CPU (load 3-11, so ranges):
    UMaze-sized, d = 4+2+4, 300 expert transitions:  cKDTree 0.20-0.72 s, numpy 0.14-0.57 s, JAX 0.15-0.63 s
    the same with 3000 (10 expert episodes):          cKDTree 0.46-2.7 s,  numpy 1.9-3.7 s,   JAX 2.1-7.0 s
    hopper-sized, d = 11+3+11, 1000 transitions:      cKDTree 0.43-1.3 s,  numpy 0.32-1.2 s,  JAX 0.67-2.3 s
    the same with 10000:                              cKDTree 1.4-3.5 s,   numpy 6.6-9.4 s,   JAX 15-25 s
Brute force is level on one expert episode and 3-7x slower as the expert set grows, so the tree it is.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from ailot.data.episodes import Episodes
from ailot.errors import AilotInputError
from ailot.labellers.base import Labeller, Setting, expert_set, n_experts_setting

MODES = ("sas", "sa", "ss")  # SEABO's --mode choices (IQL/main_iql.py)


def query_keys(episodes: Episodes, mode: str) -> np.ndarray:
    """[M, D] float64 search keys of every transition, aligned with `episodes.to_transitions()`."""
    parts = [np.concatenate(episodes.states())]
    if mode in ("sas", "sa"):
        parts.append(np.concatenate(episodes.actions))
    if mode in ("sas", "ss"):
        parts.append(np.concatenate([o[1:] for o in episodes.observations]))
    return np.concatenate(parts, axis=1).astype(np.float64)


def squash(distance: np.ndarray, action_dim: int, beta: float, scale: float, no_action_dim: bool) -> np.ndarray:
    """SEABO's `squashing_func`: distance -> reward, 1 * scale at distance 0, falling monotonically."""
    return scale * np.exp(-beta * distance / (1.0 if no_action_dim else action_dim))


def nearest_distance(expert_keys: np.ndarray, keys: np.ndarray, k: int = 1) -> np.ndarray:
    """Euclidean distance from each key [M, D] to its k-th nearest expert key [N, D] (exact, float64)."""
    from scipy.spatial import cKDTree

    # workers: the cores this process may use (pinned Ray workers hold fewer than the machine has)
    workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    distance, _ = cKDTree(expert_keys).query(keys, k=[k], workers=workers)
    return distance[:, 0]


class SEABO(Labeller):
    name = "seabo"
    # reads the expert's actions in modes sas and sa only: see reads_expert_actions
    uses_expert_actions: ClassVar[bool] = False
    settings = {  # defaults: dmksjfl/SEABO IQL/main_iql.py argparse and README "Key flags"
        "mode": Setting("sas", "choice", choices=MODES),  # --mode 'sas'; 'ss' is SEABO's state-only variant
        "k": Setting(1, "int"),  # --k 1: distance to the k-th nearest neighbour (query k=[k])
        # --beta 0.5 (MuJoCo, Adroit); the README's AntMaze runs use --beta 5.0 (and subtract --bias 1.0 * scale
        # from every reward, which our learners' antmaze reward offset stands for)
        "beta": Setting(0.5),
        "scale": Setting(1.0),  # --scale 1.0
        "no_action_dim": Setting(False, "bool"),  # --no_action_dim: off, on for Adroit (README)
        "n_experts": n_experts_setting(),  # get_expert_traj(..., num_top_episodes=1)
    }

    @classmethod
    def reads_expert_actions(cls, setting: dict[str, Any]) -> bool:
        return setting.get("mode", cls.settings["mode"].default) in ("sas", "sa")

    @classmethod
    def check_mode(cls, setting: dict[str, Any], agent: Episodes, expert: Episodes, expert_actions: bool = True):
        """The query mode fits the data: expert actions where the mode reads them, matching dimensions."""
        mode = setting.get("mode", cls.settings["mode"].default)
        what = f"labeller {cls.name!r} (mode {mode!r})"
        if cls.reads_expert_actions(setting) and (not expert_actions or expert.action_dim == 0):
            raise AilotInputError(what, "searches expert (s, a, ...) keys, but the expert set is state-only",
                                  "set the labeller's mode: ss, or give an expert dataset with actions "
                                  "(datasets[].expert_actions: true)")
        if expert.obs_dim != agent.obs_dim:
            raise AilotInputError(what, f"expert observations have {expert.obs_dim} dimensions, the agent's "
                                  f"{agent.obs_dim}", "pair the agent dataset with an expert set of the same env")
        if cls.reads_expert_actions(setting) and expert.action_dim != agent.action_dim:
            raise AilotInputError(what, f"expert actions have {expert.action_dim} dimensions, the agent's "
                                  f"{agent.action_dim}", "use mode: ss, or an expert set of the same env")

    @classmethod
    def compute(cls, setting, agent, expert, *, encoder=None, seed=0, progress=False, buckets=None):
        s = {**cls.defaults(), **setting}
        experts = expert_set(expert, s)
        cls.check_mode(s, agent, experts)
        keys, expert_keys = query_keys(agent, s["mode"]), query_keys(experts, s["mode"])
        if not 1 <= int(s["k"]) <= len(expert_keys):
            raise AilotInputError(f"labeller {cls.name!r} setting 'k'", f"{s['k']} exceeds the {len(expert_keys)} "
                                  "expert transitions", f"choose k in 1..{len(expert_keys)}")
        distance = nearest_distance(expert_keys, keys, int(s["k"]))
        rewards = squash(distance, agent.action_dim, float(s["beta"]), float(s["scale"]), bool(s["no_action_dim"]))
        return rewards.astype(np.float32), {"mean_distance": float(distance.mean()),
                                            "expert_transitions": int(len(expert_keys))}
