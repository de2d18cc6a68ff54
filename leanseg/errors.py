"""The one error type for user mistakes (bad files, bad arguments).

The CLI prints it as a single line and exits with code 2; the Python API lets it propagate.
It subclasses ValueError so callers that already catch ValueError keep working.
"""


class LeanSegError(ValueError):
    """A problem with the user's input: the message names the file or argument and the problem."""


class LeanSegWarning(UserWarning):
    """Something leanseg did on the user's behalf that they should know about (the CLI prints it as a note)."""
