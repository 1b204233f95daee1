"""Sweep results: the Parquet schema, atomic writes, loading, summaries and the paper's plots.

One row per (trial, evaluation step). Read with `ailot.results.load(path)` or plain
`pandas.read_parquet(path)`. Plots: `python -m ailot.results plot results/<sweep>.parquet`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ailot import storage
from ailot.errors import AilotInputError
from ailot.storage import StoragePath

# Column -> (arrow type, meaning). The documented schema of every results file.
SCHEMA_DOC: dict[str, tuple[pa.DataType, str]] = {
    "sweep": (pa.string(), "name of the sweep whose run made the row (config 'name'; rows taken through "
              "'reuse_from' keep the other sweep's)"),
    "trial_id": (pa.string(), "stable id of the trial (dataset, labeller setting, learner, seed)"),
    "dataset": (pa.string(), "dataset label from the config"),
    "dataset_id": (pa.string(), "agent dataset id (Minari id or file)"),
    "dataset_fingerprint": (pa.string(), "sha256 of the agent dataset's arrays and id"),
    "expert_id": (pa.string(), "dataset the expert set was taken from"),
    "env_id": (pa.string(), "evaluation environment id"),
    "labeller": (pa.string(), "a name in ailot.labellers.LABELLERS (ailot, otr, ...), or none (reward-free learners)"),
    "k": (pa.float64(), "AILOT k-offset (NaN where not applicable)"),
    "epsilon": (pa.float64(), "Sinkhorn epsilon (NaN where not applicable)"),
    "alpha": (pa.float64(), "reward scale alpha"),
    "tau": (pa.float64(), "AILOT reward temperature"),
    "n_experts": (pa.float64(), "number of expert trajectories"),
    "expert_mode": (pa.string(), "max | merge ('' where not applicable)"),
    "learner": (pa.string(), "a name in ailot.learners (iql, diffusion_ql, bc, ...) or rllib_*"),
    "expert_actions": (pa.bool_(), "the method read the expert's actions (labeller or learner): an easier problem "
                       "than AILOT's state-only one, never ranked with state-only methods silently (null in files "
                       "before 2026-12-05, whose methods were all state-only)"),
    "seed": (pa.int64(), "trial seed (learner, encoder and evaluation)"),
    "step": (pa.int64(), "learner updates done at this evaluation"),
    "return_mean": (pa.float64(), "mean evaluation return"),
    "return_std": (pa.float64(), "std of evaluation returns"),
    "normalized_score": (pa.float64(), "D4RL normalized score of the mean return (0-100)"),
    "success_rate": (pa.float64(), "fraction of evaluation episodes with info['success']"),
    "eval_episodes": (pa.int64(), "episodes in this evaluation"),
    "wall_time_s": (pa.float64(), "trial wall time so far (training + evaluation)"),
    "timestamp": (pa.float64(), "unix time of the evaluation"),
    "versions": (pa.string(), "JSON of package versions (ailot, jax, flax, ott-jax, ray, ...)"),
    "git_commit": (pa.string(), "git commit of the code that ran ('+dirty': ailot/ or tune/ had uncommitted changes)"),
    "config": (pa.string(), "JSON of the trial's full config"),
    "rewards_key": (pa.string(), "cache key of the rewards the learner trained on ('' for BC)"),
    "sinkhorn_converged": (pa.float64(), "fraction of the rewards' OT problems (episode x expert) whose Sinkhorn "
                           "converged within max_iterations (NaN: no OT labeller, or files before 2026-12-02)"),
    "sinkhorn_iterations": (pa.float64(), "median Sinkhorn iterations over those problems (NaN likewise)"),
    "train_info": (pa.string(), "JSON of the learner's training metrics, means over the last chunk of updates "
                   "before this evaluation (e.g. value/v_mean, critic/q_max), and value_bound = max(0, max reward) "
                   "/ (1 - discount), the most a critic can rightly predict (null in older files; RLlib learners: "
                   "the bound only)"),
}
SCHEMA = pa.schema([(name, typ) for name, (typ, _) in SCHEMA_DOC.items()])
KEY = ["trial_id", "step"]


def to_table(rows: list[dict] | pd.DataFrame) -> pa.Table:
    """Rows -> an Arrow table with exactly the documented schema (missing settings become null/NaN)."""
    df = pd.DataFrame(rows) if not isinstance(rows, pd.DataFrame) else rows.copy()
    missing = [c for c in SCHEMA.names if c not in df.columns]
    for c in missing:
        df[c] = np.nan if pa.types.is_floating(SCHEMA.field(c).type) else None
    return pa.Table.from_pandas(df[SCHEMA.names], schema=SCHEMA, preserve_index=False)


def write_atomic(rows: list[dict] | pd.DataFrame, path: StoragePath) -> StoragePath:
    """Write rows to Parquet (a local path or a URI) via temp file + rename, so readers never see a partial
    file."""
    buf = pa.BufferOutputStream()
    pq.write_table(to_table(rows), buf)
    storage.write_bytes(path, buf.getvalue().to_pybytes())
    return path


def merge(frames: list[pd.DataFrame]) -> pd.DataFrame:
    """Concatenate rows, keeping one row per (trial, step): the latest reported wins."""
    frames = [f for f in frames if f is not None and len(f)]
    if not frames:
        return pd.DataFrame(columns=SCHEMA.names)
    df = pd.concat(frames, ignore_index=True)
    df = df.sort_values("timestamp", kind="stable").drop_duplicates(KEY, keep="last")
    return df.sort_values(KEY, kind="stable").reset_index(drop=True)


def merge_into(path: StoragePath, rows: list[dict] | pd.DataFrame) -> pd.DataFrame:
    """Add rows to the Parquet at `path` (created when missing): read, `merge`, `write_atomic`, all under an
    exclusive lock on `.<name>.lock` beside it, so concurrent writers (threads or processes on one filesystem)
    never lose each other's rows. Returns the merged rows. On a URI (no lock there) the same without the lock."""
    import fcntl

    new = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    if storage.is_uri(path):
        df = merge([load(path) if storage.exists(path) else None, new])
        write_atomic(df, path)
        return df
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        old = load(path) if path.exists() else None
        df = merge([old, new])
        write_atomic(df, path)
    return df


def train_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """The `train_info` JSON of each row as columns (same index; NaN where a row has none, e.g. older files)."""
    if "train_info" not in df.columns:
        return pd.DataFrame(index=df.index)
    parsed = [json.loads(s) if isinstance(s, str) else {} for s in df["train_info"]]
    return pd.DataFrame(parsed, index=df.index).astype(float)


def completed_trials(df: pd.DataFrame, expected: dict[str, dict],
                     compare: tuple[str, ...] = ("config", "dataset_fingerprint", "rewards_key")) -> set[str]:
    """Trial ids whose rows in `df` already hold every evaluation step and were made from the same config,
    data and rewards. `expected`: trial_id -> {"steps", *compare}; `compare` = ("config",) serves trials whose
    data or encoder is not there yet (no fingerprint or rewards key to match)."""
    if df.empty or "rewards_key" not in df.columns:
        return set()
    done = set()
    for tid, rows in df[df["trial_id"].isin(list(expected))].groupby("trial_id"):
        want = expected[tid]
        same = all(rows[c].nunique(dropna=False) == 1 and rows[c].iloc[0] == want[c] for c in compare)
        if same and set(rows["step"].astype(int)) == set(want["steps"]):
            done.add(tid)
    return done


def load(path: StoragePath) -> pd.DataFrame:
    """Read a results file (a local path or a URI) into pandas."""
    what = f"results file {str(path)!r}"
    if not storage.exists(path):
        raise AilotInputError(what, "does not exist",
                              "run a sweep first (python tune/sweep.py --config ...) or check the path")
    try:
        # read whole, once: pyarrow given a path opens it more than once (footer, then pages), and a `write_atomic`
        # replacing the file in between makes it read one file's footer against another's pages
        data = storage.read_bytes(path)
    except (IsADirectoryError, FileNotFoundError):
        raise AilotInputError(what, "is a directory", "pass the <sweep>.parquet file inside storage") from None
    except OSError as exc:
        raise AilotInputError(what, f"cannot be read ({exc})", "check the path and its permissions") from None
    if not data:
        raise AilotInputError(what, "is empty (0 bytes)", "pass a results file a sweep wrote, or rerun the sweep")
    try:
        # an Arrow buffer, one thread: a Python file object read by pyarrow's pool can abort the interpreter at
        # exit ("terminate called without an active exception", apache/arrow#34314, #50482)
        df = pq.read_table(pa.BufferReader(data), use_threads=False).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise AilotInputError(what, f"is not a Parquet file ({str(exc).splitlines()[0][:120]})",
                              "pass a results file a sweep wrote (<storage>/<sweep>.parquet)") from None
    if "labeller" in df.columns:  # a results file: older ones predate the column, and all their methods were state-only
        df["expert_actions"] = (df["expert_actions"] if "expert_actions" in df.columns else pd.Series(
            False, index=df.index)).fillna(False).astype(bool)
    return df


# what summaries and plots read: a file without them was not written by a sweep
NEEDED = ("trial_id", "dataset", "labeller", "learner", "seed", "step", "normalized_score")


def check_results(df: pd.DataFrame, path: StoragePath) -> pd.DataFrame:
    """`df` when it has the columns a summary and the plots need and at least one row; else a clear error."""
    missing = [c for c in NEEDED if c not in df.columns]
    if missing:
        raise AilotInputError(f"results file {str(path)!r}", f"lacks the columns {missing} (it has "
                              f"{list(df.columns)[:8]}), so no sweep wrote it",
                              "pass a results file a sweep wrote (<storage>/<sweep>.parquet)")
    if df.empty:
        raise AilotInputError(f"results file {str(path)!r}", "holds no rows",
                              "run the sweep until some trials finish (python tune/sweep.py --config ...)")
    return df


def geometry_path(results_path: StoragePath) -> StoragePath:
    """Where a sweep keeps its intent-geometry table: `<sweep>.geometry.parquet` beside `<sweep>.parquet`."""
    text = str(results_path)
    text = (text[: -len(".parquet")] if text.endswith(".parquet") else text) + ".geometry.parquet"
    return text if storage.is_uri(text) else Path(text)


def write_geometry(geometry: pd.DataFrame, path: StoragePath) -> StoragePath:
    """`ailot.intents.intent_geometry`'s table, its R^2 fits (`attrs`) kept in the Parquet metadata."""
    table = pa.Table.from_pandas(geometry, preserve_index=False)
    table = table.replace_schema_metadata({
        **(table.schema.metadata or {}),
        b"r2": json.dumps(geometry.attrs.get("r2", {})).encode(),
        b"r2_by_horizon": json.dumps(geometry.attrs.get("r2_by_horizon", {})).encode()})
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    storage.write_bytes(path, buf.getvalue().to_pybytes())
    return path


def read_geometry(path: StoragePath) -> pd.DataFrame | None:
    """Inverse of `write_geometry`; None when the sweep wrote none (no AILOT labeller)."""
    if not storage.exists(path):
        return None
    table = pq.read_table(pa.BufferReader(storage.read_bytes(path)))
    geometry = table.to_pandas()
    meta = table.schema.metadata or {}
    geometry.attrs["r2"] = json.loads(meta.get(b"r2", b"{}"))
    # older files hold only the fit over all k; JSON keys are strings
    geometry.attrs["r2_by_horizon"] = {int(h): r for h, r in json.loads(meta.get(b"r2_by_horizon", b"{}")).items()}
    return geometry


def method_name(row) -> str:
    """'<labeller>+<learner>' of one row; a learner that takes no labeller's rewards (BC, SMODICE, ...) is just its
    name. `method_names` adds the knobs a sweep varied."""
    if row["learner"] == "bc" or row["labeller"] == "none":
        return str(row["learner"])
    return f"{row['labeller']}+{row['learner']}"


KNOBS = ("k", "epsilon", "n_experts", "alpha", "tau", "expert_mode")  # labeller settings a sweep grids over
KNOB_LABELS = {"epsilon": "eps", "n_experts": "N"}


def method_names(df: pd.DataFrame, exclude: tuple[str, ...] = ()) -> pd.Series:
    """`method_name` per row, plus each labeller knob that takes several values among that labeller's rows
    (e.g. 'ailot+iql k=5 eps=0.01' in a k x epsilon grid), so that a grid's settings stay apart."""
    names = df.apply(method_name, axis=1) if len(df) else pd.Series([], dtype=str, index=df.index)
    for _, rows in df.groupby("labeller"):
        for knob in KNOBS:
            if knob in exclude or knob not in rows or rows[knob].nunique(dropna=True) < 2:
                continue
            values = rows[knob].map(lambda v: f"{v:g}" if isinstance(v, float) else str(v))
            names.loc[rows.index] += f" {KNOB_LABELS.get(knob, knob)}=" + values
        # any other labeller setting the sweep varied (e.g. SEABO's mode), read from the trial's config
        settings = rows["config"].map(_labeller_setting) if "config" in rows else pd.Series(dtype=object)
        keys = sorted({k for s in settings for k in s} - set(KNOBS) - set(exclude) - {"labeller"})
        for key in keys:
            values = settings.map(lambda s, key=key: str(s.get(key, "")))
            if values.nunique() > 1:
                names.loc[rows.index] += f" {key}=" + values
    return names


def _labeller_setting(config: str | None) -> dict:
    """The labeller setting in a row's `config` JSON ({} where there is none)."""
    try:
        setting = json.loads(config)["trial"]["labeller"]
    except (TypeError, ValueError, KeyError):
        return {}
    return setting if isinstance(setting, dict) else {}


def summarize(df: pd.DataFrame, group_extra: tuple[str, ...] = ()) -> pd.DataFrame:
    """Last and best normalized score per trial, then mean +- std over seeds per dataset x method."""
    if df.empty:
        return pd.DataFrame()
    df = df.reset_index(drop=True)
    df["method"] = method_names(df)
    keys = ["dataset", "method", *group_extra]
    per_trial = df.sort_values("step").groupby(["trial_id", *keys, "seed"], dropna=False).agg(
        last=("normalized_score", "last"), best=("normalized_score", "max"), steps=("step", "max")
    ).reset_index()
    out = per_trial.groupby(keys, dropna=False).agg(
        last_mean=("last", "mean"), last_std=("last", "std"), best_mean=("best", "mean"),
        best_std=("best", "std"), seeds=("seed", "nunique"), steps=("steps", "max"),
    ).reset_index()
    return out.sort_values(["dataset", "last_mean"], ascending=[True, False]).reset_index(drop=True)


def format_summary(summary: pd.DataFrame) -> str:
    """The summary as a plain-text table (used on the console and in notes)."""
    if summary.empty:
        return "(no results)"
    lines = []
    for _, r in summary.iterrows():
        extra = "  ".join(f"{c}={r[c]}" for c in summary.columns
                          if c not in ("dataset", "method", "last_mean", "last_std", "best_mean", "best_std",
                                       "seeds", "steps"))
        lines.append(f"{r['dataset']:<36} {r['method']:<28} last {r['last_mean']:6.1f} +- {_std(r['last_std']):5.1f}"
                     f"  best {r['best_mean']:6.1f} +- {_std(r['best_std']):5.1f}  seeds {r['seeds']}  {extra}")
    return "\n".join(lines)


# ---------------------------------------------------------------- plots


def _std(value) -> float:
    return 0.0 if pd.isna(value) else value  # one seed has no spread


def _last_per_trial(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("step").groupby("trial_id").tail(1)


def plot_all(df: pd.DataFrame, out_dir: str | Path, geometry: pd.DataFrame | None = None) -> list[Path]:
    """Write every figure the data supports; returns the PNG paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    df = df.reindex(columns=list(dict.fromkeys([*df.columns, *SCHEMA.names]))).reset_index(drop=True)
    df["method"] = method_names(df)

    # learning curves: normalized score vs step, mean over seeds, per dataset
    for dataset, sub in df.groupby("dataset"):
        fig, ax = plt.subplots(figsize=(6, 4))
        for method, m in sub.groupby("method"):
            curve = m.groupby("step")["normalized_score"].agg(["mean", "std"]).reset_index()
            ax.plot(curve["step"], curve["mean"], label=method, marker="o", ms=3)
            ax.fill_between(curve["step"], curve["mean"] - curve["std"].fillna(0),
                            curve["mean"] + curve["std"].fillna(0), alpha=0.15)
        ax.set(xlabel="learner updates", ylabel="normalized score", title=f"Learning curves: {dataset}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / f"learning_curves_{_slug(dataset)}.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)

    last = _last_per_trial(df)
    ot = last[last["labeller"].isin(["ailot", "otr"])].copy()
    # normalized score vs number of expert trajectories (AILOT vs OTR): one curve per method over N
    if ot["n_experts"].nunique() > 1:
        ot["method"] = method_names(ot, exclude=("n_experts",))
        fig, ax = plt.subplots(figsize=(5, 4))
        for (method, _), m in ot.groupby(["method", "dataset"]):
            curve = m.groupby("n_experts")["normalized_score"].agg(["mean", "std"]).reset_index()
            ax.errorbar(curve["n_experts"], curve["mean"], yerr=curve["std"].fillna(0), label=method,
                        marker="o", capsize=3)
        ax.set(xlabel="expert trajectories N", ylabel="normalized score", title="Score vs number of experts")
        ax.legend(fontsize=7)
        fig.tight_layout()
        p = out_dir / "score_vs_experts.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)

    # k x epsilon heat map for AILOT
    ail = last[last["labeller"] == "ailot"]
    if ail["k"].nunique() > 1 or ail["epsilon"].nunique() > 1:
        grid = ail.pivot_table(index="k", columns="epsilon", values="normalized_score", aggfunc="mean")
        fig, ax = plt.subplots(figsize=(5, 4))
        # the score's own range, so that differences within the seed noise do not fill the colour scale
        im = ax.imshow(grid.values, cmap="viridis", aspect="auto", origin="lower", vmin=0, vmax=100)
        ax.set_xticks(range(grid.shape[1]), [f"{e:g}" for e in grid.columns])
        ax.set_yticks(range(grid.shape[0]), [f"{int(k)}" for k in grid.index])
        for i in range(grid.shape[0]):
            for j in range(grid.shape[1]):
                ax.text(j, i, f"{grid.values[i, j]:.1f}", ha="center", va="center", color="w", fontsize=8)
        ax.set(xlabel="epsilon", ylabel="k", title="AILOT normalized score (last evaluation): k x epsilon")
        fig.colorbar(im, ax=ax)
        fig.tight_layout()
        p = out_dir / "k_epsilon_heatmap.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        written.append(p)

    if geometry is not None and not geometry.empty:
        written.append(plot_intent_geometry(geometry, out_dir / "intent_distance_vs_k.png"))
    return written


def plot_intent_geometry(geometry: pd.DataFrame, path: str | Path) -> Path:
    """Mean squared distance vs k in psi space and raw state space, each scaled to its k=1 value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.8))
    r2 = geometry.attrs.get("r2", {})
    by_horizon = geometry.attrs.get("r2_by_horizon") or {}
    for space, g in geometry.groupby("space"):
        g = g.sort_values("k")
        y = g["mean_sq_dist"].to_numpy()
        if by_horizon:  # R^2 of a line through k = 1..K, per K
            fits = ", ".join(f"k<={h} {r.get(space, float('nan')):.2f}" for h, r in sorted(by_horizon.items()))
        else:
            fits = f"{r2.get(space, float('nan')):.3f}"
        ax.plot(g["k"], y / y[0], label=f"{space} (R^2 {fits})", marker=".")
    ax.set(xlabel="k", ylabel="mean ||x(s_t+k) - x(s_t)||^2 / its value at k=1", title="Intent distance vs k")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14))  # below the axes: curves fill them
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def write_figures(df: pd.DataFrame, out_dir: StoragePath, geometry: pd.DataFrame | None = None) -> list[StoragePath]:
    """`plot_all` drawn locally, each PNG then published under `out_dir` (a local directory or a URI)."""
    written = []
    with tempfile.TemporaryDirectory() as tmp:
        for p in plot_all(df, Path(tmp), geometry):
            written.append(storage.join(out_dir, p.name))
            storage.write_bytes(written[-1], p.read_bytes())
    return written


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ailot.results", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_plot = sub.add_parser("plot", help="write figures for a results file")
    p_plot.add_argument("path")
    p_plot.add_argument("--out", default=None, help="directory (default: <results dir>/figures/<file stem>, "
                        "where the sweep puts them)")
    p_sum = sub.add_parser("summary", help="print the summary table")
    p_sum.add_argument("path")
    args = parser.parse_args(argv)
    try:
        df = check_results(load(args.path), args.path)
    except AilotInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.command == "summary":
        print(format_summary(summarize(df)))
        return 0
    parent = str(args.path).rsplit("/", 1)[0] if "/" in str(args.path) else "."
    out = args.out or storage.join(parent, "figures", Path(str(args.path)).stem)
    for p in write_figures(df, out, read_geometry(geometry_path(args.path))):
        print(f"wrote {p}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
