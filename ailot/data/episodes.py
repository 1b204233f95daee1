"""Episode containers, flat transitions, padding to length buckets, and expert selection.

`Episodes` holds one array per episode, the shape every later stage starts from: the intent encoder samples
within trajectories, the relabeller pads them to length buckets (`length_buckets`, `pad_batch`), and the
learners read the flat `Transitions`.

Dict observations (gymnasium-robotics mazes: `observation`, `achieved_goal`, `desired_goal`) are flattened
into one vector by concatenating chosen keys in a fixed order (`flatten_observation`). The keys option:

- `None` (default): `("observation",)` when the dict has an `observation` key -- the D4RL maze2d convention
  (position and velocity; the evaluation goal is fixed, so the goal is not an input) -- otherwise every key
  in sorted order;
- `"all"` (or `("all",)`): every key in sorted order (goal-conditioned inputs);
- a tuple of keys: exactly those, in that order.

The keys used are recorded in `Episodes.obs_keys` so evaluation flattens environment observations the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ailot.errors import AilotInputError

ALL_KEYS = "all"


def resolve_obs_keys(available: Sequence[str], keys: str | Sequence[str] | None) -> tuple[str, ...]:
    """The ordered dict keys to flatten, from the keys an observation has and the `obs_keys` option."""
    available = list(available)
    if keys is None:
        return ("observation",) if "observation" in available else tuple(sorted(available))
    if isinstance(keys, str):
        keys = (keys,)
    keys = tuple(keys)
    if keys == (ALL_KEYS,):
        return tuple(sorted(available))
    missing = [k for k in keys if k not in available]
    if missing or not keys:
        raise AilotInputError(
            "obs_keys",
            f"{list(keys)} asks for keys {missing} that the observations do not have",
            f"use some of {sorted(available)}, or 'all'",
        )
    return keys


def flatten_observation(obs, keys: str | Sequence[str] | None) -> np.ndarray:
    """Dict observation -> concatenation of `keys` (see module docstring) along the last axis.

    Works on one observation (values [k]) and on batched ones (values [N, k] or [N]); a non-dict
    observation is returned as an array unchanged.
    """
    if not isinstance(obs, Mapping):
        return np.asarray(obs)
    parts = [np.asarray(obs[k]) for k in resolve_obs_keys(list(obs.keys()), keys)]
    ndim = max(max(p.ndim for p in parts), 1)
    # Scalar entries ([] single, [N] batched) become one feature column.
    parts = [p[..., None] if p.ndim < ndim else p for p in parts]
    return np.concatenate(parts, axis=-1)


@dataclass(frozen=True)
class Transitions:
    """Flat transitions, episode by episode with time ascending (D4RL `qlearning_dataset` layout)."""

    observations: np.ndarray  # [M, d] float32
    actions: np.ndarray  # [M, a] float32
    rewards: np.ndarray  # [M] float32
    next_observations: np.ndarray  # [M, d] float32
    terminals: np.ndarray  # [M] float32, 1.0 at a true termination
    timeouts: np.ndarray  # [M] float32, 1.0 where the episode was truncated
    episode_ids: np.ndarray  # [M] int32, index of the episode in its Episodes
    timesteps: np.ndarray  # [M] int32, t within the episode

    def __len__(self) -> int:
        return len(self.rewards)

    def with_rewards(self, rewards: np.ndarray) -> Transitions:
        """The same transitions with relabelled rewards [M]."""
        rewards = np.asarray(rewards, dtype=np.float32)
        if rewards.shape != self.rewards.shape:
            raise AilotInputError(
                "rewards", f"shape {rewards.shape} does not match {self.rewards.shape} transitions",
                "pass one reward per transition, aligned with Episodes.to_transitions()",
            )
        return replace(self, rewards=rewards)

    def as_dict(self) -> dict[str, np.ndarray]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, eq=False)  # eq=False: equality of lists of arrays is ambiguous; compare fingerprints
class Episodes:
    """A dataset as a list of episodes; validated and converted to float32/bool on construction."""

    observations: list[np.ndarray]  # each [T_i + 1, obs_dim]; the last row is the final next-observation
    actions: list[np.ndarray]  # each [T_i, act_dim]
    rewards: list[np.ndarray]  # each [T_i]
    terminations: list[np.ndarray]  # each [T_i] bool
    truncations: list[np.ndarray]  # each [T_i] bool
    dataset_id: str
    env_spec: str | None = None  # gymnasium EnvSpec JSON of the evaluation env (None if unknown)
    ref_min_score: float | None = None
    ref_max_score: float | None = None
    obs_keys: tuple[str, ...] | None = None  # how dict observations were flattened (None: Box observations)

    def __post_init__(self):
        what = f"dataset {self.dataset_id!r}"
        n = len(self.observations)
        if n == 0:
            raise AilotInputError(what, "has no episodes", "check the dataset id/path and any episode filter")
        fields = (self.actions, self.rewards, self.terminations, self.truncations)
        if any(len(f) != n for f in fields):
            raise AilotInputError(what, "per-episode lists have different lengths", "give one array per episode")
        obs = [np.ascontiguousarray(o, dtype=np.float32) for o in self.observations]
        act = [np.ascontiguousarray(a, dtype=np.float32) for a in self.actions]
        rew = [np.ascontiguousarray(r, dtype=np.float32).reshape(-1) for r in self.rewards]
        term = [np.ascontiguousarray(t, dtype=bool).reshape(-1) for t in self.terminations]
        trunc = [np.ascontiguousarray(t, dtype=bool).reshape(-1) for t in self.truncations]
        obs = [o[:, None] if o.ndim == 1 else o for o in obs]
        act = [a[:, None] if a.ndim == 1 else a for a in act]
        obs_dim, act_dim = obs[0].shape[1], act[0].shape[1]
        for i in range(n):
            t = len(act[i])
            if t == 0:
                raise AilotInputError(f"{what} episode {i}", "is empty (0 transitions)",
                                      "drop empty episodes before building the dataset")
            if obs[i].shape != (t + 1, obs_dim) or act[i].shape != (t, act_dim):
                raise AilotInputError(
                    f"{what} episode {i}",
                    f"observations {obs[i].shape} / actions {act[i].shape} do not fit [T+1, {obs_dim}] / "
                    f"[T, {act_dim}]",
                    "store T+1 observations (including the final next-observation) and T actions per episode",
                )
            if not (len(rew[i]) == len(term[i]) == len(trunc[i]) == t):
                raise AilotInputError(f"{what} episode {i}", "rewards/terminations/truncations are not length T",
                                      "give one reward and done flag per transition")
            for name, arr in (("observations", obs[i]), ("actions", act[i]), ("rewards", rew[i])):
                if not np.isfinite(arr).all():
                    bad = int(np.argwhere(~np.isfinite(arr))[0][0])
                    raise AilotInputError(f"{what} episode {i} {name}", f"contain NaN or inf (first at t={bad})",
                                          "clean or drop the affected episodes before loading")
        for name, value in (("observations", obs), ("actions", act), ("rewards", rew),
                            ("terminations", term), ("truncations", trunc)):
            object.__setattr__(self, name, value)
        if self.obs_keys is not None:
            object.__setattr__(self, "obs_keys", tuple(self.obs_keys))

    # ------------------------------------------------------------------ sizes

    @property
    def num_episodes(self) -> int:
        return len(self.actions)

    @property
    def lengths(self) -> np.ndarray:
        """Transitions per episode, int64 [N]."""
        return np.array([len(a) for a in self.actions], dtype=np.int64)

    @property
    def num_transitions(self) -> int:
        return int(self.lengths.sum())

    @property
    def obs_dim(self) -> int:
        return int(self.observations[0].shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions[0].shape[1])

    @property
    def returns(self) -> np.ndarray:
        """Undiscounted return per episode, float64 [N]."""
        return np.array([float(r.sum(dtype=np.float64)) for r in self.rewards])

    # ------------------------------------------------------------------ views

    def fingerprint(self) -> str:
        """sha256 of the id and every array (dtype, shape, bytes); cached; identical across processes."""
        cached = self.__dict__.get("_fingerprint")
        if cached is None:
            h = hashlib.sha256(self.dataset_id.encode())
            for name in ("observations", "actions", "rewards", "terminations", "truncations"):
                h.update(name.encode())
                for arr in getattr(self, name):
                    h.update(f"{arr.dtype.str}{arr.shape}".encode())
                    h.update(arr.tobytes())
            cached = h.hexdigest()
            object.__setattr__(self, "_fingerprint", cached)
        return cached

    def states(self) -> list[np.ndarray]:
        """Transition source states per episode, observations[i][:-1], each [T_i, d]."""
        return [o[:-1] for o in self.observations]

    def to_transitions(self) -> Transitions:
        lengths = self.lengths
        return Transitions(
            observations=np.concatenate(self.states()),
            actions=np.concatenate(self.actions),
            rewards=np.concatenate(self.rewards),
            next_observations=np.concatenate([o[1:] for o in self.observations]),
            terminals=np.concatenate(self.terminations).astype(np.float32),
            timeouts=np.concatenate(self.truncations).astype(np.float32),
            episode_ids=np.repeat(np.arange(len(lengths), dtype=np.int32), lengths),
            timesteps=np.concatenate([np.arange(t, dtype=np.int32) for t in lengths]),
        )

    def select(self, indices) -> Episodes:
        """The episodes at `indices`, in that order; metadata kept."""
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64).reshape(-1)]
        if not idx:
            raise AilotInputError(f"dataset {self.dataset_id!r}", "selection is empty", "select at least one episode")
        bad = [i for i in idx if not -self.num_episodes <= i < self.num_episodes]
        if bad:
            raise AilotInputError(f"episode indices {bad[:5]}", f"out of range for {self.num_episodes} episodes",
                                  f"use indices in [0, {self.num_episodes})")
        return replace(
            self,
            observations=[self.observations[i] for i in idx],
            actions=[self.actions[i] for i in idx],
            rewards=[self.rewards[i] for i in idx],
            terminations=[self.terminations[i] for i in idx],
            truncations=[self.truncations[i] for i in idx],
        )


def top_n_episodes(episodes: Episodes, n: int) -> Episodes:
    """The `n` highest-return episodes, best first; equal returns keep dataset order."""
    if not isinstance(n, (int, np.integer)) or n < 1 or n > episodes.num_episodes:
        raise AilotInputError(
            "number of expert episodes (n_experts)",
            f"{n!r} is not in [1, {episodes.num_episodes}] for dataset {episodes.dataset_id!r}",
            f"choose 1..{episodes.num_episodes}, or generate/load an expert dataset with more episodes",
        )
    order = np.argsort(-episodes.returns, kind="stable")  # stable sort: ties by index
    return episodes.select(order[: int(n)])


# ---------------------------------------------------------------------- padding


def bucket_length(length: int, min_bucket: int = 64) -> int:
    """Next power of two >= length, at least `min_bucket` (one XLA compile per bucket, not per episode)."""
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    return max(int(min_bucket), 1 << max(int(length) - 1, 0).bit_length())


def power_of_two_sizes(lengths, min_bucket: int = 64) -> tuple[int, ...]:
    """The power-of-two bucket lengths (at least `min_bucket`) that episodes of these lengths fall in, ascending."""
    return tuple(sorted({bucket_length(int(t), min_bucket) for t in np.asarray(lengths).reshape(-1)}))


def fit_bucket(length: int, sizes) -> int:
    """The smallest of the bucket lengths `sizes` that holds `length` steps."""
    fits = [int(s) for s in sizes if int(s) >= length]
    if not fits:
        raise ValueError(f"no bucket of {sorted(int(s) for s in sizes)} holds an episode of {length} steps")
    return min(fits)


def length_buckets(lengths, min_bucket: int = 64, sizes=None) -> list[tuple[int, np.ndarray]]:
    """Group episode indices by bucket length: [(bucket_len, indices int64 ascending)], largest bucket first.

    Buckets are the given `sizes` (each episode in the smallest that holds it), else powers of two >= min_bucket.
    """
    lengths = np.asarray(lengths, dtype=np.int64).reshape(-1)
    if sizes is None:
        sizes = power_of_two_sizes(lengths, min_bucket)
    buckets = np.array([fit_bucket(int(t), sizes) for t in lengths], dtype=np.int64)
    return [(int(b), np.flatnonzero(buckets == b)) for b in sorted(set(buckets.tolist()), reverse=True)]


def pad_batch(arrays: list[np.ndarray], length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Stack arrays [T_i, ...] into padded [N, L, ...] (zeros past each T_i) and lengths int64 [N]."""
    if len(arrays) == 0:
        raise ValueError("pad_batch needs at least one array")
    lengths = np.array([len(a) for a in arrays], dtype=np.int64)
    L = int(lengths.max()) if length is None else int(length)
    if lengths.max() > L:
        raise ValueError(f"an array has length {int(lengths.max())} > pad length {L}")
    first = np.asarray(arrays[0])
    out = np.zeros((len(arrays), L, *first.shape[1:]), dtype=first.dtype)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = a
    return out, lengths


def unpad(padded, lengths) -> list[np.ndarray]:
    """Inverse of `pad_batch`: [N, L, ...] and lengths [N] -> list of [T_i, ...]."""
    padded = np.asarray(padded)
    return [padded[i, : int(t)] for i, t in enumerate(np.asarray(lengths).reshape(-1))]
