"""Load datasets into `Episodes`: Minari ids (local, or downloaded on request) and D4RL HDF5 files.

`load_dataset(spec)` dispatches on the spec: a path ending in .hdf5/.h5 is a D4RL file, anything else a
Minari dataset id. Every failure a user can cause (unknown id, a file that is not a D4RL file, empty
episodes, NaN/inf values, incompatible agent/expert observations) raises AilotInputError naming the input.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from ailot.data.episodes import Episodes, flatten_observation, resolve_obs_keys
from ailot.data.reference import d4rl_reference
from ailot.errors import AilotInputError, DatasetMissing

D4RL_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
# namespace/name-vN, segments starting with a letter or digit: no '..', no leading '/', no spaces, so an id
# can never name (or, with download=True, write) a path outside MINARI_DATASETS_PATH.
_MINARI_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)*$")
_GENERATE_HINT = (
    "generate the local PointMaze suite with `python -m ailot.data.generate --maze umaze` "
    "(ids ailot/pointmaze-<maze>/...), download a public one with `minari download <id>` or "
    "load_minari(id, download=True), or set MINARI_DATASETS_PATH to the folder that holds it"
)

# the MuJoCo envs whose datasets `ailot collect` names ailot/<env>/<kind>-v0
_COLLECTED_ENVS = {"hopper": "Hopper-v5", "walker2d": "Walker2d-v5", "halfcheetah": "HalfCheetah-v5", "ant": "Ant-v5"}


# the recipes committed with the results (`ailot collect --save-recipe`), one folder per <env id lowercased>-s<seed>
RECIPES = Path(__file__).resolve().parents[2] / "results" / "collection" / "recipes"


def _missing_hint(dataset_id: str) -> str:
    """How to make a missing dataset: `ailot collect` for a locomotion id of ours (from the committed recipe when
    there is one), else the PointMaze suite."""
    parts = dataset_id.split("/")
    if len(parts) == 3 and parts[0] == "ailot" and parts[1] in _COLLECTED_ENVS:
        env = _COLLECTED_ENVS[parts[1]]
        recipe = RECIPES / f"{env.lower()}-s0"
        if (recipe / "recipe.json").is_file():
            shown = os.path.relpath(recipe) if recipe.is_relative_to(Path.cwd()) else str(recipe)
            return (f"rebuild it with `ailot collect --env {env} --seed 0 --from-recipe {shown}` (the committed "
                    "recipe: rollouts of its actors and SAC only up to the medium snapshot, checked byte for byte), "
                    "or set MINARI_DATASETS_PATH to the folder that holds it")
        return (f"make it with `ailot collect --env {env} --seed 0` (SAC, then the datasets ailot/{parts[1]}/"
                "<kind>-v0; resumable, hours on a CPU: results/README.md), or set MINARI_DATASETS_PATH to the "
                "folder that holds it")
    return _GENERATE_HINT


def _spec_json(raw: str | None) -> str | None:
    """Normalise a stored EnvSpec JSON (dropping keys gymnasium 1.x no longer accepts, as Minari does)."""
    if raw is None:
        return None
    from gymnasium.envs.registration import EnvSpec

    cleaned = (raw.replace('"order_enforce": true,', "").replace('"apply_api_compatibility": false,', "")
               .replace('"autoreset": false, ', ""))
    return EnvSpec.from_json(cleaned).to_json()


def _env_id_json(env_id: str | None) -> str | None:
    if env_id is None:
        return None
    from ailot.envs import env_spec_from

    return env_spec_from(env_id).to_json()


def is_d4rl_path(spec: str | os.PathLike) -> bool:
    return str(spec).lower().endswith((".hdf5", ".h5"))


def check_dataset_spec(spec: str | os.PathLike) -> None:
    """Refuse a dataset spec that is neither a D4RL file path nor a safe Minari id (cheap; nothing is read)."""
    text = str(spec)
    if is_d4rl_path(text):
        return
    if not text:
        raise AilotInputError("dataset", "is empty", "give a Minari dataset id or a D4RL .hdf5 path")
    if not _MINARI_ID.match(text):
        problem = ("is a file, but only D4RL .hdf5/.h5 files can be loaded" if Path(text).is_file() else
                   "is not a Minari id (namespace/name-vN: letters, digits, '_', '.', '-' between single '/', "
                   "no '..' and no leading '/')")
        raise AilotInputError(f"dataset {text!r}", problem, "give a Minari id such as "
                              "ailot/pointmaze-umaze/expert-v0, or a D4RL file ending in .hdf5")


def load_minari(
    dataset_id: str,
    obs_keys: str | tuple[str, ...] | None = None,
    download: bool = False,
    env_id: str | None = None,
) -> Episodes:
    """Load a Minari dataset from MINARI_DATASETS_PATH (downloading it only if `download`).

    env_spec: the dataset's evaluation env spec if present, else its collection env spec, else `env_id`.
    Reference scores come from the dataset metadata. Dict observations are flattened with `obs_keys`
    (see ailot.data.episodes).
    """
    import gymnasium as gym
    import minari

    from ailot.envs import register_envs

    check_dataset_spec(dataset_id)  # before minari joins the id onto MINARI_DATASETS_PATH
    register_envs()  # the stored env specs name gymnasium-robotics entry points
    root = os.environ.get("MINARI_DATASETS_PATH", str(Path.home() / ".minari" / "datasets"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # minari warns about optional metadata of third-party datasets
            dataset = minari.load_dataset(dataset_id, download=download)
    except FileNotFoundError:
        raise DatasetMissing(f"dataset {dataset_id!r}", f"not found under MINARI_DATASETS_PATH={root}",
                             _missing_hint(dataset_id)) from None
    except (ValueError, OSError, RuntimeError) as exc:  # bad id syntax, unsupported version, network
        raise AilotInputError(f"dataset {dataset_id!r}", f"could not be loaded ({exc})", _GENERATE_HINT) from None

    space = dataset.observation_space
    keys: tuple[str, ...] | None = None
    if isinstance(space, gym.spaces.Dict):
        nested = [k for k, v in space.spaces.items() if not isinstance(v, gym.spaces.Box)]
        if nested:
            raise AilotInputError(f"dataset {dataset_id!r} observations", f"keys {nested} are not flat Box spaces",
                                  "use a dataset whose dict observations hold only arrays")
        keys = resolve_obs_keys(list(space.spaces), obs_keys)
    elif obs_keys is not None and tuple(np.atleast_1d(obs_keys)) != ("all",):
        raise AilotInputError("obs_keys", f"given ({obs_keys!r}) but dataset {dataset_id!r} has array observations",
                              "leave obs_keys unset for this dataset")

    obs, act, rew, term, trunc = [], [], [], [], []
    for ep in dataset.iterate_episodes():
        o = flatten_observation(ep.observations, keys) if keys is not None else np.asarray(ep.observations)
        obs.append(o.reshape(len(o), -1))
        act.append(np.asarray(ep.actions).reshape(len(ep.rewards), -1))
        rew.append(ep.rewards)
        term.append(ep.terminations)
        trunc.append(ep.truncations)
    if not obs:
        raise AilotInputError(f"dataset {dataset_id!r}", "has no episodes", "regenerate or re-download it")

    meta = dataset.storage.metadata
    env_spec = _spec_json(meta.get("eval_env_spec") or meta.get("env_spec")) or _env_id_json(env_id)
    ref_min, ref_max = meta.get("ref_min_score"), meta.get("ref_max_score")
    return Episodes(
        observations=obs, actions=act, rewards=rew, terminations=term, truncations=trunc,
        dataset_id=dataset_id, env_spec=env_spec,
        ref_min_score=None if ref_min is None else float(ref_min),
        ref_max_score=None if ref_max is None else float(ref_max),
        obs_keys=keys,
    )


# D4RL's gym-mujoco v2 files by name, and where they download from (d4rl/locomotion/__init__.py's dataset URLs)
D4RL_MUJOCO_URL = "http://rail.eecs.berkeley.edu/datasets/offline_rl/gym_mujoco_v2/{name}"
_D4RL_MUJOCO_FILE = re.compile(r"(halfcheetah|hopper|walker2d|ant)_(random|medium|medium_replay|medium_expert|expert|"
                               r"full_replay)-v2\.hdf5")


def d4rl_download_hint(path: Path) -> str:
    """How to get a missing D4RL file: the download command for D4RL's gym-mujoco v2 names, else check the path."""
    if _D4RL_MUJOCO_FILE.fullmatch(path.name):
        url = D4RL_MUJOCO_URL.format(name=path.name)
        return f"download it on a machine with network access: mkdir -p {path.parent} && curl -fL -o {path} {url}"
    return "check the path, or give a Minari dataset id instead"


def load_d4rl_hdf5(path: str | os.PathLike, dataset_id: str | None = None, env_id: str | None = None) -> Episodes:
    """Load a D4RL-format HDF5 file (flat `observations`, `actions`, `rewards`, `terminals`, optional
    `timeouts` and `next_observations`).

    Episodes end at terminals | timeouts (and at the end of the file). With `next_observations` each
    episode keeps every transition and ends with next_observations of its last step. Without them the last
    transition of each episode is dropped, as D4RL's `qlearning_dataset` does, because its next state is
    not stored (the next row already belongs to the next episode); a terminal flag on that dropped step
    is lost with it. Reference scores come from the D4RL table when `dataset_id` (default: the file stem)
    or `env_id` is known; env_spec from `env_id` when given.
    """
    import h5py

    path = Path(path)
    dataset_id = dataset_id or path.stem
    what = f"D4RL file {str(path)!r}"
    if path.is_dir():
        raise AilotInputError(what, "is a folder", "give the .hdf5 file's path, or a Minari dataset id instead")
    if not path.is_file():
        raise DatasetMissing(what, "does not exist", d4rl_download_hint(path))
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in D4RL_REQUIRED_KEYS if k not in f]
            if missing:
                raise AilotInputError(what, f"is not a D4RL dataset: missing keys {missing} (has {sorted(f.keys())})",
                                      "pass a D4RL .hdf5 file (observations, actions, rewards, terminals[, timeouts])")
            data = {k: np.asarray(f[k]) for k in (*D4RL_REQUIRED_KEYS, "timeouts", "next_observations") if k in f}
    except OSError as exc:
        raise AilotInputError(what, f"is not a readable HDF5 file ({exc})", "pass a D4RL .hdf5 file") from None

    for key, arr in data.items():  # before any reshape: a scalar, text or empty array fails there unclearly
        if arr.ndim == 0 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise AilotInputError(what, f"'{key}' is a {arr.dtype} array of shape {arr.shape}",
                                  "store numeric arrays with one row per transition")
    if len(data["observations"]) == 0:
        raise AilotInputError(what, "has no rows (0 transitions)", "pass a D4RL file with at least one episode")
    obs = data["observations"].reshape(len(data["observations"]), -1)
    n = len(obs)
    act = data["actions"].reshape(len(data["actions"]), -1)
    rew = data["rewards"].reshape(-1)
    terminals = data["terminals"].reshape(-1).astype(bool)
    timeouts = data["timeouts"].reshape(-1).astype(bool) if "timeouts" in data else np.zeros(n, bool)
    next_obs = data.get("next_observations")
    sizes = {"actions": len(act), "rewards": len(rew), "terminals": len(terminals), "timeouts": len(timeouts)}
    if next_obs is not None:
        next_obs = next_obs.reshape(len(next_obs), -1)
        sizes["next_observations"] = len(next_obs)
    wrong = {k: v for k, v in sizes.items() if v != n}
    if n == 0 or wrong:
        raise AilotInputError(what, f"has {n} observations but {wrong or 'no rows'}",
                              "every D4RL array must have one row per transition")

    ends = np.flatnonzero(terminals | timeouts)
    if len(ends) == 0 or ends[-1] != n - 1:
        ends = np.append(ends, n - 1)  # the trailing partial episode ends at the file's end (a truncation)
    starts = np.concatenate([[0], ends[:-1] + 1])
    ep = {"observations": [], "actions": [], "rewards": [], "terminations": [], "truncations": []}
    dropped = 0
    for s, e in zip(starts, ends):
        if next_obs is not None:
            o, stop = np.concatenate([obs[s : e + 1], next_obs[e : e + 1]]), e + 1
        else:
            o, stop = obs[s : e + 1], e  # drop transition e: its next state is not in the file
        if stop - s == 0:
            dropped += 1  # a one-step episode has nothing left without next_observations
            continue
        trunc = timeouts[s:stop].copy()
        if next_obs is None or not (terminals[e] or timeouts[e]):
            trunc[-1] = not terminals[stop - 1]  # cut here by dropping or by the file's end
        ep["observations"].append(o)
        ep["actions"].append(act[s:stop])
        ep["rewards"].append(rew[s:stop])
        ep["terminations"].append(terminals[s:stop])
        ep["truncations"].append(trunc)
    if not ep["observations"]:
        raise AilotInputError(what, f"has no episode with a transition ({dropped} one-step episodes)",
                              "use a file with longer episodes, or one that stores next_observations")
    refs = d4rl_reference(dataset_id, env_id)
    return Episodes(
        **ep, dataset_id=dataset_id, env_spec=_env_id_json(env_id),
        ref_min_score=None if refs is None else refs[0], ref_max_score=None if refs is None else refs[1],
    )


def load_dataset(spec: str | os.PathLike, **kw) -> Episodes:
    """Load a D4RL file (path ending .hdf5/.h5) or a Minari dataset id.

    Keyword arguments: obs_keys, download (Minari); dataset_id (D4RL); env_id (both: the evaluation env
    when the dataset does not name one). obs_keys must be unset for D4RL files (array observations).
    """
    text = str(spec)
    if is_d4rl_path(text):
        obs_keys = kw.pop("obs_keys", None)
        if obs_keys is not None:
            raise AilotInputError("obs_keys", f"given ({obs_keys!r}) for D4RL file {text!r}, whose observations "
                                  "are plain arrays", "leave obs_keys unset for D4RL files")
        kw.pop("download", None)
        return load_d4rl_hdf5(text, **kw)
    check_dataset_spec(text)
    return load_minari(text, **kw)


def check_compatible(agent: Episodes, expert: Episodes) -> None:
    """Refuse an agent/expert pair whose observations are not the same space (OT compares them).

    Dict-key choices must match when both datasets have dict observations; a D4RL array dataset (keys None)
    may pair with a Minari dict one of the same dimension (e.g. maze2d hdf5 and PointMaze `observation`).
    """
    keys_differ = None not in (agent.obs_keys, expert.obs_keys) and agent.obs_keys != expert.obs_keys
    if agent.obs_dim != expert.obs_dim or keys_differ:
        raise AilotInputError(
            f"datasets {agent.dataset_id!r} (agent) and {expert.dataset_id!r} (expert)",
            f"observations differ: dim {agent.obs_dim} vs {expert.obs_dim}, "
            f"keys {agent.obs_keys} vs {expert.obs_keys}",
            "use an expert dataset from the same environment and the same obs_keys for both",
        )
