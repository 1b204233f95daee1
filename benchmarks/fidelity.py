"""The fidelity table (issue 28): for each of the five documented differences from the reference code, the
normalized score of the last evaluation with each option, same data and seeds, read from the sweeps' results.

    python benchmarks/fidelity.py [--results results]   # after the tune/configs/fidelity-umaze*.yaml sweeps
    python benchmarks/fidelity.py --table hopper        # after the tune/configs/fidelity-hopper*.yaml sweeps

Each choice compares two results files (or two slices of one): the default option's rows come from the
benchmark sweep (benchmark-pointmaze-umaze or benchmark-hopper, seeds 0-2) where its settings are the same, the
other option's from its fidelity sweep. Choices 3 and 4 (ICVF inputs and training pairs) also get the Fig. 8 R^2
from the geometry files.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ailot import results

BENCHMARK = "benchmark-pointmaze-umaze"
HOPPER = "benchmark-hopper"
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Option:
    label: str
    sweep: str
    labeller: str
    learner: str = "iql"
    dataset: str | None = None  # the sweep's rows on this dataset only (None: its only one)


@dataclass(frozen=True)
class Choice:
    title: str
    default: Option
    other: Option


CHOICES = (
    Choice("1. expert trajectory, AILOT", Option("separate expert dataset", BENCHMARK, "ailot"),
           Option("top-1 agent episode (`expert: same`)", "fidelity-umaze", "ailot")),
    Choice("1. expert trajectory, OTR", Option("separate expert dataset", BENCHMARK, "otr"),
           Option("top-1 agent episode (`expert: same`)", "fidelity-umaze", "otr")),
    Choice("2. AILOT reward squashing", Option("paper: 5 exp(-0.5 Ta sum P C)", BENCHMARK, "ailot"),
           Option("authors: 2 exp(-3 * 100 sum P C)", "fidelity-umaze-squash", "ailot")),
    Choice("3. ICVF inputs", Option("normalised (default)", BENCHMARK, "ailot"),
           Option("raw (icvf_release)", "fidelity-umaze-raw-inputs", "ailot")),
    Choice("4. ICVF training pairs", Option("every transition (default)", BENCHMARK, "ailot"),
           Option("without each episode's last (ailot before)", "fidelity-umaze-pairs", "ailot")),
    Choice("5. Diffusion-QL rewards (AILOT)", Option("reference: raw (default)", "fidelity-umaze-dql", "ailot",
                                                      "diffusion_ql"),
           Option("IQL's scaling (ailot before)", "fidelity-umaze-dql-iql", "ailot", "diffusion_ql")),
)


def _hopper_choices() -> tuple[Choice, ...]:
    """On locomotion OTR's protocol (`expert: same`) is the benchmark's, so the separate expert set is the other
    option; choices 3-5 ran on hopper-medium only."""
    out = []
    for ds in ("hopper-medium", "hopper-medium-replay"):
        for labeller in ("ailot", "otr"):
            out.append(Choice(f"1. expert trajectory, {labeller.upper()}, {ds}",
                              Option("top-1 agent episode (`expert: same`)", HOPPER, labeller, dataset=ds),
                              Option("separate expert dataset (expert-v0)", "fidelity-hopper-expert", labeller,
                                     dataset=ds)))
    for ds in ("hopper-medium", "hopper-medium-replay"):
        out.append(Choice(f"2. AILOT reward squashing, {ds}",
                          Option("paper: 5 exp(-0.5 Ta sum P C)", HOPPER, "ailot", dataset=ds),
                          Option("authors: 2 exp(-3 * 100 sum P C)", "fidelity-hopper-squash", "ailot", dataset=ds)))
    for ds in ("hopper-medium", "hopper-medium-replay"):
        out.append(Choice(f"1 + 2. the AILOT authors' notebook setup, {ds}",
                          Option("`expert: same`, paper squashing", HOPPER, "ailot", dataset=ds),
                          Option("expert-v0's top episode, authors' squashing", "fidelity-hopper-authors", "ailot",
                                 dataset=ds)))
    medium = "hopper-medium"
    out += [
        Choice(f"3. ICVF inputs, {medium}", Option("normalised (default)", HOPPER, "ailot", dataset=medium),
               Option("raw (icvf_release)", "fidelity-hopper-raw-inputs", "ailot")),
        Choice(f"4. ICVF training pairs, {medium}", Option("every transition (default)", HOPPER, "ailot",
                                                           dataset=medium),
               Option("without each episode's last (the fall)", "fidelity-hopper-pairs", "ailot")),
        Choice(f"5. Diffusion-QL rewards (AILOT, 5k updates), {medium}",
               Option("reference: raw (default)", "fidelity-hopper-dql", "ailot", "diffusion_ql"),
               Option("IQL's scaling (ailot before)", "fidelity-hopper-dql-iql", "ailot", "diffusion_ql")),
    ]
    return tuple(out)


# table name -> (choices, the sweep whose geometry is the default's, the other options' geometry sweeps)
TABLES = {
    "umaze": (CHOICES, BENCHMARK, {"raw inputs": "fidelity-umaze-raw-inputs", "without last pairs":
                                   "fidelity-umaze-pairs"}),
    "hopper": (_hopper_choices(), HOPPER, {"raw inputs": "fidelity-hopper-raw-inputs", "without last pairs":
                                           "fidelity-hopper-pairs"}),
}


def last_scores(df: pd.DataFrame, option: Option) -> pd.Series:
    """Normalized score at each seed's last evaluation, for the option's labeller + learner, seeds 0-2."""
    rows = df[(df.labeller == option.labeller) & (df.learner == option.learner) & df.seed.isin(SEEDS)]
    if option.dataset is not None:
        rows = rows[rows.dataset == option.dataset]
    elif rows.dataset.nunique() > 1:
        raise ValueError(f"{option.sweep} has rows on {sorted(rows.dataset.unique())}: name the option's dataset")
    last = rows.sort_values("step").groupby("seed").tail(1).set_index("seed").sort_index()
    return last["normalized_score"]


def cell(scores: pd.Series) -> str:
    if scores.empty:
        return "not run"
    per_seed = ", ".join(f"{s:.1f}" for s in scores)
    return f"{scores.mean():.1f} +- {scores.std(ddof=1):.1f} ({per_seed})"


def r2_line(results_dir: Path, sweep: str) -> str:
    geometry = results.read_geometry(results_dir / f"{sweep}.geometry.parquet")
    if geometry is None:
        return "no geometry file"
    return ", ".join(f"k<={h}: {fits['psi']:.3f}" for h, fits in sorted(geometry.attrs["r2_by_horizon"].items()))


def table(results_dir: Path, which: str = "umaze") -> str:
    choices, benchmark, geometry_sweeps = TABLES[which]
    frames: dict[str, pd.DataFrame | None] = {}

    def load(sweep: str) -> pd.DataFrame | None:
        if sweep not in frames:
            path = results_dir / f"{sweep}.parquet"
            frames[sweep] = results.load(path) if path.exists() else None
        return frames[sweep]

    lines = ["| choice | default option | score | other option | score | difference |", "|---|---|---|---|---|---|"]
    for choice in choices:
        cells, means = [], []
        for option in (choice.default, choice.other):
            df = load(option.sweep)
            scores = last_scores(df, option) if df is not None else pd.Series(dtype=float)
            cells += [option.label, cell(scores)]
            means.append(scores.mean() if len(scores) else np.nan)
        diff = means[1] - means[0]
        lines.append(f"| {choice.title} | " + " | ".join(cells) + f" | {'' if np.isnan(diff) else f'{diff:+.1f}'} |")
    others = "; ".join(f"{label}: {r2_line(results_dir, sweep)}" for label, sweep in geometry_sweeps.items())
    lines += ["", f"Fig. 8 R^2 (psi distance vs k, seed 0's encoder), defaults: {r2_line(results_dir, benchmark)}; "
              + others]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=Path("results"), help="where the sweeps' Parquet files are")
    p.add_argument("--table", choices=sorted(TABLES), default="umaze",
                   help="umaze: tune/configs/fidelity-umaze*.yaml; hopper: tune/configs/fidelity-hopper*.yaml")
    args = p.parse_args(argv)
    print(table(args.results, args.table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
