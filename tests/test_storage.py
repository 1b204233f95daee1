"""Storage paths: local directories and fsspec URIs (memory:// stands for an object store: no append, no rename)
behave alike for results, encoders and the update log."""

import uuid
from pathlib import Path

import fsspec
import jax
import numpy as np
import pandas as pd
import pytest
from test_data_episodes import make_episodes

from ailot import pipeline, results, storage
from ailot.config import sweep_config_from_dict
from ailot.intents import ICVFConfig, IntentEncoder, init_params

INTENTS = {"hidden_dims": [8, 8]}


@pytest.fixture(params=["local", "memory"])
def root(request, tmp_path):
    if request.param == "local":
        return tmp_path / "store"
    return f"memory://ailot-test-{uuid.uuid4().hex}/store"


def listing(root) -> list[str]:
    fs, p = fsspec.core.url_to_fs(str(root))
    return sorted(f[len(p) + 1:] for f in fs.find(p))


def test_uris_keep_their_scheme_and_local_paths_stay_paths(tmp_path):
    assert storage.join("s3://bucket/ailot", "sweep", "cache") == "s3://bucket/ailot/sweep/cache"
    assert storage.join("s3://bucket/ailot/", "x.parquet") == "s3://bucket/ailot/x.parquet"
    assert storage.join(tmp_path, "a", "b") == tmp_path / "a" / "b"
    cfg = sweep_config_from_dict({"name": "sw", "storage": "gs://b/r", "datasets": [{"agent": "a", "expert": "e"}],
                                  "labellers": {"zero": {}}, "learners": {"iql": {}}})
    # pathlib would make these 'gs:/b/r/...', a local directory named 'gs:'
    assert (cfg.run_dir, cfg.parquet_path, cfg.cache_dir, cfg.figures_dir) == (
        "gs://b/r/sw", "gs://b/r/sw.parquet", "gs://b/r/sw/cache", "gs://b/r/figures/sw")


def test_write_read_replace_leaves_no_temporary_files(root):
    path = storage.join(root, "deep", "file.bin")
    assert not storage.exists(path)
    storage.write_bytes(path, b"first")
    storage.write_bytes(path, b"second")
    assert storage.read_bytes(path) == b"second"
    assert listing(root) == ["deep/file.bin"]


def test_update_log_keeps_every_line_in_order(root):
    path = storage.join(root, "updates.jsonl")
    assert storage.read_lines(path) == []
    for i in range(5):
        storage.append_line(path, f'{{"to": {i}}}')
    assert storage.read_lines(path) == [f'{{"to": {i}}}' for i in range(5)]
    # local disk appends to one file; an object store gets one object per line
    assert len(listing(root)) == (1 if isinstance(root, Path) else 5)


def test_results_round_trip_through_any_storage(root):
    rows = [{"trial_id": "t", "step": s, "normalized_score": 10.0 * s, "labeller": "ailot"} for s in (1, 2)]
    path = storage.join(root, "sweep.parquet")
    results.write_atomic(rows, path)
    df = results.load(path)
    assert list(df["normalized_score"]) == [10.0, 20.0] and list(df.columns) == results.SCHEMA.names
    with pytest.raises(Exception, match="does not exist"):
        results.load(storage.join(root, "other.parquet"))


def test_encoder_cache_round_trip_and_marker_last(root):
    agent = make_episodes([20, 30], obs_dim=3)
    cfg = ICVFConfig.from_dict(INTENTS)
    psi = jax.device_get(init_params(jax.random.PRNGKey(0), cfg, 3)["psi"])
    encoder = IntentEncoder(psi, np.full(3, 0.5, np.float32), np.full(3, 2.0, np.float32), cfg)
    assert pipeline.cached_encoder(agent, INTENTS, 0, root) is None
    path = pipeline.store_encoder(encoder, agent, INTENTS, 0, root, seconds=1.5)
    assert sorted(listing(path)) == ["DONE", "encoder.json", "psi_params.msgpack"]
    loaded = pipeline.cached_encoder(agent, INTENTS, 0, root)
    assert loaded.content_hash() == encoder.content_hash()
    states = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(loaded.embed(states)), np.asarray(encoder.embed(states)))
    # another seed or other data is another entry
    assert pipeline.cached_encoder(agent, INTENTS, 1, root) is None
    assert pipeline.cached_encoder(make_episodes([20, 31], obs_dim=3), INTENTS, 0, root) is None
    # files without the DONE marker (a writer that died mid-copy) are not an encoder
    fs, p = fsspec.core.url_to_fs(str(path))
    fs.rm(f"{p}/DONE")
    assert pipeline.cached_encoder(agent, INTENTS, 0, root) is None


def test_object_store_gets_the_marker_after_every_file(tmp_path, monkeypatch):
    written = []
    write = storage.write_bytes
    monkeypatch.setattr(storage, "write_bytes", lambda path, data: (written.append(path), write(path, data)))
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name)
    storage.publish_dir(tmp_path, f"memory://ailot-test-{uuid.uuid4().hex}/enc", "DONE", "ok")
    assert [w.rsplit("/", 1)[-1] for w in written] == ["a", "b", "c", "DONE"]


def test_second_publisher_keeps_the_first_directory(tmp_path):
    for text in ("first", "second"):
        src = tmp_path / f"src-{text}"
        src.mkdir()
        (src / "data").write_text(text)
        storage.publish_dir(src, tmp_path / "published", "DONE", text)
    assert (tmp_path / "published" / "data").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["published", "src-first", "src-second"]


def test_results_cli_plots_a_uri_with_its_geometry(capsys):
    root = f"memory://ailot-test-{uuid.uuid4().hex}/results"
    rows = [{"trial_id": f"t{seed}", "step": step, "normalized_score": step / 10 + seed, "dataset": "umaze",
             "labeller": "ailot", "learner": "iql", "seed": seed} for seed in (0, 1) for step in (10, 20)]
    results.write_atomic(rows, storage.join(root, "sw.parquet"))
    geometry = pd.DataFrame({"space": ["psi"] * 3 + ["raw"] * 3, "k": [1, 2, 3] * 2,
                             "mean_sq_dist": [0.1, 0.2, 0.3, 0.2, 0.4, 0.5]})
    geometry.attrs.update(r2={"psi": 1.0, "raw": 0.96}, r2_by_horizon={3: {"psi": 1.0, "raw": 0.96}})
    results.write_geometry(geometry, results.geometry_path(storage.join(root, "sw.parquet")))
    back = results.read_geometry(storage.join(root, "sw.geometry.parquet"))
    assert back.attrs["r2_by_horizon"] == {3: {"psi": 1.0, "raw": 0.96}} and back["k"].tolist() == [1, 2, 3] * 2

    assert results.main(["plot", storage.join(root, "sw.parquet")]) == 0
    figures = listing(storage.join(root, "figures", "sw"))
    assert "learning_curves_umaze.png" in figures and "intent_distance_vs_k.png" in figures
    assert all(storage.read_bytes(storage.join(root, "figures", "sw", f))[:8] == b"\x89PNG\r\n\x1a\n"
               for f in figures)
    assert root + "/figures/sw/learning_curves_umaze.png" in capsys.readouterr().out
