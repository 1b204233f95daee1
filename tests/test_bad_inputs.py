"""The bad-input catalogue: every input a user can get wrong (config files, CLI flags, datasets, learner
settings, checkpoints, paths) raises AilotInputError naming the input and the fix, before Ray starts or any
network trains. Also: a local Ray and its dashboard bind to loopback unless a flag says otherwise."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest
import yaml
from conftest import write_hdf5

import ailot.intents
from ailot import learners
from ailot.cache import ArrayCache
from ailot.config import DatasetConfig, load_sweep_config, sweep_config_from_dict
from ailot.data import load_dataset, load_minari
from ailot.errors import AilotInputError
from ailot.intents import ICVFConfig, IntentEncoder, init_params
from ailot.pipeline import load_pair, run_trial

REPO = Path(__file__).resolve().parents[1]
SWEEP_PY = REPO / "tune" / "sweep.py"


def base_config(**over) -> dict:
    raw = {
        "name": "bad",
        "datasets": [{"agent": "a/b/agent-v0", "expert": "a/b/expert-v0"}],
        "labellers": {"ailot": {"k": [1]}, "zero": {}},
        "learners": {"iql": {}, "bc": {}},
        "train": {"steps": 100, "eval_every": 50},
    }
    raw.update(over)
    return raw


def write_d4rl(path: Path, n: int = 12, obs_dim: int = 4, act_dim: int = 2, **overrides) -> Path:
    """A small D4RL-format file: two episodes of n/2 steps with next_observations; `overrides` replace arrays."""
    rng = np.random.default_rng(0)
    data = {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": np.zeros(n, np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.eye(1, n, n // 2 - 1, dtype=bool)[0],
        "next_observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
    }
    data.update(overrides)
    write_hdf5(path, data)
    return path


@pytest.fixture
def ctx(tmp_path, request) -> SimpleNamespace:
    """What a case may use: a temp dir, and (only when the case asks) the session's tiny UMaze ids."""
    umaze = request.getfixturevalue("pointmaze_umaze") if request.node.callspec.id in NEEDS_UMAZE else None
    return SimpleNamespace(tmp=tmp_path, umaze=umaze)


@pytest.fixture
def no_expensive_work(monkeypatch):
    """Training a learner or pretraining ICVF during a bad-input case fails the test."""

    def boom(*a, **k):
        raise AssertionError("expensive work started before the bad input was refused")

    monkeypatch.setattr(learners, "train", boom)
    monkeypatch.setattr(ailot.intents, "train_icvf", boom)
    yield
    ray = sys.modules.get("ray")
    assert ray is None or not ray.is_initialized(), "Ray was started for a bad input"


# --------------------------------------------------------------------------------------------- the catalogue

CASES: dict[str, tuple[Callable, str]] = {}  # id -> (trigger(ctx), regex the message must match)
NEEDS_UMAZE: set[str] = set()


def case(name: str, match: str, umaze: bool = False):
    def register(fn):
        assert name not in CASES
        CASES[name] = (fn, match)
        if umaze:
            NEEDS_UMAZE.add(name)
        return fn

    return register


def yaml_file(c, text: str | None = None, **over) -> Path:
    path = c.tmp / "sweep.yaml"
    path.write_text(text if text is not None else yaml.safe_dump(base_config(**over)))
    return path


def load_yaml(c, text: str | None = None, **over):
    return load_sweep_config(yaml_file(c, text, **over))


# config files: unknown keys at every level
case("config-unknown-top-key", r"config key 'bogus': is not a known key")(lambda c: load_yaml(c, bogus=1))
case("config-unknown-labeller-setting", r"'labellers\.ailot\.kk': is not a known key.*Fix: use one of: alpha")(
    lambda c: load_yaml(c, labellers={"ailot": {"kk": 1}})
)
case("config-unknown-dataset-key", r"'datasets\[0\]\.agnet': is not a known key")(
    lambda c: load_yaml(c, datasets=[{"agent": "a/b-v0", "expert": "a/c-v0", "agnet": "x"}])
)
case("config-unknown-train-key", r"'train\.stepz': is not a known key")(lambda c: load_yaml(c, train={"stepz": 10}))
case("config-unknown-learner-key", r"learners\.iql\.expectilee: is not a iql config key.*Fix: use one of")(
    lambda c: load_yaml(c, learners={"iql": {"expectilee": 0.8}})
)
case("config-unknown-intents-key", r"intents config key 'bogus': is not an ICVF setting")(
    lambda c: load_yaml(c, intents={"bogus": 1})
)
case("config-unknown-generate-key", r"'datasets\[0\]\.generate\.mazee': is not a known key.*maze")(
    lambda c: load_yaml(c, datasets=[{"agent": "a/b-v0", "expert": "a/c-v0", "generate": {"mazee": "umaze"}}])
)
# config files: bad values and types
case("config-steps-not-a-number", r"'train\.steps': must be a finite whole number, got 'ten'")(
    lambda c: load_yaml(c, train={"steps": "ten"})
)
case("config-negative-steps", r"'train\.steps': must be > 0, got -5")(
    lambda c: load_yaml(c, train={"steps": -5, "eval_every": 1})
)
case("config-nan-resource", r"'resources\.cpus_per_trial': must be a finite number, got nan")(
    lambda c: load_yaml(
        c,
        "name: bad\ndatasets: [{agent: a/b-v0, expert: a/c-v0}]\nlabellers: {zero: {}}\n"
        "learners: {bc: {}}\nresources: {cpus_per_trial: .nan}\n",
    )
)
case("config-inf-epsilon", r"'labellers\.ailot\.epsilon': must be a finite number, got inf")(
    lambda c: load_yaml(
        c,
        "name: bad\ndatasets: [{agent: a/b-v0, expert: a/c-v0}]\nlabellers: {ailot: "
        "{epsilon: .inf}}\nlearners: {iql: {}}\n",
    )
)
case("config-empty-grid", r"'labellers\.ailot\.k': is an empty list.*Fix: give at least one value")(
    lambda c: load_yaml(c, labellers={"ailot": {"k": []}})
)
case("config-empty-seeds", r"'seeds': is empty")(lambda c: load_yaml(c, seeds=[]))
case("config-unknown-learner", r"'learners\.sac': is not a known key.*bc, .*diffusion_ql, .*iql")(
    lambda c: load_yaml(c, learners={"sac": {}})
)
case("config-unknown-labeller", r"'labellers\.gail': is not a known key.*ailot, .*otr, .*zero")(
    lambda c: load_yaml(c, labellers={"gail": {}})
)
case("config-learner-not-a-mapping", r"'learners\.iql': expected a mapping, got list")(
    lambda c: load_yaml(c, learners={"iql": [256, 256]})
)
case("config-learner-bad-type", r"learners\.iql\.hidden_dims: got 'big'.*list of positive ints")(
    lambda c: load_yaml(c, learners={"iql": {"hidden_dims": "big"}})
)
case("config-intents-bad-value", r"intents config key 'lr': must be positive")(
    lambda c: load_yaml(c, intents={"lr": -1.0})
)
case("config-labellers-not-a-mapping", r"'labellers': expected a mapping, got list")(
    lambda c: load_yaml(c, labellers=["ailot"])
)
case("config-unknown-maze", r"'datasets\[0\]\.generate\.maze': unknown maze 'huge'")(
    lambda c: load_yaml(c, datasets=[{"agent": "a/b-v0", "expert": "a/c-v0", "generate": {"maze": "huge"}}])
)
case(
    "config-yaml-syntax-error",
    r"config file '.*sweep\.yaml': is not valid YAML \(line 2, column 9: expected ',' "
    r"or '\]', but got ':'\)\. Fix: fix the YAML syntax",
)(lambda c: load_yaml(c, "name: [unclosed\nlearners: {iql: {}}\n"))
case("config-empty-file", r"config file '.*sweep\.yaml': is not a YAML mapping")(lambda c: load_yaml(c, ""))
case("config-missing-file", r"config file '.*nope\.yaml': does not exist.*tune/configs/smoke\.yaml")(
    lambda c: load_sweep_config(c.tmp / "nope.yaml")
)


def load_d4rl(c, name: str = "bad.hdf5", **arrays):
    return load_dataset(write_d4rl(c.tmp / name, **arrays))


# datasets
case(
    "dataset-missing-minari-id",
    r"dataset 'ailot/nothing/here-v0': not found under MINARI_DATASETS_PATH.*"
    r"python -m ailot\.data\.generate",
)(lambda c: load_dataset("ailot/nothing/here-v0"))

case(
    "dataset-missing-collected-id",
    r"dataset 'ailot/halfcheetah/medium-v0': not found under MINARI_DATASETS_PATH.*"
    r"Fix: (make|rebuild) it with `ailot collect --env HalfCheetah-v5 --seed 0",  # rebuild: a recipe is committed
)(lambda c: load_dataset("ailot/halfcheetah/medium-v0"))


@case("dataset-wrong-format-file", r"dataset '.*data\.csv': is a file, but only D4RL \.hdf5/\.h5 files")
def _(c):
    (c.tmp / "data.csv").write_text("obs,act\n1,2\n")
    load_dataset(c.tmp / "data.csv")


@case("dataset-hdf5-not-hdf5", r"D4RL file '.*text\.hdf5': is not a readable HDF5 file")
def _(c):
    (c.tmp / "text.hdf5").write_text("not hdf5")
    load_dataset(c.tmp / "text.hdf5")


case("dataset-hdf5-missing-keys", r"D4RL file '.*bad\.hdf5': is not a D4RL dataset: missing keys \['terminals'\]")(
    lambda c: load_d4rl(c, terminals=None)
)
case("dataset-hdf5-wrong-shapes", r"D4RL file '.*bad\.hdf5': has 12 observations but \{'rewards': 11\}")(
    lambda c: load_d4rl(c, rewards=np.zeros(11, np.float32))
)
case("dataset-hdf5-scalar-array", r"D4RL file '.*bad\.hdf5': 'observations' is a float32 array of shape \(\)")(
    lambda c: load_d4rl(c, observations=np.float32(1.0))
)
case("dataset-hdf5-text-array", r"D4RL file '.*bad\.hdf5': 'actions' is a \|S1 array")(
    lambda c: load_d4rl(c, actions=np.array([b"a"] * 12))
)
case("dataset-hdf5-nan-observations", r"dataset 'bad' episode 0 observations: contain NaN or inf \(first at t=2\)")(
    lambda c: load_d4rl(c, observations=np.where(np.arange(12)[:, None] == 2, np.nan, 1.0).repeat(4, 1))
)
case("dataset-hdf5-inf-rewards", r"dataset 'bad' episode 1 rewards: contain NaN or inf")(
    lambda c: load_d4rl(c, rewards=np.where(np.arange(12) == 8, np.inf, 0.0))
)
case("dataset-hdf5-empty", r"D4RL file '.*bad\.hdf5': has no rows \(0 transitions\)")(lambda c: load_d4rl(c, n=0))


@case(
    "dataset-agent-expert-mismatch",
    r"datasets 'agent' \(agent\) and 'ailot/pointmaze-umaze/expert-v0' \(expert\)"
    r": observations differ: dim 3 vs 4",
    umaze=True,
)
def _(c):
    load_pair(DatasetConfig(agent=str(write_d4rl(c.tmp / "agent.hdf5", obs_dim=3)), expert=c.umaze[1]))


@case("dataset-discrete-action-space", r"environment 'CartPole-v1' action space: Discrete\(2\) is not continuous")
def _(c):
    path = str(write_d4rl(c.tmp / "cartpole.hdf5", obs_dim=4, act_dim=1))
    load_pair(DatasetConfig(agent=path, expert=path, env="CartPole-v1"))


@case("dataset-no-eval-env", r"dataset 'noenv': has no evaluation environment.*datasets\[\]\.env")
def _(c):
    path = str(write_d4rl(c.tmp / "noenv.hdf5"))
    load_pair(DatasetConfig(agent=path, expert=path))


@case("dataset-obs-dim-vs-env", r"dataset 'hopper5' observations: have dimension 5 but 'Hopper-v5' gives 11")
def _(c):
    path = str(write_d4rl(c.tmp / "hopper5.hdf5", obs_dim=5, act_dim=3))
    load_pair(DatasetConfig(agent=path, expert=path, env="Hopper-v5"))


# learner configs
case("learner-unknown-key", r"learners\.iql\.bogus: is not a iql config key")(
    lambda c: learners.make_config("iql", {"bogus": 1})
)


@case("learner-action-dim-vs-env", r"dataset 'hopper2' actions: have dimension 2 but 'Hopper-v5' expects \(3,\)")
def _(c):
    path = str(write_d4rl(c.tmp / "hopper2.hdf5", obs_dim=11, act_dim=2))
    load_pair(DatasetConfig(agent=path, expert=path, env="Hopper-v5"))


@case("learner-non-finite-rewards", r"rewards: 1 of \d+ are not finite \(first at index 5\)", umaze=True)
def _(c):
    agent = load_dataset(c.umaze[0])
    cfg = sweep_config_from_dict(base_config(datasets=[{"agent": c.umaze[0], "expert": c.umaze[1], "name": "u"}]))
    rewards = np.zeros(agent.num_transitions, np.float32)
    rewards[5] = np.nan
    trial = {"dataset": "u", "learner": "iql", "seed": 0, "labeller": {"labeller": "ailot"}}
    run_trial(trial, cfg, agent, rewards, report=lambda *a: pytest.fail("reported a row"))


# checkpoints
def small_bc(**over):  # BC: the cheapest learner to create; the checkpoint code is shared by all
    return learners.get_learner("bc").create(0, 2, 2, learners.make_config("bc", {"hidden_dims": [8, 8], **over}))


case("checkpoint-learner-missing", r"learner checkpoint '.*missing\.msgpack': does not exist")(
    lambda c: learners.load(c.tmp / "missing.msgpack", small_bc())
)


@case(
    "checkpoint-learner-other-shape",
    r"learner checkpoint '.*bc\.msgpack': \.actor\.params\['Dense_0'\]\['kernel'\] "
    r"has shape \(\d+, \d+\), the learner expects \(\d+, \d+\)\. Fix: create the learner with the config",
)
def _(c):
    learners.save(small_bc(), c.tmp / "bc.msgpack")
    learners.load(c.tmp / "bc.msgpack", small_bc(hidden_dims=[16, 16]))


@case(
    "checkpoint-learner-other-config",
    r"learner checkpoint '.*bc\.msgpack': was trained with another BC config "
    r"\(saved vs this learner: \{'lr': \(0\.0003, 0\.001\)\}\)",
)
def _(c):
    learners.save(small_bc(), c.tmp / "bc.msgpack")
    learners.load(c.tmp / "bc.msgpack", small_bc(lr=1e-3))  # same shapes, another setting


def saved_encoder(path: Path, obs_dim: int = 3, **config):
    cfg = ICVFConfig(**{"hidden_dims": (8, 8), **config})
    psi = jax.device_get(init_params(jax.random.PRNGKey(0), cfg, obs_dim)["psi"])
    return IntentEncoder(psi, np.zeros(obs_dim), np.ones(obs_dim), cfg).save(path)


@case(
    "checkpoint-encoder-other-config",
    r"intent encoder '.*enc': was trained with other ICVF settings \(saved vs "
    r"wanted: \{'hidden_dims': \(\[8, 8\], \[16, 16\]\)\}\)",
)
def _(c):
    IntentEncoder.load(saved_encoder(c.tmp / "enc"), config=ICVFConfig(hidden_dims=(16, 16)))


@case("checkpoint-encoder-other-obs-dim", r"intent encoder '.*enc': was trained on 3-dim observations, not 4")
def _(c):
    IntentEncoder.load(saved_encoder(c.tmp / "enc"), obs_dim=4)


@case(
    "checkpoint-encoder-params-vs-config",
    r"intent encoder '.*enc': holds psi parameters that do not fit its "
    r"config \(16, 16\)",
)
def _(c):
    path = saved_encoder(c.tmp / "enc")
    meta = json.loads((path / "encoder.json").read_text())
    meta["config"]["hidden_dims"] = [16, 16]  # e.g. params copied in from another run
    (path / "encoder.json").write_text(json.dumps(meta))
    IntentEncoder.load(path)


case("checkpoint-encoder-missing", r"intent encoder '.*nothing': is missing psi_params\.msgpack or encoder\.json")(
    lambda c: IntentEncoder.load(c.tmp / "nothing")
)

# path traversal: nothing may be written (or read) outside its directory
case("path-sweep-name-traversal", r"config key 'name': got '\.\./\.\./etc'.*it names files")(
    lambda c: load_yaml(c, name="../../etc")
)
case("path-sweep-name-absolute", r"config key 'name': got '/tmp/elsewhere'")(
    lambda c: load_yaml(c, name="/tmp/elsewhere")
)
case("path-dataset-name-traversal", r"config key 'datasets\[0\]\.name': got '\.\./\.\./etc'")(
    lambda c: load_yaml(c, datasets=[{"agent": "a/b-v0", "expert": "a/c-v0", "name": "../../etc"}])
)
case(
    "path-config-dataset-id-traversal",
    r"config key 'datasets\[0\]\.agent': '\.\./\.\./etc/agent-v0' is not a "
    r"Minari id.*no '\.\.'",
)(lambda c: load_yaml(c, datasets=[{"agent": "../../etc/agent-v0", "expert": "a/c-v0"}]))
case("path-dataset-id-traversal", r"dataset '\.\./\.\./etc': is not a Minari id")(
    lambda c: load_minari("../../etc", download=True)
)
case("path-dataset-id-absolute", r"dataset '/srv/datasets/agent-v0': is not a Minari id.*no leading '/'")(
    lambda c: load_dataset("/srv/datasets/agent-v0")
)


@case("path-cache-key-traversal", r"cache key '\.\./\.\./evil': is not a plain file name, so it could leave")
def _(c):
    try:
        ArrayCache(str(c.tmp / "store" / "cache")).put("../../evil", {"r": np.zeros(1)})
    finally:
        assert not list(c.tmp.glob("evil*")), "the cache wrote outside its root"


# issue 25: values checked when the config loads, not when the data turns out missing or a trial runs out of memory
def generate_yaml(c, **generate):
    return load_yaml(c, datasets=[{"agent": "a/b-v0", "expert": "a/c-v0", "generate": generate}])


case("config-generate-negative-size", r"'datasets\[0\]\.generate\.agent_transitions': must be > 0, got -5")(
    lambda c: generate_yaml(c, agent_transitions=-5)
)
case("config-generate-not-a-number",
     r"'datasets\[0\]\.generate\.expert_episodes': must be a finite whole number, got 'many'")(
    lambda c: generate_yaml(c, expert_episodes="many")
)
case("config-generate-fraction-over-one", r"'datasets\[0\]\.generate\.random_fraction': must be a fraction in")(
    lambda c: generate_yaml(c, random_fraction=2)
)
case("config-generate-min-over-max", r"'datasets\[0\]\.generate\.min_length': 600 > max_length 500")(
    lambda c: generate_yaml(c, min_length=600)
)
case("config-generate-flag-not-bool", r"'datasets\[0\]\.generate\.overwrite': expected true or false")(
    lambda c: generate_yaml(c, overwrite="yes")
)
case("config-steps-beyond-reason", r"'train\.steps': 1,000,000,000,000,000 is beyond what a trial can run")(
    lambda c: load_yaml(c, train={"steps": 10**15, "eval_every": 10**12})
)
case("config-batch-beyond-reason", r"'train\.batch_size': 1,000,000,000,000 is beyond .*Fix: give train\.batch_size")(
    lambda c: load_yaml(c, train={"steps": 100, "eval_every": 50, "batch_size": 10**12})
)
case("config-too-many-evaluations", r"'train\.eval_every': 1 makes 100,000,000 evaluations.*>= 10,000")(
    lambda c: load_yaml(c, train={"steps": 10**8, "eval_every": 1})
)
case("config-storage-unknown-scheme", r"config key 'storage': 'foo://bucket/x' has an unknown URI scheme 'foo://'")(
    lambda c: load_yaml(c, storage="foo://bucket/x")
)
case("config-cache-unknown-scheme", r"config key 'cache': 'bar://y' has an unknown URI scheme")(
    lambda c: load_yaml(c, cache="bar://y")
)


def check_paths_of(c, **over):
    from ailot.sweep import check_paths

    (c.tmp / "a-file").write_text("not a directory")
    check_paths(sweep_config_from_dict(base_config(**{k: v.format(tmp=c.tmp) for k, v in over.items()})))


case("storage-is-a-file", r"config key 'storage': '.*a-file/results' is \(or lies under\) the file '.*a-file'")(
    lambda c: check_paths_of(c, storage="{tmp}/a-file/results")
)
case("storage-not-writable", r"config key 'storage': '/proc/ailot-results' cannot be written")(
    lambda c: check_paths_of(c, storage="/proc/ailot-results")  # read-only even for root
)
case("storage-package-missing", r"config key 'storage': 'abfs://box/x' needs a package that is missing \(.*adlfs")(
    lambda c: check_paths_of(c, storage="abfs://box/x")  # Azure's adlfs: no part of this project installs it
)
case("cache-is-a-file", r"config key 'cache': '.*a-file' is \(or lies under\) the file")(
    lambda c: check_paths_of(c, storage="{tmp}/results", cache="{tmp}/a-file")
)


def umaze_pair(c, **kw):
    return load_pair(DatasetConfig(agent=c.umaze[0], expert=c.umaze[1], name="u", **kw))


case("dataset-env-not-registered", r"datasets\[\]\.env of 'u': 'NoSuchEnv-v9' is not registered", umaze=True)(
    lambda c: umaze_pair(c, env="NoSuchEnv-v9")
)
case("dataset-env-not-the-datas", r"datasets\[\]\.env of 'u': 'Hopper-v5' is not the environment the data names "
     r"\('ailot/PointMaze_UMaze-v0'\)", umaze=True)(lambda c: umaze_pair(c, env="Hopper-v5"))


@case("dataset-batch-larger-than-data", r"'train\.batch_size': 5,000 is larger than dataset 'u' \(3,000 transitions\)",
      umaze=True)
def _(c):
    from ailot.sweep import check_sizes

    cfg = sweep_config_from_dict(base_config(datasets=[{"agent": c.umaze[0], "expert": c.umaze[1], "name": "u"}],
                                             train={"steps": 100, "eval_every": 50, "batch_size": 5000}))
    check_sizes(cfg, {"u": umaze_pair(c)})


def export_over(c, make):
    from ailot.export import export_dataset

    out = c.tmp / "out"
    out.mkdir()
    make(out)
    try:
        export_dataset("a/b-v0", [], out, labeller_settings={"labeller": "zero"}, overwrite=True)
    finally:
        assert out.exists() and any(out.iterdir()), "the directory was removed"


case("export-overwrite-sweep-storage",
     r"output directory '.*out': is not an earlier export: it holds 'smoke\.parquet'")(
    lambda c: export_over(c, lambda d: (d / "smoke.parquet").write_bytes(b"PAR1"))
)
case("export-overwrite-foreign-parquet", r"'part-00000\.parquet' is not an ailot export file")(
    lambda c: export_over(c, lambda d: (d / "part-00000.parquet").write_bytes(b"PAR1"))
)


def results_of(c, make):
    from ailot import results

    path = c.tmp / "r.parquet"
    make(path)
    results.check_results(results.load(path), path)


case("results-empty-file", r"results file '.*r\.parquet': is empty \(0 bytes\)")(
    lambda c: results_of(c, lambda p: p.write_bytes(b""))
)
case("results-directory", r"results file '.*r\.parquet': is a directory")(lambda c: results_of(c, Path.mkdir))
case("results-other-columns", r"results file '.*r\.parquet': lacks the columns \['trial_id'")(
    lambda c: results_of(c, lambda p: __import__("pandas").DataFrame({"a": [1]}).to_parquet(p))
)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_is_refused_with_the_input_and_the_fix(name, ctx, no_expensive_work):
    trigger, match = CASES[name]
    with pytest.raises(AilotInputError, match=match) as err:
        trigger(ctx)
    e = err.value
    assert e.what and e.problem and e.fix, "every refusal names the input, the problem and the fix"
    assert str(e) == f"{e.what}: {e.problem}. Fix: {e.fix}"


def test_good_inputs_next_to_the_bad_ones_still_load(tmp_path):
    """The new checks refuse only what is wrong: matching checkpoints and a matching env still load."""
    learners.save(small_bc(), tmp_path / "bc.msgpack")
    assert int(learners.load(tmp_path / "bc.msgpack", small_bc()).step) == 0
    encoder = IntentEncoder.load(saved_encoder(tmp_path / "enc"), config=ICVFConfig(hidden_dims=(8, 8)), obs_dim=3)
    assert encoder.embed(np.zeros((2, 3), np.float32)).shape == (2, 8)
    path = str(write_d4rl(tmp_path / "hopper.hdf5", obs_dim=11, act_dim=3))
    agent, _ = load_pair(DatasetConfig(agent=path, expert=path, env="Hopper-v5"))
    assert (agent.obs_dim, agent.action_dim) == (11, 3)


def test_the_catalogue_is_large():
    assert len(CASES) >= 25 + 25  # 25 more with issue 25


# --------------------------------------------------------------------------------------------- CLI flags


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SWEEP_PY), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        pytest.param(
            [],
            r"^error: the following arguments are required: --config\. Fix: .*--config tune/configs",
            id="missing-config",
        ),
        pytest.param(
            ["--config", "no/such/sweep.yaml"],
            r"^error: config file 'no/such/sweep\.yaml': does not "
            r"exist\. Fix: pass an existing YAML file",
            id="nonexistent-config",
        ),
        pytest.param(
            ["--config", "tune/configs/smoke.yaml", "--num-cpus", "two"],
            r"^error: argument --num-cpus: invalid int value: 'two'\. Fix:",
            id="bad-flag-value",
        ),
        pytest.param(
            ["--config", "tune/configs/smoke.yaml", "--bogus"],
            r"^error: unrecognized arguments: --bogus",
            id="unknown-flag",
        ),
        pytest.param(
            ["--config", "{tmp}/bad.yaml"],
            r"^error: config key 'datasets\[0\]\.agent': '\.\./\.\./etc' is "
            r"not a Minari id",
            id="bad-config-content",
        ),
        pytest.param(  # the datasets are loaded and checked before Ray starts
            ["--config", "{tmp}/missing.yaml"],
            r"^error: dataset 'ailot/nothing/agent-v0': not found under MINARI_DATASETS_PATH=.*Fix: generate",
            id="missing-dataset",
        ),
        # issue 25: flags, storage and the cluster address are refused before the datasets load (missing.yaml's
        # missing dataset would be the error otherwise), not after Ray has started
        pytest.param(["--config", "{tmp}/missing.yaml", "--storage", ""],
                     r"^error: --storage: is empty\. Fix: give a directory path or URI", id="empty-storage"),
        pytest.param(["--config", "{tmp}/missing.yaml", "--storage", "foo://bucket/x"],
                     r"^error: --storage: 'foo://bucket/x' has an unknown URI scheme 'foo://'",
                     id="storage-unknown-scheme"),
        pytest.param(["--config", "{tmp}/missing.yaml", "--storage", "/proc/ailot-results"],
                     r"^error: --storage: '/proc/ailot-results' cannot be written", id="storage-not-writable"),
        pytest.param(["--config", "{tmp}/missing.yaml", "--storage", "{tmp}/bad.yaml/results"],
                     r"^error: --storage: '.*bad\.yaml/results' is \(or lies under\) the file", id="storage-is-a-file"),
        pytest.param(["--config", "{tmp}/missing.yaml", "--num-cpus", "0"],
                     r"^error: --num-cpus: is 0: a local Ray without CPUs can run no trial", id="num-cpus-zero"),
        pytest.param(["--config", "{tmp}/missing.yaml", "--address", "127.0.0.1:{port}"],
                     r"^error: --address: nothing answers at 127\.0\.0\.1:\d+ \(Connection refused\)\. Fix: start",
                     id="unreachable-address"),
        pytest.param(["--config", "{tmp}/missing.yaml", "--address", "nowhere"],
                     r"^error: --address: 'nowhere' is not host:port", id="address-not-host-port"),
    ],
)
def test_cli_exits_2_with_one_clear_line(args, message, tmp_path):
    (tmp_path / "bad.yaml").write_text(
        yaml.safe_dump(base_config(datasets=[{"agent": "../../etc", "expert": "a/b-v0"}]))
    )
    (tmp_path / "missing.yaml").write_text(
        yaml.safe_dump(
            base_config(
                datasets=[{"agent": "ailot/nothing/agent-v0", "expert": "ailot/nothing/expert-v0"}],
                labellers={"zero": {}},
                learners={"bc": {}},
            )
        )
    )
    proc = run_cli(*(a.replace("{tmp}", str(tmp_path)).replace("{port}", str(closed_port())) for a in args))
    assert proc.returncode == 2, proc.stderr
    # gymnasium-robotics prints a notice about Adroit envs to stderr when imported; it is not ours
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("AdroitHand")]
    assert len(lines) == 1, proc.stderr
    assert re.search(message, lines[0]), lines[0]
    assert proc.stdout == ""


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cli_refuses_a_batch_larger_than_the_data_before_ray(pointmaze_umaze, tmp_path):
    raw = base_config(datasets=[{"agent": pointmaze_umaze[0], "expert": pointmaze_umaze[1], "name": "u"}],
                      labellers={"zero": {}}, learners={"bc": {}}, storage=str(tmp_path / "results"),
                      train={"steps": 100, "eval_every": 50, "batch_size": 5000})
    (tmp_path / "big.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cli("--config", str(tmp_path / "big.yaml"))
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if not line.startswith("AdroitHand")]
    assert len(lines) == 1, proc.stderr  # no Ray start-up lines: refused before Ray
    assert re.search(r"^error: config key 'train\.batch_size': 5,000 is larger than dataset 'u' \(3,000 "
                     r"transitions\)\. Fix: give train\.batch_size <= 3,000", lines[0]), lines[0]


# ------------------------------------------------------------------------------- local Ray binds to loopback


def load_sweep_script():
    spec = importlib.util.spec_from_file_location("tune_sweep_script", SWEEP_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def sweep_script(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return load_sweep_script()


def test_local_ray_and_dashboard_bind_to_loopback_by_default(sweep_script):
    kw = sweep_script.ray_init_kwargs(sweep_script.parse_args(["--config", "c.yaml"]))
    assert kw["_node_ip_address"] == "127.0.0.1"
    assert kw["dashboard_host"] == "127.0.0.1"
    assert kw["include_dashboard"] is False  # no dashboard unless asked for
    kw = sweep_script.ray_init_kwargs(sweep_script.parse_args(["--config", "c.yaml", "--dashboard"]))
    assert kw["include_dashboard"] is True and kw["dashboard_host"] == "127.0.0.1"
    assert kw["_node_ip_address"] == "127.0.0.1"


def test_dashboard_leaves_loopback_only_by_flag(sweep_script):
    args = sweep_script.parse_args(["--config", "c.yaml", "--dashboard", "--dashboard-host", "0.0.0.0"])
    assert sweep_script.ray_init_kwargs(args)["dashboard_host"] == "0.0.0.0"
    remote = sweep_script.ray_init_kwargs(sweep_script.parse_args(["--config", "c.yaml", "--address", "10.0.0.1:6379"]))
    assert remote == {"address": "10.0.0.1:6379", "log_to_driver": True}  # an existing cluster: nothing to bind


def test_init_ray_passes_the_loopback_kwargs_to_ray(sweep_script, monkeypatch):
    import ray

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    sweep_script.init_ray(sweep_script.parse_args(["--config", "c.yaml", "--num-cpus", "1"]))
    assert seen["_node_ip_address"] == seen["dashboard_host"] == "127.0.0.1" and seen["num_cpus"] == 1


def test_local_autoscale_head_binds_dashboard_to_loopback(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("local_autoscale_probe", REPO / "cluster" / "local_autoscale.py")
    la = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, la)  # its dataclasses look their module up
    spec.loader.exec_module(la)
    seen = {}

    class Stop(Exception):
        pass

    def fake_popen(cmd, **kw):
        seen["cmd"] = cmd
        raise Stop

    monkeypatch.setattr(la.subprocess, "Popen", fake_popen)  # capture `ray start --head ...`, start nothing
    with pytest.raises(Stop):
        la.start_cluster(temp_root=str(tmp_path))
    cmd = seen["cmd"]
    assert "--node-ip-address=127.0.0.1" in cmd and "--dashboard-host=127.0.0.1" in cmd
    assert not any("0.0.0.0" in part for part in cmd)


def test_input_error_survives_ray_serialization():
    """Ray pickles an error raised in a trial or task; it must arrive as itself, not as a TypeError."""
    import copy

    from ray import cloudpickle

    err = AilotInputError("RLlib checkpoint 'x'", "cannot be read", "delete the trial's checkpoints")
    for back in (cloudpickle.loads(cloudpickle.dumps(err)), copy.deepcopy(err)):
        assert isinstance(back, AilotInputError) and str(back) == str(err) and back.fix == err.fix
