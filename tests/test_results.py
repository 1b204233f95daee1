"""Parquet schema, atomic writes, dedup on (trial, step), summaries and plots."""

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from ailot import results


def rows(trial, seed, labeller, learner, scores, t0=0.0):
    return [
        {"sweep": "s", "trial_id": trial, "dataset": "d", "labeller": labeller, "learner": learner, "seed": seed,
         "step": 100 * (i + 1), "normalized_score": s, "return_mean": s, "return_std": 0.0,
         "timestamp": t0 + i, "k": 1.0 if labeller == "ailot" else np.nan}
        for i, s in enumerate(scores)
    ]


def test_schema_and_round_trip(tmp_path):
    path = results.write_atomic(rows("a", 0, "ailot", "iql", [10, 20]), tmp_path / "r.parquet")
    table = pq.read_table(path)
    assert table.schema.equals(results.SCHEMA)
    df = results.load(path)
    assert list(df["step"]) == [100, 200] and list(df["normalized_score"]) == [10, 20]
    assert df["epsilon"].isna().all()  # absent settings are null, not invented
    assert not list(tmp_path.glob(".*tmp*"))


def test_train_metrics_expand_the_json_and_leave_older_rows_empty():
    df = pd.DataFrame({"train_info": ['{"value/v_max": 12.5, "value_bound": 100.0}', None, "{}"]})
    m = results.train_metrics(df)
    assert list(m.index) == [0, 1, 2] and m.loc[0, "value/v_max"] == 12.5 and m.loc[0, "value_bound"] == 100.0
    assert m.loc[1:].isna().all().all()
    assert results.train_metrics(pd.DataFrame({"step": [1]})).empty


def test_merge_keeps_one_row_per_trial_step_latest_wins():
    first = pd.DataFrame(rows("a", 0, "ailot", "iql", [10, 20]))
    retried = pd.DataFrame(rows("a", 0, "ailot", "iql", [10, 25], t0=50))  # re-reported after a retry
    other = pd.DataFrame(rows("b", 0, "zero", "iql", [5]))
    df = results.merge([first, retried, other])
    assert len(df) == 3
    assert not df.duplicated(results.KEY).any()
    assert df.set_index(results.KEY).loc[("a", 200), "normalized_score"] == 25


def test_summary_mean_std_over_seeds_and_plots(tmp_path):
    df = pd.DataFrame(rows("a", 0, "ailot", "iql", [10, 30]) + rows("b", 1, "ailot", "iql", [20, 50])
                      + rows("c", 0, "zero", "iql", [5, 4]))
    s = results.summarize(df)
    ail = s[s["method"] == "ailot+iql"].iloc[0]
    assert ail["last_mean"] == 40 and ail["best_mean"] == 40 and ail["seeds"] == 2
    assert np.isclose(ail["last_std"], np.std([30, 50], ddof=1))
    zero = s[s["method"] == "zero+iql"].iloc[0]
    assert zero["last_mean"] == 4 and zero["best_mean"] == 5
    assert "ailot+iql" in results.format_summary(s)
    paths = results.plot_all(df, tmp_path)
    assert paths and all(p.exists() and p.stat().st_size > 1000 for p in paths)


def test_ablation_figures_need_a_grid_and_are_written(tmp_path):
    """The paper's ablations: score vs number of experts (AILOT vs OTR) and AILOT's k x epsilon heat map."""
    grid = []
    for n in (1, 2, 5):
        for lab in ("ailot", "otr"):
            for r in rows(f"{lab}-n{n}", 0, lab, "iql", [10 * n, 20 * n]):
                grid.append({**r, "n_experts": float(n), "k": 1.0 if lab == "ailot" else np.nan})
    for k in (1, 5):
        for eps in (1e-3, 1e-2):
            for r in rows(f"k{k}-e{eps}", 0, "ailot", "iql", [k * 10, k * 20 + eps]):
                grid.append({**r, "k": float(k), "epsilon": eps, "n_experts": 1.0})
    names = {p.name for p in results.plot_all(pd.DataFrame(grid), tmp_path)}
    assert {"score_vs_experts.png", "k_epsilon_heatmap.png"} <= names
    # the summary keeps a grid's settings apart (one row each), naming the knobs that vary per labeller
    summary = results.summarize(pd.DataFrame(grid)).set_index("method")
    assert len(summary) == 10 and summary.index.is_unique and (summary["seeds"] == 1).all()
    want = {"otr+iql N=1", "otr+iql N=5", "ailot+iql k=1 eps=nan N=2", "ailot+iql k=5 eps=0.01 N=1"}
    assert want <= set(summary.index)
    assert summary.loc["ailot+iql k=5 eps=0.01 N=1", "last_mean"] == 100.01
    # one setting per knob: no ablation figure is made up
    names = {p.name for p in results.plot_all(pd.DataFrame(rows("a", 0, "ailot", "iql", [1, 2])), tmp_path / "one")}
    assert not names & {"score_vs_experts.png", "k_epsilon_heatmap.png"}


def test_plot_command_writes_where_the_sweep_does(tmp_path):
    """`python -m ailot.results plot results/<sweep>.parquet` -> results/figures/<sweep>/, as the sweep itself
    writes them: two sweeps' figures of the same name never overwrite each other."""
    for sweep in ("one", "two"):
        results.write_atomic(rows("a", 0, "ailot", "iql", [10, 20]), tmp_path / f"{sweep}.parquet")
        assert results.main(["plot", str(tmp_path / f"{sweep}.parquet")]) == 0
        assert (tmp_path / "figures" / sweep / "learning_curves_d.png").exists()
    assert not list((tmp_path / "figures").glob("*.png"))


def test_git_commit_marks_uncommitted_code(tmp_path):
    import subprocess

    from ailot.pipeline import git_commit

    def git(*args):
        subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    (tmp_path / "ailot").mkdir()
    (tmp_path / "ailot" / "m.py").write_text("x = 1\n")
    (tmp_path / "notes.txt").write_text("a\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "c")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert git_commit(tmp_path / "ailot") == head
    (tmp_path / "notes.txt").write_text("b\n")  # not code: still clean
    git_commit.cache_clear()
    assert git_commit(tmp_path / "ailot") == head
    (tmp_path / "ailot" / "m.py").write_text("x = 2\n")
    git_commit.cache_clear()
    assert git_commit(tmp_path / "ailot") == head + "+dirty"
    git_commit.cache_clear()


def test_method_names_tell_apart_any_labeller_setting_the_sweep_varied():
    import json

    import pandas as pd

    from ailot.results import method_names

    def row(labeller, learner, setting):
        return {"labeller": labeller, "learner": learner, "k": float("nan"),
                "config": json.dumps({"trial": {"labeller": {"labeller": labeller, **setting}}})}

    df = pd.DataFrame([row("seabo", "iql", {"mode": "ss", "beta": 0.5}), row("seabo", "iql", {"mode": "sas",
                       "beta": 0.5}), row("none", "smodice", {}), row("none", "bc", {}), row("otr", "iql", {})])
    assert list(method_names(df)) == ["seabo+iql mode=ss", "seabo+iql mode=sas", "smodice", "bc", "otr+iql"]
