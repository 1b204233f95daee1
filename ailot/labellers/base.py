"""What every labeller declares and shares: typed settings, the inputs it reads, and its cache key.

A labeller turns (agent dataset, expert dataset, one setting) into one reward per agent transition, aligned with
`Episodes.to_transitions()`. A labeller class says
- `settings`: each setting's default and type (a `Setting`), the default's source beside it;
- what it reads: the expert set's states (`uses_expert`), its actions (`uses_expert_actions`: an easier problem
  than AILOT's state-only one, flagged in every result row), the ICVF intent encoder (`uses_encoder`);
- whether it trains with the sweep's seed (`seeded`: the seed is then part of its cache key);
- whether its work is per-episode OT that the relabel actor pool shards (`on_pool`).
`cache_key` builds the content key from exactly these, so a changed expert set, setting, encoder or seed never
reuses stale rewards.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from ailot.cache import content_key
from ailot.data.episodes import Episodes, top_n_episodes
from ailot.errors import AilotInputError
from ailot.numbers import finite_number


@dataclass(frozen=True)
class Setting:
    """One labeller setting: its default, its type and its allowed range.

    kind: "int", "float", "bool", "choice" (one of `choices`), "ints" (a non-empty list of positive ints, e.g.
    hidden sizes) or "custom" (`check(value, where)` returns the value or raises).
    minimum: numbers must be > minimum (>= with `inclusive`). in_key_at_default: False for a setting added after
    caches existed, so that at its default it stays out of the cache key and older cached rewards stay valid."""

    default: Any
    kind: str = "float"
    minimum: float = 0.0
    inclusive: bool = False
    maximum: float = math.inf
    choices: tuple = ()
    check: Callable[[Any, str], Any] | None = None
    in_key_at_default: bool = True

    def validate(self, value: Any, where: str) -> Any:
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise AilotInputError(f"config key {where!r}", f"must be true or false, got {value!r}",
                                      "write true or false")
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise AilotInputError(f"config key {where!r}", f"got {value!r}",
                                      f"use one of: {', '.join(map(str, self.choices))}")
            return value
        if self.kind == "ints":
            if isinstance(value, (str, bytes, bool)) or not hasattr(value, "__iter__"):
                raise AilotInputError(f"config key {where!r}", f"got {value!r}", "give a list of positive ints")
            out = tuple(finite_number(v, where, int) for v in value)
            if not out or min(out) < 1:
                raise AilotInputError(f"config key {where!r}", f"got {value!r}", "give a list of positive ints")
            return out
        if self.kind == "custom":
            return self.check(value, f"config key {where!r}")
        number = finite_number(value, where, int if self.kind == "int" else float)
        low_ok = number >= self.minimum if self.inclusive else number > self.minimum
        if not low_ok or number > self.maximum:
            bound = f"{'>=' if self.inclusive else '>'} {self.minimum:g}" + (
                f" and <= {self.maximum:g}" if self.maximum < math.inf else "")
            raise AilotInputError(f"config key {where!r}", f"must be {bound}, got {value!r}",
                                  f"give a value {bound}")
        return number


def n_experts_setting() -> Setting:
    # the N highest-return expert episodes (AILOT paper default 1; SEABO and SMODICE also use one trajectory)
    return Setting(1, "int")


class Labeller:
    """Base class: subclasses set the class attributes and implement `compute`."""

    name: ClassVar[str]
    settings: ClassVar[dict[str, Setting]] = {}
    uses_expert: ClassVar[bool] = True  # reads the expert set's states (its fingerprint is in the cache key)
    uses_expert_actions: ClassVar[bool] = False  # reads the expert's actions: an easier setting than AILOT's
    uses_encoder: ClassVar[bool] = False  # rewards in the ICVF intent space (the encoder's hash in the key)
    seeded: ClassVar[bool] = False  # trains with the sweep seed (in the cache key)
    on_pool: ClassVar[bool] = False  # per-episode work that the relabel actor pool shards
    traced_keys: ClassVar[tuple[str, ...]] = ()  # settings a compiled solver traces: a grid over them shares it

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {k: s.default for k, s in cls.settings.items()}

    @classmethod
    def reads_expert_actions(cls, setting: dict[str, Any]) -> bool:
        """Whether this setting reads the expert's actions (a mode can decide it, e.g. SEABO's 'sas')."""
        return cls.uses_expert_actions

    @classmethod
    def reward_setting(cls, setting: dict[str, Any]) -> dict[str, Any]:
        """The part of a setting that determines the rewards (what goes into the cache key)."""
        out = {"labeller": cls.name}
        for k, spec in cls.settings.items():
            if k in setting and (spec.in_key_at_default or setting[k] != spec.default):
                out[k] = setting[k]
        return out

    @classmethod
    def cache_key(cls, setting: dict[str, Any], agent: Episodes, expert: Episodes | None,
                  encoder_hash: str | None, seed: int | None) -> str:
        rs = cls.reward_setting(setting)
        if cls.seeded:
            rs["seed"] = int(seed if seed is not None else 0)
        return content_key("rewards", agent.fingerprint(),
                           expert.fingerprint() if cls.uses_expert and expert is not None else None,
                           encoder_hash if cls.uses_encoder else None, rs)

    @classmethod
    def check_inputs(cls, setting: dict[str, Any], expert: Episodes | None, encoder,
                     expert_actions: bool = True) -> None:
        """What this setting reads is there (before any work)."""
        if cls.uses_expert and expert is None:
            raise AilotInputError(f"labeller {cls.name!r}", "needs an expert dataset", "set datasets[].expert")
        if cls.reads_expert_actions(setting) and not expert_actions:
            raise AilotInputError(f"labeller {cls.name!r}", "reads expert actions, but the expert set is state-only",
                                  "drop it from labellers:, or set datasets[].expert_actions: true")
        if cls.uses_encoder and encoder is None:
            raise AilotInputError(f"labeller {cls.name!r}", "needs an intent encoder",
                                  "pretrain one (ailot.intents.pretrain)")

    @classmethod
    def compute(cls, setting: dict[str, Any], agent: Episodes, expert: Episodes | None, *, encoder=None,
                seed: int = 0, progress: bool = False, buckets=None) -> tuple[np.ndarray, Any]:
        """(rewards [M] float32 aligned with agent.to_transitions(), info): info is a `relabel.SinkhornStats`
        for OT labellers, a dict of scalars for trained ones, or None."""
        raise NotImplementedError


def expert_set(expert: Episodes, setting: dict[str, Any]) -> Episodes:
    """The expert set of a setting: the `n_experts` highest-return episodes of the expert dataset."""
    return top_n_episodes(expert, int(setting.get("n_experts", 1)))


def check_finite(name: str, rewards: np.ndarray, fix: str) -> np.ndarray:
    """A labeller's output must be finite: a diverged model (NaN) stops here with the labeller named."""
    rewards = np.asarray(rewards, np.float32)
    if not np.all(np.isfinite(rewards)):
        bad = int((~np.isfinite(rewards)).sum())
        raise AilotInputError(f"labeller {name!r}", f"gave {bad} non-finite rewards (its model diverged)", fix)
    return rewards
