"""Optimal-transport labellers: AILOT (intent space, k-term cost) and OTR (raw states, cosine cost).

Both solve one entropic OT problem per agent episode against the expert set (ailot.relabel), padded to a few
length buckets so each bucket compiles once; the relabel actor pool (ailot.distributed) shards the episodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from ailot.data.episodes import Episodes, top_n_episodes
from ailot.labellers.base import Labeller, Setting, expert_set, n_experts_setting


def _momentum(value, where: str):
    from ailot.relabel import check_momentum

    return check_momentum(value, where)


def split_like(flat: np.ndarray, parts: list[np.ndarray]) -> list[np.ndarray]:
    """Split a [sum T_i, ...] array back into pieces shaped like `parts`."""
    return np.split(np.asarray(flat), np.cumsum([len(p) for p in parts])[:-1])


class OTLabeller(Labeller):
    """Shared by AILOT and OTR: trajectories (embedded or raw) -> bucketed batched Sinkhorn -> rewards."""

    on_pool: ClassVar[bool] = True
    traced_keys: ClassVar[tuple[str, ...]] = ("epsilon", "alpha", "tau", "beta")

    @classmethod
    def solver(cls):
        raise NotImplementedError

    @classmethod
    def prepare(cls, trajectories: list[np.ndarray], encoder) -> list[np.ndarray]:
        """What the solver compares: the raw states, or their embeddings."""
        return trajectories

    @classmethod
    def solve(cls, setting: dict[str, Any], agent_trajs: list[np.ndarray], expert_trajs: list[np.ndarray], *,
              buckets: Sequence[int] | None = None, progress: bool = False, return_info: bool = False):
        """Rewards [T_i] per agent trajectory (already `prepare`d), padded to `buckets` (None: planned here)."""
        from ailot import relabel

        kwargs = {k: setting[k] for k in cls.settings if k in setting and k != "n_experts"}
        return relabel.solve_bucketed(cls.solver(), agent_trajs, expert_trajs, buckets=buckets, progress=progress,
                                      return_info=return_info, **kwargs)

    @classmethod
    def compute(cls, setting, agent, expert, *, encoder=None, seed=0, progress=False, buckets=None):
        if buckets is None:
            buckets = bucket_plan(agent, expert)
        states = cls.prepare(agent.states(), encoder)
        experts = cls.prepare(list(expert_set(expert, setting).observations), encoder)
        rewards, stats = cls.solve(setting, states, experts, buckets=buckets, progress=progress, return_info=True)
        return np.concatenate(rewards).astype(np.float32), stats


class AILOT(OTLabeller):
    name = "ailot"
    uses_encoder = True
    settings = {
        "k": Setting(1, "int"),  # k-offset of the cost's second term (AILOT paper: 1 locomotion, 5 antmaze)
        "epsilon": Setting(1e-3),  # Sinkhorn entropic regularisation, absolute (AILOT paper)
        "relative_epsilon": Setting(False, "bool"),  # scale epsilon by the mean cost instead
        "alpha": Setting(5.0),  # reward scale (AILOT paper, as OTR)
        "tau": Setting(0.5),  # reward temperature (see ailot.relabel for the source)
        "n_experts": n_experts_setting(),
        "expert_mode": Setting("max", "choice", choices=("max", "merge")),  # paper "max"; authors' code "merge"
        "threshold": Setting(1e-3),  # Sinkhorn convergence threshold
        "max_iterations": Setting(1000, "int"),  # Sinkhorn iteration cap
        # over-relaxation: a weight in (0, 2), "adaptive" or "none" (ailot.relabel.MOMENTUM)
        "momentum": Setting(1.6, "custom", check=_momentum),
        # reward form: "paper" alpha * exp(-tau * Ta * sum_j P_ij C_ij) (AILOT paper, Eq. 5) or "authors"
        # alpha * exp(-tau * 100 * sum_j P_ij C_ij) (skylooop/AILOT, crossd, notebooks/hopper_cheetah.ipynb, with
        # alpha 2, tau 3 there: set them too). Added later: left out of cache keys at its default
        "squash": Setting("paper", "choice", choices=("paper", "authors"), in_key_at_default=False),
    }

    @classmethod
    def solver(cls):
        from ailot.relabel import ailot_rewards

        return ailot_rewards

    @classmethod
    def prepare(cls, trajectories, encoder):
        return split_like(encoder.embed(np.concatenate(trajectories)), trajectories)


class OTR(OTLabeller):
    name = "otr"
    settings = {  # OTR's own code (otr/agents/otil/rewarder.py, configs/otr_iql_mujoco.py); see ailot.relabel
        "epsilon": Setting(1e-2),
        "alpha": Setting(5.0),
        "beta": Setting(5.0),  # scaled by 1000 / obs_dim inside ailot.relabel, as OTR does
        "n_experts": n_experts_setting(),
        "threshold": Setting(1e-9),
        "max_iterations": Setting(100, "int"),  # OTR stops at 100 iterations, converged or not
    }

    @classmethod
    def solver(cls):
        from ailot.relabel import otr_rewards

        return otr_rewards


def bucket_plan(agent: Episodes, expert: Episodes, solves: float = 1, backend: str | None = None) -> tuple[int, ...]:
    """Length buckets for relabelling `agent` against `expert` (`ailot.relabel.plan_buckets`), each compilation
    solved `solves` times (`solves_per_compile`), on `backend` ("cpu" or "accelerator"; default: JAX's
    here). Computed once per request, so that every actor of a pool, and the local path given the same plan,
    pad each episode alike and give the same rewards."""
    from ailot import relabel

    # expert trajectories are observations, one more than the steps
    return relabel.plan_buckets(agent.lengths, int(expert.lengths.max()) + 1, solves=solves, backend=backend)


def solves_per_compile(settings: list[dict[str, Any]]) -> float:
    """How many of these OT settings share each compilation: those differing only in traced settings do."""
    from ailot.labellers import get

    groups = set()
    for s in settings:
        cls = get(s["labeller"])
        groups.add(tuple(sorted((k, str(v)) for k, v in cls.reward_setting(s).items() if k not in cls.traced_keys)))
    return len(settings) / max(1, len(groups))


def expert_trajectories(expert: Episodes, n: int) -> list[np.ndarray]:
    """State-only expert set: all observations of the n highest-return episodes ([Te+1, d] each)."""
    return list(top_n_episodes(expert, n).observations)
