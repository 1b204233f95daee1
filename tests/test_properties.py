"""Property-based tests (hypothesis): the sweep config loader (valid configs round-trip through YAML, an
unknown key at any level is refused by name) and episode padding / length bucketing."""

from __future__ import annotations

import dataclasses
import inspect
import string

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ailot.config import (
    MAX_EVALUATIONS,
    TASK_FAMILIES,
    ResourcesConfig,
    TrainConfig,
    load_sweep_config,
    sweep_config_from_dict,
)
from ailot.data.episodes import bucket_length, length_buckets, pad_batch, unpad
from ailot.data.generate import generate_pointmaze
from ailot.errors import AilotInputError
from ailot.intents import ICVFConfig
from ailot.learners.iql import IQLConfig

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# ------------------------------------------------------------------------------------------- config loader

NAMES = st.text(string.ascii_lowercase + string.digits + "_-", min_size=1, max_size=10).filter(lambda s: s[0].isalnum())
KEYS = st.text(string.ascii_letters + "_", min_size=1, max_size=12)


def small_floats(lo: float, hi: float):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


@st.composite
def valid_configs(draw) -> dict:
    names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
    datasets = [
        {"agent": f"ailot/{n}/agent-v0", "expert": f"ailot/{n}/expert-v0", "name": n,
         "task_family": draw(st.sampled_from(TASK_FAMILIES))}
        for n in names
    ]  # fmt: skip
    labellers = {}
    if draw(st.booleans()):
        labellers["ailot"] = {
            "k": draw(st.lists(st.integers(1, 20), min_size=1, max_size=3, unique=True)),
            "epsilon": draw(st.lists(small_floats(1e-5, 1.0), min_size=1, max_size=2, unique=True)),
            "relative_epsilon": draw(st.booleans()),
            "expert_mode": draw(st.sampled_from(["max", "merge"])),
        }
    if draw(st.booleans()):
        labellers["otr"] = {"beta": draw(st.lists(small_floats(0.1, 10.0), min_size=1, max_size=2, unique=True))}
    for plain in draw(st.lists(st.sampled_from(["true", "zero"]), unique=True, min_size=0 if labellers else 1)):
        labellers[plain] = {}
    learners = {}
    if draw(st.booleans()):
        learners["iql"] = {"expectile": draw(small_floats(0.5, 0.95)), "hidden_dims": [draw(st.integers(1, 64))] * 2}
    if draw(st.booleans()) or not learners:
        learners["bc"] = {}
    steps = draw(st.integers(1, 10**6))
    raw = {
        "name": draw(NAMES),
        "datasets": datasets,
        "labellers": labellers,
        "learners": learners,
        "seeds": draw(st.lists(st.integers(0, 10**4), min_size=1, max_size=3, unique=True)),
        "storage": draw(st.sampled_from(["results", "/tmp/out", "s3://bucket/ailot"])),
        # at most MAX_EVALUATIONS evaluations: more is refused at load (tested in test_bad_inputs)
        "train": {"steps": steps, "eval_every": draw(st.integers(-(-steps // MAX_EVALUATIONS), steps)),
                  "batch_size": draw(st.integers(1, 512))},
        "resources": {"cpus_per_trial": draw(small_floats(0.1, 8.0)), "gpus_per_trial": draw(small_floats(0.0, 1.0))},
    }
    if draw(st.booleans()):
        raw["intents"] = {"hidden_dims": [draw(st.integers(1, 64))] * 2, "num_steps": draw(st.integers(1, 10**5))}
    if draw(st.booleans()):  # other sweeps' finished trials to take (a sweep may not name itself)
        raw["reuse_from"] = [n for n in draw(st.lists(NAMES, max_size=2, unique=True)) if n != raw["name"]]
    return raw


def to_plain(value):
    """A loaded SweepConfig as YAML-ready data (dataclasses -> dicts, tuples -> lists)."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


@FAST
@given(raw=valid_configs())
def test_valid_configs_round_trip_through_yaml(raw, tmp_path):
    cfg = sweep_config_from_dict(raw)
    # what was given is what was loaded
    assert cfg.train.steps == raw["train"]["steps"] and cfg.seeds == tuple(raw["seeds"])
    assert cfg.learners == raw["learners"] and cfg.intents == raw.get("intents", {})
    assert [d.label for d in cfg.datasets] == [d["name"] for d in raw["datasets"]]
    assert cfg.reuse_from == tuple(raw.get("reuse_from", ()))
    for name, axes in raw["labellers"].items():
        for key, values in axes.items():
            assert cfg.labellers[name][key] == (values if isinstance(values, list) else [values])
    # and the loaded config, written back out, loads to the same config
    path = tmp_path / "roundtrip.yaml"
    path.write_text(yaml.safe_dump(to_plain(cfg)))
    assert load_sweep_config(path) == cfg


def _base() -> dict:
    return {
        "name": "p",
        "datasets": [{"agent": "a/b-v0", "expert": "a/c-v0"}],
        "labellers": {"ailot": {}, "zero": {}},
        "learners": {"iql": {}},
        "train": {"steps": 10, "eval_every": 5},
    }


def _fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


# level -> (insert an unknown key into a valid raw config, keys that are known there, how the error names it)
LEVELS = {
    "top": (lambda raw, k: raw.update({k: 1}), {"name", "datasets", "labellers", "learners", "seeds", "storage",
                                                 "intents", "train", "resources"}, "'{k}'"),
    "train": (lambda raw, k: raw["train"].update({k: 1}), _fields(TrainConfig), "'train.{k}'"),
    "resources": (lambda raw, k: raw.setdefault("resources", {}).update({k: 1}), _fields(ResourcesConfig),
                  "'resources.{k}'"),
    "labellers": (lambda raw, k: raw["labellers"].update({k: {}}), {"ailot", "otr", "true", "zero"},
                  "'labellers.{k}'"),
    "labeller-setting": (lambda raw, k: raw["labellers"]["ailot"].update({k: 1}),
                         {"k", "epsilon", "relative_epsilon", "alpha", "tau", "n_experts", "expert_mode", "threshold",
                          "max_iterations"}, "'labellers.ailot.{k}'"),
    "dataset": (lambda raw, k: raw["datasets"][0].update({k: "x"}),
                {"agent", "expert", "name", "task_family", "env", "obs_keys", "generate"}, "'datasets[0].{k}'"),
    "generate": (lambda raw, k: raw["datasets"][0].update({"generate": {k: 1}}),
                 set(inspect.signature(generate_pointmaze).parameters), "'datasets[0].generate.{k}'"),
    "learners": (lambda raw, k: raw["learners"].update({k: {}}), {"iql", "bc", "diffusion_ql"}, "'learners.{k}'"),
    "learner-setting": (lambda raw, k: raw["learners"]["iql"].update({k: 1}), _fields(IQLConfig),
                        "learners.iql.{k}:"),
    "intents": (lambda raw, k: raw.setdefault("intents", {}).update({k: 1}), _fields(ICVFConfig),
                "intents config key '{k}'"),
}  # fmt: skip


@FAST
@given(level=st.sampled_from(sorted(LEVELS)), key=KEYS)
def test_an_unknown_key_at_any_level_is_refused_by_name(level, key):
    insert, known, named = LEVELS[level]
    assume(key not in known and key.lower() not in known)
    raw = _base()
    insert(raw, key)
    with pytest.raises(AilotInputError) as err:
        sweep_config_from_dict(raw)
    assert named.format(k=key) in str(err.value)
    assert "Fix: use one of" in str(err.value)


# ----------------------------------------------------------------------------------------- padding/buckets


@FAST
@given(
    lengths=st.lists(st.integers(0, 40), min_size=1, max_size=8),
    feature_shape=st.sampled_from([(), (1,), (3,), (2, 2)]),
    extra=st.integers(0, 5),
)
def test_pad_batch_unpad_round_trip_and_masks(lengths, feature_shape, extra):
    rng = np.random.default_rng(len(lengths) * 100 + sum(lengths))
    arrays = [rng.normal(size=(t, *feature_shape)).astype(np.float32) for t in lengths]
    pad_to = max(lengths) + extra
    padded, lens = pad_batch(arrays, pad_to)
    assert padded.shape == (len(arrays), pad_to, *feature_shape) and padded.dtype == np.float32
    np.testing.assert_array_equal(lens, lengths)
    mask = np.arange(pad_to)[None, :] < lens[:, None]  # [N, L]: True on real steps
    np.testing.assert_array_equal(mask.sum(axis=1), lengths)
    assert not padded[~mask].any()  # zeros past each episode's end
    for back, original in zip(unpad(padded, lens), arrays, strict=True):
        np.testing.assert_array_equal(back, original)
    unpadded_default, _ = pad_batch(arrays)  # default pad length: the longest episode
    assert unpadded_default.shape[1] == max(lengths)


@FAST
@given(length=st.integers(0, 10**7), min_exp=st.integers(0, 10))
def test_bucket_length_is_the_smallest_power_of_two_that_fits(length, min_exp):
    min_bucket = 2**min_exp
    b = bucket_length(length, min_bucket)
    assert b & (b - 1) == 0, "a power of two"
    assert b >= length and b >= min_bucket
    assert b == min_bucket or b // 2 < length, "no smaller power of two would do"


@FAST
@given(lengths=st.lists(st.integers(0, 5000), max_size=60), min_exp=st.integers(0, 8))
def test_length_buckets_cover_every_episode_exactly_once(lengths, min_exp):
    min_bucket = 2**min_exp
    buckets = length_buckets(lengths, min_bucket)
    sizes = [b for b, _ in buckets]
    assert sizes == sorted(set(sizes), reverse=True), "distinct buckets, largest first"
    indices = np.concatenate([idx for _, idx in buckets]) if buckets else np.array([], np.int64)
    assert sorted(indices.tolist()) == list(range(len(lengths))), "every episode in exactly one bucket"
    for size, idx in buckets:
        assert len(idx) and np.all(np.diff(idx) > 0), "non-empty, ascending"
        assert all(bucket_length(lengths[i], min_bucket) == size >= lengths[i] for i in idx)
