"""Shared fixtures: an isolated Minari root for the whole session and one tiny generated UMaze pair."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import tempfile

import pytest

# One Ray auth token for the whole session, kept in the environment rather than ~/.ray: Ray reads it once
# per process, so every local Ray a test starts must share it.
os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))

# Sizes of the shared UMaze pair: big enough for several episodes of varied length (bucketing) and a
# non-trivial top-N, small enough to generate in about two seconds.
TINY_UMAZE = {"maze": "umaze", "agent_transitions": 3000, "expert_episodes": 3, "seed": 0,
              "reference_episodes": 5, "progress": False}


def write_hdf5(path, arrays: dict) -> None:
    """A D4RL-format file holding `arrays` (entries that are None are left out, as a file missing them)."""
    import h5py

    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            if v is not None:
                f.create_dataset(k, data=v)


@pytest.fixture(scope="session", autouse=True)
def minari_root(tmp_path_factory):
    """A temporary MINARI_DATASETS_PATH for the session (autouse: set before Ray or any loader starts, so
    worker processes inherit it and no test touches ~/.minari)."""
    root = tmp_path_factory.mktemp("minari")
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    yield root
    if old is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = old


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
    """One JAX compilation cache for the session's processes (ailot.compile_cache), in its temporary directory:
    set before Ray starts, so workers inherit it; the suite starts cold and never writes to ~/.cache."""
    from ailot import compile_cache

    where = tmp_path_factory.mktemp("jax-cache")
    old = os.environ.get(compile_cache.SETTING)
    os.environ[compile_cache.SETTING] = str(where)
    compile_cache.enable()
    yield where
    if old is None:
        os.environ.pop(compile_cache.SETTING, None)
    else:
        os.environ[compile_cache.SETTING] = old


@pytest.fixture(scope="session")
def pointmaze_umaze(minari_root) -> tuple[str, str]:
    """(agent_id, expert_id) of a tiny generated UMaze pair in `minari_root`, made once per session."""
    from ailot.data.generate import generate_pointmaze

    return generate_pointmaze(root=minari_root, **TINY_UMAZE)


@contextlib.contextmanager
def local_ray(prefix: str):
    """A local Ray for one test module: 2 CPUs, loopback, no dashboard, temp files (and core claims) in a short
    /tmp dir (Ray's socket paths have a length limit) that is removed afterwards."""
    import ray

    tmp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    # core claims (ailot.cores) of this Ray's workers, which inherit the variable, apart from other tests'
    old_claims = os.environ.get("AILOT_CORE_CLAIMS")
    os.environ["AILOT_CORE_CLAIMS"] = os.path.join(tmp, "core-claims")
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, _node_ip_address="127.0.0.1",
                 log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        if old_claims is None:
            os.environ.pop("AILOT_CORE_CLAIMS", None)
        else:
            os.environ["AILOT_CORE_CLAIMS"] = old_claims
