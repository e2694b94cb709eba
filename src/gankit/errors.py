"""The exceptions a user is meant to see, each with the exit code the CLI returns.

GankitError is the base: its message is one line, and the CLI prints it without a
traceback and exits with its `exit_code`. Everything else is a bug and keeps its
traceback.

- UserError (2): a problem the user can fix (a bad flag, a missing file, a corrupt
  checkpoint); the message says what is wrong and what to do.
- Diverged (3): the run, not the input, went wrong (a loss became NaN or infinite).
- Stopped (128 + signal): training stopped on SIGINT/SIGTERM after saving.
"""


class GankitError(Exception):
    """An expected way for a command to end: a one-line message and an exit code."""

    exit_code = 1
    prefix = "error: "  # how the CLI introduces the message

    def __init__(self, message: str = "", *args):
        # One line, always: a value quoted from a file or a flag may hold a line break, which
        # is shown escaped (as repr shows it) instead of breaking the message in two.
        super().__init__(str(message).replace("\r", "\\r").replace("\n", "\\n"), *args)


class UserError(GankitError, ValueError):
    """A problem with the user's input, fixable by the user. Message: one line."""

    exit_code = 2


class Diverged(GankitError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""

    exit_code = 3


class Stopped(GankitError):
    """Training stopped on SIGINT/SIGTERM after saving; exit code 128 + signal number."""

    prefix = ""  # not an error: the message says how to resume

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception as one line of at most `limit` characters (its type when it has no text),
    for messages that quote what went wrong underneath."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."
