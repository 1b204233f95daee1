"""The README's cluster command, end to end: `ray start --head` (token auth, dashboard on loopback), then
`ray job submit --working-dir <repo> -- python tune/sweep.py --config ...` runs a tiny sweep to completion
and writes its Parquet.

Everything the head writes stays under this test's temp dir, and only this head's processes are ended at
the end (never `ray stop`, which ends every Ray on the machine: other tests and users run Ray here too).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import TINY_UMAZE

REPO = Path(__file__).resolve().parents[1]
# What the README's `--runtime-env-json` leaves out of the upload (.gitignore'd files are left out anyway).
EXCLUDES = ["/results", "/.git"]
RAY = [sys.executable, "-m", "ray.scripts.scripts"]  # the `ray` CLI of this interpreter


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (as cluster/local_autoscale.py picks them)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_config(agent_id: str, expert_id: str) -> dict:
    return {
        "name": "tiny-job",
        "datasets": [
            {
                "name": "umaze",
                "agent": agent_id,
                "expert": expert_id,
                "task_family": "maze2d",
                # the settings of the session's `pointmaze_umaze` fixture, which has already made the pair
                "generate": {k: v for k, v in TINY_UMAZE.items() if k != "progress"},
            }
        ],
        "intents": {"hidden_dims": [16, 16], "num_steps": 200, "chunk": 100, "batch_size": 64},
        "labellers": {"zero": {}, "ailot": {"k": 1, "epsilon": 1.0e-2, "relative_epsilon": True}},
        "learners": {"bc": {"hidden_dims": [32, 32]}},
        "seeds": [0],
        "train": {"steps": 200, "eval_every": 100, "eval_episodes": 2, "eval_envs": 2, "chunk": 100,
                  "batch_size": 64},
        "resources": {"cpus_per_trial": 1, "max_failures": 1, "relabel_actors": 1},
    }  # fmt: skip


def ray_temp_dir(tmp_path_factory) -> tuple[Path, bool]:
    """A temp dir for the head inside pytest's base temp, unless that makes Ray's unix socket paths
    (<temp>/session_<date>_<pid>/sockets/plasma_store) longer than the OS allows; then a short /tmp one."""
    d = tmp_path_factory.mktemp("rj")
    if len(str(d)) + len("/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store") < 104:
        return d, False
    return Path(tempfile.mkdtemp(prefix="rj", dir="/tmp")), True


def own_processes(marker: str) -> list:
    """Processes naming `marker` (our temp dir) on their command line, with all their descendants: the
    GCS, raylet, dashboard and agents name the session dir; workers (`ray::...` titles) and the job's
    driver descend from the raylet."""
    import psutil

    procs: dict[int, psutil.Process] = {}
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if marker in " ".join(p.info["cmdline"] or []):
                procs[p.pid] = p
                procs.update({c.pid: c for c in p.children(recursive=True)})
    procs.pop(os.getpid(), None)
    return list(procs.values())


def stop_head(marker: str, grace_s: float = 10.0) -> list[int]:
    """SIGTERM this head's processes, SIGKILL what is left after `grace_s`; returns their PIDs."""
    import psutil

    killed: set[int] = set()
    for sig in (signal.SIGTERM, signal.SIGKILL):
        procs = own_processes(marker)
        for p in procs:
            with contextlib.suppress(psutil.Error):
                p.send_signal(sig)
        killed |= {p.pid for p in procs}
        psutil.wait_procs(procs, timeout=grace_s)
    return sorted(killed)


def wait_for_job_api(url: str, token: str, timeout_s: float = 90.0) -> None:
    """Until the dashboard answers an authenticated request (every route, /api/version too, wants the token)."""
    request = urllib.request.Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token}"})
    t0 = time.monotonic()
    while True:
        try:
            with urllib.request.urlopen(request, timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"the dashboard at {url} did not answer in {timeout_s:.0f}s")
        time.sleep(0.5)


@pytest.mark.slow
def test_ray_job_submit_runs_a_sweep_on_a_token_authenticated_head(
    pointmaze_umaze, minari_root, tmp_path, tmp_path_factory
):
    import pandas as pd
    from ray.job_submission import JobStatus, JobSubmissionClient

    from ailot.config import load_sweep_config

    agent_id, expert_id = pointmaze_umaze
    config_path = tmp_path / "tiny-job.yaml"
    config_path.write_text(yaml.safe_dump(tiny_config(agent_id, expert_id), sort_keys=False))
    storage = tmp_path / "results"

    temp_dir, own_tmp = ray_temp_dir(tmp_path_factory)
    token = os.environ["RAY_AUTH_TOKEN"]  # the session's (tests/conftest.py), never ~/.ray/auth_token
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update({
        "RAY_AUTH_MODE": "token",  # the head enforces the token; clients (ray job submit) send it
        "RAY_AUTH_TOKEN": token,
        # the job's `python` is looked up on the PATH `ray start` had: make it this interpreter
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        "MINARI_DATASETS_PATH": str(minari_root),  # inherited by the raylet, its workers and the job
        "RAY_TMPDIR": str(temp_dir),  # anything Ray puts in its default temp dir lands here too
        "RAY_USAGE_STATS_ENABLED": "0",
    })  # fmt: skip
    gcs_port, dash_port = free_port(), free_port()
    url = f"http://127.0.0.1:{dash_port}"
    start = RAY + [
        "start", "--head", "--num-cpus", "2", "--num-gpus", "0",
        "--temp-dir", str(temp_dir),
        "--node-ip-address", "127.0.0.1", "--port", str(gcs_port),
        "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port),
        "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
        "--dashboard-agent-grpc-port", str(free_port()), "--metrics-export-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()), "--object-store-memory", str(200_000_000),
        "--disable-usage-stats",
    ]  # fmt: skip
    marker = str(temp_dir) + os.sep
    t0 = time.monotonic()
    ok = False
    try:
        head = subprocess.run(start, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120)
        assert head.returncode == 0, head.stdout[-3000:] + head.stderr[-3000:]
        wait_for_job_api(url, token)
        t_head = time.monotonic() - t0

        # Token auth is on: the job API refuses a request without the token.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/jobs/", timeout=10)
        assert refused.value.code == 401

        submission_id = "ailot-tiny-job"
        runtime_env = {"excludes": EXCLUDES, "env_vars": {"MINARI_DATASETS_PATH": str(minari_root)}}
        submit = RAY + [
            "job", "submit", "--address", url, "--submission-id", submission_id,
            "--working-dir", ".", "--runtime-env-json", json.dumps(runtime_env), "--",
            "python", "tune/sweep.py", "--config", str(config_path), "--storage", str(storage),
            "--quiet", "--no-plots", "--no-report",
        ]  # fmt: skip
        t1 = time.monotonic()
        job = subprocess.run(submit, env=env, cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                             timeout=300)  # fmt: skip
        t_job = time.monotonic() - t1
        out = job.stdout + job.stderr

        # The Python SDK with the same token (an explicit header: no process-wide auth setting needed).
        client = JobSubmissionClient(url, headers={"Authorization": f"Bearer {token}"})
        status = client.get_job_status(submission_id)
        logs = client.get_job_logs(submission_id)
        assert status == JobStatus.SUCCEEDED, f"job {status}; ray job submit said:\n{out[-4000:]}"
        assert job.returncode == 0, out[-4000:]
        assert "finished in" in logs and "finished in" in out

        # One row per evaluation (steps 100, 200) per trial. BC ignores rewards, so the labellers give it
        # one trial (labeller "none"); the count comes from the config's own trial grid.
        trials = load_sweep_config(config_path).trials()
        df = pd.read_parquet(storage / "tiny-job.parquet")
        assert len(df) == len(trials) * 2 and df["trial_id"].nunique() == len(trials) >= 1
        assert set(df["learner"]) == {"bc"}
        assert sorted(df["step"].unique()) == [100, 200]
        assert not df.duplicated(["trial_id", "step"]).any()
        assert df["normalized_score"].notna().all()

        # The working dir was uploaded without results/ and .git/ (and the job ran from that copy).
        pkgs = list(temp_dir.glob("session_latest/runtime_resources/working_dir_files/_ray_pkg_*/"))
        assert len(pkgs) == 1, pkgs
        assert (pkgs[0] / "tune" / "sweep.py").exists() and (pkgs[0] / "ailot").is_dir()
        assert not (pkgs[0] / "results").exists() and not (pkgs[0] / ".git").exists()
        print(f"\nray job submit: head + dashboard up in {t_head:.1f}s, job {t_job:.1f}s "
              f"(submit to SUCCEEDED), {len(df)} rows")  # fmt: skip
        ok = True
    finally:
        killed = stop_head(marker)
        leftover = own_processes(marker)
        if own_tmp and ok:
            shutil.rmtree(temp_dir, ignore_errors=True)
    assert killed, "no processes of this head were found to stop"
    assert not leftover, f"processes of {temp_dir} still running: {[p.pid for p in leftover]}"
