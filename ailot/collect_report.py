"""What `ailot collect` made, as a reader checks it against D4RL: SAC learning curves, training speed, the pick,
and every dataset's size, mean return and normalized score beside D4RL's.

    ailot collect-report ~/.cache/ailot/collect/hopper-seed0 ~/.cache/ailot/collect/walker2d-seed0 \\
        --root ~/.minari/datasets --out results/collection

Reads each work dir's `state.json` (snapshots with their short training evaluation, the timed steps),
`selection.json` (the 50-episode evaluations the pick used) and `references.json`, and the datasets' `ailot_collection`
metadata (their stats as written). Writes `<out>/collection.md` (the tables) and `<out>/sac_curves.png`, and prints
the tables. A work dir whose selection or datasets are not made yet is reported as far as it got.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ailot.errors import AilotInputError

# D4RL's own medium datasets' mean normalized scores, as the issue states them (about; D4RL paper, Fu et al. 2020):
# what our medium sets are compared with.
D4RL_MEDIUM_SCORE = {"hopper": 44.0, "walker2d": 62.0, "halfcheetah": 41.0}


def read_run(work_dir: str | os.PathLike) -> dict:
    """One collection's training record: env, steps, timing, snapshots, selection and references."""
    work = Path(work_dir)
    state_path = work / "state.json"
    if not state_path.is_file():
        raise AilotInputError(f"work dir {str(work)!r}", "has no state.json (not an `ailot collect` work dir)",
                              "give the --work-dir of an `ailot collect` run "
                              "(default ~/.cache/ailot/collect/<env>-seed<N>)")
    state = json.loads(state_path.read_text())

    def optional(name: str) -> dict:
        path = work / name
        return json.loads(path.read_text()) if path.is_file() else {}

    selection = sorted(optional("selection.json").values(), key=lambda x: x["step"])
    return {"work_dir": str(work), "env_id": state["settings"]["env_id"], "seed": state["settings"]["seed"],
            "train_steps": state["settings"]["train_steps"], "step": state["step"],
            "done": bool(state.get("training_done")), "timed": state.get("timed"),
            "snapshots": sorted(state["snapshots"], key=lambda x: x["step"]), "selection": selection,
            "references": optional("references.json")}


def dataset_stats(env_id: str) -> dict[str, dict]:
    """{kind: stats} of the datasets `ailot collect` wrote for `env_id` under MINARI_DATASETS_PATH (made ones only)."""
    from ailot.collect import KINDS, dataset_id
    from ailot.data.generate import existing_settings

    out = {}
    for kind in KINDS:
        meta = existing_settings(dataset_id(env_id, kind), "ailot_collection")
        if meta:
            out[kind] = {"id": dataset_id(env_id, kind), **meta.get("stats", {}), "snapshots": meta.get("snapshots"),
                         "medium_fraction": meta.get("medium_fraction")}
    return out


def chosen_pick(run: dict, env_datasets: dict[str, dict]) -> tuple[dict, dict, float] | None:
    """(expert, medium, medium fraction): what the env's datasets were made from; before they exist, the pick
    rule on the selection at its default fraction; None before the selection."""
    from ailot.collect import pick

    made = next((st for st in env_datasets.values() if st.get("snapshots")), None)
    if made is not None:
        return made["snapshots"]["expert"], made["snapshots"]["medium"], made.get("medium_fraction") or 1 / 3
    if run["selection"] and run["done"]:
        return (*pick(run["selection"]), 1 / 3)
    return None


def tables(runs: list[dict], datasets: dict[str, dict[str, dict]]) -> str:
    """The Markdown tables: training and pick per env, then every dataset with D4RL's medium score beside ours."""
    from ailot.collect import env_name

    lines = ["| env | SAC steps | steps/s (timed steps) | expert: step, return over 50 episodes | "
             "medium: step, return (target) | own random / expert return |", "|---|---|---|---|---|---|"]
    for run in runs:
        timed = run["timed"]
        speed = (f"{timed['steps'] / timed['seconds']:.0f} ({timed['steps']:,})" if timed and timed["seconds"] > 0
                 else "not timed")
        steps = f"{run['step']:,} of {run['train_steps']:,}" + ("" if run["done"] else " (training)")
        expert = medium = "not selected yet"
        if run["pick"] is not None:
            e, m, fraction = run["pick"]
            expert = f"{e['step']:,}: {e['return_mean']:.0f} +- {e['return_std']:.0f}"
            medium = f"{m['step']:,}: {m['return_mean']:.0f} ({fraction * e['return_mean']:.0f})"
        refs = run["references"]
        own = f"{refs['ref_min_score']:.0f} / {refs['ref_max_score']:.0f}" if refs else "-"
        lines.append(f"| {run['env_id']} | {steps} | {speed} | {expert} | {medium} | {own} |")
    lines += ["", "| dataset | transitions | episodes | mean return | normalized score | D4RL's |",
              "|---|---:|---:|---:|---:|---:|"]
    for env_id, kinds in datasets.items():
        for kind, st in kinds.items():
            d4rl = D4RL_MEDIUM_SCORE.get(env_name(env_id)) if kind == "medium" else None
            d4rl_cell = f"about {d4rl:.0f}" if d4rl is not None else ""
            lines.append(f"| {st['id']} | {st.get('transitions', 0):,} | {st.get('episodes', 0):,} | "
                         f"{st.get('return_mean', float('nan')):.1f} | "
                         f"{st.get('normalized_score_mean', float('nan')):.1f} | {d4rl_cell} |")
    return "\n".join(lines)


def plot_curves(runs: list[dict], path: Path) -> Path:
    """Return vs SAC steps per env: the short training evaluation of every snapshot, and the 50-episode
    selection evaluations (mean +- std) with the picked expert and medium marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.6), squeeze=False)
    for ax, run in zip(axes[0], runs):
        snaps = run["snapshots"]
        ax.plot([x["step"] for x in snaps], [x["return_mean"] for x in snaps], color="0.6", lw=1,
                label="training evaluation (5 episodes, deterministic)")
        sel = run["selection"]
        if sel:
            ax.errorbar([x["step"] for x in sel], [x["return_mean"] for x in sel], [x["return_std"] for x in sel],
                        fmt="o", ms=2.5, lw=0.8, color="C0", label=f"selection ({sel[0]['episodes']} episodes, "
                        f"{'deterministic' if sel[0]['deterministic'] else 'sampled'})")
            if run["pick"] is not None:
                e, m, _ = run["pick"]
                for x, name, colour in ((e, "expert", "C3"), (m, "medium", "C2")):
                    ax.axvline(x["step"], color=colour, ls="--", lw=1, label=f"{name} (step {x['step']:,})")
        ax.set_title(f"{run['env_id']} SAC, seed {run['seed']}")
        ax.set_xlabel("environment steps")
        ax.set_ylabel("episode return")
        ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(work_dirs: list[str | os.PathLike], out_dir: str | os.PathLike) -> tuple[str, Path, Path]:
    """(tables, markdown path, figure path) for the collections in `work_dirs` (datasets under
    MINARI_DATASETS_PATH)."""
    runs = [read_run(w) for w in work_dirs]
    datasets = {run["env_id"]: dataset_stats(run["env_id"]) for run in runs}
    for run in runs:
        run["pick"] = chosen_pick(run, datasets[run["env_id"]])
    text = tables(runs, datasets)
    out = Path(out_dir)
    figure = plot_curves(runs, out / "sac_curves.png")
    md = out / "collection.md"
    md.write_text("# Datasets made by `ailot collect`\n\n" + text + "\n\n![SAC learning curves](sac_curves.png)\n")
    return text, md, figure


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ailot collect-report", description=__doc__.split("\n\n")[0])
    p.add_argument("work_dirs", nargs="+", help="`ailot collect --work-dir` folders, one per env")
    p.add_argument("--root", default=None, help="the datasets folder the collections wrote to (MINARI_DATASETS_PATH)")
    p.add_argument("--out", default="results/collection", help="where collection.md and sac_curves.png go")
    args = p.parse_args(argv)
    if args.root is not None:
        os.environ["MINARI_DATASETS_PATH"] = str(args.root)
    try:
        text, md, figure = report(args.work_dirs, args.out)
    except AilotInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    print(f"\nwritten: {md}, {figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
