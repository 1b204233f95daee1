"""`ailot report`: the paper table, rliable's aggregates on the same score matrices, the files and the CLI."""

import base64
import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ailot import report, results
from ailot.cli import main as ailot_command

REPO = Path(__file__).resolve().parents[1]
DATASETS = ("hopper-medium", "hopper-medium-replay")
STEPS = (10_000, 20_000, 30_000)
VERSIONS = json.dumps({"ailot": "0.1.0", "jax": "0.10.2", "ott-jax": "0.6.0", "ray": "2.60.0"})
COMMIT = "c5b0dc0af15ca576d19f72ad76e83fcfedf08c0a"


def final_score(labeller: str, dataset: str, seed: int) -> float:
    """Distinct, skewed last scores: an outlier seed makes the IQM differ from the mean."""
    base = {"ailot": 80.0, "otr": 70.0, "true": 50.0, "zero": 20.0, "none": 45.0}[labeller]
    return base + (7.0 if dataset == DATASETS[1] else 0.0) + [0.0, 3.5, -30.0, 1.2][seed]


def trial_rows(dataset: str, labeller: str, learner: str, seed: int, expert_actions: bool) -> list[dict]:
    """One trial's evaluations, with every column a sweep writes (as ailot.pipeline reports them)."""
    trial_id = f"{dataset}-{labeller}-{learner}-{seed}"
    last = final_score(labeller, dataset, seed)
    ot = labeller in ("ailot", "otr")
    rows = []
    for i, step in enumerate(STEPS):
        score = last * (i + 1) / len(STEPS)
        rows.append({
            "sweep": "bench", "trial_id": trial_id, "dataset": dataset, "dataset_id": f"ailot/hopper/{dataset[7:]}-v0",
            "dataset_fingerprint": hashlib.sha256(dataset.encode()).hexdigest(), "expert_id": "ailot/hopper/expert-v0",
            "env_id": "Hopper-v5", "labeller": labeller, "k": 2.0 if labeller == "ailot" else np.nan,
            "epsilon": 0.01 if ot else np.nan, "alpha": 5.0 if ot else np.nan,
            "tau": 0.5 if labeller == "ailot" else np.nan,
            "n_experts": 1.0 if ot else np.nan, "expert_mode": "max" if labeller == "ailot" else "",
            "learner": learner, "seed": seed, "step": step, "return_mean": 30.0 * score, "return_std": 12.0,
            "normalized_score": score, "success_rate": 0.0, "eval_episodes": 10, "wall_time_s": 60.0 * (i + 1),
            "timestamp": 1_795_573_718.0 + 100 * i + seed, "versions": VERSIONS, "git_commit": COMMIT,
            "config": json.dumps({"trial": {"dataset": dataset, "learner": learner, "seed": seed}}),
            "rewards_key": "" if learner == "bc" else f"key-{labeller}", "sinkhorn_converged": 1.0 if ot else np.nan,
            "sinkhorn_iterations": 40.0 if ot else np.nan, "train_info": json.dumps({"value_bound": 100.0}),
            "expert_actions": expert_actions,
        })
    return rows


def sweep_rows(expert_column: bool = True) -> list[dict]:
    """AILOT and OTR + IQL, true-reward IQL on 2 seeds only, zero-reward IQL on one dataset only, and BC, which
    trains on expert actions. OTR has 3 seeds on one dataset and 2 on the other."""
    rows = []
    for dataset in DATASETS:
        otr_seeds = (0, 1, 2) if dataset == DATASETS[0] else (0, 1)
        methods = [("ailot", "iql", (0, 1, 2, 3), False), ("otr", "iql", otr_seeds, False),
                   ("true", "iql", (0, 1), False), ("none", "bc", (0, 1, 2, 3), True)]
        for labeller, learner, seeds, experts in methods:
            for seed in seeds:
                rows += trial_rows(dataset, labeller, learner, seed, experts)
    rows += [r for seed in (0, 1, 2) for r in trial_rows(DATASETS[0], "zero", "iql", seed, False)]
    if not expert_column:
        for r in rows:
            del r["expert_actions"]
    return rows


def write_results(rows: list[dict], path: Path) -> Path:
    """The real schema (results.to_table), plus `expert_actions` where the schema does not have it yet."""
    table = results.to_table(rows)
    if rows and "expert_actions" in rows[0] and "expert_actions" not in table.column_names:
        table = table.append_column("expert_actions", pa.array([r["expert_actions"] for r in rows], pa.bool_()))
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return write_results(sweep_rows(), tmp_path_factory.mktemp("results") / "bench.parquet")


@pytest.fixture(scope="module")
def built(bench):
    return report.build(report.load_results(bench), "bench", reps=300, seed=3, stem="bench")


def last_scores(rows: list[dict], labeller: str, dataset: str) -> list[float]:
    """Each trial's score at its last step, by seed: computed here from the rows, not by ailot.report."""
    df = pd.DataFrame(rows)
    df = df[(df["labeller"] == labeller) & (df["dataset"] == dataset)]
    return list(df.sort_values("step").groupby("seed")["normalized_score"].last().sort_index())


def test_iqm_and_its_interval_match_rliable_on_the_same_matrix(built):
    library, metrics, _ = report._rliable()
    doc, _, numbers = built
    aggregate = numbers["aggregate"]
    matrix = np.stack([last_scores(sweep_rows(), "ailot", d) for d in DATASETS], axis=1)  # 4 seeds x 2 datasets
    assert matrix.shape == (4, 2)
    np.random.seed(3)  # rliable's bootstrap draws from NumPy's global RNG
    point, interval = library.get_interval_estimates({"x": matrix}, lambda x: np.array([metrics.aggregate_iqm(x)]),
                                                     reps=300)
    assert np.isclose(aggregate["points"]["ailot+iql"][0], point["x"][0])
    assert np.allclose(aggregate["intervals"]["ailot+iql"][:, 0], interval["x"][:, 0])
    assert interval["x"][0, 0] < point["x"][0] < interval["x"][1, 0]  # a real interval, not a point
    # the skewed seed: the IQM is not the mean, so a mean passed off as the IQM would fail above
    assert not np.isclose(point["x"][0], matrix.mean())
    np.random.seed(3)
    _, gaps = library.get_interval_estimates(
        {"x": matrix}, lambda x: np.array([metrics.aggregate_mean(x), metrics.aggregate_optimality_gap(x, 100)]),
        reps=300)
    assert np.allclose(aggregate["intervals"]["ailot+iql"][:, 1:], gaps["x"])
    iqm = f"{point['x'][0]:.1f} [{interval['x'][0, 0]:.1f}, {interval['x'][1, 0]:.1f}]"
    assert re.search(rf"\| ailot\+iql \| 4 x 2 \| {re.escape(iqm)} \|", doc.markdown())


def test_probability_of_improvement_and_profiles_are_rliables(caplog):
    library, metrics, _ = report._rliable()
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 5, (4, 3)).astype(float), rng.integers(0, 5, (3, 3)).astype(float)  # ties on purpose
    assert np.isclose(report.probability_of_improvement(x, y), metrics.probability_of_improvement(x, y))
    assert report.probability_of_improvement(x, x) == 0.5
    taus = np.linspace(0, 5, 11)
    assert np.allclose(report.score_distribution(x, taus), library.score_distributions(x, taus))
    # the intervals too: rliable's own function under the same seed
    with caplog.at_level("INFO"):
        ours = report.improvement_probabilities({("x", "y"): (x, y)}, reps=200, seed=1)
    assert "Calculating estimates" not in caplog.text  # rliable's absl line per estimate, kept out of the output
    np.random.seed(1)
    point, interval = library.get_interval_estimates({"p": [x, y]}, metrics.probability_of_improvement, reps=200)
    assert np.isclose(ours[0][("x", "y")], point["p"]) and np.allclose(ours[1][("x", "y")], interval["p"].ravel())


def test_a_method_with_fewer_seeds_keeps_its_own_count(built):
    doc, _, numbers = built
    cells = numbers["cells"]
    true = cells[("hopper-medium", "true+iql")]
    assert len(true.values) == 2 and np.isclose(true.mean, np.mean(last_scores(sweep_rows(), "true", DATASETS[0])))
    assert len(cells[("hopper-medium", "ailot+iql")].values) == 4
    otr = [len(cells[(d, "otr+iql")].values) for d in DATASETS]
    assert otr == [3, 2]
    md = doc.markdown()
    table = md.split("## Benchmark table")[1].split("##")[0]
    header = next(line for line in table.splitlines() if line.startswith("| dataset"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    row = next(line for line in table.splitlines() if line.startswith("| hopper-medium |"))
    cell = dict(zip(columns, [c.strip() for c in row.strip("|").split("|")]))
    assert cell["true+iql"].endswith("(n=2)") and cell["ailot+iql"].strip("*").endswith("(n=4)")
    assert cell["zero+iql"].endswith("(n=3)")
    # rliable needs one run count per method: OTR uses its 2 lowest seeds on both datasets, said in the report
    assert numbers["aggregate"]["matrices"]["otr+iql"].shape == (2, 2)
    assert "otr+iql: 2 runs per dataset used (the lowest seeds) of 3 on hopper-medium, 2 on hopper-medium-replay" in md
    # zero-reward IQL ran on one dataset: left out of the aggregate, with a note, and still in the table
    assert "zero+iql" not in numbers["aggregate"]["matrices"]
    assert "zero+iql: no runs on hopper-medium-replay (left out of the aggregate)" in md
    replay = next(line for line in table.splitlines() if line.startswith("| hopper-medium-replay |"))
    assert dict(zip(columns, [c.strip() for c in replay.strip("|").split("|")]))["zero+iql"] == "\u2013"


def test_per_seed_values_and_bold_within_one_std():
    df = pd.DataFrame(sweep_rows())
    doc, _, _ = report.build(df, "t", per_seed=True, reps=50)
    want = ", ".join(f"{v:.1f}" for v in last_scores(sweep_rows(), "true", DATASETS[0]))
    assert f"(n=2) [{want}]" in doc.markdown()
    cells = {("d", "a"): report.Cell([80.0, 82.0], [0, 1]), ("d", "b"): report.Cell([70.0, 90.0], [0, 1]),
             ("d", "c"): report.Cell([60.0, 61.0], [0, 1]), ("e", "a"): report.Cell([10.0], [0])}
    # b's mean is 1 below a's and within b's std (14.1): the seeds cannot separate them; c is 20 below
    assert report.bold_set(cells) == {("d", "a"), ("d", "b"), ("e", "a")}
    # an expert-action method is ranked only among its kind: a far better one does not unbold the state-only best
    cells[("d", "x")] = report.Cell([99.0, 99.5], [0, 1])
    assert report.bold_set(cells, experts={"x"}) == {("d", "a"), ("d", "b"), ("e", "a"), ("d", "x")}


def test_expert_action_methods_are_marked(built, tmp_path):
    doc, _, numbers = built
    assert numbers["names"]["bc"] == "bc \u2020" and numbers["names"]["ailot+iql"] == "ailot+iql"
    md = doc.markdown()
    header = next(line for line in md.splitlines() if line.startswith("| dataset | ailot"))
    assert header.endswith("| bc \u2020 |") and header.count("\u2020") == 1
    assert "\u2020: the method trains on expert actions" in md
    assert "| ailot+iql | bc \u2020 | hopper-medium, hopper-medium-replay |" in md  # and in the other tables
    # without the column (files written before it), every method is state-only: no marks
    path = write_results(sweep_rows(expert_column=False), tmp_path / "old.parquet")
    plain, _, _ = report.build(report.load_results(path), "old", reps=20)
    assert "\u2020" not in plain.markdown()


def test_files_are_written_and_the_html_embeds_the_figures(bench, tmp_path):
    out = tmp_path / "out"
    paths = report.write_report(bench, out, reps=100)
    md, page = out / "bench.md", out / "bench.html"
    assert paths[:2] == [md, page] and all(Path(p).stat().st_size > 0 for p in paths)
    pngs = [Path(p) for p in paths[2:]]
    names = {p.name for p in pngs}
    assert {"bench-aggregates.png", "bench-profiles.png", "bench-improvement.png",
            "bench-curves-hopper-medium.png", "bench-curves-hopper-medium-replay.png"} == names
    text = md.read_text()
    for name in names:  # the Markdown links the PNGs beside it
        assert f"]({name})" in text
    html = page.read_text()
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(pngs)
    assert {base64.b64decode(e) for e in embedded} == {p.read_bytes() for p in pngs}
    assert all(base64.b64decode(e).startswith(b"\x89PNG") for e in embedded)
    assert "<b>" in html and "src=\"http" not in html  # bold cells; nothing fetched from outside
    # provenance: code, versions, data, expert protocol, wall time
    for needle in (COMMIT, "ott-jax", "0.6.0", "ailot/hopper/medium-replay-v0", "a separate expert dataset, "
                   "ailot/hopper/expert-v0", "wall time summed over runs"):
        assert needle in text, needle
    # default place: reports/ beside the results file
    default = report.write_report(bench, reps=20)
    assert default[0] == bench.parent / "reports" / "bench.md"


@pytest.mark.parametrize("content", ["other-columns", "no-rows", "not-parquet"])
def test_the_cli_exits_2_with_one_line_on_a_file_that_is_not_results(content, tmp_path):
    path = tmp_path / "x.parquet"
    if content == "other-columns":
        pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}).to_parquet(path)
    elif content == "no-rows":
        pq.write_table(results.to_table([]), path)
    else:
        path.write_text("sweep,step\nx,1\n")
    proc = subprocess.run([sys.executable, "-m", "ailot.cli", "report", str(path)], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: results file '{path}': "), proc.stderr
    assert {"other-columns": "lacks the results columns trial_id, dataset", "no-rows": "has no rows",
            "not-parquet": "is not a Parquet file"}[content] in lines[0]
    assert " Fix: " in lines[0] and proc.stdout == ""
    assert not (tmp_path / "reports").exists()


def test_one_command_lists_and_runs_the_tools(bench, tmp_path, capsys):
    assert ailot_command(["--help"]) == 0
    listed = capsys.readouterr().out
    for name in ("sweep", "report", "summary", "plot", "generate", "export", "collect", "rewardmap"):
        assert re.search(rf"^  {name} ", listed, re.M), name
    assert ailot_command(["summary", str(bench)]) == 0
    assert "ailot+iql" in capsys.readouterr().out
    assert ailot_command(["plot", str(bench), "--out", str(tmp_path / "figs")]) == 0
    assert (tmp_path / "figs" / "learning_curves_hopper-medium.png").exists()
    assert ailot_command(["summary", str(tmp_path / "missing.parquet")]) == 2  # results' own error
    assert "does not exist" in capsys.readouterr().err
    assert ailot_command(["report", str(bench), "--out", str(tmp_path / "r"), "--reps", "20", "--per-seed"]) == 0
    assert "wrote " in capsys.readouterr().out and (tmp_path / "r" / "bench.html").exists()
    with pytest.raises(SystemExit) as exc:
        ailot_command(["generate", "--help"])
    assert exc.value.code == 0 and "--maze" in capsys.readouterr().out


def test_reproduction_says_which_cells_a_fresh_run_matched(bench, tmp_path):
    """A fresh run whose AILOT scores are 20 points lower everywhere did not reproduce AILOT; the rest did."""
    rows = sweep_rows()
    for r in rows:
        if r["labeller"] == "ailot":
            r["normalized_score"] -= 20.0
    fresh = write_results(rows, tmp_path / "runs" / "bench.parquet")
    _, _, numbers = report.build(report.load_results(fresh), "fresh", reps=50, reference=report.load_results(bench),
                                 reference_source=str(bench))
    table = numbers["reproduction"].set_index(["dataset", "method"])
    ailot = table[table.index.get_level_values("method").str.startswith("ailot")]
    assert len(ailot) == len(DATASETS) and not ailot["reproduced"].any()
    assert (ailot["difference"] < -10).all()
    others = table.drop(ailot.index)
    assert len(others) > 0 and others["reproduced"].all() and (others["difference"].abs() < 1e-9).all()
    paths = report.write_report(fresh, tmp_path / "rep", reps=50, reference=bench)
    assert "Reproduction of the reference results" in Path(paths[0]).read_text()


def test_rows_taken_from_another_sweep_are_counted_per_sweep_and_the_title_is_the_files(tmp_path):
    """A sweep with `reuse_from` holds rows another sweep made: the report says how many runs each sweep made and
    keeps the file's own sweep as its title."""
    rows = sweep_rows()
    for r in rows:
        if r["dataset"] == DATASETS[0]:
            r["sweep"] = "donor"
    path = write_results(rows, tmp_path / "bench.parquet")
    text = Path(report.write_report(path, tmp_path / "out", reps=20)[0]).read_text()
    runs = pd.DataFrame(rows).groupby("sweep")["trial_id"].nunique()
    assert text.startswith("# Sweep bench\n"), text[:80]
    assert (f"Runs per sweep that made them: bench ({runs['bench']}); donor ({runs['donor']})" in text
            or f"Runs per sweep that made them: donor ({runs['donor']}); bench ({runs['bench']})" in text), text
    # a file of one sweep says nothing of the kind
    single = Path(report.write_report(write_results(sweep_rows(), tmp_path / "one.parquet"), tmp_path / "o",
                                      reps=20)[0]).read_text()
    assert "Runs per sweep" not in single


def test_a_row_whose_methods_end_within_5_points_is_called_a_tie():
    """Issue 30: where a row's methods finish within 5 points of each other, the report says so rather than rank
    them; the true and zero rewards (references) and expert-action methods do not count."""
    rows = []
    for labeller, score in (("ailot", 61.0), ("otr", 64.5), ("true", 90.0), ("zero", 10.0)):
        for seed in (0, 1):
            for r in trial_rows(DATASETS[0], labeller, "iql", seed, False):
                r["normalized_score"] = score + seed
                rows.append(r)
            for r in trial_rows(DATASETS[1], labeller, "iql", seed, False):
                r["normalized_score"] = score * (2.0 if labeller == "otr" else 1.0)
                rows.append(r)
    rows += [dict(r, normalized_score=20.0) for r in trial_rows(DATASETS[0], "none", "bc", 0, True)]  # expert actions
    doc, _, _ = report.build(pd.DataFrame(rows), "ties", reps=20, seed=0, stem="ties")
    text = doc.markdown()
    (line,) = [x for x in text.splitlines() if x.startswith("Not ranked:")]
    assert f"on {DATASETS[0]} (3.5) every state-only method" in line and DATASETS[1] not in line, line
