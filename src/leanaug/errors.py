"""User-facing errors.

Anything a user can cause with bad input (a missing file, an unknown name, a budget
larger than the data) raises :class:`LeanaugError`. The CLI prints its message on one
line and exits with status 2, without a traceback. It subclasses ``ValueError`` so
library users can catch it the usual way.
"""


class LeanaugError(ValueError):
    """A problem with the user's input; the message alone explains it."""


class DataError(LeanaugError):
    """A data file is missing, truncated, corrupt or not what was expected."""


class OutputError(LeanaugError):
    """An output path cannot be used: a file where a folder should be, not writable."""


class DamagedFileError(LeanaugError):
    """A file a run wrote earlier cannot be read back (torn by a kill, or corrupt)."""


class ParameterError(LeanaugError):
    """A component's parameter is unknown or has a bad value; the message lists the
    valid parameters and their types."""


class UnknownNameError(LeanaugError, KeyError):
    """A registry lookup failed; the message lists the valid names."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""
