"""Issue 25, reliability round two: what a new user hit with bad inputs and interruptions, each on a tiny sweep.

A sweep never removes a finished row (run, grow, interrupt, resume); it exits 130 when interrupted and 1 when trials
failed, after writing what finished; a trial no node can hold is refused (fixed-size Ray) or waited for with a
deadline (a cluster that can grow); two runs of one sweep cannot share its directory; `ailot export --overwrite`
replaces only an earlier export; the results CLI refuses files it cannot summarise; YAML's '1e-2' is a number.

The sweeps run through `tune/sweep.py`'s `main` in this process, on the module's local Ray (2 CPUs, started here:
a fixed-size Ray), so exit codes and messages are the CLI's own.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml
from conftest import local_ray

from ailot import pipeline, results
from ailot.config import load_sweep_config, sweep_config_from_dict
from ailot.errors import AilotInputError

REPO = Path(__file__).resolve().parents[1]
TRAIN = {"steps": 300, "eval_every": 100, "eval_episodes": 2, "eval_envs": 1, "chunk": 100, "batch_size": 64}


@pytest.fixture(scope="module")
def ray_local():
    with local_ray("rayr") as ray:
        yield ray


@pytest.fixture(scope="module")
def sweep_script():
    spec = importlib.util.spec_from_file_location("tune_sweep_reliability", REPO / "tune" / "sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def sweep_raw(storage, umaze, name, *, seeds=(0,), train=None, resources=None, **over) -> dict:
    # zero / true rewards: no encoder, no relabel pool; the trials are the whole sweep
    return {
        "name": name, "storage": str(storage),
        "datasets": [{"name": "umaze", "agent": umaze[0], "expert": umaze[1], "task_family": "maze2d"}],
        "labellers": {"zero": {}, "true": {}},
        "learners": {"iql": {"hidden_dims": [16, 16]}},
        "seeds": list(seeds),
        "train": dict(TRAIN, **(train or {})),
        "resources": {"cpus_per_trial": 1, "max_failures": 1, **(resources or {})},
        **over,
    }


def write_yaml(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw))
    return path


def run_main(sweep_script, *args) -> tuple[int, str]:
    """`python tune/sweep.py ...` in this process: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = sweep_script.main([*args, "--no-plots", "--quiet"])
    return rc, err.getvalue()


def audit_lines(run_dir: Path) -> list[str]:
    path = run_dir / "updates.jsonl"
    return path.read_text().splitlines() if path.exists() else []


def sigint_when(condition, timeout_s: float = 300) -> threading.Thread:
    """SIGINT to this process (as Ctrl-C would send it) once `condition()` holds; Tune's handler takes it."""

    def watch():
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.05)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    return t


# ------------------------------------------------------------- 1 and 5: run, grow, interrupt, resume


@pytest.fixture(scope="module")
def grown_then_interrupted(ray_local, pointmaze_umaze, sweep_script, tmp_path_factory):
    """The issue's sequence: a sweep run to completion (seed 0), its config grown (seeds [0, 1]), started and
    interrupted with SIGINT during the new trials, then rerun with --resume."""
    tmp = tmp_path_factory.mktemp("grow")
    storage = tmp / "results"
    first_cfg = write_yaml(tmp / "seed0.yaml", sweep_raw(storage, pointmaze_umaze, "grow"))
    rc0, _ = run_main(sweep_script, "--config", str(first_cfg))
    cfg = load_sweep_config(first_cfg)
    first = results.load(cfg.parquet_path)
    done = len(audit_lines(cfg.run_dir))

    grown_raw = sweep_raw(storage, pointmaze_umaze, "grow", seeds=(0, 1), resources={"max_concurrent_trials": 1})
    grown_cfg = write_yaml(tmp / "grown.yaml", grown_raw)
    grown = sweep_config_from_dict(grown_raw)
    total = len(grown.trials()) * len(pipeline.eval_steps(grown.train))
    # when the first seed-1 trial writes its last chunk's audit line, just before that row reaches Tune: its
    # earlier rows are with Tune, and a resume must register the last one from the trial's own checkpoint (a
    # trial with no training left once reported nothing, and the sweep never finished); the second seed-1 trial
    # still has its chunks to go
    watcher = sigint_when(lambda: done + 3 <= len(audit_lines(cfg.run_dir)) < total - 1)
    rc1, err1 = run_main(sweep_script, "--config", str(grown_cfg))
    watcher.join(timeout=1)
    interrupted_rows = results.load(cfg.parquet_path)
    interrupted_audit = len(audit_lines(cfg.run_dir))

    rc2, err2 = run_main(sweep_script, "--config", str(grown_cfg), "--resume")
    return SimpleNamespace(cfg=grown, first=first, rc0=rc0, rc1=rc1, err1=err1, rc2=rc2, err2=err2, done=done,
                           interrupted_rows=interrupted_rows, interrupted_audit=interrupted_audit, total=total,
                           final=results.load(cfg.parquet_path))


def test_resume_after_growing_and_interrupting_keeps_every_finished_row(grown_then_interrupted):
    """Defect 1: the resumed run wrote only its restored experiment's rows (seed 1); every seed-0 row was gone."""
    g = grown_then_interrupted
    assert g.rc0 == 0 and g.done == 2 * 3, "the first sweep should finish its 2 trials"
    assert g.done < g.interrupted_audit < g.total, "the interrupt should land during the seed-1 trials"
    assert g.rc2 == 0, g.err2[-2000:]
    final = g.final.sort_values(results.KEY).reset_index(drop=True)
    expected = {(pipeline.trial_id(t), s) for t in g.cfg.trials() for s in pipeline.eval_steps(g.cfg.train)}
    assert set(zip(final["trial_id"], final["step"])) == expected and len(final) == len(expected) == 12
    seed0 = final[final["seed"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(seed0, g.first.sort_values(results.KEY).reset_index(drop=True))  # rows lost: 0


def test_interrupted_sweep_exits_130_writes_its_rows_and_says_how_to_resume(grown_then_interrupted):
    """Defect 5: SIGINT during the trials exited 0 and printed 'finished'."""
    g = grown_then_interrupted
    assert g.rc1 == 130, g.err1[-2000:]
    last = g.err1.strip().splitlines()[-1]
    assert last.startswith("error: sweep 'grow' interrupted:") and "left unfinished" in last, last
    assert "--resume" in last and "grown.yaml" in last, last
    # the rows finished before the interrupt were written before exiting: seed 0's, and seed 1's first evaluation(s)
    rows = g.interrupted_rows
    assert len(rows[rows["seed"] == 0]) == 6 and 1 <= len(rows[rows["seed"] == 1]) < 6


# ------------------------------------------------------------- reuse_from: overlapping sweeps share finished trials


def test_a_sweep_takes_the_trials_another_sweep_finished_the_same_way_and_runs_only_the_rest(
        ray_local, pointmaze_umaze, sweep_script, tmp_path, capsys, caplog):
    """benchmark-locomotion's hopper trials are benchmark-hopper's: `reuse_from` copies those rows (same trial
    config, data fingerprint, rewards) instead of training them again; a trial made differently is run."""
    storage = tmp_path / "results"
    donor_raw = sweep_raw(storage, pointmaze_umaze, "donor")
    assert run_main(sweep_script, "--config", str(write_yaml(tmp_path / "donor.yaml", donor_raw)))[0] == 0
    donor = results.load(load_sweep_config(tmp_path / "donor.yaml").parquet_path)

    # seeds 0 and 1: seed 0's two trials are the donor's
    taker_raw = sweep_raw(storage, pointmaze_umaze, "taker", seeds=(0, 1), reuse_from=["donor", "nowhere"])
    taker_cfg = sweep_config_from_dict(taker_raw)
    config = write_yaml(tmp_path / "taker.yaml", taker_raw)
    assert run_main(sweep_script, "--config", str(config), "--dry-run")[0] == 0
    out = capsys.readouterr().out
    assert "4 trials (0 already complete in" in out and "2 to be taken from reuse_from)" in out, out
    with caplog.at_level("INFO", logger="ailot.sweep"):
        rc, err = run_main(sweep_script, "--config", str(config))
    assert rc == 0, err[-2000:]
    assert "reuse_from: " in caplog.text and "nowhere.parquet does not exist" in caplog.text
    assert "2 trials complete in" in caplog.text
    # and seed 0's rewards are not made again for trials it takes (a settled setting counts the donor's trials)
    assert "rewards skipped: every trial on them is already complete" in caplog.text
    # only seed 1's two trials trained here: 3 chunks each (300 steps, chunk 100)
    assert len(audit_lines(taker_cfg.run_dir)) == 2 * 3
    final = results.load(taker_cfg.parquet_path).sort_values(results.KEY).reset_index(drop=True)
    assert set(final["trial_id"]) == {pipeline.trial_id(t) for t in taker_cfg.trials()} and len(final) == 4 * 3
    seed0 = final[final["seed"] == 0].reset_index(drop=True)
    pd.testing.assert_frame_equal(seed0, donor.sort_values(results.KEY).reset_index(drop=True))  # the donor's rows
    assert set(final.loc[final["seed"] == 1, "sweep"]) == {"taker"}

    # a third sweep whose learner differs from the donor's: nothing to take, every trial to run (--dry-run counts)
    other_raw = sweep_raw(storage, pointmaze_umaze, "other", reuse_from=["donor"],
                          learners={"iql": {"hidden_dims": [8, 8]}})
    capsys.readouterr()
    assert run_main(sweep_script, "--config", str(write_yaml(tmp_path / "other.yaml", other_raw)), "--dry-run")[0] == 0
    out = capsys.readouterr().out
    assert "2 trials (0 already complete in" in out and "to be taken from reuse_from" not in out, out
    # and the taker's own dry run now finds all four complete, two of them the donor's rows in its own file
    assert run_main(sweep_script, "--config", str(config), "--dry-run")[0] == 0
    assert "4 trials (4 already complete in" in capsys.readouterr().out


def test_reuse_from_names_other_sweeps_or_results_files(tmp_path, pointmaze_umaze):
    raw = sweep_raw(tmp_path, pointmaze_umaze, "me", reuse_from="benchmark-hopper")
    cfg = sweep_config_from_dict(raw)
    assert cfg.reuse_from == ("benchmark-hopper",)
    assert [str(p) for p in cfg.reuse_paths] == [str(tmp_path / "benchmark-hopper.parquet")]
    cfg = sweep_config_from_dict(dict(raw, reuse_from=["published/x.parquet"]))
    assert [str(p) for p in cfg.reuse_paths] == ["published/x.parquet"]
    with pytest.raises(AilotInputError, match="'reuse_from': names this sweep itself"):
        sweep_config_from_dict(dict(raw, reuse_from=["me"]))
    with pytest.raises(AilotInputError, match="'reuse_from': got 'a b'"):
        sweep_config_from_dict(dict(raw, reuse_from=["a b"]))


# ------------------------------------------------------------- 3: failed trials


def test_sweep_with_a_failed_trial_exits_1_and_names_it_after_writing_the_rest(ray_local, pointmaze_umaze,
                                                                              sweep_script, tmp_path, monkeypatch):
    """Defect 3: a sweep whose trials all failed exited 0 and printed 'finished'."""
    raw = sweep_raw(tmp_path / "results", pointmaze_umaze, "fails", train={"steps": 100},
                    resources={"max_failures": 0})
    cfg = sweep_config_from_dict(raw)
    victim = pipeline.trial_id(cfg.trials()[0])
    monkeypatch.setenv("AILOT_FAULT", f"{victim}:0:raise:{tmp_path / 'faults'}")
    rc, err = run_main(sweep_script, "--config", str(write_yaml(tmp_path / "fails.yaml", raw)))
    assert rc == 1, err[-2000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: sweep 'fails': 1 trial(s) failed for good:") and victim in last, last
    assert "RuntimeError: injected fault" in last and "Fix:" in last, last
    df = results.load(cfg.parquet_path)  # the trial that finished has its row
    assert set(df["trial_id"]) == {pipeline.trial_id(cfg.trials()[1])} and len(df) == 1


# ------------------------------------------------------------- 4: a trial no node can hold


def _in_thread(fn, timeout_s: float = 120):
    """fn() with a deadline: a sweep that never schedules would otherwise hang the test run."""
    out = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # handed to the test
            out["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), f"still waiting after {timeout_s}s: the sweep hangs"
    if "error" in out:
        raise out["error"]
    return out["value"]


def test_unschedulable_trial_is_refused_on_a_fixed_local_ray(ray_local, pointmaze_umaze, sweep_script, tmp_path):
    """Defect 4: cpus_per_trial 64 on a 2-CPU local Ray pretrained, relabelled, then waited forever."""
    raw = sweep_raw(tmp_path / "results", pointmaze_umaze, "huge", resources={"cpus_per_trial": 64},
                    labellers={"ailot": {"k": 1}}, intents={"hidden_dims": [8, 8], "num_steps": 50, "chunk": 50,
                                                            "batch_size": 32})
    t0 = time.monotonic()
    rc, err = _in_thread(lambda: run_main(sweep_script, "--config", str(write_yaml(tmp_path / "huge.yaml", raw))))
    assert rc == 2, err[-2000:]
    (line,) = [x for x in err.strip().splitlines() if x.startswith("error:")]
    assert "'resources.cpus_per_trial': a trial needs 64 CPUs" in line and "largest node has 2 CPUs" in line, line
    assert not (tmp_path / "results" / "huge" / "cache" / "encoders").exists()  # refused before any pretraining
    assert time.monotonic() - t0 < 60


def test_unschedulable_trial_on_a_growable_cluster_times_out_with_a_message(ray_local, pointmaze_umaze, tmp_path,
                                                                            caplog):
    from ailot import sweep

    cfg = sweep_config_from_dict(sweep_raw(tmp_path / "results", pointmaze_umaze, "wait",
                                           resources={"gpus_per_trial": 1, "scale_timeout_s": 2}))
    with caplog.at_level("WARNING", logger="ailot.sweep"), pytest.raises(AilotInputError) as err:
        _in_thread(lambda: sweep.run_sweep(cfg, progress=False, plots=False, fixed_cluster=False))
    assert "a trial needs 1 CPUs, 1 GPUs, and in 2s no node that large joined" in str(err.value)
    assert "asked the autoscaler for one, waiting up to 2s" in caplog.text  # says what it waits for


# ------------------------------------------------------------- 8: two runs of one sweep


def test_second_run_of_a_sweep_is_refused_while_the_first_holds_its_directory(ray_local, pointmaze_umaze,
                                                                             sweep_script, tmp_path):
    """Defect 8: two sweeps on one storage both ran every trial in one Tune directory."""
    from ailot import sweep

    config = write_yaml(tmp_path / "twice.yaml", sweep_raw(tmp_path / "results", pointmaze_umaze, "twice"))
    cfg = load_sweep_config(config)
    holder = subprocess.Popen(  # the first run: holds the lock as a sweep does while it runs
        [sys.executable, "-c", "import sys, time; from ailot.config import load_sweep_config; "
         "from ailot.sweep import run_lock; lock = run_lock(load_sweep_config(sys.argv[1])); lock.__enter__(); "
         "print('locked', flush=True); time.sleep(300)", str(config)],
        cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        rc, err = run_main(sweep_script, "--config", str(config))
        assert rc == 2, err[-2000:]
        (line,) = [x for x in err.strip().splitlines() if x.startswith("error:")]
        assert f"is being run by another process (pid {holder.pid} on" in line and "Fix:" in line, line
        with pytest.raises(AilotInputError, match=f"pid {holder.pid}"):
            sweep.run_sweep(cfg, progress=False, plots=False)
        assert not cfg.parquet_path.exists() and not (cfg.run_dir / "tune").exists()  # nothing ran
    finally:
        holder.kill()
        holder.wait()
    with sweep.run_lock(cfg), sweep.run_lock(cfg):  # released when its process died; reentrant in one process
        pass


def test_no_lock_on_an_object_store_is_said_and_the_run_goes_on(pointmaze_umaze, caplog):
    from ailot import sweep

    cfg = sweep_config_from_dict(sweep_raw(f"memory://lock-{os.getpid()}/results", pointmaze_umaze, "nolock"))
    with caplog.at_level("WARNING", logger="ailot.sweep"), sweep.run_lock(cfg):
        pass
    assert "is not a local filesystem: no lock can be taken there" in caplog.text


# ------------------------------------------------------------- 2: export --overwrite


def test_export_overwrite_refuses_a_directory_it_did_not_write(pointmaze_umaze, tmp_path):
    """Defect 2: `ailot export --overwrite` deleted a sweep's storage (results, figures, cache)."""
    from ailot.export_cli import main as export_main

    store = tmp_path / "copy-of-storage"
    results.write_atomic([{"trial_id": "t", "step": 1, "normalized_score": 1.0}], store / "tiny.parquet")
    (store / "figures" / "tiny").mkdir(parents=True)
    (store / "figures" / "tiny" / "learning_curves.png").write_bytes(b"png")
    (store / "tiny" / "cache" / "rewards").mkdir(parents=True)
    (store / "tiny" / "cache" / "rewards" / "k.npz").write_bytes(b"npz")
    before = sorted(p.relative_to(store) for p in store.rglob("*"))
    config = write_yaml(tmp_path / "x.yaml", sweep_raw(tmp_path / "results", pointmaze_umaze, "x"))
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = export_main(["--config", str(config), "--labeller", "zero", "--out", str(store), "--overwrite", "--quiet"])
    assert rc == 2
    assert re.search(r"^error: output directory '.*copy-of-storage': is not an earlier export: it holds "
                     r"'figures'\. Fix: choose a new --out path", err.getvalue()), err.getvalue()
    assert sorted(p.relative_to(store) for p in store.rglob("*")) == before  # nothing deleted


# ------------------------------------------------------------- 6, 7: the results CLI and YAML numbers


def _results_files(tmp: Path) -> dict[str, Path]:
    empty = tmp / "empty.parquet"
    empty.write_bytes(b"")
    other = tmp / "other.parquet"
    pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(other)
    text = tmp / "text.parquet"
    text.write_text("trial_id,step\n")
    norows = results.write_atomic([], tmp / "norows.parquet")
    (tmp / "adir.parquet").mkdir()
    return {"empty": empty, "other-columns": other, "not-parquet": text, "no-rows": norows,
            "directory": tmp / "adir.parquet"}


RESULTS_MESSAGES = {
    "empty": r"is empty \(0 bytes\)",
    "other-columns": r"lacks the columns \['trial_id', .*so no sweep wrote it",
    "not-parquet": r"is not a Parquet file",
    "no-rows": r"holds no rows",
    "directory": r"is a directory",
}


@pytest.mark.parametrize("command", ["summary", "plot"])
@pytest.mark.parametrize("kind", list(RESULTS_MESSAGES))
def test_results_cli_refuses_files_it_cannot_summarise(kind, command, tmp_path, capsys):
    """Defects 6 and 7: tracebacks for empty files and directories; exit 0 and no output for other columns."""
    path = _results_files(tmp_path)[kind]
    assert results.main([command, str(path), *(["--out", str(tmp_path / "figs")] if command == "plot" else [])]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1, err
    assert re.search(rf"^error: results file '.*{path.name}': {RESULTS_MESSAGES[kind]}.*Fix: ", err), err
    assert not (tmp_path / "figs").exists()


def test_yaml_exponent_numbers_are_numbers(tmp_path):
    """Defect 7: PyYAML reads 1e-2 as a string, and the config answered 'give a number'."""
    text = (
        "name: yamlnum\n"
        "datasets: [{agent: ailot/pointmaze-umaze/agent-10k-v0, expert: ailot/pointmaze-umaze/expert-v0,\n"
        "            generate: {maze: umaze, agent_transitions: 1e4}}]\n"
        "labellers: {ailot: {epsilon: [1e-3, 1e-2], alpha: 5e0}}\n"
        "learners: {iql: {actor_lr: 3e-4}}\n"
        "intents: {lr: 3e-4, num_steps: 1e3}\n"
        "seeds: [0, 1e0]\n"
        "train: {steps: 1e4, eval_every: 2.5e3}\n"
        "resources: {cpus_per_trial: 1e0, scale_timeout_s: 6e1}\n"
    )
    assert isinstance(yaml.safe_load(text)["train"]["steps"], str)  # what PyYAML makes of it
    cfg = load_sweep_config(write_yaml_text(tmp_path / "n.yaml", text))
    assert cfg.labellers["ailot"]["epsilon"] == [1e-3, 1e-2] and cfg.labellers["ailot"]["alpha"] == [5.0]
    assert (cfg.train.steps, cfg.train.eval_every) == (10_000, 2_500) and isinstance(cfg.train.steps, int)
    assert cfg.seeds == (0, 1) and all(type(s) is int for s in cfg.seeds)
    assert cfg.resources.cpus_per_trial == 1.0 and cfg.resources.scale_timeout_s == 60.0
    assert cfg.learners["iql"]["actor_lr"] == 3e-4 and cfg.intents == {"lr": 3e-4, "num_steps": 1000}
    assert cfg.datasets[0].generate["agent_transitions"] == 10_000
    with pytest.raises(AilotInputError, match=r"'train\.steps': must be a finite whole number, got '1\.5e0'"):
        load_sweep_config(write_yaml_text(tmp_path / "m.yaml", text.replace("steps: 1e4", "steps: 1.5e0")))


def write_yaml_text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path

