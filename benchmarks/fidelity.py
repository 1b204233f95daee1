"""The fidelity table (issue 28): for each of the five documented differences from the reference code, the
normalized score of the last evaluation with each option, same data and seeds, read from the sweeps' results.

    python benchmarks/fidelity.py [--results results]   # after the tune/configs/fidelity-umaze*.yaml sweeps

Each choice compares two results files (or two slices of one): the default option's rows come from the
benchmark sweep (benchmark-pointmaze-umaze, seeds 0-2) where its settings are the same, the other option's from
its fidelity sweep. Choice 3 (ICVF input normalisation) also gets the Fig. 8 R^2 from both geometry files.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ailot import results

BENCHMARK = "benchmark-pointmaze-umaze"
SEEDS = (0, 1, 2)


@dataclass(frozen=True)
class Option:
    label: str
    sweep: str
    labeller: str
    learner: str = "iql"


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


def last_scores(df: pd.DataFrame, option: Option) -> pd.Series:
    """Normalized score at each seed's last evaluation, for the option's labeller + learner, seeds 0-2."""
    rows = df[(df.labeller == option.labeller) & (df.learner == option.learner) & df.seed.isin(SEEDS)]
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


def table(results_dir: Path) -> str:
    frames: dict[str, pd.DataFrame | None] = {}

    def load(sweep: str) -> pd.DataFrame | None:
        if sweep not in frames:
            path = results_dir / f"{sweep}.parquet"
            frames[sweep] = results.load(path) if path.exists() else None
        return frames[sweep]

    lines = ["| choice | default option | score | other option | score | difference |", "|---|---|---|---|---|---|"]
    for choice in CHOICES:
        cells, means = [], []
        for option in (choice.default, choice.other):
            df = load(option.sweep)
            scores = last_scores(df, option) if df is not None else pd.Series(dtype=float)
            cells += [option.label, cell(scores)]
            means.append(scores.mean() if len(scores) else np.nan)
        diff = means[1] - means[0]
        lines.append(f"| {choice.title} | " + " | ".join(cells) + f" | {diff:+.1f} |")
    lines += ["", "Fig. 8 R^2 (psi distance vs k, seed 0's encoder), normalised inputs: "
              f"{r2_line(results_dir, BENCHMARK)}; raw inputs: {r2_line(results_dir, 'fidelity-umaze-raw-inputs')}; "
              f"without last pairs: {r2_line(results_dir, 'fidelity-umaze-pairs')}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=Path("results"), help="where the sweeps' Parquet files are")
    print(table(p.parse_args(argv).results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
