"""BC on the expert episodes alone: BC's Gaussian policy and loss, fitted to the expert set's transitions.

The DESIGN's "BC on the expert episodes" baseline: it shows what the expert set's actions give without the
agent data (`bc` clones all the agent data). Same settings as `bc`; it reads expert actions (`expert_input`
"transitions") and ignores the agent data and the labeller's rewards.
"""

from __future__ import annotations

from typing import Any, ClassVar

import jax

from ailot.learners import base
from ailot.learners.bc import BC


class BCExpert(BC):
    """BC whose batches are the expert transitions (`expert_observations`, `expert_actions`)."""

    name: ClassVar[str] = "bc_expert"
    expert_input: ClassVar[str | None] = "transitions"
    reward_free: ClassVar[bool] = True

    def actor_loss(self, batch: base.Batch, params: Any) -> tuple[jax.Array, base.Info]:
        expert = {"observations": batch["expert_observations"], "actions": batch["expert_actions"]}
        return super().actor_loss(expert, params)
