"""`ailot report results/<sweep>.parquet`: the benchmark table, rliable aggregates, learning curves and provenance.

Writes `<results dir>/reports/<sweep>.md` and `<sweep>.html` (figures embedded, readable offline) with the PNGs
beside them. The table is the papers' mean +- std over seeds of the last evaluation; the aggregates follow
Agarwal et al. 2021 ("Deep RL at the Edge of the Statistical Precipice"): interquartile mean, mean and
optimality gap with stratified-bootstrap confidence intervals, performance profiles and the probability of
improvement, all computed by `rliable`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import functools
import html
import io
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ailot import results, storage
from ailot.errors import AilotInputError
from ailot.storage import StoragePath

REQUIRED = ("trial_id", "dataset", "labeller", "learner", "seed", "step", "normalized_score")
LABELLER_ORDER = ("ailot", "otr", "true", "zero", "none")  # columns: ours first, then the OT baseline, the floors
DAGGER = "\u2020"
PM = "\u00b1"
GAMMA = 100.0  # optimality gap threshold: normalized scores reach 100 at the expert's return
METRICS = ("IQM", "Mean", "Optimality gap")
MAX_METHOD_COLUMNS = 6  # more methods than this (and than datasets): the table puts methods down the rows
REFERENCE_REWARDS = ("true", "zero")  # the environment's reward and none: references, not imitation methods
CLOSE_POINTS = 5.0  # a row whose imitation methods end this close is reported as a tie, not ranked
MAX_AILOT_PAIRWISE = 3  # more AILOT settings than this (an ablation grid): no AILOT-vs-AILOT pairs


# ---------------------------------------------------------------- rliable


@functools.cache
def _rliable():
    """rliable's modules. rliable 1.2 pins arch < 8, and arch 7 calls pandas' `deprecate_kwarg` without the
    warning class that pandas 3 requires, so its import fails there; the call is completed for that import
    only (arch 8 drops `random_state`, which rliable passes, so it cannot be used instead)."""
    import pandas.util._decorators as decorators

    original = decorators.deprecate_kwarg

    def compat(*args, **kwargs):
        if args and isinstance(args[0], str):  # the pandas < 3 form: (old_arg_name, new_arg_name, ...)
            return original(FutureWarning, *args, **kwargs)
        return original(*args, **kwargs)

    decorators.deprecate_kwarg = compat
    try:
        from rliable import library, metrics, plot_utils
    except ImportError as exc:
        raise AilotInputError("the report's statistics", f"need rliable ({exc})",
                              "pip install 'rliable>=1.2,<1.3' (or pip install -e . in the checkout)") from exc
    finally:
        decorators.deprecate_kwarg = original
    return library, metrics, plot_utils


@contextlib.contextmanager
def seeded(seed: int):
    """rliable's stratified bootstrap draws from NumPy's global RNG (it ignores `random_state`), so each
    estimate seeds it, and the caller's RNG state is put back afterwards."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


@contextlib.contextmanager
def quiet_rliable():
    """rliable logs an INFO line through absl for every estimate ("Calculating estimates for ..."): dozens per
    report in the sweep's output, saying nothing the report does not."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        logger.setLevel(level)


def aggregate_metrics(scores: np.ndarray) -> np.ndarray:
    """IQM, mean and optimality gap (gamma 100) of a [runs x datasets] matrix of normalized scores."""
    _, metrics, _ = _rliable()
    return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores),
                     metrics.aggregate_optimality_gap(scores, GAMMA)])


def interval_estimates(matrices: dict[str, np.ndarray], reps: int = 2000, seed: int = 0):
    """Point estimates and 95 % stratified-bootstrap CIs of `METRICS` per method. Each method's bootstrap is
    seeded with `seed` on its own, so its interval does not depend on which other methods are in the sweep:
    it equals `np.random.seed(seed); library.get_interval_estimates({m: x}, f, reps=reps)`."""
    library, _, _ = _rliable()
    points, intervals = {}, {}
    for method, x in matrices.items():
        with seeded(seed), quiet_rliable():
            p, i = library.get_interval_estimates({method: x}, aggregate_metrics, reps=reps)
        points[method], intervals[method] = p[method], i[method]
    return points, intervals


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """rliable's `metrics.probability_of_improvement`, vectorized: per dataset the Mann-Whitney U of X over Y
    divided by n_X n_Y, i.e. P(x > y) + P(x = y) / 2 over all pairs of runs, averaged over datasets. rliable
    calls scipy once per dataset, which makes 2000 bootstrap replications per pair take seconds; the numbers are
    the same (tests/test_report.py checks it)."""
    pairs = scores_x[:, None, :] - scores_y[None, :, :]
    return float(np.mean((pairs > 0).mean(axis=(0, 1)) + 0.5 * (pairs == 0).mean(axis=(0, 1))))


def score_distribution(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """rliable's default performance profile (`library.score_distributions`: the fraction of all runs scoring
    above each tau) in one NumPy comparison instead of a Python call per tau."""
    return (scores.reshape(-1, 1) > np.asarray(taus).reshape(1, -1)).mean(axis=0)


def improvement_probabilities(pairs: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], reps: int = 2000,
                              seed: int = 0):
    """P(X > Y) with its 95 % stratified independent-bootstrap CI per pair (X's and Y's [runs x datasets] on the
    same datasets; their run counts may differ)."""
    library, _, _ = _rliable()
    points, intervals = {}, {}
    for pair, (x, y) in pairs.items():
        with seeded(seed), quiet_rliable():
            p, i = library.get_interval_estimates({"pair": [x, y]}, probability_of_improvement, reps=reps)
        points[pair], intervals[pair] = float(p["pair"]), np.asarray(i["pair"]).ravel()
    return points, intervals


# ---------------------------------------------------------------- data


def load_results(path: StoragePath) -> pd.DataFrame:
    """A results file checked to hold results rows; `AilotInputError` otherwise."""
    what = f"results file {str(path)!r}"
    df = results.load(path)  # a missing, empty or non-Parquet file stops there, named
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise AilotInputError(what, f"lacks the results columns {', '.join(missing)}",
                              "give a sweep's results file (results/<sweep>.parquet), not another table")
    df = df.dropna(subset=["normalized_score"])
    if df.empty:
        raise AilotInputError(what, "has no rows with a normalized score",
                              "wait for the sweep's first evaluations, or check the path")
    # older files lack later columns: add them empty, as the plots do
    return df.reindex(columns=list(dict.fromkeys([*df.columns, *results.SCHEMA.names, "expert_actions"])))


def _flag(value) -> bool:
    return False if pd.isna(value) else bool(value)  # older rows: no column, state-only


def trial_scores(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: dataset, method, seed, its last-evaluation and best normalized score, last step and
    whether it used expert actions (the `expert_actions` column; absent: state-only)."""
    df = df.reset_index(drop=True).copy()
    df["method"] = results.method_names(df)
    df["expert_actions"] = df["expert_actions"].map(_flag).astype(bool)
    df = df.sort_values(["trial_id", "step"], kind="stable")
    out = df.groupby("trial_id", sort=False).agg(
        dataset=("dataset", "first"), method=("method", "first"), labeller=("labeller", "first"),
        seed=("seed", "first"), last=("normalized_score", "last"), best=("normalized_score", "max"),
        last_step=("step", "last"), expert_actions=("expert_actions", "any"), wall_time_s=("wall_time_s", "max"),
    ).reset_index()
    knobs = df.groupby("trial_id", sort=False)[["learner", *results.KNOBS]].first()
    out = out.join(knobs, on="trial_id")
    return out.sort_values(["dataset", "method", "seed", "trial_id"], kind="stable").reset_index(drop=True)


def method_order(trials: pd.DataFrame) -> list[str]:
    """Ours first, then OTR, the true and zero rewards, BC; a grid's settings in numeric order (k=2 before k=10)."""
    rank = {lab: i for i, lab in enumerate(LABELLER_ORDER)}
    first = trials.groupby("method").first()

    def key(m):
        knobs = [(1, 0.0, "") if pd.isna(v) else (0, v, "") if isinstance(v, float) else (0, 0.0, str(v))
                 for v in (first.loc[m, k] for k in results.KNOBS)]
        return rank.get(first.loc[m, "labeller"], len(rank)), str(first.loc[m, "learner"]), knobs, m

    return sorted(first.index, key=key)


def expert_methods(trials: pd.DataFrame) -> set[str]:
    return set(trials.loc[trials["expert_actions"], "method"])


@dataclass
class Cell:
    values: list[float]  # per run, in seed order
    seeds: list[int]
    mean: float = field(init=False)
    std: float = field(init=False)

    def __post_init__(self):
        self.mean = float(np.mean(self.values))
        self.std = float(np.std(self.values, ddof=1)) if len(self.values) > 1 else float("nan")

    @property
    def spread(self) -> float:
        return 0.0 if np.isnan(self.std) else self.std


def cells(trials: pd.DataFrame, which: str = "last") -> dict[tuple[str, str], Cell]:
    """(dataset, method) -> the runs' scores (`which`: 'last' or 'best'), each cell with its own count."""
    return {(d, m): Cell(list(g[which].astype(float)), list(g["seed"].astype(int)))
            for (d, m), g in trials.groupby(["dataset", "method"], sort=True)}


def bold_set(table: dict[tuple[str, str], Cell], experts: set[str] = frozenset()) -> set[tuple[str, str]]:
    """Per dataset, the best mean and every method within one std of it (the larger of the two methods' stds):
    the seeds cannot separate those. Methods that read expert actions (`experts`) are ranked among themselves,
    never against the state-only ones: theirs is an easier problem."""
    bold = set()
    for dataset in {d for d, _ in table}:
        for group in (False, True):
            row = {m: c for (d, m), c in table.items() if d == dataset and (m in experts) == group}
            if not row:
                continue
            best = max(row.values(), key=lambda c: c.mean)
            for m, c in row.items():
                if best.mean - c.mean <= max(best.spread, c.spread):
                    bold.add((dataset, m))
    return bold


def _close_rows(trials: pd.DataFrame, table: dict[tuple[str, str], Cell],
                experts: set[str]) -> list[tuple[str, float]]:
    """Datasets whose state-only imitation methods (not the true or zero reward) all end within CLOSE_POINTS of
    each other, with that spread: a row to report as a tie, not rank (at least two such methods)."""
    labeller = trials.groupby("method")["labeller"].first()
    out = []
    for dataset in sorted({d for d, _ in table}):
        means = [c.mean for (d, m), c in table.items() if d == dataset and m not in experts
                 and labeller.get(m) not in REFERENCE_REWARDS]
        if len(means) > 1 and max(means) - min(means) <= CLOSE_POINTS:
            out.append((dataset, max(means) - min(means)))
    return out


def score_matrix(trials: pd.DataFrame, method: str, datasets: list[str]) -> tuple[np.ndarray | None, str]:
    """[runs x datasets] of `method`'s last-evaluation scores, as rliable needs them, and a note. None when the
    method lacks one of the datasets. rliable needs the same run count on every dataset: with unequal counts
    the lowest seeds are kept (the note says so)."""
    rows = trials[trials["method"] == method]
    counts = {d: int((rows["dataset"] == d).sum()) for d in datasets}
    lacking = [d for d, n in counts.items() if n == 0]
    if lacking:
        return None, f"{method}: no runs on {', '.join(lacking)}"
    n = min(counts.values())
    columns = [rows[rows["dataset"] == d].sort_values(["seed", "trial_id"])["last"].to_numpy(float)[:n]
               for d in datasets]
    note = ""
    if len(set(counts.values())) > 1:
        note = (f"{method}: {n} runs per dataset used (the lowest seeds) of "
                + ", ".join(f"{counts[d]} on {d}" for d in datasets))
    return np.stack(columns, axis=1), note


# ---------------------------------------------------------------- documents


@dataclass
class Doc:
    """A report as blocks, rendered to Markdown and to HTML alike."""

    blocks: list[tuple] = field(default_factory=list)

    def h(self, level: int, text: str):
        self.blocks.append(("h", level, text))

    def p(self, text: str):
        self.blocks.append(("p", text))

    def ul(self, items: list[str]):
        if items:
            self.blocks.append(("ul", items))

    def table(self, header: list[str], rows: list[list], caption: str = "", numbers: bool = True):
        """`rows` hold strings or (text, bold) pairs; `numbers`: right-align all but the first column."""
        self.blocks.append(("table", header, rows, caption, numbers))

    def img(self, name: str, png: bytes, alt: str):
        self.blocks.append(("img", name, png, alt))

    def markdown(self) -> str:
        out = []
        for b in self.blocks:
            if b[0] == "h":
                out.append("#" * b[1] + " " + b[2])
            elif b[0] == "p":
                out.append(b[1])
            elif b[0] == "ul":
                out.append("\n".join(f"- {item}" for item in b[1]))
            elif b[0] == "table":
                _, header, rows, caption, numbers = b
                lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
                         "|" + "|".join(["---"] + ["--:" if numbers else "---"] * (len(header) - 1)) + "|"]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                out.append("\n".join(lines) + (f"\n\n{caption}" if caption else ""))
            elif b[0] == "img":
                out.append(f"![{b[3]}]({b[1]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        out = [f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
               f"</title>\n<style>{_CSS}</style></head><body>"]
        for b in self.blocks:
            if b[0] == "h":
                out.append(f"<h{b[1]}>{html.escape(b[2])}</h{b[1]}>")
            elif b[0] == "p":
                out.append(f"<p>{html.escape(b[1])}</p>")
            elif b[0] == "ul":
                out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in b[1]) + "</ul>")
            elif b[0] == "table":
                _, header, rows, caption, numbers = b
                cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
                head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
                body = "".join("<tr>" + "".join(_html_cell(c, i) for i, c in enumerate(row)) + "</tr>"
                               for row in rows)
                klass = "" if numbers else ' class="text"'
                out.append(f"<table{klass}>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif b[0] == "img":
                data = base64.b64encode(b[2]).decode()
                out.append(f"<figure><img alt=\"{html.escape(b[3])}\" src=\"data:image/png;base64,{data}\">"
                           f"<figcaption>{html.escape(b[3])}</figcaption></figure>")
        out.append("</body></html>")
        return "\n".join(out) + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;padding:.3em .6em;"
        "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
        "table.text td,table.text th{text-align:left}"
        "caption{caption-side:bottom;text-align:left;font-size:.9em;color:#555;padding-top:.4em}"
        "img{max-width:100%}figcaption{font-size:.9em;color:#555}code{background:#f3f3f3}")


def _md_cell(cell) -> str:
    text, bold = cell if isinstance(cell, tuple) else (cell, False)
    text = str(text).replace("|", "\\|")
    return f"**{text}**" if bold and text else text


def _html_cell(cell, column: int) -> str:
    text, bold = cell if isinstance(cell, tuple) else (cell, False)
    text = html.escape(str(text))
    tag = "th" if column == 0 else "td"
    return f"<{tag}><b>{text}</b></{tag}>" if bold else f"<{tag}>{text}</{tag}>"


# ---------------------------------------------------------------- figures


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")  # rliable's plots put labels outside the axes
    plt.close(fig)
    return buf.getvalue()


def _colors(methods: list[str]) -> dict:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"]
    return {m: cmap(i % cmap.N) for i, m in enumerate(methods)}


def learning_curves(df: pd.DataFrame, dataset: str, names: dict[str, str], colors: dict) -> bytes:
    """Normalized score vs learner updates on one dataset: mean over runs and a +- 1 std band."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    sub = df[df["dataset"] == dataset]
    for method in names:
        m = sub[sub["method"] == method]
        if m.empty:
            continue
        curve = m.groupby("step")["normalized_score"].agg(["mean", "std", "count"]).reset_index()
        runs = m["trial_id"].nunique()
        ax.plot(curve["step"], curve["mean"], marker="o", ms=3, color=colors[method],
                label=f"{names[method]} (n={runs})")
        spread = curve["std"].fillna(0)
        ax.fill_between(curve["step"], curve["mean"] - spread, curve["mean"] + spread, color=colors[method],
                        alpha=0.15, lw=0)
    ax.set(xlabel="learner updates", ylabel="normalized score", title=f"{dataset}: mean {PM} std over runs")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _png(fig)


# ---------------------------------------------------------------- the report


def methods_as_rows(methods: list[str], datasets: list[str]) -> bool:
    """The paper layout (datasets down, methods across) unless there are too many methods to fit across."""
    return len(methods) > MAX_METHOD_COLUMNS and len(methods) > len(datasets)


def _fmt(cell: Cell | None, per_seed: bool) -> str:
    if cell is None:
        return "\u2013"
    text = f"{cell.mean:.1f}" if len(cell.values) == 1 else f"{cell.mean:.1f} {PM} {cell.std:.1f}"
    text += f" (n={len(cell.values)})"
    if per_seed:
        text += " [" + ", ".join(f"{v:.1f}" for v in cell.values) + "]"
    return text


def _ci(point: float, interval) -> str:
    return f"{point:.1f} [{interval[0]:.1f}, {interval[1]:.1f}]"


def _score_table(doc: Doc, trials: pd.DataFrame, which: str, methods: list[str], names: dict[str, str],
                 per_seed: bool, experts: set[str]):
    table = cells(trials, which)
    bold = bold_set(table, experts)
    datasets = sorted(trials["dataset"].unique())
    if methods_as_rows(methods, datasets):  # an ablation grid: its many settings read better down the page
        header = ["method"] + datasets
        rows = [[names[m]] + [(_fmt(table.get((d, m)), per_seed), (d, m) in bold) for d in datasets]
                for m in methods]
    else:
        header = ["dataset"] + [names[m] for m in methods]
        rows = [[d] + [(_fmt(table.get((d, m)), per_seed), (d, m) in bold) for m in methods] for d in datasets]
    what = "last evaluation" if which == "last" else "best evaluation over training (an optimistic figure: the " \
        "evaluation episodes also choose the step)"
    caption = (f"Normalized score at the {what}, mean {PM} std over runs (sample std); n = runs in that cell, "
               "each method with its own count" + (", per-run values in brackets in seed order" if per_seed else "")
               + ". Bold, per dataset: the best mean and every method within one std of it (the larger of the two "
               "methods' stds): their seeds do not separate them." + (f" The {DAGGER} methods are bolded among "
               "themselves, apart from the state-only ones." if experts else ""))
    if experts:
        caption += f" {DAGGER}: the method trains on expert actions; the others see expert states only."
    doc.table(header, rows, caption)
    close = _close_rows(trials, table, experts) if which == "last" else []
    if close:
        doc.p(f"Not ranked: on {', '.join(f'{d} ({spread:.1f})' for d, spread in close)} every state-only method "
              f"(the true and zero rewards aside) ends within {CLOSE_POINTS:g} points of the others (max - min of "
              "the means in brackets): too close to call at this budget.")
    steps = trials.groupby(["dataset", "method"])["last_step"].nunique()
    uneven = [f"{names[m]} on {d}" for (d, m), n in steps.items() if n > 1]
    if which == "last" and uneven:
        doc.p("Runs of one cell ended at different steps (an unfinished sweep?): " + "; ".join(uneven) + ".")


def _aggregates(doc: Doc, trials: pd.DataFrame, methods: list[str], names: dict[str, str], colors: dict,
                reps: int, seed: int, figures: dict[str, bytes], stem: str) -> dict:
    _, _, plot_utils = _rliable()
    import matplotlib.pyplot as plt

    datasets = sorted(trials["dataset"].unique())
    doc.h(2, "Aggregate over datasets (rliable)")
    doc.p(f"Last-evaluation normalized scores of every run on the {len(datasets)} dataset(s) "
          f"({', '.join(datasets)}), as a [runs x datasets] matrix per method. Interquartile mean (IQM), mean and "
          f"optimality gap (gamma {GAMMA:g}: how far below the expert's score, lower is better) with 95 % "
          f"stratified-bootstrap confidence intervals ({reps} replications, NumPy seed {seed}), after Agarwal et "
          "al. 2021. The bootstrap resamples only the runs there are: with few runs per dataset its intervals are "
          "too narrow rather than too wide.")
    matrices, notes = {}, []
    for m in methods:
        x, note = score_matrix(trials, m, datasets)
        if note:
            notes.append(note + (" (left out of the aggregate)" if x is None else ""))
        if x is not None:
            matrices[m] = x
    doc.ul(notes)
    out = {"matrices": matrices, "left_out": [m for m in methods if m not in matrices]}
    if not matrices:
        doc.p("No method has runs on every dataset, so there is no aggregate.")
        return out
    single = [names[m] for m, x in matrices.items() if x.shape[0] == 1]
    if single:
        doc.p(f"One run per dataset ({', '.join(single)}): the bootstrap has no runs to resample, so those "
              "intervals are points and show no uncertainty that is there.")
    points, intervals = interval_estimates(matrices, reps, seed)
    out.update(points=points, intervals=intervals)
    rows = [[names[m], f"{x.shape[0]} x {x.shape[1]}"]
            + [_ci(points[m][i], intervals[m][:, i]) for i in range(len(METRICS))] for m, x in matrices.items()]
    doc.table(["method", "runs x datasets"] + [f"{name} [95 % CI]" for name in METRICS], rows,
              "Point estimate [95 % stratified-bootstrap CI]. Optimality gap: lower is better.")
    shown = {names[m]: v for m, v in points.items()}
    fig, axes = plot_utils.plot_interval_estimates(
        shown, {names[m]: v for m, v in intervals.items()}, metric_names=list(METRICS),
        algorithms=list(shown)[::-1], colors={names[m]: colors[m] for m in matrices}, row_height=0.6,
        xlabel="normalized score")
    # rliable puts the x label at a fixed figure fraction, on the tick labels of a short figure: half an inch
    # below the axes instead
    fig.texts[-1].set_y(np.ravel(axes)[0].get_position().y0 - 0.6 / fig.get_figheight())
    figures[f"{stem}-aggregates.png"] = _png(fig)
    doc.img(f"{stem}-aggregates.png", figures[f"{stem}-aggregates.png"],
            "IQM, mean and optimality gap with 95 % stratified-bootstrap CIs")

    # performance profiles: the fraction of runs scoring above tau, for every tau
    library, _, _ = _rliable()
    top = max(GAMMA, float(np.ceil(max(x.max() for x in matrices.values()) / 10) * 10))
    taus = np.linspace(0.0, top, 101)
    with seeded(seed):
        profiles, profile_cis = library.create_performance_profile(matrices, taus, reps=reps,
                                                                   custom_profile_func=score_distribution)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    plot_utils.plot_performance_profiles({names[m]: v for m, v in profiles.items()}, taus,
                                         {names[m]: v for m, v in profile_cis.items()},
                                         colors={names[m]: colors[m] for m in matrices}, ax=ax,
                                         xlabel=r"normalized score $\tau$",
                                         ylabel=r"fraction of runs with score $> \tau$", labelsize="medium",
                                         ticklabelsize="medium")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    figures[f"{stem}-profiles.png"] = _png(fig)
    doc.p("Performance profiles: for each threshold tau, the fraction of all runs (all datasets) scoring above it, "
          "with 95 % stratified-bootstrap bands. A curve above another everywhere dominates it.")
    doc.img(f"{stem}-profiles.png", figures[f"{stem}-profiles.png"], "Performance profiles (score distributions)")
    out.update(profiles=profiles, profile_cis=profile_cis, taus=taus)
    return out


def _improvement(doc: Doc, trials: pd.DataFrame, methods: list[str], names: dict[str, str], colors: dict,
                 reps: int, seed: int, figures: dict[str, bytes], stem: str) -> dict:
    _, _, plot_utils = _rliable()
    import matplotlib.pyplot as plt

    ours = [m for m in methods if trials.loc[trials["method"] == m, "labeller"].iloc[0] == "ailot"]
    doc.h(2, "Probability of improvement")
    if not ours or len(methods) < 2:
        doc.p("The sweep has no AILOT method and another to compare it with.")
        return {}
    # every AILOT method against every other; an ablation's many AILOT settings only against the rest, which
    # keeps the table readable (the aggregate table compares the settings)
    others = [m for m in methods if m not in ours]
    notes = []
    if len(ours) > MAX_AILOT_PAIRWISE and others:
        notes.append(f"{len(ours)} AILOT settings: each is compared with the non-AILOT methods only")
    elif len(ours) > MAX_AILOT_PAIRWISE:
        doc.p(f"All {len(ours)} methods are AILOT settings (an ablation): the aggregate table compares them, "
              f"and {len(ours) * (len(ours) - 1)} pairwise probabilities would not read as a table.")
        return {}
    else:
        others = methods
    pairs, shared = {}, {}
    for x in ours:
        for y in others:
            if y == x:
                continue
            common = sorted(set(trials.loc[trials["method"] == x, "dataset"])
                            & set(trials.loc[trials["method"] == y, "dataset"]))
            if not common:
                notes.append(f"{names[x]} vs {names[y]}: no dataset in common")
                continue
            mx, nx = score_matrix(trials, x, common)
            my, ny = score_matrix(trials, y, common)
            notes += [n for n in (nx, ny) if n and n not in notes]
            pairs[(x, y)], shared[(x, y)] = (mx, my), common
    points, intervals = improvement_probabilities(pairs, reps, seed)
    doc.p(f"P(X > Y): the probability that a run of X scores above a run of Y on a dataset (Mann-Whitney U / "
          f"(n_X n_Y)), averaged over the datasets both ran, at the last evaluation; 95 % stratified independent "
          f"bootstrap CIs ({reps} replications, seed {seed}). 0.5: no difference; an interval that holds 0.5 does "
          "not show one.")
    rows = [[names[x], names[y], ", ".join(shared[(x, y)]),
             f"{points[(x, y)]:.2f} [{intervals[(x, y)][0]:.2f}, {intervals[(x, y)][1]:.2f}]"] for x, y in pairs]
    doc.table(["X", "Y", "datasets", "P(X > Y) [95 % CI]"], rows, numbers=False)
    doc.ul(notes)
    if pairs:
        fig, ax = plt.subplots(figsize=(5, 0.45 * len(pairs) + 1))
        plot_utils.plot_probability_of_improvement(
            {f"{names[x]};{names[y]}": np.array([points[(x, y)]]) for x, y in pairs},
            {f"{names[x]};{names[y]}": intervals[(x, y)].reshape(2, 1) for x, y in pairs},
            pair_separator=";", ax=ax, ticklabelsize="medium", labelsize="medium",
            colors=[colors[y] for _, y in pairs])
        ax.axvline(0.5, color="grey", ls="--", lw=1)  # no difference
        ax.set_xlim(0, 1)
        figures[f"{stem}-improvement.png"] = _png(fig)
        doc.img(f"{stem}-improvement.png", figures[f"{stem}-improvement.png"],
                "Probability of improvement of AILOT (left) over each other method (right), 95 % CIs")
    return {"points": points, "intervals": intervals, "datasets": shared}


def _provenance(doc: Doc, df: pd.DataFrame, trials: pd.DataFrame):
    doc.h(2, "Provenance")
    commits = trials.merge(df.groupby("trial_id")["git_commit"].last().reset_index(), on="trial_id")
    counts = commits["git_commit"].fillna("(not recorded)").value_counts()
    doc.p("Code: " + "; ".join(f"git {c} ({n} runs)" for c, n in counts.items()) + ".")
    made_by = trials.merge(df.groupby("trial_id")["sweep"].last().reset_index(), on="trial_id")["sweep"]
    if made_by.nunique() > 1:
        doc.p("Runs per sweep that made them: " + "; ".join(f"{name} ({n})" for name, n in
                                                          made_by.value_counts().items())
              + ". Runs of another sweep were taken through `reuse_from`: made with the same trial config, data "
                "fingerprint and rewards.")
    wall = trials["wall_time_s"].sum()
    stamps = pd.to_numeric(df["timestamp"], errors="coerce").dropna()
    span = ""
    if len(stamps):
        first, last = (datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%d %H:%M") for t in
                       (stamps.min(), stamps.max()))
        span = f"; evaluations from {first} to {last} UTC (reruns keep finished trials, so this span can be longer)"
    episodes = sorted({int(e) for e in df["eval_episodes"].dropna()})
    doc.p(f"{len(trials)} runs, {len(df)} evaluations; training + evaluation wall time summed over runs "
          f"{wall / 3600:.2f} h{span}. Evaluation episodes per evaluation: "
          f"{', '.join(map(str, episodes)) or 'not recorded'}.")
    data = df.groupby("dataset", dropna=False).agg(
        dataset_id=("dataset_id", lambda s: ", ".join(sorted(set(s.dropna().astype(str))))),
        env_id=("env_id", lambda s: ", ".join(sorted(set(s.dropna().astype(str))))),
        fingerprint=("dataset_fingerprint", lambda s: ", ".join(sorted(set(s.dropna().astype(str))))),
        expert_id=("expert_id", lambda s: ", ".join(sorted(set(s.dropna().astype(str))))),
    ).reset_index()
    rows = []
    for _, r in data.iterrows():
        if not r["expert_id"]:
            protocol = "not recorded"
        elif r["expert_id"] == r["dataset_id"]:
            protocol = "the expert trajectories come from the agent dataset itself"
        else:
            protocol = f"a separate expert dataset, {r['expert_id']}"
        rows.append([r["dataset"], r["dataset_id"], r["env_id"], r["fingerprint"][:16] or "\u2013", protocol])
    doc.table(["dataset", "dataset id", "env", "fingerprint (sha256, first 16)", "expert protocol"], rows,
              "Expert protocol from `expert_id`: where each dataset's expert trajectories were taken from.",
              numbers=False)
    settings = df[df["labeller"].isin(["ailot", "otr"])].groupby("labeller").agg(
        n_experts=("n_experts", lambda s: ", ".join(f"{v:g}" for v in sorted(s.dropna().unique()))),
        expert_mode=("expert_mode", lambda s: ", ".join(sorted(set(s.dropna().astype(str)) - {""}))))
    if len(settings):
        doc.ul([f"{lab}: expert trajectories N = {r['n_experts'] or '?'}"
                + (f", expert mode {r['expert_mode']}" if r["expert_mode"] else "") for lab, r in settings.iterrows()])
    versions: dict[str, set[str]] = {}
    for text in df["versions"].dropna().unique():
        try:
            for package, version in json.loads(text).items():
                versions.setdefault(package, set()).add(str(version))
        except (ValueError, AttributeError):
            continue
    if versions:
        doc.table(["package", "version"],
                  [[p, ", ".join(sorted(v)) + (" (mixed)" if len(v) > 1 else "")] for p, v in versions.items()],
                  "Package versions recorded with the runs (`versions` column).", numbers=False)


# Last-evaluation scores of the same code, config and seed moved by up to 6 points between two machines of the
# same kind (XLA's summation order; results/README.md, smoke sweep): a smaller gap is no failure to reproduce.
MACHINE_TOLERANCE = 6.0


def reproduction(trials: pd.DataFrame, reference: pd.DataFrame) -> pd.DataFrame:
    """Per (dataset, method) in both: this run's and the reference's last-evaluation mean, and whether they agree
    within max(either std, MACHINE_TOLERANCE)."""
    mine, ref = cells(trials, "last"), cells(trial_scores(reference), "last")
    rows = []
    for key in sorted(set(mine) & set(ref)):
        a, b = mine[key], ref[key]
        tolerance = max(a.spread, b.spread, MACHINE_TOLERANCE)
        rows.append({"dataset": key[0], "method": key[1], "mean": a.mean, "runs": len(a.values),
                     "reference_mean": b.mean, "reference_runs": len(b.values), "difference": a.mean - b.mean,
                     "tolerance": tolerance, "reproduced": abs(a.mean - b.mean) <= tolerance})
    return pd.DataFrame(rows)


def _reproduction(doc: Doc, trials: pd.DataFrame, reference: pd.DataFrame, names: dict[str, str],
                  source: str) -> pd.DataFrame:
    table = reproduction(trials, reference)
    doc.h(2, "Reproduction of the reference results")
    if table.empty:
        doc.p(f"The reference ({source}) has no (dataset, method) in common with this run.")
        return table
    doc.p(f"This run against the committed reference {source}: {int(table['reproduced'].sum())} of {len(table)} "
          f"(dataset, method) cells agree within max(either run's std over seeds, {MACHINE_TOLERANCE:g} points, the "
          "spread of one seed between two machines of the same kind).")
    doc.table(["dataset", "method", "this run", "reference", "difference", "tolerance", "reproduced"],
              [[r.dataset, names.get(r.method, r.method), f"{r.mean:.1f} (n={r.runs})",
                f"{r.reference_mean:.1f} (n={r.reference_runs})", f"{r.difference:+.1f}", f"{r.tolerance:.1f}",
                "yes" if r.reproduced else "**no**"] for r in table.itertuples()], numbers=False)
    return table


def build(df: pd.DataFrame, title: str, per_seed: bool = False, reps: int = 2000, seed: int = 0,
          stem: str = "report", reference: pd.DataFrame | None = None,
          reference_source: str = "") -> tuple[Doc, dict[str, bytes], dict]:
    """The report of results rows: its document, figures (file name -> PNG) and numbers (for tests and callers).
    reference: published rows of the same sweep; the report then says which cells this run reproduced."""
    import matplotlib

    matplotlib.use("Agg")
    trials = trial_scores(df)
    methods = method_order(trials)
    experts = expert_methods(trials)
    names = {m: m + (f" {DAGGER}" if m in experts else "") for m in methods}
    colors = _colors(methods)
    figures: dict[str, bytes] = {}
    doc = Doc()
    doc.h(1, title)
    datasets = sorted(trials["dataset"].unique())
    doc.p(f"{len(methods)} methods on {len(datasets)} dataset(s), {len(trials)} runs. A method is the labeller + "
          "learner pair, with the labeller settings the sweep varied; bc is behaviour cloning.")
    doc.h(2, "Benchmark table: last evaluation")
    _score_table(doc, trials, "last", methods, names, per_seed, experts)
    doc.h(2, "Best evaluation over training")
    _score_table(doc, trials, "best", methods, names, per_seed, experts)
    numbers = {"trials": trials, "names": names, "cells": cells(trials, "last")}
    if reference is not None:
        numbers["reproduction"] = _reproduction(doc, trials, reference, names, reference_source)
    numbers["aggregate"] = _aggregates(doc, trials, methods, names, colors, reps, seed, figures, stem)
    numbers["improvement"] = _improvement(doc, trials, methods, names, colors, reps, seed, figures, stem)
    doc.h(2, "Learning curves")
    frame = df.reset_index(drop=True).copy()
    frame["method"] = results.method_names(frame)
    for d in datasets:
        name = f"{stem}-curves-{results._slug(d)}.png"
        figures[name] = learning_curves(frame, d, names, colors)
        doc.img(name, figures[name], f"Learning curves on {d}: normalized score vs learner updates, mean {PM} std")
    _provenance(doc, frame, trials)
    return doc, figures, numbers


def write_report(parquet_path: StoragePath, out_dir: StoragePath | None = None, per_seed: bool = False,
                 reps: int = 2000, seed: int = 0, reference: StoragePath | None = None) -> list[StoragePath]:
    """Write `<out_dir>/<sweep>.md`, `<sweep>.html` (figures embedded) and the PNGs beside them; returns the
    paths. `out_dir` defaults to `reports/` beside the results file. reference: a published results file of the
    same sweep (e.g. results/<sweep>.parquet) to compare with."""
    df = load_results(parquet_path)
    ref = load_results(reference) if reference is not None else None
    text = str(parquet_path)
    stem = Path(text).stem
    if out_dir is None:
        parent = text.rsplit("/", 1)[0] if "/" in text else "."
        out_dir = storage.join(parent if storage.is_uri(text) else Path(parent), "reports")
    sweeps = sorted(set(df["sweep"].dropna().astype(str)))
    title = stem if stem in sweeps else ", ".join(sweeps) or stem  # a sweep's file may hold rows taken from others
    doc, figures, _ = build(df, f"Sweep {title}", per_seed=per_seed, reps=reps, seed=seed,
                            stem=stem, reference=ref, reference_source=str(reference or ""))
    written = []
    for name, data in [(f"{stem}.md", doc.markdown().encode()),
                       (f"{stem}.html", doc.html(f"ailot report: {stem}").encode()), *figures.items()]:
        path = storage.join(out_dir, name)
        storage.write_bytes(path, data)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ailot report", description=__doc__.splitlines()[0])
    parser.add_argument("path", help="results file, results/<sweep>.parquet (or a URI)")
    parser.add_argument("--out", default=None, help="directory (default: reports/ beside the results file)")
    parser.add_argument("--per-seed", action="store_true", help="list each run's score in the tables")
    parser.add_argument("--reps", type=int, default=2000, help="bootstrap replications (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    parser.add_argument("--reference", default=None,
                        help="published results of the same sweep (e.g. results/<sweep>.parquet): say which cells "
                             "this run reproduced")
    args = parser.parse_args(argv)
    if args.reps < 1:
        print("error: --reps: must be at least 1. Fix: pass e.g. --reps 2000", file=sys.stderr)
        return 2
    try:
        paths = write_report(args.path, args.out, per_seed=args.per_seed, reps=args.reps, seed=args.seed,
                             reference=args.reference)
    except AilotInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for p in paths[:2]:
        print(f"wrote {p}")
    print(f"wrote {len(paths) - 2} figures beside them")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
