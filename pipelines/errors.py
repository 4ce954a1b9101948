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


class Interrupted(RuntimeError):
    """The command was stopped from outside (Ctrl-C, SIGTERM from ``timeout``, ``ray job stop`` or a
    scheduler): the CLI prints the message as one line and exits with ``exit_code`` (128 + the
    signal's number, as a shell reports it), with no traceback and no stack dump."""

    def __init__(self, message: str, exit_code: int = 130) -> None:
        super().__init__(message)
        self.exit_code = exit_code
