"""Sweep configuration: YAML -> validated, frozen dataclasses, and the grid of trials it expands to.

Every key is checked on load; an unknown key or a bad value stops the sweep before any work, with a message
naming the key and the fix. Scalars or lists are accepted for grid axes (a list means "sweep over these").
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ailot import labellers as labeller_registry
from ailot import storage
from ailot.errors import AilotInputError
from ailot.numbers import as_number, finite_number
from ailot.storage import StoragePath

TASK_FAMILIES = ("locomotion", "antmaze", "maze2d")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# datasets[].expert: the expert set is the top-N episodes of the agent dataset itself (OTR's released sweep,
# otr/configs/otr_iql_mujoco.py get_sweep: expert_dataset_name = offline_dataset_name)
SAME_EXPERT = "same"

# Labeller settings and their defaults (each labeller's file says where they come from). Lists in the YAML
# are grid axes.
LABELLERS = tuple(labeller_registry.LABELLERS)
LABELLER_DEFAULTS: dict[str, dict[str, Any]] = {n: c.defaults() for n, c in labeller_registry.LABELLERS.items()}


def _error(key: str, problem: str, fix: str) -> AilotInputError:
    return AilotInputError(f"config key '{key}'", problem, fix)


def _check_keys(section: str, given: dict, allowed) -> None:
    if not isinstance(given, dict):
        raise _error(section, f"expected a mapping, got {type(given).__name__}", "write it as key: value pairs")
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise _error(
            f"{section}.{unknown[0]}" if section else unknown[0],
            "is not a known key",
            f"use one of: {', '.join(sorted(allowed))}",
        )


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


@dataclass(frozen=True)
class DatasetConfig:
    agent: str  # Minari id or path to a D4RL .hdf5 file (reward-free use; true rewards for the baseline)
    expert: str  # dataset whose top-N episodes form the expert set; YAML `same` is stored as the agent id
    name: str = ""  # short name for results (default: the agent id)
    task_family: str = "maze2d"  # reward scaling and IQL preset: locomotion | antmaze | maze2d
    env: str | None = None  # evaluation env id, needed for D4RL files without an env spec
    obs_keys: tuple[str, ...] | None = None  # dict observation keys (None: the maze default "observation")
    generate: dict | None = None  # ailot.data.generate arguments used when the datasets are missing
    expert_actions: bool = True  # false: the expert set is state-only; methods that read expert actions are refused

    @property
    def label(self) -> str:
        return self.name or self.agent

    @property
    def expert_is_agent(self) -> bool:
        """The expert set comes from the agent dataset (`expert: same`, OTR's protocol)."""
        return self.expert == self.agent


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 100_000  # learner updates per trial
    batch_size: int = 256
    eval_every: int = 10_000  # updates between evaluations (the last step is always evaluated)
    eval_episodes: int = 10
    eval_envs: int = 5  # environments stepped in parallel during evaluation
    chunk: int = 1000  # updates per jitted dispatch


@dataclass(frozen=True)
class ResourcesConfig:
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0  # a fraction packs several trials on one GPU
    relabel_actors: int = 0  # 0: one per GPU if any, else one per CPU (one per 2 CPUs with pin_cpus off)
    max_concurrent_trials: int = 0  # 0: as many as resources allow
    max_failures: int = 2  # retries of a failed trial, from its last checkpoint
    relabel_gpus: int = 0  # >0: ask the autoscaler for this many GPUs before relabelling, one actor each
    scale_timeout_s: float = 900.0  # how long to wait for those GPUs before relabelling on what is there
    reuse_actors: bool = True  # a trial process runs the next trial: no new JAX import, compiled updates kept
    pin_cpus: bool = True  # CPU trials, ICVF tasks and relabel actors each pinned to their CPUs' worth of cores
    # CPUs (cores) of each ICVF pretraining task; 0: cpus_per_trial. XLA's summation order follows its thread
    # count, so an encoder's bytes follow this setting, not how many encoders were pretrained together
    cpus_per_encoder: float = 0.0

    @property
    def encoder_cpus(self) -> float:
        return self.cpus_per_encoder or self.cpus_per_trial


@dataclass(frozen=True)
class SweepConfig:
    name: str
    datasets: tuple[DatasetConfig, ...]
    labellers: dict[str, dict[str, list]]  # labeller -> setting -> values (grid axis)
    learners: dict[str, dict[str, Any]]  # learner -> config overrides
    seeds: tuple[int, ...] = (0,)
    # Parquet lands in <storage>/<name>.parquet, caches under <storage>/<name>/. runs/ (git-ignored) keeps a
    # user's own runs apart from the published results/ (made with --storage results)
    storage: str = "runs"
    cache: str = ""  # another sweep's cache directory, to reuse its encoders and rewards; "" -> <storage>/<name>/cache
    # other sweeps' results (a sweep name in storage, or a .parquet path): a trial finished there with the same
    # config, data and rewards is copied into this sweep's file, not rerun (its rows keep their sweep and commit)
    reuse_from: tuple[str, ...] = ()
    intents: dict[str, Any] = field(default_factory=dict)  # ICVFConfig overrides
    train: TrainConfig = TrainConfig()
    resources: ResourcesConfig = ResourcesConfig()

    @property
    def run_dir(self) -> StoragePath:
        return storage.join(self.storage, self.name)

    @property
    def cache_dir(self) -> StoragePath:
        """Encoders under cache_dir/encoders, rewards under cache_dir/rewards (content-addressed, so sweeps that
        share a directory share every entry whose inputs match)."""
        return storage.absolute(storage.join(self.cache) if self.cache else storage.join(self.run_dir, "cache"))

    @property
    def parquet_path(self) -> StoragePath:
        return storage.join(self.storage, f"{self.name}.parquet")

    @property
    def reuse_paths(self) -> list[StoragePath]:
        """The results files named by `reuse_from`: a sweep name resolves to <storage>/<name>.parquet."""
        return [storage.join(s) if s.endswith(".parquet") else storage.join(self.storage, f"{s}.parquet")
                for s in self.reuse_from]

    @property
    def figures_dir(self) -> StoragePath:
        return storage.join(self.storage, "figures", self.name)

    def labeller_settings(self) -> list[dict[str, Any]]:
        """Every distinct labeller setting (the labeller name under key 'labeller'), grid expanded."""
        out = []
        for labeller, axes in self.labellers.items():
            keys = sorted(axes)
            for values in itertools.product(*(axes[k] for k in keys)):
                out.append({"labeller": labeller, **dict(zip(keys, values))})
        return out

    def trials(self) -> list[dict[str, Any]]:
        """The trial grid: dataset x labeller setting x learner x seed. BC ignores rewards: one per dataset x seed."""
        trials = []
        for ds, seed in itertools.product(self.datasets, self.seeds):
            for learner in self.learners:
                settings = [{"labeller": "none"}] if _reward_free(learner) else self.labeller_settings()
                for setting in settings:
                    trials.append({"dataset": ds.label, "learner": learner, "seed": seed, "labeller": setting})
        return trials

    def used_labeller_settings(self) -> list[dict[str, Any]]:
        """The labeller settings some trial trains on (none when every learner is BC, which ignores rewards)."""
        if all(_reward_free(learner) for learner in self.learners):
            return []
        return self.labeller_settings()

    def dataset(self, label: str) -> DatasetConfig:
        return next(d for d in self.datasets if d.label == label)


def _learner_names() -> tuple[str, ...]:
    from ailot import learners  # lazy: it imports JAX

    return learners.names()


def _reward_free(learner: str) -> bool:
    """Learners that ignore rewards (BC, and those that read the expert set): one trial per dataset x seed."""
    from ailot import learners

    return learners.reward_free(learner)


# PyYAML (YAML 1.1) reads 1e-2 and 1e5 as strings: a float needs a dot there. Numbers written that way are taken
# as numbers wherever the config takes one.
def _numbers_in(mapping: dict) -> dict:
    """A learner's or ICVF's settings with number strings as numbers (whole ones as ints), lists included."""
    def fix(v):
        if isinstance(v, list):
            return [fix(x) for x in v]
        n = as_number(v)
        return int(n) if n is not v and math.isfinite(n) and n == int(n) and "." not in v else n

    return {k: fix(v) for k, v in mapping.items()}


def _positive(key: str, value, kind=int, allow_zero=False) -> Any:
    given, value = value, finite_number(value, key, kind)  # NaN and inf are no usable setting
    if value < 0 or (value == 0 and not allow_zero):
        raise _error(key, f"must be {'>= 0' if allow_zero else '> 0'}, got {given!r}", "give a positive value")
    return value


def _dataclass_from(cls, section: str, raw: dict | None):
    raw = raw or {}
    names = {f.name: f for f in dataclasses.fields(cls)}
    _check_keys(section, raw, names)
    values = {}
    for key, value in raw.items():
        default = names[key].default
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise _error(f"{section}.{key}", f"expected true or false, got {value!r}", "write true or false")
            values[key] = value
            continue
        kind = float if isinstance(default, float) else int
        values[key] = _positive(f"{section}.{key}", value, kind, allow_zero=key in ("relabel_actors",
                                "max_concurrent_trials", "max_failures", "gpus_per_trial", "relabel_gpus",
                                "cpus_per_encoder"))
    return cls(**values)


def _labellers_from(raw: dict) -> dict[str, dict[str, list]]:
    if not isinstance(raw, dict):  # a list or scalar here has no .items()
        raise _error("labellers", f"expected a mapping, got {type(raw).__name__}", "write labeller: settings pairs")
    # YAML reads an unquoted `true:` key as the boolean True
    raw = {str(k).lower() if isinstance(k, bool) else k: v for k, v in raw.items()}
    _check_keys("labellers", raw, LABELLER_DEFAULTS)
    if not raw:
        raise _error("labellers", "is empty", f"name at least one of: {', '.join(LABELLERS)}")
    out = {}
    for name, settings in raw.items():
        settings = settings or {}
        specs = labeller_registry.get(name).settings
        _check_keys(f"labellers.{name}", settings, specs)
        axes = {}
        for key, spec in specs.items():
            where = f"labellers.{name}.{key}"
            # a list is a grid axis, except for list-valued settings (hidden sizes), where a list of lists is
            given = settings.get(key, spec.default)
            values = given if isinstance(given, list) and (spec.kind != "ints" or (
                given and all(isinstance(v, (list, tuple)) for v in given))) else [given]
            if not values:
                raise _error(where, "is an empty list", "give at least one value")
            axes[key] = [spec.validate(v, where) for v in values]
        out[name] = axes
    return out


def _datasets_from(raw) -> tuple[DatasetConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise _error("datasets", "must be a non-empty list", "list entries with 'agent' and 'expert' keys")
    names = {f.name for f in dataclasses.fields(DatasetConfig)}
    out = []
    for i, entry in enumerate(raw):
        _check_keys(f"datasets[{i}]", entry, names)
        for required in ("agent", "expert"):
            if not entry.get(required) or not isinstance(entry[required], str):
                raise _error(f"datasets[{i}].{required}", "is missing",
                             "give a Minari id or a D4RL .hdf5 path" + (" (or 'same')" if required == "expert" else ""))
            if not (required == "expert" and entry[required] == SAME_EXPERT):
                _check_dataset_spec(f"datasets[{i}].{required}", entry[required])
        if entry["expert"] == SAME_EXPERT:  # results then name the agent id as expert_id
            entry = {**entry, "expert": entry["agent"]}
        if not isinstance(entry.get("expert_actions", True), bool):
            raise _error(f"datasets[{i}].expert_actions", f"got {entry['expert_actions']!r}", "write true or false")
        for key in ("name", "env"):
            if entry.get(key) is not None and not isinstance(entry[key], str):
                raise _error(f"datasets[{i}].{key}", f"must be a string, got {entry[key]!r}", "quote it in the YAML")
        if entry.get("name") and not _SAFE_NAME.match(entry["name"]):  # it names result files and figures
            raise _error(f"datasets[{i}].name", f"got {entry['name']!r}", "use letters, digits, '.', '_' or '-'")
        entry = {**entry, "generate": _check_generate(f"datasets[{i}].generate", entry.get("generate"))}
        if entry.get("generate"):  # the ids its generate block makes must be the ones the entry loads
            from ailot.data.generate import ids_of

            made = ids_of(entry["generate"])
            if made[0] != entry["agent"]:
                raise _error(f"datasets[{i}].agent", f"{entry['agent']!r} is not what its generate block makes "
                             f"({made[0]!r}, expert {made[1]!r})", "use those ids, or change the generate settings")
        family = entry.get("task_family", "maze2d")
        if family not in TASK_FAMILIES:
            raise _error(f"datasets[{i}].task_family", f"unknown family {family!r}",
                         f"use one of: {', '.join(TASK_FAMILIES)}")
        obs_keys = entry.get("obs_keys")
        if obs_keys is not None and (not _as_list(obs_keys) or not all(isinstance(k, str) for k in _as_list(obs_keys))):
            raise _error(f"datasets[{i}].obs_keys", f"got {obs_keys!r}", "give a key name, a list of names, or 'all'")
        entry = {**entry, "obs_keys": tuple(_as_list(obs_keys)) if obs_keys is not None else None}
        out.append(DatasetConfig(**entry))
    labels = [d.label for d in out]
    if len(set(labels)) != len(labels):
        raise _error("datasets", "two entries have the same name", "give each dataset a distinct 'name'")
    return tuple(out)


def _check_dataset_spec(key: str, spec: str) -> None:
    """A D4RL file path or a Minari id that stays under MINARI_DATASETS_PATH (checked before any loading)."""
    from ailot.data.loading import check_dataset_spec

    try:
        check_dataset_spec(spec)
    except AilotInputError as exc:
        raise _error(key, f"{spec!r} {exc.problem}", exc.fix) from None


def _check_generate(key: str, generate) -> dict | None:
    """The generate settings are ailot.data.generate.generate_pointmaze arguments: check names, values, the maze
    and its map (rows, one reachable goal) now, not after the sweep has started."""
    if generate is None:
        return None
    import inspect

    from ailot.data.generate import generate_pointmaze
    from ailot.data.maze import maze_task

    params = inspect.signature(generate_pointmaze).parameters
    _check_keys(key, generate, list(params))
    generate = dict(generate)
    try:
        maze_task(generate.get("maze"), generate.get("maze_map"))
    except AilotInputError as exc:  # what: 'maze' or 'maze_map'
        raise _error(f"{key}.{exc.what}", exc.problem, exc.fix) from None
    # values by the type of each argument's default, so that a bad one fails now, not when the data is missing
    for name, value in generate.items():
        default, where = params[name].default, f"{key}.{name}"
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise _error(where, f"expected true or false, got {value!r}", "write true or false")
        elif isinstance(default, (int, float)):
            allow_zero = name in _GENERATE_ZERO_OK
            generate[name] = _positive(where, value, type(default), allow_zero=allow_zero)
            if name == "random_fraction" and generate[name] > 1:
                raise _error(where, f"must be a fraction in [0, 1], got {value!r}", "give a value from 0 to 1")
        elif name == "root" and value is not None and not isinstance(value, str):
            raise _error(where, f"must be a path, got {value!r}", "give a directory path or leave it out")
    if generate.get("min_length", 100) > generate.get("max_length", 500):
        raise _error(f"{key}.min_length", f"{generate.get('min_length', 100)} > max_length "
                     f"{generate.get('max_length', 500)}", "give min_length <= max_length")
    return generate


# generate_pointmaze arguments for which 0 makes sense (the rest must be > 0)
_GENERATE_ZERO_OK = ("seed", "max_dwell", "expert_noise", "agent_noise", "random_fraction", "position_noise")


# Beyond these a trial cannot run: it runs out of memory (a batch of 10^12, 10^11 evaluation steps listed) or
# would take months. The batch is checked against each dataset's size once the datasets are loaded.
TRAIN_LIMITS = {"steps": 10**9, "batch_size": 10**7, "eval_episodes": 10**5, "eval_envs": 1024}
MAX_EVALUATIONS = 10**4


def _check_train_limits(train: TrainConfig) -> None:
    for key, limit in TRAIN_LIMITS.items():
        value = getattr(train, key)
        if value > limit:
            raise _error(f"train.{key}", f"{value:,} is beyond what a trial can run (at most {limit:,})",
                         f"give train.{key} <= {limit:,}")
    evaluations = -(-train.steps // train.eval_every)
    if evaluations > MAX_EVALUATIONS:
        raise _error("train.eval_every", f"{train.eval_every:,} makes {evaluations:,} evaluations of "
                     f"{train.steps:,} steps (at most {MAX_EVALUATIONS:,})",
                     f"give train.eval_every >= {-(-train.steps // MAX_EVALUATIONS):,}")


def _check_learners(learners: dict, families: set[str], steps: int) -> None:
    """Every learner's overrides against its config class, for every task family in the sweep (as the trials
    will build them), so a bad learner key fails at load time rather than inside a Ray trial."""
    from ailot import learners as registry

    for name, overrides in learners.items():
        for family in sorted(families):
            registry.make_config(name, {"max_steps": steps, **overrides}, task_family=family)


def _check_expert_inputs(cfg: SweepConfig) -> None:
    """A method that reads expert actions cannot run on a dataset whose expert set is declared state-only; RLlib
    learners train on the agent data exported as it is, so they cannot take a labeller's added transitions."""
    from ailot import learners

    adders = [n for n in cfg.labellers if getattr(labeller_registry.get(n), "adds_expert_transitions", False)]
    rllib = [n for n in cfg.learners if n in learners.rllib_names() and not learners.reward_free(n)]
    if adders and rllib:
        raise _error(f"learners.{rllib[0]}", f"trains on the exported agent data, without the expert transitions "
                     f"that labeller {adders[0]!r} adds", f"use a JAX learner (iql, ...) with {adders[0]}")
    for ds in cfg.datasets:
        if ds.expert_actions:
            continue
        for setting in cfg.labeller_settings():
            if labeller_registry.reads_expert_actions(setting):
                raise _error(f"labellers.{setting['labeller']}", f"reads expert actions, but dataset {ds.label!r} "
                             "has expert_actions: false (a state-only expert set)",
                             "drop the labeller (or its action-reading mode), or set expert_actions: true")
        for name in cfg.learners:
            if learners.uses_expert_actions(name):
                raise _error(f"learners.{name}", f"reads expert actions, but dataset {ds.label!r} has "
                             "expert_actions: false (a state-only expert set)",
                             "use a state-only learner (smodice, iql on a labeller's rewards), or set "
                             "expert_actions: true")


def _check_intents(intents: dict) -> None:
    from ailot.intents import ICVFConfig

    try:
        ICVFConfig.from_dict(intents)
    except AilotInputError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. lr: fast, hidden_dims: abc
        bad = sorted(intents)
        raise _error(f"intents.{bad[0]}" if len(bad) == 1 else "intents", f"has a value of the wrong type ({exc})",
                     "give numbers for rates/sizes and a list of ints for hidden_dims") from None


def _reuse_from(raw: Any, name: str) -> tuple[str, ...]:
    sources = tuple(_as_list(raw))
    for source in sources:
        if not isinstance(source, str) or not (source.endswith(".parquet") or _SAFE_NAME.match(source)):
            raise _error("reuse_from", f"got {source!r}",
                         "give other sweeps' names (results in the same storage) or paths of .parquet results files")
        storage.check_scheme(source, "config key 'reuse_from'")
        if source == name:
            raise _error("reuse_from", f"names this sweep itself ({name!r})",
                         "name other sweeps; this sweep's own finished trials are kept anyway")
    return sources


def sweep_config_from_dict(raw: dict) -> SweepConfig:
    """Validate a parsed YAML mapping into a SweepConfig."""
    fields = {f.name for f in dataclasses.fields(SweepConfig)}
    _check_keys("", raw, fields)
    name = raw.get("name")
    if not isinstance(name, str) or not _SAFE_NAME.match(name):
        raise _error("name", f"got {name!r}", "use letters, digits, '.', '_' or '-' (it names files)")
    learners_raw = raw.get("learners") or {}
    known = _learner_names()
    _check_keys("learners", learners_raw, known)
    if not learners_raw:
        raise _error("learners", "is empty", f"name at least one of: {', '.join(known)}")
    for k, v in learners_raw.items():
        if v is not None and not isinstance(v, dict):
            raise _error(f"learners.{k}", f"expected a mapping, got {type(v).__name__}",
                         "write the learner's settings as key: value pairs (or {} for the defaults)")
    learners = {k: _numbers_in(dict(v or {})) for k, v in learners_raw.items()}
    seeds = tuple(_as_list(raw.get("seeds", [0])))
    if not seeds:
        raise _error("seeds", "is empty (the sweep would run no trial)", "give at least one seed, e.g. [0]")
    for s in seeds:
        n = as_number(s)
        if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n != int(n) or n < 0:
            raise _error("seeds", f"bad seed {s!r}", "give non-negative integers")
    seeds = tuple(int(as_number(s)) for s in seeds)
    if len(set(seeds)) != len(seeds):
        raise _error("seeds", "contains duplicates", "list each seed once")
    store = raw.get("storage", "runs")
    if not isinstance(store, str) or not store.strip():
        raise _error("storage", f"got {store!r}", "give a directory path or a URI")
    storage.check_scheme(store, "config key 'storage'")
    cache = raw.get("cache", "")
    if not isinstance(cache, str):
        raise _error("cache", f"got {cache!r}", "give a directory path or a URI, e.g. results/pointmaze-medium/cache")
    storage.check_scheme(cache, "config key 'cache'")
    reuse_from = _reuse_from(raw.get("reuse_from") or [], name)
    intents = raw.get("intents") or {}
    if not isinstance(intents, dict):
        raise _error("intents", "expected a mapping", "write ICVF settings as key: value pairs")
    cfg = SweepConfig(
        name=name,
        datasets=_datasets_from(raw.get("datasets")),
        labellers=_labellers_from(raw.get("labellers") or {}),
        learners=learners,
        seeds=seeds,
        storage=store,
        cache=cache,
        reuse_from=reuse_from,
        intents=_numbers_in(dict(intents)),
        train=_dataclass_from(TrainConfig, "train", raw.get("train")),
        resources=_dataclass_from(ResourcesConfig, "resources", raw.get("resources")),
    )
    if cfg.train.eval_every > cfg.train.steps:
        raise _error("train.eval_every", f"{cfg.train.eval_every} > train.steps {cfg.train.steps}",
                     "evaluate at most every train.steps updates")
    _check_expert_inputs(cfg)
    _check_train_limits(cfg.train)
    # Learner and ICVF settings are checked by their own config classes (lazy: they import JAX).
    _check_learners(cfg.learners, {d.task_family for d in cfg.datasets}, cfg.train.steps)
    if any(labeller_registry.get(n).uses_encoder for n in cfg.labellers) or cfg.intents:
        _check_intents(cfg.intents)
    return cfg


def load_sweep_config(path: str | Path) -> SweepConfig:
    """Read and validate a sweep YAML file."""
    path = Path(path)
    if not path.is_file():
        raise AilotInputError(f"config file {str(path)!r}", "does not exist",
                              "pass an existing YAML file, e.g. tune/configs/smoke.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        # one line (the CLI prints one): where and what, not PyYAML's multi-line excerpt
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise AilotInputError(f"config file {str(path)!r}", f"is not valid YAML ({where}{problem})",
                              "fix the YAML syntax") from None
    if not isinstance(raw, dict):
        raise AilotInputError(f"config file {str(path)!r}", "is not a YAML mapping", "write top-level key: value pairs")
    return sweep_config_from_dict(raw)
