"""Run an AILOT sweep (the file `ray job submit` runs; `ailot sweep` is the same command): see ailot.sweep_cli.

    python tune/sweep.py --config tune/configs/smoke.yaml            # local Ray starts by itself
    ray job submit --working-dir . -- python tune/sweep.py --config tune/configs/<name>.yaml
    python tune/sweep.py --config ... --resume                       # continue an interrupted sweep
    python tune/sweep.py --config ... --dry-run                      # what it would run; no Ray, no training

Exit status: 0 every trial finished; 1 trials failed for good (named, after the other rows are written); 2 bad input
(one line, before any work); 130 interrupted (rows finished so far written; the --resume command printed).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Allow `python tune/sweep.py` from a checkout without installing (ray job submit --working-dir .).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ailot.sweep_cli import check_address, init_ray, main, parse_args, ray_init_kwargs, resume_command, run  # noqa: E402

__all__ = ["check_address", "init_ray", "main", "parse_args", "ray_init_kwargs", "resume_command", "run"]

if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    raise SystemExit(main())
