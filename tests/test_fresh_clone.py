"""A fresh clone's main command trains for real: its output lands in runs/, never on the committed results/,
so a user's first sweep is not answered "already complete" by the published rows."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_fresh_clone_main_command_trains_and_writes_outside_results(pointmaze_umaze, tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    published = clone / "results" / "smoke.parquet"
    assert published.exists(), "the published smoke results are committed"
    before = hashlib.sha256(published.read_bytes()).hexdigest()

    # the README's main config, shrunk to seconds: same name and no storage key, so it would collide with the
    # committed results/smoke.parquet if runs did not land elsewhere
    raw = yaml.safe_load((clone / "tune/configs/smoke.yaml").read_text())
    assert "storage" not in raw
    agent_id, expert_id = pointmaze_umaze
    raw["datasets"] = [{"name": raw["datasets"][0]["name"], "agent": agent_id, "expert": expert_id,
                        "task_family": "maze2d"}]
    raw["intents"] = {"hidden_dims": [16, 16], "num_steps": 100, "chunk": 50, "batch_size": 32}
    raw["labellers"] = {"zero": {}}
    raw["learners"] = {"iql": {"hidden_dims": [16, 16]}}
    raw["train"] = {"steps": 100, "eval_every": 50, "eval_episodes": 1, "eval_envs": 1, "chunk": 50,
                    "batch_size": 32}
    (clone / "tune/configs/smoke.yaml").write_text(yaml.safe_dump(raw))

    ray_tmp = tempfile.mkdtemp(prefix="rayfc", dir="/tmp")  # Ray's socket paths must stay short
    env = {**os.environ, "PYTHONPATH": str(clone), "AILOT_CORE_CLAIMS": os.path.join(ray_tmp, "claims")}
    try:
        # the README's main command, `ailot sweep --config tune/configs/smoke.yaml`, with this clone's code
        proc = subprocess.run([sys.executable, "-m", "ailot.cli", "sweep", "--config", "tune/configs/smoke.yaml",
                               "--quiet", "--no-plots", "--num-cpus", "2", "--ray-temp-dir", ray_tmp],
                              cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    updates = [json.loads(line) for line in (clone / "runs/smoke/updates.jsonl").read_text().splitlines()]
    assert sum(u["to"] - u["from"] for u in updates) == 100  # the learner really trained: 0 -> 50 -> 100
    assert (clone / "runs/smoke.parquet").exists()
    assert hashlib.sha256(published.read_bytes()).hexdigest() == before  # the published rows are untouched
    ignored = subprocess.run(["git", "check-ignore", "-q", "runs/smoke.parquet"], cwd=clone)
    assert ignored.returncode == 0, "runs/ must stay out of git"
    # the report says whether this run reproduced the published one (a shrunk run: zero + iql at 100 updates)
    report = (clone / "runs/reports/smoke.md").read_text()
    assert "Reproduction of the reference results" in report and "results/smoke.parquet" in report
    assert "report: " in proc.stdout
