"""The two errors a stage reports to a person: one line, a non-zero exit, no traceback.

Here, in a module that imports nothing, so that any module (a Ray worker's included) can raise them
without importing the run config and, through it, every stage's settings.
"""


class ConfigError(ValueError):
    """A config or input problem described for a person: which key or path, what was expected.

    The CLI prints it as one line and exits with status 2, before Ray starts when it can.
    """


class StageFailed(RuntimeError):
    """A stage ran to its end but its outputs are not valid (e.g. its counts do not add up).

    The CLI prints the message as one line and exits with status 1, and the stage is not marked done.
    """
