"""The protocol every learner follows, and the pieces they share: config overrides, optimiser state,
batch sampling, the scan-chunked `train`, `act`, checkpoints, reward checks/scaling and the expert set.

A learner is a `flax.struct.PyTreeNode` holding rng, step, its networks (flax TrainStates), target
copies, the action bounds and a frozen (hashable, static) config. `update(batch)` is one jitted step.

Learners that read the expert set themselves (SMODICE, DWBC, IQ-Learn, BC on the expert episodes) declare
`expert_input` = "states" or "transitions"; their training data then also holds the `expert_*` arrays of
`expert_arrays`, which `sample_batch` samples with indices of their own.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self, TypeVar

import flax.serialization
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.training.train_state import TrainState

from ailot.errors import AilotInputError
from ailot.files import write_atomic

TASK_FAMILIES = ("locomotion", "antmaze", "maze2d")
REWARD_SCALINGS = ("locomotion", "antmaze", "cql_antmaze", "unit", "none")
# Reward preprocessing per task family unless a learner names its own (`reward_scalings` class attribute).
DEFAULT_REWARD_SCALINGS = {"locomotion": "locomotion", "antmaze": "antmaze", "maze2d": "none"}
DATA_KEYS = ("observations", "actions", "rewards", "next_observations", "terminals")
# What a learner reads of the expert set (class attribute `expert_input`): nothing, its states (observations and
# next observations, as the DESIGN's state-only expert set) or its transitions (also the expert actions).
EXPERT_INPUTS = (None, "states", "transitions")
EXPERT_STATE_KEYS = ("expert_observations", "expert_next_observations", "expert_terminals")
EXPERT_KEYS = (*EXPERT_STATE_KEYS, "expert_actions")
# Keys with these prefixes are sampled with indices of their own over their own length (sample_batch): the
# expert set [Ne] and the agent data's episode starts [N0] (`initial_observations`, read by SMODICE).
SAMPLING_GROUPS = ("expert_", "initial_")

Batch = dict[str, jax.Array]
Info = dict[str, jax.Array]
C = TypeVar("C")


class Learner(Protocol):
    """What the sweep, the checkpoints and the evaluation rely on.

    Optional class attributes (read with getattr, so learners without them keep the defaults):
    `expert_input` (None | "states" | "transitions", default None), `reward_free` (True when the learner
    ignores the labeller's rewards, default False), `optional_inputs` (extra data keys it reads when present),
    `reward_scalings` (per task family, default DEFAULT_REWARD_SCALINGS).
    """

    name: ClassVar[str]
    rng: jax.Array
    step: jax.Array  # int32 scalar: updates done so far
    obs_dim: int
    action_low: jax.Array  # [a]
    action_high: jax.Array  # [a]

    @classmethod
    def create(
        cls,
        seed: int,
        obs_dim: int,
        action_dim: int,
        config: Any = None,
        action_low: Any = None,
        action_high: Any = None,
    ) -> Self: ...

    def update(self, batch: Batch) -> tuple[Self, Info]: ...

    def sample_actions(self, observations: jax.Array, key: jax.Array, deterministic: bool = True) -> jax.Array: ...


# ----------------------------------------------------------------------------------------------- configs


def check_family(task_family: str) -> str:
    if task_family not in TASK_FAMILIES:
        raise AilotInputError(
            "task_family", f"unknown family {task_family!r}", f"use one of: {', '.join(TASK_FAMILIES)}"
        )
    return task_family


def _coerce(learner: str, key: str, default: Any, value: Any) -> Any:
    """Convert a YAML/JSON override to the type of the default it replaces, or say why it cannot be."""
    what = f"learners.{learner}.{key}"
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, int):
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise TypeError
            return int(float(value))  # 1e6 from YAML is a float
        if isinstance(default, float):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if isinstance(default, tuple):
            if isinstance(value, (str, bytes, bool)):
                raise TypeError
            out = tuple(int(v) for v in value)
            if not out or min(out) < 1:
                raise TypeError
            return out
        if isinstance(default, str):
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError, OverflowError):
        kind = "a non-empty list of positive ints" if isinstance(default, tuple) else type(default).__name__
        raise AilotInputError(what, f"got {value!r}", f"give {kind} (default {default!r})") from None
    return value


def apply_overrides(default: C, overrides: Mapping[str, Any] | None, learner: str) -> C:
    """Return `default` (a frozen config dataclass) with `overrides` applied, checking keys and types."""
    if overrides is None:
        return default
    if not isinstance(overrides, Mapping):
        raise AilotInputError(
            f"learners.{learner}",
            f"overrides must be a mapping, got {type(overrides).__name__}",
            "write the learner's settings as key: value pairs",
        )
    fields = {f.name for f in dataclasses.fields(default)}
    changes = {}
    for key, value in overrides.items():
        if key not in fields:
            raise AilotInputError(
                f"learners.{learner}.{key}",
                f"is not a {learner} config key",
                f"use one of: {', '.join(sorted(fields))}",
            )
        changes[key] = _coerce(learner, key, getattr(default, key), value)
    config = dataclasses.replace(default, **changes)
    config.validate()
    return config


def require(ok: bool, learner: str, key: str, value: Any, rule: str) -> None:
    """Config range check: raise AilotInputError naming the key when `ok` is false."""
    if not ok:
        raise AilotInputError(f"learners.{learner}.{key}", f"{value!r} is out of range", f"use {rule}")


def resolve_config(default_fn: Callable[[str], C], config: Any, learner: str) -> C:
    """`create` accepts a ready config, None (the locomotion defaults) or a mapping of overrides."""
    default = default_fn("locomotion")
    if config is None:
        return default
    if isinstance(config, type(default)):
        config.validate()
        return config
    if isinstance(config, Mapping):
        return apply_overrides(default, config, learner)
    raise AilotInputError(
        f"{learner} config",
        f"got a {type(config).__name__}",
        f"pass learners.make_config({learner!r}, overrides) or a dict of overrides",
    )


# ----------------------------------------------------------------------------------------- network state


@functools.lru_cache(maxsize=256)
def make_optimizer(lr: float, decay_steps: int = 0, grad_norm: float = 0.0,
                   weight_decay: float = 0.0) -> optax.GradientTransformation:
    """Adam with a constant lr, or cosine-decayed to 0 over `decay_steps` (IQL's actor schedule) when > 0;
    optionally after clipping the global gradient norm (grad_norm <= 0: no clipping) and with PyTorch Adam's
    `weight_decay` (an L2 term weight_decay * params added to the gradient before Adam, not AdamW's decoupled
    decay; SMODICE's V and DWBC's policy use it).

    Cached: learners built from equal configs then hold the very same optimiser object, so their pytree
    structures compare equal and jitted `train`/`update` compile once per config, not once per learner.
    """
    adam = optax.adam(optax.cosine_decay_schedule(lr, decay_steps) if decay_steps > 0 else lr)
    if weight_decay > 0:
        adam = optax.chain(optax.add_decayed_weights(weight_decay), adam)
    return optax.chain(optax.clip_by_global_norm(grad_norm), adam) if grad_norm > 0 else adam


_MODULES: dict[Any, Any] = {}


def make_state(module: Any, key: jax.Array, example_inputs: tuple, tx: optax.GradientTransformation) -> TrainState:
    """A TrainState (step as int32) for `module`, initialised on `example_inputs`."""
    # Bound methods compare their instance by identity, so equal modules are interned to one instance:
    # `apply_fn` of equal configs is then equal and jitted code is shared (see make_optimizer).
    module = _MODULES.setdefault(module, module)
    params = module.init(key, *example_inputs)["params"]
    state = TrainState.create(apply_fn=module.apply, params=params, tx=tx)
    # An int32 array, not the Python int 0: the fresh and the trained state then have the same leaf types.
    return state.replace(step=jnp.zeros((), jnp.int32))


def call(state: TrainState, *inputs: jax.Array, params: Any = None) -> Any:
    """Apply a TrainState's network, with its own params unless `params` is given (for gradients)."""
    return state.apply_fn({"params": state.params if params is None else params}, *inputs)


def apply_loss(state: TrainState, loss_fn: Callable[[Any], tuple[jax.Array, Info]],
               active: jax.Array | None = None) -> tuple[TrainState, Info]:
    """One optimiser step on `loss_fn(params) -> (loss, info)`; adds the pre-clip gradient norm to info.

    With `active` (a traced bool) the step is taken only where it is true, else the state (optimiser moments
    and step count included) is returned unchanged: DWBC updates its discriminator every 100th step.
    """
    grads, info = jax.grad(loss_fn, has_aux=True)(state.params)
    info = {**info, "grad_norm": optax.global_norm(grads)}
    if active is None:
        return state.apply_gradients(grads=grads), info
    return jax.lax.cond(active, lambda s: s.apply_gradients(grads=grads), lambda s: s, state), info


L = TypeVar("L")


def phased(first: jax.Array, first_fn: Callable[[L], tuple[L, Info]], second_fn: Callable[[L], tuple[L, Info]],
           learner: L) -> tuple[L, Info]:
    """`first_fn(learner)` where `first` (a traced bool) holds, else `second_fn(learner)`, as one lax.cond.

    The two may report different info keys; each side's missing keys are filled with zeros, so a scan over a
    phase change has one info structure (SMODICE trains its discriminator alone for its first steps).
    """
    one = jax.eval_shape(first_fn, learner)[1]
    two = jax.eval_shape(second_fn, learner)[1]

    def filled(fn: Callable[[L], tuple[L, Info]]) -> Callable[[L], tuple[L, Info]]:
        def run(x: L) -> tuple[L, Info]:
            out, info = fn(x)
            zeros = {k: jnp.zeros(v.shape, v.dtype) for k, v in {**one, **two}.items() if k not in info}
            return out, {**zeros, **info}

        return run

    return jax.lax.cond(first, filled(first_fn), filled(second_fn), learner)


def polyak(params: Any, target_params: Any, tau: float) -> Any:
    """target <- tau * online + (1 - tau) * target."""
    return jax.tree.map(lambda p, t: tau * p + (1.0 - tau) * t, params, target_params)


def resolve_bounds(action_dim: int, action_low: Any, action_high: Any) -> tuple[jax.Array, jax.Array]:
    """Action bounds [a] each; default [-1, 1] (D4RL/gymnasium locomotion and maze Box spaces)."""
    low = (
        -np.ones(action_dim, np.float32)
        if action_low is None
        else np.broadcast_to(np.asarray(action_low, np.float32), (action_dim,))
    )
    high = (
        np.ones(action_dim, np.float32)
        if action_high is None
        else np.broadcast_to(np.asarray(action_high, np.float32), (action_dim,))
    )
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high)) and np.all(low < high)):
        raise AilotInputError(
            "action bounds",
            f"low={low.tolist()} high={high.tolist()} are not finite with low < high",
            "pass the environment's Box action_space.low and .high",
        )
    return jnp.asarray(low), jnp.asarray(high)


def check_dims(learner: str, obs_dim: int, action_dim: int) -> None:
    for what, n in (("obs_dim", obs_dim), ("action_dim", action_dim)):
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
            raise AilotInputError(f"{learner}.create {what}", f"got {n!r}", "pass a positive int from the dataset")


# ----------------------------------------------------------------------------------------------- training


def learner_expert_input(learner: Any) -> str | None:
    """What a learner (class or instance) reads of the expert set: None, "states" or "transitions"."""
    cls = learner if isinstance(learner, type) else type(learner)
    kind = getattr(cls, "expert_input", None)
    if kind not in EXPERT_INPUTS:
        raise ValueError(f"{cls.__name__}.expert_input is {kind!r}, not one of {EXPERT_INPUTS}")  # a coding error
    return kind


def expert_keys(kind: str | None) -> tuple[str, ...]:
    """The data keys a learner with `expert_input` = kind needs."""
    return {None: (), "states": EXPERT_STATE_KEYS, "transitions": EXPERT_KEYS}[kind]


def prepare_data(learner: Learner, data: Mapping[str, Any]) -> dict[str, jax.Array]:
    """The transition arrays as float32 device arrays, after checking keys and shapes once (host side).

    Besides the five agent arrays it keeps the expert arrays the learner reads (`expert_input`) and the
    `optional_inputs` it reads when given; anything else is dropped, so learners that read no expert set
    sample exactly as before whatever else the data holds.
    """
    missing = [k for k in DATA_KEYS if k not in data]
    if missing:
        raise AilotInputError(
            "training data", f"missing {', '.join(missing)}", f"pass a dict with {', '.join(DATA_KEYS)}"
        )
    kind = learner_expert_input(learner)
    missing = [k for k in expert_keys(kind) if k not in data]
    if missing:
        raise AilotInputError(
            "training data",
            f"{type(learner).__name__} reads the expert set's {kind} but the data lacks {', '.join(missing)}",
            "merge learners.base.expert_arrays(...) of the expert episodes into the training data",
        )
    optional = [k for k in getattr(type(learner), "optional_inputs", ()) if k in data]
    out = {k: jnp.asarray(data[k], jnp.float32) for k in (*DATA_KEYS, *expert_keys(kind), *optional)}
    m = out["observations"].shape[0]
    want = {
        "observations": (m, learner.obs_dim),
        "next_observations": (m, learner.obs_dim),
        "actions": (m, learner.action_low.shape[0]),
        "rewards": (m,),
        "terminals": (m,),
    }
    for k, shape in want.items():
        if out[k].shape != shape:
            raise AilotInputError(
                f"training data[{k!r}]",
                f"has shape {out[k].shape}, expected {shape}",
                "check the dataset's dimensions against the learner's obs_dim/action_dim",
            )
    if m == 0:
        raise AilotInputError("training data", "has no transitions", "train on a non-empty dataset")
    if kind is not None:
        ne = out["expert_observations"].shape[0]
        want = {"expert_observations": (ne, learner.obs_dim), "expert_next_observations": (ne, learner.obs_dim),
                "expert_terminals": (ne,), "expert_actions": (ne, learner.action_low.shape[0])}
        for k in expert_keys(kind):
            if out[k].shape != want[k]:
                raise AilotInputError(
                    f"training data[{k!r}]",
                    f"has shape {out[k].shape}, expected {want[k]}",
                    "build the expert arrays with learners.base.expert_arrays from the expert episodes of this dataset",
                )
        if ne == 0:
            raise AilotInputError("training data", "has an empty expert set", "select at least one expert episode")
    if "initial_observations" in out and (out["initial_observations"].ndim != 2
                                          or out["initial_observations"].shape[1] != learner.obs_dim
                                          or out["initial_observations"].shape[0] == 0):
        raise AilotInputError("training data['initial_observations']",
                              f"has shape {out['initial_observations'].shape}, expected (N0 > 0, {learner.obs_dim})",
                              "build it with learners.base.initial_observations(observations, episode_ids)")
    return out


@partial(jax.jit, static_argnames=("batch_size",))
def sample_batch(learner: Learner, data: dict[str, jax.Array], batch_size: int) -> tuple[Learner, Batch]:
    """Uniform indices with replacement (as IQL's Dataset.sample) drawn from the learner's own rng.

    The agent arrays share one index [B] over M. Keys starting with a SAMPLING_GROUPS prefix (`expert_*` over
    Ne, `initial_*` over N0) get an index of their own, from a key folded out of the agent index's key, so the
    agent index and the learner's next rng are the same whether or not such keys are present.
    """
    rng, key = jax.random.split(learner.rng)
    idx = jax.random.randint(key, (batch_size,), 0, data["observations"].shape[0])
    batch = {k: v[idx] for k, v in data.items() if not k.startswith(SAMPLING_GROUPS)}
    for i, prefix in enumerate(SAMPLING_GROUPS):
        group = {k: v for k, v in data.items() if k.startswith(prefix)}
        if group:
            n = next(iter(group.values())).shape[0]  # prepare_data checked that a group shares its length
            group_idx = jax.random.randint(jax.random.fold_in(key, i + 1), (batch_size,), 0, n)
            batch.update({k: v[group_idx] for k, v in group.items()})
    return learner.replace(rng=rng), batch


@partial(jax.jit, static_argnames=("batch_size", "chunk"))
def train_chunk(learner: Learner, data: dict[str, jax.Array], batch_size: int, chunk: int) -> tuple[Learner, Info]:
    """`chunk` (sample, update) steps in one lax.scan, i.e. one dispatch; infos averaged over the chunk."""

    def body(carry: Learner, _: None) -> tuple[Learner, Info]:
        carry, batch = sample_batch(carry, data, batch_size)
        return carry.update(batch)

    learner, infos = jax.lax.scan(body, learner, None, length=chunk)
    return learner, jax.tree.map(lambda x: jnp.mean(x, axis=0), infos)


def train(
    learner: Learner, data: Mapping[str, Any], num_steps: int, batch_size: int, chunk: int = 1000
) -> tuple[Learner, dict[str, np.ndarray]]:
    """Run `num_steps` updates in chunks of `chunk` per dispatch; data stays on device.

    Returns the new learner and, per info key, an array [num_chunks] of per-chunk means (the last chunk
    may be shorter; it compiles once more).
    """
    for what, n in (("num_steps", num_steps), ("batch_size", batch_size), ("chunk", chunk)):
        if not isinstance(n, (int, np.integer)) or n < (0 if what == "num_steps" else 1):
            raise AilotInputError(
                f"train {what}", f"got {n!r}", f"pass a {'non-negative' if what == 'num_steps' else 'positive'} int"
            )
    data = prepare_data(learner, data)
    infos: list[Info] = []
    done = 0
    while done < num_steps:
        n = min(chunk, num_steps - done)
        learner, info = train_chunk(learner, data, batch_size, n)
        infos.append(info)  # stays on device: no host sync between chunks
        done += n
    if not infos:
        return learner, {}
    return learner, {k: np.asarray(jnp.stack([i[k] for i in infos])) for k in infos[0]}


@partial(jax.jit, static_argnames=("deterministic",))
def act(learner: Learner, observations: jax.Array, key: jax.Array, deterministic: bool = True) -> jax.Array:
    """Actions [B, a] for observations [B, d], inside the action bounds."""
    return learner.sample_actions(jnp.asarray(observations, jnp.float32), key, deterministic)


# -------------------------------------------------------------------------------------------- checkpoints


def save(learner: Learner, path: str | os.PathLike) -> None:
    """Write the full learner state (params, optimiser states, targets, step, rng) as flax msgpack.

    Written to a temporary file and renamed, so a crash never leaves a truncated checkpoint.
    """
    if not isinstance(learner, flax.struct.PyTreeNode):  # e.g. ailot.learners.rllib: its own msgpack state
        return learner.save(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = flax.serialization.msgpack_serialize(
        {
            "learner": type(learner).__name__,
            "state": flax.serialization.to_state_dict(learner),
            "config": _config_json(learner),  # lets `load` refuse a learner built from another config
        }
    )
    write_atomic(path, blob)


def _config_json(learner: Any) -> str:
    config = getattr(learner, "config", None)
    return json.dumps(dataclasses.asdict(config) if dataclasses.is_dataclass(config) else {}, sort_keys=True,
                      default=str)


def load(path: str | os.PathLike, like: Learner) -> Learner:
    """Restore a learner saved by `save` into the structure of `like` (same class and config shapes)."""
    if not isinstance(like, flax.struct.PyTreeNode):
        return like.load(path)
    path = Path(path)
    if not path.is_file():
        raise AilotInputError(f"learner checkpoint {str(path)!r}", "does not exist", "check the path or retrain")
    try:
        raw = flax.serialization.msgpack_restore(path.read_bytes())
        kind = raw["learner"]
        state = raw["state"]
    except (
        ValueError,
        KeyError,
        TypeError,
        IndexError,
    ) as e:  # corrupt or foreign file (msgpack errors are ValueErrors)
        raise AilotInputError(
            f"learner checkpoint {str(path)!r}",
            f"is not a learner checkpoint ({e})",
            "point at a file written by ailot.learners.save",
        ) from None
    if kind != type(like).__name__:
        raise AilotInputError(
            f"learner checkpoint {str(path)!r}",
            f"holds a {kind}, not a {type(like).__name__}",
            "load it with a learner of the same kind",
        )
    try:
        restored = flax.serialization.from_state_dict(like, state)
    except (ValueError, KeyError, TypeError) as e:
        raise AilotInputError(
            f"learner checkpoint {str(path)!r}",
            f"does not match the learner's structure ({e})",
            "create the learner with the config it was trained with",
        ) from None
    # from_state_dict does not compare shapes; a wrong network size must not surface later as an XLA error.
    for (kp, a), b in zip(jax.tree_util.tree_leaves_with_path(like), jax.tree.leaves(restored), strict=True):
        if np.shape(a) != np.shape(b) or np.asarray(a).dtype != np.asarray(b).dtype:
            raise AilotInputError(
                f"learner checkpoint {str(path)!r}",
                f"{jax.tree_util.keystr(kp)} has shape {np.shape(b)}, the learner expects {np.shape(a)}",
                "create the learner with the config it was trained with",
            )
    # Settings that do not change any shape (expectile, lr, ...) would otherwise load silently and be
    # replaced by those of `like`. Checkpoints without a stored config (older ones) skip this check.
    try:
        saved = json.loads(raw.get("config") or "{}")
    except (ValueError, TypeError):
        saved = {}
    wanted = json.loads(_config_json(like))
    diff = {k: (saved[k], wanted[k]) for k in sorted(set(saved) & set(wanted)) if saved[k] != wanted[k]}
    if diff:
        raise AilotInputError(
            f"learner checkpoint {str(path)!r}",
            f"was trained with another {type(like).__name__} config (saved vs this learner: {diff})",
            "create the learner with the config it was trained with (learners.make_config with the same overrides)",
        )
    return jax.tree.map(jnp.asarray, restored)


# --------------------------------------------------------------------------------------------- expert set


def expert_arrays(observations: Any, actions: Any, next_observations: Any, terminals: Any) -> dict[str, np.ndarray]:
    """The expert set's transitions as the `expert_*` training-data keys (float32), checked on the host.

    observations [Ne, d], actions [Ne, a] or None, next_observations [Ne, d], terminals [Ne]. With actions None
    (a state-only expert set) `expert_actions` is absent, and learners with expert_input "transitions" are
    refused by `check_expert_input`. Merge the result into the data dict
    passed to `train`; learners that read no expert set ignore these keys.
    """
    arrays = {"expert_observations": observations, "expert_next_observations": next_observations,
              "expert_terminals": terminals}
    if actions is not None:
        arrays["expert_actions"] = actions
    out = {k: np.asarray(v, np.float32) for k, v in arrays.items()}
    ne = out["expert_observations"].shape[0] if out["expert_observations"].ndim == 2 else -1
    for k, v in out.items():
        rank = 1 if k == "expert_terminals" else 2
        if v.ndim != rank or v.shape[0] != ne or ne == 0:
            raise AilotInputError(
                f"expert {k.removeprefix('expert_')}",
                f"have shape {v.shape}; expected {'[Ne]' if rank == 1 else '[Ne, dim]'} with one row per expert "
                f"transition (Ne = {ne} from the observations)",
                "pass the flat transitions of the selected expert episodes (at least one)",
            )
        bad = ~np.isfinite(v)
        if bad.any():
            raise AilotInputError(f"expert {k.removeprefix('expert_')}", f"hold {int(bad.sum())} non-finite values",
                                  "check the expert dataset")
    if out["expert_next_observations"].shape != out["expert_observations"].shape:
        raise AilotInputError("expert next_observations", f"have shape {out['expert_next_observations'].shape}, "
                              f"observations {out['expert_observations'].shape}", "pass aligned (s, s') pairs")
    return out


def check_expert_input(learner: str | type, has_actions: bool) -> str | None:
    """Refuse, before any training, a learner that needs expert actions when the expert set is state-only.

    `learner` is a registered name or a learner class; returns its expert_input (None, "states", "transitions").
    """
    if isinstance(learner, str):
        from ailot.learners import get_learner  # the registry sits above this module

        name, cls = learner, get_learner(learner)
    else:
        name, cls = getattr(learner, "name", learner.__name__), learner
    kind = learner_expert_input(cls)
    if kind == "transitions" and not has_actions:
        raise AilotInputError(
            f"learner {name!r}",
            "needs the expert set's actions, but the expert set is state-only (observations without actions)",
            "keep the expert episodes' actions (an expert set from a dataset with actions, results marked as using "
            "expert actions), or choose a learner that reads expert states only (e.g. smodice) or none",
        )
    return kind


def initial_observations(observations: Any, episode_ids: Any) -> np.ndarray:
    """The first observation of every episode, [N0, d], from the flat observations [M, d] and their episode ids
    [M] (episodes contiguous): the `initial_observations` SMODICE's (1 - gamma) E[V(s0)] term samples."""
    obs, ids = np.asarray(observations, np.float32), np.asarray(episode_ids)
    if obs.ndim != 2 or ids.shape != obs.shape[:1] or obs.shape[0] == 0:
        raise AilotInputError("initial_observations", f"observations {obs.shape}, episode_ids {ids.shape}",
                              "pass observations [M, d] and one episode id per transition")
    starts = np.flatnonzero(np.concatenate([[True], ids[1:] != ids[:-1]]))
    return obs[starts]


# ------------------------------------------------------------------------------------------------ rewards


def check_rewards(rewards: Any) -> None:
    """Refuse reward arrays that are not 1-D or hold NaN/inf, before any training."""
    r = np.asarray(rewards)
    if r.ndim != 1:
        raise AilotInputError(
            "rewards",
            f"have shape {r.shape}, expected one reward per transition [M]",
            "pass a 1-D reward array aligned with the transitions",
        )
    if not np.issubdtype(r.dtype, np.number):
        raise AilotInputError("rewards", f"have dtype {r.dtype}", "pass numeric rewards")
    bad = ~np.isfinite(r)
    if bad.any():
        raise AilotInputError(
            "rewards",
            f"{int(bad.sum())} of {r.size} are not finite (first at index {int(np.argmax(bad))})",
            "check the relabelling (e.g. Sinkhorn epsilon too small) or the dataset's rewards",
        )


def scale_rewards(rewards: Any, episode_ids: Any, mode: str) -> np.ndarray:
    """IQL's reward preprocessing (train_offline.py): rewards [M], episode_ids [M] -> float32 [M].

    locomotion: r * 1000 / (max episode return - min episode return); if all episodes have the same
    return (e.g. constant rewards) the span is 0 and rewards are returned unscaled.
    antmaze: r - 1 (sparse success reward -> -1 per step until the goal).
    cql_antmaze: (r - 0.5) * 4 (Diffusion-QL's antmaze reward_tune, utils/data_sampler.py, after CQL).
    unit: (r - min) / (max - min), so every labeller's rewards span [0, 1] and a learner whose policy step
    depends on the reward scale (IQL's exp(temperature * advantage)) sees the same scale whichever labeller
    made them; constant rewards are returned unscaled. none: unchanged.
    """
    if mode not in REWARD_SCALINGS:
        raise AilotInputError("reward scaling", f"unknown mode {mode!r}", f"use one of: {', '.join(REWARD_SCALINGS)}")
    r = np.asarray(rewards, np.float64)
    check_rewards(r)
    if mode == "none":
        return r.astype(np.float32)
    if mode == "antmaze":
        return (r - 1.0).astype(np.float32)
    if mode == "cql_antmaze":
        return ((r - 0.5) * 4.0).astype(np.float32)
    if mode == "unit":
        span = r.max() - r.min() if r.size else 0.0
        return ((r - r.min()) / span if span > 0.0 else r).astype(np.float32)
    ids = np.asarray(episode_ids)
    if ids.shape != r.shape:
        raise AilotInputError(
            "episode_ids", f"have shape {ids.shape}, rewards {r.shape}", "pass one episode id per transition"
        )
    _, inverse = np.unique(ids, return_inverse=True)
    returns = np.bincount(inverse.ravel(), weights=r)
    span = returns.max() - returns.min()
    if span <= 0.0:
        return r.astype(np.float32)
    return (r * (1000.0 / span)).astype(np.float32)


# Info keys holding a batch maximum of a learner's value or Q estimates (IQL, Diffusion-QL).
VALUE_MAX_KEYS = ("value/v_max", "critic/q_max")


def value_bound(rewards: Any, discount: float | None) -> float | None:
    """max(0, max reward) / (1 - discount) for rewards [M]: the largest discounted return any policy can earn,
    so a critic predicting more overestimates. None without a discount below 1 (no finite bound)."""
    if discount is None or not 0.0 <= discount < 1.0:
        return None
    r = np.asarray(rewards, np.float64)
    return float(max(0.0, r.max() if r.size else 0.0) / (1.0 - discount))


def overestimates(info: Mapping[str, float], bound: float | None, rel: float = 0.01,
                  absolute: float = 1.0) -> dict[str, float]:
    """The value maxima of `info` (VALUE_MAX_KEYS) above `bound` by more than `rel` of it or `absolute`
    (whichever is larger), so rounding and a fresh network's small outputs (zero rewards: bound 0) pass."""
    if bound is None:
        return {}
    limit = bound + max(rel * abs(bound), absolute)
    return {k: float(info[k]) for k in VALUE_MAX_KEYS if k in info and float(info[k]) > limit}


def check_action_dims(action_space: Any, action_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """Check a gymnasium Box-like space against the data's action_dim; return its (low, high) for `create`."""
    shape = getattr(action_space, "shape", None)
    if shape is None or not hasattr(action_space, "low") or not hasattr(action_space, "high"):
        raise AilotInputError(
            "environment action space",
            f"{action_space} is not continuous (Box)",
            "use a continuous-control environment",
        )
    if tuple(shape) != (action_dim,):
        raise AilotInputError(
            "dataset actions",
            f"dimension {action_dim} but the environment expects {tuple(shape)}",
            "evaluate in the environment the dataset was collected in",
        )
    return np.asarray(action_space.low, np.float32), np.asarray(action_space.high, np.float32)


def gaussian_actions(actor: TrainState, observations: jax.Array, key: jax.Array, deterministic: bool,
                     low: jax.Array, high: jax.Array) -> jax.Array:
    """A Gaussian policy's mean (deterministic) or a sample, clipped to the action bounds (IQL and BC)."""
    mean, log_std = call(actor, observations)
    actions = mean if deterministic else mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return jnp.clip(actions, low, high)


def to_unit(actions: jax.Array, low: jax.Array, high: jax.Array) -> jax.Array:
    """Dataset actions [B, a] in [low, high] -> [-1, 1], the range of a tanh-squashed policy."""
    return (actions - 0.5 * (high + low)) / (0.5 * (high - low))


def tanh_gaussian_actions(actor: TrainState, observations: jax.Array, key: jax.Array, deterministic: bool,
                          low: jax.Array, high: jax.Array) -> jax.Array:
    """A tanh-squashed Gaussian policy's tanh(mean) (deterministic, as SMODICE, DWBC and IQ-Learn act) or a
    sample, mapped from [-1, 1] to the action bounds."""
    mean, log_std = call(actor, observations)
    pre = mean if deterministic else mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    return jnp.clip(0.5 * (high + low) + 0.5 * (high - low) * jnp.tanh(pre), low, high)
