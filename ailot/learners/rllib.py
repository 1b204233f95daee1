"""RLlib's offline learners (BC, MARWIL, IQL, CQL; new API stack, torch) as sweep learners, and on an export.

In a sweep config they are learners like the others (settings validated by `make_config`; unknown keys stop the
sweep at load time):

    learners:
      iql: {}
      rllib_iql: {}                        # RLlib's IQL, paper hyperparameters below (not RLlib's defaults)
      rllib_cql: {min_q_weight: 10.0}      # any field of the RLlib*Config dataclass below (see the CQL note)
      rllib_bc: {}                         # BC = MARWIL with beta 0; ignores rewards (one trial per seed)
      rllib_marwil: {}

`trial_learner` gives `pipeline.run_trial` the learner of an `rllib_*` trial, which then runs as ours do: the
same transitions and rewards after the same reward scaling (`pipeline.prepare_trial`), exported with
`ailot.export` into the trial's directory (`rllib-export/`) and read back from that Parquet, `train.steps`
RLlib updates of `train.batch_size` transitions sampled uniformly (as our learners sample), an evaluation after
every `train.eval_every` updates through `pipeline.evaluation_row` (same env, seeds and row schema), rows
`report`ed with the same callback.

Data path and resources: the trial drives RLlib's `Learner` (the algorithm's module, losses, optimizers and
target updates) in its own process with `learner.update(batch=...)`; it does not go through `algo.train()` and
RLlib's Ray Data pipeline. That pipeline, inside a Tune trial on a small Ray, (1) needs CPUs outside the trial's
reservation: Ray Data sizes itself by the CPUs *not* reserved (0 inside a 2-CPU Ray running trials) and its
parquet `ListFiles` task always asks for 1 CPU, so with the defaults it deadlocks; a placement group with an extra
1-CPU bundle plus `DataContext.scheduling_strategy = PlacementGroupSchedulingStrategy(current pg)` does run
(measured), but (2) it starts a fresh OfflinePreLearner actor (a new process importing torch and RLlib, about
10 s here) at every pass over the data and every `algo.train()`, i.e. every ~12 updates on a 3k-transition
dataset, and (3) its pre-learner samples from a small buffer of consecutive rows rather than uniformly. So an
RLlib trial needs only the trial's own CPUs (`resources.cpus_per_trial`; torch uses that many threads) and
nothing else of the cluster; no extra bundle is requested.

Checkpoints: every report saves the learner's full state (RLModule weights incl. target networks, optimizer
states; `Learner.get_state()`), the update count and the sampling rng into the trial checkpoint
(`RLlibLearner.save`), so a retried or resumed trial continues from its last evaluation with no update repeated
and no row duplicated, exactly like the JAX learners.

Not done: the actor's cosine lr decay that our IQL has; RLlib's learners keep a constant lr.

Standalone use on an export (through RLlib's own `algo.train()` and Ray Data; fine outside Tune with free CPUs):

    config = rllib_config("iql", "exports/smoke-ailot")      # spaces and env from the export's metadata
    algo, history = train(config, iterations=10)               # history: seconds and losses per iteration
    result = ailot.evaluate.evaluate(policy(algo), meta["env_spec"], obs_keys=tuple(meta["obs_keys"]))

RLlib reads the export's columns (obs, actions, rewards, new_obs, terminateds, truncateds, eps_id, t) with its
default input schema; one pre-learner actor with `prelearner_cpus` CPUs is used (the defaults, two 1-CPU
actors, deadlock on a 2-CPU Ray).

Needs the `rllib` extra (torch, dm_tree, lz4, ormsgpack; `ray[rllib]` itself would pin an older gymnasium).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ailot.errors import AilotInputError

ALGORITHMS = ("bc", "marwil", "iql", "cql")
ENV_NAME = "ailot_flat_obs"
EXPORT_DIR = "rllib-export"


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
    return module_policy(trained_module(algo))


def module_policy(module) -> Callable[[np.ndarray, Any], np.ndarray]:
    """The deterministic policy of an RLModule (mean action, clipped to the module's action space)."""
    import torch
    from ray.rllib.core.columns import Columns

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


# ---------------------------------------------------------------- sweep learners: settings


def _require(ok: bool, name: str, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise AilotInputError(f"learners.{name}.{key}", f"{value!r} is out of range", f"use {rule}")


@dataclasses.dataclass(frozen=True)
class RLlibIQLConfig:
    """RLlib's IQL with the IQL paper's settings (Kostrikov et al. 2021), not RLlib's defaults."""

    name: ClassVar[str] = "rllib_iql"
    actor_lr: float = 3e-4  # IQL paper App. B (reference configs/mujoco_config.py); RLlib default also 3e-4
    critic_lr: float = 3e-4  # IQL paper App. B
    value_lr: float = 3e-4  # IQL paper App. B
    hidden_dims: tuple[int, ...] = (256, 256)  # IQL paper App. B: 2 x 256 MLPs for actor, critics and V
    discount: float = 0.99  # IQL paper App. B
    tau: float = 0.005  # IQL paper App. B target Polyak rate; RLlib default 1.0 (a hard copy every update)
    expectile: float = 0.7  # IQL paper Table 3: 0.7 locomotion, 0.9 antmaze (and maze2d, see iql.get_config)
    temperature: float = 3.0  # IQL paper Table 3 beta: 3 locomotion, 10 antmaze (maze2d: 1, iql.get_config); RLlib 0.1

    def validate(self) -> None:
        for key in ("actor_lr", "critic_lr", "value_lr", "temperature"):
            _require(getattr(self, key) > 0, self.name, key, getattr(self, key), "a positive number")
        _require(0.0 < self.expectile < 1.0, self.name, "expectile", self.expectile, "a value in (0, 1)")
        _require(0.0 <= self.discount <= 1.0, self.name, "discount", self.discount, "a value in [0, 1]")
        _require(0.0 < self.tau <= 1.0, self.name, "tau", self.tau, "a value in (0, 1]")

    def training(self) -> dict[str, Any]:
        return {"actor_lr": self.actor_lr, "critic_lr": self.critic_lr, "value_lr": self.value_lr,
                "gamma": self.discount, "tau": self.tau, "target_network_update_freq": 0,  # Polyak every update
                "expectile": self.expectile, "beta": self.temperature, "twin_q": True}


@dataclasses.dataclass(frozen=True)
class RLlibCQLConfig:
    """RLlib's CQL (SAC-based, CQL(H)) with the CQL paper's / its reference code's settings."""

    name: ClassVar[str] = "rllib_cql"
    actor_lr: float = 1e-4  # CQL reference code README, Gym-MuJoCo: --policy_lr=1e-4 (paper App. F: 3e-5 also used)
    critic_lr: float = 3e-4  # CQL paper App. F: Q-function lr 3e-4; RLlib default 1e-3
    alpha_lr: float = 3e-4  # SAC entropy-temperature lr as in CQL's SAC base (3e-4); RLlib default 1e-3
    hidden_dims: tuple[int, ...] = (256, 256)  # CQL paper App. F: 2 x 256 (CORL cql.py uses 3 x 256)
    discount: float = 0.99  # CQL paper App. F
    tau: float = 0.005  # CQL paper App. F (SAC soft target update)
    min_q_weight: float = 5.0  # CQL alpha: 5.0 Gym-MuJoCo (CQL README), 10.0 antmaze/maze2d (CORL antmaze)
    num_actions: int = 10  # CQL paper App. F: 10 sampled actions for the log-sum-exp
    temperature: float = 1.0  # CQL(H) log-sum-exp temperature (reference code default)
    bc_iters: int = 0  # no BC warm start: RLlib counts it in algo.train() iterations, which a trial does not run

    def validate(self) -> None:
        for key in ("actor_lr", "critic_lr", "alpha_lr", "temperature"):
            _require(getattr(self, key) > 0, self.name, key, getattr(self, key), "a positive number")
        _require(self.min_q_weight >= 0, self.name, "min_q_weight", self.min_q_weight, "a value >= 0")
        _require(self.num_actions >= 1, self.name, "num_actions", self.num_actions, "a positive int")
        _require(self.bc_iters >= 0, self.name, "bc_iters", self.bc_iters, "a value >= 0")
        _require(0.0 <= self.discount <= 1.0, self.name, "discount", self.discount, "a value in [0, 1]")
        _require(0.0 < self.tau <= 1.0, self.name, "tau", self.tau, "a value in (0, 1]")

    def training(self) -> dict[str, Any]:
        return {"actor_lr": self.actor_lr, "critic_lr": self.critic_lr, "alpha_lr": self.alpha_lr, "lr": None,
                "gamma": self.discount, "tau": self.tau, "min_q_weight": self.min_q_weight,
                "num_actions": self.num_actions, "temperature": self.temperature, "bc_iters": self.bc_iters,
                "lagrangian": False, "twin_q": True}


@dataclasses.dataclass(frozen=True)
class RLlibMARWILConfig:
    """RLlib's MARWIL (Wang et al. 2018); value targets are the discounted returns-to-go of each episode."""

    name: ClassVar[str] = "rllib_marwil"
    lr: float = 1e-4  # RLlib's MARWIL default (the MARWIL paper gives no offline-benchmark lr)
    hidden_dims: tuple[int, ...] = (256, 256)  # as IQL's actor (ailot's bc/iql), for a like-for-like comparison
    discount: float = 0.99  # as IQL (the return-to-go discount)
    beta: float = 1.0  # MARWIL paper beta = 1 (advantage exponent); RLlib default 1.0
    vf_coeff: float = 1.0  # RLlib's MARWIL default (value loss weight)

    def validate(self) -> None:
        _require(self.lr > 0, self.name, "lr", self.lr, "a positive number")
        _require(self.beta >= 0, self.name, "beta", self.beta, "a value >= 0")
        _require(self.vf_coeff >= 0, self.name, "vf_coeff", self.vf_coeff, "a value >= 0")
        _require(0.0 <= self.discount <= 1.0, self.name, "discount", self.discount, "a value in [0, 1]")

    def training(self) -> dict[str, Any]:
        return {"lr": self.lr, "gamma": self.discount, "beta": self.beta, "vf_coeff": self.vf_coeff}


@dataclasses.dataclass(frozen=True)
class RLlibBCConfig:
    """RLlib's BC: MARWIL with beta 0 (no value function, no rewards)."""

    name: ClassVar[str] = "rllib_bc"
    lr: float = 3e-4  # as ailot's bc (IQL reference actor lr); RLlib's BC default is 1e-4
    hidden_dims: tuple[int, ...] = (256, 256)  # as ailot's bc (IQL reference actor)

    def validate(self) -> None:
        _require(self.lr > 0, self.name, "lr", self.lr, "a positive number")

    def training(self) -> dict[str, Any]:
        return {"lr": self.lr, "beta": 0.0}


SETTINGS: dict[str, type] = {"rllib_bc": RLlibBCConfig, "rllib_marwil": RLlibMARWILConfig,
                             "rllib_iql": RLlibIQLConfig, "rllib_cql": RLlibCQLConfig}
SWEEP_LEARNERS = tuple(SETTINGS)


def make_config(name: str, overrides: dict[str, Any] | None = None, task_family: str = "locomotion"):
    """The frozen settings of RLlib learner `name` for a task family with `overrides` applied and checked (the
    same checks and messages as ailot's learners). `max_steps` is accepted and ignored (no lr decay here)."""
    from ailot.learners import base

    if name not in SETTINGS:
        raise AilotInputError(f"learner {name!r}", "is not a known RLlib learner", f"use one of: {', '.join(SETTINGS)}")
    family = base.check_family(task_family)
    default = SETTINGS[name]()
    if name == "rllib_iql":  # the same per-family expectile / temperature as ailot's IQL
        from ailot.learners.iql import get_config

        ours = get_config(family)
        default = dataclasses.replace(default, expectile=ours.expectile, temperature=ours.temperature)
    elif name == "rllib_cql" and family in ("antmaze", "maze2d"):
        default = dataclasses.replace(default, min_q_weight=10.0)  # CQL alpha 10 on sparse maze tasks
    overrides = dict(overrides or {})
    overrides.pop("max_steps", None)
    return base.apply_overrides(default, overrides, name)


def rllib_algo_config(settings, obs_dim: int, action_low: np.ndarray, action_high: np.ndarray, batch_size: int,
                      seed: int):
    """The RLlib AlgorithmConfig of a sweep learner, every paper hyperparameter set explicitly."""
    import gymnasium as gym

    algo = settings.name.removeprefix("rllib_")
    obs_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
    act_space = gym.spaces.Box(np.asarray(action_low, np.float32), np.asarray(action_high, np.float32),
                               dtype=np.float32)
    config = _config_class(algo)()
    return (config.environment(observation_space=obs_space, action_space=act_space)
            .learners(num_learners=0)
            .training(train_batch_size_per_learner=batch_size, **settings.training())
            .rl_module(model_config={"fcnet_hiddens": list(settings.hidden_dims), "fcnet_activation": "relu"})
            .debugging(seed=seed))


# ---------------------------------------------------------------- sweep learners: the learner and its checkpoint


def _tuples_as_lists(obj):
    """flax's msgpack packs lists, not tuples (e.g. Adam's betas in an optimizer state)."""
    if isinstance(obj, dict):
        return {k: _tuples_as_lists(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_tuples_as_lists(v) for v in obj]
    return obj


class RLlibLearner:
    """An RLlib Learner (module, losses, optimizers, targets) with the update count and the sampling rng."""

    def __init__(self, settings, config, seed: int):
        import torch
        from ray.rllib.core import DEFAULT_MODULE_ID

        torch.manual_seed(seed)
        spaces = (config.observation_space, config.action_space)
        self.settings = settings
        # build_learner also builds: a second build() re-creates SAC/CQL's log-alpha outside its optimizer
        self.learner = config.build_learner(env=None, spaces={"__env__": spaces, DEFAULT_MODULE_ID: spaces})
        self.step = 0
        self.rng = np.random.default_rng([seed, 0x5EED])
        self.batch_size = config.train_batch_size_per_learner

    def train(self, data: dict[str, np.ndarray], num_steps: int) -> dict[str, float]:
        """`num_steps` updates on minibatches sampled uniformly from `data` (RLlib column names)."""
        from ray.rllib.core import DEFAULT_MODULE_ID
        from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
        from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

        n = len(next(iter(data.values())))
        for _ in range(num_steps):
            idx = self.rng.integers(0, n, self.batch_size)
            batch = SampleBatch({k: v[idx] for k, v in data.items()})
            self.step += 1
            self.learner.update(batch=MultiAgentBatch({DEFAULT_MODULE_ID: batch}, env_steps=self.batch_size),
                                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: self.step * self.batch_size})
        return {}

    def policy(self) -> Callable[[np.ndarray, Any], np.ndarray]:
        from ray.rllib.core import DEFAULT_MODULE_ID

        module = self.learner.module[DEFAULT_MODULE_ID].unwrapped()
        module.eval()
        act = module_policy(module)
        module.train()
        return act

    def _settings_json(self) -> str:
        return json.dumps({"learner": self.settings.name, **dataclasses.asdict(self.settings)}, sort_keys=True)

    def save(self, path: str | Path) -> None:
        """Learner state (weights, targets, optimizers: numpy arrays and scalars), step and rng as msgpack
        (no pickle), written atomically."""
        import flax.serialization

        from ailot.files import write_atomic

        state = self.learner.get_state(not_components="metrics_logger")
        write_atomic(path, flax.serialization.msgpack_serialize({
            "settings": self._settings_json(), "step": self.step, "rng": json.dumps(self.rng.bit_generator.state),
            "learner": _tuples_as_lists(state)}))

    def load(self, path: str | Path) -> RLlibLearner:
        """Restore a state written by `save` (same learner and settings) into this learner."""
        import flax.serialization

        try:
            raw = flax.serialization.msgpack_restore(Path(path).read_bytes())
        except (OSError, ValueError, TypeError) as exc:
            raise AilotInputError(f"RLlib checkpoint {str(path)!r}", f"cannot be read ({exc})",
                                  "delete the trial's checkpoints to retrain it") from None
        if raw.get("settings") != self._settings_json():
            raise AilotInputError(f"RLlib checkpoint {str(path)!r}", "was written with other learner settings",
                                  "use a new sweep name or storage for changed settings")
        self.learner.set_state(raw["learner"])
        self.step = int(raw["step"])
        self.rng.bit_generator.state = json.loads(raw["rng"])  # JSON: PCG64's state has 128-bit ints
        return self


# ---------------------------------------------------------------- sweep learners: the trial


def _returns_to_go(rewards: np.ndarray, episode_ids: np.ndarray, discount: float) -> np.ndarray:
    """Discounted return from each transition to its episode's end (rows episode by episode, time ascending)."""
    out = np.zeros(len(rewards), np.float64)
    running = 0.0
    for i in range(len(rewards) - 1, -1, -1):
        if i == len(rewards) - 1 or episode_ids[i + 1] != episode_ids[i]:
            running = 0.0
        running = float(rewards[i]) + discount * running
        out[i] = running
    return out.astype(np.float32)


def _trial_dir() -> Path:
    """The Tune trial's directory inside a trial, else a new temporary directory."""
    try:
        from ray import tune

        trial_dir = tune.get_context().get_trial_dir()
    except Exception:  # not inside a Tune session
        trial_dir = None
    return Path(trial_dir) if trial_dir else Path(tempfile.mkdtemp(prefix="ailot-rllib-"))


def trial_learner(name: str, settings, inputs):
    """For the sweep's trial loop (`ailot.learners.trial.build`): the RLlib learner `name`, trained on the trial's
    transitions (`inputs`, a `trial.TrialInputs`) exported to Parquet: (learner, `train(learner, n) -> (learner,
    {})` (no training metrics from RLlib's Learner), `policy(learner) -> (obs, key) -> actions`)."""
    import logging

    import torch
    from ray.rllib.core.columns import Columns

    from ailot import learners
    from ailot.export import export_dataset, read_arrays

    log = logging.getLogger(__name__)
    agent = inputs.agent
    torch.set_num_threads(max(1, int(inputs.cpus)))
    setting = inputs.labeller_setting or {"labeller": "none"}
    out = export_dataset(
        agent, inputs.data["rewards"], _trial_dir() / EXPORT_DIR, overwrite=True,
        labeller_settings=setting if setting["labeller"] != "none" else {"labeller": "zero"},
        reward_setting=inputs.reward_setting if setting["labeller"] != "none" else {"labeller": "zero"},
        dataset_fingerprint=agent.fingerprint(),
        extra_metadata={"trial_id": inputs.trial_id, "learner": name, "labeller": setting,
                        "rewards": f"scaled for the learner ({learners.reward_scaling(name, inputs.task_family)})"},
    )
    arrays = read_arrays(out)  # RLlib trains on what was exported
    data = {Columns.OBS: arrays["obs"], Columns.ACTIONS: arrays["actions"], Columns.REWARDS: arrays["rewards"],
            Columns.NEXT_OBS: arrays["new_obs"], Columns.TERMINATEDS: arrays["terminateds"],
            Columns.TRUNCATEDS: arrays["truncateds"]}
    if name == "rllib_marwil":
        data[Columns.VALUE_TARGETS] = _returns_to_go(arrays["rewards"], arrays["eps_id"], settings.discount)
    config = rllib_algo_config(settings, agent.obs_dim, inputs.action_low, inputs.action_high, inputs.batch_size,
                               inputs.seed)

    def train(learner: RLlibLearner, n: int) -> tuple[RLlibLearner, dict[str, float]]:
        t0, start = time.time(), learner.step
        learner.train(data, n)
        log.info("%s: updates %d-%d at %.1f updates/s", name, start, learner.step, n / (time.time() - t0))
        return learner, {}

    return RLlibLearner(settings, config, inputs.seed), train, RLlibLearner.policy
