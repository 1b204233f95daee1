"""cluster/: the launcher YAMLs pass Ray's own config validation, the KubeRay manifest has the fields we use,
and (slow) a local fake autoscaling cluster adds workers for work the head cannot run and removes them
when idle. The slow test starts and stops only its own Ray processes (never `ray stop`)."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jsonschema
import pytest
import yaml

CLUSTER = Path(__file__).resolve().parents[1] / "cluster"


def _load_local_autoscale():
    spec = importlib.util.spec_from_file_location("local_autoscale", CLUSTER / "local_autoscale.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("local_autoscale", mod)
    spec.loader.exec_module(mod)
    return mod


def _yaml(name: str) -> dict:
    with open(CLUSTER / name) as f:
        return yaml.safe_load(f)


def _prepared(name: str) -> dict:
    """The config as `ray up` sees it: provider defaults filled in, then Ray's schema + checks."""
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(_yaml(name)))
    validate_config(config)
    return config


# ----------------------------------------------------------------------------------- launcher YAMLs


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml"])
def test_launcher_yaml_validates_with_rays_schema(name):
    config = _prepared(name)
    types = config["available_node_types"]
    head = types[config["head_node_type"]]

    # A CPU head that runs no trials: the autoscaler's view and Ray's own.
    assert head["resources"].get("CPU") == 0
    assert any("--num-cpus=0" in c for c in config["head_start_ray_commands"])
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])

    gpu_types = {n: t for n, t in types.items() if t["resources"].get("GPU", 0) >= 1}
    assert gpu_types, "no GPU worker type"
    for t in gpu_types.values():
        assert t["min_workers"] == 0 and t["max_workers"] > 0
    spot = [t["node_config"] for t in gpu_types.values()]
    assert any("InstanceMarketOptions" in c or "SPOT" in json.dumps(c.get("scheduling", {})) for c in spot)

    assert 0 < config["idle_timeout_minutes"] <= 30
    assert config["max_workers"] >= max(t["max_workers"] for t in gpu_types.values())
    run_options = " ".join(config["docker"]["run_options"])
    assert "XLA_PYTHON_CLIENT_PREALLOCATE=false" in run_options
    assert "RAY_AUTH_MODE=token" in run_options
    setup = " ".join(config["setup_commands"])
    assert "jax[cuda12]" in setup and "pip install -q -e ~/ailot" in setup
    # Ray's image tag matches the installed Ray (client, head and workers must agree).
    import ray

    assert f"ray:{ray.__version__}-py311" in config["docker"]["image"]


@pytest.mark.parametrize("name", ["aws.yaml", "gcp.yaml", "local-autoscale.yaml"])
def test_schema_rejects_a_misspelled_key(name):
    """The validation above is strict: a typo in a node type is an error, not silently ignored."""
    from ray.autoscaler._private.util import validate_config

    config = _yaml(name)
    worker = next(n for n in config["available_node_types"] if n != config["head_node_type"])
    config["available_node_types"][worker]["max_worker"] = 3
    with pytest.raises(jsonschema.ValidationError):
        validate_config(config)


def test_local_autoscale_yaml_is_complete():
    """The autoscaler reads this file as is (no defaults are filled for fake_multinode in Ray 2.60)."""
    from ray.autoscaler._private.util import validate_config

    config = _yaml("local-autoscale.yaml")
    validate_config(config)
    provider = config["provider"]
    assert provider["type"] == "fake_multinode"
    assert provider["use_node_id_as_ip"] and provider["disable_node_updaters"]
    types = config["available_node_types"]
    assert types[config["head_node_type"]]["resources"] == {"CPU": 0}
    workers = [t for n, t in types.items() if n != config["head_node_type"]]
    assert all(t.get("min_workers", 0) == 0 and t["max_workers"] > 0 for t in workers)
    # Every field the autoscaler loop reads without defaults.
    for key in (
        "file_mounts",
        "cluster_synced_files",
        "worker_setup_commands",
        "worker_start_ray_commands",
        "idle_timeout_minutes",
        "upscaling_speed",
        "max_workers",
    ):
        assert key in config, key

    la = _load_local_autoscale()
    over = la.load_config(idle_timeout_minutes=0.1, worker_max={"fake_gpu_worker": 0})
    assert over["idle_timeout_minutes"] == 0.1
    assert over["available_node_types"]["fake_gpu_worker"]["max_workers"] == 0
    assert la.head_start_args(over, 10**8)[:2] == ["--num-cpus=0", "--num-gpus=0"]


# ----------------------------------------------------------------------------------- KubeRay


def test_kuberay_manifest_structure():
    doc = _yaml("kuberay.yaml")
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] == "RayCluster"
    spec = doc["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["autoscalerOptions"]["idleTimeoutSeconds"] > 0
    import ray

    assert spec["rayVersion"] == ray.__version__

    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # KubeRay wants strings here
    assert head.get("serviceType", "ClusterIP") == "ClusterIP"

    def env(pod_spec):
        (container,) = pod_spec["containers"]
        return {e["name"]: e.get("value") for e in container.get("env", [])}

    assert env(head["template"]["spec"])["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"

    gpu_groups = [
        g for g in spec["workerGroupSpecs"]
        if int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) >= 1
    ]  # fmt: skip
    assert gpu_groups, "no worker group with nvidia.com/gpu limits"
    for g in gpu_groups:
        assert g["minReplicas"] == 0 and g["maxReplicas"] > 0
        assert g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"]
        assert g["groupName"]
        assert env(g["template"]["spec"])["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
        assert isinstance(g["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in g["rayStartParams"].values())


# ----------------------------------------------------------------------------------- local autoscaling


DRIVER = textwrap.dedent(
    """
    import json, os, sys, time
    import ray

    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)

    @ray.remote(num_cpus=1)  # the head offers 0 CPUs: only an added worker can run this
    def work(i):
        time.sleep(2.0)
        return ray.get_runtime_context().get_node_id()

    refs = [work.remote(i) for i in range(4)]
    open(sys.argv[1], "w").write(str(time.time()))  # submitted
    nodes = ray.get(refs, timeout=150)
    print(json.dumps({"nodes": nodes}))
    """
)


@pytest.mark.slow
def test_local_cluster_scales_up_then_down(tmp_path):
    la = _load_local_autoscale()
    # The conftest's session token: this process then talks to the cluster without swapping Ray's caches.
    cluster = la.start_cluster(
        idle_timeout_minutes=0.1,  # 6 s
        worker_max={"fake_gpu_worker": 0},  # CPU work, CPU workers (2 at most on a small CI machine)
        token=os.environ.get("RAY_AUTH_TOKEN"),
        include_dashboard=False,
    )
    ok = False
    try:
        assert cluster.worker_nodes() == []  # zero workers to start with
        submitted = tmp_path / "submitted"
        env = {**os.environ, **cluster.client_vars()}
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(submitted)], env=env, stdout=subprocess.PIPE, text=True
        )
        try:
            t_up, workers = cluster.wait_for_workers(lambda w: len(w) >= 1, timeout_s=120, poll_s=0.25)
            t_seen = time.time()
            out, _ = driver.communicate(timeout=180)
            t_done = time.monotonic()
        finally:
            if driver.poll() is None:
                driver.kill()
        assert driver.returncode == 0, out
        scale_up_s = t_seen - float(submitted.read_text())  # from submit to the first worker alive
        ran_on = set(json.loads(out.strip().splitlines()[-1])["nodes"])
        head_ids = {n["node_id"] for n in cluster.nodes() if n["is_head"]}
        assert ran_on and not (ran_on & head_ids), "work ran on the head"
        assert {w["node_type"] for w in workers} <= {"cpu_worker"}

        cluster.wait_for_workers(lambda w: len(w) == 0, timeout_s=120, poll_s=0.5)
        scale_down_s = time.monotonic() - t_done  # from the work's end to the last worker gone
        print(
            f"\nlocal autoscaling: scale-up {scale_up_s:.1f}s (submit -> first worker alive, "
            f"poll {t_up:.1f}s), {len(ran_on)} worker node(s) ran the work, "
            f"scale-down {scale_down_s:.1f}s after the work ended (idle timeout 6 s)"
        )
        ok = True
    finally:
        killed = cluster.stop(keep_temp_dir=not ok)
        assert killed
        import psutil

        leftover = [p.pid for p in psutil.process_iter(["cmdline"]) if cluster.temp_dir in " ".join(
            p.info["cmdline"] or [])]  # fmt: skip
        assert not leftover, f"processes of {cluster.temp_dir} still running: {leftover}"


from conftest import TINY_UMAZE  # noqa: E402

TINY_SWEEP = {
    "name": "tiny-autoscale",
    "datasets": [
        {
            "name": "umaze",
            "agent": "ailot/pointmaze-umaze/agent-3k-v0",
            "expert": "ailot/pointmaze-umaze/expert-v0",
            "task_family": "maze2d",
            # the same settings as the session's `pointmaze_umaze` fixture, so whichever runs first makes it
            "generate": {k: v for k, v in TINY_UMAZE.items() if k != "progress"},
        }
    ],
    "intents": {"hidden_dims": [32, 32], "num_steps": 200, "chunk": 100, "batch_size": 64},
    "labellers": {"ailot": {"k": 2}, "zero": {}},
    "learners": {"iql": {"hidden_dims": [32, 32]}},
    "seeds": [0],
    "train": {"steps": 200, "eval_every": 100, "eval_episodes": 2, "eval_envs": 2, "chunk": 100, "batch_size": 64},
    # relabel_gpus: the sweep asks the autoscaler for the (fake) GPU worker before relabelling
    "resources": {"cpus_per_trial": 1, "max_failures": 1, "relabel_gpus": 1, "scale_timeout_s": 240},
}


@pytest.mark.slow
def test_tiny_sweep_on_local_autoscaling_cluster(tmp_path):
    """tune/sweep.py against a head with 0 CPUs: every actor and trial needs workers the autoscaler adds, and
    the relabel stage asks ahead for a GPU worker, which no task or actor requests by itself."""
    import pandas as pd

    la = _load_local_autoscale()
    config = dict(TINY_SWEEP, storage=str(tmp_path / "results"))
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(config))
    repo = Path(__file__).resolve().parents[1]
    with la.local_cluster(
        idle_timeout_minutes=0.1, worker_max={"cpu_worker": 1, "fake_gpu_worker": 1},
        token=os.environ.get("RAY_AUTH_TOKEN"), include_dashboard=False,
    ) as cluster:  # fmt: skip
        env = {**os.environ, **cluster.client_vars()}
        cmd = [sys.executable, str(repo / "tune/sweep.py"), "--config", str(tmp_path / "tiny.yaml"),
               "--address", cluster.gcs_address, "--no-plots", "--no-report", "--quiet"]  # fmt: skip
        sweep = subprocess.Popen(cmd, env=env, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            t_up, _ = cluster.wait_for_workers(lambda w: len(w) >= 1, timeout_s=180)
            t_gpu, _ = cluster.wait_for_workers(lambda w: any(n["node_type"] == "fake_gpu_worker" for n in w),
                                                timeout_s=240)
            out, _ = sweep.communicate(timeout=400)
        finally:
            if sweep.poll() is None:
                sweep.kill()
        assert sweep.returncode == 0, out[-3000:]
        assert "relabel pool: 1 actors (GPU)" in out, out[-3000:]
        df = pd.read_parquet(tmp_path / "results" / "tiny-autoscale.parquet")
        assert df["trial_id"].nunique() == 2 and len(df) == 4
        t_down, _ = cluster.wait_for_workers(lambda w: len(w) == 0, timeout_s=120)
        print(
            f"\ntiny sweep on the local autoscaling cluster: first worker {t_up:.1f}s after launch, GPU worker for "
            f"relabelling {t_gpu:.1f}s after that, "
            f"workers gone {t_down:.1f}s after the sweep ended"
        )
