"""User-facing errors: each names the bad input and says how to fix it."""


class AilotInputError(ValueError):
    """Bad user input (config, dataset, flag, checkpoint). The CLI maps it to exit code 2."""

    def __init__(self, what: str, problem: str, fix: str):
        self.what, self.problem, self.fix = what, problem, fix
        super().__init__(f"{what}: {problem}. Fix: {fix}")

    def __reduce__(self):  # Ray pickles errors raised in tasks and trials; the default passes only the message
        return type(self), (self.what, self.problem, self.fix)


class DatasetMissing(AilotInputError):
    """A named dataset that is not there (yet): what a dry run lists with how to make it, not an error."""


class SweepIncomplete(RuntimeError):
    """A sweep that ended with trials failed for good or left unfinished (interrupted). Raised after every row
    that did finish is written; the CLI exits 1 (failed) or 130 (interrupted)."""

    def __init__(self, failed: list[str], unfinished: list[str], interrupted: bool, written: str, summary: str):
        self.failed, self.unfinished, self.interrupted = failed, unfinished, interrupted
        self.written, self.summary = written, summary
        parts = []
        if unfinished:
            parts.append(f"{len(unfinished)} trial(s) left unfinished ({', '.join(unfinished[:5])}"
                         f"{', ...' if len(unfinished) > 5 else ''})")
        if failed:
            parts.append(f"{len(failed)} trial(s) failed for good: " + "; ".join(failed[:5])
                         + ("; ..." if len(failed) > 5 else ""))
        super().__init__(f"{'interrupted: ' if interrupted else ''}{', and '.join(parts)}; {written}")
