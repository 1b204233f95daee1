"""Exported Parquet: RLlib's offline columns, read back by pyarrow and Ray Data with the same rows and metadata."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import local_ray

from ailot import labellers
from ailot.config import sweep_config_from_dict
from ailot.data.loading import load_minari
from ailot.errors import AilotInputError
from ailot.export import COLUMNS, export_dataset, file_ranges, read_arrays, read_metadata
from ailot.export_cli import export_from_config
from ailot.labellers import label

SETTING = {"labeller": "true"}


@pytest.fixture(scope="module")
def agent(pointmaze_umaze):
    return load_minari(pointmaze_umaze[0])


@pytest.fixture(scope="module")
def exported(agent, tmp_path_factory):
    rewards = np.random.default_rng(0).standard_normal(agent.num_transitions).astype(np.float32)
    out = tmp_path_factory.mktemp("export") / "umaze"
    export_dataset(agent, rewards, out, labeller_settings=SETTING, dataset_fingerprint=agent.fingerprint(),
                   rows_per_file=500)
    return out, rewards


def _expected(agent, rewards):
    tr = agent.to_transitions()
    return {"eps_id": tr.episode_ids, "t": tr.timesteps, "obs": tr.observations, "actions": tr.actions,
            "rewards": rewards, "new_obs": tr.next_observations, "terminateds": tr.terminals.astype(bool),
            "truncateds": tr.timeouts.astype(bool)}


def test_file_ranges_keep_episodes_whole():
    assert file_ranges(np.array([300, 300, 100, 900, 50]), 500) == [(0, 2), (2, 4), (4, 5)]
    assert file_ranges(np.array([10]), 500) == [(0, 1)]


def test_pyarrow_round_trip_and_metadata(agent, exported):
    out, rewards = exported
    files = sorted(out.glob("*"))
    assert len(files) > 2 and all(f.name.startswith("part-") and f.suffix == ".parquet" for f in files)
    assert pq.read_schema(files[0]).names == list(COLUMNS)
    got = read_arrays(out)
    for name, want in _expected(agent, rewards).items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    for f in files:  # every file carries the metadata, so any one of them describes the export
        meta = json.loads(pq.read_schema(f).metadata[b"ailot"])
        assert meta["labeller_settings"] == SETTING and meta["dataset_fingerprint"] == agent.fingerprint()
    meta = read_metadata(out)
    assert meta["dataset_id"] == agent.dataset_id and meta["num_transitions"] == agent.num_transitions
    assert meta["obs_dim"] == agent.obs_dim and meta["obs_keys"] == list(agent.obs_keys)
    assert not list(out.parent.glob(".*tmp-*"))  # no temporary directory left behind


def test_bad_inputs_raise_input_errors(agent, exported, tmp_path):
    out, rewards = exported
    with pytest.raises(AilotInputError, match="already exists"):
        export_dataset(agent, rewards, out, labeller_settings=SETTING)
    with pytest.raises(AilotInputError, match="does not match"):
        export_dataset(agent, rewards[:-1], tmp_path / "a", labeller_settings=SETTING)
    with pytest.raises(AilotInputError, match="labeller_settings"):
        export_dataset(agent, rewards, tmp_path / "b", labeller_settings={"k": 1})
    with pytest.raises(AilotInputError, match="fingerprint"):
        export_dataset(agent, rewards, tmp_path / "c", labeller_settings=SETTING, dataset_fingerprint="0" * 64)
    assert not list(tmp_path.iterdir())  # nothing written by a refused export


def test_overwrite_replaces_atomically(agent, tmp_path):
    zeros = np.zeros(agent.num_transitions, np.float32)
    out = export_dataset(agent, zeros + 1, tmp_path / "x", labeller_settings={"labeller": "zero"})
    export_dataset(agent, zeros, out, labeller_settings={"labeller": "zero"}, overwrite=True)
    np.testing.assert_array_equal(read_arrays(out)["rewards"], zeros)
    assert [p.name for p in tmp_path.iterdir()] == ["x"]


def test_export_from_config_uses_the_pipeline_and_its_cache(pointmaze_umaze, agent, tmp_path):
    cfg = sweep_config_from_dict({
        "name": "exp", "storage": str(tmp_path / "results"), "learners": {"bc": {}},
        "datasets": [{"agent": pointmaze_umaze[0], "expert": pointmaze_umaze[1]}],
        "labellers": {"true": {}, "otr": {"epsilon": [1e-2, 1e-1], "max_iterations": 50}},
    })
    with pytest.raises(AilotInputError, match="matches 2 settings"):
        export_from_config(cfg, "otr", tmp_path / "o")
    with pytest.raises(AilotInputError, match="is not in config"):
        export_from_config(cfg, "ailot", tmp_path / "o")
    out = export_from_config(cfg, "otr", tmp_path / "o", overrides={"epsilon": 0.1})
    meta = read_metadata(out)
    assert meta["labeller_settings"]["epsilon"] == 0.1 and not meta["extra"]["from_cache"]
    assert meta["reward_setting"] == labellers.reward_setting(meta["labeller_settings"])
    assert meta["reward_setting"]["epsilon"] == 0.1 and "labeller" in meta["reward_setting"]
    expert = load_minari(pointmaze_umaze[1])
    want = label(meta["labeller_settings"], agent, expert)
    np.testing.assert_allclose(read_arrays(out)["rewards"], want, rtol=1e-5, atol=1e-6)
    again = export_from_config(cfg, "otr", tmp_path / "o2", overrides={"epsilon": 0.1})
    assert read_metadata(again)["extra"]["from_cache"]  # second export reads the rewards cache


@pytest.fixture(scope="module")
def ray_local():
    with local_ray("rayx") as ray:
        yield ray


def test_ray_data_round_trip(ray_local, agent, exported):
    ray = ray_local
    out, rewards = exported
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True
    ctx.enable_progress_bars = False
    ds = ray.data.read_parquet(str(out))
    assert ds.schema().names == list(COLUMNS)
    batches = list(ds.iter_batches(batch_size=700, batch_format="numpy"))
    assert len(batches) > 1  # streamed, not one block
    got = {k: np.concatenate([b[k] for b in batches]) for k in COLUMNS}
    for name in ("obs", "actions", "new_obs"):  # one float32 vector per row, as RLlib's OfflinePreLearner reads
        assert isinstance(got[name][0], np.ndarray) and got[name][0].dtype == np.float32
        got[name] = np.stack(got[name])
    for name, want in _expected(agent, rewards).items():
        np.testing.assert_array_equal(got[name], want, err_msg=name)
    # episode ids are consistent: each episode is one contiguous run with t = 0, 1, ..., T-1
    starts = np.flatnonzero(np.diff(got["eps_id"], prepend=-1))
    assert len(starts) == agent.num_episodes and (got["t"][starts] == 0).all()
    np.testing.assert_array_equal(np.diff(np.append(starts, len(got["t"]))), agent.lengths)
