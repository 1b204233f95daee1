"""RLlib's offline learners (BC, MARWIL, IQL, CQL; new API stack, torch) on a dataset exported by ailot.export.

Experimental and not wired into the sweep. Needs torch and RLlib's extra dependencies, which the project does
not install: `pip install torch==2.13.0 dm_tree lz4 ormsgpack` (a CPU torch build; `ray[rllib]` itself would
pin gymnasium 1.2.2, older than the project's). Use:

    config = rllib_config("iql", "exports/smoke-ailot")      # spaces and env from the export's metadata
    algo, history = train(config, iterations=10)               # history: seconds and losses per iteration
    result = ailot.evaluate.evaluate(policy(algo), meta["env_spec"], obs_keys=tuple(meta["obs_keys"]))

RLlib reads the export's columns (obs, actions, rewards, new_obs, terminateds, truncateds, eps_id, t) with its
default input schema. On a small machine its offline pipeline deadlocks with the defaults (two
OfflinePreLearner actors of one CPU each leave no CPU for the Parquet read tasks on a 2-CPU Ray), so one
pre-learner actor with `prelearner_cpus` CPUs is used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ailot.errors import AilotInputError

ALGORITHMS = ("bc", "marwil", "iql", "cql")
ENV_NAME = "ailot_flat_obs"


def flat_env(env_config: dict):
    """The export's evaluation env with observations flattened as in the data (float32 Box of obs_dim)."""
    import gymnasium as gym

    from ailot.data.episodes import flatten_observation
    from ailot.envs import make_env

    env = make_env(env_config["env_spec"])
    keys = env_config.get("obs_keys")
    keys = tuple(keys) if keys is not None else None
    space = gym.spaces.Box(-np.inf, np.inf, (int(env_config["obs_dim"]),), np.float32)
    return gym.wrappers.TransformObservation(env, lambda o: flatten_observation(o, keys).astype(np.float32), space)


def _config_class(algo: str):
    if algo == "bc":
        from ray.rllib.algorithms.bc import BCConfig as cls
    elif algo == "marwil":
        from ray.rllib.algorithms.marwil import MARWILConfig as cls
    elif algo == "iql":
        from ray.rllib.algorithms.iql import IQLConfig as cls
    else:
        from ray.rllib.algorithms.cql import CQLConfig as cls
    return cls


def rllib_config(
    algo: str,
    export_dir: str | Path,
    *,
    batch_size: int = 256,
    updates_per_iteration: int = 20,
    prelearner_cpus: float = 0.5,
    training: dict[str, Any] | None = None,
):
    """An RLlib AlgorithmConfig training `algo` offline on the Parquet export in `export_dir`."""
    import gymnasium as gym

    from ailot.export import read_metadata

    if algo not in ALGORITHMS:
        raise AilotInputError(f"RLlib algorithm {algo!r}", "is not supported here",
                              f"use one of: {', '.join(ALGORITHMS)}")
    try:
        import torch  # noqa: F401
        import tree  # noqa: F401
    except ImportError as exc:
        raise AilotInputError("RLlib learners", f"need torch and dm_tree ({exc})",
                              "pip install torch==2.13.0 dm_tree lz4 ormsgpack") from None
    meta = read_metadata(export_dir)
    obs_space = gym.spaces.Box(-np.inf, np.inf, (meta["obs_dim"],), np.float32)
    act_space = gym.spaces.Box(-1.0, 1.0, (meta["action_dim"],), np.float32)
    env_config = {"env_spec": meta["env_spec"], "obs_keys": meta["obs_keys"], "obs_dim": meta["obs_dim"]}
    if meta["env_spec"] is not None:
        env = flat_env(env_config)
        act_space = env.action_space
        env.close()
    cls = _config_class(algo)
    config = cls()
    if algo == "cql":  # CQL builds SAC's local EnvRunner, which needs a real env
        if meta["env_spec"] is None:
            raise AilotInputError(f"export {str(export_dir)!r}", "has no env_spec, which RLlib's CQL needs",
                                  "export a dataset that records its environment, or use bc/marwil/iql")
        from ray.tune.registry import register_env

        register_env(ENV_NAME, flat_env)
        config = config.environment(env=ENV_NAME, env_config=env_config)
    else:
        config = config.environment(observation_space=obs_space, action_space=act_space)
    train_kwargs = {"train_batch_size_per_learner": batch_size, **({"lr": None} if algo == "cql" else {}),
                    **(training or {})}
    return (
        config.offline_data(input_=[str(Path(export_dir).resolve())],
                            dataset_num_iters_per_learner=updates_per_iteration,
                            map_batches_kwargs={"concurrency": 1, "num_cpus": prelearner_cpus})
        .learners(num_learners=0)
        .training(**train_kwargs)
    )


def train(config, iterations: int, algo=None) -> tuple[Any, list[dict[str, float]]]:
    """Build (unless `algo` is given) and train `iterations` times; returns the algorithm and, per iteration,
    its seconds, module steps trained and losses."""
    algo = algo if algo is not None else config.build_algo()
    history = []
    for i in range(iterations):
        t0 = time.time()
        result = algo.train()
        stats = result.get("learners", {}).get("default_policy", {})
        row = {"iteration": i, "seconds": time.time() - t0}
        for k, v in stats.items():
            if "loss" in k or k == "num_module_steps_trained":
                row[k] = float(v)
        history.append(row)
    return algo, history


def trained_module(algo):
    """The trained RLModule, from the learner's state (an offline algorithm may have no local EnvRunner, so
    `algo.get_module()` fails)."""
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

    multi = algo.offline_data.module_spec.build()
    path = f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}"
    multi.set_state(algo.learner_group.get_state(components=path)[COMPONENT_LEARNER][COMPONENT_RL_MODULE])
    module = multi[DEFAULT_MODULE_ID]
    module.eval()
    return module


def policy(algo) -> Callable[[np.ndarray, Any], np.ndarray]:
    """A deterministic policy (observations [B, d], key) -> actions [B, a], as ailot.evaluate.evaluate takes."""
    import torch
    from ray.rllib.core.columns import Columns

    module = trained_module(algo)
    dist_cls = module.get_inference_action_dist_cls()
    space = module.action_space
    low, high = np.asarray(space.low, np.float32), np.asarray(space.high, np.float32)

    def act(observations: np.ndarray, key=None) -> np.ndarray:
        with torch.no_grad():
            out = module.forward_inference({Columns.OBS: torch.as_tensor(np.asarray(observations, np.float32))})
            dist = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS]).to_deterministic()
            actions = dist.sample().cpu().numpy()
        return np.clip(actions, low, high)

    return act
