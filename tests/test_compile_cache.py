"""ailot.compile_cache: processes share compiled code through a directory, which the setting moves or turns off."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ailot import compile_cache

REPO = Path(__file__).resolve().parents[1]
COMPILE = """
import jax, jax.monitoring, jax.numpy as jnp
from ailot import compile_cache
hits = []
jax.monitoring.register_event_listener(lambda name, **_: hits.append(name) if name.endswith("cache_hits") else None)
print(compile_cache.enable())

def deep(x):  # long enough to compile that the cache keeps it
    for i in range(30):
        x = jnp.sin(x @ x.T) + i
    return x.sum()

print(float(jax.jit(deep)(jnp.arange(4096.0).reshape(64, 64) / 4096)), len(hits))
"""


def run(env: dict) -> list[str]:
    full = {k: v for k, v in os.environ.items() if k not in (compile_cache.SETTING, "JAX_COMPILATION_CACHE_DIR")}
    proc = subprocess.run([sys.executable, "-c", COMPILE], env={**full, **env, "JAX_PLATFORMS": "cpu"}, cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_a_second_process_reads_what_the_first_compiled_and_gets_the_same_numbers(tmp_path):
    where = tmp_path / "cache"
    directory, value, hits = run({compile_cache.SETTING: str(where)})
    assert directory == str(where) and hits == "0" and any(p.name.startswith("jit_deep") for p in where.iterdir())
    again = run({compile_cache.SETTING: str(where)})
    assert again[1] == value and int(again[2]) >= 1  # loaded from the cache, same numbers


@pytest.mark.parametrize("value", ["off", "0"])
def test_off_writes_nothing(tmp_path, value):
    home = tmp_path / "home"
    assert run({compile_cache.SETTING: value, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")})[0] == "None"
    assert not home.exists()


def test_default_is_node_local_under_the_cache_home(tmp_path, monkeypatch):
    monkeypatch.delenv(compile_cache.SETTING, raising=False)
    monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.directory() == str(tmp_path / "ailot" / "jax")
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/elsewhere")  # the user's own choice wins over the default
    assert compile_cache.directory() == "/elsewhere"
