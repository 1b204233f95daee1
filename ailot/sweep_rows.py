"""A trial's rows into the results file the moment the trial ends, from the sweep's driver."""

from __future__ import annotations

import logging
from collections.abc import Callable

from ray import tune

from ailot import results

log = logging.getLogger("ailot.sweep")


class RowsOnTrialEnd(tune.Callback):
    """Merges a trial's rows into the results file as soon as the trial ends, finished or failed for good. In the
    driver, so one process writes; a driver killed later (SIGKILL, a lost head node) loses no ended trial's rows.
    `read_rows(checkpoint)` gives the rows a trial checkpoint holds. Module-level, so that Tune can pickle it with
    the experiment."""

    def __init__(self, parquet_path: str, read_rows: Callable[[object], list[dict]]):
        self.parquet_path, self.read_rows = parquet_path, read_rows

    def _write(self, trial) -> None:
        try:
            rows = self.read_rows(trial.checkpoint)
            if rows:
                results.merge_into(self.parquet_path, rows)
                log.info("trial %s ended: its %d rows are in %s", rows[-1]["trial_id"], len(rows), self.parquet_path)
        except Exception as exc:  # the sweep's end writes every row again: never stop the run for this
            log.warning("trial %s: rows not written at its end (%s: %s); the sweep's end writes them",
                        trial.trial_id, type(exc).__name__, exc)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trial)
