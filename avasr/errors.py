"""The one base class of the errors avasr raises on purpose.

An AvasrError is a user's mistake or a condition only the user can act on: a bad manifest, config, file or space,
a checkpoint that is not one, a sweep with nothing to ship. Its message names the file (and line) and says all
there is to say, so the entry points (avasr.cli) print it as one line, without a traceback. Every other exception
is a programming error or one nobody has put into words yet (a torch shape mismatch, an out-of-memory): it keeps
its traceback.

Each subclass keeps a builtin base as well (`class ConfigError(AvasrError, ValueError)`), so `except ValueError`
still catches it.
"""


class AvasrError(Exception):
    """Base of every avasr error class; see the module docstring."""


class OutputError(AvasrError, OSError):
    """A file or folder the user named cannot be written (a file where a folder should be, no permission); the
    message names it. Shared: any module may write where the user says."""
