"""The labeller registry: every labeller's settings are checked at config load, and its cache key holds exactly
what its rewards depend on (expert set, settings, encoder, seed), so no stale rewards are ever reused."""

from __future__ import annotations

import numpy as np
import pytest

from ailot import labellers
from ailot.config import sweep_config_from_dict
from ailot.data.episodes import Episodes
from ailot.errors import AilotInputError


def episodes(seed: int, n: int = 4, length: int = 12, obs_dim: int = 3, dataset_id: str = "toy") -> Episodes:
    rng = np.random.default_rng(seed)
    return Episodes(
        [rng.normal(size=(length + 1, obs_dim)) for _ in range(n)], [rng.uniform(-1, 1, (length, 2)) for _ in range(n)],
        [rng.uniform(size=length) for _ in range(n)], [np.zeros(length, bool) for _ in range(n)],
        [np.eye(1, length, length - 1, dtype=bool)[0] for _ in range(n)], dataset_id)


def default_setting(name: str) -> dict:
    return {"labeller": name, **labellers.get(name).defaults()}


def config(**labellers_section) -> dict:
    return {"name": "t", "datasets": [{"agent": "a/b-v0", "expert": "a/c-v0"}], "labellers": labellers_section,
            "learners": {"iql": {}}}


@pytest.mark.parametrize("name", sorted(labellers.LABELLERS))
def test_cache_key_follows_exactly_what_the_labeller_reads(name):
    cls = labellers.get(name)
    agent, expert, other_expert = episodes(0), episodes(1, dataset_id="e"), episodes(2, dataset_id="e")
    setting = default_setting(name)
    key = cls.cache_key(setting, agent, expert, "enc-a", 0)
    assert key == cls.cache_key(dict(setting), agent, expert, "enc-a", 0)  # stable
    assert (cls.cache_key(setting, agent, other_expert, "enc-a", 0) != key) == cls.uses_expert
    assert (cls.cache_key(setting, agent, expert, "enc-b", 0) != key) == cls.uses_encoder
    assert (cls.cache_key(setting, agent, expert, "enc-a", 1) != key) == cls.seeded
    assert cls.cache_key(setting, episodes(3), expert, "enc-a", 0) != key  # other agent data, other rewards
    for k, spec in cls.settings.items():  # every setting it declares moves the key when changed
        other = _another_value(spec)
        if other is not None:
            assert cls.cache_key({**setting, k: other}, agent, expert, "enc-a", 0) != key, k


def _another_value(spec: labellers.Setting):
    if spec.kind == "bool":
        return not spec.default
    if spec.kind == "choice":
        return next((c for c in spec.choices if c != spec.default), None)
    if spec.kind == "int":
        return spec.default + 1
    if spec.kind == "float":
        return spec.default * 2 if spec.default else 0.5
    if spec.kind == "ints":
        return (*spec.default, 7)
    return None


@pytest.mark.parametrize("name", sorted(labellers.LABELLERS))
def test_defaults_validate_and_bad_settings_are_refused_at_load(name):
    cls = labellers.get(name)
    cfg = sweep_config_from_dict(config(**{name: {}}))
    assert cfg.labeller_settings() == [default_setting(name)]
    with pytest.raises(AilotInputError, match=f"labellers.{name}.no_such_setting"):
        sweep_config_from_dict(config(**{name: {"no_such_setting": 1}}))
    for key, spec in cls.settings.items():
        with pytest.raises(AilotInputError, match=f"labellers.{name}.{key}"):
            sweep_config_from_dict(config(**{name: {key: {"a": "mapping"}}}))
        if spec.kind in ("int", "float"):
            with pytest.raises(AilotInputError, match=f"labellers.{name}.{key}"):
                sweep_config_from_dict(config(**{name: {key: -1}}))


def test_numbers_written_as_yaml_strings_are_numbers():
    # PyYAML reads 1e-2 (no dot) as a string
    cfg = sweep_config_from_dict(config(ailot={"epsilon": "1e-2", "k": [1, "5"]}))
    assert [(s["k"], s["epsilon"]) for s in cfg.labeller_settings()] == [(1, 0.01), (5, 0.01)]


def test_unknown_labeller_is_refused_with_the_registry_names():
    with pytest.raises(AilotInputError, match="labellers.nope") as err:
        sweep_config_from_dict(config(nope={}))
    assert "ailot" in str(err.value) and "otr" in str(err.value)


def test_reference_labellers_through_the_registry():
    agent = episodes(0)
    assert np.array_equal(labellers.label(default_setting("true"), agent), np.concatenate(agent.rewards))
    assert not labellers.label(default_setting("zero"), agent).any()
    with pytest.raises(AilotInputError, match="'otr'.*needs an expert dataset"):
        labellers.label(default_setting("otr"), agent, None)


def test_state_only_expert_set_refuses_every_method_that_reads_expert_actions():
    readers = [n for n in labellers.LABELLERS if labellers.reads_expert_actions(default_setting(n))]
    for name in readers:
        raw = config(**{name: {}})
        raw["datasets"][0]["expert_actions"] = False
        with pytest.raises(AilotInputError, match=f"labellers.{name}.*state-only"):
            sweep_config_from_dict(raw)
    for name in set(labellers.LABELLERS) - set(readers):
        raw = config(**{name: {}})
        raw["datasets"][0]["expert_actions"] = False
        sweep_config_from_dict(raw)
