"""A trial's rows into the results file the moment the trial ends, from the sweep's driver; and a resume's log
without Tune's false alarm about trials that had not started."""

from __future__ import annotations

import contextlib
import logging
import re
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


class _NotStartedTrials(logging.Filter):
    """On restore, Tune warns "Failed to fetch metrics for N trial(s)" with a FileNotFoundError for each trial that
    had not reported yet: on a resume those are just the trials still to run (ailot reads its rows from
    checkpoints, not from those files). That warning becomes one info line; any other failure is left as it is."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if not msg.startswith("Failed to fetch metrics for"):
            return True
        failures = re.findall(r"^- \S+: (\w+)\(", msg, re.M)
        if not failures or any(f != "FileNotFoundError" for f in failures):
            return True
        log.info("  %d trial(s) had not reported before the run stopped: they run now", len(failures))
        return False


@contextlib.contextmanager
def quiet_about_unstarted_trials():
    tune_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    note = _NotStartedTrials()
    tune_log.addFilter(note)
    try:
        yield
    finally:
        tune_log.removeFilter(note)
