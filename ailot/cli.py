"""The `ailot` command, one entry point for the tools: `ailot report ...` (see ailot.report), `ailot summary` and
`ailot plot` (ailot.results), `ailot generate` (ailot.data.generate), `ailot export` (ailot.export), `ailot collect`
(ailot.collect), `ailot collect-report` (ailot.collect_report), `ailot rewardmap` (ailot.rewardmap), `ailot sweep`
(ailot.sweep_cli, as tune/sweep.py)."""

from __future__ import annotations

import sys

COMMANDS = {
    "sweep": "run a sweep (as python tune/sweep.py): ailot sweep --config tune/configs/smoke.yaml [--dry-run]",
    "report": "benchmark table, rliable statistics, curves and provenance as Markdown + HTML: ailot report --help",
    "summary": "print mean +- std over seeds per dataset x method: ailot summary results/<sweep>.parquet",
    "plot": "write a results file's figures (PNG): ailot plot results/<sweep>.parquet [--out DIR]",
    "generate": "generate PointMaze agent + expert datasets (Minari): ailot generate --help",
    "export": "export a relabelled dataset as Parquet (RLlib offline columns): ailot export --help",
    "collect": "train SAC on a MuJoCo env and write D4RL-style Minari datasets: ailot collect --help",
    "collect-report": "SAC curves, the pick and the datasets' scores against D4RL's: ailot collect-report --help",
    "rewardmap": "a PointMaze sweep's rewards per maze cell, and the cells where they trap: ailot rewardmap --help",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ailot <command> [options]\n\ncommands:")
        for name, doc in COMMANDS.items():
            print(f"  {name:14s} {doc}")
        print("\non a cluster: ray job submit -- python tune/sweep.py --config tune/configs/<name>.yaml")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    # each tool is imported only when asked for: report pulls in rliable, collect and generate MuJoCo
    if command == "report":
        from ailot.report import main as report_main

        return report_main(rest)
    if command in ("summary", "plot"):
        from ailot.results import main as results_main

        return results_main([command, *rest])
    if command == "generate":
        from ailot.data.generate import main as generate_main

        return generate_main(rest)
    if command == "export":
        from ailot.export_cli import main as export_main

        return export_main(rest)
    if command == "collect":
        from ailot.collect import main as collect_main

        return collect_main(rest)
    if command == "collect-report":
        from ailot.collect_report import main as collect_report_main

        return collect_report_main(rest)
    if command == "rewardmap":
        from ailot.rewardmap import main as rewardmap_main

        return rewardmap_main(rest)
    if command == "sweep":
        import os

        from ailot.sweep_cli import main as sweep_main

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        return sweep_main(rest)
    print(f"error: unknown command {command!r}; use one of: {', '.join(COMMANDS)}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
