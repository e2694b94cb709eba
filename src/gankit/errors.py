"""The one exception type a user is meant to see.

Anything the user can fix (a bad flag, a missing file, a corrupt checkpoint)
raises UserError with a one-line message that says what is wrong and what to do.
The CLI prints it as ``error: <message>`` and exits with code 2, without a
traceback. Everything else is a bug and keeps its traceback.
"""


class UserError(ValueError):
    """A problem with the user's input, fixable by the user. Message: one line."""

    exit_code = 2
