"""User-facing errors: each names the bad input and says how to fix it."""


class AilotInputError(ValueError):
    """Bad user input (config, dataset, flag, checkpoint). The CLI maps it to exit code 2."""

    def __init__(self, what: str, problem: str, fix: str):
        self.what, self.problem, self.fix = what, problem, fix
        super().__init__(f"{what}: {problem}. Fix: {fix}")

    def __reduce__(self):  # Ray pickles errors raised in tasks and trials; the default passes only the message
        return type(self), (self.what, self.problem, self.fix)
